"""The HCQ contract suite: the same tests against every HCQ device there is.

A new driver is done when it passes these. The devices are the CPU device, the emulated AMD GPUs (gfx11 and
gfx12), and every real GPU this machine has, found the way the drivers find them (KFD's topology for AMD);
with none, a `real` case is skipped with the reason, so the suite says what it did not run. Each device fixture
yields an open device; programs are loaded through `load_program`, which every driver provides. Tests that need
fault injection (a stalled engine, a small memory limit) skip on real hardware, which cannot be told to fail.
"""
from __future__ import annotations

import ctypes
import threading
import time

import numpy as np
import pytest

from hcq.buffer import MemFlags
from hcq.device import DeviceFaultError
from hcq.errors import OutOfMemoryError
from hcq.queue import QueueBuildError, Var
from hcq.signal import SignalTimeoutError


def open_cpu(small: bool = False):
    from drivers.cpu.device import CPUDevice
    return CPUDevice(arena_size=1 << 22) if small else CPUDevice()


def open_amd(small: bool = False, target: str = "gfx1100"):
    """An emulated AMD GPU behind the emulated amdkfd, on a private machine (tests may hold several at once and
    must not meet other processes); small rings so ring wraps come quickly."""
    from drivers.amd.kfd import KFDDevice
    from emu.machine import emulated_system
    options = {"vram_limit": 16 << 20} if small else {}
    system = emulated_system("amd", (target,), private=True, **options)
    return KFDDevice(0, system, ring_size=4096)


def open_amd_gfx12(small: bool = False):
    return open_amd(small, "gfx1201")


def open_nv(small: bool = False, target: str = "sm_90"):
    """An emulated NVIDIA GPU behind the emulated RM and UVM, on a private machine; a small GPFIFO ring so ring wraps
    come quickly."""
    from drivers.nv.device import NVDevice
    from emu.machine import emulated_system
    options = {"vram_limit": 16 << 20} if small else {}
    system = emulated_system("nv", (target,), private=True, **options)
    return NVDevice(0, system, ring_entries=64)


def open_nv_ampere(small: bool = False):
    return open_nv(small, "sm_86")


def real_devices() -> tuple[dict, str]:
    """Openers for the real GPUs here, named as users name them, and why there are none when there are none."""
    from drivers.amd.topology import read_topology
    from drivers.registry import nv_gpu_count
    from drivers.system import LinuxSystem
    system = LinuxSystem()
    nodes = read_topology(system)
    nv_count = nv_gpu_count(system)
    if not nodes and not nv_count:
        return {}, ("no real GPU on this machine (KFD lists none under /sys/class/kfd/kfd/topology/nodes, and there is "
                    "no /dev/nvidiactl)")

    def opener(index: int, vendor: str):
        def open_real(small: bool = False):
            if small:
                pytest.skip("a real GPU has no memory limit to inject")
            if vendor == "nv":
                from drivers.nv.device import NVDevice
                return NVDevice(index, system)
            from drivers.amd.kfd import KFDDevice
            return KFDDevice(index, system)
        return open_real
    found = {f"AMD:{i} {n.name} (real)": opener(i, "amd") for i, n in enumerate(nodes)}
    found.update({f"NVIDIA:{i} (real)": opener(i, "nv") for i in range(nv_count)})
    return found, ""


REAL, NO_REAL = real_devices()
# NVIDIA devices are named "NVIDIA ..." so that `pytest -k nvidia` selects them (-k is case-blind: "nv" would also
# match "env" and "inverse").
DEVICES = {"CPU": open_cpu, "AMD": open_amd, "AMD gfx1201": open_amd_gfx12, "NVIDIA sm_90": open_nv,
           "NVIDIA sm_86": open_nv_ampere, **REAL}
PARAMS = sorted(DEVICES) + ([] if REAL else [pytest.param("real", marks=pytest.mark.skip(reason=NO_REAL))])


def inject_hang(dev) -> None:
    """Make the compute engine stop consuming work, the way each driver's hardware can be told to."""
    if not getattr(getattr(dev, "system", None), "emulated", True):
        pytest.skip("a real GPU cannot be told to hang")
    if hasattr(dev, "stall"):
        dev.stall("compute")
    else:
        dev.system.kfd.stall(dev.compute_ring.queue_id)


def close_device(dev) -> None:
    """Close the device, and the private emulated NVIDIA machine it was opened on (its engine threads and pools)."""
    dev.close()
    nv = getattr(getattr(dev, "system", None), "nv", None)
    if nv is not None and getattr(dev.system, "emulated", False):
        nv.close()


@pytest.fixture(params=PARAMS)
def device(request):
    dev = DEVICES[request.param]()
    yield dev
    close_device(dev)


class AddOne:
    """A host program for the contract: out[i] = a[i] + 1.0 over a kernarg block (out, a, n).

    Compiled kernels replace it once the compiler lands; what it tests is the exec path: program
    handle, kernel-argument memory, and the launch grid reaching the engine.
    """
    name = "add_one"

    def __init__(self):
        self.launches: list[tuple] = []

    def run(self, kernargs: int, global_size, local_size):
        out, a, n = (ctypes.c_uint64 * 3).from_address(kernargs)
        self.launches.append((tuple(global_size), tuple(local_size)))
        threads = global_size[0] * local_size[0]
        count = min(n, threads)
        src = np.ctypeslib.as_array((ctypes.c_float * count).from_address(a))
        dst = np.ctypeslib.as_array((ctypes.c_float * count).from_address(out))
        dst[:] = src + 1.0


def host_buf(dev, size: int):
    """Device memory the test can also read and write from the host."""
    return dev.alloc(size, MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE)


def submit_and_sync(dev, q):
    q.signal(dev.timeline, dev.next_timeline_value()).submit(dev)
    dev.synchronize(timeout=10)


def test_signal_written_by_the_queue(device):
    sig = device.new_signal(0)
    device.compute_queue().signal(sig, 724).submit(device)
    sig.wait(724, timeout=10)
    assert sig.value == 724 and sig.timestamp > 0


def test_cross_queue_wait_orders_copy_after_compute(device):
    src, dst = host_buf(device, 4096), host_buf(device, 4096)
    gate = device.new_signal(0)
    src.cpu_view()[:] = b"\x11" * 4096
    done = device.new_signal(0)
    device.copy_queue().wait(gate, 1).copy(dst.va, src.va, 4096).signal(done, 1).submit(device)
    with pytest.raises(SignalTimeoutError):
        done.wait(1, timeout=0.05)  # the copy engine is stalled on the gate
    assert bytes(dst.cpu_view()[:4]) == b"\0\0\0\0"
    device.compute_queue().signal(gate, 1).submit(device)
    done.wait(1, timeout=10)
    assert bytes(dst.cpu_view()) == b"\x11" * 4096


def test_a_sleeping_wait_wakes_when_the_device_writes_the_signal(device):
    """One sleep_on_signal ends when the queue writes the signal (the driver's interrupt or event), not at the end
    of a polling slice: host waits on a busy device cost no latency."""
    gate, done = device.new_signal(0), device.new_signal(0)
    device.compute_queue().wait(gate, 1).signal(done, 1).submit(device)
    opener = threading.Timer(0.2, lambda: setattr(gate, "value", 1))  # opens the gate while the host sleeps
    opener.start()
    try:
        start = time.monotonic()
        device.sleep_on_signal(done, 1, 30.0)
        waited = time.monotonic() - start
    finally:
        opener.join()
    assert done.value == 1, f"the sleep ended after {waited:.3f} s before the signal was written"
    assert waited < 15, f"the sleep ran {waited:.1f} s: the device's wake-up never came"


@pytest.mark.parametrize("size,src_off,dst_off", [(1, 0, 0), (3, 1, 7), (4095, 5, 3), (65537, 13, 0), (0, 0, 0)])
def test_copies_of_odd_sizes_and_offsets(device, size, src_off, dst_off):
    src, dst = host_buf(device, size + 64), host_buf(device, size + 64)
    rng = np.random.default_rng(size)
    payload = rng.integers(0, 256, size + 64, dtype=np.uint8)
    src.cpu_view()[:] = payload.tobytes()
    dst.cpu_view()[:] = b"\xee" * (size + 64)
    submit_and_sync(device, device.copy_queue().copy(dst.va + dst_off, src.va + src_off, size))
    got = np.frombuffer(dst.cpu_view(), np.uint8)
    assert (got[dst_off:dst_off + size] == payload[src_off:src_off + size]).all()
    assert (got[:dst_off] == 0xEE).all() and (got[dst_off + size:] == 0xEE).all(), "wrote outside the range"


def test_python_program_launch_reads_its_arguments(device):
    if type(device).__name__ != "CPUDevice":
        pytest.skip("a Python callable is a host program; GPUs run compiled code objects (the compiled-kernel test)")
    n = 1000
    prog = device.load_program(AddOne())
    a, out, args = host_buf(device, 4 * n), host_buf(device, 4 * n), host_buf(device, 24)
    a.numpy(np.float32)[:] = np.arange(n, dtype=np.float32)
    args.numpy(np.uint64)[:] = [out.va, a.va, n]
    submit_and_sync(device, device.compute_queue().exec(prog, args, (16, 1, 1), (64, 1, 1)))
    np.testing.assert_array_equal(out.numpy(np.float32), np.arange(n, dtype=np.float32) + 1)
    assert prog.launches == [((16, 1, 1), (64, 1, 1))]


def compile_for(device, kernel, cache):
    """The kernel built for the device: the host for the CPU; the GPU's target (carrying the host build when the
    emulated GPU runs host builds, its fast mode) otherwise."""
    from compiler import compile_kernel
    if type(device).__name__ == "CPUDevice":
        return device.load_program(compile_kernel(kernel, "host", cache))
    from compiler.toolchain import lld_missing
    from compiler.ptxas import ptxas_missing
    missing = ptxas_missing() if device.target.startswith("sm_") else lld_missing()
    if missing:  # a machine ./setup.sh did not prepare: AMD code objects cannot be linked, or no ptxas for cubins
        pytest.skip(missing)
    host_builds = getattr(device.system, "host_kernels", False)
    return device.load_program(compile_kernel(kernel, device.target, cache, emulation=host_builds))


def test_compiled_kernel_reads_its_arguments(device, tmp_path):
    from compiler import KernelCache
    from compiler.ir import Kernel, f32
    k = Kernel("scale", local_size=(32, 1, 1))
    x, y = k.buffer("x", f32), k.buffer("y", f32, writable=True)
    n = k.scalar("n")
    i = k.global_id(0)
    with k.if_(i < n):
        y[i] = x[i] * 2.0 + 1.0
    prog = compile_for(device, k, KernelCache(tmp_path))
    n_ = 100
    xb, yb = host_buf(device, 4 * n_), host_buf(device, 4 * n_)
    xb.numpy(np.float32)[:] = np.arange(n_, dtype=np.float32)
    blob = prog.pack_args(xb.va, yb.va, n_)  # the whole block the kernel reads (NVIDIA: its constant bank 0)
    args = host_buf(device, max(64, len(blob)))
    args.cpu_view()[:len(blob)] = blob
    submit_and_sync(device, device.compute_queue().exec(prog, args, (4, 1, 1), (32, 1, 1)))
    np.testing.assert_array_equal(yb.numpy(np.float32), np.arange(n_, dtype=np.float32) * 2 + 1)
    # Replay the same launch on other buffers: only the kernel-argument address changes.
    q = device.compute_queue().exec(prog, Var("args"), (4, 1, 1), (32, 1, 1))
    q.signal(device.timeline, Var("t"))
    args2, y2 = host_buf(device, max(64, len(blob))), host_buf(device, 4 * n_)
    blob2 = prog.pack_args(xb.va, y2.va, n_)
    args2.cpu_view()[:len(blob2)] = blob2
    q.submit(device, {"args": args2.va, "t": device.next_timeline_value()})
    device.synchronize(timeout=10)
    np.testing.assert_array_equal(y2.numpy(np.float32), np.arange(n_, dtype=np.float32) * 2 + 1)


def test_staged_kernel_arguments_are_reused_only_after_completion(device, tmp_path):
    from compiler import KernelCache
    from compiler.ir import Kernel, f32, i32
    k = Kernel("put", local_size=(1, 1, 1))
    out = k.buffer("out", f32, writable=True)
    idx = k.scalar("idx")
    out[idx] = idx.cast(f32) * 2.0
    prog = compile_for(device, k, KernelCache(tmp_path))
    device.KERNARG_RING_SIZE = 16 * 256  # 16 blocks: 40 launches wrap it more than twice
    n = 40
    res = host_buf(device, 4 * n)
    for i in range(n):
        q = device.compute_queue().exec(prog, prog.pack_args(res.va, i), (1, 1, 1), (1, 1, 1))
        q.signal(device.timeline, device.next_timeline_value()).submit(device)
    device.synchronize(timeout=30)
    np.testing.assert_array_equal(res.numpy(np.float32), np.arange(n, dtype=np.float32) * 2)
    assert device._kernargs.staged == n


def test_profiling_brackets_execs_and_copies(device, tmp_path):
    from compiler import KernelCache
    from compiler.ir import Kernel, f32
    k = Kernel("touch", local_size=(1, 1, 1))
    out = k.buffer("out", f32, writable=True)
    out[0] = 1.0
    prog = compile_for(device, k, KernelCache(tmp_path))
    a, b = host_buf(device, 4096), host_buf(device, 4096)
    device.profiling = True
    ran = device.next_timeline_value()
    device.compute_queue().exec(prog, prog.pack_args(a.va), (1, 1, 1), (1, 1, 1)).signal(
        device.timeline, ran).submit(device)
    # The copy reads what the kernel wrote, so it waits for it; the two queues are otherwise unordered.
    device.copy_queue().wait(device.timeline, ran).copy(b.va, a.va, 4096).signal(
        device.timeline, device.next_timeline_value()).submit(device)
    device.profiling = False
    events = device.profile()
    assert [e[0] for e in events] == ["exec touch", "copy 4096 bytes"]
    assert all(0 < start <= end for _, start, end in events)
    assert device.profile() == [], "the log is handed out once"


def test_timestamps_are_monotonic(device):
    sigs = [device.new_signal(0) for _ in range(4)]
    q = device.compute_queue()
    for s in sigs:
        q.timestamp(s)
    submit_and_sync(device, q)
    stamps = [s.timestamp for s in sigs]
    assert all(t > 0 for t in stamps) and stamps == sorted(stamps)


def test_replay_patches_only_the_recorded_values(device):
    sig, src, dst = device.new_signal(0), host_buf(device, 256), host_buf(device, 256)
    src.cpu_view()[:] = bytes(range(256))
    q = device.copy_queue().copy(Var("dst"), src.va, 16).signal(sig, Var("v"))
    before = bytes(q.cmd)
    with pytest.raises(QueueBuildError, match=r"values for \['dst', 'v'\]"):
        q.submit(device)
    for i in range(1, 6):
        q.submit(device, {"v": i, "dst": dst.va + 16 * i})
        sig.wait(i, timeout=10)
    for i in range(1, 6):
        assert bytes(dst.cpu_view()[16 * i:16 * i + 16]) == bytes(range(16))
    changed = [k for k, (x, y) in enumerate(zip(before, bytes(q.cmd))) if x != y]
    patched = {4 * p.index + b for p in q.patches for b in range(p.bits // 8)}
    assert set(changed) <= patched, "replay touched words that were not recorded as patches"
    assert {p.var.name for p in q.patches} == {"dst", "v"}


def test_replay_of_a_value_used_in_many_places(device):
    """A Var recorded in more places than NUMPY_PATCHES is written with one vectorized store: every place changes."""
    from hcq.queue import NUMPY_PATCHES
    n = NUMPY_PATCHES + 4
    srcs = [host_buf(device, 64) for _ in range(2)]
    for k, b in enumerate(srcs):
        b.cpu_view()[:] = bytes([0x30 + k]) * 64
    dst, sig = host_buf(device, 8 * n), device.new_signal(0)
    q = device.copy_queue()
    for i in range(n):
        q.copy(dst.va + 8 * i, Var("src"), 8)
    q.signal(sig, Var("v"))
    for k, b in enumerate(srcs, start=1):
        q.submit(device, {"src": b.va, "v": k})
        sig.wait(k, timeout=10)
        assert bytes(dst.cpu_view()) == bytes([0x30 + k - 1]) * (8 * n), f"replay {k} missed a place"
    assert any(type(group[-1]) is not list for group in q._plan), "the vectorized store was not used"


def test_sustained_submission_wraps_the_ring(device):
    sig = device.new_signal(0)
    q = device.compute_queue().signal(sig, Var("v"))
    for i in range(1, 1201):  # several times the ring's depth; submit must apply backpressure, never overwrite
        q.submit(device, {"v": i})
    sig.wait(1200, timeout=30)
    assert sig.value == 1200


@pytest.mark.parametrize("name", PARAMS)
def test_allocator_exhaustion_and_recovery(name):
    dev = DEVICES[name](small=True)
    try:
        bufs = []
        with pytest.raises(OutOfMemoryError, match="out of (memory|VRAM)"):
            while True:
                bufs.append(dev.alloc(1 << 18, MemFlags.DEVICE_LOCAL))
        for b in bufs:
            dev.free(b)
        big = dev.alloc(1 << 21, MemFlags.DEVICE_LOCAL)
        assert big.size == 1 << 21
    finally:
        close_device(dev)


def test_injected_hang_gives_a_hang_report_then_recovers(device):
    inject_hang(device)
    sig = device.new_signal(0)
    device.compute_queue().signal(sig, 1).signal(device.timeline, device.next_timeline_value()).submit(device)
    with pytest.raises(SignalTimeoutError) as e:
        device.synchronize(timeout=0.2)
    report = str(e.value)
    assert "timeline" in report and "not consumed" in report and "compute" in report
    device.recover()
    submit_and_sync(device, device.compute_queue().signal(sig, 2))
    assert sig.value == 2


def test_bad_address_faults_the_device_until_recovered(device):
    src = host_buf(device, 64)
    submit = device.copy_queue().copy(0x10, src.va, 64).signal(device.timeline, device.next_timeline_value())
    submit.submit(device)
    with pytest.raises(DeviceFaultError) as e:
        device.synchronize(timeout=30)  # a fault ends the wait at once, it does not run into the timeout
    assert "page fault" in str(e.value) and "0x10" in str(e.value)
    with pytest.raises(DeviceFaultError, match="faulted"):
        host_buf(device, 64)
    device.recover()
    submit_and_sync(device, device.copy_queue().copy(src.va, src.va, 0))


# --- waits on 64-bit signal values ---

BIG_VALUES = [2**32 - 1, 2**32, 2**32 + 1, 2**63 - 1, 2**63]


def below_with_low_word_met(value: int) -> int:
    """A value below `value` whose low word already satisfies a 32-bit compare against value's low word: a wait
    that compares only low words passes on it, a 64-bit wait must not."""
    return value - 1 if value < 2**32 else ((value >> 32) - 1) << 32 | 0xFFFFFFFF


def is_amd(device) -> bool:
    return type(device).__name__ == "KFDDevice"


def copy_engine_waits_exactly(device, value: int) -> bool:
    """What the AMD copy engine can wait for: SDMA polls 32 bits (drivers/amd/queue.py AMDCopyQueue._encode_wait)."""
    return not is_amd(device) or value < 2**32 or value % 2**32 == 0


def wait_behind_a_gate(device, kind: str, sig, value: int):
    """Submit on `kind`'s queue: signal `reached`, wait for sig >= value, signal `done`; return once the engine has
    reached the wait (so the checks after it look at the wait itself, not at a queue that has not started)."""
    reached, done = device.new_signal(0), device.new_signal(0)
    q = getattr(device, f"{kind}_queue")()
    q.signal(reached, 1).wait(sig, value).signal(done, 1).submit(device)
    reached.wait(1, timeout=10)
    return done


@pytest.mark.parametrize("kind", ["compute", "copy"])
@pytest.mark.parametrize("value", BIG_VALUES, ids=hex)
def test_a_wait_on_a_64_bit_value_does_not_pass_on_the_low_word(device, kind, value):
    sig = device.new_signal(0)
    if kind == "copy" and not copy_engine_waits_exactly(device, value):
        with pytest.raises(QueueBuildError, match=r"compares 32 bits"):
            device.copy_queue().wait(sig, value)
        return
    sig.value = below_with_low_word_met(value)
    done = wait_behind_a_gate(device, kind, sig, value)
    with pytest.raises(SignalTimeoutError):
        done.wait(1, timeout=0.2)  # the engine sits at the wait for this long: a low-word compare passes here
    assert done.value == 0, f"{kind} queue passed a wait for {value:#x} at {sig.value:#x}"
    sig.value = value
    done.wait(1, timeout=10)


@pytest.mark.parametrize("kind", ["compute", "copy"])
@pytest.mark.parametrize("value", BIG_VALUES, ids=hex)
def test_a_wait_passes_on_a_larger_value_with_a_smaller_low_word(device, kind, value):
    past = ((value >> 32) + 1) << 32  # above value, low word 0
    if kind == "copy" and is_amd(device) and not (value >= 2**32 and value % 2**32 == 0):
        pytest.skip("the AMD copy engine compares 32 bits: a low-word wait stalls once the signal passes 2**32, a "
                    "wait for other values past it is refused (test_a_wait_on_a_64_bit_value_does_not_pass_...)")
    sig = device.new_signal(0)
    done = wait_behind_a_gate(device, kind, sig, value)
    sig.value = past
    done.wait(1, timeout=10)


def test_a_replayed_copy_wait_refuses_a_value_its_engine_cannot_compare(device):
    """A Var wait on the copy queue: values the engine compares exactly run, others are refused at submit."""
    sig, done = device.new_signal(0), device.new_signal(0)
    q = device.copy_queue().wait(sig, Var("v")).signal(done, Var("d"))
    sig.value = 7
    q.submit(device, {"v": 7, "d": 1})
    done.wait(1, timeout=10)
    if is_amd(device):
        with pytest.raises(QueueBuildError, match=r"v=0x100000001 does not fit the 32-bit field"):
            q.submit(device, {"v": 2**32 + 1, "d": 2})
    else:
        sig.value = 2**32 + 1
        q.submit(device, {"v": 2**32 + 1, "d": 2})
        done.wait(2, timeout=10)


def test_a_replayed_compute_wait_compares_64_bits(device):
    sig = device.new_signal(0)
    reached, done = device.new_signal(0), device.new_signal(0)
    q = device.compute_queue().signal(reached, Var("r")).wait(sig, Var("v")).signal(done, Var("d"))
    sig.value = 2**32 - 1
    q.submit(device, {"r": 1, "v": 2**32 + 5, "d": 1})
    reached.wait(1, timeout=10)
    with pytest.raises(SignalTimeoutError):
        done.wait(1, timeout=0.2)
    sig.value = 2**32 + 5
    done.wait(1, timeout=10)


@pytest.mark.parametrize("kind", ["compute", "copy"])
def test_a_signal_written_by_a_queue_carries_all_64_bits(device, kind):
    sig = device.new_signal(0)
    q = getattr(device, f"{kind}_queue")().signal(sig, 2**63 + 2**32 + 3)
    q.submit(device)
    sig.wait(2**63 + 2**32 + 3, timeout=10)
    assert sig.value == 2**63 + 2**32 + 3


# --- memory barriers ---

@pytest.mark.parametrize("kind", ["compute", "copy"])
def test_memory_barrier_orders_a_copy_after_the_one_before_it(device, kind):
    """A chain of copies through one buffer, with a barrier between each: every copy reads what the one before it
    wrote. (On the compute queue the barrier is followed by a signal only: copies go on the copy queue.)"""
    a, b, c = host_buf(device, 4096), host_buf(device, 4096), host_buf(device, 4096)
    a.cpu_view()[:] = b"\x5a" * 4096
    if kind == "copy":
        q = device.copy_queue().copy(b.va, a.va, 4096).memory_barrier().copy(c.va, b.va, 4096).memory_barrier()
    else:
        q = device.compute_queue().memory_barrier().memory_barrier()
    submit_and_sync(device, q)
    if kind == "copy":
        assert bytes(c.cpu_view()) == b"\x5a" * 4096
    submit_and_sync(device, q)  # a replay of the same barriers (fresh fence values on AMD's copy engine)
