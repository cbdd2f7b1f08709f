"""A disk cache of compiled kernels keyed by the kernel's IR, the target and the toolchain versions.

Layout: <root>/<target>/<sha256 of the key parts>.bin, each file the sha256 of its payload followed by the
payload. A target's entries live in its own folder and the target is part of the key, so no entry is ever
shared between targets. Writes go to a temporary file that is renamed into place, so a reader sees a whole
old entry or a whole new one; an entry whose digest does not match (a torn or corrupted file) is rebuilt.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional


def cache_root() -> Path:
    """$BAREGPU_CACHE_DIR, else ~/.cache/baregpu/kernels (honouring $XDG_CACHE_HOME)."""
    env = os.environ.get("BAREGPU_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "baregpu" / "kernels"


class KernelCache:
    """Binary artifacts on disk; `hits`, `misses` and `builds` count what get_or_build did."""

    def __init__(self, root: Optional[Path] = None):
        self.root = Path(root) if root is not None else cache_root()
        self.hits = self.misses = self.builds = self.corrupt = 0

    def path(self, parts: tuple[str, ...], target: str) -> Path:
        """Where the entry for these key parts and target lives."""
        if not target or "/" in target or target.startswith("."):
            raise ValueError(f"bad cache target name {target!r}")
        key = hashlib.sha256("\0".join(parts + (target,)).encode()).hexdigest()
        return self.root / target / f"{key}.bin"

    def get(self, parts: tuple[str, ...], target: str) -> Optional[bytes]:
        """The cached payload, or None when absent or corrupt."""
        try:
            raw = self.path(parts, target).read_bytes()
        except OSError:
            return None
        digest, blob = raw[:32], raw[32:]
        if len(raw) < 32 or hashlib.sha256(blob).digest() != digest:
            self.corrupt += 1
            return None
        return blob

    def put(self, parts: tuple[str, ...], target: str, blob: bytes) -> bool:
        """Store a payload atomically; False (and no exception) when the cache folder is not writable."""
        path = self.path(parts, target)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(hashlib.sha256(blob).digest() + blob)
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
        """The cached artifact for parts+target, or build() it and store it (a corrupt entry is rebuilt)."""
        blob = self.get(parts, target)
        if blob is not None:
            self.hits += 1
            return blob
        self.misses += 1
        blob = build()
        self.builds += 1
        self.put(parts, target, blob)
        return blob
