"""The emulated NVIDIA GPU's engines as one channel sees them: the compute class (AMPERE_COMPUTE_B c7c0, ADA_COMPUTE_A
c9c0, HOPPER_COMPUTE_A cbc0) and the copy engine (AMPERE_DMA_COPY_B c7b5, HOPPER_DMA_COPY_A c8b5).

Each engine object holds one channel's engine context (the state its methods set) and turns a launch method into
work: a `Work` item the channel runs at once, or, in hazard mode, later (see pfifo.py). Methods are decoded with
this module's own reading of the class headers (autogen.nv_classes, transcribed from clc7c0.h / clcbc0.h /
clc7b5.h / clc8b5.h), never the driver's encoders. A method or field value this emulator does not implement is an
error that says so, not a silent no-op.

Kernels: NVIDIA's SASS has no public semantics, so a launch runs the kernel's checked host build carried in the
cubin the QMD's program address points into (compiler.emulation: parse_nv_emulation_records, load_checked_host);
every buffer access is checked against the VA space and the first bad one is an MMU fault at its GPU VA.
"""
from __future__ import annotations

import ctypes
import hashlib
import struct
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from autogen import nv_classes as C
from autogen import nv_rm as R
from emu.nv.qmd import QMD_BYTES, qmd_major, read_qmd
from emu.nv.vaspace import MMUFault, VASpace

if TYPE_CHECKING:
    from emu.nv.pfifo import Channel

COMPUTE_CLASSES = {C.AMPERE_COMPUTE_B: "c7c0", C.ADA_COMPUTE_A: "c9c0", C.HOPPER_COMPUTE_A: "cbc0"}
COPY_CLASSES = {C.AMPERE_DMA_COPY_B: "c7b5", C.HOPPER_DMA_COPY_A: "c8b5"}
# QMD major versions each compute class reads: clc6c0qmd.h/clc9c0qmd.h define V03_00; clcbc0qmd.h V03_00 and V04_00.
QMD_MAJORS = {C.AMPERE_COMPUTE_B: (3,), C.ADA_COMPUTE_A: (3,), C.HOPPER_COMPUTE_A: (3, 4)}


@dataclass(frozen=True)
class ArchLimits:
    """Per-block launch limits (CUDA C++ Programming Guide, "Technical Specifications per Compute Capability")."""
    max_shared_per_block: int  # bytes of shared memory one block may use (opt-in maximum)
    max_shared_per_sm: int  # the SM's shared memory carveout maximum
    regs_per_sm: int = 64 * 1024  # 32-bit registers per SM (and the most one block may use)
    max_regs_per_thread: int = 255
    max_threads: int = 1024
    max_block: tuple[int, int, int] = (1024, 1024, 64)
    max_grid: tuple[int, int, int] = (2 ** 31 - 1, 65535, 65535)
    named_barriers: int = 16
    max_cbuf_bytes: int = 64 * 1024  # a constant bank is at most 64 KiB


ARCH_LIMITS = {
    "sm_86": ArchLimits(99 * 1024, 100 * 1024),  # compute capability 8.6: 99 KB per block, 100 KB per SM
    "sm_89": ArchLimits(99 * 1024, 100 * 1024),  # 8.9: as 8.6
    "sm_90": ArchLimits(227 * 1024, 228 * 1024),  # 9.0: 227 KB per block, 228 KB per SM
}
# Where the kernel parameters start in constant bank 0 when the cubin says nothing (cubins always say: EIATTR_PARAM_CBANK).
DEFAULT_PARAM_OFFSET = {"sm_86": 0x160, "sm_89": 0x160, "sm_90": 0x210}


class ChannelError(Exception):
    """A channel error: RM's ROBUST_CHANNEL_* `code`, and what the on_error info dict carries."""

    def __init__(self, code: int, engine: str, message: str, address: int | None = None, access: str | None = None):
        super().__init__(message)
        self.code, self.engine, self.address, self.access = code, engine, address, access

    def info(self) -> dict:
        return {"address": self.address, "access": self.access, "engine": self.engine, "message": str(self)}


def mmu_error(e: MMUFault, engine: str, what: str) -> ChannelError:
    """An MMU fault as the channel error RM reports for it (ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT, 31)."""
    return ChannelError(R.ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT, engine, f"{what}: {e}", e.va, e.access)


def field_of(value: int, shift: int, width: int) -> int:
    return (value >> shift) & ((1 << width) - 1)


class Work:
    """Engine work a method started: `pieces` run in order (each a callable); `done` after the last. `ordered`
    work (a copy with FLUSH_ENABLE) never runs late; unordered work may (hazard mode)."""

    def __init__(self, what: str, pieces: list[Callable[[], None]], ordered: bool):
        self.what, self.pieces, self.ordered = what, pieces, ordered

    def step(self) -> bool:
        """Run the next piece; True when nothing is left."""
        if self.pieces:
            self.pieces.pop(0)()
        return not self.pieces


class Engine:
    """One channel's context on an engine. Subclasses decode the class's methods."""
    name = "engine"

    def __init__(self, channel: "Channel", hclass: int):
        self.channel, self.hclass = channel, hclass
        self.gpu = channel.gpu
        self.vas: VASpace = channel.desc.vaspace

    def error(self, message: str, address: int | None = None) -> ChannelError:
        raise NotImplementedError

    def method(self, method: int, data: int) -> Work | None:
        raise NotImplementedError


# --- compute ---------------------------------------------------------------------------------------------------

@dataclass
class _Program:
    """A kernel's host build found in an uploaded cubin, cached by the image bytes."""
    image: bytes
    name: str
    local_size: tuple[int, int, int]
    params: tuple[tuple[int, int, bool], ...]
    param_offset: int
    fn: Any
    block_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        self.block_bytes = max((o + n for o, n, _ in self.params), default=0)


_fn_cache: dict[tuple[str, bytes], Any] = {}
_fn_lock = threading.Lock()


def _elf_length(image: bytes) -> int:
    """How many bytes of `image` the ELF file spans (its section headers and the sections they describe)."""
    if len(image) < 64 or image[:4] != b"\x7fELF":
        return 0
    shoff, = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", image, 0x3A)
    end = shoff + shentsize * shnum
    for i in range(shnum):
        at = shoff + i * shentsize
        if at + 64 > len(image):
            return 0
        sh_type, = struct.unpack_from("<I", image, at + 4)
        off, size = struct.unpack_from("<QQ", image, at + 0x18)
        if sh_type != 8:  # SHT_NOBITS occupies no file bytes
            end = max(end, off + size)
    return end if end <= len(image) else 0


class ComputeEngine(Engine):
    """The compute class: SEND_PCAS_A + SEND_SIGNALING_PCAS(2)_B launch the QMD; cache invalidations are accepted
    (the host build reads memory directly, so they have nothing to invalidate); shader local/shared memory window
    and size methods are recorded."""
    name = "compute"

    # The compute methods accepted, by offset (identical in clc7c0.h, clc9c0.h and clcbc0.h: checked below).
    RECORDED = ("NO_OPERATION", "SET_SHADER_LOCAL_MEMORY_A", "SET_SHADER_LOCAL_MEMORY_B",
                "SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_A", "SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_B",
                "SET_SHADER_LOCAL_MEMORY_NON_THROTTLED_C", "SET_SHADER_LOCAL_MEMORY_WINDOW_A",
                "SET_SHADER_LOCAL_MEMORY_WINDOW_B", "SET_SHADER_SHARED_MEMORY_WINDOW_A",
                "SET_SHADER_SHARED_MEMORY_WINDOW_B", "SET_CWD_SLOT_COUNT", "INVALIDATE_SHADER_CACHES",
                "INVALIDATE_SHADER_CACHES_NO_WFI", "INVALIDATE_SKED_CACHES")

    def __init__(self, channel: "Channel", hclass: int):
        super().__init__(channel, hclass)
        self.prefix = f"NV{COMPUTE_CLASSES[hclass].upper()}_"
        self.sm = self.gpu.sm
        self.limits = ARCH_LIMITS[self.sm]
        self.state: dict[str, int] = {}
        self.names = {getattr(C, self.prefix + n): n for n in self.RECORDED}
        self.pcas_a = getattr(C, self.prefix + "SEND_PCAS_A")
        self.pcas_b = getattr(C, self.prefix + "SEND_PCAS_B")
        self.signaling_b = getattr(C, self.prefix + "SEND_SIGNALING_PCAS_B")
        self.signaling2_b = getattr(C, self.prefix + "SEND_SIGNALING_PCAS2_B")
        self.qmd_address: int | None = None
        self.programs: dict[tuple[int, int], _Program] = {}

    def error(self, message: str, address: int | None = None) -> ChannelError:
        # RM reports a graphics/compute engine exception (bad method, bad QMD) as ROBUST_CHANNEL_GR_EXCEPTION.
        return ChannelError(R.ROBUST_CHANNEL_GR_EXCEPTION, "compute", f"compute class {self.hclass:#x}: {message}",
                            address)

    def method(self, method: int, data: int) -> Work | None:
        p = self.prefix
        if method in self.names:
            self.state[self.names[method]] = data
            return None
        if method == self.pcas_a:
            # SEND_PCAS_A QMD_ADDRESS_SHIFTED8 31:0: the QMD's address >> 8 (clc7c0.h / clcbc0.h)
            self.qmd_address = data << 8
            return None
        if method == self.signaling2_b:
            action = field_of(data, getattr(C, p + "SEND_SIGNALING_PCAS2_B_PCAS_ACTION_SHIFT"),
                              getattr(C, p + "SEND_SIGNALING_PCAS2_B_PCAS_ACTION_WIDTH"))
            known = (getattr(C, p + "SEND_SIGNALING_PCAS2_B_PCAS_ACTION_SHIFT")
                     + getattr(C, p + "SEND_SIGNALING_PCAS2_B_PCAS_ACTION_WIDTH"))
            if data >> known:
                raise self.error(f"SEND_SIGNALING_PCAS2_B {data:#x} sets SELECT/OFFSET_MINUS_ONE (bits above "
                                 f"{known - 1}), which only queue QMDs use; this emulator launches grid QMDs")
            launch = {getattr(C, p + "SEND_SIGNALING_PCAS2_B_PCAS_ACTION_" + a) for a in
                      ("SCHEDULE", "INVALIDATE_COPY_SCHEDULE", "INVALIDATE_PREFETCH_COPY_SCHEDULE",
                       "INVALIDATE_PREFETCH_COPY_FORCE_REQUIRE_SCHEDULING")}
            quiet = {getattr(C, p + "SEND_SIGNALING_PCAS2_B_PCAS_ACTION_" + a) for a in
                     ("NOP", "INVALIDATE", "PREFETCH")}
            if action in launch:
                return self.launch()
            if action in quiet:
                return None
            raise self.error(f"SEND_SIGNALING_PCAS2_B PCAS_ACTION {action} (dependence/put counters) is not emulated")
        if method == self.signaling_b:
            inv_s = getattr(C, p + "SEND_SIGNALING_PCAS_B_INVALIDATE_SHIFT")
            sch_s = getattr(C, p + "SEND_SIGNALING_PCAS_B_SCHEDULE_SHIFT")
            if data & ~((1 << inv_s) | (1 << sch_s)):
                raise self.error(f"SEND_SIGNALING_PCAS_B {data:#x} sets reserved bits")
            return self.launch() if data >> sch_s & 1 else None
        if method == self.pcas_b:
            raise self.error("SEND_PCAS_B (queue QMD FROM/DELTA) is not emulated; launch grid QMDs with "
                             "SEND_SIGNALING_PCAS2_B")
        raise self.error(f"method {method:#x} (data {data:#x}) is not a method this emulator implements for the "
                         "compute class", None)

    # --- launch ---
    def launch(self) -> Work:
        if self.qmd_address is None:
            raise self.error("a launch with no SEND_PCAS_A before it: no QMD address")
        qa = self.qmd_address
        try:
            with self.vas.gate.shared():
                head = self.vas.read(qa, QMD_BYTES[3])
                major = qmd_major(head)
                raw = head if major != 4 else self.vas.read(qa, QMD_BYTES[4])
        except MMUFault as e:
            raise mmu_error(e, "compute", f"reading the QMD at {qa:#x}") from None
        if major not in QMD_MAJORS[self.hclass]:
            raise self.error(f"the QMD at {qa:#x} has QMD_MAJOR_VERSION {major}; class {self.hclass:#x} reads "
                             f"{' or '.join(f'V0{m}_00' for m in QMD_MAJORS[self.hclass])}", qa)
        q = read_qmd(raw)
        self._validate(q, qa)
        prog = self._program(q, qa)
        args, limits, bases = self._arguments(q, qa, prog)
        total = q.grid[0] * q.grid[1] * q.grid[2]
        self.gpu.count("launches")
        return _Launch(self, q, prog, args, limits, bases, total).work()

    def _validate(self, q, qa: int) -> None:
        L = self.limits
        where = f"the QMD at {qa:#x}"
        if q.minor != 0:
            raise self.error(f"{where}: QMD minor version {q.minor}; V0{q.major}_00 has minor version 0", qa)
        for axis, n, top in zip("xyz", q.grid, L.max_grid):
            if not 1 <= n <= top:
                raise self.error(f"{where}: grid {axis} is {n}; it must be 1..{top}", qa)
        for axis, n, top in zip("xyz", q.block, L.max_block):
            if not 1 <= n <= top:
                raise self.error(f"{where}: block {axis} (CTA_THREAD_DIMENSION) is {n}; it must be 1..{top}", qa)
        threads = q.block[0] * q.block[1] * q.block[2]
        if threads > L.max_threads:
            raise self.error(f"{where}: a block of {q.block} is {threads} threads; at most {L.max_threads}", qa)
        if 0 not in q.cbuf:
            raise self.error(f"{where}: constant buffer 0 is not valid (CONSTANT_BUFFER_VALID[0] = 0); kernels read "
                             "their parameters from it", qa)
        for i, (addr, size) in q.cbuf.items():
            if not 0 < size <= L.max_cbuf_bytes:
                raise self.error(f"{where}: constant buffer {i} is {size} bytes; it must be 16..{L.max_cbuf_bytes}", qa)
            try:
                self.vas.translate(addr, size, False) if self.vas.range_of(addr) else self.vas.spans(addr, size, False)
            except MMUFault as e:
                raise mmu_error(e, "compute", f"{where}: constant buffer {i} at {addr:#x}+{size:#x}") from None
        if q.shared_memory_size > L.max_shared_per_block:
            raise self.error(f"{where}: SHARED_MEMORY_SIZE {q.shared_memory_size} is over {self.sm}'s "
                             f"{L.max_shared_per_block} bytes per block", qa)
        lo, hi, target = q.sm_config
        if all(q.sm_config) and not lo <= target <= hi:
            raise self.error(f"{where}: TARGET_SM_CONFIG_SHARED_MEM_SIZE {target} is outside MIN {lo}..MAX {hi}", qa)
        if not 1 <= q.register_count <= L.max_regs_per_thread:
            raise self.error(f"{where}: REGISTER_COUNT {q.register_count}; it must be 1..{L.max_regs_per_thread}", qa)
        warps = (threads + 31) // 32
        if q.register_count * warps * 32 > L.regs_per_sm:
            raise self.error(f"{where}: {q.register_count} registers x {warps * 32} threads (whole warps) is over the "
                             f"{L.regs_per_sm} registers an SM has", qa)
        if q.barrier_count > L.named_barriers:
            raise self.error(f"{where}: BARRIER_COUNT {q.barrier_count} is over the {L.named_barriers} named "
                             "barriers", qa)
        for addr, _payload, structure, _p64, reduction in q.releases:
            if reduction:
                raise self.error(f"{where}: a release with REDUCTION_ENABLE is not emulated", qa)
        if self.vas.range_of(q.program_address) is None:
            raise mmu_error(MMUFault(q.program_address, "read"), "compute",
                            f"{where}: the program address {q.program_address:#x} is not mapped")

    def _program(self, q, qa: int) -> _Program:
        from compiler.cubin import EIATTR_PARAM_CBANK, Cubin, CubinError, parse_nv_info
        from compiler.emulation import load_checked_host, parse_nv_emulation_records
        start, size, host = self.vas.range_of(q.program_address)
        key = (host, q.program_address)
        cached = self.programs.get(key)
        if cached is not None and ctypes.string_at(host, len(cached.image)) == cached.image:
            return cached
        with self.vas.gate.shared():
            whole = ctypes.string_at(host, size)
        length = _elf_length(whole)
        if not length:
            raise self.error(f"the program address {q.program_address:#x} lies in the buffer at {start:#x}, which "
                             "does not start with a cubin (ELF) image; upload the whole cubin and point the QMD at "
                             "its kernel's .text section", q.program_address)
        image = whole[:length]
        offset = q.program_address - start
        try:
            cubin = Cubin(image, f"cubin at {start:#x}")
            text = next((s for s in cubin.sections if s.name.startswith(".text.") and s.offset == offset), None)
            if text is None:
                raise self.error(f"the program address {q.program_address:#x} (offset {offset:#x} in the cubin at "
                                 f"{start:#x}) is not the start of any kernel's .text section", q.program_address)
            name = text.name[len(".text."):]
            param_offset = DEFAULT_PARAM_OFFSET[self.sm]
            if f".nv.info.{name}" in cubin.by_name:
                for a in parse_nv_info(cubin.section_data(f".nv.info.{name}"), f".nv.info.{name}"):
                    if a.code == EIATTR_PARAM_CBANK and len(a.data) == 8:
                        param_offset = struct.unpack("<IHH", a.data)[1]
        except CubinError as e:
            raise self.error(f"the cubin at {start:#x}: {e}", q.program_address) from None
        try:
            builds = [b for b in parse_nv_emulation_records(image) if b.name == name]
        except ValueError as e:
            raise self.error(f"kernel {name}: {e}", q.program_address) from None
        if not builds:
            raise self.error(f"kernel {name} carries no host build: build it with compile_kernel(..., emulation=True). "
                             "NVIDIA's SASS has no public semantics, so this emulated GPU runs only the host build "
                             "carried in the cubin (host_kernels=False is not supported)", q.program_address)
        b = builds[0]
        digest = hashlib.sha1(b.obj).digest()
        with _fn_lock:
            fn = _fn_cache.get((name, digest))
            if fn is None:
                fn = _fn_cache[(name, digest)] = load_checked_host(b.obj, name)
        prog = _Program(image, name, tuple(b.local_size), tuple(b.params), param_offset, fn)
        self.programs[key] = prog
        return prog

    def _arguments(self, q, qa: int, prog: _Program) -> tuple[ctypes.Array, ctypes.Array, list[int]]:
        if tuple(q.block) != prog.local_size:
            raise self.error(f"kernel {prog.name} was built for blocks of {prog.local_size}; the QMD at {qa:#x} "
                             f"launches blocks of {tuple(q.block)}", qa)
        cb_addr, cb_size = q.cbuf[0]
        if prog.param_offset + prog.block_bytes > cb_size:
            raise self.error(f"kernel {prog.name}'s parameters at {prog.param_offset:#x}+{prog.block_bytes:#x} run past "
                             f"constant buffer 0 ({cb_size:#x} bytes at {cb_addr:#x})", qa)
        try:
            block = bytearray(self.vas.read(cb_addr + prog.param_offset, prog.block_bytes))
        except MMUFault as e:
            raise mmu_error(e, "compute", f"reading kernel {prog.name}'s parameters") from None
        buffers = [(o, n) for o, n, is_buf in prog.params if is_buf]
        limits = (ctypes.c_uint64 * max(1, len(buffers)))()
        bases = []
        for i, (o, n) in enumerate(buffers):
            if n != 8:
                raise self.error(f"kernel {prog.name}: buffer parameter at {o} is {n} bytes, not a 64-bit pointer", qa)
            va = struct.unpack_from("<Q", block, o)[0]
            bases.append(va)
            host, limit = self._reach(va)
            struct.pack_into("<Q", block, o, host)
            limits[i] = limit
        args = (ctypes.c_uint8 * max(1, len(block))).from_buffer_copy(bytes(block) or b"\0")
        return args, limits, bases

    def _reach(self, va: int) -> tuple[int, int]:
        """(host address, bytes accessible from it) for a buffer pointer: to the end of its mapping, stopping at a
        poisoned range; (0, 0) when it points at nothing mapped."""
        r = self.vas.range_of(va)
        if r is None:
            return 0, 0
        start, size, host = r
        limit = start + size - va
        for p, n in self.vas._poisoned:
            if p <= va < p + n:
                return 0, 0
            if va < p < va + limit:
                limit = p - va
        return host + (va - start), limit


class _Launch:
    """One started grid: runs its workgroups in pieces, then performs the QMD's releases."""

    def __init__(self, eng: ComputeEngine, q, prog: _Program, args, limits, bases: list[int], total: int):
        self.eng, self.q, self.prog, self.args, self.limits, self.bases, self.total = \
            eng, q, prog, args, limits, bases, total

    def work(self) -> Work:
        rng = self.eng.channel.rng
        cuts = [0, self.total]
        if rng is not None and self.total > 1:  # hazard mode: the grid runs in pieces interleaved with other work
            k = rng.randint(1, min(4, self.total))
            cuts = sorted({0, self.total, *(rng.randrange(1, self.total) for _ in range(k - 1))})
        pieces: list[Callable[[], None]] = [
            (lambda a=a, b=b: self._run(a, b - a)) for a, b in zip(cuts, cuts[1:])]
        pieces.append(self._release)
        return Work(f"launch of {self.prog.name} {self.q.grid}x{self.q.block}", pieces, ordered=False)

    def _run(self, first: int, count: int) -> None:
        from compiler.emulation import HostFault
        fault = HostFault()
        gx, gy, gz = self.q.grid
        with self.eng.vas.gate.shared():
            self.prog.fn(ctypes.addressof(self.args), gx, gy, gz, first, count, ctypes.addressof(self.limits),
                         ctypes.addressof(fault))
        if fault.hit:
            base = self.bases[fault.param] if fault.param < len(self.bases) else 0
            va = (base + fault.offset) & (2 ** 64 - 1)
            access = "write" if fault.write else "read"
            raise ChannelError(R.ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT, "compute",
                               f"MMU fault: kernel {self.prog.name} {access} at GPU VA {va:#x} (buffer parameter "
                               f"{fault.param} at {base:#x} + {fault.offset:#x}), which is not mapped", va, access)

    def _release(self) -> None:
        from autogen import nv_qmd as Q
        ch = self.eng.channel
        one = Q.NVC6C0_QMDV03_00_RELEASE0_STRUCTURE_SIZE_SEMAPHORE_ONE_WORD
        two = Q.NVC6C0_QMDV03_00_RELEASE0_STRUCTURE_SIZE_SEMAPHORE_TWO_WORDS
        for addr, payload, structure, p64, _red in self.q.releases:
            size = 8 if p64 else 4
            if addr % (16 if structure not in (one, two) else size):
                raise self.eng.error(f"QMD release address {addr:#x} is misaligned", addr)
            data = payload.to_bytes(8, "little")[:size]
            if structure not in (one, two):  # FOUR_WORDS: payload, then the timestamp at +8
                ch.write_memory(addr + 8, self.eng.gpu.clock_ns().to_bytes(8, "little"), "compute",
                                "a QMD release's timestamp")
            ch.write_memory(addr, data, "compute", "a QMD release")
            self.eng.gpu.count("semaphores")


# --- copy ------------------------------------------------------------------------------------------------------

class CopyEngine(Engine):
    """The copy class: pitch-linear copies (one line, or LINE_COUNT lines with pitches) between virtual addresses,
    an optional semaphore release and a non-blocking interrupt after them."""
    name = "copy"
    REGISTERS = ("OFFSET_IN_UPPER", "OFFSET_IN_LOWER", "OFFSET_OUT_UPPER", "OFFSET_OUT_LOWER", "PITCH_IN", "PITCH_OUT",
                 "LINE_LENGTH_IN", "LINE_COUNT", "SET_SEMAPHORE_A", "SET_SEMAPHORE_B", "SET_SEMAPHORE_PAYLOAD",
                 "SET_SEMAPHORE_PAYLOAD_UPPER", "SET_REMAP_CONST_A", "SET_REMAP_CONST_B", "SET_REMAP_COMPONENTS")
    LAUNCH_FIELDS = ("DATA_TRANSFER_TYPE", "FLUSH_ENABLE", "FLUSH_TYPE", "SEMAPHORE_TYPE", "INTERRUPT_TYPE",
                     "SRC_MEMORY_LAYOUT", "DST_MEMORY_LAYOUT", "MULTI_LINE_ENABLE", "REMAP_ENABLE",
                     "FORCE_RMWDISABLE", "SRC_TYPE", "DST_TYPE", "SEMAPHORE_REDUCTION", "SEMAPHORE_REDUCTION_SIGN",
                     "SEMAPHORE_REDUCTION_ENABLE", "COPY_TYPE", "VPRMODE", "MEMORY_SCRUB_ENABLE", "DISABLE_PLC",
                     "SEMAPHORE_PAYLOAD_SIZE")

    def __init__(self, channel: "Channel", hclass: int):
        super().__init__(channel, hclass)
        self.prefix = p = f"NV{COPY_CLASSES[hclass].upper()}_"
        self.regs = {n: 0 for n in self.REGISTERS}
        self.offsets = {getattr(C, p + n): n for n in self.REGISTERS}
        self.nop, self.launch_dma = getattr(C, p + "NOP"), getattr(C, p + "LAUNCH_DMA")
        self.fields = {n: (getattr(C, f"{p}LAUNCH_DMA_{n}_SHIFT"), getattr(C, f"{p}LAUNCH_DMA_{n}_WIDTH"))
                       for n in self.LAUNCH_FIELDS if hasattr(C, f"{p}LAUNCH_DMA_{n}_SHIFT")}
        self.known = sum(((1 << w) - 1) << s for s, w in self.fields.values())
        self.upper_width = getattr(C, p + "OFFSET_IN_UPPER_UPPER_WIDTH")  # 17 bits on c7b5, 25 on c8b5
        self.sem_upper_width = getattr(C, p + "SET_SEMAPHORE_A_UPPER_WIDTH")

    def error(self, message: str, address: int | None = None) -> ChannelError:
        # A copy-engine exception is reported as ROBUST_CHANNEL_CE<n>_ERROR; the emulated GPU has one copy engine.
        return ChannelError(R.ROBUST_CHANNEL_CE0_ERROR, "copy", f"copy class {self.hclass:#x}: {message}", address)

    def method(self, method: int, data: int) -> Work | None:
        if method == self.nop:
            return None
        name = self.offsets.get(method)
        if name is not None:
            width = {"OFFSET_IN_UPPER": self.upper_width, "OFFSET_OUT_UPPER": self.upper_width,
                     "SET_SEMAPHORE_A": self.sem_upper_width}.get(name, 32)
            if data >> width:
                raise self.error(f"{name} {data:#x} sets bits above its {width}-bit field")
            self.regs[name] = data
            return None
        if method == self.launch_dma:
            return self._launch(data)
        raise self.error(f"method {method:#x} (data {data:#x}) is not a method this emulator implements for the "
                         "copy class")

    def _launch(self, d: int) -> Work | None:
        f = {n: field_of(d, s, w) for n, (s, w) in self.fields.items()}
        v = lambda n: getattr(C, f"{self.prefix}LAUNCH_DMA_{n}")  # noqa: E731
        if d & ~self.known:
            raise self.error(f"LAUNCH_DMA {d:#x} sets reserved bits {d & ~self.known:#x}")
        transfer = f["DATA_TRANSFER_TYPE"]
        if transfer not in (v("DATA_TRANSFER_TYPE_NONE"), v("DATA_TRANSFER_TYPE_PIPELINED"),
                            v("DATA_TRANSFER_TYPE_NON_PIPELINED")):
            raise self.error(f"LAUNCH_DMA DATA_TRANSFER_TYPE {transfer} is reserved")
        for what in ("SRC", "DST"):
            if transfer and f[f"{what}_MEMORY_LAYOUT"] != v(f"{what}_MEMORY_LAYOUT_PITCH"):
                raise self.error(f"LAUNCH_DMA {what}_MEMORY_LAYOUT BLOCKLINEAR is not emulated; use PITCH")
            if f[f"{what}_TYPE"] != v(f"{what}_TYPE_VIRTUAL"):
                raise self.error(f"LAUNCH_DMA {what}_TYPE PHYSICAL: a user channel copies between virtual addresses")
        if f["REMAP_ENABLE"]:
            raise self.error("LAUNCH_DMA REMAP_ENABLE (component remapping / constant fill) is not emulated")
        if f.get("MEMORY_SCRUB_ENABLE"):
            raise self.error("LAUNCH_DMA MEMORY_SCRUB_ENABLE is not emulated")
        if f.get("COPY_TYPE", 0):  # c8b5 COPY_TYPE: 0 is DEFAULT (PROT2PROT)
            raise self.error(f"LAUNCH_DMA COPY_TYPE {f['COPY_TYPE']} (secure copies) is not emulated")
        if f.get("VPRMODE"):
            raise self.error("LAUNCH_DMA VPRMODE (protected video memory) is not emulated")
        if f["SEMAPHORE_REDUCTION_ENABLE"]:
            raise self.error("LAUNCH_DMA SEMAPHORE_REDUCTION_ENABLE is not emulated")
        sem = f["SEMAPHORE_TYPE"]
        if sem == v("SEMAPHORE_TYPE_RELEASE_CONDITIONAL_INTR_SEMAPHORE"):
            raise self.error("LAUNCH_DMA SEMAPHORE_TYPE RELEASE_CONDITIONAL_INTR_SEMAPHORE is not emulated")
        intr = f["INTERRUPT_TYPE"]
        if intr == v("INTERRUPT_TYPE_BLOCKING"):
            raise self.error("LAUNCH_DMA INTERRUPT_TYPE BLOCKING (a stalling interrupt RM must service) is not emulated;"
                             " use NON_BLOCKING")
        if intr not in (v("INTERRUPT_TYPE_NONE"), v("INTERRUPT_TYPE_NON_BLOCKING")):
            raise self.error(f"LAUNCH_DMA INTERRUPT_TYPE {intr} is reserved")
        r = self.regs
        src = r["OFFSET_IN_UPPER"] << 32 | r["OFFSET_IN_LOWER"]
        dst = r["OFFSET_OUT_UPPER"] << 32 | r["OFFSET_OUT_LOWER"]
        length = r["LINE_LENGTH_IN"]
        multi = bool(f["MULTI_LINE_ENABLE"])
        lines = r["LINE_COUNT"] if multi else 1
        pitch_in, pitch_out = r["PITCH_IN"], r["PITCH_OUT"]
        sem_addr = r["SET_SEMAPHORE_A"] << 32 | r["SET_SEMAPHORE_B"]
        payload = r["SET_SEMAPHORE_PAYLOAD_UPPER"] << 32 | r["SET_SEMAPHORE_PAYLOAD"]
        two_word = f["SEMAPHORE_PAYLOAD_SIZE"] == v("SEMAPHORE_PAYLOAD_SIZE_TWO_WORD")
        four = sem == v("SEMAPHORE_TYPE_RELEASE_FOUR_WORD_SEMAPHORE")
        if sem:
            align = 16 if four else (8 if two_word else 4)
            if sem_addr % align:
                raise self.error(f"LAUNCH_DMA semaphore address {sem_addr:#x} is not {align}-byte aligned", sem_addr)
        pieces: list[Callable[[], None]] = []
        if transfer:
            self.gpu.count("copies")

            def copy() -> None:
                for i in range(lines):
                    s, t = src + i * pitch_in, dst + i * pitch_out
                    self._copy_line(s, t, length)
            pieces.append(copy)
        flush = bool(f["FLUSH_ENABLE"])
        data_work = Work(f"copy {src:#x} -> {dst:#x} ({lines} x {length} bytes)", pieces, ordered=flush)
        tail: list[Callable[[], None]] = []
        if sem:
            def release() -> None:
                value = payload if two_word else payload & 0xFFFFFFFF
                if four:  # FOUR_WORD: payload (zero-extended to 8 bytes), then the timestamp at +8
                    self.channel.write_memory(sem_addr + 8, self.gpu.clock_ns().to_bytes(8, "little"), "copy",
                                              "a copy semaphore's timestamp")
                    self.channel.write_memory(sem_addr, value.to_bytes(8, "little"), "copy", "a copy semaphore")
                else:
                    self.channel.write_memory(sem_addr, value.to_bytes(8 if two_word else 4, "little"), "copy",
                                              "a copy semaphore")
                self.gpu.count("semaphores")
                self.gpu.semaphore_released()
            tail.append(release)
        if intr == v("INTERRUPT_TYPE_NON_BLOCKING"):
            tail.append(lambda: self.gpu.nonstall(self.channel.desc.token))
        if not tail:
            return data_work if pieces else None
        if pieces and not flush and self.channel.rng is not None:
            # hazard mode: without FLUSH_ENABLE the data may land after the semaphore; the release runs now
            # and the data later (the channel keeps data_work pending)
            self.channel.defer(data_work)
            return Work("copy semaphore", tail, ordered=True)
        return Work(data_work.what, pieces + tail, ordered=True)

    def _copy_line(self, src: int, dst: int, length: int) -> None:
        if not length:
            return
        vas = self.vas
        with vas.gate.shared():
            try:
                srcs = vas.spans(src, length, False)
            except MMUFault as e:
                raise mmu_error(e, "copy", f"copy source {src:#x}+{length:#x}") from None
            try:
                dsts = vas.spans(dst, length, True)
            except MMUFault as e:
                raise mmu_error(e, "copy", f"copy destination {dst:#x}+{length:#x}") from None
            if len(srcs) == 1 and len(dsts) == 1:
                ctypes.memmove(dsts[0][0], srcs[0][0], length)
            else:
                data = b"".join(ctypes.string_at(h, n) for h, n in srcs)
                at = 0
                for h, n in dsts:
                    ctypes.memmove(h, data[at:at + n], n)
                    at += n
        self.gpu.count("bytes_copied", length)
