"""A long-lived benchmark worker subprocess that answers one JSON line per request (the single-threaded numpy
reference, the CUDA side of the nv suite): started with `python -c "from <module> import serve; serve()"`, it first
writes {"ready": {...}} (or {"unavailable": why}), then answers each request with one line; every read is bounded."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from tools.bench import BenchError

ROOT = Path(__file__).resolve().parents[2]


class JSONLineWorker:
    """A worker subprocess speaking one JSON object per line each way; `label` names it in errors ("numpy", "CUDA")."""

    def __init__(self, label: str, module: str, start_timeout: float, request_timeout: float,
                 env: Optional[dict[str, str]] = None):
        self.label, self.request_timeout = label, request_timeout
        self._buf = b""
        self.proc = subprocess.Popen([sys.executable, "-c", f"from {module} import serve; serve()"], cwd=ROOT,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.first = self._read(start_timeout, "start")  # the ready (or unavailable) line

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request and return the worker's answer; its {"error": ...} answer raises BenchError."""
        if self.proc.poll() is not None:
            raise BenchError(f"the {self.label} worker exited with status {self.proc.returncode}; {self._stderr()}")
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        reply = self._read(self.request_timeout, f"{op} {args}")
        if "error" in reply:
            raise BenchError(f"the {self.label} worker failed on {op} {args}: {reply['error']}")
        return reply

    def _read(self, timeout: float, what: str) -> dict[str, Any]:
        """The worker's next line as JSON, waiting at most timeout seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        poller = select.poll()  # not select(): the fd may be numbered past FD_SETSIZE (1024)
        poller.register(fd, select.POLLIN)
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise BenchError(f"the {self.label} worker gave no answer to {what} within {timeout:g} s; it was "
                                 "stopped")
            if poller.poll(left * 1000):
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise BenchError(f"the {self.label} worker exited (status {self.proc.returncode}) during {what}; "
                                     f"{self._stderr()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise BenchError(f"the {self.label} worker wrote {line[:200]!r}, not a JSON line") from None

    def _stderr(self) -> str:
        if self.proc.stderr is None or self.proc.poll() is None:
            return "no error output"
        text = self.proc.stderr.read().decode(errors="replace")[-2000:]
        return f"its error output: {text}" if text else "no error output"

    def close(self, wait: float = 10.0) -> None:
        """Ask the worker to exit (closing its stdin), killing it if it does not within `wait` seconds."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(timeout=wait)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)
