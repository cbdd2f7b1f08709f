"""The emulated NBIO/NBIF (emu/am/nbio.py) driven through its registers as amdgpu's nbio_v4_3.c / nbif_v6_3_1.c and
soc21.c / soc24.c do: doorbell routing, the HDP flush remap and its staleness model, the registers read once, and the
RSMU index/data window. Register offsets and field values are typed here from the kernel headers, not taken from the
module under test."""
from __future__ import annotations

import pytest

from emu.am.gpu import AMGPU
from emu.am.nbio import attach_nbio
from emu.am.regs import Register, RegisterError
from emu.am.smu import attach_smu

TARGETS = ["gfx1100", "gfx1102", "gfx1201"]
# amdgpu_doorbell.h AMDGPU_NAVI10_DOORBELL_*; rings use dword indices (<< 1 of the 64-bit assignment)
KIQ, SDMA0, IH, VCN0_1 = 0x000, 0x100, 0x178, 0x188
SDMA_RANGE = 20 * 2  # soc21_init_doorbell_index sdma_doorbell_range = 20, times sdma.num_instances (sdma_v6_0.c)
MMIO_REG_HOLE = 0x80000 - 4096  # nbio_v4_3.c MMIO_REG_HOLE_OFFSET with 4 KiB pages
SDMA0_DONE = 0x400  # BIF_BX_PF0_GPU_HDP_FLUSH_DONE__SDMA0_MASK


def s2a(enable: int, awid: int, offset: int, size: int, awaddr: int) -> int:
    """S2A_DOORBELL_ENTRY_N_CTRL (nbio_4_3_0_sh_mask.h): ENABLE [0], AWID [5:1], RANGE_OFFSET [16:7],
    RANGE_SIZE [24:17], AWADDR_31_28 [31:28]."""
    return enable | awid << 1 | offset << 7 | size << 17 | awaddr << 28


class Host:
    """amdgpu's register access, written here from amdgpu_device.c: direct below the BAR size, else RSMU."""

    def __init__(self, card: AMGPU):
        self.card, self.rf = card, card.regs

    def _addr(self, name: str) -> int:
        return self.rf.reg(name).address * 4

    def read(self, name: str) -> int:
        return self.read_addr(self._addr(name))

    def write(self, name: str, value: int) -> None:
        self.write_addr(self._addr(name), value)

    def read_addr(self, addr: int) -> int:
        if addr < self.rf.bar_size:
            return self.rf.read32(addr)
        self.rf.write("BIF_BX_PF0_RSMU_INDEX", addr)  # amdgpu_device_indirect_rreg: index, read back, data
        self.rf.read("BIF_BX_PF0_RSMU_INDEX")
        return self.rf.read("BIF_BX_PF0_RSMU_DATA")

    def write_addr(self, addr: int, value: int) -> None:
        if addr < self.rf.bar_size:
            return self.rf.write32(addr, value)
        self.rf.write("BIF_BX_PF0_RSMU_INDEX", addr)
        self.rf.read("BIF_BX_PF0_RSMU_INDEX")
        self.rf.write("BIF_BX_PF0_RSMU_DATA", value)

    def entry(self, n: int) -> str:
        prefix = "GDC_S2A0_S2A_DOORBELL_ENTRY" if self.card.target == "gfx1201" else "S2A_DOORBELL_ENTRY"
        return f"{prefix}_{n}_CTRL"

    # the kernel's programming, as nbio_v4_3.c / nbif_v6_3_1.c do it
    def hw_init(self) -> None:  # soc21_common_hw_init: remap_hdp_registers, enable_doorbell_aperture
        self.write("BIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL", MMIO_REG_HOLE + 0)
        self.write("BIF_BX0_REMAP_HDP_REG_FLUSH_CNTL", MMIO_REG_HOLE + 4)
        self.write("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN", self.read("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN") | 1)

    def gc_doorbell_init(self) -> None:
        self.write(self.entry(0), 0x30000007)
        self.write(self.entry(3), 0x3000000D)

    def sdma_range(self, index: int, size: int) -> None:
        self.write(self.entry(2), s2a(1, 0xE, index, size, 0x3))

    def ih_range(self, index: int) -> None:
        self.write(self.entry(1), s2a(1, 0x0, index, 2, 0x0))

    def vcn_range(self, index: int, inst: int) -> None:
        self.write(self.entry(5 if inst else 4), s2a(1, 0x7 if inst else 0x4, index, 8, 0x7 if inst else 0x4))


@pytest.fixture(params=TARGETS)
def card(request):
    c = AMGPU(request.param, vram_size=64 << 20, boot_delay_s=0)
    attach_nbio(c)
    yield c
    c.close()


def test_registers_sit_where_the_kernel_headers_put_them(card):
    nbif = card.board.block("NBIF").bases[0]
    rf = card.regs
    if card.target == "gfx1201":  # nbif_6_3_1_offset.h
        assert rf.reg("GDC_S2A0_S2A_DOORBELL_ENTRY_0_CTRL").address == nbif[2] + 0x1CB
        assert rf.reg("RCC_STRAP0_RCC_DEV0_EPF0_STRAP0").address == nbif[2] + 0x1C
    else:  # nbio_4_3_0_offset.h: the S2A entries are NBIO seg 3, past the 1 MiB BAR
        assert rf.reg("S2A_DOORBELL_ENTRY_0_CTRL").address == nbif[3] + 0x4F7640
        assert rf.reg("S2A_DOORBELL_ENTRY_0_CTRL").address * 4 >= rf.bar_size
        assert rf.reg("RCC_STRAP0_RCC_DEV0_EPF0_STRAP0").address == nbif[2] + 0x16
    assert rf.reg("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN").address == nbif[2] + 0xC0
    assert rf.reg("BIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL").address == nbif[2] + 0x12D
    assert rf.reg("BIF_BX_PF0_GPU_HDP_FLUSH_REQ").address == nbif[2] + 0x106
    assert rf.reg("BIF_BX_PF0_RSMU_INDEX").address == nbif[1] + 0
    assert rf.reg("BIF_BX_PF0_RSMU_INDEX_HI").address == nbif[1] + 2


def test_doorbells_are_dropped_until_the_aperture_and_a_route_are_programmed(card):
    h, nbio = Host(card), card.nbio
    off = (SDMA0 << 1) * 4
    assert nbio.route(off) is None
    assert nbio.ring(off, 0x40) is None
    assert "doorbell aperture is disabled" in nbio.dropped[-1].reason
    h.hw_init()
    assert nbio.ring(off, 0x40) is None  # aperture on, but no S2A entry yet
    assert "no S2A doorbell entry claims" in nbio.dropped[-1].reason
    assert len(nbio.dropped) == 2 and nbio.dropped[-1].value == 0x40


def test_the_kernels_doorbell_programming_routes_each_engine(card):
    h, nbio = Host(card), card.nbio
    h.hw_init()
    h.sdma_range(SDMA0 << 1, SDMA_RANGE)
    h.ih_range(IH << 1)
    h.vcn_range(VCN0_1 << 1, 0)
    h.vcn_range((VCN0_1 << 1) + 8, 1)
    kiq = (KIQ << 1) * 4
    assert nbio.route(kiq) is None  # GC has no route before gc_doorbell_init
    h.gc_doorbell_init()
    assert nbio.route(kiq) == ("GC", 0)
    assert nbio.route((SDMA0 << 1) * 4) == ("SDMA", 0)
    assert nbio.route(((SDMA0 << 1) + SDMA_RANGE - 1) * 4) == ("SDMA", 0)  # SDMA1's doorbells share the range
    assert nbio.route(((SDMA0 << 1) + SDMA_RANGE) * 4) == ("GC", 0)  # past the range: the GC default
    assert nbio.route((IH << 1) * 4) == ("IH", 0)
    assert nbio.route(((IH << 1) + 2) * 4) == ("GC", 0)  # IH range size 2
    assert nbio.route((VCN0_1 << 1) * 4) == ("VCN", 0)
    assert nbio.route(((VCN0_1 << 1) + 8) * 4) == ("VCN", 1)
    assert nbio.entry(2).awid == 0xE and nbio.entry(2).range_size == SDMA_RANGE
    # sdma_doorbell_range(use_doorbell=false) sets RANGE_SIZE 0: SDMA doorbells fall to the GC default
    h.write(h.entry(2), h.read(h.entry(2)) & ~(0xFF << 17))
    assert nbio.route((SDMA0 << 1) * 4) == ("GC", 0)
    # soc21_common_hw_fini: enable_doorbell_aperture(false) drops everything
    h.write("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN", 0)
    assert nbio.route(kiq) is None


def test_ring_delivers_to_listeners_and_poll_sees_bar2_writes(card):
    h, nbio = Host(card), card.nbio
    got = []
    nbio.listen("SDMA", lambda off, val, inst: got.append((off, val, inst)))
    h.hw_init()
    h.sdma_range(SDMA0 << 1, SDMA_RANGE)
    assert nbio.poll() == []  # the first poll takes the baseline
    off = (SDMA0 << 1) * 4
    card.doorbells.write32(off, 0x100)  # the driver's store into its BAR2 mapping
    card.doorbells.write32(0x40, 7)     # KIQ-area doorbell: GC has no route yet
    seen = nbio.poll()
    assert seen == [(0x40, 7, None), (off, 0x100, ("SDMA", 0))]
    assert got == [(off, 0x100, 0)] and nbio.rung[("SDMA", 0)] == 1
    assert nbio.dropped[-1].offset == 0x40
    assert nbio.poll() == []  # nothing changed since
    assert nbio.route(2) is None  # misaligned: no route
    assert nbio.ring(card.doorbells.size, 1) is None and "not a 4-byte-aligned offset" in nbio.dropped[-1].reason


def test_hdp_flush_answers_only_where_the_driver_remapped_it(card):
    h, hdp = Host(card), card.hdp
    with pytest.raises(RegisterError, match="unmodelled register"):
        card.regs.write32(MMIO_REG_HOLE, 0)  # before remap_hdp_registers nothing is there
    h.hw_init()
    assert h.read("BIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL") == MMIO_REG_HOLE  # tinygrad reads it back to find the register
    assert card.nbio.remap_offset == MMIO_REG_HOLE
    card.regs.write32(MMIO_REG_HOLE, 0)  # hdp_v6_0_flush_hdp: write 0, then read the memsize register to post
    card.regs.read("RCC_CONFIG_MEMSIZE")
    card.regs.write32(MMIO_REG_HOLE + 4, 0)
    assert (hdp.flushes, hdp.reg_flushes, hdp.by_source["remap"]) == (1, 1, 1)
    h.write("BIF_BX_PF0_HDP_MEM_COHERENCY_FLUSH_CNTL", 0)  # the native register flushes too
    assert hdp.flushes == 2
    # the ring path: write the client bit to FLUSH_REQ, wait for it in FLUSH_DONE (sdma_v6_0_ring_emit_hdp_flush)
    h.write("BIF_BX_PF0_GPU_HDP_FLUSH_REQ", SDMA0_DONE)
    assert h.read("BIF_BX_PF0_GPU_HDP_FLUSH_DONE") & SDMA0_DONE == SDMA0_DONE and hdp.flushes == 3
    # moving the remap moves the register
    h.write("BIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL", MMIO_REG_HOLE + 0x100)
    with pytest.raises(RegisterError):
        card.regs.write32(MMIO_REG_HOLE, 0)
    card.regs.write32(MMIO_REG_HOLE + 0x100, 0)
    assert hdp.flushes == 4
    # onto a modelled register: refused, naming it
    memsize = card.regs.reg("RCC_CONFIG_MEMSIZE").address * 4
    with pytest.raises(RegisterError, match="places HDP_MEM_FLUSH_CNTL on RCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE"):
        h.write("BIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL", memsize)
    # a function reset takes the remap away again
    card.power_on()
    assert card.nbio.remap_offset is None
    with pytest.raises(RegisterError):
        card.regs.write32(MMIO_REG_HOLE + 0x100, 0)


def test_a_bar0_write_read_by_an_engine_without_a_flush_is_stale(card):
    h, hdp = Host(card), card.hdp
    h.hw_init()
    ring = 0x10000
    hdp.watch(ring, 0x2000)  # e.g. the SDMA model, when its ring base is programmed
    assert not hdp.check("SDMA0", ring, 0x100)
    card.vram[ring:ring + 4] = b"\x01\x00\x00\x00"  # the host's store through BAR0 (the same pages)
    assert hdp.check("SDMA0", ring, 0x100)
    assert hdp.stale_reads[-1].engine == "SDMA0" and hdp.stale_reads[-1].how == "changed"
    assert not hdp.check("SDMA0", ring + 0x1000, 0x100)  # the other page did not change
    card.regs.write32(MMIO_REG_HOLE, 0)  # the flush
    assert not hdp.check("SDMA0", ring, 0x100)
    card.vram[ring + 8:ring + 12] = b"\xff" * 4  # the engine's own write (e.g. a fence it writes back)
    hdp.engine_wrote(ring + 8, 4)
    assert not hdp.check("SDMA0", ring, 0x100)
    hdp.host_wrote(0x200000, 64)  # a host path that knows what it wrote marks it
    assert hdp.stale(0x200000 + 32, 4) == "marked" and hdp.stale(0x200040, 4) is None
    h.write("BIF_BX_PF0_GPU_HDP_FLUSH_REQ", SDMA0_DONE)  # the ring-path flush clears it too
    assert hdp.stale(0x200000, 64) is None
    assert len(hdp.stale_reads) == 1
    with pytest.raises(ValueError, match="outside"):
        hdp.watch(card.vram_size - 4, 8)


def test_registers_amdgpu_reads_once(card):
    h = Host(card)
    assert (h.read("RCC_STRAP0_RCC_DEV0_EPF0_STRAP0") & 0xF000000) >> 24 == 0  # get_rev_id: STRAP_ATI_REV_ID
    if len(card.board.block("NBIF").bases[0]) > 5:  # NBIO seg 5: only where discovery lists that base
        strap2 = h.read("RCC_DEV0_EPF2_STRAP2")
        h.write("RCC_DEV0_EPF2_STRAP2", strap2 & ~0x80)  # init_registers clears STRAP_NO_SOFT_RESET_DEV0_F2
        assert h.read("RCC_DEV0_EPF2_STRAP2") & 0x80 == 0
        assert h.read("REGS_ROM_OFFSET_CTRL") & 0x7F == 0
    else:
        assert [m.split(":")[0] for m in card.nbio.missing] == ["RCC_DEV0_EPF2_STRAP2", "REGS_ROM_OFFSET_CTRL"]
    h.write("BIF_BX0_BIF_FB_EN", 0)  # mc_access_enable(false)
    assert card.nbio.fb_access == (False, False)
    h.write("BIF_BX0_BIF_FB_EN", 0x3)
    assert card.nbio.fb_access == (True, True)
    h.write("BIF_BX0_INTERRUPT_CNTL2", 0x12345000 >> 8)  # ih_control: dummy_page_addr >> 8
    assert card.nbio.dummy_page_addr == 0x12345000
    assert h.read("RCC_CONFIG_MEMSIZE") == 64  # still regs.py's


def test_rev_id_is_configurable():
    c = AMGPU("gfx1100", vram_size=64 << 20, boot_delay_s=0)
    try:
        attach_nbio(c, rev_id=0x1)
        assert Host(c).read("RCC_STRAP0_RCC_DEV0_EPF0_STRAP0") >> 24 & 0xF == 1 and c.nbio.rev_id == 1
        with pytest.raises(ValueError, match="already"):
            attach_nbio(c)
    finally:
        c.close()


def test_selfring_aperture(card):
    h, nbio = Host(card), card.nbio
    base = 0x38_0000_0000
    assert nbio.selfring_offset(base) is None
    h.write("BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_BASE_LOW", base & 0xFFFFFFFF)
    h.write("BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_BASE_HIGH", base >> 32)
    h.write("BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_CNTL", 0x3)  # EN | MODE, SIZE 0 (enable_doorbell_selfring_aperture)
    assert nbio.selfring_offset(base + 0x800) == 0x800
    assert nbio.selfring_offset(base + card.doorbells.size) is None
    h.write("BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_CNTL", 0)
    assert nbio.selfring_offset(base + 0x800) is None


def test_rsmu_window_reaches_any_modelled_register(card):
    rf, h = card.regs, Host(card)
    # a register inside the BAR, through the window
    idx = rf.reg("BIF_BX0_INTERRUPT_CNTL").address * 4
    rf.write("BIF_BX_PF0_RSMU_INDEX", idx)
    assert rf.read("BIF_BX_PF0_RSMU_INDEX") == idx  # read back to post it
    rf.write("BIF_BX_PF0_RSMU_DATA", 0x5)
    assert rf.read("BIF_BX0_INTERRUPT_CNTL") == 0x5
    # a register past the BAR: only the window reaches it, and hooks run
    rf.add(Register("SMN_PROBE", None, 0x3B20000 >> 2, reset=0xABC))  # any register at any SMN address
    assert h.read_addr(0x3B20000) == 0xABC
    h.write_addr(0x3B20000, 0x7)
    assert rf.reg("SMN_PROBE").value == 0x7
    for bad, why in [(0x3FFFFC, "no modelled register"), (idx + 2, "not a 4-byte-aligned"),
                     (rf.reg("BIF_BX_PF0_RSMU_DATA").address * 4, "cannot reach itself")]:
        rf.write("BIF_BX_PF0_RSMU_INDEX", bad)
        with pytest.raises(RegisterError, match=why):
            rf.read("BIF_BX_PF0_RSMU_DATA")
    rf.write("BIF_BX_PF0_RSMU_INDEX", idx)
    rf.write("BIF_BX_PF0_RSMU_INDEX_HI", 1)  # bits 39:32: nothing is modelled up there
    with pytest.raises(RegisterError, match="RSMU_INDEX 0x1"):
        rf.read("BIF_BX_PF0_RSMU_DATA")
    assert any("RSMU_DATA" in e for e in rf.errors)


def test_smu_uses_the_nbio_window(card):
    # attach_nbio installed the window; attach_smu keeps it and its registers answer through it (SMN address)
    attach_smu(card)
    card.smu_fw_loaded = True
    assert Host(card).read_addr(0x3B10024) == 0x1  # MP1_FIRMWARE_FLAGS.INTERRUPTS_ENABLED (smu_v13_0.h address)


def test_smu_alone_gets_the_general_window():
    c = AMGPU("gfx1201", vram_size=64 << 20, boot_delay_s=0)
    try:
        attach_smu(c)
        c.regs.reg("BIF_BX_PF0_RSMU_INDEX_HI")  # the NBIO window (the SMU's own had no INDEX_HI)
        attach_nbio(c)  # finds the window there and keeps it
        assert Host(c).read("GRBM_STATUS") == 0
    finally:
        c.close()
