"""The host as an HCQ device: host memory as device memory, host threads as its compute and copy engines.

It exists so the tensor layer and the contract suite have a device on every machine, and it follows the
same contracts as the GPUs: asynchronous completion, signals in memory, replayable queues, faults that
poison the device until recovered, and hang reports. Its compute engine spreads each big kernel launch over
`workers` threads (one per core this process may run on, or BAREGPU_CPU_THREADS), and it may be used from several
threads at once: what they share (the heap, the live-buffer index, the program table) is changed under a lock.
A thread that waits on one of its signals runs the engines' small ready work itself instead of sleeping until their
threads get to it (see drivers/cpu/processor.py).
"""
from __future__ import annotations

import bisect
import ctypes
import itertools
import os
import threading
import time
from typing import Any

from drivers.cpu.processor import CPUProcessor
from drivers.cpu.queue import CPUCopyQueue, CPUQueue
from drivers.system import MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, PAGE_SIZE, LinuxSystem, System
from hcq.allocator import VAHeap
from hcq.buffer import Buffer, MemFlags
from hcq.device import Device, DeviceFault
from hcq.env import env_int
from hcq.errors import InvalidHandleError
from hcq.signal import SIGNAL_SIZE, Signal, SignalPool

DEFAULT_ARENA = 8 << 30  # reserved, not committed: pages are only backed once touched
SIGNAL_SLOTS = 4096
THREADS_ENV = "BAREGPU_CPU_THREADS"


def default_workers() -> int:
    """Threads per kernel launch: BAREGPU_CPU_THREADS when set (a whole number >= 1), else the usable cores."""
    return env_int(THREADS_ENV, len(os.sched_getaffinity(0)), minimum=1)


class CPUDevice(Device):
    """An HCQ device backed by host memory and host threads; GPU virtual addresses are host addresses.

    `workers` is how many threads share one kernel launch (default: default_workers()); 1 runs every launch on the
    compute engine's own thread.
    """

    # Host waits sleep at once: a spinning waiter holds the GIL the engine threads need to write the signal.
    wait_spin_s = 0.0

    def __init__(self, index: int = 0, system: System | None = None, arena_size: int = DEFAULT_ARENA,
                 workers: int | None = None):
        super().__init__(f"CPU:{index}" if index else "CPU")
        self.workers = default_workers() if workers is None else workers
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise ValueError(f"CPUDevice(workers={workers!r}): workers is a whole number >= 1 (threads per kernel "
                             "launch); leave it out for one per core")
        self._lock = threading.Lock()  # guards the heap, the live-buffer index and the program table
        self.system = system or LinuxSystem()
        self._arena_size = arena_size
        self._arena = self.system.mmap(-1, arena_size, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
        self.heap = VAHeap(self._arena, arena_size, min_align=64, name=f"{self.name} memory")
        self._live: dict[int, Buffer] = {}
        self._starts: list[int] = []  # sorted starts of live allocations, for fault checks
        sig_buf = self.alloc(SIGNAL_SIZE * SIGNAL_SLOTS)
        self.signals = SignalPool(sig_buf.va, sig_buf.va, sig_buf.size, self)
        self.programs: dict[int, Any] = {}
        self._handles = itertools.count(1)
        # The "interrupt": engines report every signal write (and faults), and it wakes the sleeping waits that write
        # satisfied, only those: a waiter woken for another value would take the GIL from the engines for nothing.
        self._irq = threading.Lock()
        self._sleepers: dict[int, list[tuple[int, threading.Lock]]] = {}  # signal address -> (value, gate to open)
        # Only compute shares launches; copies are one memmove each and stay on their engine's thread.
        self._engines = {name: CPUProcessor(name, self.programs, self._mapped, self.set_fault, on_signal=self._interrupt,
                                            workers=self.workers if name == "compute" else 1, sleep=self._engine_sleep)
                         for name in ("compute", "copy")}
        self._closed = False

    # --- memory ---
    def alloc(self, size: int, flags: MemFlags = MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE, align: int = 0) -> Buffer:
        """Device memory; on the CPU every buffer is host-visible and its GPU address is its host address."""
        self.check()
        with self._lock:
            va = self.heap.alloc(size, align)
            buf = Buffer(va, size, self, flags | MemFlags.HOST_VISIBLE, host_addr=va)
            self._live[va] = buf
            bisect.insort(self._starts, va)
        return buf

    def free(self, buf: Buffer) -> None:
        """Return a buffer's memory; using it afterwards is an error."""
        with self._lock:  # the check and the removal together: two threads freeing one buffer cannot both pass
            if self._live.get(buf.va) is not buf:
                raise InvalidHandleError(f"{buf!r} is not a live allocation of {self.name} (freed twice, or a view?)")
            self.heap.free(buf.va)
            del self._live[buf.va]
            self._starts.remove(buf.va)
            buf.mark_freed()

    def _mapped(self, addr: int, size: int) -> bool:
        with self._lock:  # the engines check ranges while host threads allocate and free
            i = bisect.bisect_right(self._starts, addr) - 1
            if i < 0:
                return False
            b = self._live[self._starts[i]]
            return addr + size <= b.va + b.size

    # --- signals, programs, queues ---
    def new_signal(self, value: int = 0, name: str = "") -> Signal:
        return self.signals.new(value, name)

    def load_program(self, program: Any) -> Any:
        """Register a host-callable program (run(kernargs_va, global, local)); sets program.handle."""
        if getattr(program, "target", "host") != "host":
            raise ValueError(f"{program.name} was built for {program.target}; the CPU device runs host kernels")
        with self._lock:
            handle = next(self._handles)
            self.programs[handle] = program
            program.handle = handle
        return program

    def compute_queue(self) -> CPUQueue:
        return CPUQueue(self)

    def copy_queue(self) -> CPUCopyQueue:
        return CPUCopyQueue(self)

    def processor(self, engine: str) -> CPUProcessor:
        self.check()
        return self._engines[engine]

    def hw_queues(self) -> list[CPUProcessor]:
        return list(self._engines.values())

    # --- faults, injection, lifetime ---
    def stall(self, engine: str = "compute") -> None:
        """Fault injection: the engine stops consuming work (a queue that never completes)."""
        self._engines[engine].stalled = True

    def _recover(self) -> None:
        for e in self._engines.values():
            e.drop_pending()
        self.timeline.value = self.timeline_value  # nothing pending remains to signal it
        self._interrupt()

    def set_fault(self, fault: DeviceFault) -> None:
        super().set_fault(fault)
        self._interrupt()

    def _interrupt(self, addr: int = -1, value: int = 0) -> None:
        """An engine wrote `value` to the signal at addr: wake who waits for at most that; addr -1 (a fault) wakes all."""
        with self._irq:
            if addr == -1:
                targets = list(self._sleepers)
            elif addr in self._sleepers:
                targets = [addr]
            else:
                return
            for at in targets:
                waiting = self._sleepers[at]
                woken = [w for w in waiting if addr == -1 or w[0] <= value]
                for w in woken:
                    waiting.remove(w)
                    w[1].release()
                if not waiting:
                    del self._sleepers[at]

    def _sleep_until(self, addr: int, word: ctypes.c_uint64, value: int, timeout_s: float) -> None:
        """Sleep until an engine writes value (or more) to the signal at addr, or faults; at most timeout_s."""
        gate = threading.Lock()
        gate.acquire()
        entry = (value, gate)
        with self._irq:  # checked under the lock _interrupt takes after a write or fault: none slips in before sleep
            if word.value >= value or self.fault is not None or timeout_s <= 0:
                return
            self._sleepers.setdefault(addr, []).append(entry)
        try:
            gate.acquire(timeout=timeout_s)
        finally:
            with self._irq:  # timed out: nobody opened the gate, so the entry is still listed
                waiting = self._sleepers.get(addr, [])
                if entry in waiting:
                    waiting.remove(entry)
                    if not waiting:
                        del self._sleepers[addr]

    def sleep_on_signal(self, signal: Signal, value: int, timeout_s: float) -> None:
        """Sleep until an engine writes at least `value` to the signal (or faults), at most timeout_s.

        First, while an engine that will write the signal has small ready work at its head, this thread runs it
        (CPUProcessor.help): cheaper than waking the engine's thread and being woken back by it."""
        self.check()
        word = ctypes.c_uint64.from_address(signal.host_addr)
        deadline = time.perf_counter() + timeout_s
        while word.value < value and self._help(signal.va):
            self.check()  # helped work that faulted ends the wait as the engine's fault would
            if time.perf_counter() >= deadline:
                return
        self._sleep_until(signal.va, word, value, deadline - time.perf_counter())
        self.check()

    def _help(self, addr: int) -> bool:
        """Run one ready stream of an engine that will write the signal at addr; whether any work ran."""
        for engine in self._engines.values():
            if engine.will_signal(addr) and engine.help():
                return True
        return False

    def _engine_sleep(self, word: ctypes.c_uint64, value: int, timeout_s: float) -> None:
        """An engine's WAIT: sleep until the other engine writes the signal, at most timeout_s."""
        self._sleep_until(ctypes.addressof(word), word, value, timeout_s)

    def close(self) -> None:
        """Stop the engines and release the memory arena."""
        # Under the submit lock: a submit that already passed check() finishes before the arena goes away.
        with self.submit_lock:
            if self._closed:
                return
            self._closed = True
            self.closed = True
        for e in self._engines.values():
            e.stop()  # the engine threads and their workers
        self.system.munmap(self._arena, self._arena_size)

    def __enter__(self) -> "CPUDevice":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["CPUDevice", "PAGE_SIZE"]
