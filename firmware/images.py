"""Find and read amdgpu firmware images: plain, .zst and .xz, in the kernel firmware loader's order.

The kernel (drivers/base/firmware_loader/main.c, _request_firmware and fw_get_filesystem_firmware) tries the plain
name in every directory of its search path, then `<name>.zst` in every directory, then `<name>.xz`; a compressed
file that fails to decompress is skipped for the next directory (when every file of one suffix fails we report
them instead of trying the next suffix). Its path is the `firmware_class.path` parameter,
then /lib/firmware/updates/<release>, /lib/firmware/updates, /lib/firmware/<release>, /lib/firmware, each with the
request's "amdgpu/" prefix. Our search path (`search_dirs`) keeps that order and puts first the directories a
caller passes and then those in BAREGPU_FIRMWARE_DIR (several separated by ':'). Every directory in it holds the
images themselves (as /lib/firmware/amdgpu does), so names here carry no "amdgpu/" prefix.

.xz is read with the standard library (lzma); .zst with the `zstandard` package, or the `zstd` command where the
package is absent; when neither is there the error says so and names both. Nothing is ever downloaded.
"""
from __future__ import annotations

import importlib.util
import lzma
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from firmware.ucode import FirmwareError, FirmwareImage, parse
from hcq.env import EnvError, raw

ENV_DIR = "BAREGPU_FIRMWARE_DIR"
# main.c _request_firmware: plain first, then CONFIG_FW_LOADER_COMPRESS_ZSTD, then CONFIG_FW_LOADER_COMPRESS_XZ.
SUFFIXES = ("", ".zst", ".xz")
ZSTD_TIMEOUT_S = 60.0  # a firmware image is a few MB; the zstd command decompresses it in well under a second
PathLike = Union[str, os.PathLike]


def system_dirs(release: Optional[str] = None, root: PathLike = "/lib/firmware") -> list[Path]:
    """The kernel's built-in firmware directories (main.c fw_path[]), each with amdgpu/ appended."""
    release = release if release is not None else os.uname().release
    root = Path(root)
    return [root / "updates" / release / "amdgpu", root / "updates" / "amdgpu", root / release / "amdgpu",
            root / "amdgpu"]


def env_dirs() -> list[Path]:
    """The directories in BAREGPU_FIRMWARE_DIR (':'-separated); each must exist, else EnvError says which."""
    text = raw(ENV_DIR)
    if text is None:
        return []
    dirs = [Path(p.strip()) for p in text.split(os.pathsep) if p.strip()]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if not dirs or missing:
        raise EnvError(ENV_DIR, os.environ[ENV_DIR],
                       "it takes one or more existing directories holding amdgpu firmware images, separated by "
                       f"'{os.pathsep}'" + (f" ({', '.join(missing)} is not a directory)" if missing else ""))
    return dirs


def search_dirs(dirs: Iterable[PathLike] = (), system: bool = True) -> list[Path]:
    """The directories searched, in order: `dirs`, then BAREGPU_FIRMWARE_DIR, then (when `system`) the kernel's."""
    out: list[Path] = []
    for d in [Path(d) for d in dirs] + env_dirs() + (system_dirs() if system else []):
        if d not in out:
            out.append(d)
    return out


def candidates(name: str, dirs: Sequence[PathLike]) -> list[Path]:
    """Every path tried for `name`, in the kernel's order: each suffix over every directory."""
    return [Path(d) / (name + suffix) for suffix in SUFFIXES for d in dirs]


def zstd_support() -> Optional[str]:
    """How .zst images are read here ('zstandard' or the zstd command's path), or None when they cannot be."""
    if importlib.util.find_spec("zstandard") is not None:
        return "zstandard"
    return shutil.which("zstd")


def decompress(path: PathLike, blob: bytes) -> bytes:
    """The contents of a firmware file, decompressed by its suffix; FirmwareError when that fails."""
    path = Path(path)
    if path.suffix == ".xz":
        try:
            return lzma.decompress(blob)
        except lzma.LZMAError as e:
            raise FirmwareError(str(path), f"it is not a valid .xz file ({e})") from None
    if path.suffix == ".zst":
        return _unzstd(path, blob)
    return blob


def _unzstd(path: Path, blob: bytes) -> bytes:
    try:
        import zstandard
    except ImportError:
        zstandard = None
    if zstandard is not None:
        try:
            # stream_reader: images written by the zstd command may not record their size in the frame header.
            with zstandard.ZstdDecompressor().stream_reader(blob) as reader:
                return reader.read()
        except zstandard.ZstdError as e:
            raise FirmwareError(str(path), f"it is not a valid .zst file ({e})") from None
    tool = shutil.which("zstd")
    if tool is None:
        raise FirmwareError(str(path), "it is zstd-compressed and neither the Python package zstandard (pip install "
                            "zstandard) nor the zstd command (apt install zstd) is installed to read it", hint=None)
    try:
        done = subprocess.run([tool, "-d", "-c", "-q"], input=blob, capture_output=True, timeout=ZSTD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FirmwareError(str(path), f"the zstd command did not finish decompressing it in {ZSTD_TIMEOUT_S:.0f} s",
                            hint=None) from None
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        raise FirmwareError(str(path), f"it is not a valid .zst file (zstd: {why})") from None
    return done.stdout


def find(name: str, dirs: Sequence[PathLike]) -> Optional[Path]:
    """The first existing candidate for `name` (kernel order), or None; it may still fail to decompress."""
    for p in candidates(name, dirs):
        if p.is_file():
            return p
    return None


def read(name: str, dirs: Optional[Sequence[PathLike]] = None) -> tuple[Path, bytes]:
    """(path, decompressed bytes) of `name` from the first candidate that reads, in the kernel's order.

    `dirs` defaults to search_dirs(). A compressed file that fails to decompress is passed over for the next
    candidate of the same suffix, as the kernel does; when nothing reads, FirmwareError says what was tried.
    """
    dirs = search_dirs() if dirs is None else [Path(d) for d in dirs]
    failures: list[FirmwareError] = []
    for suffix in SUFFIXES:
        for d in dirs:
            p = d / (name + suffix)
            if not p.is_file():
                continue
            try:
                blob = p.read_bytes()
            except OSError as e:
                raise FirmwareError(str(p), f"it cannot be read ({e.strerror or e})") from None
            try:
                return p, decompress(p, blob)
            except FirmwareError as e:
                failures.append(e)
        # The kernel may go on to the next suffix after a failed decompression (its result is then that of the
        # last directory tried); we stop and report the broken file instead of loading another copy silently.
        if failures:
            break
    if failures:
        if any(e.hint is None for e in failures):
            raise failures[0]
        raise FirmwareError(name, "; ".join(f"{e.file}: {e.problem}" for e in failures))
    raise FirmwareError(name, f"not found (looked for {name}, {name}.zst and {name}.xz)",
                        looked_in=[str(d) for d in dirs])


def load(name: str, dirs: Optional[Sequence[PathLike]] = None, kind: Optional[str] = None,
         check_crc: bool = False) -> FirmwareImage:
    """Find, read, decompress, parse and validate one image (see firmware.ucode.parse)."""
    path, data = read(name, dirs)
    try:
        return parse(data, name=name, kind=kind, path=str(path), check_crc=check_crc)
    except FirmwareError as e:
        raise FirmwareError(str(path), e.problem, e.hint, e.looked_in) from None


__all__ = ["ENV_DIR", "SUFFIXES", "candidates", "decompress", "env_dirs", "find", "load", "read", "search_dirs",
           "system_dirs", "zstd_support"]
