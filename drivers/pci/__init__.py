"""PCI devices for drivers that own a function themselves (AM, later the USB bridge).

`interface.py` is the contract (PCIDevice, BarMapping, DMABuffer); `config.py` decodes config space for every backend;
`sysfs.py` and `vfio.py` are the Linux backends. `open_pci_device` picks one the way a user would: VFIO when the
function is bound to vfio-pci, sysfs otherwise.
"""
from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from drivers.pci.interface import BarInfo, BarMapping, Capability, DMABuffer, LinkStatus, PCIDevice, PCIError

if TYPE_CHECKING:
    from drivers.system import System

__all__ = ["BarInfo", "BarMapping", "Capability", "DMABuffer", "LinkStatus", "PCIDevice", "PCIError", "open_pci_device"]


def open_pci_device(bdf: str, system: "System", unbind: bool = False) -> PCIDevice:
    """The Linux backend for `bdf`: VFIOPCIDevice when vfio-pci holds it, else SysfsPCIDevice (which refuses a
    bound kernel driver unless `unbind`)."""
    from drivers.pci.sysfs import SysfsPCIDevice
    from drivers.pci.vfio import VFIOPCIDevice
    try:
        driver = posixpath.basename(system.readlink(f"/sys/bus/pci/devices/{bdf}/driver"))
    except OSError:
        driver = None
    if driver == "vfio-pci":
        return VFIOPCIDevice(bdf, system)
    return SysfsPCIDevice(bdf, system, unbind=unbind)
