"""The disk cache of compiled kernels: hits, invalidation, per-target entries, corruption and odd folders."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from compiler import KernelCache, ToolchainError, compile_kernel
from compiler import toolchain
from compiler.cache import cache_root
from compiler.elf import CodeObject
from compiler.ir import f32
from sample_kernels import elementwise

needs_lld = pytest.mark.skipif(not any(shutil.which(n) for n in ("ld.lld-19", "ld.lld")),
                               reason="ld.lld is not installed (Debian package lld-19; ./setup.sh installs it)")


def add():
    return elementwise("c1", f32, lambda x, y: x + y)


def test_second_compile_hits_and_builds_nothing(cache):
    first = compile_kernel(add(), "host", cache)
    again = compile_kernel(add(), "host", cache)  # a new but identical kernel object
    assert (cache.builds, cache.hits) == (1, 1)
    assert again.binary == first.binary
    a = np.arange(3, dtype=np.float32)
    out = a * 0
    again(a, a, out, 3, global_size=(1, 1, 1))  # the cached object loads and runs
    assert out.tolist() == [0.0, 2.0, 4.0]


@needs_lld
def test_changed_kernel_or_target_misses(cache):
    compile_kernel(add(), "gfx1100", cache)
    compile_kernel(elementwise("c1", f32, lambda x, y: x - y), "gfx1100", cache)
    assert cache.builds == 2, "a different kernel must not hit"
    compile_kernel(add(), "gfx1201", cache)
    compile_kernel(add(), "sm_90", cache)
    assert cache.builds == 4, "a different target must not hit"
    assert sorted(p.name for p in cache.root.iterdir()) == ["gfx1100", "gfx1201", "sm_90"]
    compile_kernel(add(), "gfx1201", cache)
    assert (cache.builds, cache.hits) == (4, 1)


def test_toolchain_versions_are_part_of_the_key(cache, monkeypatch):
    compile_kernel(add(), "host", cache)
    monkeypatch.setattr("compiler.llvm_version", lambda: "0.0.1")
    compile_kernel(add(), "host", cache)
    assert cache.builds == 2, "a new LLVM rebuilds"


@needs_lld
@pytest.mark.parametrize("damage", [lambda b: b"garbage", lambda b: b[:len(b) // 2], lambda b: b[:40] + b"\0" + b[41:],
                                    lambda b: b""])
def test_corrupt_entries_are_rebuilt(cache, damage):
    compile_kernel(add(), "gfx1100", cache)
    (entry,) = (cache.root / "gfx1100").glob("*.bin")
    entry.write_bytes(damage(entry.read_bytes()))
    ck = compile_kernel(add(), "gfx1100", cache)
    assert (cache.builds, cache.corrupt) == (2, 1)
    assert CodeObject(ck.binary).kernel_descriptor("c1").kernarg_size == 28
    compile_kernel(add(), "gfx1100", cache)
    assert cache.hits == 1, "the rebuilt entry was stored again"


def test_writes_leave_no_temporary_files(cache):
    compile_kernel(add(), "host", cache)
    assert [p.name.startswith(".tmp-") for p in (cache.root / "host").iterdir()] == [False]


def test_unwritable_cache_still_compiles(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = KernelCache(blocker / "kernels")  # mkdir under a regular file fails
    ck = compile_kernel(add(), "host", cache)
    assert cache.builds == 1 and ck.binary


def test_cache_folder_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BAREGPU_CACHE_DIR", str(tmp_path / "here"))
    assert cache_root() == tmp_path / "here" and KernelCache().root == tmp_path / "here"
    monkeypatch.delenv("BAREGPU_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "baregpu" / "kernels"


def test_missing_linker_names_the_package(monkeypatch):
    toolchain.lld_path.cache_clear()
    monkeypatch.setattr(toolchain.shutil, "which", lambda name: None)
    try:
        with pytest.raises(ToolchainError, match=r"install Debian's lld-19"):
            toolchain.lld_path()
    finally:
        monkeypatch.undo()
        toolchain.lld_path.cache_clear()
