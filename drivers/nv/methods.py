"""NVIDIA GPFIFO pushbuffer methods (host, compute and copy classes): encoders and a decoder.

Encoders return the 32-bit words of a pushbuffer segment. Every offset, field position and value name comes from
the generated class tables (autogen.nv_classes, from autogen/include/nv/classes.h, which names each fact's upstream
header). The method header (count, subchannel, method address >> 2, secondary opcode) is clc56f.h's NVC56F_DMA_*
layout, which all GPFIFO classes since Fermi share (NV906F); GPFIFO entries are clc56f.h's NVC56F_GP_ENTRY0/1.

Host methods are encoded with the Ampere host class's (NVC56F) value names: our Hopper/Blackwell host sections
(clc86f.h, clc96f.h) carry the same offsets and field positions but not every value name (PAYLOAD_SIZE_64BIT,
RELEASE_TIMESTAMP_EN, ACQ_STRICT_GEQ ...); tests assert that what those sections do give agrees. Widths that do
differ by class (the semaphore address's upper bits) are read from the class in use.

The decoder names methods from the same tables: offsets below 0x100 are the channel (host) class's methods (every
method clc56f.h defines lies below 0x100); higher offsets belong to the class bound to the subchannel, bound by
SET_OBJECT in the stream or by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

from autogen import nv_classes as C


class NVMethodError(ValueError):
    """A method or entry cannot be encoded from these values; the message names the method and the field."""


class NVDecodeError(ValueError):
    """A malformed pushbuffer (or, when strict, an unknown method); the message names the word offset."""


U32 = 0xFFFFFFFF
HOST_METHOD_LIMIT = 0x100  # host (channel class) methods lie below this offset (clc56f.h: SET_OBJECT 0x0 .. 0x78)

# Class id -> the prefix of its names in autogen.nv_classes.
CLASS_PREFIX: dict[int, str] = {
    C.AMPERE_CHANNEL_GPFIFO_A: "NVC56F", C.HOPPER_CHANNEL_GPFIFO_A: "NVC86F", C.BLACKWELL_CHANNEL_GPFIFO_A: "NVC96F",
    C.AMPERE_COMPUTE_A: "NVC6C0", C.AMPERE_COMPUTE_B: "NVC7C0", C.ADA_COMPUTE_A: "NVC9C0",
    C.HOPPER_COMPUTE_A: "NVCBC0", C.BLACKWELL_COMPUTE_A: "NVCDC0",
    C.AMPERE_DMA_COPY_A: "NVC6B5", C.AMPERE_DMA_COPY_B: "NVC7B5", C.HOPPER_DMA_COPY_A: "NVC8B5",
    C.BLACKWELL_DMA_COPY_A: "NVC9B5",
}
HOST_CLASSES = (C.AMPERE_CHANNEL_GPFIFO_A, C.HOPPER_CHANNEL_GPFIFO_A, C.BLACKWELL_CHANNEL_GPFIFO_A)
COMPUTE_CLASSES = (C.AMPERE_COMPUTE_A, C.AMPERE_COMPUTE_B, C.ADA_COMPUTE_A, C.HOPPER_COMPUTE_A,
                   C.BLACKWELL_COMPUTE_A)
COPY_CLASSES = (C.AMPERE_DMA_COPY_A, C.AMPERE_DMA_COPY_B, C.HOPPER_DMA_COPY_A, C.BLACKWELL_DMA_COPY_A)

# Subchannels this driver binds its engines to (our choice; any of the 8 works once SET_OBJECT binds it).
SUBCH_COMPUTE = 1
SUBCH_COPY = 4

# Method header layout, clc56f.h NVC56F_DMA_*.
SEC_OP = {"inc": C.NVC56F_DMA_SEC_OP_INC_METHOD, "non_inc": C.NVC56F_DMA_SEC_OP_NON_INC_METHOD,
          "one_inc": C.NVC56F_DMA_SEC_OP_ONE_INC, "immd": C.NVC56F_DMA_SEC_OP_IMMD_DATA_METHOD}
MAX_COUNT = (1 << C.NVC56F_DMA_METHOD_COUNT_WIDTH) - 1
MAX_IMMEDIATE = (1 << C.NVC56F_DMA_IMMD_DATA_WIDTH) - 1
MAX_METHOD = ((1 << C.NVC56F_DMA_METHOD_ADDRESS_WIDTH) - 1) << 2  # the header holds the byte offset >> 2
NUM_SUBCHANNELS = C.NVC56F_NUMBER_OF_SUBCHANNELS

# A copy's LINE_LENGTH_IN is 32 bits (clc6b5.h LINE_LENGTH_IN_VALUE 31:0). Longer copies are split into chunks of
# at most this many bytes: the largest 4 KiB multiple that fits, so every chunk but the last stays page aligned.
COPY_MAX_LINE = ((1 << C.NVC6B5_LINE_LENGTH_IN_VALUE_WIDTH) - 1) & ~0xFFF
QMD_ALIGN = 1 << 8  # SEND_PCAS_A carries QMD_ADDRESS_SHIFTED8


# --- field helpers over the generated tables ---

def _const(prefix: str, name: str) -> int:
    value = getattr(C, f"{prefix}_{name}", None)
    if value is None:
        raise NVMethodError(f"{prefix}: the class tables have no {name}")
    return value


def field_width(prefix: str, method: str, fld: str) -> int:
    """The width in bits of a method's field, from the class tables."""
    return _const(prefix, f"{method}_{fld}_WIDTH")


def pack(prefix: str, method: str, **fields: int) -> int:
    """A method's value from field values, each checked against its width (field names as upstream, any case)."""
    word = 0
    for fld, value in fields.items():
        key = f"{method}_{fld.upper()}"
        shift, width = getattr(C, f"{prefix}_{key}_SHIFT", None), getattr(C, f"{prefix}_{key}_WIDTH", None)
        if shift is None or width is None:
            raise NVMethodError(f"{prefix}_{method}: no field {fld!r}")
        if not 0 <= value < 1 << width:
            raise NVMethodError(f"{prefix}_{method}: {fld}={value:#x} does not fit its {width}-bit field")
        word |= value << shift
    return word


def _value(prefix: str, method: str, fld: str, name: str) -> int:
    """A named value of a field (e.g. LAUNCH_DMA, FLUSH_ENABLE, TRUE)."""
    return _const(prefix, f"{method}_{fld}_{name}")


def _u32(what: str, value: int) -> int:
    if not 0 <= value <= U32:
        raise NVMethodError(f"{what}={value:#x} does not fit 32 bits")
    return value


def _addr(what: str, addr: int, align: int, hi_width: int) -> tuple[int, int]:
    """The low and high words of a GPU address whose upper word holds hi_width bits."""
    if not 0 <= addr < 1 << (32 + hi_width) or addr % align:
        raise NVMethodError(f"{what} {addr:#x} must be a {align}-byte aligned address of at most {32 + hi_width} bits")
    return addr & U32, addr >> 32


def prefix_of(cls: int) -> str:
    try:
        return CLASS_PREFIX[cls]
    except KeyError:
        raise NVMethodError(f"class {cls:#06x} has no method table here; known: "
                            f"{', '.join(f'{c:#06x}' for c in CLASS_PREFIX)}") from None


# --- method headers ---

def header(kind: str, subchannel: int, method: int, count: int) -> int:
    """A method header: kind "inc" (each word to the next method), "non_inc" (all to one method), "one_inc" (the
    first word to method, the rest to method + 4), or "immd" (count is the 13-bit immediate value itself)."""
    if kind not in SEC_OP:
        raise NVMethodError(f"method header: kind {kind!r} is not one of {list(SEC_OP)}")
    if not 0 <= subchannel < NUM_SUBCHANNELS:
        raise NVMethodError(f"method header: subchannel {subchannel} is not 0..{NUM_SUBCHANNELS - 1}")
    if not 0 <= method <= MAX_METHOD or method % 4:
        raise NVMethodError(f"method header: method {method:#x} must be a 4-byte aligned offset up to {MAX_METHOD:#x}")
    if kind == "immd":
        if not 0 <= count <= MAX_IMMEDIATE:
            raise NVMethodError(f"immediate method {method:#x}: value {count:#x} does not fit 13 bits")
    elif not 1 <= count <= MAX_COUNT:
        raise NVMethodError(f"method {method:#x}: count {count} is not 1..{MAX_COUNT}")
    return ((SEC_OP[kind] << C.NVC56F_DMA_SEC_OP_SHIFT) | (count << C.NVC56F_DMA_METHOD_COUNT_SHIFT) |
            (subchannel << C.NVC56F_DMA_METHOD_SUBCHANNEL_SHIFT) | ((method >> 2) << C.NVC56F_DMA_METHOD_ADDRESS_SHIFT))


def inc(subchannel: int, method: int, *values: int) -> list[int]:
    """Write values to consecutive methods starting at `method`."""
    return [header("inc", subchannel, method, len(values)), *(_u32(f"method {method:#x} data", v) for v in values)]


def non_inc(subchannel: int, method: int, *values: int) -> list[int]:
    """Write every value to the one method (a data port such as LOAD_INLINE_DATA)."""
    return [header("non_inc", subchannel, method, len(values)), *(_u32(f"method {method:#x} data", v) for v in values)]


def immediate(subchannel: int, method: int, value: int) -> list[int]:
    """A one-word method whose value (at most 13 bits) rides in the header."""
    return [header("immd", subchannel, method, value)]


# --- GPFIFO entries ---

@dataclass(frozen=True)
class GPFifoEntry:
    address: int  # of the pushbuffer segment, 4-byte aligned
    length: int  # in 32-bit words
    sync_wait: bool = False
    subroutine: bool = False
    conditional_fetch: bool = False


GP_ADDR_BITS = 32 + C.NVC56F_GP_ENTRY1_GET_HI_WIDTH
MAX_GP_LENGTH = (1 << C.NVC56F_GP_ENTRY1_LENGTH_WIDTH) - 1


def gpfifo_entry(address: int, length: int, *, sync_wait: bool = False, subroutine: bool = False,
                 conditional_fetch: bool = False) -> int:
    """The 64-bit GPFIFO entry (ENTRY0 in the low word) that runs `length` words of pushbuffer at `address`."""
    if not 0 <= address < 1 << GP_ADDR_BITS or address % 4:
        raise NVMethodError(f"GPFIFO entry: address {address:#x} must be 4-byte aligned and below 2**{GP_ADDR_BITS}")
    if not 1 <= length <= MAX_GP_LENGTH:
        raise NVMethodError(f"GPFIFO entry: length {length} words is not 1..{MAX_GP_LENGTH}")
    e0 = (address & U32) | int(conditional_fetch) << C.NVC56F_GP_ENTRY0_FETCH_SHIFT  # GET is address 31:2 in place
    e1 = ((address >> 32) << C.NVC56F_GP_ENTRY1_GET_HI_SHIFT | int(subroutine) << C.NVC56F_GP_ENTRY1_LEVEL_SHIFT |
          length << C.NVC56F_GP_ENTRY1_LENGTH_SHIFT | int(sync_wait) << C.NVC56F_GP_ENTRY1_SYNC_SHIFT)
    return e1 << 32 | e0


def decode_gpfifo_entry(entry: int) -> GPFifoEntry:
    """The fields of a 64-bit GPFIFO entry."""
    def f(word: int, shift: int, width: int) -> int:
        return (word >> shift) & ((1 << width) - 1)
    e0, e1 = entry & U32, entry >> 32
    get = f(e0, C.NVC56F_GP_ENTRY0_GET_SHIFT, C.NVC56F_GP_ENTRY0_GET_WIDTH) << C.NVC56F_GP_ENTRY0_GET_SHIFT
    hi = f(e1, C.NVC56F_GP_ENTRY1_GET_HI_SHIFT, C.NVC56F_GP_ENTRY1_GET_HI_WIDTH)
    return GPFifoEntry(hi << 32 | get, f(e1, C.NVC56F_GP_ENTRY1_LENGTH_SHIFT, C.NVC56F_GP_ENTRY1_LENGTH_WIDTH),
                       bool(f(e1, C.NVC56F_GP_ENTRY1_SYNC_SHIFT, 1)), bool(f(e1, C.NVC56F_GP_ENTRY1_LEVEL_SHIFT, 1)),
                       bool(f(e0, C.NVC56F_GP_ENTRY0_FETCH_SHIFT, 1)))


# --- host methods ---

H = "NVC56F"  # value names for host methods (see the module docstring)


def set_object(subchannel: int, cls: int) -> list[int]:
    """Bind class `cls` (e.g. AMPERE_COMPUTE_B) to a subchannel."""
    prefix_of(cls)
    return inc(subchannel, C.NVC56F_SET_OBJECT, pack(H, "SET_OBJECT", nvclass=cls))


def _sem_addr(addr: int, align: int, host: int) -> tuple[int, int]:
    p = prefix_of(host)
    lo, hi = _addr("host semaphore address", addr, align, field_width(p, "SEM_ADDR_HI", "OFFSET"))
    return lo, hi


def semaphore_release(addr: int, payload: int, *, timestamp: bool = False, wfi: bool = True, subchannel: int = 0,
                      host: int = C.AMPERE_CHANNEL_GPFIFO_A) -> list[int]:
    """Write the 64-bit payload to addr (8-byte aligned) once earlier work is done (wfi: wait for idle first);
    timestamp=True also writes the release time (SEM_EXECUTE_RELEASE_TIMESTAMP) after the payload."""
    if not 0 <= payload < 1 << 64:
        raise NVMethodError(f"semaphore release: payload {payload:#x} does not fit 64 bits")
    lo, hi = _sem_addr(addr, 8, host)
    execute = pack(H, "SEM_EXECUTE", operation=C.NVC56F_SEM_EXECUTE_OPERATION_RELEASE,
                   release_wfi=C.NVC56F_SEM_EXECUTE_RELEASE_WFI_EN if wfi else C.NVC56F_SEM_EXECUTE_RELEASE_WFI_DIS,
                   payload_size=C.NVC56F_SEM_EXECUTE_PAYLOAD_SIZE_64BIT,
                   release_timestamp=(C.NVC56F_SEM_EXECUTE_RELEASE_TIMESTAMP_EN if timestamp
                                      else C.NVC56F_SEM_EXECUTE_RELEASE_TIMESTAMP_DIS))
    return inc(subchannel, C.NVC56F_SEM_ADDR_LO, lo, hi, payload & U32, payload >> 32, execute)


def semaphore_acquire(addr: int, value: int, *, circular: bool = False, switch_tsg: bool = True, subchannel: int = 0,
                      host: int = C.AMPERE_CHANNEL_GPFIFO_A) -> list[int]:
    """Stall the channel until the 64-bit word at addr is >= value (ACQ_STRICT_GEQ; circular=True: ACQ_CIRC_GEQ, a
    wrapping compare). switch_tsg lets the scheduler run other channels while this one waits."""
    if not 0 <= value < 1 << 64:
        raise NVMethodError(f"semaphore acquire: value {value:#x} does not fit 64 bits")
    lo, hi = _sem_addr(addr, 8, host)
    op = C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_CIRC_GEQ if circular else C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_STRICT_GEQ
    execute = pack(H, "SEM_EXECUTE", operation=op, payload_size=C.NVC56F_SEM_EXECUTE_PAYLOAD_SIZE_64BIT,
                   acquire_switch_tsg=(C.NVC56F_SEM_EXECUTE_ACQUIRE_SWITCH_TSG_EN if switch_tsg
                                       else C.NVC56F_SEM_EXECUTE_ACQUIRE_SWITCH_TSG_DIS))
    return inc(subchannel, C.NVC56F_SEM_ADDR_LO, lo, hi, value & U32, value >> 32, execute)


def non_stall_interrupt(handle: int = 0, *, subchannel: int = 0) -> list[int]:
    """Raise the channel's non-stalling interrupt (what RM delivers as the channel's completion event)."""
    return inc(subchannel, C.NVC56F_NON_STALL_INTERRUPT, _u32("NON_STALL_INTERRUPT handle", handle))


def wait_for_idle(*, all_veids: bool = True, subchannel: int = 0) -> list[int]:
    """WFI: wait until earlier work on the channel (all VEIDs, or the current one) is idle."""
    scope = C.NVC56F_WFI_SCOPE_ALL if all_veids else C.NVC56F_WFI_SCOPE_CURRENT_VEID
    return inc(subchannel, C.NVC56F_WFI, pack(H, "WFI", scope=scope))


# --- compute methods ---

def launch_qmd(qmd_addr: int, *, cls: int = C.AMPERE_COMPUTE_B, subchannel: int = SUBCH_COMPUTE,
               action: str = "INVALIDATE_COPY_SCHEDULE", pcas2: bool = True) -> list[int]:
    """Launch the QMD at qmd_addr (256-byte aligned): SEND_PCAS_A with the address, then SEND_SIGNALING_PCAS2_B
    with a PCAS_ACTION (default: invalidate, copy and schedule it), or with pcas2=False the older
    SEND_SIGNALING_PCAS_B with INVALIDATE and SCHEDULE set."""
    p = prefix_of(cls)
    if not 0 <= qmd_addr < 1 << (32 + 8) or qmd_addr % QMD_ALIGN:
        raise NVMethodError(f"SEND_PCAS_A: QMD address {qmd_addr:#x} must be {QMD_ALIGN}-byte aligned and 40 bits")
    words = inc(subchannel, _const(p, "SEND_PCAS_A"), pack(p, "SEND_PCAS_A", qmd_address_shifted8=qmd_addr >> 8))
    if pcas2:
        b = pack(p, "SEND_SIGNALING_PCAS2_B", pcas_action=_value(p, "SEND_SIGNALING_PCAS2_B", "PCAS_ACTION", action))
        return words + inc(subchannel, _const(p, "SEND_SIGNALING_PCAS2_B"), b)
    b = pack(p, "SEND_SIGNALING_PCAS_B", invalidate=1, schedule=1)
    return words + inc(subchannel, _const(p, "SEND_SIGNALING_PCAS_B"), b)


def invalidate_shader_caches(*, instruction: bool = False, data: bool = False, constant: bool = False,
                             locks: bool = False, flush_data: bool = False, no_wfi: bool = False,
                             cls: int = C.AMPERE_COMPUTE_B, subchannel: int = SUBCH_COMPUTE) -> list[int]:
    """INVALIDATE_SHADER_CACHES (waits for idle first), or with no_wfi INVALIDATE_SHADER_CACHES_NO_WFI, whose
    fields are INSTRUCTION, GLOBAL_DATA (given here as data) and CONSTANT only."""
    p = prefix_of(cls)
    if no_wfi:
        if locks or flush_data:
            raise NVMethodError("INVALIDATE_SHADER_CACHES_NO_WFI has no LOCKS or FLUSH_DATA field")
        m = "INVALIDATE_SHADER_CACHES_NO_WFI"
        return inc(subchannel, _const(p, m), pack(p, m, instruction=int(instruction), global_data=int(data),
                                                  constant=int(constant)))
    m = "INVALIDATE_SHADER_CACHES"
    return inc(subchannel, _const(p, m), pack(p, m, instruction=int(instruction), data=int(data),
                                              constant=int(constant), locks=int(locks), flush_data=int(flush_data)))


def set_shader_local_memory_window(base: int, *, cls: int = C.AMPERE_COMPUTE_B,
                                   subchannel: int = SUBCH_COMPUTE) -> list[int]:
    """Where local memory appears in the shader's generic address space (SET_SHADER_LOCAL_MEMORY_WINDOW_A/B)."""
    p = prefix_of(cls)
    lo, hi = _addr("local memory window", base, 1, field_width(p, "SET_SHADER_LOCAL_MEMORY_WINDOW_A",
                                                                "BASE_ADDRESS_UPPER"))
    return inc(subchannel, _const(p, "SET_SHADER_LOCAL_MEMORY_WINDOW_A"), hi, lo)


def set_shader_shared_memory_window(base: int, *, cls: int = C.AMPERE_COMPUTE_B,
                                    subchannel: int = SUBCH_COMPUTE) -> list[int]:
    """Where shared memory appears in the shader's generic address space (SET_SHADER_SHARED_MEMORY_WINDOW_A/B)."""
    p = prefix_of(cls)
    lo, hi = _addr("shared memory window", base, 1, field_width(p, "SET_SHADER_SHARED_MEMORY_WINDOW_A",
                                                                 "BASE_ADDRESS_UPPER"))
    return inc(subchannel, _const(p, "SET_SHADER_SHARED_MEMORY_WINDOW_A"), hi, lo)


def set_shader_local_memory(address: int, *, cls: int = C.AMPERE_COMPUTE_B,
                            subchannel: int = SUBCH_COMPUTE) -> list[int]:
    """The GPU address of the local memory (scratch) backing store (SET_SHADER_LOCAL_MEMORY_A/B)."""
    p = prefix_of(cls)
    lo, hi = _addr("local memory", address, 1, field_width(p, "SET_SHADER_LOCAL_MEMORY_A", "ADDRESS_UPPER"))
    return inc(subchannel, _const(p, "SET_SHADER_LOCAL_MEMORY_A"), hi, lo)


def set_shader_local_memory_size(size: int, max_sm_count: int, *, cls: int = C.AMPERE_COMPUTE_B,
                                 subchannel: int = SUBCH_COMPUTE) -> list[int]:
    """The local memory backing store's size in bytes and the SM count it is sized for
    (SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A/B/C)."""
    p = prefix_of(cls)
    m = "SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_"
    up = field_width(p, m + "A", "SIZE_UPPER")
    if not 0 <= size < 1 << (32 + up):
        raise NVMethodError(f"{m}A/B: size {size:#x} does not fit {32 + up} bits")
    return inc(subchannel, _const(p, m + "A"), pack(p, m + "A", size_upper=size >> 32),
               pack(p, m + "B", size_lower=size & U32), pack(p, m + "C", max_sm_count=max_sm_count))


# --- copy engine methods ---

def _launch_dma(p: str, *, pipelined: bool, flush: bool, semaphore: str) -> dict[str, int]:
    m = "LAUNCH_DMA"
    fields = {
        "data_transfer_type": _value(p, m, "DATA_TRANSFER_TYPE", "PIPELINED" if pipelined else "NON_PIPELINED"),
        "flush_enable": _value(p, m, "FLUSH_ENABLE", "TRUE" if flush else "FALSE"),
        "semaphore_type": _value(p, m, "SEMAPHORE_TYPE", semaphore),
        "src_memory_layout": _value(p, m, "SRC_MEMORY_LAYOUT", "PITCH"),
        "dst_memory_layout": _value(p, m, "DST_MEMORY_LAYOUT", "PITCH"),
        "multi_line_enable": _value(p, m, "MULTI_LINE_ENABLE", "FALSE"),
    }
    return fields


def copy(dst: int, src: int, nbytes: int, *, cls: int = C.AMPERE_DMA_COPY_B, subchannel: int = SUBCH_COPY,
         pipelined: bool = False, flush: bool = True, semaphore: tuple[int, int] | None = None,
         max_line: int = COPY_MAX_LINE) -> list[int]:
    """Copy nbytes from src to dst (virtual addresses, pitch layout, one line per LAUNCH_DMA), split into lines of at
    most max_line bytes. The last launch flushes (flush=True) and, given semaphore=(addr, payload), releases it:
    a one-word (32-bit) release, or a two-word (64-bit payload) one where the class has SEMAPHORE_PAYLOAD_SIZE."""
    p = prefix_of(cls)
    if nbytes < 1:
        raise NVMethodError(f"copy: nothing to copy ({nbytes} bytes)")
    if not 1 <= max_line <= U32:
        raise NVMethodError(f"copy: max_line {max_line:#x} does not fit LINE_LENGTH_IN (32 bits)")
    up = field_width(p, "OFFSET_IN_UPPER", "UPPER")
    for what, a in (("source", src), ("destination", dst)):
        _addr(f"copy {what}", a, 1, up)
        _addr(f"copy {what} end", a + nbytes - 1, 1, up)
    sem_words: list[int] = []
    sem_type, sem_size = "NONE", None
    if semaphore is not None:
        s_addr, payload = semaphore
        two_word = getattr(C, f"{p}_LAUNCH_DMA_SEMAPHORE_PAYLOAD_SIZE_TWO_WORD", None) is not None
        if not 0 <= payload < 1 << (64 if two_word else 32):
            raise NVMethodError(f"{p}: semaphore payload {payload:#x} does not fit {64 if two_word else 32} bits")
        lo, hi = _addr("copy semaphore", s_addr, 8 if two_word else 4, field_width(p, "SET_SEMAPHORE_A", "UPPER"))
        values = [hi, lo, payload & U32] + ([payload >> 32] if two_word else [])
        sem_words = inc(subchannel, _const(p, "SET_SEMAPHORE_A"), *values)
        sem_type = "RELEASE_ONE_WORD_SEMAPHORE"
        if two_word:
            sem_size = _value(p, "LAUNCH_DMA", "SEMAPHORE_PAYLOAD_SIZE", "TWO_WORD")
    out: list[int] = []
    done = 0
    while done < nbytes:
        n = min(max_line, nbytes - done)
        last = done + n == nbytes
        s, d = src + done, dst + done
        out += inc(subchannel, _const(p, "OFFSET_IN_UPPER"), s >> 32, s & U32, d >> 32, d & U32)
        out += inc(subchannel, _const(p, "LINE_LENGTH_IN"), n, 1)
        fields = _launch_dma(p, pipelined=pipelined, flush=flush and last,
                             semaphore=sem_type if last else "NONE")
        if last and sem_size is not None:
            fields["semaphore_payload_size"] = sem_size
        if last:
            out += sem_words
        out += inc(subchannel, _const(p, "LAUNCH_DMA"), pack(p, "LAUNCH_DMA", **fields))
        done += n
    return out


# --- decoder ---

@dataclass(frozen=True)
class Method:
    subchannel: int
    method: int  # byte offset
    name: str  # upstream name without the class prefix, or "UNKNOWN(<class prefix> 0x...)"
    value: int
    cls: int | None = None  # the class whose table named it

    @property
    def known(self) -> bool:
        return not self.name.startswith("UNKNOWN")

    def fields(self) -> dict[str, int]:
        """The value split into the method's fields (lowercase upstream names); {} for unknown methods."""
        if not self.known or self.cls is None:
            return {}
        return unpack(CLASS_PREFIX[self.cls], self.name, self.value)


_NOT_METHODS = ("GP_ENTRY", "DMA_", "NUMBER_OF_", "NV_USERMODE")


@lru_cache(maxsize=None)
def method_table(prefix: str) -> dict[int, str]:
    """offset -> method name for a class prefix: names with no _SHIFT/_WIDTH of their own that are not a field's
    value name (no shorter name of theirs is a field)."""
    names = {n[len(prefix) + 1:]: getattr(C, n) for n in dir(C) if n.startswith(prefix + "_")}
    fields = {n[:-len("_SHIFT")] for n in names if n.endswith("_SHIFT")}
    table: dict[int, str] = {}
    for name, value in names.items():
        if (not isinstance(value, int) or name.endswith(("_SHIFT", "_WIDTH")) or name in fields
                or name.startswith(_NOT_METHODS) or value % 4 or not 0 <= value <= MAX_METHOD):
            continue
        parts = name.split("_")
        if any("_".join(parts[:i]) in fields for i in range(1, len(parts))):
            continue  # a value name such as LAUNCH_DMA_FLUSH_ENABLE_TRUE
        if value not in table or len(name) < len(table[value]):
            table[value] = name
    return table


@lru_cache(maxsize=None)
def _field_table(prefix: str, method: str) -> tuple[tuple[str, int, int], ...]:
    head = f"{prefix}_{method}_"
    out = []
    for n in dir(C):
        if n.startswith(head) and n.endswith("_SHIFT"):
            fld = n[len(head):-len("_SHIFT")]
            parts = fld.split("_")
            methods = set(method_table(prefix).values())
            if any("_".join([method, *parts[:k]]) in methods for k in range(1, len(parts) + 1)):
                continue  # a longer method's field, e.g. INVALIDATE_SHADER_CACHES_NO_WFI_* or SET_SEMAPHORE_PAYLOAD_UPPER_*
            width = getattr(C, f"{head}{fld}_WIDTH", None)
            if isinstance(getattr(C, n), int) and width is not None:
                out.append((fld.lower(), getattr(C, n), width))
    return tuple(out)


def unpack(prefix: str, method: str, value: int) -> dict[str, int]:
    """A method value split into its fields. Fields named after a longer method are left out, and a field whose
    name extends another's (X and X_Y) is reported under both names as upstream defines both."""
    return {f: (value >> s) & ((1 << w) - 1) for f, s, w in _field_table(prefix, method)}


def decode(words: Sequence[int], classes: Mapping[int, int] | None = None, *,
           host: int = C.AMPERE_CHANNEL_GPFIFO_A, strict: bool = False) -> list[Method]:
    """The methods a pushbuffer writes, in order. `classes` binds subchannels to class ids up front; SET_OBJECT in
    the stream binds them too. Unknown methods are named UNKNOWN(...) (strict=True raises instead)."""
    bound = dict(classes or {})
    out: list[Method] = []
    i = 0
    while i < len(words):
        h = words[i]
        if not 0 <= h <= U32:
            raise NVDecodeError(f"word {i}: {h:#x} is not a 32-bit word")
        op = (h >> C.NVC56F_DMA_SEC_OP_SHIFT) & ((1 << C.NVC56F_DMA_SEC_OP_WIDTH) - 1)
        sub = (h >> C.NVC56F_DMA_METHOD_SUBCHANNEL_SHIFT) & ((1 << C.NVC56F_DMA_METHOD_SUBCHANNEL_WIDTH) - 1)
        base = ((h >> C.NVC56F_DMA_METHOD_ADDRESS_SHIFT) & ((1 << C.NVC56F_DMA_METHOD_ADDRESS_WIDTH) - 1)) << 2
        count = (h >> C.NVC56F_DMA_METHOD_COUNT_SHIFT) & MAX_COUNT
        if op == SEC_OP["immd"]:
            data, offsets = [count], [base]
            i += 1
        elif op in (SEC_OP["inc"], SEC_OP["non_inc"], SEC_OP["one_inc"]):
            if i + 1 + count > len(words):
                raise NVDecodeError(f"word {i}: header {h:#010x} wants {count} data words, "
                                    f"{len(words) - i - 1} remain")
            data = list(words[i + 1:i + 1 + count])
            if op == SEC_OP["inc"]:
                offsets = [base + 4 * k for k in range(count)]
            elif op == SEC_OP["non_inc"]:
                offsets = [base] * count
            else:
                offsets = [base] + [base + 4] * (count - 1)
            i += 1 + count
        else:
            raise NVDecodeError(f"word {i}: header {h:#010x} has secondary opcode {op}, which is not a method "
                                f"header this decoder reads (inc 1, non_inc 3, immd 4, one_inc 5)")
        for off, value in zip(offsets, data):
            cls = host if off < HOST_METHOD_LIMIT else bound.get(sub)
            name = method_table(CLASS_PREFIX[cls]).get(off) if cls in CLASS_PREFIX else None
            if name is None:
                where = CLASS_PREFIX.get(cls, "unbound subchannel" if cls is None else f"class {cls:#06x}")
                name = f"UNKNOWN({where} {off:#06x})"
                if strict:
                    raise NVDecodeError(f"subchannel {sub}: method {off:#06x} is not in the {where} table")
            if off == C.NVC56F_SET_OBJECT and name == "SET_OBJECT":
                bound[sub] = value & ((1 << C.NVC56F_SET_OBJECT_NVCLASS_WIDTH) - 1)
            out.append(Method(sub, off, name, value, cls if not name.startswith("UNKNOWN") else None))
    return out


def concat(*parts: Iterable[int]) -> list[int]:
    """Join encoder outputs into one pushbuffer."""
    return [w for part in parts for w in part]
