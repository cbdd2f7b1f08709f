"""Host builds of kernels, run on the CPU over numpy arrays and checked against numpy."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler import KernelCache, compile_kernel
from compiler.ir import (IRError, Kernel, bool_, exp2, f16, f32, i32, log2, maximum, minimum, muladd, sin, sqrt,
                         where)
from compiler.llvm_render import RowRange, split_rows
from compiler.toolchain import host_features
from sample_kernels import elementwise, matmul, row_sum


def blocks(n: int, size: int) -> int:
    return -(-n // size)


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000])
def test_elementwise_float32_odd_sizes(cache, n):
    ck = compile_kernel(elementwise("axpb", f32, lambda x, y: x * 3.0 + maximum(y, 0.5)), "host", cache)
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    out = np.full(n + 1, np.nan, np.float32)  # one element past the end must stay untouched
    ck(a, b, out[:n], n, global_size=(blocks(n, 64), 1, 1))
    np.testing.assert_allclose(out[:n], a * np.float32(3) + np.maximum(b, np.float32(0.5)), rtol=1e-6)
    assert np.isnan(out[n])


@pytest.mark.parametrize("n", [3, 200])
def test_elementwise_mul_int32_is_exact(cache, n):
    ck = compile_kernel(elementwise("imul", i32, lambda x, y: x * y - 7), "host", cache)
    a = (np.arange(n, dtype=np.int32) - n // 2) * 40000  # products wrap around int32, as in C
    b = np.arange(n, dtype=np.int32) * 3 + 1
    out = np.zeros(n, np.int32)
    ck(a, b, out, n, global_size=(blocks(n, 64), 1, 1))
    np.testing.assert_array_equal(out, a * b - np.int32(7))


def test_integer_division_truncates_and_never_traps(cache):
    ck = compile_kernel(elementwise("idivmod", i32, lambda x, y: (x // y) * 1000 + x % y), "host", cache)
    a = np.array([7, -7, 7, -7, 0, 5, -2**31, 123, -2**31, 9], np.int32)
    b = np.array([2, 2, -2, -2, 3, 5, -1, -1, 7, 0], np.int32)
    out = np.zeros(10, np.int32)
    ck(a, b, out, 9, global_size=(1, 1, 1))  # the division by zero runs too (index 9 is n)
    q = [int(x / y) for x, y in zip(a[:9].tolist(), b[:9].tolist())]  # C: toward zero
    r = [x - int(x / y) * y for x, y in zip(a[:9].tolist(), b[:9].tolist())]
    expect = np.array([qq * 1000 + rr for qq, rr in zip(q, r)], np.int64).astype(np.int32)  # wraps like int32
    np.testing.assert_array_equal(out[:9], expect)
    ck2 = compile_kernel(elementwise("izero", i32, lambda x, y: x // y + x % y), "host", cache)
    ck2(a, b, out, 10, global_size=(1, 1, 1))  # x // 0 is unspecified, but the process survives it


def test_float16_elementwise(cache):
    ck = compile_kernel(elementwise("h", f16, lambda x, y: where(x < y, exp2(x), y * x + 1.0)), "host", cache)
    a = np.linspace(-2, 2, 100).astype(np.float16)
    b = (np.cos(np.arange(100)) + 0.25).astype(np.float16)
    out = np.zeros(100, np.float16)
    ck(a, b, out, 100, global_size=(2, 1, 1))
    expect = np.where(a < b, np.exp2(a.astype(np.float32)).astype(np.float16), b * a + np.float16(1))
    np.testing.assert_allclose(out.astype(np.float32), expect.astype(np.float32), rtol=1e-3)


def test_unary_math_and_casts_match_numpy(cache):
    k = Kernel("unary", local_size=(16, 1, 1))
    x = k.buffer("x", f32)
    outs = {name: k.buffer(name, dt, writable=True) for name, dt in
            (("e", f32), ("l", f32), ("s", f32), ("q", f32), ("ng", f32), ("ci", i32), ("cb", i32), ("ch", f16))}
    n = k.scalar("n")
    i = k.global_id(0)
    with k.if_(i < n):
        v = x[i]
        outs["e"][i] = exp2(v)
        outs["l"][i] = log2(maximum(v, 1e-3))
        outs["s"][i] = sin(v)
        outs["q"][i] = sqrt(where(v < 0.0, -v, v))
        outs["ng"][i] = -minimum(v, 2.0)
        outs["ci"][i] = v.cast(i32)
        outs["cb"][i] = v.cast(bool_).cast(i32)
        outs["ch"][i] = v.cast(f16)
    ck = compile_kernel(k, "host", cache)
    xs = np.array([0.0, -0.0, 1.5, -2.7, 3.25, 100.0, -7.5, 0.1, 1e10, -1e10, np.nan, 5e-4, 70000.0], np.float32)
    got = {name: np.zeros(len(xs), np.float16 if name == "ch" else np.int32 if name in ("ci", "cb") else np.float32)
           for name in outs}
    ck(xs, *got.values(), len(xs), global_size=(1, 1, 1))
    finite = ~np.isnan(xs)
    np.testing.assert_allclose(got["e"][finite][:8], np.exp2(xs[finite][:8]), rtol=1e-6)
    np.testing.assert_allclose(got["l"][finite], np.log2(np.fmax(xs[finite], np.float32(1e-3))), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["s"][:8], np.sin(xs[:8]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["q"][finite], np.sqrt(np.abs(xs[finite])), rtol=1e-7)
    np.testing.assert_array_equal(got["ng"][finite], -np.fmin(xs[finite], np.float32(2)))
    # float -> int saturates and maps NaN to 0; the rest truncates toward zero
    assert got["ci"].tolist() == [0, 0, 1, -2, 3, 100, -7, 0, 2**31 - 1, -2**31, 0, 0, 70000]
    assert got["cb"].tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], "NaN is truthy, like C"
    with np.errstate(over="ignore"):  # 70000 is past float16's range: both sides give inf
        np.testing.assert_array_equal(got["ch"], xs.astype(np.float16))


def test_comparisons_logic_and_nan(cache):
    k = Kernel("cmp", local_size=(8, 1, 1))
    a, b, out = k.buffer("a", f32), k.buffer("b", f32), k.buffer("out", i32, writable=True)
    i = k.global_id(0)
    x, y = a[i], b[i]
    bits = [x < y, x <= y, x > y, x >= y, x.eq(y), x.ne(y), (x < y) & (y < 2.0), (x < y) | (y < 2.0),
            (x < y) ^ (y < 2.0), ~(x < y)]
    word = where(bits[0], 1, 0)
    for j, bit in enumerate(bits[1:], 1):
        word = word | (bit.cast(i32) * (1 << j))
    out[i] = word + (maximum(x, y).ne(maximum(x, y))).cast(i32) * 4096  # maximum never returns NaN for one NaN
    ck = compile_kernel(k, "host", cache)
    xa = np.array([1, 2, 3, np.nan, 1, np.nan, -1, 5], np.float32)
    xb = np.array([2, 2, 1, 1, np.nan, np.nan, 3, 5], np.float32)
    out = np.zeros(8, np.int32)
    ck(xa, xb, out, global_size=(1, 1, 1))
    cols = [xa < xb, xa <= xb, xa > xb, xa >= xb, xa == xb, xa != xb, (xa < xb) & (xb < 2), (xa < xb) | (xb < 2),
            (xa < xb) ^ (xb < 2), ~(xa < xb)]
    expect = sum(c.astype(np.int32) << j for j, c in enumerate(cols))
    expect = expect + np.where(np.isnan(np.fmax(xa, xb)), 4096, 0)
    np.testing.assert_array_equal(out, expect)


def test_every_work_item_runs_once_with_its_ids_in_three_dimensions(cache):
    k = Kernel("ids", local_size=(4, 2, 2))
    out = k.buffer("out", i32, writable=True)
    gx = k.workgroup_id(0) * k.workgroup_size(0) + k.local_id(0)
    gy, gz = k.global_id(1), k.global_id(2)
    idx = (gz * 4 + gy) * 12 + gx  # grid (3, 2, 2) workgroups: 12 x 4 x 4 items
    out[idx] = out[idx] + gx + gy * 100 + gz * 10000 + 1
    ck = compile_kernel(k, "host", cache)
    out = np.zeros((4, 4, 12), np.int32)
    ck(out, global_size=(3, 2, 2))
    z, y, x = np.meshgrid(np.arange(4), np.arange(4), np.arange(12), indexing="ij")
    np.testing.assert_array_equal(out, x + y * 100 + z * 10000 + 1)


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 64), (7, 1000)])
def test_row_sum_with_local_memory_and_barriers(cache, rows, cols):
    ck = compile_kernel(row_sum(), "host", cache)
    x = np.random.default_rng(cols).standard_normal((rows, cols)).astype(np.float32)
    out = np.zeros(rows, np.float32)
    ck(x, out, cols, global_size=(rows, 1, 1))
    np.testing.assert_allclose(out, x.sum(axis=1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("m,n,kdim", [(8, 8, 8), (13, 7, 21), (32, 24, 5)])
def test_tiled_matmul_matches_numpy(cache, m, n, kdim):
    ck = compile_kernel(matmul(), "host", cache)
    rng = np.random.default_rng(m * n)
    a, b = rng.standard_normal((m, kdim)).astype(np.float32), rng.standard_normal((kdim, n)).astype(np.float32)
    c = np.zeros((m, n), np.float32)
    ck(a, b, c, m, n, kdim, global_size=(blocks(n, 8), blocks(m, 8), 1))
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)


def test_int32_matmul_is_exact(cache):
    ck = compile_kernel(matmul(tile=4, dtype=i32), "host", cache)
    rng = np.random.default_rng(1)
    a, b = rng.integers(-50, 50, (9, 11), dtype=np.int32), rng.integers(-50, 50, (11, 6), dtype=np.int32)
    c = np.zeros((9, 6), np.int32)
    ck(a, b, c, 9, 6, 11, global_size=(2, 3, 1))
    np.testing.assert_array_equal(c, a @ b)


def test_uniform_control_flow_around_barriers_and_values_across_them(cache):
    """Workgroups below `active` rotate their slice through local memory `rounds` times; the others copy."""
    k = Kernel("rotate", local_size=(16, 1, 1))
    src, dst = k.buffer("src", i32), k.buffer("dst", i32, writable=True)
    active, rounds = k.scalar("active"), k.scalar("rounds")
    t, g = k.local_id(0), k.global_id(0)
    tile = k.local_array(i32, 16, "tile")
    mine = k.var(i32, src[g], "mine")  # lives across every barrier below
    with k.if_(k.workgroup_id(0) < active):
        with k.range(0, rounds):
            tile[t] = mine
            k.barrier()
            mine.set(tile[(t + 1) % 16] + 1)
            k.barrier()
    dst[g] = mine
    ck = compile_kernel(k, "host", cache)
    src_ = np.arange(64, dtype=np.int32) * 10
    dst_ = np.zeros(64, np.int32)
    ck(src_, dst_, 2, 5, global_size=(4, 1, 1))
    expect = src_.copy()
    for w in range(2):
        expect[w * 16:(w + 1) * 16] = np.roll(src_[w * 16:(w + 1) * 16], -5) + 5
    np.testing.assert_array_equal(dst_, expect)


def test_muladd_fuses_on_floats_and_is_exact_on_int32(cache):
    """a * b + c: one rounding where the host has FMA (as BLAS), never worse than multiply-then-add; int32 wraps."""
    ck = compile_kernel(elementwise("fma", f32, lambda x, y: muladd(x, y, -1.0)), "host", cache)
    x = np.float32(1 + 2 ** -12)
    a = np.full(8, x, np.float32)
    out = np.zeros(8, np.float32)
    ck(a, a, out, 8, global_size=(1, 1, 1))
    exact = float(x) * float(x) - 1.0  # 2**-11 + 2**-24: the 2**-24 is lost when the product is rounded first
    separate = np.float32(x * x) - np.float32(1)
    assert separate != np.float32(exact)
    if "fma" in host_features():
        assert out[0] == np.float32(exact), "the host has FMA: a * b + c is rounded once"
    else:
        assert out[0] == separate
    cki = compile_kernel(elementwise("imad", i32, lambda x, y: muladd(x, y, 7)), "host", cache)
    ai = np.array([40000, -3, 2 ** 31 - 1], np.int32)
    outi = np.zeros(3, np.int32)
    cki(ai, ai, outi, 3, global_size=(1, 1, 1))
    np.testing.assert_array_equal(outi, ai * ai + np.int32(7))


def test_uniform_loops_run_around_the_x_thread_loop(cache):
    """A loop with uniform bounds inside a phase runs around the innermost thread loop (so the host vectorizes
    across threads); per-thread values that live across it are kept per thread, and a loop whose bounds depend
    on the thread stays inside."""
    k = Kernel("rows", local_size=(8, 4, 1))
    src, dst = k.buffer("src", f32), k.buffer("dst", f32, writable=True)
    n = k.scalar("n")
    g = k.global_id(1) * 8 + k.local_id(0)
    acc = k.var(f32, src[g], "acc")  # set before the loop, updated in it, read after it
    with k.range(0, n) as i:  # uniform: a kernel argument
        step = k.var(f32, acc.value * 0.5, "step")  # lives within one iteration
        with k.range(0, 3) as j:  # nested uniform loop
            acc.set(acc.value + step.value + (i * 3 + j).cast(f32))
    with k.if_(k.workgroup_id(1) < 1):  # uniform: decided once per row of threads
        acc.set(acc.value + 1000.0)
    tail = k.var(f32, 0.0, "tail")
    with k.range(0, k.local_id(0)) as r:  # bounds differ per thread: not hoisted
        tail.set(tail.value + r.cast(f32))
    with k.if_(k.local_id(0) < 2):  # differs per thread: stays inside the x loop
        tail.set(tail.value - 0.5)
    dst[g] = acc.value + tail.value
    rows = split_rows(k.body)
    assert [type(r).__name__ for r in rows] == ["list", "RowRange", "RowIf", "list"]
    assert isinstance(rows[1].items[1], RowRange), "the nested uniform loop is hoisted too"
    ck = compile_kernel(k, "host", cache)
    src_ = np.arange(64, dtype=np.float32)
    dst_ = np.zeros(64, np.float32)
    ck(src_, dst_, 5, global_size=(1, 2, 1))
    expect = src_.astype(np.float64)
    for i in range(5):
        step = expect * 0.5
        for j in range(3):
            expect = expect + step + (i * 3 + j)
    tid = np.arange(64) % 8
    expect[:32] += 1000.0
    np.testing.assert_allclose(dst_, expect + tid * (tid - 1) / 2 - 0.5 * (tid < 2), rtol=1e-6)


def test_buffers_may_alias_for_in_place_kernels(cache):
    ck = compile_kernel(elementwise("inplace", f32, lambda x, y: x * 2.0 + y), "host", cache)
    a = np.arange(100, dtype=np.float32)
    ck(a, a, a, 100, global_size=(2, 1, 1))
    np.testing.assert_array_equal(a, np.arange(100, dtype=np.float32) * 3)


def test_launch_errors_are_clear(cache):
    ck = compile_kernel(elementwise("launch", f32, lambda x, y: x + y), "host", cache)
    a = np.zeros(4, np.float32)
    with pytest.raises(IRError, match="takes 4 arguments \\(a, b, out, n\\), got 3"):
        ck(a, a, a, global_size=(1, 1, 1))
    with pytest.raises(IRError, match="argument b is a float32 buffer, got a float64 array"):
        ck(a, np.zeros(4), a, 4, global_size=(1, 1, 1))
    with pytest.raises(IRError, match="must be C-contiguous"):
        ck(a, a, np.zeros(8, np.float32)[::2], 4, global_size=(1, 1, 1))
    with pytest.raises(IRError, match="built for local size \\(64, 1, 1\\), launched with \\(32, 1, 1\\)"):
        ck.run(0, (1, 1, 1), (32, 1, 1))
    with pytest.raises(IRError, match="argument n=4294967296 does not fit in int32"):
        ck(a, a, a, 2**32, global_size=(1, 1, 1))


# --- property: random elementwise expressions over random 2D shapes, bit-exact against numpy ---

LEAVES = st.sampled_from(["a", "b", "c"]) | st.floats(-4, 4, allow_nan=False, width=32).map(lambda v: ("k", v))
TREES = st.recursive(LEAVES, lambda kids: st.one_of(
    st.tuples(st.sampled_from(["add", "sub", "mul", "max", "min"]), kids, kids),
    st.tuples(st.just("neg"), kids),
    st.tuples(st.just("where_lt"), kids, kids, kids, kids)), max_leaves=10)


def build(tree, env):
    """The expression tree as IR (env maps leaf names to IR values)."""
    if isinstance(tree, str):
        return env[tree]
    op, *args = tree
    if op == "k":
        return args[0]
    xs = [build(t, env) for t in args]
    ir_xs = [x if not isinstance(x, float) else env["a"] * 0.0 + x for x in xs]  # a bare constant becomes float32
    if op == "neg":
        return -ir_xs[0]
    if op == "where_lt":
        return where(ir_xs[0] < ir_xs[1], ir_xs[2], ir_xs[3])
    x, y = ir_xs
    return {"add": lambda: x + y, "sub": lambda: x - y, "mul": lambda: x * y,
            "max": lambda: maximum(x, y), "min": lambda: minimum(x, y)}[op]()


def evaluate(tree, env):
    """The same tree over float32 numpy arrays (maximum/minimum ignore NaN, as the IR's do)."""
    if isinstance(tree, str):
        return env[tree]
    op, *args = tree
    if op == "k":
        return np.float32(args[0])
    xs = [evaluate(t, env) for t in args]
    xs = [x if isinstance(x, np.ndarray) else env["a"] * np.float32(0) + x for x in xs]
    if op == "neg":
        return -xs[0]
    if op == "where_lt":
        return np.where(xs[0] < xs[1], xs[2], xs[3])
    x, y = xs
    return {"add": np.add, "sub": np.subtract, "mul": np.multiply, "max": np.fmax, "min": np.fmin}[op](x, y)


@settings(max_examples=20, deadline=None)
@given(tree=TREES, h=st.integers(1, 20), w=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_random_elementwise_expressions_match_numpy(tmp_path_factory, tree, h, w, seed):
    k = Kernel("prop", local_size=(8, 4, 1))
    bufs = {name: k.buffer(name, f32) for name in "abc"}
    out = k.buffer("out", f32, writable=True)
    rows, cols = k.scalar("rows"), k.scalar("cols")
    x, y = k.global_id(0), k.global_id(1)
    with k.if_((x < cols) & (y < rows)):
        idx = y * cols + x
        value = build(tree, {name: b[idx] for name, b in bufs.items()})
        out[idx] = value if not isinstance(value, float) else bufs["a"][idx] * 0.0 + value
    ck = compile_kernel(k, "host", KernelCache(tmp_path_factory.mktemp("prop")))
    rng = np.random.default_rng(seed)
    env = {name: rng.uniform(-8, 8, (h, w)).astype(np.float32) for name in "abc"}
    got = np.full((h, w), np.nan, np.float32)
    ck(env["a"], env["b"], env["c"], got, h, w, global_size=(blocks(w, 8), blocks(h, 4), 1))
    expect = evaluate(tree, env)
    np.testing.assert_array_equal(got, np.broadcast_to(expect, (h, w)))
