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
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.bench import BenchError

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0  # importing numpy on a busy machine
REQUEST_TIMEOUT_S = 120.0  # one round is at most a few 1024x1024 matmuls: seconds, even single-threaded


class NumpyWorker:
    """A numpy subprocess whose BLAS runs one thread; `run(op, **args)` times one round of op in it."""

    def __init__(self, start_timeout: float = START_TIMEOUT_S, request_timeout: float = REQUEST_TIMEOUT_S):
        env = dict(os.environ, **{v: "1" for v in BLAS_THREAD_VARS})
        self.request_timeout = request_timeout
        self._buf = b""
        self.proc = subprocess.Popen([sys.executable, "-c", "from tools.bench.reference import serve; serve()"],
                                     cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        ready = self._read(start_timeout, "start")
        if "ready" not in ready:
            self.close()
            raise BenchError(f"the numpy worker answered {ready!r} instead of its ready line")
        self.ready: dict[str, Any] = ready["ready"]

    @property
    def describe(self) -> str:
        r = self.ready
        seen = "thread count not readable" if r.get("threads") is None else f"BLAS reports {r['threads']} thread(s)"
        return f"{r.get('blas')}, {r.get('how')}, {seen}"

    def run(self, op: str, **args: Any) -> tuple[int, float]:
        """One timed round in the worker: (ops, seconds spent on them there)."""
        if self.proc.poll() is not None:
            raise BenchError(f"the numpy worker exited with status {self.proc.returncode}; {self._stderr()}")
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        reply = self._read(self.request_timeout, f"{op} {args}")
        if "error" in reply:
            raise BenchError(f"the numpy worker failed on {op} {args}: {reply['error']}")
        return int(reply["ops"]), float(reply["seconds"])

    def _read(self, timeout: float, what: str) -> dict[str, Any]:
        """The worker's next line as JSON, waiting at most timeout seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise BenchError(f"the numpy worker gave no answer to {what} within {timeout:g} s; it was stopped")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise BenchError(f"the numpy worker exited (status {self.proc.returncode}) during {what}; "
                                     f"{self._stderr()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise BenchError(f"the numpy worker wrote {line[:200]!r}, not a JSON line") from None

    def _stderr(self) -> str:
        if self.proc.stderr is None or self.proc.poll() is None:
            return "no error output"
        text = self.proc.stderr.read().decode(errors="replace")[-2000:]
        return f"its error output: {text}" if text else "no error output"

    def close(self) -> None:
        """Ask the worker to exit (closing its stdin), killing it if it does not within 5 s."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


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
