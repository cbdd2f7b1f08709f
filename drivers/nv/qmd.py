"""NVIDIA compute QMDs (queue meta data, the launch descriptor SEND_PCAS points at): a builder and a decoder.

Layouts are the generated bit positions in autogen.nv_qmd (autogen/include/nv/qmd.h, from open-gpu-doc):
  V03_00: Ampere and Ada (AMPERE_COMPUTE_A/B, ADA_COMPUTE_A; clc6c0qmd.h), 256 bytes;
  V04_00: Hopper (HOPPER_COMPUTE_A; clcbc0qmd.h), 384 bytes;
  V05_00: Blackwell (BLACKWELL_COMPUTE_A; clcdc0qmd.h), 384 bytes.
(Hopper's QMD is V04_00 in our tables, not V05_00.) A QMD's size is where its last field ends.

Fields are given by upstream name in lowercase (e.g. cta_thread_dimension0, indexed ones as "name[i]"), or by
these version-independent names, translated per version:
  grid=(x, y, z), block=(x, y, z), shared_memory_size (bytes), register_count, barrier_count,
  program_address, cbuf0_address, cbuf0_size (constant bank 0: the kernel parameters; marks it valid),
  local_memory_low_size, local_memory_high_size (bytes per thread), release_address, release_payload (semaphore 0,
  64-bit payload, one-word structure, enabled).
Values a version stores shifted (SHIFTED4/6/7 fields) are given in bytes and must be aligned accordingly.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from autogen import nv_qmd as Q


class QMDError(ValueError):
    """A QMD cannot be built from these values; the message names the version and the field."""


PREFIX = {"V03_00": "NVC6C0_QMDV03_00_", "V04_00": "NVCBC0_QMDV04_00_", "V05_00": "NVCDC0_QMDV05_00_"}
MAJOR = {"V03_00": 3, "V04_00": 4, "V05_00": 5}
# Entries of each indexed field the layout holds (read off the headers: the next field starts after these).
INDEX_COUNT = {"CONSTANT_BUFFER": 8, "RELEASE": 3, "DEPENDENT_QMD": 2, "TPC_DISABLE_MASK": 0}


@dataclass(frozen=True)
class Field:
    name: str
    shift: int
    width: int

    @property
    def max(self) -> int:
        return (1 << self.width) - 1


@lru_cache(maxsize=None)
def layout(version: str) -> dict[str, Field]:
    """Every field of a QMD version by lowercase name (reserved fields left out)."""
    if version not in PREFIX:
        raise QMDError(f"QMD version {version!r} is not one of {list(PREFIX)}")
    p = PREFIX[version]
    out: dict[str, Field] = {}
    for n in dir(Q):
        if not (n.startswith(p) and n.endswith("_SHIFT")):
            continue
        base = n[len(p):-len("_SHIFT")]
        width = getattr(Q, f"{p}{base}_WIDTH", None)
        if width is None or "RESERVED" in base:
            continue
        shift = getattr(Q, n)
        if callable(shift):
            stem = next((s for s in INDEX_COUNT if base.startswith(s)), None)
            if stem is None:
                continue
            for i in range(INDEX_COUNT[stem]):
                out[f"{base.lower()}[{i}]"] = Field(f"{base.lower()}[{i}]", shift(i), width)
        else:
            out[base.lower()] = Field(base.lower(), shift, width)
    return out


def size(version: str) -> int:
    """The QMD's size in bytes: where its last field ends, rounded up to a 32-bit word."""
    end = max(f.shift + f.width for f in layout(version).values())
    return (end + 31) // 32 * 4


# version-independent names -> (upstream field, how many low bits the field drops) per version
def _aliases(version: str) -> dict[str, list[tuple[str, int]]]:
    v3, v5 = version == "V03_00", version == "V05_00"
    grid = ("cta_raster_width", "cta_raster_height", "cta_raster_depth") if v3 else \
        ("grid_width", "grid_height", "grid_depth")
    if v3:
        prog, cb_lo, cb_hi, cb_shift = ("program_address_lower", "program_address_upper", 0), \
            "constant_buffer_addr_lower[0]", "constant_buffer_addr_upper[0]", 0
    else:
        prog = ("program_address_lower_shifted4", "program_address_upper_shifted4", 4) if v5 else \
            ("program_address_lower", "program_address_upper", 0)
        cb_lo, cb_hi, cb_shift = ("constant_buffer_addr_lower_shifted6[0]", "constant_buffer_addr_upper_shifted6[0]",
                                  6)
    rel = ("release0_address_lower", "release0_address_upper", "release0_payload_lower", "release0_payload_upper") \
        if v3 else ("release_semaphore0_addr_lower", "release_semaphore0_addr_upper",
                    "release_semaphore0_payload_lower", "release_semaphore0_payload_upper")
    return {
        "grid": [(g, 0) for g in grid],
        "block": [(f"cta_thread_dimension{i}", 0) for i in range(3)],
        "shared_memory_size": [("shared_memory_size_shifted7", 7) if v5 else ("shared_memory_size", 0)],
        "register_count": [("register_count_v" if v3 else "register_count", 0)],
        "barrier_count": [("barrier_count", 0)],
        "program_address": [prog],
        "cbuf0_address": [(cb_lo, cb_hi, cb_shift)],
        "cbuf0_size": [("constant_buffer_size_shifted4[0]", 4)],
        "local_memory_low_size": [("shader_local_memory_low_size_shifted4", 4) if v5
                                  else ("shader_local_memory_low_size", 0)],
        "local_memory_high_size": [("shader_local_memory_high_size_shifted4", 4) if v5
                                   else ("shader_local_memory_high_size", 0)],
        "release_address": [(rel[0], rel[1], 0)],
        "release_payload": [(rel[2], rel[3], 0)],
    }


def _release_flags(version: str) -> dict[str, int]:
    p = PREFIX[version]
    if version == "V03_00":
        return {"release0_enable": 1, "release0_payload64b": 1,
                "release0_structure_size": getattr(Q, p + "RELEASE0_STRUCTURE_SIZE_SEMAPHORE_ONE_WORD")}
    return {"release_enable[0]": 1, "release_payload64b[0]": 1,
            "release_structure_size[0]": getattr(Q, p + "RELEASE_STRUCTURE_SIZE_SEMAPHORE_ONE_WORD")}


def _expand(version: str, name: str, value) -> dict[str, int]:
    """Upstream field values for one version-independent field."""
    spec = _aliases(version)[name]
    out: dict[str, int] = {}
    if name in ("grid", "block"):
        if not isinstance(value, (tuple, list)) or len(value) != 3:
            raise QMDError(f"QMD {version}: {name} must be (x, y, z), got {value!r}")
        for (f, _), v in zip(spec, value):
            out[f] = v
        return out
    (entry,) = spec
    if len(entry) == 3:  # a 64-bit value split into lower/upper fields, optionally shifted
        lo, hi, shift = entry
        if value < 0 or value % (1 << shift):
            raise QMDError(f"QMD {version}: {name}={value:#x} must be a non-negative multiple of {1 << shift}")
        v = value >> shift
        out[lo], out[hi] = v & 0xFFFFFFFF, v >> 32
    else:
        f, shift = entry
        if value < 0 or value % (1 << shift):
            raise QMDError(f"QMD {version}: {name}={value:#x} must be a non-negative multiple of {1 << shift}")
        out[f] = value >> shift
    if name == "cbuf0_address":
        out["constant_buffer_valid[0]"] = 1
    if name == "release_address":
        out.update(_release_flags(version))
    return out


def encode_qmd(version: str, **fields) -> bytes:
    """A QMD of `version` with the given fields (see the module docstring); every other bit is 0 except the
    version fields."""
    lay = layout(version)
    aliases = _aliases(version)
    major = "qmd_major_version"
    minor = "qmd_version" if version == "V03_00" else "qmd_minor_version"
    values: dict[str, int] = {major: MAJOR[version], minor: 0}
    for name, value in fields.items():
        if name in aliases:
            expanded = _expand(version, name, value)
        elif name in lay:
            expanded = {name: value}
        else:
            raise QMDError(f"QMD {version} has no field {name!r}")
        for f, v in expanded.items():
            if f in values and values[f] != v and f not in (major, minor):
                raise QMDError(f"QMD {version}: field {f} is set twice ({values[f]:#x} and {v:#x}) via {name}")
            values[f] = v
    word = 0
    for f, v in values.items():
        fld = lay[f]
        if not isinstance(v, int) or not 0 <= v <= fld.max:
            raise QMDError(f"QMD {version}: {f}={v!r} does not fit its {fld.width}-bit field")
        word |= v << fld.shift
    return word.to_bytes(size(version), "little")


def decode_qmd(version: str, raw: bytes) -> dict:
    """Every field of a QMD by upstream lowercase name, plus the version-independent names (module docstring)."""
    lay = layout(version)
    if len(raw) != size(version):
        raise QMDError(f"QMD {version} is {size(version)} bytes, got {len(raw)}")
    word = int.from_bytes(raw, "little")
    out: dict = {f.name: (word >> f.shift) & f.max for f in lay.values()}
    for name, spec in _aliases(version).items():
        if name in ("grid", "block"):
            out[name] = tuple(out[f] for f, _ in spec)
            continue
        (entry,) = spec
        if len(entry) == 3:
            lo, hi, shift = entry
            out[name] = (out[hi] << 32 | out[lo]) << shift
        else:
            f, shift = entry
            out[name] = out[f] << shift
    return out
