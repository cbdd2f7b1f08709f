"""firmware/ucode.py against generated images: every kind and header version round-trips, and every malformed
image is refused with an error that names the file, what is wrong and the package."""
from __future__ import annotations

import ctypes

import pytest

from autogen import amdgpu_ucode as U
from firmware.ucode import FirmwareError, kind_for_name, parse
from tests.firmware import fwgen

ALL_VERSIONS = [(k, v) for k in fwgen.KINDS for v in fwgen.VERSIONS[k]]


@pytest.mark.parametrize("kind,version", ALL_VERSIONS, ids=[f"{k}-v{v[0]}.{v[1]}" for k, v in ALL_VERSIONS])
def test_valid_image_round_trips(kind, version):
    g = fwgen.build(kind, version, ip=(11, 0), ucode_version=0x2A)
    img = parse(g.data, name=f"x_{kind}.bin", kind=kind, check_crc=True)
    assert img.header_version == version and img.ip_version == (11, 0) and img.ucode_version == 0x2A
    assert img.crc_ok
    for name, blob in g.blobs.items():
        assert img.blob(name) == blob, name
    assert img.describe()["sections"].keys() >= g.blobs.keys()


def test_sections_follow_the_kernels_offsets():
    # gfx v2: stacks at data_offset_bytes from the file start; start address from lo/hi.
    g = fwgen.build("gfx", (2, 0))
    img = parse(g.data, kind="gfx")
    assert img.sections["data"].offset == img.header.data_offset_bytes
    assert img.start_addrs["ucode"] == 0x4000 and img.feature_version == 7
    # gfx v1: the ucode excludes the jump table, which lies jt_offset dwords into the payload.
    g1 = fwgen.build("gfx", (1, 0))
    img1 = parse(g1.data, kind="gfx")
    assert img1.sections["ucode"].size == img1.common.ucode_size_bytes - img1.header.jt_size * 4
    # imu: dram right after iram, whatever the header's own offset fields say (the kernel ignores them).
    gi = fwgen.set_field(fwgen.image("imu"), "imu", "imu_dram_ucode_offset_bytes", 0xDEAD0)
    imu = parse(gi, kind="imu")
    assert imu.sections["dram"].offset == imu.common.ucode_array_offset_bytes + imu.header.imu_iram_ucode_size_bytes


def test_psp_v1_layout_and_sections():
    g = fwgen.build("psp_sos", (1, 0), feature_version=0x55)
    img = parse(g.data, kind="psp_sos")
    # psp_init_sos_base_fw: sys_drv is payload[0:sos.offset_bytes], SOS follows at sos.offset_bytes.
    assert img.sections["sys_drv"].offset == img.common.ucode_array_offset_bytes
    assert img.sections["sys_drv"].size == img.header.sos.offset_bytes
    assert img.feature_version == 0x55


def test_psp_v1_3_aux_sections():
    aux = {"sys_drv": b"\x11" * 64, "sos": b"\x22" * 128}
    g = fwgen.build("psp_sos", (1, 3), aux_blobs=aux)
    img = parse(g.data, kind="psp_sos", check_crc=True)
    assert img.data[img.aux_sections["sos"].offset:img.aux_sections["sos"].end] == aux["sos"]
    assert img.blob("spl") == g.blobs["spl"]


def test_psp_v2_1_primary_and_aux_split_as_the_kernel_does():
    primary = {"sos": b"\x01" * 64, "sys_drv": b"\x02" * 64}
    aux = {"sos": b"\x03" * 64, "sys_drv": b"\x04" * 64}
    img = parse(fwgen.image("psp_sos", (2, 1), blobs=primary, aux_blobs=aux), kind="psp_sos")
    assert img.blob("sos") == primary["sos"] and img.blob("sys_drv") == primary["sys_drv"]
    aux_sos = img.aux_sections["sos"]
    assert img.data[aux_sos.offset:aux_sos.end] == aux["sos"]
    assert img.sections["sos"].fw_type == U.PSP_FW_TYPE_PSP_SOS


def test_unknown_psp_fw_type_is_kept_not_refused():
    # parse_sos_bin_descriptor warns "Unsupported PSP FW type" and goes on.
    data = fwgen.set_desc(fwgen.image("psp_sos", (2, 0)), 1, "fw_type", 99)
    assert "fw_type_99" in parse(data, kind="psp_sos").sections


def test_error_names_file_problem_and_package():
    with pytest.raises(FirmwareError) as e:
        parse(fwgen.truncate(fwgen.image("gfx"), 100), name="gc_11_0_0_pfp.bin")
    msg = str(e.value)
    assert "gc_11_0_0_pfp.bin" in msg and "truncated" in msg
    assert "firmware-amd-graphics" in msg and "linux-firmware" in msg and "never downloads" in msg
    assert e.value.file == "gc_11_0_0_pfp.bin"


@pytest.mark.parametrize("size", [0, 10, 31])
def test_shorter_than_common_header(size):
    with pytest.raises(FirmwareError, match="shorter than the 32-byte common header"):
        parse(fwgen.image("mes")[:size], kind="mes")


def test_truncated_image_fails_the_kernels_size_check():
    data = fwgen.image("rlc")
    with pytest.raises(FirmwareError, match=r"size_bytes\) but the file is"):
        parse(data[:-4], kind="rlc")
    with pytest.raises(FirmwareError, match="size_bytes"):
        parse(data + b"\0" * 4, kind="rlc")


def test_file_shorter_than_its_per_kind_header():
    # size_bytes consistent, but the file ends inside the RLC v2.4 header.
    data = fwgen.set_common(b"\0" * 64, "size_bytes", 64)
    data = fwgen.set_common(data, "header_version_major", 2)
    data = fwgen.set_common(data, "header_version_minor", 4)
    with pytest.raises(FirmwareError, match="shorter than its 244-byte rlc v2.4 header"):
        parse(data, kind="rlc")


def test_header_size_past_the_end():
    data = fwgen.set_common(fwgen.image("smc"), "header_size_bytes", 1 << 20)
    with pytest.raises(FirmwareError, match="header_size_bytes"):
        parse(data, kind="smc")


def test_payload_out_of_bounds():
    data = fwgen.image("sdma", (3, 0))
    for field, value in (("ucode_array_offset_bytes", len(data) - 8), ("ucode_size_bytes", len(data))):
        with pytest.raises(FirmwareError, match="payload .*runs past the end"):
            parse(fwgen.set_common(data, field, value), kind="sdma")


@pytest.mark.parametrize("kind,version,field,section", [
    ("gfx", (2, 0), "data_offset_bytes", "data"),
    ("gfx", (2, 0), "ucode_size_bytes", "ucode"),
    ("mes", (1, 0), "mes_ucode_offset_bytes", "ucode"),
    ("mes", (1, 0), "mes_ucode_data_size_bytes", "data"),
    ("sdma", (2, 0), "ctl_ucode_offset", "ctl"),
    ("imu", (1, 0), "imu_dram_ucode_size_bytes", "dram"),
    ("smc", (2, 0), "ppt_offset_bytes", "pptable"),
    ("rlc", (2, 3), "rlcv_ucode_offset_bytes", "rlcv"),
    ("rlc", (2, 1), "save_restore_list_gpm_size_bytes", "restore_list_gpm"),
    ("psp_sos", (1, 1), "kdb.offset_bytes", "kdb"),
    ("psp_ta", (1, 0), "ras.size_bytes", "ras"),
])
def test_section_out_of_bounds(kind, version, field, section):
    data = fwgen.set_field(fwgen.image(kind, version), kind, field, 0x7FFF0000)
    with pytest.raises(FirmwareError, match=f"{section} .*runs past the end"):
        parse(data, name="bad.bin", kind=kind)


def test_psp_v2_descriptor_out_of_bounds():
    data = fwgen.set_desc(fwgen.image("psp_sos"), 0, "size_bytes", 1 << 30)
    with pytest.raises(FirmwareError, match=r"sos \(psp_fw_bin\[0\]"):
        parse(data, kind="psp_sos")


def test_psp_descriptor_count_limits():
    data = fwgen.image("psp_sos", (2, 0))
    # the kernel's own limit (psp_init_sos_microcode): count must be below UCODE_MAX_PSP_PACKAGING.
    with pytest.raises(FirmwareError, match="UCODE_MAX_PSP_PACKAGING"):
        parse(fwgen.set_field(data, "psp_sos", "psp_fw_bin_count", U.UCODE_MAX_PSP_PACKAGING), kind="psp_sos")
    small = fwgen.image("psp_sos", (2, 0), blobs={"sos": b"\0" * 4})
    with pytest.raises(FirmwareError, match="psp_fw_bin table .* runs past the end"):
        parse(fwgen.set_field(small, "psp_sos", "psp_fw_bin_count", 25), kind="psp_sos")
    ta = fwgen.image("psp_ta", (2, 0))
    with pytest.raises(FirmwareError, match="packed TA count"):
        parse(fwgen.set_field(ta, "psp_ta", "ta_fw_bin_count", 26), kind="psp_ta")


def test_psp_v2_1_aux_index_past_count():
    data = fwgen.set_field(fwgen.image("psp_sos", (2, 1)), "psp_sos", "psp_aux_fw_bin_index", 40)
    with pytest.raises(FirmwareError, match="psp_aux_fw_bin_index 40"):
        parse(data, kind="psp_sos")


def test_psp_v1_empty_sos_refused_as_the_kernel_does():
    data = fwgen.set_field(fwgen.image("psp_sos", (1, 0)), "psp_sos", "sos.size_bytes", 0)
    with pytest.raises(FirmwareError, match="PSP SOS FW not available"):
        parse(data, kind="psp_sos")


def test_gfx_v1_jump_table_outside_ucode():
    data = fwgen.set_field(fwgen.image("gfx", (1, 0)), "gfx", "jt_size", 1 << 20)
    with pytest.raises(FirmwareError, match="jump table"):
        parse(data, kind="gfx")


def test_smc_v2_1_entry_table_past_end():
    data = fwgen.set_field(fwgen.image("smc", (2, 1)), "smc", "pptable_count", 1000)
    with pytest.raises(FirmwareError, match="pptable entry table"):
        parse(data, kind="smc")
    img = parse(fwgen.image("smc", (2, 1)), kind="smc")
    assert set(img.sections) == {"ucode", "pptable_1", "pptable_3"}


@pytest.mark.parametrize("kind,version", [("gfx", (3, 0)), ("rlc", (1, 0)), ("rlc", (2, 5)), ("psp_sos", (3, 0)),
                                          ("sdma", (4, 0)), ("mes", (2, 0)), ("imu", (1, 1)), ("psp_ta", (1, 1))])
def test_unknown_header_version(kind, version):
    data = fwgen.set_common(fwgen.image(kind), "header_version_major", version[0])
    data = fwgen.set_common(data, "header_version_minor", version[1])
    with pytest.raises(FirmwareError, match=f"header version {version[0]}.{version[1]} is not a known {kind} header"):
        parse(data, name="x.bin", kind=kind)


def test_bad_crc_only_when_asked():
    data = fwgen.flip_payload(fwgen.image("mes"))
    img = parse(data, kind="mes")  # amdgpu never checks crc32, so neither do we by default
    assert not img.crc_ok
    with pytest.raises(FirmwareError, match="CRC-32"):
        parse(data, name="gc_11_0_0_mes_2.bin", check_crc=True)
    assert parse(fwgen.fix_crc(data), kind="mes", check_crc=True).crc_ok


def test_common_kind_checks_only_the_common_header():
    data = fwgen.set_common(fwgen.image("common"), "header_version_major", 9)
    img = parse(data, name="gc_11_0_0_toc.bin")
    assert img.kind == "common" and img.blob("ucode") == img.payload


def test_blob_names_missing_section():
    img = parse(fwgen.image("imu"), kind="imu")
    with pytest.raises(KeyError, match="has no section 'ucode'; it has iram, dram"):
        img.blob("ucode")


def test_kind_for_name():
    cases = {"psp_13_0_0_sos.bin": "psp_sos", "psp_14_0_3_ta.bin": "psp_ta", "psp_13_0_0_sos_kicker.bin": "psp_sos",
             "psp_13_0_5_toc.bin": "psp_toc", "smu_13_0_10.bin": "smc", "smu_13_0_0_kicker.bin": "smc",
             "gc_11_0_0_pfp.bin": "gfx", "gc_12_0_1_me.bin": "gfx", "gc_11_0_3_mec.bin.zst": "gfx",
             "gc_11_0_0_rlc_1.bin": "rlc", "gc_11_0_0_rlc_kicker.bin": "rlc", "gc_11_0_2_mes_2.bin": "mes",
             "gc_11_0_2_mes1.bin": "mes", "gc_12_0_1_uni_mes.bin.xz": "mes", "gc_12_0_0_imu.bin": "imu",
             "sdma_7_0_1.bin": "sdma", "gc_11_0_0_toc.bin": "common", "navi10_gpu_info.bin": "common"}
    assert {n: kind_for_name(n) for n in cases} == cases


def test_header_struct_sizes_match_the_kernel_union_limit():
    # UCODE_MAX_PSP_PACKAGING is derived from the 0x100-byte union in amdgpu_ucode.h.
    assert ctypes.sizeof(U.union_amdgpu_firmware_header) == 0x100
    assert U.UCODE_MAX_PSP_PACKAGING == ((0x100 - 32 - 4) // 16) * 2
