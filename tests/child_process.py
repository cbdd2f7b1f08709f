"""A Python child process a test drives line by line: every step waits for a line it prints, with a bound.

Tests that need a second process (device locks, machine-wide emulated GPUs) use it so that no test sleeps and
hopes: the child prints a word when it reached a point, and the test waits for that word or fails with the
child's stderr.
"""
from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Child:
    """`python -c script` with `env`; its stdout lines are read by a thread into a queue, its stderr kept."""

    def __init__(self, script: str, env: dict[str, str], step_timeout: float):
        self.step_timeout = step_timeout
        self.proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True),
                         threading.Thread(target=self._pump, args=(self.proc.stderr, self.err.append), daemon=True)]
        for t in self._readers:
            t.start()

    @staticmethod
    def _pump(stream, put) -> None:
        for line in stream:
            put(line)
        put(None)

    def stderr(self) -> str:
        self._readers[1].join(1)
        return "".join(e for e in self.err if e)

    def expect(self, word: str, timeout: float | None = None) -> str:
        """The first stdout line starting with word; fails with the child's stderr if it exits or stalls."""
        deadline = time.monotonic() + (self.step_timeout if timeout is None else timeout)
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.kill()
                raise AssertionError(f"child never printed {word!r}; stderr:\n{self.stderr()}")
            if line.startswith(word):
                return line.strip()

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float | None = None) -> int:
        """Wait for the child to exit and return its status; kill it if it does not."""
        try:
            return self.proc.wait(self.step_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"child did not exit in time; stderr:\n{self.stderr()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        """Kill the child if it still runs and close our ends of its pipes (a test's cleanup)."""
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass  # the child's end is gone: nothing to flush
