"""The emulated GMC (emu/am/gmc.py) driven through its registers, with page tables built here by hand from amdgpu's
documented layout (amdgpu_vm.h bits; the PTE/PDE format comments in gmc_v11_0.c / gmc_v12_0.c), never by driver code:
multi-level walks from VRAM and system memory, huge pages (the GFX11 and GFX12 "PDE as PTE" bits), every fault kind
with its record and status latch, the VMID 0 system aperture and flat GART table, and the TLB model (stale until an
invalidation completes; L1/L2/PDE caches; fragments; the ACK and the semaphore)."""
from __future__ import annotations

import ctypes
import importlib
import time

import pytest

from autogen import pci_regs as R
from emu.am.gmc import VMFault, attach_gmc
from emu.am.gpu import AMGPU

MiB = 1 << 20
VRAM = 64 * MiB
# amdgpu_vm.h, written out here so the test does not lean on the module under test
VALID, SYSTEM, SNOOPED, EXE, READ, WRITE = 1 << 0, 1 << 1, 1 << 2, 1 << 4, 1 << 5, 1 << 6
RWX = READ | WRITE | EXE
FRAG = lambda x: (x & 0x1F) << 7  # noqa: E731  AMDGPU_PTE_FRAG
PDE_PTE = {"gfx1100": 1 << 54, "gfx1201": 1 << 63}  # AMDGPU_PDE_PTE / AMDGPU_PDE_PTE_GFX12
# VM_CONTEXTn_CNTL fields: ENABLE_CONTEXT bit 0, PAGE_TABLE_DEPTH 2:1; the fault bits moved up one between
# gc_11_0_0_sh_mask.h (PAGE_TABLE_BLOCK_SIZE 6:3) and gc_12_0_0_sh_mask.h (7:4), so they come from the headers.
ENABLE, DEPTH_SHIFT = 1, 1
KINDS = ("RANGE", "DUMMY_PAGE", "PDE0", "VALID", "READ", "WRITE", "EXECUTE")
ALL_INTERRUPTS, ALL_DEFAULTS, RETRY = "interrupts", "defaults", "retry"
# GCVM_INVALIDATE_ENG0_REQ: what gfxhub_v3_0_get_invalidate_req sets besides PER_VMID_INVALIDATE_REQ (bits 15:0)
L2_PTES, PDE0, PDE1, PDE2, L1_PTES = 1 << 19, 1 << 20, 1 << 21, 1 << 22, 1 << 23
FULL = L2_PTES | PDE0 | PDE1 | PDE2 | L1_PTES


@pytest.fixture(params=["gfx1100", "gfx1201"])
def card(request):
    c = AMGPU(request.param, vram_size=VRAM, boot_delay_s=0)
    attach_gmc(c)
    yield c
    c.close()


@pytest.fixture
def card11():
    c = AMGPU("gfx1100", vram_size=VRAM, boot_delay_s=0)
    attach_gmc(c)
    yield c
    c.close()


class Tables:
    """A hand-built 4-level page table in the card's VRAM (tables from 1 MiB up, 4 KiB each)."""

    def __init__(self, card, next_table=1 * MiB):
        self.card, self.next = card, next_table
        self.root = self.alloc()

    def alloc(self) -> int:
        addr, self.next = self.next, self.next + 4096
        self.card.vram_write(addr, bytes(4096))
        return addr

    def put(self, table: int, idx: int, value: int) -> None:
        self.card.vram_write(table + idx * 8, value.to_bytes(8, "little"))

    def get(self, table: int, idx: int) -> int:
        return int.from_bytes(self.card.vram_read(table + idx * 8, 8), "little")

    def map(self, va: int, entry: int, leaf_level: int = 3) -> int:
        """Write `entry` as the leaf for `va` at level leaf_level (3 PTB, 2 PDB0 huge, 1 PDB1 huge); returns the
        table it went into."""
        table = self.root
        for lvl in range(leaf_level):
            idx = (va >> (39 - 9 * lvl)) & 0x1FF
            e = self.get(table, idx)
            if not e & VALID:
                e = self.alloc() | VALID
                self.put(table, idx, e)
            table = e & 0x0000FFFFFFFFF000
        self.put(table, (va >> (39 - 9 * leaf_level)) & 0x1FF, entry)
        return table


def regs(card, name, value):
    card.regs.write(name, value)


def cntl_bits(card, p, which):
    mod = importlib.import_module(f"autogen.{card.regs.header('GC' if p == 'GC' else 'MMHUB')}")
    m = lambda f: getattr(mod, f"{p}VM_CONTEXT0_CNTL__{f}_MASK")  # noqa: E731
    bits = 0
    for w in which:
        if w == RETRY:
            bits |= m("RETRY_PERMISSION_OR_INVALID_PAGE_FAULT")
        else:
            bits |= sum(m(f"{k}_PROTECTION_FAULT_ENABLE_{'INTERRUPT' if w == ALL_INTERRUPTS else 'DEFAULT'}")
                        for k in KINDS)
    return bits


def setup_ctx(card, vmid, root, *, p="GC", depth=3, start=0, end=(1 << 36) - 1, cntl=(ALL_INTERRUPTS, ALL_DEFAULTS)):
    regs(card, f"{p}VM_CONTEXT{vmid}_CNTL", ENABLE | depth << DEPTH_SHIFT | cntl_bits(card, p, cntl))
    regs(card, f"{p}VM_CONTEXT{vmid}_PAGE_TABLE_BASE_ADDR_LO32", (root | VALID) & 0xFFFFFFFF)
    regs(card, f"{p}VM_CONTEXT{vmid}_PAGE_TABLE_BASE_ADDR_HI32", root >> 32)
    regs(card, f"{p}VM_CONTEXT{vmid}_PAGE_TABLE_START_ADDR_LO32", start & 0xFFFFFFFF)
    regs(card, f"{p}VM_CONTEXT{vmid}_PAGE_TABLE_START_ADDR_HI32", start >> 32)
    regs(card, f"{p}VM_CONTEXT{vmid}_PAGE_TABLE_END_ADDR_LO32", end & 0xFFFFFFFF)
    regs(card, f"{p}VM_CONTEXT{vmid}_PAGE_TABLE_END_ADDR_HI32", end >> 32)


def invalidate(card, vmid, flags=FULL, *, p="GC", eng=17):
    regs(card, f"{p}VM_INVALIDATE_ENG{eng}_REQ", flags | 1 << vmid)
    deadline = time.monotonic() + 2
    while not card.regs.read(f"{p}VM_INVALIDATE_ENG{eng}_ACK") & 1 << vmid:  # the kernel's bounded ACK poll
        assert time.monotonic() < deadline, "invalidation ACK never came"
        time.sleep(0.001)


def status_name(card, p="GC"):
    return f"{p}VM_L2_PROTECTION_FAULT_STATUS" + ("_LO32" if card.target == "gfx1201" else "")


VA = 0x1234_5678_9000


# -- walks --
def test_four_level_walk_from_vram(card):
    t = Tables(card)
    t.map(VA, 0x20_0000 | VALID | RWX)
    setup_ctx(card, 3, t.root)
    assert card.gmc.walk(3, VA + 0x123, False) == ("vram", 0x20_0123)
    assert card.gmc.walk(3, VA + 8, True) == ("vram", 0x20_0008)
    assert card.gmc.walk(3, VA, execute=True) == ("vram", 0x20_0000)
    assert card.vm_faults == []


def test_system_page_gives_bus_address(card):
    t = Tables(card)
    t.map(VA, 0x7F12_3456_7000 | VALID | SYSTEM | SNOOPED | READ)
    setup_ctx(card, 1, t.root)
    assert card.gmc.walk(1, VA + 0x10) == ("system", 0x7F12_3456_7010)


def test_page_table_in_system_memory(card):
    # The PTB lives in host memory: the PDB0 entry has SYSTEM set and a bus address; the walker reads it by DMA.
    host = ctypes.create_string_buffer(8192)
    page = (ctypes.addressof(host) + 4095) & ~4095
    bus = 0x1_0000_0000
    card.function.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MASTER | R.PCI_COMMAND_MEMORY, 2)
    card.function.iommu = lambda addr, size, write: page + (addr - bus) if bus <= addr < bus + 4096 else \
        (_ for _ in ()).throw(OSError(f"unmapped bus {addr:#x}"))
    t = Tables(card)
    t.map(VA, 0)  # builds PDB2..PDB0 and a PTB; then repoint PDB0's entry at the host PTB
    t.put(_pdb0_of(t, VA), (VA >> 21) & 0x1FF, bus | VALID | SYSTEM)
    ctypes.memmove(page + ((VA >> 12) & 0x1FF) * 8, (0x30_0000 | VALID | READ).to_bytes(8, "little"), 8)
    setup_ctx(card, 2, t.root)
    assert card.gmc.walk(2, VA + 4) == ("vram", 0x30_0004)
    # the same table unreachable by bus: a walker ("address") fault naming the bus address
    card.function.iommu = lambda addr, size, write: (_ for _ in ()).throw(OSError("IOMMU says no"))
    with pytest.raises(VMFault) as e:
        card.gmc.walk(2, VA + 0x1000)
    assert e.value.record.reason == "address" and "bus address" in str(e.value)


def _pdb0_of(t, va):
    table = t.root
    for lvl in range(2):
        table = t.get(table, (va >> (39 - 9 * lvl)) & 0x1FF) & 0x0000FFFFFFFFF000
    return table


def test_huge_pages_use_the_generation_bit(card):
    t = Tables(card)
    huge = PDE_PTE[card.target]
    t.map(VA & ~(2 * MiB - 1), 0x40_0000 | VALID | RWX | huge, leaf_level=2)  # a 2 MiB page in PDB0
    t.map(0x40_0000_0000, 0 | VALID | READ | huge, leaf_level=1)  # a 1 GiB page in PDB1 at physical 0
    setup_ctx(card, 4, t.root)
    assert card.gmc.walk(4, VA + 0x10) == ("vram", 0x40_0000 + (VA & (2 * MiB - 1)) + 0x10)
    assert card.gmc.walk(4, 0x40_0000_0000 + 0x1234) == ("vram", 0x1234)


def test_gfx11_treats_bit63_as_a_pde_not_a_huge_page(card11):
    # GFX12's PDE_PTE (bit 63) is a reserved bit on GFX11: the entry is a PDE, so the "PTB" it names is walked.
    t = Tables(card11)
    ptb = t.alloc()
    t.map(VA & ~(2 * MiB - 1), ptb | VALID | 1 << 63, leaf_level=2)
    t.put(ptb, (VA >> 12) & 0x1FF, 0x50_0000 | VALID | READ)
    setup_ctx(card11, 1, t.root)
    assert card11.gmc.walk(1, VA) == ("vram", 0x50_0000)


def test_mm_hub_has_its_own_contexts(card):
    t = Tables(card)
    t.map(VA, 0x20_0000 | VALID | READ)
    setup_ctx(card, 5, t.root, p="MM")
    assert card.gmc.walk(5, VA, hub="mm") == ("vram", 0x20_0000)
    with pytest.raises(VMFault) as e:
        card.gmc.walk(5, VA, hub="gfx")  # the GFX hub's context 5 is still disabled
    assert (e.value.record.hub, e.value.record.reason) == ("gfx", "context")


def test_vmid0_system_aperture_and_flat_gart(card):
    fb = card.regs.read("GCMC_VM_FB_LOCATION_BASE") << 24
    assert fb and card.regs.read("GCMC_VM_FB_LOCATION_TOP") == (fb + VRAM - 1) >> 24
    # gfxhub_v3_0_init_system_aperture_regs: the aperture covers the FB; AGP closed (bottom above top)
    regs(card, "GCMC_VM_SYSTEM_APERTURE_LOW_ADDR", fb >> 18)
    regs(card, "GCMC_VM_SYSTEM_APERTURE_HIGH_ADDR", (fb + VRAM - 1) >> 18)
    assert card.gmc.walk(0, fb + 0x1234) == ("vram", 0x1234)
    # GART above it: PAGE_TABLE_DEPTH 0, a flat PTB indexed from PAGE_TABLE_START_ADDR (gfxhub_v3_0 GART setup)
    gart = 0xFFFF_0000_0000
    ptb = 2 * MiB
    card.vram_write(ptb + 5 * 8, (0x60_0000 | VALID | SYSTEM | READ | WRITE).to_bytes(8, "little"))
    setup_ctx(card, 0, ptb, depth=0, start=gart >> 12, end=(gart + 512 * MiB - 1) >> 12, cntl=())
    assert card.gmc.walk(0, gart + 5 * 4096 + 8, True) == ("system", 0x60_0008)


# -- faults --
def test_fault_kinds_and_records(card):
    t = Tables(card)
    t.map(VA, 0x20_0000 | VALID | READ)                 # read-only, not executable
    t.map(VA + 0x1000, 0)                                # an invalid PTE in a present PTB
    t.map(0x40_0000_0000, (VRAM + MiB) | VALID | READ)   # points past the end of VRAM
    setup_ctx(card, 7, t.root, end=(1 << 34) - 1)  # VAs below 2^46
    cases = [
        (dict(va=VA, write=True), "write", "PTE"),
        (dict(va=VA, execute=True), "execute", "PTE"),
        (dict(va=VA + 0x1000), "pte", "PTB"),
        (dict(va=0x2000_0000_0000), "pde", "PDB2"),      # nothing mapped in that PDB2 slot
        (dict(va=0x40_0000_0000), "address", "PTB"),
        (dict(va=(1 << 46)), "range", None),             # page 1<<34 is past END
    ]
    for kw, reason, level in cases:
        va = kw.pop("va")
        with pytest.raises(VMFault) as e:
            card.gmc.walk(7, va, kw.pop("write", False), **kw)
        r = e.value.record
        assert (r.hub, r.vmid, r.va, r.reason, r.level) == ("gfx", 7, va, reason, level), str(e.value)
    assert [f.reason for f in card.vm_faults] == [c[1] for c in cases]
    first = card.vm_faults[0]
    assert first.interrupt and first.redirect and not first.retry
    # the first fault is latched with its address; later ones only set MORE_FAULTS (bit 0)
    s = card.regs.read(status_name(card))
    assert (s >> 20) & 0xF == 7 and s >> 18 & 1 == 1 and s & 1 == 1  # VMID, RW (a write), MORE_FAULTS
    assert card.regs.read("GCVM_L2_PROTECTION_FAULT_ADDR_LO32") == (VA >> 12) & 0xFFFFFFFF
    assert card.regs.read("GCVM_L2_PROTECTION_FAULT_ADDR_HI32") == VA >> 44
    # gmc_v11_0_process_interrupt: WREG32_P(vm_l2_pro_fault_cntl, 1, ~1) clears the latch for the next fault
    regs(card, "GCVM_L2_PROTECTION_FAULT_CNTL", card.regs.read("GCVM_L2_PROTECTION_FAULT_CNTL") | 1)
    assert card.regs.read(status_name(card)) == 0 and card.regs.read("GCVM_L2_PROTECTION_FAULT_CNTL") & 1 == 0
    with pytest.raises(VMFault):
        card.gmc.walk(7, VA + 0x1000)
    assert card.regs.read("GCVM_L2_PROTECTION_FAULT_ADDR_LO32") == ((VA + 0x1000) >> 12) & 0xFFFFFFFF


def test_fault_flags_follow_context_cntl(card):
    t = Tables(card)
    default_page = 0x7_0000
    regs(card, "GCVM_L2_PROTECTION_FAULT_DEFAULT_ADDR_LO32", default_page >> 12)
    setup_ctx(card, 1, t.root, cntl=(RETRY,))  # no interrupts, no default-page redirect, retry on
    with pytest.raises(VMFault) as e:
        card.gmc.walk(1, VA)
    r = e.value.record
    assert (r.reason, r.interrupt, r.redirect, r.retry) == ("pde", False, False, True)
    assert e.value.default_page == default_page


def test_disabled_context_and_invalid_base(card):
    with pytest.raises(VMFault) as e:
        card.gmc.walk(9, VA)
    assert e.value.record.reason == "context"
    t = Tables(card)
    setup_ctx(card, 9, t.root)
    regs(card, "GCVM_CONTEXT9_PAGE_TABLE_BASE_ADDR_LO32", t.root)  # VALID clear in the base PDE
    with pytest.raises(VMFault) as e:
        card.gmc.walk(9, VA)
    assert (e.value.record.reason, e.value.record.level) == ("pde", "BASE")


def test_bad_arguments_are_errors_not_faults(card):
    with pytest.raises(ValueError, match="VMID 16"):
        card.gmc.walk(16, 0)
    with pytest.raises(ValueError, match="48-bit"):
        card.gmc.walk(1, 1 << 48)
    with pytest.raises(ValueError, match="hub"):
        card.gmc.walk(1, 0, hub="sdma")


# -- TLB --
def test_stale_mapping_until_invalidated(card):
    t = Tables(card)
    ptb = t.map(VA, 0x20_0000 | VALID | RWX)
    setup_ctx(card, 3, t.root)
    assert card.gmc.walk(3, VA) == ("vram", 0x20_0000)
    t.put(ptb, (VA >> 12) & 0x1FF, 0x21_0000 | VALID | RWX)  # remap without telling the hub
    assert card.gmc.walk(3, VA) == ("vram", 0x20_0000)      # stale, as on hardware
    invalidate(card, 4)                                       # another VMID: no effect
    assert card.gmc.walk(3, VA) == ("vram", 0x20_0000)
    invalidate(card, 3)
    assert card.gmc.walk(3, VA) == ("vram", 0x21_0000)
    t.put(ptb, (VA >> 12) & 0x1FF, 0)                         # unmap: still reachable until invalidated
    assert card.gmc.walk(3, VA) == ("vram", 0x21_0000)
    invalidate(card, 3)
    with pytest.raises(VMFault):
        card.gmc.walk(3, VA)


def test_l1_only_invalidation_leaves_l2(card):
    t = Tables(card)
    ptb = t.map(VA, 0x20_0000 | VALID | READ)
    setup_ctx(card, 3, t.root)
    card.gmc.walk(3, VA)
    t.put(ptb, (VA >> 12) & 0x1FF, 0x22_0000 | VALID | READ)
    invalidate(card, 3, L1_PTES)
    assert card.gmc.walk(3, VA) == ("vram", 0x20_0000)  # refilled from the L2
    invalidate(card, 3, L1_PTES | L2_PTES)
    assert card.gmc.walk(3, VA) == ("vram", 0x22_0000)


def test_pde_cache_needs_pde_invalidation(card):
    t = Tables(card)
    ptb = t.map(VA, 0x20_0000 | VALID | READ)
    setup_ctx(card, 3, t.root)
    card.gmc.walk(3, VA)
    new_ptb = t.alloc()
    t.put(new_ptb, (VA >> 12) & 0x1FF, 0x23_0000 | VALID | READ)
    t.put(_pdb0_of(t, VA), (VA >> 21) & 0x1FF, new_ptb | VALID)  # swap the PTB under PDB0
    assert ptb != new_ptb
    invalidate(card, 3, L1_PTES | L2_PTES)                # PTEs gone, cached PDB0 entry still points at the old PTB
    assert card.gmc.walk(3, VA) == ("vram", 0x20_0000)
    invalidate(card, 3, L1_PTES | L2_PTES | PDE0)
    assert card.gmc.walk(3, VA) == ("vram", 0x23_0000)


def test_fragment_is_trusted_by_the_tlb(card):
    t = Tables(card)
    # page 0 of a 64 KiB fragment (FRAG 4); page 1's PTE says something else, but the TLB holds the fragment
    ptb = t.map(0x10_0000, 0x20_0000 | VALID | READ | FRAG(4))
    t.put(ptb, ((0x10_0000 >> 12) + 1) & 0x1FF, 0x30_0000 | VALID | READ)
    setup_ctx(card, 1, t.root)
    assert card.gmc.walk(1, 0x10_0000) == ("vram", 0x20_0000)
    assert card.gmc.walk(1, 0x10_1000) == ("vram", 0x20_1000)  # from the fragment entry, no walk
    invalidate(card, 1)
    assert card.gmc.walk(1, 0x10_1000) == ("vram", 0x30_0000)  # walked: page 1's own PTE


def test_l2_cntl2_invalidates_everything(card):
    t = Tables(card)
    ptb = t.map(VA, 0x20_0000 | VALID | READ)
    setup_ctx(card, 3, t.root)
    card.gmc.walk(3, VA)
    t.put(ptb, (VA >> 12) & 0x1FF, 0x24_0000 | VALID | READ)
    regs(card, "GCVM_L2_CNTL2", 0x3)  # INVALIDATE_ALL_L1_TLBS | INVALIDATE_L2_CACHE (gfxhub_v3_0_init_cache_regs)
    assert card.gmc.walk(3, VA) == ("vram", 0x24_0000)


def test_invalidation_ack_latency(card):
    t = Tables(card)
    ptb = t.map(VA, 0x20_0000 | VALID | READ)
    setup_ctx(card, 3, t.root)
    card.gmc.walk(3, VA)
    t.put(ptb, (VA >> 12) & 0x1FF, 0x25_0000 | VALID | READ)
    card.gmc.invalidate_latency_s = 0.05
    regs(card, "GCVM_INVALIDATE_ENG17_REQ", FULL | 1 << 3)
    assert card.regs.read("GCVM_INVALIDATE_ENG17_ACK") & 1 << 3 == 0  # not done yet
    assert card.gmc.walk(3, VA) == ("vram", 0x20_0000)                # a driver that did not wait sees stale
    invalidate(card, 3)  # polls the ACK (the earlier request completes first)
    assert card.gmc.walk(3, VA) == ("vram", 0x25_0000)


def test_invalidation_semaphore(card):
    sem = "MMVM_INVALIDATE_ENG17_SEM"
    assert card.regs.read(sem) == 1  # acquired
    assert card.regs.read(sem) == 0  # held
    regs(card, sem, 0)               # released
    assert card.regs.read(sem) == 1


def test_power_on_empties_the_tlb(card):
    t = Tables(card)
    ptb = t.map(VA, 0x20_0000 | VALID | READ)
    setup_ctx(card, 3, t.root)
    card.gmc.walk(3, VA)
    t.put(ptb, (VA >> 12) & 0x1FF, 0x26_0000 | VALID | READ)
    card.power_on()  # registers back to reset: the context is off again, and nothing is cached
    with pytest.raises(VMFault):
        card.gmc.walk(3, VA)
    setup_ctx(card, 3, t.root)
    assert card.gmc.walk(3, VA) == ("vram", 0x26_0000)


def test_attach_twice_refused(card11):
    with pytest.raises(ValueError, match="already"):
        attach_gmc(card11)
