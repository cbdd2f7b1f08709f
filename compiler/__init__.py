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
from compiler.kernargs import KernArg, arg_layout
from compiler.elf import EF_AMDGPU_MACH, CodeObject, KernelDescriptor
from compiler.llvm_render import render
from compiler.toolchain import (AMD_TARGETS, ToolchainError, amd_link, amd_object, host_cpu, host_object, llvm_version,
                                load_host, lld_version)

TARGETS = ("host",) + AMD_TARGETS
GENERATOR = "baregpu-compiler-1"


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


EMULATION_MAGIC = b"BAREGPUH"  # marks the host build inside an emulation code object: magic, u32 name length,
# name, three u32 local sizes, u64 object size, object bytes


def emulation_record(name: str, local_size: tuple[int, int, int], host_obj: bytes) -> bytes:
    """The host build of a kernel as the emulated GPU finds it in a loaded code object."""
    raw = name.encode()
    return (EMULATION_MAGIC + struct.pack("<I", len(raw)) + raw + struct.pack("<3I", *local_size)
            + struct.pack("<Q", len(host_obj)) + host_obj)


def parse_emulation_record(image: bytes, start: int = 0) -> tuple[str, tuple[int, int, int], bytes] | None:
    """(kernel name, local size, host object) of the first record in a loaded image, or None."""
    at = image.find(EMULATION_MAGIC, start)
    if at < 0:
        return None
    n = struct.unpack_from("<I", image, at + 8)[0]
    name = image[at + 12:at + 12 + n].decode()
    local = struct.unpack_from("<3I", image, at + 12 + n)
    size = struct.unpack_from("<Q", image, at + 24 + n)[0]
    return name, local, image[at + 32 + n:at + 32 + n + size]


def _with_host_build(llvm_ir: str, k: ir.Kernel, host_obj: bytes) -> str:
    """Carry the host build in the AMD code object as a read-only global, so it loads with the image."""
    blob = emulation_record(k.name, k.local_size, host_obj)
    text = "".join(f"\\{b:02X}" for b in blob)
    return llvm_ir + (f'@__baregpu_host_{k.name} = protected addrspace(4) constant [{len(blob)} x i8] c"{text}", align 16\n')


def compile_kernel(k: ir.Kernel, target: str, cache: KernelCache | None = None, emulation: bool = False) -> CompiledKernel:
    """Build a kernel for a target, reusing the disk cache when the IR, target and toolchain are unchanged.

    With emulation=True an AMD code object also carries the kernel's host build (the real ISA is still built and
    checked): the emulated GPU runs that on the kernel-argument block the driver prepared for the real one.
    """
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
        return CompiledKernel(k.name, target, obj, arg_layout(k), k.local_size, lds, None, load_host(obj, k.name))
    if emulation:
        host_ir = render(k, "host")
        host_obj = cache.get_or_build((host_ir, GENERATOR, llvm_version(), host_cpu()), "host",
                                      lambda: host_object(host_ir, k.name))
        llvm_ir = _with_host_build(llvm_ir, k, host_obj)
    binary = cache.get_or_build((llvm_ir,) + versions, target, lambda: amd_link(amd_object(llvm_ir, k.name, target), k.name))
    co = CodeObject(binary)
    if co.mach != EF_AMDGPU_MACH[target]:
        raise ToolchainError(f"{k.name}: code object is for machine {co.mach:#x}, not {target}")
    return CompiledKernel(k.name, target, binary, arg_layout(k), k.local_size, lds, co.kernel_descriptor(k.name))


__all__ = ["compile_kernel", "CompiledKernel", "KernArg", "TARGETS", "KernelCache"]
