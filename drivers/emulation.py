"""The one switch between real and emulated hardware: BAREGPU_EMULATE.

`BAREGPU_EMULATE=1` emulates every vendor; a list (`amd,nv`) emulates those. This is the only module outside
emu/ and tests/ that imports emu/; drivers receive whatever System it returns and never know the difference.
"""
from __future__ import annotations

import os

from drivers.system import LinuxSystem, System
from hcq.env import FALSE_WORDS, TRUE_WORDS, EnvError

VENDORS = ("amd", "nv", "qcom", "usb")
ALL_WORDS = TRUE_WORDS + ("all",)
ALLOWED = (f"it takes {', '.join(ALL_WORDS)} (every vendor), {', '.join(FALSE_WORDS)} (none), or a comma-separated "
           f"list of vendors from {', '.join(VENDORS)}")


def emulated_vendors(value: str | None = None) -> set[str]:
    """The vendors BAREGPU_EMULATE (or `value`) selects; a bad value is an EnvError naming it and what is allowed.

    Unset or blank means none, as for every BAREGPU_* variable (hcq/env.py).
    """
    text = os.environ.get("BAREGPU_EMULATE", "") if value is None else value
    word = text.strip().lower()
    if word in ("",) + FALSE_WORDS:
        return set()
    if word in ALL_WORDS:
        return set(VENDORS)
    names = {v.strip() for v in word.split(",") if v.strip()}
    unknown = sorted(names - set(VENDORS))
    if unknown or not names:
        # "1,amd" or "," is somebody's typo: refuse it rather than guess what they meant (as hcq.env.env_list does)
        bad = f" ({', '.join(map(repr, unknown))} unknown)" if unknown else " (it names no vendor)"
        raise EnvError("BAREGPU_EMULATE", text, ALLOWED + bad)
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
