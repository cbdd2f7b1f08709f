"""The tensor layer on the CPU device: Python overhead per kernel, kernels per op after fusion, and matmul GFLOPS
against numpy on the same machine in the same run. Everything is measured and printed, nothing is asserted.

1. Scheduling overhead ("tensor: realize ..." rows): the host time to build a fresh lazy graph, schedule it and
   submit its kernel, per kernel, when that kernel is already compiled and loaded (measure's warm-up call puts it
   in the runtime's table). Every iteration builds a new graph over the same realized inputs, so the kernel is
   the same; the device is synchronized after each timed loop of 100, outside the timed region. The CPU device's engine
   is a host thread executing the submitted kernels (1024 floats: ~1 us each) at the same time, sharing the
   GIL, as it does for any user. The note splits the time into building the graph, `Tensor.schedule`, and the
   rest of `realize` (kernel lookup by signature, output allocation, queue encoding and submission), p50s of
   separate measurements of the first two.
2. Fusion ("tensor fusion: ..." rows): for a few expressions over realized inputs, the ops in the expression
   (elementwise, reduce and matmul nodes of the lazy graph; views and constants are free and not counted)
   against the kernels the scheduler emits (ScheduleItems of kind "kernel"); without fusion each op would be
   its own kernel. The note also says if realizing the expression ran a different number of kernels. The
   times are those of building the expression's graph and scheduling it (nothing runs). The elementwise
   chains cycle add, scalar multiply, subtract, sin and multiply (see `_chain` for why not relu or maximum).
3. Matmul ("tensor: matmul ..." and "numpy: ..." rows): square float32 n x n @ n x n, time per matmul,
   GFLOPS = 2 n^3 / mean time. Ours: `(x @ y).realize()` on realized inputs, then synchronize, the kernel
   compiled by a warm-up call first; the CPU device runs a kernel on one host thread. numpy: `a @ b` in a
   subprocess started with OPENBLAS/OMP/MKL/BLIS_NUM_THREADS=1 (set before numpy loads its BLAS), limited with
   threadpoolctl as well where that is installed, and the BLAS's own thread count read back where it exposes
   one. Our row's target is twice numpy's mean time, i.e. the project's goal of at least half numpy's
   single-threaded GFLOPS; the verdict column says whether this run met it.
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tools.bench import Result, measure

DEVICE = "CPU"
MATMUL_SIZES = (256, 500, 512)  # 500: tiles do not divide it, so edge tiles take the bounds-checked path
MATMUL_GOAL = 0.5  # the project's aim: at least half of numpy's single-threaded GFLOPS
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")
ROOT = Path(__file__).resolve().parents[2]


def run(matmul_sizes: tuple[int, ...] = MATMUL_SIZES, rounds: int = 20) -> list[Result]:
    """Every row of this suite; smaller sizes and fewer rounds make a quick run (the tests use them)."""
    from tensor import DEVICES
    rt = DEVICES[DEVICE]
    results = _overhead_rows(rt, rounds)
    results += _fusion_rows(rt, rounds)
    results += _matmul_rows(rt, matmul_sizes, rounds)
    rt.synchronize()
    return results


# --- 1. scheduling overhead per kernel ---

def _inputs(*shapes: tuple[int, ...]) -> list[Any]:
    """Realized float32 tensors of these shapes on the CPU device (uploads finished)."""
    from tensor import DEVICES, Tensor
    out = [Tensor.rand(*s, device=DEVICE, seed=i).realize() for i, s in enumerate(shapes)]
    DEVICES[DEVICE].synchronize()
    return out


def _chain(x: Any, a: Any, b: Any, n: int) -> Any:
    """n elementwise ops on x, one lazy node each: add, scalar multiply, subtract, sin, multiply, in turn.

    relu, maximum/minimum and tanh are left out: each repeats its operand's whole expression in the kernel it
    fuses into, so the compiled expression grows 2x (relu) to 4x (maximum) per op and a long chain of them
    takes minutes to compile; the matmul rows below use relu once."""
    steps: tuple[Callable[[Any], Any], ...] = (lambda t: t + b, lambda t: t * 0.5, lambda t: t - a,
                                               lambda t: t.sin(), lambda t: t * b)
    for i in range(n):
        x = steps[i % len(steps)](x)
    return x


def _kernels(t: Any) -> int:
    return sum(1 for item in t.schedule() if item.kind == "kernel")


def _overhead_rows(rt: Any, rounds: int, per_round: int = 100) -> list[Result]:
    a, b = _inputs((1024,), (1024,))
    cases = [("a + b", lambda: a + b), ("10-op elementwise chain", lambda: _chain(a, a, b, 10))]
    out = []
    for label, make in cases:
        kernels = _kernels(make())

        def realize_many(make: Callable[[], Any] = make) -> tuple[int, float]:
            t0 = time.perf_counter()
            for _ in range(per_round):
                make().realize()
            spent = time.perf_counter() - t0
            rt.synchronize()  # the kernels' own time, outside the measurement
            return per_round * kernels, spent

        def build_only(make: Callable[[], Any] = make) -> int:
            for _ in range(per_round):
                make()
            return per_round * kernels

        def schedule_only(make: Callable[[], Any] = make) -> tuple[int, float]:
            graphs = [make() for _ in range(per_round)]
            t0 = time.perf_counter()
            for g in graphs:
                g.schedule()
            return per_round * kernels, time.perf_counter() - t0

        r = measure(f"tensor: realize {label}, per kernel (CPU, warm)", realize_many, rounds=rounds)
        graph = measure("", build_only, rounds=max(3, rounds // 2)).p50_us
        sched = measure("", schedule_only, rounds=max(3, rounds // 2)).p50_us
        r.note = (f"{kernels} kernel/realize; p50 split: graph {graph:.0f} + schedule {sched:.0f} + run "
                  f"{r.p50_us - graph - sched:.0f} us; engine thread runs concurrently")
        out.append(r)
    return out


# --- 2. kernels per op, before and after fusion ---

def _count_ops(t: Any) -> int:
    """Elementwise, reduce and matmul nodes in t's lazy graph up to realized buffers (views, constants: free)."""
    from tensor.lazy import walk
    return sum(1 for n in walk([t.node]) if n.kind in ("ewise", "reduce", "matmul"))


def _softmax(x: Any) -> Any:
    e = (x - x.max(axis=1, keepdims=True)).exp()
    return e / e.sum(axis=1, keepdims=True)


def _fusion_rows(rt: Any, rounds: int) -> list[Result]:
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

        r = measure(f"tensor fusion: {label}", build_and_schedule, rounds=max(3, rounds // 2))
        r.note = (f"{ops} ops: {ops} kernels unfused -> {kernels} fused"
                  + ("" if ran == kernels else f" (realize ran {ran})") + "; time: build graph + schedule")
        out.append(r)
    return out


# --- 3. matmul GFLOPS, ours against numpy single-threaded ---

def _reps(n: int) -> int:
    """Matmuls per timed round: 2^28 flops from n = 256 up (at most 8 matmuls), so a round outlasts noise."""
    return min(8, max(1, (512 // n) ** 3))


def _gflops(n: int, us: float) -> float:
    return 2 * n ** 3 / (us * 1e3) if us > 0 else math.nan


def _matmul_rows(rt: Any, sizes: tuple[int, ...], rounds: int) -> list[Result]:
    import numpy as np
    baseline = _numpy_matmul(sizes, rounds)
    out = []
    for n in sizes:
        x, y = _inputs((n, n), (n, n))
        reps = _reps(n)

        def matmuls(x: Any = x, y: Any = y, reps: int = reps) -> int:
            for _ in range(reps):
                (x @ y).realize()
            rt.synchronize()
            return reps

        check = np.abs((x @ y).numpy() - x.numpy() @ y.numpy()).max()
        ours = measure(f"tensor: matmul {n}x{n} f32 (CPU device)", matmuls, rounds=rounds)
        base = baseline.get(n)
        g = _gflops(n, ours.mean_us)
        note = f"{g:.1f} GFLOPS (best round {_gflops(n, ours.min_us or 0):.1f})"
        if base is not None and base.mean_us > 0:
            ratio = g / _gflops(n, base.mean_us)
            ours.target_us = base.mean_us / MATMUL_GOAL
            note += (f"; {ratio:.2f}x numpy 1-thread, goal >= {MATMUL_GOAL:g}x "
                     f"{'met' if ratio >= MATMUL_GOAL else 'not met'}")
        if not check <= 1e-3 * n:
            note += f"; WRONG: max |ours - numpy| = {check:.3g}"
        ours.note = note
        if base is not None:
            out.append(base)
        out.append(ours)
    return out


def _numpy_matmul(sizes: tuple[int, ...], rounds: int) -> dict[int, Result]:
    """numpy's a @ b at each size, timed in a subprocess whose BLAS runs one thread (see the docstring)."""
    env = dict(os.environ, **{v: "1" for v in BLAS_THREAD_VARS})
    cmd = [sys.executable, "-c", "from tools.bench.tensor import numpy_worker; numpy_worker()",
           json.dumps([list(sizes), rounds])]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        print("tools.bench.tensor: the numpy baseline ran past 300 s; its rows are left out", file=sys.stderr)
        return {}
    try:
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(f"tools.bench.tensor: the numpy baseline failed (exit {proc.returncode}); its rows are left out:\n"
              f"{proc.stderr[-2000:]}", file=sys.stderr)
        return {}
    return {n: Result(**row) for n, row in zip(sizes, rows)}


def _blas_threads() -> tuple[str, int | None]:
    """The BLAS numpy loaded and the thread count it reports (None where it exposes none we know)."""
    import numpy as np
    try:
        from threadpoolctl import threadpool_info
        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if info:
            return f"{info[0].get('internal_api')} {info[0].get('version')}", int(info[0]["num_threads"])
    except ImportError:
        pass
    try:
        name = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:
        name = "BLAS"
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        paths = set()
    for path in sorted(p for p in paths if "blas" in os.path.basename(p).lower()):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                    "openblas_get_num_threads64_", "openblas_get_num_threads", "MKL_Get_Max_Threads",
                    "bli_thread_get_num_threads"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                return name, int(fn())
    return name, None


def numpy_worker() -> None:
    """The subprocess side of _numpy_matmul: argv[1] is JSON [sizes, rounds]; prints one JSON list of Results."""
    sizes, rounds = json.loads(sys.argv[1])
    import numpy as np
    how = "env " + "/".join(v.split("_")[0] for v in BLAS_THREAD_VARS[:4]) + "_NUM_THREADS=1"
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
        how += " + threadpoolctl"
    except ImportError:
        pass
    blas, threads = _blas_threads()
    seen = "thread count not readable" if threads is None else f"BLAS reports {threads} thread(s)"
    rows = []
    for n in sizes:
        rng = np.random.default_rng(0)
        a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
        reps = _reps(n)

        def matmuls(a: Any = a, b: Any = b, reps: int = reps) -> int:
            for _ in range(reps):
                a @ b
            return reps

        r = measure(f"numpy: a @ b {n}x{n} f32, 1 thread", matmuls, rounds=rounds)
        r.note = (f"{_gflops(n, r.mean_us):.1f} GFLOPS (best round {_gflops(n, r.min_us or 0):.1f}); "
                  f"{blas}, {how}, {seen}")
        rows.append(dataclasses.asdict(r))
    print(json.dumps(rows))
