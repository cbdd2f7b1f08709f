"""Instruction-bound ALU functions: `compile_vector` / `compile_scalar` resolve once, when the wave executor binds an
instruction, everything `alu.vector` / `alu.scalar` look up on every call (the op's table entry, operand types,
which modifiers are set, the float mode, the NaN rules), and return a function doing only the per-lane numpy work.

The hot ops of our compiler's kernels get hand-written paths for the plain case (no abs/neg/clamp/omod, a float mode
that does not flush); every other case runs a bound copy of the reference pipeline. Both must agree bit for bit with
`alu.vector` / `alu.scalar` (tests/emu/isa/test_alu_compiled.py checks every op of both tables).

Contract of the bound functions (what the executor hands them, no conversions are made): sources are arrays of one
shape (lanes,): uint32 for 32- and 16-bit operands, uint64 for 64-bit ones, bool for lane masks. A result may share
memory with a source (v_mov_b32 returns its source): write it away before a source changes. numpy floating-point
warnings are the caller's to silence (the wave executor runs under np.errstate(all="ignore")).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from emu.amd.isa import alu
from emu.amd.isa import alu_fp as fp
from emu.amd.isa import alu_sops as sops
from emu.amd.isa import alu_vops as vops
from emu.amd.isa.alu import VResult, SResult, _W16, _W64, _NP
from emu.amd.isa.alu_fp import FloatMode
from emu.amd.isa.instr import Instr

U16, U32, U64, I16, I32, I64 = np.uint16, np.uint32, np.uint64, np.int16, np.int32, np.int64
F16, F32, F64 = np.float16, np.float32, np.float64
M32 = 0xFFFFFFFF
_dot = np.dot

VFn = Callable[[list], VResult]


# ---- source decoding, bound -----------------------------------------------------------------------------------------

def _decoder(t: str, hi: bool, negate: bool, absolute: bool) -> Callable[[np.ndarray], np.ndarray]:
    """alu._decode with its arguments fixed: a view where no bits change."""
    if t == "mask":
        return lambda r: r
    nt = _NP[t]
    if t in _W16:
        base = (lambda r: (r >> 16).astype(U16)) if hi else (lambda r: r.astype(U16))
        width = 16
    else:
        base, width = None, 64 if t in _W64 else 32
    if t[0] in "fb" and (negate or absolute):
        ut = {16: U16, 32: U32, 64: U64}[width]
        sign = ut(1 << (width - 1))
        keep = ut(~(1 << (width - 1)) & ((1 << width) - 1))
        b0 = base or (lambda r: r)

        def signed(r: np.ndarray) -> np.ndarray:
            b = b0(r)
            if absolute:
                b = b & keep
            if negate:
                b = b ^ sign
            return b.view(nt)
        return signed
    if base is None:
        return lambda r: r.view(nt)
    return lambda r: base(r).view(nt)


def _mix_decoder(i: int, f: dict) -> Callable[[np.ndarray], np.ndarray]:
    return lambda r: alu._mix_source(r, i, f)


def _encoder(t: str) -> Callable[[Any, int], np.ndarray]:
    """alu._encode, with the common dtypes turned into views."""
    if t in fp.FLOAT:
        ft, ut = fp.FLOAT[t][0], fp.FLOAT[t][1]

        def enc_f(v: Any, lanes: int) -> np.ndarray:
            if type(v) is np.ndarray and v.dtype == ft and v.shape == (lanes,):
                b = v.view(ut)
                return b.astype(U32) if t == "f16" else b
            return alu._encode(v, t, lanes)
        return enc_f
    if t in _W64:
        def enc_64(v: Any, lanes: int) -> np.ndarray:
            if type(v) is np.ndarray and v.shape == (lanes,):
                if v.dtype == U64:
                    return v
                if v.dtype == I64:
                    return v.view(U64)
            return alu._encode(v, t, lanes)
        return enc_64
    if t in _W16:
        def enc_16(v: Any, lanes: int) -> np.ndarray:
            if type(v) is np.ndarray and v.shape == (lanes,):
                if v.dtype == U16:
                    return v.astype(U32)
                if v.dtype == I16:
                    return v.view(U16).astype(U32)
            return alu._encode(v, t, lanes)
        return enc_16

    def enc_32(v: Any, lanes: int) -> np.ndarray:
        if type(v) is np.ndarray and v.shape == (lanes,):
            dt = v.dtype
            if dt == U32:
                return v
            if dt == I32:
                return v.view(U32)
            if dt == I64 or dt == U64:
                return v.astype(U32)  # modulo 2**32, as the reference's & 0xFFFFFFFF
        return alu._encode(v, t, lanes)
    return enc_32


def _has_nan(r: np.ndarray) -> bool:
    """Any NaN lane: a sum of squares is NaN exactly when a lane is (squares are never negative, so inf - inf
    cannot happen), and np.dot is the cheapest reduction numpy has for a few dozen lanes."""
    x = _dot(r, r) if r.ndim == 1 else np.isnan(r).any()
    return bool(x != x) if r.ndim == 1 else bool(x)


# ---- the bound reference pipeline -----------------------------------------------------------------------------------

def _generic(ins: Instr, op: str, spec: vops.VOp, mode: FloatMode) -> VFn:
    """alu.vector for one instruction with every per-call decision taken here."""
    f = ins.fields
    if spec.packed:
        return lambda src: alu.vector(ins, src, mode)  # VOP3P packed halves: rare, the reference as it is
    opsel, neg, abs_ = f.get("opsel", 0), f.get("neg", 0), f.get("abs", 0)
    nsrc = len(spec.src)
    if op in vops.MIX_OPS:
        decs = [_mix_decoder(i, f) for i in range(nsrc)]
    else:
        decs = [_decoder(t, bool(opsel >> i & 1), bool(neg >> i & 1), bool(abs_ >> i & 1))
                for i, t in enumerate(spec.src)]
    arith = spec.arith
    flush_in = bool(arith) and mode.flushes(arith)
    ft = fp.FLOAT[arith][0] if arith else None
    clamp = bool(f.get("clamp", 0))
    fn = spec.fn
    ctxs: dict[int, vops.Ctx] = {}
    hi = spec.dst[0] in _W16 and (op == "v_fma_mixhi_f16" or bool(opsel >> 3 & 1))
    outs: list[tuple[str, Any]] = []
    post_needed = False
    for t in spec.dst:
        if t == "mask":
            outs.append((t, None))
        else:
            post_needed = post_needed or bool(arith and t == arith)
            outs.append((t, _encoder(t)))
    own_nan = spec.name.startswith(alu._OWN_NAN)
    omod = f.get("omod", 0) if not mode.ieee else 0
    flush_out = bool(arith) and mode.flushes(arith)
    single = len(spec.dst) == 1
    n = nsrc

    def post(r: Any, args: list) -> np.ndarray:
        """alu._post_float, bound."""
        if type(r) is not np.ndarray or r.dtype != ft:
            r = np.asarray(r).astype(ft)
        if not own_nan and _has_nan(r):
            r = fp.fix_nan(r, arith, [a for a in args if a.dtype == ft])
        if omod:
            r = fp.fix_nan((r.astype(np.float64) * {1: 2.0, 2: 4.0, 3: 0.5}[omod]).astype(ft), arith, [r])
        if clamp:
            nan = np.isnan(r)
            r = np.where(r > 1, ft(1), np.where(r > 0, r, ft(0)))
            r = np.where(nan, ft(0) if mode.dx10_clamp else r, r).astype(ft)
        if flush_out:
            r = fp.flush_vals(r, arith)
        return r

    def run(src: list) -> VResult:
        if len(src) != n:
            return alu.vector(ins, src, mode)  # the reference's error message
        lanes = len(src[0]) if n else 1
        ctx = ctxs.get(lanes)
        if ctx is None:
            ctx = ctxs[lanes] = vops.Ctx(ins, mode, clamp, lanes)
        args = [d(s) for d, s in zip(decs, src)]
        if flush_in:
            args = [fp.flush_vals(a, arith) if a.dtype == ft else a for a in args]
        out = fn(ctx, *args)
        if single:
            t, enc = outs[0]
            if enc is None:
                m = np.asarray(out, bool)
                return VResult(None, m if m.shape == (lanes,) else np.broadcast_to(m, (lanes,)).copy(), hi)
            return VResult(enc(post(out, args) if post_needed else out, lanes), None, hi)
        d = mask = None
        for (t, enc), v in zip(outs, out):
            if enc is None:
                mask = np.asarray(v, bool)
                if mask.shape != (lanes,):
                    mask = np.broadcast_to(mask, (lanes,)).copy()
            else:
                d = enc(post(v, args) if arith and t == arith else v, lanes)
        return VResult(d, mask, hi)
    return run


# ---- hand-written paths for the hot ops (plain case only) -------------------------------------------------------------

_FAST: dict[str, Callable[..., VFn | None]] = {}


def _fast(*names: str) -> Callable:
    def reg(builder: Callable) -> Callable:
        for nm in names:
            _FAST[nm] = builder
        return builder
    return reg


def _src16(hi: bool) -> Callable[[np.ndarray], np.ndarray]:
    return (lambda r: (r >> 16).astype(U16).view(F16)) if hi else (lambda r: r.astype(U16).view(F16))


def _fbin(ufunc: Any, swap: bool) -> Callable:
    """f16/f32 add/sub/subrev/mul: numpy's own f32 op rounds exactly as the reference's f64 op rounded to f32
    (double rounding is innocuous for + - * when 53 >= 2*24 + 2), numpy's f16 ops compute in f32 and round once
    more (24 >= 2*11 + 2); NaN lanes go through the reference's fix_nan."""
    def build(op: str, spec: vops.VOp, mode: FloatMode, his: tuple, hi_dst: bool, slow: VFn) -> VFn | None:
        kind = spec.arith
        if kind == "f32":
            def f32fn(src: list) -> VResult:
                a, b = src[0].view(F32), src[1].view(F32)
                r = ufunc(b, a) if swap else ufunc(a, b)
                x = _dot(r, r)
                if x != x:
                    r = fp.fix_nan(r, "f32", [a, b])
                return VResult(r.view(U32), None)
            return f32fn
        if kind == "f16":
            da, db = _src16(his[0]), _src16(his[1])

            def f16fn(src: list) -> VResult:
                a, b = da(src[0]), db(src[1])
                r = ufunc(b, a) if swap else ufunc(a, b)
                if _has_nan(r):
                    r = fp.fix_nan(r, "f16", [a, b])
                return VResult(r.view(U16).astype(U32), None, hi_dst)
            return f16fn
        return None
    return build


_fast("v_add_f32", "v_add_f16")(_fbin(np.add, False))
_fast("v_sub_f32", "v_sub_f16")(_fbin(np.subtract, False))
_fast("v_subrev_f32", "v_subrev_f16")(_fbin(np.subtract, True))
_fast("v_mul_f32", "v_mul_f16")(_fbin(np.multiply, False))


@_fast("v_fma_f32", "v_fmac_f32", "v_fmamk_f32", "v_fmaak_f32")
def _b_fma(op, spec, mode, his, hi_dst, slow):
    """fma with one rounding: the f32 product is exact in f64 and so is the sum unless its bits run past 53; the
    cast to f32 then only rounds wrongly where the f64 sum sits exactly on an f32 rounding midpoint. A midpoint (and
    any NaN, inf or zero) has its low 28 f64 mantissa bits clear: those calls take the reference's exact path."""
    def fn(src: list) -> VResult:
        s = np.multiply(src[0].view(F32), src[1].view(F32), dtype=F64)
        s += src[2].view(F32)
        if np.count_nonzero(s.view(U64) & 0x0FFFFFFF) != len(s):
            return slow(src)
        return VResult(s.astype(F32).view(U32), None)
    return fn


def _minmax_builder(is_max: bool) -> Callable:
    def build(op, spec, mode, his, hi_dst, slow):
        """No NaN input: the ordinary max/min, and of two equal operands (+0 and -0) max takes +0, min -0 (the ISA's
        GT_NEG_ZERO / LT_NEG_ZERO): max gives the AND of their bits, min the OR. A NaN input (np.dot(a, b) is NaN,
        or an inf times 0: then the exact path runs needlessly) takes the reference's NaN rules."""
        kind = spec.arith
        pick = np.maximum if is_max else np.minimum
        join = np.bitwise_and if is_max else np.bitwise_or
        if kind == "f32":
            def f32fn(src: list) -> VResult:
                ab, bb = src[0], src[1]
                a, b = ab.view(F32), bb.view(F32)
                x = _dot(a, b)
                if x != x:
                    return slow(src)
                return VResult(np.where(a == b, join(ab, bb), pick(a, b).view(U32)), None)
            return f32fn
        if kind == "f16":
            da, db = _src16(his[0]), _src16(his[1])

            def f16fn(src: list) -> VResult:
                a, b = da(src[0]), db(src[1])
                if _has_nan(a) or _has_nan(b):
                    return slow(src)
                ab, bb = a.view(U16), b.view(U16)
                r = np.where(a == b, join(ab, bb), pick(a, b).view(U16))
                return VResult(r.astype(U32), None, hi_dst)
            return f16fn
        return None
    return build


for _k in ("f32", "f16"):
    for _mx, _nm in ((True, "max"), (False, "min")):
        for _v in (f"v_{_nm}_{_k}", f"v_{_nm}_num_{_k}", f"v_{_nm}imum_{_k}"):
            _FAST[_v] = _minmax_builder(_mx)


@_fast("v_cvt_f32_f16")
def _b_cvt_f32_f16(op, spec, mode, his, hi_dst, slow):
    d0 = _src16(his[0])

    def fn(src: list) -> VResult:
        r = d0(src[0]).astype(F32)
        x = _dot(r, r)
        if x != x:
            return slow(src)  # NaN payloads: the reference's conversion
        return VResult(r.view(U32), None)
    return fn


@_fast("v_cvt_f16_f32")
def _b_cvt_f16_f32(op, spec, mode, his, hi_dst, slow):
    def fn(src: list) -> VResult:
        a = src[0].view(F32)
        x = _dot(a, a)
        if x != x:
            return slow(src)
        return VResult(a.astype(F16).view(U16).astype(U32), None, hi_dst)
    return fn


def _simple(fn: Callable[..., np.ndarray]) -> Callable:
    """An op whose plain case is one expression on the raw uint32/uint64 sources."""
    def build(op, spec, mode, his, hi_dst, slow):
        if len(spec.src) == 1:
            return lambda src: VResult(fn(src[0]), None)
        if len(spec.src) == 2:
            return lambda src: VResult(fn(src[0], src[1]), None)
        return lambda src: VResult(fn(src[0], src[1], src[2]), None)
    return build


def _with_mask(fn: Callable[..., tuple]) -> Callable:
    def build(op, spec, mode, his, hi_dst, slow):
        if len(spec.src) == 2:
            def two(src: list) -> VResult:
                d, m = fn(src[0], src[1])
                return VResult(d, m)
            return two

        def three(src: list) -> VResult:
            d, m = fn(src[0], src[1], src[2])
            return VResult(d, m)
        return three
    return build


def _add_co(a, b):
    d = a + b
    return d, d < a


def _addc_ci(a, b, c):
    t = a.astype(U64)
    t += b
    t += c
    return t.astype(U32), t > M32


def _subc_ci(a, b, c):
    t = a.astype(I64)
    t -= b
    t -= c
    return t.astype(U32), t < 0


def _mad_u64(a, b, c):
    p = a.astype(U64)
    p *= b
    s = p + c
    return s, s < p


_NOCLAMP = {  # ops that saturate under clamp: the fast form is the clamp-off one (clamp takes the bound reference)
    "v_mov_b32": lambda a: a, "v_not_b32": lambda a: ~a,
    "v_and_b32": lambda a, b: a & b, "v_or_b32": lambda a, b: a | b, "v_xor_b32": lambda a, b: a ^ b,
    "v_xnor_b32": lambda a, b: ~(a ^ b),
    "v_add_nc_u32": lambda a, b: a + b, "v_sub_nc_u32": lambda a, b: a - b, "v_subrev_nc_u32": lambda a, b: b - a,
    "v_lshlrev_b32": lambda s, x: x << (s & 31), "v_lshrrev_b32": lambda s, x: x >> (s & 31),
    "v_ashrrev_i32": lambda s, x: (x.view(I32) >> (s & 31).view(I32)).view(U32),
    "v_lshlrev_b64": lambda s, x: x << (s & 63).astype(U64), "v_lshrrev_b64": lambda s, x: x >> (s & 63).astype(U64),
    "v_ashrrev_i64": lambda s, x: (x.view(I64) >> (s & 63).astype(I64)).view(U64),
    "v_lshl_or_b32": lambda a, s, c: (a << (s & 31)) | c, "v_lshl_add_u32": lambda a, s, c: (a << (s & 31)) + c,
    "v_add_lshl_u32": lambda a, b, s: (a + b) << (s & 31), "v_add3_u32": lambda a, b, c: a + b + c,
    "v_xad_u32": lambda a, b, c: (a ^ b) + c, "v_and_or_b32": lambda a, b, c: (a & b) | c,
    "v_or3_b32": lambda a, b, c: a | b | c, "v_xor3_b32": lambda a, b, c: a ^ b ^ c,
    "v_mul_lo_u32": lambda a, b: a * b,
    "v_mul_hi_u32": lambda a, b: ((a.astype(U64) * b) >> 32).astype(U32),
    "v_mul_u32_u24": lambda a, b: (a & 0xFFFFFF) * (b & 0xFFFFFF),
    "v_bfe_u32": lambda x, o, w: (x >> (o & 31)) & ((1 << (w & 31)) - 1),
    "v_max_u32": np.maximum, "v_min_u32": np.minimum,
    "v_max_i32": lambda a, b: np.maximum(a.view(I32), b.view(I32)).view(U32),
    "v_min_i32": lambda a, b: np.minimum(a.view(I32), b.view(I32)).view(U32),
    "v_cndmask_b32": lambda a, b, m: np.where(m, b, a),
    "v_cvt_f32_u32": lambda a: a.astype(F32).view(U32), "v_cvt_f32_i32": lambda a: a.view(I32).astype(F32).view(U32),
}
for _nm, _f in _NOCLAMP.items():
    _FAST[_nm] = _simple(_f)
_fast("v_add_co_u32")(_with_mask(_add_co))
_fast("v_sub_co_u32")(_with_mask(lambda a, b: (a - b, b > a)))
_fast("v_subrev_co_u32")(_with_mask(lambda a, b: (b - a, a > b)))
_fast("v_add_co_ci_u32")(_with_mask(_addc_ci))
_fast("v_sub_co_ci_u32")(_with_mask(_subc_ci))
_fast("v_subrev_co_ci_u32")(_with_mask(lambda a, b, c: _subc_ci(b, a, c)))
_fast("v_mad_u64_u32", "v_mad_co_u64_u32")(_with_mask(_mad_u64))

_CMP_UFUNC = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal, "eq": np.equal,
              "ne": np.not_equal, "lg": np.not_equal, "neq": np.not_equal}
_VIEW = {"f32": F32, "i32": I32, "u32": None, "f64": F64, "i64": I64, "u64": None}


def _cmp_builder(op, spec, mode, his, hi_dst, slow):
    _, _, c, t = op.split("_", 3)
    uf = _CMP_UFUNC.get(c)
    if uf is None or t not in _VIEW or (c == "lg" and t[0] == "f"):
        return None  # lg on floats is "ordered and not equal": the table's own function
    vt = _VIEW[t]
    if vt is None:
        return lambda src: VResult(None, uf(src[0], src[1]))
    return lambda src: VResult(None, uf(src[0].view(vt), src[1].view(vt)))


for _nm in vops.TABLE:
    if _nm.startswith(("v_cmp_", "v_cmpx_")) and not _nm.startswith(("v_cmp_class", "v_cmpx_class")):
        _FAST[_nm] = _cmp_builder


def compile_vector(ins: Instr, mode: FloatMode | None = None) -> VFn:
    """`alu.vector(ins, src, mode)` as a function of `src` alone (see the module docstring for its contract)."""
    mode = mode or alu._DEFAULT_MODE
    op = alu._base(ins.op)
    spec = vops.TABLE.get(op)
    if spec is None:
        raise NotImplementedError(f"instruction {ins.op} at pc {ins.pc:#x} is not emulated: no VALU semantics for "
                                  f"{op} in emu/amd/isa/alu_vops.py")
    slow = _generic(ins, op, spec, mode)
    builder = _FAST.get(op)
    if builder is None or spec.packed:
        return slow
    f = ins.fields
    if f.get("neg", 0) or f.get("abs", 0) or f.get("clamp", 0) or f.get("neg_hi", 0):
        return slow
    if spec.arith and ((f.get("omod", 0) and not mode.ieee) or mode.flushes(spec.arith)):
        return slow
    opsel = f.get("opsel", 0)
    his = tuple(bool(opsel >> i & 1) for i in range(len(spec.src)))  # only 16-bit sources look at their bit
    hi_dst = spec.dst[0] in _W16 and bool(opsel >> 3 & 1)
    fn = builder(op, spec, mode, his, hi_dst, slow)
    return slow if fn is None else fn


# ---- SALU ------------------------------------------------------------------------------------------------------------

SFn = Callable[[list, bool, int], SResult]


def _nz32(d: int) -> SResult:
    d &= M32
    return SResult(d, d != 0)


def _s32(x: int) -> int:
    return x - (1 << 32) if x >> 31 else x


def _sadd_i(a: int, b: int) -> SResult:
    t = _s32(a & M32) + _s32(b & M32)
    return SResult(t & M32, not -(1 << 31) <= t < (1 << 31))


def _ssub_i(a: int, b: int) -> SResult:
    t = _s32(a & M32) - _s32(b & M32)
    return SResult(t & M32, not -(1 << 31) <= t < (1 << 31))


_SFAST: dict[str, Callable[..., SResult]] = {
    "s_mov_b32": lambda src, scc, ex: SResult(src[0] & M32, None),
    "s_mov_b64": lambda src, scc, ex: SResult(src[0] & sops.M64, None),
    "s_and_b32": lambda src, scc, ex: _nz32(src[0] & src[1]),
    "s_or_b32": lambda src, scc, ex: _nz32(src[0] | src[1]),
    "s_xor_b32": lambda src, scc, ex: _nz32(src[0] ^ src[1]),
    "s_lshl_b32": lambda src, scc, ex: _nz32((src[0] & M32) << (src[1] & 31)),
    "s_lshr_b32": lambda src, scc, ex: _nz32((src[0] & M32) >> (src[1] & 31)),
    "s_ashr_i32": lambda src, scc, ex: _nz32(_s32(src[0] & M32) >> (src[1] & 31)),
    "s_cselect_b32": lambda src, scc, ex: SResult((src[0] if scc else src[1]) & M32, None),
    "s_mul_i32": lambda src, scc, ex: SResult((_s32(src[0] & M32) * _s32(src[1] & M32)) & M32, None),
    "s_add_i32": lambda src, scc, ex: _sadd_i(src[0], src[1]),
    "s_add_co_i32": lambda src, scc, ex: _sadd_i(src[0], src[1]),
    "s_sub_i32": lambda src, scc, ex: _ssub_i(src[0], src[1]),
    "s_sub_co_i32": lambda src, scc, ex: _ssub_i(src[0], src[1]),
}
for _nm in ("s_add_u32", "s_add_co_u32"):
    _SFAST[_nm] = lambda src, scc, ex: (lambda t: SResult(t & M32, t >> 32 != 0))((src[0] & M32) + (src[1] & M32))
for _c, _f in (("eq", int.__eq__), ("lg", int.__ne__), ("gt", int.__gt__), ("ge", int.__ge__), ("lt", int.__lt__),
               ("le", int.__le__)):
    _SFAST[f"s_cmp_{_c}_u32"] = lambda src, scc, ex, f=_f: SResult(None, f(src[0] & M32, src[1] & M32))
    _SFAST[f"s_cmp_{_c}_i32"] = lambda src, scc, ex, f=_f: SResult(None, f(_s32(src[0] & M32), _s32(src[1] & M32)))


def compile_scalar(ins: Instr, wave64: bool, mode: FloatMode | None = None) -> SFn:
    """`alu.scalar(ins, src, scc, exec, wave64, mode)` as a function of (src, scc, exec)."""
    op = alu._base(ins.op)
    if op in sops.FLOAT_OPS:
        return _scalar_float(ins, op, mode)
    spec = sops.TABLE.get(op)
    if spec is None:
        raise NotImplementedError(f"instruction {ins.op} at pc {ins.pc:#x} is not emulated: no SALU semantics for "
                                  f"{op} in emu/amd/isa/alu_sops.py")
    n = len(spec.src)
    fast = _SFAST.get(op)
    if fast is not None:
        return fast
    widths = tuple((1 << (64 if t in _W64 else 32)) - 1 for t in spec.src)
    emask = (1 << (64 if wave64 else 32)) - 1
    simm = int(ins.fields.get("simm16", 0))
    dmask = (1 << (64 if spec.dst in _W64 else 32)) - 1
    nodst, fn = spec.dst == "none", spec.fn

    def run(src: list, scc: bool, ex: int) -> SResult:
        if len(src) != n:
            return alu.scalar(ins, src, scc, ex, wave64, mode)  # the reference's error
        out = fn(sops.SCtx(bool(scc), int(ex) & emask, wave64, simm), *[int(v) & m for v, m in zip(src, widths)])
        d = None if out[0] is None or nodst else int(out[0]) & dmask
        return SResult(d, None if out[1] is None else bool(out[1]), None if len(out) < 3 else int(out[2]))
    return run


def _scalar_float(ins: Instr, op: str, mode: FloatMode | None) -> SFn:
    vop, opsel = sops.FLOAT_OPS[op]
    vf = compile_vector(Instr(op=vop, enc="VOP3", size=ins.size, pc=ins.pc, fields={"opsel": opsel * 0b111}), mode)
    kinds = [(U64, (1 << 64) - 1) if t in _W64 else (U32, M32) for t in vops.TABLE[vop].src]
    n = len(kinds)

    def run(src: list, scc: bool, ex: int) -> SResult:
        if len(src) != n:
            return alu.scalar(ins, src, scc, ex, False, mode)
        r = vf([np.array([int(v) & m], dt) for v, (dt, m) in zip(src, kinds)])
        if r.mask is not None and r.d is None:
            return SResult(None, bool(r.mask[0]))
        return SResult(int(r.d[0]), None)
    return run
