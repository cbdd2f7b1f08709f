"""Cross-check the emulated GPU's decoder and printer against llvm-objdump-19 on AMD code objects.

    python -m tools.isa_check                 # every gfx1100/gfx1201 code object in the kernel cache
    python -m tools.isa_check a.co b.co ...   # these files (their target is read from the ELF header)

Every instruction of every kernel must decode (emu/amd/isa/decode.py) and print (disasm.py) exactly as
llvm-objdump-19 prints it. The test suite checks a corpus of the kernels the tensor layer builds
(tests/emu/isa/test_decode.py); after a full test run, this checks every kernel the suite compiled, since they are
all in the cache. Exit status 0: all agree; 1: mismatches (the first 20 are listed); 2: llvm-objdump-19 missing.
"""
from __future__ import annotations

import argparse
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from compiler.elf import EF_AMDGPU_MACH, CodeObject, ELFError
from emu.amd.isa.decode import decode_all
from emu.amd.isa.disasm import format_instr
from emu.amd.isa.instr import DecodeError, Instr

TARGETS = ("gfx1100", "gfx1201")
OBJDUMP = "llvm-objdump-19"
LINE = re.compile(r"^\s+(.*?)\s*//\s*([0-9A-F]+):((?: [0-9A-F]{8})+)")
BATCH = 200  # files per objdump run


def objdump(paths: list[Path], target: str) -> dict[str, dict[int, tuple[str, int]]]:
    """One llvm-objdump-19 run over many files: path -> {address: (instruction text, size in bytes)}."""
    out = subprocess.run([OBJDUMP, "-d", f"--mcpu={target}", *map(str, paths)], capture_output=True, text=True,
                         check=True).stdout
    listing: dict[str, dict[int, tuple[str, int]]] = {}
    current: dict[int, tuple[str, int]] = {}
    for line in out.splitlines():
        if ":\tfile format" in line:
            current = listing.setdefault(line.split(":\tfile format")[0], {})
        elif m := LINE.match(line):
            current[int(m.group(2), 16)] = (re.sub(r"\s+", " ", m.group(1)).strip(), 4 * len(m.group(3).split()))
    return listing


def text_section(co: CodeObject) -> tuple[int, bytes]:
    """The .text section's address and bytes."""
    sec = next(s for s in co.sections if s.name == ".text")
    return sec.addr, co.data[sec.offset:sec.offset + sec.size]


def llvm19_rejects(ins: Instr) -> bool:
    """LLVM 19 decodes gfx11 16-bit VOP1/VOP2 ops as "fake16" and refuses a destination in the high half (v128+),
    printing ".long"; the hardware (and llvm-mc -mattr=+real-true16) reads it as vN.h, as our decoder does."""
    return ins.enc in ("VOP1", "VOP2") and bool(ins.fields.get("opsel", 0) & 8)


def compare(binary: bytes, target: str, expected: dict[int, tuple[str, int]], label: str) -> tuple[int, list[str]]:
    """(instructions checked, mismatch lines) for one code object against objdump's listing of it."""
    addr, code = text_section(CodeObject(binary, label))
    mismatches, count = [], 0
    try:
        decoded = decode_all(code, target)
    except DecodeError as e:
        return 0, [f"{label}: {e}"]
    for ins in decoded:
        count += 1
        text, size = expected.get(addr + ins.pc, ("<no instruction here>", 0))
        if text == f".long 0x{struct.unpack_from('<I', code, ins.pc)[0]:08x}" and llvm19_rejects(ins):
            continue
        got = format_instr(ins, target)
        if (got, ins.size) != (text, size):
            mismatches.append(f"{label} +{ins.pc:#x}: objdump {text!r} ({size} bytes), we {got!r} ({ins.size} bytes)")
    return count, mismatches


def target_of(binary: bytes) -> str | None:
    """gfx1100 / gfx1201 from the ELF header's machine, None for anything else (gfx942, not a code object)."""
    try:
        mach = CodeObject(binary).mach
    except ELFError:
        return None
    return next((t for t in TARGETS if EF_AMDGPU_MACH[t] == mach), None)


def cached_code_objects(root: Path) -> Iterable[tuple[str, bytes]]:
    """(label, code object) for every AMD entry of a kernel cache (the ELF inside each entry's framing)."""
    for target in TARGETS:
        for path in sorted((root / target).glob("*.bin")):
            raw = path.read_bytes()
            at = raw.find(b"\x7fELF")
            if at >= 0:
                yield f"{target}/{path.name}", raw[at:]


def check(items: Iterable[tuple[str, bytes]]) -> tuple[int, int, list[str]]:
    """(code objects, instructions, mismatches) over (label, code object) pairs."""
    by_target: dict[str, list[tuple[str, bytes]]] = {t: [] for t in TARGETS}
    for label, binary in items:
        target = target_of(binary)
        if target:
            by_target[target].append((label, binary))
    files = instructions = 0
    mismatches: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for target, entries in by_target.items():
            for start in range(0, len(entries), BATCH):
                batch = entries[start:start + BATCH]
                paths = [Path(tmp, f"{start + i}.co") for i in range(len(batch))]
                for p, (_, binary) in zip(paths, batch):
                    p.write_bytes(binary)
                listing = objdump(paths, target)
                for p, (label, binary) in zip(paths, batch):
                    n, bad = compare(binary, target, listing.get(str(p), {}), label)
                    files, instructions = files + 1, instructions + n
                    mismatches += bad
    return files, instructions, mismatches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.isa_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path, help="code objects (default: every one in the kernel cache)")
    ap.add_argument("--cache", type=Path, help="the kernel cache to sweep (default: BAREGPU_CACHE_DIR or "
                    "~/.cache/baregpu/kernels)")
    args = ap.parse_args(argv)
    if shutil.which(OBJDUMP) is None:
        print(f"isa_check: {OBJDUMP} is not installed (apt-get install llvm-19; ./setup.sh installs it)",
              file=sys.stderr)
        return 2
    if args.files:
        items: Iterable[tuple[str, bytes]] = [(str(p), p.read_bytes()) for p in args.files]
    else:
        from compiler.cache import KernelCache
        items = cached_code_objects(args.cache or KernelCache().root)
    files, instructions, mismatches = check(items)
    print(f"isa_check: {files} code objects, {instructions} instructions, {len(mismatches)} mismatches")
    for line in mismatches[:20]:
        print("  " + line)
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
