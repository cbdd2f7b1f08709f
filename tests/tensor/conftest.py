"""Tensor tests run on the CPU device and on an emulated machine with two AMD GPUs (gfx1100 and gfx1201).

The emulated GPUs are registered with the tensor layer directly, so nothing here changes BAREGPU_EMULATE for
the rest of the test session; they are closed when the tensor tests end.
"""
from __future__ import annotations

import numpy as np
import pytest

from tensor import DEVICES

DEVICE_NAMES = ["CPU", "AMD", "AMD:1"]


@pytest.fixture(scope="package", autouse=True)
def tensor_devices():
    from drivers.amd.kfd import KFDDevice
    from emu.machine import emulated_system
    DEVICES.close()
    system = emulated_system("amd", ("gfx1100", "gfx1201"))
    DEVICES.add("AMD", KFDDevice(0, system))
    DEVICES.add("AMD:1", KFDDevice(1, system))
    DEVICES["CPU"]
    yield DEVICES
    DEVICES.close()


@pytest.fixture(params=DEVICE_NAMES)
def device(request):
    return request.param


TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float16": dict(rtol=2e-3, atol=2e-3), "int32": dict(rtol=0, atol=0),
       "bool": dict(rtol=0, atol=0)}


def assert_matches(got: np.ndarray, want: np.ndarray, dtype: str | None = None, **tol) -> None:
    """Same shape and dtype as numpy (narrowed to our dtypes), values within the dtype's tolerance."""
    want = np.asarray(want)
    narrowed = {"float64": "float32", "int64": "int32"}.get(want.dtype.name, want.dtype.name)
    assert got.shape == want.shape, f"shape {got.shape} != numpy's {want.shape}"
    assert got.dtype.name == (dtype or narrowed), f"dtype {got.dtype} != {dtype or narrowed}"
    t = dict(TOL[got.dtype.name], **tol)
    if got.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want.astype(got.dtype))
    else:
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), equal_nan=True, **t)
