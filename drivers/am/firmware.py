"""The firmware set of an AM GPU, chosen by the IP versions its discovery table reports (never by PCI ID).

The blocks with firmware are GC (PFP, ME, RLC, MEC, IMU, MES), MP0 (the PSP's SOS and TA), MP1 (the SMU) and SDMA0;
firmware.select names the files the way amdgpu 6.12 requests them and firmware.select.load_set finds, reads and
validates them: first in the directories the caller passes, then in BAREGPU_FIRMWARE_DIR (':'-separated), then in
the kernel's /lib/firmware/.../amdgpu directories. A missing or corrupt image raises firmware.ucode.FirmwareError
(FirmwareSetError when several are), whose message names each file, what is wrong, where it looked and the package.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional

from firmware.images import PathLike
from firmware.select import FirmwareSet, IPVersion, load_set

if TYPE_CHECKING:
    from drivers.am.discovery import Discovery

FIRMWARE_BLOCKS = ("MP0", "MP1", "GC", "SDMA0")  # the discovery names of the blocks firmware.select covers


def firmware_versions(discovery: "Discovery") -> dict[str, IPVersion]:
    """{block: (major, minor, revision)} for each block with firmware that the table lists."""
    return {b: discovery.version(b) for b in FIRMWARE_BLOCKS if discovery.has(b)}


def load_firmware(discovery: "Discovery", dirs: Iterable[PathLike] = (), *, pci_device: Optional[int] = None,
                  pci_revision: Optional[int] = None, system: bool = True, check_crc: bool = False) -> FirmwareSet:
    """Find and validate every image the discovered IP versions need (firmware.select.load_set). `pci_device` and
    `pci_revision` pick amdgpu's kicker and revision-specific images; `system` adds the kernel's directories."""
    return load_set(firmware_versions(discovery), list(dirs), system=system, check_crc=check_crc,
                    pci_device=pci_device, pci_revision=pci_revision)


def firmware_summary(fw: FirmwareSet) -> list[dict]:
    """One short line per image for describe(): role, file, path, ucode and feature versions."""
    out = []
    for role, img in fw.images.items():
        d = img.describe()
        out.append(dict(role=role, name=d["name"], path=d["path"], kind=d["kind"],
                        ucode_version=d["ucode_version"], feature_version=d["feature_version"]))
    return out


__all__ = ["FIRMWARE_BLOCKS", "firmware_summary", "firmware_versions", "load_firmware"]
