"""Differential test of the emulated AMD GPU: each kind of kernel the tensor tests produce runs twice on the same
gfx target, once as the code object's machine code on the wave executor (kernels="isa") and once as the host build
the code object carries (kernels="host", the fast mode), with the same inputs; the results must agree.

Both builds come from the same kernel IR (tensor/codegen.py -> compiler/llvm_render.py), so wherever LLVM IR pins
the value they must agree bit for bit. That is everything here except:

- NaN sign and payload. LLVM IR leaves them unspecified for every operation but the sign-bit ones (LangRef,
  "Behavior of Floating-Point NaN values"): x86 makes the negative default NaN (0xFFC00000) from an invalid
  operation, AMD the positive one (0x7FC00000), and either may pass on either operand's NaN. So a NaN compares
  equal to any NaN, and only to a NaN; every other value, -0.0 and denormals included, compares by its bits.
- Transcendentals (exp, log, sin, cos and what tensor/codegen.py builds from them: tanh, sigmoid, pow). The two
  builds compute different functions on purpose (compiler/llvm_render.py GPU_VIA): the GPU rounds x * log2(e)
  and calls v_exp_f32, rounds log2(x) and multiplies by a rounded ln 2, and takes sin/cos of x scaled to turns
  (llvm.sin.f32 multiplies by a rounded 1/(2 pi); cos adds a rounded pi/2 first) on v_sin_f32, which hardware
  documents as approximations (about 1 ulp; the emulator rounds the exact value, emu/amd/isa/alu_fp.py); the
  host build calls our own polynomial definitions (compiler/host_math.py, within 2 ulps of the rounded exact
  value). Each one's bound is derived above BOUNDS from those rounding steps, not fitted to what was measured
  (the largest differences seen are 0.1 to 0.85 of their bounds).

Contraction is no exception: the only fusable operation in the IR is ir.MulAdd (llvm.fmuladd, the matmul's
accumulation), and both backends fuse it when the host has FMA: x86 (with the fma feature) and gfx11/gfx12 both
emit one fused multiply-add with a single rounding. A host without FMA would multiply and add, so there the
float matmul cases are skipped, saying so. No fast-math flags are rendered, so neither backend reassociates,
contracts a separate fmul and fadd, or approximates division and sqrt (LLVM's AMDGPU f32 fdiv and sqrt
expansions are correctly rounded without !fpmath metadata, as x86's divss/sqrtss are).

Inputs cover the edges: NaN of both signs, +-inf, -0.0, float32 and float16 denormals, the largest and smallest
finite values, int32 values whose sums and products wrap, INT_MIN / -1, and division by zero. Binary ops take the
cross product of an edge list with itself, so every pair of edge values meets.

Each case compiles a few small kernels (the kernel cache makes reruns cheap); one pair of private emulated
machines (gfx1100 and gfx1201 on each) serves the whole module.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import pytest

from tensor import DEVICES, Tensor

TARGETS = ("gfx1100", "gfx1201")
ISA_NAMES = {"gfx1100": "AMD", "gfx1201": "AMD:1"}  # the machine code on the wave executor
HOST_NAMES = {"gfx1100": "AMD:2", "gfx1201": "AMD:3"}  # the host build inside the same code objects

INT_MIN, INT_MAX = -2 ** 31, 2 ** 31 - 1
F32_EDGE = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -1.5, 2.5, 3.0, 1 / 3, -7.25, 100.0, 16777216.0, 1e30, -1e-30,
                     1e-45, -1e-45, 1e-40, 1.1754942e-38, 1.17549435e-38, 3.4028235e38, -3.4028235e38,
                     np.inf, -np.inf, np.nan, -np.nan], np.float32)
F16_EDGE = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -1.5, 2.5, 3.0, 1 / 3, -7.25, 100.0, 2048.0, 0.001,
                     6e-8, -6e-8, 3e-5, 6.1e-5, 65504.0, -65504.0, np.inf, -np.inf, np.nan, -np.nan], np.float16)
I32_EDGE = np.array([0, 1, -1, 2, -2, 3, -7, 7, 46341, -65536, 16777217, 123456789, -987654321,
                     INT_MAX, INT_MIN, INT_MAX - 1, INT_MIN + 1], np.int32)
B_EDGE = np.array([False, True])
EDGES = {"float32": F32_EDGE, "float16": F16_EDGE, "int32": I32_EDGE, "bool": B_EDGE}

RNG = np.random.default_rng(2024)


def pairs(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Every edge value against every edge value (a, b of the same length)."""
    e = EDGES[dtype]
    return np.repeat(e, len(e)), np.tile(e, len(e))


def with_random(dtype: str, n: int = 40, scale: float = 10.0) -> np.ndarray:
    """The edge values and n random ones."""
    if dtype == "int32":
        rand = RNG.integers(-1000, 1000, n).astype(np.int32)
    elif dtype == "bool":
        rand = RNG.random(n) < 0.5
    else:
        rand = np.clip(RNG.standard_normal(n) * scale, -60000, 60000).astype(dtype)
    return np.concatenate([EDGES[dtype], rand])


def normals(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


# --- transcendental bounds ---------------------------------------------------------------------------------------
# A result passes when it is within `ulps` units in the last place of the host build's result (counted along the
# float number line, so denormal results count in denormal steps and the largest finite value is one step from
# inf), or within `absolute` of it. Derived from the rounding steps each side takes, with u = 2**-24 (float32 unit
# roundoff; one ulp of a float32 r lies between u|r| and 2u|r|, so a relative error e is at most e/u ulps):
#
# GPU side: each emulated v_exp/v_log/v_sin returns the exact value rounded (1/2 ulp); the constants log2(e),
#   1/(2 pi), pi/2 and ln 2 are float32s within u relative (log2(e) within u/4). Host side: compiler/host_math.py
#   is within 2 ulps of the rounded exact value (tests/compiler/test_host_math.py), so 2.5 ulps of the exact one.
# exp(x): the GPU takes 2**y of y = fl(x * fl(log2 e)), |y - x log2 e| <= |y| u + |y| u/4. An error d in y is a
#   relative error ln2 * d in 2**y, and ln2 * |y| = |x|: 1.25 |x| u relative, 1.25 |x| ulps. With 1/2 ulp for the
#   GPU's rounding and 2.5 for the host: 3 + 1.25 |x| ulps. (x = 50 really is ~53 ulps apart.)
# log(x) = fl(fl(log2 x) * fl(ln 2)) on the GPU: relative error u + u + u (two roundings, the constant), 3 ulps;
#   host 2.5: 6 ulps.
# sin(x), cos(x): llvm.sin.f32 hands v_sin_f32 t = fl(x * fl(1/(2 pi))) turns: off by 2|t| u turns = 2|x| u radians;
#   cos first adds fl(pi/2) to x, off by another (|x| + 2) u. The result is off by as much in absolute terms, so
#   absolute: 4 (|x| + 2) u, plus host_math's 1e-7 near zeros, plus 3 ulps of the result (both sides' rounding).
#   Near a zero of sin/cos the relative error is unbounded, which is why this bound is absolute.
# tanh(x) = +-(1 - t) / (1 + t), t = exp(-2|x|) (tensor/codegen.py): t differs by (3 + 2.5|x|) ulps <= (6 + 5|x|) u t
#   absolute, and (1 + |x|) t <= 1, so by at most 6u; |d tanh / dt| <= 2: 12u, below 2**-20, absolute (near 0,
#   1 - t cancels and ulps mean nothing), plus 3 ulps of the result for the subtraction, addition and division.
# sigmoid(x) = 1 / (exp(-x) + 1): exp(-x)'s relative error (3 + 1.25|x| ulps) passes on at most unchanged
#   (|d log s / d log e| = e / (1 + e) <= 1), plus 1/2 ulp per side for each of the addition and the division:
#   5 + 1.25|x| ulps.
# pow(a, b) = exp2(b * log2|a|) in the IR (tensor/codegen.py): y = b log2|a| differs by |y| (u + 5u) from the two
#   log2s and 2|y| u from the two multiplies, 8|y| u; times ln 2 that is 5.6|y| ulps, plus 3 for the exp2s:
#   3 + 6|y| ulps.
# float16: computed in float32 and rounded once (tensor/codegen.py _float_math). Two float32 results n float32 ulps
#   apart (an ulp of float32 is at most 2**-13 of float16's at the same value) round to float16 results at most
#   1 + ceil(n / 2**13) float16 ulps apart; an absolute float32 bound gains one float16 ulp of the result.

def _ulp_of(x: np.ndarray, dtype: Any) -> np.ndarray:
    """The spacing of `dtype` floats at |x|, as float64."""
    x = np.abs(np.asarray(x, np.float64))
    with np.errstate(all="ignore"):  # the spacing at the largest finite value is inf's distance; NaN has none
        return np.spacing(np.minimum(x, np.finfo(dtype).max).astype(dtype)).astype(np.float64)


U = 2.0 ** -24


def _exp_bound(x, r):
    return 3 + 1.25 * np.abs(x.astype(np.float64)), 0.0


def _log_bound(x, r):
    return 6, 0.0


def _trig_bound(x, r):
    return 0, 4 * (np.abs(x.astype(np.float64)) + 2) * U + 1e-7 + 3 * _ulp_of(r, r.dtype)


def _tanh_bound(x, r):
    return 0, 2.0 ** -20 + 3 * _ulp_of(r, r.dtype)


def _sigmoid_bound(x, r):
    return 5 + 1.25 * np.abs(x.astype(np.float64)), 0.0


def _pow_bound(a, b, r):
    with np.errstate(all="ignore"):
        y = np.abs(b.astype(np.float64) * np.log2(np.abs(a.astype(np.float64))))
    return 3 + 6 * np.nan_to_num(y, nan=0.0, posinf=0.0), 0.0


def _in_float16(bound32: Callable) -> Callable:
    """The float16 version of a float32 bound (see above)."""
    def bound(*args):
        *inputs, r = args
        r32 = r.astype(np.float32)
        ulps32, abs32 = bound32(*[i.astype(np.float32) for i in inputs], r32)
        ulps16 = 1 + np.ceil(np.asarray(ulps32, np.float64) / 2 ** 13)
        abs16 = np.where(np.asarray(abs32) > 0, abs32 + _ulp_of(r, np.float16), 0.0)
        return ulps16, abs16
    return bound


BOUNDS: dict[str, Callable] = {"exp": _exp_bound, "log": _log_bound, "sin": _trig_bound, "cos": _trig_bound,
                               "tanh": _tanh_bound, "sigmoid": _sigmoid_bound}


# --- comparison --------------------------------------------------------------------------------------------------

def _ordered(v: np.ndarray) -> np.ndarray:
    """Float bits mapped to integers that count along the number line (-0.0 and 0.0 both map to 0)."""
    bits = {2: np.uint16, 4: np.uint32}[v.dtype.itemsize]
    width = 8 * v.dtype.itemsize
    u = v.view(bits).astype(np.int64)
    sign = u >> (width - 1)
    mag = u & ((1 << (width - 1)) - 1)
    return np.where(sign == 1, -mag, mag)


def _describe(idx: np.ndarray, inputs: tuple[np.ndarray, ...], isa: np.ndarray, host: np.ndarray) -> str:
    lines = []
    for i in idx[:8]:
        i = tuple(i)
        ins = []
        for a in inputs:
            try:
                ins.append(repr(np.broadcast_to(a, isa.shape)[i]))
            except ValueError:  # a matmul's inputs do not broadcast to its result
                ins.append(f"array{a.shape}")
        bits = (lambda v: f"{v!r} ({v.view(np.uint16 if v.dtype.itemsize == 2 else np.uint32):#x})"
                if isa.dtype.kind == "f" else repr)
        lines.append(f"  at {i}: inputs {', '.join(ins)}: isa {bits(isa[i])}, host {bits(host[i])}")
    return "\n".join(lines)


def assert_same(isa: np.ndarray, host: np.ndarray, inputs: tuple[np.ndarray, ...],
                bound: Optional[Callable] = None, signed_zero: bool = False) -> None:
    """isa equals host: bit for bit (any NaN equals any NaN), or within `bound` (see BOUNDS).
    signed_zero: -0.0 equals 0.0 (max/min, see SIGNED_ZERO_FREE)."""
    assert isa.shape == host.shape and isa.dtype == host.dtype, (isa.shape, isa.dtype, host.shape, host.dtype)
    if isa.dtype.kind != "f":
        bad = isa != host
    else:
        nan_i, nan_h = np.isnan(isa), np.isnan(host)
        if bound is None:
            uint = np.uint16 if isa.dtype.itemsize == 2 else np.uint32
            bits_i, bits_h = isa.view(uint), host.view(uint)
            if signed_zero:
                bits_i, bits_h = np.where(isa == 0, 0, bits_i), np.where(host == 0, 0, bits_h)
            bad = (nan_i != nan_h) | (~nan_i & ~nan_h & (bits_i != bits_h))
        else:
            ulps, absolute = bound(*inputs, host)
            dist = np.abs(_ordered(isa) - _ordered(host))
            with np.errstate(all="ignore"):
                diff = np.abs(isa.astype(np.float64) - host.astype(np.float64))
            both_inf = np.isinf(isa) & (isa == host)
            near = both_inf | (dist <= ulps) | (np.isfinite(diff) & (diff <= absolute))
            bad = (nan_i != nan_h) | (~nan_i & ~nan_h & ~near)
    if bad.any():
        idx = np.argwhere(bad) if bad.ndim else np.zeros((1, 0), int)
        raise AssertionError(f"{int(bad.sum())} of {bad.size} elements differ between the wave executor and the "
                             f"host build:\n{_describe(idx, inputs, isa, host)}")


# --- the cases ---------------------------------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    fn: Callable[..., Any]  # tensors -> tensor
    inputs: tuple[np.ndarray, ...]
    bound: Optional[Callable] = None  # None: bit-exact
    fma: bool = False  # a float matmul: bit-exact only when the host fuses llvm.fmuladd too
    signed_zero: bool = False  # llvm.maxnum/minnum of +-0.0: either zero (see SIGNED_ZERO_FREE)
    marks: tuple = ()


def _maximum(x, y):
    return x.maximum(y)


def _minimum(x, y):
    return x.minimum(y)


# Why max/min compare -0.0 equal to 0.0: the tensor layer's maximum/minimum and max/min reductions lower to
# llvm.maxnum/llvm.minnum (tensor/codegen.py nan_max, compiler/llvm_render.py binop), and LLVM leaves the sign of a
# zero result of those to the target when the operands compare equal (LangRef: "fmax(+0.0, -0.0) returns either
# operand"; the text has gone back and forth, see llvm-project PRs 112852, 168838 and 170067). x86 lowers them to
# maxss/minss plus a NaN select, which picks an operand by position: the host build gives maximum(-0.0, 0.0) = -0.0.
# The wave executor (v_max_f32 on gfx11, v_max_num_f32 on gfx12) gives +0.0 there. Every other bit must agree.
SIGNED_ZERO_FREE = ("maximum", "minimum", "max", "min")

BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
          "floordiv": operator.floordiv, "mod": operator.mod, "maximum": _maximum, "minimum": _minimum,
          "lt": operator.lt, "le": operator.le, "eq": operator.eq, "ne": operator.ne}




def _cases() -> list[Case]:
    cases: list[Case] = []
    # Elementwise binary ops on every pair of edge values, per dtype.
    for dtype in ("float32", "float16", "int32"):
        a, b = pairs(dtype)
        for name, fn in BINARY.items():
            cases.append(Case(f"{name}-{dtype}", fn, (a, b), signed_zero=name in SIGNED_ZERO_FREE))
    a, b = pairs("int32")
    cases += [Case(f"{name}-int32", fn, (a, b)) for name, fn in
              [("and", operator.and_), ("or", operator.or_), ("xor", operator.xor)]]
    cases.append(Case("pow-int32", operator.pow, (a, np.abs(b) % 40)))  # wraps; negative exponents elsewhere
    a, b = pairs("bool")
    cases += [Case(f"{name}-bool", fn, (a, b)) for name, fn in
              [("and", operator.and_), ("or", operator.or_), ("xor", operator.xor), ("add", operator.add),
               ("mul", operator.mul), ("eq", operator.eq), ("lt", operator.lt), ("maximum", _maximum),
               ("floordiv", operator.floordiv), ("mod", operator.mod)]]
    # Mixed dtypes promote inside the kernel (int32 with float32 -> float32, float16 with float32 -> float32).
    fa, fb = pairs("float32")
    ia = np.resize(I32_EDGE, fa.shape)
    ha = np.resize(F16_EDGE, fa.shape)
    cases += [Case("add-int32-float32", operator.add, (ia, fb)), Case("div-int32-float32", operator.truediv, (ia, fb)),
              Case("mul-float16-float32", operator.mul, (ha, fb)), Case("div-int32-int32", operator.truediv,
                                                                        pairs("int32"))]
    # Python scalars become constants in the kernel.
    x32 = with_random("float32")
    cases += [Case("scalar-ops-float32", lambda t: (t * 0.1 + 2.0) / 3.0 - 1e-3, (x32,)),
              Case("rdiv-float32", lambda t: 1.0 / t, (x32,)),
              Case("scalar-ops-int32", lambda t: (t * 7 - 3) // 5 % 11, (with_random("int32"),)),
              Case("scalar-ops-float16", lambda t: t * 0.1 + 2.5, (with_random("float16"),))]
    # Unary ops that IR pins exactly.
    for dtype in ("float32", "float16", "int32"):
        x = with_random(dtype)
        cases += [Case(f"neg-{dtype}", operator.neg, (x,)), Case(f"abs-{dtype}", abs, (x,)),
                  Case(f"relu-{dtype}", lambda t: t.relu(), (x,))]
    cases.append(Case("not-bool", operator.invert, (B_EDGE,)))
    cases.append(Case("not-int32", operator.invert, (I32_EDGE,)))
    cases += [Case(f"sqrt-{dtype}", lambda t: t.sqrt(), (with_random(dtype),)) for dtype in ("float32", "float16")]
    # Casts: saturating float -> int (NaN -> 0), rounding to float16 (overflow to inf, denormals), int -> float.
    for src, dst in [("float32", "int32"), ("float32", "float16"), ("float16", "float32"), ("float16", "int32"),
                     ("int32", "float32"), ("int32", "float16"), ("float32", "bool"), ("int32", "bool"),
                     ("bool", "float32"), ("bool", "int32"), ("float16", "bool"), ("bool", "float16")]:
        x = with_random(src, scale=1e5)
        if src == "float32":
            x = np.concatenate([x, np.array([2.5, -2.5, 65519.0, 65520.0, -65520.0, 2.9802322e-08, 2.98e-08,
                                             3e9, -3e9, 2147483520.0, -2147483648.0, 5.9604645e-08,
                                             1.0009766, 1.00048828125], np.float32)])
        cases.append(Case(f"cast-{src}-{dst}", lambda t, dst=dst: t.cast(dst), (x,)))
    # where, with conditions of every dtype (a NaN condition is true).
    for cdt in ("bool", "int32", "float32"):
        c = with_random(cdt)
        a, b = with_random("float32")[:len(c)], with_random("float32")[::-1][:len(c)]
        cases.append(Case(f"where-{cdt}", lambda c, x, y: Tensor.where(c, x, y), (c, a, b)))
    cases.append(Case("where-int32-values", lambda c, x: Tensor.where(c, x, -1), (I32_EDGE > 0, I32_EDGE)))
    # Views feeding elementwise kernels: permuted, padded, reversed and broadcast index arithmetic.
    v = normals((2, 3, 4))
    cases += [Case("views-permute-pad", lambda t: t.permute(2, 0, 1).pad(((1, 0), (0, 2), (1, 1))) * 2, (v,)),
              Case("views-reverse-slice", lambda t: t[..., ::-2] + t[:, :, 1:2], (v,)),
              Case("broadcast-add", operator.add, (normals((5, 7)), normals((7,))))]
    # Reductions: both of the reduce kernel's strategies (one thread per output below 32 elements, a 64-thread
    # tree at 32 and above), every axis form, NaN and inf inside, int32 sums that wrap, bool counts.
    r57 = normals((5, 7))
    r57[1, 3], r57[3, 0], r57[4, 6] = np.nan, np.inf, -0.0
    wide = normals((3, 1000))
    wide[2, 500] = np.nan
    iw = RNG.integers(INT_MAX // 4, INT_MAX, (4, 40)).astype(np.int32)  # sums wrap
    for axis in (None, 0, 1, (0, 1), -1):
        for op in ("sum", "max", "min", "mean"):
            cases.append(Case(f"{op}-axis{axis}-float32", lambda t, op=op, axis=axis: getattr(t, op)(axis), (r57,),
                              signed_zero=op in SIGNED_ZERO_FREE))
    for op in ("sum", "max", "min", "mean"):
        cases.append(Case(f"{op}-wide-float32", lambda t, op=op: getattr(t, op)(axis=1), (wide,),
                          signed_zero=op in SIGNED_ZERO_FREE))
        cases.append(Case(f"{op}-wide-float16", lambda t, op=op: getattr(t, op)(axis=1),
                          (normals((3, 300), np.float16),), signed_zero=op in SIGNED_ZERO_FREE))
    cases += [Case("sum-wrap-int32", lambda t: t.sum(axis=1), (iw,)),
              Case("max-int32", lambda t: t.max(axis=0), (np.resize(I32_EDGE, (3, 17)),)),
              Case("sum-keepdims-int32", lambda t: t.sum(0, True), (np.resize(I32_EDGE, (40, 3)),)),
              Case("sum-bool", lambda t: t.sum(axis=1), (normals((4, 50)) > 0,))]
    # Matmuls: the small-tile and large-tile kernels, ragged edge tiles, batches, fused producers, float16 and
    # int32 (which wraps), and NaN/inf inside (inf * 0 is NaN).
    for sa, sb in [((5, 7), (7, 3)), ((33, 17), (17, 20)), ((7,), (7, 4)), ((4, 7), (7,)), ((2, 3, 5, 6), (6, 4)),
                   ((2, 1, 5, 6), (3, 6, 2)), ((65, 33), (33, 64)), ((2, 65, 33), (33, 64)), ((70, 45), (45, 130)),
                   ((2, 64, 96), (96, 64))]:
        # (65, 33) @ (33, 64): the edge-tile shape where LLVM 22's MachineSink raced LDS loads past a barrier
        # (compiler/toolchain.py GPU_CODEGEN_OPTIONS); the wave executor's wave order showed it as wrong columns
        cases.append(Case(f"matmul-{sa}x{sb}", operator.matmul, (normals(sa), normals(sb)), fma=True))
    special = normals((6, 9))
    special[0, 0], special[2, 5], special[4, 1], special[5, 8] = np.nan, np.inf, 1e-40, -0.0
    cases += [Case("matmul-specials", operator.matmul, (special, normals((9, 5)) * 1e30), fma=True),
              Case("matmul-fused-producer", lambda x, y: (x * 2 + 1).relu() @ (y - 1), (normals((20, 30)),
                                                                                        normals((30, 24))), fma=True),
              Case("matmul-float16", operator.matmul, (normals((33, 40), np.float16), normals((40, 20), np.float16)),
                   fma=True),
              Case("matmul-int32-wraps", operator.matmul, (RNG.integers(-2 ** 20, 2 ** 20, (9, 12)).astype(np.int32),
                                                           RNG.integers(-2 ** 15, 2 ** 15, (12, 7)).astype(np.int32)))]
    # Transcendentals, within the bounds above. exp's inputs stay where it neither overflows in a way the bound
    # cannot see nor underflows to nothing: the edge values take care of the ends.
    tx = np.concatenate([F32_EDGE, np.linspace(-100, 90, 200, dtype=np.float32), normals(60) * 3,
                         np.array([88.72, 88.73, -87.3, -103.9, -104.0, -149.0, 1e-7, -1e-7], np.float32)])
    pos = np.concatenate([F32_EDGE, np.abs(normals(60)) * 10, np.geomspace(1e-44, 3e38, 200).astype(np.float32),
                          np.linspace(0.5, 2, 61, dtype=np.float32)])
    trig = np.concatenate([F32_EDGE[np.abs(F32_EDGE) < 1e5], np.linspace(-20, 20, 201, dtype=np.float32),
                           normals(60) * 1000, np.float32(np.pi) * np.arange(-8, 9, dtype=np.float32) / 2])
    cases += [Case("exp-float32", lambda t: t.exp(), (tx,), BOUNDS["exp"]),
              Case("log-float32", lambda t: t.log(), (pos,), BOUNDS["log"]),
              Case("sin-float32", lambda t: t.sin(), (trig,), BOUNDS["sin"]),
              Case("cos-float32", lambda t: t.cos(), (trig,), BOUNDS["cos"]),
              Case("tanh-float32", lambda t: t.tanh(), (tx,), BOUNDS["tanh"]),
              Case("sigmoid-float32", lambda t: t.sigmoid(), (tx,), BOUNDS["sigmoid"]),
              Case("exp-int32", lambda t: t.exp(), (np.arange(-60, 60, dtype=np.int32),), BOUNDS["exp"])]
    pa = np.abs(normals(120)) * 4 + 0.05
    pb = normals(120) * 3
    cases.append(Case("pow-float32", operator.pow, (pa, pb), _pow_bound))
    h = np.concatenate([F16_EDGE, np.linspace(-11, 11, 89).astype(np.float16)])
    hpos = np.concatenate([F16_EDGE, np.geomspace(6e-8, 65504, 100).astype(np.float16)])
    for name, x in [("exp", h), ("log", hpos), ("sin", h), ("cos", h), ("tanh", h), ("sigmoid", h)]:
        cases.append(Case(f"{name}-float16", lambda t, name=name: getattr(t, name)(), (x,),
                          _in_float16(BOUNDS[name])))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def machines():
    """Two private emulated machines, gfx1100 and gfx1201 on each: one runs machine code on the wave executor,
    the other the host builds. Opened as tensor devices for this module and closed after it."""
    from compiler.toolchain import lld_missing
    if lld_missing():
        pytest.skip(lld_missing())
    from drivers.amd.kfd import KFDDevice
    from emu.machine import emulated_system
    DEVICES.close()
    isa = emulated_system("amd", TARGETS, private=True, kernels="isa")
    host = emulated_system("amd", TARGETS, private=True, kernels="host")
    try:
        for i, target in enumerate(TARGETS):
            DEVICES.add(ISA_NAMES[target], KFDDevice(i, isa))
            DEVICES.add(HOST_NAMES[target], KFDDevice(i, host))
        for target in TARGETS:
            assert DEVICES[ISA_NAMES[target]].target == DEVICES[HOST_NAMES[target]].target == target
            assert not DEVICES[ISA_NAMES[target]].host_builds and DEVICES[HOST_NAMES[target]].host_builds
        yield
    finally:
        DEVICES.close()


def _host_has_fma() -> bool:
    from compiler.toolchain import host_features
    return "fma" in host_features()


def _run(case: Case, name: str) -> np.ndarray:
    rt = DEVICES[name]
    before = rt.kernels_run
    out = case.fn(*[Tensor(a, name) for a in case.inputs]).numpy()
    assert rt.kernels_run > before, f"{case.id} ran no kernel on {name}: nothing was compared"
    return out


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_wave_executor_matches_host_build(machines, target, case):
    if case.fma and not _host_has_fma():
        pytest.skip("this host has no FMA: its build multiplies and adds where the GPU fuses llvm.fmuladd")
    isa = _run(case, ISA_NAMES[target])
    host = _run(case, HOST_NAMES[target])
    assert_same(isa, host, case.inputs, case.bound, case.signed_zero)


def test_comparison_catches_a_one_ulp_difference_and_equates_nans():
    """The comparison itself: -0.0 is not 0.0, one ulp is a difference, NaNs of any sign and payload are equal,
    a NaN is never equal to a number, and a bound admits exactly what it states."""
    x = np.array([1.0, -0.0, np.nan], np.float32)
    assert_same(x, np.array([1.0, -0.0, -np.nan], np.float32), (x,))
    for other in ([1.0, 0.0, np.nan], [np.nextafter(np.float32(1), np.float32(2)), -0.0, np.nan], [1.0, -0.0, 0.0]):
        with pytest.raises(AssertionError, match="1 of 3 elements differ"):
            assert_same(x, np.array(other, np.float32), (x,))
    two_up = np.array([1.0 + 2 * 2.0 ** -23], np.float32)
    assert_same(two_up, np.array([1.0], np.float32), (two_up,), lambda *_: (2, 0.0))
    with pytest.raises(AssertionError):
        assert_same(two_up, np.array([1.0], np.float32), (two_up,), lambda *_: (1, 0.0))
    tiny = np.array([1e-45, -1e-45], np.float32)  # the two smallest denormals of opposite sign are 2 steps apart
    assert_same(tiny, tiny[::-1].copy(), (tiny,), lambda *_: (2, 0.0))
    with pytest.raises(AssertionError):
        assert_same(tiny, tiny[::-1].copy(), (tiny,), lambda *_: (1, 0.0))
