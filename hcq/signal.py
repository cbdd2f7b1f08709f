"""Signals: a 64-bit value and a 64-bit timestamp in GPU-visible memory, and the bounded wait on them.

The wait is the one place every driver's hangs surface, so it is strict: it never reports a timeout for a
value that was reached (the value is read again before raising), it never overshoots its bound by more than
one sleep slice, and a timeout carries a hang report (queue pointers, last packets, signal values) instead
of a bare message.

A wait spins for SPIN_S before it sleeps, unless its device sets `wait_spin_s`: the CPU device sets 0, because its
engines are threads of this process that need the GIL the spinning thread holds, and its sleeper wakes on their
signal writes at once.
"""
from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from hcq.errors import HCQError

SIGNAL_SIZE = 16  # value (u64) then timestamp (u64)
SPIN_S = 50e-6  # busy-poll this long first: most waits on a live queue end within microseconds
MAX_SLICE_S = 0.1  # a sleeping wait re-checks at least this often, which bounds its overshoot


class Sleeper(Protocol):
    """A driver's way to sleep until a signal may have changed (KFD events, a condition variable, ...)."""

    def __call__(self, signal: "Signal", value: int, timeout_s: float) -> None: ...


@dataclass
class QueueState:
    """What one queue looked like when a wait timed out."""
    name: str
    read_ptr: int
    write_ptr: int
    last_packets: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        pending = self.write_ptr - self.read_ptr
        head = f"queue {self.name}: read {self.read_ptr:#x} write {self.write_ptr:#x} ({pending} not consumed)"
        extra = "".join(f", {k} {v}" for k, v in self.extra.items())
        body = "\n".join("    " + ln for ln in self.last_packets.splitlines())
        return head + extra + ("\n  last packets:\n" + body if body else "")


@dataclass
class HangReport:
    """Everything a person needs to see why a wait did not finish."""
    device: str
    waited_s: float
    signals: list[tuple[str, int, int]]  # (name, current value, wanted value)
    queues: list[QueueState]
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.device}: wait timed out after {self.waited_s:.3f} s"]
        lines += [f"  signal {name}: value {cur} (0x{cur:x}), waiting for {want} (0x{want:x})"
                  for name, cur, want in self.signals]
        lines += ["  " + q.describe().replace("\n", "\n  ") for q in self.queues]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class SignalTimeoutError(HCQError, TimeoutError):
    """A wait ran past its bound; `report` holds the hang report, which is also the message."""

    def __init__(self, report: HangReport):
        super().__init__(str(report))
        self.report = report


class Signal:
    """A 64-bit value and a 64-bit timestamp the GPU writes and the host (or another queue) waits on.

    `host_addr` is where the CPU sees the 16 bytes, `va` where the GPU does. `device` is the owner; it
    provides the sleeper for long waits and the hang report on timeouts.
    """

    __slots__ = ("host_addr", "va", "device", "name", "_value", "_ts", "_release")

    def __init__(self, host_addr: int, va: int, device: Any = None, name: str = "",
                 release: Callable[["Signal"], None] | None = None):
        if host_addr % 8 or va % 8:
            raise ValueError(f"signal {name or hex(va)} must be 8-byte aligned (host {host_addr:#x}, gpu {va:#x})")
        self.host_addr, self.va, self.device, self.name = host_addr, va, device, name or f"sig@{va:#x}"
        self._value = ctypes.c_uint64.from_address(host_addr)
        self._ts = ctypes.c_uint64.from_address(host_addr + 8)
        self._release = release

    @property
    def value(self) -> int:
        return self._value.value

    @value.setter
    def value(self, v: int) -> None:
        self._value.value = v

    @property
    def timestamp(self) -> int:
        """The raw GPU timestamp the last signalling packet wrote (device ticks; the device converts)."""
        return self._ts.value

    @timestamp.setter
    def timestamp(self, v: int) -> None:
        self._ts.value = v

    def wait(self, value: int, timeout: float = 10.0) -> None:
        """Return once value >= `value`; raise SignalTimeoutError with a hang report after `timeout` seconds."""
        if self._value.value >= value:
            return
        start = time.perf_counter()
        deadline = start + timeout
        spin_end = min(start + getattr(self.device, "wait_spin_s", SPIN_S), deadline)
        while time.perf_counter() < spin_end:
            if self._value.value >= value:
                return
        sleeper: Sleeper | None = getattr(self.device, "sleep_on_signal", None)
        backoff = 20e-6
        while True:
            now = time.perf_counter()
            if now >= deadline:
                break
            slice_s = min(MAX_SLICE_S, deadline - now)
            if sleeper is not None:
                sleeper(self, value, slice_s)
            else:
                time.sleep(min(backoff, slice_s))
                backoff = min(backoff * 2, 1e-3)
            if self._value.value >= value:
                return
        # The value may have landed between the last check and the deadline: never report a reached value.
        if self._value.value >= value:
            return
        raise SignalTimeoutError(self._hang_report(value, time.perf_counter() - start))

    def _hang_report(self, value: int, waited: float) -> HangReport:
        make = getattr(self.device, "hang_report", None)
        if make is not None:
            report = make(waited, [(self, value)])
        else:
            report = HangReport(str(self.device), waited, [], [], ["the signal has no device to report queues"])
            report.signals.append((self.name, self.value, value))
        return report

    def release(self) -> None:
        """Give the signal's memory back to its pool."""
        if self._release is not None:
            self._release(self)
            self._release = None

    def __repr__(self) -> str:
        return f"Signal({self.name}, value={self.value})"


class SignalPool:
    """Hands out 16-byte signal slots from one host-visible, GPU-mapped region; freed slots are reused."""

    def __init__(self, host_addr: int, va: int, size: int, device: Any = None):
        if size < SIGNAL_SIZE:
            raise ValueError(f"signal pool of {size} bytes cannot hold one {SIGNAL_SIZE}-byte signal")
        self.host_addr, self.va, self.device = host_addr, va, device
        self._free = list(range((size // SIGNAL_SIZE) - 1, -1, -1))
        self._capacity = size // SIGNAL_SIZE
        self._live: set[int] = set()
        self._lock = threading.Lock()  # several threads take and give back slots: the check and the pop go together

    def new(self, value: int = 0, name: str = "") -> Signal:
        """A signal set to `value`; raises when every slot is in use."""
        with self._lock:
            if not self._free:
                raise HCQError(f"signal pool of {self._capacity} signals is exhausted ({len(self._live)} live): "
                               "release signals you no longer wait on")
            slot = self._free.pop()
            self._live.add(slot)
        off = slot * SIGNAL_SIZE
        sig = Signal(self.host_addr + off, self.va + off, self.device, name, self._give_back)
        sig.value, sig.timestamp = value, 0
        return sig

    def _give_back(self, sig: Signal) -> None:
        slot = (sig.va - self.va) // SIGNAL_SIZE
        with self._lock:
            if slot not in self._live:
                raise HCQError(f"{sig.name} released twice")
            self._live.remove(slot)
            self._free.append(slot)

    @property
    def live(self) -> int:
        return len(self._live)
