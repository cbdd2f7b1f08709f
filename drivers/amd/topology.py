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
        if loc is None:
            return None
        return f"{self.properties.get('domain', 0):04x}:{loc >> 8:02x}:{(loc >> 3) & 0x1f:02x}.{loc & 7}"

    @property
    def simd_count(self) -> int:
        return self.properties.get("simd_count", 0)


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
