"""The kernel IR: expressions and statements for elementwise, reduction and tiled-matmul kernels.

A kernel has global buffers and int32 scalars as parameters, reads special indices (workgroup id, local
id, workgroup size), and runs statements: stores, assignments to mutable variables, uniform or divergent
ifs, counted loops, local (shared) arrays and barriers. Builders read like the kernel:

    k = Kernel("add", local_size=(64, 1, 1))
    a, b, out = k.buffer("a", f32), k.buffer("b", f32), k.buffer("out", f32, writable=True)
    n = k.scalar("n", i32)
    i = k.global_id(0)
    with k.if_(i < n):
        out[i] = a[i] + b[i]
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Union


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

class Expr:
    """An expression node; Python operators build more nodes."""
    dtype: DType

    def _bin(self, op: str, other: "ExprLike", swap: bool = False) -> "Expr":
        o = lift(other, self.dtype)
        a, b = (o, self) if swap else (self, o)
        return BinOp(op, a, b)

    def __add__(self, o): return self._bin("add", o)
    def __radd__(self, o): return self._bin("add", o, True)
    def __sub__(self, o): return self._bin("sub", o)
    def __rsub__(self, o): return self._bin("sub", o, True)
    def __mul__(self, o): return self._bin("mul", o)
    def __rmul__(self, o): return self._bin("mul", o, True)
    def __truediv__(self, o): return self._bin("div", o)
    def __floordiv__(self, o): return self._bin("div", o)
    def __mod__(self, o): return self._bin("mod", o)
    def __lt__(self, o): return self._bin("lt", o)
    def __le__(self, o): return self._bin("le", o)
    def __gt__(self, o): return self._bin("lt", o, True)
    def __ge__(self, o): return self._bin("le", o, True)
    def __and__(self, o): return self._bin("and", o)
    def __or__(self, o): return self._bin("or", o)
    def __neg__(self): return UnOp("neg", self)

    def eq(self, o: "ExprLike") -> "Expr":
        return self._bin("eq", o)

    def ne(self, o: "ExprLike") -> "Expr":
        return self._bin("ne", o)

    def cast(self, dtype: DType) -> "Expr":
        return Cast(self, dtype)

    __hash__ = object.__hash__


ExprLike = Union[Expr, int, float, bool]


def lift(v: ExprLike, like: DType) -> Expr:
    """Python numbers become constants of the other operand's type; variables read as their value."""
    if isinstance(v, Expr):
        return v
    if isinstance(v, Var):
        return VarRef(v)
    if isinstance(v, bool):
        return Const(v, bool_)
    if isinstance(v, int) and like.kind == "f":
        return Const(float(v), like)
    if isinstance(v, int):
        return Const(v, i32)
    if isinstance(v, float):
        if like.kind != "f":
            raise IRError(f"float constant {v} used with {like}: cast one side explicitly")
        return Const(v, like)
    raise IRError(f"{v!r} is not an expression or a number")


@dataclass(eq=False)
class Const(Expr):
    value: Union[int, float, bool]
    dtype: DType


@dataclass(eq=False)
class Special(Expr):
    """workgroup id ('wg'), local id ('lid') or workgroup size ('lsize') in dimension 0..2."""
    kind: str
    dim: int
    dtype: DType = i32


@dataclass(eq=False)
class ScalarParam(Expr):
    name: str
    index: int
    dtype: DType = i32


@dataclass(eq=False)
class BinOp(Expr):
    op: str
    a: Expr
    b: Expr

    def __post_init__(self) -> None:
        if self.a.dtype != self.b.dtype:
            raise IRError(f"{self.op}: operand types differ ({self.a.dtype} and {self.b.dtype}); cast one side")
        if self.op in ("and", "or") and self.a.dtype.kind == "f":
            raise IRError(f"{self.op} is not defined on {self.a.dtype}")
        self.dtype = bool_ if self.op in ("lt", "le", "eq", "ne") else self.a.dtype


@dataclass(eq=False)
class UnOp(Expr):
    op: str  # neg exp2 log2 sqrt sin
    a: Expr

    def __post_init__(self) -> None:
        if self.op != "neg" and self.a.dtype.kind != "f":
            raise IRError(f"{self.op} needs a float operand, got {self.a.dtype}")
        self.dtype = self.a.dtype


@dataclass(eq=False)
class Cast(Expr):
    a: Expr
    dtype: DType


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


def maximum(a: Expr, b: ExprLike) -> Expr:
    return BinOp("max", a, lift(b, a.dtype))


def minimum(a: Expr, b: ExprLike) -> Expr:
    return BinOp("min", a, lift(b, a.dtype))


def where(c: Expr, a: ExprLike, b: ExprLike) -> Expr:
    like = a.dtype if isinstance(a, Expr) else b.dtype if isinstance(b, Expr) else f32
    return Where(c, lift(a, like), lift(b, like))


def exp2(a: Expr) -> Expr:
    return UnOp("exp2", a)


def log2(a: Expr) -> Expr:
    return UnOp("log2", a)


def sqrt(a: Expr) -> Expr:
    return UnOp("sqrt", a)


def sin(a: Expr) -> Expr:
    return UnOp("sin", a)


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
    """A mutable per-thread variable (accumulators, loop counters)."""
    name: str
    dtype: DType
    kernel: "Kernel"

    def set(self, value: ExprLike) -> None:
        v = lift(value, self.dtype)
        if v.dtype != self.dtype:
            raise IRError(f"assignment of {v.dtype} to variable {self.name} of {self.dtype}")
        self.kernel._emit(Assign(self, v))

    @property
    def value(self) -> Expr:
        return VarRef(self)

    # A Var reads as its value in expressions.
    def __add__(self, o): return VarRef(self) + o
    def __radd__(self, o): return o + VarRef(self)
    def __sub__(self, o): return VarRef(self) - o
    def __mul__(self, o): return VarRef(self) * o
    def __rmul__(self, o): return o * VarRef(self)
    def __lt__(self, o): return VarRef(self) < o
    def __truediv__(self, o): return VarRef(self) / o
    def __mod__(self, o): return VarRef(self) % o


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
    var: Var
    start: Expr
    end: Expr
    body: list


@dataclass(eq=False)
class Barrier:
    pass


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
        if not self.name.isidentifier():
            raise IRError(f"kernel name {self.name!r} must be an identifier")
        if len(self.local_size) != 3 or any(d < 1 for d in self.local_size):
            raise IRError(f"local_size must be three sizes >= 1, got {self.local_size}")
        self._blocks: list[list] = [self.body]

    @property
    def params(self) -> list[Union[Memory, ScalarParam]]:
        return sorted([*self.buffers, *self.scalars], key=lambda p: p.index)

    def buffer(self, name: str, dtype: DType, writable: bool = False) -> Memory:
        m = Memory(name, dtype, self, "global", len(self.buffers) + len(self.scalars), writable)
        self.buffers.append(m)
        return m

    def scalar(self, name: str, dtype: DType = i32) -> ScalarParam:
        if dtype != i32:
            raise IRError(f"scalar parameter {name}: only int32 scalars are supported, got {dtype}")
        p = ScalarParam(name, len(self.buffers) + len(self.scalars))
        self.scalars.append(p)
        return p

    def local_array(self, dtype: DType, size: int, name: str | None = None) -> Memory:
        m = Memory(name or f"lds{len(self.locals)}", dtype, self, "local", size=size)
        self.locals.append(m)
        return m

    def var(self, dtype: DType, init: ExprLike = 0, name: str | None = None) -> Var:
        v = Var(name or f"v{len(self.vars)}", dtype, self)
        self.vars.append(v)
        v.set(init)
        return v

    def workgroup_id(self, dim: int) -> Expr:
        return Special("wg", dim)

    def local_id(self, dim: int) -> Expr:
        return Special("lid", dim)

    def global_id(self, dim: int) -> Expr:
        return Special("wg", dim) * self.local_size[dim] + Special("lid", dim)

    def barrier(self) -> None:
        self._emit(Barrier())

    @contextmanager
    def if_(self, cond: Expr) -> Iterator[None]:
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
    def range(self, start: ExprLike, end: ExprLike) -> Iterator[Expr]:
        v = Var(f"i{len(self.vars)}", i32, self)
        self.vars.append(v)
        stmt = Range(v, lift(start, i32), lift(end, i32), [])
        self._emit(stmt)
        self._blocks.append(stmt.body)
        try:
            yield VarRef(v)
        finally:
            self._blocks.pop()

    def _emit(self, stmt: Stmt) -> None:
        self._blocks[-1].append(stmt)

    def key(self) -> str:
        """A stable digest of the whole kernel, for caches."""
        from compiler.printer import render
        return hashlib.sha256(render(self).encode()).hexdigest()
