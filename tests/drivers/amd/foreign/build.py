"""Build the hand-written foreign code objects in this folder at test time: llvm-mc-19 assembles, ld.lld links
(as clang's driver does for amdgcn-amd-amdhsa), and tests may edit the source or the linked descriptor first."""
from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from compiler.elf import CodeObject

HERE = Path(__file__).parent
LLVM_MC = "llvm-mc-19"


def missing() -> str | None:
    """Why the foreign code objects cannot be built here, or None."""
    if shutil.which(LLVM_MC) is None:
        return f"{LLVM_MC} is not installed (Debian's llvm-19; ./setup.sh installs it)"
    from compiler.toolchain import lld_missing
    return lld_missing()


def source(name: str, edits: dict[str, str] | None = None, target: str = "gfx1100") -> str:
    """The assembly of foreign/<name>.s, with each `old: new` of edits applied (each must match) and retargeted."""
    text = (HERE / f"{name}.s").read_text()
    for old, new in (edits or {}).items():
        if old not in text:
            raise AssertionError(f"{name}.s has no {old!r} to edit")
        text = text.replace(old, new)
    return text.replace("amdgcn-amd-amdhsa--gfx1100", f"amdgcn-amd-amdhsa--{target}")


@lru_cache(maxsize=64)
def assemble(text: str, target: str = "gfx1100", wave64: bool = False) -> bytes:
    """A linked code object from assembly text (wave64: assembled for 64-lane waves, as clang -mwavefrontsize64)."""
    from compiler.toolchain import lld_path
    with tempfile.TemporaryDirectory() as d:
        src, obj, out = Path(d, "k.s"), Path(d, "k.o"), Path(d, "k.co")
        src.write_text(text)
        mc = [LLVM_MC, "-triple=amdgcn-amd-amdhsa", f"-mcpu={target}", "-filetype=obj", str(src), "-o", str(obj)]
        if wave64:
            mc.insert(3, "-mattr=+wavefrontsize64")
        for cmd in (mc, [lld_path(), "-shared", str(obj), "-o", str(out)]):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if proc.returncode:
                raise AssertionError(f"{cmd[0]} failed:\n{proc.stderr}")
        return out.read_bytes()


def build(name: str, edits: dict[str, str] | None = None, target: str = "gfx1100", wave64: bool = False) -> bytes:
    return assemble(source(name, edits, target), target, wave64)


def patch_descriptor(binary: bytes, kernel: str, *, props_or: int = 0, rsrc2_or: int = 0, preload: int = 0) -> bytes:
    """The code object with bits set in kernel's descriptor (kernel_code_properties at byte 56, compute_pgm_rsrc2 at
    52, kernarg_preload at 58: AMDGPUUsage "Kernel Descriptor"), for descriptors an assembler would refuse to write."""
    co = CodeObject(binary, kernel)
    at = co.file_offset(co.symbols[f"{kernel}.kd"].value)
    out = bytearray(binary)
    rsrc2, props, old_preload = struct.unpack_from("<IHH", out, at + 52)
    struct.pack_into("<IHH", out, at + 52, rsrc2 | rsrc2_or, props | props_or, old_preload | preload)
    return bytes(out)
