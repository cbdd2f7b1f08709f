"""A disk cache of compiled kernels keyed by the kernel's IR, the target and the toolchain versions.

Layout: <root>/<target>/<key>.bin, where key is the sha256 of the key parts and the target. Each file is the
sha256 of its body followed by the body, and the body is a format tag, the key it was stored for, then the payload.
A target's entries live in its own folder and the target is part of the key, so no entry is ever shared between
targets. Writes go to a temporary file that is renamed into place, so a reader sees a whole old entry or a whole
new one. An entry whose digest does not match (a torn or corrupted file) is rebuilt and counted in `corrupt`; a
whole, valid entry stored for another key (files swapped or copied by hand, a bad sync) is rebuilt and counted in
`mismatched`, because running another kernel's binary kills the device; an entry in an older format is a miss.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

FORMAT = b"baregpu-kernel-cache-2\n"  # the body's first bytes; entries without it are from an older format


def cache_root() -> Path:
    """$BAREGPU_CACHE_DIR, else ~/.cache/baregpu/kernels (honouring $XDG_CACHE_HOME)."""
    env = os.environ.get("BAREGPU_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "baregpu" / "kernels"


class KernelCache:
    """Binary artifacts on disk; `hits`, `misses` and `builds` count what get_or_build did, `corrupt` and
    `mismatched` the damaged entries and the entries of another key that it found and rebuilt."""

    def __init__(self, root: Optional[Path] = None):
        self.root = Path(root) if root is not None else cache_root()
        self.hits = self.misses = self.builds = self.corrupt = self.mismatched = 0

    @staticmethod
    def key(parts: tuple[str, ...], target: str) -> bytes:
        """The sha256 of the key parts and the target: names the entry's file and is stored inside it."""
        if not target or "/" in target or target.startswith("."):
            raise ValueError(f"bad cache target name {target!r}: a target is a non-empty folder name without '/' "
                             "that does not start with '.'")
        return hashlib.sha256("\0".join(parts + (target,)).encode()).digest()

    def path(self, parts: tuple[str, ...], target: str) -> Path:
        """Where the entry for these key parts and target lives."""
        return self.root / target / f"{self.key(parts, target).hex()}.bin"

    def get(self, parts: tuple[str, ...], target: str) -> Optional[bytes]:
        """The cached payload, or None when absent, corrupt, stored for another key, or in an older format."""
        key = self.key(parts, target)
        try:
            raw = self.path(parts, target).read_bytes()
        except OSError:
            return None
        digest, body = raw[:32], raw[32:]
        if len(raw) < 32 or hashlib.sha256(body).digest() != digest:
            self.corrupt += 1
            return None
        if not body.startswith(FORMAT):
            return None
        stored_for, blob = body[len(FORMAT):len(FORMAT) + 32], body[len(FORMAT) + 32:]
        if stored_for != key:
            self.mismatched += 1
            return None
        return blob

    def put(self, parts: tuple[str, ...], target: str, blob: bytes) -> bool:
        """Store a payload atomically; False (and no exception) when the cache folder is not writable."""
        path, body = self.path(parts, target), FORMAT + self.key(parts, target) + blob
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(hashlib.sha256(body).digest() + body)
            os.replace(tmp, path)  # readers see the old entry or the new one, never half of one
            return True
        except OSError:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            return False

    def get_or_build(self, parts: tuple[str, ...], target: str, build: Callable[[], bytes]) -> bytes:
        """The cached artifact for parts+target, or build() it and store it (a corrupt, mismatched or old-format
        entry is rebuilt and replaced)."""
        blob = self.get(parts, target)
        if blob is not None:
            self.hits += 1
            return blob
        self.misses += 1
        blob = build()
        self.builds += 1
        self.put(parts, target, blob)
        return blob
