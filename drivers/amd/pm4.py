"""PM4 type-3 packets for AMD compute queues (MEC, gfx10 to gfx12 layouts): encoders and a decoder.

Encoders are small functions returning the packet's 32-bit words. They place fields with the generated
nvd.h helpers (autogen.pm4_nvd) and take event numbers from autogen.soc21_enum; the GPU family picks the
bindings (`Family`), so gfx9/gfx942 (soc15d.h, whose ACQUIRE_MEM and RELEASE_MEM cache fields differ) can
slot in as another `Family` with its own layouts.

The decoder reads fields through the family's layouts (`NVD_LAYOUTS`: body dword, lowest bit and width per
field), written from the MEC packet layouts (nvd.h's comments, amdkfd's kfd_pm4_headers_ai.h, PAL's
gfx9_plus_merged_f32_mec_pm4_packets.h) rather than through the encoders' helpers: encoders and decoder are
two readings of the spec, so a round trip catches a misreading in either.

Value names the generated bindings lack (nvd.h documents them only in comments) are defined below, each with
the public header it comes from. Fields a queue patches on replay sit at the word offsets named *_WORD.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import Mapping, Sequence

from autogen import gc_11_0_0, gc_12_0_0
from autogen import pm4_nvd as nvd
from autogen import soc21_enum


class PM4Error(ValueError):
    """A packet cannot be encoded from these values; the message names the packet and the field."""


class PM4DecodeError(ValueError):
    """A malformed PM4 stream; the message names the dword offset where decoding stopped."""


# --- value names nvd.h gives only in comments (line numbers: linux-source-6.12, drivers/gpu/drm/amd/amdgpu/nvd.h) ---

# RELEASE_MEM DATA_SEL, nvd.h:186-192.
DATA_SEL_NONE = 0  # "discard": write nothing (an interrupt-only release)
DATA_SEL_VALUE_32 = 1  # "send low 32bit data"
DATA_SEL_VALUE_64 = 2  # "send 64bit data"
DATA_SEL_TIMESTAMP = 3  # "send 64bit GPU counter value"
DATA_SEL_SYS_TIMESTAMP = 4  # "send 64bit sys counter value"

# RELEASE_MEM INT_SEL, nvd.h:193-197 (0-2); 3 is from amdkfd/kfd_pm4_headers_ai.h mec_release_mem_int_sel_enum.
INT_SEL_NONE = 0
INT_SEL_SEND_INT = 1  # "interrupt only (DATA_SEL = 0)"
INT_SEL_SEND_INT_AFTER_WRITE_CONFIRM = 2  # "interrupt when data write is confirmed": what amdgpu and KFD fences use
INT_SEL_SEND_DATA_AFTER_WRITE_CONFIRM = 3  # no interrupt; ROCr uses it for signals that are only polled

# RELEASE_MEM DST_SEL, nvd.h:198-201.
DST_SEL_MEM = 0  # "MC": straight to memory
DST_SEL_TC_L2 = 1

# RELEASE_MEM CACHE_POLICY (and INDIRECT_BUFFER's), nvd.h:178-183.
CACHE_POLICY_LRU, CACHE_POLICY_STREAM, CACHE_POLICY_NOA, CACHE_POLICY_BYPASS = 0, 1, 2, 3

# EVENT_WRITE / RELEASE_MEM EVENT_INDEX: nvd.h:156-162 (0-4) and amdgpu/cikd.h:347-354 (5 "EOP events", 6 "EOS
# events").
EVENT_INDEX_OTHER = 0  # "any non-TS event"
EVENT_INDEX_CS_PARTIAL_FLUSH = 4  # "*S_PARTIAL_FLUSH"
EVENT_INDEX_END_OF_PIPE = 5  # kfd_pm4_headers_ai.h: event_index__mec_release_mem__end_of_pipe
EVENT_INDEX_SHADER_DONE = 6

# WAIT_REG_MEM FUNCTION, nvd.h:117-125: compare (*addr & mask) against the reference.
WAIT_FUNC = {"always": 0, "<": 1, "<=": 2, "==": 3, "!=": 4, ">=": 5, ">": 6}
WAIT_MEM_SPACE = {"register": 0, "memory": 1}  # nvd.h:126-129
WAIT_OPERATION_WAIT = 0  # nvd.h:130-133: plain wait (1 is write, wait, write register)
WAIT_ENGINE_ME = 0  # nvd.h:134-137; MEC ignores the engine select
WAIT_POLL_INTERVAL = 0x04  # in 16-clock units: short, waits here are on live signals
WAIT_REG_ADDR_BITS = 18  # a register-space wait names an 18-bit dword offset (PAL: reg_poll_addr:18)

# INDIRECT_BUFFER control dword: nvd.h has VALID (bit 23) and CACHE_POLICY; the size field and the chain bit are
# from amdkfd/kfd_pm4_headers_ai.h struct pm4_mes_runlist (the same ordinal 4: ib_size:20, chain:1), matching
# PAL's PM4_MEC_INDIRECT_BUFFER.
IB_SIZE_BITS = 20
INDIRECT_BUFFER_CHAIN = 1 << IB_SIZE_BITS  # the new IB replaces the rest of the current one instead of returning

# ACQUIRE_MEM over the whole address space (gfx_v11_0.c / gfx_v12_0.c emit_mem_sync use all-ones sizes): COHER_SIZE
# is 32 bits and COHER_SIZE_HI 8 bits (nvd.h:259-268); amdgpu writes 0xFFFFFF into the latter, whose upper bits
# are reserved, and we write the field only.
COHER_SIZE_HI_BITS = 8
COHER_SIZE_WHOLE = (1 << (32 + COHER_SIZE_HI_BITS)) - 1
ACQUIRE_POLL_INTERVAL = 0x0A  # amdgpu's emit_mem_sync value

# The header's count field: nvd.h's own decoder macro gives its width (0x3FFF).
MAX_COUNT = nvd.CP_PACKET_GET_COUNT(0xFFFFFFFF)
# A NOP whose count is MAX_COUNT is one dword long by definition (amdgpu's ring .nop), so a padding NOP's body holds
# at most MAX_COUNT dwords (count MAX_COUNT - 1, as gfx_v11_ring_insert_nop caps it).
NOP_MAX_BODY = MAX_COUNT

U32 = 0xFFFFFFFF


# --- field layouts (decoder side) ---

@dataclass(frozen=True)
class BitField:
    """A field of a packet body: its body dword (the word after the header is 0), lowest bit and width.

    in_place fields decode without shifting down (RELEASE_MEM's GCR bits, which nvd.h defines in position).
    """
    name: str
    dword: int
    shift: int
    width: int
    in_place: bool = False

    @property
    def max(self) -> int:
        """The largest value the field holds."""
        return (1 << self.width) - 1

    def get(self, body: Sequence[int]) -> int:
        """The field's value in a packet body."""
        value = (body[self.dword] >> self.shift) & self.max
        return value << self.shift if self.in_place else value


@dataclass(frozen=True)
class Layout:
    """The body of one opcode: its fields and the body lengths (dwords after the header) the packet may have."""
    fields: tuple[BitField, ...]
    lengths: tuple[int, ...] | None  # None: any length of at least min_length
    min_length: int = 1

    def field(self, name: str) -> BitField:
        """The named field (KeyError names it when the layout has no such field)."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def fits(self, n: int) -> bool:
        """Whether a body of n dwords is a legal length for this opcode."""
        return n in self.lengths if self.lengths is not None else n >= self.min_length


def _f(name: str, dword: int, shift: int = 0, width: int = 32, in_place: bool = False) -> BitField:
    return BitField(name, dword, shift, width, in_place)


_WAIT_CONTROL = (_f("function", 0, 0, 3), _f("mem_space", 0, 4, 2), _f("operation", 0, 6, 2), _f("engine", 0, 8, 2))

# gfx10-gfx12 MEC layouts. RELEASE_MEM's GCR field is 13 bits from bit 12 on gfx11 (PAL's gfx11 view; gfx10 uses
# 12 of them); ACQUIRE_MEM follows nvd.h:259-268.
NVD_LAYOUTS: dict[str, Layout] = {
    "RELEASE_MEM": Layout((
        _f("event_type", 0, 0, 6), _f("event_index", 0, 8, 4), _f("gcr", 0, 12, 13, True), _f("cache_policy", 0, 25, 2),
        _f("execute", 0, 28, 1), _f("dst_sel", 1, 16, 2), _f("int_sel", 1, 24, 3), _f("data_sel", 1, 29, 3),
        _f("addr_lo", 2), _f("addr_hi", 3), _f("value_lo", 4), _f("value_hi", 5), _f("int_ctxid", 6)), (7,)),
    "WAIT_REG_MEM": Layout(_WAIT_CONTROL + (
        _f("addr_lo", 1), _f("addr_hi", 2), _f("reference", 3), _f("mask", 4), _f("poll_interval", 5, 0, 16)), (6,)),
    "WAIT_REG_MEM64": Layout(_WAIT_CONTROL + (
        _f("addr_lo", 1), _f("addr_hi", 2), _f("reference_lo", 3), _f("reference_hi", 4), _f("mask_lo", 5),
        _f("mask_hi", 6), _f("poll_interval", 7, 0, 16)), (8,)),
    "ACQUIRE_MEM": Layout((
        _f("coher_cntl", 0, 0, 31), _f("engine_sel", 0, 31, 1), _f("coher_size_lo", 1),
        _f("coher_size_hi", 2, 0, COHER_SIZE_HI_BITS), _f("coher_base_lo", 3), _f("coher_base_hi", 4, 0, 24),
        _f("poll_interval", 5, 0, 16), _f("gcr_cntl", 6, 0, 19)), (7,)),
    "INDIRECT_BUFFER": Layout((
        _f("addr_lo", 0), _f("addr_hi", 1), _f("size", 2, 0, IB_SIZE_BITS), _f("chain", 2, 20, 1),
        _f("offload_polling", 2, 21, 1), _f("valid", 2, 23, 1), _f("vmid", 2, 24, 4), _f("cache_policy", 2, 28, 2)),
        (3,)),
    "DISPATCH_DIRECT": Layout((_f("x", 0), _f("y", 1), _f("z", 2), _f("initiator", 3)), (4,)),
    # Two dwords for pipeline events; four when the event writes to memory (PAL's PM4_MEC_EVENT_WRITE).
    "EVENT_WRITE": Layout((_f("event_type", 0, 0, 6), _f("event_index", 0, 8, 4)), (1, 3)),
    "SET_SH_REG": Layout((_f("reg_offset", 0, 0, 16),), None, min_length=2),
    "NOP": Layout((), None, min_length=0),
}


# --- families ---

@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one object per family
class Family:
    """Where a GPU family's PM4 facts come from: opcode/field bindings, registers, events and body layouts."""
    name: str
    pm4: ModuleType  # opcodes and field helpers (nvd.h here; soc15d.h for gfx9)
    gc: ModuleType  # COMPUTE_* register offsets and COMPUTE_DISPATCH_INITIATOR fields
    events: ModuleType  # VGT_EVENT_TYPE numbers
    fence_gcr: int  # RELEASE_MEM cache actions amdgpu's fence uses on this family (write back L2 at end of pipe)
    layouts: Mapping[str, Layout]


# gfx_v11_0_ring_emit_fence: GCR_SEQ | GL2_WB | GLM_INV | GLM_WB ("GLM_INV must be set with GLM_WB").
GFX11 = Family("gfx11", nvd, gc_11_0_0, soc21_enum,
               nvd.PACKET3_RELEASE_MEM_GCR_SEQ | nvd.PACKET3_RELEASE_MEM_GCR_GL2_WB |
               nvd.PACKET3_RELEASE_MEM_GCR_GLM_INV | nvd.PACKET3_RELEASE_MEM_GCR_GLM_WB, NVD_LAYOUTS)
# gfx_v12_0_ring_emit_fence drops the GLM bits. The event numbers are soc24_enum.h's, equal to soc21's for the
# events used here (soc24_enum.h is not generated yet).
GFX12 = Family("gfx12", nvd, gc_12_0_0, soc21_enum,
               nvd.PACKET3_RELEASE_MEM_GCR_SEQ | nvd.PACKET3_RELEASE_MEM_GCR_GL2_WB, NVD_LAYOUTS)
FAMILIES = {f.name: f for f in (GFX11, GFX12)}


def family_for(target: str) -> Family:
    """The PM4 family of a gfx target name such as "gfx1100" or "gfx1201"."""
    for name, fam in FAMILIES.items():
        if target.startswith(name):
            return fam
    if target.startswith("gfx9"):
        raise PM4Error(f"{target}: gfx9 parts (gfx942) take soc15d.h packet layouts, which are not built yet")
    raise PM4Error(f"{target}: no PM4 family for this target; known: {', '.join(FAMILIES)}")


# --- encoding helpers ---

def _fit(packet: str, name: str, value: int, family: Family) -> int:
    """value, checked against the width of the packet's field of that name."""
    f = family.layouts[packet].field(name)
    if not 0 <= value <= f.max:
        raise PM4Error(f"{packet}: {name}={value:#x} does not fit its {f.width}-bit field")
    return value


def _u32(packet: str, name: str, value: int) -> int:
    if not 0 <= value <= U32:
        raise PM4Error(f"{packet}: {name}={value:#x} does not fit 32 bits")
    return value


def _addr(packet: str, name: str, addr: int, align: int) -> tuple[int, int]:
    """The low and high words of a 64-bit GPU address, checked for range and alignment."""
    if not 0 <= addr < 1 << 64 or addr % align:
        raise PM4Error(f"{packet}: {name} {addr:#x} must be a {align}-byte aligned 64-bit address")
    return addr & U32, addr >> 32


def header(opcode: int, body_dwords: int, *, family: Family = GFX11) -> int:
    """The type-3 header of a packet whose body (the words after the header) is body_dwords long."""
    if not 1 <= body_dwords <= MAX_COUNT + 1:
        raise PM4Error(f"PM4 opcode {opcode:#x}: a body of {body_dwords} dwords does not fit the 14-bit count")
    if opcode == family.pm4.PACKET3_NOP and body_dwords > NOP_MAX_BODY:
        raise PM4Error(f"NOP: a body of {body_dwords} dwords would read as a header-only NOP (count {MAX_COUNT:#x})")
    return family.pm4.PACKET3(opcode, body_dwords - 1)


# --- encoders ---

def nop(total_dwords: int, *, family: Family = GFX11) -> list[int]:
    """Padding of exactly total_dwords words, as one NOP or several when it is longer than one NOP can be."""
    if total_dwords < 1:
        raise PM4Error(f"NOP: needs at least one dword, got {total_dwords}")
    out: list[int] = []
    while total_dwords > 1:
        body = min(total_dwords - 1, NOP_MAX_BODY)
        out += [header(family.pm4.PACKET3_NOP, body, family=family)] + [0] * body
        total_dwords -= 1 + body
    if total_dwords == 1:
        out.append(family.pm4.PACKET3(family.pm4.PACKET3_NOP, MAX_COUNT))  # header-only NOP, by its count
    return out


def sh_reg_offset(reg: int, count: int = 1, *, family: Family = GFX11) -> int:
    """SET_SH_REG's offset for `count` registers from absolute dword address `reg`, checked against the SH range.

    An absolute address is the GC block's segment base (IP discovery; 0x1260 for segment 0 on gfx10 to gfx12)
    plus the generated offset, e.g. `gc_base + gc_11_0_0.regCOMPUTE_PGM_LO` (BASE_IDX 0 names segment 0).
    """
    start, end = family.pm4.PACKET3_SET_SH_REG_START, family.pm4.PACKET3_SET_SH_REG_END
    if not start <= reg or reg + count > end:
        raise PM4Error(f"SET_SH_REG: registers {reg:#x}..{reg + count - 1:#x} are not in the SH range "
                       f"{start:#x}..{end - 1:#x} (add the GC segment base to the generated offset)")
    return reg - start


def set_sh_reg(reg: int, values: Sequence[int], *, family: Family = GFX11) -> list[int]:
    """Write consecutive SH registers starting at absolute dword address `reg` (see sh_reg_offset)."""
    if not values:
        raise PM4Error(f"SET_SH_REG {reg:#x}: no values given")
    off = sh_reg_offset(reg, len(values), family=family)
    for i, v in enumerate(values):
        if not 0 <= v <= U32:  # the register is named only when it is wrong: this runs for every dispatch
            _u32("SET_SH_REG", f"register {reg + i:#x}", v)
    return [header(family.pm4.PACKET3_SET_SH_REG, 1 + len(values), family=family), off, *values]


def dispatch_initiator(family: Family = GFX11, **bits: int) -> int:
    """COMPUTE_DISPATCH_INITIATOR from field names, e.g. compute_shader_en=1, force_start_at_000=1, cs_w32_en=1."""
    word = 0
    for name, value in bits.items():
        key = f"COMPUTE_DISPATCH_INITIATOR__{name.upper()}"
        shift, mask = getattr(family.gc, f"{key}__SHIFT", None), getattr(family.gc, f"{key}_MASK", None)
        if shift is None or mask is None:
            raise PM4Error(f"COMPUTE_DISPATCH_INITIATOR has no field {name!r} on {family.name}")
        if not 0 <= value <= mask >> shift:
            raise PM4Error(f"COMPUTE_DISPATCH_INITIATOR: {name}={value:#x} does not fit its field")
        word |= value << shift
    return word


def dispatch_direct(x: int, y: int, z: int, initiator: int, *, family: Family = GFX11) -> list[int]:
    """Launch an x*y*z grid of workgroups with the COMPUTE_DISPATCH_INITIATOR bits given."""
    return [header(family.pm4.PACKET3_DISPATCH_DIRECT, 4, family=family), _u32("DISPATCH_DIRECT", "x", x),
            _u32("DISPATCH_DIRECT", "y", y), _u32("DISPATCH_DIRECT", "z", z),
            _u32("DISPATCH_DIRECT", "initiator", initiator)]


def release_gcr(family: Family = GFX11, **flags: bool) -> int:
    """RELEASE_MEM cache actions by name: glm_wb, glm_inv, glv_inv, gl1_inv, gl2_us, gl2_range, gl2_discard,
    gl2_inv, gl2_wb, seq (nvd.h's PACKET3_RELEASE_MEM_GCR_* bits)."""
    word = 0
    for name, on in flags.items():
        bit = getattr(family.pm4, f"PACKET3_RELEASE_MEM_GCR_{name.upper()}", None)
        if bit is None:
            raise PM4Error(f"RELEASE_MEM: no cache action {name!r}")
        word |= bit if on else 0
    return word


def release_mem(addr: int, value: int, data_sel: int, int_sel: int = INT_SEL_NONE, *,
                event_type: int | None = None, event_index: int = EVENT_INDEX_END_OF_PIPE, gcr: int | None = None,
                cache_policy: int = CACHE_POLICY_BYPASS, int_ctxid: int = 0, family: Family = GFX11) -> list[int]:
    """When the event retires (by default, end of pipe after a cache flush), do the cache actions in `gcr`
    (default: the family's fence write-back), then write `value` or a timestamp to addr and optionally interrupt.

    data_sel: DATA_SEL_NONE (address unused), _VALUE_32 (4-byte aligned), _VALUE_64 or _TIMESTAMP (8-byte
    aligned; value must be 0 for timestamps). int_ctxid travels with the interrupt (KFD's event id).
    """
    p = "RELEASE_MEM"
    if event_type is None:
        event_type = family.events.CACHE_FLUSH_AND_INV_TS_EVENT
    gcr = family.fence_gcr if gcr is None else gcr
    if data_sel == DATA_SEL_VALUE_32:
        _u32(p, "value", value)
    elif data_sel == DATA_SEL_VALUE_64:
        if not 0 <= value < 1 << 64:
            raise PM4Error(f"{p}: value={value:#x} does not fit 64 bits")
    elif data_sel in (DATA_SEL_NONE, DATA_SEL_TIMESTAMP, DATA_SEL_SYS_TIMESTAMP):
        if value:
            raise PM4Error(f"{p}: value={value:#x} is not written with data_sel {data_sel}; pass 0")
    else:
        raise PM4Error(f"{p}: data_sel={data_sel} is not one this builder encodes (0 to 4)")
    align = 4 if data_sel == DATA_SEL_VALUE_32 else 8 if data_sel != DATA_SEL_NONE else 1
    lo, hi = _addr(p, "address", addr, align)
    gcr_field = family.layouts[p].field("gcr")
    if gcr & ~(gcr_field.max << gcr_field.shift):
        raise PM4Error(f"{p}: gcr={gcr:#x} has bits outside the GCR field (bits {gcr_field.shift} to "
                       f"{gcr_field.shift + gcr_field.width - 1}); build it with release_gcr()")
    b = family.pm4
    event = (b.PACKET3_RELEASE_MEM_EVENT_TYPE(_fit(p, "event_type", event_type, family)) |
             b.PACKET3_RELEASE_MEM_EVENT_INDEX(_fit(p, "event_index", event_index, family)) | gcr |
             b.PACKET3_RELEASE_MEM_CACHE_POLICY(_fit(p, "cache_policy", cache_policy, family)))
    select = (b.PACKET3_RELEASE_MEM_DATA_SEL(data_sel) |
              b.PACKET3_RELEASE_MEM_INT_SEL(_fit(p, "int_sel", int_sel, family)) |
              b.PACKET3_RELEASE_MEM_DST_SEL(DST_SEL_MEM))
    return [header(b.PACKET3_RELEASE_MEM, 7, family=family), event, select, lo, hi, value & U32, value >> 32,
            _u32(p, "int_ctxid", int_ctxid)]


def _wait_control(packet: str, func: str, mem_space: str, family: Family) -> int:
    if func not in WAIT_FUNC:
        raise PM4Error(f"{packet}: compare function {func!r} is not one of {list(WAIT_FUNC)}")
    if mem_space not in WAIT_MEM_SPACE:
        raise PM4Error(f"{packet}: mem_space {mem_space!r} is not one of {list(WAIT_MEM_SPACE)}")
    b = family.pm4
    return (b.WAIT_REG_MEM_FUNCTION(WAIT_FUNC[func]) | b.WAIT_REG_MEM_MEM_SPACE(WAIT_MEM_SPACE[mem_space]) |
            b.WAIT_REG_MEM_OPERATION(WAIT_OPERATION_WAIT) | b.WAIT_REG_MEM_ENGINE(WAIT_ENGINE_ME))


def wait_reg_mem(addr: int, ref: int, mask: int = U32, func: str = ">=", poll: int = WAIT_POLL_INTERVAL, *,
                 mem_space: str = "memory", family: Family = GFX11) -> list[int]:
    """Stall the queue until (*addr & mask) func ref, comparing 32 bits.

    mem_space "memory": addr is a 4-byte aligned GPU address. "register": addr is an 18-bit register dword
    offset (user queues normally cannot poll registers; the emulator refuses it). For 64-bit compares see
    wait_reg_mem64.
    """
    p = "WAIT_REG_MEM"
    control = _wait_control(p, func, mem_space, family)
    if mem_space == "register":
        if not 0 <= addr < 1 << WAIT_REG_ADDR_BITS:
            raise PM4Error(f"{p}: register {addr:#x} does not fit the {WAIT_REG_ADDR_BITS}-bit register address")
        lo, hi = addr, 0
    else:
        lo, hi = _addr(p, "address", addr, 4)
    return [header(family.pm4.PACKET3_WAIT_REG_MEM, 6, family=family), control, lo, hi,
            _u32(p, "reference", ref), _u32(p, "mask", mask), _fit(p, "poll_interval", poll, family)]


def wait_reg_mem64(addr: int, ref: int, mask: int = (1 << 64) - 1, func: str = ">=", poll: int = WAIT_POLL_INTERVAL,
                   *, family: Family = GFX11) -> list[int]:
    """Stall until (*addr & mask) func ref on a 64-bit word in memory (WAIT_REG_MEM64, opcode 0x93 in nvd.h).

    Layout from PAL's PM4_MEC_WAIT_REG_MEM64 (address 8-byte aligned, then 64-bit reference and mask, low word
    first), which PAL emits on gfx10 to gfx12 MEC queues. This is what the compute queue's HCQ wait uses: signals
    are 64-bit, and the 32-bit WAIT_REG_MEM would pass a wait for 2**32 + k as soon as the low word reached k.
    """
    p = "WAIT_REG_MEM64"
    control = _wait_control(p, func, "memory", family)
    lo, hi = _addr(p, "address", addr, 8)
    for name, v in (("reference", ref), ("mask", mask)):
        if not 0 <= v < 1 << 64:
            raise PM4Error(f"{p}: {name}={v:#x} does not fit 64 bits")
    return [header(family.pm4.PACKET3_WAIT_REG_MEM64, 8, family=family), control, lo, hi, ref & U32, ref >> 32,
            mask & U32, mask >> 32, _fit(p, "poll_interval", poll, family)]


def gcr_cntl(family: Family = GFX11, **fields: int) -> int:
    """ACQUIRE_MEM GCR_CNTL from field names (gli_inv, gl1_range, glm_wb, glm_inv, glk_wb, glk_inv, glv_inv,
    gl1_inv, gl2_us, gl2_range, gl2_discard, gl2_inv, gl2_wb, seq), each checked against its width."""
    word = 0
    for name, value in fields.items():
        enc = getattr(family.pm4, f"PACKET3_ACQUIRE_MEM_GCR_CNTL_{name.upper()}", None)
        if enc is None:
            raise PM4Error(f"ACQUIRE_MEM: GCR_CNTL has no field {name!r}")
        width = _gcr_cntl_widths(family)[name.upper()]
        if not 0 <= value < 1 << width:
            raise PM4Error(f"ACQUIRE_MEM: GCR_CNTL {name}={value:#x} does not fit its {width}-bit field")
        word |= enc(value)
    return word


@lru_cache(maxsize=None)
def _gcr_cntl_widths(family: Family) -> dict[str, int]:
    """Each GCR_CNTL field's width: the distance to the next field's shift (nvd.h gives shifts, not widths)."""
    prefix, b = "PACKET3_ACQUIRE_MEM_GCR_CNTL_", family.pm4
    shifts = {n[len(prefix):]: getattr(b, n)(1).bit_length() - 1 for n in dir(b) if n.startswith(prefix)}
    # RANGE_IS_PA (bit 18) follows SEQ, and the field ends there (nvd.h:267 "GCR_CNTL [18:0]").
    ends = set(shifts.values()) | {b.PACKET3_ACQUIRE_MEM_GCR_RANGE_IS_PA.bit_length() - 1,
                                   family.layouts["ACQUIRE_MEM"].field("gcr_cntl").width}
    return {n: min(e for e in ends if e > s) - s for n, s in shifts.items()}


def gcr_invalidate_all(family: Family = GFX11) -> int:
    """GCR_CNTL that writes back and invalidates every cache a kernel's inputs may sit in (amdgpu's emit_mem_sync
    set, plus a GLK write-back)."""
    return gcr_cntl(family, gli_inv=1, glk_inv=1, glk_wb=1, glm_inv=1, glm_wb=1, gl1_inv=1, glv_inv=1, gl2_inv=1,
                    gl2_wb=1)


def acquire_mem(gcr: int, poll: int = ACQUIRE_POLL_INTERVAL, *, family: Family = GFX11) -> list[int]:
    """Do the GCR_CNTL cache actions over the whole address space before later packets run (gfx10+ layout).

    Ranged acquires (COHER_BASE/SIZE with the *_RANGE fields) are not built: kernels here synchronize whole
    queues.
    """
    p = "ACQUIRE_MEM"
    return [header(family.pm4.PACKET3_ACQUIRE_MEM, 7, family=family), 0, COHER_SIZE_WHOLE & U32,
            COHER_SIZE_WHOLE >> 32, 0, 0, _fit(p, "poll_interval", poll, family), _fit(p, "gcr_cntl", gcr, family)]


def indirect_buffer(addr: int, size_dwords: int, *, chain: bool = False, cache_policy: int = CACHE_POLICY_LRU,
                    family: Family = GFX11) -> list[int]:
    """Run size_dwords words of PM4 at addr (4-byte aligned), then return here; chain=True does not return.

    The VMID field stays 0: a user queue's IBs run in the queue's own VM, which the MQD carries.
    """
    p = "INDIRECT_BUFFER"
    size = family.layouts[p].field("size")
    if not 1 <= size_dwords <= size.max:
        raise PM4Error(f"{p}: {size_dwords} dwords does not fit the {size.width}-bit size field (1 to {size.max})")
    lo, hi = _addr(p, "address", addr, 4)
    b = family.pm4
    control = (size_dwords | b.INDIRECT_BUFFER_VALID | (INDIRECT_BUFFER_CHAIN if chain else 0) |
               b.INDIRECT_BUFFER_CACHE_POLICY(_fit(p, "cache_policy", cache_policy, family)))
    return [header(b.PACKET3_INDIRECT_BUFFER, 3, family=family), lo, hi, control]


def event_write(event_type: int, event_index: int | None = None, *, family: Family = GFX11) -> list[int]:
    """Fire a pipeline event such as CS_PARTIAL_FLUSH (wait for earlier dispatches to finish).

    event_index defaults to EVENT_INDEX_CS_PARTIAL_FLUSH for CS_PARTIAL_FLUSH and EVENT_INDEX_OTHER otherwise.
    """
    p = "EVENT_WRITE"
    if event_index is None:
        event_index = (EVENT_INDEX_CS_PARTIAL_FLUSH if event_type == family.events.CS_PARTIAL_FLUSH
                       else EVENT_INDEX_OTHER)
    return [header(family.pm4.PACKET3_EVENT_WRITE, 1, family=family),
            family.pm4.EVENT_TYPE(_fit(p, "event_type", event_type, family)) |
            family.pm4.EVENT_INDEX(_fit(p, "event_index", event_index, family))]


def _word(packet: str, name: str) -> int:
    """Word offset (header = 0) of a field, for replay patching."""
    return 1 + NVD_LAYOUTS[packet].field(name).dword


# Word offsets (from the header) of the fields replay patches.
RELEASE_MEM_ADDR_WORD = _word("RELEASE_MEM", "addr_lo")
RELEASE_MEM_DATA_WORD = _word("RELEASE_MEM", "value_lo")
WAIT_REG_MEM_ADDR_WORD = _word("WAIT_REG_MEM", "addr_lo")
WAIT_REG_MEM_REF_WORD = _word("WAIT_REG_MEM", "reference")
WAIT_REG_MEM64_ADDR_WORD = _word("WAIT_REG_MEM64", "addr_lo")
WAIT_REG_MEM64_REF_WORD = _word("WAIT_REG_MEM64", "reference_lo")  # reference_hi follows: one 64-bit patch
INDIRECT_BUFFER_ADDR_WORD = _word("INDIRECT_BUFFER", "addr_lo")
DISPATCH_DIRECT_SIZE_WORD = _word("DISPATCH_DIRECT", "x")


# --- decoding ---

# Opcodes a compute queue may carry, by name; the numbers come from the family's bindings. Names missing from a
# family's bindings are skipped.
OPCODE_NAMES = ("NOP", "SET_BASE", "CLEAR_STATE", "DISPATCH_DIRECT", "DISPATCH_INDIRECT", "ATOMIC_MEM", "COND_EXEC",
                "WRITE_DATA", "COPY_DATA", "WAIT_REG_MEM", "WAIT_REG_MEM64", "INDIRECT_BUFFER", "EVENT_WRITE",
                "RELEASE_MEM", "ACQUIRE_MEM", "DMA_DATA", "SET_SH_REG", "SET_UCONFIG_REG", "SET_CONFIG_REG",
                "SET_CONTEXT_REG", "INVALIDATE_TLBS", "MAP_QUEUES", "UNMAP_QUEUES", "QUERY_STATUS", "SET_RESOURCES",
                "RUN_LIST")


def opcode_names(family: Family = GFX11) -> dict[int, str]:
    """Opcode number to name for the opcodes this decoder knows, in the family's bindings."""
    return {getattr(family.pm4, f"PACKET3_{n}"): n for n in OPCODE_NAMES if hasattr(family.pm4, f"PACKET3_{n}")}


OPCODES = opcode_names(GFX11)


@dataclass
class Packet:
    """One decoded packet: where it starts (dword index), its opcode and header count, raw words, decoded fields."""
    offset: int
    opcode: int
    count: int
    words: list[int]
    name: str
    fields: dict[str, int] = field(default_factory=dict)

    @property
    def body(self) -> list[int]:
        """The words after the header."""
        return self.words[1:]

    def __str__(self) -> str:
        return f"{self.offset:#06x} {self.name} {_summary(self)}".rstrip()


def _combine(fields: dict[str, int]) -> None:
    """Add `x` = x_lo | x_hi << 32 for every lo/hi pair of fields."""
    for name in [n[:-3] for n in fields if n.endswith("_lo") and f"{n[:-3]}_hi" in fields]:
        fields[name] = fields[f"{name}_lo"] | fields[f"{name}_hi"] << 32


def _fields(name: str, body: list[int], family: Family) -> dict[str, int]:
    layout = family.layouts.get(name)
    if layout is None:
        return {}
    out = {f.name: f.get(body) for f in layout.fields if f.dword < len(body)}
    _combine(out)
    if name == "SET_SH_REG":
        out["reg"] = out["reg_offset"] + family.pm4.PACKET3_SET_SH_REG_START
        out.update({f"value{i}": v for i, v in enumerate(body[1:])})
    if name == "EVENT_WRITE" and len(body) == 3:
        out["addr"] = body[1] | body[2] << 32
    return out


def decode(words: Sequence[int], start: int = 0, *, family: Family = GFX11) -> list[Packet]:
    """Decode a PM4 stream from words[start:] into packets.

    Raises PM4DecodeError naming the dword offset for: a type-0/1/2 header (compute queues here carry type 3
    only; amdgpu pads gfx10+ queues with type-3 NOPs, not type-2 filler), a count running past the end of the
    stream, or a known opcode with a body length its layout does not allow.
    """
    b, names = family.pm4, opcode_names(family)
    out, i = [], start
    while i < len(words):
        h = words[i]
        kind = b.CP_PACKET_GET_TYPE(h)
        if kind != b.PACKET_TYPE3:
            what = "type-2 filler" if kind == b.PACKET_TYPE2 else f"a type-{kind} packet"
            raise PM4DecodeError(f"dword {i}: header {h:#010x} is {what}; compute queues take type-3 packets only")
        opcode, count = b.CP_PACKET3_GET_OPCODE(h), b.CP_PACKET_GET_COUNT(h)
        name = names.get(opcode, f"OP_{opcode:#04x}")
        if opcode == b.PACKET3_NOP and count == MAX_COUNT:
            out.append(Packet(i, opcode, count, [h], name))
            i += 1
            continue
        n = count + 1
        if i + 1 + n > len(words):
            raise PM4DecodeError(f"dword {i}: {name} has {n} body dwords but the stream ends after "
                                 f"{len(words) - i - 1}")
        body = list(words[i + 1:i + 1 + n])
        layout = family.layouts.get(name)
        if layout is not None and not layout.fits(n):
            raise PM4DecodeError(f"dword {i}: {name} with {n} body dwords; its layout takes "
                                 f"{layout.lengths or f'at least {layout.min_length}'}")
        out.append(Packet(i, opcode, count, [h] + body, name, _fields(name, body, family)))
        i += 1 + n
    return out


_SKIP = {"reg_offset"}  # shown through a friendlier field


def _summary(p: Packet) -> str:
    """Key fields in hex: combined addresses instead of their halves; raw body words for unknown opcodes."""
    if not p.fields:
        body = p.body
        if p.name == "NOP" or not body:
            return f"pad={len(body)}" if p.name == "NOP" else ""
        more = f" +{len(body) - 8}" if len(body) > 8 else ""
        return "body=[" + " ".join(f"{w:#x}" for w in body[:8]) + "]" + more
    parts = []
    for k, v in p.fields.items():
        if k in _SKIP or (p.name == "SET_SH_REG" and k.startswith("value")) or f"{k}_lo" in p.fields:
            continue
        if (k.endswith("_lo") or k.endswith("_hi")) and k[:-3] in p.fields:
            if k.endswith("_lo"):  # the combined value, where its low half sits in the layout
                parts.append(f"{k[:-3]}={p.fields[k[:-3]]:#x}")
            continue
        parts.append(f"{k}={v:#x}")
    if p.name == "SET_SH_REG":
        parts.append("values=[" + " ".join(f"{v:#x}" for v in p.body[1:]) + "]")
    return " ".join(parts)


def format_packets(packets: Sequence[Packet]) -> str:
    """One line per packet for hang reports: dword offset, opcode name and key fields in hex."""
    return "\n".join(str(p) for p in packets)
