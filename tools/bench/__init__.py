"""Benchmarks: `python -m tools.bench` prints tables; nothing here asserts a time.

How the numbers are made, so a row can be read without the code:
- A row is a list of samples: the time per op of each timed round (or of each call, for rows "timed singly").
  p50 is the median of the samples, and every verdict uses it: one slow round on a shared machine moves a
  mean but not a median.
- Percentiles interpolate linearly between the two nearest ranks (numpy's default method, Hyndman and Fan's
  type 7): `percentile(v, 0.5)` of an even count is the mean of the middle two. A p99 of fewer than 100
  samples would only be the largest sample under another name, so it is left blank there and max is printed.
- Rows that compare ours with a reference (numpy) run both in the same process lifetime, round by round in the
  order A B, B A, A B, ... (`interleave`), so both see the same machine noise and neither benefits from drift
  (a linear drift cancels over each A B B A pair); the ratio is reference median / our median.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

P99_MIN_SAMPLES = 100  # below this a "p99" is just the maximum


class BenchError(RuntimeError):
    """A benchmark could not run (a reference worker died or timed out, an unknown row was asked for)."""


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0 <= q <= 1) of values, interpolating linearly between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no samples: the benchmark recorded nothing; run at least one round")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"percentile q={q!r} is outside [0, 1]; pass 0.5 for the median, 0.99 for p99")
    s = sorted(values)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


@dataclass
class Result:
    """One measured row: per-op times in microseconds over `samples` samples, and its target, if it has one.

    A target is either `target_us` (the median per op must be at most this) or a sentence in `target` with
    `met` saying whether this run reached it (ratios against numpy, flatness across queue depths)."""
    name: str
    ops: int
    samples: int
    mean_us: float
    p50_us: float
    p99_us: float | None  # None below P99_MIN_SAMPLES samples: see max_us
    max_us: float
    min_us: float  # the best sample: on a shared machine, the cost with the least interference
    target_us: float | None = None
    note: str = ""
    target: str = ""
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # facts behind the note (ratios, depth; "measured": vs target)

    @property
    def target_text(self) -> str:
        if self.target:
            return self.target
        return "" if self.target_us is None else f"p50 <= {self.target_us:g} us"

    @property
    def verdict(self) -> str:
        met = self.met if self.target else (None if self.target_us is None else self.p50_us <= self.target_us)
        return "" if met is None else ("meets" if met else "misses")


def summarize(name: str, per_op_us: Sequence[float], ops: int, target_us: float | None = None,
              note: str = "") -> Result:
    """A Result from per-op samples (microseconds); ops is how many operations the samples cover in all."""
    if not per_op_us:
        raise ValueError(f"{name}: no samples; run at least one round")
    n = len(per_op_us)
    return Result(name, ops, n, statistics.fmean(per_op_us), percentile(per_op_us, 0.5),
                  percentile(per_op_us, 0.99) if n >= P99_MIN_SAMPLES else None, max(per_op_us), min(per_op_us),
                  target_us, note)


def warm_up(seconds: float = 0.5) -> None:
    """Keep the CPU busy for a moment: on a cold core (frequency scaling, a VM's scheduler) the first tenths of a
    second run up to twice slower and would be billed to whichever benchmark runs first."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += sum(range(1000))


Round = Callable[[], "int | tuple[int, float]"]


def _timed(fn: Round) -> tuple[int, float]:
    """One call of a round: (ops, seconds); a round returning (ops, seconds) timed the part that counts itself."""
    t0 = time.perf_counter()
    ret = fn()
    elapsed = time.perf_counter() - t0
    return ret if isinstance(ret, tuple) else (ret, elapsed)


def measure(name: str, fn: Round, rounds: int = 30, target_us: float | None = None, note: str = "") -> Result:
    """Run fn `rounds` times (after one untimed warm-up call); one sample per round, the time per op in it.

    fn returns how many ops it did, or (ops, seconds) when only part of its time is the cost being measured
    (driver time without the emulator's, say).
    """
    [samples], [ops] = interleave([fn], rounds)
    return summarize(name, samples, ops, target_us, note)


def interleave(fns: Sequence[Round], rounds: int) -> tuple[list[list[float]], list[int]]:
    """Run every fn once to warm up, then `rounds` rounds of each, alternating: round r runs the fns in order
    when r is even and in reverse when odd (A B, B A, ...), so all of them see the same machine noise.

    Returns the per-op samples (us) of each fn, and the ops each did in all."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: a benchmark needs at least 1 round")
    for fn in fns:
        fn()  # warm up caches, compiled kernels and lazy imports
    samples: list[list[float]] = [[] for _ in fns]
    totals = [0] * len(fns)
    order = list(range(len(fns)))
    for r in range(rounds):
        for i in (order if r % 2 == 0 else order[::-1]):
            n, seconds = _timed(fns[i])
            if n <= 0:
                raise BenchError(f"a benchmark round reported {n} ops; a round must do at least one op")
            samples[i].append(seconds / n * 1e6)
            totals[i] += n
    return samples, totals


def speed_ratio(ours: Result, reference: Result) -> float:
    """How many times faster ours is than the reference: reference median / our median (> 1: ours faster)."""
    if ours.p50_us <= 0:
        return math.inf
    return reference.p50_us / ours.p50_us


def versus(ours: Result, reference: Result, label: str, goal: float | None = None) -> float:
    """Note on `ours` its speed relative to `reference` (ratio of medians); with a goal, the row's target becomes
    "ours >= goal x label" and its verdict whether the ratio reached it. Returns the ratio."""
    ratio = speed_ratio(ours, reference)
    ours.extra[f"x {label}"] = ratio
    ours.extra["measured"] = f"{ratio:.2f}x {label}"
    ours.note = (ours.note + "; " if ours.note else "") + f"{ratio:.2f}x {label}"
    if goal is not None:
        ours.target = f">= {goal:.2f}x {label}"
        ours.met = ratio >= goal
    return ratio


def progress(line: str) -> None:
    """A progress line on stderr (the table goes to stdout, so `> file` keeps the table clean)."""
    print(line, file=sys.stderr, flush=True)


@dataclass
class Context:
    """What one bench run shares: its size knob (quick runs for tests), the rounds override, the reference worker
    started on first use, and lines of facts about the machine to print above the table."""
    quick: bool = False
    rounds_override: int | None = None
    info: list[str] = field(default_factory=list)
    _workers: dict[str, Any] = field(default_factory=dict)

    def rounds(self, full: int) -> int:
        if self.rounds_override is not None:
            return self.rounds_override
        return 3 if self.quick else full

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def note_info(self, line: str) -> None:
        if line not in self.info:
            self.info.append(line)

    def numpy_one_thread(self) -> Any:
        """The long-lived numpy worker whose BLAS runs one thread (started on first use, closed by close())."""
        worker = self._workers.get("numpy1")
        if worker is None:
            from tools.bench.reference import NumpyWorker
            worker = self._workers["numpy1"] = NumpyWorker()
            self.note_info(f"numpy 1-thread worker: {worker.describe}")
        return worker

    def close(self) -> None:
        for worker in self._workers.values():
            worker.close()
        self._workers.clear()


@dataclass
class Bench:
    """One selectable benchmark: an id for --only, the rows it prints (for --list), and what runs it."""
    id: str
    rows: str
    run: Callable[[Context], list[Result]]
    target: str = ""


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def table(results: list[Result]) -> str:
    """Results as an aligned text table."""
    head = ("benchmark", "n", "ops", "p50 us", "mean us", "min us", "p99 us", "max us", "target", "verdict", "note")
    rows = [head] + [(r.name, str(r.samples), str(r.ops), _fmt(r.p50_us), _fmt(r.mean_us), _fmt(r.min_us),
                      _fmt(r.p99_us) if r.p99_us is not None else "-", _fmt(r.max_us), r.target_text, r.verdict,
                      r.note) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


LEGEND = ("n: samples (timed rounds, or calls for rows timed singly); p50/mean/min/max: time per op across them; "
          f"p99 only from {P99_MIN_SAMPLES} samples up ('-': see max). Verdicts compare the p50 (or, for 'x numpy' "
          "targets, the ratio of medians of runs interleaved round by round) with the target; measured, never "
          "asserted. 'submit only, no sync' rows exclude the device's execution and the wait for it; the "
          "'synced' row beside each is the whole call.")
