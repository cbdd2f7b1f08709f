"""Code objects from another compiler (hand-written AMDGPU assembly in foreign/, laid out as clang emits OpenCL and
HIP kernels) load, pack their arguments from their own metadata, get exactly the user SGPRs their descriptor asks
for, and are refused by name when they need what a PM4 dispatch does not set up."""
from __future__ import annotations

import importlib.util
import struct

import numpy as np
import pytest

from autogen import gc_11_0_0 as gc
from compiler.elf import CodeObject, ELFError
from drivers.amd import pm4
from drivers.amd.kfd import KFDDevice
from drivers.amd.program import DISPATCH_PACKET, ProgramLoadError
from emu.machine import emulated_system
from hcq.buffer import MemFlags
from hcq.queue import Var
from tests.drivers.amd.foreign.build import build, missing, patch_descriptor

H = MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE
HOSTCALL = {"      - .offset:         112\n": "      - .offset:         104\n        .size:           8\n"
            "        .value_kind:     hidden_hostcall_buffer\n      - .offset:         112\n"}


@pytest.fixture(scope="module", autouse=True)
def toolchain():
    why = missing()
    if why:
        pytest.skip(f"the foreign code objects are assembled at test time: {why}")


def _device(target: str = "gfx1100") -> KFDDevice:
    return KFDDevice(0, emulated_system("amd", (target,), private=True))


@pytest.fixture
def dev():
    d = _device()
    yield d
    d.close()


def registers(dev, words) -> dict[int, int]:
    """SET_SH_REG values by register, relative to the GC base, from a decoded PM4 stream."""
    regs = {}
    for p in pm4.decode(words):
        if p.name == "SET_SH_REG":
            for i in range(len(p.body) - 1):
                regs[p.fields["reg"] + i - dev.gc_base] = p.fields[f"value{i}"]
    return regs


def user_data(regs: dict[int, int]) -> list[int]:
    out, r = [], gc.regCOMPUTE_USER_DATA_0
    while r in regs:
        out.append(regs[r])
        r += 1
    return out


def test_a_foreign_code_object_loads_where_its_descriptor_says(dev):
    binary = build("scale_add")
    prog = dev.load_program(binary, "scale_add", (64, 1, 1))
    co = CodeObject(binary)
    assert co.target == "gfx1100" and co.code_object_version == 5
    assert prog.descriptor_va == prog.image.va + co.symbols["scale_add.kd"].value
    assert prog.code_va == prog.image.va + co.symbols["scale_add"].value  # the entry offset, not our layout
    assert [a.name for a in prog.layout.explicit] == ["out", "in", "count"] and prog.layout.size == 280
    assert prog.local_size == (64, 1, 1) and prog.grid_dependent and prog.scratch is None
    with pytest.raises(ELFError, match=r"scale_add: the metadata has no \.reqd_workgroup_size; give local_size="):
        dev.load_program(binary, "scale_add")
    with pytest.raises(ValueError, match=r"load_program\(code_object_bytes, name\) needs the kernel's name"):
        dev.load_program(binary)


def test_arguments_are_packed_from_the_metadata_hidden_ones_included(dev):
    prog = dev.load_program(build("scale_add"), "scale_add", (64, 1, 1))
    block = prog.pack_args(0x1111_2222_3333, 0x4444_5555_6660, -7, global_size=(5, 3, 1), local_size=(64, 1, 1))
    assert len(block) == 280
    want = {"out": 0x1111_2222_3333, "in": 0x4444_5555_6660, "count": -7,
            "hidden_block_count_x": 5, "hidden_block_count_y": 3, "hidden_block_count_z": 1,
            "hidden_group_size_x": 64, "hidden_group_size_y": 1, "hidden_group_size_z": 1,
            "hidden_remainder_x": 0, "hidden_remainder_y": 0, "hidden_remainder_z": 0,
            "hidden_global_offset_x": 0, "hidden_global_offset_y": 0, "hidden_global_offset_z": 0,
            "hidden_grid_dims": 2, "hidden_multigrid_sync_arg": 0}
    seen = set()
    for a in CodeObject(build("scale_add")).kernel_metadata("scale_add")[".args"]:  # checked against the note
        key = a.get(".name", a[".value_kind"])
        got = int.from_bytes(block[a[".offset"]:a[".offset"] + a[".size"]], "little", signed=key == "count")
        assert got == want[key], key
        seen.add(key)
    assert seen == set(want)
    assert prog.pack_args(1, 2, 3, global_size=(9, 1, 1), local_size=(64, 1, 1))[88:90] == b"\x01\x00"  # grid dims


def test_grid_dependent_hidden_arguments_need_the_grid(dev):
    prog = dev.load_program(build("scale_add"), "scale_add", (64, 1, 1))
    with pytest.raises(ProgramLoadError) as e:
        prog.pack_args(1, 2, 3)
    assert str(e.value) == ("scale_add: its hidden arguments depend on the launch: pack_args(..., "
                            "global_size=(workgroups), local_size=(work-items))")
    with pytest.raises(ProgramLoadError, match=r"scale_add was loaded for local size \(64, 1, 1\), packed for "
                                               r"\(32, 1, 1\)"):
        prog.pack_args(1, 2, 3, global_size=(1, 1, 1), local_size=(32, 1, 1))
    with pytest.raises(ValueError, match=r"scale_add: 4294967296 does not fit argument count \(by_value\), which "):
        prog.pack_args(1, 2, 1 << 32, global_size=(1, 1, 1), local_size=(64, 1, 1))
    with pytest.raises(ValueError, match=r"scale_add takes 3 arguments \(out, in, count\), got 2"):
        prog.pack_args(1, 2, global_size=(1, 1, 1), local_size=(64, 1, 1))


def test_the_dispatch_writes_exactly_the_user_sgprs_the_descriptor_asks_for(dev):
    prog = dev.load_program(build("scale_add"), "scale_add", (64, 1, 1))
    ka = 0x7F00_1234_5600
    q = dev.compute_queue().exec(prog, ka, (5, 1, 1), (64, 1, 1))
    regs = registers(dev, q.cmd)
    # USER_SGPR_COUNT 15 (LLVM's gfx1100 wave32 padding): the kernarg pointer in s[0:1], zeros up to s14.
    assert (prog.descriptor.compute_pgm_rsrc2 >> 1) & 0x1F == 15
    assert user_data(regs) == [ka & 0xFFFFFFFF, ka >> 32] + [0] * 13
    assert regs[gc.regCOMPUTE_PGM_LO] == (prog.code_va >> 8) & 0xFFFFFFFF
    assert regs[gc.regCOMPUTE_PGM_RSRC2] == prog.descriptor.compute_pgm_rsrc2  # no LDS, no scratch
    assert regs[gc.regCOMPUTE_TMPRING_SIZE] == 0 and gc.regCOMPUTE_DISPATCH_SCRATCH_BASE_LO not in regs
    assert [regs[gc.regCOMPUTE_NUM_THREAD_X + i] for i in range(3)] == [64, 1, 1]
    dispatch = pm4.decode(q.cmd)[-1]
    assert dispatch.name == "DISPATCH_DIRECT" and (dispatch.fields["x"], dispatch.fields["y"]) == (5, 1)
    assert dispatch.fields["initiator"] & gc.COMPUTE_DISPATCH_INITIATOR__CS_W32_EN_MASK


def test_the_dispatch_pointer_is_served_from_a_packet_after_the_arguments(dev):
    prog = dev.load_program(build("dispatch_scratch"), "dispatch_scratch")
    assert prog.local_size == (32, 1, 1)  # .reqd_workgroup_size
    assert (prog.dispatch_packet_offset, prog.kernarg_size) == (64, 128)
    ka = 0x7F00_0000_4000
    block = prog.pack_args(0xABC000, 0x1_0000_0005, global_size=(3, 1, 1), local_size=(32, 1, 1), kernarg_va=ka)
    assert len(block) == 128 and block[:16] == struct.pack("<QQ", 0xABC000, 0x1_0000_0005)
    (header, setup, wx, wy, wz, _r, gx, gy, gz, private, group, kernel_object, kernarg_address, _r2,
     completion) = DISPATCH_PACKET.unpack_from(block, 64)
    assert header & 0xFF == 2 and setup & 3 == 1  # HSA_PACKET_TYPE_KERNEL_DISPATCH, one dimension
    assert (wx, wy, wz, gx, gy, gz) == (32, 1, 1, 96, 1, 1)  # grid in work-items
    assert (private, group, kernel_object, kernarg_address, completion) == (16, 0, prog.descriptor_va, ka, 0)
    with pytest.raises(ProgramLoadError, match="dispatch_scratch: its dispatch packet depend"):
        prog.pack_args(1, 2)
    regs = registers(dev, dev.compute_queue().exec(prog, ka, (3, 1, 1), (32, 1, 1)).cmd)
    # AMDGPUUsage order: dispatch ptr, kernarg ptr, private segment size; zeros up to USER_SGPR_COUNT 15.
    assert user_data(regs) == [(ka + 64) & 0xFFFFFFFF, (ka + 64) >> 32, ka & 0xFFFFFFFF, ka >> 32, 16] + [0] * 10


def test_scratch_is_set_up_from_the_descriptor(dev):
    prog = dev.load_program(build("dispatch_scratch"), "dispatch_scratch")
    area = prog.scratch
    assert area.wave_bytes == 512  # 16 bytes x 32 lanes, in 256-byte granules
    # Every wave the emulated gfx1100 holds (192 SIMDs x 16 waves), counted per shader engine (12 arrays / 2).
    assert (area.engines, area.waves_per_engine) == (6, 512) and area.buffer.size == 6 * 512 * 512
    regs = registers(dev, dev.compute_queue().exec(prog, 0x10000, (1, 1, 1), (32, 1, 1)).cmd)
    tmpring = regs[gc.regCOMPUTE_TMPRING_SIZE]
    assert tmpring & gc.COMPUTE_TMPRING_SIZE__WAVES_MASK == 512
    assert (tmpring & gc.COMPUTE_TMPRING_SIZE__WAVESIZE_MASK) >> gc.COMPUTE_TMPRING_SIZE__WAVESIZE__SHIFT == 2
    base = regs[gc.regCOMPUTE_DISPATCH_SCRATCH_BASE_LO] | regs[gc.regCOMPUTE_DISPATCH_SCRATCH_BASE_HI] << 32
    assert base << 8 == area.buffer.va
    assert regs[gc.regCOMPUTE_PGM_RSRC2] & gc.COMPUTE_PGM_RSRC2__SCRATCH_EN_MASK


def test_replayed_pointers_into_the_argument_block_are_patched(dev):
    prog = dev.load_program(build("dispatch_scratch"), "dispatch_scratch")
    ka = 0x7F12_3456_7800
    direct = dev.compute_queue().exec(prog, ka, (4, 1, 1), (32, 1, 1))
    patched = dev.compute_queue().exec(prog, Var("a"), (Var("x"), 1, 1), (32, 1, 1))
    patched.apply({"a": ka, "x": 4})
    assert list(direct.cmd) == list(patched.cmd)


def test_the_same_kernel_for_gfx1201_has_no_padding_to_give():
    """gfx1201 has no user-SGPR init bug: its USER_SGPR_COUNT must match the enable bits exactly."""
    gfx12 = {"\t\t.amdhsa_dx10_clamp 1\n": "", "\t\t.amdhsa_ieee_mode 1\n": ""}  # GFX12 has neither mode bit
    exact = {**gfx12, ".amdhsa_user_sgpr_count 15": ".amdhsa_user_sgpr_count 2",  # workgroup id x in s2
             "s_load_b32 s2, s[0:1], 0x24": "s_load_b32 s12, s[0:1], 0x24",
             "s_and_b32 s2, s2, 0xffff": "s_and_b32 s12, s12, 0xffff", "s_mul_i32 s2, s2, s15": "s_mul_i32 s2, s12, s2"}
    d = _device("gfx1201")
    try:
        prog = d.load_program(build("scale_add", exact, target="gfx1201"), "scale_add", (64, 1, 1))
        assert prog.user_sgprs == [("kernarg_segment_ptr", 2)]
        with pytest.raises(ProgramLoadError) as e:
            d.load_program(build("scale_add", gfx12, target="gfx1201"), "scale_add", (64, 1, 1))
        assert str(e.value) == (
            "scale_add cannot run on AMD (gfx1201): USER_SGPR_COUNT is 15, but its enable bits ask for 2 user SGPRs "
            "(kernarg_segment_ptr 2); only gfx1100/gfx1102 wave32 kernels may pad it, up to 16 SGPRs with the system "
            "SGPRs (LLVM's FeatureUserSGPRInit16Bug): the descriptor is inconsistent")
        with pytest.raises(ProgramLoadError, match="scale_add was built for gfx1100, but AMD is a gfx1201"):
            d.load_program(build("scale_add"), "scale_add", (64, 1, 1))
    finally:
        d.close()


OPT = "(LLVM drops the inputs a kernel does not use at -O1 and higher)"
REFUSED_EDITS = [
    ({".amdhsa_user_sgpr_queue_ptr 0": ".amdhsa_user_sgpr_queue_ptr 1"},
     "ENABLE_SGPR_QUEUE_PTR is set, but a PM4 compute queue has no AQL queue (hsa_queue_t) to point at: rebuild it "
     f"without reading the queue pointer {OPT}"),
    ({".amdhsa_user_sgpr_dispatch_id 0": ".amdhsa_user_sgpr_dispatch_id 1"},
     f"ENABLE_SGPR_DISPATCH_ID is set, but this driver numbers no dispatches: rebuild it without "
     f"__builtin_amdgcn_dispatch_id {OPT}"),
    ({".amdhsa_uses_dynamic_stack 0": ".amdhsa_uses_dynamic_stack 1"},
     "USES_DYNAMIC_STACK is set: its scratch need is unknown at load (recursion, dynamically sized allocas or indirect "
     "calls) and private_segment_fixed_size is only a minimum: rebuild it without them"),
    ({".amdhsa_user_sgpr_count 15": ".amdhsa_user_sgpr_count 16"},
     "USER_SGPR_COUNT is 16, but its enable bits ask for 2 user SGPRs (kernarg_segment_ptr 2); only gfx1100/gfx1102 "
     "wave32 kernels may pad it, up to 16 SGPRs with the system SGPRs (LLVM's FeatureUserSGPRInit16Bug): the "
     "descriptor is inconsistent"),
    (HOSTCALL,
     "argument hidden_hostcall_buffer at offset 104: it makes host calls (printf, malloc in HIP), which need a "
     f"hostcall buffer and a host thread serving it; this driver has neither: rebuild it without that {OPT}"),
    ({"hidden_multigrid_sync_arg": "hidden_printf_buffer"},
     "argument hidden_printf_buffer at offset 112: it calls printf, which needs a printf buffer this driver does not "
     f"provide: rebuild it without that {OPT}"),
]


@pytest.mark.parametrize("edits,reason", REFUSED_EDITS, ids=["queue_ptr", "dispatch_id", "dynamic_stack",
                                                              "user_sgpr_count", "hostcall", "printf"])
def test_what_the_dispatch_does_not_set_up_is_refused_by_name(dev, edits, reason):
    with pytest.raises(ProgramLoadError) as e:
        dev.load_program(build("scale_add", edits), "scale_add", (64, 1, 1))
    assert str(e.value) == f"scale_add cannot run on AMD (gfx1100): {reason}"
    assert not [b for b in dev._buffers.values() if b.flags & MemFlags.EXECUTABLE], "a refused kernel is not loaded"


@pytest.mark.parametrize("kind", ["hidden_heap_v1", "hidden_default_queue", "hidden_completion_action",
                                  "hidden_queue_ptr", "hidden_private_base"])
def test_hidden_arguments_a_null_would_break_are_refused(dev, kind):
    with pytest.raises(ProgramLoadError, match=rf"scale_add cannot run on AMD \(gfx1100\): argument {kind} at offset "
                                               r"112: .*: rebuild it without that"):
        dev.load_program(build("scale_add", {"hidden_multigrid_sync_arg": kind}), "scale_add", (64, 1, 1))


DESCRIPTOR_EDITS = [
    (dict(props_or=1 << 0), "ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER is set, but gfx1100 reaches scratch through "
     "architected flat scratch and the dispatch fills no scratch buffer descriptor: rebuild the kernel for gfx1100"),
    (dict(props_or=1 << 5), "ENABLE_SGPR_FLAT_SCRATCH_INIT is set, but gfx1100 sets FLAT_SCRATCH itself (architected "
     "flat scratch) and this driver fills no flat scratch init: rebuild the kernel for gfx1100"),
    (dict(props_or=1 << 8), "kernel_code_properties has reserved bits 0x100 set: not a descriptor this driver "
     "understands (rebuild it with LLVM's AMDGPU backend)"),
    (dict(preload=2), "it preloads 2 kernel-argument SGPRs (KERNARG_PRELOAD_SPEC_LENGTH), which this driver does not "
     "fill: rebuild it without kernel-argument preloading (-mllvm -amdgpu-kernarg-preload-count=0)"),
    (dict(rsrc2_or=1 << 6), "compute_pgm_rsrc2 bit 6 (ENABLE_TRAP_HANDLER; DYNAMIC_VGPR on GFX12) is set, and it must "
     "be 0 in a kernel descriptor (AMDGPUUsage compute_pgm_rsrc2 table)"),
]


@pytest.mark.parametrize("patch,reason", DESCRIPTOR_EDITS, ids=["private_segment_buffer", "flat_scratch_init",
                                                                "reserved", "kernarg_preload", "trap_handler"])
def test_descriptors_an_assembler_would_not_write_are_refused(dev, patch, reason):
    """The user SGPR count stays 15, which still covers the extra enables, so each reason stands alone."""
    binary = patch_descriptor(build("scale_add"), "scale_add", **patch)
    with pytest.raises(ProgramLoadError) as e:
        dev.load_program(binary, "scale_add", (64, 1, 1))
    assert str(e.value) == f"scale_add cannot run on AMD (gfx1100): {reason}"


ISA_EXECUTOR = importlib.util.find_spec("emu.amd.isa.dispatch") is not None


@pytest.mark.skipif(not ISA_EXECUTOR, reason="needs the ISA executor (emu/amd/isa/dispatch.py)")
def test_foreign_kernels_run_on_the_emulated_gpu(dev):
    """End to end: the real ISA of both foreign kernels, set up from exactly what the driver wrote."""
    add = dev.load_program(build("scale_add"), "scale_add", (64, 1, 1))
    n, groups = 100, (2, 1, 1)
    x = np.arange(128, dtype=np.float32) / 8
    src, dst = dev.alloc(x.nbytes, H), dev.alloc(x.nbytes, H)
    src.numpy(np.float32)[:] = x
    dst.numpy(np.float32)[:] = -1
    q = dev.compute_queue().memory_barrier()
    q.exec(add, add.pack_args(dst.va, src.va, n, global_size=groups, local_size=(64, 1, 1)), groups, (64, 1, 1))
    ds = dev.load_program(build("dispatch_scratch"), "dispatch_scratch")
    out = dev.alloc(96 * 8, H)
    args = dev.alloc(ds.kernarg_size, H)
    block = ds.pack_args(out.va, 1 << 40, global_size=(3, 1, 1), local_size=(32, 1, 1), kernarg_va=args.va)
    args.cpu_view()[:len(block)] = block
    q.exec(ds, args, (3, 1, 1), (32, 1, 1))
    q.signal(dev.timeline, dev.next_timeline_value()).submit(dev)
    dev.synchronize(timeout=60)
    got = dst.numpy(np.float32)
    np.testing.assert_array_equal(got[:n], x[:n] * 2 + 1)
    np.testing.assert_array_equal(got[n:], -1)
    i = np.arange(96, dtype=np.uint64)
    np.testing.assert_array_equal(out.numpy(np.uint64), i + 16 + 96 + (1 << 40))  # i + private size + grid + bias


# scale_add as clang -mwavefrontsize64 would lay it out: 64-lane waves, a 64-bit VCC and EXEC, and no user-SGPR
# padding (LLVM pads only gfx1100 wave32 kernels), so the workgroup id follows the kernarg pointer in s2.
WAVE64 = {".amdhsa_wavefront_size32 1": ".amdhsa_wavefront_size32 0", ".wavefront_size: 32": ".wavefront_size: 64",
          ".amdhsa_user_sgpr_count 15": ".amdhsa_user_sgpr_count 2",
          "s_load_b32 s2, s[0:1], 0x24": "s_load_b32 s12, s[0:1], 0x24",
          "s_and_b32 s2, s2, 0xffff": "s_and_b32 s12, s12, 0xffff", "s_mul_i32 s2, s2, s15": "s_mul_i32 s2, s12, s2",
          "v_cmp_gt_i32 vcc_lo, s3, v1": "v_cmp_gt_i32 vcc, s3, v1",
          "s_and_saveexec_b32 s8, vcc_lo": "s_and_saveexec_b64 s[8:9], vcc"}


@pytest.mark.skipif(not ISA_EXECUTOR, reason="needs the ISA executor (emu/amd/isa/dispatch.py)")
@pytest.mark.parametrize("target", ["gfx1100", "gfx1201"])
def test_a_wave64_kernel_runs_all_64_lanes(target):
    """The descriptor asks for wave64: the dispatch leaves CS_W32_EN clear and every lane of a 64-lane wave runs (a
    wave32 executor would leave lanes 32-63 of each workgroup unwritten)."""
    d = _device(target)
    try:
        edits = dict(WAVE64)
        if target.startswith("gfx12"):  # GFX12 has neither mode bit, and its workgroup id x is in TTMP9
            edits.update({"\t\t.amdhsa_dx10_clamp 1\n": "", "\t\t.amdhsa_ieee_mode 1\n": "",
                          "s_mul_i32 s2, s2, s15": "s_mul_i32 s2, s12, ttmp9"})
        add = d.load_program(build("scale_add", edits, target, wave64=True), "scale_add", (64, 1, 1))
        assert not add.descriptor.wave32
        x = np.arange(192, dtype=np.float32) / 8
        src, dst = d.alloc(x.nbytes, H), d.alloc(x.nbytes, H)
        src.numpy(np.float32)[:] = x
        dst.numpy(np.float32)[:] = -1
        n, groups = 150, (3, 1, 1)
        q = d.compute_queue().memory_barrier()
        q.exec(add, add.pack_args(dst.va, src.va, n, global_size=groups, local_size=(64, 1, 1)), groups, (64, 1, 1))
        q.signal(d.timeline, d.next_timeline_value()).submit(d)
        d.synchronize(timeout=60)
        got = dst.numpy(np.float32)
        np.testing.assert_array_equal(got[:n], x[:n] * 2 + 1)
        np.testing.assert_array_equal(got[n:], -1)
        (launch,) = [p for p in pm4.decode(q.cmd) if p.name == "DISPATCH_DIRECT"]
        assert not launch.fields["initiator"] & d.gc.COMPUTE_DISPATCH_INITIATOR__CS_W32_EN_MASK
    finally:
        d.close()
