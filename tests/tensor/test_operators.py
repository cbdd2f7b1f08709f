"""The operators numpy and PyTorch users reach for first: **, //, %, abs(), float()/int()/operator.index(),
a repr that shows values, and cond.where(a, b); against numpy on every device, in int32, float32, float16 and bool."""
from __future__ import annotations

import operator

import numpy as np
import pytest

from tensor import Tensor
from tensor_checks import assert_matches

RNG = np.random.default_rng(11)
INT_MIN = np.iinfo(np.int32).min


def numpy_quietly(fn, *args):
    """numpy's result without its divide-by-zero and overflow warnings (we give the same values silently)."""
    with np.errstate(all="ignore"):
        return fn(*args)


def divide_operands(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Dividends and divisors with every sign combination, zero divisors, and for floats inf and NaN."""
    if dtype == "bool":
        return np.array([True, True, False, False]), np.array([True, False, True, False])
    if dtype == "int32":
        a = np.array([7, -7, 7, -7, 0, 5, -5, INT_MIN, INT_MIN, 2 ** 31 - 1, 6, -6], np.int32)
        b = np.array([2, 2, -2, -2, 3, 0, 0, -1, 1, -1, 3, 3], np.int32)
        return np.concatenate([a, RNG.integers(-40, 40, 30, dtype=np.int32)]), \
            np.concatenate([b, RNG.integers(-6, 7, 30, dtype=np.int32)])
    a = np.array([7.5, -7.5, 7.5, -7.5, 0.0, -0.0, 1.0, -1.0, 5.0, np.inf, np.nan, 3.0, -1.0, 1.0, 0.0], np.float32)
    b = np.array([2.0, 2.0, -2.0, -2.0, 3.0, 3.0, 0.0, 0.0, -0.0, 2.0, 2.0, np.nan, np.inf, -np.inf, 0.0], np.float32)
    a = np.concatenate([a, (RNG.standard_normal(40) * 20).astype(np.float32)])
    b = np.concatenate([b, (RNG.standard_normal(40) * 3).astype(np.float32)])
    return a.astype(dtype), b.astype(dtype)


@pytest.mark.parametrize("dtype", ["int32", "float32", "float16", "bool"])
@pytest.mark.parametrize("op", [operator.floordiv, operator.mod])
def test_floordiv_and_mod_follow_numpy(device, dtype, op):
    a, b = divide_operands(dtype)
    want = numpy_quietly(op, a, b)
    got = op(Tensor(a, device), Tensor(b, device)).numpy()
    assert_matches(got, want)
    if dtype.startswith("float"):  # the sign of a zero result is numpy's too (0.0 % -3 is -0.0)
        zeros = want == 0
        np.testing.assert_array_equal(np.signbit(got[zeros]), np.signbit(want[zeros]))


def test_int_division_edge_values_are_numpys(device):
    a = Tensor(np.array([INT_MIN, INT_MIN, 9, -9, 0], np.int32), device)
    b = Tensor(np.array([-1, 0, 0, 0, 0], np.int32), device)
    np.testing.assert_array_equal((a // b).numpy(), [INT_MIN, 0, 0, 0, 0])  # numpy: wraps; x // 0 is 0
    np.testing.assert_array_equal((a % b).numpy(), [0, 0, 0, 0, 0])


@pytest.mark.parametrize("scalar", [3, -3, 2.5, -0.75])
def test_floordiv_mod_with_scalars_both_ways(device, scalar):
    a, _ = divide_operands("int32")
    a = np.where(a == 0, 1, a)  # scalar // a needs no zero divisor to compare (numpy warns there)
    a = a[np.abs(a.astype(np.int64)) < 2 ** 24]  # with a float scalar numpy works in float64, we in float32
    t = Tensor(a, device)
    for got, want in [(t // scalar, a // scalar), (t % scalar, a % scalar), (scalar // t, scalar // a),
                      (scalar % t, scalar % a), (divmod(t, scalar)[1], np.divmod(a, scalar)[1])]:
        assert_matches(got.numpy(), numpy_quietly(lambda: want))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_pow_of_tensors(device, dtype):
    a = RNG.uniform(0.1, 4, 30).astype(dtype)
    b = RNG.uniform(-3, 3, 30).astype(dtype)
    assert_matches((Tensor(a, device) ** Tensor(b, device)).numpy(), a ** b, rtol=1e-5 if dtype == "float32" else 2e-3)
    # a negative base: whole exponents keep the sign of an odd power, fractional ones have no real value
    neg = np.array([-2, -2, -2, -0.5, -3], dtype)
    e = np.array([3, 2, 0.5, -3, -2], dtype)
    assert_matches((Tensor(neg, device) ** Tensor(e, device)).numpy(), numpy_quietly(np.power, neg, e), rtol=1e-5)


def test_float_pow_special_values_are_c99s(device):
    a = np.array([0, 0, -0.0, -0.0, 0, np.nan, 1, -1, -1, 2, 0.5, np.inf, -np.inf, -np.inf, -np.inf, 1e30, 5],
                 np.float32)
    b = np.array([0, -1, -1, 3, 2, 0, np.nan, np.inf, -np.inf, np.inf, np.inf, -2, 3, 2, 0.5, 2, -100], np.float32)
    want = numpy_quietly(np.power, a, b)
    got = (Tensor(a, device) ** Tensor(b, device)).numpy()
    assert_matches(got, want)
    np.testing.assert_array_equal(np.signbit(got[~np.isnan(got)]), np.signbit(want[~np.isnan(want)]))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("exponent", [0, 0.5, 1, 2, -1, 3, -2, 2.5, 20.0, -0.5])
def test_float_pow_scalar_exponents(device, dtype, exponent):
    a = np.concatenate([RNG.uniform(0.2, 3, 20), [0.0, 1.0, np.inf]]).astype(dtype)
    if float(exponent).is_integer():
        a = np.concatenate([a, -a[:5]]).astype(dtype)
    want = numpy_quietly(lambda: a ** exponent)
    assert_matches((Tensor(a, device) ** exponent).numpy(), want, rtol=1e-5 if dtype == "float32" else 2e-3)


@pytest.mark.parametrize("base", [2, 2.0, 0.5, -1.5])
def test_rpow_scalar_base(device, base):
    e = np.array([-3, -1, 0, 1, 2, 5, 10], np.float32)
    assert_matches((base ** Tensor(e, device)).numpy(), numpy_quietly(lambda: base ** e), rtol=1e-5)


def test_int_pow_wraps_like_numpy(device):
    a = np.array([3, -3, 2, -2, 7, 0, 1, -1, 5, 2], np.int32)
    e = np.array([25, 19, 31, 31, 3, 0, 1000, 7, 0, 30], np.int32)
    assert_matches((Tensor(a, device) ** Tensor(e, device)).numpy(), a ** e)  # int32 wraps, as numpy's does
    for n in (0, 1, 2, 3, 13, 2 ** 31 - 1):
        assert_matches((Tensor(a, device) ** n).numpy(), numpy_quietly(lambda: a ** n))
    assert_matches((2 ** Tensor(e[:5], device)).numpy(), 2 ** e[:5])


def test_int_pow_negative_exponent_tensor_gives_the_documented_values(device):
    """numpy raises for these; a device learns the exponent only while running, so the truncated value is given."""
    a = Tensor(np.array([1, -1, -1, 2, -2, 0, 5], np.int32), device)
    e = Tensor(np.array([-5, -3, -2, -1, -2, -1, -7], np.int32), device)
    np.testing.assert_array_equal((a ** e).numpy(), [1, -1, 1, 0, 0, 0, 0])


def test_pow_promotion_matches_numpy(device):
    i = np.array([1, 2, 3], np.int32)
    f = np.array([0.5, 1.5, 2.0], np.float32)
    m = np.array([True, False, True])
    cases = [(Tensor(i, device) ** 2.5, i ** 2.5), (Tensor(i, device) ** Tensor(f, device), i ** f),
             (Tensor(f, device) ** Tensor(i, device), f ** i), (Tensor(m, device) ** Tensor(m, device), m ** m),
             (Tensor(m, device) ** 2, m ** 2), (Tensor(f.astype(np.float16), device) ** 2, f.astype(np.float16) ** 2),
             (Tensor(f, device).pow(3), f ** 3)]
    for got, want in cases:
        assert_matches(got.numpy(), want, rtol=1e-5)


@pytest.mark.parametrize("dtype", ["int32", "float32", "float16", "bool"])
def test_abs_builtin(device, dtype):
    x = {"int32": np.array([-5, 5, 0, INT_MIN, 2 ** 31 - 1], np.int32),
         "float32": np.array([-1.5, 1.5, -0.0, 0.0, -np.inf, np.nan], np.float32),
         "float16": np.array([-1.5, 2.5, -0.0, -65504], np.float16),
         "bool": np.array([True, False])}[dtype]
    got = abs(Tensor(x, device)).numpy()
    assert_matches(got, np.abs(x))
    if dtype.startswith("float"):
        assert not np.signbit(got).any()  # abs(-0.0) is 0.0


def test_python_number_conversions(device):
    assert float(Tensor(np.array([[2.5]], np.float32), device) * 2) == 5.0
    assert int(Tensor(np.array([-2.7], np.float32), device)) == -2  # truncates, as int(float) does
    assert int(Tensor(np.array(7, np.int32), device)) == 7
    three = Tensor(np.array([3], np.int32), device)
    assert operator.index(three) == 3 and [10, 11, 12, 13][three] == 13 and list(range(three)) == [0, 1, 2]
    assert bool(Tensor(np.array([0.5], np.float32), device)) and not bool(Tensor(np.array([0]), device))


def test_repr_shows_values_device_and_dtype(device):
    t = Tensor(np.array([[1, 2], [3, 4]], np.float32), device) + 0.5
    assert repr(t) == f"Tensor([[1.5, 2.5],\n        [3.5, 4.5]], device='{device}', dtype='float32')"
    assert repr(Tensor(np.array([True, False]), device)) == f"Tensor([ True, False], device='{device}', dtype='bool')"
    assert repr(Tensor(np.int32(7), device)) == f"Tensor(7, device='{device}', dtype='int32')"
    assert repr(Tensor.zeros(0, 3, device=device)) == f"Tensor([], shape=(0, 3), device='{device}', dtype='float32')"


def test_repr_of_a_big_tensor_is_summarised(device):
    text = repr(Tensor.arange(200 * 300, device=device).reshape(200, 300))
    assert len(text) < 1000 and "..." in text and "59999" in text and "299" in text


@pytest.mark.parametrize("cond_dtype", ["bool", "int32", "float32"])
def test_where_as_method_and_static(device, cond_dtype):
    c = np.array([[1, 0, 2], [0, -1, 0]]).astype(cond_dtype)
    a = RNG.standard_normal((2, 3)).astype(np.float32)
    cond = Tensor(c, device)
    want = np.where(c, a, np.float32(-1))
    assert_matches(cond.where(Tensor(a, device), -1.0).numpy(), want)
    assert_matches(Tensor.where(cond, Tensor(a, device), -1.0).numpy(), want)
    assert_matches(cond.where(1, 0).numpy(), np.where(c, 1, 0))
