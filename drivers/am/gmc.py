"""The GPU memory controller, driver side: the two VM hubs (MMHUB, GFXHUB), the VM context the AM path runs in, its
multi-level page tables in VRAM, and TLB invalidation.

What is programmed, and in which order, is amdgpu's (linux 6.12): gmc_v11_0.c / gmc_v12_0.c (hw_init -> gart_enable:
MMHUB, HDP flush, fault defaults, TLB flush of VMID 0), mmhub_v3_0.c / mmhub_v3_0_2.c / mmhub_v4_1_0.c and
gfxhub_v3_0.c / gfxhub_v12_0.c (gart_enable: context 0 aperture, system aperture, L1 TLB, L2 cache, system domain,
identity aperture off, contexts 1..15, invalidation engine ranges), gfx_v11_0.c gfx_v11_0_gfxhub_enable (the GFXHUB is
enabled by the GFX block, later than the MMHUB), and gmc_v11_0_flush_gpu_tlb (the MMIO invalidation handshake on
engine 17: semaphore on the MMHUB, REQ, wait for ACK, release, MMHUB private invalidation).

Decisions that differ from amdgpu (one process owns the card, there is no kernel/user split):
- VM contexts: the AM path runs everything in VMID 0, as tinygrad's AM driver does. Context 0 is NOT amdgpu's flat
  GART (PAGE_TABLE_DEPTH 0 over gart_start..gart_end) but the process's 4-level table over the whole 48-bit VA
  (PAGE_TABLE_DEPTH 3, block size 9 -> PAGE_TABLE_BLOCK_SIZE 0, START 0, END max_pfn - 1, max_pfn = 2^36 as
  amdgpu_vm_adjust_size(adev, 256 * 1024, 9, 3, 48) gives). Contexts 1..15 are programmed exactly as
  gfxhub/mmhub setup_vmid_config does (enabled, same depth and range, fault defaults) and, unlike amdgpu (which
  writes their base from a ring on each job), their base points at the same root: any VMID sees the one VM, so a
  queue set up with another VMID still translates. `GMC(vmid=...)` names the VMID whose TLB map/unmap flush.
- VMID 0 uses SYSTEM_ACCESS_MODE 3 (gfxhub_v3_0_init_tlb_regs): an address inside the system aperture
  [fb_start, fb_end] is a physical MC address (VRAM offset + fb_start, see `mc_address`), everything else walks the
  page table. map() therefore refuses VAs that overlap the system aperture.
- No GART: amdgpu's GART is context 0's flat table; here system memory is mapped into the same 4-level VM with
  PTE_SYSTEM (bus addresses of DMA buffers).
- Fault handling: fault defaults on (amdgpu_vm_fault_stop = never), no retry faults (amdgpu_noretry = 1 on gfx11/12),
  and the fault interrupt bits set on all 16 contexts as amdgpu_gmc_set_vm_fault_masks(enable) does once its VM
  fault IRQ is enabled, so the IH block sees faults from the start.
- The protection-fault default page is a system-memory DMA page (amdgpu's dummy_page), the system-aperture default
  page a VRAM page from the table pool (amdgpu's mem_scratch).

Page tables (amdgpu_vm_pt.c, amdgpu_vm.h): 4 levels of 512 8-byte entries (PDB2 VA 47:39, PDB1 38:30, PDB0 29:21,
PTB 20:12), 4 KiB pages. A run whose VA and physical address are both aligned to 2^f pages and at least 2^f pages
long is written with AMDGPU_PTE_FRAG(f) (amdgpu_vm_pte_fragment), and when f reaches a directory's shift the entry is
written there as a PDE-as-PTE huge page (2 MiB in PDB0, 1 GiB in PDB1; amdgpu_vm_ptes_update goes up a level when
frag >= shift). Unlike amdgpu, which derives the fragment from the VA alone and relies on its VRAM manager's
alignment, the fragment here is also limited by the physical address's alignment, so every fragment and huge page
is aligned and contiguous on both sides (a huge entry must be: its low address bits come from the VA). Entry
layouts: gmc_v11_0.c and gmc_v12_0.c "PTE format" comments; GFX12 moves MTYPE to 55:54 and the
PDE-is-PTE bit from 54 to 63 (AMDGPU_PTE_MTYPE_GFX12, AMDGPU_PDE_PTE_GFX12).

Table pages come from `TablePool`, a simple VRAM page allocator (bump pointer plus a free list over one VRAM window,
default the 16 MiB at 16 MiB — below BAR0's default 256 MiB, so tables are written through BAR0 — see DEFAULT_POOL).
The driver keeps a shadow of every table and writes only changed runs; VRAM is the truth `walk()` reads.
"""
from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right, insort
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from drivers.am.regs import Reg
from drivers.pci.interface import DMABuffer
from hcq.errors import HCQError

log = logging.getLogger(__name__)

# --- entry bits (drivers/gpu/drm/amd/amdgpu/amdgpu_vm.h) ---
PTE_VALID = 1 << 0
PTE_SYSTEM = 1 << 1
PTE_SNOOPED = 1 << 2
PTE_TMZ = 1 << 3
PTE_EXECUTABLE = 1 << 4
PTE_READABLE = 1 << 5
PTE_WRITEABLE = 1 << 6
PTE_FRAG_SHIFT, PTE_FRAG_MASK = 7, 0x1F << 7  # AMDGPU_PTE_FRAG(x): (x & 0x1f) << 7
PDE_PTE_GFX11 = 1 << 54  # AMDGPU_PDE_PTE
PDE_PTE_GFX12 = 1 << 63  # AMDGPU_PDE_PTE_GFX12
MTYPE_NV10_SHIFT, MTYPE_NV10_MASK = 48, 7 << 48  # AMDGPU_PTE_MTYPE_NV10
MTYPE_GFX12_SHIFT, MTYPE_GFX12_MASK = 54, 3 << 54  # AMDGPU_PTE_MTYPE_GFX12
ADDR_MASK = 0x0000_FFFF_FFFF_F000  # gmc_v11_0.c / gmc_v12_0.c: 47:12 4k physical page base address
# navi10_enum.h / soc24_enum.h MTYPE
MTYPE_NC, MTYPE_WC, MTYPE_CC, MTYPE_UC = 0, 1, 2, 3
MAP_FLAGS = PTE_SYSTEM | PTE_SNOOPED | PTE_TMZ | PTE_EXECUTABLE | PTE_READABLE | PTE_WRITEABLE  # what map() takes
DEFAULT_FLAGS = PTE_READABLE | PTE_WRITEABLE | PTE_EXECUTABLE

# --- page-table geometry (amdgpu_vm.h enum amdgpu_vm_level, amdgpu_vm_pt.c amdgpu_vm_pt_level_shift, block_size 9) ---
PDB2, PDB1, PDB0, PTB = 0, 1, 2, 3
LEVEL_NAMES = ("PDB2", "PDB1", "PDB0", "PTB")
LEVEL_SHIFT = (27, 18, 9, 0)  # in 4 KiB pages: 9 * (PDB0 - level) + block_size, PTB 0
PAGE = 4096
ENTRIES = 512
VA_BITS = 48
MAX_PFN = 1 << (VA_BITS - 12)  # amdgpu_vm_adjust_size(256 TiB): max_pfn = vm_size << 18
MAX_FRAG = 31  # amdgpu_vm_pte_fragment: max_frag 31 from Vega10 on
HUGE_LEVELS = (PDB1, PDB0)  # PDE-as-PTE levels used here (PDB2's 512 GiB pages never arise)
PAGE_TABLE_DEPTH = 3  # vm_manager.num_level for 48-bit VA with 9-bit blocks
INVALIDATE_ENGINE = 17  # gmc_v11_0_flush_gpu_tlb: "Use register 17 for GART"
USEC_TIMEOUT_S = 0.1  # amdgpu.h AMDGPU_MAX_USEC_TIMEOUT (100 ms), adev->usec_timeout
RESERVED_CACHE_PRIVATE_INVALIDATION = 1 << 25  # gmc_v11_0_flush_gpu_tlb: bit 25 of MMVM_L2_BANK_SELECT_RESERVED_CID2
L2_CNTL3_DEFAULT = {"MM": 0x80100007, "GC": 0x80120007}  # mmhub_v3_0.c / gc_11_0_0_default.h regXXVM_L2_CNTL3_DEFAULT
L2_CNTL4_DEFAULT = 0x000000C1  # regXXVM_L2_CNTL4_DEFAULT (mmhub_v3_0.c, gc_11_0_0_default.h, gfxhub_v12_0.c)
L2_CNTL5_DEFAULT = 0x00003FE0  # regXXVM_L2_CNTL5_DEFAULT
FB_LOCATION_MASK = 0xFFFFFF  # gfxhub_v3_0_get_fb_location: FB_BASE field, in 16 MiB units
DEFAULT_POOL = (16 << 20, 16 << 20)  # (VRAM offset, size) of the table pool when none is given
FAULT_BITS = ("RANGE", "DUMMY_PAGE", "PDE0", "VALID", "READ", "WRITE", "EXECUTE")  # hub->vm_cntx_cntl_vm_fault


class GMCError(HCQError):
    """A VM hub, page table or TLB operation failed; the message names the address, hub or register and what to do."""


def _ctz(x: int) -> int:
    return (x & -x).bit_length() - 1 if x else 1 << 30


@dataclass(frozen=True)
class PTELayout:
    """Where one GFX generation keeps the bits that move (gmc_v11_0.c / gmc_v12_0.c PTE and PDE formats)."""
    gen: int
    pde_pte: int  # PDE-as-PTE ("P") bit
    mtype_shift: int
    mtype_mask: int

    def pte(self, addr: int, flags: int, mtype: int, frag: int, level: int) -> int:
        """A leaf entry: `addr` (4 KiB aligned) with VALID, the map flags, FRAG(frag), MTYPE and, above the PTB,
        the PDE-as-PTE bit (amdgpu_vm_pte_update_flags: level != PTB -> flags |= AMDGPU_PDE_PTE_FLAG)."""
        e = (addr & ADDR_MASK) | PTE_VALID | (flags & MAP_FLAGS) | (frag << PTE_FRAG_SHIFT) | \
            ((mtype << self.mtype_shift) & self.mtype_mask)
        return e | (self.pde_pte if level != PTB else 0)

    @staticmethod
    def pde(table_pa: int) -> int:
        """A directory entry pointing at a table in VRAM: its address | VALID (amdgpu_ttm_tt_pde_flags for VRAM)."""
        return (table_pa & ADDR_MASK) | PTE_VALID

    def is_leaf(self, entry: int, level: int) -> bool:
        return level == PTB or bool(entry & self.pde_pte)


LAYOUTS = {11: PTELayout(11, PDE_PTE_GFX11, MTYPE_NV10_SHIFT, MTYPE_NV10_MASK),
           12: PTELayout(12, PDE_PTE_GFX12, MTYPE_GFX12_SHIFT, MTYPE_GFX12_MASK)}


class TablePool:
    """A simple VRAM page allocator for page-table pages: 4 KiB pages of one window [base, base + size) of VRAM, a
    bump pointer plus a LIFO free list. Every allocated page is zeroed in VRAM (`zero(offset)`) before use. Running
    out and double frees are GMCError naming the pool."""

    def __init__(self, base: int, size: int, zero: Callable[[int], None]):
        if base % PAGE or size % PAGE or size < 2 * PAGE:
            raise GMCError(f"page-table pool {size:#x} bytes at VRAM {base:#x} must be 4 KiB aligned and hold at "
                           f"least two pages")
        self.base, self.size, self._zero = base, size, zero
        self._next = base
        self._free: list[int] = []
        self._used: set[int] = set()

    @property
    def used(self) -> int:
        """Pages handed out and not freed."""
        return len(self._used)

    @property
    def capacity(self) -> int:
        return self.size // PAGE

    def alloc(self) -> int:
        """A zeroed page's VRAM offset."""
        if self._free:
            off = self._free.pop()
        elif self._next < self.base + self.size:
            off, self._next = self._next, self._next + PAGE
        else:
            raise GMCError(f"the page-table pool is full: {self.capacity} pages ({self.size >> 20} MiB at VRAM "
                           f"{self.base:#x}) are all in use; unmap something, or give GMC a larger table_pool")
        self._zero(off)
        self._used.add(off)
        return off

    def free(self, off: int) -> None:
        if off not in self._used:
            raise GMCError(f"page-table page at VRAM {off:#x} freed twice or never allocated from the pool at "
                           f"{self.base:#x}")
        self._used.remove(off)
        self._free.append(off)


@dataclass(eq=False)
class _Table:
    """One table page: its VRAM offset, level, shadow entries, child tables by index and the count of live entries."""
    offset: int
    level: int
    entries: list[int] = field(default_factory=lambda: [0] * ENTRIES)
    children: dict[int, "_Table"] = field(default_factory=dict)
    live: int = 0


@dataclass(frozen=True)
class Mapping:
    """One map() call's range: VA, size, physical/bus address, the map flags and MTYPE."""
    va: int
    size: int
    phys: int
    flags: int
    mtype: int
    fragments: bool = True

    @property
    def end(self) -> int:
        return self.va + self.size


class _Hub:
    """One VM hub's registers by their generated names: prefix "MM" (MMHUB: MMMC_VM_*, MMVM_*) or "GC" (GFXHUB)."""

    def __init__(self, regs: Any, name: str):
        self.regs, self.name = regs, name
        self.block = "MMHUB" if name == "MM" else "GC"

    def reg(self, name: str) -> Reg:
        return self.regs.reg(self.block, f"{self.name}{name}")

    def read(self, name: str) -> int:
        return self.regs.read(self.reg(name))

    def write(self, name: str, value: int) -> None:
        self.regs.write(self.reg(name), value)

    def update(self, name: str, **fields: int) -> int:
        return self.regs.update(self.reg(name), **fields)

    def encode(self, name: str, value: int = 0, **fields: int) -> int:
        return self.reg(name).encode(value, **fields)

    def write_pair(self, name: str, lo: str, hi: str, value: int) -> None:
        self.regs.write_regs([(self.reg(name + lo), value & 0xFFFFFFFF), (self.reg(name + hi), value >> 32)])


class GMC:
    """The memory controller of one AM device: the hubs, the process VM (one 4-level page table) and TLB flushes.

    `init(dev)` reads the FB location, sets up the table pool, the root table and the default pages and enables the
    MMHUB (gmc_v11_0_hw_init); the GFX block calls `gfxhub_enable()` (gfx_v11_0_gfxhub_enable) once GC is powered.
    `map(va, phys, size, flags)` / `unmap(va, size)` edit the tables and flush the TLBs; `walk(va)` reads VRAM back.
    `table_pool` is (VRAM offset, size) for the table pages (default DEFAULT_POOL); `flush_hdp` a callable flushing
    the HDP write path (default: dev.nbio.flush_hdp when the device has an NBIO block); `tlb_timeout` bounds each
    invalidation wait (amdgpu's 100 ms). After init: fb_start, fb_end, vram_base_offset, root (VRAM offset).
    """

    def __init__(self, *, vmid: int = 0, table_pool: Optional[tuple[int, int]] = None,
                 flush_hdp: Optional[Callable[[], None]] = None, tlb_timeout: float = USEC_TIMEOUT_S):
        if not 0 <= vmid < 16:
            raise GMCError(f"vmid {vmid} is not a VM context (0..15)")
        self.vmid, self.tlb_timeout = vmid, tlb_timeout
        self._pool_spec = table_pool or DEFAULT_POOL
        self._flush_hdp = flush_hdp
        self.dev: Any = None
        self.layout: Optional[PTELayout] = None
        self.pool: Optional[TablePool] = None
        self.root: Optional[_Table] = None
        self.hubs: dict[str, _Hub] = {}
        self.hub_enabled = {"MM": False, "GC": False}
        self.fb_start = self.fb_end = self.vram_base_offset = 0
        self.vram_size = 0
        self.scratch = 0  # VRAM offset of the system-aperture default page
        self.dummy: Optional[DMABuffer] = None
        self.flushes = 0
        self._mappings: dict[int, Mapping] = {}
        self._starts: list[int] = []
        self._pending_free: list[int] = []
        self._lock = threading.RLock()  # amdgpu's gmc.invalidate_lock, widened to cover table edits

    # --- life cycle ---
    def init(self, dev: Any) -> "GMC":
        """Read the FB location, make the root table and default pages, enable the MMHUB and flush its TLB."""
        self.dev = dev
        major = dev.discovery.version("GC")[0]
        if major not in LAYOUTS:
            raise GMCError(f"{dev.bdf}: GC {major}.x has no page-table layout here (gfx11 and gfx12 are supported)")
        self.layout = LAYOUTS[major]
        self.vram_size = dev.vram_size
        self.hubs = {"MM": _Hub(dev.regs, "MM"), "GC": _Hub(dev.regs, "GC")}
        if self._flush_hdp is None:
            nbio = getattr(dev, "nbio", None)
            self._flush_hdp = getattr(nbio, "flush_hdp", None)
        mm = self.hubs["MM"]
        # gmc_v11_0_vram_gtt_location: mmhub get_fb_location / get_mc_fb_offset; amdgpu_gmc_vram_location
        self.fb_start = (mm.read("MC_VM_FB_LOCATION_BASE") & FB_LOCATION_MASK) << 24
        self.fb_end = self.fb_start + self.vram_size - 1
        self.vram_base_offset = mm.read("MC_VM_FB_OFFSET") << 24
        base, size = self._pool_spec
        if base + size > self.vram_size:
            raise GMCError(f"{dev.bdf}: the page-table pool ({size:#x} bytes at {base:#x}) ends past VRAM "
                           f"({self.vram_size:#x} bytes)")
        self.pool = TablePool(base, size, self._zero_page)
        self.root = _Table(self.pool.alloc(), PDB2)
        self.scratch = self.pool.alloc()
        self.dummy = dev.pci.dma_alloc(PAGE)  # amdgpu_device_dummy_page_init: one system page
        self._hub_enable("MM")
        return self

    def gfxhub_enable(self) -> None:
        """Program and enable the GFXHUB (gfx_v11_0_gfxhub_enable / gfx_v12_0): the GFX block calls this in its hw
        init, once GC is powered; until then flushes skip the GFXHUB as gmc_v11_0_flush_gpu_tlb does."""
        self._hub_enable("GC")

    def _hub_enable(self, hub_name: str) -> None:
        hub = self.hubs[hub_name]
        self._gart_enable(hub)
        self.flush_hdp()  # gmc_v11_0_gart_enable: "Flush HDP after it is initialized"
        self._set_fault_enable_default(hub, True)  # amdgpu_vm_fault_stop defaults to never stop
        self._set_vm_fault_masks(hub, True)  # gmc_v11_0_vm_fault_interrupt_state(ENABLE) at late init
        self.hub_enabled[hub_name] = True
        self._flush_hub(hub, 0, 0)
        if self.vmid:
            self._flush_hub(hub, self.vmid, 0)

    def fini(self) -> None:
        """Disable both hubs (gmc_v11_0_gart_disable / gfxhub gart_disable) and release the dummy page. The tables stay
        in VRAM (a later process starts a fresh VM)."""
        if self.dev is None:
            return
        for name in ("GC", "MM"):
            if self.hub_enabled[name]:
                self._gart_disable(self.hubs[name])
                self.hub_enabled[name] = False
        if self.dummy is not None:
            self.dev.pci.dma_free(self.dummy)
            self.dummy = None

    def suspend(self) -> None:
        """gart_disable on both hubs; the tables and mappings stay (resume() enables the hubs again)."""
        for name in ("GC", "MM"):
            if self.hub_enabled[name]:
                self._gart_disable(self.hubs[name])

    def resume(self) -> None:
        """Enable the hubs that were enabled before suspend(), with the same root table."""
        for name in ("MM", "GC"):
            if self.hub_enabled[name]:
                self._hub_enable(name)

    # --- addresses ---
    def mc_address(self, vram_offset: int) -> int:
        """The MC address of a VRAM offset, as engines in VMID 0 reach it through the system aperture."""
        return self.fb_start + vram_offset

    def vram_pa(self, vram_offset: int) -> int:
        """The physical address page-table entries hold for a VRAM offset (amdgpu_gmc_vram_mc2pa)."""
        return self.vram_base_offset + vram_offset

    @property
    def root_pa(self) -> int:
        assert self.root is not None
        return self.vram_pa(self.root.offset)

    # --- hub programming (gfxhub_v3_0.c / mmhub_v3_0.c gart_enable, same order) ---
    def _gart_enable(self, hub: _Hub) -> None:
        h = hub.name
        # init_gart_aperture_regs: context 0 base/start/end (here the 4-level process VM, see module docstring)
        hub.write_pair("VM_CONTEXT0_PAGE_TABLE_BASE_ADDR", "_LO32", "_HI32", self.root_pa | PTE_VALID)
        hub.write_pair("VM_CONTEXT0_PAGE_TABLE_START_ADDR", "_LO32", "_HI32", 0)
        hub.write_pair("VM_CONTEXT0_PAGE_TABLE_END_ADDR", "_LO32", "_HI32", MAX_PFN - 1)
        # init_system_aperture_regs: AGP off (amdgpu_gmc_set_agp_default), system aperture = FB, default pages
        hub.write("MC_VM_AGP_BASE", 0)
        hub.write("MC_VM_AGP_BOT", 0xFFFFFFFFFFFF >> 24)
        hub.write("MC_VM_AGP_TOP", 0)
        hub.write("MC_VM_SYSTEM_APERTURE_LOW_ADDR", min(self.fb_start, 0xFFFFFFFFFFFF) >> 18)
        hub.write("MC_VM_SYSTEM_APERTURE_HIGH_ADDR", max(self.fb_end, 0) >> 18)
        hub.write_pair("MC_VM_SYSTEM_APERTURE_DEFAULT_ADDR", "_LSB", "_MSB", self.vram_pa(self.scratch) >> 12)
        assert self.dummy is not None
        hub.write_pair("VM_L2_PROTECTION_FAULT_DEFAULT_ADDR", "_LO32", "_HI32", self.dummy.bus_pages[0] >> 12)
        hub.update("VM_L2_PROTECTION_FAULT_CNTL2", ACTIVE_PAGE_MIGRATION_PTE_READ_RETRY=1)
        # init_tlb_regs
        hub.update("MC_VM_MX_L1_TLB_CNTL", ENABLE_L1_TLB=1, SYSTEM_ACCESS_MODE=3, ENABLE_ADVANCED_DRIVER_MODEL=1,
                   SYSTEM_APERTURE_UNMAPPED_ACCESS=0, ECO_BITS=0, MTYPE=MTYPE_UC)
        # init_cache_regs (translate_further is false from gfx10 on: BANK_SELECT 9, BIGK 6)
        hub.update("VM_L2_CNTL", ENABLE_L2_CACHE=1, ENABLE_L2_FRAGMENT_PROCESSING=0,
                   ENABLE_DEFAULT_PAGE_OUT_TO_SYSTEM_MEMORY=1, L2_PDE0_CACHE_TAG_GENERATION_MODE=0,
                   PDE_FAULT_CLASSIFICATION=0, CONTEXT1_IDENTITY_ACCESS_MODE=1, IDENTITY_MODE_FRAGMENT_SIZE=0)
        hub.update("VM_L2_CNTL2", INVALIDATE_ALL_L1_TLBS=1, INVALIDATE_L2_CACHE=1)
        hub.write("VM_L2_CNTL3", hub.encode("VM_L2_CNTL3", L2_CNTL3_DEFAULT[h], BANK_SELECT=9,
                                            L2_CACHE_BIGK_FRAGMENT_SIZE=6))
        hub.write("VM_L2_CNTL4", hub.encode("VM_L2_CNTL4", L2_CNTL4_DEFAULT, VMC_TAP_PDE_REQUEST_PHYSICAL=0,
                                            VMC_TAP_PTE_REQUEST_PHYSICAL=0))
        hub.write("VM_L2_CNTL5", hub.encode("VM_L2_CNTL5", L2_CNTL5_DEFAULT, L2_CACHE_SMALLK_FRAGMENT_SIZE=0))
        # enable_system_domain: context 0 on (depth 3 here, amdgpu's GART uses 0), no retry
        hub.update("VM_CONTEXT0_CNTL", ENABLE_CONTEXT=1, PAGE_TABLE_DEPTH=PAGE_TABLE_DEPTH, PAGE_TABLE_BLOCK_SIZE=0,
                   RETRY_PERMISSION_OR_INVALID_PAGE_FAULT=0,
                   **{f"{b}_PROTECTION_FAULT_ENABLE_DEFAULT": 1 for b in FAULT_BITS})
        # disable_identity_aperture
        hub.write_pair("VM_L2_CONTEXT1_IDENTITY_APERTURE_LOW_ADDR", "_LO32", "_HI32", 0xF_FFFF_FFFF)
        hub.write_pair("VM_L2_CONTEXT1_IDENTITY_APERTURE_HIGH_ADDR", "_LO32", "_HI32", 0)
        hub.write_pair("VM_L2_CONTEXT_IDENTITY_PHYSICAL_OFFSET", "_LO32", "_HI32", 0)
        # setup_vmid_config: contexts 1..15 (block_size 9 -> PAGE_TABLE_BLOCK_SIZE 0; amdgpu_noretry -> no retry)
        for i in range(1, 16):
            hub.update(f"VM_CONTEXT{i}_CNTL", ENABLE_CONTEXT=1, PAGE_TABLE_DEPTH=PAGE_TABLE_DEPTH,
                       PAGE_TABLE_BLOCK_SIZE=0, RETRY_PERMISSION_OR_INVALID_PAGE_FAULT=0,
                       **{f"{b}_PROTECTION_FAULT_ENABLE_DEFAULT": 1 for b in FAULT_BITS})
            hub.write_pair(f"VM_CONTEXT{i}_PAGE_TABLE_START_ADDR", "_LO32", "_HI32", 0)
            hub.write_pair(f"VM_CONTEXT{i}_PAGE_TABLE_END_ADDR", "_LO32", "_HI32", MAX_PFN - 1)
            hub.write_pair(f"VM_CONTEXT{i}_PAGE_TABLE_BASE_ADDR", "_LO32", "_HI32", self.root_pa | PTE_VALID)
        # program_invalidation: every engine invalidates the whole range
        for eng in range(18):
            hub.write(f"VM_INVALIDATE_ENG{eng}_ADDR_RANGE_LO32", 0xFFFFFFFF)
            hub.write(f"VM_INVALIDATE_ENG{eng}_ADDR_RANGE_HI32", 0x1F)

    def _set_fault_enable_default(self, hub: _Hub, value: bool) -> None:
        if hub.name == "GC":  # gfxhub_v3_0_set_fault_enable_default: "NO halt CP when page fault"
            self.dev.regs.update(self.dev.regs.reg("GC", "CP_DEBUG"), CPG_UTCL1_ERROR_HALT_DISABLE=1)
        fields = {f"{b}_PROTECTION_FAULT_ENABLE_DEFAULT": int(value) for b in
                  ("RANGE", "PDE0", "PDE1", "PDE2", "TRANSLATE_FURTHER", "NACK", "DUMMY_PAGE", "VALID", "READ",
                   "WRITE", "EXECUTE")}
        if not value:
            fields.update(CRASH_ON_NO_RETRY_FAULT=1, CRASH_ON_RETRY_FAULT=1)
        hub.update("VM_L2_PROTECTION_FAULT_CNTL", **fields)

    def _set_vm_fault_masks(self, hub: _Hub, enable: bool) -> None:
        # amdgpu_gmc_set_vm_fault_masks: the *_ENABLE_INTERRUPT bits on all 16 contexts
        for i in range(16):
            hub.update(f"VM_CONTEXT{i}_CNTL", **{f"{b}_PROTECTION_FAULT_ENABLE_INTERRUPT": int(enable)
                                                  for b in FAULT_BITS})

    def _gart_disable(self, hub: _Hub) -> None:
        # mmhub_v3_0_gart_disable / gfxhub_v3_0_gart_disable
        for i in range(16):
            hub.write(f"VM_CONTEXT{i}_CNTL", 0)
        hub.update("MC_VM_MX_L1_TLB_CNTL", ENABLE_L1_TLB=0, ENABLE_ADVANCED_DRIVER_MODEL=0)
        hub.update("VM_L2_CNTL", ENABLE_L2_CACHE=0)
        hub.write("VM_L2_CNTL3", 0)

    # --- TLB ---
    def flush_hdp(self) -> None:
        """Make CPU writes through BAR0 visible to the GPU (amdgpu_device_flush_hdp); the NBIO block provides it."""
        if self._flush_hdp is not None:
            self._flush_hdp()

    def flush_tlb(self, vmid: Optional[int] = None, flush_type: int = 0) -> None:
        """Invalidate `vmid`'s (default: this GMC's) translations on every enabled hub, then release table pages that
        unmap() freed (they are reused only once no TLB can still reach them)."""
        with self._lock:
            self.flush_hdp()  # gmc_v11_0_flush_gpu_tlb: flush hdp cache first
            for name in ("GC", "MM"):
                if self.hub_enabled[name]:
                    self._flush_hub(self.hubs[name], self.vmid if vmid is None else vmid, flush_type)
            self.flushes += 1
            for off in self._pending_free:
                assert self.pool is not None
                self.pool.free(off)
            self._pending_free.clear()

    def _flush_hub(self, hub: _Hub, vmid: int, flush_type: int) -> None:
        """gmc_v11_0_flush_gpu_tlb's MMIO path on engine 17 (KIQ/MES are not used for this)."""
        eng = f"VM_INVALIDATE_ENG{INVALIDATE_ENGINE}"
        use_semaphore = hub.name == "MM"  # gmc_v11_0_use_invalidate_semaphore: MMHUB only (bare metal)
        if use_semaphore:
            self._wait(hub, f"{eng}_SEM", 1, "acquire the invalidation semaphore (a read of 1 means acquired)")
        # gfxhub_v3_0_get_invalidate_req (mmhub_v4_1_0 forces FLUSH_TYPE 0: "Only use legacy inv on mmhub side")
        if hub.name == "MM" and self.layout is not None and self.layout.gen >= 12:
            flush_type = 0
        req = hub.encode(f"{eng}_REQ", PER_VMID_INVALIDATE_REQ=1 << vmid, FLUSH_TYPE=flush_type,
                         INVALIDATE_L2_PTES=1, INVALIDATE_L2_PDE0=1, INVALIDATE_L2_PDE1=1, INVALIDATE_L2_PDE2=1,
                         INVALIDATE_L1_PTES=1, CLEAR_PROTECTION_FAULT_STATUS_ADDR=0)
        hub.write(f"{eng}_REQ", req)
        try:
            self._wait(hub, f"{eng}_ACK", 1 << vmid, f"acknowledge the TLB invalidation of VMID {vmid} "
                                                     f"(REQ {req:#010x})")
        finally:
            if use_semaphore:
                hub.write(f"{eng}_SEM", 0)  # write 0 releases the semaphore
        if hub.name == "MM":  # "Issue additional private vm invalidation to MMHUB", read back to ensure it is done
            cid2 = hub.reg("VM_L2_BANK_SELECT_RESERVED_CID2")
            self.dev.regs.write(cid2, self.dev.regs.read(cid2) | RESERVED_CACHE_PRIVATE_INVALIDATION)
            self.dev.regs.read(cid2)

    def _wait(self, hub: _Hub, name: str, mask: int, what: str) -> None:
        reg = hub.reg(name)
        deadline = time.monotonic() + self.tlb_timeout
        while True:
            value = self.dev.regs.read(reg)
            if value & mask:
                return
            if time.monotonic() >= deadline:
                raise GMCError(f"{self.dev.bdf}: the {hub.block} hub did not {what}: {reg} read {value:#010x}, "
                               f"bit mask {mask:#x} still clear after {self.tlb_timeout * 1e3:.0f} ms. The VM hub is "
                               f"hung or not powered (GC must be up before gfxhub_enable); the page tables are "
                               f"written but the TLB may still hold old translations — reset the GPU")

    # --- page tables ---
    def _check_range(self, va: int, size: int, what: str) -> None:
        if size <= 0 or va % PAGE or size % PAGE:
            raise GMCError(f"{what} of {size:#x} bytes at VA {va:#x}: VA and size must be non-zero multiples of "
                           f"4 KiB")
        if va < 0 or va + size > 1 << VA_BITS:
            raise GMCError(f"{what} of {size:#x} bytes at VA {va:#x} leaves the 48-bit VA space (0 .. {1 << VA_BITS:#x}"
                           f"); pass addresses above the hole with their sign extension removed (& (1 << 48) - 1)")
        if self.root is None:
            raise GMCError(f"{what}: the GMC is not initialised (call init(dev) first)")

    def _overlapping(self, va: int, end: int) -> list[Mapping]:
        """The mappings meeting [va, end), by VA (mappings never overlap each other)."""
        j = max(bisect_right(self._starts, va) - 1, 0)
        out = []
        while j < len(self._starts) and self._starts[j] < end:
            m = self._mappings[self._starts[j]]
            if m.end > va:
                out.append(m)
            j += 1
        return out

    def map(self, va: int, phys: int, size: int, flags: int = DEFAULT_FLAGS, *, mtype: int = MTYPE_NC,
            fragments: bool = True, flush: bool = True) -> Mapping:
        """Map [va, va + size) to VRAM offset `phys` (or, with PTE_SYSTEM in `flags`, to bus address `phys`; add
        PTE_SNOOPED for cached system memory). `flags` are PTE_READABLE / PTE_WRITEABLE / PTE_EXECUTABLE / PTE_SYSTEM /
        PTE_SNOOPED / PTE_TMZ; `mtype` MTYPE_NC (amdgpu's default) or MTYPE_UC (uncached) etc. Fragments and huge
        pages are used where VA and phys alignment allow (`fragments=False`: 4 KiB entries with FRAG 0, as amdgpu
        does for scattered system pages). The range must be free. Flushes the TLB unless flush=False."""
        with self._lock:
            self._check_range(va, size, "map")
            if flags & ~MAP_FLAGS:
                raise GMCError(f"map at VA {va:#x}: flags {flags:#x} has bits outside the map flags {MAP_FLAGS:#x} "
                               f"(VALID, FRAG, MTYPE and the PDE bits are set by GMC)")
            assert self.layout is not None
            if not 0 <= mtype <= self.layout.mtype_mask >> self.layout.mtype_shift:
                raise GMCError(f"map at VA {va:#x}: MTYPE {mtype} does not fit the gfx{self.layout.gen} PTE field")
            if phys < 0 or phys % PAGE:
                raise GMCError(f"map at VA {va:#x}: physical address {phys:#x} is not 4 KiB aligned")
            if flags & PTE_SYSTEM:
                if phys + size > 1 << VA_BITS:
                    raise GMCError(f"map at VA {va:#x}: bus address range {phys:#x}+{size:#x} does not fit the PTE's "
                                   f"48-bit address field")
            elif phys + size > self.vram_size:
                raise GMCError(f"map at VA {va:#x}: VRAM range {phys:#x}+{size:#x} ends past VRAM "
                               f"({self.vram_size:#x} bytes); set PTE_SYSTEM for system memory")
            if va <= self.fb_end and self.fb_start < va + size:
                raise GMCError(f"map of {size:#x} bytes at VA {va:#x} overlaps the system aperture "
                               f"[{self.fb_start:#x}, {self.fb_end:#x}]: VMID 0 reaches VRAM there physically, so "
                               f"those VAs never walk the page table; choose a VA outside it")
            clash = self._overlapping(va, va + size)
            if clash:
                c = clash[0]
                raise GMCError(f"map of {size:#x} bytes at VA {va:#x} overlaps the mapping of {c.size:#x} bytes at VA "
                               f"{c.va:#x}; unmap it first")
            m = Mapping(va, size, phys, flags, mtype, fragments)
            pa = phys if flags & PTE_SYSTEM else self.vram_pa(phys)
            self._write_range(va, pa, size, flags, mtype, fragments)
            self._mappings[va] = m
            insort(self._starts, va)
            if flush:
                self.flush_tlb()
            return m

    def unmap(self, va: int, size: int, *, flush: bool = True) -> None:
        """Unmap [va, va + size): every page of it must be mapped. Parts of mappings that stay are re-written with
        their own fragments; emptied tables are freed after the TLB flush."""
        with self._lock:
            self._check_range(va, size, "unmap")
            end = va + size
            hit = self._overlapping(va, end)
            covered = va
            for m in hit:
                if m.va > covered:
                    break
                covered = max(covered, m.end)
            if covered < end:
                raise GMCError(f"unmap of {size:#x} bytes at VA {va:#x}: VA {covered:#x} is not mapped (unmapped "
                               f"twice, or never mapped)")
            for m in hit:
                self._clear_range(m.va, m.size)
                del self._mappings[m.va]
                self._starts.remove(m.va)
            for m in hit:  # what stays of each mapping, fragments recomputed for the shorter runs
                keep = [(m.va, min(m.end, va))] if m.va < va else []
                keep += [(max(m.va, end), m.end)] if m.end > end else []
                for s, e in keep:
                    piece = Mapping(s, e - s, m.phys + (s - m.va), m.flags, m.mtype, m.fragments)
                    pa = piece.phys if piece.flags & PTE_SYSTEM else self.vram_pa(piece.phys)
                    self._write_range(s, pa, e - s, m.flags, m.mtype, m.fragments)
                    self._mappings[s] = piece
                    insort(self._starts, s)
            self._prune(self.root, 0)
            if flush:
                self.flush_tlb()

    def mappings(self) -> list[Mapping]:
        """The live mappings, by VA."""
        return [self._mappings[s] for s in self._starts]

    def _runs(self, va: int, pa: int, size: int, fragments: bool) -> Iterable[tuple[int, int, int, int]]:
        """(va, pa, pages, frag) runs: amdgpu_vm_pte_fragment, with physical alignment too (the TLB assumes a
        fragment is contiguous and aligned in both spaces)."""
        vp, pp, n = va >> 12, pa >> 12, size >> 12
        while n:
            frag = min(_ctz(vp), _ctz(pp), n.bit_length() - 1, MAX_FRAG) if fragments else 0
            pages = 1 << frag
            yield vp << 12, pp << 12, pages, frag
            vp, pp, n = vp + pages, pp + pages, n - pages

    def _write_range(self, va: int, pa: int, size: int, flags: int, mtype: int, fragments: bool) -> None:
        assert self.layout is not None and self.root is not None
        dirty: dict[_Table, list[int]] = {}
        for rva, rpa, pages, frag in self._runs(va, pa, size, fragments):
            level = next((lv for lv in HUGE_LEVELS if frag >= LEVEL_SHIFT[lv]), PTB)
            step = 1 << LEVEL_SHIFT[level]
            for k in range(pages // step):
                eva, epa = rva + (k * step << 12), rpa + (k * step << 12)
                table = self._table_for(eva, level)
                idx = (eva >> 12 >> LEVEL_SHIFT[level]) & (ENTRIES - 1)
                if table.entries[idx]:
                    raise GMCError(f"internal: entry {LEVEL_NAMES[level]}[{idx}] for VA {eva:#x} is in use "
                                   f"({table.entries[idx]:#018x})")
                table.entries[idx] = self.layout.pte(epa, flags, mtype, frag, level)
                table.live += 1
                dirty.setdefault(table, []).append(idx)
        for table, idxs in dirty.items():
            self._flush_entries(table, idxs)

    def _table_for(self, va: int, level: int) -> _Table:
        """The table at `level` covering `va`, allocating directories on the way (child written before its PDE)."""
        assert self.root is not None and self.pool is not None and self.layout is not None
        t = self.root
        for lv in range(PDB2, level):
            idx = (va >> 12 >> LEVEL_SHIFT[lv]) & (ENTRIES - 1)
            child = t.children.get(idx)
            if child is None:
                if t.entries[idx]:
                    raise GMCError(f"internal: {LEVEL_NAMES[lv]}[{idx}] for VA {va:#x} holds a huge page")
                child = _Table(self.pool.alloc(), lv + 1)
                t.children[idx] = child
                t.entries[idx] = self.layout.pde(self.vram_pa(child.offset))
                t.live += 1
                self._flush_entries(t, [idx])
            t = child
        return t

    def _clear_range(self, va: int, size: int) -> None:
        """Zero the leaf entries covering [va, va + size) (tables are freed later by _prune)."""
        assert self.root is not None and self.layout is not None
        pos, end = va, va + size
        dirty: dict[_Table, list[int]] = {}
        while pos < end:
            t, lv = self.root, PDB2
            while True:
                idx = (pos >> 12 >> LEVEL_SHIFT[lv]) & (ENTRIES - 1)
                e = t.entries[idx]
                if lv == PTB or (e and self.layout.is_leaf(e, lv)):
                    if not e:
                        raise GMCError(f"internal: VA {pos:#x} is recorded as mapped but its PTE is empty")
                    t.entries[idx] = 0
                    t.live -= 1
                    dirty.setdefault(t, []).append(idx)
                    pos += PAGE << LEVEL_SHIFT[lv]
                    break
                if idx not in t.children:
                    raise GMCError(f"internal: VA {pos:#x} is recorded as mapped but {LEVEL_NAMES[lv]}[{idx}] is empty")
                t, lv = t.children[idx], lv + 1
        for table, idxs in dirty.items():
            self._flush_entries(table, idxs)

    def _prune(self, t: Optional[_Table], depth: int) -> None:
        """Free tables that hold nothing, clearing their PDE first; the pages return to the pool after the flush."""
        if t is None:
            return
        for idx, child in list(t.children.items()):
            self._prune(child, depth + 1)
            if child.live == 0:
                del t.children[idx]
                t.entries[idx] = 0
                t.live -= 1
                self._flush_entries(t, [idx])
                self._pending_free.append(child.offset)

    def _flush_entries(self, table: _Table, idxs: list[int]) -> None:
        """Write changed entries to VRAM, one write per contiguous run."""
        idxs = sorted(set(idxs))
        start = prev = idxs[0]
        for i in idxs[1:] + [None]:
            if i is not None and i == prev + 1:
                prev = i
                continue
            data = b"".join(e.to_bytes(8, "little") for e in table.entries[start:prev + 1])
            self._vram_write(table.offset + start * 8, data)
            if i is not None:
                start = prev = i

    # --- VRAM access ---
    def _vram_write(self, off: int, data: bytes) -> None:
        vram = self.dev.vram
        if vram is not None and off + len(data) <= vram.size:
            vram.write(off, data)
        else:  # beyond BAR0: MM_INDEX/MM_DATA (amdgpu_device_mm_access)
            self.dev.regs.vram_write(off, data)

    def _vram_read(self, off: int, size: int) -> bytes:
        vram = self.dev.vram
        if vram is not None and off + size <= vram.size:
            return vram.read(off, size)
        return self.dev.regs.vram_read(off, size)

    def _zero_page(self, off: int) -> None:
        self._vram_write(off, bytes(PAGE))

    # --- debugging ---
    def walk(self, va: int) -> Optional[dict[str, Any]]:
        """Translate `va` by reading the tables back from VRAM: {va, phys (VRAM offset or bus address), system,
        level, entry, frag, page_size, path} or None when unmapped. For debugging; tests use their own walk."""
        assert self.layout is not None and self.root is not None
        pa = self.root_pa
        path = []
        for lv in range(PDB2, PTB + 1):
            idx = (va >> 12 >> LEVEL_SHIFT[lv]) & (ENTRIES - 1)
            off = pa - self.vram_base_offset + idx * 8
            e = int.from_bytes(self._vram_read(off, 8), "little")
            path.append((LEVEL_NAMES[lv], idx, e))
            if not e & PTE_VALID:
                return None
            if self.layout.is_leaf(e, lv):
                size = PAGE << LEVEL_SHIFT[lv]
                addr = (e & ADDR_MASK) + (va & (size - 1))
                system = bool(e & PTE_SYSTEM)
                return dict(va=va, phys=addr if system else addr - self.vram_base_offset, system=system,
                            level=LEVEL_NAMES[lv], entry=e, frag=(e & PTE_FRAG_MASK) >> PTE_FRAG_SHIFT,
                            page_size=size, path=path)
            pa = e & ADDR_MASK
        return None

    def fault_status(self, hub: str = "GC") -> dict[str, Any]:
        """The hub's L2 protection fault status and address (gfxhub_v3_0_print_l2_protection_fault_status)."""
        h = self.hubs[hub]
        name = "VM_L2_PROTECTION_FAULT_STATUS" + ("_LO32" if self.layout is not None and self.layout.gen >= 12 else "")
        reg = h.reg(name)
        status = self.dev.regs.read(reg)
        lo, hi = h.read("VM_L2_PROTECTION_FAULT_ADDR_LO32"), h.read("VM_L2_PROTECTION_FAULT_ADDR_HI32")
        out: dict[str, Any] = dict(status=status, addr=((hi & 0xF) << 44) | (lo << 12))
        for f in ("CID", "MORE_FAULTS", "WALKER_ERROR", "PERMISSION_FAULTS", "MAPPING_ERROR", "RW"):
            out[f.lower()] = reg.get(status, f)
        return out


__all__ = ["DEFAULT_FLAGS", "DEFAULT_POOL", "GMC", "GMCError", "LAYOUTS", "LEVEL_SHIFT", "MTYPE_CC", "MTYPE_NC",
           "MTYPE_UC", "MTYPE_WC", "Mapping", "PDE_PTE_GFX11", "PDE_PTE_GFX12", "PTE_EXECUTABLE", "PTE_READABLE",
           "PTE_SNOOPED", "PTE_SYSTEM", "PTE_TMZ", "PTE_VALID", "PTE_WRITEABLE", "PTELayout", "TablePool"]
