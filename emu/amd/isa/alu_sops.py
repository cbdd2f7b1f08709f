"""The SALU opcode table: what each s_* ALU op computes on python ints, and which SCC / EXEC it leaves.

Each entry (SOp) names its destination and source widths ("b32", "b64"; "none" for compares that only set SCC) and
a function of (ctx, *sources) returning (d, scc) or (d, scc, exec); scc None leaves SCC alone, d None writes
nothing. Semantics follow the RDNA3 / RDNA4 ISA guides' SOP1/SOP2/SOPK/SOPC pseudocode (cited ISA:<op>). gfx12
renamed several ops (s_add_u32 -> s_add_co_u32, s_add_i32 -> s_add_co_i32, s_addc_u32 -> s_add_co_ci_u32 ...):
both spellings are here. The SALU float ops (gfx11.5 / gfx12: s_add_f32, s_cmp_lt_f32 ...) reuse the VALU
semantics of the same-named v_* op through alu.py (FLOAT_OPS).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

M32, M64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class SOp:
    """One SALU opcode: destination and source widths and the function computing (d, scc[, exec])."""
    name: str
    dst: str
    src: tuple[str, ...]
    fn: Callable[..., Any]


@dataclass
class SCtx:
    """What a SALU op may read besides its sources: SCC, EXEC, the wave size and a SOPK immediate."""
    scc: bool
    exec: int
    wave64: bool
    simm16: int


TABLE: dict[str, SOp] = {}


def _reg(name: str, dst: str, src: str, fn: Callable[..., Any]) -> None:
    TABLE[name] = SOp(name, dst, tuple(src.split()) if src else (), fn)


def s32(x: int) -> int:
    x &= M32
    return x - (1 << 32) if x >> 31 else x


def s64(x: int) -> int:
    x &= M64
    return x - (1 << 64) if x >> 63 else x


def _sext16(x: int) -> int:
    x &= 0xFFFF
    return x - 0x10000 if x >> 15 else x


def _nz(d: int, mask: int) -> tuple[int, bool]:
    """Result plus SCC = (result != 0), the rule of the bitwise and shift ops (ISA:S_AND_B32 ...)."""
    d &= mask
    return d, d != 0


# ---- moves and bitwise -------------------------------------------------------------------------------------------
for _w, _m in ((32, M32), (64, M64)):
    _t = f"b{_w}"
    _reg(f"s_mov_{_t}", _t, _t, lambda c, a, m=_m: (a & m, None))
    _reg(f"s_cmov_{_t}", _t, _t, lambda c, a, m=_m: (a & m if c.scc else None, None))  # ISA:S_CMOV: only if SCC
    _reg(f"s_not_{_t}", _t, _t, lambda c, a, m=_m: _nz(~a, m))
    _reg(f"s_and_{_t}", _t, f"{_t} {_t}", lambda c, a, b, m=_m: _nz(a & b, m))
    _reg(f"s_or_{_t}", _t, f"{_t} {_t}", lambda c, a, b, m=_m: _nz(a | b, m))
    _reg(f"s_xor_{_t}", _t, f"{_t} {_t}", lambda c, a, b, m=_m: _nz(a ^ b, m))
    _reg(f"s_nand_{_t}", _t, f"{_t} {_t}", lambda c, a, b, m=_m: _nz(~(a & b), m))
    _reg(f"s_nor_{_t}", _t, f"{_t} {_t}", lambda c, a, b, m=_m: _nz(~(a | b), m))
    _reg(f"s_xnor_{_t}", _t, f"{_t} {_t}", lambda c, a, b, m=_m: _nz(~(a ^ b), m))
    for _nm in ("s_and_not1", "s_andn2"):  # gfx11 renamed s_andn2 -> s_and_not1: S0 & ~S1
        _reg(f"{_nm}_{_t}", _t, f"{_t} {_t}", lambda c, a, b, m=_m: _nz(a & ~b, m))
    for _nm in ("s_or_not1", "s_orn2"):
        _reg(f"{_nm}_{_t}", _t, f"{_t} {_t}", lambda c, a, b, m=_m: _nz(a | ~b, m))
    _reg(f"s_cselect_{_t}", _t, f"{_t} {_t}", lambda c, a, b, m=_m: ((a if c.scc else b) & m, None))
    _reg(f"s_lshl_{_t}", _t, f"{_t} b32", lambda c, a, s, w=_w, m=_m: _nz(a << (s & (w - 1)), m))
    _reg(f"s_lshr_{_t}", _t, f"{_t} b32", lambda c, a, s, w=_w, m=_m: _nz((a & m) >> (s & (w - 1)), m))
    _reg(f"s_ashr_i{_w}", _t, f"{_t} b32",
         lambda c, a, s, w=_w, m=_m: _nz((s32(a) if w == 32 else s64(a)) >> (s & (w - 1)), m))
    _reg(f"s_brev_{_t}", _t, _t, lambda c, a, w=_w, m=_m: (int(f"{a & m:0{w}b}"[::-1], 2), None))
    _reg(f"s_bcnt1_i32_{_t}", "b32", _t, lambda c, a, m=_m: _nz(bin(a & m).count("1"), M32))
    _reg(f"s_bcnt0_i32_{_t}", "b32", _t, lambda c, a, w=_w, m=_m: _nz(w - bin(a & m).count("1"), M32))
    # ISA:S_CTZ_I32_B32 (was s_ff1_i32_b32) / S_CLZ_I32_U32 (was s_flbit_i32_b32): -1 when no bit is set
    for _nm in ("s_ctz_i32", "s_ff1_i32"):
        _reg(f"{_nm}_{_t}", "b32", _t, lambda c, a, m=_m: (((a & m) & -(a & m)).bit_length() - 1 & M32, None))
    for _nm in (f"s_clz_i32_u{_w}", f"s_flbit_i32_{_t}"):
        _reg(_nm, "b32", _t, lambda c, a, w=_w, m=_m: ((w - (a & m).bit_length()) & M32 if a & m else M32, None))
    for _nm in (f"s_cls_i32{'' if _w == 32 else '_i64'}", f"s_flbit_i32{'' if _w == 32 else '_i64'}"):
        _reg(_nm, "b32", _t, lambda c, a, w=_w, m=_m: (_cls(a, w), None))
    _reg(f"s_bitcmp0_{_t}", "none", f"{_t} b32", lambda c, a, s, w=_w: (None, (a >> (s & (w - 1))) & 1 == 0))
    _reg(f"s_bitcmp1_{_t}", "none", f"{_t} b32", lambda c, a, s, w=_w: (None, (a >> (s & (w - 1))) & 1 == 1))
    _reg(f"s_bfm_{_t}", _t, "b32 b32", lambda c, a, b, w=_w, m=_m: ((((1 << (a & (w - 1))) - 1) << (b & (w - 1))) & m,
                                                                    None))


def _cls(a: int, w: int) -> int:
    """ISA:S_CLS_I32: the position (from the MSB) of the first bit that differs from the sign; -1 if none does."""
    v = a & ((1 << w) - 1)
    if v >> (w - 1):
        v = ~v & ((1 << w) - 1)
    return (w - v.bit_length()) & M32 if v else M32


# s_bitset0/1 read-modify-write D: alu.py hands the old D as the last source (reads_dest)
for _w in (32, 64):
    _reg(f"s_bitset0_b{_w}", f"b{_w}", f"b32 b{_w}", lambda c, s, d, w=_w: (d & ~(1 << (s & (w - 1))), None))
    _reg(f"s_bitset1_b{_w}", f"b{_w}", f"b32 b{_w}", lambda c, s, d, w=_w: (d | (1 << (s & (w - 1))), None))


# ---- saveexec / wrexec (ISA:S_AND_SAVEEXEC_B32: D = old EXEC, EXEC = S0 op EXEC, SCC = EXEC != 0) ---------------
_EXEC_OPS = {"and": lambda s, e: s & e, "or": lambda s, e: s | e, "xor": lambda s, e: s ^ e,
             "nand": lambda s, e: ~(s & e), "nor": lambda s, e: ~(s | e), "xnor": lambda s, e: ~(s ^ e),
             "and_not0": lambda s, e: ~s & e, "or_not0": lambda s, e: ~s | e, "and_not1": lambda s, e: s & ~e,
             "or_not1": lambda s, e: s | ~e, "andn1": lambda s, e: ~s & e, "orn1": lambda s, e: ~s | e,
             "andn2": lambda s, e: s & ~e, "orn2": lambda s, e: s | ~e}
for _w, _m in ((32, M32), (64, M64)):
    for _k, _f in _EXEC_OPS.items():
        _reg(f"s_{_k}_saveexec_b{_w}", f"b{_w}", f"b{_w}",
             lambda c, a, f=_f, m=_m: (c.exec & m, f(a, c.exec) & m != 0, f(a, c.exec) & m))
    for _k, _f in (("and_not0", _EXEC_OPS["and_not0"]), ("and_not1", _EXEC_OPS["and_not1"]),
                   ("andn1", _EXEC_OPS["andn1"]), ("andn2", _EXEC_OPS["andn2"])):
        # ISA:S_AND_NOT1_WREXEC_B32: EXEC = S0 & ~EXEC, D = the new EXEC
        _reg(f"s_{_k}_wrexec_b{_w}", f"b{_w}", f"b{_w}",
             lambda c, a, f=_f, m=_m: (f(a, c.exec) & m, f(a, c.exec) & m != 0, f(a, c.exec) & m))


# ---- integer arithmetic -------------------------------------------------------------------------------------------
def _add_u(a: int, b: int, cin: int) -> tuple[int, bool]:
    t = (a & M32) + (b & M32) + cin  # ISA:S_ADD_U32: SCC = unsigned carry out
    return t & M32, t >> 32 != 0


def _sub_u(a: int, b: int, bin_: int) -> tuple[int, bool]:
    return (a - b - bin_) & M32, (b & M32) + bin_ > (a & M32)  # ISA:S_SUB_U32: SCC = borrow


def _add_i(a: int, b: int) -> tuple[int, bool]:
    t = s32(a) + s32(b)  # ISA:S_ADD_I32: SCC = signed overflow
    return t & M32, not -(1 << 31) <= t < (1 << 31)


def _sub_i(a: int, b: int) -> tuple[int, bool]:
    t = s32(a) - s32(b)
    return t & M32, not -(1 << 31) <= t < (1 << 31)


for _nm in ("s_add_u32", "s_add_co_u32"):
    _reg(_nm, "b32", "b32 b32", lambda c, a, b: _add_u(a, b, 0))
for _nm in ("s_sub_u32", "s_sub_co_u32"):
    _reg(_nm, "b32", "b32 b32", lambda c, a, b: _sub_u(a, b, 0))
for _nm in ("s_addc_u32", "s_add_co_ci_u32"):
    _reg(_nm, "b32", "b32 b32", lambda c, a, b: _add_u(a, b, int(c.scc)))
for _nm in ("s_subb_u32", "s_sub_co_ci_u32"):
    _reg(_nm, "b32", "b32 b32", lambda c, a, b: _sub_u(a, b, int(c.scc)))
for _nm in ("s_add_i32", "s_add_co_i32"):
    _reg(_nm, "b32", "b32 b32", lambda c, a, b: _add_i(a, b))
for _nm in ("s_sub_i32", "s_sub_co_i32"):
    _reg(_nm, "b32", "b32 b32", lambda c, a, b: _sub_i(a, b))
_reg("s_add_nc_u64", "b64", "b64 b64", lambda c, a, b: ((a + b) & M64, None))  # gfx12, SCC untouched
_reg("s_sub_nc_u64", "b64", "b64 b64", lambda c, a, b: ((a - b) & M64, None))
_reg("s_mul_u64", "b64", "b64 b64", lambda c, a, b: ((a * b) & M64, None))
_reg("s_mul_i32", "b32", "b32 b32", lambda c, a, b: ((s32(a) * s32(b)) & M32, None))
_reg("s_mul_hi_u32", "b32", "b32 b32", lambda c, a, b: (((a & M32) * (b & M32)) >> 32, None))
_reg("s_mul_hi_i32", "b32", "b32 b32", lambda c, a, b: (((s32(a) * s32(b)) >> 32) & M32, None))
_reg("s_min_i32", "b32", "b32 b32", lambda c, a, b: (a if s32(a) < s32(b) else b, s32(a) < s32(b)))
_reg("s_min_u32", "b32", "b32 b32", lambda c, a, b: (a if a < b else b, a < b))
_reg("s_max_i32", "b32", "b32 b32", lambda c, a, b: (a if s32(a) >= s32(b) else b, s32(a) >= s32(b)))
_reg("s_max_u32", "b32", "b32 b32", lambda c, a, b: (a if a >= b else b, a >= b))
_reg("s_abs_i32", "b32", "b32", lambda c, a: _nz(abs(s32(a)), M32))
_reg("s_absdiff_i32", "b32", "b32 b32", lambda c, a, b: _nz(abs(s32(s32(a) - s32(b))), M32))
_reg("s_sext_i32_i8", "b32", "b32", lambda c, a: ((((a & 0xFF) ^ 0x80) - 0x80) & M32, None))
_reg("s_sext_i32_i16", "b32", "b32", lambda c, a: (_sext16(a) & M32, None))
for _n in range(1, 5):  # ISA:S_LSHL1_ADD_U32: SCC = unsigned carry out
    _reg(f"s_lshl{_n}_add_u32", "b32", "b32 b32",
         lambda c, a, b, n=_n: (((a << n) + b) & M32, ((a << n) + b) >> 32 != 0))


def _bfe(a: int, spec: int, w: int, signed: bool) -> tuple[int, bool]:
    """ISA:S_BFE_U32: offset S1[4:0] (S1[5:0] for 64-bit), width S1[22:16]; SCC = result != 0."""
    off, width = spec & (w - 1), (spec >> 16) & 0x7F
    v = ((a & ((1 << w) - 1)) >> off) & ((1 << width) - 1)
    if signed and width and v >> (width - 1):
        v -= 1 << width
    return _nz(v, (1 << w) - 1)


_reg("s_bfe_u32", "b32", "b32 b32", lambda c, a, b: _bfe(a, b, 32, False))
_reg("s_bfe_i32", "b32", "b32 b32", lambda c, a, b: _bfe(a, b, 32, True))
_reg("s_bfe_u64", "b64", "b64 b32", lambda c, a, b: _bfe(a, b, 64, False))
_reg("s_bfe_i64", "b64", "b64 b32", lambda c, a, b: _bfe(a, b, 64, True))
# ISA:S_PACK_LL_B32_B16 and friends: {S1 half, S0 half}
_reg("s_pack_ll_b32_b16", "b32", "b32 b32", lambda c, a, b: ((a & 0xFFFF) | ((b & 0xFFFF) << 16), None))
_reg("s_pack_lh_b32_b16", "b32", "b32 b32", lambda c, a, b: ((a & 0xFFFF) | (b & 0xFFFF0000), None))
_reg("s_pack_hl_b32_b16", "b32", "b32 b32", lambda c, a, b: ((a >> 16) | ((b & 0xFFFF) << 16), None))
_reg("s_pack_hh_b32_b16", "b32", "b32 b32", lambda c, a, b: ((a >> 16) | (b & 0xFFFF0000), None))

# ---- compares (SOPC: only SCC) ------------------------------------------------------------------------------------
_CMPS = {"eq": lambda a, b: a == b, "lg": lambda a, b: a != b, "gt": lambda a, b: a > b,
         "ge": lambda a, b: a >= b, "lt": lambda a, b: a < b, "le": lambda a, b: a <= b}
for _c, _f in _CMPS.items():
    _reg(f"s_cmp_{_c}_i32", "none", "b32 b32", lambda c, a, b, f=_f: (None, f(s32(a), s32(b))))
    _reg(f"s_cmp_{_c}_u32", "none", "b32 b32", lambda c, a, b, f=_f: (None, f(a & M32, b & M32)))
    # SOPK compares: the register (alu.py: src[0]) against SIMM16, sign- or zero-extended (ISA:S_CMPK_GT_I32)
    _reg(f"s_cmpk_{_c}_i32", "none", "b32", lambda c, a, f=_f: (None, f(s32(a), _sext16(c.simm16))))
    _reg(f"s_cmpk_{_c}_u32", "none", "b32", lambda c, a, f=_f: (None, f(a & M32, c.simm16 & 0xFFFF)))
for _c in ("eq", "lg"):
    _reg(f"s_cmp_{_c}_u64", "none", "b64 b64", lambda c, a, b, f=_CMPS[_c]: (None, f(a & M64, b & M64)))

# ---- SOPK with a 16-bit immediate (ISA:S_MOVK_I32, S_ADDK_I32: D = D + signext(SIMM16), SCC = signed overflow) ----
_reg("s_movk_i32", "b32", "", lambda c: (_sext16(c.simm16) & M32, None))
_reg("s_cmovk_i32", "b32", "", lambda c: (_sext16(c.simm16) & M32 if c.scc else None, None))
for _nm in ("s_addk_i32", "s_addk_co_i32"):
    _reg(_nm, "b32", "b32", lambda c, d: _add_i(d, _sext16(c.simm16)))
_reg("s_mulk_i32", "b32", "b32", lambda c, d: ((s32(d) * _sext16(c.simm16)) & M32, None))

# SOPK ops whose destination register is also their first source: alu.py's caller hands its value as src[0]
READS_DEST = frozenset(("s_addk_i32", "s_addk_co_i32", "s_mulk_i32", "s_bitset0_b32", "s_bitset0_b64",
                        "s_bitset1_b32", "s_bitset1_b64", "s_fmac_f32", "s_fmac_f16")
                       + tuple(f"s_cmpk_{c}_{t}" for c in _CMPS for t in ("i32", "u32")))

# ---- SALU float (gfx11.5/gfx12): name -> (VALU op with the same semantics, source opsel) ----------------------------
FLOAT_OPS: dict[str, tuple[str, int]] = {}
for _k in ("f32", "f16"):
    for _b in ("add", "sub", "mul", "fmac", "fmaak", "fmamk", "min_num", "max_num", "min", "max", "ceil",
               "floor", "trunc", "rndne"):
        FLOAT_OPS[f"s_{_b}_{_k}"] = (f"v_{_b}_{_k}", 0)
    for _c in ("lt", "eq", "le", "gt", "lg", "ge", "o", "u", "nge", "nlg", "ngt", "nle", "neq", "nlt"):
        FLOAT_OPS[f"s_cmp_{_c}_{_k}"] = (f"v_cmp_{_c}_{_k}", 0)
FLOAT_OPS.update({"s_cvt_f32_i32": ("v_cvt_f32_i32", 0), "s_cvt_f32_u32": ("v_cvt_f32_u32", 0),
                  "s_cvt_i32_f32": ("v_cvt_i32_f32", 0), "s_cvt_u32_f32": ("v_cvt_u32_f32", 0),
                  "s_cvt_f16_f32": ("v_cvt_f16_f32", 0), "s_cvt_f32_f16": ("v_cvt_f32_f16", 0),
                  "s_cvt_hi_f32_f16": ("v_cvt_f32_f16", 1), "s_cvt_pk_rtz_f16_f32": ("v_cvt_pk_rtz_f16_f32", 0)})
