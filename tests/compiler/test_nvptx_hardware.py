"""Our PTX run on a real NVIDIA GPU, checked against numpy and against the host build of the same IR.

Until the NV driver exists, the CUDA driver library (libcuda, which ships with NVIDIA's kernel driver) is the
oracle that loads the PTX: these tests check the compiler's NVPTX output, not a driver. They skip with the
reason on machines without an NVIDIA GPU.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from compiler import compile_kernel
from compiler.ir import f16, f32, i32
from sample_kernels import elementwise, every_op, matmul, row_sum


def _load_cuda() -> tuple[ctypes.CDLL | None, str]:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        return None, f"no NVIDIA driver library (libcuda.so.1): {e}"
    if lib.cuInit(0) != 0:
        return None, "libcuda is installed but cuInit failed: no usable NVIDIA GPU"
    count = ctypes.c_int()
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return None, "libcuda found no NVIDIA GPU"
    return lib, ""


CUDA, WHY_NOT = _load_cuda()
pytestmark = pytest.mark.skipif(CUDA is None, reason=WHY_NOT)


class Cuda:
    """The few CUDA driver calls a PTX check needs (cuda.h, CUDA 12/13 driver API; the _v2 names are the ABI)."""

    def __init__(self):
        self.lib = CUDA
        dev, self.ctx = ctypes.c_int(), ctypes.c_void_p()
        self.ok(self.lib.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
        self.ok(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), dev), "cuDevicePrimaryCtxRetain")
        self.ok(self.lib.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")
        self.dev = dev
        self.allocs: list[int] = []

    def ok(self, rc: int, what: str, log: bytes = b"") -> None:
        if rc != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(rc, ctypes.byref(name))
            raise AssertionError(f"{what} failed: {name.value.decode() if name.value else rc} {log.decode(errors='replace')}")

    def compute_capability(self) -> str:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.lib.cuDeviceGetAttribute(ctypes.byref(major), 75, self.dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        self.lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, self.dev)  # ..._MINOR
        return f"sm_{major.value}{minor.value}"

    def function(self, ptx: str, name: str) -> ctypes.c_void_p:
        mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
        self.ok(self.lib.cuModuleLoadData(ctypes.byref(mod), ptx.encode() + b"\0"), f"cuModuleLoadData({name})")
        self.ok(self.lib.cuModuleGetFunction(ctypes.byref(fn), mod, name.encode()), f"cuModuleGetFunction({name})")
        return fn

    def upload(self, a: np.ndarray) -> int:
        ptr = ctypes.c_uint64()
        self.ok(self.lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(max(a.nbytes, 4))), "cuMemAlloc")
        self.allocs.append(ptr.value)
        self.ok(self.lib.cuMemcpyHtoD_v2(ctypes.c_uint64(ptr.value), a.ctypes.data, ctypes.c_size_t(a.nbytes)),
                "cuMemcpyHtoD")
        return ptr.value

    def download(self, ptr: int, like: np.ndarray) -> np.ndarray:
        out = np.empty_like(like)
        self.ok(self.lib.cuMemcpyDtoH_v2(out.ctypes.data, ctypes.c_uint64(ptr), ctypes.c_size_t(out.nbytes)),
                "cuMemcpyDtoH")
        return out

    def run(self, ck, args: list, grid: tuple[int, int, int]) -> list[np.ndarray]:
        """Launch with numpy arrays (uploaded, then downloaded back in the same order) and ints."""
        fn = self.function(ck.ptx, ck.name)
        keep, params, arrays = [], [], []
        for a, v in zip(ck.args, args):
            if isinstance(v, np.ndarray):
                ptr = self.upload(v)
                arrays.append((ptr, v))
                cell = ctypes.c_uint64(ptr)
            else:
                cell = ctypes.c_int32(v)
            keep.append(cell)
            params.append(ctypes.cast(ctypes.byref(cell), ctypes.c_void_p))
        argv = (ctypes.c_void_p * len(params))(*params)
        bx, by, bz = ck.local_size
        self.ok(self.lib.cuLaunchKernel(fn, *[ctypes.c_uint(g) for g in grid], ctypes.c_uint(bx), ctypes.c_uint(by),
                                        ctypes.c_uint(bz), ctypes.c_uint(0), None, argv, None), f"launch {ck.name}")
        self.ok(self.lib.cuCtxSynchronize(), f"{ck.name} on the GPU")
        return [self.download(p, v) for p, v in arrays]

    def close(self) -> None:
        for p in self.allocs:
            self.lib.cuMemFree_v2(ctypes.c_uint64(p))
        self.lib.cuDevicePrimaryCtxRelease(self.dev)


@pytest.fixture
def gpu():
    g = Cuda()
    yield g
    g.close()


def test_elementwise_add_odd_size(gpu, cache):
    rng = np.random.default_rng(0)
    n = 1000
    a, b = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    ck = compile_kernel(elementwise("add", f32, lambda x, y: x + y), gpu.compute_capability(), cache)
    _, _, out = gpu.run(ck, [a, b, np.zeros(n, np.float32), n], (-(-n // 64), 1, 1))
    np.testing.assert_array_equal(out, a + b)


def test_row_sum_with_shared_memory_and_barriers(gpu, cache):
    x = np.random.default_rng(1).standard_normal((37, 300), dtype=np.float32)
    ck = compile_kernel(row_sum(), gpu.compute_capability(), cache)
    _, out = gpu.run(ck, [x, np.zeros(37, np.float32), 300], (37, 1, 1))
    np.testing.assert_allclose(out, x.sum(axis=1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("m,n,k", [(64, 64, 64), (33, 17, 45)])
def test_tiled_matmul(gpu, cache, m, n, k):
    rng = np.random.default_rng(2)
    A, B = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    ck = compile_kernel(matmul(), gpu.compute_capability(), cache)
    *_, C = gpu.run(ck, [A, B, np.zeros((m, n), np.float32), m, n, k], (-(-n // 8), -(-m // 8), 1))
    np.testing.assert_allclose(C, A @ B, rtol=1e-4, atol=1e-4)


def test_every_operation_agrees_with_the_host_build(gpu, cache):
    """The same IR on the GPU and on the host: integers exactly, floats within the hardware approximations."""
    n = 500
    rng = np.random.default_rng(3)
    fa = rng.uniform(-4, 4, n).astype(np.float32)
    ha = rng.uniform(-2, 2, n).astype(np.float16)
    ia = rng.integers(-1000, 1000, n).astype(np.int32)
    ia[ia == 0] = 7  # p // q and p % q with q = 0 are undefined in the IR
    outs = [np.zeros(n, np.float32), np.zeros(n, np.float16), np.zeros(n, np.int32)]
    grid = (-(-n // 32), 1, 1)
    host_outs = [o.copy() for o in outs]
    compile_kernel(every_op(), "host", cache)(fa, ha, ia, *host_outs, n, global_size=grid)
    _, _, _, fo, ho, io = gpu.run(compile_kernel(every_op(), gpu.compute_capability(), cache),
                                  [fa, ha, ia, *outs, n], grid)
    np.testing.assert_array_equal(io, host_outs[2])
    np.testing.assert_allclose(fo, host_outs[0], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ho.astype(np.float32), host_outs[1].astype(np.float32), rtol=2e-2, atol=2e-2)
