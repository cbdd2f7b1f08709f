"""SDMA packets for SDMA 6 (gfx11) and SDMA 7 (gfx12, which includes the same header): encoders and a decoder.

Layouts and field encoders come from autogen.sdma_v6 (sdma_v6_0_0_pkt_open.h). Counts are stored minus
one, and one COPY_LINEAR moves at most COPY_MAX_BYTES: amdgpu's sdma_v6_0.c sets copy_max_bytes = 0x400000.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from autogen import sdma_v6 as s

COPY_MAX_BYTES = 0x400000
FILL_MAX_BYTES = 0x400000
POLL_FUNC = {"always": 0, "<": 1, "<=": 2, "==": 3, "!=": 4, ">=": 5, ">": 6}  # same encoding as PM4 WAIT_REG_MEM
MTYPE_UC = 3  # uncached: a fence must reach memory the host reads (sdma_v6_0.c)

# Word offsets (from the header) of the fields replay patches.
FENCE_ADDR_WORD, FENCE_DATA_WORD = 1, 3
COPY_SRC_WORD, COPY_DST_WORD = 3, 5
POLL_ADDR_WORD, POLL_VALUE_WORD = 1, 3


class SDMAError(ValueError):
    """A packet cannot be encoded from these values; the message names the packet and field."""


class SDMADecodeError(ValueError):
    """A malformed SDMA stream; the message names the dword offset."""


def _addr(name: str, addr: int, align: int) -> tuple[int, int]:
    if not 0 <= addr < 1 << 64 or addr % align:
        raise SDMAError(f"{name} {addr:#x} must be a {align}-byte aligned 64-bit address")
    return addr & 0xFFFFFFFF, addr >> 32


def _hdr(op: int, sub_op: int = 0) -> int:
    return s.SDMA_PKT_COPY_LINEAR_HEADER_OP(op) | s.SDMA_PKT_COPY_LINEAR_HEADER_SUB_OP(sub_op)


def nop(total_dwords: int) -> list[int]:
    """Padding of exactly total_dwords words; the header's count says how many payload words follow."""
    if total_dwords < 1:
        raise SDMAError(f"NOP needs at least one dword, got {total_dwords}")
    return [_hdr(s.SDMA_OP_NOP) | s.SDMA_PKT_NOP_HEADER_COUNT(total_dwords - 1)] + [0] * (total_dwords - 1)


def copy_linear_one(dst: int, src: int, size: int) -> list[int]:
    """One COPY_LINEAR of 1..COPY_MAX_BYTES bytes."""
    if not 1 <= size <= COPY_MAX_BYTES:
        raise SDMAError(f"COPY_LINEAR of {size} bytes: one packet moves 1 to {COPY_MAX_BYTES:#x} bytes")
    slo, shi = _addr("COPY_LINEAR source", src, 1)
    dlo, dhi = _addr("COPY_LINEAR destination", dst, 1)
    return [_hdr(s.SDMA_OP_COPY, s.SDMA_SUBOP_COPY_LINEAR), s.SDMA_PKT_COPY_LINEAR_COUNT_COUNT(size - 1), 0,
            slo, shi, dlo, dhi]


def copy_linear(dst: int, src: int, size: int) -> list[int]:
    """A copy of any size as legal COPY_LINEAR chunks (nothing for size 0)."""
    if size < 0:
        raise SDMAError(f"copy of {size} bytes: the size must be >= 0")
    out: list[int] = []
    for off in range(0, size, COPY_MAX_BYTES):
        out += copy_linear_one(dst + off, src + off, min(COPY_MAX_BYTES, size - off))
    return out


def constant_fill(dst: int, value: int, size: int) -> list[int]:
    """Fill size bytes (a multiple of 4, at most FILL_MAX_BYTES) at dst with a 32-bit value."""
    if not 4 <= size <= FILL_MAX_BYTES or size % 4:
        raise SDMAError(f"CONSTANT_FILL of {size} bytes: must be a multiple of 4 from 4 to {FILL_MAX_BYTES:#x}")
    lo, hi = _addr("CONSTANT_FILL destination", dst, 4)
    return [_hdr(s.SDMA_OP_CONST_FILL) | s.SDMA_PKT_CONSTANT_FILL_HEADER_FILLSIZE(2), lo, hi, value & 0xFFFFFFFF,
            s.SDMA_PKT_CONSTANT_FILL_COUNT_COUNT(size - 1)]


def fence(addr: int, value: int) -> list[int]:
    """Write a 32-bit value to addr once earlier packets completed."""
    lo, hi = _addr("FENCE address", addr, 4)
    if not 0 <= value < 1 << 32:
        raise SDMAError(f"FENCE value {value:#x} does not fit 32 bits: write 64-bit values as two fences")
    return [_hdr(s.SDMA_OP_FENCE) | s.SDMA_PKT_FENCE_HEADER_MTYPE(MTYPE_UC), lo, hi, value]


def poll_regmem(addr: int, value: int, mask: int = 0xFFFFFFFF, func: str = ">=", interval: int = 10,
                retry: int = 0xFFF) -> list[int]:
    """Stall the engine until (*addr & mask) func value (memory poll)."""
    if func not in POLL_FUNC:
        raise SDMAError(f"POLL_REGMEM: compare function {func!r} is not one of {list(POLL_FUNC)}")
    lo, hi = _addr("POLL_REGMEM address", addr, 4)
    return [_hdr(s.SDMA_OP_POLL_REGMEM) | s.SDMA_PKT_POLL_REGMEM_HEADER_FUNC(POLL_FUNC[func]) |
            s.SDMA_PKT_POLL_REGMEM_HEADER_MEM_POLL(1), lo, hi, value & 0xFFFFFFFF, mask & 0xFFFFFFFF,
            s.SDMA_PKT_POLL_REGMEM_DW5_INTERVAL(interval) | s.SDMA_PKT_POLL_REGMEM_DW5_RETRY_COUNT(retry)]


def timestamp(addr: int) -> list[int]:
    """Write the 64-bit global timestamp to addr (8-byte aligned: the low field holds address bits 31:3)."""
    lo, hi = _addr("TIMESTAMP address", addr, 8)
    return [_hdr(s.SDMA_OP_TIMESTAMP, s.SDMA_SUBOP_TIMESTAMP_GET_GLOBAL),
            s.SDMA_PKT_TIMESTAMP_GET_GLOBAL_WRITE_ADDR_LO_WRITE_ADDR_31_3(lo >> 3), hi]


def trap(int_context: int = 0) -> list[int]:
    """Raise an interrupt carrying int_context (KFD turns it into an event)."""
    return [_hdr(s.SDMA_OP_TRAP), s.SDMA_PKT_TRAP_INT_CONTEXT_INT_CONTEXT(int_context)]


# --- decoding: lengths and fields per op, written from the header's layouts ---

NAMES = {s.SDMA_OP_NOP: "NOP", s.SDMA_OP_COPY: "COPY_LINEAR", s.SDMA_OP_FENCE: "FENCE", s.SDMA_OP_TRAP: "TRAP",
         s.SDMA_OP_POLL_REGMEM: "POLL_REGMEM", s.SDMA_OP_CONST_FILL: "CONSTANT_FILL", s.SDMA_OP_TIMESTAMP: "TIMESTAMP"}
LENGTHS = {s.SDMA_OP_COPY: 7, s.SDMA_OP_FENCE: 4, s.SDMA_OP_TRAP: 2, s.SDMA_OP_POLL_REGMEM: 6,
           s.SDMA_OP_CONST_FILL: 5, s.SDMA_OP_TIMESTAMP: 3}


@dataclass
class Packet:
    """One decoded SDMA packet."""
    offset: int
    op: int
    sub_op: int
    words: list[int]
    fields: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return NAMES.get(self.op, f"OP_{self.op:#x}")

    def __str__(self) -> str:
        return f"{self.offset:#06x} {self.name}" + "".join(f" {k}={v:#x}" for k, v in self.fields.items())


def _fields(op: int, sub: int, w: list[int]) -> dict[str, int]:
    if op == s.SDMA_OP_COPY:
        return {"size": (w[1] & 0x3FFFFFFF) + 1, "src": w[3] | w[4] << 32, "dst": w[5] | w[6] << 32}
    if op == s.SDMA_OP_FENCE:
        return {"addr": w[1] | w[2] << 32, "value": w[3], "mtype": (w[0] >> 16) & 0x7}
    if op == s.SDMA_OP_TRAP:
        return {"int_context": w[1] & 0xFFFFFFF}
    if op == s.SDMA_OP_POLL_REGMEM:
        return {"func": (w[0] >> 28) & 0x7, "mem_poll": w[0] >> 31, "addr": w[1] | w[2] << 32, "value": w[3],
                "mask": w[4], "interval": w[5] & 0xFFFF, "retry": (w[5] >> 16) & 0xFFF}
    if op == s.SDMA_OP_CONST_FILL:
        return {"dst": w[1] | w[2] << 32, "value": w[3], "size": (w[4] & 0x3FFFFFFF) + 1}
    if op == s.SDMA_OP_TIMESTAMP:
        return {"sub_op": sub, "addr": (w[1] & ~7 & 0xFFFFFFFF) | w[2] << 32}
    return {}


def decode(words: Sequence[int], start: int = 0) -> list[Packet]:
    """Decode an SDMA stream; raises SDMADecodeError naming the offset of the first bad dword."""
    out, i = [], start
    while i < len(words):
        h = words[i]
        op, sub = h & 0xFF, (h >> 8) & 0xFF
        if op == s.SDMA_OP_NOP:
            n = 1 + ((h >> 16) & 0x3FFF)
        elif op in LENGTHS:
            n = LENGTHS[op]
        else:
            raise SDMADecodeError(f"dword {i}: unknown SDMA op {op:#x} (header {h:#010x})")
        if i + n > len(words):
            raise SDMADecodeError(f"dword {i}: {NAMES[op]} needs {n} dwords but the stream ends after {len(words) - i}")
        w = list(words[i:i + n])
        out.append(Packet(i, op, sub, w, _fields(op, sub, w)))
        i += n
    return out


def format_packets(packets: Sequence[Packet]) -> str:
    """One line per packet, for hang reports and traces."""
    return "\n".join(str(p) for p in packets)
