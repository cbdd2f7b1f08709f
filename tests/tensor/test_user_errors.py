"""Bad input as users meet it: each error names the function, the value and what to do. Also the edges that used
to fail deep inside: shapes past int32 indexing (refused when made, never allocated) and a K=0 matmul."""
from __future__ import annotations

import re

import numpy as np
import pytest

from tensor import Tensor
from tensor.tensor import MAX_ELEMENTS
from tensor_checks import assert_matches

BIG = 2 ** 16  # BIG x BIG is 2**32 elements


def shape_makers():
    """Every place a shape is taken, as (name, call with one bad size)."""
    return [
        ("zeros", lambda d: Tensor.zeros(d, 3)), ("ones", lambda d: Tensor.ones((2, d))),
        ("full", lambda d: Tensor.full((d,), 1.0)), ("rand", lambda d: Tensor.rand(d, seed=0)),
        ("randn", lambda d: Tensor.randn(2, d, seed=0)), ("eye", lambda d: Tensor.eye(d)),
        ("eye", lambda d: Tensor.eye(2, d)), ("reshape", lambda d: Tensor.ones(6).reshape(d, 3)),
        ("expand", lambda d: Tensor.ones(1, 3).expand(d, 3)),
        ("broadcast_to", lambda d: Tensor.ones(3).broadcast_to((d, 3))),
    ]


@pytest.mark.parametrize("bad,kind", [(2.5, "(float)"), (2.0, "(float)"), (np.float32(2), "(float32)"),
                                      (True, "is a bool"), (np.True_, "is a bool"), ("3", "(str)"),
                                      (2 + 0j, "(complex)"), (np.array(2.0), "(ndarray)")])
@pytest.mark.parametrize("name,make", shape_makers())
def test_non_integer_sizes_are_refused_naming_the_argument(name, make, bad, kind):
    with pytest.raises(TypeError, match=rf"^{name}: .*{re.escape(repr(bad))} {re.escape(kind)}.*(whole number)"):
        make(bad)


@pytest.mark.parametrize("name,make", shape_makers())
def test_negative_sizes_are_refused(name, make):
    with pytest.raises(ValueError, match=rf"^{name}: negative dimensions are not allowed: shape \(.*-2"):
        make(-2)


@pytest.mark.parametrize("size", [3, np.int64(3), np.int32(3), np.uint8(3), np.array(3), np.array(3, np.int16)])
def test_numpy_integers_are_sizes_like_ints(size):
    assert Tensor.zeros(size, 2).shape == (3, 2)
    assert Tensor.full((2, size), 1.0).shape == (2, 3)
    assert Tensor.rand(size, seed=0).shape == (3,)
    assert Tensor.eye(size).shape == (3, 3)
    assert Tensor.ones(6).reshape(size, -1).shape == (3, 2)
    assert Tensor.ones(1, 2).expand(size, 2).shape == (3, 2)
    assert Tensor.zeros(np.array([size, 2])).shape == (3, 2)


def test_axes_and_pads_are_whole_numbers_too():
    t = Tensor.ones(2, 3)
    with pytest.raises(TypeError, match=r"axis 1\.0 \(float\) is not a whole number"):
        t.sum(axis=1.0)
    with pytest.raises(TypeError, match=r"^permute: axis 0\.5 \(float\)"):
        t.permute(0.5, 0)
    with pytest.raises(TypeError, match=r"^unsqueeze: axis 1\.5 \(float\)"):
        t.unsqueeze(1.5)
    with pytest.raises(TypeError, match=r"^pad: pad_width 1\.5 must hold whole numbers"):
        t.pad(1.5)
    assert t.sum(axis=np.int64(1)).shape == (2,) and t[np.array(1)].shape == (3,)


def test_arange_checks_its_arguments():
    with pytest.raises(TypeError, match=r"^arange: stop 'a' \(str\) is not a number"):
        Tensor.arange("a")
    with pytest.raises(TypeError, match=r"^arange: step True \(bool\)"):
        Tensor.arange(0, 4, True)
    with pytest.raises(ValueError, match=r"^arange: step 0 would never reach stop"):
        Tensor.arange(0, 4, 0)
    assert_matches(Tensor.arange(0, 1, 0.25).numpy(), np.arange(0, 1, 0.25).astype(np.float32))
    assert_matches(Tensor.arange(np.int64(4)).numpy(), np.arange(4))


def limit_message(what: str, shape: tuple[int, ...]) -> str:
    count = int(np.prod(shape, dtype=object))
    return (rf"^{what}: a tensor of shape {re.escape(str(shape))} has {count} elements, over the limit of "
            rf"2147483647 \(2\*\*31 - 1\)")


@pytest.mark.parametrize("what,shape,make", [
    ("zeros", (BIG, BIG), lambda: Tensor.zeros(BIG, BIG)),
    ("zeros", (2 ** 31,), lambda: Tensor.zeros(2 ** 31)),
    ("zeros", (0, 2 ** 31), lambda: Tensor.zeros(0, 2 ** 31)),  # no elements, but an axis int32 cannot index
    ("full", (2, 2 ** 30), lambda: Tensor.full((2, 2 ** 30), 7)),
    ("rand", (BIG, BIG), lambda: Tensor.rand(BIG, BIG, seed=0)),  # refused before numpy would allocate 16 GiB
    ("eye", (BIG, BIG), lambda: Tensor.eye(BIG)),
    ("arange", (2 ** 31,), lambda: Tensor.arange(2 ** 31)),
    ("expand", (BIG, BIG), lambda: Tensor.ones(1, BIG).expand(BIG, BIG)),
    ("broadcast_to", (BIG, BIG), lambda: Tensor.ones(1, BIG) + Tensor.ones(BIG, 1)),
    ("expand", (BIG, 1, BIG), lambda: Tensor.ones(BIG).reshape(BIG, 1, 1).expand(BIG, 1, BIG)),
    ("pad", (2 ** 31,), lambda: Tensor.ones(4).pad((0, 2 ** 31 - 4))),
    ("matmul", (BIG, BIG), lambda: Tensor.ones(BIG, 1) @ Tensor.ones(1, BIG)),
])
def test_shapes_past_int32_indexing_are_refused_when_made(what, shape, make):
    """Nothing is allocated: the check runs when the lazy tensor is made, naming the shape, count and limit."""
    with pytest.raises(ValueError, match=limit_message(what, shape) + r".*split the work"):
        make()


def test_the_largest_allowed_shape_is_made_lazily():
    t = Tensor.zeros(MAX_ELEMENTS)
    assert t.shape == (MAX_ELEMENTS,) and not t.node.realized
    assert t.reshape(1, -1).shape == (1, MAX_ELEMENTS)
    with pytest.raises(ValueError, match=limit_message("expand", (2, MAX_ELEMENTS))):
        t.reshape(1, -1).expand(2, MAX_ELEMENTS)


@pytest.mark.parametrize("dtype", ["float32", "int32", "bool", "float16"])
@pytest.mark.parametrize("sa,sb", [((2, 0), (0, 4)), ((3, 2, 0), (0, 5)), ((0,), (0,)), ((0, 3), (3, 4))])
def test_matmul_over_an_empty_axis_is_zeros(device, dtype, sa, sb):
    a, b = np.zeros(sa, dtype), np.ones(sb, dtype)
    assert_matches((Tensor(a, device) @ Tensor(b, device)).numpy(), a @ b)


def test_integer_operand_errors():
    i = Tensor(np.array([1, 2], np.int32))
    with pytest.raises(ValueError, match=r"int32 \*\* -1: integers to negative integer powers are not allowed"):
        i ** -1
    with pytest.raises(OverflowError, match=r"^add: the integer 1099511627776 does not fit the int32 tensor"):
        i + 2 ** 40
    with pytest.raises(OverflowError, match=r"^full: the integer 4294967296 does not fit"):
        Tensor.full((2,), 2 ** 32)
    with pytest.raises(OverflowError, match=r"^where: the integer"):
        (i > 1).where(i, -2 ** 33)
    assert_matches((Tensor(np.array([1.0, 2.0], np.float32)) + 2 ** 40).numpy(), np.float32([1.0, 2.0]) + 2 ** 40)
    assert_matches((i ** -1.0).numpy(), np.array([1, 2]) ** -1.0)


def test_conversion_errors():
    two = Tensor(np.array([1.5, 2.5], np.float32))
    with pytest.raises(TypeError, match=r"^float\(\) needs a tensor of one element, this one has shape \(2,\)"):
        float(two)
    with pytest.raises(TypeError, match=r"^int\(\) needs a tensor of one element"):
        int(two)
    with pytest.raises(TypeError, match=r"a float32 tensor cannot be used as an index .* use int\(t\)"):
        [1, 2, 3][Tensor(np.array([1.0], np.float32))]
    with pytest.raises(TypeError, match=r"a bool tensor cannot be used as an index"):
        [1, 2, 3][Tensor(np.array([True]))]
    with pytest.raises(TypeError, match=r"^index\(\) needs a tensor of one element"):
        [1, 2, 3][Tensor(np.array([1, 2], np.int32))]
    with pytest.raises(ValueError, match="ambiguous"):
        bool(two)


def test_where_needs_a_tensor_condition():
    with pytest.raises(TypeError, match="the condition must be a tensor"):
        Tensor.where(np.array([True]), 1, 0)


def test_fill_values_are_numbers():
    with pytest.raises(TypeError, match=r"^full: the fill value 'x' \(str\) is not a number or bool"):
        Tensor.full((2,), "x")
    assert_matches(Tensor.full((2,), np.array(2.5, np.float16)).numpy(), np.full(2, 2.5, np.float16))
