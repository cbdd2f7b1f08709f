"""KFD topology: the GPU nodes under /sys/class/kfd/kfd/topology/nodes, read through the OS seam.

Each node directory holds `gpu_id` (the id every KFD ioctl names a GPU by; 0 for CPU nodes), `name`, and
`properties`, one "key value" pair per line (amdkfd's kfd_topology.c prints them).
"""
from __future__ import annotations

from dataclasses import dataclass

from drivers.system import System

TOPOLOGY = "/sys/class/kfd/kfd/topology/nodes"


@dataclass(frozen=True)
class KFDNode:
    """One GPU as KFD describes it."""
    index: int
    gpu_id: int
    name: str
    properties: dict[str, int]

    @property
    def gfx_version(self) -> int:
        return self.properties.get("gfx_target_version", 0)

    @property
    def target(self) -> str:
        """The LLVM processor name: gfx_target_version 110000 is gfx1100, 90402 is gfx942."""
        v = self.gfx_version
        return f"gfx{v // 10000}{(v // 100) % 100:x}{v % 100:x}"

    @property
    def render_node(self) -> str:
        return f"/dev/dri/renderD{self.properties['drm_render_minor']}"

    @property
    def pci_address(self) -> str | None:
        """"0000:03:00.0" from KFD's `domain` and `location_id` (bus << 8 | devfn, as kfd_topology.c prints it),
        or None when the node does not say."""
        loc = self.properties.get("location_id")
        return None if loc is None else pci_address(self.properties.get("domain", 0), loc)

    @property
    def simd_count(self) -> int:
        return self.properties.get("simd_count", 0)


def pci_address(domain: int, location_id: int) -> str:
    """A PCI address ("0000:03:00.0") from a KFD node's domain and location_id (bus << 8 | device << 3 | function)."""
    return f"{domain:04x}:{location_id >> 8:02x}:{(location_id >> 3) & 0x1f:02x}.{location_id & 7}"


def parse_properties(text: str) -> dict[str, int]:
    """`properties` file lines into ints; lines that are not "key int" are skipped."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def read_topology(system: System) -> list[KFDNode]:
    """The GPU nodes in index order (CPU nodes, whose gpu_id is 0, are left out)."""
    try:
        names = system.listdir(TOPOLOGY)
    except OSError:
        return []
    nodes = []
    for name in sorted((n for n in names if n.isdigit()), key=int):
        base = f"{TOPOLOGY}/{name}"
        try:
            gpu_id = int(system.read_text(f"{base}/gpu_id") or 0)
        except (OSError, ValueError):
            continue
        if not gpu_id:
            continue
        props = parse_properties(system.read_text(f"{base}/properties"))
        nodes.append(KFDNode(int(name), gpu_id, system.read_text(f"{base}/name"), props))
    return nodes


@dataclass(frozen=True)
class CWSRSizes:
    """What one compute queue's context save/restore area must be, as amdkfd checks it at CREATE_QUEUE."""
    ctx_save_restore_size: int  # the node's cwsr_size: control stack plus workgroup data, per XCC
    ctl_stack_size: int  # must equal the node's ctl_stack_size exactly
    debug_memory_size: int  # per XCC, after the save area; the topology does not publish it
    total: int  # bytes to allocate and map: ALIGN((cwsr + debug) * num_xcc, PAGE)


def cwsr_sizes(node: KFDNode, page: int = 4096) -> CWSRSizes | None:
    """The CWSR area a compute queue on `node` needs, or None when the node publishes no cwsr_size (then the
    kernel expects none). The debug memory size is derived from the topology the way the thunk does, which is
    amdkfd's own formula (kfd_queue.c kfd_queue_ctx_save_restore_size; libhsakmt queues.c)."""
    p = node.properties
    cwsr, ctl = p.get("cwsr_size", 0), p.get("ctl_stack_size", 0)
    if not cwsr:
        return None
    num_xcc = max(1, p.get("num_xcc", 1))
    cu_num = p["simd_count"] // p["simd_per_cu"] // num_xcc
    if node.gfx_version < 100100:  # before gfx10.1 the wave count is also bounded by the shader arrays
        # kfd_topology.c prints array_count times NUM_XCC; the kernel's formula uses the per-XCC count
        wave_num = min(cu_num * 40, p["array_count"] // num_xcc // p["simd_arrays_per_engine"] * 512)
    else:
        wave_num = cu_num * 32
    debug = -(-wave_num * 32 // 64) * 64  # DEBUGGER_BYTES_PER_WAVE 32, DEBUGGER_BYTES_ALIGN 64
    total = -(-(cwsr + debug) * num_xcc // page) * page
    return CWSRSizes(cwsr, ctl, debug, total)
