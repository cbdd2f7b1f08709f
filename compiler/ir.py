"""The kernel IR: expressions and statements for elementwise, reduction and tiled-matmul kernels.

A kernel has global buffers and int32 scalars as parameters, reads special indices (workgroup id, local
id, and the workgroup size, which is fixed when the kernel is built), and runs statements: stores, assignments
to mutable variables, ifs, counted loops, local (shared) arrays and barriers. Builders read like the kernel:

    k = Kernel("add", local_size=(64, 1, 1))
    a, b, out = k.buffer("a", f32), k.buffer("b", f32), k.buffer("out", f32, writable=True)
    n = k.scalar("n", i32)
    i = k.global_id(0)
    with k.if_(i < n):
        out[i] = a[i] + b[i]

Semantics every target keeps:
- `/` is float division; `//` and `%` on int32 truncate toward zero (C), `%` on floats is fmod. An integer
  division by zero gives an unspecified value, never a trap.
- `maximum`/`minimum` on floats ignore a NaN operand (IEEE maxNum/minNum); comparisons with NaN are false
  except `ne`.
- float-to-int casts saturate (NaN becomes 0).
- Buffers may alias each other (in-place kernels are fine).
- A barrier must be reached by every thread of a workgroup: `Kernel.validate` refuses a barrier under an if or
  loop whose condition or bounds depend on the local id (directly or through variables or loads).
"""
from __future__ import annotations

import hashlib
import numbers
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
MAX_THREADS = 1024  # work-items per workgroup: the limit of every target we build for
MAX_LDS_BYTES = 65536  # local memory per workgroup on gfx11/gfx12/gfx942 (and the portable CUDA static limit is lower)


@dataclass(frozen=True)
class DType:
    """A scalar type: name, width in bits and kind ('f' float, 'i' signed int, 'b' bool)."""
    name: str
    bits: int
    kind: str

    @property
    def itemsize(self) -> int:
        return max(1, self.bits // 8)

    def __repr__(self) -> str:
        return self.name


f32, f16, i32, bool_ = DType("float32", 32, "f"), DType("float16", 16, "f"), DType("int32", 32, "i"), DType("bool", 1, "b")
DTYPES = {d.name: d for d in (f32, f16, i32, bool_)}


class IRError(ValueError):
    """The kernel is not well formed; the message names the operation and the types involved."""


# --- expressions ---

ARITH = ("add", "sub", "mul", "div", "idiv", "mod", "max", "min")
COMPARE = ("lt", "le", "eq", "ne")
LOGIC = ("and", "or", "xor")
UNARY = ("neg", "not", "exp2", "log2", "sqrt", "sin", "exp", "log", "cos")
FLOAT_UNARY = ("exp2", "log2", "sqrt", "sin", "exp", "log", "cos")  # defined on floats only


class Expr:
    """An expression node; Python operators build more nodes (use .eq()/.ne() for equality)."""
    dtype: DType

    def _bin(self, op: str, other: "ExprLike", swap: bool = False) -> "Expr":
        o = lift(other, self.dtype)
        a, b = (o, self) if swap else (self, o)
        return BinOp(op, a, b)

    def __add__(self, o: "ExprLike") -> "Expr": return self._bin("add", o)
    def __radd__(self, o: "ExprLike") -> "Expr": return self._bin("add", o, True)
    def __sub__(self, o: "ExprLike") -> "Expr": return self._bin("sub", o)
    def __rsub__(self, o: "ExprLike") -> "Expr": return self._bin("sub", o, True)
    def __mul__(self, o: "ExprLike") -> "Expr": return self._bin("mul", o)
    def __rmul__(self, o: "ExprLike") -> "Expr": return self._bin("mul", o, True)
    def __truediv__(self, o: "ExprLike") -> "Expr": return self._bin("div", o)
    def __rtruediv__(self, o: "ExprLike") -> "Expr": return self._bin("div", o, True)
    def __floordiv__(self, o: "ExprLike") -> "Expr": return self._bin("idiv", o)
    def __rfloordiv__(self, o: "ExprLike") -> "Expr": return self._bin("idiv", o, True)
    def __mod__(self, o: "ExprLike") -> "Expr": return self._bin("mod", o)
    def __rmod__(self, o: "ExprLike") -> "Expr": return self._bin("mod", o, True)
    def __lt__(self, o: "ExprLike") -> "Expr": return self._bin("lt", o)
    def __le__(self, o: "ExprLike") -> "Expr": return self._bin("le", o)
    def __gt__(self, o: "ExprLike") -> "Expr": return self._bin("lt", o, True)
    def __ge__(self, o: "ExprLike") -> "Expr": return self._bin("le", o, True)
    def __and__(self, o: "ExprLike") -> "Expr": return self._bin("and", o)
    def __rand__(self, o: "ExprLike") -> "Expr": return self._bin("and", o, True)
    def __or__(self, o: "ExprLike") -> "Expr": return self._bin("or", o)
    def __ror__(self, o: "ExprLike") -> "Expr": return self._bin("or", o, True)
    def __xor__(self, o: "ExprLike") -> "Expr": return self._bin("xor", o)
    def __neg__(self) -> "Expr": return UnOp("neg", self)
    def __invert__(self) -> "Expr": return UnOp("not", self)

    def __bool__(self) -> bool:
        # `if a < b:` in Python would silently pick a branch at build time; kernels branch with k.if_ or where().
        raise IRError("an expression has no truth value while the kernel is built: use k.if_(cond) or where(cond, a, b)")

    def eq(self, o: "ExprLike") -> "Expr":
        return self._bin("eq", o)

    def ne(self, o: "ExprLike") -> "Expr":
        return self._bin("ne", o)

    def cast(self, dtype: DType) -> "Expr":
        return Cast(self, dtype)

    __hash__ = object.__hash__


ExprLike = Union[Expr, "Var", int, float, bool]


def lift(v: ExprLike, like: DType) -> Expr:
    """Python numbers become constants of the other operand's type; variables read as their value."""
    if isinstance(v, Expr):
        return v
    if isinstance(v, Var):
        return VarRef(v)
    if isinstance(v, bool):
        return Const(v, bool_)
    if isinstance(v, numbers.Integral):
        return Const(float(v), like) if like.kind == "f" else Const(int(v), i32)
    if isinstance(v, numbers.Real):
        if like.kind != "f":
            raise IRError(f"float constant {v} used with {like}: cast one side explicitly")
        return Const(float(v), like)
    raise IRError(f"{v!r} is not an expression or a number")


@dataclass(eq=False)
class Const(Expr):
    value: Union[int, float, bool]
    dtype: DType

    def __post_init__(self) -> None:
        if self.dtype.kind == "i" and not INT32_MIN <= self.value <= INT32_MAX:
            raise IRError(f"constant {self.value} does not fit in int32")


@dataclass(eq=False)
class Special(Expr):
    """workgroup id ('wg'), local id ('lid') or workgroup size ('lsize', a build-time constant) in dimension 0..2."""
    kind: str
    dim: int
    dtype: DType = i32

    def __post_init__(self) -> None:
        if self.kind not in ("wg", "lid", "lsize"):
            raise IRError(f"unknown special index {self.kind!r}")
        if self.dim not in (0, 1, 2):
            raise IRError(f"dimension {self.dim} of {self.kind}: dimensions are 0, 1 and 2")


@dataclass(eq=False)
class ScalarParam(Expr):
    """An int32 kernel argument passed by value."""
    name: str
    index: int
    dtype: DType = i32


@dataclass(eq=False)
class BinOp(Expr):
    op: str
    a: Expr
    b: Expr

    def __post_init__(self) -> None:
        ta, tb, op = self.a.dtype, self.b.dtype, self.op
        if op not in ARITH + COMPARE + LOGIC:
            raise IRError(f"unknown binary operation {op!r}")
        if ta != tb:
            raise IRError(f"{op}: operand types differ ({ta} and {tb}); cast one side")
        if op == "div" and ta.kind != "f":
            raise IRError(f"div: / needs float operands, got {ta}; use // for integer division (truncating)")
        if op == "idiv" and ta.kind != "i":
            raise IRError(f"idiv: // needs int32 operands, got {ta}; use / for float division")
        if op in ARITH and ta.kind == "b":
            raise IRError(f"{op} is not defined on bool; cast to int32 first")
        if op in LOGIC and ta.kind == "f":
            raise IRError(f"{op} is not defined on {ta}; it takes bool or int32 operands")
        if op in ("lt", "le") and ta.kind == "b":
            raise IRError(f"{op} is not defined on bool")
        self.dtype = bool_ if op in COMPARE else ta


@dataclass(eq=False)
class UnOp(Expr):
    op: str
    a: Expr

    def __post_init__(self) -> None:
        t = self.a.dtype
        if self.op not in UNARY:
            raise IRError(f"unknown unary operation {self.op!r}")
        if self.op in FLOAT_UNARY and t.kind != "f":
            raise IRError(f"{self.op} needs a float operand, got {t}")
        if self.op == "neg" and t.kind == "b":
            raise IRError("neg is not defined on bool; use ~ for logical not")
        if self.op == "not" and t.kind == "f":
            raise IRError(f"not (~) is not defined on {t}")
        self.dtype = t


@dataclass(eq=False)
class Cast(Expr):
    a: Expr
    dtype: DType

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, DType):
            raise IRError(f"cast to {self.dtype!r}: not a dtype (use f32, f16, i32 or bool_)")


@dataclass(eq=False)
class Where(Expr):
    cond: Expr
    a: Expr
    b: Expr

    def __post_init__(self) -> None:
        if self.cond.dtype != bool_:
            raise IRError(f"where: the condition must be bool, got {self.cond.dtype}")
        if self.a.dtype != self.b.dtype:
            raise IRError(f"where: branches differ ({self.a.dtype} and {self.b.dtype})")
        self.dtype = self.a.dtype


@dataclass(eq=False)
class MulAdd(Expr):
    """a * b + c on floats, which the target may fuse into one instruction with one rounding (as BLAS does):
    for accumulations where speed matters more than bit-exactness with a separate multiply and add."""
    a: Expr
    b: Expr
    c: Expr

    def __post_init__(self) -> None:
        if not self.a.dtype == self.b.dtype == self.c.dtype:
            raise IRError(f"muladd: operand types differ ({self.a.dtype}, {self.b.dtype}, {self.c.dtype})")
        if self.a.dtype.kind != "f":
            raise IRError(f"muladd needs float operands, got {self.a.dtype}; use a * b + c for integers")
        self.dtype = self.a.dtype


@dataclass(eq=False)
class Load(Expr):
    mem: "Memory"
    index: Expr

    def __post_init__(self) -> None:
        if self.index.dtype != i32:
            raise IRError(f"index into {self.mem.name} must be int32, got {self.index.dtype}")
        self.dtype = self.mem.dtype


@dataclass(eq=False)
class VarRef(Expr):
    var: "Var"

    def __post_init__(self) -> None:
        self.dtype = self.var.dtype


def _as_expr(v: ExprLike, name: str) -> Expr:
    if isinstance(v, Var):
        return VarRef(v)
    if not isinstance(v, Expr):
        raise IRError(f"{name} needs an expression, got {v!r}")
    return v


def _pair(a: ExprLike, b: ExprLike, name: str) -> tuple[Expr, Expr]:
    """Two operands, a Python number taking the other side's type."""
    if isinstance(a, (Expr, Var)):
        a = _as_expr(a, name)
        return a, lift(b, a.dtype)
    if isinstance(b, (Expr, Var)):
        b = _as_expr(b, name)
        return lift(a, b.dtype), b
    raise IRError(f"{name} needs at least one expression, got {a!r} and {b!r}")


def maximum(a: ExprLike, b: ExprLike) -> Expr:
    """Elementwise max (floats: a NaN operand is ignored)."""
    return BinOp("max", *_pair(a, b, "maximum"))


def minimum(a: ExprLike, b: ExprLike) -> Expr:
    """Elementwise min (floats: a NaN operand is ignored)."""
    return BinOp("min", *_pair(a, b, "minimum"))


def where(c: Expr, a: ExprLike, b: ExprLike) -> Expr:
    """c ? a : b, both sides evaluated; Python numbers take the other side's type (int32/float32 if both are numbers)."""
    if isinstance(a, (Expr, Var)):
        like = lift(a, f32).dtype
    elif isinstance(b, (Expr, Var)):
        like = lift(b, f32).dtype
    else:
        like = f32 if isinstance(a, float) or isinstance(b, float) else i32
    return Where(_as_expr(c, "where"), lift(a, like), lift(b, like))


def muladd(a: ExprLike, b: ExprLike, c: ExprLike) -> Expr:
    """a * b + c, fusable (MulAdd) for floats; plain multiply and add for int32."""
    ea = _as_expr(a, "muladd")
    eb, ec = lift(b, ea.dtype), lift(c, ea.dtype)
    if ea.dtype.kind != "f":
        return ea * eb + ec
    return MulAdd(ea, eb, ec)


def exp2(a: ExprLike) -> Expr:
    return UnOp("exp2", _as_expr(a, "exp2"))


def log2(a: ExprLike) -> Expr:
    return UnOp("log2", _as_expr(a, "log2"))


def sqrt(a: ExprLike) -> Expr:
    return UnOp("sqrt", _as_expr(a, "sqrt"))


def sin(a: ExprLike) -> Expr:
    return UnOp("sin", _as_expr(a, "sin"))


def cos(a: ExprLike) -> Expr:
    return UnOp("cos", _as_expr(a, "cos"))


def exp(a: ExprLike) -> Expr:
    """e^a; its own operation (not exp2(a * log2 e)) so the host computes it without the product's rounding."""
    return UnOp("exp", _as_expr(a, "exp"))


def log(a: ExprLike) -> Expr:
    """The natural logarithm."""
    return UnOp("log", _as_expr(a, "log"))


# --- memory and variables ---

@dataclass(eq=False)
class Memory:
    """A global buffer parameter or a local (shared) array; indexing loads, item assignment stores."""
    name: str
    dtype: DType
    kernel: "Kernel"
    space: str  # "global" or "local"
    index: int = -1  # parameter index for globals
    writable: bool = False
    size: int = 0  # elements, for local arrays

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __getitem__(self, idx: ExprLike) -> Expr:
        return Load(self, lift(idx, i32))

    def __setitem__(self, idx: ExprLike, value: ExprLike) -> None:
        if self.space == "global" and not self.writable:
            raise IRError(f"store to {self.name}, which is read-only: declare it with writable=True")
        v = lift(value, self.dtype)
        if v.dtype != self.dtype:
            raise IRError(f"store of {v.dtype} into {self.name} of {self.dtype}; cast the value")
        self.kernel._emit(Store(self, lift(idx, i32), v))


@dataclass(eq=False)
class Var:
    """A mutable per-thread variable (accumulators); reads as its value in expressions, `.set(x)` assigns."""
    name: str
    dtype: DType
    kernel: "Kernel"
    loop: bool = False  # a loop's counter: only the loop assigns it

    def set(self, value: ExprLike) -> None:
        if self.loop:
            raise IRError(f"{self.name} is a loop counter; only its loop assigns it")
        v = lift(value, self.dtype)
        if v.dtype != self.dtype:
            raise IRError(f"assignment of {v.dtype} to variable {self.name} of {self.dtype}")
        self.kernel._emit(Assign(self, v))

    @property
    def value(self) -> Expr:
        return VarRef(self)

    def cast(self, dtype: DType) -> Expr:
        return Cast(VarRef(self), dtype)

    def eq(self, o: ExprLike) -> Expr:
        return VarRef(self).eq(o)

    def ne(self, o: ExprLike) -> Expr:
        return VarRef(self).ne(o)

    def __bool__(self) -> bool:
        raise IRError(f"variable {self.name} has no truth value while the kernel is built: use k.if_ or where()")


def _delegate(op: str):
    def method(self: Var, *args: ExprLike) -> Expr:
        return getattr(VarRef(self), op)(*args)
    method.__name__ = op
    return method


# Every operator a Var supports is its value's operator, so `acc + x` and `x * acc` read acc.
for _op in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
            "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__lt__", "__le__", "__gt__", "__ge__", "__and__",
            "__rand__", "__or__", "__ror__", "__xor__", "__neg__", "__invert__"):
    setattr(Var, _op, _delegate(_op))


# --- statements ---

@dataclass(eq=False)
class Store:
    mem: Memory
    index: Expr
    value: Expr


@dataclass(eq=False)
class Assign:
    var: Var
    value: Expr


@dataclass(eq=False)
class If:
    cond: Expr
    body: list


@dataclass(eq=False)
class Range:
    """for var in range(start, end, step): end is evaluated once, before the first iteration; step is a constant > 0."""
    var: Var
    start: Expr
    end: Expr
    body: list
    step: int = 1


@dataclass(eq=False)
class Barrier:
    """Every thread of the workgroup waits here; local and global memory writes before it are visible after it."""


Stmt = Union[Store, Assign, If, Range, Barrier]


@dataclass(eq=False)
class Kernel:
    """A kernel under construction; statements go into the innermost open block."""
    name: str
    local_size: tuple[int, int, int] = (1, 1, 1)
    buffers: list[Memory] = field(default_factory=list)
    scalars: list[ScalarParam] = field(default_factory=list)
    locals: list[Memory] = field(default_factory=list)
    vars: list[Var] = field(default_factory=list)
    body: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier() or self.name.startswith("_"):
            raise IRError(f"kernel name {self.name!r} must be an identifier not starting with _")
        self.local_size = tuple(self.local_size)
        if len(self.local_size) != 3 or any(not isinstance(d, int) or d < 1 for d in self.local_size):
            raise IRError(f"local_size must be three sizes >= 1, got {self.local_size}")
        threads = self.local_size[0] * self.local_size[1] * self.local_size[2]
        if threads > MAX_THREADS:
            raise IRError(f"local_size {self.local_size} is {threads} work-items; at most {MAX_THREADS}")
        self._blocks: list[list] = [self.body]
        self._names: set[str] = set()

    @property
    def params(self) -> list[Union[Memory, ScalarParam]]:
        return sorted([*self.buffers, *self.scalars], key=lambda p: p.index)

    @property
    def threads(self) -> int:
        return self.local_size[0] * self.local_size[1] * self.local_size[2]

    @property
    def lds_bytes(self) -> int:
        return sum(m.nbytes for m in self.locals)

    def _claim(self, name: Optional[str], prefix: str) -> str:
        """A user name is checked; no name gets the first free `_<prefix><n>` (users cannot start names with _)."""
        if name is None:
            n = 0
            while f"_{prefix}{n}" in self._names:
                n += 1
            name = f"_{prefix}{n}"
        elif not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise IRError(f"{self.name}: name {name!r} must be an identifier not starting with _")
        if name in self._names:
            raise IRError(f"{self.name}: the name {name!r} is already used in this kernel")
        self._names.add(name)
        return name

    @staticmethod
    def _storable(dtype: DType, what: str) -> None:
        if not isinstance(dtype, DType):
            raise IRError(f"{what}: {dtype!r} is not a dtype (use f32, f16 or i32)")
        if dtype == bool_:
            raise IRError(f"{what}: bool memory is not supported; store int32 0/1 instead")

    def buffer(self, name: str, dtype: DType, writable: bool = False) -> Memory:
        """A global buffer parameter (a pointer in the kernel arguments)."""
        self._storable(dtype, f"buffer {name}")
        m = Memory(self._claim(name, "buf"), dtype, self, "global", len(self.buffers) + len(self.scalars), writable)
        self.buffers.append(m)
        return m

    def scalar(self, name: str, dtype: DType = i32) -> ScalarParam:
        """An int32 parameter passed by value."""
        if dtype != i32:
            raise IRError(f"scalar parameter {name}: only int32 scalars are supported, got {dtype}")
        p = ScalarParam(self._claim(name, "arg"), len(self.buffers) + len(self.scalars))
        self.scalars.append(p)
        return p

    def local_array(self, dtype: DType, size: int, name: Optional[str] = None) -> Memory:
        """Workgroup-shared memory of `size` elements (LDS on AMD, shared memory on NVIDIA)."""
        self._storable(dtype, f"local array {name or ''}".rstrip())
        if not isinstance(size, int) or size < 1:
            raise IRError(f"local array {name or ''}: size must be an int >= 1, got {size!r}")
        m = Memory(self._claim(name, "lds"), dtype, self, "local", size=size)
        if self.lds_bytes + m.nbytes > MAX_LDS_BYTES:
            raise IRError(f"{self.name}: local arrays need {self.lds_bytes + m.nbytes} bytes; at most {MAX_LDS_BYTES}")
        self.locals.append(m)
        return m

    def var(self, dtype: DType, init: ExprLike = 0, name: Optional[str] = None) -> Var:
        """A mutable per-thread variable, assigned `init` here."""
        if not isinstance(dtype, DType):
            raise IRError(f"var: {dtype!r} is not a dtype")
        v = Var(self._claim(name, "v"), dtype, self)
        self.vars.append(v)
        v.set(init)
        return v

    def workgroup_id(self, dim: int) -> Expr:
        return Special("wg", dim)

    def local_id(self, dim: int) -> Expr:
        return Special("lid", dim)

    def workgroup_size(self, dim: int) -> Expr:
        """local_size[dim] as an expression (a constant: the local size is fixed when the kernel is built)."""
        return Special("lsize", dim)

    def global_id(self, dim: int) -> Expr:
        """workgroup_id(dim) * local_size[dim] + local_id(dim)"""
        return Special("wg", dim) * self.local_size[dim] + Special("lid", dim)

    def barrier(self) -> None:
        self._emit(Barrier())

    @contextmanager
    def if_(self, cond: ExprLike) -> Iterator[None]:
        cond = _as_expr(cond, "if_")
        if cond.dtype != bool_:
            raise IRError(f"if_ needs a bool condition, got {cond.dtype}")
        stmt = If(cond, [])
        self._emit(stmt)
        self._blocks.append(stmt.body)
        try:
            yield
        finally:
            self._blocks.pop()

    @contextmanager
    def range(self, start: ExprLike, end: Optional[ExprLike] = None, step: int = 1,
              name: Optional[str] = None) -> Iterator[Expr]:
        """`with k.range(a, b) as i:` loops i over a, a+step, ... < b (or 0..a with one bound)."""
        if end is None:
            start, end = 0, start
        if not isinstance(step, int) or step < 1:
            raise IRError(f"range step must be a constant int >= 1, got {step!r}")
        v = Var(self._claim(name, "i"), i32, self, loop=True)
        self.vars.append(v)
        s, e = lift(start, i32), lift(end, i32)
        for what, x in (("start", s), ("end", e)):
            if x.dtype != i32:
                raise IRError(f"range {what} must be int32, got {x.dtype}")
        stmt = Range(v, s, e, [], step)
        self._emit(stmt)
        self._blocks.append(stmt.body)
        try:
            yield VarRef(v)
        finally:
            self._blocks.pop()

    def _emit(self, stmt: Stmt) -> None:
        self._blocks[-1].append(stmt)

    def canonical(self) -> str:
        """The kernel as stable text (the same kernel built twice gives the same text)."""
        from compiler.printer import render
        return render(self)

    def key(self) -> str:
        """A stable digest of the canonical text, for caches."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    def validate(self) -> None:
        """Raise IRError listing every problem (see compiler.validate)."""
        from compiler.validate import validate
        validate(self)


# --- traversal ---

def children(e: Expr) -> tuple[Expr, ...]:
    """The operands of an expression node."""
    if isinstance(e, BinOp):
        return (e.a, e.b)
    if isinstance(e, (UnOp, Cast)):
        return (e.a,)
    if isinstance(e, Where):
        return (e.cond, e.a, e.b)
    if isinstance(e, MulAdd):
        return (e.a, e.b, e.c)
    if isinstance(e, Load):
        return (e.index,)
    return ()


def subexprs(e: Expr) -> Iterator[Expr]:
    """e and every expression under it."""
    stack = [e]
    while stack:
        x = stack.pop()
        yield x
        stack.extend(children(x))


def stmt_exprs(s: Stmt) -> tuple[Expr, ...]:
    """The expressions a statement evaluates itself (not those of nested blocks)."""
    if isinstance(s, Store):
        return (s.index, s.value)
    if isinstance(s, Assign):
        return (s.value,)
    if isinstance(s, If):
        return (s.cond,)
    if isinstance(s, Range):
        return (s.start, s.end)
    return ()
