"""Kernel IR for scheduled work: elementwise, reduction and tiled matmul kernels over fused expressions.

A kernel computes one node. Everything under it that is not a realized buffer (elementwise ops, constants and
movement ops) is evaluated inline at the index the kernel needs, so views never copy and chains of elementwise
ops fuse into the loads of whatever kernel consumes them. Realized buffers are contiguous and row-major.

numpy semantics the expressions keep: maximum/minimum/max propagate NaN; relu(NaN) is NaN; bool is stored
as int32 0/1; integer sums stay int32 (numpy would widen to int64); `//` floors and `%` has the divisor's sign
(npy_divmod's steps for floats; integer division by zero gives 0); `**` on int32 wraps.
"""
from __future__ import annotations

import math
from functools import lru_cache, reduce
from typing import Any, Callable, Optional

from compiler import ir
from tensor import dtypes
from tensor.lazy import LazyNode, prod, walk

EWISE_LOCAL = 64  # threads per workgroup for elementwise kernels
REDUCE_LOCAL = 64  # threads that share one output of a reduction (a power of two: tree reduction)
SERIAL_REDUCE = 32  # reductions of fewer elements than this run one thread per output
# Large matmuls on GPUs: (BM, BN, BK, VM, VN) = a BM x BN block of C per workgroup of (BN/VN) x (BM/VM) threads, K
# staged BK at a time, VM x VN outputs per thread (64 x 64 blocks, 4 rows per thread).
BIG_TILES = (64, 64, 16, 4, 1)
# The host (host_matmul_kernel): a 128 x 64 block of C, B staged 128 rows of K at a time; a row of 16 threads is one
# 16-wide vector, VN = 4 of them per row and VM = 4 rows: 16 of the 32 vector registers hold accumulators. Without
# AVX-512 (16 registers, 8 wide): 4 rows of 3 vectors. The best of the shapes measured on a Zen 4 core (the AVX2
# set built without AVX-512 there): ~100 GFLOPS on one thread from 512 up, 90% of its peak.
HOST_MM_TILES = {True: (128, 64, 128, 4, 4), False: (128, 24, 128, 4, 3)}  # keyed by "has AVX-512"
HOST_MM_BK_STAGED_A = 32  # K rows per step when A is staged too (both panels in the 64 KiB of local memory)
TILE = 16  # matmul tile edge: (TILE, TILE) threads, two TILE x TILE tiles in local memory



def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _c(v: int) -> ir.Expr:
    return ir.Const(int(v), ir.i32)


def _add(a: ir.Expr, b: int | ir.Expr) -> ir.Expr:
    if isinstance(b, int):
        return a if b == 0 else a + b
    return b if isinstance(a, ir.Const) and a.value == 0 else a + b


def _mul(a: ir.Expr, c: int) -> ir.Expr:
    return _c(0) if c == 0 else a if c == 1 else a * c


def strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def linear(idx: tuple[ir.Expr, ...], shape: tuple[int, ...]) -> ir.Expr:
    """Row-major offset of a multi-index; size-1 axes contribute nothing."""
    out: ir.Expr = _c(0)
    for i, s, n in zip(idx, strides(shape), shape):
        if n != 1:
            out = _add(out, _mul(i, s))
    return out


def unravel(flat: ir.Expr, shape: tuple[int, ...]) -> tuple[ir.Expr, ...]:
    """The multi-index of a row-major offset (flat < prod(shape))."""
    out = []
    for s, n in zip(strides(shape), shape):
        if n == 1:
            out.append(_c(0))
            continue
        e = flat // s if s != 1 else flat
        out.append(e % n if s * n < prod(shape) else e)  # the outermost axis needs no modulo
    return tuple(out)


def region(root: LazyNode) -> list[LazyNode]:
    """The nodes one kernel computing root evaluates, sources first: up to (and including) realized buffers."""
    return walk([root], stop=lambda n: n is not root and n.stored)


def _arg_key(arg: Any) -> Any:
    """A node argument as a hashable key that tells -0.0 from 0.0 and matches NaN with NaN."""
    if isinstance(arg, float):
        return ("f", repr(arg))
    if isinstance(arg, tuple):
        return tuple(_arg_key(a) for a in arg)
    return arg


def signature(root: LazyNode) -> tuple[tuple, list[LazyNode]]:
    """What the kernel for root depends on (shapes, dtypes, ops, constants; not which buffers), and the buffers
    it reads in parameter order: two roots with equal signatures run the same kernel."""
    nodes = region(root)
    pos = {n.id: i for i, n in enumerate(nodes)}
    sig = tuple((n.kind, n.shape, n.dtype, None if n.kind == "buffer" else _arg_key(n.arg),
                 tuple(pos[s.id] for s in n.srcs)) for n in nodes)
    return sig, [n for n in nodes if n.kind == "buffer"]


class Builder:
    """Evaluates lazy nodes into IR expressions inside one kernel under construction."""

    def __init__(self, k: ir.Kernel, root: LazyNode):
        self.k = k
        self.inputs: list[LazyNode] = []
        self._mems: dict[int, ir.Memory] = {}
        self._memo: dict[tuple, tuple[ir.Expr, tuple]] = {}  # value, and the index it is keyed by (kept alive)
        inside = region(root)
        self._uses: dict[int, int] = {}
        for n in inside:
            for s in n.srcs:
                self._uses[s.id] = self._uses.get(s.id, 0) + 1
            if n.kind == "buffer":  # parameters in region order, which `signature` reproduces
                self.memory(n)

    def memory(self, node: LazyNode) -> ir.Memory:
        if node.kind != "buffer":
            raise RuntimeError(f"scheduler error: {node!r} is read by a kernel before it was realized")
        if node.id not in self._mems:
            self._mems[node.id] = self.k.buffer(f"in{len(self.inputs)}", dtypes.storage(node.dtype))
            self.inputs.append(node)
        return self._mems[node.id]

    def value(self, node: LazyNode, idx: tuple[ir.Expr, ...]) -> ir.Expr:
        """node's value at multi-index idx, typed IR[node.dtype] (bool as an IR bool)."""
        key = (node.id, tuple(id(e) for e in idx))
        if key in self._memo:
            return self._memo[key][0]
        e = self._value(node, idx)
        if node.kind == "ewise" and node.dtype != dtypes.bool_:
            # Every op's value goes into a variable: ops such as relu and maximum repeat their operands, and the
            # printer and renderer walk expressions as trees, so nesting them unbound grows exponentially.
            e = self.k.var(e.dtype, e).value
        # The index rides along: keys hold ids, and an id is unique only while its object lives.
        self._memo[key] = (e, idx)
        return e

    def _value(self, node: LazyNode, idx: tuple[ir.Expr, ...]) -> ir.Expr:
        kind = node.kind
        if kind == "buffer":
            v = self.memory(node)[linear(idx, node.shape)]
            return v.ne(0) if node.dtype == dtypes.bool_ else v
        if kind == "const":
            return const(node.arg, node.dtype)
        if kind == "view":
            return self._view(node, idx)
        if kind == "ewise":
            return ewise(node.arg, [self.value(s, idx) for s in node.srcs], node, [s.dtype for s in node.srcs],
                         self.k)
        raise RuntimeError(f"scheduler error: {node!r} must be realized before a kernel reads it")

    def _view(self, node: LazyNode, idx: tuple[ir.Expr, ...]) -> ir.Expr:
        (op, p), src = node.arg, node.srcs[0]
        if op == "reshape":
            return self.value(src, unravel(linear(idx, node.shape), src.shape) if src.shape != node.shape else idx)
        if op == "permute":
            out: list[Any] = [None] * len(idx)
            for i, axis in enumerate(p):
                out[axis] = idx[i]
            return self.value(src, tuple(out))
        if op == "expand":
            return self.value(src, tuple(_c(0) if s == 1 and n != 1 else i for i, s, n in zip(idx, src.shape, node.shape)))
        if op == "slice":
            return self.value(src, tuple(_add(_mul(i, step), start) for i, (start, step, _) in zip(idx, p)))
        if op == "pad":
            pads, fill = p
            shifted = [_add(i, -b) if b else i for i, (b, _) in zip(idx, pads)]
            valid = None
            for s, (b, a), n in zip(shifted, pads, src.shape):
                for c in ([s >= 0] if b else []) + ([s < n] if a else []):
                    valid = c if valid is None else valid & c
            if valid is None:
                return self.value(src, tuple(shifted))
            # Indices outside the source are clamped so the load stays in bounds; the fill replaces its value.
            inner = self.value(src, tuple(ir.where(valid, s, 0) if (b or a) else s for s, (b, a) in zip(shifted, pads)))
            return ir.where(valid, inner, const(fill, node.dtype))
        raise RuntimeError(f"unknown view {op}")


def const(value: Any, dtype: str) -> ir.Expr:
    if dtype == dtypes.bool_:
        return ir.Const(bool(value), ir.bool_)
    if dtypes.is_float(dtype):
        return ir.Const(float(value), dtypes.IR[dtype])
    return ir.Const(int(value), ir.i32)


def _float_math(x: ir.Expr, fn: Any) -> ir.Expr:
    """Transcendentals on float16 are computed in float32 and rounded once, as numpy does."""
    if x.dtype == ir.f16:
        return fn(x.cast(ir.f32)).cast(ir.f16)
    return fn(x)


def _float_math2(a: ir.Expr, b: ir.Expr, fn: Any) -> ir.Expr:
    """A two-operand float function; float16 is computed in float32 and rounded once, as numpy's half loops do.
    A constant operand stays a constant (fast paths look for it)."""
    if a.dtype != ir.f16:
        return fn(a, b)
    up = [ir.Const(float(v.value), ir.f32) if isinstance(v, ir.Const) else v.cast(ir.f32) for v in (a, b)]
    return fn(*up).cast(ir.f16)


def _isnan(x: ir.Expr) -> ir.Expr:
    return x.ne(x)


def nan_max(a: ir.Expr, b: ir.Expr, op: Any = ir.maximum) -> ir.Expr:
    """numpy's maximum/minimum: a NaN in either operand gives NaN."""
    if a.dtype.kind != "f":
        return op(a, b)
    return ir.where(_isnan(a), a, ir.where(_isnan(b), b, op(a, b)))


def _bind(k: Optional[ir.Kernel], e: ir.Expr) -> ir.Expr:
    """e in a variable, so an expression used twice is one node, not a copied tree (chains of them would grow
    exponentially); without a kernel (a bare expression is asked for) e itself."""
    return k.var(e.dtype, e).value if k is not None else e


def _fconst(v: float, like: ir.Expr) -> ir.Expr:
    return ir.Const(float(v), like.dtype)


def _sign_negative(x: ir.Expr) -> ir.Expr:
    """x < 0, -0.0 included (its reciprocal is -inf): the IR has no signbit."""
    return (x < 0) | (x.eq(0) & ((1.0 / x) < 0))


def _copysign0(x: ir.Expr) -> ir.Expr:
    """A zero with the sign of x."""
    return ir.where(_sign_negative(x), _fconst(-0.0, x), _fconst(0.0, x))


def _floor(v: ir.Expr) -> ir.Expr:
    """floor of a float32 with no floor op: truncate through int32 where that is exact (|v| < 2**23, past which
    every float is whole), step down where truncation went up; zeros, NaN and inf pass through unchanged."""
    t = v.cast(ir.i32).cast(v.dtype)
    small = (v < 2.0 ** 23) & (v > -2.0 ** 23) & v.ne(0)
    return ir.where(small, ir.where(t > v, t - 1.0, t), v)


def _fdivmod(a: ir.Expr, b: ir.Expr, k: Optional[ir.Kernel]) -> tuple[ir.Expr, ir.Expr]:
    """numpy's float floor_divide and remainder (npy_divmod): fmod, then corrected to the divisor's sign, and the
    quotient snapped to the nearest whole number; b == 0 gives a / b and NaN, as numpy does."""
    fm = _bind(k, a % b)  # IR % on floats is fmod
    div = _bind(k, (a - fm) / b)
    adjust = fm.ne(0) & ((b < 0).ne(fm < 0))
    div = _bind(k, ir.where(adjust, div - 1.0, div))
    mod = ir.where(adjust, fm + b, ir.where(fm.ne(0), fm, _copysign0(b)))
    fl = _bind(k, _floor(div))
    fl = ir.where((div - fl) > 0.5, fl + 1.0, fl)
    q = a / b
    floordiv = ir.where(div.ne(0), fl, _copysign0(q))
    zero = b.eq(0)
    return ir.where(zero, q, floordiv), ir.where(zero, fm, mod)


def _idivmod(a: ir.Expr, b: ir.Expr, k: Optional[ir.Kernel]) -> tuple[ir.Expr, ir.Expr]:
    """numpy's int floor_divide and remainder: C's truncating ones stepped toward -inf when the signs differ;
    b == 0 gives 0 and 0 (numpy's values, without its warning); -2**31 // -1 wraps to -2**31 as in numpy."""
    zero = b.eq(0)
    safe = _bind(k, ir.where(zero, 1, b))  # the renderers keep x // 0 from trapping, but its value is unspecified
    q, r = _bind(k, a // safe), _bind(k, a % safe)
    adjust = r.ne(0) & ((r < 0).ne(safe < 0))
    q = ir.where(adjust, q - 1, q)
    r = ir.where(adjust, r + safe, r)
    return ir.where(zero, 0, q), ir.where(zero, 0, r)


def _ipow_const(a: ir.Expr, n: int, k: Optional[ir.Kernel]) -> ir.Expr:
    """a ** n for a build-time n >= 0 by squaring and multiplying, wrapping in int32 (numpy's int power)."""
    result: Optional[ir.Expr] = None
    base = a
    while n:
        if n & 1:
            result = base if result is None else _bind(k, result * base)
        n >>= 1
        if n:
            base = _bind(k, base * base)
    return result if result is not None else ir.Const(1, a.dtype)


def _ipow(a: ir.Expr, e: ir.Expr, k: Optional[ir.Kernel]) -> ir.Expr:
    """int32 a ** e. A negative exponent (numpy raises; here it is only known on the device) gives the truncated
    value of the true result: 1 for a == 1, +-1 for a == -1, else 0."""
    if isinstance(e, ir.Const) and e.value >= 0:
        return _ipow_const(a, int(e.value), k)
    result: ir.Expr = ir.Const(1, ir.i32)
    base, rest = a, e
    for step in range(31):  # every bit of a non-negative int32 exponent
        result = _bind(k, ir.where((rest & 1).ne(0), result * base, result))
        if step < 30:
            base, rest = _bind(k, base * base), _bind(k, rest // 2)
    odd = (e & 1).ne(0)
    negative = ir.where(a.eq(1), 1, ir.where(a.eq(-1), ir.where(odd, -1, 1), 0))
    return ir.where(e < 0, negative, result)


def _fpow(a: ir.Expr, b: ir.Expr, k: Optional[ir.Kernel]) -> ir.Expr:
    """float a ** b with C99 pow's special values. Constant exponents 0, 0.5, 1, 2, -1 take numpy's own fast paths
    (ones, sqrt, copy, square, reciprocal); other small whole ones multiply; the rest is exp2(b * log2|a|)."""
    if isinstance(b, ir.Const):
        v = b.value
        fast = {0.0: lambda: _fconst(1.0, a), 0.5: lambda: ir.sqrt(a), 1.0: lambda: a, 2.0: lambda: a * a,
                -1.0: lambda: 1.0 / a}
        if v in fast:
            return fast[v]()
        if float(v).is_integer() and abs(v) <= 16:
            m = _ipow_const(a, int(abs(v)), k)
            return 1.0 / m if v < 0 else m
    mag = _bind(k, ir.exp2(b * ir.log2(ir.where(a < 0, -a, a))))
    whole = _bind(k, _floor(b).eq(b))
    half = b * 0.5
    odd = whole & _floor(half).ne(half)
    negative = _bind(k, _sign_negative(a))
    signed = ir.where(negative & odd, -mag, mag)
    # a negative base to a fractional power has no real value, except -inf (C99: +inf or +0 like the magnitude)
    signed = ir.where(negative & ~whole & a.ne(-math.inf), _fconst(math.nan, a), signed)
    one = b.eq(0) | a.eq(1) | (a.eq(-1) & (b.eq(math.inf) | b.eq(-math.inf)))
    return ir.where(one, _fconst(1.0, a), signed)


def cast(x: ir.Expr, src: str, dst: str) -> ir.Expr:
    if src == dst:
        return x
    if dst == dtypes.bool_:
        return x.ne(0) if src != dtypes.bool_ else x
    if src == dtypes.bool_:
        return ir.where(x, const(1, dst), const(0, dst))
    return x.cast(dtypes.IR[dst])


def ewise(op: str, xs: list[ir.Expr], node: LazyNode, src_dtypes: list[str], k: Optional[ir.Kernel] = None) -> ir.Expr:
    """One elementwise op with numpy semantics; sources already have the types the tensor layer chose. k, the
    kernel being built, holds the intermediate values of the multi-step ops (pow, //, %) in variables."""
    dt = node.dtype
    if op == "cast":
        return cast(xs[0], src_dtypes[0], dt)
    if op == "where":
        return ir.where(*xs)
    if len(xs) == 2:
        a, b = xs
        boolean = a.dtype == ir.bool_
        if op == "add":
            return a | b if boolean else a + b
        if op == "mul":
            return a & b if boolean else a * b
        if op == "sub":
            return a - b
        if op == "div":
            return a / b
        if op in ("floordiv", "mod"):
            if a.dtype.kind == "f":
                pick = 0 if op == "floordiv" else 1
                return _float_math2(a, b, lambda x, y: _fdivmod(x, y, k)[pick])
            return _idivmod(a, b, k)[0 if op == "floordiv" else 1]
        if op == "pow":
            if a.dtype.kind == "f":
                return _float_math2(a, b, lambda x, y: _fpow(x, y, k))
            return _ipow(a, b, k)
        if op in ("maximum", "minimum"):
            if boolean:
                return a | b if op == "maximum" else a & b
            return nan_max(a, b, ir.maximum if op == "maximum" else ir.minimum)
        if op in ("lt", "le") and boolean:
            a, b = a.cast(ir.i32), b.cast(ir.i32)
        if op == "lt":
            return a < b
        if op == "le":
            return a <= b
        if op == "eq":
            return a.eq(b)
        if op == "ne":
            return a.ne(b)
        if op == "and":
            return a & b
        if op == "or":
            return a | b
        if op == "xor":
            return a ^ b
    x = xs[0]
    if op == "neg":
        return -x
    if op == "abs":  # x <= 0 takes 0 - x, so -0.0 gives +0.0 (numpy's abs), which max(x, -x) leaves to chance
        return ir.where(x <= 0, const(0, dt) - x, x)
    if op == "not":
        return ~x
    if op == "relu":
        return ir.where(x < 0, const(0, dt), x)
    if op == "exp":
        return _float_math(x, ir.exp)
    if op == "log":
        return _float_math(x, ir.log)
    if op == "sqrt":
        return ir.sqrt(x)
    if op == "sin":
        return _float_math(x, ir.sin)
    if op == "cos":
        return _float_math(x, ir.cos)
    if op == "sigmoid":
        return _float_math(x, lambda v: 1.0 / (ir.exp(-v) + 1.0))
    if op == "tanh":
        def tanh(v: ir.Expr) -> ir.Expr:
            t = ir.exp(ir.where(v < 0, v, -v) * 2.0)  # exp(-2|v|), never overflows
            mag = (1.0 - t) / (1.0 + t)
            return ir.where(v < 0, -mag, mag)
        return _float_math(x, tanh)
    raise RuntimeError(f"unknown elementwise op {op}")


def store_value(v: ir.Expr, dtype: str) -> ir.Expr:
    return ir.where(v, _c(1), _c(0)) if dtype == dtypes.bool_ else v


def _kname(prefix: str, shape: tuple[int, ...]) -> str:
    return f"{prefix}_{'x'.join(map(str, shape)) or 'scalar'}"


# --- the three kernel shapes ---

def elementwise_kernel(node: LazyNode) -> tuple[ir.Kernel, list[LazyNode], tuple[int, int, int]]:
    """out[i] = node at the multi-index of i, for every i: (kernel, input nodes, grid)."""
    n = node.size
    k = ir.Kernel(_kname("ewise", node.shape), local_size=(EWISE_LOCAL, 1, 1))
    out = k.buffer("out", dtypes.storage(node.dtype), writable=True)
    b = Builder(k, node)
    gid = k.global_id(0)
    with k.if_(gid < n):
        out[gid] = store_value(b.value(node, unravel(gid, node.shape)), node.dtype)
    return k, b.inputs, (cdiv(n, EWISE_LOCAL), 1, 1)


def _reduce_parts(node: LazyNode) -> tuple[str, tuple[int, ...], LazyNode, ir.DType, Any, Any]:
    op, axes = node.arg
    src = node.srcs[0]
    acc_t = ir.f32 if node.dtype == dtypes.float16 and op == "sum" else dtypes.storage(node.dtype) \
        if node.dtype != dtypes.bool_ else ir.i32
    if op == "sum":
        ident = ir.Const(0.0, acc_t) if acc_t.kind == "f" else ir.Const(0, ir.i32)
        return op, axes, src, acc_t, ident, lambda a, v: a + v
    if op == "min":  # its own op, not -max(-x): negating -2**31 wraps in int32
        ident = ir.Const(math.inf, acc_t) if acc_t.kind == "f" else ir.Const(ir.INT32_MAX, ir.i32)
        return op, axes, src, acc_t, ident, lambda a, v: nan_max(a, v, ir.minimum)
    ident = ir.Const(-math.inf, acc_t) if acc_t.kind == "f" else ir.Const(ir.INT32_MIN, ir.i32)
    return op, axes, src, acc_t, ident, nan_max


def _source_at(b: Builder, node: LazyNode, out_idx: tuple[ir.Expr, ...], r: ir.Expr, acc_t: ir.DType) -> ir.Expr:
    """The reduction's source at output index out_idx and reduction offset r, converted to the accumulator."""
    _, axes = node.arg
    src = node.srcs[0]
    red_idx = unravel(r, tuple(src.shape[a] for a in axes))
    full = list(out_idx)
    for a, e in zip(axes, red_idx):
        full[a] = e
    v = b.value(src, tuple(full))
    if src.dtype == dtypes.bool_:
        return ir.where(v, _c(1), _c(0))
    return v.cast(acc_t) if v.dtype != acc_t else v


def reduce_kernel(node: LazyNode) -> tuple[ir.Kernel, list[LazyNode], tuple[int, int, int]]:
    """One output per workgroup, REDUCE_LOCAL threads striding over the reduced elements and a tree in local
    memory; small reductions run one thread per output instead."""
    op, axes, src, acc_t, ident, combine = _reduce_parts(node)
    n_out, n_red = node.size, prod(src.shape[a] for a in axes)
    out_t = dtypes.storage(node.dtype)
    if n_red < SERIAL_REDUCE:
        k = ir.Kernel(_kname(f"r{op}_serial", src.shape), local_size=(EWISE_LOCAL, 1, 1))
        out = k.buffer("out", out_t, writable=True)
        b = Builder(k, node)
        gid = k.global_id(0)
        with k.if_(gid < n_out):
            acc = k.var(acc_t, ident, "acc")
            o = unravel(gid, node.shape)
            with k.range(0, n_red) as r:
                acc.set(combine(acc.value, _source_at(b, node, o, r, acc_t)))
            out[gid] = acc.value.cast(out_t) if acc_t != out_t else acc.value
        return k, b.inputs, (cdiv(n_out, EWISE_LOCAL), 1, 1)
    L = REDUCE_LOCAL
    k = ir.Kernel(_kname(f"r{op}", src.shape), local_size=(L, 1, 1))
    out = k.buffer("out", out_t, writable=True)
    b = Builder(k, node)
    o_flat, t = k.workgroup_id(0), k.local_id(0)
    o = unravel(o_flat, node.shape)
    acc = k.var(acc_t, ident, "acc")
    with k.range(0, cdiv(n_red, L)) as j:
        r = j * L + t
        with k.if_(r < n_red):
            acc.set(combine(acc.value, _source_at(b, node, o, r, acc_t)))
    tile = k.local_array(acc_t, L, "partial")
    tile[t] = acc.value
    k.barrier()
    step = L // 2
    while step >= 1:
        with k.if_(t < step):
            tile[t] = combine(tile[t], tile[t + step])
        k.barrier()
        step //= 2
    with k.if_(t.eq(0)):
        out[o_flat] = tile[0].cast(out_t) if acc_t != out_t else tile[0]
    return k, b.inputs, (n_out, 1, 1)


def matmul_tiles(M: int, N: int) -> tuple[int, int, int, int, int]:
    """(BM, BN, BK, VM, VN) on a GPU: a BM x BN block of C per workgroup, K walked BK at a time, each thread
    computing a VM x VN block of it in registers. Small outputs take small tiles so few threads idle."""
    if M * N >= 64 * 64:
        return BIG_TILES
    return TILE, TILE, TILE, 1, 1


def _matmul_start(node: LazyNode, K: int, TX: int, TY: int) -> tuple[ir.Kernel, Any, Builder, ir.DType, ir.DType]:
    """A matmul kernel of TX x TY threads: its output buffer, its input builder, and its accumulator and output
    types (float16 accumulates in float32)."""
    acc_t = ir.f32 if node.dtype == dtypes.float16 else dtypes.storage(node.dtype)
    out_t = dtypes.storage(node.dtype)
    k = ir.Kernel(_kname("matmul", node.shape + (K,)), local_size=(TX, TY, 1))
    return k, k.buffer("out", out_t, writable=True), Builder(k, node), acc_t, out_t


def _in_bounds(checks: list[tuple[bool, ir.Expr]], join: Callable = lambda x, y: x & y) -> Optional[ir.Expr]:
    """The bounds conditions that are needed, joined (and by default), or None when the tile sizes divide the
    matrix (known when the kernel is built)."""
    conds = [c for needed, c in checks if needed]
    return reduce(join, conds) if conds else None


def _store_tile(k: Any, out: Any, acc: list, row_of: Callable[[int], Any], col_of: Callable[[int], Any],
                sizes: tuple[int, int, int, int], batch: Any, acc_t: ir.DType, out_t: ir.DType) -> None:
    """Store a thread's accumulators acc[i][j] at (row_of(i), col_of(j)) of this batch's M x N output, checking
    bounds only along an axis the BM x BN tiles do not divide."""
    M, N, BM, BN = sizes
    base = _mul(k.workgroup_id(2), M * N) if batch else _c(0)
    for i, row_acc in enumerate(acc):
        for j, a in enumerate(row_acc):
            row, col = row_of(i), col_of(j)
            v = a.value.cast(out_t) if acc_t != out_t else a.value
            ok = _in_bounds([(M % BM != 0, row < M), (N % BN != 0, col < N)])
            if ok is None:
                out[_add(base, row * N + col)] = v
            else:
                with k.if_(ok):
                    out[_add(base, row * N + col)] = v


def matmul_kernel(node: LazyNode) -> tuple[ir.Kernel, list[LazyNode], tuple[int, int, int]]:
    """C[..., M, N] = A[..., M, K] @ B[..., K, N]: a tile of C per workgroup, the K axis walked in tiles staged
    through local memory, and a register block of C per thread; A and B are read through their views and fused
    producers, so transposes and elementwise inputs cost no extra pass."""
    a, bn = node.srcs
    *batch, M, K = a.shape
    N = bn.shape[-1]
    batch = tuple(batch)
    BM, BN, BK, VM, VN = matmul_tiles(M, N)
    TX, TY = BN // VN, BM // VM
    threads = TX * TY
    k, out, b, acc_t, out_t = _matmul_start(node, K, TX, TY)
    tx, ty = k.local_id(0), k.local_id(1)
    tid = ty * TX + tx
    row0, col0 = k.workgroup_id(1) * BM, k.workgroup_id(0) * BN
    bidx = unravel(k.workgroup_id(2), batch) if batch else ()
    As, Bs = k.local_array(acc_t, BM * BK, "As"), k.local_array(acc_t, BK * BN, "Bs")
    acc = [[k.var(acc_t, 0, f"acc{i}_{j}") for j in range(VN)] for i in range(VM)]
    zero = ir.Const(0.0, acc_t) if acc_t.kind == "f" else ir.Const(0, ir.i32)

    def load(node_: LazyNode, ok: Optional[ir.Expr], i: ir.Expr, j: ir.Expr) -> ir.Expr:
        if ok is None:  # the tiles divide the matrix: every read is in bounds
            v = b.value(node_, bidx + (i, j))
            return v.cast(acc_t) if v.dtype != acc_t else v
        v = b.value(node_, bidx + (ir.where(ok, i, 0), ir.where(ok, j, 0)))
        v = v.cast(acc_t) if v.dtype != acc_t else v
        return ir.where(ok, v, zero)

    def stage(tile: ir.Memory, H: int, W: int, read: Callable[[ir.Expr, ir.Expr], ir.Expr]) -> None:
        """tile[r * W + c] = read(r, c) for the H x W tile, the work spread over the workgroup's threads."""
        if W % TX == 0:  # rows of threads across the tile's columns: neighbouring threads read neighbouring words
            for rr in range(cdiv(H, TY)):
                for cc in range(W // TX):
                    r, c = ty + rr * TY, tx + cc * TX
                    if (rr + 1) * TY <= H:
                        tile[r * W + c] = read(r, c)
                    else:
                        with k.if_(r < H):
                            tile[r * W + c] = read(r, c)
            return
        for part in range(cdiv(H * W, threads)):  # the tile as one flat run of elements, a few per thread
            e = tid + part * threads
            r, c = e // W, e % W
            if (part + 1) * threads <= H * W:
                tile[e] = read(r, c)
            else:
                with k.if_(e < H * W):
                    tile[e] = read(r, c)

    def stage_checked(tile: ir.Memory, H: int, W: int, src: LazyNode, r0: ir.Expr, c0: ir.Expr, rows: int,
                      cols: int) -> None:
        """Stage src[r0:r0+H, c0:c0+W] (zeros past rows x cols): tiles wholly inside take a path without bounds
        checks, decided once per tile (a uniform branch); only edge tiles check every element."""
        edge = _in_bounds([(rows % H != 0, r0 + H > rows), (cols % W != 0, c0 + W > cols)], lambda x, y: x | y)

        def fast(r: ir.Expr, c: ir.Expr) -> ir.Expr:
            return load(src, None, r0 + r, c0 + c)

        def checked(r: ir.Expr, c: ir.Expr) -> ir.Expr:
            ok = _in_bounds([(rows % H != 0, (r0 + r) < rows), (cols % W != 0, (c0 + c) < cols)])
            return load(src, ok, r0 + r, c0 + c)
        if edge is None:
            stage(tile, H, W, fast)
            return
        with k.if_(~edge):
            stage(tile, H, W, fast)
        with k.if_(edge):
            stage(tile, H, W, checked)
    with k.range(0, cdiv(K, BK)) as kt:
        k0 = kt * BK
        stage_checked(As, BM, BK, a, row0, k0, M, K)
        stage_checked(Bs, BK, BN, bn, k0, col0, K, N)
        k.barrier()
        with k.range(0, BK) as kk:
            # Each staged value is read once into a register and used VN (or VM) times.
            # Thread (tx, ty) owns rows ty + i*TY and columns tx + j*TX: neighbouring threads read neighbouring
            # words, which a GPU coalesces and the host build vectorizes across its thread loop.
            av = [k.var(acc_t, As[(ty + i * TY) * BK + kk], f"a{i}").value for i in range(VM)]
            bv = [k.var(acc_t, Bs[kk * BN + tx + j * TX], f"b{j}").value for j in range(VN)]
            for i in range(VM):
                for j in range(VN):
                    acc[i][j].set(ir.muladd(av[i], bv[j], acc[i][j].value))  # fused where the target has FMA
        k.barrier()
    _store_tile(k, out, acc, lambda i: row0 + ty + i * TY, lambda j: col0 + tx + j * TX, (M, N, BM, BN), batch,
                acc_t, out_t)
    return k, b.inputs, (cdiv(N, BN), cdiv(M, BM), max(1, prod(batch)))


@lru_cache(maxsize=None)
def _host_avx512() -> bool:
    from compiler.toolchain import host_features
    return "avx512f" in host_features()


def host_matmul_tiles(M: int, N: int, avx512: Optional[bool] = None) -> tuple[int, int, int, int, int]:
    """(BM, BN, BK, VM, VN) for the host matmul on this CPU (or with/without AVX-512), shrunk in powers of two
    where M or N is smaller than a block, so a skinny product does not compute rows or columns that do not exist."""
    BM, BN, BK, VM, VN = HOST_MM_TILES[_host_avx512() if avx512 is None else avx512]
    TX = BN // VN  # one vector of threads: kept, so the x loop stays exactly one vector wide
    while BM > VM and BM // 2 >= M:
        BM //= 2
    while VN > 1 and TX * (VN - 1) >= N:
        VN -= 1
    return BM, TX * VN, BK, VM, VN


def host_matmul_kernel(node: LazyNode, avx512: Optional[bool] = None) -> tuple[ir.Kernel, list[LazyNode],
                                                                               tuple[int, int, int]]:
    """C[..., M, N] = A[..., M, K] @ B[..., K, N] for the host: B staged BK rows at a time into a contiguous BK x BN
    panel (as BLAS packs it), A read in place when it is a realized buffer or its transpose (any other A, such as a
    fused producer, is staged too), and a row of threads' VM x BN accumulators kept in vector registers for
    the whole BK loop: per k, VM broadcasts of A and VN vectors of B (TX wide) feed VM x VN vector FMAs.

    Workgroup x walks the row blocks, so consecutive workgroups (one thread's chunk) reuse the same B panel
    from L2 while A streams through."""
    a, bn = node.srcs
    *batch, M, K = a.shape
    N = bn.shape[-1]
    batch = tuple(batch)
    # A realized buffer, or a transpose of one, is read in place: a thread's VM rows are adjacent words or streams.
    direct = a.kind == "buffer" or (a.kind == "view" and a.arg[0] == "permute" and a.srcs[0].kind == "buffer")
    BM, BN, BK, VM, VN = host_matmul_tiles(M, N, avx512)
    BK = BK if direct else HOST_MM_BK_STAGED_A
    TX, TY = BN // VN, BM // VM
    k, out, b, acc_t, out_t = _matmul_start(node, K, TX, TY)
    tx, ty = k.local_id(0), k.local_id(1)
    row0, col0 = k.workgroup_id(0) * BM, k.workgroup_id(1) * BN
    bidx = unravel(k.workgroup_id(2), batch) if batch else ()
    Bs = k.local_array(acc_t, BK * BN, "Bs")
    As = None if direct else k.local_array(acc_t, BM * BK, "As")
    acc = [[k.var(acc_t, 0, f"acc{i}_{j}") for j in range(VN)] for i in range(VM)]
    zero = ir.Const(0.0, acc_t) if acc_t.kind == "f" else ir.Const(0, ir.i32)

    def cast(v: ir.Expr) -> ir.Expr:
        return v.cast(acc_t) if v.dtype != acc_t else v

    def stage(tile: ir.Memory, H: int, W: int, src: LazyNode, r0: ir.Expr, c0: ir.Expr, rows: int, cols: int) -> None:
        """tile[r * W + c] = src[r0 + r, c0 + c] (zeros past rows x cols), threads across columns; tiles wholly
        inside take a path without bounds checks, decided once per tile."""
        threads = TX * TY

        def read(r: ir.Expr, c: ir.Expr, check: bool) -> ir.Expr:
            ok = _in_bounds([(check and rows % H != 0, (r0 + r) < rows), (check and cols % W != 0, (c0 + c) < cols)])
            if ok is None:
                return cast(b.value(src, bidx + (r0 + r, c0 + c)))
            return ir.where(ok, cast(b.value(src, bidx + (ir.where(ok, r0 + r, 0), ir.where(ok, c0 + c, 0)))), zero)

        def fill(check: bool) -> None:
            if W % TX == 0:  # threads across a row's columns: the x loop copies contiguous words (vectors)
                for rr in range(cdiv(H, TY)):
                    for cc in range(W // TX):
                        r, c = ty + rr * TY, tx + cc * TX
                        if (rr + 1) * TY <= H:
                            tile[r * W + c] = read(r, c, check)
                        else:
                            with k.if_(r < H):
                                tile[r * W + c] = read(r, c, check)
                return
            for part in range(cdiv(H * W, threads)):
                e = tx + ty * TX + part * threads
                if (part + 1) * threads <= H * W:
                    tile[e] = read(e // W, e % W, check)
                else:
                    with k.if_(e < H * W):
                        tile[e] = read(e // W, e % W, check)
        edge = _in_bounds([(rows % H != 0, r0 + H > rows), (cols % W != 0, c0 + W > cols)], lambda x, y: x | y)
        if edge is None:
            fill(False)
            return
        with k.if_(~edge):
            fill(False)
        with k.if_(edge):
            fill(True)

    my_rows = [row0 + ty * VM + i for i in range(VM)]  # a thread's VM rows are adjacent: its A streams share pages
    # Rows past M (an edge block) read row M - 1 instead: their sums are never stored.
    a_rows = [ir.minimum(r, M - 1) if M % BM != 0 else r for r in my_rows]
    with k.range(0, cdiv(K, BK)) as kt:
        k0 = kt * BK
        stage(Bs, BK, BN, bn, k0, col0, K, N)
        if As is not None:
            stage(As, BM, BK, a, row0, k0, M, K)
        k.barrier()
        # The last K block may be short: the loop stops at K, so nothing past it is read.
        with k.range(0, ir.minimum(K - k0, BK) if K % BK != 0 else BK) as kk:
            bv = [k.var(acc_t, Bs[kk * BN + tx + j * TX], f"b{j}").value for j in range(VN)]
            if As is None:
                av = [k.var(acc_t, cast(b.value(a, bidx + (a_rows[i], k0 + kk))), f"a{i}").value for i in range(VM)]
            else:
                av = [k.var(acc_t, As[(ty * VM + i) * BK + kk], f"a{i}").value for i in range(VM)]
            for i in range(VM):
                for j in range(VN):
                    acc[i][j].set(ir.muladd(av[i], bv[j], acc[i][j].value))
        k.barrier()
    _store_tile(k, out, acc, lambda i: my_rows[i], lambda j: col0 + tx + j * TX, (M, N, BM, BN), batch, acc_t, out_t)
    return k, b.inputs, (cdiv(M, BM), cdiv(N, BN), max(1, prod(batch)))


def kernel_for(node: LazyNode, host: bool = False) -> tuple[ir.Kernel, list[LazyNode], tuple[int, int, int]]:
    """The kernel that computes node: (kernel, input nodes in parameter order, grid). host picks the shapes that
    suit a CPU build (its thread loops vectorize) over those that suit a GPU."""
    if node.kind == "reduce":
        return reduce_kernel(node)
    if node.kind == "matmul":
        return host_matmul_kernel(node) if host else matmul_kernel(node)
    return elementwise_kernel(node)
