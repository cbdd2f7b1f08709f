"""Property tests (hypothesis) of the tensor layer against numpy, on every device of the `device` fixture.

What is checked, always with numpy as the reference and with per-dtype tolerances (float32, float16, int32, bool):

1. Broadcasting and type promotion: random broadcast-compatible shapes (0-d to 4-d, sides 1..6) under
   + - * / maximum minimum < == and where, for every pair of our dtypes and for Python scalars (bool, int, float)
   on either side. The result dtype must be numpy's (NEP 50: a Python scalar does not widen a tensor), with
   numpy's float64/int64 narrowed to float32/int32 as tensor/dtypes.py documents; an operation numpy refuses
   (bool - bool) must be refused too.
2. Views: random chains of reshape, permute, expand, basic indexing (ints, slices with positive and negative
   steps, None, Ellipsis) and constant pad, applied to the same numpy array and to a tensor (an uploaded one, or
   the lazy result of an elementwise op), compared exactly; then the view feeding an elementwise op, and a
   reduction (sum, max, min or mean) over random axes of it.
3. Reductions: sum, max, min and mean over random axes (None, one axis, tuples in any order, negative axes) with
   and without keepdims, on float32, float16, int32 and bool, with counts on both sides of the reduce kernel's
   strategy switches (one thread per output below 32 reduced elements, a 64-thread tree at 32 and above).
4. NaN: maximum/minimum and max/min/sum/mean propagate NaN, comparisons with NaN are false, as in numpy.

Bugs these found (0-d tensors read back as shape (1,), int32 min of -2**31, float16 mean overflow) are fixed and
kept as minimal regression tests at the end of the file; the data here are small, so those keep the edges covered.

Generated data stays away from undefined or overflowing arithmetic on purpose: integers are within +-20 (so no
sum, product or difference of them gets near the int32 range), divisors are nonzero (and True for bool), floats
are finite and small (|x| <= 8: no float16 overflow), and in binary tests floats are multiples of 1/4 so that
they are exact in float16 and equality comparisons and `where` conditions come out both ways.

Every distinct shape, dtype and op compiles a new kernel, so examples are few (derandomize=True keeps CI
reproducible, deadline=None because a first compile is slow, database=None so nothing is written to the tree).
"""
from __future__ import annotations

import math
import operator
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings, strategies as st
from hypothesis.extra import numpy as hnp

from tensor import Tensor
from tensor_checks import TOL, assert_matches

NP_DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "bool": np.bool_}
DTYPES = list(NP_DTYPES)
PY_SCALARS = ["py_bool", "py_int", "py_float"]
NARROW = {"float64": "float32", "int64": "int32"}
EPS = {"float32": 2.0 ** -24, "float16": 2.0 ** -11}  # unit roundoff


def cfg(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.filter_too_much])


SEEDS = st.integers(0, 2 ** 32 - 1)


def narrowed(dtype: np.dtype) -> str:
    return NARROW.get(np.dtype(dtype).name, np.dtype(dtype).name)


def values(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, *, nonzero: bool = False,
           grid: bool = True) -> np.ndarray:
    """Random finite data of a dtype. Ints in [-20, 20] (no int32 overflow in any op the tests apply); floats in
    [-8, 8], multiples of 1/4 when grid (exact in float16, and equal values are common); nonzero for divisors."""
    if dtype == "bool":
        return np.ones(shape, np.bool_) if nonzero else np.asarray(rng.random(shape) < 0.5)
    if dtype == "int32":
        v = np.asarray(rng.integers(-20, 21, shape))
        return np.where(v == 0, 7, v).astype(np.int32) if nonzero else v.astype(np.int32)
    v = np.asarray(rng.integers(-32, 33, shape) / 4 if grid else rng.uniform(-8, 8, shape))
    if nonzero:
        v = np.where(v == 0, 0.5, v)
    return v.astype(NP_DTYPES[dtype])


def scalar_strategy(kind: str, nonzero: bool) -> st.SearchStrategy:
    """Python scalars; a divisor is never zero (nor False)."""
    if kind == "py_bool":
        return st.just(True) if nonzero else st.booleans()
    if kind == "py_int":
        return st.integers(-5, 5).filter(lambda v: v != 0) if nonzero else st.integers(-5, 5)
    floats = [-2.5, -0.75, 0.25, 1.0, 1.5, 3.0]
    return st.sampled_from(floats if nonzero else floats + [0.0])


# --- 1. broadcasting and promotion ---

def _maximum(a, b):
    if isinstance(a, Tensor):
        return a.maximum(b)
    if isinstance(b, Tensor):  # a Python scalar first: maximum is symmetric, numpy's result type too
        return b.maximum(a)
    return np.maximum(a, b)


def _minimum(a, b):
    if isinstance(a, Tensor):
        return a.minimum(b)
    if isinstance(b, Tensor):
        return b.minimum(a)
    return np.minimum(a, b)


# The same callable computes numpy's reference (on arrays and Python scalars) and ours (on tensors).
BINARY = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "<": operator.lt,
          "==": operator.eq, "maximum": _maximum, "minimum": _minimum}


@cfg(25)
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=4, min_side=1, max_side=6),
       op=st.sampled_from(list(BINARY) + ["where"]), kinds=st.tuples(*[st.sampled_from(DTYPES + PY_SCALARS)] * 2),
       cond_dtype=st.sampled_from(["bool", "bool", "int32", "float32"]), seed=SEEDS, data=st.data())
def test_broadcast_binary_ops_match_numpy(device, shapes, op, kinds, cond_dtype, seed, data):
    (sa, sb, sc), _ = shapes
    if op != "where":
        assume(kinds[0] in DTYPES or kinds[1] in DTYPES)  # where's condition is a tensor; the others need one
    rng = np.random.default_rng(seed)
    ops = []
    for i, (kind, shape) in enumerate(zip(kinds, (sa, sb))):
        divisor = op == "/" and i == 1  # the right operand of / is never zero (no inf/nan from x/0)
        if kind in DTYPES:
            arr = values(rng, shape, kind, nonzero=divisor)
            ops.append((arr, Tensor(arr, device)))
        else:
            s = data.draw(scalar_strategy(kind, divisor), label=f"operand {i}")
            ops.append((s, s))
    (a, ta), (b, tb) = ops
    note(f"a={a!r}\nb={b!r}")
    with np.errstate(all="raise"):  # the data are chosen so numpy never overflows or divides by zero
        if op == "where":
            c = values(rng, sc, cond_dtype)
            note(f"cond={c!r}")
            want = np.where(c, a, b)
            got = Tensor.where(Tensor(c, device), ta, tb)
        else:
            try:
                want = BINARY[op](a, b)
            except TypeError:  # numpy refuses this dtype pair (bool - bool): so must we
                with pytest.raises(TypeError):
                    BINARY[op](ta, tb)
                return
            got = BINARY[op](ta, tb)
    want = np.asarray(want)
    assert isinstance(got, Tensor)
    assert got.dtype == narrowed(want.dtype), f"{kinds} {op}: dtype {got.dtype}, numpy {want.dtype}"
    assert got.shape == want.shape
    assert_matches(got.numpy(), want)


@pytest.mark.parametrize("op", list(BINARY) + ["where"])
def test_result_dtype_of_every_operand_pair(device, op):
    """The whole promotion table (tensor dtypes and Python scalar kinds, either side), without running kernels."""
    samples = {"py_bool": True, "py_int": 3, "py_float": 2.5}
    for ka in DTYPES + PY_SCALARS:
        for kb in DTYPES + PY_SCALARS:
            if op != "where" and ka not in DTYPES and kb not in DTYPES:
                continue
            a = np.ones(2, NP_DTYPES[ka]) if ka in DTYPES else samples[ka]
            b = np.ones(2, NP_DTYPES[kb]) if kb in DTYPES else samples[kb]
            ta = Tensor(a, device) if ka in DTYPES else a
            tb = Tensor(b, device) if kb in DTYPES else b
            if op == "where":
                cond = np.array([True, False])
                want = np.where(cond, a, b)
                assert Tensor.where(Tensor(cond, device), ta, tb).dtype == narrowed(want.dtype), (ka, kb)
                continue
            try:
                want = np.asarray(BINARY[op](a, b))
            except TypeError:
                with pytest.raises(TypeError):
                    BINARY[op](ta, tb)
                continue
            assert BINARY[op](ta, tb).dtype == narrowed(want.dtype), (ka, op, kb)


# --- 2. views ---

@st.composite
def axis_specs(draw, ndim: int):
    """None, an int (maybe negative), or a tuple of distinct axes in any order, each maybe negative (maybe empty)."""
    form = draw(st.sampled_from(["none", "int", "tuple"]))
    if form == "none":
        return None
    if ndim == 0:  # a 0-d tensor has no axis to name: () reduces over nothing
        return ()
    if form == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


MAX_VIEW_SIZE = 1500  # elements; chains that would grow past this skip the growing step
MAX_VIEW_NDIM = 6


def prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


def draw_reshape(draw, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A random shape of the same size: the prime factors shuffled and grouped, 1s inserted, maybe one -1."""
    size = math.prod(shape)
    if size == 0:
        dims = draw(st.lists(st.integers(1, 3), max_size=2))
        dims.insert(draw(st.integers(0, len(dims))), 0)
        return tuple(dims)
    fs = draw(st.permutations(prime_factors(size)))
    k = draw(st.integers(min(1, len(fs)), min(4, len(fs))))  # how many dims the factors are grouped into
    cuts = sorted(draw(st.lists(st.integers(1, len(fs) - 1), unique=True, min_size=k - 1, max_size=k - 1))) \
        if k > 1 else []
    bounds = [0] + cuts + [len(fs)]
    dims = [math.prod(fs[lo:hi]) for lo, hi in zip(bounds, bounds[1:])] if k else []
    for _ in range(draw(st.integers(0, max(0, min(2, MAX_VIEW_NDIM - len(dims)))))):
        dims.insert(draw(st.integers(0, len(dims))), 1)
    if dims and draw(st.booleans()):
        dims[draw(st.integers(0, len(dims) - 1))] = -1
    return tuple(dims)


def draw_index(draw, shape: tuple[int, ...]) -> tuple:
    """A basic index: per axis an int or a slice (any bounds, steps -3..3), trailing axes left out or an Ellipsis,
    and Nones anywhere."""
    bound = st.none() | st.integers(-8, 8)
    step = st.none() | st.sampled_from([-3, -2, -1, 1, 2, 3])
    parts: list = []
    for n in shape:
        if n > 0 and draw(st.integers(0, 4)) == 0:
            parts.append(draw(st.integers(-n, n - 1)))
        else:
            parts.append(slice(draw(bound), draw(bound), draw(step)))
    cut = draw(st.integers(0, len(parts)))
    if draw(st.booleans()):
        parts = parts[:cut] + [Ellipsis] + parts[cut + draw(st.integers(0, len(parts) - cut)):]
    else:
        parts = parts[:cut]
    out_ndim = sum(isinstance(p, slice) for p in parts) + (len(shape) - sum(p is not Ellipsis for p in parts))
    for _ in range(draw(st.integers(0, max(0, min(2, MAX_VIEW_NDIM - out_ndim))))):
        parts.insert(draw(st.integers(0, len(parts))), None)
    return tuple(parts)


def fill_values(dtype: str) -> st.SearchStrategy:
    return {"bool": st.booleans(), "int32": st.integers(-5, 5)}.get(dtype, st.sampled_from([0.0, -1.5, 2.25]))


def apply_view_step(draw, x: np.ndarray, t: Tensor, dtype: str) -> tuple[np.ndarray, Tensor]:
    """One random movement op, applied to the numpy array and to the tensor alike."""
    op = draw(st.sampled_from(["reshape", "permute", "expand", "index", "pad"]), label="op")
    if op == "reshape":
        new = draw_reshape(draw, x.shape)
        note(f"reshape{new}")
        return x.reshape(new), t.reshape(*new) if draw(st.booleans()) else t.reshape(new)
    if op == "permute":
        order = [o - x.ndim if draw(st.booleans()) else o for o in draw(st.permutations(range(x.ndim)))]
        note(f"permute{tuple(order)}")
        return x.transpose(order), t.permute(*order)
    if op == "expand":
        new = [draw(st.integers(1, 4)) if n == 1 else n for n in x.shape]
        lead = draw(st.lists(st.integers(1, 3), max_size=max(0, min(2, MAX_VIEW_NDIM - x.ndim))))
        target = tuple(lead) + tuple(new)
        if math.prod(target) > MAX_VIEW_SIZE:
            return x, t
        note(f"[None]*{len(lead)} expand{target}")
        return np.broadcast_to(x, target), t[(None,) * len(lead)].expand(*target)
    if op == "index":
        idx = draw_index(draw, x.shape)
        note(f"[{idx}]")
        return np.asarray(x[idx]), t[idx]  # numpy gives a scalar for an all-int index: back to a 0-d array
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(x.ndim))
    form = draw(st.sampled_from(["per_axis", "pair", "int"]))
    if not pads:  # 0-d: numpy takes only a number (there is no axis to pad), and leaves the array as it is
        pw = draw(st.integers(0, 2))
    else:
        pw = pads if form == "per_axis" else pads[0] if form == "pair" else pads[0][0]
    fill = draw(fill_values(dtype))
    y = np.pad(x, pw, constant_values=fill)
    if y.size > MAX_VIEW_SIZE:
        return x, t
    note(f"pad({pw}, value={fill!r})")
    return y, t.pad(pw, fill)


@cfg(25)
@given(shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=6), dtype=st.sampled_from(DTYPES),
       lazy=st.booleans(), n_steps=st.integers(1, 5), seed=SEEDS, data=st.data())
def test_chains_of_views_match_numpy(device, shape, dtype, lazy, n_steps, seed, data):
    rng = np.random.default_rng(seed)
    x = values(rng, shape, dtype)
    t = Tensor(x, device)
    if lazy:  # the chain over an unrealized elementwise result: the view indexes into the fused expression
        t = t | False if dtype == "bool" else t + 0
    for _ in range(n_steps):
        x, t = apply_view_step(data.draw, x, t, dtype)
    assert t.shape == x.shape and t.dtype == dtype
    assert_matches(t.numpy(), x, rtol=0, atol=0)  # pure data movement: exact

    # The view feeding an elementwise op (reading it twice) ...
    if dtype == "bool":
        flip = (..., slice(None, None, -1)) if x.ndim else ()
        assert_matches((~t ^ t[flip]).numpy(), ~x ^ x[flip])
    else:
        assert_matches((t * 2).maximum(t + 1).numpy(), np.maximum(x * 2, x + 1))
    # ... and a reduction over random axes. Sums of grid values (multiples of 1/4, |x| <= 8, fewer than 2**16 of
    # them) are exact in float32, so ours must equal the float64 answer rounded once (twice for a float16 mean).
    fn = data.draw(st.sampled_from(["sum", "max", "min", "mean"]), label="fn")
    axis = data.draw(axis_specs(x.ndim), label="axis")
    keepdims = data.draw(st.booleans(), label="keepdims")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of nothing is nan, with a warning
        try:
            want = np.asarray(getattr(np, fn)(x, axis=axis, keepdims=keepdims))
        except ValueError:  # max/min over an empty axis: numpy has no identity to return, and neither do we
            with pytest.raises(ValueError):
                getattr(t, fn)(axis, keepdims)
            return
        exact = getattr(np, fn)(x.astype(np.float64) if dtype in EPS else x, axis=axis, keepdims=keepdims)
    assert_matches(getattr(t, fn)(axis, keepdims).numpy(), exact, dtype=narrowed(want.dtype),
                   **(dict(rtol=0, atol=0) if fn in ("max", "min") else {}))


# --- 3. reductions ---

@st.composite
def reduce_shapes(draw):
    """0-d to 4-d; usually one long axis (31 to 130) among short ones, so reduced counts fall below 32, at 32, between
    32 and 64, at 64 and above (and products of short axes add more counts in between)."""
    dims = draw(st.lists(st.integers(1, 7), min_size=0, max_size=3))
    long = draw(st.sampled_from([None, 31, 32, 33, 63, 64, 65, 130]))
    if long is not None:
        dims.insert(draw(st.integers(0, len(dims))), long)
    return tuple(dims)


@cfg(30)
@given(shape=reduce_shapes(), dtype=st.sampled_from(DTYPES), fn=st.sampled_from(["sum", "max", "min", "mean"]),
       keepdims=st.booleans(), p_true=st.sampled_from([0.0, 0.03, 0.5, 0.97, 1.0]), seed=SEEDS, data=st.data())
def test_reductions_over_random_axes_match_numpy(device, shape, dtype, fn, keepdims, p_true, seed, data):
    rng = np.random.default_rng(seed)
    if dtype == "bool":  # all-False and all-True inputs matter for max/min; p_true picks how many are True
        x = np.asarray(rng.random(shape) < p_true)
    else:
        x = values(rng, shape, dtype, grid=False)  # continuous floats, so sums and means round
    axis = data.draw(axis_specs(x.ndim), label="axis")
    got = getattr(Tensor(x, device), fn)(axis, keepdims).numpy()
    want = getattr(np, fn)(x, axis=axis, keepdims=keepdims)
    if fn in ("max", "min"):
        assert_matches(got, want, rtol=0, atol=0)  # exact: one of the inputs
        return
    if dtype in ("int32", "bool") and fn == "sum":
        assert_matches(got, want)  # exact; numpy's int64 narrowed (the sums are far inside int32)
        return
    # Float results: compare with the exact (float64) answer in numpy's (narrowed) dtype. Ours accumulates in
    # float32 (float16 too) and rounds once at the end: allow n * eps32 * max|x| of accumulation error, plus the
    # result dtype's own rounding (mean of float16 rounds twice: the sum, then the quotient).
    exact = getattr(np, fn)(x.astype(np.float64), axis=axis, keepdims=keepdims)
    axes = range(x.ndim) if axis is None else [axis] if isinstance(axis, int) else axis
    n = math.prod(x.shape[a] for a in axes)
    out = narrowed(want.dtype)
    atol = TOL[out]["atol"] + 2 * n * EPS["float32"] * float(np.abs(x).max(initial=0)) / (n if fn == "mean" else 1)
    assert_matches(got, exact, dtype=out, rtol=TOL[out]["rtol"] + 2 * EPS[out], atol=atol)


# --- 4. NaN ---

@cfg(10)
@given(shape=st.sampled_from([(7,), (3, 40), (70,), (2, 5, 13)]), dtype=st.sampled_from(["float32", "float16"]),
       n_nan=st.integers(0, 3), seed=SEEDS, axis=st.sampled_from([None, -1, 0]))
def test_nan_propagates_like_numpy(device, shape, dtype, n_nan, seed, axis):
    rng = np.random.default_rng(seed)
    x, y = values(rng, shape, dtype, grid=False), values(rng, shape, dtype)
    x.reshape(-1)[rng.integers(0, x.size, n_nan)] = np.nan
    y.reshape(-1)[rng.integers(0, y.size, n_nan)] = np.nan
    tx, ty = Tensor(x, device), Tensor(y, device)
    with np.errstate(invalid="ignore"):
        assert_matches(tx.maximum(ty).numpy(), np.maximum(x, y), rtol=0, atol=0)
        assert_matches(tx.minimum(ty).numpy(), np.minimum(x, y), rtol=0, atol=0)
        assert_matches((tx < ty).numpy(), x < y)
        assert_matches((tx == tx).numpy(), x == x)
        assert_matches(tx.max(axis).numpy(), x.max(axis), rtol=0, atol=0)
        assert_matches(tx.min(axis).numpy(), x.min(axis), rtol=0, atol=0)
        assert np.array_equal(np.isnan(tx.sum(axis).numpy()), np.isnan(x.sum(axis)))
        assert np.array_equal(np.isnan(tx.mean(axis).numpy()), np.isnan(x.mean(axis)))


# --- bugs the properties above found, kept as minimal regression tests ---

def test_a_0d_tensor_reads_back_0d(device):
    assert Tensor(np.float32(1.5), device).numpy().shape == ()


def test_int32_min_of_the_most_negative_value(device):
    x = np.array([-2 ** 31, 0], np.int32)
    assert_matches(Tensor(x, device).min().numpy(), x.min())


def test_float16_mean_of_large_values(device):
    x = np.array([60000, 60000], np.float16)
    assert_matches(Tensor(x, device).mean().numpy(), x.mean())
