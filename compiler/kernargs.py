"""The kernel-argument block: where each parameter of a kernel goes."""
from __future__ import annotations

from dataclasses import dataclass

from compiler import ir


@dataclass(frozen=True)
class KernArg:
    """Where one kernel argument goes in the kernel-argument block."""
    name: str
    offset: int
    size: int
    kind: str  # "buffer" (a 64-bit address) or "int32"
    dtype: str = "int32"  # element type of a buffer, or the scalar's type
    writable: bool = False


def arg_layout(k: ir.Kernel) -> list[KernArg]:
    """Parameters packed at their natural alignment, as the AMDGPU calling convention lays out explicit kernel
    arguments (and CUDA lays out a kernel's parameter buffer).

    Host kernels read the same layout, so one kernel-argument block serves a kernel on every target (and the
    emulated GPU can run the host build on the argument block the driver wrote for the real one).
    """
    out, off = [], 0
    for p in k.params:
        size = 8 if isinstance(p, ir.Memory) else 4
        off = (off + size - 1) // size * size
        out.append(KernArg(p.name, off, size, "buffer" if size == 8 else "int32", p.dtype.name,
                           bool(getattr(p, "writable", False))))
        off += size
    return out


def kernarg_size(args: list[KernArg]) -> int:
    """Bytes the explicit arguments span (what the AMD kernel descriptor's kernarg_size holds for our kernels)."""
    return max((a.offset + a.size for a in args), default=0)
