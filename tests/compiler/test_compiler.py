"""The compiler: host kernels checked against numpy; AMD code objects built, linked and parsed back."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import KernelCache, compile_kernel
from compiler.elf import EF_AMDGPU_MACH, CodeObject
from compiler.ir import IRError, Kernel, exp2, f16, f32, i32, maximum, where


@pytest.fixture
def cache(tmp_path):
    return KernelCache(tmp_path)


def run_host(ck, arrays_and_scalars, grid):
    """Launch a host kernel over numpy arrays (passed by address) and ints."""
    vals = [a.ctypes.data if isinstance(a, np.ndarray) else a for a in arrays_and_scalars]
    blob = ck.pack_args(*vals)
    buf = ctypes.create_string_buffer(blob, len(blob))
    ck.run(ctypes.addressof(buf), grid, ck.local_size)


def elementwise(name, dtype, fn, local=64):
    k = Kernel(name, local_size=(local, 1, 1))
    a, b, out = k.buffer("a", dtype), k.buffer("b", dtype), k.buffer("out", dtype, writable=True)
    n = k.scalar("n")
    i = k.global_id(0)
    with k.if_(i < n):
        out[i] = fn(a[i], b[i])
    return k


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000])
def test_elementwise_float32_odd_sizes(cache, n):
    ck = compile_kernel(elementwise("axpb", f32, lambda x, y: x * 3.0 + maximum(y, 0.5)), "host", cache)
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    out = np.full(n, np.nan, np.float32)
    run_host(ck, [a, b, out, n], (-(-n // 64), 1, 1))
    np.testing.assert_allclose(out, a * 3 + np.maximum(b, 0.5), rtol=1e-6)


def test_elementwise_int32_is_exact(cache):
    ck = compile_kernel(elementwise("imix", i32, lambda x, y: (x * y) % 7 - x // 3), "host", cache)
    a = np.arange(-50, 150, dtype=np.int32)
    b = np.arange(200, dtype=np.int32)
    out = np.zeros(200, np.int32)
    run_host(ck, [a, b, out, 200], (4, 1, 1))
    # C semantics: division and remainder truncate toward zero
    expect = np.fmod(a * b, 7) - (np.trunc(a / 3)).astype(np.int32)
    np.testing.assert_array_equal(out, expect)


def test_float16_and_where(cache):
    ck = compile_kernel(elementwise("h", f16, lambda x, y: where(x < y, exp2(x), y)), "host", cache)
    a = np.linspace(-2, 2, 100).astype(np.float16)
    b = np.float16(0.5) * np.ones(100, np.float16)
    out = np.zeros(100, np.float16)
    run_host(ck, [a, b, out, 100], (2, 1, 1))
    np.testing.assert_allclose(out.astype(np.float32), np.where(a < b, np.exp2(a.astype(np.float32)), b), rtol=2e-3)


def row_sum_kernel(width: int = 64) -> Kernel:
    """One workgroup per row: each thread sums a strided slice, then a tree reduction in local memory."""
    k = Kernel("row_sum", local_size=(width, 1, 1))
    x, out = k.buffer("x", f32), k.buffer("out", f32, writable=True)
    cols = k.scalar("cols")
    row, t = k.workgroup_id(0), k.local_id(0)
    acc = k.var(f32, 0.0)
    with k.range(0, (cols + (width - 1)) // width) as j:
        c = j * width + t
        with k.if_(c < cols):
            acc.set(acc + x[row * cols + c])
    tile = k.local_array(f32, width)
    tile[t] = acc
    k.barrier()
    step = width // 2
    while step >= 1:
        with k.if_(t < step):
            tile[t] = tile[t] + tile[t + step]
        k.barrier()
        step //= 2
    with k.if_(t.eq(0)):
        out[row] = tile[0]
    return k


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 64), (7, 1000)])
def test_reduction_with_local_memory_and_barriers(cache, rows, cols):
    ck = compile_kernel(row_sum_kernel(), "host", cache)
    x = np.random.default_rng(cols).standard_normal((rows, cols)).astype(np.float32)
    out = np.zeros(rows, np.float32)
    run_host(ck, [x, out, cols], (rows, 1, 1))
    np.testing.assert_allclose(out, x.sum(axis=1), rtol=1e-4, atol=1e-4)


def matmul_kernel(tile: int = 8) -> Kernel:
    """C[M,N] = A[M,K] @ B[K,N]; tiles of A and B staged in local memory between barriers."""
    k = Kernel("matmul", local_size=(tile, tile, 1))
    A, B, C = k.buffer("A", f32), k.buffer("B", f32), k.buffer("C", f32, writable=True)
    M, N, K = k.scalar("M"), k.scalar("N"), k.scalar("K")
    tx, ty = k.local_id(0), k.local_id(1)
    col, row = k.workgroup_id(0) * tile + tx, k.workgroup_id(1) * tile + ty
    As, Bs = k.local_array(f32, tile * tile, "As"), k.local_array(f32, tile * tile, "Bs")
    acc = k.var(f32, 0.0)
    with k.range(0, (K + (tile - 1)) // tile) as t:
        ka, kb = t * tile + tx, t * tile + ty
        As[ty * tile + tx] = where((row < M) & (ka < K), A[where((row < M) & (ka < K), row * K + ka, 0)], 0.0)
        Bs[ty * tile + tx] = where((kb < K) & (col < N), B[where((kb < K) & (col < N), kb * N + col, 0)], 0.0)
        k.barrier()
        with k.range(0, tile) as kk:
            acc.set(acc + As[ty * tile + kk] * Bs[kk * tile + tx])
        k.barrier()
    with k.if_((row < M) & (col < N)):
        C[row * N + col] = acc
    return k


@pytest.mark.parametrize("m,n,kdim", [(8, 8, 8), (13, 7, 21), (32, 24, 5)])
def test_tiled_matmul_matches_numpy(cache, m, n, kdim):
    ck = compile_kernel(matmul_kernel(), "host", cache)
    rng = np.random.default_rng(m * n)
    a, b = rng.standard_normal((m, kdim)).astype(np.float32), rng.standard_normal((kdim, n)).astype(np.float32)
    c = np.zeros((m, n), np.float32)
    run_host(ck, [a, b, c, m, n, kdim], (-(-n // 8), -(-m // 8), 1))
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 300), scale=st.floats(-4, 4, allow_nan=False, width=32), seed=st.integers(0, 2**16))
def test_elementwise_property(tmp_path_factory, n, scale, seed):
    ck = compile_kernel(elementwise("prop", f32, lambda x, y: x * scale - y), "host", KernelCache(tmp_path_factory.mktemp("c")))
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    out = np.zeros(n, np.float32)
    run_host(ck, [a, b, out, n], (-(-n // 64), 1, 1))
    np.testing.assert_allclose(out, a * np.float32(scale) - b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gfx", ["gfx1100", "gfx1201", "gfx942"])
def test_amd_code_objects_build_link_and_parse(cache, gfx):
    for kernel in (row_sum_kernel(), matmul_kernel()):
        ck = compile_kernel(kernel, gfx, cache)
        co = CodeObject(ck.binary)
        assert co.mach == EF_AMDGPU_MACH[gfx]
        d = ck.descriptor
        assert d.kernarg_size >= ck.kernarg_size, "the descriptor must cover our explicit arguments"
        assert d.group_segment_fixed_size == ck.lds_bytes == sum(m.size * 4 for m in kernel.locals)
        assert d.vgprs(gfx) > 0 and d.kernel_code_entry_byte_offset != 0
        assert d.wave32 == (gfx != "gfx942"), "RDNA kernels default to wave32, CDNA is wave64"


def test_cache_hits_invalidates_and_survives_corruption(cache):
    k1 = elementwise("c1", f32, lambda x, y: x + y)
    compile_kernel(k1, "gfx1100", cache)
    compile_kernel(elementwise("c1", f32, lambda x, y: x + y), "gfx1100", cache)
    assert (cache.hits, cache.misses) == (1, 1)
    compile_kernel(elementwise("c1", f32, lambda x, y: x - y), "gfx1100", cache)
    assert cache.misses == 2, "a different kernel must not hit"
    compile_kernel(k1, "gfx1201", cache)
    assert cache.misses == 3, "a different target must not hit"
    for f in (cache.root / "gfx1100").glob("*.bin"):
        f.write_bytes(b"garbage")
    ck = compile_kernel(k1, "gfx1100", cache)
    assert cache.misses == 4 and CodeObject(ck.binary).kernel_descriptor("c1")


def test_bad_ir_gets_clear_errors():
    k = Kernel("bad", local_size=(4, 1, 1))
    a, out = k.buffer("a", f32), k.buffer("out", i32, writable=True)
    with pytest.raises(IRError, match=r"add: operand types differ \(float32 and int32\)"):
        _ = a[0] + k.scalar("n")
    with pytest.raises(IRError, match="read-only"):
        a[0] = 1.0
    with pytest.raises(IRError, match="store of float32 into out of int32"):
        out[0] = a[0]
    with pytest.raises(IRError, match="local_size"):
        Kernel("x", local_size=(0, 1, 1))


def test_divergent_barrier_is_refused_on_the_host(cache):
    k = Kernel("div", local_size=(4, 1, 1))
    out = k.buffer("out", f32, writable=True)
    with k.if_(k.local_id(0) < 2):
        k.barrier()
        out[0] = 1.0
    with pytest.raises(IRError, match="local id read outside per-thread code"):
        compile_kernel(k, "host", cache)
