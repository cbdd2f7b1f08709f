"""A device may turn the wait's spin off (`wait_spin_s`): the CPU device does, since its engines need the GIL a
spinning waiter holds. The wait then sleeps at once, and keeps its contract. The signal pool is thread-safe."""
from __future__ import annotations

import ctypes
import threading
import time

import pytest

import hcq.signal as signal_mod
from hcq.signal import SIGNAL_SIZE, Signal, SignalPool, SignalTimeoutError


class Sleeper:
    """A device stand-in: records when its sleeper was first called, and writes the value from it."""

    def __init__(self, spin: float | None, write: bool = True):
        if spin is not None:
            self.wait_spin_s = spin
        self.first_sleep: float | None = None
        self.write = write

    def sleep_on_signal(self, sig, value, timeout_s):
        if self.first_sleep is None:
            self.first_sleep = time.perf_counter()
        if self.write:
            sig.value = value
        else:
            time.sleep(timeout_s)


@pytest.fixture
def addr():
    buf = (ctypes.c_uint64 * 4)()
    yield ctypes.addressof(buf), buf


def test_a_device_without_spin_sleeps_at_once(addr, monkeypatch):
    monkeypatch.setattr(signal_mod, "SPIN_S", 30.0)  # a default spin this long would be seen at once
    dev = Sleeper(spin=0.0)
    sig = Signal(addr[0], addr[0], dev, "s")
    start = time.perf_counter()
    sig.wait(5, timeout=60)
    assert dev.first_sleep is not None and dev.first_sleep - start < 10, "the wait spun before sleeping"
    assert sig.value == 5


def test_a_device_with_the_default_spins_first(addr, monkeypatch):
    monkeypatch.setattr(signal_mod, "SPIN_S", 0.05)
    dev = Sleeper(spin=None)
    sig = Signal(addr[0], addr[0], dev, "s")
    start = time.perf_counter()
    sig.wait(5, timeout=60)
    assert dev.first_sleep - start >= 0.05, "the default spin was skipped"


def test_without_spin_a_timeout_is_still_bounded_and_reported(addr):
    dev = Sleeper(spin=0.0, write=False)
    sig = Signal(addr[0], addr[0], dev, "s")
    start = time.perf_counter()
    with pytest.raises(SignalTimeoutError, match=r"wait timed out after 0\.\d+ s"):
        sig.wait(1, timeout=0.2)
    assert 0.2 <= time.perf_counter() - start < 0.2 + signal_mod.MAX_SLICE_S + 0.5


def test_the_pool_hands_each_slot_to_one_thread(addr):
    buf = (ctypes.c_uint64 * (2 * 256))()
    pool = SignalPool(ctypes.addressof(buf), 0x10000, 256 * SIGNAL_SIZE)
    got: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(4, timeout=10)

    def take(slot: int) -> None:
        try:
            start.wait()
            for _ in range(64):
                got[slot].append(pool.new().va)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    vas = [va for g in got for va in g]
    assert len(vas) == len(set(vas)) == 256 and pool.live == 256
