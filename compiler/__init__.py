"""Kernel compilation: IR -> LLVM IR -> host machine code, AMD code objects or NVIDIA PTX, with a disk cache.

    from compiler import compile_kernel
    ck = compile_kernel(kernel, "host")      # or "gfx1100", "gfx1201", "gfx942", or "sm_80", "sm_90", ...
    ck(a, b, out, n, global_size=(blocks, 1, 1))   # host kernels run on numpy arrays
"""
from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from compiler import ir
from compiler.cache import KernelCache
from compiler.cubin import Cubin, CubinError, CubinKernel
from compiler.elf import EF_AMDGPU_MACH, CodeObject, KernelDescriptor
from compiler.emulation import (emulation_record, nv_emulation_record, parse_emulation_record, with_host_build,
                                with_nv_host_build)
from compiler.kernargs import KernArg, arg_layout, kernarg_size
from compiler.llvm_render import AMD_TARGETS, NV_TARGETS, render, render_checked_host, target_kind
from compiler.ptxas import assemble, ptxas_version
from compiler.toolchain import (GPU_CODEGEN_OPTIONS, ToolchainError, amd_link, amd_object, host_cpu, host_object,
                                llvm_version, lld_version, load_host, ptx)

TARGETS = ("host",) + AMD_TARGETS + NV_TARGETS
GENERATOR = "baregpu-compiler-3"  # bump when what a cached binary means changes
NV_STATIC_SHARED_BYTES = 48 * 1024  # CUDA's limit on statically allocated shared memory per block


@dataclass
class CompiledKernel:
    """A kernel built for one target: its binary (host object, AMD code object or PTX text), argument layout,
    and the AMD descriptor and metadata, or the host entry point. An NVIDIA build's cubin (ptxas's SASS for its
    sm_XX) is assembled from the PTX on first use of `cubin` / `cubin_kernel`, so PTX builds need no ptxas."""
    name: str
    target: str
    binary: bytes
    args: list[KernArg]
    local_size: tuple[int, int, int]
    lds_bytes: int
    descriptor: Optional[KernelDescriptor] = None
    _host: Any = field(default=None, repr=False)
    handle: int = 0  # set by the device that loads it
    metadata: Optional[dict] = field(default=None, repr=False)  # AMD: this kernel's entry in the metadata note
    key: str = ""  # the kernel IR's digest
    _cache: Optional[KernelCache] = field(default=None, repr=False)  # NVIDIA: where its cubin is cached

    @property
    def kernarg_size(self) -> int:
        return kernarg_size(self.args)

    @property
    def ptx(self) -> str:
        """The PTX text of an NVIDIA build."""
        if target_kind(self.target) != "nv":
            raise ToolchainError(f"{self.name} was built for {self.target}, which has no PTX")
        return self.binary.decode()

    @property
    def cubin(self) -> bytes:
        """The cubin ptxas assembles from this NVIDIA build's PTX, built once (and cached on disk) and checked
        against the kernel: architecture, parameter layout, shared memory, block shape."""
        return self._nv_cubin()[0]

    @property
    def cubin_kernel(self) -> CubinKernel:
        """What a launch needs of the cubin's kernel (registers, shared and local memory, parameter bank, text)."""
        return self._nv_cubin()[1]

    def _nv_cubin(self) -> tuple[bytes, CubinKernel]:
        built = self.__dict__.get("_cubin")
        if built is None:
            if target_kind(self.target) != "nv":
                raise ToolchainError(f"{self.name} was built for {self.target}, which has no cubin")
            cache = self._cache or KernelCache()
            text = self.ptx
            blob = cache.get_or_build((GENERATOR, self.key, text, ptxas_version(), f"-arch={self.target}"),
                                      f"{self.target}.cubin", lambda: assemble(text, self.name, self.target))
            built = self.__dict__["_cubin"] = (blob, _check_cubin(self, blob))
        return built

    def pack_args(self, *values: int) -> bytes:
        """The kernel-argument block for buffer addresses and int32 scalars, in parameter order."""
        if len(values) != len(self.args):
            raise ir.IRError(f"{self.name} takes {len(self.args)} arguments ({', '.join(a.name for a in self.args)}), "
                             f"got {len(values)}")
        packing = self.__dict__.get("_packing")
        if packing is None or packing[0] is not self.args:  # built once per argument list: a launch only packs
            packing = self.__dict__["_packing"] = (self.args, *_arg_packer(self.args, self.kernarg_size))
        _, layout, int32s = packing
        for i in int32s:
            if not ir.INT32_MIN <= values[i] <= ir.INT32_MAX:
                raise ir.IRError(f"{self.name}: argument {self.args[i].name}={values[i]} does not fit in int32")
        try:
            return layout.pack(*values)
        except struct.error as e:  # a negative or 65-bit address, or a value that is no int
            raise ir.IRError(f"{self.name}: arguments {values} do not fit the kernel-argument block ({e})") from None

    def run(self, kernargs: int, global_size: tuple, local_size: tuple, first: int = 0,
            count: Optional[int] = None, hold_gil: bool = False) -> None:
        """Run on the host over the grid (host target only), or over `count` workgroups from linear index `first`
        (x fastest) so threads can share one grid; the local size is fixed when the kernel is built."""
        if self._host is None:
            raise ToolchainError(f"{self.name} was built for {self.target}; only host kernels run on the CPU")
        if tuple(local_size) != self.local_size:
            raise ir.IRError(f"{self.name} was built for local size {self.local_size}, launched with {tuple(local_size)}")
        gs = tuple(global_size)
        if len(gs) != 3 or any(not isinstance(g, int) or g < 0 or g > ir.INT32_MAX for g in gs):
            raise ir.IRError(f"{self.name}: global_size is three workgroup counts >= 0, got {global_size}")
        self._host(kernargs, *gs, first, count, hold_gil)

    def __call__(self, *args: Any, global_size: tuple = (1, 1, 1)) -> None:
        """Run a host kernel on numpy arrays (C-contiguous, of the buffer's dtype) and ints; global_size counts
        workgroups per dimension."""
        values, keep = [], []
        if len(args) != len(self.args):
            raise ir.IRError(f"{self.name} takes {len(self.args)} arguments ({', '.join(a.name for a in self.args)}), "
                             f"got {len(args)}")
        for a, v in zip(self.args, args):
            if a.kind == "buffer" and isinstance(v, np.ndarray):
                if v.dtype.name != a.dtype:
                    raise ir.IRError(f"{self.name}: argument {a.name} is a {a.dtype} buffer, got a {v.dtype.name} array")
                if not v.flags.c_contiguous:
                    raise ir.IRError(f"{self.name}: argument {a.name} must be C-contiguous (use np.ascontiguousarray)")
                if a.writable and not v.flags.writeable:
                    raise ir.IRError(f"{self.name}: argument {a.name} is written, but the array is read-only")
                keep.append(v)
                values.append(v.ctypes.data)
            elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                values.append(int(v))
            else:
                raise ir.IRError(f"{self.name}: argument {a.name} ({a.kind}) cannot be {type(v).__name__}")
        blob = self.pack_args(*values)
        buf = ctypes.create_string_buffer(blob, max(len(blob), 1))
        self.run(ctypes.addressof(buf), global_size, self.local_size)


def _arg_packer(args: list[KernArg], size: int) -> tuple[struct.Struct, list[int]]:
    """A struct that packs a kernel's arguments at their offsets into its whole block, and which are int32s."""
    fmt, pos = "<", 0
    for a in args:
        if a.offset < pos:  # arg_layout places parameters in order; a packer must not reorder them
            raise ir.IRError(f"kernel argument {a.name} at offset {a.offset} overlaps the one before it (ends at {pos})")
        fmt += "x" * (a.offset - pos) + ("Q" if a.size == 8 else "i")
        pos = a.offset + a.size
    fmt += "x" * (size - pos)
    return struct.Struct(fmt), [i for i, a in enumerate(args) if a.kind == "int32"]


def _check_amd(k: ir.Kernel, target: str, co: CodeObject, args: list[KernArg]) -> tuple[KernelDescriptor, dict]:
    """The linked code object must be for `target` and agree with our argument layout and local arrays."""
    if co.mach != EF_AMDGPU_MACH[target]:
        raise ToolchainError(f"{k.name}: code object is for machine {co.mach:#x}, not {target} "
                             f"({EF_AMDGPU_MACH[target]:#x})")
    desc, meta = co.kernel_descriptor(k.name), co.kernel_metadata(k.name)
    explicit = [(a[".offset"], a[".size"]) for a in meta.get(".args", []) if not a[".value_kind"].startswith("hidden_")]
    if explicit != [(a.offset, a.size) for a in args]:
        raise ToolchainError(f"{k.name}: LLVM laid out the kernel arguments as {explicit} (offset, size), our layout "
                             f"is {[(a.offset, a.size) for a in args]}")
    if desc.group_segment_fixed_size != k.lds_bytes:
        raise ToolchainError(f"{k.name}: the descriptor reserves {desc.group_segment_fixed_size} bytes of LDS, the "
                             f"kernel's local arrays take {k.lds_bytes}")
    return desc, meta


def _check_cubin(ck: CompiledKernel, blob: bytes) -> CubinKernel:
    """The cubin must be for the build's sm_XX and agree with our argument layout, local arrays and local size."""
    try:
        kern = Cubin(blob, ck.name).kernel(ck.name)
    except CubinError as e:
        raise ToolchainError(f"{ck.name}: ptxas made a cubin our reader refuses: {e}") from e
    if kern.target != ck.target:
        raise ToolchainError(f"{ck.name}: the cubin is for {kern.target}, not {ck.target}")
    if kern.param_layout != [(a.offset, a.size) for a in ck.args]:
        raise ToolchainError(f"{ck.name}: ptxas laid out the parameters as {kern.param_layout} (offset, size), our "
                             f"layout is {[(a.offset, a.size) for a in ck.args]}")
    if kern.shared_bytes != ck.lds_bytes:
        raise ToolchainError(f"{ck.name}: the cubin reserves {kern.shared_bytes} bytes of shared memory, the kernel's "
                             f"local arrays take {ck.lds_bytes}")
    if kern.reqntid is not None and kern.reqntid != tuple(ck.local_size):
        raise ToolchainError(f"{ck.name}: the cubin requires blocks of {kern.reqntid}, the kernel was built for "
                             f"{tuple(ck.local_size)}")
    return kern


def compile_kernel(k: ir.Kernel, target: str, cache: Optional[KernelCache] = None,
                   emulation: bool = False) -> CompiledKernel:
    """Build a kernel for a target, reusing the disk cache when the IR, target and toolchain are unchanged.

    With emulation=True an AMD code object also carries the kernel's host build (the real ISA is still built and
    checked), for the emulated GPU's fast mode, which runs that instead of the machine code; an NVIDIA build's PTX
    (and so its cubin) carries the checked host build the emulated NVIDIA GPU runs (compiler/emulation.py).
    """
    if target not in TARGETS:
        raise ToolchainError(f"unknown target {target!r}; targets are {', '.join(TARGETS)}")
    kind = target_kind(target)
    if emulation and kind == "host":
        raise ToolchainError("emulation=True carries a host build inside a GPU binary; the host target is one already")
    if kind == "nv" and k.lds_bytes > NV_STATIC_SHARED_BYTES:
        raise ToolchainError(f"{k.name}: local arrays take {k.lds_bytes} bytes; NVIDIA allows {NV_STATIC_SHARED_BYTES} "
                             "bytes of static shared memory per block")
    cache = cache or KernelCache()
    llvm_ir = render(k, target)  # validates the kernel first
    key = k.key()
    args = arg_layout(k)

    def host_build(host_ir: str) -> bytes:
        return cache.get_or_build((GENERATOR, key, host_ir, llvm_version(), host_cpu()), "host",
                                  lambda: host_object(host_ir, k.name))
    if kind == "host":
        obj = host_build(llvm_ir)
        return CompiledKernel(k.name, target, obj, args, k.local_size, k.lds_bytes, None, load_host(obj, k.name), key=key)
    if kind == "nv":
        if emulation:  # the checked host build the emulated NVIDIA GPU runs, carried in the module (emulation.py)
            checked = cache.get_or_build((GENERATOR, key, "checked", render_checked_host(k), llvm_version(), host_cpu()),
                                         "host", lambda: host_object(render_checked_host(k), k.name))
            record = nv_emulation_record(k.name, k.local_size, [(a.offset, a.size, a.kind == "buffer") for a in args],
                                         checked)
            llvm_ir = with_nv_host_build(llvm_ir, k.name, record)
        text = cache.get_or_build((GENERATOR, key, llvm_ir, llvm_version(), *GPU_CODEGEN_OPTIONS), target,
                                  lambda: ptx(llvm_ir, k.name, target).encode())
        return CompiledKernel(k.name, target, text, args, k.local_size, k.lds_bytes, key=key, _cache=cache)
    if emulation:
        llvm_ir = with_host_build(llvm_ir, k.name, k.local_size, host_build(render(k, "host")))
    binary = cache.get_or_build((GENERATOR, key, llvm_ir, llvm_version(), lld_version(), *GPU_CODEGEN_OPTIONS), target,
                                lambda: amd_link(amd_object(llvm_ir, k.name, target), k.name))
    desc, meta = _check_amd(k, target, CodeObject(binary, k.name), args)
    return CompiledKernel(k.name, target, binary, args, k.local_size, k.lds_bytes, desc, metadata=meta, key=key)


__all__ = ["compile_kernel", "CompiledKernel", "CubinKernel", "KernArg", "KernelCache", "TARGETS", "ToolchainError",
           "emulation_record", "parse_emulation_record"]
