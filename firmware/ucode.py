"""Parse and validate amdgpu firmware images (the amdgpu_ucode.h headers of Linux 6.12).

Every image starts with `struct common_firmware_header`; a per-kind header (PSP, SMC, GFX, RLC, SDMA, MES, IMU)
follows it and says where the blobs the kernel hands to the PSP lie. `parse()` reads both, checks them and returns a
`FirmwareImage` whose `sections` are those blobs, cut out exactly as the kernel cuts them
(amdgpu_ucode.c amdgpu_ucode_init_single_fw, amdgpu_psp.c psp_init_sos_microcode, amdgpu_rlc.c
amdgpu_gfx_rlc_init_microcode, smu_v13_0.c smu_v13_0_get_pptable_from_firmware).

What is checked, and whose rule it is:
- the kernel's own checks: the file's length equals `size_bytes` (amdgpu_ucode.c amdgpu_ucode_validate); a PSP
  SOS header major version of 1 or 2 and a TA major of 1 or 2 (psp_init_sos_microcode, psp_init_ta_microcode); an
  RLC header of v2.x (amdgpu_gfx_rlc_init_microcode); SDMA majors 1..3 (amdgpu_sdma_init_inst_ctx); a packed PSP or
  TA descriptor count below UCODE_MAX_PSP_PACKAGING; a non-empty SOS and sys_drv in a v1 SOS image
  (psp_init_sos_base_fw).
- stricter than the kernel, because the kernel trusts the file here and would read past its end or load garbage:
  the file holds the common header and the whole per-kind header; `header_size_bytes` is not past the end; the
  payload (`ucode_array_offset_bytes` + `ucode_size_bytes`) and every section lie inside the file; the header
  version is one whose layout this module knows (the kernel reads unknown GFX/SMC/MES/IMU versions with the
  nearest layout); a GFX v1 jump table lies inside its ucode; PSP v2 descriptor tables lie inside the file.
- the CRC: amdgpu never checks `crc32` (6.12 only prints it), and whether the shipped images fill it with a CRC-32
  of the payload is not established here, so the check is opt-in (`check_crc=True`, zlib's CRC-32 of the payload)
  and `FirmwareImage.crc_ok` reports it either way. The emulated PSP and tests use it; a driver should not refuse a
  distribution's firmware on it.

Errors are `FirmwareError`s that name the file, what is wrong, and the package that provides the firmware.
"""
from __future__ import annotations

import ctypes
import zlib
from dataclasses import dataclass, field
from typing import Optional

from autogen import amdgpu_ucode as U

# The distribution packages that ship /lib/firmware/amdgpu, named in every error.
PACKAGE_HINT = ("amdgpu firmware comes from the firmware-amd-graphics package on Debian (apt install "
                "firmware-amd-graphics, in the non-free-firmware section) and from linux-firmware elsewhere "
                "(Ubuntu, Fedora, Arch); reinstall it, or put good copies in a directory named by "
                "BAREGPU_FIRMWARE_DIR. baregpu never downloads firmware")


class FirmwareError(Exception):
    """A firmware image is missing or corrupt; the message names the file, what is wrong and the package."""

    def __init__(self, file: str, problem: str, hint: Optional[str] = PACKAGE_HINT,
                 looked_in: Optional[list[str]] = None):
        self.file, self.problem, self.hint, self.looked_in = file, problem, hint, looked_in
        where = f" in {', '.join(looked_in) or '(no directories)'}" if looked_in is not None else ""
        super().__init__(f"firmware {file}: {problem}{where}" + (f". {hint}." if hint else ""))


class FirmwareSetError(FirmwareError):
    """Several images of one set are missing or corrupt: `errors` holds one FirmwareError per image."""

    def __init__(self, errors: list[FirmwareError]):
        self.errors = list(errors)
        lines = "\n".join(f"  - {e.file}: {e.problem}" for e in self.errors)
        # Lookups of one set share their directories: name them once.
        searched = next((e.looked_in for e in self.errors if e.looked_in is not None), None)
        where = f"\nSearched, in order: {', '.join(searched) or '(no directories)'}" if searched is not None else ""
        Exception.__init__(self, f"{len(self.errors)} firmware image(s) missing or corrupt:\n{lines}{where}\n"
                           f"{PACKAGE_HINT}.")
        self.file = ", ".join(e.file for e in self.errors)
        self.problem = "; ".join(e.problem for e in self.errors)
        self.hint, self.looked_in = PACKAGE_HINT, searched


COMMON_SIZE = ctypes.sizeof(U.struct_common_firmware_header)
DESC_SIZE = ctypes.sizeof(U.struct_psp_fw_bin_desc)

# The header layouts each kind has in amdgpu_ucode.h 6.12; (major, minor) -> struct.
LAYOUTS: dict[str, dict[tuple[int, int], type]] = {
    "psp_sos": {(1, 0): U.struct_psp_firmware_header_v1_0, (1, 1): U.struct_psp_firmware_header_v1_1,
                (1, 2): U.struct_psp_firmware_header_v1_2, (1, 3): U.struct_psp_firmware_header_v1_3,
                (2, 0): U.struct_psp_firmware_header_v2_0, (2, 1): U.struct_psp_firmware_header_v2_1},
    "psp_ta": {(1, 0): U.struct_ta_firmware_header_v1_0, (2, 0): U.struct_ta_firmware_header_v2_0},
    # psp_init_toc_microcode / psp_init_asd_microcode read a plain psp v1.0 header.
    "psp_toc": {(1, 0): U.struct_psp_firmware_header_v1_0},
    "smc": {(1, 0): U.struct_smc_firmware_header_v1_0, (2, 0): U.struct_smc_firmware_header_v2_0,
            (2, 1): U.struct_smc_firmware_header_v2_1},
    "gfx": {(1, 0): U.struct_gfx_firmware_header_v1_0, (2, 0): U.struct_gfx_firmware_header_v2_0},
    "rlc": {(2, 0): U.struct_rlc_firmware_header_v2_0, (2, 1): U.struct_rlc_firmware_header_v2_1,
            (2, 2): U.struct_rlc_firmware_header_v2_2, (2, 3): U.struct_rlc_firmware_header_v2_3,
            (2, 4): U.struct_rlc_firmware_header_v2_4},
    "sdma": {(1, 0): U.struct_sdma_firmware_header_v1_0, (1, 1): U.struct_sdma_firmware_header_v1_1,
             (2, 0): U.struct_sdma_firmware_header_v2_0, (3, 0): U.struct_sdma_firmware_header_v3_0},
    "mes": {(1, 0): U.struct_mes_firmware_header_v1_0},
    "imu": {(1, 0): U.struct_imu_firmware_header_v1_0},
}
KINDS = tuple(LAYOUTS) + ("common",)

# Section names of packed PSP SOS descriptors by fw_type (amdgpu_ucode.h enum psp_fw_type).
PSP_FW_TYPES = {U.PSP_FW_TYPE_PSP_SOS: "sos", U.PSP_FW_TYPE_PSP_SYS_DRV: "sys_drv", U.PSP_FW_TYPE_PSP_KDB: "kdb",
                U.PSP_FW_TYPE_PSP_TOC: "toc", U.PSP_FW_TYPE_PSP_SPL: "spl", U.PSP_FW_TYPE_PSP_RL: "rl",
                U.PSP_FW_TYPE_PSP_SOC_DRV: "soc_drv", U.PSP_FW_TYPE_PSP_INTF_DRV: "intf_drv",
                U.PSP_FW_TYPE_PSP_DBG_DRV: "dbg_drv", U.PSP_FW_TYPE_PSP_RAS_DRV: "ras_drv",
                U.PSP_FW_TYPE_PSP_IPKEYMGR_DRV: "ipkeymgr_drv"}
# Section names of packed TA descriptors by fw_type (enum ta_fw_type).
TA_FW_TYPES = {U.TA_FW_TYPE_PSP_ASD: "asd", U.TA_FW_TYPE_PSP_XGMI: "xgmi", U.TA_FW_TYPE_PSP_RAS: "ras",
               U.TA_FW_TYPE_PSP_HDCP: "hdcp", U.TA_FW_TYPE_PSP_DTM: "dtm", U.TA_FW_TYPE_PSP_RAP: "rap",
               U.TA_FW_TYPE_PSP_SECUREDISPLAY: "securedisplay"}


@dataclass(frozen=True)
class Section:
    """One blob inside an image: `offset` from the start of the file, `size` bytes; `version` where the header
    gives the blob its own (PSP/TA descriptors, RLC save-restore lists, MES data); `fw_type` for packed PSP/TA
    descriptors (their enum value)."""
    name: str
    offset: int
    size: int
    version: Optional[int] = None
    fw_type: Optional[int] = None

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class CommonHeader:
    """struct common_firmware_header, decoded (little-endian on every platform)."""
    size_bytes: int
    header_size_bytes: int
    header_version_major: int
    header_version_minor: int
    ip_version_major: int
    ip_version_minor: int
    ucode_version: int
    ucode_size_bytes: int
    ucode_array_offset_bytes: int
    crc32: int

    @classmethod
    def decode(cls, data: bytes) -> "CommonHeader":
        """The common header at the start of `data` (which must hold COMMON_SIZE bytes)."""
        h = U.struct_common_firmware_header.from_buffer_copy(data[:COMMON_SIZE])
        return cls(**{f[0]: getattr(h, f[0]) for f in U.struct_common_firmware_header._fields_})


@dataclass
class FirmwareImage:
    """A parsed, validated firmware image.

    name: the file name asked for (e.g. "gc_11_0_0_pfp.bin"); path: where it was read from (None for bytes);
    kind: the parser used (see KINDS); common: the common header; header: the per-kind ctypes header (a copy);
    sections: the blobs by name, as the kernel cuts them; aux_sections: a PSP v1.3/v2.1 SOS image's alternate set
    (the kernel loads it instead only on some MP0 13.0.2/13.0.6 parts); start_addrs: ucode/data start addresses of
    RS64 GFX and MES images; feature_version where the header has one.
    """
    name: str
    path: Optional[str]
    kind: str
    data: bytes
    common: CommonHeader
    header: Optional[ctypes.Structure]
    sections: dict[str, Section] = field(default_factory=dict)
    aux_sections: dict[str, Section] = field(default_factory=dict)
    start_addrs: dict[str, int] = field(default_factory=dict)
    feature_version: Optional[int] = None

    @property
    def header_version(self) -> tuple[int, int]:
        return (self.common.header_version_major, self.common.header_version_minor)

    @property
    def ucode_version(self) -> int:
        return self.common.ucode_version

    @property
    def ip_version(self) -> tuple[int, int]:
        return (self.common.ip_version_major, self.common.ip_version_minor)

    @property
    def payload(self) -> bytes:
        """The common ucode array (ucode_array_offset_bytes, ucode_size_bytes): what the CRC covers."""
        c = self.common
        return self.data[c.ucode_array_offset_bytes:c.ucode_array_offset_bytes + c.ucode_size_bytes]

    @property
    def crc_ok(self) -> bool:
        """True when the header's crc32 equals zlib's CRC-32 of the payload (amdgpu never checks this)."""
        return zlib.crc32(self.payload) == self.common.crc32

    def blob(self, section: str) -> bytes:
        """The bytes of one section; KeyError naming the sections there are when it is absent."""
        s = self.sections.get(section) or self.aux_sections.get(section)
        if s is None:
            raise KeyError(f"firmware {self.name} has no section {section!r}; it has "
                           f"{', '.join(self.sections) or 'none'}")
        return self.data[s.offset:s.end]

    def describe(self) -> dict:
        """A plain summary for reports (gpu_probe --json): versions, sizes, sections."""
        return {"name": self.name, "path": self.path, "kind": self.kind,
                "header_version": "%d.%d" % self.header_version, "ip_version": "%d.%d" % self.ip_version,
                "ucode_version": self.ucode_version, "feature_version": self.feature_version,
                "size": len(self.data), "crc_ok": self.crc_ok,
                "sections": {n: {"offset": s.offset, "size": s.size, "version": s.version}
                             for n, s in self.sections.items()}}


def kind_for_name(name: str) -> str:
    """The parser kind of a firmware file from its name, as the kernel requests it (see firmware/select.py):
    psp_*_sos -> psp_sos, *_ta -> psp_ta, psp_*_toc/asd -> psp_toc, smu_* -> smc, gc_*_{pfp,me,mec} -> gfx,
    gc_*_rlc -> rlc, sdma_* -> sdma, gc_*_mes/uni_mes -> mes, gc_*_imu -> imu, anything else -> common."""
    base = name.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst"):
        if base.endswith(suffix):
            base = base[:-len(suffix)]
    base = base[:-4] if base.endswith(".bin") else base
    base = base[:-len("_kicker")] if base.endswith("_kicker") else base
    tail = base.split("_")
    if base.startswith("psp_"):
        return {"sos": "psp_sos", "ta": "psp_ta", "toc": "psp_toc", "asd": "psp_toc"}.get(tail[-1], "common")
    if base.startswith("smu_"):
        return "smc"
    if base.startswith("sdma_"):
        return "sdma"
    if base.startswith("gc_"):
        role = "_".join(tail[4:])
        if role in ("pfp", "me", "mec"):
            return "gfx"
        if role in ("rlc", "rlc_1"):
            return "rlc"
        if role in ("mes", "mes_2", "mes1", "uni_mes"):
            return "mes"
        if role == "imu":
            return "imu"
    return "common"


class _Checker:
    """Bounds checks for one image, raising FirmwareError with the file's name."""

    def __init__(self, name: str, size: int):
        self.name, self.size = name, size

    def fail(self, problem: str) -> FirmwareError:
        return FirmwareError(self.name, problem)

    def section(self, name: str, offset: int, size: int, what: str, **kw) -> Section:
        """A section whose bytes must lie in the file (checked only when it has bytes, as the kernel loads only
        non-empty ones)."""
        if size and (offset < 0 or offset + size > self.size):
            raise self.fail(f"{name} ({what}: {size} bytes at offset {offset}) runs past the end of the "
                            f"{self.size}-byte file; the image is truncated or corrupt")
        return Section(name, offset, size, **kw)


def parse(data: bytes, name: str = "<bytes>", kind: Optional[str] = None, path: Optional[str] = None,
          check_crc: bool = False) -> FirmwareImage:
    """Parse and validate one image. `kind` defaults to what `name` says (kind_for_name); `check_crc` also
    requires the payload's CRC-32 to match the header (stricter than amdgpu; see the module docstring)."""
    data = bytes(data)
    kind = kind or kind_for_name(name)
    if kind not in KINDS:
        raise ValueError(f"unknown firmware kind {kind!r}; the kinds are {', '.join(KINDS)}")
    chk = _Checker(name, len(data))
    if len(data) < COMMON_SIZE:
        raise chk.fail(f"the file is {len(data)} bytes, shorter than the {COMMON_SIZE}-byte common header; "
                       f"it is truncated or not an amdgpu firmware image")
    common = CommonHeader.decode(data)
    # amdgpu_ucode.c amdgpu_ucode_validate: the only check the kernel makes on every image.
    if common.size_bytes != len(data):
        raise chk.fail(f"the header says the image is {common.size_bytes} bytes (size_bytes) but the file is "
                       f"{len(data)} bytes; it is truncated or corrupt")
    if common.header_size_bytes > len(data):
        raise chk.fail(f"header_size_bytes {common.header_size_bytes} is larger than the {len(data)}-byte file")
    chk.section("payload", common.ucode_array_offset_bytes, common.ucode_size_bytes,
                "ucode_array_offset_bytes/ucode_size_bytes")
    image = FirmwareImage(name=name, path=path, kind=kind, data=data, common=common, header=None)
    if kind != "common":
        version = (common.header_version_major, common.header_version_minor)
        layout = LAYOUTS[kind].get(version)
        if layout is None:
            known = ", ".join("%d.%d" % v for v in LAYOUTS[kind])
            raise chk.fail(f"header version {version[0]}.{version[1]} is not a known {kind} header (known: {known}); "
                           f"the image is corrupt or newer than this baregpu (amdgpu_ucode.h of Linux 6.12)")
        if ctypes.sizeof(layout) > len(data):
            raise chk.fail(f"the file is {len(data)} bytes, shorter than its {ctypes.sizeof(layout)}-byte "
                           f"{kind} v{version[0]}.{version[1]} header; it is truncated")
        header = layout.from_buffer_copy(data[:ctypes.sizeof(layout)])
        image.header = header
        _PARSERS[kind](image, header, chk)
    else:
        image.sections["ucode"] = Section("ucode", common.ucode_array_offset_bytes, common.ucode_size_bytes)
    if check_crc and not image.crc_ok:
        raise chk.fail(f"the payload's CRC-32 is {zlib.crc32(image.payload):#010x} but the header says "
                       f"{common.crc32:#010x}; the image is corrupt")
    return image


def _common_ucode(image: FirmwareImage, chk: _Checker, name: str = "ucode") -> None:
    c = image.common
    image.sections[name] = chk.section(name, c.ucode_array_offset_bytes, c.ucode_size_bytes, "common header")


def _psp_sos(image: FirmwareImage, h, chk: _Checker) -> None:
    base = image.common.ucode_array_offset_bytes
    major, minor = image.header_version
    if major == 1:
        v10 = h if minor == 0 else (h.v1_1.v1_0 if minor == 3 else h.v1_0)
        image.feature_version = v10.sos.fw_version
        # amdgpu_psp.c psp_init_sos_base_fw: sys_drv is the payload's start up to sos.offset_bytes, SOS follows.
        sys_size, sos_size = v10.sos.offset_bytes, v10.sos.size_bytes
        if sys_size == 0 or sos_size == 0:
            raise chk.fail("the SOS header gives an empty sys_drv or SOS (psp_init_sos_base_fw: "
                           "'PSP SOS FW not available')")
        image.sections["sys_drv"] = chk.section("sys_drv", base, sys_size, "psp v1 sos.offset_bytes")
        image.sections["sos"] = chk.section("sos", base + v10.sos.offset_bytes, sos_size,
                                            "psp v1 sos", version=v10.sos.fw_version)
        # psp_init_sos_microcode: v1.1/v1.2/v1.3 blobs are relative to the payload's start.
        extra = {1: ("toc", "kdb"), 2: ("kdb",), 3: ("toc", "kdb", "spl", "rl")}.get(minor, ())
        for nm in extra:
            d = getattr(h.v1_1, nm) if minor == 3 and nm in ("toc", "kdb") else getattr(h, nm)
            image.sections[nm] = chk.section(nm, base + d.offset_bytes, d.size_bytes, f"psp v1.{minor} {nm}",
                                             version=d.fw_version)
        if minor == 3:
            for nm, d in (("sys_drv", h.sys_drv_aux), ("sos", h.sos_aux)):
                image.aux_sections[nm] = chk.section(nm, base + d.offset_bytes, d.size_bytes,
                                                     f"psp v1.3 {nm}_aux", version=d.fw_version)
        return
    # Packed descriptors (v2.0/v2.1): psp_init_sos_microcode, parse_sos_bin_descriptor.
    count = h.psp_fw_bin_count
    if count >= U.UCODE_MAX_PSP_PACKAGING:
        raise chk.fail(f"psp_fw_bin_count {count} is not below UCODE_MAX_PSP_PACKAGING "
                       f"({U.UCODE_MAX_PSP_PACKAGING}) ('packed SOS count exceeds maximum limit')")
    table = ctypes.sizeof(type(h))
    descs = _descs(image, chk, table, count, "psp_fw_bin")
    primary, aux = range(count), range(0)
    if minor == 1:
        aux_index = h.psp_aux_fw_bin_index
        if aux_index > count:
            raise chk.fail(f"psp_aux_fw_bin_index {aux_index} is past psp_fw_bin_count {count}")
        # psp_init_sos_microcode: without an aux load the kernel parses entries [0, count - aux_index).
        primary, aux = range(count - aux_index), range(aux_index, count)
    for indices, into in ((primary, image.sections), (aux, image.aux_sections)):
        for i in indices:
            d = descs[i]
            nm = PSP_FW_TYPES.get(d.fw_type, f"fw_type_{d.fw_type}")
            into[nm] = chk.section(nm, base + d.offset_bytes, d.size_bytes, f"psp_fw_bin[{i}]",
                                   version=d.fw_version, fw_type=d.fw_type)


def _descs(image: FirmwareImage, chk: _Checker, start: int, count: int, what: str) -> list:
    end = start + count * DESC_SIZE
    if end > len(image.data):
        raise chk.fail(f"the {what} table ({count} entries from offset {start}) runs past the end of the "
                       f"{len(image.data)}-byte file")
    return [U.struct_psp_fw_bin_desc.from_buffer_copy(image.data, start + i * DESC_SIZE) for i in range(count)]


def _psp_ta(image: FirmwareImage, h, chk: _Checker) -> None:
    base = image.common.ucode_array_offset_bytes
    if image.header_version[0] == 1:
        # amdgpu_psp.c parse_ta_v1_microcode: ras follows xgmi's start, dtm and securedisplay follow hdcp's.
        image.sections["xgmi"] = chk.section("xgmi", base, h.xgmi.size_bytes, "ta v1 xgmi", version=h.xgmi.fw_version)
        image.sections["ras"] = chk.section("ras", base + h.ras.offset_bytes, h.ras.size_bytes, "ta v1 ras",
                                            version=h.ras.fw_version)
        image.sections["hdcp"] = chk.section("hdcp", base, h.hdcp.size_bytes, "ta v1 hdcp", version=h.hdcp.fw_version)
        for nm in ("dtm", "securedisplay"):
            d = getattr(h, nm)
            image.sections[nm] = chk.section(nm, base + d.offset_bytes, d.size_bytes, f"ta v1 {nm}",
                                             version=d.fw_version)
        return
    count = h.ta_fw_bin_count
    if count >= U.UCODE_MAX_PSP_PACKAGING:  # parse_ta_v2_microcode
        raise chk.fail(f"ta_fw_bin_count {count} is not below UCODE_MAX_PSP_PACKAGING "
                       f"({U.UCODE_MAX_PSP_PACKAGING}) ('packed TA count exceeds maximum limit')")
    for i, d in enumerate(_descs(image, chk, ctypes.sizeof(type(h)), count, "ta_fw_bin")):
        nm = TA_FW_TYPES.get(d.fw_type, f"fw_type_{d.fw_type}")
        image.sections[nm] = chk.section(nm, base + d.offset_bytes, d.size_bytes, f"ta_fw_bin[{i}]",
                                         version=d.fw_version, fw_type=d.fw_type)


def _psp_toc(image: FirmwareImage, h, chk: _Checker) -> None:
    image.feature_version = h.sos.fw_version  # psp_init_toc_microcode
    _common_ucode(image, chk)


def _smc(image: FirmwareImage, h, chk: _Checker) -> None:
    _common_ucode(image, chk)  # amdgpu_ucode_init_single_fw default: the SMC ucode is the common payload
    major, minor = image.header_version
    # smu_v13_0.c smu_v13_0_set_pptable_v2_0/_v2_1: pptable offsets are from the start of the file.
    if (major, minor) == (2, 0):
        image.sections["pptable"] = chk.section("pptable", h.ppt_offset_bytes, h.ppt_size_bytes, "smc v2.0 pptable")
    elif (major, minor) == (2, 1):
        size = ctypes.sizeof(U.struct_smc_soft_pptable_entry)
        start, count = h.pptable_entry_offset, h.pptable_count
        if start + count * size > len(image.data):
            raise chk.fail(f"the pptable entry table ({count} entries at offset {start}) runs past the end of "
                           f"the {len(image.data)}-byte file")
        for i in range(count):
            e = U.struct_smc_soft_pptable_entry.from_buffer_copy(image.data, start + i * size)
            nm = f"pptable_{e.id}"
            image.sections[nm] = chk.section(nm, e.ppt_offset_bytes, e.ppt_size_bytes, f"smc v2.1 pptable[{i}]")


def _gfx(image: FirmwareImage, h, chk: _Checker) -> None:
    c = image.common
    image.feature_version = h.ucode_feature_version
    if image.header_version == (2, 0):
        # amdgpu_ucode_init_single_fw CP_RS64_*: ucode at the payload start with the v2 size, stacks at data_offset.
        image.sections["ucode"] = chk.section("ucode", c.ucode_array_offset_bytes, h.ucode_size_bytes,
                                              "gfx v2 ucode_size_bytes")
        image.sections["data"] = chk.section("data", h.data_offset_bytes, h.data_size_bytes,
                                             "gfx v2 data_offset_bytes/data_size_bytes")
        image.start_addrs["ucode"] = h.ucode_start_addr_lo | (h.ucode_start_addr_hi << 32)
        return
    # v1: CP_MEC1 is the payload less the jump table, CP_MEC1_JT is jt_size dwords at jt_offset dwords.
    jt = h.jt_size * 4
    if jt > c.ucode_size_bytes or h.jt_offset * 4 + jt > c.ucode_size_bytes:
        raise chk.fail(f"the jump table (jt_offset {h.jt_offset}, jt_size {h.jt_size} dwords) does not lie inside "
                       f"the {c.ucode_size_bytes}-byte ucode")
    image.sections["ucode"] = chk.section("ucode", c.ucode_array_offset_bytes, c.ucode_size_bytes - jt, "gfx v1 ucode")
    image.sections["jt"] = chk.section("jt", c.ucode_array_offset_bytes + h.jt_offset * 4, jt, "gfx v1 jt")


def _rlc_part(h, minor: int, want: int):
    """The v2.`want` part of a v2.`minor` RLC header (each version embeds the previous one as its first field)."""
    while minor > want:
        h, minor = getattr(h, f"v2_{minor - 1}"), minor - 1
    return h


def _rlc(image: FirmwareImage, h, chk: _Checker) -> None:
    minor = image.header_version[1]
    # amdgpu_rlc.c amdgpu_gfx_rlc_init_microcode_v2_*: every RLC offset is from the start of the file.
    v20 = _rlc_part(h, minor, 0)
    image.feature_version = v20.ucode_feature_version
    _common_ucode(image, chk)  # RLC_G
    image.sections["reg_list_format"] = chk.section("reg_list_format", v20.reg_list_format_array_offset_bytes,
                                                    v20.reg_list_format_size_bytes, "rlc v2.0 reg_list_format")
    image.sections["reg_list"] = chk.section("reg_list", v20.reg_list_array_offset_bytes, v20.reg_list_size_bytes,
                                             "rlc v2.0 reg_list")
    if minor >= 1:
        v21 = _rlc_part(h, minor, 1)
        for nm, key in (("restore_list_cntl", "cntl"), ("restore_list_gpm", "gpm"), ("restore_list_srm", "srm")):
            image.sections[nm] = chk.section(nm, getattr(v21, f"save_restore_list_{key}_offset_bytes"),
                                             getattr(v21, f"save_restore_list_{key}_size_bytes"), f"rlc v2.1 {nm}",
                                             version=getattr(v21, f"save_restore_list_{key}_ucode_ver"))
    if minor >= 2:
        v22 = _rlc_part(h, minor, 2)
        image.sections["iram"] = chk.section("iram", v22.rlc_iram_ucode_offset_bytes, v22.rlc_iram_ucode_size_bytes,
                                             "rlc v2.2 iram")
        image.sections["dram"] = chk.section("dram", v22.rlc_dram_ucode_offset_bytes, v22.rlc_dram_ucode_size_bytes,
                                             "rlc v2.2 dram")
    if minor >= 3:
        # The kernel (6.12) takes RLC_P/RLC_V only from exactly-v2.3 headers; a v2.4 header carries them too.
        v23 = _rlc_part(h, minor, 3)
        for nm in ("rlcp", "rlcv"):
            image.sections[nm] = chk.section(nm, getattr(v23, f"{nm}_ucode_offset_bytes"),
                                             getattr(v23, f"{nm}_ucode_size_bytes"), f"rlc v2.3 {nm}",
                                             version=getattr(v23, f"{nm}_ucode_version"))
    if minor >= 4:
        for nm in ("global", "se0", "se1", "se2", "se3"):
            image.sections[f"{nm}_tap_delays"] = chk.section(
                f"{nm}_tap_delays", getattr(h, f"{nm}_tap_delays_ucode_offset_bytes"),
                getattr(h, f"{nm}_tap_delays_ucode_size_bytes"), f"rlc v2.4 {nm}_tap_delays")


def _sdma(image: FirmwareImage, h, chk: _Checker) -> None:
    c = image.common
    major = image.header_version[0]
    if major == 1:
        image.feature_version = (h if image.header_version[1] == 0 else h.v1_0).ucode_feature_version
        _common_ucode(image, chk)
    elif major == 2:
        # amdgpu_ucode_init_single_fw SDMA_UCODE_TH0 (ctx) at the payload start, TH1 (ctl) at ctl_ucode_offset.
        image.feature_version = h.ucode_feature_version
        image.sections["ctx"] = chk.section("ctx", c.ucode_array_offset_bytes, h.ctx_ucode_size_bytes, "sdma v2 ctx")
        image.sections["ctl"] = chk.section("ctl", h.ctl_ucode_offset, h.ctl_ucode_size_bytes, "sdma v2 ctl")
    else:
        # SDMA_RS64: the payload start with the v3 size.
        image.feature_version = h.ucode_feature_version
        image.sections["ucode"] = chk.section("ucode", c.ucode_array_offset_bytes, h.ucode_size_bytes, "sdma v3 ucode")


def _mes(image: FirmwareImage, h, chk: _Checker) -> None:
    # amdgpu_ucode_init_single_fw CP_MES/CP_MES_DATA: offsets from the start of the file.
    image.sections["ucode"] = chk.section("ucode", h.mes_ucode_offset_bytes, h.mes_ucode_size_bytes, "mes ucode",
                                          version=h.mes_ucode_version)
    image.sections["data"] = chk.section("data", h.mes_ucode_data_offset_bytes, h.mes_ucode_data_size_bytes,
                                         "mes data", version=h.mes_ucode_data_version)
    image.start_addrs["ucode"] = h.mes_uc_start_addr_lo | (h.mes_uc_start_addr_hi << 32)
    image.start_addrs["data"] = h.mes_data_start_addr_lo | (h.mes_data_start_addr_hi << 32)


def _imu(image: FirmwareImage, h, chk: _Checker) -> None:
    # amdgpu_ucode_init_single_fw IMU_I/IMU_D: IRAM at the payload start, DRAM right after it (the header's own
    # *_offset_bytes fields are not used by the kernel).
    base = image.common.ucode_array_offset_bytes
    image.sections["iram"] = chk.section("iram", base, h.imu_iram_ucode_size_bytes, "imu iram")
    image.sections["dram"] = chk.section("dram", base + h.imu_iram_ucode_size_bytes, h.imu_dram_ucode_size_bytes,
                                         "imu dram")


_PARSERS = {"psp_sos": _psp_sos, "psp_ta": _psp_ta, "psp_toc": _psp_toc, "smc": _smc, "gfx": _gfx, "rlc": _rlc,
            "sdma": _sdma, "mes": _mes, "imu": _imu}

__all__ = ["COMMON_SIZE", "CommonHeader", "FirmwareError", "FirmwareImage", "FirmwareSetError", "KINDS", "LAYOUTS",
           "PACKAGE_HINT", "PSP_FW_TYPES", "Section", "TA_FW_TYPES", "kind_for_name", "parse"]
