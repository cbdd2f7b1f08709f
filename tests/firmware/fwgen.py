"""Generate amdgpu firmware images with valid and broken headers, for tests (real firmware is not redistributable
through our registries, and tests never download anything).

Stable API (emu/am and driver tests use it; extend, don't change):
- `build(kind, version=None, *, ip=(11, 0), ucode_version=0x1000, feature_version=7, blobs=None, aux_blobs=None,
  seed=0, crc=True) -> GeneratedImage`: a valid image of one kind (KINDS) and header version (VERSIONS[kind]; the
  default is DEFAULT_VERSION[kind]). `blobs` maps section names (as firmware.ucode names them: "sos", "sys_drv",
  "ucode", "data", "jt", "iram", "ctx", "ctl", "pptable", "pptable_<id>", ...) to bytes; by default
  `default_blobs(kind, version, seed)` gives small deterministic ones. `GeneratedImage.blobs` is what each section
  must read back as. `aux_blobs` fills a PSP v2.1 image's aux set (v1.3: keys "sys_drv" and "sos").
- `image(kind, ...) -> bytes`: build(...).data.
- Breakers, each returning new bytes: `truncate(data, n)`, `set_common(data, field, value)`,
  `set_field(data, kind, field, value)` (any per-kind header field by name, nested parts found by themselves),
  `set_desc(data, index, field, value)` (a PSP/TA v2 packed descriptor), `flip_payload(data)` (one payload byte
  changed, CRC left stale), `fix_size(data)`, `fix_crc(data)`.
- `compress(data, "xz" | "zst") -> bytes`; `zst_writer()` says how .zst is made here (None: it can't be).
- `write_set(directory, chip_or_ips, *, compress=None, overrides=None, skip=(), **request_options) -> dict`: a
  complete valid set for a chip in firmware.select.KNOWN_CHIPS (or an IP-version mapping), written under the
  kernel's names; `overrides` maps a file name to the bytes to write instead, `skip` leaves names out. Returns
  {file name: GeneratedImage (or the override bytes)}.

Layouts and field names come from autogen/amdgpu_ucode.py (amdgpu_ucode.h), never from firmware/ (the code under
test); where sections lie follows the kernel as described in firmware/ucode.py's sources.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import lzma
import shutil
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

from autogen import amdgpu_ucode as U

COMMON = U.struct_common_firmware_header
COMMON_SIZE = ctypes.sizeof(COMMON)
DESC = U.struct_psp_fw_bin_desc
ALIGN = 256  # blobs start on 256-byte boundaries (any alignment is valid; this keeps offsets readable in dumps)

VERSIONS: dict[str, dict[tuple[int, int], type]] = {
    "psp_sos": {(1, 0): U.struct_psp_firmware_header_v1_0, (1, 1): U.struct_psp_firmware_header_v1_1,
                (1, 2): U.struct_psp_firmware_header_v1_2, (1, 3): U.struct_psp_firmware_header_v1_3,
                (2, 0): U.struct_psp_firmware_header_v2_0, (2, 1): U.struct_psp_firmware_header_v2_1},
    "psp_ta": {(1, 0): U.struct_ta_firmware_header_v1_0, (2, 0): U.struct_ta_firmware_header_v2_0},
    "psp_toc": {(1, 0): U.struct_psp_firmware_header_v1_0},
    "smc": {(1, 0): U.struct_smc_firmware_header_v1_0, (2, 0): U.struct_smc_firmware_header_v2_0,
            (2, 1): U.struct_smc_firmware_header_v2_1},
    "gfx": {(1, 0): U.struct_gfx_firmware_header_v1_0, (2, 0): U.struct_gfx_firmware_header_v2_0},
    "rlc": {(2, m): getattr(U, f"struct_rlc_firmware_header_v2_{m}") for m in range(5)},
    "sdma": {(1, 0): U.struct_sdma_firmware_header_v1_0, (1, 1): U.struct_sdma_firmware_header_v1_1,
             (2, 0): U.struct_sdma_firmware_header_v2_0, (3, 0): U.struct_sdma_firmware_header_v3_0},
    "mes": {(1, 0): U.struct_mes_firmware_header_v1_0},
    "imu": {(1, 0): U.struct_imu_firmware_header_v1_0},
    "common": {(1, 0): COMMON},
}
KINDS = tuple(VERSIONS)
DEFAULT_VERSION = {"psp_sos": (2, 0), "psp_ta": (2, 0), "psp_toc": (1, 0), "smc": (2, 0), "gfx": (2, 0),
                   "rlc": (2, 3), "sdma": (2, 0), "mes": (1, 0), "imu": (1, 0), "common": (1, 0)}

PSP_TYPES = {"sos": U.PSP_FW_TYPE_PSP_SOS, "sys_drv": U.PSP_FW_TYPE_PSP_SYS_DRV, "kdb": U.PSP_FW_TYPE_PSP_KDB,
             "toc": U.PSP_FW_TYPE_PSP_TOC, "spl": U.PSP_FW_TYPE_PSP_SPL, "rl": U.PSP_FW_TYPE_PSP_RL,
             "soc_drv": U.PSP_FW_TYPE_PSP_SOC_DRV, "intf_drv": U.PSP_FW_TYPE_PSP_INTF_DRV,
             "dbg_drv": U.PSP_FW_TYPE_PSP_DBG_DRV, "ras_drv": U.PSP_FW_TYPE_PSP_RAS_DRV,
             "ipkeymgr_drv": U.PSP_FW_TYPE_PSP_IPKEYMGR_DRV}
TA_TYPES = {"asd": U.TA_FW_TYPE_PSP_ASD, "xgmi": U.TA_FW_TYPE_PSP_XGMI, "ras": U.TA_FW_TYPE_PSP_RAS,
            "hdcp": U.TA_FW_TYPE_PSP_HDCP, "dtm": U.TA_FW_TYPE_PSP_DTM, "rap": U.TA_FW_TYPE_PSP_RAP,
            "securedisplay": U.TA_FW_TYPE_PSP_SECUREDISPLAY}


@dataclass
class GeneratedImage:
    """A generated image: its bytes, and what each section must read back as."""
    kind: str
    version: tuple[int, int]
    data: bytes
    blobs: dict[str, bytes]
    aux_blobs: dict[str, bytes] = field(default_factory=dict)


def _bytes(label: str, size: int, seed: int) -> bytes:
    """`size` deterministic pseudo-random bytes for one blob."""
    out, counter = b"", 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{label}:{counter}".encode()).digest()
        counter += 1
    return out[:size]


def default_blobs(kind: str, version: tuple[int, int], seed: int = 0) -> dict[str, bytes]:
    """Small deterministic blobs for every section the kind/version has (sizes differ, multiples of 4)."""
    major, minor = version
    if kind == "psp_sos":
        if major == 2:
            names = ["sos", "sys_drv", "kdb", "toc", "spl", "soc_drv", "intf_drv", "dbg_drv", "ras_drv"]
        else:
            names = ["sys_drv", "sos"] + {0: [], 1: ["toc", "kdb"], 2: ["kdb"], 3: ["toc", "kdb", "spl", "rl"]}[minor]
    elif kind == "psp_ta":
        names = ["asd", "xgmi", "ras", "hdcp", "dtm", "securedisplay"] if major == 2 else \
            ["xgmi", "ras", "dtm", "securedisplay"]
    elif kind == "smc":
        names = ["ucode"] + {(1, 0): [], (2, 0): ["pptable"], (2, 1): ["pptable_1", "pptable_3"]}[version]
    elif kind == "gfx":
        names = ["ucode", "data"] if major == 2 else ["ucode", "jt"]
    elif kind == "rlc":
        names = ["ucode", "reg_list_format", "reg_list"]
        names += ["restore_list_cntl", "restore_list_gpm", "restore_list_srm"] if minor >= 1 else []
        names += ["iram", "dram"] if minor >= 2 else []
        names += ["rlcp", "rlcv"] if minor >= 3 else []
        names += [f"{n}_tap_delays" for n in ("global", "se0", "se1", "se2", "se3")] if minor >= 4 else []
    elif kind == "sdma":
        names = ["ctx", "ctl"] if major == 2 else ["ucode"]
    elif kind in ("mes",):
        names = ["ucode", "data"]
    elif kind == "imu":
        names = ["iram", "dram"]
    else:
        names = ["ucode"]
    return {n: _bytes(f"{kind}:{n}", 64 + 36 * i, seed) for i, n in enumerate(names)}


def _node(struct: ctypes.Structure, name: str) -> ctypes.Structure:
    """The (possibly nested, first-field) part of a header that has field `name`."""
    node = struct
    while True:
        if any(f[0] == name for f in node._fields_):
            return node
        first_name, first_type = node._fields_[0][0], node._fields_[0][1]
        if not (isinstance(first_type, type) and issubclass(first_type, ctypes.Structure)) or first_type is COMMON:
            raise KeyError(f"{type(struct).__name__} has no field {name!r}")
        node = getattr(node, first_name)


def _set(struct: ctypes.Structure, name: str, value: int) -> None:
    setattr(_node(struct, name), name, value)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class _Layout:
    """Appends blobs after the header, each aligned, and remembers where they went."""

    def __init__(self, header_size: int):
        self.buf = bytearray(_align(header_size))

    def put(self, blob: bytes) -> int:
        self.buf += bytes(_align(len(self.buf)) - len(self.buf))
        offset = len(self.buf)
        self.buf += blob
        return offset


def build(kind: str, version: Optional[tuple[int, int]] = None, *, ip: tuple[int, int] = (11, 0),
          ucode_version: int = 0x1000, feature_version: int = 7, blobs: Optional[Mapping[str, bytes]] = None,
          aux_blobs: Optional[Mapping[str, bytes]] = None, seed: int = 0, crc: bool = True) -> GeneratedImage:
    """A valid image (see the module docstring)."""
    version = tuple(version or DEFAULT_VERSION[kind])  # type: ignore[assignment]
    struct_type = VERSIONS[kind][version]
    blobs = dict(blobs) if blobs is not None else default_blobs(kind, version, seed)
    aux = dict(aux_blobs or {})
    for b in list(blobs.values()) + list(aux.values()):
        if len(b) % 4:
            raise ValueError("fwgen blobs must be a multiple of 4 bytes (the kernel counts some sizes in dwords)")
    h = struct_type()
    descs: list[tuple[str, int, bytes]] = []  # (name, fw_type, blob) for packed tables
    if kind == "psp_sos" and version[0] == 2:
        descs = [(n, PSP_TYPES[n], b) for n, b in blobs.items()] + [(n, PSP_TYPES[n], b) for n, b in aux.items()]
    elif kind == "psp_ta" and version[0] == 2:
        descs = [(n, TA_TYPES[n], b) for n, b in blobs.items()]
    lay = _Layout(ctypes.sizeof(struct_type) + len(descs) * ctypes.sizeof(DESC))
    put = lay.put
    payload_start: Optional[int] = None
    payload_end: Optional[int] = None

    def region(names: list[str], source: Optional[Mapping[str, bytes]] = None) -> tuple[int, int, dict[str, int]]:
        """Lay `names` out contiguously (no padding between them): (start, end, offset of each)."""
        source = blobs if source is None else source
        start = put(b"")
        offs = {}
        for n in names:
            offs[n] = len(lay.buf)
            lay.buf += source.get(n, b"")
        return start, len(lay.buf), offs

    if kind == "psp_sos" and version[0] == 1:
        # psp_init_sos_base_fw: sys_drv starts the payload and SOS lies sos.offset_bytes into it.
        every = {**blobs, **{f"aux:{n}": b for n, b in aux.items()}}
        names = ["sys_drv", "sos"] + [n for n in every if n not in ("sys_drv", "sos")]
        payload_start, payload_end, offs = region(names, every)
        h_v10 = _node(h, "sos")
        h_v10.sos.fw_version = feature_version
        h_v10.sos.offset_bytes = offs["sos"] - payload_start
        h_v10.sos.size_bytes = len(blobs["sos"])
        for n in blobs:
            if n in ("sys_drv", "sos"):
                continue
            d = getattr(_node(h, n), n)
            d.offset_bytes, d.size_bytes, d.fw_version = offs[n] - payload_start, len(blobs[n]), ucode_version
        for n, attr in (("sys_drv", "sys_drv_aux"), ("sos", "sos_aux")):
            if n in aux:
                d = getattr(h, attr)
                d.offset_bytes, d.size_bytes, d.fw_version = offs[f"aux:{n}"] - payload_start, len(aux[n]), 1
    elif descs:
        payload_start = put(b"")
        table = ctypes.sizeof(struct_type)
        entries = []
        for n, t, b in descs:
            off = put(b)
            entries.append(DESC(fw_type=t, fw_version=ucode_version, offset_bytes=off - payload_start,
                                size_bytes=len(b)))
        payload_end = len(lay.buf)
        for i, e in enumerate(entries):
            lay.buf[table + i * ctypes.sizeof(DESC):table + (i + 1) * ctypes.sizeof(DESC)] = bytes(e)
        if kind == "psp_sos":
            h.psp_fw_bin_count = len(entries)
            if version == (2, 1):  # psp_init_sos_microcode: primary [0, count - aux_index), aux [aux_index, count)
                h.psp_aux_fw_bin_index = len(aux)
                if aux and len(aux) != len(blobs):
                    raise ValueError("fwgen: a v2.1 SOS image with aux blobs needs as many aux blobs as primary ones")
        else:
            h.ta_fw_bin_count = len(entries)
    elif kind == "psp_ta":
        # parse_ta_v1_microcode: xgmi and hdcp at the payload start, ras after xgmi, dtm/securedisplay after hdcp.
        payload_start, payload_end, offs = region(["xgmi", "ras", "dtm", "securedisplay"])
        for n in ("xgmi", "ras", "dtm", "securedisplay", "hdcp"):
            d = getattr(h, n)
            d.size_bytes = len(blobs.get(n, b""))
            d.offset_bytes = offs[n] - payload_start if n in offs else 0
            d.fw_version = ucode_version
        if blobs.get("hdcp"):
            raise ValueError("fwgen: a v1 TA image cannot hold hdcp apart from xgmi (both start at the payload)")
    elif kind == "gfx" and version == (1, 0):
        payload_start, payload_end, offs = region(["ucode", "jt"])
        h.ucode_feature_version = feature_version
        h.jt_offset = (offs["jt"] - payload_start) // 4
        h.jt_size = len(blobs["jt"]) // 4
    elif kind == "imu":
        payload_start, payload_end, offs = region(["iram", "dram"])
        h.imu_iram_ucode_size_bytes, h.imu_dram_ucode_size_bytes = len(blobs["iram"]), len(blobs["dram"])
        h.imu_iram_ucode_offset_bytes, h.imu_dram_ucode_offset_bytes = 0, len(blobs["iram"])
    elif kind == "mes":
        payload_start, payload_end, offs = region(["ucode", "data"])
        h.mes_ucode_version, h.mes_ucode_data_version = ucode_version, ucode_version + 1
        h.mes_ucode_offset_bytes, h.mes_ucode_size_bytes = offs["ucode"], len(blobs["ucode"])
        h.mes_ucode_data_offset_bytes, h.mes_ucode_data_size_bytes = offs["data"], len(blobs["data"])
        h.mes_uc_start_addr_lo, h.mes_uc_start_addr_hi = 0x10000, 0x1
        h.mes_data_start_addr_lo, h.mes_data_start_addr_hi = 0x20000, 0x1
    else:
        main = {"sdma": "ctx" if version[0] == 2 else "ucode"}.get(kind, "ucode")
        payload_start = put(blobs[main])
        payload_end = len(lay.buf)
        extra = {n: put(b) for n, b in blobs.items() if n != main}
        if kind == "gfx":
            h.ucode_feature_version = feature_version
            h.ucode_size_bytes, h.ucode_offset_bytes = len(blobs["ucode"]), payload_start
            h.data_offset_bytes, h.data_size_bytes = extra["data"], len(blobs["data"])
            h.ucode_start_addr_lo, h.ucode_start_addr_hi = 0x4000, 0
        elif kind == "sdma":
            _set(h, "ucode_feature_version", feature_version)
            if version[0] == 2:
                h.ctx_ucode_size_bytes = len(blobs["ctx"])
                h.ctl_ucode_offset, h.ctl_ucode_size_bytes = extra["ctl"], len(blobs["ctl"])
            elif version[0] == 3:
                h.ucode_offset_bytes, h.ucode_size_bytes = payload_start, len(blobs["ucode"])
        elif kind == "smc":
            if version == (2, 0):
                h.ppt_offset_bytes, h.ppt_size_bytes = extra["pptable"], len(blobs["pptable"])
            elif version == (2, 1):
                entries = [U.struct_smc_soft_pptable_entry(id=int(n.split("_")[1]), ppt_offset_bytes=extra[n],
                                                           ppt_size_bytes=len(blobs[n])) for n in extra]
                h.pptable_count = len(entries)
                h.pptable_entry_offset = put(b"".join(bytes(e) for e in entries))
        elif kind == "rlc":
            _set(h, "ucode_feature_version", feature_version)
            for n, off in extra.items():
                size = len(blobs[n])
                if n == "reg_list_format":
                    _set(h, "reg_list_format_array_offset_bytes", off)
                    _set(h, "reg_list_format_size_bytes", size)
                elif n == "reg_list":
                    _set(h, "reg_list_array_offset_bytes", off)
                    _set(h, "reg_list_size_bytes", size)
                elif n.startswith("restore_list_"):
                    key = n[len("restore_list_"):]
                    _set(h, f"save_restore_list_{key}_offset_bytes", off)
                    _set(h, f"save_restore_list_{key}_size_bytes", size)
                    _set(h, f"save_restore_list_{key}_ucode_ver", ucode_version)
                elif n in ("iram", "dram"):
                    _set(h, f"rlc_{n}_ucode_offset_bytes", off)
                    _set(h, f"rlc_{n}_ucode_size_bytes", size)
                elif n in ("rlcp", "rlcv"):
                    _set(h, f"{n}_ucode_offset_bytes", off)
                    _set(h, f"{n}_ucode_size_bytes", size)
                    _set(h, f"{n}_ucode_version", ucode_version)
                elif n.endswith("_tap_delays"):
                    _set(h, f"{n}_ucode_offset_bytes", off)
                    _set(h, f"{n}_ucode_size_bytes", size)
                else:
                    raise ValueError(f"fwgen: no rlc section {n!r}")
        elif kind == "psp_toc":
            h.sos.fw_version = feature_version
    # The per-kind header first (its common part is rewritten below), then the common header.
    lay.buf[:ctypes.sizeof(struct_type)] = bytes(h)
    c = COMMON.from_buffer(lay.buf)
    c.size_bytes = len(lay.buf)
    c.header_size_bytes = ctypes.sizeof(struct_type)
    c.header_version_major, c.header_version_minor = version
    c.ip_version_major, c.ip_version_minor = ip
    c.ucode_version = ucode_version
    c.ucode_array_offset_bytes = payload_start or 0
    c.ucode_size_bytes = (payload_end or 0) - (payload_start or 0)
    del c  # release the buffer export before bytes() copies it
    data = bytes(lay.buf)
    return GeneratedImage(kind, version, fix_crc(data) if crc else data, blobs, aux)  # type: ignore[arg-type]


def image(kind: str, version: Optional[tuple[int, int]] = None, **kw) -> bytes:
    """build(...).data."""
    return build(kind, version, **kw).data


def _common(data: bytes) -> ctypes.Structure:
    return COMMON.from_buffer_copy(data[:COMMON_SIZE])


def _payload(data: bytes) -> bytes:
    c = _common(data)
    return data[c.ucode_array_offset_bytes:c.ucode_array_offset_bytes + c.ucode_size_bytes]


def truncate(data: bytes, size: int) -> bytes:
    """The first `size` bytes (size_bytes left as it was: the file no longer matches it)."""
    return data[:size]


def set_common(data: bytes, name: str, value: int) -> bytes:
    """A copy with one common-header field changed (CRC not recomputed)."""
    buf = bytearray(data)
    c = COMMON.from_buffer(buf)
    setattr(c, name, value)
    del c
    return bytes(buf)


def set_field(data: bytes, kind: str, name: str, value: int) -> bytes:
    """A copy with one per-kind header field changed, for the header version the image says it has."""
    c = _common(data)
    struct_type = VERSIONS[kind][(c.header_version_major, c.header_version_minor)]
    buf = bytearray(data)
    h = struct_type.from_buffer(buf)
    node = _node(h, name.split(".")[0])
    parts = name.split(".")
    for p in parts[:-1]:
        node = getattr(node, p)
    setattr(node, parts[-1], value)
    del h, node
    return bytes(buf)


def set_desc(data: bytes, index: int, name: str, value: int) -> bytes:
    """A copy with one field of packed descriptor `index` (PSP SOS v2.x or TA v2.0) changed."""
    c = _common(data)
    version = (c.header_version_major, c.header_version_minor)
    table = {(2, 0): ctypes.sizeof(U.struct_psp_firmware_header_v2_0),
             (2, 1): ctypes.sizeof(U.struct_psp_firmware_header_v2_1)}[version]
    buf = bytearray(data)
    d = DESC.from_buffer(buf, table + index * ctypes.sizeof(DESC))
    setattr(d, name, value)
    del d
    return bytes(buf)


def flip_payload(data: bytes, at: int = 0) -> bytes:
    """A copy with payload byte `at` inverted and the header's crc32 left as it was (a bad CRC)."""
    c = _common(data)
    buf = bytearray(data)
    buf[c.ucode_array_offset_bytes + at] ^= 0xFF
    return bytes(buf)


def fix_size(data: bytes) -> bytes:
    """A copy whose size_bytes is the data's length."""
    return set_common(data, "size_bytes", len(data))


def fix_crc(data: bytes) -> bytes:
    """A copy whose crc32 is zlib's CRC-32 of the payload."""
    return set_common(data, "crc32", zlib.crc32(_payload(data)))


def zst_writer() -> Optional[str]:
    """How .zst files are written here: 'zstandard', the zstd command's path, or None."""
    if importlib.util.find_spec("zstandard") is not None:
        return "zstandard"
    return shutil.which("zstd")


def compress(data: bytes, fmt: str) -> bytes:
    """`data` as a .xz or .zst file's contents; RuntimeError naming what to install when .zst cannot be written."""
    if fmt == "xz":
        return lzma.compress(data, check=lzma.CHECK_CRC32)  # the kernel's xz loader wants CRC32 or none
    if fmt != "zst":
        raise ValueError(f"compress: {fmt!r} is not 'xz' or 'zst'")
    try:
        import zstandard
        return zstandard.ZstdCompressor().compress(data)
    except ImportError:
        tool = shutil.which("zstd")
        if tool is None:
            raise RuntimeError("no zstd writer: pip install zstandard or apt install zstd") from None
        return subprocess.run([tool, "-c", "-q"], input=data, capture_output=True, check=True, timeout=60).stdout


_compress = compress  # write_set's `compress` argument shadows the function inside it


def write_set(directory: Union[str, Path], chip_or_ips: Union[str, Mapping], *, compress: Optional[str] = None,
              overrides: Optional[Mapping[str, bytes]] = None, skip: tuple[str, ...] = (), seed: int = 0,
              **request_options) -> dict[str, Union[GeneratedImage, bytes]]:
    """Write a full valid firmware set (see the module docstring); returns {file name: what was written}."""
    from firmware.select import KNOWN_CHIPS, normalize, requests
    ips = normalize(KNOWN_CHIPS[chip_or_ips] if isinstance(chip_or_ips, str) else chip_or_ips)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Union[GeneratedImage, bytes]] = {}
    for req in requests(ips, **request_options):
        name = req.names[0]
        if name in skip:
            continue
        if overrides and name in overrides:
            out: Union[GeneratedImage, bytes] = overrides[name]
            blob = overrides[name]
        else:
            version = DEFAULT_VERSION[req.kind]
            if req.kind == "sdma" and ips["SDMA0"][0] >= 7:
                version = (3, 0)  # SDMA 7 is RS64 (amdgpu_sdma_init_microcode case 3)
            out = build(req.kind, version, ip=ips[req.block][:2], seed=seed + len(written))
            blob = out.data
        if compress:
            blob = _compress(blob, compress)
            name_on_disk = f"{name}.{compress}"
        else:
            name_on_disk = name
        (directory / name_on_disk).write_bytes(blob)
        written[name] = out
    return written


__all__ = ["ALIGN", "DEFAULT_VERSION", "GeneratedImage", "KINDS", "VERSIONS", "build", "compress", "default_blobs",
           "fix_crc", "fix_size", "flip_payload", "image", "set_common", "set_desc", "set_field", "truncate",
           "write_set", "zst_writer"]
