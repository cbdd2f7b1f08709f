"""Laziness and fusion: what runs, when, and how many kernels an expression takes."""
from __future__ import annotations

import numpy as np

from tensor import DEVICES, Tensor
from tensor_checks import assert_matches

X = np.random.default_rng(1).standard_normal((16, 24)).astype(np.float32)
W = np.random.default_rng(2).standard_normal((24, 8)).astype(np.float32)


def kernels(*ts: Tensor) -> list:
    return [i for i in Tensor.schedule(*ts) if i.kind == "kernel"]


def test_nothing_runs_until_asked(device):
    rt = DEVICES[device]
    before = rt.kernels_run
    a = Tensor(X, device)
    b = ((a * 2 + 1).exp() @ Tensor(W, device)).relu().sum(axis=0)
    assert rt.kernels_run == before, "building the graph ran kernels"
    assert not b.node.realized
    b.numpy()
    assert rt.kernels_run == before + 2 and b.node.realized


def test_an_elementwise_chain_is_one_kernel(device):
    a, b = Tensor(X, device), Tensor(X.T.copy(), device)
    c = ((a + b.T) * 3 - a.abs().sqrt()).maximum(a.sin()) / 2
    assert len(kernels(c)) == 1
    assert_matches(c.numpy(), np.maximum((X + X) * 3 - np.sqrt(np.abs(X)), np.sin(X)) / 2, rtol=1e-5, atol=1e-6)


def test_elementwise_producers_fuse_into_a_reduction(device):
    a = Tensor(X, device)
    s = ((a - 1) * (a + 1)).exp().sum(axis=1)
    assert [k.node.kind for k in kernels(s)] == ["reduce"]
    assert_matches(s.numpy(), np.exp((X - 1) * (X + 1)).sum(axis=1), rtol=1e-5)


def test_producers_fuse_into_matmul_and_views_never_copy(device):
    a, w = Tensor(X, device), Tensor(W, device)
    y = (a.relu() @ (w * 0.5)).T[::2]
    ks = kernels(y)
    # The matmul reads relu(a) and 0.5*w inside its tiles; the strided transpose of its result is the one copy.
    assert [k.node.kind for k in ks] == ["matmul", "view"]
    assert_matches(y.numpy(), (np.maximum(X, 0) @ (W * 0.5)).T[::2], rtol=1e-5, atol=1e-5)
    assert len(kernels(a.T.reshape(-1))) == 1 and len(kernels(a.reshape(4, -1))) == 0, \
        "a reshape of contiguous data is free; a transposed copy is the one kernel"


def test_a_reduction_feeding_more_work_is_its_own_kernel(device):
    a = Tensor(X, device)
    m = a.max(axis=1, keepdims=True)
    soft = (a - m).exp() / (a - m).exp().sum(axis=1, keepdims=True)
    assert [k.node.kind for k in kernels(soft)] == ["reduce", "reduce", "ewise"]
    e = np.exp(X - X.max(axis=1, keepdims=True))
    assert_matches(soft.numpy(), e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_realized_work_is_not_scheduled_again(device):
    a = Tensor(X, device)
    b = (a * 2).realize()
    c = b + 1
    assert len(kernels(c)) == 1 and len(kernels(b)) == 0
    assert_matches(c.numpy(), X * 2 + 1)


def test_debug_env_prints_each_kernel(device, monkeypatch, capsys):
    monkeypatch.setenv("BAREGPU_DEBUG", "1")
    (Tensor(X, device) * 2).realize()
    DEVICES[device].synchronize()
    assert f"baregpu: {DEVICES[device].name} kernel ewise_16x24" in capsys.readouterr().err


def test_a_very_long_chain_is_cut_into_bounded_kernels(device):
    from tensor.lazy import MAX_FUSED_DEPTH
    x = Tensor(np.ones(10, np.float32), device)
    y = Tensor(np.full(10, 2.0, np.float32), device)
    want = np.ones(10, np.float32)
    for _ in range(300):  # 600 ops: one kernel would be an expression too deep to compile
        x = x * 0.5 + y
        want = want * np.float32(0.5) + np.float32(2.0)
    n = len(kernels(x))
    assert 600 // MAX_FUSED_DEPTH <= n <= 600 // MAX_FUSED_DEPTH + 1
    assert_matches(x.numpy(), want)


def test_ops_that_repeat_their_operands_compile_in_linear_time(device):
    """relu and maximum use their operand several times; unbound, 20 nested pairs took minutes to compile."""
    x, b = Tensor(np.linspace(-4, 4, 8, dtype=np.float32), device), Tensor(np.ones(8, np.float32), device)
    want = np.linspace(-4, 4, 8, dtype=np.float32)
    for _ in range(20):
        x = (x - 3).relu().maximum(b) + b
        want = np.maximum(np.maximum(want - 3, 0), 1) + 1
    assert len(kernels(x)) == 2, "80 ops: one cut at 64"
    assert_matches(x.numpy(), want)
