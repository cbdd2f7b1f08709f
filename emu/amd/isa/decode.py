"""Decode RDNA3 (gfx1100) and RDNA4 (gfx1201) machine code into `Instr` (see instr.py for the operand space).

Bit layouts: AMD "RDNA3 Instruction Set Architecture" and "RDNA4 Instruction Set Architecture" reference guides,
chapter "Microcode Formats"; opcode numbers and operand widths come from opcodes.py (LLVM 19's disassembler).
Conventions the executor relies on:
  * operands are listed in the order LLVM prints them, split into dst and src by field name; operands LLVM prints
    but the encoding does not hold (the vcc_lo of v_cndmask_b32_e32 / VOPC e32 / v_add_co_ci_u32_e32) are left out;
  * a 9-bit source of 255 is Operand(LITERAL, literal=<the 32-bit dword as encoded>); for a 64-bit float operand
    that dword is the high half of the double (RDNA3 ISA guide, "Literal constants");
  * 16-bit VOP1/VOP2/VOPC operands hold the 32-bit VGPR, and VGPR bit 7 (the high half) goes to fields["opsel"]
    (bit i for source i, bit 3 for the destination), as a VOP3 op_sel says it;
  * VOP2's constant K (v_fmamk/v_fmaak) and VOPD's are Operand(LITERAL) sources in printed position.
"""
from __future__ import annotations

import struct

from .instr import LITERAL, NULL, VGPR0, DecodeError, Instr, Operand
from .opcodes import TABLES

DST_FIELDS = {"vdst", "sdst", "sdata"}
# SOPK ops whose sdst field is read, not written (LLVM SOPInstructions.td: s_cmpk_*, s_setreg_*, s_waitcnt_*).
SOPK_READS_SDST = ("s_cmpk_", "s_setreg_", "s_waitcnt_", "s_subvector_loop_")
# 9-bit source codes that select DPP / SDWA forms, which this decoder does not take apart (RDNA3 ISA 7.3).
DPP_CODES = {233: "DPP8", 234: "DPP8FI", 250: "DPP16"}


def _u32(code, offset: int) -> int:
    return struct.unpack_from("<I", code, offset)[0]


def _fail(code, offset: int, target: str, why: str) -> DecodeError:
    words = " ".join(f"{_u32(code, offset + 4 * i):08x}" for i in range(3) if offset + 4 * i + 4 <= len(code))
    return DecodeError(f"{why}: dwords {words} at byte offset {offset:#x} ({target}); the decoder (emu/amd/isa/"
                       f"decode.py, tables in opcodes.py) does not know this instruction")


def encoding_of(w0: int, target: str) -> str:
    """The encoding family of the first dword (RDNA3/RDNA4 ISA guides, "Microcode Formats" encoding fields)."""
    gfx12 = target.startswith("gfx12")
    if w0 >> 23 == 0x17D: return "SOP1"
    if w0 >> 23 == 0x17E: return "SOPC"
    if w0 >> 23 == 0x17F: return "SOPP"
    if w0 >> 28 == 0xB: return "SOPK"
    if w0 >> 30 == 0x2: return "SOP2"
    if w0 >> 25 == 0x3F: return "VOP1"
    if w0 >> 25 == 0x3E: return "VOPC"
    if w0 >> 31 == 0: return "VOP2"
    top6, top8 = w0 >> 26, w0 >> 24
    if top6 == 0x35: return "VOP3"
    if top8 == 0xCC: return "VOP3P"
    if top6 == 0x32: return "VOPD"
    if top6 == 0x36: return "DS"
    if top6 == 0x3D: return "SMEM"
    if not gfx12 and top6 == 0x37: return "FLAT*"
    if not gfx12 and top6 == 0x38: return "MUBUF"
    if gfx12 and top8 in (0xEC, 0xED, 0xEE): return ("FLAT", "SCRATCH", "GLOBAL")[top8 - 0xEC]
    return "?"


class _Reader:
    """Operands of one instruction: turns (field kind, raw value, count) into Operand and takes the literal."""

    def __init__(self, code, offset: int, base_size: int):
        self.code, self.offset, self.size = code, offset, base_size
        self.literal = None

    def take_literal(self) -> int:
        if self.literal is None:
            if self.offset + self.size + 4 > len(self.code):
                raise IndexError("literal runs past the end of the code")
            self.literal = _u32(self.code, self.offset + self.size)
            self.size += 4
        return self.literal

    def operand(self, kind: str, raw: int, count: int) -> Operand:
        if kind == "v":
            return Operand(VGPR0 + raw, count)
        if raw == LITERAL and kind == "x":
            return Operand(LITERAL, count, self.take_literal())
        return Operand(raw, count)


def _parse_slot(slot: str):
    """'src0.x1.f16.VS_32_Lo128' -> ('src0', 'x', 1, 'f16', 'VS_32_Lo128')"""
    parts = slot.split(".") + ["", "", ""]
    if len(parts[1]) < 2:
        return parts[0], "", 0, "", ""
    return parts[0], parts[1][0], int(parts[1][1:]), parts[2], parts[3]


def _build(entry_slots, values: dict, rd: _Reader, fields: dict, reads_sdst=False):
    """Operands for `entry_slots` from raw field `values`; 16-bit halves of VOP1/2/C VGPRs go to fields['opsel']."""
    dst, src = [], []
    for slot in entry_slots:
        name, kind, count, _imm, half = _parse_slot(slot)
        if name == "lit":
            src.append(Operand(LITERAL, 1, rd.take_literal()))
            continue
        if not kind:
            continue
        raw = values[name]
        if half and (kind == "v" or raw >= VGPR0) and (raw & 0x80):
            raw &= ~0x80  # RDNA3 ISA 7.2 "16-bit VGPRs": VGPR bit 7 selects the high half in VOP1/VOP2/VOPC
            fields["opsel"] = fields.get("opsel", 0) | (8 if name == "vdst" else 1 << int(name[-1]))
        op = rd.operand(kind, raw, count)
        (dst if name in DST_FIELDS and not reads_sdst else src).append(op)
    return tuple(dst), tuple(src)


def _bits(w: int, hi: int, lo: int) -> int:
    return (w >> lo) & ((1 << (hi - lo + 1)) - 1)


def decode(code: bytes | memoryview, offset: int, target: str) -> Instr:
    """Decode the instruction at byte `offset` of `code` for `target` ("gfx1100" or "gfx1201")."""
    if target not in TABLES:
        raise ValueError(f"unknown target {target!r}: the decoder knows {sorted(TABLES)}")
    if offset + 4 > len(code):
        raise DecodeError(f"no instruction at byte offset {offset:#x} ({target}): the code is {len(code)} bytes")
    try:
        return _decode(code, offset, target)
    except (IndexError, struct.error) as e:
        raise _fail(code, offset, target, f"truncated instruction ({e})") from None


def _decode(code, offset: int, target: str) -> Instr:
    tab = TABLES[target]
    w0 = _u32(code, offset)
    enc = encoding_of(w0, target)
    need = lambda n: _u32(code, offset + 4 * n)  # noqa: E731
    fields: dict = {}

    def lookup(table: str, op: int):
        entry = tab.get(table, {}).get(op)
        if entry is None:
            raise _fail(code, offset, target, f"unknown {table} opcode {op}")
        return entry

    if enc in ("SOP1", "SOP2", "SOPC"):
        op = {"SOP1": _bits(w0, 15, 8), "SOP2": _bits(w0, 29, 23), "SOPC": _bits(w0, 22, 16)}[enc]
        mn, slots = lookup(enc, op)
        rd = _Reader(code, offset, 4)
        vals = {"sdst": _bits(w0, 22, 16), "ssrc0": _bits(w0, 7, 0), "ssrc1": _bits(w0, 15, 8)}
        dst, src = _build(slots, vals, rd, fields)
        return Instr(mn, enc, rd.size, dst, src, fields, offset)
    if enc in ("SOPK", "SOPP"):
        op = _bits(w0, 27, 23) if enc == "SOPK" else _bits(w0, 22, 16)
        mn, sdst, _imm = lookup(enc, op)
        fields["simm16"] = w0 & 0xFFFF
        size, dst, src = 4, (), ()
        if sdst:
            reg = Operand(_bits(w0, 22, 16), int(sdst[-1]))
            dst, src = ((), (reg,)) if mn.startswith(SOPK_READS_SDST) else ((reg,), ())
        if mn == "s_setreg_imm32_b32":  # SOPK with a trailing 32-bit literal (RDNA3 ISA, SOPK)
            src, size = (Operand(LITERAL, 1, need(1)),), 8
        if mn == "s_waitcnt":  # RDNA3 ISA s_waitcnt: vmcnt [15:10], lgkmcnt [9:4], expcnt [2:0]
            fields.update(vmcnt=_bits(w0, 15, 10), lgkmcnt=_bits(w0, 9, 4), expcnt=_bits(w0, 2, 0))
        return Instr(mn, enc, size, dst, src, fields, offset)
    if enc == "SMEM":
        w1 = need(1)
        if target.startswith("gfx12"):  # RDNA4 ISA SMEM: op [20:13], scope [22:21], th [25:23]; ioffset [23:0] signed
            op = _bits(w0, 20, 13)
            fields.update(offset=_sext(_bits(w1, 23, 0), 24), scope=_bits(w0, 22, 21), th=_bits(w0, 25, 23))
        else:  # RDNA3 ISA SMEM: op [25:18], glc [14], dlc [13]; offset [20:0] signed
            op = _bits(w0, 25, 18)
            fields.update(offset=_sext(_bits(w1, 20, 0), 21), glc=_bits(w0, 14, 14), dlc=_bits(w0, 13, 13))
        mn, slots, bare = lookup("SMEM", op)
        if bare:  # cache invalidations: no operands
            return Instr(mn, enc, 8, (), (), fields, offset)
        if slots is None:
            raise _fail(code, offset, target, f"SMEM {mn} is not supported")
        sbase = Operand(_bits(w0, 5, 0) * 2, int(slots[1][-1]))
        soff = Operand(_bits(w1, 31, 25))
        data = Operand(_bits(w0, 12, 6), int(slots[0].split(".")[1][1:]))
        return Instr(mn.split()[0], enc, 8, (data,), (sbase, soff), fields, offset)
    if enc in ("VOP1", "VOP2", "VOPC"):
        op = {"VOP1": _bits(w0, 16, 9), "VOP2": _bits(w0, 30, 25), "VOPC": _bits(w0, 24, 17)}[enc]
        if _bits(w0, 8, 0) in DPP_CODES:
            raise _fail(code, offset, target, f"{enc} {DPP_CODES[_bits(w0, 8, 0)]} form is not supported")
        mn, slots = lookup(enc, op)
        rd = _Reader(code, offset, 4)
        vals = {"vdst": _bits(w0, 24, 17), "src0": _bits(w0, 8, 0), "src1": _bits(w0, 16, 9)}
        dst, src = _build(slots, vals, rd, fields)
        return Instr(_base(mn), enc, rd.size, dst, src, fields, offset)
    if enc == "VOP3":
        w1 = need(1)
        op = _bits(w0, 25, 16)
        mn, slots, _extra = lookup("VOP3", op)
        sd = any(s.startswith("sdst") for s in slots)
        rd = _Reader(code, offset, 8)
        vals = {"vdst": _bits(w0, 7, 0), "src0": _bits(w1, 8, 0), "src1": _bits(w1, 17, 9), "src2": _bits(w1, 26, 18),
                "sdst": _bits(w0, 14, 8)}
        if any(vals[f"src{i}"] in DPP_CODES for i in range(3) if any(s.startswith(f"src{i}") for s in slots)):
            raise _fail(code, offset, target, "VOP3 DPP form is not supported")
        # RDNA3 ISA VOP3: clamp [15], op_sel [14:11], abs [10:8]; neg [31:29], omod [28:27]. VOP3SD: sdst [14:8].
        fields.update(clamp=_bits(w0, 15, 15), omod=_bits(w1, 28, 27), neg=_bits(w1, 31, 29))
        if not sd:
            fields.update(opsel=_bits(w0, 14, 11), abs=_bits(w0, 10, 8))
        dst, src = _build(slots, vals, rd, fields)
        return Instr(_base(mn), "VOP3SD" if sd else "VOP3", rd.size, dst, src, fields, offset)
    if enc == "VOP3P":
        w1 = need(1)
        mn, slots = lookup("VOP3P", _bits(w0, 22, 16))
        rd = _Reader(code, offset, 8)
        vals = {"vdst": _bits(w0, 7, 0), "src0": _bits(w1, 8, 0), "src1": _bits(w1, 17, 9), "src2": _bits(w1, 26, 18)}
        # RDNA3 ISA VOP3P: clamp [15], op_sel_hi[2] [14], op_sel [13:11], neg_hi [10:8]; neg [31:29], op_sel_hi [28:27]
        fields.update(clamp=_bits(w0, 15, 15), opsel=_bits(w0, 13, 11), neg_hi=_bits(w0, 10, 8),
                      neg=_bits(w1, 31, 29), opsel_hi=_bits(w1, 28, 27) | (_bits(w0, 14, 14) << 2))
        dst, src = _build(slots, vals, rd, fields)
        return Instr(mn, enc, rd.size, dst, src, fields, offset)
    if enc == "VOPD":
        w1 = need(1)
        # RDNA3 ISA VOPD: opx [25:22], opy [21:17], vsrc1x [16:9], src0x [8:0]; vdstx [31:24], vdsty [23:17]
        # (the low bit of vdsty is the inverse of vdstx's), vsrc1y [16:9], src0y [8:0]
        mx, sx = lookup("VOPDX", _bits(w0, 25, 22))
        my, sy = lookup("VOPDY", _bits(w0, 21, 17))
        rd = _Reader(code, offset, 8)
        vdstx = _bits(w1, 31, 24)
        halves = []
        for mn, slots, vals, tag in ((mx, sx, {"vdst": vdstx, "src0": _bits(w0, 8, 0), "vsrc1": _bits(w0, 16, 9)}, "x"),
                                     (my, sy, {"vdst": (_bits(w1, 23, 17) << 1) | (~vdstx & 1), "src0": _bits(w1, 8, 0),
                                               "vsrc1": _bits(w1, 16, 9)}, "y")):
            f = {"dual": tag}
            dst, src = _build(slots, vals, rd, f)
            if mn in ("v_dual_fmac_f32", "v_dual_dot2acc_f32_f16"):  # the accumulator is the destination
                src = src + dst
            halves.append(Instr(mn.replace("v_dual_", "v_"), "VOPD", 0, dst, src, f, offset))
        halves = [Instr(h.op, h.enc, rd.size, h.dst, h.src, h.fields, offset) for h in halves]
        return Instr("v_dual", "VOPD", rd.size, (), (), fields, offset, tuple(halves))
    if enc == "DS":
        w1 = need(1)
        mn, slots, _tail = lookup("DS", _bits(w0, 25, 18))
        # RDNA3 ISA DS: op [25:18], gds [17], offset1 [15:8], offset0 [7:0]; vdst [31:24], data1 [23:16],
        # data0 [15:8], addr [7:0]
        fields.update(offset0=_bits(w0, 7, 0), offset1=_bits(w0, 15, 8), offset=_bits(w0, 15, 0),
                      gds=_bits(w0, 17, 17))
        vals = {"vdst": _bits(w1, 31, 24), "addr": _bits(w1, 7, 0), "data0": _bits(w1, 15, 8),
                "data1": _bits(w1, 23, 16)}
        rd = _Reader(code, offset, 8)
        dst, src = _build(slots, vals, rd, fields)
        return Instr(mn, enc, 8, dst, src, fields, offset)
    if enc in ("FLAT*", "FLAT", "SCRATCH", "GLOBAL"):
        return _decode_flat(code, offset, target, enc, w0, need, lookup, fields)
    if enc == "MUBUF":
        mn = _MUBUF_GFX11.get(_bits(w0, 25, 18))
        if mn is None:
            raise _fail(code, offset, target, f"MUBUF opcode {_bits(w0, 25, 18)} is not supported")
        return Instr(mn, enc, 8, (), (), fields, offset)
    raise _fail(code, offset, target, "unknown encoding")


# RDNA3 ISA MUBUF opcodes the compiler emits: the cache invalidations, which take no operands.
_MUBUF_GFX11 = {0x2B: "buffer_gl0_inv", 0x2C: "buffer_gl1_inv"}


def _decode_flat(code, offset, target, enc, w0, need, lookup, fields) -> Instr:
    w1 = need(1)
    if enc == "FLAT*":  # RDNA3 ISA FLAT: offset [12:0], dlc [13], glc [14], slc [15], seg [17:16], op [24:18];
        # addr [7:0], data [15:8], saddr [22:16], sve [23], vdst [31:24]
        enc = ("FLAT", "SCRATCH", "GLOBAL", "?")[_bits(w0, 17, 16)]
        if enc == "?":
            raise _fail(code, offset, target, "FLAT segment 3 is not an encoding")
        op, size = _bits(w0, 24, 18), 8
        vals = {"vdst": _bits(w1, 31, 24), "addr": _bits(w1, 7, 0), "data": _bits(w1, 15, 8),
                "saddr": _bits(w1, 22, 16)}
        fields.update(offset=_sext(_bits(w0, 12, 0), 13), glc=_bits(w0, 14, 14), slc=_bits(w0, 15, 15),
                      dlc=_bits(w0, 13, 13), sve=_bits(w1, 23, 23))
        ret = fields["glc"]
    else:  # RDNA4 ISA VFLAT/VSCRATCH/VGLOBAL: saddr [6:0], op [21:14]; vdst [7:0], sve [17], scope [19:18],
        # th [22:20], vsrc [30:23]; vaddr [7:0] (dword 2), offset [31:8] signed
        w2 = need(2)
        op, size = _bits(w0, 21, 14), 12
        vals = {"vdst": _bits(w1, 7, 0), "addr": _bits(w2, 7, 0), "data": _bits(w1, 30, 23), "saddr": _bits(w0, 6, 0)}
        fields.update(offset=_sext(_bits(w2, 31, 8), 24), th=_bits(w1, 22, 20), scope=_bits(w1, 19, 18),
                      sve=_bits(w1, 17, 17))
        ret = fields["th"] & 1
    mn, plain, with_ret, with_saddr = lookup(enc, op)
    slots = with_ret if (ret and with_ret) else plain
    saddr = vals["saddr"]
    if saddr != NULL and with_saddr:
        slots = tuple(s if not s.startswith("addr") else "addr.v1" for s in slots)
    if enc == "SCRATCH" and not fields["sve"]:
        slots = tuple(s for s in slots if not s.startswith("addr"))
    rd = _Reader(code, offset, size)
    dst, src = _build([s for s in slots if s not in ("off",) and not s.startswith("saddr")], vals, rd, fields)
    if saddr != NULL or enc != "FLAT":
        src = src + (Operand(saddr, 2 if enc == "GLOBAL" else 1),)
    return Instr(mn, enc, size, dst, src, fields, offset)


def _sext(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


def _base(mn: str) -> str:
    """LLVM's base mnemonic: without the _e32/_e64 encoding suffix."""
    return mn[:-4] if mn.endswith(("_e32", "_e64")) else mn


def decode_all(code: bytes | memoryview, target: str, start: int = 0, end: int | None = None) -> list[Instr]:
    """Decode every instruction from byte `start` up to `end` (default: the end of `code`)."""
    end = len(code) if end is None else end
    out, pc = [], start
    while pc < end:
        ins = decode(code, pc, target)
        out.append(ins)
        pc += ins.size
    return out
