"""The VALU opcode table: what each v_* ALU op computes, per lane, on typed numpy arrays.

Each entry (VOp) names its destination and source operand types ("f16" "f32" "f64" "b16" "u16" "i16" "b32" "u32"
"i32" "b64" "u64" "i64" "mask"), in LLVM's assembly operand order, and a function that receives the sources already
decoded to numpy arrays of those types (input modifiers applied) and returns the destination value(s). alu.py does
the decoding, the modifiers and the result packing. Semantics follow the RDNA3 / RDNA4 ISA guides' per-opcode
pseudocode ("Instructions" chapters; cited as ISA:<op>); where the pseudocode is known to differ from the hardware,
the comment says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from emu.amd.isa import alu_fp as fp

U16, U32, U64, I16, I32, I64 = np.uint16, np.uint32, np.uint64, np.int16, np.int32, np.int64


@dataclass(frozen=True)
class VOp:
    """One VALU opcode: operand types, the lane function, and how modifiers apply.

    arith: the float kind when the op is IEEE arithmetic (NaN results are normalized, MODE denormal flushing,
    omod and clamp apply); None for bit moves, compares, conversions with their own rules and integer ops.
    iclamp: the function saturates integers itself when ctx.clamp is set.
    packed: VOP3P packed 16-bit op: fn runs on the low and the high halves (opsel / opsel_hi pick them).
    """
    name: str
    dst: tuple[str, ...]
    src: tuple[str, ...]
    fn: Callable[..., Any]
    arith: str | None = None
    iclamp: bool = False
    packed: bool = False


@dataclass
class Ctx:
    """What an op function may need besides its sources."""
    ins: Any
    mode: fp.FloatMode
    clamp: bool
    lanes: int


TABLE: dict[str, VOp] = {}


def _reg(name: str, dst: str, src: str, fn: Callable[..., Any], **kw: Any) -> None:
    TABLE[name] = VOp(name, tuple(dst.split()), tuple(src.split()), fn, **kw)


# ---- helpers -------------------------------------------------------------------------------------------------------

def _fk(t: str) -> str:
    return t if t in fp.FLOAT else {"b16": "f16", "b32": "f32", "b64": "f64"}[t]


def _minmax(a: np.ndarray, b: np.ndarray, kind: str, is_max: bool, style: str, ieee: bool) -> np.ndarray:
    """v_max/v_min families. style "legacy": gfx11 v_max_f32 (ISA:V_MAX_F32, MODE.IEEE picks the sNaN rule);
    "num": gfx12 maximumNumber/minimumNumber (ISA:V_MAX_NUM_F32); "ieee2019": gfx12 v_maximum (NaN propagates).
    Both compare +0 > -0 (ISA pseudocode GT_NEG_ZERO / LT_NEG_ZERO)."""
    ab, bb = fp.bits(a, kind), fp.bits(b, kind)
    sb = fp.sign_bit(kind)
    a_neg, b_neg = (ab & ab.dtype.type(sb)) != 0, (bb & bb.dtype.type(sb)) != 0
    both0 = (a == 0) & (b == 0)
    pick_a = (a > b) | (both0 & ~a_neg & b_neg) if is_max else (a < b) | (both0 & a_neg & ~b_neg)
    out = np.where(pick_a, ab, bb)
    an, bn = fp.is_nan_bits(ab, kind), fp.is_nan_bits(bb, kind)
    asn, bsn = fp.is_snan_bits(ab, kind), fp.is_snan_bits(bb, kind)
    qa, qb = fp.quiet_bits(ab, kind), fp.quiet_bits(bb, kind)
    if style == "legacy" and ieee:
        out = np.where(an & ~asn, bb, out)
        out = np.where(bn & ~bsn, ab, out)
        out = np.where(bsn, qb, out)
        out = np.where(asn, qa, out)
    elif style == "legacy":
        out = np.where(an, bb, out)
        out = np.where(bn, ab, out)
    elif style == "num":
        out = np.where(bn, ab, out)
        out = np.where(an, bb, out)
        out = np.where(an & bn, qa, out)
    else:
        out = np.where(bn, bb, out)
        out = np.where(an, ab, out)
        out = np.where(bsn, qb, out)
        out = np.where(asn, qa, out)
    return fp.vals(out, kind)


def _med3(a, b, c, kind, style, ieee):
    """ISA:V_MED3_F32: any NaN -> min3, else the max of the two that are not the max3."""
    mx = lambda x, y: _minmax(x, y, kind, True, style, ieee)  # noqa: E731
    mn = lambda x, y: _minmax(x, y, kind, False, style, ieee)  # noqa: E731
    m3 = fp.bits(mx(mx(a, b), c), kind)
    out = np.where(m3 == fp.bits(a, kind), fp.bits(mx(b, c), kind),
                   np.where(m3 == fp.bits(b, kind), fp.bits(mx(a, c), kind), fp.bits(mx(a, b), kind)))
    anynan = np.isnan(a) | np.isnan(b) | np.isnan(c)
    return fp.vals(np.where(anynan, fp.bits(mn(mn(a, b), c), kind), out), kind)


def _div_scale(s0, s1, s2, kind):
    """ISA:V_DIV_SCALE_F32/F64, the pre-scaling of LLVM's division (SIISelLowering LowerFDIV32/64) so the
    reciprocal and the Newton steps stay in range. D defaults to S0. Where the guide's pseudocode cannot make
    division round correctly this follows the hardware: a zero operand sets VCC (observed on gfx11, tinygrad
    test/amd/hw/test_vop3.py test_div_scale_f32_*), a tiny numerator (exponent <= 23) sets VCC and scales only the
    numerator (observed, for quotients far below 1; for larger quotients this emulation scales both, VCC clear),
    and when both 1/S1 and S2/S1 are denormal the denominator is scaled down (2**-64), not up, so that
    v_div_fmas's 2**-64 undoes it. Emulation choices where no hardware fact is known: checked by running LLVM's
    whole division sequence against correctly rounded division (tests/emu/isa/test_alu_div.py)."""
    big, bias, mant = (64, 127, 23) if kind == "f32" else (128, 1023, 52)
    ft = fp.FLOAT[kind][0]
    e1, e2 = fp.exponent(fp.bits(s1, kind), kind), fp.exponent(fp.bits(s2, kind), kind)
    tiny = np.float64(2.0) ** (1 - bias)  # smallest normal of `kind`
    with np.errstate(all="ignore"):
        q = np.abs(s2.astype(np.float64) / s1.astype(np.float64))
        rcp = np.abs(1.0 / s1.astype(np.float64))
    if kind == "f64":  # f64 quotients can underflow f64 itself: compare exponents instead
        q = np.where(e2 - e1 < -(bias - 2), 0.0, q)
        rcp = np.where(e1 >= 2 * bias - 1, 0.0, rcp)
    q_den = (q < tiny) & np.isfinite(q)
    rcp_den = rcp < tiny
    up, down = fp.ldexp(s0, np.full(s0.shape, big), kind), fp.ldexp(s0, np.full(s0.shape, -big), kind)
    zero = (s1 == 0) | (s2 == 0)
    c_far = e2 - e1 >= (96 if kind == "f32" else 768)
    c_d1 = fp.is_denorm_bits(fp.bits(s1, kind), kind)
    c_both = rcp_den & q_den
    c_rcp = rcp_den
    c_q = q_den
    c_tiny = e2 <= mant
    # tiny numerator: VCC and only the numerator scaled while the scaled quotient stays below 2 (so v_div_fmas
    # scales back down), else both scaled and no VCC (the guide's wording), so both paths divide correctly
    tiny_vcc = c_tiny & (e2 - e1 + big <= -2)
    tiny_val = np.where(tiny_vcc, np.where(s0 == s2, up, s0), up)
    d, vcc = s0.copy(), np.zeros(s0.shape, bool)
    # evaluated last-to-first so the first matching case of the pseudocode's if/elsif chain wins
    for cond, val, flag in ((c_tiny, tiny_val, tiny_vcc), (c_q, np.where(s0 == s2, up, s0), True),
                            (c_rcp, down, False), (c_both, np.where(s0 == s1, down, s0), True),
                            (c_d1, up, False), (c_far, np.where(s0 == s1, up, s0), True),
                            (zero, np.full(s0.shape, np.nan, ft), True)):
        d = np.where(cond, val, d)
        vcc = np.where(cond, flag, vcc)
    nan_in = np.isnan(s1) | np.isnan(s2) | np.isinf(s1) | np.isinf(s2)
    return np.where(nan_in, s0, d).astype(ft), np.where(nan_in, False, vcc)


def _div_fmas(a, b, c, vcc, kind):
    """ISA:V_DIV_FMAS_F32: fma, scaled when VCC by 2**64 if |S2| >= 2 else 2**-64 (the guide prints a constant
    2**32; the hardware picks the direction from S2's exponent, tinygrad test/amd/hw test_div_fmas_f32_scale_up/down)
    with a single rounding."""
    big, bias = (64.0, 127) if kind == "f32" else (128.0, 1023)
    e2 = fp.exponent(fp.bits(c, kind), kind)
    scale = np.where(vcc, np.where(e2 > bias, 2.0 ** big, 2.0 ** -big), 1.0)
    return fp.fma(a, b, c, kind, scale)


def _div_fixup(s0, s1, s2, kind):
    """ISA:V_DIV_FIXUP_F32: special cases of num/den (S2/S1) and the sign; a NaN estimate S0 with ordinary inputs
    gives +-inf (hardware, tinygrad test_div_fixup_f32_nan_estimate_overflow)."""
    ft = fp.FLOAT[kind][0]
    b1, b2 = fp.bits(s1, kind), fp.bits(s2, kind)
    sb = fp.sign_bit(kind)
    neg = ((b1 ^ b2) & b1.dtype.type(sb)) != 0
    inf = np.where(neg, ft(-np.inf), ft(np.inf))
    zero = np.where(neg, ft(-0.0), ft(0.0))
    res = np.where(np.isnan(s0), inf, np.where(neg, -np.abs(s0), np.abs(s0)))
    if kind != "f16":  # ISA: exponent(S2) - exponent(S1) < -150 -> underflow (rounds to 0), S1 exponent max -> ovf
        e1, e2 = fp.exponent(b1, kind), fp.exponent(b2, kind)
        res = np.where(e2 - e1 < (-150 if kind == "f32" else -1075), zero, res)
    res = np.where(np.isinf(s1) | (s2 == 0), zero, res)
    res = np.where((s1 == 0) | np.isinf(s2), inf, res)
    bad = fp.vals(np.full(s0.shape, {"f16": 0xFE00, "f32": 0xFFC00000, "f64": 0xFFF8000000000000}[kind],
                          fp.FLOAT[kind][1]), kind)
    res = np.where(((s1 == 0) & (s2 == 0)) | (np.isinf(s1) & np.isinf(s2)), bad, res)
    res = fp.bits(res.astype(ft), kind)
    res = np.where(fp.is_nan_bits(b1, kind), fp.quiet_bits(b1, kind), res)
    res = np.where(fp.is_nan_bits(b2, kind), fp.quiet_bits(b2, kind), res)
    return fp.vals(res, kind)


def _cmp_class(x, mask, kind):
    """ISA:V_CMP_CLASS_F32: bit 0 sNaN, 1 qNaN, 2 -inf, 3 -normal, 4 -denorm, 5 -0, 6 +0, 7 +denorm, 8 +normal,
    9 +inf of S1 select which classes are true."""
    b = fp.bits(x, kind)
    neg = (b & b.dtype.type(fp.sign_bit(kind))) != 0
    exp = fp.exponent(b, kind)
    emax = (1 << fp.FLOAT[kind][3]) - 1
    cls = np.where(neg, 5, 6)
    cls = np.where(fp.is_denorm_bits(b, kind), np.where(neg, 4, 7), cls)
    cls = np.where((exp > 0) & (exp < emax), np.where(neg, 3, 8), cls)
    cls = np.where(np.isinf(x), np.where(neg, 2, 9), cls)
    cls = np.where(fp.is_nan_bits(b, kind), np.where(fp.is_snan_bits(b, kind), 0, 1), cls)
    return ((mask.astype(U32) >> cls.astype(U32)) & 1) != 0


def _shift_amt(s, bitsw):
    return (s & (bitsw - 1)).astype(U64 if bitsw == 64 else U32)


def _sat_u(x, width, clamp):
    x = np.asarray(x, I64) if width < 64 else x
    return np.clip(x, 0, (1 << width) - 1) if clamp else x & ((1 << width) - 1)


def _sat_i(x, width, clamp):
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    return np.clip(x, lo, hi) if clamp else ((x - lo) & ((1 << width) - 1)) + lo


def _clz(x, width):
    """Leading zeros; -1 (all ones) for 0 (ISA:V_CLZ_I32_U32)."""
    x = x.astype(U64)
    n = np.full(x.shape, -1, I32)
    for i in range(width):
        n = np.where((n < 0) & (((x >> U64(width - 1 - i)) & U64(1)) != 0), i, n)
    return n


def _ctz(x, width):
    x = x.astype(U64)
    n = np.full(x.shape, -1, I32)
    for i in range(width - 1, -1, -1):
        n = np.where(((x >> U64(i)) & U64(1)) != 0, i, n)
    return n


def _brev(x, width):
    x = x.astype(U64)
    out = np.zeros(x.shape, U64)
    for i in range(width):
        out |= ((x >> U64(i)) & U64(1)) << U64(width - 1 - i)
    return out


def _popcount(x):
    x = x.astype(U64)
    n = np.zeros(x.shape, U32)
    for i in range(64):
        n += ((x >> U64(i)) & U64(1)).astype(U32)
    return n


def _bfe(x, off, width, signed):
    """ISA:V_BFE_U32/I32: width 0 gives 0; offset and width are 5-bit fields."""
    off, width = (off & 31).astype(U32), (width & 31).astype(U32)
    field = (x.astype(U64) >> off.astype(U64)) & ((U64(1) << width.astype(U64)) - U64(1))
    if signed:
        sign = np.where(width > 0, (field >> np.maximum(width, 1).astype(U64) - U64(1)) & U64(1), 0).astype(bool)
        field = np.where(sign, field | ~((U64(1) << width.astype(U64)) - U64(1)), field)
    return (field & U64(0xFFFFFFFF)).astype(U32)


def _perm(s0, s1, sel):
    """ISA:V_PERM_B32 byte selects over {S0, S1} (S1 is bytes 0-3)."""
    data = (s0.astype(U64) << U64(32)) | s1.astype(U64)
    out = np.zeros(s0.shape, U32)
    for k in range(4):
        s = ((sel >> U32(8 * k)) & U32(0xFF)).astype(U64)
        byte = (data >> (np.minimum(s, 7) * U64(8))) & U64(0xFF)
        sign_of = lambda n: np.where(((data >> U64(8 * n + 7)) & U64(1)) != 0, U64(0xFF), U64(0))  # noqa: E731
        byte = np.where(s == 8, sign_of(1), np.where(s == 9, sign_of(3), np.where(s == 10, sign_of(5), byte)))
        byte = np.where(s == 11, sign_of(7), np.where(s == 12, U64(0), np.where(s >= 13, U64(0xFF), byte)))
        out |= (byte.astype(U32) << U32(8 * k))
    return out


def _mad64(a, b, c, signed):
    """ISA:V_MAD_U64_U32 / V_MAD_I64_I32: {D1.u1, D0.u64} = 65-bit S0*S1 + S2; D1 is bit 64."""
    if signed:
        p = a.astype(I64) * b.astype(I64)
        s = (p.view(U64) + c.view(U64)).view(I64)
        ovf = ((p < 0) == (c < 0)) & ((s < 0) != (p < 0))
        return s.view(U64), np.where(ovf, p < 0, s < 0)
    p = a.astype(U64) * b.astype(U64)
    s = p + c
    return s, s < p


def _rtz_f16(x):
    """f32 -> f16 rounding toward zero (v_cvt_pk_rtz_f16_f32): the round-to-nearest result, stepped back toward
    zero when it rounded away (|f16| > |x|); overflow gives the largest finite value, not inf."""
    h = x.astype(np.float16)
    over = np.abs(h.astype(np.float64)) > np.abs(x.astype(np.float64))
    h = np.where(over & np.isfinite(x), np.nextafter(h, np.float16(0)), h)
    return np.where(np.isnan(x), x.astype(np.float16), h).astype(np.float16)


def _f2f(x, kind):
    """Float conversion with one rounding, NaN quieted with its payload's top bits kept."""
    return fp.fix_nan(x.astype(fp.FLOAT[kind][0]), kind, [])


def _quiet_conv(src, out, src_kind, dst_kind):
    """Converted NaNs keep the sign and the high payload bits, quieted (IEEE 754-2008 6.2.3)."""
    nan = np.isnan(src)
    if not nan.any():
        return out
    sm, dm = fp.FLOAT[src_kind][2], fp.FLOAT[dst_kind][2]
    sb = fp.bits(src, src_kind).astype(U64)
    payload = (sb & U64((1 << sm) - 1)) >> U64(sm - dm) if sm > dm else (sb & U64((1 << sm) - 1)) << U64(dm - sm)
    sign = (sb >> U64(sm + fp.FLOAT[src_kind][3])) & U64(1)
    width = 1 + dm + fp.FLOAT[dst_kind][3]
    nb = (sign << U64(width - 1)) | U64(((1 << fp.FLOAT[dst_kind][3]) - 1) << dm) | payload | U64(1 << (dm - 1))
    return np.where(nan, fp.vals(nb.astype(fp.FLOAT[dst_kind][1]), dst_kind), out)


def _cvt(src_kind, dst_kind):
    return lambda c, x: _quiet_conv(x, x.astype(fp.FLOAT[dst_kind][0]), src_kind, dst_kind)


# ---- float arithmetic ----------------------------------------------------------------------------------------------

def _f64(fn):
    """Run a two-operand f16/f32 op exactly in f64 and round once (f16 via f32 would round twice)."""
    return lambda c, a, b: fn(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)


for _k in ("f16", "f32", "f64"):
    _exact = (lambda f: f) if _k == "f64" else _f64
    _reg(f"v_add_{_k}", _k, f"{_k} {_k}", _exact(lambda a, b: a + b), arith=_k)
    _reg(f"v_sub_{_k}", _k, f"{_k} {_k}", _exact(lambda a, b: a - b), arith=_k)
    _reg(f"v_subrev_{_k}", _k, f"{_k} {_k}", _exact(lambda a, b: b - a), arith=_k)
    _reg(f"v_mul_{_k}", _k, f"{_k} {_k}", _exact(lambda a, b: a * b), arith=_k)
    _reg(f"v_fma_{_k}", _k, f"{_k} {_k} {_k}", lambda c, a, b, d, k=_k: fp.fma(a, b, d, k), arith=_k)
    _reg(f"v_ldexp_{_k}", _k, f"{_k} {'i16' if _k == 'f16' else 'i32'}",
         lambda c, a, e, k=_k: fp.ldexp(a, e.astype(I64), k), arith=_k)
    for _n in ("rcp", "rsq", "sqrt"):
        _reg(f"v_{_n}_{_k}", _k, _k, lambda c, x, n=_n, k=_k: fp.transcendental(n, x, k), arith=_k)
    _reg(f"v_floor_{_k}", _k, _k, lambda c, x: np.floor(x), arith=_k)
    _reg(f"v_ceil_{_k}", _k, _k, lambda c, x: np.ceil(x), arith=_k)
    _reg(f"v_trunc_{_k}", _k, _k, lambda c, x: np.trunc(x), arith=_k)
    _reg(f"v_rndne_{_k}", _k, _k, lambda c, x: fp.round_even(x), arith=_k)
    _reg(f"v_fract_{_k}", _k, _k, lambda c, x, k=_k: fp.fract(x, k), arith=_k)
    _reg(f"v_frexp_mant_{_k}", _k, _k, lambda c, x, k=_k: fp.frexp_mant(x, k), arith=_k)
    _reg(f"v_frexp_exp_{'i16' if _k == 'f16' else 'i32'}_{_k}", "i16" if _k == "f16" else "i32", _k,
         lambda c, x: fp.frexp_exp(x))
    for _mx, _nm in ((True, "max"), (False, "min")):
        # gfx11 v_max_f32 (MODE.IEEE rules), gfx12 v_max_num_f32 (maximumNumber) and v_maximum_f32 (maximum)
        _reg(f"v_{_nm}_{_k}", _k, f"{_k} {_k}",
             lambda c, a, b, k=_k, m=_mx: _minmax(a, b, k, m, "legacy", c.mode.ieee), arith=_k)
        _reg(f"v_{_nm}_num_{_k}", _k, f"{_k} {_k}", lambda c, a, b, k=_k, m=_mx: _minmax(a, b, k, m, "num", False),
             arith=_k)
        _reg(f"v_{_nm}imum_{_k}", _k, f"{_k} {_k}",
             lambda c, a, b, k=_k, m=_mx: _minmax(a, b, k, m, "ieee2019", False), arith=_k)
        if _k != "f64":
            _reg(f"v_{_nm}3_{_k}", _k, f"{_k} {_k} {_k}", lambda c, a, b, d, k=_k, m=_mx: _minmax(
                _minmax(a, b, k, m, "legacy", c.mode.ieee), d, k, m, "legacy", c.mode.ieee), arith=_k)
            _reg(f"v_{_nm}3_num_{_k}", _k, f"{_k} {_k} {_k}", lambda c, a, b, d, k=_k, m=_mx: _minmax(
                _minmax(a, b, k, m, "num", False), d, k, m, "num", False), arith=_k)
            _reg(f"v_{_nm}imum3_{_k}", _k, f"{_k} {_k} {_k}", lambda c, a, b, d, k=_k, m=_mx: _minmax(
                _minmax(a, b, k, m, "ieee2019", False), d, k, m, "ieee2019", False), arith=_k)
    if _k != "f64":
        _reg(f"v_med3_{_k}", _k, f"{_k} {_k} {_k}", lambda c, a, b, d, k=_k: _med3(a, b, d, k, "legacy", c.mode.ieee),
             arith=_k)
        _reg(f"v_med3_num_{_k}", _k, f"{_k} {_k} {_k}", lambda c, a, b, d, k=_k: _med3(a, b, d, k, "num", False),
             arith=_k)
        for _n in ("log", "exp", "sin", "cos"):
            _reg(f"v_{_n}_{_k}", _k, _k, lambda c, x, n=_n, k=_k: fp.transcendental(n, x, k), arith=_k)
        _reg(f"v_fmac_{_k}", _k, f"{_k} {_k} {_k}", lambda c, a, b, d, k=_k: fp.fma(a, b, d, k), arith=_k)
        _reg(f"v_fmamk_{_k}", _k, f"{_k} {_k} {_k}", lambda c, a, k_, b, k=_k: fp.fma(a, k_, b, k), arith=_k)
        _reg(f"v_fmaak_{_k}", _k, f"{_k} {_k} {_k}", lambda c, a, b, k_, k=_k: fp.fma(a, b, k_, k), arith=_k)
    if _k != "f16":
        _reg(f"v_div_scale_{_k}", f"{_k} mask", f"{_k} {_k} {_k}", lambda c, a, b, d, k=_k: _div_scale(a, b, d, k),
             arith=_k)
        _reg(f"v_div_fmas_{_k}", _k, f"{_k} {_k} {_k} mask", lambda c, a, b, d, v, k=_k: _div_fmas(a, b, d, v, k),
             arith=_k)
    _reg(f"v_div_fixup_{_k}", _k, f"{_k} {_k} {_k}", lambda c, a, b, d, k=_k: _div_fixup(a, b, d, k), arith=_k)

_reg("v_rcp_iflag_f32", "f32", "f32", lambda c, x: fp.transcendental("rcp", x, "f32"), arith="f32")
_reg("v_mul_dx9_zero_f32", "f32", "f32 f32",  # ISA: DX9 rules, 0 * x = +0 even for inf/NaN x
     lambda c, a, b: np.where((a == 0) | (b == 0), np.float32(0), a * b), arith="f32")
_reg("v_mul_legacy_f32", "f32", "f32 f32", TABLE["v_mul_dx9_zero_f32"].fn, arith="f32")

# ---- VOP3P mixed precision (ISA:V_FMA_MIX_F32: opsel_hi[i] picks f16 for source i, opsel[i] its high half) --------
_reg("v_fma_mix_f32", "f32", "f32 f32 f32", lambda c, a, b, d: fp.fma(a, b, d, "f32"), arith="f32")
_reg("v_fma_mixlo_f16", "f16", "f32 f32 f32", lambda c, a, b, d: _f2f(fp.fma(a, b, d, "f32"), "f16"), arith="f16")
_reg("v_fma_mixhi_f16", "f16", "f32 f32 f32", lambda c, a, b, d: _f2f(fp.fma(a, b, d, "f32"), "f16"), arith="f16")
MIX_OPS = frozenset(("v_fma_mix_f32", "v_fma_mixlo_f16", "v_fma_mixhi_f16"))

# ---- VOP3P packed 16-bit (fn runs once per half) -----------------------------------------------------------------
_reg("v_pk_add_f16", "f16", "f16 f16", TABLE["v_add_f16"].fn, arith="f16", packed=True)
_reg("v_pk_mul_f16", "f16", "f16 f16", TABLE["v_mul_f16"].fn, arith="f16", packed=True)
_reg("v_pk_fma_f16", "f16", "f16 f16 f16", TABLE["v_fma_f16"].fn, arith="f16", packed=True)
for _nm in ("max", "min"):
    _reg(f"v_pk_{_nm}_f16", "f16", "f16 f16", TABLE[f"v_{_nm}_f16"].fn, arith="f16", packed=True)
    _reg(f"v_pk_{_nm}_num_f16", "f16", "f16 f16", TABLE[f"v_{_nm}_num_f16"].fn, arith="f16", packed=True)
    _reg(f"v_pk_{_nm}imum_f16", "f16", "f16 f16", TABLE[f"v_{_nm}imum_f16"].fn, arith="f16", packed=True)
_reg("v_pk_add_u16", "u16", "u16 u16", lambda c, a, b: _sat_u(a.astype(I64) + b, 16, c.clamp), iclamp=True, packed=True)
_reg("v_pk_sub_u16", "u16", "u16 u16", lambda c, a, b: _sat_u(a.astype(I64) - b, 16, c.clamp), iclamp=True, packed=True)
_reg("v_pk_add_i16", "i16", "i16 i16", lambda c, a, b: _sat_i(a.astype(I64) + b, 16, c.clamp), iclamp=True, packed=True)
_reg("v_pk_sub_i16", "i16", "i16 i16", lambda c, a, b: _sat_i(a.astype(I64) - b, 16, c.clamp), iclamp=True, packed=True)
_reg("v_pk_mul_lo_u16", "u16", "u16 u16", lambda c, a, b: (a.astype(U32) * b) & 0xFFFF, packed=True)
_reg("v_pk_mad_u16", "u16", "u16 u16 u16", lambda c, a, b, d: _sat_u(a.astype(I64) * b + d, 16, c.clamp),
     iclamp=True, packed=True)
_reg("v_pk_mad_i16", "i16", "i16 i16 i16", lambda c, a, b, d: _sat_i(a.astype(I64) * b + d, 16, c.clamp),
     iclamp=True, packed=True)
_reg("v_pk_lshlrev_b16", "b16", "b16 b16", lambda c, s, x: (x.astype(U32) << (s & 15)) & 0xFFFF, packed=True)
_reg("v_pk_lshrrev_b16", "b16", "b16 b16", lambda c, s, x: x >> (s & 15), packed=True)
_reg("v_pk_ashrrev_i16", "i16", "b16 i16", lambda c, s, x: x >> (s & 15).astype(I16), packed=True)
for _nm, _f in (("max", np.maximum), ("min", np.minimum)):
    _reg(f"v_pk_{_nm}_i16", "i16", "i16 i16", lambda c, a, b, f=_f: f(a, b), packed=True)
    _reg(f"v_pk_{_nm}_u16", "u16", "u16 u16", lambda c, a, b, f=_f: f(a, b), packed=True)

# ---- compares (ISA:V_CMP_*: D0.u64[laneId] = result; v_cmpx writes EXEC instead) ----------------------------------
_FCMP = {"f": lambda a, b: np.zeros(a.shape, bool), "lt": np.less, "eq": np.equal, "le": np.less_equal,
         "gt": np.greater, "lg": lambda a, b: (a < b) | (a > b), "ge": np.greater_equal,
         "o": lambda a, b: ~(np.isnan(a) | np.isnan(b)), "u": lambda a, b: np.isnan(a) | np.isnan(b),
         "nge": lambda a, b: ~(a >= b), "nlg": lambda a, b: ~((a < b) | (a > b)), "ngt": lambda a, b: ~(a > b),
         "nle": lambda a, b: ~(a <= b), "neq": lambda a, b: ~(a == b), "nlt": lambda a, b: ~(a < b),
         "t": lambda a, b: np.ones(a.shape, bool), "tru": lambda a, b: np.ones(a.shape, bool)}
_ICMP = {"f": _FCMP["f"], "lt": np.less, "eq": np.equal, "le": np.less_equal, "gt": np.greater,
         "ne": np.not_equal, "lg": np.not_equal, "ge": np.greater_equal, "t": _FCMP["t"]}
for _x in ("v_cmp", "v_cmpx"):
    for _k in ("f16", "f32", "f64"):
        for _c, _f in _FCMP.items():
            _reg(f"{_x}_{_c}_{_k}", "mask", f"{_k} {_k}", lambda c, a, b, f=_f: f(a, b))
        _reg(f"{_x}_class_{_k}", "mask", f"{_k} b32", lambda c, a, m, k=_k: _cmp_class(a, m, k))
    for _k in ("i16", "i32", "i64", "u16", "u32", "u64"):
        for _c, _f in _ICMP.items():
            _reg(f"{_x}_{_c}_{_k}", "mask", f"{_k} {_k}", lambda c, a, b, f=_f: f(a, b))

# ---- moves, selects, conversions -------------------------------------------------------------------------------------
_reg("v_mov_b32", "b32", "b32", lambda c, x: x)
_reg("v_mov_b16", "b16", "b16", lambda c, x: x)
_reg("v_mov_b64", "b64", "b64", lambda c, x: x)
_reg("v_cndmask_b32", "b32", "b32 b32 mask", lambda c, a, b, m: np.where(m, b, a))  # ISA: VCC ? S1 : S0
_reg("v_cndmask_b16", "b16", "b16 b16 mask", lambda c, a, b, m: np.where(m, b, a))
_reg("v_cvt_f32_i32", "f32", "i32", lambda c, x: x.astype(np.float32))  # numpy int->float rounds to nearest even
_reg("v_cvt_f32_u32", "f32", "u32", lambda c, x: x.astype(np.float32))
_reg("v_cvt_i32_f32", "i32", "f32", lambda c, x: fp.to_int(x, True))
_reg("v_cvt_u32_f32", "u32", "f32", lambda c, x: fp.to_int(x, False))
_reg("v_cvt_i32_f64", "i32", "f64", lambda c, x: fp.to_int(x, True))
_reg("v_cvt_u32_f64", "u32", "f64", lambda c, x: fp.to_int(x, False))
_reg("v_cvt_f64_i32", "f64", "i32", lambda c, x: x.astype(np.float64))
_reg("v_cvt_f64_u32", "f64", "u32", lambda c, x: x.astype(np.float64))
_reg("v_cvt_f16_f32", "f16", "f32", _cvt("f32", "f16"))  # ISA:V_CVT_F16_F32 round to nearest even
_reg("v_cvt_f32_f16", "f32", "f16", _cvt("f16", "f32"))
_reg("v_cvt_f32_f64", "f32", "f64", _cvt("f64", "f32"))
_reg("v_cvt_f64_f32", "f64", "f32", _cvt("f32", "f64"))
_reg("v_cvt_f16_i16", "f16", "i16", lambda c, x: x.astype(np.float16))
_reg("v_cvt_f16_u16", "f16", "u16", lambda c, x: x.astype(np.float16))
_reg("v_cvt_i16_f16", "i16", "f16", lambda c, x: fp.to_int(x, True, 16))
_reg("v_cvt_u16_f16", "u16", "f16", lambda c, x: fp.to_int(x, False, 16))
_reg("v_cvt_i32_i16", "i32", "i16", lambda c, x: x.astype(I32))
_reg("v_cvt_u32_u16", "u32", "u16", lambda c, x: x.astype(U32))
for _i in range(4):  # ISA:V_CVT_F32_UBYTE0..3: byte i of S0 as an unsigned integer
    _reg(f"v_cvt_f32_ubyte{_i}", "f32", "u32", lambda c, x, i=_i: ((x >> U32(8 * i)) & U32(0xFF)).astype(np.float32))
for _nm in ("v_cvt_floor_i32_f32", "v_cvt_flr_i32_f32"):
    _reg(_nm, "i32", "f32", lambda c, x: fp.to_int(np.floor(x), True))
for _nm in ("v_cvt_nearest_i32_f32", "v_cvt_rpi_i32_f32"):  # ISA: f32_to_i32(floor(S0 + 0.5))
    _reg(_nm, "i32", "f32", lambda c, x: fp.to_int(np.floor(x.astype(np.float64) + 0.5), True))
_reg("v_cvt_pk_rtz_f16_f32", "b32", "f32 f32",
     lambda c, a, b: _rtz_f16(a).view(U16).astype(U32) | (_rtz_f16(b).view(U16).astype(U32) << U32(16)))
_reg("v_pack_b32_f16", "b32", "f16 f16", lambda c, a, b: a.view(U16).astype(U32) | (b.view(U16).astype(U32) << 16))

# ---- integer arithmetic -------------------------------------------------------------------------------------------
_reg("v_add_nc_u32", "u32", "u32 u32", lambda c, a, b: _sat_u(a.astype(I64) + b, 32, c.clamp), iclamp=True)
_reg("v_sub_nc_u32", "u32", "u32 u32", lambda c, a, b: _sat_u(a.astype(I64) - b, 32, c.clamp), iclamp=True)
_reg("v_subrev_nc_u32", "u32", "u32 u32", lambda c, a, b: _sat_u(b.astype(I64) - a, 32, c.clamp), iclamp=True)
_reg("v_add_nc_i32", "i32", "i32 i32", lambda c, a, b: _sat_i(a.astype(I64) + b, 32, c.clamp), iclamp=True)
_reg("v_sub_nc_i32", "i32", "i32 i32", lambda c, a, b: _sat_i(a.astype(I64) - b, 32, c.clamp), iclamp=True)
_reg("v_add_nc_u16", "u16", "u16 u16", lambda c, a, b: _sat_u(a.astype(I64) + b, 16, c.clamp), iclamp=True)
_reg("v_sub_nc_u16", "u16", "u16 u16", lambda c, a, b: _sat_u(a.astype(I64) - b, 16, c.clamp), iclamp=True)
_reg("v_add_nc_i16", "i16", "i16 i16", lambda c, a, b: _sat_i(a.astype(I64) + b, 16, c.clamp), iclamp=True)
_reg("v_sub_nc_i16", "i16", "i16 i16", lambda c, a, b: _sat_i(a.astype(I64) - b, 16, c.clamp), iclamp=True)


def _addc(a, b, cin, sub, clamp):
    """ISA:V_ADD_CO_CI_U32 / V_SUB_CO_CI_U32: 64-bit exact sum; VCC = carry out (sub: borrow); clamp saturates."""
    t = a.astype(I64) - b - cin if sub else a.astype(I64) + b + cin
    carry = (t < 0) if sub else (t > 0xFFFFFFFF)
    return _sat_u(t, 32, clamp), carry


_NOC = np.zeros(1, I64)
_reg("v_add_co_u32", "u32 mask", "u32 u32", lambda c, a, b: _addc(a, b, _NOC, False, c.clamp), iclamp=True)
_reg("v_sub_co_u32", "u32 mask", "u32 u32", lambda c, a, b: _addc(a, b, _NOC, True, c.clamp), iclamp=True)
_reg("v_subrev_co_u32", "u32 mask", "u32 u32", lambda c, a, b: _addc(b, a, _NOC, True, c.clamp), iclamp=True)
_reg("v_add_co_ci_u32", "u32 mask", "u32 u32 mask", lambda c, a, b, m: _addc(a, b, m.astype(I64), False, c.clamp),
     iclamp=True)
_reg("v_sub_co_ci_u32", "u32 mask", "u32 u32 mask", lambda c, a, b, m: _addc(a, b, m.astype(I64), True, c.clamp),
     iclamp=True)
_reg("v_subrev_co_ci_u32", "u32 mask", "u32 u32 mask", lambda c, a, b, m: _addc(b, a, m.astype(I64), True, c.clamp),
     iclamp=True)
_reg("v_add3_u32", "u32", "u32 u32 u32", lambda c, a, b, d: a + b + d)
_reg("v_xad_u32", "u32", "u32 u32 u32", lambda c, a, b, d: (a ^ b) + d)
_reg("v_lshl_add_u32", "u32", "u32 u32 u32", lambda c, a, s, d: (a << (s & 31)) + d)
_reg("v_add_lshl_u32", "u32", "u32 u32 u32", lambda c, a, b, s: (a + b) << (s & 31))
_reg("v_lshl_or_b32", "b32", "b32 u32 b32", lambda c, a, s, d: (a << (s & 31)) | d)
_reg("v_and_or_b32", "b32", "b32 b32 b32", lambda c, a, b, d: (a & b) | d)
_reg("v_or3_b32", "b32", "b32 b32 b32", lambda c, a, b, d: a | b | d)
_reg("v_xor3_b32", "b32", "b32 b32 b32", lambda c, a, b, d: a ^ b ^ d)
_reg("v_mul_lo_u32", "u32", "u32 u32", lambda c, a, b: a * b)
_reg("v_mul_hi_u32", "u32", "u32 u32", lambda c, a, b: ((a.astype(U64) * b) >> U64(32)).astype(U32))
_reg("v_mul_hi_i32", "i32", "i32 i32", lambda c, a, b: ((a.astype(I64) * b) >> 32).astype(I32))
_reg("v_mul_u32_u24", "u32", "u32 u32", lambda c, a, b: (a & 0xFFFFFF) * (b & 0xFFFFFF))
_reg("v_mul_hi_u32_u24", "u32", "u32 u32",
     lambda c, a, b: (((a & 0xFFFFFF).astype(U64) * (b & 0xFFFFFF)) >> U64(32)).astype(U32))
_s24 = lambda x: ((x.astype(I64) & 0xFFFFFF) ^ 0x800000) - 0x800000  # noqa: E731  (S0.i24: low 24 bits, signed)
_reg("v_mul_i32_i24", "i32", "i32 i32", lambda c, a, b: (_s24(a) * _s24(b)).astype(I32))
_reg("v_mul_hi_i32_i24", "i32", "i32 i32", lambda c, a, b: ((_s24(a) * _s24(b)) >> 32).astype(I32))
_reg("v_mad_u32_u24", "u32", "u32 u32 u32",
     lambda c, a, b, d: _sat_u((a & 0xFFFFFF).astype(I64) * (b & 0xFFFFFF) + d, 32, c.clamp), iclamp=True)
_reg("v_mad_i32_i24", "i32", "i32 i32 i32", lambda c, a, b, d: _sat_i(_s24(a) * _s24(b) + d, 32, c.clamp),
     iclamp=True)
for _nm in ("v_mad_u64_u32", "v_mad_co_u64_u32"):  # gfx12 renamed it v_mad_co_u64_u32
    _reg(_nm, "u64 mask", "u32 u32 u64", lambda c, a, b, d: _mad64(a, b, d, False))
for _nm in ("v_mad_i64_i32", "v_mad_co_i64_i32"):
    _reg(_nm, "i64 mask", "i32 i32 i64", lambda c, a, b, d: _mad64(a, b, d, True))
_reg("v_mul_lo_u16", "u16", "u16 u16", lambda c, a, b: (a.astype(U32) * b) & 0xFFFF)
_reg("v_mad_u16", "u16", "u16 u16 u16", lambda c, a, b, d: _sat_u(a.astype(I64) * b + d, 16, c.clamp), iclamp=True)
_reg("v_mad_i16", "i16", "i16 i16 i16", lambda c, a, b, d: _sat_i(a.astype(I64) * b + d, 16, c.clamp), iclamp=True)
for _nm, _f in (("max", np.maximum), ("min", np.minimum)):
    for _t in ("i32", "u32", "i16", "u16"):
        _reg(f"v_{_nm}_{_t}", _t, f"{_t} {_t}", lambda c, a, b, f=_f: f(a, b))
        if _t in ("i32", "u32", "i16", "u16"):
            _reg(f"v_{_nm}3_{_t}", _t, f"{_t} {_t} {_t}", lambda c, a, b, d, f=_f: f(f(a, b), d))
for _t in ("i32", "u32", "i16", "u16"):
    _reg(f"v_med3_{_t}", _t, f"{_t} {_t} {_t}",
         lambda c, a, b, d: np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), d)))

# ---- bit operations -----------------------------------------------------------------------------------------------
for _w, _t in ((32, "b32"), (16, "b16")):
    _reg(f"v_and_{_t}", _t, f"{_t} {_t}", lambda c, a, b: a & b)
    _reg(f"v_or_{_t}", _t, f"{_t} {_t}", lambda c, a, b: a | b)
    _reg(f"v_xor_{_t}", _t, f"{_t} {_t}", lambda c, a, b: a ^ b)
    _reg(f"v_xnor_{_t}", _t, f"{_t} {_t}", lambda c, a, b: ~(a ^ b))
    _reg(f"v_not_{_t}", _t, _t, lambda c, a: ~a)
# shifts: the "rev" forms shift S1 by S0 (ISA:V_LSHLREV_B32: D0 = S1 << S0[4:0])
_reg("v_lshlrev_b32", "b32", "u32 b32", lambda c, s, x: x << _shift_amt(s, 32))
_reg("v_lshrrev_b32", "b32", "u32 b32", lambda c, s, x: x >> _shift_amt(s, 32))
_reg("v_ashrrev_i32", "i32", "u32 i32", lambda c, s, x: x >> _shift_amt(s, 32).astype(I32))
_reg("v_lshlrev_b16", "b16", "u16 b16", lambda c, s, x: x << (s & 15))
_reg("v_lshrrev_b16", "b16", "u16 b16", lambda c, s, x: x >> (s & 15))
_reg("v_ashrrev_i16", "i16", "u16 i16", lambda c, s, x: x >> (s & 15).astype(I16))
_reg("v_lshlrev_b64", "b64", "u32 b64", lambda c, s, x: x << _shift_amt(s, 64))
_reg("v_lshrrev_b64", "b64", "u32 b64", lambda c, s, x: x >> _shift_amt(s, 64))
_reg("v_ashrrev_i64", "i64", "u32 i64", lambda c, s, x: x >> _shift_amt(s, 64).astype(I64))
_reg("v_bfe_u32", "u32", "u32 u32 u32", lambda c, x, o, w: _bfe(x, o, w, False))
_reg("v_bfe_i32", "i32", "i32 u32 u32", lambda c, x, o, w: _bfe(x, o, w, True).view(I32))
_reg("v_bfi_b32", "b32", "b32 b32 b32", lambda c, m, a, b: (m & a) | (~m & b))  # ISA:V_BFI_B32
_reg("v_bfm_b32", "b32", "u32 u32", lambda c, w, o: (((U64(1) << (w & 31).astype(U64)) - U64(1)).astype(U32))
     << (o & 31))
_reg("v_alignbit_b32", "b32", "b32 b32 u32",
     lambda c, a, b, s: (((a.astype(U64) << U64(32)) | b) >> (s & 31).astype(U64)).astype(U32))
_reg("v_alignbyte_b32", "b32", "b32 b32 u32",
     lambda c, a, b, s: (((a.astype(U64) << U64(32)) | b) >> ((s & 3) * 8).astype(U64)).astype(U32))
_reg("v_perm_b32", "b32", "b32 b32 b32", lambda c, a, b, s: _perm(a, b, s))
_reg("v_bfrev_b32", "b32", "b32", lambda c, x: _brev(x, 32))
for _nm in ("v_clz_i32_u32", "v_ffbh_u32"):
    _reg(_nm, "i32", "u32", lambda c, x: _clz(x, 32))
for _nm in ("v_ctz_i32_b32", "v_ffbl_b32"):
    _reg(_nm, "i32", "b32", lambda c, x: _ctz(x, 32))
for _nm in ("v_cls_i32", "v_ffbh_i32"):  # ISA:V_CLS_I32: leading bits equal to the sign; -1 for 0 and -1
    _reg(_nm, "i32", "i32", lambda c, x: np.where((x == 0) | (x == -1), -1, _clz(np.where(x < 0, ~x, x).view(U32), 32)))
_reg("v_bcnt_u32_b32", "u32", "b32 u32", lambda c, x, a: _popcount(x) + a)
# ISA:V_MBCNT_LO_U32_B32: S1 + popcount(S0 & lanes below this one), lanes 0-31 (lo) and 32-63 (hi)
_reg("v_mbcnt_lo_u32_b32", "u32", "b32 u32", lambda c, m, a: a + _popcount(
    m & ((U64(1) << np.minimum(np.arange(c.lanes, dtype=U64), U64(32))) - U64(1)).astype(U32)))
_reg("v_mbcnt_hi_u32_b32", "u32", "b32 u32", lambda c, m, a: a + _popcount(
    m & ((U64(1) << np.clip(np.arange(c.lanes, dtype=np.int64) - 32, 0, 32).astype(U64)) - U64(1)).astype(U32)))
