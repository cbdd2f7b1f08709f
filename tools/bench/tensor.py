"""The tensor layer on the CPU device: per-call costs with and without the device's work, kernels per op after
fusion, and elementwise and matmul speed against numpy measured interleaved in the same run. Everything is
measured and printed, nothing is asserted.

1. Per-call overhead ("tensor: realize ..." rows): `submit only, no sync` rows are the host time to build a
   fresh lazy graph, schedule it and submit its kernel, per kernel, when that kernel is already compiled;
   the device is synchronized after each timed loop of 100, outside the timed region, so the kernel's own
   run and the wait for it are NOT in the number. The `synced` row beside each is the whole call, realize
   then synchronize, timed call by call: what a user who waits for each result pays. The CPU device's
   engine is a host thread sharing the GIL. The note splits the no-sync time into building the graph,
   `Tensor.schedule`, and the rest of `realize` (kernel lookup, output allocation, encoding, submission).
2. Fusion ("tensor fusion: ..." rows): ops in an expression (elementwise, reduce and matmul nodes; views and
   constants are free) against the kernels the scheduler emits; the times are building the graph and
   scheduling it (nothing runs).
3. Against numpy ("tensor: 10-op chain ..." and "tensor: matmul ..." rows): ours (realize + synchronize) and
   numpy run alternately round by round (see tools.bench.interleave) and the ratio is numpy's median over
   ours. "numpy 1 thread" runs in a long-lived subprocess whose BLAS was loaded with one thread
   (tools.bench.reference); "numpy" is numpy in this process with its BLAS's default threads, compared in a
   second interleaved pass (its idle BLAS threads spin for a while and would slow the 1-thread pass). The
   target is on the 1-thread ratio. GFLOPS for matmul are 2 n^3 / median time.
4. A tiny synced op: `(a + 1).numpy()` on 16 floats, each call timed singly: the floor of a round trip.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

from tools.bench import Bench, Context, Result, interleave, measure, summarize, versus
from tools.bench.reference import blas_threads, matmul_operands

DEVICE = "CPU"
MATMUL_SIZES = (256, 500, 512, 1024)  # 500: tiles do not divide it, so edge tiles take the bounds-checked path
MATMUL_GOALS = {512: 1.0, 1024: 1.0}  # the issue: at least numpy single-threaded's speed from 512 up
CHAIN_GOAL = 1 / 1.5  # the issue: the 10-op exp/sin chain within 1.5x of numpy's time
TINY_TARGET_US = 100.0  # the issue: a synced tiny op in at most 100 us


def _runtime() -> Any:
    from tensor import DEVICES
    return DEVICES[DEVICE]


def _inputs(*shapes: tuple[int, ...]) -> list[Any]:
    """Realized float32 tensors of these shapes on the CPU device (uploads finished)."""
    from tensor import Tensor
    out = [Tensor.rand(*s, device=DEVICE, seed=i).realize() for i, s in enumerate(shapes)]
    _runtime().synchronize()
    return out


def _kernels(t: Any) -> int:
    return sum(1 for item in t.schedule() if item.kind == "kernel")


def _count_ops(t: Any) -> int:
    """Elementwise, reduce and matmul nodes in t's lazy graph up to realized buffers (views, constants: free)."""
    from tensor.lazy import walk
    return sum(1 for n in walk([t.node]) if n.kind in ("ewise", "reduce", "matmul"))


def cpu_workers() -> tuple[int | None, str]:
    """How many host threads the CPU device runs a kernel's workgroups on (None where the device does not say;
    read with getattr, so the bench runs on devices with and without workers), and a line saying so."""
    dev = _runtime().dev
    for holder in (dev, getattr(dev, "processor", lambda _: None)("compute")):
        for attr in ("workers", "n_workers", "worker_count", "num_workers", "threads"):
            value = getattr(holder, attr, None)
            if value is None or callable(value):
                continue
            count = value if isinstance(value, int) else len(value) if hasattr(value, "__len__") else None
            if count is not None:
                return count, (f"CPU device: {count} kernel worker(s) ({type(holder).__name__}.{attr}) on "
                               f"{os.cpu_count()} cores")
    return None, f"CPU device: worker count not exposed (one engine thread per kernel) on {os.cpu_count()} cores"


# --- 1. per-call overhead, without and with the device's work ---

def _chain(x: Any, a: Any, b: Any, n: int) -> Any:
    """n elementwise ops on x, one lazy node each: add, scalar multiply, subtract, sin, multiply, in turn.

    relu, maximum/minimum and tanh are left out: each repeats its operand's whole expression in the kernel it
    fuses into, so a long chain of them takes minutes to compile."""
    steps: tuple[Callable[[Any], Any], ...] = (lambda t: t + b, lambda t: t * 0.5, lambda t: t - a,
                                               lambda t: t.sin(), lambda t: t * b)
    for i in range(n):
        x = steps[i % len(steps)](x)
    return x


def _overhead(ctx: Context, label: str, make: Callable[[], Any], per_round: int = 100) -> list[Result]:
    rt = _runtime()
    rounds = ctx.rounds(20)
    per_round = 10 if ctx.quick else per_round
    kernels = _kernels(make())

    def realize_many() -> tuple[int, float]:
        t0 = time.perf_counter()
        for _ in range(per_round):
            make().realize()
        spent = time.perf_counter() - t0
        rt.synchronize()  # the kernels' own time, outside the measurement
        return per_round * kernels, spent

    def build_only() -> int:
        for _ in range(per_round):
            make()
        return per_round * kernels

    def schedule_only() -> tuple[int, float]:
        graphs = [make() for _ in range(per_round)]
        t0 = time.perf_counter()
        for g in graphs:
            g.schedule()
        return per_round * kernels, time.perf_counter() - t0

    def synced_calls() -> tuple[int, float]:
        spent = 0.0
        for _ in range(per_round):
            t0 = time.perf_counter()
            make().realize()
            rt.synchronize()
            spent += time.perf_counter() - t0
        return per_round, spent

    nosync = measure(f"tensor: realize {label}, submit only, no sync, per kernel (CPU)", realize_many, rounds=rounds)
    graph = measure("", build_only, rounds=max(3, rounds // 2)).p50_us
    sched = measure("", schedule_only, rounds=max(3, rounds // 2)).p50_us
    nosync.note = (f"{kernels} kernel/realize; excludes the kernel's run and the wait for it; p50 split: graph "
                   f"{graph:.0f} + schedule {sched:.0f} + submit {nosync.p50_us - graph - sched:.0f} us")
    synced = measure(f"tensor: realize {label} + synchronize, synced, per call (CPU)", synced_calls, rounds=rounds,
                     note="the whole call: build, schedule, submit, run, wait")
    return [nosync, synced]


def _overhead_add(ctx: Context) -> list[Result]:
    a, b = _inputs((1024,), (1024,))
    return _overhead(ctx, "a + b", lambda: a + b)


def _overhead_chain(ctx: Context) -> list[Result]:
    a, b = _inputs((1024,), (1024,))
    return _overhead(ctx, "10-op elementwise chain", lambda: _chain(a, a, b, 10))


# --- 2. kernels per op, before and after fusion ---

def _softmax(x: Any) -> Any:
    e = (x - x.max(axis=1, keepdims=True)).exp()
    return e / e.sum(axis=1, keepdims=True)


def _fusion(ctx: Context) -> list[Result]:
    rt = _runtime()
    rounds = max(3, ctx.rounds(20) // 2)
    v1, v2 = _inputs((4096,), (4096,))
    m1, m2, m3 = _inputs((64, 64), (64, 64), (64, 64))
    x, w, bias = _inputs((32, 64), (64, 64), (64,))
    cases: list[tuple[str, Callable[[], Any], int]] = [
        ("10-op elementwise chain", lambda: _chain(v1, v1, v2, 10), 50),
        ("100-op elementwise chain", lambda: _chain(v1, v1, v2, 100), 5),
        ("(a * b + c).exp().sum()", lambda: (m1 * m2 + m3).exp().sum(), 50),
        ("(a @ b).relu().sum(axis=1)", lambda: (m1 @ m2).relu().sum(axis=1), 50),
        ("MLP layer relu(x @ W + b)", lambda: (x @ w + bias).relu(), 50),
        ("softmax(x, axis=1)", lambda: _softmax(m1), 50),
    ]
    out = []
    for label, make, per_round in cases:
        per_round = min(per_round, 5) if ctx.quick else per_round
        t = make()
        ops, kernels = _count_ops(t), _kernels(t)
        before = rt.kernels_run
        t.realize()
        rt.synchronize()
        ran = rt.kernels_run - before

        def build_and_schedule(make: Callable[[], Any] = make, per_round: int = per_round) -> int:
            for _ in range(per_round):
                make().schedule()
            return per_round

        r = measure(f"tensor fusion: {label}", build_and_schedule, rounds=rounds)
        r.note = (f"{ops} ops: {ops} kernels unfused -> {kernels} fused"
                  + ("" if ran == kernels else f" (realize ran {ran})") + "; time: build graph + schedule")
        out.append(r)
    return out


# --- 3. against numpy, interleaved ---

def exp_sin_chain(x: Any) -> Any:
    """Ten elementwise ops with exp and sin on a Tensor (mul, add, exp, sin, mul, div, sub, mul, add, mul)."""
    y = (x * 1.5 + 0.5).exp().sin() * x - x / 3
    return (y * 0.5 + x) * y


def exp_sin_chain_numpy(x: Any) -> Any:
    """exp_sin_chain's ops on a float32 numpy array, through numpy's functions."""
    import numpy as np
    f = np.float32
    y = np.sin(np.exp(x * f(1.5) + f(0.5))) * x - x / f(3)
    return (y * f(0.5) + x) * y


def _exp_sin_chain(ctx: Context) -> list[Result]:
    import numpy as np
    rt = _runtime()
    n = ctx.size(1 << 20, 4096)
    (x,) = _inputs((n,))
    xn = x.numpy()
    t = exp_sin_chain(x)
    ops, kernels = _count_ops(t), _kernels(t)
    err = float(np.abs(t.numpy() - exp_sin_chain_numpy(xn)).max())

    def ours() -> int:
        exp_sin_chain(x).realize()
        rt.synchronize()
        return 1

    def ref() -> int:
        exp_sin_chain_numpy(xn)
        return 1

    (s_ours, s_ref), (n_ours, n_ref) = interleave([ours, ref], ctx.rounds(30))
    size = f"{n >> 20}M" if n >= 1 << 20 else str(n)
    r_ours = summarize(f"tensor: {ops}-op exp/sin chain, {size} f32, synced (CPU)", s_ours, n_ours,
                       note=f"{ops} ops -> {kernels} kernel(s); realize + synchronize"
                       + ("" if err <= 1e-4 else f"; WRONG: max |ours - numpy| = {err:.3g}"))
    r_ref = summarize(f"numpy: the same {ops}-op chain, {size} f32", s_ref, n_ref,
                      note="interleaved with the row below")
    versus(r_ours, r_ref, "numpy", CHAIN_GOAL)
    r_ours.target += " (time <= 1.5x numpy)"
    return [r_ref, r_ours]


def _reps(n: int) -> int:
    """Matmuls per timed round: about 2^28 flops from n = 256 up (at most 8 matmuls), so a round outlasts noise."""
    return min(8, max(1, (512 // n) ** 3))


def _gflops(n: int, us: float) -> float:
    return 2 * n ** 3 / (us * 1e3) if us > 0 else math.nan


def _matmul(ctx: Context, n: int) -> list[Result]:
    import numpy as np
    rt = _runtime()
    count, line = cpu_workers()
    ctx.note_info(line)
    goal = MATMUL_GOALS.get(n)
    n = ctx.size(n, n // 8)  # quick: 32..128, still one size that tiles do not divide
    worker = ctx.numpy_one_thread()
    an, bn = matmul_operands(n)
    from tensor import Tensor
    x, y = Tensor(an, device=DEVICE).realize(), Tensor(bn, device=DEVICE).realize()
    rt.synchronize()
    reps = _reps(n)
    err = float(np.abs((x @ y).numpy() - an @ bn).max())

    def ours() -> int:
        for _ in range(reps):
            (x @ y).realize()
        rt.synchronize()
        return reps

    def numpy_here() -> int:
        for _ in range(reps):
            an @ bn
        return reps

    def numpy_one() -> tuple[int, float]:
        return worker.run("matmul", n=n, reps=reps)

    # Two passes, each interleaved: numpy's multi-threaded BLAS keeps its threads spinning for a while after a
    # call, which would slow whatever runs next on a small machine, so it never shares a pass with the 1-thread one.
    rounds = ctx.rounds(20)
    (s_ours, s_np1), (o_ours, o_np1) = interleave([ours, numpy_one], rounds)
    (s_ours_b, s_np), (o_ours_b, o_np) = interleave([ours, numpy_here], rounds)
    blas, threads = blas_threads()
    r_np1 = summarize(f"numpy 1 thread: a @ b {n}x{n} f32", s_np1, o_np1, note="subprocess; interleaved with ours")
    r_ours = summarize(f"tensor: matmul {n}x{n} f32, synced (CPU device)", s_ours, o_ours)
    r_np = summarize(f"numpy: a @ b {n}x{n} f32, {threads or 'default'} threads", s_np, o_np,
                     note=f"{blas}; interleaved with ours in a second pass")
    for r in (r_np1, r_ours, r_np):
        r.note = f"{_gflops(n, r.p50_us):.1f} GFLOPS" + (f"; {r.note}" if r.note else "")
    ratio_np = versus(summarize("", s_ours_b, o_ours_b), r_np, "numpy")
    r_ours.extra["x numpy"] = ratio_np
    r_ours.note += f"; {ratio_np:.2f}x numpy (second pass)"
    versus(r_ours, r_np1, "numpy 1 thread", goal)
    r_ours.note += f"; {'?' if count is None else count} CPU worker(s)"
    r_ours.extra["cpu_workers"] = count
    if not err <= 1e-3 * n:
        r_ours.note += f"; WRONG: max |ours - numpy| = {err:.3g}"
    return [r_np1, r_ours, r_np]


# --- 4. a tiny synced op ---

def _tiny(ctx: Context) -> list[Result]:
    (a,) = _inputs((16,))
    calls = ctx.size(500, 20)
    (a + 1).numpy()  # compiles and loads the kernel
    now = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        t0 = now()
        (a + 1).numpy()
        samples.append((now() - t0) / 1e3)
    return [summarize("tensor: (a + 1).numpy(), 16 f32, synced, timed singly (CPU)", samples, calls, TINY_TARGET_US,
                      note="build, schedule, submit, run, copy back, wait")]


def _matmul_bench(n: int) -> Bench:
    goal = MATMUL_GOALS.get(n)
    return Bench(f"tensor.matmul.{n}", f"numpy 1 thread / tensor / numpy: matmul {n}x{n}, interleaved",
                 lambda ctx: _matmul(ctx, n), "" if goal is None else f">= {goal:.2f}x numpy 1 thread")


BENCHES = [
    Bench("tensor.realize.add", "tensor: realize a + b, submit only, no sync / synced", _overhead_add),
    Bench("tensor.realize.chain", "tensor: realize 10-op elementwise chain, submit only, no sync / synced",
          _overhead_chain),
    Bench("tensor.fusion", "tensor fusion: kernels per op for 6 expressions", _fusion),
    Bench("tensor.chain", "numpy / tensor: 10-op exp/sin chain on 1M f32, synced, interleaved", _exp_sin_chain,
          "time <= 1.5x numpy"),
    *[_matmul_bench(n) for n in MATMUL_SIZES],
    Bench("tensor.tiny", "tensor: (a + 1).numpy() on 16 f32, synced per call", _tiny, f"p50 <= {TINY_TARGET_US:g} us"),
]
