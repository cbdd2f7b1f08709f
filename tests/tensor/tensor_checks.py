"""Comparing tensor results with numpy: shapes, dtypes (numpy's float64/int64 narrowed) and per-dtype tolerances."""
from __future__ import annotations

import numpy as np

from tensor.dtypes import NARROW

TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float16": dict(rtol=2e-3, atol=2e-3), "int32": dict(rtol=0, atol=0),
       "bool": dict(rtol=0, atol=0)}


def assert_matches(got: np.ndarray, want: np.ndarray, dtype: str | None = None, **tol) -> None:
    """Same shape and dtype as numpy (narrowed to our dtypes), values within the dtype's tolerance."""
    want = np.asarray(want)
    narrowed = NARROW.get(want.dtype.name, want.dtype.name)  # e.g. numpy's int8 from bool // bool is int32
    assert got.shape == want.shape, f"shape {got.shape} != numpy's {want.shape}"
    assert got.dtype.name == (dtype or narrowed), f"dtype {got.dtype} != {dtype or narrowed}"
    t = dict(TOL[got.dtype.name], **tol)
    if got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want.astype(got.dtype))
    else:
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), equal_nan=True, **t)
