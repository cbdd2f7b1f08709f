"""Bit-exact IEEE-754 helpers for the AMD ALU emulation (emu/amd/isa/alu.py): NaN quieting and selection, denormal
flushing, fused multiply-add with a single rounding, the float mode a kernel runs in, and the transcendental ops.

Values travel as numpy arrays over lanes. The float kinds are "f16", "f32", "f64"; `bits`/`vals` convert between a
kind's raw bit pattern (uint16/uint32/uint64) and its numpy float, without touching NaN payloads.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

# kind -> (numpy float, numpy uint of the same width, mantissa bits, exponent bits)
FLOAT = {"f16": (np.float16, np.uint16, 10, 5), "f32": (np.float32, np.uint32, 23, 8),
         "f64": (np.float64, np.uint64, 52, 11)}
# The NaN an invalid operation produces (0*inf, inf-inf, sqrt(-1)): the positive quiet NaN, as AMD hardware writes
# it (LLVM AMDGPU folds invalid operations to APFloat::getQNaN, 0x7fc00000 for f32).
DEFAULT_NAN = {"f16": 0x7E00, "f32": 0x7FC00000, "f64": 0x7FF8000000000000}


@dataclass(frozen=True)
class FloatMode:
    """The float mode a wave runs in (MODE register, set from the kernel descriptor's compute_pgm_rsrc1).

    flush32 / flush16_64: denormals flushed to zero for f32 / for f16 and f64 (FLOAT_DENORM_MODE_32 and _16_64 not 3;
    this emulation flushes inputs and outputs together, modes 1 and 2 that flush one side only are treated as 0).
    ieee: MODE.IEEE (gfx11 only): sNaN handling of v_min/v_max, and omod is ignored when it is set.
    dx10_clamp: a clamped NaN becomes 0.
    The default is what our compiler's kernels use: rsrc1 FLOAT_MODE 0xF0 (round to nearest even, denormals kept).
    """
    flush32: bool = False
    flush16_64: bool = False
    ieee: bool = True
    dx10_clamp: bool = True

    @classmethod
    def from_rsrc1(cls, rsrc1: int, gfx: str) -> "FloatMode":
        """AMDGPUUsage compute_pgm_rsrc1: FLOAT_DENORM_MODE_32 bits 17:16, FLOAT_DENORM_MODE_16_64 bits 19:18,
        ENABLE_DX10_CLAMP bit 21 and ENABLE_IEEE_MODE bit 23 (GFX6-GFX11; GFX12 has neither, IEEE mode is off)."""
        gfx12 = gfx.startswith("gfx12")
        return cls(flush32=((rsrc1 >> 16) & 3) != 3, flush16_64=((rsrc1 >> 18) & 3) != 3,
                   ieee=False if gfx12 else bool((rsrc1 >> 23) & 1),
                   dx10_clamp=True if gfx12 else bool((rsrc1 >> 21) & 1))

    def flushes(self, kind: str) -> bool:
        return self.flush32 if kind == "f32" else self.flush16_64


def vals(b: np.ndarray, kind: str) -> np.ndarray:
    """Raw bits -> floats of `kind` (a copy; NaN payloads kept)."""
    ft, ut, _, _ = FLOAT[kind]
    return np.asarray(b).astype(ut).view(ft)


def bits(v: np.ndarray, kind: str) -> np.ndarray:
    """Floats of `kind` -> raw bits (a copy)."""
    ft, ut, _, _ = FLOAT[kind]
    return np.asarray(v).astype(ft).view(ut)


def _consts(kind: str) -> tuple[int, int, int]:
    _, _, mant, expb = FLOAT[kind]
    width = 1 + mant + expb
    return 1 << (width - 1), ((1 << expb) - 1) << mant, (1 << mant) - 1


def sign_bit(kind: str) -> int:
    return _consts(kind)[0]


def exponent(b: np.ndarray, kind: str) -> np.ndarray:
    """The biased exponent field as int64 (the ISA pseudocode's exponent(): 0 for zero and denormals)."""
    _, _, mant, _ = FLOAT[kind]
    _, emask, _ = _consts(kind)
    return ((np.asarray(b).astype(np.uint64) & np.uint64(emask)) >> np.uint64(mant)).astype(np.int64)


def is_nan_bits(b: np.ndarray, kind: str) -> np.ndarray:
    _, emask, mmask = _consts(kind)
    ut = FLOAT[kind][1]
    b = np.asarray(b).astype(ut)
    return ((b & ut(emask)) == ut(emask)) & ((b & ut(mmask)) != 0)


def is_snan_bits(b: np.ndarray, kind: str) -> np.ndarray:
    """Signalling NaN: NaN with the top mantissa bit clear (IEEE 754-2008 6.2.1, as AMD hardware uses it)."""
    _, _, mant, _ = FLOAT[kind]
    ut = FLOAT[kind][1]
    return is_nan_bits(b, kind) & ((np.asarray(b).astype(ut) & ut(1 << (mant - 1))) == 0)


def quiet_bits(b: np.ndarray, kind: str) -> np.ndarray:
    """cvtToQuietNAN: set the quiet bit, keep sign and payload."""
    _, _, mant, _ = FLOAT[kind]
    ut = FLOAT[kind][1]
    return np.asarray(b).astype(ut) | ut(1 << (mant - 1))


def is_denorm_bits(b: np.ndarray, kind: str) -> np.ndarray:
    _, emask, mmask = _consts(kind)
    ut = FLOAT[kind][1]
    b = np.asarray(b).astype(ut)
    return ((b & ut(emask)) == 0) & ((b & ut(mmask)) != 0)


def flush_bits(b: np.ndarray, kind: str) -> np.ndarray:
    """Denormal -> zero of the same sign (what the MODE register's flush setting does to an input or a result)."""
    ut = FLOAT[kind][1]
    b = np.asarray(b).astype(ut)
    return np.where(is_denorm_bits(b, kind), b & ut(sign_bit(kind)), b)


def flush_vals(v: np.ndarray, kind: str) -> np.ndarray:
    return vals(flush_bits(bits(v, kind), kind), kind)


def fix_nan(res: np.ndarray, kind: str, inputs: list[np.ndarray]) -> np.ndarray:
    """An arithmetic op's NaN result: the first NaN input, quieted, else the default NaN (IEEE 754-2008 6.2.3 says a
    NaN input's payload propagates; which one is implementation-defined, this emulation takes the first)."""
    nan = np.isnan(res)
    if not nan.any():
        return res
    ut = FLOAT[kind][1]
    out = np.where(nan, ut(DEFAULT_NAN[kind]), bits(res, kind))
    for x in reversed(inputs):
        xb = bits(np.broadcast_to(x, res.shape), kind)
        out = np.where(nan & is_nan_bits(xb, kind), quiet_bits(xb, kind), out)
    return vals(out, kind)


def _round_to_odd_sum(p: np.ndarray, c: np.ndarray) -> np.ndarray:
    """p + c in float64 rounded to odd (Boldo-Melquiond): rounding that result once more to a format of at most 51
    bits of precision gives the correctly rounded sum, so fma/fmas round once even though they run through f64."""
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)  # TwoSum (Knuth): s + err == p + c exactly when s is finite
    even = (s.view(np.uint64) & np.uint64(1)) == 0
    bump = np.isfinite(s) & (err != 0) & even
    if bump.any():
        s = np.where(bump, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s


def fma(a: np.ndarray, b: np.ndarray, c: np.ndarray, kind: str, scale: np.ndarray | float | None = None) -> np.ndarray:
    """fma(a, b, c) in `kind` with one rounding (IEEE 754-2008 fusedMultiplyAdd), optionally times `scale` (a power
    of two) before that rounding, as v_div_fmas does. f16/f32 products are exact in f64; f64 uses exact rationals."""
    if kind == "f64":
        return _fma64(a, b, c, scale)
    p = a.astype(np.float64) * b.astype(np.float64)
    s = _round_to_odd_sum(p, c.astype(np.float64))
    if scale is not None:
        s = s * scale
    return fix_nan(s.astype(FLOAT[kind][0]), kind, [a, b, c])


def _fma64(a: np.ndarray, b: np.ndarray, c: np.ndarray, scale) -> np.ndarray:
    plain = a * b + c  # right for every non-finite case; finite lanes are redone exactly below
    out = plain.astype(np.float64)
    sc = np.broadcast_to(np.float64(1.0) if scale is None else scale, a.shape)
    for i in np.nonzero(np.isfinite(a) & np.isfinite(b) & np.isfinite(c))[0]:
        exact = (Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))) * Fraction(float(sc[i]))
        try:
            out[i] = float(exact)  # Fraction -> float is correctly rounded
        except OverflowError:
            out[i] = np.inf if exact > 0 else -np.inf
        if out[i] == 0 and exact == 0:
            out[i] = plain[i] * sc[i]  # keeps IEEE's sign of an exact zero sum
    if scale is not None:
        out = np.where(np.isfinite(a) & np.isfinite(b) & np.isfinite(c), out, plain * sc)
    return fix_nan(out, "f64", [a, b, c])


def ldexp(x: np.ndarray, e: np.ndarray, kind: str) -> np.ndarray:
    """x * 2**e with one rounding; the exponent is clamped where the result no longer depends on it."""
    e = np.clip(np.asarray(e, np.int64), -2200, 2200)
    if kind == "f64":
        return np.ldexp(x, e.astype(np.int32))  # C ldexp rounds once
    # f16/f32 values times 2**[-400, 400] are exact in f64, so the cast is the only rounding
    return np.ldexp(x.astype(np.float64), np.clip(e, -400, 400).astype(np.int32)).astype(FLOAT[kind][0])


def frexp_mant(x: np.ndarray, kind: str) -> np.ndarray:
    """v_frexp_mant: the mantissa in [0.5, 1) with x's sign; inf and NaN pass through (ISA pseudocode)."""
    m, _ = np.frexp(x.astype(np.float64))
    return np.where(np.isfinite(x), m, x).astype(FLOAT[kind][0])


def frexp_exp(x: np.ndarray) -> np.ndarray:
    """v_frexp_exp: the exponent so x = m * 2**e with m in [0.5, 1); 0 for inf/NaN/zero (ISA pseudocode)."""
    _, e = np.frexp(np.where(np.isfinite(x), x, 0).astype(np.float64))
    return e.astype(np.int32)


def round_even(x: np.ndarray) -> np.ndarray:
    """v_rndne: round half to even; -0.0 and NaN pass through (np.rint is IEEE roundToIntegralTiesToEven)."""
    return np.rint(x)


def fract(x: np.ndarray, kind: str) -> np.ndarray:
    """v_fract: x - floor(x), clamped below 1.0 (the largest value under 1); inf -> NaN per IEEE, NaN passes."""
    ft = FLOAT[kind][0]
    f = (x - np.floor(x)).astype(ft)
    below_one = np.nextafter(ft(1.0), ft(0.0))
    return np.where(np.isinf(x), ft(np.nan), np.minimum(f, below_one)).astype(ft)


def transcendental(name: str, x: np.ndarray, kind: str) -> np.ndarray:
    """The hardware's approximate ops, computed here in f64 and rounded once: within 0.5 ulp (+ the f64 error,
    ~2**-52 relative) of the exact value. The hardware is specified looser (about 1 ulp, RDNA3 ISA guide "VALU
    instructions"): code that needs exact results (LLVM's f32 divide and sqrt expansions) refines these anyway.

    v_exp_f32 does not produce denormal results and v_log_f32 treats denormal inputs as zero (LLVM AMDGPU
    AMDGPUISelLowering: "v_exp_f32/v_log_f32 do not handle denormals", which is why LLVM scales around them)."""
    ft = FLOAT[kind][0]
    xd = x.astype(np.float64)
    if name == "log" and kind == "f32":
        xd = np.where(is_denorm_bits(bits(x, kind), kind), np.copysign(0.0, xd), xd)
    if name == "exp":
        r = np.exp2(xd)
    elif name == "log":
        r = np.log2(xd)
    elif name == "rcp":
        r = 1.0 / xd
    elif name == "rsq":
        r = 1.0 / np.sqrt(xd)
    elif name == "sqrt":
        r = np.sqrt(xd)  # f64 sqrt rounded to f32/f16 is correctly rounded (Figueroa: 53 >= 2*24+2)
    elif name in ("sin", "cos"):
        # the input counts revolutions: sin(x * 2pi); x - floor(x) is exact, so large inputs keep their fraction
        turns = xd - np.floor(xd)
        r = np.sin(2 * np.pi * turns) if name == "sin" else np.cos(2 * np.pi * turns)
        r = np.where(np.isfinite(xd), r, np.nan)
        r = np.where(xd == 0, xd if name == "sin" else 1.0, r)  # sin(+-0) = +-0
    else:
        raise ValueError(f"unknown transcendental {name!r}")
    out = r.astype(ft)
    if name == "exp" and kind == "f32":
        out = flush_vals(out, kind)
    return fix_nan(out, kind, [x])


def to_int(x: np.ndarray, signed: bool, width: int = 32) -> np.ndarray:
    """f32_to_i32 / f32_to_u32 and friends: truncate toward zero, saturate, NaN -> 0 (ISA guide conversion ops)."""
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    xd = np.trunc(np.where(np.isnan(x), 0, x).astype(np.float64))
    out = np.clip(xd, lo, hi)
    dt = {(True, 32): np.int32, (False, 32): np.uint32, (True, 16): np.int16, (False, 16): np.uint16,
          (True, 64): np.int64, (False, 64): np.uint64}[(signed, width)]
    if width == 64:  # clip to +-2**63 rounds in f64; fix the ends exactly
        res = np.empty(x.shape, dt)
        big = xd >= float(hi)
        small = xd <= float(lo)
        mid = ~(big | small)
        res[mid] = out[mid].astype(dt)
        res[big], res[small] = hi, lo
        return res
    return out.astype(dt)
