"""The wave executor: RDNA3 (gfx11) / RDNA4 (gfx12) machine code run one wavefront at a time, all lanes of a wave at
once as numpy arrays, every memory access through the checked address space (vm.py).

A Program is the code of one kernel as this executor runs it: each instruction is decoded once, the first time the
wave reaches its pc, and bound to a small closure that does exactly that instruction ("compiled"), so a loop body
costs a list lookup and a call per instruction. ALU semantics come from alu.py; this module owns the machine state
(SGPRs, VGPRs, EXEC, VCC, SCC, M0, the PC), operand fetch (registers, inline constants, literals), result write-back
under EXEC, control flow, barriers, LDS, scratch and global memory.

Assumptions, stated once: memory completes at once (every s_waitcnt / s_wait_* is satisfied when it issues); caches
are coherent (cache invalidate/write-back instructions do nothing); s_delay_alu, s_clause, s_nop and s_sendmsg
change nothing a kernel can observe here.
"""
from __future__ import annotations

import re
import struct
import threading
from typing import Any, Callable, Optional

import numpy as np

from emu.amd.isa.instr import EXEC_HI, EXEC_LO, LITERAL, M0, NULL, SCC, VCC_HI, VCC_LO, Instr, Operand
from emu.amd.isa.vm import AddressSpace, GPUFault

U32, U64 = np.uint32, np.uint64
END, BARRIER = -1, -2  # what a closure returns instead of a pc when the wave stops
VCCZ, EXECZ = 251, 252  # operand codes (instr.py's operand space)
TTMP0 = 108
MAX_WAVE_INSTRUCTIONS = 50_000_000  # a wave running longer is reported as a hang, not waited for
_F = {"f32": lambda x: struct.unpack("<I", struct.pack("<f", x))[0],
      "f16": lambda x: struct.unpack("<H", struct.pack("<e", x))[0],
      "f64": lambda x: struct.unpack("<Q", struct.pack("<d", x))[0]}
# RDNA3 ISA guide "Scalar ALU operands": 240-247 are 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 4.0, -4.0; 248 is 1/(2*pi)
_INLINE_FLOATS = {240: 0.5, 241: -0.5, 242: 1.0, 243: -1.0, 244: 2.0, 245: -2.0, 246: 4.0, 247: -4.0}
_INV_2PI = {"f32": 0x3E22F983, "f16": 0x3118, "f64": 0x3FC45F306DC9C882}  # the ISA guide's exact encodings
_CACHE_OPS = {"buffer_gl0_inv", "buffer_gl1_inv", "global_inv", "global_wb", "global_wbinv", "s_dcache_inv",
              "s_gl1_inv", "s_icache_inv", "buffer_wbl2", "buffer_inv"}
_NOPS = {"s_nop", "s_delay_alu", "s_clause", "s_sendmsg", "s_sendmsghalt", "s_setprio", "s_sleep",
         "s_inst_prefetch", "s_set_inst_prefetch_distance", "s_ttracedata", "s_ttracedata_imm", "s_incperflevel",
         "s_decperflevel", "s_denorm_mode", "s_round_mode", "s_icache_inv", "s_wakeup", "s_prefetch_inst",
         "s_prefetch_data", "s_prefetch_inst_pc_rel", "s_prefetch_data_pc_rel", "s_nop_dealloc_vgprs"}


class ISAFault(GPUFault):
    """A fault a kernel caused that is not a memory access: an instruction the executor does not know or that must
    never run (s_code_end, s_trap), a register the dispatch did not allocate, a barrier not every wave reaches, a
    wave that never ends, two waves of a workgroup racing on an LDS byte between barriers ("lds race")."""


def _alu() -> Any:
    from emu.amd.isa import alu
    return alu


def _decode() -> Any:
    from emu.amd.isa import decode
    return decode


def describe(ins: Instr) -> str:
    """The instruction as a line of assembly, for fault reports (disasm.py's format when it is present)."""
    try:
        from emu.amd.isa import disasm
        for name in ("format_instr", "disasm", "format", "to_asm"):
            fn = getattr(disasm, name, None)
            if callable(fn):
                return str(fn(ins))
    except Exception:  # no disassembler yet, or it cannot print this one: fall back to the raw operands
        pass

    def name(o: Operand) -> str:
        if o.is_vgpr:
            return f"v{o.vgpr}" if o.count == 1 else f"v[{o.vgpr}:{o.vgpr + o.count - 1}]"
        if o.code < 106:
            return f"s{o.code}" if o.count == 1 else f"s[{o.code}:{o.code + o.count - 1}]"
        if o.code == LITERAL:
            return f"{o.literal:#x}"
        return {VCC_LO: "vcc", EXEC_LO: "exec", M0: "m0", NULL: "null", SCC: "scc"}.get(o.code, f"op{o.code}")
    return f"{ins.op} " + ", ".join(name(o) for o in (*ins.dst, *ins.src))


def _sext(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def _width(typ: str) -> int:
    return 64 if typ.endswith("64") else 16 if typ.endswith("16") else 32


def _const_value(code: int, literal: Optional[int], typ: str) -> Optional[int]:
    """The bits an inline constant or literal operand stands for, read as `typ` (None for a register)."""
    w = _width(typ)
    mask = (1 << max(w, 32)) - 1 if w != 16 else 0xFFFFFFFF
    if code == LITERAL:
        if typ == "f64":
            return (literal or 0) << 32  # RDNA3 ISA guide "Literal constants": a 64-bit float takes it as the high half
        return (literal or 0) & (0xFFFF if w == 16 else 0xFFFFFFFF)
    if 128 <= code <= 192:
        return code - 128
    if 193 <= code <= 208:
        return (192 - code) & mask  # -1 .. -16
    if code in _INLINE_FLOATS:
        ftype = "f64" if w == 64 else "f16" if w == 16 else "f32"
        return _F[ftype](_INLINE_FLOATS[code])
    if code == 248:
        return _INV_2PI["f64" if w == 64 else "f16" if w == 16 else "f32"]
    return None


_BITS: dict[bytes, int] = {}  # lane mask bytes -> its bits (compare results repeat: a cache beats packbits)


class Program:
    """One kernel's code as the executor runs it: the bytes of the mapped range holding it (fetched once), and
    a closure per instruction offset, made the first time a wave reaches it."""

    def __init__(self, code: bytes, base: int, entry: int, target: str, lanes: int, vgprs: int):
        self.code, self.base, self.entry, self.target = code, base, entry, target
        self.lanes, self.vgprs, self.wave64 = lanes, vgprs, lanes == 64
        self.gfx12 = target.startswith("gfx12")
        self.table: list[Optional[Callable]] = [None] * (len(code) // 4 + 1)
        self.instrs: dict[int, Instr] = {}
        self.full_mask = (1 << lanes) - 1
        self._masks: dict[int, np.ndarray] = {}
        self.lane_ids = np.arange(lanes, dtype=U64)
        self.mode: Any = None  # the float mode (alu_fp.FloatMode) the dispatch's RSRC1 sets; None: the ALU default

    # --- lane masks ---
    def mask(self, bits: int) -> np.ndarray:
        """The bool lane array of a lane mask (cached: programs see few distinct masks)."""
        m = self._masks.get(bits)
        if m is None:
            m = ((np.uint64(bits) >> self.lane_ids) & np.uint64(1)).astype(bool)
            m.flags.writeable = False
            if len(self._masks) < 4096:
                self._masks[bits] = m
        return m

    @staticmethod
    def bits(mask: np.ndarray) -> int:
        key = mask.tobytes()
        b = _BITS.get(key)
        if b is None:
            b = int.from_bytes(np.packbits(mask, bitorder="little").tobytes(), "little")
            if len(_BITS) < 65536:
                _BITS[key] = b
        return b

    # --- decode + compile ---
    def compile(self, pc: int) -> Callable:
        if not 0 <= pc < len(self.code) - 3 or pc % 4:
            raise ISAFault(f"jump to {self.base + pc:#x}, outside the code object mapped at {self.base:#x} "
                           f"({len(self.code)} bytes)", "illegal instruction", self.base + pc)
        dec = _decode()
        try:
            ins = dec.decode(self.code, pc, self.target)
        except Exception as e:
            raise ISAFault(f"cannot decode the instruction at {self.base + pc:#x} (code offset {pc:#x}): {e}",
                           "illegal instruction", self.base + pc) from None
        self.instrs[pc] = ins
        fn = _Compiler(self, ins, pc).build()
        self.table[pc >> 2] = fn
        return fn


class Wave:
    """One wavefront's state. SGPRs live in `s`, indexed by the operand code (0-105 SGPRs, 106/107 VCC, 108-123
    TTMPs, 125 M0, 126/127 EXEC); `v` is the VGPR file, one row per register, one column per lane."""
    __slots__ = ("s", "v", "scc", "exec", "em", "full", "pc", "prog", "lds", "scratch", "index", "done",
                 "at_barrier", "count", "group", "vm", "races")

    def __init__(self, prog: Program, vm: AddressSpace, index: int, lds: np.ndarray,
                 scratch: Optional[tuple[int, int]] | str, group: int):
        """`scratch` is (this wave's private base address, bytes per lane), or why the wave has none."""
        self.vm = vm
        self.s = [0] * 128
        self.v = np.zeros((prog.vgprs, prog.lanes), U32)
        self.scc = False
        self.prog, self.index, self.lds, self.scratch, self.group = prog, index, lds, scratch, group
        self.pc = prog.entry
        self.done = self.at_barrier = False
        self.count = 0
        self.races: Optional[LDSRaces] = None  # run_workgroup sets the workgroup's LDS race tracker (2+ waves)
        self.set_exec(prog.full_mask)

    def set_exec(self, bits: int) -> None:
        bits &= self.prog.full_mask
        self.exec = bits
        self.s[EXEC_LO], self.s[EXEC_HI] = bits & 0xFFFFFFFF, bits >> 32
        self.full = bits == self.prog.full_mask
        self.em = self.prog.mask(bits)

    def vcc(self) -> int:
        return (self.s[VCC_LO] | self.s[VCC_HI] << 32) & self.prog.full_mask

    def run(self) -> None:
        """Run until the wave ends or waits at a barrier."""
        table, prog, w = self.prog.table, self.prog, self
        pc, n = self.pc, 0
        quiet = np.errstate(all="ignore")  # once per run, not per instruction: the ALU's bound forms leave it to us
        quiet.__enter__()
        try:
            while pc >= 0:
                self.pc = pc
                f = table[pc >> 2]
                if f is None:
                    f = prog.compile(pc)
                pc = f(w)
                n += 1
                if n > MAX_WAVE_INSTRUCTIONS:
                    raise ISAFault(f"wave {self.index} of workgroup {self.group} ran {n} instructions without "
                                   "ending: a loop that never exits?", "hang")
        except GPUFault as e:
            self._name(e)
            raise
        except Exception as e:  # an ALU or executor error on this instruction: report it as a fault naming it
            f = ISAFault(f"{type(e).__name__}: {e}", "illegal instruction", None)
            self._name(f)
            raise f from e
        finally:
            quiet.__exit__(None, None, None)
            self.count += n
        if pc == END:
            self.done = True
        else:
            self.at_barrier = True

    def _name(self, e: GPUFault) -> None:
        if e.pc is None:
            e.pc = self.prog.base + self.pc
            ins = self.prog.instrs.get(self.pc)
            e.instr = describe(ins) if ins is not None else None
            e.where = f"workgroup {self.group} wave {self.index}"


class LDSRaces:
    """The LDS race detector of one workgroup. Between two barriers (an epoch) the waves of a workgroup run in an
    order hardware does not promise, so two waves touching one LDS byte in the same epoch, at least one of them
    writing it, is a data race: the emulator faults on it rather than give the answer its wave order happens to
    give. Per LDS byte it keeps the last writer as one int64 stamp (epoch << 38 | atomic << 37 | wave << 32 | pc)
    and, per wave, when it last read the byte (epoch << 32 | atomic << 31 | pc), so every check is one gather and
    compare over the lanes' byte addresses, and the pcs are there to name both instructions. Accesses of one wave
    never race; atomics do not race with each other. Stamps only ever compare against the current epoch, so the
    arrays are reused across workgroups (each starts a new epoch) and are never cleared."""
    WAVES = 32  # a 1024-work-item workgroup of wave32: the most a workgroup has (the wave field is 5 bits)
    _W_ATOMIC, _R_ATOMIC, _PC = 1 << 37, 1 << 31, (1 << 31) - 1
    _EPOCHS = 1 << 25  # epoch << 38 must stay inside an int64
    _cache = threading.local()  # per thread (dispatches may run workgroups on several): (size, waves) -> tracker

    def __init__(self, size: int, waves: int):
        self.size, self.waves = size, waves
        # zeros, not a fill: calloc'd pages cost nothing until touched; stamp 0 is older than any epoch (they start at 1)
        self.writer = np.zeros(size, np.int64)
        self.reads = np.zeros((waves, size), np.int64)
        self.rows = list(self.reads)  # the per-wave views, made once
        self.epoch, self.wbase, self.rbase, self.group = 0, 0, 0, 0
        self.loaders = self.storers = self.atomics = 0  # bitmasks of the waves that did each kind this epoch

    @classmethod
    def for_workgroup(cls, waves: list[Wave]) -> Optional["LDSRaces"]:
        """The tracker the waves of one workgroup share, at a fresh epoch; None where no race can happen (one wave,
        no LDS) or the waves cannot be told apart in a stamp."""
        if len(waves) < 2 or not len(waves[0].lds) or any(not 0 <= w.index < cls.WAVES for w in waves):
            return None
        cache = getattr(cls._cache, "d", None)
        if cache is None:
            cache = cls._cache.d = {}
        key = (len(waves[0].lds), max(w.index for w in waves) + 1)
        t = cache.get(key)
        if t is None:
            if len(cache) >= 8:
                cache.clear()
            t = cache[key] = cls(*key)
        t.group = waves[0].group
        t.next_epoch()
        return t

    def next_epoch(self) -> None:
        """A barrier every wave passed (or a new workgroup): nothing before it races with anything after it."""
        self.epoch += 1
        if self.epoch >= self._EPOCHS:
            self.writer.fill(0)
            self.reads.fill(0)
            self.epoch = 1
        self.wbase, self.rbase = self.epoch << 38, self.epoch << 32
        self.loaders = self.storers = self.atomics = 0

    # --- the three kinds of access; `a` holds the byte addresses (any shape), pc the code offset. Each records the
    # access with one scatter; the checks run only when another wave did the conflicting kind of access in this
    # epoch (the bitmasks), which the first wave to reach an epoch, and any epoch only loading, never pays ---
    def load(self, w: Wave, a: np.ndarray, pc: int) -> None:
        bit = 1 << w.index
        if (self.storers | self.atomics) & ~bit:
            wr = self.writer[a]
            if wr.max() >= self.wbase:  # something wrote these bytes this epoch: fine if only this wave did
                self._check_writer(w, a, wr, pc, "load", atomic_ok=False)
        self.loaders |= bit
        self.rows[w.index][a] = self.rbase | pc

    def store(self, w: Wave, a: np.ndarray, pc: int) -> None:
        me = w.index
        bit = 1 << me
        if (self.storers | self.atomics) & ~bit:
            wr = self.writer[a]
            if wr.max() >= self.wbase:
                self._check_writer(w, a, wr, pc, "store", atomic_ok=False)
        if (self.loaders | self.atomics) & ~bit:
            rd = self.reads[:, a]
            if rd.max() >= self.rbase:
                self._check_readers(w, a, rd, pc, "store", atomic_ok=False)
        self.storers |= bit
        self.writer[a] = self.wbase | me << 32 | pc

    def atomic(self, w: Wave, a: np.ndarray, pc: int) -> None:
        """A read-modify-write (ds_add_u32, ...): races with plain accesses of other waves, not with their atomics."""
        me = w.index
        bit = 1 << me
        wr = self.writer[a]
        same = wr >= self.wbase
        if self.storers & ~bit and same.any():
            self._check_writer(w, a, wr, pc, "atomic", atomic_ok=True)
        if self.loaders & ~bit:
            rd = self.reads[:, a]
            if rd.max() >= self.rbase:
                self._check_readers(w, a, rd, pc, "atomic", atomic_ok=True)
        self.atomics |= bit
        self.rows[me][a] = self.rbase | self._R_ATOMIC | pc
        mine = same & ((wr & self._W_ATOMIC) == 0)  # keep this wave's own plain write: others' atomics race with it
        self.writer[a] = np.where(mine, wr, self.wbase | self._W_ATOMIC | me << 32 | pc)

    # --- the slow paths: some byte was touched this epoch; find whether another wave did, and say which ---
    def _check_writer(self, w: Wave, a: np.ndarray, wr: np.ndarray, pc: int, kind: str, atomic_ok: bool) -> None:
        same = wr >= self.wbase
        atom = same & ((wr & self._W_ATOMIC) != 0)
        plain = same & ~atom & (((wr >> 32) & 31) != w.index)
        if plain.any():
            self._fault(w, pc, kind, a[plain], ((wr[plain] >> 32) & 31), wr[plain] & 0xFFFFFFFF, "store")
        if atom.any() and not atomic_ok:  # who did the atomics: the per-wave stamps know (the writer keeps the last)
            self._check_readers(w, a[atom], self.reads[:, a[atom]], pc, kind, atomic_ok=False, atomics_only=True)

    def _check_readers(self, w: Wave, a: np.ndarray, rd: np.ndarray, pc: int, kind: str, atomic_ok: bool,
                       atomics_only: bool = False) -> None:
        hit = rd >= self.rbase
        hit[w.index] = False
        if atomics_only:
            hit &= (rd & self._R_ATOMIC) != 0
        elif atomic_ok:
            hit &= (rd & self._R_ATOMIC) == 0
        if hit.any():
            wave_of = np.argmax(hit, axis=0)  # per byte, the first other wave that touched it
            cols = hit.any(axis=0)
            stamp = np.take_along_axis(rd, wave_of[None], 0)[0]
            theirs = np.where((stamp & self._R_ATOMIC) != 0, "atomic", "load")[cols]
            self._fault(w, pc, kind, a[cols], wave_of[cols], stamp[cols] & self._PC, theirs)

    def _fault(self, w: Wave, pc: int, kind: str, addrs: np.ndarray, waves: np.ndarray, pcs: np.ndarray,
               theirs: Any) -> None:
        """Raise the race: the lowest racing byte, and the run of bytes after it that raced with the same access."""
        addrs, waves, pcs = addrs.ravel(), waves.ravel(), pcs.ravel()
        theirs = np.broadcast_to(np.asarray(theirs), addrs.shape)
        order = np.argsort(addrs, kind="stable")
        addrs, waves, pcs, theirs = addrs[order], waves[order], pcs[order], theirs[order]
        lo = hi = int(addrs[0])
        j, opc, okind = int(waves[0]), int(pcs[0]), str(theirs[0])
        for x, v, q in zip(addrs[1:].tolist(), waves[1:].tolist(), pcs[1:].tolist()):
            if x == hi:
                continue
            if x != hi + 1 or v != j or q != opc:
                break
            hi = x
        prog = w.prog
        name = (lambda p: describe(prog.instrs[p]) if p in prog.instrs else "an LDS instruction")
        verb = {"load": "reads", "store": "writes", "atomic": "atomically updates"}[kind]
        done = {"load": "read with", "store": "wrote with", "atomic": "atomically updated with"}[okind]
        where = f"byte {lo:#x}" if lo == hi else f"bytes {lo:#x}-{hi:#x}"
        barrier = "s_barrier_signal/s_barrier_wait" if prog.gfx12 else "s_barrier"
        raise ISAFault(f"workgroup {w.group}: LDS race on {where}: wave {w.index} {name(pc)} at pc "
                       f"{prog.base + pc:#x} {verb} what wave {j} {done} {name(opc)} at pc {prog.base + opc:#x} "
                       f"since the last barrier (no {barrier} orders them)", "lds race", None)


def _reader_vector(c: "_Compiler", o: Operand, typ: str) -> Callable:
    """A closure giving one VALU source as lanes: uint32 (the whole register for 16-bit operands too: the ALU picks
    the half opsel names), uint64, or bool."""
    prog, lanes = c.prog, c.prog.lanes
    w64 = typ.endswith("64")
    if typ == "mask":
        if o.is_vgpr:
            raise ISAFault(f"{c.ins.op}: a lane mask cannot come from v{o.vgpr}", "illegal instruction")
        code = o.code
        if code == VCC_LO:
            return lambda w: prog.mask(w.vcc())
        return lambda w: prog.mask((w.s[code] | (w.s[code + 1] << 32 if prog.wave64 else 0)) & prog.full_mask)
    if o.is_vgpr:
        r = c.vgpr(o, 2 if w64 else 1)
        if w64:
            return lambda w: w.v[r].astype(U64) | (w.v[r + 1].astype(U64) << U64(32))
        return lambda w: w.v[r]
    k = _const_value(o.code, o.literal, typ)
    if k is not None:
        arr = np.full(lanes, k, U64 if w64 else U32)
        arr.flags.writeable = False
        return lambda w: arr
    sr = _reader_scalar(c, o, typ)
    dt = U64 if w64 else U32
    return lambda w: np.full(lanes, sr(w), dt)


def _reader_scalar(c: "_Compiler", o: Operand, typ: str) -> Callable[[Wave], int]:
    """A closure giving one scalar operand's value as an int (64-bit operands from a register pair)."""
    w64 = typ.endswith("64") or o.count == 2
    code = o.code
    k = _const_value(code, o.literal, typ if not (w64 and not typ.endswith("64")) else "b64")
    if k is not None:
        return lambda w: k
    if o.is_vgpr:
        raise ISAFault(f"{c.ins.op}: a scalar operand cannot be v{o.vgpr}", "illegal instruction")
    if code == SCC:
        return lambda w: int(w.scc)
    if code == VCCZ:
        return lambda w: int(w.vcc() == 0)
    if code == EXECZ:
        return lambda w: int(w.exec == 0)
    if code == NULL:
        return lambda w: 0
    if code >= 128:
        raise ISAFault(f"{c.ins.op}: operand code {code} (an aperture or DPP/SDWA marker) is not emulated",
                       "illegal instruction")
    if code == EXEC_LO and w64:
        return lambda w: w.exec
    if w64:
        return lambda w: w.s[code] | w.s[code + 1] << 32
    return lambda w: w.s[code]


def _writer_scalar(c: "_Compiler", o: Operand, wide: bool) -> Callable[[Wave, int], None]:
    code = o.code
    if o.is_vgpr:
        raise ISAFault(f"{c.ins.op}: a scalar result cannot go to v{o.vgpr}", "illegal instruction")
    if code == NULL:
        return lambda w, x: None
    if code in (EXEC_LO, EXEC_HI):
        if wide or code == EXEC_HI:
            hi = code == EXEC_HI
            return (lambda w, x: w.set_exec((w.exec & 0xFFFFFFFF) | (x & 0xFFFFFFFF) << 32)) if hi and not wide \
                else (lambda w, x: w.set_exec(x))
        return lambda w, x: w.set_exec((w.exec & ~0xFFFFFFFF) | (x & 0xFFFFFFFF))
    if code == SCC:
        def scc(w: Wave, x: int) -> None:
            w.scc = bool(x)
        return scc
    if code > EXEC_HI:
        raise ISAFault(f"{c.ins.op}: cannot write operand code {code}", "illegal instruction")
    if wide:
        def two(w: Wave, x: int) -> None:
            w.s[code], w.s[code + 1] = x & 0xFFFFFFFF, (x >> 32) & 0xFFFFFFFF
        return two

    def one(w: Wave, x: int) -> None:
        w.s[code] = x & 0xFFFFFFFF
    return one


def _mask_writer(c: "_Compiler", o: Optional[Operand]) -> Callable[[Wave, np.ndarray], None]:
    """Write a per-lane bool result (compare, carry-out) to an SGPR (pair), VCC when `o` is None; lanes EXEC
    turned off read 0 (RDNA3 ISA guide, VOPC: 'inactive lanes write 0')."""
    prog = c.prog
    code = VCC_LO if o is None else o.code
    if code == NULL:
        return lambda w, m: None
    wr = _writer_scalar(c, Operand(code, 2 if prog.wave64 else 1), prog.wave64)

    bits = prog.bits

    def write(w: Wave, m: np.ndarray) -> None:
        wr(w, bits(m) if w.full else bits(m & w.em))
    return write


_MEM_RE = re.compile(r"^([bui])(8|16|32|64|96|128)$")


def _mem_shape(op: str) -> tuple[bool, int, str, Optional[str]]:
    """(load?, bytes per lane, 'b'|'u'|'i', d16 half or None) from a memory mnemonic (LLVM's gfx11/gfx12 names)."""
    toks = op.split("_")
    m = next((_MEM_RE.match(t) for t in reversed(toks) if _MEM_RE.match(t)), None)
    if m is None:
        raise ISAFault(f"{op}: not a load or store this executor knows the data size of")
    d16 = "hi" if "d16_hi" in op else "lo" if "d16" in op else None
    return "load" in toks, int(m.group(2)) // 8, m.group(1), d16


class _MemMixin:
    """Vector memory: global/flat, scratch and LDS instructions (methods of _Compiler)."""

    def active(self) -> Callable[[Wave], np.ndarray]:
        cache: dict[int, np.ndarray] = {}

        def lanes(w: Wave) -> np.ndarray:
            a = cache.get(w.exec)
            if a is None:
                a = cache[w.exec] = np.nonzero(w.em)[0]
            return a
        return lanes

    def load_writer(self, ins: Instr, size: int, ext: str, d16: Optional[str]) -> Callable:
        """Put (n_active, size) bytes into the destination VGPR(s) of the active lanes."""
        dst = ins.dst[0]
        k = max(1, size // 4)
        r = self.vgpr(dst, k)

        def put(w: Wave, lanes: np.ndarray, raw: np.ndarray) -> None:
            if size >= 4:
                words = raw.view("<u4")
                for j in range(k):
                    w.v[r + j, lanes] = words[:, j]
                return
            val = raw.view("<u2" if size == 2 else "u1")[:, 0].astype(U32)
            if ext == "i":
                bits = 8 * size
                val = ((val ^ U32(1 << (bits - 1))) - U32(1 << (bits - 1))).astype(U32)  # sign-extend
            if d16 is None:
                w.v[r, lanes] = val
            elif d16 == "lo":  # D16 loads write the low half and keep the high one (RDNA3 ISA guide, D16 loads)
                w.v[r, lanes] = (w.v[r, lanes] & U32(0xFFFF0000)) | (val & U32(0xFFFF))
            else:
                w.v[r, lanes] = (w.v[r, lanes] & U32(0xFFFF)) | (val << U32(16))
        return put

    def store_data(self, data: Operand, size: int, d16: Optional[str]) -> Callable:
        k = max(1, size // 4)
        r = self.vgpr(data, k)

        def get(w: Wave, lanes: np.ndarray) -> np.ndarray:
            if size >= 4:
                return np.ascontiguousarray(w.v[r:r + k, lanes].T).view(np.uint8).reshape(len(lanes), size)
            v = w.v[r, lanes]
            if d16 == "hi":
                v = v >> U32(16)
            return np.ascontiguousarray(v.astype("<u4")).view(np.uint8).reshape(len(lanes), 4)[:, :size]
        return get

    def mem_operands(self) -> tuple[Optional[Operand], Optional[Operand], list[Operand]]:
        """(vaddr, saddr, data VGPRs) of a FLAT/GLOBAL/SCRATCH/DS instruction, by role."""
        srcs = list(self.ins.src)
        vgprs = [o for o in srcs if o.is_vgpr]
        sgprs = [o for o in srcs if not o.is_vgpr and o.code != NULL]
        return (vgprs[0] if vgprs else None), (sgprs[0] if sgprs else None), vgprs[1:]

    def global_mem(self) -> Callable:
        ins, op, nxt = self.ins, self.ins.op, self.next
        if "atomic" in op:
            return self.global_atomic()
        is_load, size, ext, d16 = _mem_shape(op)
        vaddr, saddr, data = self.mem_operands()
        off = _sext(int(ins.fields.get("offset", 0)), 24 if self.prog.gfx12 else 13)  # gfx12 24-bit, gfx11 13-bit
        addr = self.global_address(vaddr, saddr, off)
        lanes_of = self.active()
        if is_load:
            put = self.load_writer(ins, size, ext, d16)

            def load(w: Wave) -> int:
                lanes = lanes_of(w)
                if len(lanes):
                    put(w, lanes, w.vm.read(addr(w, lanes), size, lanes))
                return nxt
            return load
        if not data:
            raise ISAFault(f"{op}: a store without a data register")
        get = self.store_data(data[0], size, d16)

        def store(w: Wave) -> int:
            lanes = lanes_of(w)
            if len(lanes):
                w.vm.write(addr(w, lanes), get(w, lanes), lanes)
            return nxt
        return store

    def global_address(self, vaddr: Optional[Operand], saddr: Optional[Operand], off: int) -> Callable:
        # RDNA3 ISA guide, global addressing: saddr off -> vaddr is a 64-bit address; saddr on -> saddr (64-bit) plus
        # the 32-bit unsigned vaddr; the instruction offset is added to both
        k = U64(off & (1 << 64) - 1)
        if vaddr is None:
            raise ISAFault(f"{self.ins.op}: no address VGPR")
        if saddr is None:
            r = self.vgpr(vaddr, 2)
            return lambda w, lanes: (w.v[r, lanes].astype(U64) | (w.v[r + 1, lanes].astype(U64) << U64(32))) + k
        r = self.vgpr(vaddr, 1)
        base = _reader_scalar(self, Operand(saddr.code, 2), "b64")
        return lambda w, lanes: w.v[r, lanes].astype(U64) + U64(base(w)) + k

    def global_atomic(self) -> Callable:
        ins, op, nxt = self.ins, self.ins.op, self.next
        kinds = {"add_u32": lambda a, b: a + b, "sub_u32": lambda a, b: a - b, "and_b32": lambda a, b: a & b,
                 "or_b32": lambda a, b: a | b, "xor_b32": lambda a, b: a ^ b, "swap_b32": lambda a, b: b,
                 "max_u32": max, "min_u32": min,
                 "max_i32": lambda a, b: a if _sext(a, 32) >= _sext(b, 32) else b,
                 "min_i32": lambda a, b: a if _sext(a, 32) <= _sext(b, 32) else b,
                 "add_f32": lambda a, b: struct.unpack("<I", struct.pack("<f", np.float32(
                     struct.unpack("<f", struct.pack("<I", a))[0]) + np.float32(
                     struct.unpack("<f", struct.pack("<I", b))[0])))[0]}
        name = op[len("global_atomic_"):] if op.startswith("global_atomic_") else op[len("flat_atomic_"):]
        cmpswap = name == "cmpswap_b32"
        if name not in kinds and not cmpswap:
            raise ISAFault(f"{op} is not emulated (global atomics: {', '.join(sorted(kinds))}, cmpswap_b32)")
        vaddr, saddr, data = self.mem_operands()
        off = _sext(int(ins.fields.get("offset", 0)), 24 if self.prog.gfx12 else 13)
        addr = self.global_address(vaddr, saddr, off)
        dr = self.vgpr(data[0], 2 if cmpswap else 1)
        ret = self.vgpr(ins.dst[0]) if ins.dst else None  # the returning form (glc / th:RETURN) gives the old value
        lanes_of, fn = self.active(), kinds.get(name)

        def atomic(w: Wave) -> int:
            lanes = lanes_of(w)
            if not len(lanes):
                return nxt
            addrs = addr(w, lanes)
            w.vm.locate(addrs, 4, "atomic", lanes)  # every lane checked before any lane writes
            old_vals = []
            for a, ln in zip(addrs, lanes):  # lane order: each lane sees the ones before it, as one atomic unit
                one = np.array([a], U64)
                old = int(w.vm.read(one, 4, kind="atomic")[0].view("<u4")[0])
                src = int(w.v[dr, ln])
                if cmpswap:  # RDNA3 ISA guide: DATA[0] is the new value, DATA[1] the compare value
                    new = src if old == int(w.v[dr + 1, ln]) else old
                else:
                    new = fn(old, src) & 0xFFFFFFFF
                w.vm.write(one, np.frombuffer(new.to_bytes(4, "little"), np.uint8).reshape(1, 4), kind="atomic")
                old_vals.append(old)
            if ret is not None:
                w.v[ret, lanes] = np.array(old_vals, U32)
            return nxt
        return atomic

    def scratch_mem(self) -> Callable:
        ins, op, nxt, prog = self.ins, self.ins.op, self.next, self.prog
        is_load, size, ext, d16 = _mem_shape(op)
        vaddr, saddr, data = self.mem_operands()
        if is_load:
            data = []
        elif not data:  # a store with vaddr off: its only VGPR is the data
            vaddr, data = None, [vaddr] if vaddr is not None else []
        off = _sext(int(ins.fields.get("offset", 0)), 24 if prog.gfx12 else 13)
        vr = self.vgpr(vaddr) if vaddr is not None else None
        sr = _reader_scalar(self, saddr, "b32") if saddr is not None else None
        lanes_of, lanes_n = self.active(), prog.lanes
        k = max(1, size // 4)
        put = self.load_writer(ins, size, ext, d16) if is_load else None
        get = None if is_load else self.store_data(data[0], size, d16)

        def where(w: Wave, lanes: np.ndarray) -> np.ndarray:
            """Per-lane private offsets -> the swizzled addresses of each dword the access touches."""
            if isinstance(w.scratch, str):
                raise ISAFault(f"{op}: the kernel uses scratch, but {w.scratch}", "page fault")
            base, per_lane = w.scratch
            o = np.full(len(lanes), off, np.int64)
            if vr is not None:
                o += w.v[vr, lanes].astype(np.int64)
            if sr is not None:
                o += _sext(sr(w), 32)
            bad = (o < 0) | (o + size > per_lane)
            if bad.any():
                i = int(np.argmax(bad))
                raise ISAFault(f"{op}: lane {int(lanes[i])} touches private offset {int(o[i]):#x} (+{size} bytes), "
                               f"outside its {per_lane} bytes of scratch (COMPUTE_TMPRING_SIZE.WAVESIZE / lanes)",
                               "page fault", base)
            if ((o % 4) + min(size, 4) > 4).any() or (size >= 4 and (o % 4).any()):
                raise ISAFault(f"{op}: an unaligned scratch access is not emulated")
            # AMDGPUUsage "Private Segment": scratch is interleaved per dword across the lanes of a wave, so lanes
            # reading one private address touch adjacent dwords: dword d of lane l sits at base + (d*lanes + l)*4
            dword = (o // 4)[:, None] + np.arange(k)
            return (U64(base) + ((dword * lanes_n + lanes[:, None].astype(np.int64)) * 4 +
                                 (o % 4)[:, None]).astype(U64)).ravel()

        if is_load:
            def load(w: Wave) -> int:
                lanes = lanes_of(w)
                if len(lanes):
                    raw = w.vm.read(where(w, lanes), min(size, 4), np.repeat(lanes, k))
                    put(w, lanes, raw.reshape(len(lanes), size))
                return nxt
            return load

        def store(w: Wave) -> int:
            lanes = lanes_of(w)
            if len(lanes):
                w.vm.write(where(w, lanes), get(w, lanes).reshape(len(lanes) * k, min(size, 4)), np.repeat(lanes, k))
            return nxt
        return store

    def lds(self) -> Callable:
        ins, op, nxt, pc = self.ins, self.ins.op, self.next, self.pc  # pc: for the race tracker (LDSRaces)
        f = ins.fields
        two = "2addr" in op
        stride = 64 if "stride64" in op else 1
        is_load, size, ext, d16 = _mem_shape(op)
        if "load" not in op and "store" not in op:
            raise ISAFault(f"{op} is not emulated (LDS runs loads and stores)")
        vaddr, _, data = self.mem_operands()
        ar = self.vgpr(vaddr)
        if two:  # RDNA3 ISA guide, DS 2ADDR: addr + OFFSET0/1 * data size (* 64 for the STRIDE64 forms)
            offs = [int(f.get("offset0", 0)) * size * stride, int(f.get("offset1", 0)) * size * stride]
        else:
            offs = [int(f["offset"]) if "offset" in f else int(f.get("offset0", 0)) | int(f.get("offset1", 0)) << 8]
        lanes_of, k = self.active(), max(1, size // 4)
        span = np.arange(size)
        nonneg = min(offs) >= 0  # unsigned offset fields: with a uint32 address no lane can then go below 0

        def addrs(w: Wave, lanes: np.ndarray, o: int) -> np.ndarray:
            a = w.v[ar, lanes].astype(np.int64)
            if o:
                a += o
            if nonneg and a.max() + size <= len(w.lds):  # one reduction on the common path
                return a[:, None] + span
            bad = (a < 0) | (a + size > len(w.lds))
            if bad.any():
                i = int(np.argmax(bad))
                raise ISAFault(f"{op}: lane {int(lanes[i])} {'reads' if is_load else 'writes'} {size} bytes at LDS "
                               f"address {int(a[i]):#x}, outside the workgroup's {len(w.lds)}-byte LDS allocation "
                               "(COMPUTE_PGM_RSRC2.LDS_SIZE); the emulator faults where hardware would drop the "
                               "access", "lds out of range")
            return a[:, None] + np.arange(size)

        if is_load:
            if two:
                dst = self.vgpr(ins.dst[0], 2 * k)

                def load2(w: Wave) -> int:
                    lanes = lanes_of(w)
                    if len(lanes):  # both addresses before any write: the destination may overlap the address
                        where = [addrs(w, lanes, o) for o in offs]
                        if w.races is not None:
                            for a in where:
                                w.races.load(w, a, pc)
                        halves = [np.ascontiguousarray(w.lds[a]).view("<u4") for a in where]
                        for h, words in enumerate(halves):
                            for j in range(k):
                                w.v[dst + h * k + j, lanes] = words[:, j]
                    return nxt
                return load2
            put = self.load_writer(ins, size, ext, d16)

            def load(w: Wave) -> int:
                lanes = lanes_of(w)
                if len(lanes):
                    a = addrs(w, lanes, offs[0])
                    if w.races is not None:
                        w.races.load(w, a, pc)
                    put(w, lanes, np.ascontiguousarray(w.lds[a]))
                return nxt
            return load
        gets = [self.store_data(d, size, d16) for d in data[:2 if two else 1]]
        if len(gets) != len(offs):
            raise ISAFault(f"{op}: expected {len(offs)} data registers, got {len(gets)}")

        def store(w: Wave) -> int:
            lanes = lanes_of(w)
            if len(lanes):
                for get, o in zip(gets, offs):
                    a = addrs(w, lanes, o)
                    if w.races is not None:
                        w.races.store(w, a, pc)
                    w.lds[a] = get(w, lanes)
            return nxt
        return store


class _Compiler(_MemMixin):
    """Turns one decoded instruction into the closure that executes it."""

    def __init__(self, prog: Program, ins: Instr, pc: int):
        self.prog, self.ins, self.pc = prog, ins, pc
        self.next = pc + ins.size

    def fault(self, why: str, kind: str = "illegal instruction") -> Callable:
        base = self.prog.base

        def raise_it(w: Wave) -> int:
            raise ISAFault(why, kind, base + self.pc)
        return raise_it

    def vgpr(self, o: Operand, count: int = 1) -> int:
        r = o.vgpr
        if r + count > self.prog.vgprs:
            raise ISAFault(f"{self.ins.op} uses v{r + count - 1}, but COMPUTE_PGM_RSRC1 allocates {self.prog.vgprs} "
                           f"VGPRs per lane (v0-v{self.prog.vgprs - 1})", "illegal instruction")
        return r

    def build(self) -> Callable:
        ins, op = self.ins, self.ins.op
        try:
            if op in _CACHE_OPS or op in _NOPS or op.startswith("s_wait"):
                nxt = self.next
                return lambda w: nxt
            enc = ins.enc
            if enc == "SOPP" or op in ("s_barrier_signal", "s_barrier_wait", "s_barrier_signal_isfirst"):
                return self.sopp()
            if enc in ("SOP1", "SOP2", "SOPC", "SOPK"):
                return self.salu()
            if enc == "SMEM":
                return self.smem()
            if enc == "VOPD":
                return self.vopd()
            if enc in ("VOP1", "VOP2", "VOP3", "VOP3SD", "VOPC", "VOP3P"):
                return self.valu()
            if enc == "DS":
                return self.lds()
            if enc in ("GLOBAL", "FLAT"):
                return self.global_mem()
            if enc == "SCRATCH":
                return self.scratch_mem()
            return self.fault(f"{op} ({enc} encoding) is not emulated: the wave executor runs SALU, SMEM, VALU, "
                              "VOPD, DS, GLOBAL/FLAT and SCRATCH instructions")
        except ISAFault as e:
            return self.fault(str(e.args[0]), e.kind)

    # --- scalar ---
    def sopp(self) -> Callable:
        ins, op, nxt, prog = self.ins, self.ins.op, self.next, self.prog
        simm = _sext(int(ins.fields.get("simm16", 0)), 16)
        target = self.pc + 4 + 4 * simm  # RDNA3 ISA guide SOPP: PC = PC + 4 + signext(SIMM16 * 4)
        if op == "s_endpgm":
            return lambda w: END
        if (op == "s_branch" or op.startswith("s_cbranch_")) and not 0 <= target < len(prog.code):
            return self.fault(f"{op} to {prog.base + target:#x}, outside the code object mapped at {prog.base:#x} "
                              f"({len(prog.code)} bytes)")
        if op == "s_branch":
            return lambda w: target
        conds: dict[str, Callable[[Wave], bool]] = {
            "s_cbranch_scc0": lambda w: not w.scc, "s_cbranch_scc1": lambda w: w.scc,
            "s_cbranch_vccz": lambda w: w.vcc() == 0, "s_cbranch_vccnz": lambda w: w.vcc() != 0,
            "s_cbranch_execz": lambda w: w.exec == 0, "s_cbranch_execnz": lambda w: w.exec != 0}
        if op in conds:
            cond = conds[op]
            return lambda w: target if cond(w) else nxt
        if op in ("s_barrier", "s_barrier_wait"):
            def barrier(w: Wave) -> int:
                w.pc = nxt
                return BARRIER
            return barrier
        if op in ("s_barrier_signal", "s_barrier_signal_isfirst"):  # gfx12: arrive; the wave waits at s_barrier_wait (RDNA4 ISA guide, barriers)
            return lambda w: nxt
        if op == "s_code_end":
            return self.fault("s_code_end executed: it pads the end of the code and marks where execution must never "
                              "reach (a branch or fall-through past s_endpgm)")
        if op in ("s_trap", "s_sethalt", "s_setkill"):
            return self.fault(f"{op} {simm}: the kernel trapped or halted (no trap handler is emulated)", "trap")
        return self.fault(f"{op} is not emulated")

    def salu(self) -> Callable:
        ins, op, nxt, prog = self.ins, self.ins.op, self.next, self.prog
        if op == "s_getpc_b64":
            wr = _writer_scalar(self, ins.dst[0], True)
            here = prog.base + self.next  # RDNA3 ISA guide: S_GETPC_B64 gives the address of the next instruction

            def getpc(w: Wave) -> int:
                wr(w, here)
                return nxt
            return getpc
        if op in ("s_setpc_b64", "s_swappc_b64"):
            rd = _reader_scalar(self, ins.src[0], "b64")
            wr = _writer_scalar(self, ins.dst[0], True) if op == "s_swappc_b64" else None
            here, base = prog.base + self.next, prog.base

            def jump(w: Wave) -> int:
                to = rd(w) - base
                if wr is not None:
                    wr(w, here)
                if not 0 <= to < len(prog.code):
                    raise ISAFault(f"{op} to {to + base:#x}, outside the code object at {base:#x}",
                                   "illegal instruction", to + base)
                return to
            return jump
        alu = _alu()
        if not alu.has_scalar(op):
            raise ISAFault(f"{op} is not emulated (no scalar ALU semantics for it)")
        srcs = list(ins.src)
        if alu.reads_dest(op) and ins.dst and len(srcs) < alu.source_count(op):
            srcs.append(ins.dst[0])  # s_addk_i32, s_mulk_i32, s_fmac_f32 ...: the old destination is the last source
        readers = [_reader_scalar(self, o, alu.operand_type(op, i)) for i, o in enumerate(srcs)]
        dwide = bool(ins.dst) and (ins.dst[0].count == 2 or alu.dest_type(op).endswith("64"))
        wr = _writer_scalar(self, ins.dst[0], dwide) if ins.dst and ins.enc != "SOPC" else None
        wave64, mode = prog.wave64, prog.mode
        bind = getattr(alu, "compile_scalar", None)
        scalar = bind(ins, wave64, mode) if bind else (lambda src, scc, ex: alu.scalar(ins, src, scc, ex, wave64, mode))

        def run(w: Wave) -> int:
            r = scalar([rd(w) for rd in readers], w.scc, w.exec)
            if r.d is not None and wr is not None:
                wr(w, r.d)
            if r.scc is not None:
                w.scc = bool(r.scc)
            if r.exec is not None:
                w.set_exec(r.exec)
            return nxt
        return run

    def smem(self) -> Callable:
        ins, op, nxt = self.ins, self.ins.op, self.next
        sizes = {"b32": 1, "b64": 2, "b96": 3, "b128": 4, "b256": 8, "b512": 16}
        if not op.startswith("s_load_") or op.split("_")[-1] not in sizes:
            raise ISAFault(f"{op} is not emulated (scalar memory runs s_load_b32..b512)")
        n = sizes[op.split("_")[-1]]
        base_op = ins.src[0]
        base_rd = _reader_scalar(self, Operand(base_op.code, 2), "b64")
        off = int(ins.fields.get("offset", 0))
        soff = next((o for o in ins.src[1:] if o.code != NULL and not o.is_vgpr), None)
        soff_rd = _reader_scalar(self, soff, "b32") if soff is not None else None
        dst = ins.dst[0].code
        if dst + n > 106 and dst < 106 and n:
            raise ISAFault(f"{op} writes s{dst + n - 1}: past s105")
        def load(w: Wave) -> int:
            a = (base_rd(w) + off + (soff_rd(w) if soff_rd else 0)) & ~3 & (1 << 64) - 1  # SMEM ignores addr[1:0]
            data = w.vm.read(np.array([a], U64), 4 * n)[0].view("<u4")
            w.s[dst:dst + n] = data.tolist()
            return nxt
        return load

    # --- vector ---
    def valu(self) -> Callable:
        ins, op = self.ins, self.ins.op
        if op == "v_nop":
            nxt = self.next
            return lambda w: nxt
        if op in ("v_readfirstlane_b32", "v_readlane_b32", "v_writelane_b32"):
            return self.lanes_op()
        if ins.fields.get("dpp") is not None or ins.fields.get("sdwa") is not None:
            raise ISAFault(f"{op}: DPP/SDWA forms are not emulated")
        compute, write = self.vector_parts(ins)
        nxt = self.next
        fused = self.fused_valu(ins)
        if fused is not None:
            return fused

        def run(w: Wave) -> int:
            write(w, compute(w))
            return nxt
        return run

    def fused_valu(self, ins: Instr) -> Optional[Callable]:
        """The common VALU shapes as one closure: up to three sources read straight from their registers, the
        result written to one 32-bit VGPR and/or a lane mask, without the compute/write indirections."""
        alu, op, prog, nxt = _alu(), ins.op, self.prog, self.next
        bind = getattr(alu, "compile_vector", None)
        if bind is None or op.startswith("v_cmpx_") or alu.writes_exec(op):
            return None
        vector, readers = self.vector_inputs(ins)
        vector = bind(ins, prog.mode)
        dtype = alu.dest_type(op)
        vdst = next((o for o in ins.dst if o.is_vgpr), None)
        sdst = next((o for o in ins.dst if not o.is_vgpr), None)
        is_cmp = ins.enc == "VOPC" or op.startswith("v_cmp_")
        carry_vcc = ins.enc in ("VOP2", "VOPD") and op in ("v_add_co_ci_u32", "v_sub_co_ci_u32", "v_subrev_co_ci_u32")
        wants_mask = is_cmp or sdst is not None or carry_vcc
        if vdst is not None and (dtype.endswith("16") or dtype.endswith("64") or dtype == "mask"):
            return None
        if vdst is None and not wants_mask:
            return None
        n = len(readers)
        if n == 1:
            r0, = readers
            get = lambda w: vector([r0(w)])  # noqa: E731
        elif n == 2:
            r0, r1 = readers
            get = lambda w: vector([r0(w), r1(w)])  # noqa: E731
        elif n == 3:
            r0, r1, r2 = readers
            get = lambda w: vector([r0(w), r1(w), r2(w)])  # noqa: E731
        else:
            return None
        mask_w = _mask_writer(self, sdst) if wants_mask else None
        if vdst is None:
            def cmp(w: Wave) -> int:
                mask_w(w, get(w).mask)
                return nxt
            return cmp
        r = self.vgpr(vdst)
        copyto = np.copyto

        if mask_w is None:
            def d32(w: Wave) -> int:
                d = get(w).d
                if w.full:
                    w.v[r] = d
                else:
                    copyto(w.v[r], d, casting="unsafe", where=w.em)
                return nxt
            return d32

        def d32_mask(w: Wave) -> int:
            res = get(w)
            d = res.d
            if d is not None:
                if w.full:
                    w.v[r] = d
                else:
                    copyto(w.v[r], d, casting="unsafe", where=w.em)
            if res.mask is not None:
                mask_w(w, res.mask)
            return nxt
        return d32_mask

    def vector_inputs(self, ins: Instr) -> tuple[Any, list[Callable]]:
        """(None, the source readers) of a VALU instruction, implicit sources included."""
        alu, op = _alu(), ins.op
        srcs = list(ins.src)
        want = alu.source_count(op)
        if alu.reads_dest(op) and ins.dst and len(srcs) < want:
            srcs.append(ins.dst[0])
        if len(srcs) < want and alu.operand_type(op, want - 1) == "mask":
            srcs.append(Operand(VCC_LO))
        return None, [_reader_vector(self, o, alu.operand_type(op, i)) for i, o in enumerate(srcs)]

    def vector_parts(self, ins: Instr, copy_sources: bool = False) -> tuple[Callable, Callable]:
        """(compute, write): compute reads the sources and runs the ALU; write puts its result under EXEC."""
        alu, op, prog = _alu(), ins.op, self.prog
        if not alu.has_vector(op):
            raise ISAFault(f"{op} is not emulated (no vector ALU semantics for it)")
        opsel = int(ins.fields.get("opsel", 0)) if ins.enc not in ("VOP3P",) else 0
        srcs = list(ins.src)
        want = alu.source_count(op)
        if alu.reads_dest(op) and ins.dst and len(srcs) < want:
            srcs.append(ins.dst[0])  # v_fmac/v_mac: D = S0 * S1 + D, the old destination is the last source
        if len(srcs) < want and alu.operand_type(op, want - 1) == "mask":
            srcs.append(Operand(VCC_LO))  # the implicit VCC of VOP2 v_cndmask/v_add_co_ci and of v_div_fmas
        if len(srcs) != want:
            raise ISAFault(f"{op}: {len(srcs)} source operands decoded, the ALU takes {want}")
        readers = [_reader_vector(self, o, alu.operand_type(op, i)) for i, o in enumerate(srcs)]
        mode = prog.mode
        bind = getattr(alu, "compile_vector", None)  # an ALU that can pre-bind an instruction saves the per-call lookup
        vector = bind(ins, mode) if bind else (lambda src: alu.vector(ins, src, mode))
        if copy_sources:
            readers = [(lambda rd: (lambda w: np.array(rd(w))))(rd) for rd in readers]

        def compute(w: Wave) -> Any:
            return vector([rd(w) for rd in readers])
        return compute, self.vector_writer(ins, alu.dest_type(op), opsel)

    def vector_writer(self, ins: Instr, dtype: str, opsel: int) -> Callable:
        op, prog, enc = ins.op, self.prog, ins.enc
        cmpx = op.startswith("v_cmpx_")
        vdst = next((o for o in ins.dst if o.is_vgpr), None)
        sdst = next((o for o in ins.dst if not o.is_vgpr), None)
        if cmpx or _alu().writes_exec(op):
            def to_exec(w: Wave, res: Any) -> None:
                # RDNA3 ISA guide VOPC: V_CMPX writes EXEC only (no SGPR or VCC result on gfx11/gfx12)
                w.set_exec(prog.bits(res.mask & w.em))
            return to_exec
        mask_w = None
        if enc == "VOPC" or op.startswith("v_cmp_") or op.startswith("v_cmp_class"):
            mask_w = _mask_writer(self, sdst)
        elif sdst is not None or (enc in ("VOP2", "VOPD") and op in ("v_add_co_ci_u32", "v_sub_co_ci_u32",
                                                                       "v_subrev_co_ci_u32")):
            mask_w = _mask_writer(self, sdst)  # a carry-out: VOP3SD's sdst, or VCC for the VOP2 forms
        d_w = None
        if vdst is not None:
            d_w = self.vgpr_writer(vdst, dtype, bool(opsel >> 3 & 1))
        if d_w is None and mask_w is None:
            return lambda w, res: None
        if mask_w is None:
            return lambda w, res: d_w(w, res.d, res.d16_hi)
        if d_w is None:
            return lambda w, res: mask_w(w, res.mask)

        def both(w: Wave, res: Any) -> None:
            if res.d is not None:
                d_w(w, res.d, res.d16_hi)
            if res.mask is not None:
                mask_w(w, res.mask)
        return both

    def vgpr_writer(self, o: Operand, dtype: str, hi_sel: bool) -> Callable:
        w64, w16 = dtype.endswith("64"), dtype.endswith("16")
        r = self.vgpr(o, 2 if w64 else 1)
        if w64:
            def put64(w: Wave, d: np.ndarray, _hi: bool) -> None:
                d = np.asarray(d, U64)
                lo, hi = (d & U64(0xFFFFFFFF)).astype(U32), (d >> U64(32)).astype(U32)
                if w.full:
                    w.v[r], w.v[r + 1] = lo, hi
                else:
                    np.copyto(w.v[r], lo, where=w.em)
                    np.copyto(w.v[r + 1], hi, where=w.em)
            return put64
        if w16:
            # gfx11/gfx12 16-bit VALU results write one half of the VGPR and keep the other (true16 register halves)
            def put16(w: Wave, d: np.ndarray, hi: bool) -> None:
                row, d = w.v[r], np.asarray(d).astype(U32) & U32(0xFFFF)
                val = (row & U32(0xFFFF)) | (d << U32(16)) if (hi or hi_sel) else (row & U32(0xFFFF0000)) | d
                if w.full:
                    w.v[r] = val
                else:
                    np.copyto(row, val, where=w.em)
            return put16

        def put32(w: Wave, d: np.ndarray, _hi: bool) -> None:
            if w.full:
                w.v[r] = d
            else:
                np.copyto(w.v[r], d, casting="unsafe", where=w.em)
        return put32

    def vopd(self) -> Callable:
        ins, nxt = self.ins, self.next
        if len(ins.dual) != 2:
            raise ISAFault(f"{ins.op}: a VOPD instruction has an X and a Y half, got {len(ins.dual)}")
        (cx, wx), (cy, wy) = (self.vector_parts(h, copy_sources=True) for h in ins.dual)

        def dual(w: Wave) -> int:
            rx, ry = cx(w), cy(w)  # both halves read their sources before either writes (RDNA3 ISA guide, VOPD)
            wx(w, rx)
            wy(w, ry)
            return nxt
        return dual

    def lanes_op(self) -> Callable:
        ins, op, nxt, prog = self.ins, self.ins.op, self.next, self.prog
        if op == "v_writelane_b32":
            r = self.vgpr(ins.dst[0])
            val, lane = (_reader_scalar(self, o, "b32") for o in ins.src[:2])

            def writelane(w: Wave) -> int:
                w.v[r, lane(w) % prog.lanes] = val(w)  # ignores EXEC (RDNA3 ISA guide, V_WRITELANE_B32)
                return nxt
            return writelane
        src = ins.src[0]
        r = self.vgpr(src)
        wr = _writer_scalar(self, ins.dst[0], False)
        if op == "v_readlane_b32":
            lane = _reader_scalar(self, ins.src[1], "b32")

            def readlane(w: Wave) -> int:
                wr(w, int(w.v[r, lane(w) % prog.lanes]))
                return nxt
            return readlane

        def readfirstlane(w: Wave) -> int:
            # the lowest active lane; lane 0 when EXEC is 0 (RDNA3 ISA guide, V_READFIRSTLANE_B32)
            first = (w.exec & -w.exec).bit_length() - 1 if w.exec else 0
            wr(w, int(w.v[r, first]))
            return nxt
        return readfirstlane


def run_workgroup(waves: list[Wave]) -> int:
    """Run the waves of one workgroup to the end: each runs until it ends or reaches a barrier; once every wave
    that has not ended waits at the barrier, all continue. A wave that ends while others wait at a barrier it never
    reached is a fault (on hardware the others would run on without it: a kernel bug either way). Two waves
    touching one LDS byte between two barriers, one of them writing it, is a race (LDSRaces): a fault, since the
    result would be whatever this one-wave-after-another order gives. Returns the instructions executed."""
    live = list(waves)
    races = LDSRaces.for_workgroup(waves)  # a workgroup of one wave cannot race with itself: no tracking
    for w in waves:
        w.races = races
    while live:
        for w in live:
            if not w.at_barrier:
                w.run()
        ended = [w for w in live if w.done]
        waiting = [w for w in live if w.at_barrier]
        if ended and waiting:
            e = ended[0]
            raise ISAFault(f"workgroup {e.group}: wave {e.index} ended (s_endpgm) while waves "
                           f"{[w.index for w in waiting]} wait at the barrier at pc {waiting[0].prog.base + waiting[0].pc:#x}: "
                           "a barrier some waves never reach", "barrier", None)
        live = waiting
        for w in live:
            w.at_barrier = False
        if races is not None:  # every live wave passed the barrier: a new epoch
            races.next_epoch()
    return sum(w.count for w in waves)
