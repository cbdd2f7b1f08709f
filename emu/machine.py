"""Emulated machines: an EmulatedSystem with one vendor's hardware installed."""
from __future__ import annotations

import os
import tempfile

from emu.system import EmulatedSystem


def emulated_system(vendor: str, targets: tuple[str, ...] | None = None, **options: int) -> EmulatedSystem:
    """A fresh emulated machine; every call makes a new one, so devices on it can be created twice."""
    lock_dir = os.path.join(tempfile.gettempdir(), f"baregpu-emu-locks-{os.getpid()}")
    system = EmulatedSystem(lock_dir=lock_dir)
    if vendor == "amd":
        from emu.amd.kfd import EmulatedKFD
        gpus = targets or tuple(t.strip() for t in os.environ.get("BAREGPU_EMU_AMD", "gfx1100").split(",") if t.strip())
        system.kfd = EmulatedKFD(gpus, **options)  # kept on the system so tests can reach the emulated kernel
        system.kfd.install(system)
        return system
    raise NotImplementedError(f"no emulated {vendor} hardware yet: only amd is emulated so far")
