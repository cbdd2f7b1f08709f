"""A disk cache of compiled kernels keyed by the kernel's IR, the target and the toolchain versions."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable


def cache_root() -> Path:
    """$BAREGPU_CACHE_DIR, else the XDG cache."""
    env = os.environ.get("BAREGPU_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "baregpu" / "kernels"


class KernelCache:
    """Binary artifacts on disk; an entry is written atomically and checked by its digest when read."""

    def __init__(self, root: Path | None = None):
        self.root = root or cache_root()
        self.hits = self.misses = 0

    def _path(self, key: str, target: str) -> Path:
        return self.root / target / f"{key}.bin"

    def get_or_build(self, parts: tuple[str, ...], target: str, build: Callable[[], bytes]) -> bytes:
        """The cached artifact for parts+target, or build() it and store it (a corrupt entry is rebuilt)."""
        key = hashlib.sha256("\0".join(parts + (target,)).encode()).hexdigest()
        path = self._path(key, target)
        try:
            raw = path.read_bytes()
            digest, blob = raw[:32], raw[32:]
            if hashlib.sha256(blob).digest() == digest:
                self.hits += 1
                return blob
        except OSError:
            pass
        self.misses += 1
        blob = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(hashlib.sha256(blob).digest() + blob)
        os.replace(tmp, path)  # readers see the old entry or the new one, never half of one
        return blob
