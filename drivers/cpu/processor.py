"""The CPU device's command processor: a host thread that executes submitted command streams in order.

It behaves like a GPU's: work completes after submit, waits stall only this engine, the ring applies
backpressure, and a bad command faults the device instead of raising into the submitter.

A kernel launch is spread over the cores the way a GPU spreads workgroups over its compute units: the engine
thread and a pool of worker threads take chunks of the grid's workgroups (by linear index) until none are left,
and the EXEC completes, so a later SIGNAL fires, only when every chunk has finished. Compiled host kernels
release the GIL while they run, so the chunks run in parallel.

Work completes after submit, either on the engine's thread or on a host thread that waits for it: a thread
sleeping on a signal this engine will write first runs the ready stream at the head of the ring itself (help()),
which saves the hand-off to the engine thread and back (two cross-core wakes and GIL hand-overs, most of a tiny
op's time). Only small, ready work is helped, so a helper never blocks: every WAIT of the stream already
satisfied, each EXEC a compiled kernel whose timed launches predict under HELP_MAX_S in all, copies of at most
HELP_MAX_COPY bytes. One execution lock per engine, taken by its thread and by helpers, keeps each stream run
exactly once, in submission order, never two at a time; a stalled engine is never helped, and a fault in helped
work goes through the same fault path as on the engine thread.
"""
from __future__ import annotations

import ctypes
import inspect
import math
import struct
import threading
import time
from array import array
from collections import deque
from typing import Any, Callable

from compiler import CompiledKernel
from drivers.cpu.commands import PAYLOAD_DWORDS, Command, CommandDecodeError, Op, decode, format_commands, header
from hcq.device import DeviceFault
from hcq.errors import DeviceClosedError, HCQError
from hcq.signal import QueueState

RING_STREAMS = 256  # submissions in flight before submit waits for the processor
HISTORY = 8  # commands kept for hang reports
MIN_SPLIT_THREADS = 16384  # a first launch with fewer work-items runs on the engine thread: waking workers costs more
MIN_SPLIT_S = 200e-6  # a launch its program's timings say ends sooner than this is never shared
PROBE_EVERY = 32  # launches of a program between re-timings of the mode not chosen: the machine's load changes
CHUNKS_PER_WORKER = 4  # smaller chunks than an even split, so a worker the OS delays does not hold up the dispatch
POLL_S = 0.1  # how often a thread waiting on chunks or for work re-checks that the engine is stopping
WAIT_SLICE_S = (20e-6, 1e-3)  # a WAIT command re-reads its signal after this (doubling): writers elsewhere wake no one
HELP_MAX_S = 200e-6  # a waiting thread runs a stream itself only when its kernels' timings predict less than this
HELP_MAX_COPY = 256 << 10  # ... and its copies move at most this many bytes (a memmove of it takes tens of us)
_SIGNAL_AT = struct.Struct("<IQ")  # a SIGNAL packet's header and address, as they lie in a stream's bytes
_SIGNAL_HEADER = header(Op.SIGNAL)


def _sleep(word: ctypes.c_uint64, value: int, timeout_s: float) -> None:
    """Default for a processor without a device: sleep the slice out."""
    time.sleep(timeout_s)


class _Dispatch:
    """One kernel launch being shared out: workgroups [0, total) handed out in chunks to whichever thread asks."""

    def __init__(self, prog: Any, kernargs: int, global_size: tuple, local_size: tuple, total: int, chunk: int):
        self.prog, self.kernargs, self.global_size, self.local_size = prog, kernargs, global_size, local_size
        self.total, self.chunk = total, chunk
        self.next = 0  # the first workgroup not yet handed out
        self.running = 0  # chunks handed out and not yet finished
        self.error: tuple[int, int, Exception] | None = None  # (first, count, exception) of the first chunk that failed
        self.finished = threading.Event()
        self._lock = threading.Lock()

    def work(self) -> None:
        """Run chunks until none are left (or one failed: the launch faults, so the rest need not run)."""
        while True:
            with self._lock:
                if self.next >= self.total or self.error is not None:
                    if self.running == 0:
                        self.finished.set()
                    return
                first, count = self.next, min(self.chunk, self.total - self.next)
                self.next += count
                self.running += 1
            try:
                self.prog.run(self.kernargs, self.global_size, self.local_size, first, count)
            except Exception as e:  # reported by the engine thread as a device fault, as on a GPU
                with self._lock:
                    if self.error is None:
                        self.error = (first, count, e)
            finally:
                with self._lock:
                    self.running -= 1


class WorkerPool:
    """Threads that run chunks of a launch next to the engine thread; `size` counts the engine thread too.

    The helper threads start with the first launch big enough to share, so a device that only runs tiny kernels
    never has them, and stop() ends them.
    """

    def __init__(self, name: str, size: int):
        self.name, self.size = name, size
        self._cv = threading.Condition()
        self._job: _Dispatch | None = None
        self._generation = 0  # bumped per launch: a worker takes part in each launch once
        self._threads: list[threading.Thread] = []
        self._stop = False

    def run(self, job: _Dispatch, stopping: Callable[[], bool]) -> None:
        """Run job on this thread and the workers; returns when every chunk finished, or early when stopping()."""
        with self._cv:
            if not self._threads and not self._stop:
                self._threads = [threading.Thread(target=self._loop, name=f"cpu-{self.name}-worker{i}", daemon=True)
                                 for i in range(1, self.size)]
                for t in self._threads:
                    t.start()
            self._job = job
            self._generation += 1
            self._cv.notify_all()
        try:
            job.work()
            while not job.finished.wait(POLL_S):
                if stopping():
                    return
        finally:
            with self._cv:
                self._job = None

    def _loop(self) -> None:
        seen = 0
        while True:
            with self._cv:
                while (self._job is None or self._generation == seen) and not self._stop:
                    self._cv.wait(POLL_S)
                if self._stop:
                    return
                job, seen = self._job, self._generation
            job.work()

    def stop(self, timeout: float = 5.0) -> None:
        """End the worker threads; each finishes the chunk it is running first (at most `timeout` s in all)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        deadline = time.perf_counter() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.perf_counter()))

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    @property
    def current(self) -> _Dispatch | None:
        """The launch being shared now, if any (for hang reports)."""
        return self._job


class CPUProcessor:
    """One engine of the CPU device (compute or copy), running in its own thread; `workers` threads in all
    (this one included) share each kernel launch big enough to be worth it.

    Whether a launch is shared is timed, not guessed: per program, the engine keeps the time per workgroup of its
    last launch run alone and of its last launch shared, and shares when that is faster (a memory-bound kernel on a
    busy machine may not be). A program's first launch is shared when it has at least min_split_threads
    work-items, its second tries the other way, launches expected to end within min_split_s are never shared, and
    every PROBE_EVERY launches the way not chosen is timed again. Only the speed depends on this, never the results.

    Streams complete on this engine's thread or on a host thread waiting for one of their signals (help(), see the
    module docstring); `helped` counts those a waiting thread ran.
    """

    def __init__(self, name: str, programs: dict[int, Any], check_range: Callable[[int, int], bool],
                 on_fault: Callable[[DeviceFault], None], submit_timeout: float = 10.0,
                 on_signal: Callable[[int, int], None] = lambda addr, value: None, workers: int = 1,
                 sleep: Callable[[ctypes.c_uint64, int, float], None] = _sleep):
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"cpu {name}: workers={workers!r} must be a whole number >= 1 (1 runs every launch on "
                             "the engine thread)")
        self.name = name
        self.workers = workers
        self.min_split_threads = MIN_SPLIT_THREADS
        self.min_split_s = MIN_SPLIT_S
        self._timing: dict[int, list] = {}  # program handle -> [s per workgroup alone, s per workgroup shared, launches]
        self.pool = WorkerPool(name, workers)
        self._params: dict[int, frozenset[str]] = {}  # program handle -> the parameter names of its run()
        self.on_signal = on_signal  # on_signal(address, value) after every signal write: wakes its waiters
        self.sleep = sleep  # sleep(word, value, timeout_s): a WAIT's sleep, ended early by this device's signal writes
        self.programs = programs
        self.check_range = check_range
        self.on_fault = on_fault
        self.submit_timeout = submit_timeout
        self.read_ptr = 0  # words consumed, over the engine's lifetime
        self.write_ptr = 0  # words submitted
        self.history: deque[Command] = deque(maxlen=HISTORY)
        self.current: Command | None = None
        self.stalled = False  # set by fault injection: the engine stops consuming
        self.packets = 0
        self.helped = 0  # streams (or their rest) run by a waiting thread instead of this engine's own
        self._ring: deque[array] = deque()  # appended by submitters, popped by the engine (deque ops are atomic)
        self._cv = threading.Condition()  # only for sleeping: a submitter facing a full ring
        # An idle engine sleeps on this lock, used as a binary semaphore (unlocked: a wake is pending): cheaper to
        # take and to release than a Condition's wait and notify, and submit releases it on every synced op.
        self._bell = threading.Lock()
        self._bell.acquire()
        self._submit_lock = threading.Lock()  # keeps concurrent submitters' append and write_ptr in one order
        self._idle = False  # the engine sleeps (or is about to) on _bell: a submit must wake it
        self._full_waiters = 0  # submitters sleeping for room in the ring
        self._exec = threading.Lock()  # held while a stream runs, by the engine thread or a helper: one at a time
        self._head_done = 0  # commands of the head stream already run (a helper stopped at a WAIT not yet satisfied)
        self._helping = False  # a waiting thread holds _exec: the engine thread sleeps until it is done
        self._decode_cache: tuple[array, list[Command]] | None = None  # (stream, its commands): decoded once
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"cpu-{name}", daemon=True)
        self._thread.start()

    # --- host side ---
    def submit(self, words: array) -> None:
        """Queue a snapshot of `words`; waits (bounded) while the ring is full."""
        snapshot = array("I", words)
        if self._stop:  # a submit racing close(): the device check passed, the engine is gone now
            raise self._closed_error()
        if len(self._ring) >= RING_STREAMS:
            self._wait_for_room()
        with self._submit_lock:
            self._ring.append(snapshot)
            self.write_ptr += len(snapshot)
        # Appended before _idle is read: an engine going idle after this sees the work; one already idle is woken
        # (it sets _idle, then re-checks the ring; a wake between its check and its sleep leaves _bell unlocked).
        if self._idle:
            self._wake()
        # No GIL hand-over (time.sleep(0)) here: it starts long kernels sooner but makes every submit wait out
        # the engine's Python (measured: build+submit 22 -> 124 us). The engine runs once this thread waits.

    def _wait_for_room(self) -> None:
        deadline = time.perf_counter() + self.submit_timeout
        with self._cv:
            self._full_waiters += 1
            try:
                while len(self._ring) >= RING_STREAMS:
                    if self._stop:  # stop() notifies: nothing will make room any more
                        raise self._closed_error()
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        raise HCQError(f"cpu {self.name} ring full for {self.submit_timeout} s: "
                                       f"{self.debug_state().describe()}")
                    self._cv.wait(min(left, 0.1))
            finally:
                self._full_waiters -= 1

    def _wake(self) -> None:
        """Wake the engine thread if it sleeps on _bell (else its next sleep returns at once and it looks again)."""
        try:
            self._bell.release()
        except RuntimeError:  # already unlocked: a wake is pending
            pass

    def _closed_error(self) -> DeviceClosedError:
        return DeviceClosedError(f"cpu.{self.name} is stopped: its device was closed; open the device again to use it")

    def debug_state(self) -> QueueState:
        recent = list(self.history) + ([self.current] if self.current else [])
        extra = {"executing": self.current.op.name} if self.current else {}
        if self.stalled:
            extra["stalled"] = "yes (fault injection)"
        job = self.pool.current
        if job is not None:  # a shared launch: which of its workgroups are still out
            extra["launch"] = (f"{job.next} of {job.total} workgroups handed out, {job.running} chunks running on "
                               f"{self.workers} threads")
        return QueueState(f"cpu.{self.name}", self.read_ptr, self.write_ptr, format_commands(recent), extra)

    def stop(self) -> None:
        """End the engine thread and its workers (a kernel already running finishes first, bounded by join)."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._wake()
        self._thread.join(timeout=5)
        if self._exec.acquire(timeout=5):  # a helper running a stream now finishes it before the memory goes
            self._exec.release()
        self.pool.stop()

    def drop_pending(self) -> None:
        """Discard unexecuted work (recovery after a fault)."""
        with self._cv:
            dropped = sum(len(w) for w in self._ring)
            self._ring.clear()
            self._head_done = 0
            self.read_ptr += dropped
            self.stalled = False
            self._cv.notify_all()
        self._wake()

    # --- the engine ---
    def _run(self) -> None:
        while True:
            if not self._ring or self.stalled or self._helping or self._stop:
                self._idle = True
                while (not self._ring or self.stalled or self._helping) and not self._stop:
                    self._bell.acquire(timeout=POLL_S)
                self._idle = False
                if self._stop:
                    return
            if not self._exec.acquire(timeout=POLL_S):  # a helper took it just now: look again once it is done
                continue
            try:
                if self._ring and not self.stalled and not self._stop:  # a helper may have run it meanwhile
                    self._step(self._ring[0], None, helping=False)
            finally:
                self._exec.release()
            if self._full_waiters:
                with self._cv:
                    self._cv.notify_all()

    def will_signal(self, addr: int) -> bool:
        """Whether a stream not yet finished writes the signal at addr (a cheap byte search: a false match only
        means a waiter helps work it did not need)."""
        if not self._ring:
            return False
        pattern = _SIGNAL_AT.pack(_SIGNAL_HEADER, addr)
        for words in list(self._ring):
            if pattern in words.tobytes():
                return True
        return False

    def help(self) -> bool:
        """Run the stream at the head of the ring on this thread if it is ready and small (see the module
        docstring); returns whether any of it ran. Never blocks: work the engine thread runs now is left to it."""
        if self.stalled or self._stop:
            return False
        try:
            words = self._ring[0]
        except IndexError:  # nothing left: the engine thread or another helper ran it
            return False
        # Looked at before taking _exec, so a stream that is not helped never makes the engine thread wait for it.
        start = self._head_done
        cmds = self._decoded(words)
        if cmds is None or not self._helpable(cmds, start) or not self._exec.acquire(blocking=False):
            return False
        try:
            if self.stalled or self._stop or not self._ring or self._ring[0] is not words:
                return False
            if self._head_done != start and not self._helpable(cmds, self._head_done):
                return False  # another helper ran part of it meanwhile and stopped at a WAIT
            self._helping = True
            self.helped += 1
            self._step(words, cmds, helping=True)
        finally:
            self._helping = False
            self._exec.release()
        # Cleared before _idle is read: an engine going idle after this sees it; one already idle is woken if
        # work is left (as after a submit).
        if self._idle and self._ring:
            self._wake()
        if self._full_waiters:
            with self._cv:
                self._cv.notify_all()
        return True

    def _helpable(self, cmds: list[Command], start: int) -> bool:
        """Whether cmds[start:] may run on a waiting thread: ready now, small, and run only by compiled code."""
        predicted, copied = 0.0, 0
        for cmd in cmds[start:]:
            f = cmd.fields
            if cmd.op == Op.WAIT:
                if not self._reached(f["signal"], f["value"]):
                    return False
            elif cmd.op == Op.EXEC:
                timing = self._timing.get(f["program"])
                if not isinstance(self.programs.get(f["program"]), CompiledKernel) or timing is None:
                    return False  # a Python program, or one never timed: its run time is unknown
                known = [t for t in timing[:2] if t is not None]
                if not known:
                    return False
                predicted += min(known) * f["gx"] * f["gy"] * f["gz"]
                if predicted >= HELP_MAX_S:
                    return False
            elif cmd.op == Op.COPY:
                copied += f["size"]
                if copied > HELP_MAX_COPY:
                    return False
        return True

    def _decoded(self, words: array) -> list[Command] | None:
        """The commands of a stream in the ring, decoded once for helpers and the engine thread (None: malformed,
        which the engine thread reports as a fault)."""
        cached = self._decode_cache
        if cached is not None and cached[0] is words:
            return cached[1]
        try:
            cmds = decode(words)
        except CommandDecodeError:
            return None
        self._decode_cache = (words, cmds)
        return cmds

    def _reached(self, addr: int, value: int) -> bool:
        """Whether a WAIT on the signal at addr for value would pass now (an unmapped signal: no, the engine faults)."""
        return self.check_range(addr, 16) and ctypes.c_uint64.from_address(addr).value >= value

    def _step(self, words: array, cmds: list[Command] | None, helping: bool) -> None:
        """Run (the rest of) the head stream, under the execution lock; pop it once it is done or faulted."""
        try:
            done = self._execute(words, cmds, helping)
        except _Faulted:
            with self._cv:
                self._ring.clear()
                self._head_done = 0
                self.read_ptr = self.write_ptr
            done = True
        except BaseException as e:  # Ctrl-C in a helping thread: whether the command finished is unknown
            self.on_fault(DeviceFault("interrupted", f"{type(e).__name__} in the thread running "
                                      f"{self.current.op.name if self.current else 'a stream'} of cpu.{self.name}; "
                                      "recover() the device to use it again", queue=f"cpu.{self.name}"))
            with self._cv:
                self._ring.clear()
                self._head_done = 0
                self.read_ptr = self.write_ptr
            raise
        if done and self._ring and self._ring[0] is words:
            self._ring.popleft()

    def _execute(self, words: array, cmds: list[Command] | None = None, helping: bool = False) -> bool:
        """Run the head stream from the first command not yet run; False when a helper stopped at a WAIT that is
        not satisfied (the engine thread goes on from there)."""
        if cmds is None:
            cached = self._decode_cache
            if cached is not None and cached[0] is words:
                cmds = cached[1]
            else:
                try:
                    cmds = decode(words)
                except CommandDecodeError as e:
                    self._fault(DeviceFault("bad packet", str(e), queue=f"cpu.{self.name}"))
        for i in range(self._head_done, len(cmds)):
            cmd = cmds[i]
            if helping and cmd.op == Op.WAIT:  # seen satisfied once it passes, as on a GPU: a helper never sleeps
                if not self._reached(cmd.fields["signal"], cmd.fields["value"]):
                    return False  # someone lowered the signal since _helpable looked: the engine thread goes on
            else:
                self.current = cmd
                self._one(cmd)
            self.packets += 1
            self.history.append(cmd)
            self.current = None
            self.read_ptr += 1 + PAYLOAD_DWORDS[cmd.op]
            self._head_done = i + 1
        self._head_done = 0
        return True

    def _one(self, cmd: Command) -> None:
        f = cmd.fields
        if cmd.op in (Op.WAIT, Op.SIGNAL, Op.TIMESTAMP):
            self._need(f["signal"], 16, cmd)
            word = ctypes.c_uint64.from_address(f["signal"])
            if cmd.op == Op.WAIT:
                slice_s = WAIT_SLICE_S[0]
                while word.value < f["value"]:
                    if self._stop:
                        raise _Faulted()
                    self.sleep(word, f["value"], slice_s)
                    slice_s = min(slice_s * 2, WAIT_SLICE_S[1])
            else:
                ctypes.c_uint64.from_address(f["signal"] + 8).value = time.perf_counter_ns()
                if cmd.op == Op.SIGNAL:
                    word.value = f["value"]
                    self.on_signal(f["signal"], f["value"])
        elif cmd.op == Op.COPY:
            self._need(f["src"], f["size"], cmd)
            self._need(f["dst"], f["size"], cmd)
            ctypes.memmove(f["dst"], f["src"], f["size"])
        elif cmd.op == Op.EXEC:
            prog = self.programs.get(f["program"])
            if prog is None:
                self._fault(DeviceFault("bad packet", f"EXEC of unknown program {f['program']}", queue=f"cpu.{self.name}"))
            self._launch(f["program"], prog, f["kernargs"], (f["gx"], f["gy"], f["gz"]), (f["lx"], f["ly"], f["lz"]))
        # NOP and BARRIER: the engine runs in order and ctypes stores are visible to the host immediately.

    def _launch(self, handle: int, prog: Any, kernargs: int, global_size: tuple, local_size: tuple) -> None:
        """Run one kernel over its grid: shared with the workers when it is big enough, else on this thread."""
        total = global_size[0] * global_size[1] * global_size[2]
        timing = self._timing.get(handle)
        if timing is None and self._takes_range(handle, prog):  # compiled kernels are timed: sharing and helping use it
            timing = self._timing[handle] = [None, None, 0]
        share = timing is not None and self._share(timing, total, total * local_size[0] * local_size[1] * local_size[2])
        start = time.perf_counter()
        if share:
            chunk = math.ceil(total / (self.workers * CHUNKS_PER_WORKER))
            job = _Dispatch(prog, kernargs, global_size, local_size, total, chunk)
            self.pool.run(job, lambda: self._stop)
            timing[1] = (time.perf_counter() - start) / total
            if job.error is not None:
                first, count, e = job.error
                self._fault(DeviceFault("kernel error", f"{prog.name}: {e} (in workgroups {first}..{first + count - 1} "
                                        f"of {total})", queue=f"cpu.{self.name}"))
            if not job.finished.is_set():  # stopping mid-launch: the rest of the stream must not run
                raise _Faulted()
            return
        try:
            if self._helping and "hold_gil" in self._run_params(handle, prog):
                # A waiting thread keeps the GIL through the short kernel: released, the engine thread the submit
                # woke takes it, and getting it back costs more than the kernel (measured: 100 -> 76 us a synced op).
                prog.run(kernargs, global_size, local_size, hold_gil=True)
            else:
                prog.run(kernargs, global_size, local_size)
        except Exception as e:  # a kernel that fails is a device fault, as on a GPU
            self._fault(DeviceFault("kernel error", f"{prog.name}: {e}", queue=f"cpu.{self.name}"))
        if timing is not None and total:
            timing[0] = (time.perf_counter() - start) / total

    def _share(self, timing: list, total: int, items: int) -> bool:
        """Whether to share this launch with the workers (see the class docstring); timing is the program's."""
        if self.workers == 1 or total < 2:
            return False
        alone, shared, launches = timing
        timing[2] += 1
        if alone is None and shared is None:
            return items >= self.min_split_threads
        if min(t for t in (alone, shared) if t is not None) * total < self.min_split_s:
            return False
        if alone is None or shared is None:
            return shared is None  # time the way not tried yet
        if launches % PROBE_EVERY == 0:
            return shared >= alone
        return shared < alone

    def _takes_range(self, handle: int, prog: Any) -> bool:
        """Whether prog.run accepts (first, count): compiled kernels do; a plain run(kernargs, global, local) runs whole."""
        params = self._run_params(handle, prog)
        return "first" in params and "count" in params

    def _run_params(self, handle: int, prog: Any) -> frozenset[str]:
        """The parameter names of prog.run (looked up once per program)."""
        known = self._params.get(handle)
        if known is None:
            try:
                known = frozenset(inspect.signature(prog.run).parameters)
            except (TypeError, ValueError):  # a builtin without a signature: run it whole
                known = frozenset()
            self._params[handle] = known
        return known

    def _need(self, addr: int, size: int, cmd: Command) -> None:
        if size and not self.check_range(addr, size):
            self._fault(DeviceFault("page fault", f"{cmd.op.name} touches [{addr:#x}, {addr + size:#x}) outside "
                                    "any allocation", address=addr, queue=f"cpu.{self.name}"))

    def _fault(self, fault: DeviceFault) -> None:
        self.on_fault(fault)
        raise _Faulted()


class _Faulted(Exception):
    """Unwinds the engine after a fault; the fault itself went to the device."""
