"""Hand-assembled snippets (llvm-mc-19) on the wave executor: control flow, EXEC masking, VOPD, LDS, barriers,
scratch, and the faults for code that must never run."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from emu.amd.isa.vm import AddressSpace, GPUFault
from emu.amd.isa.wave import Program, Wave, run_workgroup

pytestmark = pytest.mark.skipif(shutil.which("llvm-mc-19") is None, reason="llvm-mc-19 assembles the snippets")
CODE_VA = 0x10_0000


def asm(text: str, target: str = "gfx1100", lanes: int = 32) -> bytes:
    """Assemble to an object (labels resolved) and take its .text bytes."""
    mode = "+wavefrontsize64" if lanes == 64 else "+wavefrontsize32"
    with tempfile.TemporaryDirectory() as d:
        obj, raw = Path(d) / "a.o", Path(d) / "a.bin"
        subprocess.run(["llvm-mc-19", "-arch=amdgcn", f"-mcpu={target}", f"-mattr={mode}", "-filetype=obj",
                        "-o", str(obj)], input=text + "\n", capture_output=True, text=True, check=True)
        subprocess.run(["llvm-objcopy-19", "-O", "binary", "--only-section=.text", str(obj), str(raw)], check=True)
        return raw.read_bytes()


def run(text: str, target: str = "gfx1100", waves: int = 1, lanes: int = 32, vgprs: int = 16, lds: int = 0,
        vm: AddressSpace | None = None, scratch=None, setup=None) -> list[Wave]:
    code = asm(text, target, lanes) + asm("s_code_end", target) * 4
    prog = Program(code, CODE_VA, 0, target, lanes, vgprs)
    shared = np.zeros(lds, np.uint8)
    ws = [Wave(prog, vm or AddressSpace(), i, shared, scratch or "no scratch in this test", 0) for i in range(waves)]
    for w in ws:
        w.v[0] = np.arange(lanes, dtype=np.uint32) + w.index * lanes  # v0: the flat work-item id
        if setup:
            setup(w)
    run_workgroup(ws)
    return ws


def test_a_scalar_loop_runs_until_its_branch_falls_through():
    w, = run("s_mov_b32 s0, 0\nloop:\ns_add_u32 s0, s0, 1\ns_cmp_lt_u32 s0, 10\ns_cbranch_scc1 loop\ns_endpgm")
    assert w.s[0] == 10 and w.count == 1 + 3 * 10 + 1


def test_exec_masking_keeps_inactive_lanes_and_restores():
    w, = run("""v_mov_b32 v1, 5
v_cmp_gt_u32 vcc_lo, 16, v0
s_and_saveexec_b32 s2, vcc_lo
s_cbranch_execz skip
v_mov_b32 v1, 7
skip:
s_or_b32 exec_lo, exec_lo, s2
v_add_nc_u32 v2, v1, 1
s_endpgm""")
    assert w.v[1].tolist() == [7] * 16 + [5] * 16
    assert w.v[2].tolist() == [8] * 16 + [6] * 16 and w.exec == 0xFFFFFFFF and w.s[2] == 0xFFFFFFFF


def test_execz_branch_skips_a_block_no_lane_runs():
    w, = run("s_mov_b32 exec_lo, 0\ns_cbranch_execz out\ns_mov_b32 s5, 1\nout:\ns_mov_b32 exec_lo, -1\ns_endpgm")
    assert w.s[5] == 0


def test_vopd_halves_read_before_either_writes():
    def setup(w):
        w.v[1], w.v[2] = 11, 22
    w, = run("v_dual_mov_b32 v1, v2 :: v_dual_mov_b32 v2, v1\ns_endpgm", setup=setup)
    assert (w.v[1] == 22).all() and (w.v[2] == 11).all()


def test_lds_two_address_loads_and_a_barrier_between_waves():
    """Each of two waves stores its lane ids to LDS; after the barrier each reads the other wave's values."""
    ws = run("""v_lshlrev_b32 v3, 2, v0
ds_store_b32 v3, v0
s_waitcnt lgkmcnt(0)
s_barrier
v_xor_b32 v4, 0x80, v3
ds_load_2addr_b32 v[5:6], v4 offset1:1
s_waitcnt lgkmcnt(0)
s_endpgm""", waves=2, lds=512)
    assert ws[0].v[5].tolist() == list(range(32, 64)) and ws[1].v[5].tolist() == list(range(32))
    assert ws[0].v[6, :31].tolist() == list(range(33, 64))  # offset1:1 reads the next dword


def test_a_two_address_load_into_its_own_address_register_uses_the_old_address_for_both():
    """ds_load_2addr_b32 v[4:5], v4: the compiler emits this; both dwords come from the address v4 held before."""
    ws = run("""v_lshlrev_b32 v3, 2, v0
v_add_nc_u32 v6, 0x1000, v0
ds_store_b32 v3, v6
s_waitcnt lgkmcnt(0)
v_mov_b32 v4, v3
ds_load_2addr_b32 v[4:5], v4 offset1:1
s_waitcnt lgkmcnt(0)
s_endpgm""", lds=256)
    assert ws[0].v[4].tolist() == [0x1000 + i for i in range(32)]
    assert ws[0].v[5, :31].tolist() == [0x1001 + i for i in range(31)]


def test_gfx12_split_barrier():
    ws = run("""v_lshlrev_b32 v3, 2, v0
ds_store_b32 v3, v0
s_wait_dscnt 0
s_barrier_signal -1
s_barrier_wait -1
v_xor_b32 v4, 0x80, v3
ds_load_b32 v5, v4
s_wait_dscnt 0
s_endpgm""", target="gfx1201", waves=2, lds=256)
    assert ws[0].v[5].tolist() == list(range(32, 64))


def test_an_lds_access_past_the_allocation_faults():
    with pytest.raises(GPUFault, match=r"ds_store_b32.*LDS address 0x40.*64-byte LDS allocation"):
        run("v_lshlrev_b32 v3, 2, v0\nds_store_b32 v3, v0\ns_endpgm", lds=64)


def test_scratch_is_private_per_lane_and_interleaved_by_dword():
    vm = AddressSpace()
    mem = np.zeros(2 * 32 * 64, np.uint8)
    vm.map(0x9000_0000, mem.size, mem)
    w, = run("""v_mov_b32 v3, 4
scratch_store_b32 v3, v0, off offset:8
scratch_load_b32 v6, v3, off offset:8
s_waitcnt vmcnt(0)
s_endpgm""", vm=vm, scratch=(0x9000_0000 + 32 * 64, 64))
    assert w.v[6].tolist() == list(range(32))
    words = mem.view("<u4")
    # private offset 12 of lane l is dword 3 of the lane: base + (3 * 32 + l) * 4
    assert words[32 * 16 + 3 * 32: 32 * 16 + 4 * 32].tolist() == list(range(32))


def test_scratch_without_a_scratch_setup_faults():
    with pytest.raises(GPUFault, match=r"scratch_store_b32.*uses scratch, but no scratch in this test"):
        run("scratch_store_b32 off, v0, off offset:4\ns_endpgm")


def test_s_code_end_must_never_execute():
    with pytest.raises(GPUFault, match=r"s_code_end executed") as e:
        run("s_nop 0")  # falls through into the s_code_end padding
    assert e.value.pc == CODE_VA + 4 and e.value.kind == "illegal instruction"


def test_a_jump_outside_the_code_faults():
    with pytest.raises(GPUFault, match=r"outside the code object"):
        run("s_branch 200\ns_endpgm")


def test_a_trap_faults_naming_it():
    with pytest.raises(GPUFault, match=r"s_trap.*trapped") as e:
        run("s_trap 2\ns_endpgm")
    assert e.value.kind == "trap"


def test_a_barrier_one_wave_never_reaches_is_a_fault_not_a_hang():
    with pytest.raises(GPUFault, match=r"wave 1 ended.*never reach") as e:
        run("v_cmp_eq_u32 vcc_lo, 0, v0\ns_cbranch_vccz done\ns_barrier\ndone:\ns_endpgm", waves=2)
    assert e.value.kind == "barrier"


def test_wave64_lanes_and_vcc_pairs():
    w, = run("v_cmp_gt_u32 vcc, 40, v0\nv_cndmask_b32 v1, 0, 1, vcc\ns_endpgm", lanes=64)
    assert w.v[1].tolist() == [1] * 40 + [0] * 24
    assert (w.s[106], w.s[107]) == (0xFFFFFFFF, 0xFF)


def test_readfirstlane_takes_the_lowest_active_lane():
    w, = run("s_mov_b32 exec_lo, 0xf0\nv_readfirstlane_b32 s7, v0\ns_mov_b32 exec_lo, -1\ns_endpgm")
    assert w.s[7] == 4
