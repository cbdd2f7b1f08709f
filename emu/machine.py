"""Emulated machines: an EmulatedSystem with one vendor's hardware installed."""
from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile

from emu.system import EmulatedSystem

_machines = itertools.count()
_lock_roots: set[str] = set()


def _lock_dir() -> str:
    """A lock directory per emulated machine: two machines' GPUs are different GPUs, even with equal ids.
    The process's lock folders are removed when it exits."""
    root = os.path.join(tempfile.gettempdir(), f"baregpu-emu-locks-{os.getpid()}")
    if root not in _lock_roots:
        _lock_roots.add(root)
        atexit.register(shutil.rmtree, root, True)
    return os.path.join(root, f"machine-{next(_machines)}")


def emulated_system(vendor: str, targets: tuple[str, ...] | None = None, **options: int) -> EmulatedSystem:
    """A fresh emulated machine; every call makes a new one, so devices on it can be created twice."""
    system = EmulatedSystem(lock_dir=_lock_dir())
    if vendor == "amd":
        from emu.amd.kfd import EmulatedKFD
        gpus = targets or tuple(t.strip() for t in os.environ.get("BAREGPU_EMU_AMD", "gfx1100").split(",") if t.strip())
        system.kfd = EmulatedKFD(gpus, **options)  # kept on the system so tests can reach the emulated kernel
        system.kfd.install(system)
        return system
    raise NotImplementedError(f"no emulated {vendor} hardware yet: only amd is emulated so far")
