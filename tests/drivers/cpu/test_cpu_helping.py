"""A host thread waiting on a CPU device signal runs the engine's small ready work itself: every stream still runs
exactly once and in submission order, a stream whose WAIT is not satisfied, a stalled engine, a slow kernel and a
Python program are left to the engine thread, and a fault in helped work faults the device as on the engine thread."""
from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any, Iterator

import numpy as np
import pytest

from compiler import KernelCache, compile_kernel
from compiler.ir import Kernel, i32
from drivers.cpu import processor
from drivers.cpu.device import CPUDevice
from hcq.buffer import MemFlags
from hcq.device import DeviceFaultError
from hcq.signal import SignalTimeoutError

BOUND_S = 10  # every wait in these tests: far beyond what the work takes, short enough to fail a hang quickly
MEM = MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE


def append_kernel() -> Kernel:
    """log[1 + log[0]] = tag, then log[0] += 1: one work-item appends its tag, so the log shows every run of every
    launch in the order they ran (a stream run twice appends twice, one run out of order shows out of order)."""
    k = Kernel("append", local_size=(1, 1, 1))
    log = k.buffer("log", i32, writable=True)
    tag = k.scalar("tag")
    n = log[0]
    log[n + 1] = tag
    log[0] = n + 1
    return k


def fill_kernel() -> Kernel:
    """out[i] = i over 64-wide workgroups: enough of them take milliseconds on one thread."""
    k = Kernel("fill", local_size=(64, 1, 1))
    out = k.buffer("out", i32, writable=True)
    i = k.workgroup_id(0) * 64 + k.local_id(0)
    out[i] = i
    return k


@pytest.fixture
def no_gil_switch():
    """The test thread keeps the GIL until it blocks: the engine thread a submit woke cannot take the stream from
    the waiting thread that is about to help (a forced switch after 5 ms could, on a loaded machine)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    yield
    sys.setswitchinterval(before)


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    cache = KernelCache(tmp_path_factory.mktemp("kernels"))
    return compile_kernel(append_kernel(), "host", cache), compile_kernel(fill_kernel(), "host", cache)


def append(dev: CPUDevice, prog, log, tag: int, wait: tuple | None = None):
    """A compute stream that appends tag to the log (after `wait`, a (signal, value), if given); not submitted."""
    q = dev.compute_queue()
    if wait is not None:
        q.wait(*wait)
    return q.exec(prog, prog.pack_args(log.va, tag), (1, 1, 1), (1, 1, 1))


def timed(dev: CPUDevice, prog, log) -> None:
    """One launch run and timed by the engine thread: a program is helped only once its run time is known."""
    dev.synchronize(BOUND_S)
    engine = dev.processor("compute")
    before = engine.helped
    dev.submit(append(dev, prog, log, -1))
    dev.synchronize(BOUND_S)
    assert engine.helped == before, "a program never timed was run by a waiting thread"


@contextlib.contextmanager
def timed_device(kernels) -> Iterator[tuple[CPUDevice, Any, Any]]:
    """A one-worker CPU device with the append kernel loaded and timed, and a zeroed log buffer for it."""
    with CPUDevice(workers=1) as dev:
        prog = dev.load_program(kernels[0])
        log = dev.alloc(64, MEM)
        log.numpy(np.int32)[:] = 0
        timed(dev, prog, log)
        yield dev, prog, log


def test_helped_streams_run_exactly_once_in_submission_order(kernels):
    threads, per_thread = 4, 150
    with CPUDevice(workers=1) as dev:
        prog = dev.load_program(kernels[0])
        log = dev.alloc(4 * (2 + threads * per_thread), MEM)
        log.numpy(np.int32)[:] = 0
        timed(dev, prog, log)
        engine = dev.processor("compute")
        order = threading.Lock()  # the tag is the global submission order: the log must list 0, 1, 2, ...
        next_tag = [0]
        errors: list[BaseException] = []

        def worker(slot: int) -> None:
            try:
                for i in range(per_thread):
                    with order:
                        value = dev.submit(append(dev, prog, log, next_tag[0]))
                        next_tag[0] += 1
                    if (i + slot) % 3 == 0:  # waits interleaved with submits, each thread at its own rhythm
                        dev.timeline.wait(value, BOUND_S)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        workers = [threading.Thread(target=worker, args=(s,)) for s in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(BOUND_S * 3)
        assert not errors, errors
        dev.synchronize(BOUND_S)
        out = log.numpy(np.int32)
        total = threads * per_thread
        assert out[0] == total + 1, f"{out[0] - 1} appends for {total} streams: some ran twice or never"
        np.testing.assert_array_equal(out[2:2 + total], np.arange(total, dtype=np.int32))
        assert engine.read_ptr == engine.write_ptr
        assert engine.helped > 0, "no waiting thread ever ran a stream: the test did not exercise helping"


def test_a_stream_whose_wait_is_not_satisfied_is_left_to_the_engine(kernels, no_gil_switch):
    with timed_device(kernels) as (dev, prog, log):
        engine = dev.processor("compute")
        gate, done = dev.new_signal(0), dev.new_signal(0)
        engine.stalled = True  # the engine thread leaves the stream at the head of the ring until it polls again
        append(dev, prog, log, 7, wait=(gate, 1)).signal(done, 1).submit(dev)
        before = (engine.read_ptr, engine.helped)
        engine.stalled = False  # not woken: the thread sees it at its next poll, long after help() looked
        assert not engine.help(), "a stream waiting on a signal not yet written was taken by a helper"
        assert (engine.read_ptr, engine.helped) == before
        waiter = threading.Thread(target=done.wait, args=(1, BOUND_S))
        waiter.start()
        dev.copy_queue().signal(gate, 1).submit(dev)  # the other engine satisfies the WAIT
        waiter.join(BOUND_S)
        assert not waiter.is_alive() and done.value == 1
        assert engine.helped == before[1], "the stream was helped after all"
        assert log.numpy(np.int32)[:3].tolist() == [2, -1, 7]
        assert engine.read_ptr == engine.write_ptr


def test_a_stalled_engine_is_not_helped(kernels):
    with timed_device(kernels) as (dev, prog, log):
        engine = dev.processor("compute")
        before = engine.helped
        dev.stall("compute")
        value = dev.submit(append(dev, prog, log, 7))
        with pytest.raises(SignalTimeoutError) as e:
            dev.timeline.wait(value, 0.3)
        assert "stalled yes (fault injection)" in str(e.value), str(e.value)
        assert engine.read_ptr < engine.write_ptr
        assert f"({engine.write_ptr - engine.read_ptr} not consumed)" in str(e.value), str(e.value)
        assert engine.helped == before and log.numpy(np.int32)[0] == 1, "the stalled engine's stream ran"


def test_a_slow_kernel_and_a_python_program_are_left_to_the_engine(kernels, no_gil_switch):
    with CPUDevice(workers=1) as dev:
        fill = dev.load_program(kernels[1])
        groups = 1 << 15  # 2M work-items: milliseconds on one thread, far above HELP_MAX_S
        out = dev.alloc(4 * 64 * groups, MEM)
        engine = dev.processor("compute")
        for _ in range(3):  # the first launch is timed; the later ones are predicted slow
            before = engine.helped
            dev.submit(dev.compute_queue().exec(fill, fill.pack_args(out.va), (groups, 1, 1), (64, 1, 1)))
            dev.synchronize(BOUND_S)
            assert engine.helped == before, "a kernel predicted slower than HELP_MAX_S was run by a waiting thread"
        np.testing.assert_array_equal(out.numpy(np.int32), np.arange(64 * groups, dtype=np.int32))
        assert engine._timing[fill.handle][0] * groups > processor.HELP_MAX_S, "the test kernel is not slow here"
        # The same kernel over one workgroup is predicted fast: helped, so the prediction follows the grid.
        dev.submit(dev.compute_queue().exec(fill, fill.pack_args(out.va), (1, 1, 1), (64, 1, 1)))
        dev.synchronize(BOUND_S)
        assert engine.helped == before + 1

        class Recorder:
            """A Python program: records the threads that run it."""
            name = "recorder"
            ran: list[str] = []

            def run(self, kernargs, global_size, local_size, first=0, count=None):
                self.ran.append(threading.current_thread().name)

        rec = dev.load_program(Recorder())
        for _ in range(5):
            dev.submit(dev.compute_queue().exec(rec, 0, (1, 1, 1), (1, 1, 1)))
            dev.synchronize(BOUND_S)
        assert rec.ran == ["cpu-compute"] * 5, f"a Python program ran on {rec.ran}"


def bad_launch_fault(dev: CPUDevice, prog, log) -> str:
    """The fault of a launch with a local size the kernel was not built for, as the waiting thread sees it."""
    dev.submit(dev.compute_queue().exec(prog, prog.pack_args(log.va, 5), (1, 1, 1), (2, 1, 1)))
    with pytest.raises(DeviceFaultError) as e:
        dev.synchronize(BOUND_S)
    return str(e.value)


def test_a_fault_in_a_helped_kernel_faults_the_device_as_on_the_engine_thread(kernels, no_gil_switch):
    with CPUDevice(workers=1) as on_engine, CPUDevice(workers=1) as helped:
        messages = []
        for dev, timed_first in ((on_engine, False), (helped, True)):  # a program never timed is not helped
            prog = dev.load_program(kernels[0])
            log = dev.alloc(64, MEM)
            log.numpy(np.int32)[:] = 0
            if timed_first:
                timed(dev, prog, log)
            engine = dev.processor("compute")
            before = engine.helped
            messages.append(bad_launch_fault(dev, prog, log))
            assert engine.helped == before + timed_first, "the bad launch did not run where the test meant it to"
            assert engine.read_ptr == engine.write_ptr, "the faulted stream was left in the ring"
        assert "was built for local size (1, 1, 1), launched with (2, 1, 1)" in messages[0], messages[0]
        assert messages[1] == messages[0]
        helped.recover()  # the device is usable again, and helping goes on
        log = helped.alloc(64, MEM)
        log.numpy(np.int32)[:] = 0
        before = helped.processor("compute").helped
        helped.submit(append(helped, prog, log, 3))
        helped.synchronize(BOUND_S)
        assert log.numpy(np.int32)[:2].tolist() == [1, 3] and helped.processor("compute").helped == before + 1


def test_a_copy_outside_memory_helped_faults_the_device_as_on_the_engine_thread(monkeypatch, no_gil_switch):
    messages = []
    for helpable in (False, True):
        monkeypatch.setattr(processor, "HELP_MAX_COPY", 1 << 20 if helpable else 0)  # 0: no copy is helped
        with CPUDevice(workers=1) as dev:
            engine = dev.processor("compute")
            src = dev.alloc(64, MEM)
            dev.submit(dev.compute_queue().copy(src.va + (4 << 20), src.va, 64))
            with pytest.raises(DeviceFaultError) as e:
                dev.synchronize(BOUND_S)
            messages.append(str(e.value))
            assert engine.helped == helpable and engine.read_ptr == engine.write_ptr
    assert "page fault" in messages[0] and messages[1] == messages[0], messages


def test_a_helper_that_meets_a_wait_no_longer_satisfied_leaves_the_rest_to_the_engine(kernels, no_gil_switch):
    with timed_device(kernels) as (dev, prog, log):
        engine = dev.processor("compute")
        gate, done = dev.new_signal(1), dev.new_signal(0)
        engine.stalled = True  # the engine thread leaves the stream at the head of the ring until it polls again
        # The WAIT is satisfied when the helper looks, but the stream's own first command lowers the signal.
        q = dev.compute_queue().signal(gate, 0).wait(gate, 1)
        q.exec(prog, prog.pack_args(log.va, 9), (1, 1, 1), (1, 1, 1)).signal(done, 1).submit(dev)
        start, packets, helped = engine.read_ptr, engine.packets, engine.helped
        engine.stalled = False  # not woken: the GIL stays with this thread until it blocks, so help() looks first
        assert engine.help(), "the stream was not helped although its WAIT was satisfied"
        assert engine.helped == helped + 1 and engine.packets == packets + 1 and gate.value == 0, \
            "the helper did not stop at the WAIT it found unsatisfied"
        assert engine.read_ptr == start + 5 and not done.value
        dev.copy_queue().signal(gate, 1).submit(dev)  # the engine thread goes on from the WAIT, not from the start
        done.wait(1, BOUND_S)
        assert log.numpy(np.int32)[:3].tolist() == [2, -1, 9]
        assert engine.packets == packets + 4 and engine.read_ptr == engine.write_ptr, "a command ran twice"
        assert gate.value == 1, "the engine ran the stream's first SIGNAL again"
