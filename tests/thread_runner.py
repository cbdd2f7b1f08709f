"""Running test work in several threads at once, with seeded pauses, so races show up instead of hiding."""
from __future__ import annotations

import random
import sys
import threading
import time
from typing import Any, Callable

JOIN_S = 60.0  # threads still running after this are hung: the test fails instead of waiting forever
SWITCH_S = 2e-5  # GIL switch interval while the threads run: far more hand-overs, so more interleavings per run


def jitter(rng: random.Random, longest_s: float = 5e-4) -> None:
    """A pause the seed chooses: nothing, a GIL hand-over, or a sleep of up to longest_s."""
    r = rng.random()
    if r < 0.3:
        return
    time.sleep(0 if r < 0.6 else rng.random() * longest_s)


def in_threads(seed: int, work: Callable[[int, random.Random], Any], threads: int, name: str) -> list[Any]:
    """Run work(i, rng) in `threads` threads started together; their results in thread order, or the first error."""
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def body(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        try:
            start.wait(JOIN_S)
            results[i] = work(i, rng)
        except BaseException as e:  # handed to the test thread, which raises it
            errors.append(e)

    pool = [threading.Thread(target=body, args=(i,), name=f"{name}-{i}", daemon=True) for i in range(threads)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_S)
    try:
        for t in pool:
            t.start()
        deadline = time.monotonic() + JOIN_S
        for t in pool:
            t.join(max(0.0, deadline - time.monotonic()))
    finally:
        sys.setswitchinterval(switch)
    assert not any(t.is_alive() for t in pool), f"threads still running after {JOIN_S} s (a hang)"
    if errors:
        raise errors[0]
    return results
