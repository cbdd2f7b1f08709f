"""Every kernel cache entry carries the key it was stored for: a whole, valid entry of another key is never
returned, but counted, rebuilt and replaced."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from compiler import KernelCache, compile_kernel
from compiler.ir import f32
from sample_kernels import elementwise

A, B = ("gen", "kernel-a", "ir-a"), ("gen", "kernel-b", "ir-b")


def swap(p: Path, q: Path) -> None:
    da, db = p.read_bytes(), q.read_bytes()
    p.write_bytes(db)
    q.write_bytes(da)


def test_swapped_entries_are_rebuilt_never_returned(cache):
    cache.put(A, "host", b"binary of a")
    cache.put(B, "host", b"binary of b")
    swap(cache.path(A, "host"), cache.path(B, "host"))
    assert cache.get(A, "host") is None and cache.get(B, "host") is None
    assert (cache.mismatched, cache.corrupt) == (2, 0), "both files are whole and valid, just for the other key"
    assert cache.get_or_build(A, "host", lambda: b"binary of a") == b"binary of a"
    assert cache.get_or_build(B, "host", lambda: b"binary of b") == b"binary of b"
    assert (cache.builds, cache.mismatched) == (2, 4)
    assert cache.get_or_build(A, "host", lambda: b"wrong") == b"binary of a", "the bad entry was replaced"
    assert cache.get_or_build(B, "host", lambda: b"wrong") == b"binary of b"
    assert (cache.builds, cache.hits, cache.mismatched) == (2, 2, 4)


def test_an_entry_copied_to_another_targets_folder_is_not_used(cache):
    cache.put(A, "gfx1100", b"gfx1100 code object")
    dst = cache.path(A, "gfx1201")
    dst.parent.mkdir(parents=True)
    dst.write_bytes(cache.path(A, "gfx1100").read_bytes())
    assert cache.get_or_build(A, "gfx1201", lambda: b"gfx1201 code object") == b"gfx1201 code object"
    assert cache.mismatched == 1


def test_old_format_entries_are_plain_misses(cache):
    path = cache.path(A, "host")
    path.parent.mkdir(parents=True)
    old = b"binary of a from the previous format"
    path.write_bytes(hashlib.sha256(old).digest() + old)  # digest then payload, no format tag or key
    assert cache.get_or_build(A, "host", lambda: b"new binary of a") == b"new binary of a"
    assert (cache.misses, cache.builds, cache.corrupt, cache.mismatched) == (1, 1, 0, 0)
    assert cache.get(A, "host") == b"new binary of a", "the old entry was replaced"


def test_swapped_host_kernels_still_compute_their_own_results(tmp_path):
    root = tmp_path / "kernels"
    kernels = {"add": (lambda x, y: x + y, np.add), "mul": (lambda x, y: x * y, np.multiply)}
    first = KernelCache(root)
    for name, (fn, _) in kernels.items():
        compile_kernel(elementwise(f"swap_{name}", f32, fn), "host", first)
    entries = sorted((root / "host").glob("*.bin"))
    assert len(entries) == 2 and first.builds == 2
    swap(*entries)
    later = KernelCache(root)  # a later process, finding the swapped files
    a, b = np.arange(1, 101, dtype=np.float32), np.full(100, 3, np.float32)
    for name, (fn, ref) in kernels.items():
        ck = compile_kernel(elementwise(f"swap_{name}", f32, fn), "host", later)
        out = np.zeros(100, np.float32)
        ck(a, b, out, 100, global_size=(2, 1, 1))
        np.testing.assert_array_equal(out, ref(a, b))
    assert (later.mismatched, later.builds, later.hits) == (2, 2, 0)
    again = KernelCache(root)
    for name, (fn, _) in kernels.items():
        compile_kernel(elementwise(f"swap_{name}", f32, fn), "host", again)
    assert (again.hits, again.builds, again.mismatched) == (2, 0, 0), "the rebuilt entries replaced the swapped ones"
