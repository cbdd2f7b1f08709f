"""Tensor dtypes (float32, float16, int32, bool) and numpy-compatible type promotion.

Promotion asks numpy (NEP 50 rules: a Python scalar does not widen a tensor's type) and narrows what numpy
would widen past our set: float64 becomes float32 and int64 becomes int32. bool tensors are stored as
int32 0/1 on devices (the kernel IR has no bool memory) and come back as numpy bool.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from compiler import ir

DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "bool": np.bool_}
IR = {"float32": ir.f32, "float16": ir.f16, "int32": ir.i32, "bool": ir.bool_}
NARROW = {"float64": "float32", "int64": "int32", "int16": "int32", "int8": "int32", "uint8": "int32",
          "uint16": "int32", "uint32": "int32", "uint64": "int32"}

float32, float16, int32, bool_ = "float32", "float16", "int32", "bool"


def to_dtype(d: Any) -> str:
    """Our name for a numpy dtype, type or dtype name; an error for one we cannot hold."""
    if isinstance(d, str) and d in DTYPES:
        return d
    try:
        name = np.dtype(d).name
    except TypeError:
        raise TypeError(f"{d!r} is not a dtype; tensors hold {', '.join(DTYPES)}") from None
    name = NARROW.get(name, name)
    if name not in DTYPES:
        raise TypeError(f"dtype {name} is not supported; tensors hold {', '.join(DTYPES)}")
    return name


def storage(dtype: str) -> ir.DType:
    """How a dtype is kept in device memory: bool as int32."""
    return ir.i32 if dtype == bool_ else IR[dtype]


def itemsize(dtype: str) -> int:
    return storage(dtype).itemsize


def is_float(dtype: str) -> bool:
    return dtype in (float32, float16)


def result_type(*operands: Any) -> str:
    """The dtype numpy gives an operation on these operands (dtype names or Python scalars), narrowed."""
    args = [np.dtype(DTYPES[o]) if isinstance(o, str) else o for o in operands]
    return to_dtype(np.result_type(*args))


def float_result(dtype: str) -> str:
    """What a float-valued function (exp, sqrt, /, mean) of this dtype gives: floats stay, others are float32."""
    return dtype if is_float(dtype) else float32
