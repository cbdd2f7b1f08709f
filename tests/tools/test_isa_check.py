"""The decoder cross-check over every kernel the test suite compiled: tests/tools runs after tests/tensor (pytest
collects folders in name order), so the shared kernel cache then holds the AMD code objects of the whole suite, and
each of their instructions must decode and print exactly as llvm-objdump-19 prints it (tools/isa_check.py)."""
from __future__ import annotations

import shutil

import pytest

from compiler.cache import KernelCache
from tools import isa_check

MOST = 8000  # a developer's cache keeps every kernel ever built: check the newest this many (about 30 s)


@pytest.mark.skipif(shutil.which(isa_check.OBJDUMP) is None,
                    reason="llvm-objdump-19 is not installed (apt-get install llvm-19; ./setup.sh installs it)")
def test_every_cached_amd_kernel_decodes_as_llvm_objdump_prints_it():
    root = KernelCache().root
    entries = sorted(((p.stat().st_mtime, p) for t in isa_check.TARGETS for p in (root / t).glob("*.bin")),
                     reverse=True)[:MOST]
    if not entries:
        pytest.skip(f"no AMD code objects in {root}: run the whole suite (the AMD tests fill the cache)")
    items = []
    for _, path in entries:
        raw = path.read_bytes()
        at = raw.find(b"\x7fELF")
        if at >= 0:
            items.append((f"{path.parent.name}/{path.name}", raw[at:]))
    files, instructions, mismatches = isa_check.check(items)
    assert files and instructions
    assert not mismatches, f"{len(mismatches)} of {instructions} instructions differ:\n" + "\n".join(mismatches[:20])


def test_a_damaged_kernel_is_reported_not_skipped(tmp_path):
    """A code object whose text no longer decodes is a mismatch naming it (the check cannot pass by decoding nothing)."""
    if shutil.which(isa_check.OBJDUMP) is None:
        pytest.skip("llvm-objdump-19 is not installed")
    from compiler import compile_kernel
    from compiler.elf import CodeObject
    from compiler.ir import Kernel, f32
    from compiler.toolchain import lld_missing
    if lld_missing():
        pytest.skip(lld_missing())
    k = Kernel("isa_check_probe", local_size=(32, 1, 1))
    out = k.buffer("out", f32, writable=True)
    out[k.global_id(0)] = 1.0
    binary = bytearray(compile_kernel(k, "gfx1100", KernelCache(tmp_path)).binary)
    files, instructions, mismatches = isa_check.check([("good", bytes(binary))])
    assert (files, mismatches) == (1, []) and instructions > 0
    sec = next(s for s in CodeObject(bytes(binary)).sections if s.name == ".text")
    binary[sec.offset:sec.offset + 4] = b"\xff\xff\xff\xff"  # not an instruction of gfx1100's
    _, _, mismatches = isa_check.check([("damaged", bytes(binary))])
    assert mismatches and mismatches[0].startswith("damaged")
