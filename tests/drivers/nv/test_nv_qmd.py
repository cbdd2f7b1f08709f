"""QMD builder/decoder: round trips, documented bit positions, errors."""
import pytest

from autogen import nv_qmd as Q
from drivers.nv import qmd

FIELDS = dict(grid=(4, 2, 1), block=(128, 1, 1), shared_memory_size=1024, register_count=32, barrier_count=1,
              program_address=0x7F_0000_1000, cbuf0_address=0x7F_0000_2000, cbuf0_size=0x160,
              local_memory_low_size=16, local_memory_high_size=32, release_address=0x7F_0000_3000,
              release_payload=2**40 + 3)


@pytest.mark.parametrize("version", list(qmd.PREFIX))
def test_round_trip(version):
    d = qmd.decode_qmd(version, qmd.encode_qmd(version, **FIELDS))
    assert {k: d[k] for k in FIELDS} == FIELDS
    assert d["qmd_major_version"] == qmd.MAJOR[version]
    assert d["constant_buffer_valid[0]"] == 1


def test_sizes():
    assert qmd.size("V03_00") == 256 and qmd.size("V04_00") == 384 and qmd.size("V05_00") == 384


def bit(raw, n):
    return int.from_bytes(raw, "little") >> n & 1


def test_documented_bits():
    # clc6c0qmd.h: CTA_THREAD_DIMENSION0 607:592, QMD_MAJOR_VERSION 583:580, CONSTANT_BUFFER_VALID(i) 640+i.
    raw = qmd.encode_qmd("V03_00", cta_thread_dimension0=1)
    assert bit(raw, 592) and raw[580 // 8] >> 4 == 3
    assert Q.NVC6C0_QMDV03_00_CTA_THREAD_DIMENSION0_SHIFT == 592
    assert bit(qmd.encode_qmd("V03_00", cbuf0_address=0x100), 640)
    # clcbc0qmd.h: GRID_WIDTH 1055:1024; clcdc0qmd.h: PROGRAM_ADDRESS_LOWER_SHIFTED4 from bit 1024.
    assert int.from_bytes(qmd.encode_qmd("V04_00", grid=(5, 1, 1))[128:132], "little") == 5
    assert int.from_bytes(qmd.encode_qmd("V05_00", program_address=0x50)[128:132], "little") == 5


def test_raw_indexed_fields():
    raw = qmd.encode_qmd("V04_00", **{"constant_buffer_valid[3]": 1})
    assert bit(raw, Q.NVCBC0_QMDV04_00_CONSTANT_BUFFER_VALID_SHIFT(3))
    assert qmd.decode_qmd("V04_00", raw)["constant_buffer_valid[3]"] == 1


def test_errors():
    with pytest.raises(qmd.QMDError, match="no field"):
        qmd.encode_qmd("V03_00", grid_width=1)  # V04_00/V05_00 name; V03_00 says cta_raster_width
    with pytest.raises(qmd.QMDError, match="no field"):
        qmd.encode_qmd("V04_00", register_count_v=1)
    with pytest.raises(qmd.QMDError, match="does not fit"):
        qmd.encode_qmd("V03_00", block=(1 << 16, 1, 1))
    with pytest.raises(qmd.QMDError, match="does not fit"):
        qmd.encode_qmd("V03_00", program_address=1 << 57)
    with pytest.raises(qmd.QMDError, match="multiple of 128"):
        qmd.encode_qmd("V05_00", shared_memory_size=100)
    with pytest.raises(qmd.QMDError, match="not one of"):
        qmd.encode_qmd("V09_00")
    with pytest.raises(qmd.QMDError, match="bytes"):
        qmd.decode_qmd("V03_00", b"\0" * 10)
    with pytest.raises(qmd.QMDError, match="twice"):
        qmd.encode_qmd("V03_00", block=(2, 1, 1), cta_thread_dimension0=3)
