"""The AM driver's NBIO block (drivers/am/nbio.py) and the register file's SMN access (drivers/am/regs.py smn_read /
smn_write) against a fake register BAR; then on the emulated card when emu/am/nbio.py (attach_nbio) exists.

The fake BAR is the test's own model: a 1 MiB BAR5 holding the NBIF registers the kernel's nbio_v4_3.c /
nbif_v6_3_1.c touch at their discovered addresses, an RSMU index/data pair reaching every register (and the ones past
the BAR only that way), and a trace of every access. Expected values are worked out here from the kernel source."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from drivers.am.discovery import DiscoveryError, parse_discovery
from drivers.am.nbio import DOORBELLS, MMIO_REG_HOLE_OFFSET, NBIO, NBIOError, variant_for
from drivers.am.regs import RegisterError, RegisterFile
from drivers.pci.interface import BarInfo, BarMapping
from emu.am.discovery import build_discovery_table

BDF = "0000:03:00.0"
BAR2_ADDR = 0x1_2340_0000  # above 4 GiB, so the selfring base's high word is exercised
NBIF_REGS = ["BIF_BX_PF0_RSMU_INDEX", "BIF_BX_PF0_RSMU_DATA", "RCC_DEV0_EPF2_STRAP2", "BIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL",
             "BIF_BX0_REMAP_HDP_REG_FLUSH_CNTL", "RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN",
             "BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_BASE_LOW", "BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_BASE_HIGH",
             "BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_CNTL", "RCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE", "BIF_BX0_INTERRUPT_CNTL",
             "BIF_BX0_INTERRUPT_CNTL2", "BIF_BX0_BIF_FB_EN", "BIF_BX_PF0_GPU_HDP_FLUSH_REQ",
             "BIF_BX_PF0_GPU_HDP_FLUSH_DONE"]
STRAP_NO_SOFT_RESET = 1 << 7  # RCC_DEV0_EPF2_STRAP2__STRAP_NO_SOFT_RESET_DEV0_F2_MASK


def s2a(target: str, entry: int) -> str:
    return f"GDC_S2A0_S2A_DOORBELL_ENTRY_{entry}_CTRL" if target == "gfx1201" else f"S2A_DOORBELL_ENTRY_{entry}_CTRL"


class FakeBar(BarMapping):
    """BAR5 with named registers (`mem` by byte address); addresses past `size` only through RSMU_INDEX/RSMU_DATA.
    `trace` holds (op, name, value, "bar" | "smn"); an access to an unknown address fails the test."""

    def __init__(self, size: int = 1 << 20):
        self.index, self.size = 5, size
        self.names: dict[int, str] = {}
        self.mem: dict[int, int] = {}
        self.trace: list[tuple[str, str, int, str]] = []
        self.rsmu_index_addr = self.rsmu_data_addr = -1

    def place(self, name: str, address: int, value: int = 0) -> None:
        self.names[address] = name
        self.mem[address] = value

    def by_name(self, name: str) -> int:
        return self.mem[next(a for a, n in self.names.items() if n == name)]

    def _smn_target(self) -> int:
        addr = self.mem[self.rsmu_index_addr]
        assert addr in self.names and addr not in (self.rsmu_index_addr, self.rsmu_data_addr), \
            f"SMN access at {addr:#x}: nothing modelled there"
        return addr

    def read32(self, offset: int) -> int:
        assert offset + 4 <= self.size, f"read at {offset:#x} is past the {self.size:#x}-byte BAR"
        assert offset in self.names, f"read at BAR5 + {offset:#x}: nothing modelled there"
        if offset == self.rsmu_data_addr:
            addr = self._smn_target()
            self.trace.append(("read", self.names[addr], self.mem[addr], "smn"))
            return self.mem[addr]
        self.trace.append(("read", self.names[offset], self.mem[offset], "bar"))
        return self.mem[offset]

    def write32(self, offset: int, value: int) -> None:
        assert offset + 4 <= self.size, f"write at {offset:#x} is past the {self.size:#x}-byte BAR"
        assert offset in self.names, f"write of {value:#x} at BAR5 + {offset:#x}: nothing modelled there"
        if offset == self.rsmu_data_addr:
            addr = self._smn_target()
            self.trace.append(("write", self.names[addr], value, "smn"))
            self.mem[addr] = value
            return
        self.trace.append(("write", self.names[offset], value, "bar"))
        self.mem[offset] = value

    def read(self, offset: int, size: int) -> bytes:
        raise AssertionError("no VRAM here")

    def write(self, offset: int, data: bytes) -> None:
        raise AssertionError("no VRAM here")

    def writes(self, via: str = "") -> list[tuple[str, int]]:
        """(name, value) of every write, leaving out the RSMU pair's own traffic."""
        return [(n, v) for op, n, v, how in self.trace if op == "write" and not n.startswith("BIF_BX_PF0_RSMU")
                and (not via or how == via)]


NBIO_SEG5 = 0x04040000  # beige_goby_ip_offset.h / aldebaran_ip_offset.h NBIO_BASE segment 5


class View:
    """A view of a parsed table that tests may change: with `seg5=False` NBIF lists only five segments (as
    sienna_cichlid_ip_offset.h does), a board where RCC_DEV0_EPF2_STRAP2 cannot be placed."""

    def __init__(self, disc, seg5: bool = True):
        self._disc, self._seg5 = disc, seg5

    def __getattr__(self, name):
        return getattr(self._disc, name)

    def base(self, ip, instance=0, segment=0):
        if not self._seg5 and str(ip).upper() in ("NBIF", "NBIO") and segment == 5:
            raise DiscoveryError("NBIF instance 0 has 5 base segments in the discovery table, not segment 5")
        return self._disc.base(ip, instance, segment)


def make_dev(target: str = "gfx1100", *, memsize: int = 0x6000, strap2: int = 0xFFFF_FFFF, interrupt_cntl: int = 0xF9,
             s2a_reset: int = 0, seg5: bool = True):
    """(dev stand-in, FakeBar): an AMDevice's bdf/regs/discovery/bars over the fake BAR with the NBIF registers."""
    disc = View(parse_discovery(build_discovery_table(target)), seg5)  # the emulated boards list six segments
    bar = FakeBar()
    regs = RegisterFile(bar, discovery=disc, bdf=BDF)
    values = {"RCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE": memsize, "RCC_DEV0_EPF2_STRAP2": strap2,
              "BIF_BX0_INTERRUPT_CNTL": interrupt_cntl}
    for name in NBIF_REGS + [s2a(target, e) for e in range(6)]:
        if name == "RCC_DEV0_EPF2_STRAP2" and not seg5:
            continue
        bar.place(name, regs.reg("NBIF", name).address, values.get(name, s2a_reset if "S2A" in name else 0))
    bar.rsmu_index_addr = regs.reg("NBIF", "BIF_BX_PF0_RSMU_INDEX").address
    bar.rsmu_data_addr = regs.reg("NBIF", "BIF_BX_PF0_RSMU_DATA").address
    bar.place("HDP_MEM_FLUSH_CNTL (remap)", MMIO_REG_HOLE_OFFSET)
    bar.place("HDP_REG_FLUSH_CNTL (remap)", MMIO_REG_HOLE_OFFSET + 4)
    bars = {i: BarInfo(i, a, s) for i, a, s in ((0, 0xE000_0000, 256 << 20), (2, BAR2_ADDR, 2 << 20),
                                                (5, 0xF000_0000, 1 << 20))}
    dev = SimpleNamespace(bdf=BDF, regs=regs, discovery=disc, bars=bars, pci=None)
    return dev, bar


def entry_value(enable: int, awid: int, offset: int, size: int, awaddr: int) -> int:
    # S2A_DOORBELL_ENTRY_n_CTRL (nbio_4_3_0_sh_mask.h): ENABLE bit 0, AWID bits 5:1, RANGE_OFFSET 16:7, RANGE_SIZE
    # 24:17, AWADDR_31_28_VALUE 31:28
    return enable | awid << 1 | offset << 7 | size << 17 | awaddr << 28


# --- the layout ---
def test_doorbell_layout_is_the_kernels():
    d = DOORBELLS
    # amdgpu_doorbell.h AMDGPU_NAVI10_DOORBELL_*
    assert (d.kiq, d.mec_rings[0], d.mec_rings[7], d.userqueue_start, d.userqueue_end) == (0, 3, 0xA, 0xD, 0x8A)
    assert (d.gfx_rings, d.gfx_userqueue_end, d.sdma_engines, d.ih) == ((0x8B, 0x8C), 0xFF, (0x100, 0x10A), 0x178)
    assert d.max_assignment_dwords == 0x320 and d.sdma_doorbell_range == 20
    # 20 dwords per SDMA engine is exactly the distance between the engines' 64-bit slots
    assert d.dword(d.sdma(1)) - d.dword(d.sdma(0)) == d.sdma_doorbell_range
    assert d.dword(d.mec_ring(2)) == 10 and d.byte_offset(d.mec_ring(2)) == 40
    assert d.mec_range_bytes() == (0, 0x8A * 2 * 4)  # gfx_v11_0_cp_set_doorbell_range
    assert d.gfx_range_bytes() == (0x8B * 8, 0xFF * 8)
    with pytest.raises(ValueError, match="user queues"):
        d.mec_ring(8)
    with pytest.raises(ValueError):
        d.sdma(2)
    assert d.as_dict()["sdma_engines"] == [0x100, 0x10A]


def test_variants():
    assert variant_for((4, 3, 0)).strap2 and not variant_for((4, 3, 1)).strap2
    assert variant_for((6, 3, 1)).s2a.startswith("GDC_S2A0")
    with pytest.raises(NBIOError, match="7.7.0 is not supported"):
        variant_for((7, 7, 0))


# --- bring-up ---
@pytest.mark.parametrize("target", ["gfx1100", "gfx1102", "gfx1201"])
def test_init_programs_what_soc21_and_nbio_program(target):
    dev, bar = make_dev(target)
    nbio = NBIO().init(dev)
    assert dev.nbio is nbio and nbio.state == "running"
    w = dict(bar.writes())
    strapped = target in ("gfx1100", "gfx1201")  # NBIO 4.3.0 and NBIF 6.3.1 only (4.3.1 leaves the strap)
    assert ("RCC_DEV0_EPF2_STRAP2" in w) == strapped
    if strapped:
        assert w["RCC_DEV0_EPF2_STRAP2"] == 0xFFFF_FFFF & ~STRAP_NO_SOFT_RESET
    assert w["BIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL"] == 0x7F000 and w["BIF_BX0_REMAP_HDP_REG_FLUSH_CNTL"] == 0x7F004
    assert w["RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN"] == 1
    assert w["BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_BASE_LOW"] == 0x2340_0000
    assert w["BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_BASE_HIGH"] == 1
    assert w["BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_CNTL"] == 0x3  # EN | MODE, SIZE 0
    # gc_doorbell_init's fixed values; SDMA at engine 0's dword doorbell covering both engines; IH ring 0
    assert w[s2a(target, 0)] == 0x30000007 and w[s2a(target, 3)] == 0x3000000D
    assert w[s2a(target, 2)] == entry_value(1, 0xE, 0x200, 40, 3)
    assert w[s2a(target, 1)] == entry_value(1, 0, 0x2F0, 2, 0)
    assert s2a(target, 4) not in w and s2a(target, 5) not in w  # VCN: not a compute bring-up's business
    order = [n for n, _ in bar.writes()]
    # soc21_common_hw_init order: init_registers, remap, aperture; late_init's selfring after
    assert order.index("BIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL") < order.index("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN") < \
        order.index("BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_CNTL")
    assert order.index("BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_BASE_LOW") < \
        order.index("BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_CNTL")
    assert nbio.ranges[2].size == 40 and nbio.ranges[1].offset == 0x2F0 and nbio.ranges[3].awid == 6
    assert nbio.describe()["variant"] == ("nbif_v6_3_1" if target == "gfx1201" else "nbio_v4_3")


@pytest.mark.parametrize("target,smn", [("gfx1100", True), ("gfx1201", False)])
def test_registers_past_the_bar_go_through_rsmu(target, smn):
    """nbio_4_3_0's S2A entries (segment 3) and EPF2_STRAP2 (segment 5) lie past a 1 MiB BAR5; nbif_6_3_1's S2A
    entries are in segment 2, inside it."""
    dev, bar = make_dev(target)
    NBIO().init(dev)
    via = {n: how for op, n, v, how in bar.trace if op == "write"}
    assert via[s2a(target, 2)] == ("smn" if smn else "bar")
    assert via["RCC_DEV0_EPF2_STRAP2"] == "smn"
    assert via["RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN"] == "bar"


def test_missing_segment_5_skips_the_strap_with_a_warning(caplog):
    dev, bar = make_dev("gfx1100", seg5=False)
    nbio = NBIO().init(dev)
    assert "RCC_DEV0_EPF2_STRAP2" not in dict(bar.writes())
    assert len(nbio.warnings) == 1 and "STRAP_NO_SOFT_RESET_DEV0_F2" in nbio.warnings[0]
    assert "segment 5" in nbio.warnings[0]
    assert nbio.state == "running" and bar.by_name("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN") == 1


def test_doorbell_ranges_keep_the_other_fields():
    dev, bar = make_dev(s2a_reset=1 << 6)  # FENCE_ENABLE set by someone else: REG_SET_FIELD keeps it
    nbio = NBIO(program_doorbells=False).init(dev)
    assert not any("S2A" in n for n, _ in bar.writes())
    nbio.sdma_doorbell_range(0, True)
    assert bar.by_name("S2A_DOORBELL_ENTRY_2_CTRL") == entry_value(1, 0xE, 0x200, 40, 3) | 1 << 6
    assert nbio.sdma_doorbell_range(1, True) is None  # the kernel programs the range from instance 0 only
    nbio.sdma_doorbell_range(0, False)  # the kernel only zeroes RANGE_SIZE
    assert bar.by_name("S2A_DOORBELL_ENTRY_2_CTRL") == entry_value(1, 0xE, 0x200, 0, 3) | 1 << 6
    assert not nbio.ranges[2].enabled
    nbio.ih_doorbell_range(True, index=0x2F2)
    assert bar.by_name("S2A_DOORBELL_ENTRY_1_CTRL") == entry_value(1, 0, 0x2F2, 2, 0) | 1 << 6
    with pytest.raises(NBIOError, match="does not fit"):
        nbio.ih_doorbell_range(True, index=1 << 10)


def test_single_sdma_part_routes_one_engine(monkeypatch):
    dev, bar = make_dev("gfx1102")
    monkeypatch.setattr(dev.discovery, "active_instances", lambda ip: [0], raising=False)
    NBIO().init(dev)
    assert bar.by_name("S2A_DOORBELL_ENTRY_2_CTRL") == entry_value(1, 0xE, 0x200, 20, 3)


def test_ih_control():
    dev, bar = make_dev(interrupt_cntl=0xF9)  # OVERRIDE (bit 0) and NONSNOOP (bit 3) set, other bits kept
    nbio = NBIO().init(dev)
    nbio.ih_control(0x8_1234_5000)
    assert bar.by_name("BIF_BX0_INTERRUPT_CNTL2") == 0x8_1234_50
    assert bar.by_name("BIF_BX0_INTERRUPT_CNTL") == 0xF9 & ~0x9
    with pytest.raises(NBIOError, match="256-byte aligned"):
        nbio.ih_control(0x1001)


def test_mc_access_and_memsize():
    dev, bar = make_dev(memsize=0x6000)
    nbio = NBIO().init(dev)
    nbio.mc_access_enable(True)
    assert bar.by_name("BIF_BX0_BIF_FB_EN") == 3
    nbio.mc_access_enable(False)
    assert bar.by_name("BIF_BX0_BIF_FB_EN") == 0
    assert nbio.get_memsize() == 0x6000


# --- HDP ---
def test_flush_hdp_writes_the_remapped_register_then_posts():
    dev, bar = make_dev()
    nbio = NBIO().init(dev)
    bar.trace.clear()
    nbio.flush_hdp()
    assert bar.trace == [("write", "HDP_MEM_FLUSH_CNTL (remap)", 0, "bar"),
                         ("read", "RCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE", 0x6000, "bar")]
    assert nbio.hdp_flushes == 1


def test_flush_hdp_from_threads():
    dev, bar = make_dev()
    nbio = NBIO().init(dev)
    bar.trace.clear()
    threads = [threading.Thread(target=lambda: [nbio.flush_hdp() for _ in range(50)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert nbio.hdp_flushes == 200
    ops = [op for op, *_ in bar.trace]
    assert ops == ["write", "read"] * 200  # never two writes before a posting read


def test_gmc_finds_flush_hdp():
    from drivers.am.gmc import GMC
    dev, bar = make_dev()
    nbio = NBIO().init(dev)
    gmc = GMC()
    # GMC.init resolves dev.nbio.flush_hdp when not handed one (drivers/am/gmc.py)
    assert getattr(getattr(dev, "nbio", None), "flush_hdp", None) == nbio.flush_hdp
    gmc._flush_hdp = getattr(dev.nbio, "flush_hdp")
    gmc.flush_hdp()
    assert nbio.hdp_flushes == 1


def test_hdp_flush_regs_and_masks():
    dev, _ = make_dev()
    nbio = NBIO().init(dev)
    req, done = nbio.hdp_flush_regs()
    assert req.name == "BIF_BX_PF0_GPU_HDP_FLUSH_REQ" and done.dword == req.dword + 1
    assert nbio.hdp_flush_mask("cp0") == 1 and nbio.hdp_flush_mask("CP2") == 4
    assert nbio.hdp_flush_mask("SDMA0") == 1 << 10 and nbio.hdp_flush_mask("SDMA1") == 1 << 11
    with pytest.raises(NBIOError, match="no HDP flush bit"):
        nbio.hdp_flush_mask("VCN")


# --- life cycle ---
def test_fini_suspend_resume():
    dev, bar = make_dev()
    nbio = NBIO().init(dev)
    bar.trace.clear()
    nbio.suspend()
    assert bar.writes() == [("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN", 0), ("BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_CNTL", 0)]
    assert nbio.state == "off"
    bar.trace.clear()
    nbio.fini()  # already off: nothing
    assert bar.trace == []
    nbio.resume()
    w = dict(bar.writes())
    assert w["RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN"] == 1 and w["BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_CNTL"] == 3
    assert w["S2A_DOORBELL_ENTRY_2_CTRL"] == entry_value(1, 0xE, 0x200, 40, 3)
    assert nbio.state == "running"
    nbio.fini()
    assert bar.by_name("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN") == 0


def test_errors_name_what_to_do():
    with pytest.raises(NBIOError, match="call init"):
        NBIO().flush_hdp()
    with pytest.raises(NBIOError, match="open the AMDevice"):
        NBIO().init(SimpleNamespace(bdf=BDF, regs=None, discovery=None))
    dev, _ = make_dev()
    dev.bars = {}
    with pytest.raises(NBIOError, match="BAR2"):
        NBIO().init(dev)
    dev, bar = make_dev()
    dev.bars = {}
    NBIO(selfring=False).init(dev)
    assert "BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_CNTL" not in dict(bar.writes())
    NBIO().fini()  # never initialised: nothing to undo


# --- the register file's SMN access ---
def test_smn_read_write_sequence():
    dev, bar = make_dev()
    regs: RegisterFile = dev.regs
    strap = regs.reg("NBIF", "RCC_DEV0_EPF2_STRAP2")
    assert regs.past_bar(strap) and not regs.past_bar(regs.reg("NBIF", "BIF_BX_PF0_RSMU_INDEX"))
    bar.trace.clear()
    regs.smn_write(strap.address, 0x1234)
    assert [(op, n) for op, n, *_ in bar.trace] == [("write", "BIF_BX_PF0_RSMU_INDEX"), ("read", "BIF_BX_PF0_RSMU_INDEX"),
                                                    ("write", "RCC_DEV0_EPF2_STRAP2"), ("read", "RCC_DEV0_EPF2_STRAP2")]
    bar.trace.clear()
    assert regs.smn_read(strap.address) == 0x1234
    assert [(op, n) for op, n, *_ in bar.trace] == [("write", "BIF_BX_PF0_RSMU_INDEX"), ("read", "BIF_BX_PF0_RSMU_INDEX"),
                                                    ("read", "RCC_DEV0_EPF2_STRAP2")]
    assert regs.read(strap) == 0x1234  # read() of a register past the BAR takes the same path
    with pytest.raises(RegisterError, match="dword-aligned 32-bit"):
        regs.smn_read(0x1_0000_0000)
    with pytest.raises(RegisterError, match="dword-aligned"):
        regs.smn_write(0x1002, 0)


def test_batched_access_with_a_register_past_the_bar():
    dev, bar = make_dev()
    regs: RegisterFile = dev.regs
    near = regs.reg("NBIF", "BIF_BX0_BIF_FB_EN")
    far = regs.reg("NBIF", "S2A_DOORBELL_ENTRY_2_CTRL")
    regs.write_regs([(near, 3), (far, 0x55)])
    assert regs.read_regs([near, far]) == [3, 0x55]
    assert bar.by_name("S2A_DOORBELL_ENTRY_2_CTRL") == 0x55


def test_smn_lock_keeps_index_and_data_together():
    dev, bar = make_dev()
    regs: RegisterFile = dev.regs
    a = regs.reg("NBIF", "RCC_DEV0_EPF2_STRAP2")
    b = regs.reg("NBIF", "S2A_DOORBELL_ENTRY_4_CTRL")
    bar.mem[a.address], bar.mem[b.address] = 0xAAAA, 0xBBBB
    bad: list[tuple[int, int]] = []

    def hammer(r, want):
        for _ in range(200):
            got = regs.smn_read(r.address)
            if got != want:
                bad.append((got, want))

    threads = [threading.Thread(target=hammer, args=args) for args in ((a, 0xAAAA), (b, 0xBBBB)) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert bad == []


def test_smn_needs_the_pair_inside_the_bar():
    dev, _ = make_dev()
    small = RegisterFile(FakeBar(size=0x40), discovery=dev.discovery, bdf=BDF)  # RSMU pair at dword 0x14: outside
    with pytest.raises(RegisterError, match="past the 0x40-byte register BAR"):
        small.smn_read(0x1000)


# --- on the emulated card ---


@pytest.fixture
def card_dev(tmp_path):
    """(card, AMDevice) on the emulated card with the NBIO model attached (emu/am/nbio.py attach_nbio)."""
    from drivers.am.device import AMDevice
    from drivers.lock import ProcessLocks
    from emu.am.gpu import install_am_gpu
    from emu.am.nbio import attach_nbio
    from emu.system import EmulatedSystem
    from tests.firmware import fwgen
    made: list = []

    def make(target: str):
        fwgen.write_set(tmp_path / target, target)
        system = EmulatedSystem(lock_dir=ProcessLocks("test_am_nbio"))
        card = install_am_gpu(system, target, BDF, boot_delay_s=0, vram_size=256 << 20)
        made.append(card)
        attach_nbio(card)
        dev = AMDevice(BDF, system, firmware_dirs=[tmp_path / target], firmware_system_dirs=False)
        made.append(dev)
        return card, dev

    yield make
    for obj in reversed(made):
        obj.close()


@pytest.mark.parametrize("target", ["gfx1100", "gfx1102", "gfx1201"])
def test_on_the_emulated_card(card_dev, target):
    card, dev = card_dev(target)
    nbio = NBIO().init(dev)
    nbio.flush_hdp()
    nbio.ih_control(0x1000)
    assert card.regs.errors == [], card.regs.errors
    rf = card.regs
    assert rf.reg("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN").value & 1 == 1
    assert rf.reg(s2a(target, 2)).value == entry_value(1, 0xE, 0x200, 40, 3)
    assert rf.reg(s2a(target, 0)).value == 0x30000007
    nbio.fini()
    assert rf.reg("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN").value & 1 == 0
    assert card.regs.errors == [], card.regs.errors
