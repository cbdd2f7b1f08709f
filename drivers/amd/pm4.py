"""PM4 type-3 packets for AMD compute queues (gfx10 to gfx12, nvd.h layouts): encoders and a decoder.

Every encoder returns the packet's 32-bit words. Fields a queue may patch on replay sit at the word
offsets named *_WORD below, so the queue builder records them without re-encoding. Opcodes and field
encoders come from the generated bindings (autogen.pm4_nvd, autogen.soc21_enum).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from autogen import pm4_nvd as nvd
from autogen import soc21_enum as ev

# Selector values the field encoders take. nvd.h has the field positions but not the value names; these are
# from Mesa's src/amd/common/sid.h (EOP_DATA_SEL_*, EOP_INT_SEL_*, EOP_DST_SEL_*, WAIT_REG_MEM_*).
DATA_SEL_NONE, DATA_SEL_VALUE_32, DATA_SEL_VALUE_64, DATA_SEL_TIMESTAMP = 0, 1, 2, 3
INT_SEL_NONE, INT_SEL_SEND_INT, INT_SEL_SEND_DATA_AFTER_WRITE_CONFIRM = 0, 1, 3
DST_SEL_MEM = 0
WAIT_FUNC = {"always": 0, "<": 1, "<=": 2, "==": 3, "!=": 4, ">=": 5, ">": 6}
WAIT_MEM_SPACE_REGISTER, WAIT_MEM_SPACE_MEMORY = 0, 1
WAIT_ENGINE_ME = 0
WAIT_POLL_INTERVAL = 0x04  # in 16-clock units: short, the wait is on a live signal

MAX_COUNT = 0x3FFF  # the header's count field is 14 bits

# Word offsets (from the header) of the fields replay patches.
RELEASE_MEM_ADDR_WORD, RELEASE_MEM_DATA_WORD = 3, 5
WAIT_REG_MEM_ADDR_WORD, WAIT_REG_MEM_REF_WORD = 2, 4
INDIRECT_BUFFER_ADDR_WORD = 1
DISPATCH_DIRECT_SIZE_WORD = 1


class PM4Error(ValueError):
    """A packet cannot be encoded from these values; the message names the packet and field."""


class PM4DecodeError(ValueError):
    """A malformed PM4 stream; the message names the dword offset."""


def header(opcode: int, body_dwords: int) -> int:
    """The type-3 header for a packet whose body (after the header) has body_dwords words."""
    if not 1 <= body_dwords <= MAX_COUNT + 1:
        raise PM4Error(f"PM4 opcode {opcode:#x}: body of {body_dwords} dwords does not fit the 14-bit count")
    return nvd.PACKET3(opcode, body_dwords - 1)


def _u32(name: str, v: int) -> int:
    if not 0 <= v < 1 << 32:
        raise PM4Error(f"{name}={v:#x} does not fit 32 bits")
    return v


def _addr(name: str, addr: int, align: int) -> tuple[int, int]:
    if not 0 <= addr < 1 << 64 or addr % align:
        raise PM4Error(f"{name} {addr:#x} must be a {align}-byte aligned 64-bit address")
    return addr & 0xFFFFFFFF, addr >> 32


def nop(total_dwords: int) -> list[int]:
    """Padding of exactly total_dwords words (>= 1): a one-word NOP is the type-3 NOP with count 0x3FFF."""
    if total_dwords < 1:
        raise PM4Error(f"NOP needs at least one dword, got {total_dwords}")
    if total_dwords == 1:
        return [nvd.PACKET3(nvd.PACKET3_NOP, MAX_COUNT)]  # count 0x3FFF: header only, by definition
    return [header(nvd.PACKET3_NOP, total_dwords - 1)] + [0] * (total_dwords - 1)


def set_sh_reg(reg: int, values: Sequence[int]) -> list[int]:
    """Write consecutive SH registers starting at absolute dword offset `reg`.

    An absolute offset is the GC block's segment base (from IP discovery) plus the register's offset in its
    segment (gc_11_0_0.regCOMPUTE_PGM_LO with regCOMPUTE_PGM_LO_BASE_IDX naming the segment).
    """
    off = reg - nvd.PACKET3_SET_SH_REG_START
    if not 0 <= off < nvd.PACKET3_SET_SH_REG_END - nvd.PACKET3_SET_SH_REG_START or not values:
        raise PM4Error(f"SET_SH_REG: register {reg:#x} is not in the SH range or no values given")
    return [header(nvd.PACKET3_SET_SH_REG, 1 + len(values)), off] + [_u32(f"SH reg {reg + i:#x}", v)
                                                                     for i, v in enumerate(values)]


def dispatch_direct(x: int, y: int, z: int, initiator: int) -> list[int]:
    """Launch x*y*z workgroups with the COMPUTE_DISPATCH_INITIATOR bits given."""
    return [header(nvd.PACKET3_DISPATCH_DIRECT, 4), _u32("x", x), _u32("y", y), _u32("z", z), _u32("initiator", initiator)]


def release_mem(addr: int, value: int, data_sel: int, int_sel: int = INT_SEL_NONE, event_type: int = ev.CACHE_FLUSH_AND_INV_TS_EVENT,
                event_index: int = 5, gcr: int = 0, int_ctxid: int = 0) -> list[int]:
    """At end of pipe (after the flushes in `gcr`), write value or the GPU timestamp to addr and optionally interrupt.

    event_index 5 is "end of pipe" for the TS events (Mesa sid.h EVENT_INDEX(5)); int_ctxid names the
    KFD event the interrupt signals.
    """
    lo, hi = _addr("RELEASE_MEM address", addr, 8 if data_sel in (DATA_SEL_VALUE_64, DATA_SEL_TIMESTAMP) else 4)
    return [header(nvd.PACKET3_RELEASE_MEM, 7),
            nvd.PACKET3_RELEASE_MEM_EVENT_TYPE(event_type) | nvd.PACKET3_RELEASE_MEM_EVENT_INDEX(event_index) | gcr,
            nvd.PACKET3_RELEASE_MEM_DATA_SEL(data_sel) | nvd.PACKET3_RELEASE_MEM_INT_SEL(int_sel) |
            nvd.PACKET3_RELEASE_MEM_DST_SEL(DST_SEL_MEM),
            lo, hi, value & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF, _u32("int_ctxid", int_ctxid)]


def wait_reg_mem(addr: int, ref: int, mask: int = 0xFFFFFFFF, func: str = ">=", poll: int = WAIT_POLL_INTERVAL) -> list[int]:
    """Stall until (*addr & mask) func ref, comparing the 32-bit word at addr."""
    if func not in WAIT_FUNC:
        raise PM4Error(f"WAIT_REG_MEM: compare function {func!r} is not one of {list(WAIT_FUNC)}")
    lo, hi = _addr("WAIT_REG_MEM address", addr, 4)
    return [header(nvd.PACKET3_WAIT_REG_MEM, 6),
            nvd.WAIT_REG_MEM_FUNCTION(WAIT_FUNC[func]) | nvd.WAIT_REG_MEM_MEM_SPACE(WAIT_MEM_SPACE_MEMORY) |
            nvd.WAIT_REG_MEM_ENGINE(WAIT_ENGINE_ME), lo, hi, _u32("reference", ref), _u32("mask", mask), _u32("poll", poll)]


def acquire_mem(gcr_cntl: int) -> list[int]:
    """Invalidate/write back caches over the whole address space (gfx10+ layout: size and base, then GCR_CNTL)."""
    return [header(nvd.PACKET3_ACQUIRE_MEM, 7), 0, 0xFFFFFFFF, 0xFFFFFF, 0, 0, WAIT_POLL_INTERVAL, _u32("gcr_cntl", gcr_cntl)]


def gcr_invalidate_all() -> int:
    """GCR_CNTL bits that write back and invalidate every cache level a kernel's inputs may sit in."""
    return (nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLI_INV(1) | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLK_INV(1) |
            nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLK_WB(1) | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLM_INV(1) |
            nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLM_WB(1) | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL1_INV(1) |
            nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLV_INV(1) | nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL2_INV(1) |
            nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL2_WB(1))


def indirect_buffer(addr: int, size_dwords: int) -> list[int]:
    """Run size_dwords words of commands at addr, then come back."""
    if not 1 <= size_dwords < 1 << 20:
        raise PM4Error(f"INDIRECT_BUFFER of {size_dwords} dwords: the size field holds 1 to {(1 << 20) - 1}")
    lo, hi = _addr("INDIRECT_BUFFER address", addr, 4)
    return [header(nvd.PACKET3_INDIRECT_BUFFER, 3), lo, hi, size_dwords | nvd.INDIRECT_BUFFER_VALID]


def event_write(event_type: int, event_index: int = 4) -> list[int]:
    """Fire a pipeline event such as CS_PARTIAL_FLUSH (event index 4 for partial flushes, Mesa sid.h)."""
    return [header(nvd.PACKET3_EVENT_WRITE, 1), nvd.EVENT_TYPE(event_type) | nvd.EVENT_INDEX(event_index)]


# --- decoding ---

# Opcodes a compute queue may carry, named for decoded streams; the numbers come from nvd.h.
OPCODES = {getattr(nvd, f"PACKET3_{n}"): n for n in (
    "NOP", "SET_BASE", "CLEAR_STATE", "DISPATCH_DIRECT", "DISPATCH_INDIRECT", "ATOMIC_MEM", "COND_EXEC", "WRITE_DATA",
    "COPY_DATA", "WAIT_REG_MEM", "WAIT_REG_MEM64", "INDIRECT_BUFFER", "EVENT_WRITE", "RELEASE_MEM", "ACQUIRE_MEM",
    "DMA_DATA", "SET_SH_REG", "SET_UCONFIG_REG", "SET_CONFIG_REG", "SET_CONTEXT_REG", "INVALIDATE_TLBS",
    "MAP_QUEUES", "UNMAP_QUEUES", "QUERY_STATUS", "SET_RESOURCES", "RUN_LIST")}


@dataclass
class Packet:
    """One decoded packet: where it starts, its opcode, body words and the fields we understand."""
    offset: int
    opcode: int
    body: list[int]
    fields: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return OPCODES.get(self.opcode, f"OP_{self.opcode:#04x}")

    def __str__(self) -> str:
        return f"{self.offset:#06x} {self.name}" + "".join(f" {k}={v:#x}" for k, v in self.fields.items())


def _bits(word: int, shift: int, width: int) -> int:
    return (word >> shift) & ((1 << width) - 1)


def _fields(opcode: int, b: list[int]) -> dict[str, int]:
    """Decode the fields of the packets we encode (bit positions from nvd.h, independent of the encoders)."""
    if opcode == nvd.PACKET3_RELEASE_MEM and len(b) == 7:
        return {"event_type": _bits(b[0], 0, 6), "event_index": _bits(b[0], 8, 4), "gcr": b[0] & 0x07FFF000,
                "data_sel": _bits(b[1], 29, 3), "int_sel": _bits(b[1], 24, 3), "dst_sel": _bits(b[1], 16, 2),
                "addr": b[2] | b[3] << 32, "value": b[4] | b[5] << 32, "int_ctxid": b[6]}
    if opcode == nvd.PACKET3_WAIT_REG_MEM and len(b) == 6:
        return {"function": _bits(b[0], 0, 3), "mem_space": _bits(b[0], 4, 2), "engine": _bits(b[0], 8, 2),
                "addr": b[1] | b[2] << 32, "reference": b[3], "mask": b[4], "poll": b[5]}
    if opcode == nvd.PACKET3_SET_SH_REG and len(b) >= 2:
        return {"reg": b[0] + nvd.PACKET3_SET_SH_REG_START, **{f"value{i}": v for i, v in enumerate(b[1:])}}
    if opcode == nvd.PACKET3_DISPATCH_DIRECT and len(b) == 4:
        return {"x": b[0], "y": b[1], "z": b[2], "initiator": b[3]}
    if opcode == nvd.PACKET3_INDIRECT_BUFFER and len(b) == 3:
        return {"addr": b[0] | b[1] << 32, "size": _bits(b[2], 0, 20), "valid": _bits(b[2], 23, 1)}
    if opcode == nvd.PACKET3_ACQUIRE_MEM and len(b) == 7:
        return {"coher_size": b[1] | (b[2] & 0xFFFFFF) << 32, "coher_base": b[3] | b[4] << 32, "gcr_cntl": b[6]}
    if opcode == nvd.PACKET3_EVENT_WRITE and len(b) >= 1:
        return {"event_type": _bits(b[0], 0, 6), "event_index": _bits(b[0], 8, 4)}
    return {}


def decode(words: Sequence[int], start: int = 0) -> list[Packet]:
    """Decode a PM4 stream into packets; raises PM4DecodeError naming the offset of the first bad dword."""
    out, i = [], start
    while i < len(words):
        h = words[i]
        kind = h >> 30
        if kind == 2:  # type-2: a one-dword filler
            out.append(Packet(i, -1, [], {"type2": 1}))
            i += 1
            continue
        if kind != 3:
            raise PM4DecodeError(f"dword {i}: header {h:#010x} is a type-{kind} packet; compute queues take type 3")
        opcode, count = _bits(h, 8, 8), _bits(h, 16, 14)
        if opcode == nvd.PACKET3_NOP and count == MAX_COUNT:
            out.append(Packet(i, opcode, []))
            i += 1
            continue
        n = count + 1
        if i + 1 + n > len(words):
            raise PM4DecodeError(f"dword {i}: {OPCODES.get(opcode, hex(opcode))} has {n} body dwords but the stream "
                                 f"ends after {len(words) - i - 1}")
        body = list(words[i + 1:i + 1 + n])
        out.append(Packet(i, opcode, body, _fields(opcode, body)))
        i += 1 + n
    return out


def format_packets(packets: Sequence[Packet]) -> str:
    """One line per packet, for hang reports and traces."""
    return "\n".join(str(p) for p in packets)
