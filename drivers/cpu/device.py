"""The host as an HCQ device: host memory as device memory, host threads as its compute and copy engines.

It exists so the tensor layer and the contract suite have a device on every machine, and it follows the
same contracts as the GPUs: asynchronous completion, signals in memory, replayable queues, faults that
poison the device until recovered, and hang reports.
"""
from __future__ import annotations

import bisect
import itertools
import threading
from typing import Any

from drivers.cpu.processor import CPUProcessor
from drivers.cpu.queue import CPUCopyQueue, CPUQueue
from drivers.system import MAP_ANONYMOUS, MAP_NORESERVE, MAP_PRIVATE, PAGE_SIZE, LinuxSystem, System
from hcq.allocator import VAHeap
from hcq.buffer import Buffer, MemFlags
from hcq.device import Device, DeviceFault
from hcq.errors import InvalidHandleError
from hcq.signal import SIGNAL_SIZE, Signal, SignalPool

DEFAULT_ARENA = 8 << 30  # reserved, not committed: pages are only backed once touched
SIGNAL_SLOTS = 4096


class CPUDevice(Device):
    """An HCQ device backed by host memory and host threads; GPU virtual addresses are host addresses."""

    def __init__(self, index: int = 0, system: System | None = None, arena_size: int = DEFAULT_ARENA):
        super().__init__(f"CPU:{index}" if index else "CPU")
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
        # The "interrupt": engines notify it after every signal write and fault, so a sleeping wait wakes at once.
        self._irq = threading.Condition()
        self._engines = {name: CPUProcessor(name, self.programs, self._mapped, self.set_fault, on_signal=self._interrupt)
                         for name in ("compute", "copy")}
        self._closed = False

    # --- memory ---
    def alloc(self, size: int, flags: MemFlags = MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE, align: int = 0) -> Buffer:
        """Device memory; on the CPU every buffer is host-visible and its GPU address is its host address."""
        self.check()
        va = self.heap.alloc(size, align)
        buf = Buffer(va, size, self, flags | MemFlags.HOST_VISIBLE, host_addr=va)
        self._live[va] = buf
        bisect.insort(self._starts, va)
        return buf

    def free(self, buf: Buffer) -> None:
        """Return a buffer's memory; using it afterwards is an error."""
        if self._live.get(buf.va) is not buf:
            raise InvalidHandleError(f"{buf!r} is not a live allocation of {self.name} (freed twice, or a view?)")
        self.heap.free(buf.va)
        del self._live[buf.va]
        self._starts.remove(buf.va)
        buf.mark_freed()

    def _mapped(self, addr: int, size: int) -> bool:
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

    def set_fault(self, fault: DeviceFault) -> None:
        super().set_fault(fault)
        self._interrupt()

    def _interrupt(self) -> None:
        with self._irq:
            self._irq.notify_all()

    def sleep_on_signal(self, signal: Signal, value: int, timeout_s: float) -> None:
        """Sleep until an engine writes a signal (or faults), at most timeout_s."""
        self.check()
        with self._irq:  # checked under the lock the engines notify with: no write slips between check and wait
            if signal.value < value:
                self._irq.wait(timeout_s)
        self.check()

    def close(self) -> None:
        """Stop the engines and release the memory arena."""
        if self._closed:
            return
        self._closed = True
        self.closed = True
        for e in self._engines.values():
            e.stop()
        self.system.munmap(self._arena, self._arena_size)

    def __enter__(self) -> "CPUDevice":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["CPUDevice", "PAGE_SIZE"]
