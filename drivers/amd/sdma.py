"""SDMA packets for SDMA 6 (gfx11) and SDMA 7 (gfx12): encoders and a decoder.

Both read sdma_v6_0_0_pkt_open.h (autogen.sdma_v6; amdgpu's sdma_v7_0.c includes the same header): its
SDMA_PKT_<PACKET>_<DWORD>_<field>_offset/_mask/_shift constants give every packet's layout, which `LAYOUTS`
collects. Encoders fill a packet by field name through it (checking each value against its field width);
the decoder reads every field the header names and adds the combined values (64-bit addresses, byte sizes).
A packet's length is its last field's dword + 1, so lengths follow from the op and sub-op in the header word.

Value names the header lacks are defined below with the public source of each.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from autogen import sdma_v6 as s

U32 = 0xFFFFFFFF


class SDMAError(ValueError):
    """A packet cannot be encoded from these values; the message names the packet and the field."""


class SDMADecodeError(ValueError):
    """A malformed SDMA stream; the message names the dword offset where decoding stopped."""


# --- layouts from the generated header ---

@dataclass(frozen=True)
class Field:
    """One field of an SDMA packet as the header defines it: dword offset, mask (unshifted) and shift."""
    name: str
    dword: int
    mask: int
    shift: int

    def get(self, words: Sequence[int]) -> int:
        """The field's value in a packet's words."""
        return (words[self.dword] >> self.shift) & self.mask


def _collect_layouts() -> dict[str, dict[str, Field]]:
    """Every SDMA_PKT_* packet's fields, keyed by packet name (COPY_LINEAR, FENCE, ...) and field name."""
    prefix, suffix = "SDMA_PKT_", "_offset"
    offsets = [n for n in dir(s) if n.startswith(prefix) and n.endswith(suffix)]
    # Packet names are what precedes _HEADER_op; the longest match wins (COPY_LINEAR vs COPY_LINEAR_SUBWIN).
    packets = sorted({n[len(prefix):-len("_HEADER_op" + suffix)] for n in offsets if n.endswith("_HEADER_op" + suffix)},
                     key=len, reverse=True)
    out: dict[str, dict[str, Field]] = {p: {} for p in packets}
    for n in offsets:
        stem = n[len(prefix):-len(suffix)]
        packet = next(p for p in packets if stem.startswith(p + "_"))
        m = re.fullmatch(r"([A-Z0-9_]+?)_([a-z][a-z0-9_]*)", stem[len(packet) + 1:])  # DWORD_NAME_field_name
        if m is None:
            raise RuntimeError(f"autogen.sdma_v6: cannot split {n} into packet, dword and field")
        base = n[:-len(suffix)]
        out[packet][m.group(2)] = Field(m.group(2), getattr(s, n), getattr(s, base + "_mask"),
                                        getattr(s, base + "_shift"))
    return out


LAYOUTS = _collect_layouts()


def length(packet: str) -> int:
    """Dwords in a fixed-length packet: its last field's dword + 1."""
    return 1 + max(f.dword for f in LAYOUTS[packet].values())


# Packets this module decodes, by the (op, sub_op) in their header word.
PACKETS: dict[tuple[int, int], str] = {
    (s.SDMA_OP_NOP, 0): "NOP",
    (s.SDMA_OP_COPY, s.SDMA_SUBOP_COPY_LINEAR): "COPY_LINEAR",
    (s.SDMA_OP_FENCE, 0): "FENCE",
    (s.SDMA_OP_TRAP, 0): "TRAP",
    (s.SDMA_OP_POLL_REGMEM, 0): "POLL_REGMEM",
    (s.SDMA_OP_ATOMIC, 0): "ATOMIC",
    (s.SDMA_OP_CONST_FILL, 0): "CONSTANT_FILL",
    (s.SDMA_OP_TIMESTAMP, s.SDMA_SUBOP_TIMESTAMP_SET): "TIMESTAMP_SET",
    (s.SDMA_OP_TIMESTAMP, s.SDMA_SUBOP_TIMESTAMP_GET): "TIMESTAMP_GET",
    (s.SDMA_OP_TIMESTAMP, s.SDMA_SUBOP_TIMESTAMP_GET_GLOBAL): "TIMESTAMP_GET_GLOBAL",
    (s.SDMA_OP_GCR_REQ, 0): "GCR_REQ",
}
# Op names for error messages (the AQL ops share numbers with NOP and belong to AQL queues).
OP_NAMES = {v: n[len("SDMA_OP_"):] for n, v in vars(s).items()
            if n.startswith("SDMA_OP_") and not n.startswith("SDMA_OP_AQL_") and isinstance(v, int)}


# --- limits and value names ---

# COPY_LINEAR and CONSTANT_FILL store the byte count minus one in a 30-bit field: up to 2**30 bytes a packet.
COPY_FIELD_MAX_BYTES = LAYOUTS["COPY_LINEAR"]["count"].mask + 1
FILL_FIELD_MAX_BYTES = LAYOUTS["CONSTANT_FILL"]["count"].mask + 1
# amdgpu splits at 4 MiB on SDMA 6 and 7 (sdma_v6_0.c / sdma_v7_0.c: copy_max_bytes = fill_max_bytes = 0x400000);
# we keep to the size the kernel driver moves on every part.
AMDGPU_COPY_MAX_BYTES = 0x400000
COPY_MAX_BYTES = min(COPY_FIELD_MAX_BYTES, AMDGPU_COPY_MAX_BYTES)
FILL_MAX_BYTES = min(FILL_FIELD_MAX_BYTES, AMDGPU_COPY_MAX_BYTES)

# POLL_REGMEM FUNC: amdgpu/cikd.h:524-532 (SDMA_POLL_REG_MEM_EXTRA_FUNC comment), the same encoding as PM4 WAIT_REG_MEM.
POLL_FUNC = {"always": 0, "<": 1, "<=": 2, "==": 3, "!=": 4, ">=": 5, ">": 6}
# POLL_REGMEM compares one 32-bit word: its header has no 64-bit form (sdma_v6_0_0_pkt_open.h POLL_REGMEM: VALUE and
# MASK are single dwords; SDMA 6 and 7 have no POLL_REGMEM64), so a wait on a 64-bit signal needs care: see
# drivers/amd/queue.py AMDCopyQueue._encode_wait.
POLL_VALUE_BITS = 32
POLL_INTERVAL = 10  # sdma_v6_0.c's HDP-flush poll: interval 10 ...
POLL_RETRY = 0xFFF  # ... and retry count 0xFFF (the field's maximum)

MTYPE_UC = 3  # FENCE MTYPE uncached, so the host sees it: sdma_v6_0.c emit_fence "Ucached(UC)"
FILL_SIZE_DWORD = 2  # CONSTANT_FILL FILLSIZE: amdgpu/cikd.h:539-542 "0 = byte fill, 2 = DW fill"

# ATOMIC's operation is a TC_OP code (soc21_enum.h TC_OP, not generated yet); bit 5 selects the 64-bit forms
# (ADD_RTN_32 0x0f, ADD_RTN_64 0x2f, ADD_64 0x6f). ROCr's SDMA_ATOMIC_ADD64 is TC_OP_ATOMIC_ADD_RTN_64.
ATOMIC_ADD64 = 0x2F  # soc21_enum.h:14693 TC_OP_ATOMIC_ADD_RTN_64
ATOMIC_64BIT = 0x20


# GCR_REQ cache actions over the whole address space: sdma_v6_0.c sdma_v6_0_ring_emit_mem_sync's set (write back and
# invalidate GL2, invalidate GLM/GL1/GLV/GLK and the instruction cache), bits from sdma_v6_0_0_pkt_open.h SDMA_GCR_*.
GCR_INVALIDATE_ALL = (s.SDMA_GCR_GL2_INV | s.SDMA_GCR_GL2_WB | s.SDMA_GCR_GLM_INV | s.SDMA_GCR_GL1_INV |
                      s.SDMA_GCR_GLV_INV | s.SDMA_GCR_GLK_INV | s.SDMA_GCR_GLI_INV(1))
GCR_CONTROL_BITS = 19  # GCR_CONTROL is split 15:0 (PAYLOAD2) and 18:16 (PAYLOAD3)


def _word(packet: str, name: str) -> int:
    return LAYOUTS[packet][name].dword


# Word offsets (from the header) of the fields replay patches.
FENCE_ADDR_WORD, FENCE_DATA_WORD = _word("FENCE", "addr_31_0"), _word("FENCE", "data")
COPY_SRC_WORD, COPY_DST_WORD = _word("COPY_LINEAR", "src_addr_31_0"), _word("COPY_LINEAR", "dst_addr_31_0")
POLL_ADDR_WORD, POLL_VALUE_WORD = _word("POLL_REGMEM", "addr_31_0"), _word("POLL_REGMEM", "value")


# --- encoding ---

_ADDR_LO = re.compile(r"(.+)_31_(\d+)$")


def _pack(packet: str, op: int, sub_op: int = 0, **values: int) -> list[int]:
    """A packet's words from header-named field values; a 64-bit address `x` fills x_31_<k> and x_63_32."""
    layout = LAYOUTS[packet]
    fields = dict(values, op=op)
    if "sub_op" in layout:
        fields["sub_op"] = sub_op
    for lo_name, m in [(n, _ADDR_LO.match(n)) for n in layout]:
        if m is None:
            continue
        base, low_bit = m.group(1), int(m.group(2))
        if base in fields and f"{base}_63_32" in layout:
            addr = fields.pop(base)
            if not 0 <= addr < 1 << 64 or addr % (1 << low_bit):
                raise SDMAError(f"{packet}: {base} {addr:#x} must be a {1 << low_bit}-byte aligned 64-bit address")
            fields[lo_name], fields[f"{base}_63_32"] = (addr & U32) >> low_bit, addr >> 32
    words = [0] * length(packet)
    for name, value in fields.items():
        f = layout.get(name)
        if f is None:
            raise SDMAError(f"{packet}: the header defines no field {name!r}")
        if not 0 <= value <= f.mask:
            raise SDMAError(f"{packet}: {name}={value:#x} does not fit its {f.mask.bit_length()}-bit field")
        words[f.dword] |= value << f.shift
    return words


def _aligned(packet: str, name: str, addr: int, align: int) -> int:
    if not 0 <= addr < 1 << 64 or addr % align:
        raise SDMAError(f"{packet}: {name} {addr:#x} must be a {align}-byte aligned 64-bit address")
    return addr


def nop(total_dwords: int) -> list[int]:
    """Padding of exactly total_dwords words: NOPs whose header count says how many payload words follow."""
    if total_dwords < 1:
        raise SDMAError(f"NOP: needs at least one dword, got {total_dwords}")
    most = LAYOUTS["NOP"]["count"].mask
    out: list[int] = []
    while total_dwords:
        payload = min(total_dwords - 1, most)
        out += _pack("NOP", s.SDMA_OP_NOP, count=payload)[:1] + [0] * payload
        total_dwords -= 1 + payload
    return out


def copy_linear_one(dst: int, src: int, size: int) -> list[int]:
    """One COPY_LINEAR of 1..COPY_MAX_BYTES bytes (byte-aligned addresses are fine)."""
    if not 1 <= size <= COPY_MAX_BYTES:
        raise SDMAError(f"COPY_LINEAR: size={size:#x}; one packet moves 1 to {COPY_MAX_BYTES:#x} bytes")
    return _pack("COPY_LINEAR", s.SDMA_OP_COPY, s.SDMA_SUBOP_COPY_LINEAR, count=size - 1,
                 src_addr=_aligned("COPY_LINEAR", "src_addr", src, 1),
                 dst_addr=_aligned("COPY_LINEAR", "dst_addr", dst, 1))


def copy_linear(dst: int, src: int, size: int, chunk: int = COPY_MAX_BYTES) -> list[int]:
    """A copy of any size as COPY_LINEAR packets of at most `chunk` bytes each (no packets for size 0)."""
    if size < 0:
        raise SDMAError(f"COPY_LINEAR: size={size}; must be >= 0")
    if not 1 <= chunk <= COPY_MAX_BYTES:
        raise SDMAError(f"COPY_LINEAR: chunk={chunk:#x}; must be 1 to {COPY_MAX_BYTES:#x} bytes")
    out: list[int] = []
    for off in range(0, size, chunk):
        out += copy_linear_one(dst + off, src + off, min(chunk, size - off))
    return out


def constant_fill(dst: int, value: int, size: int) -> list[int]:
    """Fill size bytes at dst (4-byte aligned; size a multiple of 4, at most FILL_MAX_BYTES) with a 32-bit value."""
    if not 4 <= size <= FILL_MAX_BYTES or size % 4:
        raise SDMAError(f"CONSTANT_FILL: size={size:#x}; must be a multiple of 4 from 4 to {FILL_MAX_BYTES:#x}")
    return _pack("CONSTANT_FILL", s.SDMA_OP_CONST_FILL, fillsize=FILL_SIZE_DWORD, count=size - 1,
                 dst_addr=_aligned("CONSTANT_FILL", "dst_addr", dst, 4), src_data_31_0=value)


def fence(addr: int, value: int, mtype: int = MTYPE_UC) -> list[int]:
    """Write a 32-bit value to addr (4-byte aligned) once earlier packets completed; 64 bits take two fences."""
    return _pack("FENCE", s.SDMA_OP_FENCE, mtype=mtype, addr=_aligned("FENCE", "addr", addr, 4), data=value)


def poll_regmem(addr: int, value: int, mask: int = U32, func: str = ">=", interval: int = POLL_INTERVAL,
                retry: int = POLL_RETRY) -> list[int]:
    """Stall the engine until (*addr & mask) func value, polling memory at addr (4-byte aligned).

    interval is in the engine's poll-timer units (16 bits); retry is the 12-bit retry count. The compare is
    32 bits wide (POLL_VALUE_BITS): value and mask must fit one dword.
    """
    if func not in POLL_FUNC:
        raise SDMAError(f"POLL_REGMEM: compare function {func!r} is not one of {list(POLL_FUNC)}")
    return _pack("POLL_REGMEM", s.SDMA_OP_POLL_REGMEM, func=POLL_FUNC[func], mem_poll=1,
                 addr=_aligned("POLL_REGMEM", "addr", addr, 4), value=value, mask=mask, interval=interval,
                 retry_count=retry)


def gcr_req(gcr: int = GCR_INVALIDATE_ALL) -> list[int]:
    """Cache actions (SDMA_GCR_* bits) over the whole address space, after earlier packets (sdma_v6_0.c
    sdma_v6_0_ring_emit_mem_sync: base and limit 0, VMID 0 for the queue's own VM)."""
    if not 0 <= gcr < 1 << GCR_CONTROL_BITS:
        raise SDMAError(f"GCR_REQ: gcr={gcr:#x} does not fit the {GCR_CONTROL_BITS}-bit GCR_CONTROL field")
    return _pack("GCR_REQ", s.SDMA_OP_GCR_REQ, gcr_control_15_0=gcr & 0xFFFF, gcr_control_18_16=gcr >> 16)


def timestamp(addr: int) -> list[int]:
    """Write the 64-bit global timestamp to addr; the header's low field holds bits 31:3, so 8-byte aligned."""
    return _pack("TIMESTAMP_GET_GLOBAL", s.SDMA_OP_TIMESTAMP, s.SDMA_SUBOP_TIMESTAMP_GET_GLOBAL, write_addr=addr)


def trap(int_context: int = 0) -> list[int]:
    """Raise an interrupt carrying the 28-bit int_context (KFD turns it into an event)."""
    return _pack("TRAP", s.SDMA_OP_TRAP, int_context=int_context)


def atomic(addr: int, operation: int, src: int, cmp: int = 0, loop: bool = False, loop_interval: int = 0) -> list[int]:
    """An atomic on memory at addr with a TC_OP `operation` (e.g. ATOMIC_ADD64), 64-bit source and compare data.

    64-bit operations need an 8-byte aligned address, 32-bit ones 4 bytes; loop repeats a compare-swap until
    it succeeds, every loop_interval.
    """
    align = 8 if operation & ATOMIC_64BIT else 4
    for name, v in (("src", src), ("cmp", cmp)):
        if not 0 <= v < 1 << 64:
            raise SDMAError(f"ATOMIC: {name}={v:#x} does not fit 64 bits")
    return _pack("ATOMIC", s.SDMA_OP_ATOMIC, atomic_op=operation, loop=int(loop), loop_interval=loop_interval,
                 addr=_aligned("ATOMIC", "addr", addr, align), src_data_31_0=src & U32, src_data_63_32=src >> 32,
                 cmp_data_31_0=cmp & U32, cmp_data_63_32=cmp >> 32)


# --- decoding ---

@dataclass
class Packet:
    """One decoded SDMA packet: dword offset, op/sub_op, name, raw words and fields (header names + combined)."""
    offset: int
    op: int
    sub_op: int
    name: str
    words: list[int]
    fields: dict[str, int] = field(default_factory=dict)

    @property
    def body(self) -> list[int]:
        """The words after the header."""
        return self.words[1:]

    def __str__(self) -> str:
        return f"{self.offset:#06x} {self.name} {_summary(self)}".rstrip()


# The fields a hang report shows per packet (combined ones where the header splits them).
KEY_FIELDS = {
    "NOP": ("count",),
    "COPY_LINEAR": ("size", "src_addr", "dst_addr"),
    "FENCE": ("addr", "data", "mtype"),
    "TRAP": ("int_context",),
    "POLL_REGMEM": ("addr", "func", "value", "mask", "mem_poll", "interval", "retry_count"),
    "ATOMIC": ("addr", "atomic_op", "src_data", "cmp_data", "loop"),
    "CONSTANT_FILL": ("dst_addr", "src_data_31_0", "size", "fillsize"),
    "TIMESTAMP_SET": ("init_data",),
    "TIMESTAMP_GET": ("write_addr",),
    "TIMESTAMP_GET_GLOBAL": ("write_addr",),
    "GCR_REQ": ("gcr_control",),
}

# COPY_LINEAR with CPV set carries one more dword of compression parameters (sdma_v7_0.c emit_copy_buffer sets
# CPV and writes 8 dwords; sdma_v6_0.c writes 7 without it). The header does not describe that dword.
_CPV = LAYOUTS["COPY_LINEAR"]["cpv"]


def _fields(packet: str, words: list[int]) -> dict[str, int]:
    layout = LAYOUTS[packet]
    out = {n: f.get(words) for n, f in layout.items() if f.dword < len(words)}  # a NOP may be its header alone
    for n in list(out):
        m = _ADDR_LO.match(n)
        if m and f"{m.group(1)}_63_32" in out:
            out[m.group(1)] = out[n] << int(m.group(2)) | out[f"{m.group(1)}_63_32"] << 32
    if packet == "GCR_REQ":
        out["gcr_control"] = out["gcr_control_15_0"] | out["gcr_control_18_16"] << 16
    if packet in ("COPY_LINEAR", "CONSTANT_FILL"):
        out["size"] = out["count"] + 1  # the header stores bytes - 1
    if packet == "COPY_LINEAR" and len(words) > length(packet):
        out["dcc_params"] = words[length(packet)]
    return out


def decode(words: Sequence[int], start: int = 0) -> list[Packet]:
    """Decode an SDMA stream from words[start:]; raises SDMADecodeError naming the dword offset of a packet whose
    op/sub_op this decoder does not know (its length is then unknown) or that runs past the end."""
    out, i = [], start
    nop_count = LAYOUTS["NOP"]["count"]
    while i < len(words):
        h = words[i]
        op, sub = LAYOUTS["NOP"]["op"].get([h]), LAYOUTS["NOP"]["sub_op"].get([h])  # the same bits in every header
        name = PACKETS.get((op, sub))
        if name is None:
            what = OP_NAMES.get(op, "unknown")
            raise SDMADecodeError(f"dword {i}: SDMA op {op:#x} ({what}) sub_op {sub:#x} is not decoded here "
                                  f"(header {h:#010x}); its length is unknown")
        if name == "NOP":
            n = 1 + nop_count.get([h])
        else:
            n = length(name) + (1 if name == "COPY_LINEAR" and _CPV.get([h]) else 0)
        if i + n > len(words):
            raise SDMADecodeError(f"dword {i}: {name} needs {n} dwords but the stream ends after {len(words) - i}")
        w = list(words[i:i + n])
        out.append(Packet(i, op, sub, name, w, _fields(name, w)))
        i += n
    return out


def _summary(p: Packet) -> str:
    keys = KEY_FIELDS.get(p.name, tuple(p.fields))
    return " ".join(f"{k}={p.fields[k]:#x}" for k in keys if k in p.fields)


def format_packets(packets: Sequence[Packet]) -> str:
    """One line per packet for hang reports: dword offset, packet name and key fields in hex."""
    return "\n".join(str(p) for p in packets)
