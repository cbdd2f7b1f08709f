"""firmware/images.py: the kernel loader's lookup order, .xz/.zst reading, the search path and its errors."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from firmware import images
from firmware.ucode import FirmwareError
from hcq.env import EnvError
from tests.firmware import fwgen

NAME = "gc_11_0_0_mec.bin"
needs_zst = pytest.mark.skipif(images.zstd_support() is None,
                               reason="no zstd reader: pip install zstandard (a baregpu dependency) or apt install zstd")


@pytest.fixture(autouse=True)
def no_env_dir(monkeypatch):
    monkeypatch.delenv(images.ENV_DIR, raising=False)


def _dirs(tmp_path: Path, n: int) -> list[Path]:
    out = [tmp_path / f"d{i}" for i in range(n)]
    for d in out:
        d.mkdir()
    return out


@needs_zst
def test_plain_then_zst_then_xz_each_over_every_directory(tmp_path):
    a, b = _dirs(tmp_path, 2)
    plain = fwgen.image("gfx", seed=1)
    zst = fwgen.image("gfx", seed=2)
    xz = fwgen.image("gfx", seed=3)
    (a / f"{NAME}.xz").write_bytes(fwgen.compress(xz, "xz"))
    (a / f"{NAME}.zst").write_bytes(fwgen.compress(zst, "zst"))
    (b / NAME).write_bytes(plain)
    # main.c _request_firmware: the plain name in every directory comes before any compressed form.
    assert images.read(NAME, [a, b]) == (b / NAME, plain)
    (b / NAME).unlink()
    assert images.read(NAME, [a, b]) == (a / f"{NAME}.zst", zst)
    (a / f"{NAME}.zst").unlink()
    assert images.read(NAME, [a, b]) == (a / f"{NAME}.xz", xz)
    assert images.candidates(NAME, [a, b]) == [a / NAME, b / NAME, a / f"{NAME}.zst", b / f"{NAME}.zst",
                                               a / f"{NAME}.xz", b / f"{NAME}.xz"]


def test_earlier_directory_wins_for_the_same_form(tmp_path):
    a, b = _dirs(tmp_path, 2)
    (a / NAME).write_bytes(b"first")
    (b / NAME).write_bytes(b"second")
    assert images.read(NAME, [a, b]) == (a / NAME, b"first")
    assert images.find(NAME, [b, a]) == b / NAME


def test_broken_compressed_file_is_passed_over_for_the_next_directory(tmp_path):
    a, b = _dirs(tmp_path, 2)
    good = fwgen.image("mes")
    (a / f"{NAME}.xz").write_bytes(b"not xz at all")
    (b / f"{NAME}.xz").write_bytes(fwgen.compress(good, "xz"))
    assert images.read(NAME, [a, b]) == (b / f"{NAME}.xz", good)


@needs_zst
def test_every_compressed_copy_broken_is_reported(tmp_path):
    a, b = _dirs(tmp_path, 2)
    (a / f"{NAME}.zst").write_bytes(b"garbage")
    (b / f"{NAME}.zst").write_bytes(b"garbage too")
    (b / f"{NAME}.xz").write_bytes(fwgen.compress(fwgen.image("gfx"), "xz"))
    with pytest.raises(FirmwareError) as e:
        images.read(NAME, [a, b])
    msg = str(e.value)
    assert "not a valid .zst file" in msg and str(a / f"{NAME}.zst") in msg and str(b / f"{NAME}.zst") in msg
    assert "firmware-amd-graphics" in msg


def test_missing_image_message(tmp_path):
    a, b = _dirs(tmp_path, 2)
    with pytest.raises(FirmwareError) as e:
        images.read(NAME, [a, b])
    msg = str(e.value)
    assert msg.startswith(f"firmware {NAME}: not found")
    assert f"{NAME}.zst and {NAME}.xz" in msg and str(a) in msg and str(b) in msg
    assert "firmware-amd-graphics" in msg and "linux-firmware" in msg and "BAREGPU_FIRMWARE_DIR" in msg
    assert "never downloads" in msg


def test_load_parses_and_names_the_path_on_corruption(tmp_path):
    (d,) = _dirs(tmp_path, 1)
    g = fwgen.build("gfx")
    (d / f"{NAME}.xz").write_bytes(fwgen.compress(g.data, "xz"))
    img = images.load(NAME, [d])
    assert img.path == str(d / f"{NAME}.xz") and img.kind == "gfx" and img.blob("data") == g.blobs["data"]
    (d / f"{NAME}.xz").write_bytes(fwgen.compress(g.data[:-8], "xz"))
    with pytest.raises(FirmwareError) as e:
        images.load(NAME, [d])
    assert e.value.file == str(d / f"{NAME}.xz") and "size_bytes" in e.value.problem


def test_zst_through_the_command_when_the_package_is_absent(tmp_path, monkeypatch):
    if shutil.which("zstd") is None:
        pytest.skip("the zstd command is not installed (apt install zstd)")
    (d,) = _dirs(tmp_path, 1)
    data = fwgen.image("sdma")
    (d / f"{NAME}.zst").write_bytes(fwgen.compress(data, "zst"))
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import zstandard now raises ImportError
    assert images.read(NAME, [d])[1] == data
    (d / f"{NAME}.zst").write_bytes(b"bad")
    with pytest.raises(FirmwareError, match="zstd: "):
        images.read(NAME, [d])


def test_zst_with_no_decompressor_says_what_to_install(tmp_path, monkeypatch):
    (d,) = _dirs(tmp_path, 1)
    (d / f"{NAME}.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    monkeypatch.setitem(sys.modules, "zstandard", None)
    monkeypatch.setattr(images.shutil, "which", lambda _: None)
    with pytest.raises(FirmwareError) as e:
        images.read(NAME, [d])
    assert "pip install zstandard" in str(e.value) and "apt install zstd" in str(e.value)
    assert images.zstd_support() in (None, "zstandard")


def test_search_path_order(tmp_path, monkeypatch):
    a, b, c = _dirs(tmp_path, 3)
    monkeypatch.setenv(images.ENV_DIR, f"{b}:{c}")
    dirs = images.search_dirs([a])
    assert dirs[:3] == [a, b, c]
    assert dirs[3:] == images.system_dirs()
    assert images.search_dirs([a], system=False) == [a, b, c]
    assert images.system_dirs("6.12.0-test") == [Path("/lib/firmware/updates/6.12.0-test/amdgpu"),
                                                 Path("/lib/firmware/updates/amdgpu"),
                                                 Path("/lib/firmware/6.12.0-test/amdgpu"),
                                                 Path("/lib/firmware/amdgpu")]


def test_env_dir_is_used_by_default(tmp_path, monkeypatch):
    (d,) = _dirs(tmp_path, 1)
    (d / NAME).write_bytes(fwgen.image("gfx"))
    monkeypatch.setenv(images.ENV_DIR, str(d))
    assert images.read(NAME)[0] == d / NAME


def test_env_dir_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.setenv(images.ENV_DIR, str(tmp_path / "nope"))
    with pytest.raises(EnvError) as e:
        images.search_dirs()
    assert "BAREGPU_FIRMWARE_DIR" in str(e.value) and "nope is not a directory" in str(e.value)


def test_directory_named_like_an_image_is_skipped(tmp_path):
    (d,) = _dirs(tmp_path, 1)
    (d / NAME).mkdir()  # not a file: skipped like a missing one
    (d / f"{NAME}.xz").write_bytes(fwgen.compress(b"abc", "xz"))
    assert images.read(NAME, [d]) == (d / f"{NAME}.xz", b"abc")
