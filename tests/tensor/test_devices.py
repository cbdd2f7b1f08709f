"""Several devices: moving tensors with the copy queues, independent progress, clear errors for mixing; memory
returned when tensors die."""
from __future__ import annotations

import gc

import numpy as np
import pytest

import tensor
from tensor import DEVICES, Tensor
from tensor_checks import assert_matches

X = np.random.default_rng(3).standard_normal((32, 40)).astype(np.float32)


def test_to_moves_values_between_devices_through_the_copy_queues(lld):
    kfd = DEVICES["AMD"].dev.system.kfd
    copied = kfd.cp_counters().get("bytes_copied", 0)
    a = Tensor(np.abs(X), "CPU") * 2
    b = a.to("AMD") + 1
    c = b.to("AMD:1").sqrt()
    d = c.to("CPU")
    assert (b.device, c.device, d.device) == ("AMD", "AMD:1", "CPU")
    assert_matches(d.numpy(), np.sqrt(np.abs(X) * 2 + 1), rtol=1e-6)
    moved = kfd.cp_counters()["bytes_copied"] - copied
    # Into AMD (staging -> VRAM), out of AMD and into AMD:1, out of AMD:1: each a copy-queue copy of X's bytes.
    assert moved >= 4 * X.nbytes
    assert a.to("CPU") is a, "to() the device a tensor is on is the tensor itself"


def test_mixing_devices_names_both():
    with pytest.raises(ValueError, match=r"different devices, CPU and AMD:1; move one with \.to"):
        Tensor(X, "CPU") + Tensor(X, "AMD:1")
    with pytest.raises(ValueError, match="AMD and CPU"):
        Tensor(X, "AMD") @ Tensor(X.T, "CPU")


def test_device_names_are_checked():
    with pytest.raises(NotImplementedError, match="Qualcomm .* not built yet"):
        Tensor.zeros(2, device="QCOM")
    with pytest.raises(ValueError, match="unknown kind 'TPU'"):
        Tensor.zeros(2, device="TPU")
    with pytest.raises(ValueError, match="index after ':' must be a number"):
        Tensor.zeros(2, device="AMD:x")


def test_work_on_one_device_does_not_wait_for_another(lld):
    """AMD's compute queue is stalled with work queued on it; AMD:1 still computes, and AMD finishes once resumed."""
    amd, other = DEVICES["AMD"], DEVICES["AMD:1"]
    amd.synchronize()
    kfd = amd.dev.system.kfd
    a = Tensor(X, "AMD") * 3
    b = Tensor(X, "AMD:1") * 5
    a.realize(), b.realize()  # both uploads submitted
    amd.synchronize()
    kfd.stall(amd.dev.compute_ring.queue_id)
    try:
        slow = (a + 1).realize()  # queued behind the stall
        assert amd.dev.timeline.value < amd.last, "the stalled queue ran the kernel"
        assert_matches((b - 1).numpy(), X * 5 - 1)
        assert amd.dev.timeline.value < amd.last, "AMD:1's work waited for AMD"
    finally:
        kfd.stall(amd.dev.compute_ring.queue_id, on=False)
    assert_matches(slow.numpy(), X * 3 + 1)


def test_buffers_are_freed_when_tensors_die(device):
    rt = DEVICES[device]
    gc.collect()  # tensors left in reference cycles by earlier tests die here, not inside the measurement
    rt.synchronize()
    base = tensor.memory(device)["used"]
    tensor.reset_peak(device)
    a = Tensor.rand(256, 256, device=device, seed=0)
    b = (a @ a).realize()
    c = (b.sum() + a.sum()).realize()
    assert tensor.memory(device)["used"] >= base + 2 * a.size * 4, "a and b are held on the device"
    assert tensor.memory(device)["peak"] >= base + 2 * 256 * 256 * 4
    del a, b, c
    gc.collect()
    rt.synchronize()
    assert tensor.memory(device)["used"] == base, "every buffer came back once its tensors were gone"
    assert tensor.memory(device)["peak"] >= base + 2 * 256 * 256 * 4, "the peak is kept until reset_peak()"


def test_buffers_come_back_by_reference_counting_alone(device):
    """The scheduler keeps no reference cycle: a buffer returns the moment its last tensor dies, with the cyclic
    garbage collector off (a lab loop that allocates faster than gc runs must not grow)."""
    other = "AMD" if device == "CPU" else "CPU"
    gc.collect()
    for d in (device, other):
        DEVICES[d].synchronize()
    base = {d: tensor.memory(d)["used"] for d in (device, other)}
    gc.disable()
    try:
        for seed in range(3):
            a = Tensor.rand(128, 128, device=device, seed=seed)
            b = ((a @ a).relu().sum(axis=0) + a.reshape(128 * 128)[:128]).realize()
            c = Tensor.where(a > 0.5, a, 0).pad(1).max(axis=1).to(other)  # a copy to the other device too
            b.numpy(), c.numpy()
            del a, b, c
            for d in (device, other):
                DEVICES[d].synchronize()
                assert tensor.memory(d)["used"] == base[d], f"round {seed}: {d}'s buffers wait for the cycle collector"
    finally:
        gc.enable()


def test_a_lent_device_is_handed_back_open():
    from drivers.cpu.device import CPUDevice
    from tensor.runtime import Devices
    devices, dev = Devices(), CPUDevice()
    try:
        devices.add("CPU", dev)
        assert devices["CPU"].dev is dev
        assert devices.remove("CPU") is dev and not dev.closed
        with pytest.raises(KeyError, match="CPU is not open"):
            devices.remove("CPU")
        devices.add("CPU", dev)  # lent again after it came back
        assert devices.remove("cpu") is dev
    finally:
        dev.close()
