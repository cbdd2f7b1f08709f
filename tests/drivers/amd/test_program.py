"""AMD programs built by our compiler: the registers a dispatch writes come from the descriptor (LDS size, user SGPR
count, scratch), scratch memory is allocated and grown per device, and descriptors asking for what the dispatch
does not set up are refused by name. Foreign code objects: test_program_foreign.py."""
from __future__ import annotations

import pytest

from autogen import gc_11_0_0 as gc11
from autogen import gc_12_0_0 as gc12
from compiler import KernelCache, compile_kernel
from drivers.amd.kfd import KFDDevice, KFDError
from drivers.amd.program import ProgramLoadError
from emu.machine import emulated_system
from tests.drivers.amd.foreign.build import patch_descriptor
from tests.drivers.amd.test_kfd_dispatch import matmul
from tests.drivers.amd.test_program_foreign import registers

GC = {"gfx1100": gc11, "gfx1201": gc12}


@pytest.fixture(params=["gfx1100", "gfx1201"])
def dev(request):
    d = KFDDevice(0, emulated_system("amd", (request.param,), private=True))
    yield d
    d.close()


def test_our_kernels_get_their_lds_size_and_user_sgprs(dev, tmp_path, lld):
    gc = GC[dev.target]
    prog = dev.load_program(compile_kernel(matmul(), dev.target, KernelCache(tmp_path)))
    regs = registers(dev, dev.compute_queue().exec(prog, 0x5_0000_1000, (2, 2, 1), (8, 8, 1)).cmd)
    d = prog.descriptor
    # LDS_SIZE is the driver's to fill (the descriptor leaves it 0): 512 bytes of tiles is one 512-byte granule.
    assert d.group_segment_fixed_size == 512 and d.compute_pgm_rsrc2 & gc.COMPUTE_PGM_RSRC2__LDS_SIZE_MASK == 0
    assert regs[gc.regCOMPUTE_PGM_RSRC2] == d.compute_pgm_rsrc2 | 1 << gc.COMPUTE_PGM_RSRC2__LDS_SIZE__SHIFT
    # Exactly USER_SGPR_COUNT user-data registers (LLVM pads gfx1100 wave32 kernels up to 16 SGPRs with zeros).
    count = (d.compute_pgm_rsrc2 & gc.COMPUTE_PGM_RSRC2__USER_SGPR_MASK) >> gc.COMPUTE_PGM_RSRC2__USER_SGPR__SHIFT
    user = [regs[gc.regCOMPUTE_USER_DATA_0 + i] for i in range(count)]
    assert gc.regCOMPUTE_USER_DATA_0 + count not in regs
    assert user == [0x1000, 5] + [0] * (count - 2)
    assert (count == 2) == (dev.target == "gfx1201"), "only gfx1100 pads (FeatureUserSGPRInit16Bug)"
    assert regs[gc.regCOMPUTE_TMPRING_SIZE] == 0 and prog.scratch is None


def test_our_kernels_pack_through_the_compiled_fast_path(dev, tmp_path, lld):
    compiled = compile_kernel(matmul(), dev.target, KernelCache(tmp_path))
    prog = dev.load_program(compiled)
    assert prog._plain and not prog.grid_dependent and not prog.layout.hidden
    assert prog.pack_args(1, 2, 3, 4, 5, 6) == compiled.pack_args(1, 2, 3, 4, 5, 6)
    # The metadata says the same layout the compiler chose (checked when it was built).
    assert prog.layout.pack((1, 2, 3, 4, 5, 6)) == compiled.pack_args(1, 2, 3, 4, 5, 6)
    # Launch keywords are accepted (and checked) for every program, ours included.
    assert prog.pack_args(1, 2, 3, 4, 5, 6, global_size=(2, 2, 1), local_size=(8, 8, 1)) == prog.pack_args(
        1, 2, 3, 4, 5, 6)
    with pytest.raises(ProgramLoadError, match=r"mm was loaded for local size \(8, 8, 1\), packed for \(4, 4, 1\)"):
        prog.pack_args(1, 2, 3, 4, 5, 6, global_size=(2, 2, 1), local_size=(4, 4, 1))
    with pytest.raises(TypeError, match="grid"):
        prog.pack_args(1, 2, 3, 4, 5, 6, grid=(1, 1, 1))


def test_scratch_areas_grow_and_older_ones_stay_for_encoded_queues(dev):
    gc = GC[dev.target]
    first = dev.scratch_for(512)
    assert dev.scratch_for(256) is first, "a smaller need reuses the area"
    second = dev.scratch_for(4864)
    assert second is not first and second.wave_bytes == 4864
    assert dev.scratch_for(1024) is second
    p = dev.node.properties
    engines = p["array_count"] // p["simd_arrays_per_engine"]
    assert second.engines == engines
    assert second.waves_per_engine * engines == p["simd_count"] * p["max_waves_per_simd"]
    assert second.buffer.size == p["simd_count"] * p["max_waves_per_simd"] * 4864
    assert first.buffer.va in dev._buffers and second.buffer.va in dev._buffers
    tmpring = second.tmpring_size(gc)
    assert tmpring & gc.COMPUTE_TMPRING_SIZE__WAVES_MASK == second.waves_per_engine
    assert (tmpring & gc.COMPUTE_TMPRING_SIZE__WAVESIZE_MASK) >> gc.COMPUTE_TMPRING_SIZE__WAVESIZE__SHIFT == 19
    with pytest.raises(ValueError, match="scratch per wave must be a positive multiple of 256, got 100"):
        dev.scratch_for(100)
    field = gc.COMPUTE_TMPRING_SIZE__WAVESIZE_MASK >> gc.COMPUTE_TMPRING_SIZE__WAVESIZE__SHIFT
    with pytest.raises(KFDError, match=rf"huge needs {(field + 1) * 256} bytes of scratch per wave; "
                                       rf"COMPUTE_TMPRING_SIZE.WAVESIZE holds at most {field * 256}"):
        dev.scratch_for((field + 1) * 256, "huge")


REFUSED = [
    (1 << 2, "ENABLE_SGPR_QUEUE_PTR is set"),
    (1 << 11, "USES_DYNAMIC_STACK is set"),
    (1 << 0, "ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER is set, but {gfx} reaches scratch through architected flat scratch"),
    (1 << 5, "ENABLE_SGPR_FLAT_SCRATCH_INIT is set, but {gfx} sets FLAT_SCRATCH itself"),
]


@pytest.mark.parametrize("bit,reason", REFUSED, ids=["queue_ptr", "dynamic_stack", "private_segment_buffer",
                                                     "flat_scratch_init"])
def test_our_code_objects_with_unserved_descriptor_bits_are_refused(dev, tmp_path, lld, bit, reason):
    compiled = compile_kernel(matmul(), dev.target, KernelCache(tmp_path))
    with pytest.raises(ProgramLoadError) as e:
        dev.load_program(patch_descriptor(compiled.binary, "mm", props_or=bit), "mm", (8, 8, 1))
    assert str(e.value).startswith(f"mm cannot run on {dev.name} ({dev.target}): ")
    assert reason.format(gfx=dev.target) in str(e.value)


def test_an_enable_bit_the_user_sgpr_count_does_not_cover_is_refused(dev, tmp_path, lld):
    """The dispatch pointer is served, but setting its bit alone makes the descriptor inconsistent on gfx1201 (its
    count is exactly 2); gfx1100's padded count of 14 covers the 4 SGPRs, so there it loads, pointer first."""
    compiled = compile_kernel(matmul(), dev.target, KernelCache(tmp_path))
    binary = patch_descriptor(compiled.binary, "mm", props_or=1 << 1)
    if dev.target == "gfx1201":
        with pytest.raises(ProgramLoadError, match=r"USER_SGPR_COUNT is 2, but its enable bits ask for 4 user SGPRs "
                                                   r"\(dispatch_ptr 2, kernarg_segment_ptr 2\)"):
            dev.load_program(binary, "mm", (8, 8, 1))
        return
    prog = dev.load_program(binary, "mm", (8, 8, 1))
    assert prog.user_sgprs[:2] == [("dispatch_ptr", 2), ("kernarg_segment_ptr", 2)] and prog.grid_dependent
