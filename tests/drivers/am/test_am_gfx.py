"""The AM GFX driver (drivers/am/gfx.py): RLC autoload wait, MEC unhalt, doorbell ranges, SH_MEM per VMID, and compute
queues programmed straight into the HQDs, checked against a fake register file that banks the CP/SH registers by
GRBM_GFX_CNTL as the hardware does; and - when emu/am/gfx.py is in the tree - on the emulated card after a boot."""
from __future__ import annotations

import ctypes
from types import SimpleNamespace

import pytest

from drivers.am.discovery import parse_discovery
from drivers.am.gfx import GFX, GFXError
from drivers.am.gmc import PTE_SNOOPED, PTE_SYSTEM
from drivers.am.nbio import DOORBELLS
from drivers.am.regs import RegisterFile
from drivers.pci.interface import BarMapping, DMABuffer
from emu.am.discovery import build_discovery_table

TARGETS = ["gfx1100", "gfx1201"]
# the registers GRBM_GFX_CNTL banks (per me/pipe/queue for the HQD ones, per VMID for SH_MEM)
BANKED_PREFIXES = ("CP_HQD_", "CP_MQD_", "SH_MEM_")
NAMES = ["GRBM_GFX_CNTL", "CP_STAT", "RLC_RLCS_BOOTLOAD_STATUS", "CP_MEC_RS64_CNTL", "CP_MEC_CNTL",
         "CP_RB_DOORBELL_RANGE_LOWER", "CP_RB_DOORBELL_RANGE_UPPER", "CP_MEC_DOORBELL_RANGE_LOWER",
         "CP_MEC_DOORBELL_RANGE_UPPER", "CP_PQ_WPTR_POLL_CNTL", "CP_PQ_STATUS", "SH_MEM_CONFIG", "SH_MEM_BASES",
         "CP_HQD_ACTIVE", "CP_HQD_DEQUEUE_REQUEST", "CP_HQD_EOP_BASE_ADDR", "CP_HQD_EOP_BASE_ADDR_HI",
         "CP_HQD_EOP_CONTROL", "CP_HQD_PQ_DOORBELL_CONTROL", "CP_HQD_PQ_RPTR", "CP_HQD_PQ_WPTR_LO",
         "CP_HQD_PQ_WPTR_HI", "CP_MQD_BASE_ADDR", "CP_MQD_BASE_ADDR_HI", "CP_MQD_CONTROL", "CP_HQD_PQ_BASE",
         "CP_HQD_PQ_BASE_HI", "CP_HQD_PQ_CONTROL", "CP_HQD_PQ_RPTR_REPORT_ADDR", "CP_HQD_PQ_RPTR_REPORT_ADDR_HI",
         "CP_HQD_PQ_WPTR_POLL_ADDR", "CP_HQD_PQ_WPTR_POLL_ADDR_HI", "CP_HQD_VMID", "CP_HQD_PERSISTENT_STATE"]


class FakeGC(BarMapping):
    """GC registers by name; the banked ones keyed by the GRBM_GFX_CNTL value in force, as the CP's register banks
    are. Reads of unknown registers fail the test (the driver touched something the test did not expect).
    `autoload_after` polls before BOOTLOAD_COMPLETE reads 1; `hang_dequeue` keeps CP_HQD_ACTIVE set."""

    def __init__(self, regs_of: dict[int, str]):
        self.index, self.size = 5, 1 << 24
        self.names = regs_of
        self.values: dict[tuple[str, int], int] = {}
        self.log: list[tuple[str, str, int, int]] = []  # (r/w, name, bank, value)
        self.autoload_after = 0
        self.hang_dequeue = False
        self.bank = 0

    def _key(self, offset: int) -> tuple[str, int]:
        name = self.names.get(offset)
        assert name is not None, f"access to an unexpected register at byte {offset:#x}"
        return name, (self.bank if name.startswith(BANKED_PREFIXES) else 0)

    def read32(self, offset):
        name, bank = self._key(offset)
        if name == "RLC_RLCS_BOOTLOAD_STATUS":
            if self.autoload_after > 0:
                self.autoload_after -= 1
                v = 0
            else:
                v = 1 << 31  # BOOTLOAD_COMPLETE (bit 31 in gc_11_0_0 / gc_12_0_0 sh_mask)
        else:
            v = self.values.get((name, bank), 0)
        self.log.append(("r", name, bank, v))
        return v

    def write32(self, offset, value):
        name, bank = self._key(offset)
        self.log.append(("w", name, bank, value))
        self.values[(name, bank)] = value
        if name == "GRBM_GFX_CNTL":
            self.bank = value
        if name == "CP_HQD_DEQUEUE_REQUEST" and value & 1 and not self.hang_dequeue:
            self.values[("CP_HQD_ACTIVE", bank)] = 0

    def read(self, offset, size):
        raise AssertionError("no block reads of registers")

    def write(self, offset, data):
        raise AssertionError("no block writes of registers")


class FakeDoorbells(BarMapping):
    def __init__(self):
        self.index, self.size, self.host_addr = 2, 1 << 20, None
        self.writes: list[tuple[int, int]] = []

    def read32(self, offset):
        return 0

    def write32(self, offset, value):
        self.writes.append((offset, value))

    def read(self, offset, size):
        return bytes(size)

    def write(self, offset, data):
        raise AssertionError


class FakePCI:
    """DMA buffers backed by real process memory (ctypes), with made-up, non-contiguous bus pages for odd pages."""

    def __init__(self):
        self.live: dict[int, object] = {}
        self.next_bus = 0x10_0000_0000

    def dma_alloc(self, size):
        mem = ctypes.create_string_buffer(size + 4096)
        host = (ctypes.addressof(mem) + 4095) & ~4095
        pages = []
        for i in range((size + 4095) // 4096):
            self.next_bus += 4096 if i % 3 else 8192  # a gap every third page: the GFX must map runs
            pages.append(self.next_bus)
        buf = DMABuffer(host_addr=host, size=size, bus_pages=pages)
        self.live[id(buf)] = mem
        return buf

    def dma_free(self, buf):
        assert self.live.pop(id(buf), None) is not None, "freed a DMA buffer twice or one never allocated"


class FakeGMC:
    def __init__(self):
        self.hub_enabled = {"MM": True, "GC": False}
        self.maps: list[tuple[int, int, int, int]] = []
        self.unmaps: list[tuple[int, int]] = []
        self.flushes = 0

    def gfxhub_enable(self):
        self.hub_enabled["GC"] = True

    def map(self, va, phys, size, flags, flush=True, **kw):
        assert va % 4096 == 0 and phys % 4096 == 0 and size % 4096 == 0
        self.maps.append((va, phys, size, flags))

    def unmap(self, va, size, flush=True):
        self.unmaps.append((va, size))

    def flush_tlb(self):
        self.flushes += 1


def fake_dev(target: str, pfp_major: int = 2):
    disc = parse_discovery(build_discovery_table(target))
    probe = RegisterFile(FakeGC({}), disc, bdf="fake")
    names = {probe.reg("GC", n).address: n for n in NAMES}
    mmio = FakeGC(names)
    regs = RegisterFile(mmio, disc, bdf="fake")
    firmware = {"pfp": SimpleNamespace(header_version=(pfp_major, 0))}
    return SimpleNamespace(bdf="fake", target=target, regs=regs, mmio=mmio, discovery=disc, firmware=firmware,
                           gmc=FakeGMC(), pci=FakePCI(), doorbells=FakeDoorbells())


def val(dev, name, bank=0):
    return dev.mmio.values.get((name, bank), 0)


def field(dev, name, value, f):
    return dev.regs.reg("GC", name).get(value, f)


def bank_of(dev, me=0, pipe=0, queue=0, vmid=0):
    return dev.regs.reg("GC", "GRBM_GFX_CNTL").encode(MEID=me, PIPEID=pipe, QUEUEID=queue, VMID=vmid)


@pytest.fixture(params=TARGETS)
def up(request):
    dev = fake_dev(request.param)
    gfx = GFX(sleep=lambda s: None).init(dev)
    return dev, gfx


# --- init ---
def test_init_waits_for_autoload_then_unhalts_the_mec(up):
    dev, gfx = up
    log = dev.mmio.log
    first_write = next(i for i, e in enumerate(log) if e[0] == "w")
    assert any(e[1] == "RLC_RLCS_BOOTLOAD_STATUS" for e in log[:first_write]), "nothing written before the autoload"
    assert dev.gmc.hub_enabled["GC"], "the GFXHUB is enabled by the GFX block (gfx_v11_0_gfxhub_enable)"
    cntl = val(dev, "CP_MEC_RS64_CNTL")
    assert field(dev, "CP_MEC_RS64_CNTL", cntl, "MEC_HALT") == 0
    for p in range(4):
        assert field(dev, "CP_MEC_RS64_CNTL", cntl, f"MEC_PIPE{p}_ACTIVE") == 1
        assert field(dev, "CP_MEC_RS64_CNTL", cntl, f"MEC_PIPE{p}_RESET") == 0
    assert gfx.mec_enabled and gfx.rs64
    # gfx_v11_0_cp_set_doorbell_range: (kiq*2)<<2 .. (userqueue_end*2)<<2, (gfx_ring0*2)<<2 .. (gfx_userqueue_end*2)<<2
    assert val(dev, "CP_MEC_DOORBELL_RANGE_LOWER") == 0
    assert val(dev, "CP_MEC_DOORBELL_RANGE_UPPER") == (0x8A * 2) << 2
    assert val(dev, "CP_RB_DOORBELL_RANGE_LOWER") == (0x8B * 2) << 2
    assert val(dev, "CP_RB_DOORBELL_RANGE_UPPER") == (0xFF * 2) << 2
    # the doorbell range is programmed before the MEC is unhalted
    w = [e[1] for e in log if e[0] == "w"]
    assert w.index("CP_MEC_DOORBELL_RANGE_UPPER") < w.index("CP_MEC_RS64_CNTL")


def test_sh_mem_is_set_for_every_vmid_and_the_bank_is_restored(up):
    dev, gfx = up
    for vmid in range(16):
        b = bank_of(dev, vmid=vmid)
        cfg = val(dev, "SH_MEM_CONFIG", b)
        assert field(dev, "SH_MEM_CONFIG", cfg, "ALIGNMENT_MODE") == 3  # SH_MEM_ALIGNMENT_MODE_UNALIGNED
        assert field(dev, "SH_MEM_CONFIG", cfg, "INITIAL_INST_PREFETCH") == 3
        bases = val(dev, "SH_MEM_BASES", b)
        assert field(dev, "SH_MEM_BASES", bases, "SHARED_BASE") == 0x2000
        assert field(dev, "SH_MEM_BASES", bases, "PRIVATE_BASE") == 0x1000
    assert dev.mmio.bank == 0


def test_autoload_timeout_names_the_registers():
    dev = fake_dev("gfx1100")
    dev.mmio.autoload_after = 10 ** 9
    with pytest.raises(GFXError, match=r"RLC autoload did not complete.*RLC_RLCS_BOOTLOAD_STATUS.*AUTOLOAD_RLC"):
        GFX(autoload_timeout=0.01, sleep=lambda s: None).init(dev)


def test_autoload_wait_tolerates_a_slow_rlc():
    dev = fake_dev("gfx1100")
    dev.mmio.autoload_after = 5
    GFX(sleep=lambda s: None).init(dev)


def test_busy_cp_stat_keeps_waiting():
    dev = fake_dev("gfx1100")
    dev.mmio.values[("CP_STAT", 0)] = 0x80000000
    with pytest.raises(GFXError, match="CP_STAT 0x80000000"):
        GFX(autoload_timeout=0.01, sleep=lambda s: None).init(dev)


def test_gfx11_without_rs64_firmware_unhalts_through_cp_mec_cntl():
    dev = fake_dev("gfx1100", pfp_major=1)
    dev.mmio.values[("CP_MEC_CNTL", 0)] = dev.regs.reg("GC", "CP_MEC_CNTL").encode(MEC_ME1_HALT=1, MEC_ME2_HALT=1)
    gfx = GFX(sleep=lambda s: None).init(dev)
    assert not gfx.rs64
    cntl = val(dev, "CP_MEC_CNTL")
    assert field(dev, "CP_MEC_CNTL", cntl, "MEC_ME1_HALT") == 0 and field(dev, "CP_MEC_CNTL", cntl, "MEC_ME2_HALT") == 0
    assert not any(e[1] == "CP_MEC_RS64_CNTL" for e in dev.mmio.log)


def test_unsupported_gc_is_refused():
    dev = fake_dev("gfx1100")
    dev.discovery = SimpleNamespace(version=lambda b, i=0: (10, 3, 0))
    with pytest.raises(GFXError, match="GC 10.x"):
        GFX().init(dev)


# --- queues ---
def test_compute_queue_programs_the_hqd_from_the_mqd(up):
    dev, gfx = up
    q = gfx.create_compute_queue(1 << 16, pipe=1, queue=2)
    b = bank_of(dev, me=1, pipe=1, queue=2)
    m = q.mqd
    assert m.header == 0xC0310800 and m.compute_static_thread_mgmt_se0 == 0xFFFFFFFF
    # the MQD lies in the queue buffer, at its VA
    assert ctypes.addressof(m) == q.buffer.host_addr
    assert val(dev, "CP_MQD_BASE_ADDR", b) == q.mqd_va & 0xFFFFFFFC
    assert val(dev, "CP_MQD_BASE_ADDR_HI", b) == q.mqd_va >> 32
    assert val(dev, "CP_HQD_PQ_BASE", b) == (q.ring_va >> 8) & 0xFFFFFFFF
    assert val(dev, "CP_HQD_PQ_BASE_HI", b) == q.ring_va >> 40
    assert val(dev, "CP_HQD_EOP_BASE_ADDR", b) == (q.eop_va >> 8) & 0xFFFFFFFF
    assert val(dev, "CP_HQD_PQ_RPTR_REPORT_ADDR", b) == q.rptr_va & 0xFFFFFFFF
    assert val(dev, "CP_HQD_PQ_RPTR_REPORT_ADDR_HI", b) == q.rptr_va >> 32
    assert val(dev, "CP_HQD_PQ_WPTR_POLL_ADDR", b) == q.wptr_va & 0xFFFFFFFF
    assert val(dev, "CP_HQD_PQ_WPTR_POLL_ADDR_HI", b) == q.wptr_va >> 32
    # the fields gfx_v11_0_compute_mqd_init sets
    eop = val(dev, "CP_HQD_EOP_CONTROL", b)
    assert field(dev, "CP_HQD_EOP_CONTROL", eop, "EOP_SIZE") == 8  # 2048 bytes: 2^(8+1) dwords
    pq = val(dev, "CP_HQD_PQ_CONTROL", b)
    assert field(dev, "CP_HQD_PQ_CONTROL", pq, "QUEUE_SIZE") == 13  # 2^(13+1) dwords = 64 KiB
    assert field(dev, "CP_HQD_PQ_CONTROL", pq, "RPTR_BLOCK_SIZE") == 9
    for f in ("UNORD_DISPATCH", "PRIV_STATE", "KMD_QUEUE"):
        assert field(dev, "CP_HQD_PQ_CONTROL", pq, f) == 1, f
    db = val(dev, "CP_HQD_PQ_DOORBELL_CONTROL", b)
    assert field(dev, "CP_HQD_PQ_DOORBELL_CONTROL", db, "DOORBELL_EN") == 1
    assert field(dev, "CP_HQD_PQ_DOORBELL_CONTROL", db, "DOORBELL_OFFSET") == DOORBELLS.mec_rings[0] * 2
    assert q.doorbell_index == DOORBELLS.mec_rings[0] and q.doorbell_offset == DOORBELLS.mec_rings[0] * 8
    assert field(dev, "CP_HQD_PERSISTENT_STATE", val(dev, "CP_HQD_PERSISTENT_STATE", b), "PRELOAD_SIZE") == 0x55
    assert field(dev, "CP_MQD_CONTROL", val(dev, "CP_MQD_CONTROL", b), "VMID") == 0
    assert val(dev, "CP_HQD_VMID", b) == 0 and val(dev, "CP_HQD_ACTIVE", b) == 1
    assert field(dev, "CP_PQ_STATUS", val(dev, "CP_PQ_STATUS"), "DOORBELL_ENABLE") == 1
    assert dev.mmio.bank == 0, "the bank is deselected after programming (soc21_grbm_select(0, 0, 0, 0))"
    # nothing queue-specific leaked into bank 0
    assert val(dev, "CP_HQD_ACTIVE", 0) == 0 and val(dev, "CP_HQD_PQ_BASE", 0) == 0


def test_hqd_writes_follow_kiq_init_register_order(up):
    dev, gfx = up
    gfx.create_compute_queue(1 << 12)
    b = bank_of(dev, me=1)
    w = [e[1] for e in dev.mmio.log if e[0] == "w" and e[2] == b]
    assert w[0] == "CP_HQD_EOP_BASE_ADDR"
    assert w.index("CP_HQD_PQ_BASE") < w.index("CP_HQD_PQ_CONTROL") < w.index("CP_HQD_ACTIVE")
    assert w.index("CP_MQD_BASE_ADDR") < w.index("CP_HQD_ACTIVE")
    assert w[-1] == "CP_HQD_ACTIVE"
    all_w = [e for e in dev.mmio.log if e[0] == "w"]
    poll = [i for i, e in enumerate(all_w) if e[1] == "CP_PQ_WPTR_POLL_CNTL"]
    active = [i for i, e in enumerate(all_w) if e[1] == "CP_HQD_ACTIVE"]
    assert poll and poll[-1] < active[-1]
    assert field(dev, "CP_PQ_WPTR_POLL_CNTL", val(dev, "CP_PQ_WPTR_POLL_CNTL"), "EN") == 0


def test_queue_memory_is_mapped_as_snooped_system_memory_in_runs(up):
    dev, gfx = up
    q = gfx.create_compute_queue(1 << 14)
    pages = q.buffer.bus_pages
    covered = []
    for va, phys, size, flags in dev.gmc.maps:
        assert flags & PTE_SYSTEM and flags & PTE_SNOOPED
        for i in range(size // 4096):
            covered.append((va + i * 4096, phys + i * 4096))
    assert covered == [(q.va + i * 4096, p) for i, p in enumerate(pages)]
    assert len(dev.gmc.maps) < len(pages), "contiguous bus pages go in one mapping"
    assert dev.gmc.flushes >= 1


def test_ring_wptr_rptr_and_doorbell(up):
    dev, gfx = up
    q = gfx.create_compute_queue(1 << 12)
    q.ring[0:4] = b"\x01\x02\x03\x04"
    assert ctypes.string_at(q.ring_host_addr, 4) == b"\x01\x02\x03\x04"
    q.write_wptr(0x1_0000_0004)
    assert q.read_wptr() == 0x1_0000_0004
    assert q.read_rptr() == 0
    q.ring_doorbell(0x1_0000_0004)
    assert dev.doorbells.writes == [(q.doorbell_offset, 4), (q.doorbell_offset + 4, 1)]
    d = q.describe()
    assert d["ring_va"] == q.ring_va and d["wptr"] == 0x1_0000_0004


def test_second_queue_gets_the_next_doorbell_and_slot_clashes_are_refused(up):
    dev, gfx = up
    a = gfx.create_compute_queue(1 << 12)
    b = gfx.create_compute_queue(1 << 12, queue=1)
    assert b.doorbell_index == DOORBELLS.mec_rings[1] and b.va > a.va
    with pytest.raises(GFXError, match="already holds a queue"):
        gfx.create_compute_queue(1 << 12, queue=1)
    with pytest.raises(GFXError, match="already used"):
        gfx.create_compute_queue(1 << 12, queue=2, doorbell_index=a.doorbell_index)
    with pytest.raises(GFXError, match="outside the MEC doorbell range"):
        gfx.create_compute_queue(1 << 12, queue=3, doorbell_index=DOORBELLS.sdma_engines[0])


@pytest.mark.parametrize("kw, msg", [(dict(ring_size=3000), "power of two"), (dict(ring_size=2048), "power of two"),
                                     (dict(pipe=4), "pipes 0..3"), (dict(queue=8), "queues 0..7")])
def test_bad_queue_arguments(up, kw, msg):
    dev, gfx = up
    with pytest.raises(GFXError, match=msg):
        gfx.create_compute_queue(**kw)


def test_queue_before_init_is_refused():
    with pytest.raises(GFXError, match="before GFX.init"):
        GFX().create_compute_queue()


def test_a_queue_left_active_is_dequeued_before_reprogramming():
    dev = fake_dev("gfx1100")
    b = bank_of(dev, me=1)
    dev.mmio.values[("CP_HQD_ACTIVE", b)] = 1  # a previous process left the slot active
    gfx = GFX(sleep=lambda s: None).init(dev)
    gfx.create_compute_queue(1 << 12)
    w = [(e[1], e[3]) for e in dev.mmio.log if e[0] == "w" and e[2] == b]
    assert ("CP_HQD_DEQUEUE_REQUEST", 1) in w
    assert w.index(("CP_HQD_DEQUEUE_REQUEST", 1)) < w.index(("CP_HQD_ACTIVE", 1))
    assert val(dev, "CP_HQD_DEQUEUE_REQUEST", b) == 0


def test_fini_dequeues_unmaps_frees_and_halts(up):
    dev, gfx = up
    q = gfx.create_compute_queue(1 << 12)
    b = bank_of(dev, me=1)
    gfx.fini()
    assert val(dev, "CP_HQD_ACTIVE", b) == 0 and not q.active
    assert dev.gmc.unmaps == [(q.va, 0x3000 + (1 << 12))]
    assert dev.pci.live == {}
    assert field(dev, "CP_MEC_RS64_CNTL", val(dev, "CP_MEC_RS64_CNTL"), "MEC_HALT") == 1
    assert not gfx.mec_enabled and gfx.queues == []
    gfx.fini()  # a second fini does nothing more


def test_a_hung_dequeue_is_a_clear_error_and_memory_is_still_freed():
    dev = fake_dev("gfx1201")
    gfx = GFX(dequeue_timeout=0.01, sleep=lambda s: None).init(dev)
    gfx.create_compute_queue(1 << 12)
    dev.mmio.hang_dequeue = True
    with pytest.raises(GFXError, match="stayed active.*CP_HQD_DEQUEUE_REQUEST"):
        gfx.fini()
    assert dev.pci.live == {} and not gfx.mec_enabled


def test_suspend_and_resume_reprogram_the_queues(up):
    dev, gfx = up
    q = gfx.create_compute_queue(1 << 12)
    b = bank_of(dev, me=1)
    q.write_wptr(40)
    gfx.suspend()
    assert val(dev, "CP_HQD_ACTIVE", b) == 0 and not gfx.mec_enabled and q.buffer.host_addr
    gfx.resume()
    assert val(dev, "CP_HQD_ACTIVE", b) == 1 and gfx.mec_enabled and q.active
    assert q.read_wptr() == 0
    gfx.fini()


# --- on the emulated card, once emu/am/gfx.py exists ---
MB = 1 << 20
BDF = "0000:03:00.0"


@pytest.mark.parametrize("target", TARGETS)
def test_on_the_emulated_card(tmp_path, target):
    from drivers.am.device import AMDevice
    from drivers.am.gmc import GMC
    from drivers.am.psp import PSP
    from drivers.lock import ProcessLocks
    from emu.am.gpu import install_am_gpu
    from emu.system import EmulatedSystem
    from tests.firmware import fwgen
    fw = tmp_path / "fw"
    fw.mkdir()
    fwgen.write_set(fw, target)
    system = EmulatedSystem(lock_dir=ProcessLocks(f"test_am_gfx {target}"))
    card = install_am_gpu(system, target, BDF, boot_delay_s=0, vram_size=1024 * MB, bar0_size=1024 * MB,
                          firmware=fw, blocks=True)
    dev = AMDevice(BDF, system, firmware_dirs=[fw], firmware_system_dirs=False)
    try:
        # the blocks by hand, as test_am_boot.py does (GMC for the VM, PSP for the firmware and AUTOLOAD_RLC)
        dev.gmc = GMC().init(dev)
        psp = PSP(handshake_delay_s=0).init(dev)
        gfx = GFX().init(dev)
        assert dev.gmc.hub_enabled["GC"]
        q = gfx.create_compute_queue(1 << 12, pipe=0, queue=1)
        assert card.gfx.errors == [], card.gfx.errors
        hq = card.gfx.queues[(1, 0, 1)]
        assert hq.ring_addr == q.ring_va and hq.ring_size == q.ring_size
        assert hq.rptr_report_addr == q.rptr_va and hq.wptr_poll_addr == q.wptr_va
        assert hq.doorbell == DOORBELLS.dword(q.doorbell_index) and hq.mqd_addr == q.mqd_va
        assert card.gfx.queue_ready((1, 0, 1)) == (True, "ready")
        gfx.fini()
        assert (1, 0, 1) not in card.gfx.queues
        psp.fini()
        dev.gmc.fini()
    finally:
        dev.close()
        card.close()
