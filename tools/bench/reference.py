"""numpy with a single-threaded BLAS, as a long-lived subprocess that runs one timed round per request.

Why a subprocess: a BLAS reads its thread count when it loads, so OPENBLAS/OMP/MKL/BLIS_NUM_THREADS=1 must be
set before numpy is imported, and our own process has numpy loaded already (threadpoolctl could limit it in
place but is not a dependency; it is used as well where installed). Why long-lived: the worker answers one
round at a time, so its rounds alternate with ours in the same minute of machine noise instead of running
before or after ours.

Protocol: one JSON object per line each way. The worker first writes {"ready": {...}}; then every request
{"op": "matmul", "n": 512, "reps": 2} is answered {"ops": 2, "seconds": ...} (timed inside the worker, so the
pipe's latency is not billed to numpy) or {"error": "..."}.
"""
from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from typing import Any

from tools.bench import BenchError
from tools.bench.worker import JSONLineWorker

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")
START_TIMEOUT_S = 60.0  # importing numpy on a busy machine
REQUEST_TIMEOUT_S = 120.0  # one round is at most a few 1024x1024 matmuls: seconds, even single-threaded


class NumpyWorker(JSONLineWorker):
    """A numpy subprocess whose BLAS runs one thread; `run(op, **args)` times one round of op in it."""

    def __init__(self, start_timeout: float = START_TIMEOUT_S, request_timeout: float = REQUEST_TIMEOUT_S):
        env = dict(os.environ, **{v: "1" for v in BLAS_THREAD_VARS})
        super().__init__("numpy", "tools.bench.reference", start_timeout, request_timeout, env)
        if "ready" not in self.first:
            self.close()
            raise BenchError(f"the numpy worker answered {self.first!r} instead of its ready line")
        self.ready: dict[str, Any] = self.first["ready"]

    @property
    def describe(self) -> str:
        r = self.ready
        seen = "thread count not readable" if r.get("threads") is None else f"BLAS reports {r['threads']} thread(s)"
        return f"{r.get('blas')}, {r.get('how')}, {seen}"

    def run(self, op: str, **args: Any) -> tuple[int, float]:
        """One timed round in the worker: (ops, seconds spent on them there)."""
        reply = self.request(op, **args)
        return int(reply["ops"]), float(reply["seconds"])

    def close(self, wait: float = 5.0) -> None:
        super().close(wait)


def blas_threads() -> tuple[str, int | None]:
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


def matmul_operands(n: int) -> tuple[Any, Any]:
    """The same two float32 n x n matrices on both sides of a comparison (seeded)."""
    import numpy as np
    rng = np.random.default_rng(n)
    return rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)


def serve() -> None:
    """The worker's side: answer requests from stdin until it closes."""
    import numpy as np  # noqa: F401 - loaded after the thread variables, which the parent set
    how = "env " + "/".join(v.split("_")[0] for v in BLAS_THREAD_VARS[:4]) + "_NUM_THREADS=1"
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
        how += " + threadpoolctl"
    except ImportError:
        pass
    blas, threads = blas_threads()
    out = sys.stdout
    out.write(json.dumps({"ready": {"blas": blas, "threads": threads, "how": how, "pid": os.getpid()}}) + "\n")
    out.flush()
    operands: dict[int, tuple[Any, Any]] = {}
    for line in sys.stdin:
        try:
            req = json.loads(line)
            if req.get("op") != "matmul":
                raise ValueError(f"unknown op {req.get('op')!r}; the worker knows 'matmul'")
            n, reps = int(req["n"]), int(req["reps"])
            if n not in operands:
                operands[n] = matmul_operands(n)
            a, b = operands[n]
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            reply: dict[str, Any] = {"ops": reps, "seconds": time.perf_counter() - t0}
        except Exception as e:  # the parent reports it with the request that caused it
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
