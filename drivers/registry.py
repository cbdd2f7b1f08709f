"""Opening HCQ devices by name: "CPU", "AMD", "AMD:1", "NV", ...

The tensor layer and tools name devices the way users do and get an open HCQ device back; which driver
serves a name, and whether its hardware is real or emulated (BAREGPU_EMULATE), is decided here and in
drivers/emulation.py, never by the caller.
"""
from __future__ import annotations

from typing import Any, Callable

from hcq.device import Device

# Vendor names a user may write, each with the driver status when it cannot be opened yet.
NOT_BUILT = {
    "NV": "the NVIDIA (RM/UVM) driver is not built yet",
    "QCOM": "the Qualcomm Adreno (kgsl) driver is not built yet",
    "USB": "the ASM2464 USB bridge driver is not built yet",
    "AM": "the AM driver (AMD without a kernel driver, over PCI BARs) is not built yet",
}


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
    return CPUDevice(index)


def _open_amd(index: int) -> Device:
    from drivers.amd.kfd import KFDDevice
    from drivers.emulation import system_for
    return KFDDevice(index, _shared_system("amd", system_for))


# One System per vendor per process: GPUs of one machine share it (an emulated machine is made once, so
# "AMD" and "AMD:1" are two GPUs of the same machine, as on hardware).
_SYSTEMS: dict[str, Any] = {}


def _shared_system(vendor: str, make: Callable[[str], Any]) -> Any:
    if vendor not in _SYSTEMS:
        _SYSTEMS[vendor] = make(vendor)
    return _SYSTEMS[vendor]


OPENERS: dict[str, Callable[[int], Device]] = {"CPU": _open_cpu, "AMD": _open_amd}


def open_device(name: str) -> Device:
    """Open the HCQ device `name`; the error says what is missing when it cannot be opened."""
    kind, index = parse_name(name)
    if kind in NOT_BUILT:
        raise NotImplementedError(f"device {name!r}: {NOT_BUILT[kind]}; available kinds: {', '.join(OPENERS)}")
    if kind not in OPENERS:
        raise ValueError(f"device {name!r}: unknown kind {kind!r}; known: {', '.join([*OPENERS, *NOT_BUILT])}")
    return OPENERS[kind](index)
