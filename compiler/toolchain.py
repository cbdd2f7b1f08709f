"""Compile rendered LLVM IR with llvmlite: host machine code callable from Python (an object file loaded by an
MCJIT engine), AMD code objects (a relocatable object linked with ld.lld into a shared ELF), and NVIDIA PTX text.

LLVM aborts the whole process (it does not raise) when a backend cannot select an instruction; the renderer
therefore only emits what every target lowers, and tests build every operation for every target."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

AMD_TRIPLE, NV_TRIPLE = "amdgcn-amd-amdhsa", "nvptx64-nvidia-cuda"


class ToolchainError(RuntimeError):
    """LLVM rejected the kernel or a tool is missing; the message says which and what to install."""


def host_features() -> set[str]:
    """The host CPU's LLVM feature names that are on, e.g. {'avx2', 'fma', ...}."""
    flat = _llvm().get_host_cpu_features().flatten()
    return {f[1:] for f in flat.split(",") if f.startswith("+")}


@lru_cache(maxsize=None)
def _llvm() -> Any:
    import llvmlite.binding as llvm
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm


def llvm_version() -> str:
    """The LLVM inside llvmlite, e.g. '22.1.0' (part of every cache key)."""
    return ".".join(map(str, _llvm().llvm_version_info))


def host_cpu() -> str:
    """The host CPU and its features: host objects use them, so they are part of the cache key."""
    llvm = _llvm()
    return f"{llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()}"


@lru_cache(maxsize=None)
def lld_path() -> str:
    """ld.lld-19 (Debian's lld-19) or any ld.lld on PATH."""
    for name in ("ld.lld-19", "ld.lld"):
        found = shutil.which(name)
        if found:
            return found
    raise ToolchainError("ld.lld not found: AMD code objects are linked with it; install Debian's lld-19 "
                         "(apt-get install lld-19, which ./setup.sh does)")


@lru_cache(maxsize=None)
def lld_missing() -> str | None:
    """Why AMD code objects cannot be linked on this machine (ld.lld is not installed), or None."""
    try:
        lld_path()
    except ToolchainError as e:
        return str(e)
    return None


def lld_version() -> str:
    """ld.lld's version line (part of AMD cache keys)."""
    out = subprocess.run([lld_path(), "--version"], capture_output=True, text=True, timeout=60).stdout
    return out.strip().splitlines()[0] if out else "unknown"


def _parse(llvm_ir: str, name: str) -> Any:
    llvm = _llvm()
    try:
        mod = llvm.parse_assembly(llvm_ir)
        mod.verify()
    except RuntimeError as e:
        raise ToolchainError(f"{name}: LLVM rejected the generated IR: {e}") from e
    return mod


def _optimize(mod: Any, tm: Any) -> None:
    llvm = _llvm()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)


def host_object(llvm_ir: str, name: str) -> bytes:
    """An optimized object file for this machine (what the cache stores for host kernels)."""
    tm = _host_tm()
    mod = _parse(llvm_ir, name)
    mod.triple, mod.data_layout = tm.triple, str(tm.target_data)
    _optimize(mod, tm)
    return tm.emit_object(mod)


def _host_tm() -> Any:
    """A fresh host target machine: an MCJIT engine takes ownership of (and frees) the one it is given."""
    llvm = _llvm()
    # The host's own CPU and features: half-precision conversions are then instructions (F16C), not calls into
    # a runtime library the JIT does not have.
    return llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3, jit=True)


def _load_entry(obj: bytes, name: str, what: str) -> tuple[Any, int]:
    """A JIT holding a host object file, and the address of its function `name` (the JIT must be kept alive)."""
    llvm = _llvm()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _host_tm())
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    addr = engine.get_function_address(name)
    if not addr:
        raise ToolchainError(f"{name}: the {what} has no function {name}")
    return engine, addr


class HostFunction:
    """Host machine code loaded from an object file; kept alive with its JIT.

    Call as f(args_ptr, gx, gy, gz) for the whole grid, or f(args_ptr, gx, gy, gz, first, count) for `count`
    workgroups from linear index `first` (x fastest, see HostRenderer). The call releases the GIL while the kernel
    runs, so threads calling it on disjoint ranges of one grid run in parallel.
    """

    def __init__(self, obj: bytes, name: str):
        self.name = name
        self.engine, addr = _load_entry(obj, name, "host object")
        self.fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                   ctypes.c_int64, ctypes.c_int64)(addr)
        # The same entry point called without releasing the GIL: for kernels too short to be worth a GIL hand-over.
        self.fn_holding_gil = ctypes.PYFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                                ctypes.c_int64, ctypes.c_int64)(addr)

    def __call__(self, args_ptr: int, gx: int, gy: int, gz: int, first: int = 0, count: int | None = None,
                 hold_gil: bool = False) -> None:
        total = gx * gy * gz
        if count is None:
            count = total - first
        # The kernel trusts its range (it does not bound z): a range past the grid would run workgroups that do not exist.
        if first < 0 or count < 0 or first + count > total:
            raise ValueError(f"{self.name}: workgroups [{first}, {first + count}) are outside the grid {gx}x{gy}x{gz} "
                             f"({total} workgroups); pass 0 <= first <= first + count <= {total}")
        if count:
            (self.fn_holding_gil if hold_gil else self.fn)(args_ptr, gx, gy, gz, first, count)


class CheckedHostFunction:
    """A checked host build (compiler.llvm_render.CheckedHostRenderer) loaded from its object file.

    Call as f(args_ptr, gx, gy, gz, first, count, limits_ptr, fault_ptr); releases the GIL while the kernel runs."""

    def __init__(self, obj: bytes, name: str):
        self.name = name
        self.engine, addr = _load_entry(obj, name, "checked host object")
        self.fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32,
                                   ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)(addr)

    def __call__(self, args_ptr: int, gx: int, gy: int, gz: int, first: int, count: int, limits_ptr: int,
                 fault_ptr: int) -> None:
        total = gx * gy * gz
        if first < 0 or count < 0 or first + count > total:
            raise ValueError(f"{self.name}: workgroups [{first}, {first + count}) are outside the grid {gx}x{gy}x{gz}")
        if count:
            self.fn(args_ptr, gx, gy, gz, first, count, limits_ptr, fault_ptr)


# A store fence as LLVM IR: on x86 SFENCE orders write-combined stores before later ones (a plain `fence release`
# compiles to nothing there, since ordinary x86 stores are already ordered); elsewhere a release fence (aarch64: DMB).
_FENCE_IR = {
    "x86_64": "declare void @llvm.x86.sse.sfence()\n"
              "define void @baregpu_store_fence() {\n  call void @llvm.x86.sse.sfence()\n  ret void\n}\n",
    "other": "define void @baregpu_store_fence() {\n  fence release\n  ret void\n}\n",
}


@lru_cache(maxsize=None)
def store_fence() -> Any:
    """A host function that executes one store fence: every store before a call reaches memory before any store
    after it, write-combined stores included (drivers call it between ring writes and a doorbell)."""
    llvm = _llvm()
    arch = llvm.get_process_triple().split("-")[0]
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(_FENCE_IR.get(arch, _FENCE_IR["other"])), _host_tm())
    engine.finalize_object()
    fn = ctypes.CFUNCTYPE(None)(engine.get_function_address("baregpu_store_fence"))
    fn.engine = engine  # the machine code lives as long as its JIT
    return fn


def load_host(obj: bytes, name: str) -> HostFunction:
    """Load a host object file and return its kernel entry point."""
    return HostFunction(obj, name)


# LLVM 22's MachineSink (llvmlite's LLVM) moves LDS loads below the next workgroup barrier (fence release;
# s_barrier; fence acquire), where they race with other waves' stores of the next tile; llc-19 keeps them above it.
# The emulated GPU's wave executor found it: a tiled matmul with edge tiles, (65,33)@(33,64), came out wrong from
# column 32. GPU code is therefore built with the pass off (cl::opt options are process-wide, hence the lock); host
# code, which has no barriers (the host renderer cuts kernels at them), keeps it. Part of every GPU cache key.
GPU_CODEGEN_OPTIONS = ("-disable-machine-sink",)
_options_lock = threading.Lock()


@contextmanager
def _gpu_codegen() -> Any:
    llvm = _llvm()
    with _options_lock:
        for opt in GPU_CODEGEN_OPTIONS:
            llvm.set_option("", f"{opt}=true")
        try:
            yield
        finally:
            for opt in GPU_CODEGEN_OPTIONS:
                llvm.set_option("", f"{opt}=false")


def amd_object(llvm_ir: str, name: str, gfx: str) -> bytes:
    """A relocatable amdgcn-amd-amdhsa object for processor `gfx` (the module carries code object v5)."""
    llvm = _llvm()
    tm = llvm.Target.from_triple(AMD_TRIPLE).create_target_machine(cpu=gfx, opt=3, reloc="pic")
    mod = _parse(llvm_ir, name)
    mod.triple, mod.data_layout = AMD_TRIPLE, str(tm.target_data)
    with _gpu_codegen():
        _optimize(mod, tm)
        return tm.emit_object(mod)


def ptx(llvm_ir: str, name: str, sm: str) -> str:
    """PTX assembly for NVIDIA architecture `sm` (sm_80, sm_90, ...); ptxas or the driver's JIT turns it into SASS."""
    llvm = _llvm()
    tm = llvm.Target.from_triple(NV_TRIPLE).create_target_machine(cpu=sm, opt=3)
    mod = _parse(llvm_ir, name)
    mod.triple, mod.data_layout = NV_TRIPLE, str(tm.target_data)
    with _gpu_codegen():
        _optimize(mod, tm)
        return tm.emit_assembly(mod)


def amd_link(obj: bytes, name: str) -> bytes:
    """Link a relocatable object into a loadable code object (a shared ELF) with ld.lld."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / f"{name}.o", Path(tmp) / f"{name}.hsaco"
        src.write_bytes(obj)
        proc = subprocess.run([lld_path(), "-shared", "--no-undefined", "-o", str(dst), str(src)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise ToolchainError(f"{name}: ld.lld failed: {proc.stderr.strip()}")
        return dst.read_bytes()
