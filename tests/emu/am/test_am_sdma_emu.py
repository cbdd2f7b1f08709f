"""The emulated SDMA registers (emu/am/sdma.py) driven directly, in the order sdma_v6_0.c / sdma_v7_0.c program them
(sdma_v*_start: unhalt, then gfx_resume for queue 0 of each instance). Offsets and field values are typed here from
the kernel's gc_11_0_0 / gc_12_0_0 headers, not taken from the model. The PSP is stood in for by an object with the
`loaded` dict the model reads (the PSP's own tests cover how firmware gets there)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from autogen import pci_regs as R
from emu.am.gmc import attach_gmc
from emu.am.gpu import AMGPU
from emu.am.nbio import attach_nbio
from emu.am.regs import RegisterError
from emu.am.sdma import attach_sdma

MiB = 1 << 20
VRAM = 64 * MiB
FB = 0x8000 << 24  # the GMC model's FB location (GCMC_VM_FB_LOCATION_BASE reset)
TH0, TH1 = 71, 72  # psp_gfx_if.h GFX_FW_TYPE_SDMA_UCODE_TH0 / _TH1
RING = 256 * 1024  # amdgpu's SDMA ring size
# gc_11_0_0_sh_mask.h / gc_12_0_0_sh_mask.h SDMA0_QUEUE0_RB_CNTL (same bits in both)
RB_ENABLE, RB_SIZE_SHIFT, WPTR_POLL, FW_WPTR_POLL, RPTR_WB, RB_PRIV = 0x1, 1, 0x100, 0x800, 0x1000, 0x800000
DOORBELL_ENABLE = 0x10000000  # SDMA0_QUEUE0_DOORBELL__ENABLE_MASK
HALT, TH1_RESET = 0x1, 0x2000  # SDMA0_F32_CNTL__HALT_MASK / __TH1_RESET_MASK (gfx12 MCU_CNTL: HALT 0x1, RESET 0x2)
DOORBELLS = (0x1C0, 0x1E0)  # dword indexes, inside the SDMA S2A range below


def s2a(offset: int, size: int) -> int:
    """S2A_DOORBELL_ENTRY_N_CTRL (nbio_4_3_0_sh_mask.h): ENABLE [0], RANGE_OFFSET [16:7], RANGE_SIZE [24:17]."""
    return 1 | offset << 7 | size << 17


@pytest.fixture(params=["gfx1100", "gfx1201"])
def card(request):
    c = AMGPU(request.param, vram_size=VRAM, boot_delay_s=0)
    attach_gmc(c)
    attach_nbio(c)
    attach_sdma(c)
    c.function.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MASTER | R.PCI_COMMAND_MEMORY, 2)
    # VMID 0 reaches VRAM through the system aperture (gfxhub_v3_0_init_system_aperture_regs)
    c.regs.write("GCMC_VM_SYSTEM_APERTURE_LOW_ADDR", FB >> 18)
    c.regs.write("GCMC_VM_SYSTEM_APERTURE_HIGH_ADDR", (FB + VRAM - 1) >> 18)
    # soc21_common_hw_init: doorbell aperture on; sdma_doorbell_range: S2A port 2 (set directly: NBIO's own tests
    # cover reaching it through RSMU)
    c.regs.write("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN", 1)
    c.nbio.entries[2].value = s2a(DOORBELLS[0], 0x40)
    c.psp = SimpleNamespace(loaded={TH0: "th0", TH1: "th1"})
    yield c
    c.close()


def gfx12(card) -> bool:
    return card.target == "gfx1201"


def cntl(card) -> str:
    return "MCU_CNTL" if gfx12(card) else "F32_CNTL"


def r(card, i: int, short: str) -> str:
    return f"SDMA{i}_{short}"


def unhalt(card, i: int) -> None:
    # sdma_v6_0_gfx_resume: HALT 0, TH1_RESET 0 (sdma_v7_0: MCU_CNTL HALT 0, RESET 0)
    v = card.regs.read(r(card, i, cntl(card)))
    card.regs.write(r(card, i, cntl(card)), v & ~(HALT | (0x2 if gfx12(card) else TH1_RESET)))


def resume(card, i: int, ring: int, *, rptr: int, wptr: int, doorbell: int = -1, enable: bool = True,
           doorbell_on: bool = True) -> None:
    """sdma_v6_0_gfx_resume / sdma_v7_0_gfx_resume for instance i, written out here."""
    rg = card.regs
    doorbell = DOORBELLS[i] if doorbell < 0 else doorbell
    rb_cntl = rg.read(r(card, i, "QUEUE0_RB_CNTL"))
    rb_cntl = rb_cntl & ~0x3E | ((RING // 4).bit_length() - 1) << RB_SIZE_SHIFT | RB_PRIV
    rg.write(r(card, i, "QUEUE0_RB_CNTL"), rb_cntl)
    for p in ("RPTR", "RPTR_HI", "WPTR", "WPTR_HI"):
        rg.write(r(card, i, f"QUEUE0_RB_{p}"), 0)
    rg.write(r(card, i, "QUEUE0_RB_WPTR_POLL_ADDR_LO"), wptr & 0xFFFFFFFF)
    rg.write(r(card, i, "QUEUE0_RB_WPTR_POLL_ADDR_HI"), wptr >> 32)
    rg.write(r(card, i, "QUEUE0_RB_RPTR_ADDR_HI"), rptr >> 32)
    rg.write(r(card, i, "QUEUE0_RB_RPTR_ADDR_LO"), rptr & 0xFFFFFFFC)
    rb_cntl = rb_cntl & ~WPTR_POLL | RPTR_WB | FW_WPTR_POLL
    rg.write(r(card, i, "QUEUE0_RB_BASE"), ring >> 8 & 0xFFFFFFFF)
    rg.write(r(card, i, "QUEUE0_RB_BASE_HI"), ring >> 40)
    rg.write(r(card, i, "QUEUE0_MINOR_PTR_UPDATE"), 1)
    rg.write(r(card, i, "QUEUE0_RB_WPTR"), 0)
    rg.write(r(card, i, "QUEUE0_RB_WPTR_HI"), 0)
    db = rg.read(r(card, i, "QUEUE0_DOORBELL"))
    rg.write(r(card, i, "QUEUE0_DOORBELL"), db | DOORBELL_ENABLE if doorbell_on else db & ~DOORBELL_ENABLE)
    rg.write(r(card, i, "QUEUE0_DOORBELL_OFFSET"), doorbell << 2)
    rg.write(r(card, i, "QUEUE0_MINOR_PTR_UPDATE"), 0)
    rg.write(r(card, i, "UTCL1_CNTL"), rg.read(r(card, i, "UTCL1_CNTL")) & ~0x61F | 3 << 9 | 9)
    unhalt(card, i)
    if enable:
        rg.write(r(card, i, "QUEUE0_RB_CNTL"), rb_cntl | RB_ENABLE)
    rg.write(r(card, i, "QUEUE0_IB_CNTL"), rg.read(r(card, i, "QUEUE0_IB_CNTL")) | 1)


def layout(i: int) -> dict[str, int]:
    return {"ring": FB + (1 + i) * MiB, "rptr": FB + 8 * MiB + i * 0x100, "wptr": FB + 8 * MiB + 0x80 + i * 0x100}


def bring_up(card, i: int, **kw) -> None:
    lay = layout(i)
    resume(card, i, lay["ring"], rptr=lay["rptr"], wptr=lay["wptr"], **kw)


def test_registers_sit_where_the_kernel_puts_them(card):
    rf = card.regs
    gc = card.board.block("GC").bases[0]
    # gc_11_0_0_offset.h / gc_12_0_0_offset.h: regSDMA0_QUEUE0_RB_CNTL 0x80 (seg 0); SDMA1 = + SDMA1_REG_OFFSET 0x600
    assert rf.reg("SDMA0_QUEUE0_RB_CNTL").address == gc[0] + 0x80
    assert rf.reg("SDMA1_QUEUE0_RB_CNTL").address == gc[0] + 0x680
    if gfx12(card):  # regSDMA0_MCU_CNTL 0x588e seg 1; SDMA1 + SDMA1_HYP_DEC_REG_OFFSET 0x20
        assert rf.reg("SDMA0_MCU_CNTL").address == gc[1] + 0x588E
        assert rf.reg("SDMA1_MCU_CNTL").address == gc[1] + 0x58AE
        assert rf.reg("SDMA0_QUEUE0_DOORBELL_OFFSET").address == gc[0] + 0x91
    else:  # regSDMA0_F32_CNTL 0x589a seg 1
        assert rf.reg("SDMA0_F32_CNTL").address == gc[1] + 0x589A
        assert rf.reg("SDMA1_F32_CNTL").address == gc[1] + 0x58BA
        assert rf.reg("SDMA0_QUEUE0_DOORBELL_OFFSET").address == gc[0] + 0xAB
        assert rf.read("SDMA0_QUEUE0_RB_CNTL") == 0x00040800  # gc_11_0_0_default.h
        assert rf.read("SDMA1_UTCL1_PAGE") == 0x010CEC00
    # every instance starts halted
    assert rf.read(r(card, 0, cntl(card))) & HALT and rf.read(r(card, 1, cntl(card))) & HALT


def test_the_kernels_resume_activates_both_queues(card):
    seen = []
    card.sdma.on_queue_active.append(seen.append)
    for i in (0, 1):
        bring_up(card, i)
    assert sorted(card.sdma.queues) == [0, 1]
    for i in (0, 1):
        q = card.sdma.queues[i]
        lay = layout(i)
        assert (q.ring_addr, q.ring_size, q.vmid) == (lay["ring"], RING, 0)
        assert q.ring_target == ("vram", (1 + i) * MiB)
        assert (q.rptr_addr, q.wptr_poll_addr) == (lay["rptr"], lay["wptr"])
        assert (q.doorbell_index, q.doorbell_offset) == (DOORBELLS[i], DOORBELLS[i] * 4)
    assert [q.instance for q in seen] == [0, 1]
    assert card.regs.errors == [] and card.sdma.errors == []
    # is_idle: STATUS_REG.IDLE
    assert card.regs.read("SDMA0_STATUS_REG") & 1
    card.sdma.busy = lambda inst: inst == 0
    assert not card.regs.read("SDMA0_STATUS_REG") & 1 and card.regs.read("SDMA1_STATUS_REG") & 1


def test_unhalt_needs_the_psp_loaded_firmware(card):
    card.psp.loaded = {TH1: "th1"} if not gfx12(card) else {}
    with pytest.raises(RegisterError, match=f"SDMA0_{cntl(card)}.*GFX_FW_TYPE_SDMA_UCODE_TH0"):
        unhalt(card, 0)
    assert card.regs.read(r(card, 0, cntl(card))) & HALT  # stays halted
    card.psp.loaded = {TH0: "th0"}
    if gfx12(card):  # sdma_v7_0: one RS64 image, loaded as TH0
        unhalt(card, 0)
        assert not card.regs.read("SDMA0_MCU_CNTL") & HALT
    else:  # sdma_v6_0: TH0 and TH1
        with pytest.raises(RegisterError, match="GFX_FW_TYPE_SDMA_UCODE_TH1"):
            unhalt(card, 0)
    del card.psp
    with pytest.raises(RegisterError, match="not loaded"):
        unhalt(card, 1)


def test_rb_enable_while_halted_waits_for_the_unhalt(card):
    lay = layout(0)
    rg = card.regs
    resume(card, 0, lay["ring"], rptr=lay["rptr"], wptr=lay["wptr"])
    assert 0 in card.sdma.queues
    gone = []
    card.sdma.on_queue_inactive.append(gone.append)
    rg.write(r(card, 0, cntl(card)), rg.read(r(card, 0, cntl(card))) | HALT)  # sdma_v6_0_enable(false) halts
    assert 0 not in card.sdma.queues and [q.instance for q in gone] == [0]
    unhalt(card, 0)  # RB_ENABLE still set: the queue runs again
    assert 0 in card.sdma.queues
    rg.write("SDMA0_QUEUE0_RB_CNTL", rg.read("SDMA0_QUEUE0_RB_CNTL") & ~RB_ENABLE)  # gfx_stop
    assert 0 not in card.sdma.queues and len(gone) == 2


@pytest.mark.parametrize("bad", ["size", "unmapped", "rptr", "doorbell_off", "unrouted", "shared_doorbell"])
def test_bad_setups_name_the_register(card, bad):
    lay = layout(0)
    rg = card.regs
    if bad == "shared_doorbell":
        bring_up(card, 1)
    kw = dict(rptr=lay["rptr"], wptr=lay["wptr"])
    ring = lay["ring"]
    match = {"size": "SDMA0_QUEUE0_RB_CNTL.RB_SIZE", "unmapped": "SDMA0_QUEUE0_RB_BASE", "rptr":
             "SDMA0_QUEUE0_RB_RPTR_ADDR_LO", "doorbell_off": "SDMA0_QUEUE0_DOORBELL.ENABLE", "unrouted":
             "SDMA0_QUEUE0_DOORBELL_OFFSET.*not to SDMA", "shared_doorbell": "already the doorbell of SDMA1"}[bad]
    if bad == "unmapped":
        ring = 0x1000_0000_0000  # outside the system aperture, and VMID 0's context is off
    if bad == "rptr":
        kw["rptr"] = 0x2000_0000_0000
    if bad == "doorbell_off":
        kw["doorbell_on"] = False
    if bad == "unrouted":
        kw["doorbell"] = 0x10
    if bad == "shared_doorbell":
        kw["doorbell"] = DOORBELLS[1]
    if bad == "size":
        resume(card, 0, ring, enable=False, **kw)
        with pytest.raises(RegisterError, match=match):
            rg.write("SDMA0_QUEUE0_RB_CNTL", rg.read("SDMA0_QUEUE0_RB_CNTL") & ~0x3E | 30 << 1 | RB_ENABLE)
    else:
        with pytest.raises(RegisterError, match=match):
            resume(card, 0, ring, **kw)
    assert 0 not in card.sdma.queues
    assert card.sdma.errors and card.function.faults  # recorded, and surfaced as a PCI function fault


def test_wptr_may_only_go_back_under_minor_ptr_update(card):
    bring_up(card, 0)
    rg = card.regs
    seen = []
    card.sdma.on_wptr.append(lambda q, w: seen.append((q.instance, w)))
    rg.write("SDMA0_QUEUE0_RB_WPTR", 0x100)  # sdma_v6_0_ring_set_wptr without doorbell: LO then HI
    rg.write("SDMA0_QUEUE0_RB_WPTR_HI", 0)
    assert seen == [(0, 0x100)]
    rg.write("SDMA0_QUEUE0_RB_WPTR", 0x40)
    with pytest.raises(RegisterError, match="MINOR_PTR_UPDATE"):
        rg.write("SDMA0_QUEUE0_RB_WPTR_HI", 0)
    rg.write("SDMA0_QUEUE0_MINOR_PTR_UPDATE", 1)
    rg.write("SDMA0_QUEUE0_RB_WPTR", 0)
    rg.write("SDMA0_QUEUE0_RB_WPTR_HI", 0)
    rg.write("SDMA0_QUEUE0_MINOR_PTR_UPDATE", 0)
    assert seen[-1] == (0, 0)


def test_doorbells_reach_the_queue_they_belong_to(card):
    bring_up(card, 0)
    bring_up(card, 1)
    got = []
    card.sdma.on_doorbell.append(lambda q, v: got.append((q.instance, v)))
    assert card.nbio.ring(DOORBELLS[1] * 4, 0x80) == ("SDMA", 0)
    assert got == [(1, 0x80)]
    card.nbio.ring((DOORBELLS[0] + 2) * 4, 0x20)  # inside the SDMA range, no queue's doorbell
    assert card.sdma.stray_doorbells == [((DOORBELLS[0] + 2) * 4, 0x20)]


def test_reset_halts_and_forgets_the_queues(card):
    bring_up(card, 0)
    gone = []
    card.sdma.on_queue_inactive.append(gone.append)
    card.power_on()  # what a function reset (FLR) runs: AMGPU on_reset=power_on
    assert card.sdma.queues == {} and [q.instance for q in gone] == [0]
    assert card.regs.read(r(card, 0, cntl(card))) & HALT
    assert not card.regs.read("SDMA0_QUEUE0_RB_CNTL") & RB_ENABLE


def test_attach_twice_refused(card):
    with pytest.raises(ValueError, match="already has an SDMA model"):
        attach_sdma(card)
