"""Property tests against numpy on every device: broadcasting with type promotion, chains of views, and
reductions over random axes, with per-dtype tolerances. Seeds are fixed (derandomize) so CI is reproducible;
values are small and divisors nonzero so integer overflow and division by zero stay out of the comparison."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from tensor import Tensor
from tensor_checks import assert_matches

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = st.sampled_from(["float32", "float16", "int32", "bool"])


def data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype == "int32":
        return rng.integers(1, 20, shape).astype(np.int32) * rng.choice([-1, 1], shape).astype(np.int32)
    return (rng.standard_normal(shape) * 2).astype(dtype)


@SETTINGS
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=5),
       dts=st.tuples(DTYPES, DTYPES), op=st.sampled_from(["+", "*", "<", "==", "max", "where"]),
       seed=st.integers(0, 1000))
def test_broadcasting_binary_ops(device, shapes, dts, op, seed):
    (sa, sb), _ = shapes
    a, b = data(sa, dts[0], seed), data(sb, dts[1], seed + 1)
    ta, tb = Tensor(a, device), Tensor(b, device)
    if op == "+" and dts == ("bool", "bool"):
        op = "*"
    fns = {"+": (lambda x, y: x + y, lambda x, y: x + y), "*": (lambda x, y: x * y, lambda x, y: x * y),
           "<": (lambda x, y: x < y, lambda x, y: x < y), "==": (lambda x, y: x == y, lambda x, y: x == y),
           "max": (lambda x, y: x.maximum(y), np.maximum),
           "where": (lambda x, y: Tensor.where(x > y, x, y), lambda x, y: np.where(x > y, x, y))}
    ours, ref = fns[op]
    want = ref(a, b)
    assert_matches(ours(ta, tb).numpy(), want, rtol=5e-3 if "float16" in dts else 1e-6, atol=5e-3)


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=5), ops=st.lists(st.integers(0, 4), max_size=4),
       dtype=DTYPES, seed=st.integers(0, 1000))
def test_chains_of_views(device, shape, ops, dtype, seed):
    x = data(shape, dtype, seed)
    t = Tensor(x, device)
    for i, op in enumerate(ops):
        if op == 0:  # permute
            order = list(np.random.default_rng(seed + i).permutation(x.ndim))
            x, t = x.transpose(order), t.permute(*order)
        elif op == 1:  # slice with steps, reversed on the first axis
            idx = (slice(None, None, -1),) + tuple(slice(0, None, 2) for _ in range(x.ndim - 1))
            x, t = x[idx], t[idx]
        elif op == 2:  # reshape to flat and back with a new axis
            x, t = x.reshape(-1)[None], t.reshape(-1)[None]
        elif op == 3:  # pad
            x, t = np.pad(x, 1), t.pad(1)
        else:  # expand a new leading axis
            x, t = np.broadcast_to(x[None], (2,) + x.shape), t[None].expand(2, *t.shape)
    assert_matches(t.numpy(), x)
    if dtype != "bool" and x.size:
        assert_matches((t * 2).sum(axis=-1).numpy(), (x * 2).sum(axis=-1), rtol=1e-2 if dtype == "float16" else 1e-5,
                       atol=1e-2 if dtype == "float16" else 1e-5)


@SETTINGS
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=70), dtype=DTYPES,
       fn=st.sampled_from(["sum", "max", "min", "mean"]), keepdims=st.booleans(), seed=st.integers(0, 1000),
       axis_pick=st.integers(0, 7))
def test_reductions_over_random_axes(device, shape, dtype, fn, keepdims, seed, axis_pick):
    x = data(shape, dtype, seed)
    axes = [a for a in range(x.ndim) if axis_pick >> a & 1]
    axis = None if not axes or len(axes) == x.ndim and axis_pick & 4 else tuple(a - x.ndim for a in axes)
    got = getattr(Tensor(x, device), fn)(axis, keepdims).numpy()
    want = getattr(x, fn)(axis=axis, keepdims=keepdims)
    if fn == "mean" and dtype in ("int32", "bool"):
        want = want.astype(np.float32)
    n = x.size if axis is None else int(np.prod([x.shape[a] for a in axis]))
    tol = {"float16": 2e-2 * max(1, n ** 0.5), "float32": 1e-4 * max(1, n ** 0.5)}.get(dtype, 0)
    assert_matches(got, want, rtol=tol, atol=tol)
