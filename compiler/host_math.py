"""Float32 exp2, exp, log2, log, sin and cos for the host target, as LLVM IR that the loop vectorizer widens.

Why our own lowering rather than a vector math library: LLVM lowers llvm.exp2/log2/sin/cos on x86 to scalar libm
calls, which the loop vectorizer cannot widen, so a fused elementwise kernel with one transcendental runs one lane at
a time. LLVM can map such calls to a vector library (SLEEF, libmvec) only when that library's symbols are resolvable
where the code is loaded; llvmlite exposes no vector-library option, Debian's libsleef is not among the packages this
project installs, and a host object that needs an outside library would also tie every cached kernel to it. Plain
float arithmetic, integer bit tricks and selects have no such dependency: LLVM's vectorizer widens them like any
arithmetic (16 lanes with AVX-512, 8 with AVX2) and the object file stays self-contained. AMD and NVIDIA keep their
native intrinsics; only the host renderer calls these.

Each function is an internal, always-inlined, branch-free definition; the facts they rely on:
- exp2, exp: x = k + r (exp: x = k*ln 2 + r, ln 2 in two parts so that k*LN2_HI and x - k*LN2_HI are exact) with k an
  integer and |r| <= 1/2 (exp: ln 2 / 2); 2^r or e^r by its Taylor series to degree 7 (remainder below 1e-8
  relative); 2^k applied as two power-of-two factors so results that are subnormal or overflow to inf round once.
  Inputs are clamped first to where every result beyond is 0 or inf; NaN stays NaN.
- log2, log: x = m * 2^e with m in [sqrt(1/2), sqrt(2)) (subnormals scaled by 2^23 first), f = m - 1 exact;
  log(1+f) as f - (f^2/2 - s*(f^2/2 + R(s^2))) with s = f/(2+f) and R the atanh series (2s^2/3 + 2s^4/5 + ...), so
  the largest term f is exact; then e + log(1+f)/ln 2, or e*LN2_HI + (log(1+f) + e*LN2_LO). Of 0: -inf, of
  negatives: NaN, of +inf: +inf.
- sin, cos: n = round(x * 2/pi) and r = x - n*pi/2 computed in double with pi/2 in two parts (Cody-Waite), then sin or
  cos of r (|r| <= pi/4) by Taylor polynomials in float, the quadrant n mod 4 picking which and the sign. Accuracy:
  with FMA (fmuladd fuses) the reduction is exact enough for |x| < 1e15; without FMA for |x| < 1e9. Beyond that
  the reduced argument is clamped to [-1, 1], so results stay in [-1, 1] but are not sin(x). sin/cos of +-inf and NaN
  are NaN.
"""
from __future__ import annotations

import math
import struct
from decimal import Decimal

import numpy as np

FUNCTIONS = ("exp2", "exp", "log2", "log", "sin", "cos")
LN2_HI = round(math.log(2) * 2**16) / 2**16  # 16 significant bits: k * LN2_HI is exact for |k| < 2^8
LN2_LO = math.log(2) - LN2_HI
HALF_PI_DIGITS = "1.570796326794896619231321691639751442098584699687552910487"  # pi/2 to 57 digits


def _f32(v: float) -> str:
    """An LLVM float constant: the hex of a double holding exactly the float32 nearest v."""
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", float(np.float32(v))))[0]


def _f64(v: float) -> str:
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", float(v)))[0]


class _Fn:
    """One helper function's body: numbered values and a line per instruction."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0

    def __call__(self, text: str) -> str:
        self.n += 1
        self.lines.append(f"  %v{self.n} = {text}")
        return f"%v{self.n}"

    def fma(self, ty: str, a: str, b: str, c: str) -> str:
        """a*b + c, fused where the host has FMA."""
        return self(f"call {ty} @llvm.fmuladd.{'f32' if ty == 'float' else 'f64'}({ty} {a}, {ty} {b}, {ty} {c})")

    def horner(self, x: str, coeffs: list[float]) -> str:
        """coeffs[0] + x*(coeffs[1] + x*(...)) in float."""
        acc = _f32(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.fma("float", acc, x, _f32(c))
        return acc

    def add_i32(self, a: str, b: object) -> str:
        return self(f"add i32 {a}, {b}")

    def select(self, cond: str, a: str, b: str, ty: str = "float") -> str:
        return self(f"select i1 {cond}, {ty} {a}, {ty} {b}")

    def define(self, name: str, result: str) -> str:
        body = "\n".join(self.lines)
        return (f"define internal float @{name}(float %x) alwaysinline nounwind willreturn memory(none) {{\n"
                f"{body}\n  ret float {result}\n}}")


def _exp(natural: bool) -> str:
    """exp2 (x = k + r) or exp (x = k*ln 2 + r, ln 2 in two parts so k*LN2_HI is exact and x - k*LN2_HI too)."""
    f = _Fn()
    bound = 110.0 if natural else 160.0  # every result beyond is 0 or inf; keeps k in [-160, 160]
    lo = f(f"fcmp olt float %x, {_f32(bound)}")  # NaN compares false and is clamped too; the last select restores it
    a = f.select(lo, "%x", _f32(bound))
    hi = f(f"fcmp ogt float {a}, {_f32(-bound)}")
    a = f.select(hi, a, _f32(-bound))
    magic = _f32(1.5 * 2**23)  # adding it rounds any |t| < 2^22 to an integer (round half to even)
    t = f(f"fmul float {a}, {_f32(1 / math.log(2))}") if natural else a
    kf = f(f"fsub float {f(f'fadd float {t}, {magic}')}, {magic}")
    if natural:
        r = f(f"fsub float {a}, {f(f'fmul float {kf}, {_f32(LN2_HI)}')}")  # exact: |k| < 2^8, LN2_HI has 16 bits
        r = f.fma("float", f(f"fneg float {kf}"), _f32(LN2_LO), r)
        p = f.horner(r, [1 / math.factorial(i) for i in range(8)])
    else:
        r = f(f"fsub float {a}, {kf}")  # exact: a and kf are within 1/2 of each other
        p = f.horner(r, [math.log(2) ** i / math.factorial(i) for i in range(8)])
    k = f(f"fptosi float {kf} to i32")
    k1 = f(f"ashr i32 {k}, 1")
    k2 = f(f"sub i32 {k}, {k1}")  # k1, k2 in [-80, 80]: each 2^ki is a normal float
    s1, s2 = (f(f"bitcast i32 {f(f'shl i32 {f.add_i32(ki, 127)}, 23')} to float") for ki in (k1, k2))
    y = f(f"fmul float {f(f'fmul float {p}, {s1}')}, {s2}")  # one rounding into the subnormal range or to inf
    return f.define(f".host.{'exp' if natural else 'exp2'}.f32", f.select(f("fcmp uno float %x, 0.0"), "%x", y))


def _log(natural: bool) -> str:
    """log2 or log: x = m * 2^e, then log(m) by the atanh series; log = e*LN2_HI + (log(m) + e*LN2_LO)."""
    f = _Fn()
    small = f(f"fcmp olt float %x, {_f32(2.0 ** -126)}")  # subnormal (or zero, or negative: selected away below)
    xs = f.select(small, f(f"fmul float %x, {_f32(2.0 ** 23)}"), "%x")
    bits = f(f"bitcast float {xs} to i32")
    e = f.add_i32(f(f"and i32 {f(f'lshr i32 {bits}, 23')}, 255"), -127)
    e = f(f"add i32 {e}, {f.select(small, '-23', '0', 'i32')}")
    mbits = f(f"or i32 {f(f'and i32 {bits}, 8388607')}, 1065353216")  # the exponent of 1.0
    m = f(f"bitcast i32 {mbits} to float")  # the mantissa, in [1, 2)
    big = f(f"fcmp ogt float {m}, {_f32(math.sqrt(2))}")
    m = f.select(big, f(f"fmul float {m}, 0.5"), m)
    e = f(f"add i32 {e}, {f(f'zext i1 {big} to i32')}")
    fr = f(f"fsub float {m}, 1.0")  # exact for m in [1/2, 2]
    s = f(f"fdiv float {fr}, {f(f'fadd float {fr}, 2.0')}")
    z = f(f"fmul float {s}, {s}")
    big_r = f(f"fmul float {z}, {f.horner(z, [2 / (2 * i + 3) for i in range(5)])}")  # 2z/3 + 2z^2/5 + ... + 2z^5/11
    hfsq = f(f"fmul float {f(f'fmul float {fr}, {fr}')}, 0.5")
    tail = f(f"fmul float {s}, {f(f'fadd float {hfsq}, {big_r}')}")
    ln = f(f"fsub float {fr}, {f(f'fsub float {hfsq}, {tail}')}")  # log(m), its largest term fr exact
    ef = f(f"sitofp i32 {e} to float")
    if natural:
        y = f(f"fadd float {f(f'fmul float {ef}, {_f32(LN2_HI)}')}, {f.fma('float', ef, _f32(LN2_LO), ln)}")
    else:
        y = f.fma("float", ln, _f32(1 / math.log(2)), ef)
    y = f.select(f("fcmp oeq float %x, 0x7FF0000000000000"), "0x7FF0000000000000", y)
    y = f.select(f("fcmp oeq float %x, 0.0"), "0xFFF0000000000000", y)  # -0.0 too, as numpy
    y = f.select(f("fcmp olt float %x, 0.0"), "0x7FF8000000000000", y)
    return f.define(f".host.{'log' if natural else 'log2'}.f32", f.select(f("fcmp uno float %x, 0.0"), "%x", y))


def _sincos(cos: bool) -> str:
    f = _Fn()
    xd = f("fpext float %x to double")
    t = f(f"fmul double {xd}, {_f64(2 / math.pi)}")
    magic = _f64(1.5 * 2**52)  # adding it rounds |t| < 2^51 to an integer whose low bits are n's
    tm = f(f"fadd double {t}, {magic}")
    n = f(f"fsub double {tm}, {magic}")
    neg_n = f(f"fneg double {n}")
    c1 = math.pi / 2  # the double nearest pi/2, then the double nearest what it misses of pi/2
    c2 = float(Decimal(HALF_PI_DIGITS) - Decimal(c1))
    r = f.fma("double", neg_n, _f64(c1), xd)
    r = f.fma("double", neg_n, _f64(c2), r)
    rf = f(f"fptrunc double {r} to float")
    # |r| <= pi/4 plus rounding; the clamp only matters past the accurate range, where it keeps results in [-1, 1].
    rf = f.select(f(f"fcmp olt float {rf}, 1.0"), rf, "1.0")
    rf = f.select(f(f"fcmp ogt float {rf}, -1.0"), rf, "-1.0")
    q = f(f"trunc i64 {f(f'bitcast double {tm} to i64')} to i32")
    if cos:
        q = f(f"add i32 {q}, 1")  # cos(x) = sin(x + pi/2): one quadrant on
    z = f(f"fmul float {rf}, {rf}")
    sin_tail = f.horner(z, [(-1) ** (i + 1) / math.factorial(2 * i + 3) for i in range(4)])  # -1/3! + z/5! - ...
    sin_r = f.fma("float", f(f"fmul float {rf}, {z}"), sin_tail, rf)
    cos_r = f.horner(z, [(-1) ** i / math.factorial(2 * i) for i in range(6)])
    odd = f(f"icmp ne i32 {f(f'and i32 {q}, 1')}, 0")
    v = f.select(odd, cos_r, sin_r)
    negate = f(f"icmp ne i32 {f(f'and i32 {q}, 2')}, 0")
    v = f.select(negate, f(f"fneg float {v}"), v)
    if not cos:
        v = f.select(f("fcmp oeq float %x, 0.0"), "%x", v)  # sin(-0.0) is -0.0; the polynomial's -0 + +0 gives +0
    bad = f("fsub float %x, %x")  # NaN for +-inf and NaN, 0 otherwise
    name = ".host.cos.f32" if cos else ".host.sin.f32"
    return f.define(name, f.select(f(f"fcmp uno float {bad}, 0.0"), bad, v))


def definition(op: str) -> str:
    """The LLVM IR definition of the host's float32 `op` (one of FUNCTIONS), named @.host.<op>.f32."""
    if op not in FUNCTIONS:
        raise ValueError(f"no host math lowering for {op!r}; there is one for {', '.join(FUNCTIONS)}")
    makers = {"exp2": lambda: _exp(False), "exp": lambda: _exp(True), "log2": lambda: _log(False),
              "log": lambda: _log(True), "sin": lambda: _sincos(False), "cos": lambda: _sincos(True)}
    return makers[op]()


DECLARATIONS = ("declare float @llvm.fmuladd.f32(float, float, float)",
                "declare double @llvm.fmuladd.f64(double, double, double)")
