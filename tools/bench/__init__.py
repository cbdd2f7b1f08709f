"""Benchmarks: `python -m tools.bench` prints tables; nothing here asserts a time."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Result:
    """One measured row: per-operation times in microseconds, and the issue's target for it."""
    name: str
    ops: int
    mean_us: float
    p50_us: float
    p99_us: float
    target_us: float | None = None
    note: str = ""
    min_us: float | None = None  # the best round: on a shared machine, the cost with the least interference

    @property
    def verdict(self) -> str:
        if self.target_us is None:
            return ""
        return "meets" if self.mean_us <= self.target_us else "misses"


def warm_up(seconds: float = 0.5) -> None:
    """Keep the CPU busy for a moment: on a cold core (frequency scaling, a VM's scheduler) the first tenths of a
    second run up to twice slower and would be billed to whichever benchmark runs first."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += sum(range(1000))


def measure(name: str, fn: Callable[[], int | tuple[int, float]], rounds: int = 30, target_us: float | None = None,
            note: str = "") -> Result:
    """Run fn `rounds` times; per-op times per round.

    fn returns how many ops it did, or (ops, seconds) when only part of its time is the cost being measured
    (driver time without the emulator's, say).
    """
    fn()  # warm up caches and lazy imports
    per_op = []
    total = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        ret = fn()
        elapsed = time.perf_counter() - t0
        n, seconds = ret if isinstance(ret, tuple) else (ret, elapsed)
        per_op.append(seconds / n * 1e6)
        total += n
    per_op.sort()
    return Result(name, total, statistics.fmean(per_op), per_op[len(per_op) // 2],
                  per_op[min(len(per_op) - 1, int(len(per_op) * 0.99))], target_us, note, per_op[0])


def table(results: list[Result]) -> str:
    """Results as an aligned text table."""
    head = ("benchmark", "ops", "mean us", "p50 us", "p99 us", "min us", "target us", "", "note")
    rows = [head] + [(r.name, str(r.ops), f"{r.mean_us:.3f}", f"{r.p50_us:.3f}", f"{r.p99_us:.3f}",
                      "" if r.min_us is None else f"{r.min_us:.3f}",
                      "" if r.target_us is None else f"<= {r.target_us:g}", r.verdict, r.note) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)
