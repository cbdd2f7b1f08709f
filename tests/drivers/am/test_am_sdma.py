"""The AM SDMA driver (drivers/am/sdma.py): queue 0 of each instance programmed as sdma_v6_0_gfx_resume /
sdma_v7_0_gfx_resume do, checked against a fake register file (values and order), the doorbell routing asked of the
NBIO, submission through the doorbell, suspend/resume/fini, and — when emu/am/sdma.py is in the tree — a boot on the
emulated card with the SDMA attached."""
from __future__ import annotations

import ctypes
from types import SimpleNamespace

import pytest

from drivers.am.discovery import parse_discovery
from drivers.am.regs import RegisterFile
from drivers.am.sdma import SDMA, SDMAError
from drivers.pci.interface import BarMapping, DMABuffer
from emu.am.discovery import build_discovery_table

TARGETS = ["gfx1100", "gfx1201"]
BUS0 = 0x3_0000_0000
SYSTEM, SNOOPED, READ, WRITE = 2, 4, 32, 64  # amdgpu_vm.h AMDGPU_PTE_* (written here, not imported)
SDMA_ENGINE = (0x100, 0x10A)  # amdgpu_doorbell.h AMDGPU_NAVI10_DOORBELL_sDMA_ENGINE0/1 (64-bit units)


class FakeMMIO(BarMapping):
    """Registers by byte offset in a dict, with a log of every access."""

    def __init__(self, size=1 << 24):
        self.index, self.size = 5, size
        self.values: dict[int, int] = {}
        self.log: list[tuple[str, int, int]] = []

    def read32(self, offset):
        v = self.values.get(offset, 0)
        self.log.append(("r", offset, v))
        return v

    def write32(self, offset, value):
        self.log.append(("w", offset, value))
        self.values[offset] = value

    def read(self, offset, size):
        raise AssertionError("no block reads of registers")

    def write(self, offset, data):
        raise AssertionError("no block writes of registers")


class FakeDoorbells(BarMapping):
    """BAR2 without a host mapping: 64-bit doorbell writes arrive as 8-byte writes."""

    def __init__(self):
        self.index, self.size, self.host_addr = 2, 1 << 20, None
        self.writes: list[tuple[int, bytes]] = []

    def read32(self, offset):
        return 0

    def write32(self, offset, value):
        raise AssertionError("the SDMA doorbell is 64-bit (WDOORBELL64), not two 32-bit writes")

    def read(self, offset, size):
        return bytes(size)

    def write(self, offset, data):
        self.writes.append((offset, bytes(data)))


class FakePCI:
    def __init__(self):
        self.live: dict[int, ctypes.Array] = {}
        self.freed: list[DMABuffer] = []
        self.next = BUS0

    def dma_alloc(self, size):
        mem = ctypes.create_string_buffer(size)
        addr = ctypes.addressof(mem)
        self.live[addr] = mem
        n = (size + 4095) // 4096
        pages = [self.next + i * 4096 for i in range(n)]
        self.next += (n + 1) * 4096
        return DMABuffer(host_addr=addr, size=size, bus_pages=pages)

    def dma_free(self, buf):
        del self.live[buf.host_addr]
        self.freed.append(buf)


class FakeGMC:
    def __init__(self, gc_enabled=True):
        self.maps: list[tuple] = []
        self.unmaps: list[tuple] = []
        self.flushes = 0
        self.hub_enabled = {"MM": True, "GC": gc_enabled}

    def map(self, va, phys, size, flags, **kw):
        self.maps.append((va, phys, size, flags))

    def unmap(self, va, size, **kw):
        self.unmaps.append((va, size))

    def flush_tlb(self):
        self.flushes += 1

    def gfxhub_enable(self):
        self.hub_enabled["GC"] = True


class FakeNBIO:
    def __init__(self):
        self.calls: list[tuple] = []
        from drivers.am.nbio import DOORBELLS
        self.layout = DOORBELLS

    def sdma_doorbell_range(self, instance, enable=True, index=None, size=None):
        self.calls.append((instance, enable, index, size))


def fake_dev(target, nbio=True, gmc=True, gc_enabled=True):
    disc = parse_discovery(build_discovery_table(target))
    mmio = FakeMMIO()
    dev = SimpleNamespace(bdf="fake", target=target, regs=RegisterFile(mmio, disc, bdf="fake"), mmio=mmio,
                          discovery=disc, pci=FakePCI(), doorbells=FakeDoorbells())
    if gmc:
        dev.gmc = FakeGMC(gc_enabled)
    if nbio:
        dev.nbio = FakeNBIO()
    return dev


def addr(dev, inst, name):
    return dev.regs.reg("GC", f"SDMA{inst}_{name}").address


def val(dev, inst, name):
    return dev.mmio.values.get(addr(dev, inst, name), 0)


def fld(dev, inst, name, f):
    return dev.regs.reg("GC", f"SDMA{inst}_{name}").get(val(dev, inst, name), f)


def writes_to(dev, inst, name):
    a = addr(dev, inst, name)
    return [(n, v) for n, (kind, o, v) in enumerate(dev.mmio.log) if kind == "w" and o == a]


@pytest.mark.parametrize("target", TARGETS)
def test_init_programs_queue0_of_each_instance(target):
    dev = fake_dev(target)
    sdma = SDMA(ring_size=64 * 1024).init(dev)
    v6 = target.startswith("gfx11")
    assert sdma.version == (6 if v6 else 7)
    assert sdma.num_instances == 2 and sorted(sdma.queues) == [0, 1]
    for i, q in sdma.queues.items():
        assert fld(dev, i, "QUEUE0_RB_CNTL", "RB_SIZE") == 14  # order_base_2(64 KiB / 4)
        assert fld(dev, i, "QUEUE0_RB_CNTL", "RB_PRIV") == 1
        assert fld(dev, i, "QUEUE0_RB_CNTL", "RPTR_WRITEBACK_ENABLE") == 1
        assert fld(dev, i, "QUEUE0_RB_CNTL", "WPTR_POLL_ENABLE") == 0
        assert fld(dev, i, "QUEUE0_RB_CNTL", "F32_WPTR_POLL_ENABLE" if v6 else "MCU_WPTR_POLL_ENABLE") == 1
        assert fld(dev, i, "QUEUE0_RB_CNTL", "RB_ENABLE") == 1
        assert fld(dev, i, "QUEUE0_IB_CNTL", "IB_ENABLE") == 1
        assert val(dev, i, "QUEUE0_RB_BASE") == (q.ring_va >> 8) & 0xFFFFFFFF
        assert val(dev, i, "QUEUE0_RB_BASE_HI") == q.ring_va >> 40
        poll = val(dev, i, "QUEUE0_RB_WPTR_POLL_ADDR_LO") | val(dev, i, "QUEUE0_RB_WPTR_POLL_ADDR_HI") << 32
        assert poll == q.wptr_va
        assert val(dev, i, "QUEUE0_RB_RPTR_ADDR_LO") | val(dev, i, "QUEUE0_RB_RPTR_ADDR_HI") << 32 == q.rptr_va
        assert q.rptr_va % 4 == 0 and q.wptr_va % 8 == 0
        assert val(dev, i, "QUEUE0_RB_WPTR") == 0 and val(dev, i, "QUEUE0_RB_RPTR") == 0
        assert val(dev, i, "QUEUE0_MINOR_PTR_UPDATE") == 0
        # sdma_v6_0_sw_init: doorbell_index = sdma_engine[i] << 1 (dwords); WDOORBELL64 at 4 * index bytes
        assert fld(dev, i, "QUEUE0_DOORBELL", "ENABLE") == 1
        assert fld(dev, i, "QUEUE0_DOORBELL_OFFSET", "OFFSET") == SDMA_ENGINE[i] << 1 == q.doorbell_index
        assert q.doorbell_offset == SDMA_ENGINE[i] * 8 and q.doorbell_bar == 2
        assert fld(dev, i, "WATCHDOG_CNTL", "QUEUE_HANG_COUNT") == 1
        assert fld(dev, i, "UTCL1_CNTL", "RESP_MODE") == 3 and fld(dev, i, "UTCL1_CNTL", "REDO_DELAY") == 9
        # sdma_common.h: read policy NOA (2) at bit 12, write policy BYPASS (3) at bit 14; LLC_NOALLOC on v6 only
        assert val(dev, i, "UTCL1_PAGE") == (2 << 12 | 3 << 14 | ((1 << 24) if v6 else 0))
        if v6:
            assert fld(dev, i, "F32_CNTL", "HALT") == 0 and fld(dev, i, "F32_CNTL", "TH1_RESET") == 0
            assert fld(dev, i, "CNTL", "CTXEMPTY_INT_ENABLE") == 1
            assert writes_to(dev, i, "SEM_WAIT_FAIL_TIMER_CNTL")[-1][1] == 0
        else:
            assert fld(dev, i, "MCU_CNTL", "HALT") == 0 and fld(dev, i, "MCU_CNTL", "RESET") == 0
        assert q.ring.nbytes == 64 * 1024 and not q.ring.readonly
    # sdma_v6_0_get_reg_offset: SDMA1 at +0x600 dwords, SDMA1's F32/MCU_CNTL at +0x20
    assert addr(dev, 1, "QUEUE0_RB_CNTL") - addr(dev, 0, "QUEUE0_RB_CNTL") == 0x600 * 4
    ctl = "F32_CNTL" if v6 else "MCU_CNTL"
    assert addr(dev, 1, ctl) - addr(dev, 0, ctl) == 0x20 * 4
    # the NBIO routes the SDMA doorbells once, for instance 0, covering both engines
    assert dev.nbio.calls == [(0, True, SDMA_ENGINE[0] << 1, 20 * 2)]
    # rings mapped as snooped system memory in the GMC, distinct VAs
    vas = [m[0] for m in dev.gmc.maps]
    assert len(set(vas)) == 2 and all(m[3] == SYSTEM | SNOOPED | READ | WRITE for m in dev.gmc.maps)
    assert all(m[2] == 64 * 1024 + 4096 for m in dev.gmc.maps)
    assert sdma.warnings == [] and sdma.describe()["queues"][1]["doorbell_index"] == SDMA_ENGINE[1] << 1
    sdma.fini()


@pytest.mark.parametrize("target", TARGETS)
def test_program_order_follows_gfx_resume(target):
    dev = fake_dev(target)
    SDMA().init(dev)
    halt = "F32_CNTL" if target.startswith("gfx11") else "MCU_CNTL"
    for i in (0, 1):
        rb = writes_to(dev, i, "QUEUE0_RB_CNTL")
        ctl = writes_to(dev, i, halt)
        r = dev.regs.reg("GC", f"SDMA{i}_QUEUE0_RB_CNTL")
        h = dev.regs.reg("GC", f"SDMA{i}_{halt}")
        # first: the ring stopped and the engine halted (stop before programming)
        assert r.get(rb[0][1], "RB_ENABLE") == 0 and h.get(ctl[0][1], "HALT") == 1
        minor = writes_to(dev, i, "QUEUE0_MINOR_PTR_UPDATE")
        wptr = writes_to(dev, i, "QUEUE0_RB_WPTR")
        assert [v for _, v in minor] == [1, 0]
        assert minor[0][0] < wptr[-1][0] < minor[1][0]  # wptr written between MINOR_PTR_UPDATE 1 and 0
        base = writes_to(dev, i, "QUEUE0_RB_BASE")[-1][0]
        enable = rb[-1]
        assert r.get(enable[1], "RB_ENABLE") == 1 and enable[0] > base
        assert ctl[-1][0] < enable[0] and h.get(ctl[-1][1], "HALT") == 0  # unhalt, then RB_ENABLE
        ib = writes_to(dev, i, "QUEUE0_IB_CNTL")[-1]
        assert ib[0] > enable[0]  # IBs enabled last


def test_submit_writes_the_wptr_slot_and_a_64bit_doorbell():
    dev = fake_dev("gfx1100")
    sdma = SDMA().init(dev)
    q = sdma.queues[1]
    q.ring[0:4] = b"\x01\x02\x03\x04"  # the CPU view writes the DMA buffer
    assert ctypes.string_at(q.buf.host_addr, 4) == b"\x01\x02\x03\x04"
    q.submit(0x40)
    assert q.read_wptr_shadow() == 0x40 == q.wptr
    assert dev.doorbells.writes == [(SDMA_ENGINE[1] * 8, (0x40).to_bytes(8, "little"))]
    ctypes.c_uint64.from_address(q.rptr_host).value = 0x20  # as the engine's rptr writeback would
    assert q.read_rptr() == 0x20
    with pytest.raises(SDMAError, match="multiple of 4"):
        q.submit(0x41)
    sdma.fini()


def test_submit_with_a_host_mapped_doorbell_bar():
    dev = fake_dev("gfx1201")
    bar = ctypes.create_string_buffer(1 << 12)
    dev.doorbells = SimpleNamespace(host_addr=ctypes.addressof(bar))
    sdma = SDMA(queues=False).init(dev)
    q = sdma.create_queue(0)
    q.submit(0x1_0000_0010)
    assert ctypes.c_uint64.from_address(ctypes.addressof(bar) + SDMA_ENGINE[0] * 8).value == 0x1_0000_0010
    sdma.fini()


@pytest.mark.parametrize("target", TARGETS)
def test_fini_stops_halts_unmaps_and_frees(target):
    dev = fake_dev(target)
    sdma = SDMA().init(dev)
    bufs = [q.buf for q in sdma.queues.values()]
    sdma.fini()
    halt = "F32_CNTL" if target.startswith("gfx11") else "MCU_CNTL"
    for i in (0, 1):
        assert fld(dev, i, "QUEUE0_RB_CNTL", "RB_ENABLE") == 0 and fld(dev, i, "QUEUE0_IB_CNTL", "IB_ENABLE") == 0
        assert fld(dev, i, halt, "HALT") == 1
    assert sorted(dev.gmc.unmaps) == sorted((m[0], m[2]) for m in dev.gmc.maps)
    assert dev.pci.freed == bufs and not dev.pci.live and sdma.queues == {} and sdma.state == "off"
    sdma.fini()  # twice is harmless


def test_suspend_keeps_rings_and_resume_reprograms_from_zero():
    dev = fake_dev("gfx1100")
    sdma = SDMA().init(dev)
    q = sdma.queues[0]
    q.submit(0x100)
    sdma.suspend()
    assert fld(dev, 0, "F32_CNTL", "HALT") == 1 and fld(dev, 0, "QUEUE0_RB_CNTL", "RB_ENABLE") == 0
    assert sdma.queues[0] is q and not dev.pci.freed
    sdma.resume()
    assert fld(dev, 0, "F32_CNTL", "HALT") == 0 and fld(dev, 0, "QUEUE0_RB_CNTL", "RB_ENABLE") == 1
    assert q.wptr == 0 and q.read_wptr_shadow() == 0 and val(dev, 0, "QUEUE0_RB_WPTR") == 0
    assert len(dev.gmc.maps) == 2  # same rings, not mapped again
    sdma.fini()


def test_create_queue_replaces_and_checks_the_instance():
    dev = fake_dev("gfx1100")
    sdma = SDMA().init(dev)
    old = sdma.queues[1]
    new = sdma.create_queue(1)
    assert new is not old and sdma.queues[1] is new and old.buf in dev.pci.freed
    assert new.ring_va == old.ring_va and fld(dev, 1, "QUEUE0_RB_CNTL", "RB_ENABLE") == 1
    with pytest.raises(SDMAError, match="instance 2 does not exist"):
        sdma.create_queue(2)
    sdma.fini()


def test_without_nbio_or_gfxhub_the_block_says_so():
    dev = fake_dev("gfx1100", nbio=False, gc_enabled=False)
    sdma = SDMA().init(dev)
    assert any("GFXHUB" in w for w in sdma.warnings) and any("doorbell range" in w for w in sdma.warnings)
    sdma.fini()
    dev = fake_dev("gfx1100", gc_enabled=False)
    sdma = SDMA(enable_gfxhub=True).init(dev)
    assert dev.gmc.hub_enabled["GC"] and sdma.warnings == []
    sdma.fini()


def test_errors_name_what_is_missing():
    with pytest.raises(SDMAError, match="power of two"):
        SDMA(ring_size=3000)
    with pytest.raises(SDMAError, match="GMC"):
        SDMA().init(fake_dev("gfx1100", gmc=False))
    with pytest.raises(SDMAError, match="not initialised"):
        SDMA().create_queue(0)


# --- on the emulated card, when its SDMA exists ---


def _emulated(tmp_path, target):
    """A cold-booted emulated card with NBIO, GMC, PSP, SMU up and the GFXHUB enabled (the GFX block's job)."""
    from drivers.am.device import AMDevice
    from drivers.lock import ProcessLocks
    from emu.am.gpu import install_am_gpu
    from emu.system import EmulatedSystem
    from tests.firmware import fwgen
    mb = 1 << 20
    fw = tmp_path / "fw"
    fw.mkdir()
    fwgen.write_set(fw, target)
    system = EmulatedSystem(lock_dir=ProcessLocks(f"test_am_sdma {target}"))
    card = install_am_gpu(system, target, "0000:03:00.0", boot_delay_s=0, vram_size=1024 * mb,
                          bar0_size=1024 * mb, firmware=fw, blocks=True)
    dev = AMDevice("0000:03:00.0", system, firmware_dirs=[fw], firmware_system_dirs=False)
    try:
        dev.boot(blocks=["nbio", "gmc", "psp", "smu"], block_options={"psp": {"handshake_delay_s": 0}})
        if not dev.gmc.hub_enabled["GC"]:
            dev.gmc.gfxhub_enable()
    except BaseException:
        dev.close()
        card.close()
        raise
    return card, dev


@pytest.mark.parametrize("target", TARGETS)
def test_on_the_emulated_card(tmp_path, target):
    card, dev = _emulated(tmp_path, target)
    rung = []
    card.sdma.on_doorbell.append(lambda q, value: rung.append((q.instance, value)))
    try:
        sdma = SDMA().init(dev)
        assert sorted(sdma.queues) == [0, 1] and sdma.state == "running" and sdma.warnings == []
        for i, q in sdma.queues.items():  # the card activated each queue with what the driver programmed
            eq = card.sdma.queues[i]
            assert (eq.ring_addr, eq.ring_size, eq.rptr_addr, eq.wptr_poll_addr) == \
                (q.ring_va, q.ring_size, q.rptr_va, q.wptr_va)
            assert (eq.doorbell_index, eq.doorbell_offset) == (q.doorbell_index, q.doorbell_offset)
        for i, value in ((1, 0x20), (0, 0x1_0000_0040)):
            q = sdma.queues[i]
            q.submit(value)
            # the 64-bit value is in BAR2 at the queue's doorbell (WDOORBELL64) and in the wptr poll slot
            assert card.doorbells.read32(q.doorbell_offset) | card.doorbells.read32(q.doorbell_offset + 4) << 32 \
                == value == q.read_wptr_shadow()
            # BAR2 is plain memory on the emulated card (nothing forwards its writes to NBIO yet): deliver the write
            # as the card's doorbell path would, and check NBIO routes it to this SDMA queue
            assert card.nbio.ring(q.doorbell_offset, value) == ("SDMA", 0)
        assert [(i, v) for i, v in rung] == [(1, 0x20), (0, 0x1_0000_0040)] and card.sdma.stray_doorbells == []
        sdma.suspend()
        assert card.sdma.queues == {}
        sdma.resume()
        assert sorted(card.sdma.queues) == [0, 1]
        sdma.fini()
        assert card.sdma.queues == {}
    finally:
        dev.close()
        card.close()
