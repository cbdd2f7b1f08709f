"""Signal waits: fast path, bounded sleeping in slices, the re-read before raising, and the hang report."""
from __future__ import annotations

import ctypes
import threading
import time

import pytest

from hcq.signal import MAX_SLICE_S, SIGNAL_SIZE, HangReport, QueueState, Signal, SignalPool, SignalTimeoutError
from hcq.errors import HCQError


@pytest.fixture
def mem():
    buf = (ctypes.c_uint64 * 64)()
    return ctypes.addressof(buf), buf


class RecordingDevice:
    """A device stand-in whose sleeper records every slice it was asked to sleep."""

    def __init__(self, on_sleep=None):
        self.slices: list[float] = []
        self.on_sleep = on_sleep

    def sleep_on_signal(self, signal, value, timeout_s):
        self.slices.append(timeout_s)
        if self.on_sleep:
            self.on_sleep(signal, value, timeout_s)
        time.sleep(timeout_s)

    def hang_report(self, waited, signals):
        q = QueueState("compute0", read_ptr=0x40, write_ptr=0x80, last_packets="0x0040 WAIT signal=0x1000 value=0x2d4")
        return HangReport("test-dev", waited, [(s.name, s.value, v) for s, v in signals], [q])


def test_fast_path_returns_without_sleeping(mem):
    addr, _ = mem
    dev = RecordingDevice()
    sig = Signal(addr, 0x1000, dev, "s")
    sig.value = 724
    sig.wait(724, timeout=0)
    sig.wait(10, timeout=0)
    assert dev.slices == []


def test_wait_sleeps_in_bounded_slices_and_never_past_the_timeout(mem):
    addr, _ = mem
    dev = RecordingDevice()
    sig = Signal(addr, 0x1000, dev, "s")
    with pytest.raises(SignalTimeoutError):
        sig.wait(1, timeout=0.35)
    assert dev.slices and all(0 < s <= MAX_SLICE_S for s in dev.slices)
    assert sum(dev.slices) <= 0.35 + 1e-9, "the sleeps together must not exceed the timeout"


def test_value_arriving_during_a_sleep_ends_the_wait(mem):
    addr, _ = mem
    sig = None

    def land(signal, value, timeout_s):
        threading.Timer(timeout_s / 2, lambda: setattr(signal, "value", value)).start()

    dev = RecordingDevice(land)
    sig = Signal(addr, 0x1000, dev, "s")
    sig.wait(5, timeout=5)
    assert sig.value == 5 and len(dev.slices) == 1


class LandsAtDeadline:
    """A signal word that reads below the target until the deadline has passed, then reads the target."""

    def __init__(self, target, deadline_after):
        self.target, self.deadline = target, time.perf_counter() + deadline_after

    @property
    def value(self):
        return self.target if time.perf_counter() >= self.deadline else self.target - 1


@pytest.mark.parametrize("with_sleeper", [False, True])
def test_value_that_lands_at_the_deadline_is_never_reported_as_a_timeout(mem, with_sleeper):
    addr, _ = mem
    sig = Signal(addr, 0x1000, RecordingDevice() if with_sleeper else None, "s")
    sig._value = LandsAtDeadline(724, 0.2)
    sig.wait(724, timeout=0.2)  # the "signal is 724, wanted 724" race: must return, not raise


def test_timeout_raises_a_hang_report_naming_queues_packets_and_values(mem):
    addr, _ = mem
    sig = Signal(addr, 0x1000, RecordingDevice(), "timeline")
    sig.value = 3
    with pytest.raises(SignalTimeoutError) as e:
        sig.wait(4, timeout=0.05)
    text = str(e.value)
    assert "timeline: value 3" in text and "waiting for 4" in text
    assert "read 0x40 write 0x80" in text and "WAIT signal=0x1000" in text
    assert e.value.report.signals == [("timeline", 3, 4)]
    assert isinstance(e.value, TimeoutError)


def test_signal_without_device_still_reports_its_value(mem):
    addr, _ = mem
    sig = Signal(addr, 0x2000, None, "lonely")
    with pytest.raises(SignalTimeoutError, match="lonely: value 0"):
        sig.wait(1, timeout=0.01)


def test_pool_hands_out_distinct_slots_and_reuses_released_ones(mem):
    addr, buf = mem
    pool = SignalPool(addr, 0x10000, 4 * SIGNAL_SIZE)
    sigs = [pool.new(i) for i in range(4)]
    assert len({s.va for s in sigs}) == 4 and [s.value for s in sigs] == [0, 1, 2, 3]
    with pytest.raises(HCQError, match="exhausted"):
        pool.new()
    sigs[2].release()
    again = pool.new(9)
    assert again.va == sigs[2].va and again.value == 9 and pool.live == 4
    with pytest.raises(ValueError, match="aligned"):
        Signal(addr + 4, 0x1000)


def test_double_release_is_an_error(mem):
    addr, _ = mem
    pool = SignalPool(addr, 0x10000, 2 * SIGNAL_SIZE)
    s = pool.new()
    pool._give_back(s)
    with pytest.raises(HCQError, match="released twice"):
        pool._give_back(s)
