"""The tensor layer: lazy numpy-like tensors scheduled into fused kernels on any HCQ device.

    from tensor import Tensor
    b = (Tensor.rand(512, 512, device="AMD", seed=0) @ Tensor.eye(512, device="AMD")).relu().sum(axis=1)
    print(b.numpy())
"""
from tensor.dtypes import bool_, float16, float32, int32
from tensor.schedule import ScheduleItem
from tensor.tensor import DEVICES, MAX_ELEMENTS, Tensor, memory, reset_peak, synchronize

__all__ = ["Tensor", "ScheduleItem", "DEVICES", "memory", "reset_peak", "synchronize", "float32", "float16", "int32",
           "bool_", "MAX_ELEMENTS"]
