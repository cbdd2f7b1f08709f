"""The CPU device spreads one kernel launch over worker threads: every workgroup runs exactly once, results
equal a single-threaded run, the launch completes (and a later SIGNAL fires) only when every chunk finished, a
failing chunk faults the device, close() ends the workers, and BAREGPU_CPU_THREADS is checked."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from compiler import KernelCache, compile_kernel
from compiler.ir import Kernel, i32
from drivers.cpu.device import CPUDevice
from hcq.buffer import MemFlags
from hcq.device import DeviceFaultError
from hcq.env import EnvError
from hcq.signal import SignalTimeoutError

LOCAL = (4, 2, 1)
BOUND_S = 10  # every wait in these tests: far beyond what the work takes, short enough to fail a hang quickly


def stamp_kernel() -> Kernel:
    """out[thread] += its workgroup (x, y, z) and local (x, y) ids packed into one int: a workgroup run twice
    doubles its stamp, one never run leaves zeros, one run with wrong ids writes a wrong stamp."""
    k = Kernel("stamp", local_size=LOCAL)
    out = k.buffer("out", i32, writable=True)
    gx, gy = k.scalar("gx"), k.scalar("gy")
    w0, w1, w2 = k.workgroup_id(0), k.workgroup_id(1), k.workgroup_id(2)
    l0, l1 = k.local_id(0), k.local_id(1)
    wg = (w2 * gy + w1) * gx + w0
    i = wg * (LOCAL[0] * LOCAL[1]) + l1 * LOCAL[0] + l0
    out[i] = out[i] + (w0 + w1 * 100 + w2 * 10000 + l0 * 1000000 + l1 * 10000000 + 1)
    return k


def expected(grid: tuple[int, int, int]) -> np.ndarray:
    z, y, x, ly, lx = np.meshgrid(*(np.arange(n) for n in (grid[2], grid[1], grid[0], LOCAL[1], LOCAL[0])),
                                  indexing="ij")
    return (x + y * 100 + z * 10000 + lx * 1000000 + ly * 10000000 + 1).astype(np.int32).reshape(-1)


class Recorder:
    """Wraps a compiled kernel: records every chunk (first, count, thread) it is asked to run. Until a second
    thread has run a chunk, a chunk waits (bounded) for one, so a launch of two or more chunks proves that the
    workers took part instead of passing on a machine where the engine thread happens to take everything."""

    def __init__(self, ck, need_two_threads: bool):
        self.ck, self.name, self.local_size = ck, ck.name, ck.local_size
        self.chunks: list[tuple[int, int, int]] = []
        self.need_two_threads = need_two_threads
        self._second = threading.Event()
        self._lock = threading.Lock()

    def pack_args(self, *values: int) -> bytes:
        return self.ck.pack_args(*values)

    def run(self, kernargs, global_size, local_size, first=0, count=None):
        total = global_size[0] * global_size[1] * global_size[2]
        with self._lock:
            self.chunks.append((first, total - first if count is None else count, threading.get_ident()))
            if len({t for _, _, t in self.chunks}) > 1:
                self._second.set()
        if self.need_two_threads:
            self._second.wait(BOUND_S)
        self.ck.run(kernargs, global_size, local_size, first, count)


@pytest.fixture(scope="module")
def stamp(tmp_path_factory):
    return compile_kernel(stamp_kernel(), "host", KernelCache(tmp_path_factory.mktemp("kernels")))


def launch(dev: CPUDevice, prog, grid: tuple[int, int, int]) -> np.ndarray:
    n = grid[0] * grid[1] * grid[2] * LOCAL[0] * LOCAL[1]
    out = dev.alloc(4 * n, MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE)
    out.numpy(np.int32)[:] = 0
    q = dev.compute_queue().exec(prog, prog.pack_args(out.va, grid[0], grid[1]), grid, LOCAL)
    q.signal(dev.timeline, dev.next_timeline_value()).submit(dev)
    dev.synchronize(timeout=BOUND_S)
    return out.numpy(np.int32).copy()


@pytest.mark.parametrize("grid", [(7, 3, 2), (3, 1, 1), (1, 1, 1), (5, 3, 3), (2, 1, 1), (1, 1, 13)])
def test_a_shared_launch_equals_the_single_threaded_one(stamp, grid):
    total = grid[0] * grid[1] * grid[2]
    with CPUDevice(workers=1) as one, CPUDevice(workers=4) as four:
        four.processor("compute").min_split_threads = 0  # share even these small grids
        alone = launch(one, one.load_program(stamp), grid)
        rec = four.load_program(Recorder(stamp, need_two_threads=total > 1))
        shared = launch(four, rec, grid)
    np.testing.assert_array_equal(alone, expected(grid))
    np.testing.assert_array_equal(shared, alone)
    ranges = sorted((f, c) for f, c, _ in rec.chunks)
    covered = [wg for f, c in ranges for wg in range(f, f + c)]
    assert covered == list(range(total)), f"chunks {ranges} do not cover the {total} workgroups exactly once"
    if total > 1:
        assert len(ranges) > 1 and len({t for _, _, t in rec.chunks}) > 1, f"not shared: {rec.chunks}"


def test_small_launches_run_on_the_engine_thread(stamp):
    with CPUDevice(workers=4) as dev:
        rec = dev.load_program(Recorder(stamp, need_two_threads=False))
        launch(dev, rec, (3, 1, 1))  # 24 work-items: below the split threshold
        assert [(f, c) for f, c, _ in rec.chunks] == [(0, 3)]
        assert dev.processor("compute").pool.threads == [], "a tiny launch started the worker threads"


class Gated:
    """A ranged program. With an engine thread given, the first chunk a worker runs blocks until released, and
    the engine thread's chunks wait (bounded) until that happened, so a worker surely holds a chunk; `ran` counts
    the workgroups of finished chunks. The chunk holding workgroup `bad` raises."""
    name = "gated"

    def __init__(self, engine: threading.Thread | None = None, bad: int = -1):
        self.engine, self.bad = engine, bad
        self.started, self.release = threading.Event(), threading.Event()
        self.held = 0  # workgroups in the held chunk
        self.ran = 0
        self.progress = threading.Condition()

    def run(self, kernargs, global_size, local_size, first=0, count=None):
        if self.engine is not None:
            if threading.current_thread() is self.engine:
                self.started.wait(BOUND_S)
            else:
                with self.progress:
                    hold = not self.started.is_set()
                    if hold:
                        self.held = count
                        self.started.set()
                if hold:
                    self.release.wait(BOUND_S)
        with self.progress:
            self.ran += count
            self.progress.notify_all()
        if first <= self.bad < first + count:
            raise RuntimeError(f"bad workgroup {self.bad}")


def test_the_launch_completes_only_when_every_chunk_finished():
    with CPUDevice(workers=3) as dev:
        engine = dev.processor("compute")
        engine.min_split_threads = 0
        prog = dev.load_program(Gated(engine._thread))
        done = dev.new_signal(0)
        dev.compute_queue().exec(prog, 0, (40, 1, 1), (1, 1, 1)).signal(done, 1).submit(dev)
        assert prog.started.wait(BOUND_S), "no worker ran a chunk"
        with prog.progress:
            assert prog.progress.wait_for(lambda: prog.ran == 40 - prog.held, BOUND_S), f"{prog.ran} workgroups ran"
        # Every chunk but the held one finished: the SIGNAL after the launch must still not be written.
        with pytest.raises(SignalTimeoutError, match=r"executing EXEC, launch 40 of 40 workgroups handed out, 1 chunks "
                                                     r"running on 3 threads"):
            done.wait(1, timeout=0.2)
        prog.release.set()
        done.wait(1, BOUND_S)
        assert prog.ran == 40


def test_a_failing_chunk_faults_the_device_with_its_message():
    with CPUDevice(workers=2) as dev:
        dev.processor("compute").min_split_threads = 0
        prog = dev.load_program(Gated(bad=29))
        after = dev.new_signal(0)
        q = dev.compute_queue().exec(prog, 0, (64, 1, 1), (1, 1, 1)).signal(after, 1)
        q.signal(dev.timeline, dev.next_timeline_value()).submit(dev)
        with pytest.raises(DeviceFaultError, match=r"kernel error on queue cpu.compute: gated: bad workgroup 29 "
                                                   r"\(in workgroups \d+\.\.\d+ of 64\)"):
            dev.synchronize(timeout=BOUND_S)
        assert after.value == 0, "the SIGNAL after a faulted launch fired"


def test_close_stops_the_workers(stamp):
    dev = CPUDevice(workers=3)
    dev.processor("compute").min_split_threads = 0
    launch(dev, dev.load_program(stamp), (9, 2, 1))
    workers = dev.processor("compute").pool.threads
    engines = [e._thread for e in dev.hw_queues()]
    assert len(workers) == 2 and all(t.is_alive() for t in workers)
    dev.close()
    left = [t for t in threading.enumerate() if t in workers or t in engines]
    assert left == [], f"threads left after close(): {left}"


def test_the_thread_count_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("BAREGPU_CPU_THREADS", raising=False)
    with CPUDevice() as dev:
        assert dev.workers == len(os.sched_getaffinity(0)) == dev.processor("compute").workers
        assert dev.processor("copy").workers == 1
    monkeypatch.setenv("BAREGPU_CPU_THREADS", "3")
    with CPUDevice() as dev:
        assert dev.workers == 3
    with CPUDevice(workers=2) as dev:
        assert dev.workers == 2, "an explicit workers= wins over the environment"


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_a_bad_thread_count_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("BAREGPU_CPU_THREADS", value)
    with pytest.raises(EnvError, match=rf"BAREGPU_CPU_THREADS='{value}'.*whole number of at least 1"):
        CPUDevice()


@pytest.mark.parametrize("workers", [0, -1, 2.0, True])
def test_a_bad_workers_argument_is_refused(workers):
    with pytest.raises(ValueError, match=rf"workers={workers!r}.*whole number >= 1"):
        CPUDevice(workers=workers)


def test_several_threads_allocate_free_and_load_at_once(stamp):
    with CPUDevice(workers=1) as dev:
        base = dev.heap.used
        errors: list[BaseException] = []
        kept: list[list] = [[] for _ in range(4)]
        start = threading.Barrier(4, timeout=BOUND_S)

        def churn(slot: int) -> None:
            try:
                start.wait()
                for i in range(300):
                    buf, sig = dev.alloc(64 + 64 * (i % 7)), dev.new_signal(i)
                    if i % 2:
                        dev.free(buf)
                    else:
                        kept[slot].append(buf)
                    sig.release()
                    if i % 60 == 0:
                        dev.load_program(Gated())
            except BaseException as e:  # noqa: BLE001 - reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=churn, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(BOUND_S * 6)
        assert not errors, errors
        assert not any(t.is_alive() for t in threads)
        live = sorted((b for slot in kept for b in slot), key=lambda b: b.va)
        assert len(live) == 4 * 150
        for a, b in zip(live, live[1:]):
            assert a.va + a.size <= b.va, f"live buffers overlap: {a!r} and {b!r}"
        assert sorted(dev.programs) == list(range(1, 4 * 5 + 1)), "program handles were lost or reused"
        assert dev.signals.live == 0, "signal slots leaked"
        for b in live:
            dev.free(b)
        assert dev.heap.used == base, "the heap's accounting drifted"


class Costly:
    """A ranged program whose whole-grid run and whose chunks take set times (sleeps stand in for the work), so
    the engine's timings see which way is faster; records whether each launch was shared."""
    name = "costly"

    def __init__(self, alone_s: float, chunk_s: float):
        self.alone_s, self.chunk_s = alone_s, chunk_s
        self.whole_runs = 0
        self.chunk_runs = 0

    def run(self, kernargs, global_size, local_size, first=0, count=None):
        if count is None:
            self.whole_runs += 1
            threading.Event().wait(self.alone_s)
        else:
            self.chunk_runs += 1
            threading.Event().wait(self.chunk_s)


@pytest.mark.parametrize("alone_s,chunk_s,shared", [(0.001, 0.02, False), (0.2, 0.001, True)])
def test_the_faster_way_is_chosen_from_timings(alone_s, chunk_s, shared):
    with CPUDevice(workers=2) as dev:
        engine = dev.processor("compute")
        engine.min_split_threads = 0
        prog = dev.load_program(Costly(alone_s, chunk_s))
        for i in range(6):
            if i == 2:  # the first launch was shared, the second ran alone: both ways are timed now
                assert prog.whole_runs == 1 and prog.chunk_runs == 8
                before = (prog.whole_runs, prog.chunk_runs)
            q = dev.compute_queue().exec(prog, 0, (8, 1, 1), (1, 1, 1))
            q.signal(dev.timeline, dev.next_timeline_value()).submit(dev)
            dev.synchronize(timeout=BOUND_S)
        whole, chunks = prog.whole_runs - before[0], prog.chunk_runs - before[1]
        if shared:
            assert whole == 0 and chunks == 4 * 8, (whole, chunks)
        else:
            assert whole == 4 and chunks == 0, (whole, chunks)
