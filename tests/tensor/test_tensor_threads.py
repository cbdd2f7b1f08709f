"""Several threads sharing tensors: results equal single-threaded numpy results on every device.

Each test runs THREADS threads that start together at a barrier and, at points a seed chooses, sleep a little or
yield, so each seed tries different interleavings of their submissions; the results are compared with numpy, never
timed. A thread's exception is re-raised in the test, and every join is bounded.
"""
from __future__ import annotations

import gc
import random
import threading
import time
from typing import Any, Callable

import numpy as np
import pytest

from tensor import DEVICES, Tensor
from tensor_checks import assert_matches
import thread_runner

THREADS = 4
SEEDS = range(6)

A = np.random.default_rng(11).standard_normal((24, 32)).astype(np.float32)
B = np.random.default_rng(12).standard_normal((32, 16)).astype(np.float32)
C = np.random.default_rng(13).standard_normal((24, 16)).astype(np.float32)


@pytest.fixture(params=["CPU", "AMD"])
def device(request):
    if request.param != "CPU":
        request.getfixturevalue("lld")  # the emulated GPU runs AMD code objects
    return request.param


def jitter(rng: random.Random) -> None:
    """A pause the seed chooses: nothing, a GIL hand-over, or a sleep of up to a millisecond."""
    thread_runner.jitter(rng, 1e-3)


def in_threads(seed: int, work: Callable[[int, random.Random], Any]) -> list[Any]:
    """Run work(i, rng) in THREADS threads started together (tests/thread_runner.py)."""
    return thread_runner.in_threads(seed, work, THREADS, "tensor-thread")


@pytest.mark.parametrize("seed", SEEDS)
def test_threads_realize_the_same_lazy_graph(device, seed):
    a, b, c = Tensor(A, device), Tensor(B, device), Tensor(C, device)
    y = ((a @ b).relu() + c * 2).sum(axis=1)
    z = (y - 1).exp()
    want_y = (np.maximum(A @ B, 0) + C * 2).sum(axis=1)

    def work(i: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
        jitter(rng)
        if rng.random() < 0.5:
            z.realize()
        jitter(rng)
        return y.numpy(), z.numpy()

    for got_y, got_z in in_threads(seed, work):
        assert_matches(got_y, want_y, rtol=1e-4, atol=1e-4)
        assert_matches(got_z, np.exp(want_y - 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", SEEDS)
def test_threads_realize_different_graphs_that_share_inputs(device, seed):
    a, b = Tensor(A, device), Tensor(B, device)
    shared = (a * 0.5).tanh()  # one lazy node every thread's graph reads

    def work(i: int, rng: random.Random) -> list[np.ndarray]:
        out = []
        for step in range(3):
            jitter(rng)
            k = i * 3 + step
            if k % 3 == 0:
                out.append(((shared + k) @ b).numpy())
            elif k % 3 == 1:
                out.append((shared * k - a).max(axis=0).numpy())
            else:
                out.append((a.T.reshape(-1) + k).numpy())
        return out

    base = np.tanh(A * 0.5)
    for i, got in enumerate(in_threads(seed, work)):
        for step, g in enumerate(got):
            k = i * 3 + step
            if k % 3 == 0:
                assert_matches(g, (base + k) @ B, rtol=1e-4, atol=1e-4)
            elif k % 3 == 1:
                assert_matches(g, (base * k - A).max(axis=0), rtol=1e-5, atol=1e-5)
            else:
                assert_matches(g, A.T.reshape(-1) + k)


@pytest.mark.parametrize("seed", SEEDS)
def test_numpy_of_shared_results_while_tensors_die_in_other_threads(device, seed):
    rt = DEVICES[device]
    a = Tensor(A, device)
    shared = (a @ Tensor(B, device)).realize()  # realized once; every thread downloads it
    want = A @ B
    mailbox: list[Tensor] = []  # tensors made in one thread and dropped in another
    lock = threading.Lock()

    def work(i: int, rng: random.Random) -> list[np.ndarray]:
        out = []
        for step in range(4):
            jitter(rng)
            t = (shared + (i + step)).realize()
            with lock:
                mailbox.append(t)
                victim = mailbox.pop(rng.randrange(len(mailbox))) if rng.random() < 0.7 else None
            del t, victim  # perhaps another thread's tensor: its buffer is released from here
            if rng.random() < 0.3:
                gc.collect()
            out.append(shared.numpy())
        return out

    for got in in_threads(seed, work):
        for g in got:
            assert_matches(g, want, rtol=1e-5, atol=1e-5)
    mailbox.clear()
    rt.synchronize()
    rt.reclaim()
    assert rt.used >= 0


def test_opening_a_device_from_several_threads_gives_one_runtime(monkeypatch):
    """Threads asking a registry for the same device at once all get one Runtime: it is opened once."""
    import tensor.runtime as runtime
    opened: list[str] = []

    class SlowRuntime:  # opening a real device takes a while: long enough for every thread to ask meanwhile
        def __init__(self, name: str, device: Any = None):
            opened.append(name)
            time.sleep(0.05)
            self.name = name

    monkeypatch.setattr(runtime, "Runtime", SlowRuntime)
    devices = runtime.Devices()
    got = in_threads(0, lambda i, rng: devices["cpu"])
    assert all(rt is got[0] for rt in got) and opened == ["CPU"], f"opened {opened}"
