"""tools/cuda.py, the libcuda binding the nv bench measures against: its pure parts (error decoding, the two ways
cuLaunchKernel takes arguments, calls marshalled through ctypes) against a fake libcuda made of ctypes callbacks,
so they run on any machine; and a real round trip where libcuda and a GPU exist (skipped with the reason)."""
from __future__ import annotations

import ctypes
import struct

import pytest

from tools import cuda
from tools.cuda import (CU_LAUNCH_PARAM_BUFFER_POINTER, CU_LAUNCH_PARAM_BUFFER_SIZE, CU_LAUNCH_PARAM_END, PROTOTYPES,
                        Cuda, CudaError, CudaUnavailable, check, error_name, kernel_params, launch_extra)

NAMES = {0: b"CUDA_SUCCESS", 2: b"CUDA_ERROR_OUT_OF_MEMORY", 100: b"CUDA_ERROR_NO_DEVICE"}
TEXTS = {2: b"out of memory", 100: b"no CUDA-capable device is detected"}


class FakeLibcuda:
    """libcuda's symbols as ctypes callbacks with the prototypes tools.cuda declares, so every argument really goes
    through ctypes marshalling. `fail` maps a symbol to the CUresult it returns; `calls` records what came in."""

    def __init__(self, fail: dict[str, int] | None = None, devices: int = 1, drop: tuple[str, ...] = ()):
        self.fail = dict(fail or {})
        self.calls: list[tuple] = []
        self.launches: list[dict] = []
        self._keep = []
        impl = {
            "cuGetErrorName": self._error_name, "cuGetErrorString": self._error_string,
            "cuInit": lambda flags: 0,
            "cuDeviceGetCount": lambda out: self._put(out, devices),
            "cuDeviceGet": lambda out, ordinal: self._put(out, ordinal),
            "cuDevicePrimaryCtxRetain": lambda out, dev: self._put(out, 0xC0C0),
            "cuCtxSetCurrent": lambda ctx: 0,
            "cuDevicePrimaryCtxRelease_v2": lambda dev: 0,
            "cuMemAlloc_v2": lambda out, size: self._put(out, 0x7000_0000_0000),
            "cuLaunchKernel": self._launch,
            "cuEventElapsedTime": lambda out, a, b: self._put(out, 1.5),
        }
        for sym, fn in impl.items():
            if sym in drop:
                continue
            proto = ctypes.CFUNCTYPE(ctypes.c_int, *PROTOTYPES[sym])

            def wrapped(*args, _sym=sym, _fn=fn):
                self.calls.append((_sym,) + args)
                return self.fail.get(_sym) or _fn(*args)
            cb = proto(wrapped)
            self._keep.append(cb)
            setattr(self, sym, cb)

    @staticmethod
    def _put(ptr, value) -> int:
        ptr[0] = value
        return 0

    def _error_name(self, code, out) -> int:
        if code not in NAMES:
            return 1  # CUDA_ERROR_INVALID_VALUE: cuGetErrorName does not know the code
        out[0] = NAMES[code]
        return 0

    def _error_string(self, code, out) -> int:
        if code not in TEXTS:
            return 1
        out[0] = TEXTS[code]
        return 0

    def _launch(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra) -> int:
        got = {"f": f, "grid": (gx, gy, gz), "block": (bx, by, bz), "shared": shared, "stream": stream}
        if extra:
            assert extra[0] == CU_LAUNCH_PARAM_BUFFER_POINTER and extra[2] == CU_LAUNCH_PARAM_BUFFER_SIZE
            assert (extra[4] or 0) == CU_LAUNCH_PARAM_END
            size = ctypes.c_size_t.from_address(extra[3]).value
            got["blob"] = ctypes.string_at(extra[1], size)
        if params:
            # read now: the values live only as long as the call (cuLaunchKernel copies them)
            got["params"] = (ctypes.c_uint64.from_address(params[0]).value,
                             ctypes.c_int32.from_address(params[1]).value)
        self.launches.append(got)
        return 0


def test_error_decoding_names_the_call_the_error_and_its_text():
    lib = FakeLibcuda()
    with pytest.raises(CudaError) as e:
        check(lib, "cuMemAlloc_v2", 2)
    assert str(e.value) == "cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory"
    assert (e.value.call, e.value.code, e.value.error_name) == ("cuMemAlloc_v2", 2, "CUDA_ERROR_OUT_OF_MEMORY")
    check(lib, "cuInit", 0)  # success raises nothing


def test_error_decoding_falls_back_when_the_driver_cannot_name_the_code():
    lib = FakeLibcuda()
    assert error_name(lib, 700) == "CUDA_ERROR_ILLEGAL_ADDRESS"  # cuGetErrorName refused: our table (cuda.h)
    assert error_name(lib, 12345) == "CUresult 12345"
    assert error_name(object(), 719) == "CUDA_ERROR_LAUNCH_FAILED"  # a library without cuGetErrorName at all
    with pytest.raises(CudaError, match=r"^cuCtxSynchronize failed: CUDA_ERROR_ILLEGAL_ADDRESS \(700\)$"):
        check(lib, "cuCtxSynchronize", 700)


def test_launch_extra_carries_the_whole_parameter_block():
    blob = struct.pack("<QQi", 0x1234_5678_9ABC, 0xDEAD_BEEF_0000, -7)
    arr, keep = launch_extra(blob)
    assert [arr[0], arr[2], arr[4] or 0] == [CU_LAUNCH_PARAM_BUFFER_POINTER, CU_LAUNCH_PARAM_BUFFER_SIZE,
                                              CU_LAUNCH_PARAM_END]
    assert ctypes.c_size_t.from_address(arr[3]).value == len(blob) == 20
    assert ctypes.string_at(arr[1], 20) == blob
    assert keep  # what the pointers point into stays alive with the caller


def test_kernel_params_point_at_each_value_and_refuse_plain_ints():
    values = [ctypes.c_uint64(0xABCDEF0123), ctypes.c_int32(-5)]
    arr, keep = kernel_params(values)
    assert ctypes.c_uint64.from_address(arr[0]).value == 0xABCDEF0123
    assert ctypes.c_int32.from_address(arr[1]).value == -5
    with pytest.raises(TypeError, match="ctypes values"):
        kernel_params([5])


def test_calls_go_through_ctypes_with_the_declared_prototypes():
    lib = FakeLibcuda()
    cu = Cuda(0, lib=lib)
    assert cu.context == 0xC0C0 and cu.device == 0
    assert cu.mem_alloc(1 << 20) == 0x7000_0000_0000
    blob = struct.pack("<Qi", 0x7000_0000_0000, 42)
    cu.launch(0xF00D, (4, 2, 1), (32, 1, 1), stream=0x5, blob=blob)
    cu.launch(0xF00D, (1, 1, 1), (64, 1, 1), params=[ctypes.c_uint64(9), ctypes.c_int32(3)])
    first, second = lib.launches
    assert first == {"f": 0xF00D, "grid": (4, 2, 1), "block": (32, 1, 1), "shared": 0, "stream": 5, "blob": blob}
    assert second["params"] == (9, 3) and second["block"] == (64, 1, 1) and "blob" not in second
    with pytest.raises(ValueError, match="exactly one"):
        cu.launch(0xF00D, (1, 1, 1), (1, 1, 1))
    assert cu.event_elapsed_ms(1, 2) == 1.5  # no cuEventElapsedTime_v2 here: the pre-12.8 symbol serves
    cu.close()
    cu.close()  # once only
    assert [c[0] for c in lib.calls].count("cuDevicePrimaryCtxRelease_v2") == 1


def test_a_failing_call_raises_with_its_name():
    cu = Cuda(0, lib=FakeLibcuda(fail={"cuMemAlloc_v2": 2}))
    with pytest.raises(CudaError, match="cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY"):
        cu.mem_alloc(1 << 40)


def test_a_missing_symbol_is_named():
    cu = Cuda(0, lib=FakeLibcuda())
    with pytest.raises(CudaError, match="cuStreamCreate failed: symbol not found"):
        cu.stream_create()


def test_no_device_and_no_libcuda_are_unavailable_not_errors():
    with pytest.raises(CudaUnavailable, match="cuInit failed: CUDA_ERROR_NO_DEVICE"):
        Cuda(0, lib=FakeLibcuda(fail={"cuInit": 100}))
    with pytest.raises(CudaUnavailable, match="libcuda sees 1 device"):
        Cuda(3, lib=FakeLibcuda())
    with pytest.raises(CudaUnavailable, match=r"^no libcuda: /nonexistent/libcuda\.so\.1: .*NVIDIA driver"):
        cuda.load_libcuda("/nonexistent/libcuda.so.1")


def _real_cuda():
    try:
        return Cuda(0)
    except CudaUnavailable as e:
        pytest.skip(f"needs libcuda and an NVIDIA GPU: {e}")


def test_real_libcuda_runs_our_cubin_and_copies(tmp_path):
    """Where CUDA works: a cubin from our compiler runs through cuModuleLoadData/cuLaunchKernel, copies round-trip
    through pinned memory, and a captured graph replays."""
    import numpy as np

    from compiler import KernelCache, compile_kernel
    from compiler.ir import Kernel, f32
    cu = _real_cuda()
    try:
        major, minor = cu.compute_capability
        k = Kernel("scale2", local_size=(64, 1, 1))
        x, y = k.buffer("x", f32), k.buffer("y", f32, writable=True)
        i = k.global_id(0)
        y[i] = x[i] * 2.0
        ck = compile_kernel(k, f"sm_{major}{minor}", KernelCache(tmp_path))
        n = 1024
        host = cu.host_alloc(n * 4)
        src, dst = cu.mem_alloc(n * 4), cu.mem_alloc(n * 4)
        s = cu.stream_create()
        view = np.ctypeslib.as_array((ctypes.c_float * n).from_address(host))
        view[:] = np.arange(n, dtype=np.float32)
        cu.memcpy_htod_async(src, host, n * 4, s)
        fn = cu.module_get_function(cu.module_load_data(ck.cubin), ck.name)
        with cu.capture(s) as g:
            cu.launch(fn, (n // 64, 1, 1), (64, 1, 1), s, blob=ck.pack_args(src, dst))
        cu.stream_synchronize(s)  # the upload, made before the capture began
        cu.graph_launch(cu.graph_instantiate(g[0]), s)
        cu.memcpy_dtoh_async(host, dst, n * 4, s)
        cu.stream_synchronize(s)
        np.testing.assert_array_equal(view, np.arange(n, dtype=np.float32) * 2)
    finally:
        cu.close()
