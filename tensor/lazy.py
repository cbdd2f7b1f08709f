"""The lazy graph: what a tensor is before it is computed.

A `LazyNode` is one of
- "buffer": data on a device (contiguous, row-major), from a realized node or an upload;
- "host": numpy data not yet uploaded;
- "const": one value broadcast over a shape (no memory);
- "ewise": an elementwise operation (arg: the op name) on sources of the node's shape;
- "reduce": sum or max (arg: (op, axes)) keeping reduced axes as size 1;
- "matmul": [..., M, K] @ [..., K, N] with equal batch shapes;
- "view": a movement op (arg: (kind, params)) that changes how the source is indexed, never its data.

Realizing a node turns it into a "buffer" node in place and drops its sources, so the graph behind it can be
freed; tensors keep pointing at the same node.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Optional

# Elementwise ops and how many sources each takes; the codegen gives them numpy semantics.
UNARY = ("neg", "abs", "exp", "log", "sqrt", "sin", "cos", "relu", "sigmoid", "tanh", "not", "cast")
BINARY = ("add", "sub", "mul", "div", "floordiv", "mod", "pow", "maximum", "minimum", "lt", "le", "eq", "ne", "and", "or", "xor")
TERNARY = ("where",)
COMPARE = ("lt", "le", "eq", "ne")
VIEWS = ("reshape", "permute", "expand", "slice", "pad")

_ids = itertools.count()
STORED = ("buffer", "host", "reduce", "matmul")  # kinds always computed into memory before use
MAX_FUSED_DEPTH = 64


def prod(xs: Any) -> int:
    return math.prod(xs)


class LazyNode:
    """One node of the lazy graph (see the module docstring)."""
    __slots__ = ("kind", "shape", "dtype", "device", "srcs", "arg", "buffer", "runtime", "id", "base", "depth",
                 "__weakref__")

    def __init__(self, kind: str, shape: tuple[int, ...], dtype: str, device: str, srcs: tuple["LazyNode", ...] = (),
                 arg: Any = None):
        self.kind, self.shape, self.dtype, self.device, self.srcs, self.arg = kind, tuple(shape), dtype, device, srcs, arg
        self.buffer: Any = None  # the device Buffer once realized
        self.runtime: Any = None  # the tensor runtime that owns the buffer
        self.base: Optional[LazyNode] = None  # the node whose buffer this one shares (a reshape), kept alive
        self.id = next(_ids)
        # Fused ops since the last node that is stored anyway: long chains are cut into kernels of at most
        # MAX_FUSED_DEPTH so expressions (and the compilers' recursion over them) stay bounded.
        fused = [s.depth for s in srcs if not s.stored]
        self.depth = 1 + max(fused, default=0) if kind in ("ewise", "view") else 0

    @property
    def size(self) -> int:
        return prod(self.shape)

    @property
    def realized(self) -> bool:
        return self.kind == "buffer"

    @property
    def stored(self) -> bool:
        """Whether this node's value is read from memory by whatever uses it (a kernel boundary)."""
        return self.kind in STORED or self.depth >= MAX_FUSED_DEPTH

    def become_buffer(self, runtime: Any, buffer: Any) -> None:
        """This node's value now lives in `buffer`; the graph behind it is no longer needed.

        The order is what other threads may rely on without a lock: buffer and runtime are set before the kind
        says "buffer", and the kind changes before the sources and data go. So a thread that sees kind "buffer"
        finds the buffer, and one that reads `arg` first and then sees kind "host" holds the data.
        """
        self.buffer, self.runtime = buffer, runtime
        self.kind = "buffer"
        self.srcs, self.arg = (), None

    def become_alias(self, base: "LazyNode") -> None:
        """This node is a reshape of realized `base`: it reads base's buffer, which base keeps owning."""
        self.base, self.buffer, self.runtime = base, base.buffer, base.runtime  # base first: __del__ must not free it
        self.kind = "buffer"
        self.srcs, self.arg = (), None

    def __del__(self) -> None:
        if self.buffer is not None and self.runtime is not None and self.base is None:
            try:
                self.runtime.release(self.buffer)
            except Exception:  # interpreter shutdown: the device may already be closed
                pass

    def __repr__(self) -> str:
        return f"<{self.kind} {self.arg if self.kind != 'host' else ''} {self.shape} {self.dtype} on {self.device}>"


# --- movement ops: output shapes and checks ---

def reshape_shape(shape: tuple[int, ...], new: tuple[int, ...]) -> tuple[int, ...]:
    """new with one -1 resolved; an error when the sizes differ."""
    new = tuple(int(d) for d in new)
    if new.count(-1) > 1:
        raise ValueError(f"reshape {shape} to {new}: only one dimension may be -1")
    if -1 in new:
        rest = prod(d for d in new if d != -1)
        if rest == 0 or prod(shape) % rest:
            raise ValueError(f"cannot reshape {shape} ({prod(shape)} elements) to {new}")
        new = tuple(prod(shape) // rest if d == -1 else d for d in new)
    if any(d < 0 for d in new) or prod(new) != prod(shape):
        raise ValueError(f"cannot reshape {shape} ({prod(shape)} elements) to {new} ({prod(new)} elements)")
    return new


def permute_shape(shape: tuple[int, ...], order: tuple[int, ...]) -> tuple[int, ...]:
    if sorted(order) != list(range(len(shape))):
        raise ValueError(f"permute of a {len(shape)}-d tensor needs each axis 0..{len(shape) - 1} once, got {order}")
    return tuple(shape[i] for i in order)


def expand_shape(shape: tuple[int, ...], new: tuple[int, ...]) -> tuple[int, ...]:
    if len(new) != len(shape) or any(s != n and s != 1 for s, n in zip(shape, new)):
        raise ValueError(f"cannot expand {shape} to {new}: only size-1 axes expand (reshape first to add axes)")
    return tuple(new)


def slice_shape(shape: tuple[int, ...], spec: tuple[tuple[int, int, int], ...]) -> tuple[int, ...]:
    """spec: per axis (start, step, count); every index start + i*step (i < count) must be inside the axis."""
    out = []
    for n, (start, step, count) in zip(shape, spec):
        if step == 0 or count < 0 or (count and not (0 <= start < n and 0 <= start + (count - 1) * step < n)):
            raise ValueError(f"slice (start {start}, step {step}, count {count}) is outside an axis of size {n}")
        out.append(count)
    return tuple(out)


def pad_shape(shape: tuple[int, ...], pads: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    if len(pads) != len(shape) or any(b < 0 or a < 0 for b, a in pads):
        raise ValueError(f"pad of a {len(shape)}-d tensor takes (before, after) >= 0 per axis, got {pads}")
    return tuple(n + b + a for n, (b, a) in zip(shape, pads))


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy's broadcasting rule, with an error naming the shapes."""
    ndim = max(len(s) for s in shapes)
    out = []
    for i in range(ndim):
        dims = {s[i - ndim + len(s)] for s in shapes if i - ndim + len(s) >= 0} - {1}
        if len(dims) > 1:
            raise ValueError(f"shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def walk(roots: list[LazyNode], stop: Optional[Any] = None) -> list[LazyNode]:
    """Every node reachable from roots, sources before users; `stop(node)` true keeps its sources out."""
    seen: set[int] = set()
    order: list[LazyNode] = []
    # A node is pushed to be visited, then again under the DONE marker to be emitted once its sources were.
    stack: list[Any] = list(reversed(roots))
    while stack:
        node = stack.pop()
        if node is _DONE:
            order.append(stack.pop())
            continue
        if node.id in seen:
            continue
        seen.add(node.id)
        stack.append(node)
        stack.append(_DONE)
        if stop is None or not stop(node):
            for s in reversed(node.srcs):
                if s.id not in seen:
                    stack.append(s)
    return order


_DONE = object()  # walk's marker: the node under it has had its sources emitted
