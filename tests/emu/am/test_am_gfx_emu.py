"""The emulated GFX block (emu/am/gfx.py) driven through its registers the way gfx_v11_0.c / gfx_v12_0.c do: the RLC
autoload status after the PSP's AUTOLOAD_RLC, MEC halt/unhalt, GRBM-selected HQD banks, activation checks (ring,
rptr/wptr, doorbell range, EOP, MQD through the GMC) and dequeue. Values are written here from the kernel's formulas
(gfx_v11_0_compute_mqd_init, gfx_v11_0_kiq_init_register), never through drivers/."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from emu.am.gfx import attach_gfx
from emu.am.gmc import attach_gmc
from emu.am.gpu import AMGPU

MiB = 1 << 20
VRAM = 64 * MiB
FB = 0x8000 << 24  # the FB aperture base the GMC model posts
# gc_11_0_0_sh_mask.h / gc_12_0_0_sh_mask.h, written out so the test does not lean on the module under test
BOOTLOAD_COMPLETE = 1 << 31
ME1_HALT, ME2_HALT = 1 << 28, 1 << 30
RS64_HALT = 1 << 30
RS64_PIPE_RESET = [1 << 16, 1 << 17, 1 << 18, 1 << 19]
RS64_PIPE_ACTIVE = [1 << 26, 1 << 27, 1 << 28, 1 << 29]
RLC_G, CP_MEC, RS64_MEC = 8, 4, 89  # psp_gfx_if.h enum psp_gfx_fw_type


def grbm(me=0, pipe=0, queue=0, vmid=0):
    # soc21_grbm_select: PIPEID 1:0, MEID 3:2, VMID 7:4, QUEUEID 10:8
    return pipe | me << 2 | vmid << 4 | queue << 8


@pytest.fixture(params=["gfx1100", "gfx1201"])
def card(request):
    c = AMGPU(request.param, vram_size=VRAM, boot_delay_s=0)
    attach_gmc(c)
    attach_gfx(c)
    # VMID 0 through the system aperture: the whole FB window is VRAM (gfxhub_v3_0_init_system_aperture_regs)
    c.regs.write("GCMC_VM_SYSTEM_APERTURE_LOW_ADDR", FB >> 18)
    c.regs.write("GCMC_VM_SYSTEM_APERTURE_HIGH_ADDR", (FB + VRAM - 1) >> 18)
    yield c
    c.close()


def autoload(card, loaded):
    """What the PSP does on AUTOLOAD_RLC: record the loaded set, run card.on_rlc_autoload."""
    card.psp = SimpleNamespace(loaded={t: object() for t in loaded}, autoload_set=frozenset(loaded))
    for hook in card.on_rlc_autoload:
        hook()


def program(card, me=1, pipe=0, queue=0, *, ring=FB + 1 * MiB, ring_size=64 * 1024, rptr=FB + 2 * MiB,
            wptr=FB + 2 * MiB + 8, eop=FB + 3 * MiB, mqd=FB + 4 * MiB, doorbell=0x10, vmid=0, active=True):
    """gfx_v11_0_kiq_init_register's writes, with gfx_v11_0_compute_mqd_init's values."""
    r = card.regs
    r.write("GRBM_GFX_CNTL", grbm(me, pipe, queue))
    r.write("CP_HQD_EOP_BASE_ADDR", (eop >> 8) & 0xFFFFFFFF)
    r.write("CP_HQD_EOP_BASE_ADDR_HI", eop >> 40)
    r.write("CP_HQD_EOP_CONTROL", 0x6 & ~0x3F | (2048 // 4).bit_length() - 2)  # order_base_2(HPD_SIZE / 4) - 1
    dbc = (doorbell << 2 | 1 << 30) if doorbell is not None else 0  # DOORBELL_OFFSET 27:2, DOORBELL_EN 30
    r.write("CP_HQD_PQ_DOORBELL_CONTROL", dbc)
    r.write("CP_MQD_BASE_ADDR", mqd & 0xFFFFFFFC)
    r.write("CP_MQD_BASE_ADDR_HI", mqd >> 32)
    r.write("CP_MQD_CONTROL", 0x100)
    r.write("CP_HQD_PQ_BASE", (ring >> 8) & 0xFFFFFFFF)
    r.write("CP_HQD_PQ_BASE_HI", ring >> 40)
    r.write("CP_HQD_PQ_CONTROL", 0x00308509 & ~0x3F | (ring_size // 4).bit_length() - 2)
    r.write("CP_HQD_PQ_RPTR_REPORT_ADDR", rptr & 0xFFFFFFFC)
    r.write("CP_HQD_PQ_RPTR_REPORT_ADDR_HI", rptr >> 32)
    r.write("CP_HQD_PQ_WPTR_POLL_ADDR", wptr & 0xFFFFFFFC)
    r.write("CP_HQD_PQ_WPTR_POLL_ADDR_HI", wptr >> 32)
    r.write("CP_MEC_DOORBELL_RANGE_LOWER", 0)
    r.write("CP_MEC_DOORBELL_RANGE_UPPER", 0x3FC)
    r.write("CP_HQD_PQ_WPTR_LO", 0)
    r.write("CP_HQD_PQ_WPTR_HI", 0)
    r.write("CP_HQD_VMID", vmid)
    if active:
        r.write("CP_HQD_ACTIVE", 1)


def test_autoload_completes_with_rlc_and_mec(card):
    r = card.regs
    assert r.read("RLC_RLCS_BOOTLOAD_STATUS") & BOOTLOAD_COMPLETE == 0
    mec = RS64_MEC if card.target == "gfx1201" else CP_MEC
    autoload(card, {RLC_G, mec})
    assert r.read("RLC_RLCS_BOOTLOAD_STATUS") & BOOTLOAD_COMPLETE
    assert r.read("CP_STAT") == 0 and card.gfx.autoload_complete


def test_autoload_stays_pending_without_mec(card):
    autoload(card, {RLC_G})
    assert card.regs.read("RLC_RLCS_BOOTLOAD_STATUS") & BOOTLOAD_COMPLETE == 0
    assert card.regs.read("CP_STAT") != 0
    assert "MEC" in card.gfx.autoload_error


def test_gfx12_needs_rs64_mec():
    c = AMGPU("gfx1201", vram_size=VRAM, boot_delay_s=0)
    try:
        attach_gmc(c)
        attach_gfx(c)
        autoload(c, {RLC_G, CP_MEC})
        assert not c.gfx.autoload_complete and "RS64_MEC" in c.gfx.autoload_error
    finally:
        c.close()


def test_status_registers_are_read_only(card):
    card.regs.write("RLC_RLCS_BOOTLOAD_STATUS", BOOTLOAD_COMPLETE)
    card.regs.write("CP_STAT", 0)
    assert card.regs.read("RLC_RLCS_BOOTLOAD_STATUS") == 0


def test_mec_reset_halted_and_unhalt(card):
    r = card.regs
    assert r.read("CP_MEC_CNTL") == ME1_HALT | ME2_HALT and r.read("CP_MEC_RS64_CNTL") == RS64_HALT
    mec = RS64_MEC if card.target == "gfx1201" else CP_MEC
    autoload(card, {RLC_G, mec})
    program(card)
    ok, why = card.gfx.queue_ready((1, 0, 0))
    assert not ok and "halted" in why
    if card.target == "gfx1201":
        # gfx_v12_0_cp_compute_enable(true): clear INVALIDATE_ICACHE, PIPEn_RESET, HALT; set PIPEn_ACTIVE
        r.write("CP_MEC_RS64_CNTL", sum(RS64_PIPE_ACTIVE))
    else:
        r.write("CP_MEC_CNTL", 0)  # gfx_v11_0_cp_compute_enable(true), F32: ME1_HALT and ME2_HALT cleared
    assert card.gfx.queue_ready((1, 0, 0)) == (True, "ready")
    if card.target == "gfx1201":
        r.write("CP_MEC_RS64_CNTL", sum(RS64_PIPE_ACTIVE) | RS64_PIPE_RESET[0])
        assert not card.gfx.queue_ready((1, 0, 0))[0] and card.gfx.queue_ready((1, 0, 0)) != (True, "ready")


def test_gfx11_rs64_follows_loaded_firmware():
    c = AMGPU("gfx1100", vram_size=VRAM, boot_delay_s=0)
    try:
        attach_gmc(c)
        attach_gfx(c)
        autoload(c, {RLC_G, RS64_MEC})
        assert c.gfx.rs64()
        c.regs.write("CP_MEC_CNTL", 0)
        assert not c.gfx.mec_running(0)  # RS64 firmware: CP_MEC_RS64_CNTL decides
        c.regs.write("CP_MEC_RS64_CNTL", RS64_PIPE_ACTIVE[0])
        assert c.gfx.mec_running(0) and not c.gfx.mec_running(1)
    finally:
        c.close()


def test_hqd_registers_are_banked_by_grbm_select(card):
    r = card.regs
    r.write("GRBM_GFX_CNTL", grbm(1, 0, 0))
    r.write("CP_HQD_PQ_BASE", 0x1111)
    r.write("GRBM_GFX_CNTL", grbm(1, 2, 3))
    assert r.read("CP_HQD_PQ_BASE") == 0
    assert r.read("CP_HQD_PQ_CONTROL") == 0x00308509  # reset value (gc_11_0_0_default.h)
    r.write("CP_HQD_PQ_BASE", 0x2222)
    r.write("GRBM_GFX_CNTL", grbm(1, 0, 0))
    assert r.read("CP_HQD_PQ_BASE") == 0x1111
    # VMID in GRBM_GFX_CNTL does not change the HQD bank
    r.write("GRBM_GFX_CNTL", grbm(1, 0, 0, vmid=5))
    assert r.read("CP_HQD_PQ_BASE") == 0x1111


def test_whole_mqd_window_is_writable(card):
    # tinygrad's setup_ring writes every dword from CP_MQD_BASE_ADDR to CP_HQD_PQ_WPTR_HI, reserved ones included
    r = card.regs
    base, last = r.reg("CP_MQD_BASE_ADDR").address, r.reg("CP_HQD_PQ_WPTR_HI").address
    r.write("GRBM_GFX_CNTL", grbm(1, 1, 1))
    for a in range(base, last + 1):
        if r._by_addr[a].name != "CP_HQD_ACTIVE":
            r.write32(a * 4, 0)
    assert not r.errors


def test_activation_records_queue_and_runs_hooks(card):
    seen = []
    card.gfx.on_queue_active.append(seen.append)
    program(card, pipe=1, queue=2, doorbell=0x20)
    q = card.gfx.queues[(1, 1, 2)]
    assert seen == [q] and not card.gfx.errors
    assert (q.ring_addr, q.ring_size, q.vmid) == (FB + MiB, 64 * 1024, 0)
    assert (q.rptr_report_addr, q.wptr_poll_addr) == (FB + 2 * MiB, FB + 2 * MiB + 8)
    assert (q.doorbell, q.eop_addr, q.eop_size, q.mqd_addr) == (0x20, FB + 3 * MiB, 2048, FB + 4 * MiB)
    card.regs.write("GRBM_GFX_CNTL", grbm(1, 1, 2))
    assert card.regs.read("CP_HQD_ACTIVE") & 1


def test_dequeue_clears_active(card):
    gone = []
    card.gfx.on_queue_inactive.append(gone.append)
    program(card)
    r = card.regs
    r.write("CP_HQD_DEQUEUE_REQUEST", 1)  # gfx_v11_0_kiq_init_register: request, then poll ACTIVE
    assert r.read("CP_HQD_ACTIVE") & 1 == 0
    assert (1, 0, 0) not in card.gfx.queues and len(gone) == 1
    assert r.read("CP_HQD_DEQUEUE_REQUEST") == 0


@pytest.mark.parametrize("bad, reg", [
    (dict(ring=0), "CP_HQD_PQ_BASE"),
    (dict(ring=FB + VRAM + 16 * MiB), "CP_HQD_PQ_BASE"),           # outside the aperture: VMID 0 faults
    (dict(rptr=0), "CP_HQD_PQ_RPTR_REPORT_ADDR"),
    (dict(doorbell=0x400), "CP_HQD_PQ_DOORBELL_CONTROL"),           # byte 0x1000 > RANGE_UPPER 0x3fc
    (dict(doorbell=None), "CP_HQD_PQ_DOORBELL_CONTROL"),            # no doorbell, no wptr polling
    (dict(eop=0), "CP_HQD_EOP_BASE_ADDR"),
    (dict(mqd=0), "CP_MQD_BASE_ADDR"),
    (dict(vmid=3), "CP_HQD_PQ_BASE"),                               # VMID 3's context is not enabled
    (dict(me=0), "GRBM_GFX_CNTL"),
])
def test_bad_bank_is_refused_naming_the_register(card, bad, reg):
    program(card, **bad)
    key = (bad.get("me", 1), 0, 0)
    assert key not in card.gfx.queues
    assert len(card.gfx.errors) == 1 and reg in card.gfx.errors[0], card.gfx.errors
    card.regs.write("GRBM_GFX_CNTL", grbm(*key))
    assert card.regs.read("CP_HQD_ACTIVE") & 1 == 0


def test_ring_must_be_mapped_through_its_end(card):
    # ring straddles the end of the FB window: its first page maps, its last does not
    program(card, ring=FB + VRAM - 4096, ring_size=64 * 1024)
    assert (1, 0, 0) not in card.gfx.queues and "CP_HQD_PQ_BASE" in card.gfx.errors[0]


def test_doorbell_range_lower_bound(card):
    program(card, doorbell=0x10, active=False)
    card.regs.write("CP_MEC_DOORBELL_RANGE_LOWER", 0x100)
    card.regs.write("CP_HQD_ACTIVE", 1)
    assert "DOORBELL_RANGE" in card.gfx.errors[0]


def test_power_on_resets_queues_and_autoload(card):
    mec = RS64_MEC if card.target == "gfx1201" else CP_MEC
    autoload(card, {RLC_G, mec})
    program(card)
    card.power_on()
    assert not card.gfx.queues and not card.gfx.autoload_complete
    assert card.regs.read("CP_MEC_CNTL") == ME1_HALT | ME2_HALT
    card.regs.write("GRBM_GFX_CNTL", grbm(1, 0, 0))
    assert card.regs.read("CP_HQD_ACTIVE") == 0 and card.regs.read("CP_HQD_PQ_BASE") == 0


def test_attach_twice_refused(card):
    with pytest.raises(ValueError, match="already"):
        attach_gfx(card)


def test_sh_mem_registers_are_banked_by_vmid(card):
    r = card.regs
    for vmid in range(16):  # gfx_v11_0_init_compute_vmid: soc21_grbm_select(adev, 0, 0, 0, vmid), then the writes
        r.write("GRBM_GFX_CNTL", grbm(vmid=vmid))
        r.write("SH_MEM_CONFIG", 0xC000 | vmid)
        r.write("SH_MEM_BASES", 0x2000_1000 + vmid)
    r.write("GRBM_GFX_CNTL", grbm(vmid=7))
    assert r.read("SH_MEM_CONFIG") == 0xC007 and r.read("SH_MEM_BASES") == 0x2000_1007
    assert card.gfx.sh_mem(3) == {"SH_MEM_CONFIG": 0xC003, "SH_MEM_BASES": 0x2000_1003}
    card.power_on()
    assert card.gfx.sh_mem(3)["SH_MEM_CONFIG"] == 0xC000  # gc_11_0_0_default.h


def test_system_memory_ring_through_vmid0_page_table(card):
    """A queue whose memory sits in system memory behind VMID 0's page table (what drivers/am/gfx.py does) is
    refused until the page table maps it."""
    va = 0x7F00_0000_0000
    program(card, ring=va + 0x3000, rptr=va + 0x2000, wptr=va + 0x2100, eop=va + 0x1000, mqd=va)
    assert "CP_HQD_PQ_BASE" in card.gfx.errors[0] and card.vm_faults
