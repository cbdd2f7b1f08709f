"""A minimal binding of NVIDIA's CUDA driver API (libcuda.so.1) through ctypes: the reference the nv bench
measures our NV driver against, in the same run, on the same GPU.

Only what the bench needs: devices and their attributes, the primary context, modules from a cubin (our own
compiler's), kernel launches, streams, events, device and pinned host memory, async copies, and stream capture
into a graph. Every call is checked: a failing CUresult raises CudaError naming the call and the error's name
(cuGetErrorName) and text (cuGetErrorString). A machine without libcuda gets CudaUnavailable saying so.

Source of every prototype, enum value and symbol name: NVIDIA's public CUDA driver API header cuda.h (CUDA 13.x,
CUDA_VERSION 13050, as the PyPI wheel nvidia-cuda-runtime carries it at site-packages/nvidia/cu13/include/cuda.h).
cuda.h #defines API names to versioned symbols (cuMemAlloc -> cuMemAlloc_v2, cuStreamBeginCapture ->
cuStreamBeginCapture_v2, cuGraphInstantiate -> cuGraphInstantiateWithFlags, cuEventElapsedTime ->
cuEventElapsedTime_v2); we call those exported symbols, in their legacy-default-stream form (not the _ptsz ones).
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

c_int, c_uint, c_size_t, c_void_p, c_char_p, c_float = (ctypes.c_int, ctypes.c_uint, ctypes.c_size_t, ctypes.c_void_p,
                                                       ctypes.c_char_p, ctypes.c_float)
CUdeviceptr = ctypes.c_uint64  # cuda.h: typedef unsigned long long CUdeviceptr_v2 (64-bit hosts)
CUdevice = ctypes.c_int  # cuda.h: typedef int CUdevice_v1
P = ctypes.POINTER

# --- enum values (cuda.h) ---
CUDA_SUCCESS = 0
CU_STREAM_DEFAULT, CU_STREAM_NON_BLOCKING = 0x0, 0x1  # enum CUstream_flags_enum
CU_EVENT_DEFAULT, CU_EVENT_BLOCKING_SYNC, CU_EVENT_DISABLE_TIMING = 0x0, 0x1, 0x2  # enum CUevent_flags_enum
CU_MEMHOSTALLOC_PORTABLE, CU_MEMHOSTALLOC_DEVICEMAP, CU_MEMHOSTALLOC_WRITECOMBINED = 0x01, 0x02, 0x04
CU_STREAM_CAPTURE_MODE_GLOBAL, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, CU_STREAM_CAPTURE_MODE_RELAXED = 0, 1, 2
# cuLaunchKernel's `extra` keys: CU_LAUNCH_PARAM_END_AS_INT, ..._BUFFER_POINTER_AS_INT, ..._BUFFER_SIZE_AS_INT
CU_LAUNCH_PARAM_END, CU_LAUNCH_PARAM_BUFFER_POINTER, CU_LAUNCH_PARAM_BUFFER_SIZE = 0x00, 0x01, 0x02
# enum CUdevice_attribute_enum
CU_DEVICE_ATTRIBUTE_CLOCK_RATE = 13
CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16
CU_DEVICE_ATTRIBUTE_PCI_BUS_ID = 33
CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE = 36
CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH = 37
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76

# Error names for when cuGetErrorName itself cannot answer (enum cudaError_enum; a few of the common ones).
KNOWN_ERRORS = {
    0: "CUDA_SUCCESS", 1: "CUDA_ERROR_INVALID_VALUE", 2: "CUDA_ERROR_OUT_OF_MEMORY", 3: "CUDA_ERROR_NOT_INITIALIZED",
    4: "CUDA_ERROR_DEINITIALIZED", 100: "CUDA_ERROR_NO_DEVICE", 101: "CUDA_ERROR_INVALID_DEVICE",
    200: "CUDA_ERROR_INVALID_IMAGE", 201: "CUDA_ERROR_INVALID_CONTEXT", 209: "CUDA_ERROR_NO_BINARY_FOR_GPU",
    222: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", 400: "CUDA_ERROR_INVALID_HANDLE", 500: "CUDA_ERROR_NOT_FOUND",
    600: "CUDA_ERROR_NOT_READY", 700: "CUDA_ERROR_ILLEGAL_ADDRESS", 701: "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES",
    702: "CUDA_ERROR_LAUNCH_TIMEOUT", 719: "CUDA_ERROR_LAUNCH_FAILED", 900: "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
    999: "CUDA_ERROR_UNKNOWN",
}

# symbol -> argtypes (restype is CUresult, an int, for all of them); from cuda.h's prototypes.
PROTOTYPES: dict[str, tuple[Any, ...]] = {
    "cuGetErrorName": (c_int, P(c_char_p)),
    "cuGetErrorString": (c_int, P(c_char_p)),
    "cuInit": (c_uint,),
    "cuDriverGetVersion": (P(c_int),),
    "cuDeviceGet": (P(CUdevice), c_int),
    "cuDeviceGetCount": (P(c_int),),
    "cuDeviceGetName": (c_char_p, c_int, CUdevice),
    "cuDeviceGetAttribute": (P(c_int), c_int, CUdevice),
    "cuDeviceTotalMem_v2": (P(c_size_t), CUdevice),
    "cuDevicePrimaryCtxRetain": (P(c_void_p), CUdevice),
    "cuDevicePrimaryCtxRelease_v2": (CUdevice,),
    "cuCtxCreate_v2": (P(c_void_p), c_uint, CUdevice),
    "cuCtxDestroy_v2": (c_void_p,),
    "cuCtxSetCurrent": (c_void_p,),
    "cuCtxSynchronize": (),
    "cuModuleLoadData": (P(c_void_p), c_void_p),
    "cuModuleUnload": (c_void_p,),
    "cuModuleGetFunction": (P(c_void_p), c_void_p, c_char_p),
    "cuLaunchKernel": (c_void_p, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_void_p, P(c_void_p),
                       P(c_void_p)),
    "cuStreamCreate": (P(c_void_p), c_uint),
    "cuStreamSynchronize": (c_void_p,),
    "cuStreamDestroy_v2": (c_void_p,),
    "cuEventCreate": (P(c_void_p), c_uint),
    "cuEventRecord": (c_void_p, c_void_p),
    "cuEventSynchronize": (c_void_p,),
    "cuEventElapsedTime_v2": (P(c_float), c_void_p, c_void_p),
    "cuEventElapsedTime": (P(c_float), c_void_p, c_void_p),  # before CUDA 12.8's _v2
    "cuEventDestroy_v2": (c_void_p,),
    "cuMemAlloc_v2": (P(CUdeviceptr), c_size_t),
    "cuMemFree_v2": (CUdeviceptr,),
    "cuMemHostAlloc": (P(c_void_p), c_size_t, c_uint),
    "cuMemFreeHost": (c_void_p,),
    "cuMemsetD8_v2": (CUdeviceptr, ctypes.c_ubyte, c_size_t),
    "cuMemcpyHtoDAsync_v2": (CUdeviceptr, c_void_p, c_size_t, c_void_p),
    "cuMemcpyDtoHAsync_v2": (c_void_p, CUdeviceptr, c_size_t, c_void_p),
    "cuMemcpyDtoDAsync_v2": (CUdeviceptr, CUdeviceptr, c_size_t, c_void_p),
    "cuStreamBeginCapture_v2": (c_void_p, c_int),
    "cuStreamEndCapture": (c_void_p, P(c_void_p)),
    "cuGraphInstantiateWithFlags": (P(c_void_p), c_void_p, ctypes.c_ulonglong),
    "cuGraphLaunch": (c_void_p, c_void_p),
    "cuGraphExecDestroy": (c_void_p,),
    "cuGraphDestroy": (c_void_p,),
}
# An API name whose symbol moved: the symbols to try, newest first.
ALTERNATIVES = {"cuEventElapsedTime_v2": ("cuEventElapsedTime_v2", "cuEventElapsedTime")}
LIBCUDA_NAMES = ("libcuda.so.1", "libcuda.so")


class CudaUnavailable(RuntimeError):
    """CUDA cannot be used here: no libcuda (no NVIDIA driver's user-space library), or no CUDA device."""


class CudaError(RuntimeError):
    """A CUDA driver API call returned an error: `call`, `code` (the CUresult), `error_name`, `text`."""

    def __init__(self, call: str, code: int, error_name: str, text: str = ""):
        self.call, self.code, self.error_name, self.text = call, code, error_name, text
        super().__init__(f"{call} failed: {error_name} ({code})" + (f": {text}" if text else ""))


def load_libcuda(path: str | None = None) -> Any:
    """libcuda as a ctypes library (the named path, else libcuda.so.1 on the loader's path) with our prototypes set;
    CudaUnavailable when there is none."""
    tried = []
    for name in ((path,) if path else LIBCUDA_NAMES):
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            tried.append(f"{name}: {e}")
            continue
        for sym, argtypes in PROTOTYPES.items():
            fn = getattr(lib, sym, None)  # absent on older drivers: ALTERNATIVES covers the ones that moved
            if fn is not None:
                fn.argtypes, fn.restype = list(argtypes), c_int
        return lib
    raise CudaUnavailable("no libcuda: " + "; ".join(tried) + ". libcuda.so.1 is the NVIDIA driver's user-space "
                          "library (installed with the driver, e.g. libnvidia-compute or the driver .run); on a "
                          "machine without an NVIDIA GPU the CUDA reference rows cannot run")


def _c_str(lib: Any, getter: str, code: int) -> str | None:
    """cuGetErrorName / cuGetErrorString of code, or None when the driver cannot say."""
    fn = getattr(lib, getter, None)
    if fn is None:
        return None
    out = c_char_p()
    try:
        rc = fn(code, ctypes.byref(out))
    except Exception:  # a broken library must not hide the error being decoded
        return None
    if rc != CUDA_SUCCESS or not out.value:
        return None
    return out.value.decode(errors="replace")


def error_name(lib: Any, code: int) -> str:
    """The CUresult's enum name: from cuGetErrorName, else our table, else "CUresult <code>"."""
    return _c_str(lib, "cuGetErrorName", code) or KNOWN_ERRORS.get(code, f"CUresult {code}")


def check(lib: Any, call: str, code: int) -> None:
    """Raise CudaError for a failed call (code != CUDA_SUCCESS), naming the call and decoding the error."""
    if code != CUDA_SUCCESS:
        raise CudaError(call, code, error_name(lib, code), _c_str(lib, "cuGetErrorString", code) or "")


# --- kernel arguments: the two ways cuLaunchKernel takes them ---
def kernel_params(values: Sequence[Any]) -> tuple[Any, list[Any]]:
    """cuLaunchKernel's kernelParams: an array of pointers, one per parameter, each to a ctypes value of the
    parameter's type (c_uint64 for a pointer, c_int32 for an int). Returns (the array, what must stay alive)."""
    keep = list(values)
    for v in keep:
        if not isinstance(v, ctypes._SimpleCData):
            raise TypeError(f"kernel_params takes ctypes values (c_uint64(ptr), c_int32(n)), got {type(v).__name__}")
    arr = (c_void_p * max(len(keep), 1))(*[ctypes.addressof(v) for v in keep])
    return arr, keep + [arr]


def launch_extra(blob: bytes) -> tuple[Any, list[Any]]:
    """cuLaunchKernel's `extra`: the whole parameter block at once (cuda.h: CU_LAUNCH_PARAM_BUFFER_POINTER, the
    block, CU_LAUNCH_PARAM_BUFFER_SIZE, a pointer to its size_t size, CU_LAUNCH_PARAM_END). The block is laid out
    as CUDA lays parameters out (natural alignment: compiler.kernargs.arg_layout, CompiledKernel.pack_args)."""
    buf = ctypes.create_string_buffer(bytes(blob), max(len(blob), 1))
    size = c_size_t(len(blob))
    arr = (c_void_p * 5)(CU_LAUNCH_PARAM_BUFFER_POINTER, ctypes.addressof(buf), CU_LAUNCH_PARAM_BUFFER_SIZE,
                         ctypes.addressof(size), CU_LAUNCH_PARAM_END)
    return arr, [buf, size, arr]


class Cuda:
    """One CUDA device through its primary context (made current on the calling thread).

    Handles are plain ints (0 for the default stream). Use from one thread, or call make_current() first.
    """

    def __init__(self, ordinal: int = 0, lib: Any = None, path: str | None = None):
        self.lib = lib if lib is not None else load_libcuda(path)
        self._fns: dict[str, Any] = {}
        try:
            self.call("cuInit", 0)
        except CudaError as e:
            raise CudaUnavailable(f"libcuda is here but cuInit failed: {e} (no usable NVIDIA GPU or driver "
                                  "mismatch?)") from e
        count = c_int()
        self.call("cuDeviceGetCount", ctypes.byref(count))
        if not 0 <= ordinal < count.value:
            raise CudaUnavailable(f"CUDA device {ordinal} does not exist: libcuda sees {count.value} device(s)")
        dev = CUdevice()
        self.call("cuDeviceGet", ctypes.byref(dev), ordinal)
        self.device = dev.value
        ctx = c_void_p()
        self.call("cuDevicePrimaryCtxRetain", ctypes.byref(ctx), self.device)
        self.context = ctx.value
        self.closed = False
        self.make_current()

    # --- calls ---
    def _fn(self, name: str) -> Any:
        fn = self._fns.get(name)
        if fn is None:
            for sym in ALTERNATIVES.get(name, (name,)):
                fn = getattr(self.lib, sym, None)
                if fn is not None:
                    break
            if fn is None:
                raise CudaError(name, -1, "symbol not found", "this libcuda does not export it (an older driver?)")
            self._fns[name] = fn
        return fn

    def call(self, name: str, *args: Any) -> None:
        """Call the libcuda symbol `name`; CudaError naming it when the CUresult is not CUDA_SUCCESS."""
        check(self.lib, name, self._fn(name)(*args))

    def make_current(self) -> None:
        self.call("cuCtxSetCurrent", self.context)

    # --- device facts ---
    def attribute(self, attr: int) -> int:
        out = c_int()
        self.call("cuDeviceGetAttribute", ctypes.byref(out), attr, self.device)
        return out.value

    @property
    def name(self) -> str:
        buf = ctypes.create_string_buffer(256)
        self.call("cuDeviceGetName", buf, len(buf), self.device)
        return buf.value.decode(errors="replace")

    @property
    def compute_capability(self) -> tuple[int, int]:
        return (self.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                self.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR))

    @property
    def driver_version(self) -> int:
        """The CUDA version the driver supports, as cuDriverGetVersion gives it (13000 for 13.0)."""
        out = c_int()
        self.call("cuDriverGetVersion", ctypes.byref(out))
        return out.value

    def info(self) -> dict[str, Any]:
        major, minor = self.compute_capability
        return {"name": self.name, "cc": f"{major}.{minor}", "driver_cuda_version": self.driver_version,
                "sms": self.attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)}

    # --- memory ---
    def mem_alloc(self, size: int) -> int:
        out = CUdeviceptr()
        self.call("cuMemAlloc_v2", ctypes.byref(out), size)
        return out.value

    def mem_free(self, ptr: int) -> None:
        self.call("cuMemFree_v2", ptr)

    def host_alloc(self, size: int, flags: int = 0) -> int:
        """Pinned (page-locked) host memory the GPU's copy engines reach directly."""
        out = c_void_p()
        self.call("cuMemHostAlloc", ctypes.byref(out), size, flags)
        return out.value or 0

    def free_host(self, ptr: int) -> None:
        self.call("cuMemFreeHost", ptr)

    def memset_d8(self, ptr: int, value: int, size: int) -> None:
        self.call("cuMemsetD8_v2", ptr, value, size)

    def memcpy_htod_async(self, dst: int, src: int, size: int, stream: int = 0) -> None:
        self.call("cuMemcpyHtoDAsync_v2", dst, src, size, stream)

    def memcpy_dtoh_async(self, dst: int, src: int, size: int, stream: int = 0) -> None:
        self.call("cuMemcpyDtoHAsync_v2", dst, src, size, stream)

    def memcpy_dtod_async(self, dst: int, src: int, size: int, stream: int = 0) -> None:
        self.call("cuMemcpyDtoDAsync_v2", dst, src, size, stream)

    # --- streams and events ---
    def stream_create(self, flags: int = CU_STREAM_NON_BLOCKING) -> int:
        out = c_void_p()
        self.call("cuStreamCreate", ctypes.byref(out), flags)
        return out.value or 0

    def stream_synchronize(self, stream: int) -> None:
        self.call("cuStreamSynchronize", stream)

    def stream_destroy(self, stream: int) -> None:
        self.call("cuStreamDestroy_v2", stream)

    def ctx_synchronize(self) -> None:
        self.call("cuCtxSynchronize")

    def event_create(self, flags: int = CU_EVENT_DEFAULT) -> int:
        out = c_void_p()
        self.call("cuEventCreate", ctypes.byref(out), flags)
        return out.value or 0

    def event_record(self, event: int, stream: int = 0) -> None:
        self.call("cuEventRecord", event, stream)

    def event_synchronize(self, event: int) -> None:
        self.call("cuEventSynchronize", event)

    def event_elapsed_ms(self, start: int, end: int) -> float:
        out = c_float()
        self.call("cuEventElapsedTime_v2", ctypes.byref(out), start, end)
        return out.value

    def event_destroy(self, event: int) -> None:
        self.call("cuEventDestroy_v2", event)

    # --- modules and launches ---
    def module_load_data(self, image: bytes) -> int:
        """Load a cubin (or PTX, NUL-terminated) image; the module handle."""
        buf = ctypes.create_string_buffer(bytes(image), len(image) + 1)  # + NUL, which PTX text needs
        out = c_void_p()
        self.call("cuModuleLoadData", ctypes.byref(out), buf)
        return out.value or 0

    def module_unload(self, module: int) -> None:
        self.call("cuModuleUnload", module)

    def module_get_function(self, module: int, name: str) -> int:
        out = c_void_p()
        self.call("cuModuleGetFunction", ctypes.byref(out), module, name.encode())
        return out.value or 0

    def launch(self, function: int, grid: Sequence[int], block: Sequence[int], stream: int = 0, shared: int = 0,
               params: Sequence[Any] | None = None, blob: bytes | None = None) -> None:
        """cuLaunchKernel with the arguments as ctypes values (`params`) or as the packed block (`blob`)."""
        if (params is None) == (blob is None):
            raise ValueError("launch takes the kernel's arguments as params (ctypes values) or blob (the packed "
                             "parameter block), exactly one of them")
        gx, gy, gz = grid
        bx, by, bz = block
        if params is not None:
            kp, keep = kernel_params(params)
            self.call("cuLaunchKernel", function, gx, gy, gz, bx, by, bz, shared, stream,
                      ctypes.cast(kp, P(c_void_p)), None)
        else:
            extra, keep = launch_extra(blob or b"")
            self.call("cuLaunchKernel", function, gx, gy, gz, bx, by, bz, shared, stream, None,
                      ctypes.cast(extra, P(c_void_p)))
        del keep  # cuLaunchKernel copies the arguments before it returns (cuda.h), so they may go now

    # --- graphs ---
    @contextmanager
    def capture(self, stream: int, mode: int = CU_STREAM_CAPTURE_MODE_GLOBAL) -> Iterator[list[int]]:
        """Capture what is issued on `stream` into a graph: `with cuda.capture(s) as g: ...`, then g[0] is the
        CUgraph (instantiate it with graph_instantiate). A failure inside ends the capture and drops it."""
        self.call("cuStreamBeginCapture_v2", stream, mode)
        out: list[int] = []
        graph = c_void_p()
        try:
            yield out
        except BaseException:
            self.lib.cuStreamEndCapture(stream, ctypes.byref(graph))  # unchecked: the first error is the one to see
            if graph.value:
                self.lib.cuGraphDestroy(graph)
            raise
        self.call("cuStreamEndCapture", stream, ctypes.byref(graph))
        out.append(graph.value or 0)

    def graph_instantiate(self, graph: int) -> int:
        out = c_void_p()
        self.call("cuGraphInstantiateWithFlags", ctypes.byref(out), graph, 0)
        return out.value or 0

    def graph_launch(self, graph_exec: int, stream: int) -> None:
        self.call("cuGraphLaunch", graph_exec, stream)

    def graph_exec_destroy(self, graph_exec: int) -> None:
        self.call("cuGraphExecDestroy", graph_exec)

    def graph_destroy(self, graph: int) -> None:
        self.call("cuGraphDestroy", graph)

    def close(self) -> None:
        """Release the primary context (the driver frees it, and everything in it, with its last user)."""
        if not self.closed:
            self.closed = True
            self.call("cuDevicePrimaryCtxRelease_v2", self.device)
