"""Tensor tests run on the CPU device, on an emulated machine with two AMD GPUs (gfx1100 and gfx1201), and on an
NVIDIA GPU: the machine's first real one when /dev/nvidiactl is here (and BAREGPU_EMULATE does not ask for an
emulated one), else an emulated sm_90 (an H200's Hopper).

The GPUs are registered with the tensor layer directly, so nothing here changes BAREGPU_EMULATE for the rest of
the test session; they are closed when the tensor tests end. Test ids name the NVIDIA device "nvidia", so
`pytest -k nvidia` selects its cases (-k is case-blind: "NV" would also match "env" and "inverse").
"""
from __future__ import annotations

import pytest

from tensor import DEVICES

DEVICE_NAMES = ["CPU", "AMD", "AMD:1", "NV"]
DEVICE_IDS = ["CPU", "AMD", "AMD:1", "nvidia"]


def nv_device():
    """The real NVIDIA GPU 0 when the machine has one and emulation does not ask otherwise; else an emulated sm_90."""
    from drivers.emulation import emulated_vendors
    from drivers.nv.device import NVDevice
    from drivers.registry import nv_gpu_count
    from drivers.system import LinuxSystem
    real = LinuxSystem()
    if "nv" not in emulated_vendors() and nv_gpu_count(real):
        return NVDevice(0, real)
    from emu.machine import emulated_system
    return NVDevice(0, emulated_system("nv", ("sm_90",), private=True))


@pytest.fixture(scope="package", autouse=True)
def tensor_devices():
    from drivers.amd.kfd import KFDDevice
    from emu.machine import emulated_system
    DEVICES.close()
    system = emulated_system("amd", ("gfx1100", "gfx1201"), private=True)  # never meets other processes' GPUs
    DEVICES.add("AMD", KFDDevice(0, system))
    DEVICES.add("AMD:1", KFDDevice(1, system))
    DEVICES.add("NV", nv_device())
    DEVICES["CPU"]
    yield DEVICES
    DEVICES.close()


@pytest.fixture(params=DEVICE_NAMES, ids=DEVICE_IDS)
def device(request):
    if request.param.startswith("AMD"):
        request.getfixturevalue("lld")  # the emulated AMD GPUs run AMD code objects
    elif request.param == "NV":
        request.getfixturevalue("ptxas")  # NVIDIA kernels are cubins, from ptxas
    return request.param
