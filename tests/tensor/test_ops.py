"""Tensor operations against numpy on every device: creation, elementwise math, promotion, views, reductions,
matmul, and the errors users hit."""
from __future__ import annotations

import numpy as np
import pytest

from tensor import Tensor
from tensor_checks import assert_matches

RNG = np.random.default_rng(0)
A = RNG.standard_normal((5, 7)).astype(np.float32)
B = RNG.standard_normal((7,)).astype(np.float32)
I = RNG.integers(-50, 50, (5, 7)).astype(np.int32)


def test_creation(device):
    assert_matches(Tensor.zeros(2, 3, device=device).numpy(), np.zeros((2, 3), np.float32))
    assert_matches(Tensor.ones((4,), device=device, dtype="int32").numpy(), np.ones(4, np.int32))
    assert_matches(Tensor.full((2, 2), 2.5, device=device).numpy(), np.full((2, 2), 2.5, np.float32))
    assert_matches(Tensor.arange(3, 11, 2, device=device).numpy(), np.arange(3, 11, 2))
    assert_matches(Tensor.eye(3, 4, device=device).numpy(), np.eye(3, 4, dtype=np.float32))
    assert_matches(Tensor([[True, False]], device=device).numpy(), np.array([[True, False]]))
    assert_matches(Tensor(A, device=device).numpy(), A)


def test_seeded_random_is_the_same_on_every_device(device):
    r = Tensor.rand(3, 4, device=device, seed=7).numpy()
    assert_matches(r, np.random.default_rng(7).random((3, 4), dtype=np.float32))
    assert 0 <= r.min() and r.max() < 1
    n = Tensor.randn(1000, device=device, seed=1).numpy()
    assert abs(n.mean()) < 0.1 and 0.9 < n.std() < 1.1
    assert not np.array_equal(Tensor.rand(8, device=device, seed=1).numpy(), Tensor.rand(8, device=device, seed=2).numpy())


@pytest.mark.parametrize("name,fn", [
    ("add", lambda x, y: x + y), ("sub", lambda x, y: x - y), ("mul", lambda x, y: x * y),
    ("div", lambda x, y: x / y), ("maximum", lambda x, y: x.maximum(y) if isinstance(x, Tensor) else np.maximum(x, y)),
    ("minimum", lambda x, y: x.minimum(y) if isinstance(x, Tensor) else np.minimum(x, y)),
    ("lt", lambda x, y: x < y), ("ge", lambda x, y: x >= y), ("eq", lambda x, y: x == y), ("ne", lambda x, y: x != y),
])
def test_binary_ops_broadcast_like_numpy(device, name, fn):
    assert_matches(fn(Tensor(A, device), Tensor(B, device)).numpy(), fn(A, B))
    assert_matches(fn(Tensor(I, device), Tensor(A, device)).numpy(), fn(I, A))  # int32 with float32 -> float
    assert_matches(fn(Tensor(A, device), 2.0).numpy(), fn(A, np.float32(2.0)))


@pytest.mark.parametrize("name", ["neg", "exp", "log", "sqrt", "sin", "cos", "relu", "sigmoid", "tanh"])
def test_unary_math(device, name):
    x = np.abs(A) + 0.1 if name in ("log", "sqrt") else A * 3
    ref = {"neg": lambda v: -v, "relu": lambda v: np.maximum(v, 0), "sigmoid": lambda v: 1 / (1 + np.exp(-v))}.get(
        name, getattr(np, name, None))
    t = Tensor(x, device)
    got = (-t if name == "neg" else getattr(t, name)()).numpy()
    assert_matches(got, ref(x).astype(np.float32), rtol=2e-6, atol=2e-6)


def test_integer_and_bool_semantics(device):
    i = Tensor(I, device)
    assert_matches((i * 3 - 7).numpy(), I * 3 - 7)
    assert_matches((i / 4).numpy(), I / 4)  # true division makes floats
    assert_matches((i.exp()).numpy(), np.exp(I), rtol=1e-5)
    m = Tensor(I > 0, device)
    assert_matches((m & (i < 20)).numpy(), (I > 0) & (I < 20))
    assert_matches((~m).numpy(), ~(I > 0))
    assert_matches((m + m).numpy(), (I > 0) + (I > 0))  # bool + bool is logical or in numpy
    assert_matches((m * 2).numpy(), (I > 0) * 2)
    assert_matches(Tensor.where(m, i, -1).numpy(), np.where(I > 0, I, -1))
    assert_matches(Tensor.where(i > 0, Tensor(A, device), 0.5).numpy(), np.where(I > 0, A, np.float32(0.5)))


def test_float16_math_and_promotion(device):
    h = A.astype(np.float16)
    t = Tensor(h, device)
    assert_matches((t * 2 + 1).numpy(), h * 2 + 1)
    assert_matches(t.exp().numpy(), np.exp(h))
    assert_matches((t + Tensor(A, device)).numpy(), h + A)  # float16 + float32 -> float32


def test_nan_propagates_like_numpy(device):
    x = np.array([np.nan, 1.0, -2.0, np.inf], np.float32)
    t = Tensor(x, device)
    assert_matches(t.maximum(0).numpy(), np.maximum(x, 0))
    assert_matches(t.relu().numpy(), np.array([np.nan, 1.0, 0.0, np.inf], np.float32))
    assert_matches(t.max().numpy(), np.max(x))
    assert_matches((t == t).numpy(), x == x)


def test_views_without_copies(device):
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    t = Tensor(x, device)
    cases = [
        (t.reshape(6, 4), x.reshape(6, 4)), (t.permute(2, 0, 1), x.transpose(2, 0, 1)), (t.T, x.T),
        (t[:, None, 1].expand(2, 5, 4), np.broadcast_to(x[:, None, 1], (2, 5, 4))), (t[..., ::-2], x[..., ::-2]),
        (t[1, 1:, 3], x[1, 1:, 3]), (t[-1], x[-1]), (t[:, 5:], x[:, 5:]), (t.pad(((1, 0), (0, 2), (1, 1))),
                                                                       np.pad(x, ((1, 0), (0, 2), (1, 1)))),
        (t.T.reshape(-1)[3:20:4], x.T.reshape(-1)[3:20:4]), (t.squeeze(), x), (t.unsqueeze(1), x[:, None]),
    ]
    for got, want in cases:
        assert_matches(got.numpy(), want)


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 1), True), (-1, False)])
def test_reductions(device, axis, keepdims):
    t = Tensor(A, device)
    assert_matches(t.sum(axis, keepdims).numpy(), A.sum(axis, keepdims=keepdims), rtol=1e-5, atol=1e-5)
    assert_matches(t.max(axis, keepdims).numpy(), A.max(axis, keepdims=keepdims))
    assert_matches(t.min(axis, keepdims).numpy(), A.min(axis, keepdims=keepdims))
    assert_matches(t.mean(axis, keepdims).numpy(), A.mean(axis, keepdims=keepdims), rtol=1e-5, atol=1e-6)
    assert_matches(Tensor(I, device).sum(axis, keepdims).numpy(), I.sum(axis, keepdims=keepdims))
    assert_matches(Tensor(I > 0, device).sum(axis, keepdims).numpy(), (I > 0).sum(axis, keepdims=keepdims))


def test_large_reduction_uses_every_element(device):
    x = RNG.standard_normal((3, 1000)).astype(np.float32)
    assert_matches(Tensor(x, device).sum(axis=1).numpy(), x.sum(axis=1), rtol=1e-4, atol=1e-4)
    assert_matches(Tensor(x, device).max(axis=1).numpy(), x.max(axis=1))


@pytest.mark.parametrize("sa,sb", [((5, 7), (7, 3)), ((33, 17), (17, 20)), ((7,), (7, 4)), ((4, 7), (7,)),
                                   ((2, 3, 5, 6), (6, 4)), ((2, 1, 5, 6), (3, 6, 2)),
                                   ((70, 45), (45, 130)), ((2, 65, 33), (33, 64)),  # the large-tile kernel, ragged
                                   ((2, 64, 96), (96, 64)),  # tiles that divide the matrices: no bounds checks
                                   ((2, 0), (0, 4)), ((0, 3), (3, 2))])  # K = 0: zeros, no kernel; M = 0: empty
def test_matmul(device, sa, sb):
    a, b = RNG.standard_normal(sa).astype(np.float32), RNG.standard_normal(sb).astype(np.float32)
    assert_matches((Tensor(a, device) @ Tensor(b, device)).numpy(), a @ b, rtol=1e-5, atol=1e-5)


def test_matmul_dtypes(device):
    ai, bi = I, I.T.copy()
    assert_matches((Tensor(ai, device) @ Tensor(bi, device)).numpy(), ai @ bi)
    ah = A.astype(np.float16)
    assert_matches((Tensor(ah, device) @ Tensor(ah.T, device)).numpy(), ah @ ah.T, rtol=1e-2, atol=1e-2)


def test_errors_name_what_is_wrong(device):
    t = Tensor(A, device)
    with pytest.raises(ValueError, match=r"shapes \(5, 7\) and \(3,\) do not broadcast"):
        t + Tensor(np.zeros(3, np.float32), device)
    with pytest.raises(ValueError, match="cannot reshape"):
        t.reshape(3, 3)
    with pytest.raises(IndexError, match="out of bounds"):
        t[5]
    with pytest.raises(TypeError, match="advanced"):
        t[[0, 1]]
    with pytest.raises(ValueError, match="inner sizes 7 and 5 differ"):
        t @ t
    with pytest.raises(TypeError, match="not defined"):
        t & t
    with pytest.raises(TypeError, match="not supported"):
        Tensor(np.zeros(2, np.complex64), device)
