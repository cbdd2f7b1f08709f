"""The wave executor's LDS race detector: two waves of a workgroup touching one LDS byte between two barriers, at
least one writing it, fault as an "lds race" naming both waves, the bytes and both instructions. Hand-assembled
snippets (llvm-mc-19) for each kind of race and for what is not one, the tracker's atomics rule, and the real case:
the tensor layer's matmul built with LLVM's MachineSink on, which sinks LDS loads below a barrier."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from emu.amd.isa.vm import GPUFault
from emu.amd.isa.wave import LDSRaces

sys.path.insert(0, str(Path(__file__).parent))
from test_wave import run  # noqa: E402  (the llvm-mc-19 snippet runner: waves share one LDS, v0 = flat id)

pytestmark = pytest.mark.skipif(shutil.which("llvm-mc-19") is None, reason="llvm-mc-19 assembles the snippets")


def by_wave(w):
    w.s[5] = w.index  # s5: which wave this is, so a snippet can give each wave its part


# wave 0 stores 0x1234 to the LDS dword at 0x100; wave 1 loads it into v4; BETWEEN runs between the two parts
PRODUCER_CONSUMER = """s_cmp_eq_u32 s5, 0
s_cbranch_scc0 between
v_mov_b32 v3, 0x100
v_mov_b32 v5, 0x1234
ds_store_b32 v3, v5
between:
{between}
s_cmp_eq_u32 s5, 1
s_cbranch_scc0 done
v_mov_b32 v3, 0x100
ds_load_b32 v4, v3
s_waitcnt lgkmcnt(0)
done:
s_endpgm"""


def race(text: str, target: str = "gfx1100", lds: int = 512) -> GPUFault:
    with pytest.raises(GPUFault) as e:
        run(text, target=target, waves=2, lds=lds, setup=by_wave)
    assert e.value.kind == "lds race", str(e.value)
    return e.value


def test_a_load_of_what_another_wave_stored_without_a_barrier_is_a_race_naming_both():
    e = race(PRODUCER_CONSUMER.format(between="s_waitcnt lgkmcnt(0)"))
    msg = str(e)
    assert re.search(r"workgroup 0: LDS race on bytes 0x100-0x103: wave 1 ds_load_b32 v4, v3 at pc 0x[0-9a-f]+ reads "
                     r"what wave 0 wrote with ds_store_b32 v3, v5 at pc 0x[0-9a-f]+ since the last barrier "
                     r"\(no s_barrier orders them\)", msg), msg
    assert e.where == "workgroup 0 wave 1" and e.instr.startswith("ds_load_b32")


def test_the_same_with_a_barrier_between_is_no_race():
    ws = run(PRODUCER_CONSUMER.format(between="s_waitcnt lgkmcnt(0)\ns_barrier"), waves=2, lds=512, setup=by_wave)
    assert (ws[1].v[4] == 0x1234).all()


def test_gfx12_split_barrier_orders_them_and_its_absence_is_a_race():
    split = "s_wait_dscnt 0\ns_barrier_signal -1\ns_barrier_wait -1"
    text = PRODUCER_CONSUMER.replace("s_waitcnt lgkmcnt(0)", "s_wait_dscnt 0")
    ws = run(text.format(between=split), target="gfx1201", waves=2, lds=512, setup=by_wave)
    assert (ws[1].v[4] == 0x1234).all()
    e = race(text.format(between="s_wait_dscnt 0"), target="gfx1201")
    assert "wave 1 ds_load_b32" in str(e) and "no s_barrier_signal/s_barrier_wait orders them" in str(e)


def test_a_store_over_what_another_wave_read_is_a_race():
    """Write after read: wave 0 loads the dword, wave 1 then overwrites it in the same epoch."""
    e = race("""v_mov_b32 v3, 0x100
s_cmp_eq_u32 s5, 0
s_cbranch_scc0 writer
ds_load_b32 v4, v3
s_waitcnt lgkmcnt(0)
s_endpgm
writer:
ds_store_b32 v3, v0
s_endpgm""")
    assert re.search(r"LDS race on bytes 0x100-0x103: wave 1 ds_store_b32 v3, v0 at pc \S+ writes what wave 0 read "
                     r"with ds_load_b32 v4, v3", str(e)), str(e)


def test_two_waves_storing_one_byte_is_a_race():
    e = race("v_mov_b32 v3, 0x41\nds_store_b8 v3, v0\ns_endpgm")
    assert re.search(r"LDS race on byte 0x41: wave 1 ds_store_b8 v3, v0 at pc \S+ writes what wave 0 wrote with "
                     r"ds_store_b8 v3, v0", str(e)), str(e)


def test_two_address_forms_are_tracked_per_address():
    """ds_load_2addr_b32: only its second dword (offset1) meets what the other wave stored."""
    e = race("""v_mov_b32 v3, 0x100
s_cmp_eq_u32 s5, 0
s_cbranch_scc0 reader
ds_store_b32 v3, v0 offset:8
s_endpgm
reader:
ds_load_2addr_b32 v[4:5], v3 offset1:2
s_waitcnt lgkmcnt(0)
s_endpgm""")
    assert "LDS race on bytes 0x108-0x10b: wave 1 ds_load_2addr_b32" in str(e), str(e)


def test_disjoint_bytes_same_wave_and_reads_only_are_no_race():
    """Each wave stores its lanes' dwords and reads them back (same wave: never a race); both read one shared dword
    (reads do not race); wave 1 writes byte 0x201 while wave 0 wrote byte 0x200 (bytes, not dwords, are tracked)."""
    ws = run("""v_lshlrev_b32 v3, 2, v0
ds_store_b32 v3, v0
s_waitcnt lgkmcnt(0)
ds_load_b32 v4, v3
v_mov_b32 v6, 0x300
ds_load_b32 v7, v6
v_mov_b32 v8, s5
v_add_nc_u32 v8, 0x200, v8
ds_store_b8 v8, v0
s_waitcnt lgkmcnt(0)
s_endpgm""", waves=2, lds=1024, setup=by_wave)
    assert ws[0].v[4].tolist() == list(range(32)) and ws[1].v[4].tolist() == list(range(32, 64))


def test_exec_masked_lanes_touch_nothing():
    """Wave 1's store to the dword wave 0 loads runs with EXEC = 0: no lane writes it, so no race."""
    run("""v_mov_b32 v3, 0x100
s_cmp_eq_u32 s5, 0
s_cbranch_scc0 writer
ds_load_b32 v4, v3
s_waitcnt lgkmcnt(0)
s_endpgm
writer:
s_mov_b32 exec_lo, 0
ds_store_b32 v3, v0
s_endpgm""", waves=2, lds=512, setup=by_wave)


def test_a_new_workgroup_starts_a_new_epoch():
    """The tracker is reused across workgroups: what one workgroup's waves did must not race with the next's."""
    run("v_mov_b32 v3, 0x100\ns_cmp_eq_u32 s5, 0\ns_cbranch_scc0 out\nds_store_b32 v3, v0\nout:\ns_endpgm",
        waves=2, lds=512, setup=by_wave)
    run("v_mov_b32 v3, 0x100\ns_cmp_eq_u32 s5, 1\ns_cbranch_scc0 out\nds_load_b32 v4, v3\ns_waitcnt lgkmcnt(0)\n"
        "out:\ns_endpgm", waves=2, lds=512, setup=by_wave)


def test_one_wave_workgroups_are_not_tracked():
    ws = run("v_mov_b32 v3, 0x100\nds_store_b32 v3, v0\nds_load_b32 v4, v3\ns_waitcnt lgkmcnt(0)\ns_endpgm", lds=512)
    assert ws[0].races is None


def test_atomics_do_not_race_with_each_other_but_with_plain_accesses():
    """The tracker's rule for read-modify-writes (ds_add_u32 ...), driven directly: the executor runs no LDS
    atomics yet."""
    prog = SimpleNamespace(instrs={}, base=0x1000, gfx12=False)
    w0, w1, w2 = (SimpleNamespace(index=i, group=4, prog=prog, lds=np.zeros(64, np.uint8)) for i in range(3))
    t = LDSRaces.for_workgroup([w0, w1, w2])
    dword = np.arange(16, 20)
    t.atomic(w0, dword, 0x10)
    t.atomic(w1, dword, 0x10)
    t.atomic(w0, dword, 0x10)
    t.load(w2, np.arange(32, 36), 0x20)  # other bytes
    with pytest.raises(GPUFault, match=r"workgroup 4: LDS race on bytes 0x10-0x13: wave 2 an LDS instruction at pc "
                                       r"0x1020 reads what wave 0 atomically updated with"):
        t.load(w2, dword, 0x20)
    t.next_epoch()
    t.store(w2, dword, 0x30)  # a barrier between: fine
    t.atomic(w2, dword, 0x40)  # its own store, then its own atomic: fine
    with pytest.raises(GPUFault, match=r"wave 1 .* atomically updates what wave 2 wrote with"):
        t.atomic(w1, dword, 0x10)
    t.next_epoch()
    t.load(w0, dword, 0x50)
    with pytest.raises(GPUFault, match=r"wave 1 .* atomically updates what wave 0 read with"):
        t.atomic(w1, dword, 0x10)


# --- the real case: the tensor layer's tiled matmul, built with and without MachineSink ---

def _barriers_back_to_back(binary: bytes, tmp: Path) -> bool:
    """Whether the code has two s_barrier with only waits and cache invalidates between: MachineSink's signature
    (the LDS loads between them were sunk below the second)."""
    obj = tmp / "kernel.hsaco"
    obj.write_bytes(binary)
    text = subprocess.run(["llvm-objdump-19", "-d", "--mcpu=gfx1100", str(obj)], capture_output=True, text=True,
                          check=True).stdout
    ops = [ln.split()[0] for ln in text.splitlines() if ln.startswith("\t") and ln.split()]
    ops = [o for o in ops if not (o.startswith("s_waitcnt") or o.startswith("buffer_gl") or o == "s_nop")]
    return any(a == b == "s_barrier" for a, b in zip(ops, ops[1:]))


def _matmul_on_emulated_gpu(tmp: Path, monkeypatch, sink: bool):
    """(result or the DeviceFaultError, the emulated machine, the compiled kernels) of (65,33) @ (33,64)."""
    import compiler
    import compiler.toolchain as toolchain
    import tensor.runtime as runtime
    from compiler import KernelCache
    from drivers.amd.kfd import KFDDevice
    from emu.machine import emulated_system
    from hcq.device import DeviceFaultError
    from tensor import DEVICES, Tensor
    if sink:  # the toolchain option off: in codegen, and in the cache key compile_kernel builds from it
        monkeypatch.setattr(toolchain, "GPU_CODEGEN_OPTIONS", ())
        monkeypatch.setattr(compiler, "GPU_CODEGEN_OPTIONS", ())
    built = []
    compile_kernel = runtime.compile_kernel

    def recording(*args, **kw):
        built.append(compile_kernel(*args, **kw))
        return built[-1]
    monkeypatch.setattr(runtime, "compile_kernel", recording)
    system = emulated_system("amd", ("gfx1100",), private=True, kernels="isa")
    name = "AMD:7"  # a name of its own: the tensor tests' devices may be open in this process
    rt = DEVICES.add(name, KFDDevice(0, system))
    rt.cache = KernelCache(tmp / ("sink" if sink else "nosink"))  # fresh: nothing built the other way is reused
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((65, 33)).astype(np.float32), rng.standard_normal((33, 64)).astype(np.float32)
    try:
        try:
            out = (Tensor(a, name) @ Tensor(b, name)).numpy()
            result = (out, a @ b)
        except DeviceFaultError as e:
            result = e
    finally:
        with DEVICES._lock:
            DEVICES._open.pop(name, None)
        try:
            rt.close()
        except Exception:
            pass
    return result, system, [k for k in built if k.name.startswith("matmul")]


@pytest.mark.skipif(shutil.which("llvm-objdump-19") is None, reason="llvm-objdump-19 shows the barriers")
def test_machine_sink_matmul_races_and_the_toolchain_option_fixes_it(tmp_path, monkeypatch):
    with monkeypatch.context() as mp:
        result, system, kernels = _matmul_on_emulated_gpu(tmp_path, mp, sink=True)
    assert kernels, "no matmul kernel was built"
    if not any(_barriers_back_to_back(k.binary, tmp_path) for k in kernels):
        pytest.skip("this LLVM's MachineSink no longer sinks the matmul's LDS loads below its barrier")
    assert not isinstance(result, tuple), "the MachineSink build ran without an LDS race"
    message = system.kfd.faults[-1]["message"]
    assert "lds race" in message.lower() and "since the last barrier" in message, message
    assert re.search(r"wave \d+ ds_load\S* .* reads what wave \d+ wrote with ds_store", message), message

    result, system, kernels = _matmul_on_emulated_gpu(tmp_path, monkeypatch, sink=False)
    assert not any(_barriers_back_to_back(k.binary, tmp_path) for k in kernels)
    assert isinstance(result, tuple), f"{result}: {system.kfd.faults[-1:]}"
    np.testing.assert_allclose(*result, rtol=1e-5, atol=1e-5)
