"""Many holders racing for one device, over several seeds: never two at once, and every one gets its turns.

Processes race through lock files, waiting as BAREGPU_LOCK_WAIT says (as the tensor layer would); threads race
through lock files and through a private machine's in-process locks. Each holder logs entering and leaving while
it holds the device, and the log must alternate strictly. The seed picks pauses to vary the interleaving; no
assertion depends on timing.
"""
from __future__ import annotations

import os
import random
import textwrap
import threading
import time
from pathlib import Path

import pytest

import thread_runner
from child_process import Child
from drivers.lock import DeviceLock, ProcessLocks

ROOT = Path(__file__).resolve().parents[2]
SEEDS = range(6)
HOLDERS = 3
ROUNDS = 3  # turns per holder
WAIT_S = 60  # far above what the others hold it for: a refusal here is a bug, not a slow machine

RACER = """
import random, sys, time
from drivers.lock import DeviceLock
rng = random.Random({seed})
print("ready", flush=True)
sys.stdin.readline()
for _ in range({rounds}):
    with DeviceLock("racer-gpu", label="AMD:0 (racer)"):  # waits as BAREGPU_LOCK_WAIT says
        with open({log!r}, "a") as f:
            f.write("in {me}\\n")
        time.sleep(rng.random() * 0.01)
        with open({log!r}, "a") as f:
            f.write("out {me}\\n")
    time.sleep(rng.random() * 0.005)
print("done", flush=True)
"""


def check_log(lines: list[str]) -> None:
    """Strictly in/out pairs of one holder each, and every holder had the device ROUNDS times."""
    assert len(lines) == 2 * HOLDERS * ROUNDS, lines
    for enter, leave in zip(lines[::2], lines[1::2]):
        assert enter.startswith("in ") and leave == "out " + enter[3:], f"two holders at once: {lines}"
    turns = [line[3:] for line in lines[::2]]
    assert sorted(turns.count(h) for h in set(turns)) == [ROUNDS] * HOLDERS, turns


@pytest.mark.parametrize("seed", SEEDS)
def test_processes_take_turns(seed, tmp_path):
    log = str(tmp_path / "log")
    env = dict(os.environ, BAREGPU_LOCK_DIR=str(tmp_path / "locks"), BAREGPU_LOCK_WAIT=str(WAIT_S),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    children: list[Child] = []
    try:
        for me in range(HOLDERS):
            script = textwrap.dedent(RACER.format(seed=seed * 100 + me, rounds=ROUNDS, log=log, me=me))
            children.append(Child(script, env, step_timeout=WAIT_S))
        for c in children:
            c.expect("ready")
        for c in children:  # started together once every one is ready: they race from the first turn
            c.send("go")
        for c in children:
            c.expect("done")
            assert c.finish() == 0, c.stderr()
    finally:
        for c in children:
            c.close()
    check_log(open(log).read().splitlines())


@pytest.mark.parametrize("space", ["files", "in-process"])
@pytest.mark.parametrize("seed", SEEDS)
def test_threads_take_turns(seed, space, tmp_path):
    where = str(tmp_path / "locks") if space == "files" else ProcessLocks("racers")
    log: list[str] = []
    log_mutex = threading.Lock()  # the log itself must not be what serializes the holders

    def racer(i: int, rng: random.Random) -> None:
        for _ in range(ROUNDS):
            with DeviceLock("racer-gpu", where, wait=WAIT_S, label="AMD:0 (racer)"):
                with log_mutex:
                    log.append(f"in {i}")
                time.sleep(rng.random() * 2e-3)
                with log_mutex:
                    log.append(f"out {i}")
            thread_runner.jitter(rng)

    thread_runner.in_threads(seed, racer, HOLDERS, "lock-racer")
    check_log(log)
