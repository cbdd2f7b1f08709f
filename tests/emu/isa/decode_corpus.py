"""Kernels for the decoder cross-check: what the tensor layer builds (elementwise ops on every dtype, casts, where,
comparisons, transcendentals, reductions over axes, small and tiled matmuls) and the compiler tests' IR kernels
(a local-memory row reduction, an LDS matmul, every operation in one kernel)."""
from __future__ import annotations

from typing import Callable, Iterator

from compiler import ir
from tests.compiler.sample_kernels import row_sum
from tensor import Tensor
from tensor.codegen import kernel_for
from tensor.lazy import LazyNode

DTYPES = ("float32", "float16", "int32", "bool")


def _input(shape: tuple[int, ...], dtype: str) -> Tensor:
    # A realized buffer as the scheduler leaves it: codegen reads it as a kernel parameter.
    return Tensor(LazyNode("buffer", shape, dtype, "CPU"))


def _kernel_node(t: Tensor) -> LazyNode:
    """The node a kernel computes: the tensor's own node, or the reduce a keepdims view sits on."""
    node = t.node
    while node.kind == "view" and node.srcs and node.srcs[0].kind in ("reduce", "matmul"):
        node = node.srcs[0]
    return node


def _tensor_graphs() -> Iterator[tuple[str, Callable[[], Tensor]]]:
    unary = ("__neg__", "exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid", "relu", "abs")
    binary = ("__add__", "__sub__", "__mul__", "__truediv__", "__floordiv__", "__mod__", "__pow__", "maximum",
              "minimum", "__lt__", "__le__", "__eq__", "__ne__", "__and__", "__or__", "__xor__")
    for dt in DTYPES:
        for name in unary + ("__invert__",):
            yield f"{name}_{dt}", lambda dt=dt, name=name: getattr(_input((6, 5), dt), name)()
        for name in binary:
            yield f"{name}_{dt}", lambda dt=dt, name=name: getattr(_input((6, 5), dt), name)(_input((6, 5), dt))
        for to in DTYPES:
            yield f"cast_{dt}_{to}", lambda dt=dt, to=to: _input((7, 3), dt).cast(to)
        yield f"where_{dt}", lambda dt=dt: Tensor.where(_input((4, 9), "bool"), _input((4, 9), dt),
                                                         _input((4, 9), dt))
    for dt in ("float32", "float16", "int32"):
        for axis in (0, 1, None):
            yield f"sum_{dt}_{axis}", lambda dt=dt, axis=axis: _input((33, 70), dt).sum(axis=axis)
            yield f"max_{dt}_{axis}", lambda dt=dt, axis=axis: _input((33, 70), dt).max(axis=axis)
    for m, k, n in ((2, 3, 4), (8, 8, 8), (64, 64, 64), (70, 45, 130), (128, 256, 96)):
        for dt in ("float32", "float16"):
            yield f"matmul_{m}x{k}x{n}_{dt}", lambda m=m, k=k, n=n, dt=dt: _input((m, k), dt) @ _input((k, n), dt)


def tensor_kernels() -> Iterator[tuple[str, ir.Kernel]]:
    """(label, kernel) for each tensor-layer graph above that the tensor layer accepts."""
    seen = set()
    for label, build in _tensor_graphs():
        try:
            node = _kernel_node(build())
        except (TypeError, ValueError, RuntimeError):
            continue  # an op the tensor layer refuses for this dtype (e.g. sqrt of bool)
        kernel = kernel_for(node)[0]
        if kernel.name + label not in seen:
            seen.add(kernel.name + label)
            yield label, kernel


def ir_kernels() -> Iterator[tuple[str, ir.Kernel]]:
    """Hand-written IR kernels in the style of tests/compiler: LDS reduction, LDS matmul, every operation."""
    yield "row_sum", row_sum()
    yield "lds_matmul", _lds_matmul()
    yield "every_op", _every_op()


def _lds_matmul(tile: int = 8) -> ir.Kernel:
    k = ir.Kernel("lds_matmul", local_size=(tile, tile, 1))
    A, B, C = k.buffer("A", ir.f32), k.buffer("B", ir.f32), k.buffer("C", ir.f32, writable=True)
    M, N, K = k.scalar("M"), k.scalar("N"), k.scalar("K")
    tx, ty = k.local_id(0), k.local_id(1)
    col, row = k.workgroup_id(0) * tile + tx, k.workgroup_id(1) * tile + ty
    As, Bs = k.local_array(ir.f32, tile * tile, "As"), k.local_array(ir.f32, tile * tile, "Bs")
    acc = k.var(ir.f32, 0, "acc")
    with k.range(0, (K + (tile - 1)) // tile) as t:
        in_a, in_b = (row < M) & (t * tile + tx < K), (t * tile + ty < K) & (col < N)
        As[ty * tile + tx] = ir.where(in_a, A[ir.where(in_a, row * K + t * tile + tx, 0)], 0)
        Bs[ty * tile + tx] = ir.where(in_b, B[ir.where(in_b, (t * tile + ty) * N + col, 0)], 0)
        k.barrier()
        with k.range(0, tile) as kk:
            acc.set(ir.muladd(As[ty * tile + kk], Bs[kk * tile + tx], acc))
        k.barrier()
    with k.if_((row < M) & (col < N)):
        C[row * N + col] = acc
    return k


def _every_op() -> ir.Kernel:
    k = ir.Kernel("every_op", local_size=(64, 1, 1))
    fa, ha, ia = k.buffer("fa", ir.f32), k.buffer("ha", ir.f16), k.buffer("ia", ir.i32)
    fo, ho, io = (k.buffer(n, d, writable=True) for n, d in (("fo", ir.f32), ("ho", ir.f16), ("io", ir.i32)))
    n, i = k.scalar("n"), k.global_id(0)
    with k.if_(i < n):
        for src, out, dt in ((fa, fo, ir.f32), (ha, ho, ir.f16)):
            x, y = src[i], src[(i + 1) % n]
            r = x + y - x * y / (y + 3.0) + (x % 1.5) - (-x) + ir.maximum(x, y) + ir.minimum(x, y)
            r = r + ir.exp2(x) + ir.log2(x * x + 1.0) + ir.sqrt(x * x) + ir.sin(x) + ir.exp(y) + ir.log(y) + ir.cos(x)
            r = r + ir.where((x < y) | (x <= y) & ~(x.eq(y)) ^ x.ne(y), x, y)
            out[i] = r + x.cast(ir.i32).cast(dt) + x.cast(ir.bool_).cast(dt)
        p, q = ia[i], ia[(i + 1) % n]
        io[i] = p + q - p * q + p // q + p % q + ir.maximum(p, q) + ir.minimum(p, q) + (p & q) + (p | q) + \
            (p ^ q) + ~p + ir.where(p < q, 1, 0) + p.cast(ir.f32).cast(ir.i32)
    return k
