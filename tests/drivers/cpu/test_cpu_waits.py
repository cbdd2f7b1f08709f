"""Sleeping waits on the CPU device wake when an engine writes the value they wait for (or a fault happens), and
not for writes of other values or other signals, which would only take the GIL from the engines."""
from __future__ import annotations

import threading

import pytest

from drivers.cpu.device import CPUDevice
from hcq.device import DeviceFault

BOUND_S = 10


def sleeping(dev: CPUDevice, sig, value: int, raised: list | None = None) -> threading.Thread:
    """A thread in one sleep_on_signal(sig, value) of up to 30 s (the slice a real wait would take is shorter);
    what it raises goes to `raised`."""
    def body() -> None:
        try:
            dev.sleep_on_signal(sig, value, 30.0)
        except Exception as e:  # noqa: BLE001 - the test looks at it
            raised.append(e)
    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


def wait_registered(dev: CPUDevice, n: int) -> None:
    """Until n sleepers are listed (bounded): a write before that would be seen by the check, not the wake."""
    for _ in range(BOUND_S * 1000):
        with dev._irq:
            if sum(len(w) for w in dev._sleepers.values()) >= n:
                return
        threading.Event().wait(0.001)
    raise AssertionError(f"{n} sleepers never registered")


def test_a_sleep_ends_at_the_write_of_its_value_not_before():
    with CPUDevice(workers=1) as dev:
        sig, other = dev.new_signal(0), dev.new_signal(0)
        raised: list[Exception] = []
        t = sleeping(dev, sig, 2, raised)
        wait_registered(dev, 1)
        done = dev.new_signal(0)
        dev.compute_queue().signal(sig, 1).signal(other, 5).signal(done, 1).submit(dev)
        done.wait(1, BOUND_S)
        t.join(0.2)
        assert t.is_alive(), "a write of a smaller value, or of another signal, woke the sleep"
        dev.compute_queue().signal(sig, 2).submit(dev)
        t.join(BOUND_S)
        assert not t.is_alive(), "the write of the awaited value did not wake the sleep"
        assert not dev._sleepers and not raised, f"sleepers left listed: {dev._sleepers}; raised {raised}"


def test_an_engine_wait_wakes_at_the_other_engines_write():
    with CPUDevice(workers=1) as dev:
        gate, done = dev.new_signal(0), dev.new_signal(0)
        dev.copy_queue().wait(gate, 3).signal(done, 1).submit(dev)
        wait_registered(dev, 1)  # the copy engine sleeps on the gate
        dev.compute_queue().signal(gate, 3).submit(dev)
        done.wait(1, BOUND_S)


def test_a_fault_wakes_every_sleep():
    with CPUDevice(workers=1) as dev:
        a, b = dev.new_signal(0), dev.new_signal(0)
        raised: list[Exception] = []
        sleepers = [sleeping(dev, a, 1, raised), sleeping(dev, b, 7, raised)]
        wait_registered(dev, 2)
        dev.set_fault(DeviceFault("hang", "injected by the test"))
        for t in sleepers:
            t.join(BOUND_S)
        assert not any(t.is_alive() for t in sleepers), "a fault left a sleep asleep"
        assert [type(e).__name__ for e in raised] == ["DeviceFaultError"] * 2
        assert "injected by the test" in str(raised[0])


def test_a_submit_waiting_for_room_when_the_device_closes_is_told_so():
    from drivers.cpu.processor import RING_STREAMS
    from hcq.errors import DeviceClosedError
    dev = CPUDevice(workers=1)
    dev.stall("compute")  # the ring fills and stays full
    engine = dev.processor("compute")
    sig = dev.new_signal(0)
    for _ in range(RING_STREAMS):
        dev.compute_queue().signal(sig, 1).submit(dev)
    raised: list[Exception] = []

    def blocked() -> None:
        try:
            engine.submit(dev.compute_queue().signal(sig, 1).cmd)  # past the device check, as a racing submit is
        except Exception as e:  # noqa: BLE001 - the test looks at it
            raised.append(e)
    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    for _ in range(BOUND_S * 1000):  # until it sleeps for room (bounded)
        if engine._full_waiters:
            break
        threading.Event().wait(0.001)
    assert engine._full_waiters == 1
    dev.close()
    t.join(engine.submit_timeout / 2)  # well before its own bound would end it
    assert not t.is_alive() and [type(e) for e in raised] == [DeviceClosedError], raised
    assert "cpu.compute is stopped: its device was closed" in str(raised[0])
    with pytest.raises(DeviceClosedError):
        engine.submit(dev.compute_queue().signal(sig, 1).cmd)
