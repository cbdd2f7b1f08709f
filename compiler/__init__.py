"""Kernel compilation: IR -> LLVM IR -> host machine code or AMD code objects, with a disk cache.

    from compiler import compile_kernel
    ck = compile_kernel(kernel, "host")      # or "gfx1100", "gfx1201", "gfx942"
"""
from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass, field
from typing import Any

from compiler import ir
from compiler.cache import KernelCache
from compiler.elf import EF_AMDGPU_MACH, CodeObject, KernelDescriptor
from compiler.llvm_render import render
from compiler.toolchain import (AMD_TARGETS, ToolchainError, amd_link, amd_object, host_cpu, host_object, llvm_version,
                                load_host, lld_version)

TARGETS = ("host",) + AMD_TARGETS
GENERATOR = "baregpu-compiler-1"


@dataclass(frozen=True)
class KernArg:
    """Where one kernel argument goes in the kernel-argument block."""
    name: str
    offset: int
    size: int
    kind: str  # "buffer" or "int32"


@dataclass
class CompiledKernel:
    """A kernel built for one target: its binary, argument layout and (AMD) descriptor, or (host) entry point."""
    name: str
    target: str
    binary: bytes
    args: list[KernArg]
    local_size: tuple[int, int, int]
    lds_bytes: int
    descriptor: KernelDescriptor | None = None
    _host: Any = field(default=None, repr=False)
    handle: int = 0  # set by the device that loads it

    @property
    def kernarg_size(self) -> int:
        return max((a.offset + a.size for a in self.args), default=0)

    def pack_args(self, *values: int) -> bytes:
        """The kernel-argument block for buffer addresses and int32 scalars, in parameter order."""
        if len(values) != len(self.args):
            raise ir.IRError(f"{self.name} takes {len(self.args)} arguments ({', '.join(a.name for a in self.args)}), "
                             f"got {len(values)}")
        out = bytearray(self.kernarg_size)
        for a, v in zip(self.args, values):
            struct.pack_into("<Q" if a.size == 8 else "<i", out, a.offset, v)
        return bytes(out)

    def run(self, kernargs: int, global_size: tuple, local_size: tuple) -> None:
        """Run on the host over the grid (host target only); the local size is fixed when the kernel is built."""
        if self._host is None:
            raise ToolchainError(f"{self.name} was built for {self.target}; only host kernels run on the CPU")
        if tuple(local_size) != self.local_size:
            raise ir.IRError(f"{self.name} was built for local size {self.local_size}, launched with {tuple(local_size)}")
        self._host(kernargs, *global_size)


def arg_layout(k: ir.Kernel, target: str) -> list[KernArg]:
    """Host: one 8-byte slot per parameter. AMD: parameters packed at their natural alignment (as clang does)."""
    out, off = [], 0
    for p in k.params:
        size = 8 if isinstance(p, ir.Memory) else 4
        if target == "host":
            size_slot = 8
            out.append(KernArg(p.name, off, size, "buffer" if size == 8 else "int32"))
            off += size_slot
        else:
            off = (off + size - 1) // size * size
            out.append(KernArg(p.name, off, size, "buffer" if size == 8 else "int32"))
            off += size
    return out


def compile_kernel(k: ir.Kernel, target: str, cache: KernelCache | None = None) -> CompiledKernel:
    """Build a kernel for a target, reusing the disk cache when the IR, target and toolchain are unchanged."""
    if target not in TARGETS:
        raise ToolchainError(f"unknown target {target!r}; targets are {', '.join(TARGETS)}")
    for m in k.buffers + k.locals:
        if m.dtype == ir.bool_:
            raise ir.IRError(f"{m.name}: bool memory is not supported; store int32 0/1 instead")
    cache = cache or KernelCache()
    llvm_ir = render(k, target)
    lds = sum(m.size * m.dtype.itemsize for m in k.locals)
    versions = (GENERATOR, llvm_version()) + ((host_cpu(),) if target == "host" else (lld_version(),))
    if target == "host":
        obj = cache.get_or_build((llvm_ir,) + versions, target, lambda: host_object(llvm_ir, k.name))
        return CompiledKernel(k.name, target, obj, arg_layout(k, target), k.local_size, lds, None, load_host(obj, k.name))
    binary = cache.get_or_build((llvm_ir,) + versions, target, lambda: amd_link(amd_object(llvm_ir, k.name, target), k.name))
    co = CodeObject(binary)
    if co.mach != EF_AMDGPU_MACH[target]:
        raise ToolchainError(f"{k.name}: code object is for machine {co.mach:#x}, not {target}")
    return CompiledKernel(k.name, target, binary, arg_layout(k, target), k.local_size, lds, co.kernel_descriptor(k.name))


__all__ = ["compile_kernel", "CompiledKernel", "KernArg", "TARGETS", "KernelCache"]
