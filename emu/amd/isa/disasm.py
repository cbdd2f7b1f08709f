"""Print a decoded instruction the way llvm-objdump-19 prints it (for fault messages and the decoder cross-check).

Printing rules follow LLVM 19's AMDGPUInstPrinter (register names, inline constants, literals by operand type,
modifiers, op_sel, cache policy) and the operand order recorded in opcodes.py.
"""
from __future__ import annotations

import struct
from functools import lru_cache

from .instr import LITERAL, NULL, VGPR0, Instr, Operand
from .opcodes import TABLES

# RDNA3 ISA "Scalar/Vector ALU operands": named operand codes.
_NAMED = {106: "vcc_lo", 107: "vcc_hi", 124: "null", 125: "m0", 126: "exec_lo", 127: "exec_hi",
          235: "src_shared_base", 236: "src_shared_limit", 237: "src_private_base", 238: "src_private_limit",
          239: "src_pops_exiting_wave_id", 251: "src_vccz", 252: "src_execz", 253: "src_scc", 254: "src_lds_direct"}
_PAIRS = {106: "vcc", 126: "exec", 124: "null"}
# Inline float constants 240..248 (RDNA3 ISA 7.4.1) as f32 / f16 / f64 bit patterns.
_FLOATS = [0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 4.0, -4.0]
_F32 = {struct.unpack("<I", struct.pack("<f", f))[0]: repr(f) for f in _FLOATS}
_F16 = {struct.unpack("<H", struct.pack("<e", f))[0]: repr(f) for f in _FLOATS}
_F64 = {struct.unpack("<Q", struct.pack("<d", f))[0]: repr(f) for f in _FLOATS}
_INV2PI = {"b32": (0x3E22F983, "0.15915494"), "f16": (0x3118, "0.15915494"),
           "f64": (0x3FC45F306DC9C882, "0.15915494309189532")}
# s_delay_alu field names (LLVM AMDGPUAsmUtils / RDNA3 ISA s_delay_alu).
_INSTID = ["NO_DEP", "VALU_DEP_1", "VALU_DEP_2", "VALU_DEP_3", "VALU_DEP_4", "TRANS32_DEP_1", "TRANS32_DEP_2",
           "TRANS32_DEP_3", "FMA_ACCUM_CYCLE_1", "SALU_CYCLE_1", "SALU_CYCLE_2", "SALU_CYCLE_3"]
_INSTSKIP = ["SAME", "NEXT", "SKIP_1", "SKIP_2", "SKIP_3", "SKIP_4"]
# s_waitcnt_depctr / s_wait_alu fields: (name, low bit, width), printed in this order (LLVM DepCtr table).
_DEPCTR = [("hold_cnt", 7, 1), ("sa_sdst", 0, 1), ("va_vdst", 12, 4), ("va_sdst", 9, 3), ("va_ssrc", 8, 1),
           ("va_vcc", 1, 1), ("vm_vsrc", 2, 3)]
# s_sendmsg message ids with names (LLVM SIDefines.h SendMsg ids valid on gfx11 / gfx12).
_MSGS = {"gfx1100": {1: "MSG_INTERRUPT", 2: "MSG_HS_TESSFACTOR", 3: "MSG_DEALLOC_VGPRS", 5: "MSG_STALL_WAVE_GEN",
                     6: "MSG_HALT_WAVES", 9: "MSG_GS_ALLOC_REQ"},
         "gfx1201": {1: "MSG_INTERRUPT", 2: "MSG_HS_TESSFACTOR", 3: "MSG_DEALLOC_VGPRS", 9: "MSG_GS_ALLOC_REQ"}}
# hwreg ids with names (LLVM AMDGPUAsmUtils Hwreg table for gfx11 / gfx12).
_HWREGS = {"gfx1100": {1: "MODE", 2: "STATUS", 3: "TRAPSTS", 5: "GPR_ALLOC", 6: "LDS_ALLOC", 7: "IB_STS",
                       15: "SH_MEM_BASES", 18: "PERF_SNAPSHOT_PC_LO", 19: "PERF_SNAPSHOT_PC_HI", 20: "FLAT_SCR_LO",
                       21: "FLAT_SCR_HI", 23: "HW_ID1", 24: "HW_ID2", 27: "PERF_SNAPSHOT_DATA", 29: "SHADER_CYCLES"},
           "gfx1201": {1: "MODE", 2: "STATUS", 4: "STATE_PRIV", 5: "GPR_ALLOC", 6: "LDS_ALLOC", 7: "IB_STS",
                       10: "PERF_SNAPSHOT_DATA", 11: "PERF_SNAPSHOT_PC_LO", 12: "PERF_SNAPSHOT_PC_HI",
                       15: "PERF_SNAPSHOT_DATA1", 16: "PERF_SNAPSHOT_DATA2", 17: "EXCP_FLAG_PRIV",
                       18: "EXCP_FLAG_USER", 19: "TRAP_CTRL", 20: "SCRATCH_BASE_LO", 21: "SCRATCH_BASE_HI",
                       23: "HW_ID1", 24: "HW_ID2", 29: "SHADER_CYCLES_LO", 30: "SHADER_CYCLES_HI",
                       31: "DVGPR_ALLOC_LO", 32: "DVGPR_ALLOC_HI"}}


@lru_cache(maxsize=None)
def _by_name(target: str) -> dict:
    """(table, base mnemonic) -> table entry, so a decoded Instr finds its printing recipe."""
    out = {}
    for table, entries in TABLES[target].items():
        for entry in entries.values():
            mn = entry[0]
            base = mn[:-4] if mn.endswith(("_e32", "_e64")) else mn
            out.setdefault((table, base), entry)
    return out


def _reg(prefix: str, n: int, count: int) -> str:
    return f"{prefix}{n}" if count == 1 else f"{prefix}[{n}:{n + count - 1}]"


def reg_name(op: Operand) -> str:
    """A register operand's name as LLVM prints it (s[4:7], v1, vcc_lo, exec, ttmp[0:1], null, m0 ...)."""
    c, n = op.code, op.count
    if c >= VGPR0:
        return _reg("v", c - VGPR0, n)
    if c <= 105:
        return _reg("s", c, n)
    if 108 <= c <= 123:
        return _reg("ttmp", c - 108, n)
    if n == 2 and c in _PAIRS:
        return _PAIRS[c]
    return _NAMED.get(c, f"/*op{c}*/")


def _int_or(v: int, bits: int):
    sv = v - (1 << bits) if v >> (bits - 1) else v
    return str(sv) if -16 <= sv <= 64 else None


def _imm(value: int, kind: str) -> str:
    """An immediate value (already in the operand's width) as LLVM's printImmediate* prints it."""
    if kind in ("f16", "i16"):
        v = value & 0xFFFF
        s = _int_or(v, 16)
        if s is None and kind == "f16":
            s = _F16.get(v) or (_INV2PI["f16"][1] if v == _INV2PI["f16"][0] else None)
        return s or hex(v)
    if kind in ("f64", "b64"):
        s = _int_or(value, 64)
        if s is None:
            s = _F64.get(value) or (_INV2PI["f64"][1] if value == _INV2PI["f64"][0] else None)
        return s or hex(value >> 32 if kind == "f64" and value & 0xFFFFFFFF == 0 and value >> 32 else value)
    v = value & 0xFFFFFFFF
    s = _int_or(v, 32)
    if s is None:
        s = _F32.get(v) or (_INV2PI["b32"][1] if v == _INV2PI["b32"][0] else None)
    return s or hex(v)


def _inline_value(code: int, kind: str) -> int:
    """The bit pattern an inline-constant code stands for in an operand of `kind` (RDNA3 ISA 7.4.1)."""
    bits = 16 if kind in ("f16", "i16", "v2f16", "v2i16") else 64 if kind in ("f64", "b64") else 32
    if 128 <= code <= 192:
        return code - 128
    if 193 <= code <= 208:
        return (192 - code) & ((1 << bits) - 1)
    if code == 248:
        return _INV2PI["f16" if bits == 16 else "f64" if bits == 64 else "b32"][0]
    f = _FLOATS[code - 240]
    fmt = {16: "<e", 32: "<f", 64: "<d"}[bits]
    return int.from_bytes(struct.pack(fmt, f), "little")


def operand_text(op: Operand, kind: str = "b32") -> str:
    """One operand (register, inline constant or literal) as LLVM prints it for an operand of `kind`."""
    c = op.code
    if c == LITERAL:
        lit = op.literal or 0
        if kind == "f64":
            return _imm(lit << 32, "f64") if _F64.get(lit << 32) or lit << 32 == _INV2PI["f64"][0] else hex(lit)
        if kind in ("v2f16", "v2i16"):
            return _imm(lit, "b32") if lit > 0xFFFF else _imm(lit, "f16" if kind == "v2f16" else "i16")
        return _imm(lit, kind)
    if 128 <= c <= 208 or 240 <= c <= 248:
        k = {"v2f16": "f16", "v2i16": "i16"}.get(kind, kind)
        if k == "i16" and 240 <= c <= 248:  # LLVM decodes the float constant as f16 bits, prints them as an integer
            return hex(_inline_value(c, "f16"))
        return _imm(_inline_value(c, k), k)
    return reg_name(op)


def _slot(slot: str):
    parts = slot.split(".") + ["", "", ""]
    return parts[0], parts[1][:1], parts[2] or "b32", parts[3]


def _vgpr_half(op: Operand, half: str, hi: bool) -> str:
    """A 16-bit VOP1/VOP2/VOPC VGPR operand: v1.h (true16) or the raw register LLVM's fake16 forms print."""
    if half == "t16":
        return f"v{op.vgpr}.{'h' if hi else 'l'}"
    text = f"v{op.vgpr + (128 if hi else 0)}"
    if hi and half not in ("h", ""):
        text += f"/*Invalid register, operand has '{half}' register class*/"
    return text


def _with_mods(text: str, op: Operand, neg: bool, ab: bool) -> str:
    if ab:
        text = f"|{text}|"
    if neg:
        is_imm = op.code == LITERAL or 128 <= op.code <= 208 or 240 <= op.code <= 248
        text = f"neg({text})" if is_imm and not ab else f"-{text}"
    return text


def _operands(ins: Instr, slots, mods=None) -> list[str]:
    """Print `slots` in order, taking operands from ins.dst / ins.src as the decoder placed them."""
    dst, src = list(ins.dst), list(ins.src)
    out = []
    opsel = ins.fields.get("opsel", 0)
    for slot in slots:
        name, kind, imm, half = _slot(slot)
        if name == "vcc":
            out.append("vcc_lo")
            continue
        if name == "off":
            out.append("off")
            continue
        if name == "lit":  # the constant K of v_fmamk/v_fmaak/VOPD prints as raw hex (LLVM printU32ImmOperand)
            out.append(hex(src.pop(0).literal))
            continue
        op = dst.pop(0) if name in ("vdst", "sdst", "sdata") and dst else src.pop(0)
        if half and op.is_vgpr:
            bit = 8 if name == "vdst" else 1 << int(name[-1])
            out.append(_vgpr_half(op, half, bool(opsel & bit)))
            continue
        text = operand_text(op, imm)
        if mods and name.startswith("src"):
            i = int(name[-1])
            text = _with_mods(text, op, bool(mods[0] >> i & 1), bool(mods[1] >> i & 1))
        out.append(text)
    return out


def format_instr(ins: Instr, target: str) -> str:
    """The instruction as `llvm-objdump-19 -d --mcpu=<target>` prints it (without address and encoding)."""
    f, enc = ins.fields, ins.enc
    names = _by_name(target)
    if enc == "VOPD":
        x, y = ins.dual
        parts = []
        for half, table in ((x, "VOPDX"), (y, "VOPDY")):
            mn, slots = names[(table, half.op.replace("v_", "v_dual_", 1))]
            parts.append(_join(mn, _operands(half, slots)))
        return " :: ".join(parts)
    if enc in ("SOPP", "SOPK"):
        return _format_sopp_sopk(ins, target, names[(enc, ins.op)])
    if enc == "SMEM":
        return _format_smem(ins, target, names[("SMEM", ins.op)])
    if enc in ("SOP1", "SOP2", "SOPC"):
        mn, slots = names[(enc, ins.op)]
        return _join(mn, _operands(ins, slots))
    if enc in ("VOP1", "VOP2", "VOPC"):
        mn, slots = names[(enc, ins.op)]
        return _join(mn, _operands(ins, slots))
    if enc in ("VOP3", "VOP3SD"):
        mn, slots, (negm, absm, nsel, clamp, omod) = names[("VOP3", ins.op)]
        text = _join(mn, _operands(ins, slots, (f.get("neg", 0) & negm, f.get("abs", 0) & absm)))
        nsrc = sum(1 for s in slots if s.startswith("src"))
        if nsel:
            sel = f.get("opsel", 0)
            bits = [sel >> i & 1 for i in range(min(nsel, nsrc))] + ([sel >> 3 & 1] if nsel > nsrc else [])
            if any(bits):
                text += " op_sel:[" + ",".join(map(str, bits)) + "]"
        if clamp and f.get("clamp"):
            text += " clamp"
        if omod and f.get("omod"):
            text += " " + ("", "mul:2", "mul:4", "div:2")[f["omod"]]
        return text
    if enc == "VOP3P":
        return _format_vop3p(ins, names[("VOP3P", ins.op)])
    if enc == "DS":
        mn, slots, tail = names[("DS", ins.op)]
        text = _join(mn, _operands(ins, slots))
        if "offset" in tail and f["offset"]:
            text += f" offset:{f['offset']}"
        if "offset0" in tail and f["offset0"]:
            text += f" offset0:{f['offset0']}"
        if "offset1" in tail and f["offset1"]:
            text += f" offset1:{f['offset1']}"
        if f.get("gds"):
            text += " gds"
        return text
    if enc in ("FLAT", "GLOBAL", "SCRATCH"):
        return _format_flat(ins, target, names[(enc, ins.op)])
    if enc == "MUBUF":
        return ins.op
    raise ValueError(f"format_instr: no printer for encoding {enc!r} ({ins.op})")


def _join(mn: str, ops: list[str]) -> str:
    return mn + (" " + ", ".join(ops) if ops else "")


def _format_vop3p(ins: Instr, entry) -> str:
    mn, slots = entry
    f = ins.fields
    mix = mn.startswith("v_fma_mix")
    nsrc = sum(1 for s in slots if s.startswith("src"))
    mods = (f["neg"], f["neg_hi"]) if mix else None  # fma_mix: neg_lo is '-', neg_hi is '|x|' (LLVM VOP3PInstructions)
    text = _join(mn, _operands(ins, slots, mods))
    lst = lambda m: "[" + ",".join(str(m >> i & 1) for i in range(nsrc)) + "]"  # noqa: E731
    full = (1 << nsrc) - 1
    if f["opsel"] & full:
        text += " op_sel:" + lst(f["opsel"])
    hi = f["opsel_hi"] & full
    if (mix and hi) or (not mix and hi != full):
        text += " op_sel_hi:" + lst(hi)
    if not mix and _has_neg(mn):
        if f["neg"] & full:
            text += " neg_lo:" + lst(f["neg"])
        if f["neg_hi"] & full:
            text += " neg_hi:" + lst(f["neg_hi"])
    if f.get("clamp"):
        text += " clamp"
    return text


def _has_neg(mn: str) -> bool:
    # packed float and mixed-signedness dot ops take neg_lo/neg_hi; packed integer ops do not (LLVM VOP3P)
    return any(t in mn for t in ("f16", "f32", "bf16", "iu"))


def _format_smem(ins: Instr, target: str, entry) -> str:
    mn, slots, bare = entry
    if bare:
        return mn
    f = ins.fields
    data, (sbase, soff) = ins.dst[0], ins.src
    gfx12 = target.startswith("gfx12")
    off = f["offset"]
    hexs = ("-" + hex(-off)) if off < 0 else hex(off)
    if soff.code != NULL:
        where = reg_name(soff) + (f" offset:{hexs}" if off else "")
    else:
        where = hexs if (off or gfx12) else "null"
    text = f"{mn} {reg_name(data)}, {reg_name(sbase)}, {where}"
    return text + _cpol(f, target, store=False, atomic=False)


def _cpol(f: dict, target: str, store: bool, atomic: bool) -> str:
    """Cache-policy modifiers: glc/slc/dlc on gfx11, th:/scope: on gfx12 (LLVM printCPol/printTH/printScope)."""
    if not target.startswith("gfx12"):
        return "".join(f" {n}" for n in ("glc", "slc", "dlc") if f.get(n))
    th, scope, text = f.get("th", 0), f.get("scope", 0), ""
    if th:
        if atomic:
            name = {1: "RETURN", 2: "NT", 3: "NT_RETURN"}.get(th & 3) if not th & 4 else None
            if th & 4 and scope >= 2:
                name = "CASCADE_" + ("NT" if th & 2 else "RT")
            text = " th:" + ("TH_ATOMIC_" + name if name else f"TH_ATOMIC_{hex(th)}")
        elif th == 7 and not store:
            text = f" th:{hex(th)}"
        else:
            names = {1: "NT", 2: "HT", 3: "BYPASS" if scope == 3 else ("RT_WB" if store else "LU"), 4: "NT_RT",
                     5: "RT_NT", 6: "NT_HT", 7: "NT_WB"}
            text = " th:" + ("TH_STORE_" if store else "TH_LOAD_") + names[th]
    if scope:
        text += " scope:" + ("", "SCOPE_SE", "SCOPE_DEV", "SCOPE_SYS")[scope]
    return text


def _format_flat(ins: Instr, target: str, entry) -> str:
    mn, plain, with_ret, with_saddr = entry
    f = ins.fields
    gfx12 = target.startswith("gfx12")
    ret = (f.get("th", 0) & 1) if gfx12 else f.get("glc", 0)
    slots = with_ret if (ret and with_ret) else plain
    saddr = ins.src[-1] if ins.enc != "FLAT" else None
    dst, src = list(ins.dst), list(ins.src[:-1] if saddr is not None else ins.src)
    out = []
    for slot in slots:
        name = slot.split(".")[0]
        if name == "vdst":
            out.append(reg_name(dst.pop(0)))
        elif name == "addr":
            if ins.enc == "SCRATCH" and not f.get("sve"):
                out.append("off")
            else:
                out.append(reg_name(src.pop(0)))
        elif name == "data":
            out.append(reg_name(src.pop(0)))
        elif name in ("off", "saddr"):
            out.append("off" if saddr is None or saddr.code == NULL else reg_name(saddr))
    text = _join(mn, out)
    if f.get("offset"):
        text += f" offset:{f['offset']}"
    store = "store" in mn
    atomic = "atomic" in mn
    return text + _cpol(f, target, store, atomic)


def _format_sopp_sopk(ins: Instr, target: str, entry) -> str:
    mn, sdst, how = entry
    imm = ins.fields["simm16"]
    ops = [reg_name(ins.dst[0] if ins.dst else ins.src[0])] if sdst else []
    if mn == "s_waitcnt":
        f = ins.fields
        parts = [(n, f[n], m) for n, m in (("vmcnt", 63), ("expcnt", 7), ("lgkmcnt", 63))]
        shown = [f"{n}({v})" for n, v, m in parts if v != m] or [f"{n}({v})" for n, v, m in parts]
        return mn + " " + " ".join(shown)
    if mn == "s_delay_alu":
        if imm == 0:
            return f"{mn} 0"
        id0, skip, id1 = imm & 0xF, imm >> 4 & 7, imm >> 7 & 0xF
        name = lambda t, i: t[i] if i < len(t) else "/* invalid instid value */"  # noqa: E731
        parts = []
        if id0:
            parts.append(f"instid0({name(_INSTID, id0)})")
        if skip:
            parts.append(f"instskip({_INSTSKIP[skip] if skip < len(_INSTSKIP) else '/* invalid instskip value */'})")
        if id1:
            parts.append(f"instid1({name(_INSTID, id1)})")
        return mn + " " + " | ".join(parts)
    if mn in ("s_waitcnt_depctr", "s_wait_alu"):
        if imm & 0x60:  # bits outside every counter: LLVM prints the raw value
            return f"{mn} {hex(imm)}"
        vals = [(n, imm >> lo & ((1 << w) - 1), (1 << w) - 1) for n, lo, w in _DEPCTR]
        shown = [f"depctr_{n}({v})" for n, v, d in vals if v != d] or [f"depctr_{n}({v})" for n, v, d in vals]
        return mn + " " + " ".join(shown)
    if mn in ("s_sendmsg", "s_sendmsghalt"):
        name = _MSGS.get(target, {}).get(imm & 0xFF)
        return f"{mn} sendmsg({name})" if name else f"{mn} sendmsg({imm & 0xFF}, {imm >> 8 & 7}, 0)"
    if mn in ("s_getreg_b32", "s_setreg_b32", "s_setreg_imm32_b32"):
        rid, off, size = imm & 0x3F, imm >> 6 & 0x1F, (imm >> 11 & 0x1F) + 1
        name = _HWREGS.get(target, {}).get(rid)
        hw = f"hwreg(HW_REG_{name})" if name and off == 0 and size == 32 else \
            f"hwreg({'HW_REG_' + name if name else rid}, {off}, {size})"
        if mn == "s_getreg_b32":
            return f"{mn} {ops[0]}, {hw}"
        return f"{mn} {hw}, " + (ops[0] if mn == "s_setreg_b32" else hex(ins.src[0].literal))
    if how == "none" or (mn == "s_endpgm" and imm == 0):
        return _join(mn, ops)
    if how == "hex":
        ops.append(hex(imm))
    elif how == "imm":
        ops.append(_imm(imm, "b32"))
    elif how == "sdec":
        ops.append(str(imm - 0x10000 if imm >> 15 else imm))
    else:
        ops.append(str(imm))
    return _join(mn, ops)
