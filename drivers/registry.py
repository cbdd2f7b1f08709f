"""Opening HCQ devices by name: "CPU", "AMD", "AMD:1", "NV", ...

The tensor layer and tools name devices the way users do and get an open HCQ device back; which driver
serves a name, and whether its hardware is real or emulated (BAREGPU_EMULATE), is decided here and in
drivers/emulation.py, never by the caller. Asking for a device that is not here says what is here and how
to get an emulated one.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from hcq.device import Device
from hcq.errors import HCQError

# Vendor names a user may write, each with the driver status when it cannot be opened yet.
NOT_BUILT = {
    "QCOM": "the Qualcomm Adreno (kgsl) driver is not built yet",
    "USB": "the ASM2464 USB bridge driver is not built yet",
    "AM": "the AM driver (AMD without a kernel driver, over PCI BARs) is not built yet",
}
EMULATE_HINT = ("For an emulated GPU set BAREGPU_EMULATE=amd or nv (or 1 for every vendor), e.g. "
                "`BAREGPU_EMULATE=1 python your_script.py`; `python -m tools.gpu_probe` says what this machine has")


class DeviceNotFoundError(HCQError, LookupError):
    """The named device is not on this machine; the message lists the devices that are and how to emulate one."""


def parse_name(name: str) -> tuple[str, int]:
    """("AMD", 1) from "AMD:1" or "amd:1"; a missing index is 0."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a device name is a string such as 'CPU', 'AMD' or 'AMD:1', got {name!r}")
    kind, _, idx = name.strip().partition(":")
    kind = kind.upper()
    if idx:
        if not idx.isdigit():
            raise ValueError(f"device {name!r}: the index after ':' must be a number, as in 'AMD:1'")
        return kind, int(idx)
    return kind, 0


def canonical_name(name: str) -> str:
    """The one spelling of a device name: "AMD" for "amd:0", "AMD:1" for "amd:1"."""
    kind, idx = parse_name(name)
    return f"{kind}:{idx}" if idx else kind


def _open_cpu(index: int) -> Device:
    from drivers.cpu.device import CPUDevice
    if index:
        raise DeviceNotFoundError(f"device 'CPU:{index}' does not exist: the host is one CPU device, 'CPU'")
    return CPUDevice(index)


def _amd_system() -> Any:
    from drivers.emulation import system_for
    return _shared_system("amd", system_for)


def _open_amd(index: int) -> Device:
    from drivers.amd.kfd import KFDDevice
    from drivers.amd.topology import read_topology
    system = _amd_system()
    count = len(read_topology(system))
    if index >= count:
        name = f"AMD:{index}" if index else "AMD"
        if getattr(system, "emulated", False):
            why = (f"the emulated machine has {count} AMD GPU(s) (BAREGPU_EMU_AMD lists one gfx target per GPU, "
                   "e.g. gfx1100,gfx1201 for two)")
        elif count:
            why = f"this machine has {count} AMD GPU(s) that KFD lists"
        else:
            why = "this machine has no AMD GPU that KFD lists (/sys/class/kfd/kfd/topology: is amdgpu loaded?)"
        here = ", ".join(available_devices())
        hint = "" if getattr(system, "emulated", False) else f" {EMULATE_HINT}."
        raise DeviceNotFoundError(f"device {name!r} is not here: {why}. Devices here: {here}.{hint}")
    return KFDDevice(index, system)


def _nv_system() -> Any:
    from drivers.emulation import system_for
    return _shared_system("nv", system_for)


def nv_gpu_count(system: Any) -> int:
    """NVIDIA GPUs here: one /dev/nvidiaN node each (nvidia.ko makes them at load), none without /dev/nvidiactl."""
    if not system.exists("/dev/nvidiactl"):
        return 0
    try:
        names = system.listdir("/dev")
    except OSError:
        return 0
    return sum(1 for n in names if n.startswith("nvidia") and n[6:].isdigit())


def _open_nv(index: int) -> Device:
    from drivers.nv.device import NVDevice
    system = _nv_system()
    count = nv_gpu_count(system)
    if index >= count:
        name = f"NV:{index}" if index else "NV"
        if getattr(system, "emulated", False):
            why = (f"the emulated machine has {count} NVIDIA GPU(s) (BAREGPU_EMU_NV lists one sm_XX per GPU, e.g. "
                   "sm_90,sm_86 for two)")
        elif count:
            why = f"this machine has {count} NVIDIA GPU(s) (/dev/nvidia0..)"
        else:
            why = "this machine has no NVIDIA GPU that the driver exposes (/dev/nvidiactl: is nvidia loaded?)"
        hint = "" if getattr(system, "emulated", False) else f" {EMULATE_HINT}."
        raise DeviceNotFoundError(f"device {name!r} is not here: {why}. Devices here: "
                                  f"{', '.join(available_devices())}.{hint}")
    return NVDevice(index, system)


# One System per vendor per process: GPUs of one machine share it (an emulated machine is made once, so
# "AMD" and "AMD:1" are two GPUs of the same machine, as on hardware).
_SYSTEMS: dict[str, Any] = {}
_SYSTEMS_LOCK = threading.Lock()  # two threads opening their first AMD device must get the same machine


def _shared_system(vendor: str, make: Callable[[str], Any]) -> Any:
    with _SYSTEMS_LOCK:
        if vendor not in _SYSTEMS:
            _SYSTEMS[vendor] = make(vendor)
        return _SYSTEMS[vendor]


OPENERS: dict[str, Callable[[int], Device]] = {"CPU": _open_cpu, "AMD": _open_amd, "NV": _open_nv}


def available_devices() -> list[str]:
    """The device names this process could open now (real or emulated per BAREGPU_EMULATE), e.g. ['CPU', 'AMD']."""
    from drivers.amd.topology import read_topology
    names = ["CPU"]
    try:
        count = len(read_topology(_amd_system()))
    except (OSError, HCQError):
        count = 0
    suffix = " (emulated)" if count and getattr(_SYSTEMS.get("amd"), "emulated", False) else ""
    names += [(f"AMD:{i}" if i else "AMD") + suffix for i in range(count)]
    try:
        count = nv_gpu_count(_nv_system())
    except (OSError, HCQError):
        count = 0
    suffix = " (emulated)" if count and getattr(_SYSTEMS.get("nv"), "emulated", False) else ""
    names += [(f"NV:{i}" if i else "NV") + suffix for i in range(count)]
    return names


def open_device(name: str) -> Device:
    """Open the HCQ device `name`; the error says what is missing when it cannot be opened."""
    kind, index = parse_name(name)
    if kind in NOT_BUILT:
        raise NotImplementedError(f"device {name!r}: {NOT_BUILT[kind]}; devices here: {', '.join(available_devices())}")
    if kind not in OPENERS:
        raise ValueError(f"device {name!r}: unknown kind {kind!r}; known: {', '.join([*OPENERS, *NOT_BUILT])}")
    return OPENERS[kind](index)
