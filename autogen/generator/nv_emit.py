"""Generate a bindings module from our own headers (autogen/include/nv) with the same machinery as the Debian
ones: ctypeslib2 for the types, our macro translator for the #defines. The provenance header names the pinned
upstream versions (autogen/include/nv/VERSION) and the sha256 of each of our header files."""
from __future__ import annotations

from pathlib import Path

from autogen.generator.emit import OUTPUT_DIR, GenerateError, bindings, module_text
from autogen.generator.fetch import sha256_of
from autogen.generator.nv_sources import REL_DIR, OwnTarget, pinned_versions
from autogen.generator.sources import PACKAGES


def generate(ot: OwnTarget) -> str:
    """The full text of a generated module."""
    t = ot.target()
    headers = ot.paths()
    for p in headers:
        if not p.exists():
            raise GenerateError(f"{ot.module}: {p} is missing")
    types, tr = bindings(t, headers)
    pins = pinned_versions()
    libc = PACKAGES["linux-libc-dev"]
    return module_text(ot, [
        f"# Source: our headers in {REL_DIR}, facts from open-gpu-kernel-modules {pins['open-gpu-kernel-modules']}, "
        f"open-gpu-doc {pins['open-gpu-doc']} ({REL_DIR}/VERSION)",
        *(f"# Header: {REL_DIR}/{p.name} sha256 {sha256_of(p)}" for p in headers),
        f"# System headers: {libc.name} {libc.version} ({libc.arch})"], types, tr)


def write(ot: OwnTarget, out_dir: Path = OUTPUT_DIR) -> Path:
    path = out_dir / f"{ot.module}.py"
    path.write_text(generate(ot))
    return path
