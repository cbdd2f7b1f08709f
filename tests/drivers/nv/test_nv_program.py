"""NVProgram from real cubins (ptxas): the whole file uploaded, the QMD template, constant bank 0's layout, the launch
the compute queue encodes (and patches for replay), and what is refused at load."""
from __future__ import annotations

import itertools
import struct
from types import SimpleNamespace

import pytest

from autogen import nv_classes as C
from compiler import KernelCache, compile_kernel
from compiler.cubin import Cubin
from compiler.ir import Kernel, f32
from compiler.ptxas import ptxas_missing
from drivers.nv import methods as m
from drivers.nv import program as P
from drivers.nv import qmd as Q
from drivers.nv.program import NVProgram, ProgramLoadError
from drivers.nv.queue import NVComputeQueue
from drivers.system import MAP_ANONYMOUS, MAP_PRIVATE, LinuxSystem
from hcq.buffer import Buffer, MemFlags
from hcq.queue import Var

pytestmark = pytest.mark.skipif(ptxas_missing() is not None, reason=str(ptxas_missing()))
_LINUX = LinuxSystem()
_hints = itertools.count()
SM = {"sm_90": ("V04_00", C.HOPPER_COMPUTE_A), "sm_86": ("V03_00", C.AMPERE_COMPUTE_B)}


class FakeDevice:
    """What NVProgram and NVComputeQueue use of an NVDevice, over host memory below 2**40."""

    shared_window, local_window = 0x7E01_0000_0000, 0x7E00_0000_0000

    def __init__(self, target="sm_90"):
        self.name, self.target = f"fake {target}", target
        self.qmd_version, compute = SM[target]
        self.classes = SimpleNamespace(channel=C.HOPPER_CHANNEL_GPFIFO_A, compute=compute, copy=C.HOPPER_DMA_COPY_A)
        self.live: dict[int, tuple[Buffer, int]] = {}
        self.local_requests: list[int] = []
        self._timeline, self.profiling = None, False

    def alloc(self, size, flags=MemFlags.DEVICE_LOCAL, align=0):
        rounded = -(-size // 4096) * 4096
        va = _LINUX.mmap(-1, rounded, 3, MAP_PRIVATE | MAP_ANONYMOUS, 0, 0x38_0000_0000 + next(_hints) * (1 << 24))
        buf = Buffer(va, size, self, flags, host_addr=va)
        self.live[va] = (buf, rounded)
        return buf

    def free(self, buf):
        _, rounded = self.live.pop(buf.va)
        _LINUX.munmap(buf.va, rounded)
        buf.mark_freed()

    def local_memory_for(self, per_thread, kernel=""):
        self.local_requests.append(per_thread)
        return m.set_shader_local_memory(0x1000_0000)


def scale_kernel(local=(32, 1, 1)):
    k = Kernel("scale", local_size=local)
    x, y = k.buffer("x", f32), k.buffer("y", f32, writable=True)
    n = k.scalar("n")
    i = k.global_id(0)
    with k.if_(i < n):
        y[i] = x[i] * 2.0 + 1.0
    return k


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return KernelCache(tmp_path_factory.mktemp("nvcache"))


def shared_kernel():
    """A kernel with a shared array and a barrier: out[i] = tile[(i + 1) % 64]."""
    k = Kernel("rotate", local_size=(64, 1, 1))
    inp, out = k.buffer("inp", f32), k.buffer("out", f32, writable=True)
    tile = k.local_array(f32, 64)
    i = k.local_id(0)
    tile[i] = inp[i]
    k.barrier()
    out[i] = tile[(i + 1) % 64]
    return k


@pytest.fixture(scope="module")
def built(cache):
    return {sm: compile_kernel(scale_kernel(), sm, cache) for sm in SM}


@pytest.fixture(scope="module")
def shared(cache):
    return compile_kernel(shared_kernel(), "sm_90", cache)


@pytest.mark.parametrize("sm", sorted(SM))
def test_the_whole_cubin_is_uploaded_and_the_qmd_points_at_the_kernel_text(built, sm):
    ck, dev = built[sm], FakeDevice(sm)
    prog = NVProgram(dev, ck.cubin, ck.name, compiled=ck)
    assert bytes(prog.image.cpu_view()[:len(ck.cubin)]) == ck.cubin
    text = Cubin(ck.cubin).by_name[".text.scale"]
    assert prog.code_va == prog.image.va + text.offset
    version = SM[sm][0]
    d = Q.decode_qmd(version, prog.qmd_base.to_bytes(Q.size(version), "little"))
    assert d["qmd_major_version"] == Q.MAJOR[version]
    assert d["program_address"] == prog.code_va and d["block"] == (32, 1, 1)
    assert d["register_count"] == ck.cubin_kernel.registers
    assert d["cbuf0_size"] == prog.cbank0_size and d["constant_buffer_valid[0]"] == 1
    assert d["constant_buffer_invalidate[0]"] == 1 and d["invalidate_shader_data_cache"] == 1
    assert d["shared_memory_size"] >= ck.cubin_kernel.shared_window_bytes
    if version == "V04_00":
        assert d["qmd_type"] == 2  # GRID_CTA
    prog.free()
    assert not dev.live


def test_constant_bank_0_is_the_driver_area_then_the_parameters(built):
    ck, dev = built["sm_90"], FakeDevice()
    prog = NVProgram(dev, ck.cubin, ck.name, compiled=ck)
    assert prog.param_offset == 0x210 == ck.cubin_kernel.param_bank_offset
    block = prog.pack_args(0x40_0000_1000, 0x40_0000_2000, 100, global_size=(4, 1, 1))
    assert len(block) == prog.cbank0_size and prog.cbank0_size % 16 == 0
    assert struct.unpack_from("<3I", block, 0) == (32, 1, 1)  # %ntid
    assert struct.unpack_from("<3I", block, 0xC) == (4, 1, 1)  # %nctaid
    assert struct.unpack_from("<QQI", block, 0x18) == (dev.shared_window, dev.local_window, P.STACK_TOP)
    params = ck.pack_args(0x40_0000_1000, 0x40_0000_2000, 100)
    assert block[0x210:0x210 + ck.cubin_kernel.param_bank_size] == params[:ck.cubin_kernel.param_bank_size]
    with pytest.raises(ProgramLoadError, match="takes 3 parameters"):
        prog.pack_args(1, 2)


def launched_qmd(q, version, index=0):
    raw = q.streams["qmd"].tobytes()
    size = Q.size(version)
    at = index * (-(-size // 256) * 256)
    return Q.decode_qmd(version, raw[at:at + size])


@pytest.mark.parametrize("sm", sorted(SM))
def test_exec_launches_a_qmd_with_grid_and_constant_bank_and_replays_by_patching(built, sm):
    ck, dev = built[sm], FakeDevice(sm)
    version = SM[sm][0]
    prog = NVProgram(dev, ck.cubin, ck.name, compiled=ck)
    q = NVComputeQueue(dev).exec(prog, 0x40_0012_3400, (7, 2, 3), (32, 1, 1))
    got = m.decode(list(q.cmd), {m.SUBCH_COMPUTE: SM[sm][1]})
    assert [x.name for x in got] == ["SEND_PCAS_A", "SEND_SIGNALING_PCAS2_B"]
    assert q._fixups == [(1, 0)], "the QMD address is filled in at submit"
    d = launched_qmd(q, version)
    assert d["grid"] == (7, 2, 3) and d["cbuf0_address"] == 0x40_0012_3400 and d["program_address"] == prog.code_va
    # Replay: a Var grid and a Var argument address, patched as QMD bit fields (neighbours untouched).
    r = NVComputeQueue(dev).exec(prog, Var("args"), (Var("gx"), 1, 1), (32, 1, 1))
    assert {"args", "gx"} <= r.vars
    for args, gx in ((0x40_0000_0100, 5), (0x7F_FFFF_FF00, 0xFFFF_FFFF)):
        r.apply({"args": args, "gx": gx})
        d = launched_qmd(r, version)
        assert d["grid"] == (gx, 1, 1) and d["cbuf0_address"] == args
        assert d["cbuf0_size"] == prog.cbank0_size and d["constant_buffer_valid[0]"] == 1
    bound = r.bind({"args": 0x40_0000_0200, "gx": 9})
    assert launched_qmd(bound, version)["grid"] == (9, 1, 1) and bound._fixups == r._fixups
    # Staged bytes: a Var the submit fills with the staged block's address.
    s = NVComputeQueue(dev).exec(prog, prog.pack_args(1, 2, 3), (1, 1, 1), (32, 1, 1))
    assert s.staged and s.staged[0][0] in s.vars
    with pytest.raises(Exception, match="pack_args"):
        NVComputeQueue(dev).exec(prog, ck.pack_args(1, 2, 3), (1, 1, 1), (32, 1, 1))  # parameters alone: no bank 0
    with pytest.raises(Exception, match="aligned"):
        NVComputeQueue(dev).exec(prog, 0x40_0000_0004, (1, 1, 1), (32, 1, 1))
    with pytest.raises(Exception, match="local size"):
        NVComputeQueue(dev).exec(prog, 0x40_0000_0000, (1, 1, 1), (64, 1, 1))


def test_shared_memory_and_barriers_reach_the_qmd(shared):
    dev = FakeDevice()
    prog = NVProgram(dev, shared.cubin, shared.name, compiled=shared)
    k = shared.cubin_kernel
    d = Q.decode_qmd("V04_00", prog.qmd_base.to_bytes(Q.size("V04_00"), "little"))
    assert k.shared_window_bytes >= 256 and d["shared_memory_size"] == -(-k.shared_window_bytes // 256) * 256
    assert d["barrier_count"] == k.barriers >= 1
    assert d["target_sm_config_shared_mem_size"] == P._sm_config(8) and d["max_sm_config_shared_mem_size"] == \
        P._sm_config(228)


def test_two_launches_get_two_aligned_qmds(built):
    ck, dev = built["sm_90"], FakeDevice()
    prog = NVProgram(dev, ck.cubin, ck.name, compiled=ck)
    q = NVComputeQueue(dev).exec(prog, 0x40_0000_0000, (1, 1, 1), (32, 1, 1)).exec(prog, 0x40_0000_1000, (2, 1, 1),
                                                                                   (32, 1, 1))
    assert [f[1] for f in q._fixups] == [0, 512]
    assert launched_qmd(q, "V04_00", 1)["grid"] == (2, 1, 1)


def test_raw_cubin_bytes_load_by_name(built):
    ck, dev = built["sm_90"], FakeDevice()
    prog = NVProgram(dev, ck.cubin, "scale")
    assert prog.local_size == (32, 1, 1)  # from the cubin's .reqntid
    blob = prog.pack_args(0x1000, 0x2000, 5)
    assert struct.unpack_from("<QQi", blob, 0x210) == (0x1000, 0x2000, 5)


@pytest.mark.parametrize("change, match", [
    (dict(target="sm_86"), "compile it for sm_86"),
    (dict(local=(64, 1, 1)), r"requires blocks of \(32, 1, 1\)"),
    (dict(shared=16), "shared memory"),
    (dict(registers=1), "registers per thread"),
])
def test_what_a_launch_cannot_serve_is_refused_at_load(built, shared, monkeypatch, change, match):
    ck = shared if "shared" in change else built["sm_90"]
    dev = FakeDevice(change.get("target", "sm_90")) if change.get("target") != "sm_86" else FakeDevice("sm_86")
    if "shared" in change:
        monkeypatch.setitem(P.SHARED_PER_BLOCK, "sm_90", change["shared"])
    if "registers" in change:
        monkeypatch.setattr(P, "MAX_REGISTERS", change["registers"])
    with pytest.raises(ProgramLoadError, match=match) as e:
        NVProgram(dev, ck.cubin, ck.name, change.get("local"), compiled=ck)
    assert ck.name in str(e.value)
    assert not dev.live, "nothing stays allocated after a refusal"


def test_a_kernel_without_a_block_shape_needs_one(built, monkeypatch):
    ck, dev = built["sm_90"], FakeDevice()
    real = Cubin.kernel

    def no_reqntid(self, name):
        k = real(self, name)
        k.reqntid = None
        return k
    monkeypatch.setattr(Cubin, "kernel", no_reqntid)
    with pytest.raises(ProgramLoadError, match="local_size"):
        NVProgram(dev, ck.cubin, "scale")
    assert NVProgram(dev, ck.cubin, "scale", (16, 1, 1)).local_size == (16, 1, 1)


def test_local_memory_is_requested_from_the_device_and_encoded_before_the_launch(built, monkeypatch):
    ck, dev = built["sm_90"], FakeDevice()
    real = Cubin.kernel

    def with_stack(self, name):
        k = real(self, name)
        k.local_bytes = 40
        return k
    monkeypatch.setattr(Cubin, "kernel", with_stack)
    prog = NVProgram(dev, ck.cubin, "scale", compiled=ck)
    assert dev.local_requests == [48] and prog.local_per_thread == 48
    d = Q.decode_qmd("V04_00", prog.qmd_base.to_bytes(Q.size("V04_00"), "little"))
    assert d["local_memory_high_size"] == 48
    q = NVComputeQueue(dev).exec(prog, 0x40_0000_0000, (1, 1, 1), (32, 1, 1))
    names = [x.name for x in m.decode(list(q.cmd), {m.SUBCH_COMPUTE: C.HOPPER_COMPUTE_A})]
    assert names[:2] == ["SET_SHADER_LOCAL_MEMORY_A", "SET_SHADER_LOCAL_MEMORY_B"] and names[-2] == "SEND_PCAS_A"


@pytest.mark.parametrize("sm", sorted(SM))
def test_a_var_in_many_qmds_is_patched_in_every_one_and_nothing_else(built, sm):
    """Replays patch a field carried by many launches with one masked store per field (queue._plan_fields): every
    QMD gets the new grid and argument address, and the fields around them stay as encoded."""
    ck, dev = built[sm], FakeDevice(sm)
    version = SM[sm][0]
    prog = NVProgram(dev, ck.cubin, ck.name, compiled=ck)
    n = 40
    q = NVComputeQueue(dev)
    for i in range(n):
        q.exec(prog, Var("args") + 0x100 * i, (Var("gx"), i + 1, 1), (32, 1, 1))
    for args, gx in ((0x40_0000_1000, 3), (0x7F_FFFF_0000, 0xFFFF_FFFF)):
        q.apply({"args": args, "gx": gx})
        for i in range(n):
            d = launched_qmd(q, version, i)
            assert d["grid"] == (gx, i + 1, 1) and d["cbuf0_address"] == args + 0x100 * i
            assert d["program_address"] == prog.code_va and d["cbuf0_size"] == prog.cbank0_size
