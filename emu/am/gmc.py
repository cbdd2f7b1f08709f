"""The emulated GPU memory controller's address translation: the GFX hub (GCVM/GCMC_VM) and the MM hub (MMVM/MMMC_VM).

What the kernel programs and this model answers to (linux-source-6.12, drivers/gpu/drm/amd/amdgpu):
- gfxhub_v3_0.c / gfxhub_v12_0.c and mmhub_v3_0.c / mmhub_v4_1_0.c `*_gart_enable`: the FB location and offset
  ({GC,MM}MC_VM_FB_LOCATION_BASE/TOP, FB_OFFSET, in 16 MiB units), the AGP window (AGP_BASE/BOT/TOP, 16 MiB units),
  the system aperture (SYSTEM_APERTURE_LOW/HIGH_ADDR in 256 KiB units, DEFAULT_ADDR_LSB/MSB), the protection fault
  default page (L2_PROTECTION_FAULT_DEFAULT_ADDR_LO32/HI32), the L2 and L1 TLB controls, and per VM context (16 of
  them) {GC,MM}VM_CONTEXTn_CNTL (ENABLE_CONTEXT, PAGE_TABLE_DEPTH, PAGE_TABLE_BLOCK_SIZE, the *_PROTECTION_FAULT_
  ENABLE_INTERRUPT/_DEFAULT bits, RETRY_PERMISSION_OR_INVALID_PAGE_FAULT), PAGE_TABLE_BASE_ADDR_LO32/HI32 (a PDE:
  amdgpu_gmc_pd_addr = address | AMDGPU_PTE_VALID), PAGE_TABLE_START/END_ADDR_LO32/HI32 (page numbers).
- gmc_v11_0.c / gmc_v12_0.c `flush_gpu_tlb`: {GC,MM}VM_INVALIDATE_ENGn_SEM (a read returning 1 acquires it, a write
  of 0 releases it), _REQ (PER_VMID_INVALIDATE_REQ, FLUSH_TYPE, INVALIDATE_L2_PTES/PDE0/PDE1/PDE2, INVALIDATE_L1_PTES)
  and the kernel polling _ACK for `1 << vmid`; gmc_v11_0_process_interrupt reads L2_PROTECTION_FAULT_STATUS and
  writes 1 to L2_PROTECTION_FAULT_CNTL bit 0 (CLEAR_PROTECTION_FAULT_STATUS_ADDR).
- The page-table format: amdgpu_vm.h AMDGPU_PTE_* / AMDGPU_PDE_* and the PTE/PDE format comments above
  gmc_v11_0_map_mtype / gmc_v12_0_map_mtype. amdgpu_vm_adjust_size(adev, 256 * 1024, 9, 3, 48) in gmc_v11_0_sw_init /
  gmc_v12_0_sw_init: 48-bit VA, block size 9, PAGE_TABLE_DEPTH 3 = PDB2 -> PDB1 -> PDB0 -> PTB.

`walk(vmid, va, write)` translates the way a hub does on a TLB miss: VMID 0 first tries the system aperture (FB and
AGP windows, else the default page); otherwise the context must be enabled, the page inside START..END, and the
walk goes from the base PDE through every level, reading each 8-byte entry from VRAM (SYSTEM clear: a physical VRAM
address, FB_OFFSET << 24 being VRAM offset 0) or from system memory by bus address through the PCI function's DMA
(SYSTEM set). A PDE with the "PDE as PTE" bit (bit 54 on GFX11, bit 63 on GFX12) ends the walk as a huge page.
The result is ("vram", VRAM offset) or ("system", bus address).

TLB model (strict, as hardware): a completed walk fills an L1 and an L2 leaf TLB (one entry per PTE fragment:
2^(12 + FRAGMENT) bytes, the fragment trusted to be contiguous as hardware trusts it) and a PDE cache per directory
level. Nothing is dropped when page tables in memory change, nor when the base or context registers are rewritten;
only a completed invalidation request (REQ: L1_PTES, L2_PTES, L2_PDE0/1/2 for the VMIDs in PER_VMID_INVALIDATE_REQ) or
L2_CNTL2 INVALIDATE_ALL_L1_TLBS / INVALIDATE_L2_CACHE drops entries. So a driver that forgets to invalidate keeps
seeing the old mapping.

Faults (invalid PDE, invalid PTE, read/write/execute permission, outside START..END, a disabled context, an entry
that points outside VRAM or at unreachable system memory) append a `VMFaultRecord` to `card.vm_faults` (the IH
model will turn them into interrupt entries), latch L2_PROTECTION_FAULT_STATUS/ADDR the first time (MORE_FAULTS
after), and raise `VMFault`; the record says whether the context asked for an interrupt and whether the access is
redirected to the default page.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Any, Optional

from emu.am.regs import MASK32, Register

# amdgpu_vm.h: PTE and PDE bits (GFX11 and GFX12 share bits 0..11; the rest differ, see Layout).
PTE_VALID = 1 << 0       # AMDGPU_PTE_VALID
PTE_SYSTEM = 1 << 1      # AMDGPU_PTE_SYSTEM: the address is a system (bus) address, not VRAM
PTE_SNOOPED = 1 << 2     # AMDGPU_PTE_SNOOPED
PTE_TMZ = 1 << 3         # AMDGPU_PTE_TMZ
PTE_EXECUTABLE = 1 << 4  # AMDGPU_PTE_EXECUTABLE
PTE_READABLE = 1 << 5    # AMDGPU_PTE_READABLE
PTE_WRITEABLE = 1 << 6   # AMDGPU_PTE_WRITEABLE
PTE_FRAG_SHIFT = 7       # AMDGPU_PTE_FRAG(x): ((x & 0x1f) << 7)
PTE_ADDR_MASK = 0x0000_FFFF_FFFF_F000  # gmc_v11_0.c / gmc_v12_0.c PTE format: 47:12 4k physical page base address
PDE_ADDR_MASK = 0x0000_FFFF_FFFF_FFC0  # PDE format: 47:6 physical base address of PD or PTE

VA_BITS = 48  # amdgpu_vm_adjust_size(adev, 256 * 1024, 9, 3, 48): 48-bit VA
NUM_VMIDS = 16
NUM_ENGINES = 18  # gfxhub_v3_0_program_invalidation: `for (i = 0 ; i < 18; ++i)`
LEVEL_NAMES = ("PDB2", "PDB1", "PDB0", "PTB")  # amdgpu_vm.h enum amdgpu_vm_level: AMDGPU_VM_PDB2 .. AMDGPU_VM_PTB
PAGE = 4096
DEFAULT_FB_BASE = 0x8000 << 24  # where the VBIOS posts VRAM in the MC space on Navi3x/Navi4x (dmesg "VRAM: ... 0x8000000000")

# L2_PROTECTION_FAULT_STATUS.PERMISSION_FAULTS: the kernel only prints the field; the emulator sets one bit per kind
# (its own choice, no public bit definition): 1 valid (PTE/PDE not valid), 2 read, 4 write, 8 execute.
PERMISSION_BIT = {"pde": 1, "pte": 1, "read": 2, "write": 4, "execute": 8}
# VMn_CONTEXT_CNTL field prefix (<X>_PROTECTION_FAULT_ENABLE_INTERRUPT/_DEFAULT) per fault reason.
CNTL_FIELD = {"range": "RANGE", "pde": "PDE0", "pte": "VALID", "read": "READ", "write": "WRITE",
              "execute": "EXECUTE"}
REASONS = ("range", "pde", "pte", "read", "write", "execute", "context", "address")


@dataclass(frozen=True)
class Layout:
    """Where a GC generation keeps the bits that moved between GFX11 and GFX12 (amdgpu_vm.h)."""
    pde_pte: int  # AMDGPU_PDE_PTE (bit 54) / AMDGPU_PDE_PTE_GFX12 (bit 63): a directory entry that is a huge page
    prt: int      # AMDGPU_PTE_PRT (bit 51) / AMDGPU_PTE_PRT_GFX12 (bit 56)


GFX11 = Layout(pde_pte=1 << 54, prt=1 << 51)
GFX12 = Layout(pde_pte=1 << 63, prt=1 << 56)


@dataclass(frozen=True)
class VMFaultRecord:
    """One translation fault as the hub reports it: which hub ("gfx" or "mm"), VMID, the faulting VA, the reason
    (one of REASONS), the access, the walk level it stopped at and the entry it read there, whether the context
    asked for an interrupt (*_ENABLE_INTERRUPT), for a redirect to the default page (*_ENABLE_DEFAULT) and for a
    retry (RETRY_PERMISSION_OR_INVALID_PAGE_FAULT), and the fault status value it would latch."""
    hub: str
    vmid: int
    va: int
    reason: str
    write: bool
    execute: bool = False
    level: Optional[str] = None
    entry: Optional[int] = None
    prt: bool = False
    interrupt: bool = True
    redirect: bool = False
    retry: bool = False
    client: int = 0
    status: int = 0
    detail: str = ""


class VMFault(Exception):
    """A translation that faulted: `record` (also appended to card.vm_faults) and `default_page`, the physical page
    address the hub substitutes when record.redirect is set (L2_PROTECTION_FAULT_DEFAULT_ADDR << 12)."""

    def __init__(self, record: VMFaultRecord, default_page: int):
        self.record = record
        self.default_page = default_page
        r = record
        where = f" at {r.level} (entry {r.entry:#018x})" if r.level is not None and r.entry is not None else \
            (f" at {r.level}" if r.level else "")
        super().__init__(f"{r.hub}hub VMID {r.vmid} {'write' if r.write else 'execute' if r.execute else 'read'} of "
                         f"VA {r.va:#x}: {r.reason} fault{where}{': ' + r.detail if r.detail else ''}")


@dataclass
class _Leaf:
    """A cached translation: `size` bytes from `va_base` go to `phys_base` (kind "vram": a VRAM offset)."""
    va_base: int
    size: int
    kind: str
    phys_base: int
    flags: int


class VMHub:
    """One VM hub (the GFX hub on GC, the MM hub on MMHUB): its registers, TLBs, invalidation engines and fault
    latch. `translate` is the hub's answer to one access."""

    def __init__(self, card: Any, name: str, prefix: str, block: str, layout: Layout):
        self.card, self.name, self.prefix, self.block, self.layout = card, name, prefix, block, layout
        self.regs = card.regs
        module_name = self.regs.header(block)
        if module_name is None:
            raise ValueError(f"{card.board.product}: no register header for {block}; cannot model the {name} hub")
        self.mod = importlib.import_module(f"autogen.{module_name}")
        self._define_registers()
        self.reset()

    # -- registers --
    def f(self, reg: str, field: str) -> int:
        """A field mask from the hub's generated header (e.g. f("VM_CONTEXT0_CNTL", "ENABLE_CONTEXT"))."""
        return getattr(self.mod, f"{self.prefix}{reg}__{field}_MASK")

    def r(self, reg: str) -> Register:
        return self.regs.reg(f"{self.prefix}{reg}")

    def v(self, reg: str) -> int:
        """A register's stored value, without the hooks or the access log (the hub's own view)."""
        return self.r(reg).value

    def _pair(self, lo: str, hi: str) -> int:
        return self.v(hi) << 32 | self.v(lo)

    def _define_registers(self) -> None:
        p = self.prefix
        special: dict[str, dict[str, Any]] = {}
        # FB location as the VBIOS posted it (gfxhub_v3_0_get_fb_location: FB_BASE << 24); FB_OFFSET 0 on a dGPU.
        fb_top = (DEFAULT_FB_BASE + self.card.vram_size - 1) >> 24
        special[f"{p}MC_VM_FB_LOCATION_BASE"] = {"reset": DEFAULT_FB_BASE >> 24}
        special[f"{p}MC_VM_FB_LOCATION_TOP"] = {"reset": fb_top}
        # Apertures closed until the driver programs them (low above high; AGP bottom above top).
        special[f"{p}MC_VM_SYSTEM_APERTURE_LOW_ADDR"] = {"reset": 0x3FFFFFFF}
        special[f"{p}MC_VM_AGP_BOT"] = {"reset": 0xFFFFFF}
        special[f"{p}VM_L2_CNTL"] = {"reset": 0x00080602}  # gc_11_0_0_default.h regGCVM_L2_CNTL_DEFAULT
        special[f"{p}VM_L2_CNTL2"] = {"on_write": self._l2_cntl2_write}
        special[f"{p}VM_L2_PROTECTION_FAULT_CNTL"] = {"on_write": self._fault_cntl_write}
        for n in ("STATUS", "STATUS_LO32", "STATUS_HI32", "ADDR_LO32", "ADDR_HI32"):
            special[f"{p}VM_L2_PROTECTION_FAULT_{n}"] = {"wmask": 0}  # written by the hub only
        for e in range(NUM_ENGINES):
            special[f"{p}VM_INVALIDATE_ENG{e}_REQ"] = {"on_write": lambda reg, val, e=e: self._request(e, val)}
            special[f"{p}VM_INVALIDATE_ENG{e}_ACK"] = {"wmask": 0, "on_read": lambda reg, e=e: self._ack(e)}
            special[f"{p}VM_INVALIDATE_ENG{e}_SEM"] = {"on_read": lambda reg, e=e: self._sem_read(e),
                                                       "on_write": lambda reg, val, e=e: self._sem_write(e, val)}
        names = sorted(a[3:] for a, val in vars(self.mod).items()
                       if isinstance(val, int) and (a.startswith(f"reg{p}VM_") or a.startswith(f"reg{p}MC_VM_"))
                       and not a.endswith("_BASE_IDX"))
        for name in names:
            self.regs.define(name, self.block, **special.get(name, {}))
        self.status_regs = [n for n in ("VM_L2_PROTECTION_FAULT_STATUS", "VM_L2_PROTECTION_FAULT_STATUS_LO32")
                            if f"{p}{n}" in names][:1]
        if not self.status_regs:
            raise ValueError(f"{self.mod.__name__} has no {p}VM_L2_PROTECTION_FAULT_STATUS(_LO32)")

    # -- state --
    def reset(self) -> None:
        """Power-on: empty TLBs and PDE caches, no pending invalidations, semaphores free, no fault latched."""
        # per VMID: {size bits: {va >> size bits: leaf}} (few distinct sizes, so a lookup is a handful of probes)
        self.l1: list[dict[int, dict[int, _Leaf]]] = [{} for _ in range(NUM_VMIDS)]
        self.l2: list[dict[int, dict[int, _Leaf]]] = [{} for _ in range(NUM_VMIDS)]
        self.pde: list[dict[tuple[str, int], int]] = [{} for _ in range(NUM_VMIDS)]
        self.ack = [0] * NUM_ENGINES
        self.pending: list[list[tuple[float, int]]] = [[] for _ in range(NUM_ENGINES)]
        self.sem = [False] * NUM_ENGINES
        self.latched = False
        self.walks = 0
        self.invalidations = 0

    # -- invalidation --
    def _request(self, eng: int, value: int) -> None:
        # gmc_v11_0_flush_gpu_tlb: the ack for a VMID clears when a new request names it and is set once done.
        vmids = value & self.f("VM_INVALIDATE_ENG0_REQ", "PER_VMID_INVALIDATE_REQ")
        self.ack[eng] &= ~vmids
        due = time.monotonic() + self.card.gmc.invalidate_latency_s
        self.pending[eng].append((due, value))
        self._complete(eng)

    def _complete(self, eng: Optional[int] = None, *, force: bool = False) -> None:
        now = time.monotonic()
        for e in range(NUM_ENGINES) if eng is None else (eng,):
            keep = []
            for due, value in self.pending[e]:
                if force or now >= due:
                    self._invalidate(value)
                    self.ack[e] |= value & self.f("VM_INVALIDATE_ENG0_REQ", "PER_VMID_INVALIDATE_REQ")
                else:
                    keep.append((due, value))
            self.pending[e] = keep

    def _invalidate(self, req: int) -> None:
        self.invalidations += 1
        g = lambda field: bool(req & self.f("VM_INVALIDATE_ENG0_REQ", field))  # noqa: E731
        levels = {lvl for lvl, field in (("PDB0", "INVALIDATE_L2_PDE0"), ("PDB1", "INVALIDATE_L2_PDE1"),
                                         ("PDB2", "INVALIDATE_L2_PDE2")) if g(field)}
        for vmid in range(NUM_VMIDS):
            if not req >> vmid & 1:
                continue
            if g("INVALIDATE_L1_PTES"):
                self.l1[vmid].clear()
            if g("INVALIDATE_L2_PTES"):
                self.l2[vmid].clear()
            if levels:
                self.pde[vmid] = {k: v for k, v in self.pde[vmid].items() if k[0] not in levels}
        if g("CLEAR_PROTECTION_FAULT_STATUS_ADDR"):
            self._clear_fault_latch()

    def _ack(self, eng: int) -> int:
        self._complete(eng)
        return self.ack[eng]

    def _sem_read(self, eng: int) -> int:
        # gmc_v11_0_flush_gpu_tlb: "a read return value of 1 means semaphore acquire"
        if self.sem[eng]:
            return 0
        self.sem[eng] = True
        return 1

    def _sem_write(self, eng: int, value: int) -> None:
        if not value & self.f("VM_INVALIDATE_ENG0_SEM", "SEMAPHORE"):
            self.sem[eng] = False  # "write with 0 means semaphore release"

    def _l2_cntl2_write(self, reg: Register, value: int) -> None:
        # gfxhub_v3_0_init_cache_regs sets INVALIDATE_ALL_L1_TLBS and INVALIDATE_L2_CACHE: every VMID, every level.
        if value & self.f("VM_L2_CNTL2", "INVALIDATE_ALL_L1_TLBS"):
            for t in self.l1:
                t.clear()
        if value & self.f("VM_L2_CNTL2", "INVALIDATE_L2_CACHE"):
            for t in self.l2:
                t.clear()
            for t in self.pde:
                t.clear()

    def _fault_cntl_write(self, reg: Register, value: int) -> None:
        clear = self.f("VM_L2_PROTECTION_FAULT_CNTL", "CLEAR_PROTECTION_FAULT_STATUS_ADDR")
        if value & clear:
            self._clear_fault_latch()
            reg.value &= ~clear  # a pulse: gmc_v11_0_process_interrupt writes it once per fault
            reg.value &= MASK32

    def _clear_fault_latch(self) -> None:
        for n in ("STATUS", "STATUS_LO32", "STATUS_HI32", "ADDR_LO32", "ADDR_HI32"):
            try:
                self.r(f"VM_L2_PROTECTION_FAULT_{n}").value = 0
            except KeyError:
                pass
        self.latched = False

    # -- translation --
    def context(self, vmid: int) -> dict[str, int]:
        """VMID's context registers decoded: enable, depth, block size, base PDE, start/end page numbers."""
        cntl = self.v(f"VM_CONTEXT{vmid}_CNTL")
        f = lambda field: (cntl & self.f("VM_CONTEXT0_CNTL", field)) >> (  # noqa: E731
            (self.f("VM_CONTEXT0_CNTL", field) & -self.f("VM_CONTEXT0_CNTL", field)).bit_length() - 1)
        pt = f"VM_CONTEXT{vmid}_PAGE_TABLE_"
        return {"cntl": cntl, "enable": f("ENABLE_CONTEXT"), "depth": f("PAGE_TABLE_DEPTH"),
                "block_size": f("PAGE_TABLE_BLOCK_SIZE"),
                "base": self._pair(pt + "BASE_ADDR_LO32", pt + "BASE_ADDR_HI32"),
                "start": self._pair(pt + "START_ADDR_LO32", pt + "START_ADDR_HI32"),
                "end": self._pair(pt + "END_ADDR_LO32", pt + "END_ADDR_HI32")}

    def fb_offset(self) -> int:
        """vram_base_offset: the physical address of VRAM offset 0 (gfxhub_v3_0_get_mc_fb_offset: FB_OFFSET << 24)."""
        return self.v("MC_VM_FB_OFFSET") << 24

    def _aperture(self, va: int) -> Optional[tuple[str, int]]:
        # gfxhub_v3_0_init_system_aperture_regs: VMID 0 addresses between LOW and HIGH (>> 18) take the FB or AGP
        # window instead of the page table; in the aperture but in neither window: the default page.
        low, high = self.v("MC_VM_SYSTEM_APERTURE_LOW_ADDR"), self.v("MC_VM_SYSTEM_APERTURE_HIGH_ADDR")
        if not low <= va >> 18 <= high:
            return None
        fb_base = (self.v("MC_VM_FB_LOCATION_BASE") & 0xFFFFFF) << 24
        fb_top = (self.v("MC_VM_FB_LOCATION_TOP") & 0xFFFFFF) << 24 | 0xFFFFFF
        if fb_base <= va <= fb_top:
            return "vram", va - fb_base  # amdgpu_gmc_vram_mc2pa, then physical -> VRAM offset
        agp_bot, agp_top = self.v("MC_VM_AGP_BOT") << 24, self.v("MC_VM_AGP_TOP") << 24 | 0xFFFFFF
        if agp_bot <= va <= agp_top:
            return "system", va - agp_bot + (self.v("MC_VM_AGP_BASE") << 24)
        default = self._pair("MC_VM_SYSTEM_APERTURE_DEFAULT_ADDR_LSB", "MC_VM_SYSTEM_APERTURE_DEFAULT_ADDR_MSB") << 12
        return "vram", default - self.fb_offset() + (va & (PAGE - 1))

    def _lookup(self, vmid: int, va: int) -> Optional[_Leaf]:
        for tlb, fill in ((self.l1[vmid], None), (self.l2[vmid], self.l1[vmid])):
            for shift, entries in tlb.items():
                leaf = entries.get(va >> shift)
                if leaf is not None:
                    if fill is not None:  # an L2 hit refills the L1
                        fill.setdefault(shift, {})[va >> shift] = leaf
                    return leaf
        return None

    def translate(self, vmid: int, va: int, *, write: bool = False, execute: bool = False,
                  client: int = 0) -> tuple[str, int]:
        """Translate one access of VMID `vmid` at `va`: ("vram", VRAM offset) or ("system", bus address); raises
        VMFault (after recording it) when the hub faults."""
        if not 0 <= vmid < NUM_VMIDS:
            raise ValueError(f"VMID {vmid} is not one of the hub's {NUM_VMIDS} contexts (0..15)")
        if not 0 <= va < 1 << VA_BITS:
            raise ValueError(f"VA {va:#x} is not a {VA_BITS}-bit GPU virtual address (mask sign-extended addresses "
                             f"to {VA_BITS} bits first)")
        with self.regs.lock:
            self._complete()
            access = dict(write=write, execute=execute, client=client)
            if vmid == 0:
                hit = self._aperture(va)
                if hit is not None:
                    return hit
            ctx = self.context(vmid)
            if not ctx["enable"]:
                raise self._fault(vmid, va, "context", ctx, detail=f"{self.prefix}VM_CONTEXT{vmid}_CNTL."
                                  "ENABLE_CONTEXT is 0", **access)
            pfn = va >> 12
            if not ctx["start"] <= pfn <= ctx["end"]:
                raise self._fault(vmid, va, "range", ctx, detail=f"page {pfn:#x} outside PAGE_TABLE_START/END "
                                  f"{ctx['start']:#x}..{ctx['end']:#x}", **access)
            leaf = self._lookup(vmid, va)
            if leaf is None:
                leaf = self._walk(vmid, va, ctx, access)
            need = "write" if write else "execute" if execute else "read"
            bit = {"read": PTE_READABLE, "write": PTE_WRITEABLE, "execute": PTE_EXECUTABLE}[need]
            if not leaf.flags & bit:
                raise self._fault(vmid, va, need, ctx, level="PTE", entry=leaf.flags,
                                  detail=f"the PTE lacks {need.upper()}", **access)
            return leaf.kind, leaf.phys_base + (va - leaf.va_base)

    def _read_entry(self, vmid: int, va: int, ctx: dict[str, int], access: dict, level: str, system: bool,
                    addr: int) -> int:
        if system:
            try:
                data = self.card.function.dma_read(addr, 8)
            except Exception as e:  # IOMMUFault, bus mastering off, a removed device: the walker cannot read it
                raise self._fault(vmid, va, "address", ctx, level=level,
                                  detail=f"reading the {level} entry at bus address {addr:#x}: {e}", **access) from e
            return int.from_bytes(data, "little")
        off = addr - self.fb_offset()
        if not 0 <= off <= self.card.vram_size - 8:
            raise self._fault(vmid, va, "address", ctx, level=level, detail=f"the {level} entry's physical address "
                              f"{addr:#x} is outside VRAM (FB_OFFSET {self.fb_offset():#x}, {self.card.vram_size:#x} "
                              "bytes)", **access)
        return int.from_bytes(self.card.vram[off:off + 8], "little")

    def _walk(self, vmid: int, va: int, ctx: dict[str, int], access: dict) -> _Leaf:
        self.walks += 1
        depth, bs = ctx["depth"], ctx["block_size"]
        levels = LEVEL_NAMES[3 - depth:] if depth <= 3 else None
        if levels is None:
            raise self._fault(vmid, va, "address", ctx, detail=f"PAGE_TABLE_DEPTH {depth} is not 0..3", **access)
        rel = (va >> 12) - ctx["start"]  # the hub indexes from PAGE_TABLE_START_ADDR (GART: gart_start)
        ptb_bits = 9 + bs  # PAGE_TABLE_BLOCK_SIZE = block_size - 9 (gfxhub_v3_0_setup_vmid_config)
        entry = ctx["base"]
        if not entry & PTE_VALID:  # amdgpu_gmc_pd_addr: the base is a PDE with AMDGPU_PTE_VALID
            raise self._fault(vmid, va, "pde", ctx, level="BASE", entry=entry,
                              detail="PAGE_TABLE_BASE_ADDR has VALID clear", **access)
        table, system = entry & PDE_ADDR_MASK, bool(entry & PTE_SYSTEM)
        for i, level in enumerate(levels):
            last = level == "PTB"
            shift = 0 if last else ptb_bits + 9 * (len(levels) - 2 - i)  # in pages
            idx = rel >> shift
            if i:  # every level below the root has 2^9 (PTB: 2^(9 + block size)) entries
                idx &= (1 << (ptb_bits if last else 9)) - 1
            key = (level, rel >> shift)
            entry = None if last else self.pde[vmid].get(key)
            if entry is None:
                entry = self._read_entry(vmid, va, ctx, access, level, system, table + idx * 8)
            if not last:
                if not entry & PTE_VALID:
                    raise self._fault(vmid, va, "pde", ctx, level=level, entry=entry,
                                      detail=f"{level}[{idx}] is not valid", **access)
                self.pde[vmid][key] = entry
                if not entry & self.layout.pde_pte:
                    table, system = entry & PDE_ADDR_MASK, bool(entry & PTE_SYSTEM)
                    continue
            elif not entry & PTE_VALID:
                raise self._fault(vmid, va, "pte", ctx, level=level, entry=entry,
                                  prt=bool(entry & self.layout.prt), detail=f"PTB[{idx}] is not valid", **access)
            return self._leaf(vmid, va, ctx, access, level, entry, 12 + shift)
        raise AssertionError("unreachable: the PTB level ends every walk")

    def _leaf(self, vmid: int, va: int, ctx: dict[str, int], access: dict, level: str, entry: int,
              size_bits: int) -> _Leaf:
        frag = (entry >> PTE_FRAG_SHIFT) & 0x1F
        cover = max(size_bits, 12 + frag)  # the TLB trusts the fragment: one entry for 2^(12 + frag) bytes
        page_base = entry & PTE_ADDR_MASK & ~((1 << size_bits) - 1)
        phys = page_base + (va & ((1 << size_bits) - 1))  # this VA's physical address
        va_base = va >> cover << cover
        kind = "system" if entry & PTE_SYSTEM else "vram"
        if kind == "vram":
            phys -= self.fb_offset()
            if not 0 <= phys < self.card.vram_size:
                raise self._fault(vmid, va, "address", ctx, level=level, entry=entry, detail=f"the {level} entry "
                                  f"maps physical {phys + self.fb_offset():#x}, outside VRAM", **access)
        leaf = _Leaf(va_base, 1 << cover, kind, phys - (va - va_base), entry)
        for tlb in (self.l1[vmid], self.l2[vmid]):
            tlb.setdefault(cover, {})[va >> cover] = leaf
        return leaf

    # -- faults --
    def _fault(self, vmid: int, va: int, reason: str, ctx: dict[str, int], *, write: bool, execute: bool,
               client: int, level: Optional[str] = None, entry: Optional[int] = None, prt: bool = False,
               detail: str = "") -> VMFault:
        cntl = ctx["cntl"]
        field = CNTL_FIELD.get(reason)
        if field is not None:
            interrupt = bool(cntl & self.f("VM_CONTEXT0_CNTL", f"{field}_PROTECTION_FAULT_ENABLE_INTERRUPT"))
            redirect = bool(cntl & self.f("VM_CONTEXT0_CNTL", f"{field}_PROTECTION_FAULT_ENABLE_DEFAULT"))
        else:
            interrupt, redirect = True, False  # a walker error or a disabled context: always reported
        retry = bool(cntl & self.f("VM_CONTEXT0_CNTL", "RETRY_PERMISSION_OR_INVALID_PAGE_FAULT")) and \
            reason in ("pde", "pte", "read", "write", "execute")
        sreg = self.status_regs[0]
        sf = lambda name: self.f(sreg, name)  # noqa: E731
        put = lambda name, value: value << ((sf(name) & -sf(name)).bit_length() - 1) & sf(name)  # noqa: E731
        status = put("VMID", vmid) | put("RW", int(write)) | put("CID", client)
        if reason in PERMISSION_BIT:
            status |= put("PERMISSION_FAULTS", PERMISSION_BIT[reason])
        if reason == "range":
            status |= put("MAPPING_ERROR", 1)
        if reason in ("address", "context"):
            status |= put("WALKER_ERROR", 1)
        if prt:
            status |= put("PRT", 1)
        record = VMFaultRecord(self.name, vmid, va, reason, write, execute, level, entry, prt, interrupt, redirect,
                               retry, client, status, detail)
        if self.latched:
            self.r(sreg).value |= sf("MORE_FAULTS")
        else:
            self.r(sreg).value = status
            self.r("VM_L2_PROTECTION_FAULT_ADDR_LO32").value = (va >> 12) & MASK32
            self.r("VM_L2_PROTECTION_FAULT_ADDR_HI32").value = va >> 44
            self.latched = True
        self.card.vm_faults.append(record)
        default = self._pair("VM_L2_PROTECTION_FAULT_DEFAULT_ADDR_LO32", "VM_L2_PROTECTION_FAULT_DEFAULT_ADDR_HI32")
        return VMFault(record, default << 12)


class GMC:
    """The card's memory controller: `hubs` ("gfx": GCVM, "mm": MMVM) and `walk`. `invalidate_latency_s` delays
    when an invalidation request completes (its ACK appears and the TLB entries go): 0 completes it at the write."""

    def __init__(self, card: Any):
        self.card = card
        gc = card.board.block("GC").version
        layout = GFX12 if gc >= (12, 0, 0) else GFX11  # amdgpu_vm.h: the *_GFX12 bits for GC 12.0.0 and later
        if gc[0] not in (11, 12):
            raise ValueError(f"{card.board.product}: GC {gc} is neither GFX11 nor GFX12; the GMC model covers those")
        self.layout = layout
        self.invalidate_latency_s = 0.0
        self.hubs = {"gfx": VMHub(card, "gfx", "GC", "GC", layout), "mm": VMHub(card, "mm", "MM", "MMHUB", layout)}

    def walk(self, vmid: int, va: int, write: bool = False, *, hub: str = "gfx", execute: bool = False,
             client: int = 0) -> tuple[str, int]:
        """Translate an access by `hub` ("gfx" or "mm") for `vmid` at `va`: ("vram", VRAM offset) or ("system", bus
        address). Raises VMFault (recorded in card.vm_faults) on a fault."""
        try:
            h = self.hubs[hub]
        except KeyError:
            raise ValueError(f"hub {hub!r} is not one of {sorted(self.hubs)}") from None
        return h.translate(vmid, va, write=write, execute=execute, client=client)

    def reset(self) -> None:
        """A power-on or function reset: TLBs, engines and latches start over (the registers reset themselves)."""
        with self.card.regs.lock:
            for h in self.hubs.values():
                h.reset()


def attach_gmc(card: Any) -> GMC:
    """Model the GFX and MM hubs on `card` (an emu.am.gpu.AMGPU): defines their registers on card.regs, keeps the
    model at card.gmc and the fault list at card.vm_faults, and resets it on every power-on."""
    if getattr(card, "gmc", None) is not None:
        raise ValueError("attach_gmc: this card already has a GMC model attached")
    card.vm_faults = []
    card.gmc = GMC(card)
    card.on_power_on.append(card.gmc.reset)
    return card.gmc


def walk(card: Any, vmid: int, va: int, write: bool = False, **kw: Any) -> tuple[str, int]:
    """`card.gmc.walk(vmid, va, write, ...)` for callers holding only the card."""
    return card.gmc.walk(vmid, va, write, **kw)
