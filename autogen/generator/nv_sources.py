"""Bindings generated from our own headers in autogen/include/nv: NVIDIA's RM and UVM interfaces, which no
Debian package carries.

The facts in those headers come from NVIDIA's open-gpu-kernel-modules and open-gpu-doc; the versions are pinned in
one place, autogen/include/nv/VERSION, which also says how to move to another version. The headers include only
linux/ioctl.h from outside (from the pinned linux-libc-dev, as every other binding does).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from autogen.generator.sources import LIBC, Target

NV_INC = Path(__file__).resolve().parent.parent / "include" / "nv"
VERSION_FILE = NV_INC / "VERSION"
REL_DIR = "autogen/include/nv"  # how headers are named in provenance lines and docs


def pinned_versions() -> dict[str, str]:
    """{'open-gpu-kernel-modules': '570.133.07 <commit>', 'open-gpu-doc': '<commit>'} from the VERSION file."""
    pins = {}
    for line in VERSION_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, rest = line.partition(" ")
            pins[name] = rest.strip()
    missing = {"open-gpu-kernel-modules", "open-gpu-doc"} - set(pins)
    if missing:
        raise ValueError(f"{VERSION_FILE}: no pin for {', '.join(sorted(missing))}")
    return pins


@dataclass(frozen=True)
class OwnTarget:
    """One module generated from headers under autogen/include/nv."""
    module: str
    headers: tuple[str, ...]  # file names in autogen/include/nv
    doc: str
    types: str | None = "acestu"
    macro_filter: str | None = None

    def target(self) -> Target:
        """The same Target the Debian bindings use: clang arguments, type kinds and filters (package unused for
        header lookup; linux-libc-dev supplies linux/ioctl.h)."""
        return Target(self.module, "linux-libc-dev", tuple(f"{REL_DIR}/{h}" for h in self.headers), self.doc,
                      include=LIBC, types=self.types, macro_filter=self.macro_filter,
                      extra_args=(f"-I{NV_INC}",))

    def paths(self) -> list[Path]:
        return [NV_INC / h for h in self.headers]


NV_TARGETS = {t.module: t for t in (
    OwnTarget("nv_rm", ("nvtypes.h", "rm.h"),
              "NVIDIA RM interface: /dev/nvidiactl escapes and ioctl numbers, NVOS parameter blocks, class allocation "
              "parameters, RM controls and status codes."),
    OwnTarget("nv_uvm", ("uvm.h",),
              "NVIDIA UVM interface: /dev/nvidia-uvm ioctl numbers and their parameter blocks."),
    OwnTarget("nv_classes", ("classes.h",),
              "NVIDIA class ids, USERD and usermode layouts, and host/compute/copy class methods and fields "
              "(NAME_SHIFT/NAME_WIDTH)."),
    OwnTarget("nv_qmd", ("qmd.h",),
              "NVIDIA compute QMD layouts V03_00 (Ampere/Ada), V04_00 (Hopper), V05_00 (Blackwell) as bit positions."),
)}

_MODULE = re.compile(r"^nv_\w+$")
assert all(_MODULE.match(m) for m in NV_TARGETS)
