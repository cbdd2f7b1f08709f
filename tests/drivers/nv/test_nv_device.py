"""NVDevice end to end on the emulated RM/UVM and GPU: bring-up, classes by architecture, memory, signals and sleeping
waits, copies, faults and recovery, hang reports, RM errors, the device lock."""
from __future__ import annotations

import ctypes
import mmap
import threading

import numpy as np
import pytest

from autogen import nv_classes as C
from drivers.lock import DeviceBusyError
from drivers.nv.device import LOCAL_WINDOW, NVDevice
from drivers.nv.rm import NVError
from hcq.buffer import MemFlags
from hcq.device import DeviceFaultError
from hcq.errors import InvalidHandleError, OutOfMemoryError
from hcq.signal import SignalTimeoutError

HOST_VRAM = MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE


def machine(targets=("sm_90",), **options):
    from emu.machine import emulated_system
    return emulated_system("nv", targets, private=True, **options)


@pytest.fixture
def dev():
    system = machine()
    d = NVDevice(0, system)
    yield d
    d.close()
    system.nv.close()


def sync(d, q):
    q.signal(d.timeline, d.next_timeline_value()).submit(d)
    d.synchronize(timeout=10)


@pytest.mark.parametrize("sm, channel, compute, copy, qmd", [
    ("sm_86", C.AMPERE_CHANNEL_GPFIFO_A, C.AMPERE_COMPUTE_B, C.AMPERE_DMA_COPY_B, "V03_00"),
    ("sm_89", C.AMPERE_CHANNEL_GPFIFO_A, C.ADA_COMPUTE_A, C.AMPERE_DMA_COPY_B, "V03_00"),
    ("sm_90", C.HOPPER_CHANNEL_GPFIFO_A, C.HOPPER_COMPUTE_A, C.HOPPER_DMA_COPY_A, "V04_00"),
])
def test_bring_up_chooses_classes_by_architecture(sm, channel, compute, copy, qmd):
    system = machine((sm,))
    try:
        with NVDevice(0, system) as d:
            assert d.target == sm and d.qmd_version == qmd
            assert (d.classes.channel, d.classes.compute, d.classes.copy) == (channel, compute, copy)
            facts = d.describe()
            assert facts["vram_bytes"] > 0 and facts["bar1_bytes"] > 0 and facts["sm_count"] > 0
            assert facts["uuid"].startswith("GPU-") and len(d.uuid) == 16
            sig = d.new_signal(0)
            d.compute_queue().signal(sig, 7).submit(d)
            sig.wait(7, timeout=10)
    finally:
        system.nv.close()


def test_host_visible_memory_is_mapped_at_its_gpu_address(dev):
    buf = dev.alloc(3 * 4096 + 5, HOST_VRAM)
    assert buf.host_addr == buf.va and buf.va % 4096 == 0
    sysmem = dev.alloc(100, MemFlags.HOST_VISIBLE)
    assert sysmem.host_addr == sysmem.va
    hidden = dev.alloc(4096, MemFlags.DEVICE_LOCAL)
    assert hidden.host_addr is None and hidden.cpu_view() is None
    buf.cpu_view()[:4] = b"abcd"
    assert ctypes.string_at(buf.va, 4) == b"abcd"
    assert buf.va + buf.size <= 1 << 40, "QMDs and pushbuffers need addresses below 2**40"
    assert not (LOCAL_WINDOW <= buf.va < LOCAL_WINDOW + (1 << 32))


def test_freed_memory_returns_its_address_and_double_free_is_an_error(dev):
    a = dev.alloc(1 << 16, HOST_VRAM)
    va = a.va
    dev.free(a)
    with pytest.raises(InvalidHandleError, match="not a live allocation"):
        dev.free(a)
    b = dev.alloc(1 << 16, HOST_VRAM)
    assert b.va == va, "the heap hands the freed range out again"
    b.cpu_view()[:] = b"\x11" * (1 << 16)  # its CPU mapping is live again at the same address


def test_out_of_vram_names_vram():
    system = machine(vram_limit=8 << 20)
    try:
        with NVDevice(0, system) as d:
            bufs = []
            with pytest.raises(OutOfMemoryError, match="out of VRAM"):
                for _ in range(64):
                    bufs.append(d.alloc(1 << 20, MemFlags.DEVICE_LOCAL))
            for b in bufs:
                d.free(b)
            d.free(d.alloc(1 << 20, MemFlags.DEVICE_LOCAL))  # freeing made room again
    finally:
        system.nv.close()


def test_copy_engine_copies_between_vram_sysmem_and_mapped_host_memory(dev):
    n = 3 * 4096
    host = mmap.mmap(-1, n)
    arr = np.frombuffer(host, np.uint8)
    arr[:] = np.arange(n) % 251
    pinned = dev.map_host(ctypes.addressof(ctypes.c_char.from_buffer(host)), n)
    assert pinned.host_addr != pinned.va
    vram, back = dev.alloc(n, MemFlags.DEVICE_LOCAL), dev.alloc(n, MemFlags.HOST_VISIBLE)
    sync(dev, dev.copy_queue().copy(vram.va, pinned.va, n).memory_barrier().copy(back.va, vram.va, n))
    assert bytes(back.cpu_view()) == host[:]
    dev.free(pinned)
    del arr


def test_signals_carry_64_bit_values_and_timestamps(dev):
    sig = dev.new_signal(0)
    for kind in ("compute", "copy"):
        value = 2**63 + 2**32 + (3 if kind == "compute" else 4)
        getattr(dev, f"{kind}_queue")().signal(sig, value).submit(dev)
        sig.wait(value, timeout=10)
        assert sig.value == value and sig.timestamp > 0
    stamps = [dev.new_signal(0) for _ in range(3)]
    q = dev.compute_queue()
    for s in stamps:
        q.timestamp(s)
    sync(dev, q)
    assert all(s.timestamp > 0 for s in stamps) and [s.timestamp for s in stamps] == sorted(s.timestamp for s in stamps)


def test_a_sleeping_wait_wakes_on_the_non_stall_interrupt(dev, monkeypatch):
    gate, done = dev.new_signal(0), dev.new_signal(0)
    polls = []
    real_poll = dev.system.poll

    def poll(fd, events, ms):
        got = real_poll(fd, events, ms)
        polls.append((fd, got))
        return got
    monkeypatch.setattr(dev.system, "poll", poll)
    dev.compute_queue().wait(gate, 2**32 + 1).signal(done, 1).submit(dev)
    threading.Timer(0.3, lambda: setattr(gate, "value", 2**32 + 1)).start()
    done.wait(1, timeout=10)
    assert polls and {fd for fd, _ in polls} == {dev.fd_event}, "the wait slept on the OS event fd"
    assert any(got for _, got in polls), "the non-stall interrupt's event woke a sleeping poll"


def test_a_copy_to_an_unmapped_address_faults_with_the_address_then_recovers(dev):
    src = dev.alloc(64, HOST_VRAM)
    dev.copy_queue().copy(0x10, src.va, 64).signal(dev.timeline, dev.next_timeline_value()).submit(dev)
    with pytest.raises(DeviceFaultError) as e:
        dev.synchronize(timeout=30)
    msg = str(e.value)
    assert "page fault" in msg and "0x10" in msg and "outside every buffer" in msg and "copy" in msg
    with pytest.raises(DeviceFaultError, match="faulted"):
        dev.alloc(64, HOST_VRAM)
    dev.recover()
    dst = dev.alloc(64, HOST_VRAM)
    src.cpu_view()[:] = b"\x42" * 64
    sync(dev, dev.copy_queue().copy(dst.va, src.va, 64))
    assert bytes(dst.cpu_view()) == b"\x42" * 64


def test_a_hung_engine_gives_a_hang_report_with_decoded_methods(dev):
    dev.stall("compute")
    sig = dev.new_signal(0)
    dev.compute_queue().signal(sig, 1).signal(dev.timeline, dev.next_timeline_value()).submit(dev)
    with pytest.raises(SignalTimeoutError) as e:
        dev.synchronize(timeout=0.3)
    report = str(e.value)
    assert "NV.compute" in report and "not consumed" in report and "SEM_EXECUTE" in report and "NOT DONE" in report
    dev.stall("compute", on=False)
    dev.recover()
    sync(dev, dev.compute_queue().signal(sig, 2))
    assert sig.value == 2


def test_rm_errors_name_the_call_the_object_and_the_status(dev):
    with pytest.raises(NVError, match=r"RM_ALLOC .* under 0x[0-9a-f]+ .*failed: NV_ERR_INVALID_CLASS"):
        dev.rm.alloc(dev.channel_handles[0], C.AMPERE_COMPUTE_A)
    with pytest.raises(NVError, match=r"RM_CONTROL .*failed: NV_ERR_"):
        dev.rm.control(0xDEAD, 0x20800110)


def test_a_gpu_is_opened_once():
    system = machine()
    try:
        with NVDevice(0, system):
            with pytest.raises(DeviceBusyError):
                NVDevice(0, system, lock_wait=0)
    finally:
        system.nv.close()


def test_stall_is_refused_on_real_hardware(dev, monkeypatch):
    monkeypatch.setattr(dev.system, "emulated", False)
    with pytest.raises(NVError, match="real GPU"):
        dev.stall("compute")


def test_a_dead_channel_is_a_channel_error_raised_on_the_next_wait(dev):
    dev.system.nv.kill_channel(0, dev.compute_channel.token)
    with pytest.raises(DeviceFaultError, match="channel error.*compute channel"):
        sync(dev, dev.compute_queue())
    dev.recover()
    sync(dev, dev.compute_queue())


def test_a_method_to_an_unbound_subchannel_is_reported_not_swallowed(dev):
    from drivers.nv import methods as m
    q = dev.compute_queue()
    q._words(m.inc(6, 0x300, 1))  # nothing was bound to subchannel 6 with SET_OBJECT
    with pytest.raises(DeviceFaultError) as e:
        sync(dev, q)
    assert e.value.fault.kind in ("bad packet", "channel error") and e.value.fault.queue == "NV.compute"
    dev.recover()
    sync(dev, dev.compute_queue())


def test_local_memory_backing_is_set_up_once_and_grows(dev):
    from drivers.nv import methods as m
    first = dev.local_memory_for(64)
    assert dev.local_memory_for(32) is first
    bigger = dev.local_memory_for(1024)
    names = [x.name for x in m.decode(bigger, {m.SUBCH_COMPUTE: dev.classes.compute})]
    assert names == ["SET_SHADER_LOCAL_MEMORY_A", "SET_SHADER_LOCAL_MEMORY_B", "SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A",
                     "SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_B", "SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_C"]
    q = dev.compute_queue()
    q._words(bigger)  # the engine takes them (a launch of a kernel with local memory encodes them first)
    sync(dev, q)


def test_threads_submitting_at_once_all_land(dev):
    srcs = [dev.alloc(4096, HOST_VRAM) for _ in range(4)]
    dsts = [dev.alloc(4096, HOST_VRAM) for _ in range(4)]
    for k, s in enumerate(srcs):
        s.cpu_view()[:] = bytes([k + 1]) * 4096
    errors = []

    def work(k):
        try:
            for i in range(25):
                kind = dev.copy_queue() if i % 2 else dev.compute_queue()
                if i % 2:
                    kind.copy(dsts[k].va + 64 * (i % 64), srcs[k].va, 64)
                dev.submit(kind)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    dev.synchronize(timeout=30)
    assert dev.timeline.value == dev.timeline_value == 100
    for k, d in enumerate(dsts):
        assert bytes(d.cpu_view()[64:128]) == bytes([k + 1]) * 64
