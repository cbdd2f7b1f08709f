"""The emulated compute engine's reading of a QMD (the launch descriptor SEND_PCAS_A points at).

Our own reading over the generated bit positions (autogen.nv_qmd, from open-gpu-doc clc6c0qmd.h / clcbc0qmd.h),
never drivers/nv/qmd.py, so a driver that misplaces a field launches something else here, as it would on hardware.
Versions: V03_00 (Ampere and Ada compute classes; also accepted by HOPPER_COMPUTE_A, whose clcbc0qmd.h defines it)
and V04_00 (HOPPER_COMPUTE_A). The version is read from the QMD's own QMD_MAJOR_VERSION field, as hardware does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from autogen import nv_qmd as Q

# Bytes of each version (where its last field ends: V03_00 MW(2047:...) -> 256, V04_00 MW(3071:...) -> 384).
QMD_BYTES = {3: 256, 4: 384}
# The QMD_MAJOR_VERSION field sits at bits 583:580 in both layouts (clc6c0qmd.h, clcbc0qmd.h).
MAJOR_SHIFT, MAJOR_WIDTH = Q.NVC6C0_QMDV03_00_QMD_MAJOR_VERSION_SHIFT, Q.NVC6C0_QMDV03_00_QMD_MAJOR_VERSION_WIDTH
assert (MAJOR_SHIFT, MAJOR_WIDTH) == (Q.NVCBC0_QMDV04_00_QMD_MAJOR_VERSION_SHIFT,
                                      Q.NVCBC0_QMDV04_00_QMD_MAJOR_VERSION_WIDTH)


def _get(word: int, shift: int, width: int) -> int:
    return (word >> shift) & ((1 << width) - 1)


@dataclass
class QMD:
    """The fields a launch uses, in bytes and plain counts."""
    major: int
    minor: int
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    program_address: int
    cbuf: dict[int, tuple[int, int]] = field(default_factory=dict)  # valid constant banks: index -> (address, bytes)
    shared_memory_size: int = 0
    sm_config: tuple[int, int, int] = (0, 0, 0)  # MIN/MAX/TARGET_SM_CONFIG_SHARED_MEM_SIZE codes
    register_count: int = 0
    barrier_count: int = 0
    local_low: int = 0
    local_high: int = 0
    # enabled semaphore releases: (address, payload, STRUCTURE_SIZE, PAYLOAD64B, REDUCTION_ENABLE)
    releases: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    raw: bytes = field(default=b"", repr=False)


def qmd_major(raw: bytes) -> int:
    return _get(int.from_bytes(raw[:96], "little"), MAJOR_SHIFT, MAJOR_WIDTH)


def read_qmd(raw: bytes) -> QMD:
    """Decode a QMD of the version its QMD_MAJOR_VERSION names (3 or 4); ValueError for another."""
    major = qmd_major(raw)
    if major not in QMD_BYTES:
        raise ValueError(f"QMD_MAJOR_VERSION is {major}; this compute class reads V03_00 and V04_00 QMDs")
    if len(raw) < QMD_BYTES[major]:
        raise ValueError(f"a V0{major}_00 QMD is {QMD_BYTES[major]} bytes, only {len(raw)} were read")
    w = int.from_bytes(raw[:QMD_BYTES[major]], "little")
    if major == 3:
        p = "NVC6C0_QMDV03_00_"

        def g(name: str) -> int:
            return _get(w, getattr(Q, p + name + "_SHIFT"), getattr(Q, p + name + "_WIDTH"))

        def gi(name: str, i: int) -> int:
            return _get(w, getattr(Q, p + name + "_SHIFT")(i), getattr(Q, p + name + "_WIDTH"))
        cbuf = {}
        for i in range(8):
            if gi("CONSTANT_BUFFER_VALID", i):
                addr = gi("CONSTANT_BUFFER_ADDR_UPPER", i) << 32 | gi("CONSTANT_BUFFER_ADDR_LOWER", i)
                cbuf[i] = (addr, gi("CONSTANT_BUFFER_SIZE_SHIFTED4", i) << 4)
        releases = []
        for i in range(3):
            if g(f"RELEASE{i}_ENABLE"):
                releases.append((g(f"RELEASE{i}_ADDRESS_UPPER") << 32 | g(f"RELEASE{i}_ADDRESS_LOWER"),
                                 g(f"RELEASE{i}_PAYLOAD_UPPER") << 32 | g(f"RELEASE{i}_PAYLOAD_LOWER"),
                                 g(f"RELEASE{i}_STRUCTURE_SIZE"), g(f"RELEASE{i}_PAYLOAD64B"),
                                 g(f"RELEASE{i}_REDUCTION_ENABLE")))
        return QMD(major, g("QMD_VERSION"),
                   (g("CTA_RASTER_WIDTH"), g("CTA_RASTER_HEIGHT"), g("CTA_RASTER_DEPTH")),
                   (g("CTA_THREAD_DIMENSION0"), g("CTA_THREAD_DIMENSION1"), g("CTA_THREAD_DIMENSION2")),
                   g("PROGRAM_ADDRESS_UPPER") << 32 | g("PROGRAM_ADDRESS_LOWER"), cbuf,
                   g("SHARED_MEMORY_SIZE"),
                   (g("MIN_SM_CONFIG_SHARED_MEM_SIZE"), g("MAX_SM_CONFIG_SHARED_MEM_SIZE"),
                    g("TARGET_SM_CONFIG_SHARED_MEM_SIZE")),
                   g("REGISTER_COUNT_V"), g("BARRIER_COUNT"), g("SHADER_LOCAL_MEMORY_LOW_SIZE"),
                   g("SHADER_LOCAL_MEMORY_HIGH_SIZE"), releases, bytes(raw[:QMD_BYTES[major]]))
    p = "NVCBC0_QMDV04_00_"

    def g4(name: str) -> int:
        return _get(w, getattr(Q, p + name + "_SHIFT"), getattr(Q, p + name + "_WIDTH"))

    def gi4(name: str, i: int) -> int:
        return _get(w, getattr(Q, p + name + "_SHIFT")(i), getattr(Q, p + name + "_WIDTH"))
    cbuf = {}
    for i in range(8):
        if gi4("CONSTANT_BUFFER_VALID", i):
            addr = (gi4("CONSTANT_BUFFER_ADDR_UPPER_SHIFTED6", i) << 32 | gi4("CONSTANT_BUFFER_ADDR_LOWER_SHIFTED6", i)) << 6
            cbuf[i] = (addr, gi4("CONSTANT_BUFFER_SIZE_SHIFTED4", i) << 4)
    releases = []
    for i in range(3):
        if gi4("RELEASE_ENABLE", i):
            releases.append((g4(f"RELEASE_SEMAPHORE{i}_ADDR_UPPER") << 32 | g4(f"RELEASE_SEMAPHORE{i}_ADDR_LOWER"),
                             g4(f"RELEASE_SEMAPHORE{i}_PAYLOAD_UPPER") << 32 | g4(f"RELEASE_SEMAPHORE{i}_PAYLOAD_LOWER"),
                             gi4("RELEASE_STRUCTURE_SIZE", i), gi4("RELEASE_PAYLOAD64B", i),
                             gi4("RELEASE_REDUCTION_ENABLE", i)))
    return QMD(major, g4("QMD_MINOR_VERSION"),
               (g4("GRID_WIDTH"), g4("GRID_HEIGHT"), g4("GRID_DEPTH")),
               (g4("CTA_THREAD_DIMENSION0"), g4("CTA_THREAD_DIMENSION1"), g4("CTA_THREAD_DIMENSION2")),
               g4("PROGRAM_ADDRESS_UPPER") << 32 | g4("PROGRAM_ADDRESS_LOWER"), cbuf,
               g4("SHARED_MEMORY_SIZE"),
               (g4("MIN_SM_CONFIG_SHARED_MEM_SIZE"), g4("MAX_SM_CONFIG_SHARED_MEM_SIZE"),
                g4("TARGET_SM_CONFIG_SHARED_MEM_SIZE")),
               g4("REGISTER_COUNT"), g4("BARRIER_COUNT"), g4("SHADER_LOCAL_MEMORY_LOW_SIZE"),
               g4("SHADER_LOCAL_MEMORY_HIGH_SIZE"), releases, bytes(raw[:QMD_BYTES[major]]))
