"""AMD programs: a kernel of any AMDGPU code object (ours or another compiler's) loaded into GPU memory, checked
against what a PM4 dispatch sets up, and the kernel-argument blocks its metadata lays out.

Nothing here depends on how our compiler lays kernels out: the code address is the descriptor's entry offset, the
resources come from the descriptor, the argument block from the metadata (explicit and hidden arguments), and the
user SGPRs from the descriptor's enable bits in the order AMDGPUUsage ("Initial Kernel Execution State") gives.
"""
from __future__ import annotations

import struct
from typing import Any, Optional

from compiler import elf
from compiler.elf import CodeObject, CodeObjectKernel
from compiler.kernargs import KernargLayout
from hcq.buffer import MemFlags

ARCHITECTED_FLAT_SCRATCH = ("gfx11", "gfx12", "gfx94")  # AMDGPUUsage processor table: "Architected flat scratch"
MAX_KERNARG_ALIGN = 256  # hcq.kernargs stages blocks 256-byte aligned; user buffers are page aligned
# hsa_kernel_dispatch_packet_t (hsa.h; AMDGPUUsage "Kernel Dispatch"): 64 bytes, 64-byte aligned like every AQL
# packet. header u16, setup u16 (dimensions in bits 1:0), workgroup_size_x/y/z u16, reserved u16, grid_size_x/y/z
# u32 (work-items), private_segment_size u32, group_segment_size u32, kernel_object u64, kernarg_address u64,
# reserved u64, completion_signal u64.
DISPATCH_PACKET = struct.Struct("<HHHHHHIIIIIQQQQ")
DISPATCH_PACKET_ALIGN = 64
HSA_PACKET_TYPE_KERNEL_DISPATCH = 2  # hsa.h hsa_packet_type_t, header bits 7:0
HSA_FENCE_SCOPE_SYSTEM = 2  # hsa.h hsa_fence_scope_t; acquire scope in header bits 10:9, release in 12:11
DISPATCH_PACKET_HEADER = (HSA_PACKET_TYPE_KERNEL_DISPATCH | HSA_FENCE_SCOPE_SYSTEM << 9 | HSA_FENCE_SCOPE_SYSTEM << 11)
REBUILD_OPTIMIZED = "LLVM drops the inputs a kernel does not use at -O1 and higher"


class ProgramLoadError(ValueError):
    """A kernel this driver cannot dispatch correctly; the message names the kernel, what it needs and what to do."""


def _refusals(name: str, target: str, d: elf.KernelDescriptor, layout: KernargLayout, lds_limit: int) -> list[str]:
    """Every reason a PM4 dispatch on `target` would run this kernel wrong, in words a user can act on."""
    props, out = d.kernel_code_properties, []
    flat_scratch = target.startswith(ARCHITECTED_FLAT_SCRATCH)
    if props & elf.KERNEL_CODE_PROPERTY_RESERVED:
        out.append(f"kernel_code_properties has reserved bits {props & elf.KERNEL_CODE_PROPERTY_RESERVED:#x} set: not "
                   "a descriptor this driver understands (rebuild it with LLVM's AMDGPU backend)")
    if props & elf.KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER and flat_scratch:
        out.append(f"ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER is set, but {target} reaches scratch through architected flat "
                   f"scratch and the dispatch fills no scratch buffer descriptor: rebuild the kernel for {target}")
    elif props & elf.KERNEL_CODE_PROPERTY_ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER:
        out.append("ENABLE_SGPR_PRIVATE_SEGMENT_BUFFER is set, and this driver fills no scratch buffer descriptor")
    if props & elf.KERNEL_CODE_PROPERTY_ENABLE_SGPR_QUEUE_PTR:
        out.append("ENABLE_SGPR_QUEUE_PTR is set, but a PM4 compute queue has no AQL queue (hsa_queue_t) to point "
                   f"at: rebuild it without reading the queue pointer ({REBUILD_OPTIMIZED})")
    if props & elf.KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_ID:
        out.append("ENABLE_SGPR_DISPATCH_ID is set, but this driver numbers no dispatches: rebuild it without "
                   f"__builtin_amdgcn_dispatch_id ({REBUILD_OPTIMIZED})")
    if props & elf.KERNEL_CODE_PROPERTY_ENABLE_SGPR_FLAT_SCRATCH_INIT:
        out.append(f"ENABLE_SGPR_FLAT_SCRATCH_INIT is set, but {target} sets FLAT_SCRATCH itself (architected flat "
                   f"scratch) and this driver fills no flat scratch init: rebuild the kernel for {target}"
                   if flat_scratch else "ENABLE_SGPR_FLAT_SCRATCH_INIT is set, and this driver fills no flat "
                   "scratch init")
    if d.uses_dynamic_stack:
        out.append("USES_DYNAMIC_STACK is set: its scratch need is unknown at load (recursion, dynamically sized "
                   "allocas or indirect calls) and private_segment_fixed_size is only a minimum: rebuild it "
                   "without them")
    if d.kernarg_preload_sgprs:
        out.append(f"it preloads {d.kernarg_preload_sgprs} kernel-argument SGPRs (KERNARG_PRELOAD_SPEC_LENGTH), which "
                   "this driver does not fill: rebuild it without kernel-argument preloading "
                   "(-mllvm -amdgpu-kernarg-preload-count=0)")
    if d.compute_pgm_rsrc2 & elf.RSRC2_ENABLE_TRAP_HANDLER:
        out.append("compute_pgm_rsrc2 bit 6 (ENABLE_TRAP_HANDLER; DYNAMIC_VGPR on GFX12) is set, and it must be 0 in "
                   "a kernel descriptor (AMDGPUUsage compute_pgm_rsrc2 table)")
    enabled = d.user_sgprs
    want = sum(n for _, n in enabled)
    padded = target in elf.USER_SGPR_INIT16_BUG and d.wave32 and want < d.user_sgpr_count <= 16 - d.system_sgprs
    if d.user_sgpr_count != want and not padded:
        what = ", ".join(f"{k} {n}" for k, n in enabled) or "none"
        out.append(f"USER_SGPR_COUNT is {d.user_sgpr_count}, but its enable bits ask for {want} user SGPRs ({what}); "
                   f"only {'/'.join(elf.USER_SGPR_INIT16_BUG)} wave32 kernels may pad it, up to 16 SGPRs with the "
                   "system SGPRs (LLVM's FeatureUserSGPRInit16Bug): the descriptor is inconsistent")
    if d.group_segment_fixed_size > lds_limit:
        out.append(f"it needs {d.group_segment_fixed_size} bytes of LDS (group_segment_fixed_size), and {target} has "
                   f"{lds_limit} per workgroup")
    if layout.align > MAX_KERNARG_ALIGN:
        out.append(f".kernarg_segment_align {layout.align} is more than the {MAX_KERNARG_ALIGN} bytes argument blocks "
                   "are aligned to")
    for a, why in layout.refused:
        out.append(f"argument {a}: {why}: rebuild it without that ({REBUILD_OPTIMIZED})")
    return out


class AMDProgram:
    """A kernel loaded the way a loader does it (PT_LOAD segments copied at their addresses), with what its dispatch
    needs: code address, resources, the user SGPRs it enables (and what fills them), scratch, and its argument layout.

    Load a CompiledKernel (`device.load_program(compiled)`) or any code object (`device.load_program(binary,
    name, local_size=None)`, or `AMDProgram.from_code_object`). Served: the kernel-argument pointer, the dispatch
    pointer (an hsa_kernel_dispatch_packet_t placed after the arguments in the block pack_args returns), the private
    segment size SGPR, scratch (architected flat scratch), wave32 and wave64, and the code object v5 hidden arguments
    that a PM4 launch can give (grid, group sizes, zero offsets). Refused at load, naming the kernel, the feature and
    what to do: the queue pointer, dispatch id, flat scratch init and private segment buffer SGPRs, dynamic stacks,
    kernel-argument preloading, and hidden arguments whose null value would break a kernel that uses them."""

    def __init__(self, device: Any, kernel: Any):
        name = kernel.name
        if kernel.target != device.target:
            raise ProgramLoadError(f"{name} was built for {kernel.target}, but {device.name} is a {device.target}: "
                                   f"compile it for {device.target}")
        co = CodeObject(kernel.binary, name)
        d = co.kernel_descriptor(name)
        meta = kernel.metadata if kernel.metadata is not None else co.kernel_metadata(name)
        layout = getattr(kernel, "layout", None) or KernargLayout(name, meta)
        lds_limit = device.node.properties.get("lds_size_in_kb", 64) * 1024
        reasons = _refusals(name, device.target, d, layout, lds_limit)
        if reasons:
            raise ProgramLoadError(f"{name} cannot run on {device.name} ({device.target}): " + "; ".join(reasons))
        self.name, self.compiled, self.device = name, kernel, device
        self.descriptor, self.metadata, self.layout = d, meta, layout
        self.local_size = tuple(kernel.local_size)
        self.wave_lanes = 32 if d.wave32 else 64
        # Kernel-argument block: the metadata's segment, then the dispatch packet where the kernel asks for one.
        dispatch_ptr = bool(d.kernel_code_properties & elf.KERNEL_CODE_PROPERTY_ENABLE_SGPR_DISPATCH_PTR)
        self.dispatch_packet_offset: Optional[int] = (
            -(-layout.size // DISPATCH_PACKET_ALIGN) * DISPATCH_PACKET_ALIGN if dispatch_ptr else None)
        self.kernarg_size = layout.size if not dispatch_ptr else self.dispatch_packet_offset + DISPATCH_PACKET.size
        self.grid_dependent = layout.grid_dependent or dispatch_ptr  # packing needs global_size and local_size
        self._plain = hasattr(kernel, "pack_args") and not layout.hidden and not dispatch_ptr  # our compiler's path
        # User SGPRs, as the dispatch fills them: (what, SGPRs), padded with zeros up to USER_SGPR_COUNT.
        self.user_sgprs = d.user_sgprs + [("padding", 1)] * (d.user_sgpr_count - sum(n for _, n in d.user_sgprs))
        # COMPUTE_PGM_RSRC2 as the descriptor has it, but LDS_SIZE, which the descriptor leaves 0 for the CP (the
        # AQL packet processor) to fill from the group segment size (AMDGPUUsage compute_pgm_rsrc2,
        # GRANULATED_LDS_SIZE): a PM4 dispatch is that CP, so the driver fills it.
        lds_field = elf.RSRC2_GRANULATED_LDS_SIZE_MASK << elf.RSRC2_GRANULATED_LDS_SIZE_SHIFT
        self.rsrc2 = (d.compute_pgm_rsrc2 & ~lds_field) | d.lds_granules() << elf.RSRC2_GRANULATED_LDS_SIZE_SHIFT
        # Scratch: bytes per wave (the private segment of every lane, 256-byte granules as COMPUTE_TMPRING_SIZE counts
        # them on GFX11/GFX12); the device's scratch area of at least that many bytes per wave slot.
        self.scratch = None
        if d.uses_scratch:
            wave_bytes = -(-max(1, d.private_segment_fixed_size * self.wave_lanes) // 256) * 256
            self.scratch = device.scratch_for(wave_bytes, name)
        image = co.image()
        self.image = device.alloc(len(image), MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE | MemFlags.EXECUTABLE,
                                  align=0x1000)
        self.image.cpu_view()[:len(image)] = image
        self.descriptor_va = self.image.va + co.symbols[f"{name}.kd"].value
        self.code_va = self.descriptor_va + d.kernel_code_entry_byte_offset
        if self.code_va % 256:
            self.free()
            raise ProgramLoadError(f"{name}: kernel code at {self.code_va:#x} is not 256-byte aligned (COMPUTE_PGM_LO "
                                   "holds address bits 39:8)")
        self.dispatch_setup: dict[Any, Any] = {}  # the queue's encoded register block for this program, built once

    @classmethod
    def from_code_object(cls, device: Any, binary: bytes, name: str,
                         local_size: Optional[tuple[int, int, int]] = None) -> "AMDProgram":
        """Load kernel `name` of any AMDGPU code object (v4-v6); local_size where its metadata has no
        .reqd_workgroup_size."""
        return cls(device, CodeObjectKernel.load(binary, name, local_size))

    def pack_args(self, *values: Any, **launch: Any) -> bytes:
        """The kernel-argument block: explicit values in the metadata's order (buffer addresses and scalars), the
        hidden arguments, and the dispatch packet for kernels that read one. Keywords: global_size, local_size,
        kernarg_va.

        Hidden arguments and the dispatch packet describe the launch: for a kernel with `grid_dependent` set, give
        global_size (workgroups) and local_size (work-items) as exec will. The packet's kernarg_address is the
        block's GPU address when kernarg_va says where the block goes, else 0 (LLVM's code reads arguments through
        the kernel-argument SGPRs, never through that field)."""
        if self._plain and not launch:  # our compiler's kernels, per launch: the compiled struct, no extra work
            return self.compiled.pack_args(*values)
        return self._pack(values, **launch)

    def _pack(self, values: tuple, global_size: Optional[tuple] = None, local_size: Optional[tuple] = None,
              kernarg_va: Optional[int] = None) -> bytes:
        if local_size is not None and tuple(local_size) != self.local_size:
            raise ProgramLoadError(f"{self.name} was loaded for local size {self.local_size}, packed for "
                                   f"{tuple(local_size)}")
        if self.grid_dependent and (global_size is None or local_size is None):
            needs = "its hidden arguments" if self.layout.grid_dependent else "its dispatch packet"
            raise ProgramLoadError(f"{self.name}: {needs} depend on the launch: pack_args(..., "
                                   "global_size=(workgroups), local_size=(work-items))")
        if self._plain:
            return self.compiled.pack_args(*values)
        block = self.layout.pack(values, global_size, local_size)
        at = self.dispatch_packet_offset
        if at is None:
            return bytes(block)
        d, ls = self.descriptor, self.local_size
        grid = [g * n for g, n in zip(global_size, ls)]
        if max(grid) > 0xFFFFFFFF:
            raise ProgramLoadError(f"{self.name}: a grid of {tuple(grid)} work-items does not fit the dispatch "
                                   "packet's 32-bit sizes")
        dims = max((i + 1 for i in range(3) if global_size[i] > 1 or ls[i] > 1), default=1)
        block.extend(bytes(at - len(block)))
        block += DISPATCH_PACKET.pack(DISPATCH_PACKET_HEADER, dims, *ls, 0, *grid, d.private_segment_fixed_size,
                                      d.group_segment_fixed_size, self.descriptor_va, kernarg_va or 0, 0, 0)
        return bytes(block)

    def free(self) -> None:
        self.device.free(self.image)
