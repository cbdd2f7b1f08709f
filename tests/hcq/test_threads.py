"""One HCQ device shared by several threads (CPU and emulated AMD): each thread builds and submits its own
queues, allocates and frees, and waits on signals; every result is checked, and the timeline stays whole.

The threads start together at a barrier and pause where a seed says (nothing, a GIL hand-over, or a short sleep),
so each seed tries other interleavings. Nothing here is timed; every join and wait is bounded.

Also here: kernel-argument staging looks at the oldest block only, however many are in flight (counted, not timed).
"""
from __future__ import annotations

import random
import threading
import time
from collections import deque
from typing import Any, Callable

import numpy as np
import pytest

from hcq.errors import DeviceClosedError
from hcq.kernargs import ALIGN, KernargRing
from hcq.queue import Var
from test_contract import compile_for, host_buf, open_amd, open_cpu
import thread_runner
from thread_runner import JOIN_S, jitter

THREADS = 4
SEEDS = range(6)
N = 200  # elements per buffer


def in_threads(seed: int, work: Callable[[int, random.Random], Any], threads: int = THREADS) -> list[Any]:
    """Run work(i, rng) in `threads` threads started together (tests/thread_runner.py)."""
    return thread_runner.in_threads(seed, work, threads, "hcq-thread")


def scale_kernel():
    """y[i] = x[i] * 2 + c for i < n: each launch's scalar c shows which arguments it read."""
    from compiler.ir import Kernel, f32
    k = Kernel("thread_scale", local_size=(32, 1, 1))
    x, y = k.buffer("x", f32), k.buffer("y", f32, writable=True)
    n, c = k.scalar("n"), k.scalar("c")
    i = k.global_id(0)
    with k.if_(i < n):
        y[i] = x[i] * 2.0 + c.cast(f32)
    return k


@pytest.fixture(scope="module", params=["CPU", "AMD"])
def shared(request, tmp_path_factory):
    """(device, program) opened once per device kind for the whole module: the threads share it."""
    from compiler import KernelCache
    dev = open_cpu() if request.param == "CPU" else open_amd()
    try:
        prog = compile_for(dev, scale_kernel(), KernelCache(tmp_path_factory.mktemp("kernels")))
        yield dev, prog
    finally:
        dev.close()


def fill(buf, values: np.ndarray) -> None:
    buf.numpy(np.float32, len(values))[:] = values


@pytest.mark.parametrize("seed", SEEDS)
def test_threads_submit_their_own_queues_on_one_device(shared, seed):
    dev, prog = shared
    blocks = (N + 31) // 32

    def work(i: int, rng: random.Random) -> int:
        own = dev.new_signal(0, name=f"thread{i}")
        done = 0
        for step in range(6):
            c = i * 100 + step
            x, y, z = host_buf(dev, 4 * N), host_buf(dev, 4 * N), host_buf(dev, 4 * N)
            data = np.arange(N, dtype=np.float32) + c
            fill(x, data)
            jitter(rng)
            if rng.random() < 0.5:
                # Staged arguments on the device timeline: Device.submit takes the value and submits in one step.
                q = dev.compute_queue().exec(prog, prog.pack_args(x.va, y.va, N, c), (blocks, 1, 1), (32, 1, 1))
                dev.timeline.wait(dev.submit(q), 30)
                args = None
            else:
                # An argument buffer of the thread's own, and the thread's own signal.
                args = host_buf(dev, 64)
                blob = prog.pack_args(x.va, y.va, N, c)
                args.cpu_view()[:len(blob)] = blob
                done += 1
                dev.compute_queue().exec(prog, args, (blocks, 1, 1), (32, 1, 1)).signal(own, done).submit(dev)
                own.wait(done, 30)
            jitter(rng)
            np.testing.assert_array_equal(y.numpy(np.float32, N), data * 2 + c, err_msg=f"thread {i} step {step}")
            # The copy engine too, on the timeline or on the thread's signal.
            q = dev.copy_queue().copy(z.va, y.va, 4 * N)
            if rng.random() < 0.5:
                dev.timeline.wait(dev.submit(q), 30)
            else:
                done += 1
                q.signal(own, done).submit(dev)
                own.wait(done, 30)
            np.testing.assert_array_equal(z.numpy(np.float32, N), data * 2 + c, err_msg=f"thread {i} copy {step}")
            for b in (x, y, z) + ((args,) if args is not None else ()):
                dev.free(b)
        own.release()
        return done

    in_threads(seed, work)
    dev.synchronize(timeout=30)  # the timeline reached the last value handed out: no thread's write stepped it back
    assert dev.timeline.value == dev.timeline_value
    dev.heap.check()


@pytest.mark.parametrize("seed", SEEDS)
def test_threads_allocate_free_and_take_signals_at_once(shared, seed):
    dev, _ = shared
    used = dev.heap.used

    def work(i: int, rng: random.Random) -> None:
        live: list[tuple[Any, int]] = []
        sigs = []
        for step in range(60):
            if live and rng.random() < 0.4:
                buf, mark = live.pop(rng.randrange(len(live)))
                # Nobody else wrote into this buffer: allocations never overlap, however threads interleave.
                assert bytes(buf.cpu_view()) == bytes([mark]) * buf.size, f"thread {i}: buffer overwritten"
                dev.free(buf)
            else:
                buf = host_buf(dev, rng.choice([64, 256, 4096, 5000, 1 << 16]))
                mark = (i * 61 + step) % 251 + 1
                buf.cpu_view()[:] = bytes([mark]) * buf.size
                live.append((buf, mark))
            if rng.random() < 0.3:
                sigs.append(dev.new_signal(step))
            if sigs and rng.random() < 0.2:
                sigs.pop(rng.randrange(len(sigs))).release()
            if rng.random() < 0.2:
                jitter(rng)
        for buf, mark in live:
            assert bytes(buf.cpu_view()) == bytes([mark]) * buf.size, f"thread {i}: buffer overwritten"
            dev.free(buf)
        for s in sigs:
            s.release()

    in_threads(seed, work)
    dev.heap.check()
    assert dev.heap.used == used, "allocations leaked or were counted twice"


@pytest.mark.parametrize("seed", SEEDS[:3])
def test_threads_replay_one_queue_with_their_own_values(shared, seed):
    """One recorded queue submitted by every thread with its own arguments: no thread's values reach another's run."""
    dev, prog = shared
    blocks = (N + 31) // 32
    q = dev.compute_queue().exec(prog, Var("args"), (blocks, 1, 1), (32, 1, 1)).signal(dev.timeline, Var("t"))

    def work(i: int, rng: random.Random) -> None:
        x, y, args = host_buf(dev, 4 * N), host_buf(dev, 4 * N), host_buf(dev, 64)
        for step in range(5):
            c = i * 10 + step
            data = np.arange(N, dtype=np.float32) * (step + 1)
            fill(x, data)
            blob = prog.pack_args(x.va, y.va, N, c)
            args.cpu_view()[:len(blob)] = blob
            jitter(rng)
            with dev.submit_lock:  # the timeline value and the submit in one step (one engine: in order)
                t = dev.next_timeline_value()
                q.submit(dev, {"args": args.va, "t": t})
            dev.timeline.wait(t, 30)
            np.testing.assert_array_equal(y.numpy(np.float32, N), data * 2 + c, err_msg=f"thread {i} step {step}")
        for b in (x, y, args):
            dev.free(b)

    in_threads(seed, work)
    dev.synchronize(timeout=30)


@pytest.mark.parametrize("kind", ["CPU", "AMD"])
def test_closing_while_other_threads_submit_raises_device_closed(kind):
    dev = open_cpu() if kind == "CPU" else open_amd()
    sig = dev.new_signal(0)
    started = threading.Barrier(THREADS + 1)
    outcomes: list[BaseException | None] = []

    def submitter() -> None:
        started.wait(JOIN_S)
        deadline = time.monotonic() + JOIN_S
        try:
            while time.monotonic() < deadline:
                dev.compute_queue().signal(sig, 1).submit(dev)
            outcomes.append(None)
        except BaseException as e:
            outcomes.append(e)

    pool = [threading.Thread(target=submitter, daemon=True) for _ in range(THREADS)]
    for t in pool:
        t.start()
    started.wait(JOIN_S)
    time.sleep(0.01)  # let them submit a little; the assertion holds whenever close lands
    dev.close()
    for t in pool:
        t.join(JOIN_S)
    assert not any(t.is_alive() for t in pool)
    assert len(outcomes) == THREADS and all(isinstance(e, DeviceClosedError) for e in outcomes), outcomes


# --- kernel-argument staging: O(1) per launch ---

class CountingDeque(deque):
    """A deque that counts the entries anyone reads: iteration, indexing and membership."""

    def __init__(self, items: Any = ()):
        super().__init__(items)
        self.reads = 0

    def __iter__(self):
        for item in super().__iter__():
            self.reads += 1
            yield item

    def __getitem__(self, i: Any) -> Any:
        self.reads += 1
        return super().__getitem__(i)

    def __contains__(self, item: Any) -> bool:
        self.reads += len(self)
        return super().__contains__(item)


class FakeBuffer:
    """Host memory standing in for the ring's GPU buffer."""

    def __init__(self, size: int):
        self.size, self.va, self.mem = size, 0x10000, bytearray(size)

    def cpu_view(self) -> memoryview:
        return memoryview(self.mem)


class StuckTimeline:
    """A timeline that never advances on its own: every staged block stays live."""
    value = 0

    def wait(self, value: int, timeout: float) -> None:
        raise AssertionError(f"staging waited for timeline value {value}: the ring had room")


def test_staging_with_1000_blocks_in_flight_reads_only_the_oldest():
    ring = KernargRing(FakeBuffer(2048 * ALIGN), StuckTimeline())
    for tag in range(1, 1001):
        ring.stage(bytes([tag % 256]) * 24, tag)
    ring.live = CountingDeque(ring.live)
    for tag in range(1001, 1011):
        ring.stage(b"\x01" * 24, tag)
    reads = ring.live.reads
    assert len(ring.live) == 1010
    assert reads <= 2 * 10, f"10 stagings read {reads} of the live blocks (a scan)"


def test_staging_wraps_and_waits_for_the_oldest_block_only():
    """A full ring frees blocks oldest first, waits for the oldest one's tag, and never overwrites a live block."""
    class Timeline:
        value = 0
        waited: list[int] = []

        def wait(self, value: int, timeout: float) -> None:
            self.waited.append(value)
            self.value = value  # the submission holding the oldest block finished

    timeline = Timeline()
    ring = KernargRing(FakeBuffer(8 * ALIGN), timeline)
    addrs = [ring.stage(bytes([t]) * 16, t) for t in range(1, 9)]  # exactly full
    assert sorted(a - 0x10000 for a in addrs) == [k * ALIGN for k in range(8)]
    assert ring.stage(b"\x09" * 300, 9) - 0x10000 == 0, "a 2-slot block goes at the start once the oldest two free"
    assert timeline.waited == [1, 2], "it waited for the oldest blocks, in order"
    assert ring.buf.mem[2 * ALIGN] == 3, "the third block is still intact"
    ring.live = CountingDeque(ring.live)
    timeline.value = 8
    ring.stage(b"\x0a" * 16, 10)
    assert [t for _, _, t in ring.live] == [9, 10]
