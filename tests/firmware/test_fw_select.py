"""firmware/select.py: the names amdgpu requests per IP set (literal lists from the kernel's MODULE_FIRMWARE and
init_microcode functions), and load_set's single error listing every missing or corrupt image."""
from __future__ import annotations

import pytest

from firmware import select
from firmware.ucode import FirmwareError, FirmwareSetError
from tests.firmware import fwgen

GFX11_COMMON = ["pfp", "me", "rlc", "mec", "imu"]

EXPECTED = {
    "gfx1100": ["psp_13_0_0_sos.bin", "psp_13_0_0_ta.bin", "smu_13_0_0.bin", "gc_11_0_0_pfp.bin", "gc_11_0_0_me.bin",
                "gc_11_0_0_rlc.bin", "gc_11_0_0_mec.bin", "gc_11_0_0_imu.bin", "sdma_6_0_0.bin",
                "gc_11_0_0_mes_2.bin", "gc_11_0_0_mes.bin", "gc_11_0_0_mes1.bin"],
    "gfx1101": ["psp_13_0_10_sos.bin", "psp_13_0_10_ta.bin", "smu_13_0_10.bin", "gc_11_0_3_pfp.bin",
                "gc_11_0_3_me.bin", "gc_11_0_3_rlc.bin", "gc_11_0_3_mec.bin", "gc_11_0_3_imu.bin", "sdma_6_0_3.bin",
                "gc_11_0_3_mes_2.bin", "gc_11_0_3_mes.bin", "gc_11_0_3_mes1.bin"],
    "gfx1102": ["psp_13_0_7_sos.bin", "psp_13_0_7_ta.bin", "smu_13_0_7.bin", "gc_11_0_2_pfp.bin", "gc_11_0_2_me.bin",
                "gc_11_0_2_rlc.bin", "gc_11_0_2_mec.bin", "gc_11_0_2_imu.bin", "sdma_6_0_2.bin",
                "gc_11_0_2_mes_2.bin", "gc_11_0_2_mes.bin", "gc_11_0_2_mes1.bin"],
    "gfx1200": ["psp_14_0_2_sos.bin", "psp_14_0_2_ta.bin", "smu_14_0_2.bin", "gc_12_0_0_pfp.bin", "gc_12_0_0_me.bin",
                "gc_12_0_0_rlc.bin", "gc_12_0_0_mec.bin", "gc_12_0_0_imu.bin", "sdma_7_0_0.bin",
                "gc_12_0_0_uni_mes.bin"],
    "gfx1201": ["psp_14_0_3_sos.bin", "psp_14_0_3_ta.bin", "smu_14_0_3.bin", "gc_12_0_1_pfp.bin", "gc_12_0_1_me.bin",
                "gc_12_0_1_rlc.bin", "gc_12_0_1_mec.bin", "gc_12_0_1_imu.bin", "sdma_7_0_1.bin",
                "gc_12_0_1_uni_mes.bin"],
}


@pytest.mark.parametrize("chip", sorted(EXPECTED))
def test_names_per_chip(chip):
    assert select.firmware_names(select.KNOWN_CHIPS[chip]) == EXPECTED[chip]


def test_roles_and_kinds_for_gfx1100():
    reqs = select.requests(select.KNOWN_CHIPS["gfx1100"])
    assert [(r.role, r.kind) for r in reqs] == [
        ("sos", "psp_sos"), ("ta", "psp_ta"), ("smc", "smc"), ("pfp", "gfx"), ("me", "gfx"), ("rlc", "rlc"),
        ("mec", "gfx"), ("imu", "imu"), ("sdma", "sdma"), ("mes", "mes"), ("mes_kiq", "mes")]
    assert reqs[-2].names == ("gc_11_0_0_mes_2.bin", "gc_11_0_0_mes.bin")  # amdgpu_mes_init_microcode fallback
    assert all(r.source.split()[0].endswith(".c") for r in reqs)


def test_block_aliases_strings_and_extra_mes_version():
    ips = {"gfx": "11.0.0", "PSP": "13_0_0", "smu": (13, 0, 0), "SDMA": [6, 0, 0], "MES": "11.0.0"}
    assert select.firmware_names(ips) == EXPECTED["gfx1100"]


def test_gfx12_without_uni_mes():
    names = select.firmware_names(select.KNOWN_CHIPS["gfx1201"], uni_mes=False)
    assert names[-2:] == ["gc_12_0_1_mes.bin", "gc_12_0_1_mes1.bin"]


def test_kicker_board_and_rlc_revision():
    ips = select.KNOWN_CHIPS["gfx1100"]
    assert select.is_kicker(0x744B, 0x00) and not select.is_kicker(0x744C, 0x00)
    names = select.firmware_names(ips, pci_device=0x744B, pci_revision=0x00)
    for n in ("psp_13_0_0_sos_kicker.bin", "psp_13_0_0_ta_kicker.bin", "smu_13_0_0_kicker.bin",
              "gc_11_0_0_rlc_kicker.bin", "gc_11_0_0_imu_kicker.bin"):
        assert n in names
    assert "gc_11_0_0_pfp.bin" in names  # no kicker for CP images
    # gfx_v11_0_init_microcode: GC 11.0.0 revision 0xCE takes rlc_1 first.
    assert "gc_11_0_0_rlc_1.bin" in select.firmware_names(ips, pci_device=0x744C, pci_revision=0xCE)
    # smu_v14_0 and gfx12 have no kicker images.
    k12 = select.firmware_names(select.KNOWN_CHIPS["gfx1201"], pci_device=0x744B, pci_revision=0)
    assert "smu_14_0_3.bin" in k12 and "gc_12_0_1_rlc.bin" in k12 and "psp_14_0_3_sos_kicker.bin" in k12


def test_rlc_backdoor_adds_the_toc():
    names = select.firmware_names(select.KNOWN_CHIPS["gfx1200"], rlc_backdoor=True)
    assert "gc_12_0_0_toc.bin" in names


@pytest.mark.parametrize("ips,needle", [
    ({"GC": "10.3.0"}, "GC 10.3.0 has no firmware table"),
    ({"PSP": "13.0.5"}, "MP0 13.0.5 has no firmware table"),
    ({"SMU": "13.0.6"}, "known MP1 versions: 13.0.0, 13.0.7, 13.0.10, 14.0.2, 14.0.3"),
    ({"SDMA": "5.2.0"}, "SDMA0 5.2.0"),
    ({"VCN": "4.0.0"}, "unknown IP block 'VCN'"),
])
def test_unsupported(ips, needle):
    with pytest.raises(select.UnsupportedIPError, match=needle):
        select.requests(ips)


@pytest.mark.parametrize("bad", ["11.0", "a.b.c", (11, 0), "11.0.0.1", (-1, 0, 0)])
def test_ip_version_parsing(bad):
    with pytest.raises(ValueError, match="is not major.minor.revision"):
        select.ip_version(bad)


@pytest.mark.parametrize("chip", sorted(EXPECTED))
def test_load_set_of_a_generated_set(tmp_path, chip):
    written = fwgen.write_set(tmp_path, chip)
    fw = select.load_set(select.KNOWN_CHIPS[chip], [tmp_path], system=False, check_crc=True)
    assert set(fw.images) == {r.role for r in select.requests(select.KNOWN_CHIPS[chip])}
    assert fw["sdma"].header_version == ((3, 0) if chip.startswith("gfx12") else (2, 0))
    assert fw["pfp"].blob("data") == written[EXPECTED[chip][3]].blobs["data"]
    assert fw["mes"].name in EXPECTED[chip] and len(fw.describe()) == len(fw.images)
    with pytest.raises(KeyError, match="no firmware for role 'vcn'"):
        fw["vcn"]


@pytest.mark.parametrize("fmt", ["xz", "zst"])
def test_load_set_compressed(tmp_path, fmt):
    if fmt == "zst" and fwgen.zst_writer() is None:
        pytest.skip("no zstd writer: pip install zstandard (a baregpu dependency) or apt install zstd")
    fwgen.write_set(tmp_path, "gfx1102", compress=fmt)
    fw = select.load_set(select.KNOWN_CHIPS["gfx1102"], [tmp_path], system=False)
    assert fw["sos"].path.endswith(f"psp_13_0_7_sos.bin.{fmt}")


def test_mes_falls_back_to_the_plain_name(tmp_path):
    fwgen.write_set(tmp_path, "gfx1100", skip=("gc_11_0_0_mes_2.bin",))
    (tmp_path / "gc_11_0_0_mes.bin").write_bytes(fwgen.image("mes"))
    fw = select.load_set(select.KNOWN_CHIPS["gfx1100"], [tmp_path], system=False)
    assert fw["mes"].name == "gc_11_0_0_mes.bin"


def test_one_error_lists_every_missing_and_corrupt_image(tmp_path):
    bad_rlc = fwgen.truncate(fwgen.image("rlc"), 200)
    fwgen.write_set(tmp_path, "gfx1101", skip=("smu_13_0_10.bin", "gc_11_0_3_mes_2.bin"),
                    overrides={"gc_11_0_3_rlc.bin": bad_rlc})
    with pytest.raises(FirmwareSetError) as e:
        select.load_set(select.KNOWN_CHIPS["gfx1101"], [tmp_path], system=False)
    err = e.value
    assert len(err.errors) == 3
    msg = str(err)
    assert "3 firmware image(s) missing or corrupt" in msg
    assert f"Searched, in order: {tmp_path}" in msg  # the directories are named once for the whole set
    assert "smu_13_0_10.bin: not found" in msg
    assert "gc_11_0_3_mes_2.bin or gc_11_0_3_mes.bin: not found" in msg
    assert str(tmp_path / "gc_11_0_3_rlc.bin") in msg and "size_bytes" in msg
    assert "firmware-amd-graphics" in msg and "linux-firmware" in msg


def test_single_problem_raises_that_error(tmp_path):
    fwgen.write_set(tmp_path, "gfx1200", skip=("sdma_7_0_0.bin",))
    with pytest.raises(FirmwareError) as e:
        select.load_set(select.KNOWN_CHIPS["gfx1200"], [tmp_path], system=False)
    assert not isinstance(e.value, FirmwareSetError) and e.value.file == "sdma_7_0_0.bin"


def test_wrong_kind_in_the_right_file_is_corrupt_when_its_version_says_so(tmp_path):
    # An RLC v2.3 image under the PFP name has a header version no GFX header has. (Same-version mix-ups, such as a
    # GFX v1.0 image under an IMU name, cannot be told apart by headers alone, by us or by the kernel.)
    fwgen.write_set(tmp_path, "gfx1201", overrides={"gc_12_0_1_pfp.bin": fwgen.image("rlc", (2, 3))})
    with pytest.raises(FirmwareError, match="gc_12_0_1_pfp.bin: header version 2.3 is not a known gfx header"):
        select.load_set(select.KNOWN_CHIPS["gfx1201"], [tmp_path], system=False)
