"""Tensor tests run on the CPU device and on an emulated machine with two AMD GPUs (gfx1100 and gfx1201).

The emulated GPUs are registered with the tensor layer directly, so nothing here changes BAREGPU_EMULATE for
the rest of the test session; they are closed when the tensor tests end.
"""
from __future__ import annotations

import pytest

from tensor import DEVICES

DEVICE_NAMES = ["CPU", "AMD", "AMD:1"]


@pytest.fixture(scope="package", autouse=True)
def tensor_devices():
    from drivers.amd.kfd import KFDDevice
    from emu.machine import emulated_system
    DEVICES.close()
    system = emulated_system("amd", ("gfx1100", "gfx1201"), private=True)  # never meets other processes' GPUs
    DEVICES.add("AMD", KFDDevice(0, system))
    DEVICES.add("AMD:1", KFDDevice(1, system))
    DEVICES["CPU"]
    yield DEVICES
    DEVICES.close()


@pytest.fixture(params=DEVICE_NAMES)
def device(request):
    if request.param != "CPU":
        request.getfixturevalue("lld")  # the emulated GPUs run AMD code objects
    return request.param
