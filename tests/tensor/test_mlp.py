"""A small MLP forward pass (two layers, ReLU, softmax) equals numpy on every device."""
from __future__ import annotations

import numpy as np

from tensor import Tensor
from tensor_checks import assert_matches


def mlp_numpy(x, w1, b1, w2, b2):
    h = np.maximum(x @ w1 + b1, 0)
    logits = h @ w2 + b2
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def mlp_tensor(x, w1, b1, w2, b2):
    h = (x @ w1 + b1).relu()
    logits = h @ w2 + b2
    e = (logits - logits.max(axis=1, keepdims=True)).exp()
    return e / e.sum(axis=1, keepdims=True)


def test_mlp_forward_matches_numpy(device):
    rng = np.random.default_rng(42)
    shapes = [(64, 100), (100, 48), (48,), (48, 10), (10,)]
    params = [(rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32) for s in shapes]
    out = mlp_tensor(*[Tensor(p, device) for p in params])
    kernel_kinds = [i.node.kind for i in Tensor.schedule(out) if i.kind == "kernel"]
    # Two matmuls (bias and ReLU fused into the second one's loads), max, sum, and the final division.
    assert kernel_kinds.count("matmul") == 2 and len(kernel_kinds) == 5, kernel_kinds
    got = out.numpy()
    assert_matches(got, mlp_numpy(*params), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
