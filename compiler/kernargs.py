"""The kernel-argument block: where each parameter of a kernel goes."""
from __future__ import annotations

import struct
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


# --- kernel-argument blocks laid out by a code object's metadata (any compiler's) ---

# Hidden (implicit) arguments of code object v5 (AMDGPUUsage, "Code Object V5 Metadata", table "AMDHSA Code Object V5
# Kernel Argument Metadata Map Additions and Changes"): value kind -> its size, and how a dispatch with no global
# offset, no dynamic LDS and whole workgroups fills it. "grid" kinds depend on the launch's grid.
HIDDEN_GRID = {
    "hidden_block_count_x": 4, "hidden_block_count_y": 4, "hidden_block_count_z": 4,  # workgroups per dimension
    "hidden_group_size_x": 2, "hidden_group_size_y": 2, "hidden_group_size_z": 2,  # work-items per workgroup
    "hidden_remainder_x": 2, "hidden_remainder_y": 2, "hidden_remainder_z": 2,  # size of a partial last workgroup
    "hidden_grid_dims": 2,  # dimensions of the launch
}
# Zero is what the runtime passes when the feature is not in use, and a kernel that tests for it reads it that way:
# no OpenCL global offset, no dynamic LDS, not a multi-device cooperative launch (ROCm device-libs
# __ockl_multi_grid_is_valid checks the pointer for null), hidden_none is padding.
HIDDEN_ZERO = {"hidden_global_offset_x": 8, "hidden_global_offset_y": 8, "hidden_global_offset_z": 8,
               "hidden_dynamic_lds_size": 4, "hidden_multigrid_sync_arg": 8, "hidden_none": 0}
# A kernel that uses these dereferences them: a null pointer faults or hangs it, so such kernels are refused.
HIDDEN_REFUSED = {
    "hidden_printf_buffer": "it calls printf, which needs a printf buffer this driver does not provide",
    "hidden_hostcall_buffer": "it makes host calls (printf, malloc in HIP), which need a hostcall buffer and a host "
                              "thread serving it; this driver has neither",
    "hidden_heap_v1": "it allocates device memory (malloc/new in a kernel), which needs a device heap this driver "
                      "does not provide",
    "hidden_default_queue": "it enqueues kernels from the device, which needs a device-side AQL queue",
    "hidden_completion_action": "it enqueues kernels from the device, which needs a device-side AQL queue",
    "hidden_queue_ptr": "it reads the AQL queue (hsa_queue_t), and a PM4 queue has none",
    "hidden_private_base": "it asks for the private aperture through kernel arguments (code for GFX8 and older)",
    "hidden_shared_base": "it asks for the shared aperture through kernel arguments (code for GFX8 and older)",
}
EXPLICIT_KINDS = ("global_buffer", "by_value")  # what a caller's values fill; others (images, pipes...) are refused
REFUSED_KINDS = {"dynamic_shared_pointer": "dynamically allocated LDS, which this driver does not allocate",
                 "image": "an image, which needs image descriptors", "sampler": "a sampler",
                 "pipe": "a pipe", "queue": "a device-side queue"}


class KernargLayoutError(ValueError):
    """The metadata's kernel arguments cannot be served or the values given do not fit them; says which and why."""


@dataclass(frozen=True)
class MetaArg:
    """One entry of a kernel's metadata .args: where it goes and what it is."""
    name: str
    offset: int
    size: int
    kind: str  # .value_kind
    address_space: str = ""

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})" if self.name else f"{self.kind} at offset {self.offset}"


class KernargLayout:
    """A kernel-argument block as a code object's metadata lays it out: explicit arguments by .offset/.size/.value_kind,
    hidden arguments filled for the launch, .kernarg_segment_size bytes.

    `refused` lists (argument, reason) for what no launch can serve; `grid_dependent` says whether packing needs the
    grid (hidden block counts, group sizes, remainders, grid dims)."""

    def __init__(self, kernel: str, meta: dict):
        self.kernel = kernel
        self.size = int(meta.get(".kernarg_segment_size", 0))
        self.align = int(meta.get(".kernarg_segment_align", 4))
        args = []
        for i, a in enumerate(meta.get(".args", [])):
            try:
                args.append(MetaArg(str(a.get(".name", "")), int(a[".offset"]), int(a[".size"]),
                                    str(a[".value_kind"]), str(a.get(".address_space", ""))))
            except KeyError as e:
                raise KernargLayoutError(f"{kernel}: argument {i} of the metadata has no {e.args[0]}") from None
        self.args = sorted(args, key=lambda a: a.offset)
        pos, prev = 0, None
        for a in self.args:
            if a.offset < pos:
                raise KernargLayoutError(f"{kernel}: argument {a} at offset {a.offset} overlaps {prev}, which ends at "
                                         f"{pos}")
            if a.offset + a.size > self.size:
                raise KernargLayoutError(f"{kernel}: argument {a} ends at {a.offset + a.size}, past the "
                                         f"{self.size}-byte .kernarg_segment_size")
            pos, prev = max(pos, a.offset + a.size), a
        self.explicit = [a for a in self.args if not a.kind.startswith("hidden_")]
        self.hidden = [a for a in self.args if a.kind.startswith("hidden_")]
        self.refused: list[tuple[MetaArg, str]] = []
        for a in self.args:
            why = HIDDEN_REFUSED.get(a.kind) or REFUSED_KINDS.get(a.kind)
            if why is None and a.kind.startswith("hidden_") and a.kind not in HIDDEN_GRID and a.kind not in HIDDEN_ZERO:
                why = "this driver does not know that hidden argument"
            if why is None and not a.kind.startswith("hidden_") and a.kind not in EXPLICIT_KINDS:
                why = f"value kind {a.kind} is none this driver packs ({', '.join(EXPLICIT_KINDS)})"
            if why is None and a.kind == "global_buffer" and a.size != 8:
                why = f"a global_buffer of {a.size} bytes is not a 64-bit address"
            size = HIDDEN_GRID.get(a.kind, HIDDEN_ZERO.get(a.kind))
            if why is None and size and a.size != size:
                why = f"the ABI makes {a.kind} {size} bytes, the metadata says {a.size}"
            if why:
                self.refused.append((a, why))
        self.grid_dependent = any(a.kind in HIDDEN_GRID for a in self.hidden)

    def pack(self, values: tuple, global_size: tuple | None = None, local_size: tuple | None = None) -> bytearray:
        """The block for explicit `values` in .args order (ints for buffers and integer scalars, floats for 4- and
        8-byte floating scalars, bytes of the argument's size for anything else) and a launch of global_size
        workgroups of local_size work-items."""
        if self.refused:
            a, why = self.refused[0]
            raise KernargLayoutError(f"{self.kernel}: argument {a} cannot be served: {why}")
        if len(values) != len(self.explicit):
            raise KernargLayoutError(f"{self.kernel} takes {len(self.explicit)} arguments "
                                     f"({', '.join(a.name or a.kind for a in self.explicit)}), got {len(values)}")
        out = bytearray(self.size)
        for a, v in zip(self.explicit, values):
            out[a.offset:a.offset + a.size] = _arg_bytes(self.kernel, a, v)
        if not self.hidden:
            return out
        if self.grid_dependent:
            if global_size is None or local_size is None:
                kinds = ", ".join(a.kind for a in self.hidden if a.kind in HIDDEN_GRID)
                raise KernargLayoutError(f"{self.kernel}: its hidden arguments ({kinds}) depend on the launch: "
                                         "pack_args(..., global_size=(workgroups), local_size=(work-items))")
            grid = _hidden_grid(self.kernel, tuple(global_size), tuple(local_size))
        for a in self.hidden:
            if a.kind in HIDDEN_GRID:
                out[a.offset:a.offset + a.size] = grid[a.kind].to_bytes(a.size, "little")
            # HIDDEN_ZERO kinds stay 0
        return out


def _arg_bytes(kernel: str, a: MetaArg, v: object) -> bytes:
    """One explicit argument's bytes, or a clear error naming it."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        if len(v) != a.size:
            raise KernargLayoutError(f"{kernel}: argument {a} is {a.size} bytes, got {len(v)} bytes")
        return bytes(v)
    if isinstance(v, float) and a.kind == "by_value" and a.size in (4, 8):
        return struct.pack("<f" if a.size == 4 else "<d", v)
    if isinstance(v, int) and not isinstance(v, bool):
        lo = -(1 << (8 * a.size - 1)) if a.kind == "by_value" else 0
        if not lo <= v < 1 << (8 * a.size):
            raise KernargLayoutError(f"{kernel}: {v} does not fit argument {a}, which is {a.size} bytes")
        return (v % (1 << (8 * a.size))).to_bytes(a.size, "little")
    raise KernargLayoutError(f"{kernel}: argument {a} of {a.size} bytes cannot be {type(v).__name__}; "
                             "pass an int, a float, or bytes of its size")


def _hidden_grid(kernel: str, global_size: tuple, local_size: tuple) -> dict[str, int]:
    """Grid-dependent hidden values for a launch of whole workgroups (our dispatch never launches a partial one, so
    every remainder is 0). grid_dims counts dimensions up to the last one larger than 1 (at least 1)."""
    if len(global_size) != 3 or len(local_size) != 3 or not all(isinstance(g, int) and g >= 1
                                                                for g in global_size + local_size):
        raise KernargLayoutError(f"{kernel}: global_size (workgroups) and local_size (work-items) are 3 ints >= 1 "
                                 f"each, got {global_size} and {local_size}")
    if max(local_size) > 0xFFFF or max(global_size) > 0xFFFFFFFF:
        raise KernargLayoutError(f"{kernel}: hidden group sizes are 16-bit and block counts 32-bit; got local "
                                 f"{local_size} and global {global_size}")
    dims = max((i + 1 for i in range(3) if global_size[i] > 1 or local_size[i] > 1), default=1)
    out = {"hidden_grid_dims": dims}
    for i, d in enumerate("xyz"):
        out[f"hidden_block_count_{d}"] = global_size[i]
        out[f"hidden_group_size_{d}"] = local_size[i]
        out[f"hidden_remainder_{d}"] = 0
    return out
