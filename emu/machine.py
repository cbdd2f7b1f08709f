"""Emulated machines: an EmulatedSystem with one vendor's hardware installed.

Machine-wide, like cards: every process of this machine sees the same emulated machine, so two processes
opening emulated AMD:0 meet its lock exactly as on a card. Its locks live in the ordinary lock directory
(default_lock_dir(), BAREGPU_LOCK_DIR) under keys of their own ("emulated-..."), so they never meet a real
card's. A private machine (`private=True`, for tests) keeps its locks inside the process (a ProcessLocks
space): it never meets another process or another private machine, and leaves nothing behind, even on kill -9.
"""
from __future__ import annotations

import itertools

from drivers.lock import ProcessLocks
from emu.system import EmulatedSystem
from hcq.env import env_list

EMU_AMD_ENV = "BAREGPU_EMU_AMD"
DEFAULT_AMD_TARGETS = ("gfx1100",)

_private_machines = itertools.count()


def amd_targets() -> tuple[str, ...]:
    """The emulated AMD GPUs BAREGPU_EMU_AMD asks for, one gfx target each (default gfx1100).

    Raises EnvError naming the variable and the targets the emulated KFD has when the value is empty or
    names one it does not have."""
    from emu.amd.kfd import TARGETS
    return env_list(EMU_AMD_ENV, DEFAULT_AMD_TARGETS, TARGETS, "gfx target")


def emulated_system(vendor: str, targets: tuple[str, ...] | None = None, private: bool = False,
                    **options: int) -> EmulatedSystem:
    """A new emulated machine of `vendor` with `targets` (default: BAREGPU_EMU_AMD).

    Machine-wide by default: its GPUs' locks meet every other process's (and this process's other machine-wide
    systems'), as cards do. `private=True` makes a machine whose GPUs only its own devices compete for: tests use
    it, so they meet neither other processes nor each other (a GPU of it is still opened once at a time).
    """
    if vendor != "amd":
        raise NotImplementedError(f"no emulated {vendor} hardware yet: only amd is emulated so far")
    gpus = tuple(targets) if targets else amd_targets()
    # None: the lock directory is looked up when a device is opened, so BAREGPU_LOCK_DIR set later still counts.
    locks = ProcessLocks(f"private emulated machine {next(_private_machines)}") if private else None
    system = EmulatedSystem(lock_dir=locks)
    from emu.amd.kfd import EmulatedKFD
    system.kfd = EmulatedKFD(gpus, **options)  # kept on the system so tests can reach the emulated kernel
    system.kfd.install(system)
    return system
