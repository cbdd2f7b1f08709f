"""Kernels the compiler tests build for every target: elementwise, a row reduction, a tiled matmul, and one
kernel that uses every operation on every dtype."""
from __future__ import annotations

from typing import Callable

from compiler.ir import (DType, Kernel, bool_, cos, exp, exp2, f16, f32, i32, log, log2, maximum, minimum, muladd,
                         sin, sqrt, where)


def elementwise(name: str, dtype: DType, fn: Callable, local: int = 64) -> Kernel:
    """out[i] = fn(a[i], b[i]) for i < n."""
    k = Kernel(name, local_size=(local, 1, 1))
    a, b, out = k.buffer("a", dtype), k.buffer("b", dtype), k.buffer("out", dtype, writable=True)
    n = k.scalar("n")
    i = k.global_id(0)
    with k.if_(i < n):
        out[i] = fn(a[i], b[i])
    return k


def row_sum(width: int = 64) -> Kernel:
    """One workgroup per row: each thread sums a strided slice, then a tree reduction in local memory."""
    k = Kernel("row_sum", local_size=(width, 1, 1))
    x, out = k.buffer("x", f32), k.buffer("out", f32, writable=True)
    cols = k.scalar("cols")
    row, t = k.workgroup_id(0), k.local_id(0)
    acc = k.var(f32, 0.0, "acc")
    with k.range(0, (cols + (width - 1)) // width) as j:
        c = j * width + t
        with k.if_(c < cols):
            acc.set(acc + x[row * cols + c])
    tile = k.local_array(f32, width, "tile")
    tile[t] = acc
    k.barrier()
    step = width // 2
    while step >= 1:
        with k.if_(t < step):
            tile[t] = tile[t] + tile[t + step]
        k.barrier()
        step //= 2
    with k.if_(t.eq(0)):
        out[row] = tile[0]
    return k


def matmul(tile: int = 8, dtype: DType = f32) -> Kernel:
    """C[M,N] = A[M,K] @ B[K,N]; tiles of A and B staged in local memory between barriers."""
    k = Kernel("matmul", local_size=(tile, tile, 1))
    A, B, C = k.buffer("A", dtype), k.buffer("B", dtype), k.buffer("C", dtype, writable=True)
    M, N, K = k.scalar("M"), k.scalar("N"), k.scalar("K")
    tx, ty = k.local_id(0), k.local_id(1)
    col, row = k.workgroup_id(0) * tile + tx, k.workgroup_id(1) * tile + ty
    As, Bs = k.local_array(dtype, tile * tile, "As"), k.local_array(dtype, tile * tile, "Bs")
    acc = k.var(dtype, 0, "acc")
    with k.range(0, (K + (tile - 1)) // tile) as t:
        ka, kb = t * tile + tx, t * tile + ty
        in_a, in_b = (row < M) & (ka < K), (kb < K) & (col < N)
        As[ty * tile + tx] = where(in_a, A[where(in_a, row * K + ka, 0)], 0)
        Bs[ty * tile + tx] = where(in_b, B[where(in_b, kb * N + col, 0)], 0)
        k.barrier()
        with k.range(0, tile) as kk:
            acc.set(muladd(As[ty * tile + kk], Bs[kk * tile + tx], acc))  # fused on floats where the target can
        k.barrier()
    with k.if_((row < M) & (col < N)):
        C[row * N + col] = acc
    return k


def every_op() -> Kernel:
    """Every operation on every dtype it takes, so each target's backend is shown all of them (an instruction a
    backend cannot select aborts the process, so this must build everywhere)."""
    k = Kernel("every_op", local_size=(32, 2, 2))
    fa, ha, ia = k.buffer("fa", f32), k.buffer("ha", f16), k.buffer("ia", i32)
    fo, ho, io = k.buffer("fo", f32, writable=True), k.buffer("ho", f16, writable=True), k.buffer("io", i32, writable=True)
    n = k.scalar("n")
    lds = k.local_array(f32, 32 * 4, "scratch")
    i = k.global_id(0) + k.local_id(1) * 0 + k.local_id(2) * 0 + k.workgroup_id(1) * 0 + k.workgroup_id(2) * 0
    flat = k.local_id(0) + k.local_id(1) * 32 + k.local_id(2) * 64
    lds[flat] = fa[where(i < n, i, 0)]
    k.barrier()
    with k.if_(i < n):
        for src, out, dt in ((fa, fo, f32), (ha, ho, f16)):
            x, y = src[i], src[(i + 1) % n]
            r = x + y - x * y / (y + 3.0) + (x % 1.5) - (-x)
            r = r + maximum(x, y) + minimum(x, y) + exp2(x) + log2(x * x + 1.0) + sqrt(x * x) + sin(x)
            r = r + exp(y) + log(y * y + 1.0) + cos(x)
            r = r + where((x < y) | (x <= y) & ~(x.eq(y)) ^ x.ne(y), x, y)
            r = r + x.cast(i32).cast(dt) + x.cast(bool_).cast(dt) + x.cast(f16 if dt == f32 else f32).cast(dt)
            out[i] = r + lds[flat].cast(dt) + k.workgroup_size(0).cast(dt)
        p, q = ia[i], ia[(i + 1) % n]
        s = p + q - p * q + p // q + p % q + maximum(p, q) + minimum(p, q) + (-p) + (p & q) + (p | q) + (p ^ q) + ~p
        io[i] = s + where(p < q, 1, 0) + (p <= q).cast(i32) + p.eq(q).cast(i32) + p.cast(bool_).cast(i32) + \
            p.cast(f32).cast(i32)
    return k
