"""The one switch between real and emulated hardware: BAREGPU_EMULATE.

`BAREGPU_EMULATE=1` emulates every vendor; a list (`amd,nv`) emulates those. This is the only module outside
emu/ and tests/ that imports emu/; drivers receive whatever System it returns and never know the difference.
"""
from __future__ import annotations

import os

from drivers.system import LinuxSystem, System

VENDORS = ("amd", "nv", "qcom", "usb")


def emulated_vendors(value: str | None = None) -> set[str]:
    """The vendors BAREGPU_EMULATE selects; unknown names are an error that lists the known ones."""
    raw = os.environ.get("BAREGPU_EMULATE", "") if value is None else value
    raw = raw.strip().lower()
    if raw in ("", "0", "no", "false"):
        return set()
    if raw in ("1", "all", "yes", "true"):
        return set(VENDORS)
    names = {v.strip() for v in raw.split(",") if v.strip()}
    unknown = names - set(VENDORS)
    if unknown:
        raise ValueError(f"BAREGPU_EMULATE names unknown vendor(s) {sorted(unknown)}; use 1 or a list of {', '.join(VENDORS)}")
    return names


def system_for(vendor: str, targets: tuple[str, ...] | None = None) -> System:
    """The System a driver for `vendor` should use: the emulated machine when selected, else the kernel."""
    if vendor not in emulated_vendors():
        return LinuxSystem()
    from emu.machine import emulated_system
    return emulated_system(vendor, targets)


def emulated_system(vendor: str, targets: tuple[str, ...] | None = None) -> System:
    """The emulated machine for `vendor` whatever BAREGPU_EMULATE says (gpu_probe's stand-in when no GPU)."""
    from emu.machine import emulated_system as make
    return make(vendor, targets)
