"""The device contract every driver implements: a timeline, synchronize, fault state and hang reports."""
from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from hcq.errors import DeviceClosedError, HCQError
from hcq.signal import HangReport, QueueState, Signal


@dataclass
class DeviceFault:
    """A fault the device reported (page fault, malformed packet, hang); it poisons the device until recovered."""
    kind: str  # "page fault", "bad packet", "hang", ...
    message: str
    address: int | None = None
    queue: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        where = f" at {self.address:#x}" if self.address is not None else ""
        on = f" on queue {self.queue}" if self.queue else ""
        return f"{self.kind}{where}{on}: {self.message}"


class DeviceFaultError(HCQError):
    """The device is in a fault state; `fault` says what happened. Recover the device or open a new one."""

    def __init__(self, device: str, fault: DeviceFault):
        super().__init__(f"{device} faulted: {fault}. Later work fails until device.recover() succeeds.")
        self.fault = fault


class Device(ABC):
    """An HCQ device: allocator, signals, hardware queues, a timeline signal and a fault state.

    Every submission bumps the timeline; `synchronize` waits for the last value handed out. A fault
    reported by the hardware makes every later call raise `DeviceFaultError` until `recover()`.

    Threads: a device may be used from several threads of one process. Allocation, freeing, signals, kernel-
    argument staging and submission are each atomic; submission is serialized per device (`submit_lock`), so
    one submit's commands reach its hardware queue whole and in the order the submits were made. What threads
    must still arrange themselves:
    - Timeline values: `next_timeline_value()` gives each caller its own value, but two threads that take a
      value and then submit can submit out of order, and queues on different engines finish out of order, so
      the timeline would step back. `device.submit(q)` takes the value and submits in one step and makes the
      timeline write wait for the previous value: use it (or hold `submit_lock` across both) when threads
      signal the timeline.
    - Order between threads' work is only what signals and waits say: a thread reading memory another thread's
      queue writes waits on a signal that queue writes.
    - A queue object (HWQueue) may be submitted from several threads (each submit patches and copies it under
      `submit_lock`), but building one from two threads at once is not meaningful.
    - A buffer freed by one thread while another's queued work still uses it is the caller's bug, as with one
      thread: free after the work's signal (or use `free_after`).
    - close() from one thread while another submits: the other gets DeviceClosedError (or, if its submit had
      already started, its work is dropped with the device); nothing is written to unmapped memory.
    A full ring or kernel-argument ring makes a submit wait (bounded) while holding `submit_lock`: work that
    only another thread's later submission can unblock times out instead of deadlocking.
    """

    def __init__(self, name: str):
        self.name = name
        self.fault: DeviceFault | None = None
        self.profiling = False
        self.timeline_value = 0  # the last value a submission will signal
        self._timeline: Signal | None = None
        self._kernargs: Any = None
        self.profile_log: list[tuple[str, Signal, Signal]] = []
        self.closed = False  # set by a driver's close(): later calls raise instead of touching unmapped memory
        # (timeline value, buffer): freed once the timeline passes it. A deque: appends need no lock, so a
        # queue's __del__ (run by the collector in any thread, even inside a locked section) only appends.
        self._deferred: deque[tuple[int, Any]] = deque()
        # Held across each submission and across taking a timeline value; reentrant so a caller may hold it
        # around next_timeline_value() and submit() together.
        self.submit_lock = threading.RLock()
        self._state_lock = threading.Lock()  # one deferred-free sweep at a time

    # --- timeline ---
    @property
    def timeline(self) -> Signal:
        if self._timeline is None:
            with self.submit_lock:  # two threads' first use must not make two timelines
                if self._timeline is None:
                    self._timeline = self.new_signal(0, name=f"{self.name}.timeline")
        return self._timeline

    def next_timeline_value(self) -> int:
        """The value the next submission signals on the timeline (each caller gets its own)."""
        with self.submit_lock:
            self.timeline_value += 1
            return self.timeline_value

    def submit(self, q: Any, values: dict[str, int] | None = None) -> int:
        """Submit q (built for this one submission) so that it signals the next timeline value; returns the value.

        Taking the value and submitting are one step, and the timeline write waits for the previous value, so
        the timeline only grows however threads and engines interleave (the work itself still overlaps).
        """
        with self.submit_lock:
            value = self.next_timeline_value()
            if value > 1:
                q.wait(self.timeline, value - 1)
            q.signal(self.timeline, value).submit(self, values)
        return value

    def synchronize(self, timeout: float = 10.0) -> None:
        """Wait until all submitted work finished; raise on a fault or after `timeout` seconds."""
        self.check()
        self.timeline.wait(self.timeline_value, timeout)
        self.poll_faults()
        self.check()
        self.reclaim_deferred()

    # --- memory the GPU may still be reading ---
    def free_after(self, buf: Any, value: int) -> None:
        """Free buf once the timeline reaches value (the last submission that uses it).

        Only records it (safe from __del__ and any thread); synchronize() and reclaim_deferred() free it.
        """
        if self.closed:
            return  # closing freed everything
        self._deferred.append((value, buf))

    def reclaim_deferred(self) -> None:
        """Free the deferred buffers whose submissions finished (another thread already sweeping: skip)."""
        if not self._deferred or self.closed or not self._state_lock.acquire(blocking=False):
            return
        try:
            done = self.timeline.value
            for _ in range(len(self._deferred)):  # entries appended meanwhile wait for the next sweep
                value, buf = self._deferred.popleft()
                if value > done:
                    self._deferred.append((value, buf))
                elif not buf.freed:
                    self.free(buf)
        finally:
            self._state_lock.release()

    # --- kernel arguments ---
    KERNARG_RING_SIZE = 1 << 20

    def stage_kernargs(self, blob: bytes, tag: int) -> int:
        """Copy a kernel-argument block into device memory, reused once the timeline reaches `tag`."""
        from hcq.kernargs import KernargRing
        if self._kernargs is None:
            with self.submit_lock:
                if self._kernargs is None:
                    self._kernargs = KernargRing(self.alloc_kernarg_memory(self.KERNARG_RING_SIZE), self.timeline)
        return self._kernargs.stage(blob, tag)

    def alloc_kernarg_memory(self, size: int) -> Any:
        """Host-visible memory the device's kernels can read arguments from (drivers pick the heap)."""
        from hcq.buffer import MemFlags
        return self.alloc(size, MemFlags.HOST_VISIBLE | MemFlags.UNCACHED)  # type: ignore[attr-defined]

    # --- profiling ---
    def timestamp_ns(self, raw: int) -> int:
        """A raw timestamp from a signal in nanoseconds (drivers whose clock is not in ns override this)."""
        return raw

    def profile(self) -> list[tuple[str, int, int]]:
        """(what, start ns, end ns) of the execs and copies built while profiling was on, once they completed."""
        self.synchronize()
        with self.submit_lock:  # submissions append to the log under the same lock
            log, self.profile_log = self.profile_log, []
        out = [(what, self.timestamp_ns(s.timestamp), self.timestamp_ns(e.timestamp)) for what, s, e in log]
        for _, s, e in log:
            s.release()
            e.release()
        return out

    # --- faults ---
    def set_fault(self, fault: DeviceFault) -> None:
        if self.fault is None:  # keep the first: later ones are usually fallout from it
            self.fault = fault  # a race between two first faults keeps either: both are real faults

    def check(self) -> None:
        """Raise DeviceClosedError after close(), DeviceFaultError if the device is in a fault state."""
        if self.closed:
            raise DeviceClosedError(f"{self.name} is closed; open the device again to use it")
        if self.fault is not None:
            raise DeviceFaultError(self.name, self.fault)

    def poll_faults(self) -> None:
        """Drivers fetch pending fault reports (KFD exception events, MMIO status) into set_fault."""

    def recover(self) -> None:
        """Reset what the fault broke (queues, timeline) so the device is usable again."""
        with self.submit_lock:  # no thread submits into queues that are being replaced
            fault, self.fault = self.fault, None  # recovery itself allocates and submits
            try:
                self._recover()
            except BaseException:
                self.fault = self.fault or fault
                raise

    # --- hang reports ---
    def hang_report(self, waited_s: float, signals: list[tuple[Signal, int]]) -> HangReport:
        """The report a timed-out wait raises: every queue's pointers and last packets, and signal values."""
        self.poll_faults()
        notes = [f"device fault: {self.fault}"] if self.fault else []
        sigs = [(s.name, s.value, want) for s, want in signals]
        if self._timeline is not None and all(s is not self._timeline for s, _ in signals):
            sigs.append((self._timeline.name, self._timeline.value, self.timeline_value))
        return HangReport(self.name, waited_s, sigs, [q.debug_state() for q in self.hw_queues()], notes)

    # --- what drivers provide ---
    @abstractmethod
    def new_signal(self, value: int = 0, name: str = "") -> Signal:
        """A signal in memory the device's queues can write and wait on."""

    @abstractmethod
    def hw_queues(self) -> list[Any]:
        """The hardware queues, each with debug_state() -> QueueState."""

    @abstractmethod
    def _recover(self) -> None: ...

    def sleep_on_signal(self, signal: Signal, value: int, timeout_s: float) -> None:
        """Sleep at most timeout_s or until the signal may have changed (drivers use their event mechanism).

        A fault ends every wait at once: the work it waits for will not complete.
        """
        self.check()
        time.sleep(min(timeout_s, 1e-3))
        self.check()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


__all__ = ["Device", "DeviceFault", "DeviceFaultError", "QueueState"]
