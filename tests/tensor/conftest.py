"""Tensor tests run on the CPU device, on an emulated machine with two AMD GPUs (gfx1100 and gfx1201), and on an
emulated NVIDIA GPU (sm_90, an H200's Hopper).

The emulated GPUs are registered with the tensor layer directly, so nothing here changes BAREGPU_EMULATE for
the rest of the test session; they are closed when the tensor tests end.
"""
from __future__ import annotations

import pytest

from tensor import DEVICES

DEVICE_NAMES = ["CPU", "AMD", "AMD:1", "NV"]


@pytest.fixture(scope="package", autouse=True)
def tensor_devices():
    from drivers.amd.kfd import KFDDevice
    from emu.machine import emulated_system
    DEVICES.close()
    system = emulated_system("amd", ("gfx1100", "gfx1201"), private=True)  # never meets other processes' GPUs
    DEVICES.add("AMD", KFDDevice(0, system))
    DEVICES.add("AMD:1", KFDDevice(1, system))
    from drivers.nv.device import NVDevice
    DEVICES.add("NV", NVDevice(0, emulated_system("nv", ("sm_90",), private=True)))
    DEVICES["CPU"]
    yield DEVICES
    DEVICES.close()


@pytest.fixture(params=DEVICE_NAMES)
def device(request):
    if request.param.startswith("AMD"):
        request.getfixturevalue("lld")  # the emulated AMD GPUs run AMD code objects
    elif request.param == "NV":
        request.getfixturevalue("ptxas")  # the emulated NVIDIA GPU runs what a cubin carries
    return request.param
