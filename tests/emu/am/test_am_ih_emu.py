"""The emulated IH (emu/am/ih.py) driven through its registers as ih_v6_0.c / ih_v7_0.c program them, with IV entries
decoded here by hand the way amdgpu_ih_decode_iv_helper does (never by driver code): rings in system memory (bus
address) and in VRAM (MC address through the MM hub), the WPTR writeback, the doorbell read pointer, the VMID -> PASID
lookup, overflow (overwrite and flag, drain on ring 1, the kernel's clear sequence), ring-1 routing with its self IV,
and the GMC's VM faults turned into the IV entries gmc_v11_0_process_interrupt decodes."""
from __future__ import annotations

import ctypes
import importlib

import pytest

from autogen import pci_regs as R
from emu.am.gmc import VMFault, attach_gmc
from emu.am.gpu import AMGPU
from emu.am.ih import attach_ih

MiB = 1 << 20
VRAM = 64 * MiB
FB = 0x8000 << 24  # the FB location the GMC model's VBIOS posted (MMMC_VM_FB_LOCATION_BASE reset)
RING_SIZE = 4096   # bytes: RB_SIZE = log2(1024 dwords) = 10


@pytest.fixture(params=["gfx1100", "gfx1201"])
def card(request):
    c = AMGPU(request.param, vram_size=VRAM, boot_delay_s=0)
    attach_gmc(c)
    attach_ih(c)
    c.function.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MASTER | R.PCI_COMMAND_MEMORY, 2)
    yield c
    c.close()


def oss(card):
    return importlib.import_module(f"autogen.{card.regs.header('OSSSYS')}")


def fld(card, reg, name, value):
    m = getattr(oss(card), f"{reg}__{name}_MASK")
    return value << ((m & -m).bit_length() - 1) & m


class Host:
    """Page-aligned host memory standing in for a DMA buffer (no IOMMU: the bus address is the host address)."""

    def __init__(self, size):
        self.buf = ctypes.create_string_buffer(size + 4096)
        self.addr = (ctypes.addressof(self.buf) + 4095) & ~4095

    def read(self, off, size):
        return ctypes.string_at(self.addr + off, size)

    def u32(self, off):
        return int.from_bytes(self.read(off, 4), "little")


def decode(raw: bytes) -> dict:
    """amdgpu_ih.c amdgpu_ih_decode_iv_helper, written out."""
    dw = [int.from_bytes(raw[i * 4:i * 4 + 4], "little") for i in range(8)]
    return dict(client_id=dw[0] & 0xFF, src_id=dw[0] >> 8 & 0xFF, ring_id=dw[0] >> 16 & 0xFF, vmid=dw[0] >> 24 & 0xF,
                vmid_src=dw[0] >> 31, timestamp=dw[1] | (dw[2] & 0xFFFF) << 32, timestamp_src=dw[2] >> 31,
                pasid=dw[3] & 0xFFFF, node_id=dw[3] >> 16 & 0xFF, src_data=dw[4:8])


def rb_cntl(card, reg="IH_RB_CNTL", *, size=RING_SIZE, bus=True, overflow=True, writeback=True, drain=False):
    """ih_v6_0_rb_cntl (+ enable_ring's ring-1 tweaks)."""
    v = fld(card, reg, "MC_SPACE", 2 if bus else 4) | fld(card, reg, "RB_SIZE", (size // 4).bit_length() - 1)
    v |= fld(card, reg, "WPTR_OVERFLOW_CLEAR", 1) | fld(card, reg, "WPTR_OVERFLOW_ENABLE", int(overflow))
    v |= fld(card, reg, "MC_SNOOP", 1) | fld(card, reg, "RB_FULL_DRAIN_ENABLE", int(drain))
    if reg == "IH_RB_CNTL":
        v |= fld(card, reg, "WPTR_WRITEBACK_ENABLE", int(writeback))
    return v


def enable_ring(card, addr, wptr_addr=None, *, ring=0, doorbell=None, **kw):
    """ih_v6_0_enable_ring then ih_v6_0_toggle_ring_interrupts(enable) for one ring."""
    s = "" if ring == 0 else "_RING1"
    w = card.regs.write
    w(f"IH_RB_BASE{s}", addr >> 8 & 0xFFFFFFFF)
    w(f"IH_RB_BASE_HI{s}", addr >> 40 & 0xFF)
    kw.setdefault("writeback", wptr_addr is not None)  # a writeback to bus address 0 would hit host address 0
    cntl = rb_cntl(card, f"IH_RB_CNTL{s}", **kw)
    w(f"IH_RB_CNTL{s}", cntl)
    if ring == 0 and wptr_addr is not None:
        w("IH_RB_WPTR_ADDR_LO", wptr_addr & 0xFFFFFFFF)
        w("IH_RB_WPTR_ADDR_HI", wptr_addr >> 32 & 0xFFFF)
    w(f"IH_RB_WPTR{s}", 0)
    w(f"IH_RB_RPTR{s}", 0)
    db = 0 if doorbell is None else fld(card, "IH_DOORBELL_RPTR", "OFFSET", doorbell) | \
        fld(card, "IH_DOORBELL_RPTR", "ENABLE", 1)
    w(f"IH_DOORBELL_RPTR{s}", db)
    reg = f"IH_RB_CNTL{s}"
    cntl = cntl | fld(card, reg, "RB_ENABLE", 1)
    clear = fld(card, reg, "WPTR_OVERFLOW_CLEAR", 1)
    w(reg, cntl & ~clear)
    w(reg, cntl | clear)
    cntl &= ~clear
    if ring == 0:
        cntl |= fld(card, reg, "ENABLE_INTR", 1)
    w(reg, cntl)


def wptr_bits(card, value):
    m = oss(card)
    return value & m.IH_RB_WPTR__OFFSET_MASK, bool(value & m.IH_RB_WPTR__RB_OVERFLOW_MASK)


# -- registers --
def test_registers_sit_at_the_header_offsets(card):
    m = oss(card)
    base = card.board.block("OSSSYS").bases[0][0]
    for name in ("IH_RB_CNTL", "IH_RB_BASE", "IH_RB_WPTR_ADDR_LO", "IH_DOORBELL_RPTR", "IH_RB_CNTL_RING1",
                 "IH_CNTL2", "IH_RING1_CLIENT_CFG_DATA", "IH_VMID_7_LUT_MM"):
        assert card.regs.reg(name).address == base + getattr(m, f"reg{name}")
    card.regs.write("IH_RB_BASE_HI", 0xFFFF_FFFF)  # ADDR is 8 bits: the rest is reserved
    assert card.regs.read("IH_RB_BASE_HI") == 0xFF


def test_kernel_irq_init_sequence_touches_only_modelled_registers(card):
    host = Host(RING_SIZE + 4096)
    r = card.regs
    # ih_v6_0_irq_init: toggle off (RB_ENABLE 0, RPTR/WPTR 0), then both rings, storm/flood/MSI storm, routing,
    # toggle on, force_update_wptr_for_self_int(0, 8, true); then the clock/power gating the IP offers.
    for s in ("", "_RING1"):
        r.write(f"IH_RB_CNTL{s}", r.read(f"IH_RB_CNTL{s}") & ~1)
        r.write(f"IH_RB_RPTR{s}", 0)
        r.write(f"IH_RB_WPTR{s}", 0)
    enable_ring(card, host.addr, host.addr + RING_SIZE)
    enable_ring(card, host.addr + RING_SIZE + 2048, ring=1, overflow=False, drain=True, size=1024)
    r.write("IH_STORM_CLIENT_LIST_CNTL", r.read("IH_STORM_CLIENT_LIST_CNTL") | 1 << 18)
    r.write("IH_INT_FLOOD_CNTL", r.read("IH_INT_FLOOD_CNTL") | fld(card, "IH_INT_FLOOD_CNTL", "FLOOD_CNTL_ENABLE", 1))
    r.write("IH_MSI_STORM_CTRL", fld(card, "IH_MSI_STORM_CTRL", "DELAY", 3))
    r.write("IH_RING1_CLIENT_CFG_INDEX", 0)
    r.write("IH_RING1_CLIENT_CFG_DATA", 0xA | fld(card, "IH_RING1_CLIENT_CFG_DATA", "SOURCE_ID_MATCH_ENABLE", 1))
    r.write("IH_CNTL2", 8 | fld(card, "IH_CNTL2", "SELF_IV_FORCE_WPTR_UPDATE_ENABLE", 1))
    r.write("IH_CLK_CTRL", r.read("IH_CLK_CTRL"))
    r.write("IH_MEM_POWER_CTRL", r.read("IH_MEM_POWER_CTRL"))
    r.write("IH_CHICKEN", r.read("IH_CHICKEN"))
    assert r.errors == [] and card.ih.errors == []
    assert card.regs.read("IH_RING1_CLIENT_CFG_DATA") & 0xFF == 0xA


# -- posting --
def test_post_writes_the_iv_entry_and_the_writeback(card):
    host = Host(2 * RING_SIZE)
    enable_ring(card, host.addr, host.addr + RING_SIZE + 64)
    irqs = card.function.counts["interrupts"]
    assert card.ih.post(0x1B, 0xB5, [1, 2, 3, 0xFFFFFFFF], vmid=5, vmid_src=1, ring_id=7, pasid=0x8123, node_id=2)
    e = decode(host.read(0, 32))
    assert e == dict(client_id=0x1B, src_id=0xB5, ring_id=7, vmid=5, vmid_src=1, timestamp=e["timestamp"],
                     timestamp_src=0, pasid=0x8123, node_id=2, src_data=[1, 2, 3, 0xFFFFFFFF])
    assert wptr_bits(card, card.regs.read("IH_RB_WPTR")) == (32, False)
    assert host.u32(RING_SIZE + 64) == 32  # the writeback holds the whole IH_RB_WPTR value
    assert card.function.counts["interrupts"] == irqs + 1  # ENABLE_INTR: one interrupt per entry
    assert card.ih.post(0x0A, 0)
    e2 = decode(host.read(32, 32))
    assert e2["timestamp"] > e["timestamp"] and e2["src_data"] == [0, 0, 0, 0]
    assert host.u32(RING_SIZE + 64) == 64 and card.ih.rings[0].pending() == 2


def test_ring_in_vram_by_mc_address(card):
    # mmhub_v3_0 system aperture over the FB: VMID 0 MC addresses in it are VRAM (the ring as tinygrad places it)
    card.regs.write("MMMC_VM_SYSTEM_APERTURE_LOW_ADDR", FB >> 18)
    card.regs.write("MMMC_VM_SYSTEM_APERTURE_HIGH_ADDR", (FB + VRAM - 1) >> 18)
    ring, wb = 1 * MiB, 1 * MiB + RING_SIZE
    enable_ring(card, FB + ring, FB + wb, bus=False)
    assert card.ih.post(0x12, 0, [0xABC])
    assert decode(card.vram_read(ring, 32))["src_data"][0] == 0xABC
    assert int.from_bytes(card.vram_read(wb, 4), "little") == 32
    assert card.ih.errors == []


def test_disabled_ring_drops_and_no_interrupt_without_enable_intr(card):
    host = Host(RING_SIZE)
    assert not card.ih.post(1, 2)  # never enabled
    assert card.ih.rings[0].dropped == 1
    enable_ring(card, host.addr)
    card.regs.write("IH_RB_CNTL", card.regs.read("IH_RB_CNTL") & ~fld(card, "IH_RB_CNTL", "ENABLE_INTR", 1))
    irqs = card.function.counts["interrupts"]
    assert card.ih.post(1, 2)
    assert card.function.counts["interrupts"] == irqs


def test_pasid_comes_from_the_vmid_lut(card):
    host = Host(RING_SIZE)
    enable_ring(card, host.addr)
    card.regs.write("IH_VMID_3_LUT", 0x1234)     # gmc_v11_0_emit_pasid_mapping, GFX hub
    card.regs.write("IH_VMID_3_LUT_MM", 0x0777)  # ... MM hub
    card.ih.post(0x0A, 0, vmid=3)
    card.ih.post(0x12, 0, vmid=3, vmid_src=1)
    assert decode(host.read(0, 32))["pasid"] == 0x1234
    assert decode(host.read(32, 32))["pasid"] == 0x0777


def test_doorbell_read_pointer(card):
    host = Host(RING_SIZE)
    size = 128  # 4 slots, 3 usable
    enable_ring(card, host.addr, size=size, doorbell=0x10)
    for i in range(3):
        assert card.ih.post(1, i)
    assert card.ih.rings[0].pending() == 3
    card.function.bar_write32(2, 0x10 * 4, 64)  # WDOORBELL32(doorbell_index, rptr): two entries consumed
    assert card.regs.read("IH_RB_RPTR") == 64  # ih_v6_0_irq_rearm reads the doorbell's value back here
    assert card.ih.rings[0].pending() == 1
    assert card.ih.post(1, 3) and not card.ih.rings[0].overflowed()


def test_bad_arguments_are_errors(card):
    for kw in (dict(client_id=256, src_id=0), dict(client_id=0, src_id=0, vmid=16),
               dict(client_id=0, src_id=0, src_data=[0] * 5), dict(client_id=0, src_id=0, pasid=1 << 16),
               dict(client_id=0, src_id=0, ring=2)):
        with pytest.raises(ValueError):
            card.ih.post(**kw)


# -- fault injection: overflow --
def test_overflow_overwrites_flags_and_the_kernel_recovers(card):
    host = Host(RING_SIZE)
    wb = 2048
    size = 128  # 4 slots: full after 3 (WPTR may not catch RPTR)
    enable_ring(card, host.addr, host.addr + wb, size=size)
    for i in range(3):
        card.ih.post(1, i)
    assert not card.ih.rings[0].overflowed()
    assert card.ih.post(1, 3)  # the IH writes on over the oldest unread entry and flags it
    assert card.ih.post(1, 4)
    wptr, ovf = wptr_bits(card, host.u32(wb))
    assert ovf and wptr == (5 * 32) % size and card.ih.rings[0].overflows == 2
    assert decode(host.read(0, 32))["src_id"] == 4  # slot 0 overwritten
    # ih_v6_0_get_wptr: writeback says overflow; the register agrees; rptr = wptr + 32; CLEAR 1 then 0
    wptr, ovf = wptr_bits(card, card.regs.read("IH_RB_WPTR"))
    assert ovf
    rptr = (wptr + 32) % size
    assert decode(host.read(rptr, 32))["src_id"] == 2  # the oldest entry not overwritten
    cntl = card.regs.read("IH_RB_CNTL")
    clear = fld(card, "IH_RB_CNTL", "WPTR_OVERFLOW_CLEAR", 1)
    card.regs.write("IH_RB_CNTL", cntl | clear)
    card.regs.write("IH_RB_CNTL", cntl & ~clear)
    assert not wptr_bits(card, card.regs.read("IH_RB_WPTR"))[1]
    card.regs.write("IH_RB_RPTR", rptr)  # the kernel reads on from there up to WPTR, then writes RPTR = WPTR
    assert card.ih.rings[0].pending() == 3
    card.regs.write("IH_RB_RPTR", wptr)
    assert card.ih.post(1, 5) and not card.ih.rings[0].overflowed()


def test_overflow_clear_needs_a_rising_edge(card):
    host = Host(RING_SIZE)
    enable_ring(card, host.addr, size=64)  # 2 slots, 1 usable
    card.ih.post(1, 0)
    card.ih.post(1, 1)
    assert card.ih.rings[0].overflowed()
    cntl = card.regs.read("IH_RB_CNTL")
    clear = fld(card, "IH_RB_CNTL", "WPTR_OVERFLOW_CLEAR", 1)
    card.regs.write("IH_RB_CNTL", cntl | clear)
    card.ih.post(1, 2)  # overflows again while CLEAR is held at 1
    card.regs.write("IH_RB_CNTL", cntl | clear)  # 1 -> 1: no switch, the flag stays
    assert card.ih.rings[0].overflowed()


def test_overflow_disabled_overwrites_silently(card):
    host = Host(RING_SIZE)
    enable_ring(card, host.addr, host.addr + 2048, size=128, overflow=False)
    for i in range(6):
        assert card.ih.post(1, i)
    assert not wptr_bits(card, host.u32(2048))[1] and card.ih.rings[0].overflows == 3


def test_full_drain_drops_new_entries_on_ring1(card):
    host = Host(RING_SIZE)
    enable_ring(card, host.addr, ring=1, size=128, overflow=True, drain=True)
    for i in range(3):
        assert card.ih.post(1, i, ring=1)
    assert not card.ih.post(1, 9, ring=1)  # drained: the unread entries stay
    assert [decode(host.read(32 * i, 32))["src_id"] for i in range(3)] == [0, 1, 2]
    assert card.ih.rings[1].dropped == 1 and card.ih.rings[1].overflowed()


def test_bad_configuration_is_reported_not_raised(card):
    host = Host(RING_SIZE)
    card.regs.write("IH_RB_BASE", host.addr >> 8 & 0xFFFFFFFF)
    card.regs.write("IH_RB_BASE_HI", host.addr >> 40)
    cntl = fld(card, "IH_RB_CNTL", "MC_SPACE", 1) | fld(card, "IH_RB_CNTL", "RB_SIZE", 10) | 1
    card.regs.write("IH_RB_CNTL", cntl)
    assert "MC_SPACE 1" in card.ih.errors[-1] and card.function.faults
    assert not card.ih.post(1, 0)
    card.regs.write("IH_RB_CNTL", 0)
    card.regs.write("IH_RB_CNTL", fld(card, "IH_RB_CNTL", "MC_SPACE", 2) | fld(card, "IH_RB_CNTL", "RB_SIZE", 17) | 1)
    assert "RB_SIZE 17" in card.ih.errors[-1]


def test_unreachable_ring_memory_is_an_error(card):
    card.function.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MEMORY, 2)  # bus mastering off: no DMA
    enable_ring(card, 0x1000_0000)
    assert not card.ih.post(1, 0)
    assert "not written" in card.ih.errors[-1]


def test_own_write_fault_in_the_hub_is_not_an_iv(card):
    # MC_SPACE 4 with the MM hub's VMID 0 aperture closed and context 0 disabled: the IH's write faults in the hub
    enable_ring(card, FB + MiB, bus=False)
    n = len(card.vm_faults)
    assert not card.ih.post(1, 0)
    assert len(card.vm_faults) == n + 1 and card.ih.own_faults == 1 and card.ih.rings[0].written == 0


# -- ring 1 routing and the self IV --
def test_routed_client_goes_to_ring1_with_a_self_iv(card):
    h0, h1 = Host(RING_SIZE), Host(RING_SIZE)
    enable_ring(card, h0.addr)
    enable_ring(card, h1.addr, ring=1, overflow=False, drain=True)
    card.regs.write("IH_RING1_CLIENT_CFG_INDEX", 0)
    match = fld(card, "IH_RING1_CLIENT_CFG_DATA", "SOURCE_ID_MATCH_ENABLE", 1)
    card.regs.write("IH_RING1_CLIENT_CFG_DATA", 0x0A | match)
    assert card.ih.post(0x0A, 1)  # the source does not match: ring 0
    assert card.ih.rings[0].written == 1 and card.ih.rings[1].written == 0
    assert card.ih.post(0x0A, 0, [0x55])  # ih_v6_0_irq_init's route: GFX UTCL2 faults to ring 1
    assert decode(h1.read(0, 32))["src_data"][0] == 0x55 and card.ih.rings[0].written == 1
    card.regs.write("IH_CNTL2", fld(card, "IH_CNTL2", "SELF_IV_FORCE_WPTR_UPDATE_ENABLE", 1))
    assert card.ih.post(0x0A, 0)
    e = decode(h0.read(32, 32))  # ih_v6_0_self_irq: client IH, ring_id 1, src_data[0] = ring 1's WPTR
    assert (e["client_id"], e["src_id"], e["ring_id"], e["src_data"][0]) == (0, 0, 1, 64)


# -- the GMC's VM faults --
def cntl_mask(card, p, *names):
    mod = importlib.import_module(f"autogen.{card.regs.header('GC' if p == 'GC' else 'MMHUB')}")
    return sum(getattr(mod, f"{p}VM_CONTEXT0_CNTL__{n}_MASK") for n in names)


def test_vm_faults_become_the_ivs_the_kernel_decodes(card):
    host = Host(RING_SIZE)
    enable_ring(card, host.addr)
    card.regs.write("IH_VMID_3_LUT", 0x42)
    va = 0xABCD_1234_5000
    with pytest.raises(VMFault):
        card.gmc.walk(3, va, True)  # context 3 disabled: always reported
    e = decode(host.read(0, 32))
    # gmc_v11_0_process_interrupt: client GFX -> gfxhub; addr = src_data[0] << 12 | (src_data[1] & 0xf) << 44
    assert (e["client_id"], e["src_id"], e["vmid"], e["vmid_src"], e["pasid"]) == (0x0A, 0, 3, 0, 0x42)
    assert (e["src_data"][0] << 12 | (e["src_data"][1] & 0xF) << 44) == va
    assert e["src_data"][1] & 0x20 and not e["src_data"][1] & 0x80  # write, not retry
    with pytest.raises(VMFault):
        card.gmc.walk(2, 0x7000, hub="mm")
    e = decode(host.read(32, 32))
    assert (e["client_id"], e["src_id"], e["vmid"], e["vmid_src"]) == (0x12, 0, 2, 1)
    assert e["src_data"][0] == 7 and not e["src_data"][1] & 0x20
    assert card.ih.vm_faults_posted == 2


def test_retry_fault_and_interrupt_disabled_fault(card):
    host = Host(RING_SIZE)
    enable_ring(card, host.addr)
    # context 4 enabled, depth 0, base PDE invalid: a PDE fault; with RETRY and the PDE0 interrupt it is a retry IV
    card.regs.write("GCVM_CONTEXT4_CNTL", cntl_mask(card, "GC", "ENABLE_CONTEXT",
                                                    "RETRY_PERMISSION_OR_INVALID_PAGE_FAULT",
                                                    "PDE0_PROTECTION_FAULT_ENABLE_INTERRUPT"))
    card.regs.write("GCVM_CONTEXT4_PAGE_TABLE_END_ADDR_LO32", 0xFFFFFFFF)
    card.regs.write("GCVM_CONTEXT4_PAGE_TABLE_END_ADDR_HI32", 0xF)
    with pytest.raises(VMFault):
        card.gmc.walk(4, 0x10_0000)
    e = decode(host.read(0, 32))
    assert e["vmid"] == 4 and e["src_data"][1] & 0x80 and e["src_data"][0] == 0x100
    card.regs.write("GCVM_CONTEXT4_CNTL", cntl_mask(card, "GC", "ENABLE_CONTEXT"))
    with pytest.raises(VMFault):
        card.gmc.walk(4, 0x20_0000)
    assert card.ih.rings[0].written == 1 and card.ih.vm_faults_seen == 2


def test_attach_before_gmc_then_watch():
    c = AMGPU("gfx1100", vram_size=VRAM, boot_delay_s=0)
    try:
        ih = attach_ih(c)
        attach_gmc(c)
        c.function.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MASTER | R.PCI_COMMAND_MEMORY, 2)
        host = Host(RING_SIZE)
        enable_ring(c, host.addr)
        with pytest.raises(VMFault):
            c.gmc.walk(1, 0x1000)
        assert ih.vm_faults_seen == 0  # attach_gmc replaced the list
        ih.watch_vm_faults()
        with pytest.raises(VMFault):
            c.gmc.walk(1, 0x1000)
        assert ih.vm_faults_posted == 1 and len(c.vm_faults) == 2
        with pytest.raises(ValueError, match="already"):
            attach_ih(c)
    finally:
        c.close()


def test_function_reset_puts_the_ih_back(card):
    host = Host(RING_SIZE)
    enable_ring(card, host.addr)
    card.regs.write("IH_RING1_CLIENT_CFG_DATA", 0x0A)
    card.ih.post(1, 0)
    card.function.flr()
    card.function.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MASTER | R.PCI_COMMAND_MEMORY, 2)
    assert card.regs.read("IH_RB_CNTL") == 0 and card.regs.read("IH_RB_WPTR") == 0
    assert card.ih._route_written == [False] * 8
    assert not card.ih.post(1, 0)
    enable_ring(card, host.addr)
    assert card.ih.post(1, 0) and card.regs.read("IH_RB_WPTR") == 32
