"""Real kernels from compiler.compile_kernel run on the wave executor for gfx1100 and gfx1201, dispatched from the
registers the driver's encoder writes, with results checked against numpy; and the faults a wrong pointer, an
out-of-bounds store or a wrong register set-up must give."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from compiler import KernelCache, compile_kernel
from compiler.ir import exp, f16, f32, i32, log, sin
from emu.amd.isa.vm import GPUFault, VMFault

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[2] / "compiler"))
from isa_harness import FakeGPU  # noqa: E402
from sample_kernels import elementwise, matmul, row_sum  # noqa: E402

TARGETS = ["gfx1100", "gfx1201"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return KernelCache(tmp_path_factory.mktemp("isa_kernels"))


def _run_elementwise(gpu, cache, kernel, a, b, n, grid=None):
    prog = gpu.load(compile_kernel(kernel, gpu.target, cache))
    ava, _ = gpu.upload(a)
    bva, _ = gpu.upload(b)
    ova, out = gpu.alloc(a.nbytes)
    local = kernel.local_size[0]
    gpu.launch(prog, (ava, bva, ova, n), grid or (-(-n // local), 1, 1))
    return out.view(a.dtype)[:n]


@pytest.mark.parametrize("target", TARGETS)
def test_elementwise_f32_f16_i32(target, cache):
    gpu, rng = FakeGPU(target), np.random.default_rng(1)
    n = 200  # four workgroups of 64, the last one partial: the bounds check must hold the tail back
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    np.testing.assert_array_equal(_run_elementwise(gpu, cache, elementwise("add", f32, lambda x, y: x + y), a, b, n),
                                  a + b)
    h, g = a.astype(np.float16), b.astype(np.float16)
    got = _run_elementwise(gpu, cache, elementwise("fma16", f16, lambda x, y: x * y + x), h, g, n)
    np.testing.assert_allclose(got.astype(np.float32), (h * g + h).astype(np.float32), rtol=2e-3, atol=2e-3)
    ia = rng.integers(-1000, 1000, n).astype(np.int32)
    ib = rng.integers(1, 50, n).astype(np.int32) * rng.choice([-1, 1], n).astype(np.int32)
    got = _run_elementwise(gpu, cache, elementwise("imath", i32, lambda x, y: x * y + x // y), ia, ib, n)
    want = ia * ib + np.trunc(ia / ib).astype(np.int32)  # the IR's integer division truncates like C
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("target", TARGETS)
def test_transcendentals_and_division(target, cache):
    gpu, rng = FakeGPU(target), np.random.default_rng(2)
    n = 128
    a = rng.uniform(-3, 3, n).astype(np.float32)
    b = rng.uniform(0.5, 4, n).astype(np.float32)
    got = _run_elementwise(gpu, cache, elementwise("tr", f32, lambda x, y: exp(x) + log(y) + sin(x) + x / y), a, b, n)
    want = np.exp(a) + np.log(b) + np.sin(a) + a / b
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_row_sum_reduction_with_lds_and_barriers(target, cache):
    gpu, rng = FakeGPU(target), np.random.default_rng(3)
    rows, cols = 5, 150
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    prog = gpu.load(compile_kernel(row_sum(), target, cache))
    xva, _ = gpu.upload(x)
    ova, out = gpu.alloc(4 * rows)
    launch = gpu.launch(prog, (xva, ova, cols), (rows, 1, 1))
    np.testing.assert_allclose(out.view(np.float32)[:rows], x.sum(1), rtol=1e-5, atol=1e-5)
    assert launch.instructions > 0


@pytest.mark.parametrize("target", TARGETS)
def test_tiled_matmul_with_lds(target, cache):
    gpu, rng = FakeGPU(target), np.random.default_rng(4)
    m, n, k = 19, 13, 27
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)
    prog = gpu.load(compile_kernel(matmul(), target, cache))
    ava, _ = gpu.upload(a)
    bva, _ = gpu.upload(b)
    cva, c = gpu.alloc(4 * m * n)
    gpu.launch(prog, (ava, bva, cva, m, n, k), (2, 3, 1))
    np.testing.assert_allclose(c.view(np.float32)[:m * n].reshape(m, n), a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target", TARGETS)
def test_a_wrong_kernel_argument_pointer_faults_with_the_address(target, cache):
    gpu = FakeGPU(target)
    prog = gpu.load(compile_kernel(elementwise("add", f32, lambda x, y: x + y), target, cache))
    ava, _ = gpu.upload(np.ones(64, np.float32))
    ova, _ = gpu.alloc(256)
    wild = 0x5555_0000_0000
    with pytest.raises(VMFault) as e:
        gpu.launch(prog, (wild, ava, ova, 64), (1, 1, 1))
    f = e.value
    assert f.va == wild and f.access == "read" and f.kind == "page fault"
    assert "global_load" in str(f) and f"{wild:#x}" in str(f) and "workgroup 0" in str(f)


@pytest.mark.parametrize("target", TARGETS)
def test_an_out_of_bounds_store_names_the_address_and_the_buffer(target, cache):
    gpu = FakeGPU(target)
    prog = gpu.load(compile_kernel(elementwise("add", f32, lambda x, y: x + y), target, cache))
    ava, _ = gpu.upload(np.ones(128, np.float32))
    bva, _ = gpu.upload(np.ones(128, np.float32))
    ova, out = gpu.alloc(4 * 64)  # room for 64 results, the kernel is told 128
    with pytest.raises(VMFault) as e:
        gpu.launch(prog, (ava, bva, ova, 128), (2, 1, 1))
    f = e.value
    assert f.access == "write" and f.va == ova + 4 * 64
    assert f"0x0 bytes past the end of the buffer at {ova:#x} (256 bytes)" in str(f)
    assert "global_store" in str(f)
    assert (out.view(np.float32) == 2).all()  # the first workgroup stored in bounds before the fault


@pytest.mark.parametrize("target", TARGETS)
def test_workgroup_ids_come_from_the_registers(target, cache):
    """With RSRC2's workgroup-id enables cleared, the waves get no workgroup IDs and every workgroup computes
    the first one's elements: the executor really sets a dispatch up from the registers."""
    gpu = FakeGPU(target)
    n = 256
    a = np.arange(n, dtype=np.float32)
    prog = gpu.load(compile_kernel(elementwise("add", f32, lambda x, y: x + y), target, cache))
    ava, _ = gpu.upload(a)
    bva, _ = gpu.upload(a)
    ova, out = gpu.alloc(4 * n)
    gc = gpu.gc
    tgid = gc.COMPUTE_PGM_RSRC2__TGID_X_EN_MASK | gc.COMPUTE_PGM_RSRC2__TGID_Y_EN_MASK | \
        gc.COMPUTE_PGM_RSRC2__TGID_Z_EN_MASK
    gpu.launch(prog, (ava, bva, ova, n), (4, 1, 1), rsrc2_patch=lambda r: r & ~tgid)
    got = out.view(np.float32)
    assert (got[:64] == 2 * a[:64]).all() and not got[64:].any()
    gpu.launch(prog, (ava, bva, ova, n), (4, 1, 1))  # the same dispatch with the driver's registers
    assert (out.view(np.float32) == 2 * a).all()


def test_an_lds_kernel_without_lds_size_faults_on_its_first_lds_access(cache):
    gpu = FakeGPU("gfx1100")
    prog = gpu.load(compile_kernel(row_sum(), "gfx1100", cache))
    xva, _ = gpu.upload(np.ones(64, np.float32))
    ova, _ = gpu.alloc(4)
    with pytest.raises(GPUFault, match=r"ds_store.*outside the workgroup's 0-byte LDS allocation"):
        gpu.launch(prog, (xva, ova, 64), (1, 1, 1),
                   rsrc2_patch=lambda r: r & ~gpu.gc.COMPUTE_PGM_RSRC2__LDS_SIZE_MASK)


def test_too_few_vgprs_in_rsrc1_is_a_fault_naming_the_register(cache):
    gpu = FakeGPU("gfx1100")
    prog = gpu.load(compile_kernel(matmul(), "gfx1100", cache))
    ava, _ = gpu.upload(np.ones(64, np.float32))
    cva, _ = gpu.alloc(256)
    rsrc1 = prog.descriptor.compute_pgm_rsrc1 & ~gpu.gc.COMPUTE_PGM_RSRC1__VGPRS_MASK  # 8 VGPRs only
    with pytest.raises(GPUFault, match=r"uses v\d+, but COMPUTE_PGM_RSRC1 allocates 8 VGPRs"):
        gpu.launch(prog, (ava, ava, cva, 8, 8, 8), (1, 1, 1), regs_patch={"PGM_RSRC1": rsrc1})
