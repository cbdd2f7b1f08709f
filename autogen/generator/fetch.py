"""Fetch the pinned Debian packages with apt, verify their sha256, and extract the headers we generate from."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from autogen.generator.sources import PACKAGES, Package


class FetchError(RuntimeError):
    """A pinned source could not be had or did not match its pin; the message says what to do."""


def cache_dir() -> Path:
    """Where downloaded .debs and extracted trees live ($BAREGPU_AUTOGEN_CACHE, else the XDG cache)."""
    env = os.environ.get("BAREGPU_AUTOGEN_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "baregpu" / "autogen"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_dir(pkg: Package) -> Path:
    """The extracted tree of a package; for a source tarball, its top folder."""
    base = cache_dir() / "trees" / f"{pkg.name}_{pkg.version}"
    return base / pkg.name if pkg.tarball else base


def is_fetched(pkg: Package) -> bool:
    marker = cache_dir() / "trees" / f"{pkg.name}_{pkg.version}" / ".complete"
    return marker.exists() and marker.read_text().strip() == pkg.sha256


def download(pkg: Package) -> Path:
    """The verified .deb, downloaded with apt-get when not cached."""
    debs = cache_dir() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    path = debs / pkg.deb
    if not path.exists():
        if shutil.which("apt-get") is None:
            raise FetchError(f"{pkg.name}={pkg.version}: apt-get is not available; autogen sources come from Debian's "
                             f"archive (copy {pkg.deb} into {debs} by hand on other systems)")
        proc = subprocess.run(["apt-get", "download", f"{pkg.name}={pkg.version}"], cwd=debs,
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise FetchError(
                f"apt-get download {pkg.name}={pkg.version} failed:\n{proc.stderr.strip()}\n"
                f"If the version left the archive, pick the current one (apt-cache policy {pkg.name}), update "
                f"autogen/generator/sources.py (version and sha256), rerun python -m tools.autogen and commit. "
                f"If apt has no package lists yet, run apt-get update first.")
    got = sha256_of(path)
    if got != pkg.sha256:
        path.unlink()
        raise FetchError(f"{pkg.deb}: sha256 {got} does not match the pin {pkg.sha256}; the file was removed. "
                         "A pin only changes on purpose: update sources.py if the version changed.")
    return path


def extract(pkg: Package, deb: Path) -> Path:
    """Unpack the .deb (and, for source packages, only the members we need from the tarball inside)."""
    base = cache_dir() / "trees" / f"{pkg.name}_{pkg.version}"
    if base.exists():
        shutil.rmtree(base)
    staging = base.with_name(base.name + ".staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, timeout=600)
    if pkg.tarball:
        inner = staging / pkg.tarball
        wanted = tuple(f"{pkg.name}/{m}" for m in pkg.members)
        base.mkdir(parents=True)
        with tarfile.open(inner, "r|xz") as tar:  # streamed: the tarball is 150 MB compressed
            for member in tar:
                if member.name.startswith(wanted) and (member.isfile() or member.isdir()):
                    tar.extract(member, base, filter="data")
        shutil.rmtree(staging)
    else:
        staging.rename(base)
    (base / ".complete").write_text(pkg.sha256 + "\n")
    return tree_dir(pkg)


def ensure(name: str) -> Path:
    """The extracted tree of a pinned package, fetching and extracting it if needed."""
    pkg = PACKAGES[name]
    if is_fetched(pkg):
        return tree_dir(pkg)
    return extract(pkg, download(pkg))


def all_fetched() -> bool:
    """Whether every pinned source is present (tests that need them skip otherwise)."""
    return all(is_fetched(p) for p in PACKAGES.values())
