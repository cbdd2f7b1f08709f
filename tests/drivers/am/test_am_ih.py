"""The AM interrupt handler (drivers/am/ih.py): ring programming against a fake register file (ih_v6_0.c /
ih_v7_0.c), IVs hand-written into the ring (the layout written here from amdgpu_ih_decode_iv_helper), polling,
wrap-around, overflow, VM fault decoding (gmc_v11_0_process_interrupt), and — when emu/am/ih.py is in the tree — a
fault walked through the emulated GMC arriving as a decoded fault."""
from __future__ import annotations

import ctypes
import time
from types import SimpleNamespace

import pytest

from drivers.am.discovery import parse_discovery
from drivers.am.ih import IH, IHError, decode_iv
from drivers.am.regs import RegisterFile
from drivers.pci.interface import BarMapping, DMABuffer
from emu.am.discovery import build_discovery_table

TARGETS = ["gfx1100", "gfx1201"]
BUS0 = 0x2_0000_0000  # where the fake DMA pages sit on the bus
SYSTEM, SNOOPED, READ, WRITE = 2, 4, 32, 64  # amdgpu_vm.h AMDGPU_PTE_* (written here, not imported)


class FakeMMIO(BarMapping):
    """Registers by byte offset in a dict, with a log of every access."""

    def __init__(self):
        self.index, self.size = 5, 1 << 24
        self.values: dict[int, int] = {}
        self.log: list[tuple[str, int, int]] = []
        self.on_write: dict[int, object] = {}

    def read32(self, offset):
        v = self.values.get(offset, 0)
        self.log.append(("r", offset, v))
        return v

    def write32(self, offset, value):
        self.log.append(("w", offset, value))
        self.values[offset] = value
        if offset in self.on_write:
            self.on_write[offset](value)

    def read(self, offset, size):
        raise AssertionError("no block reads of registers")

    def write(self, offset, data):
        raise AssertionError("no block writes of registers")


class FakePCI:
    """DMA buffers in real process memory (the driver reads them with ctypes); bus pages contiguous unless
    `scatter`."""

    def __init__(self, scatter: bool = False):
        self.scatter = scatter
        self.live: dict[int, ctypes.Array] = {}
        self.freed: list[DMABuffer] = []

    def dma_alloc(self, size):
        mem = ctypes.create_string_buffer(size)
        addr = ctypes.addressof(mem)
        self.live[addr] = mem
        n = (size + 4095) // 4096
        pages = [BUS0 + (2 * i if self.scatter else i) * 4096 for i in range(n)]
        return DMABuffer(host_addr=addr, size=size, bus_pages=pages)

    def dma_free(self, buf):
        del self.live[buf.host_addr]
        self.freed.append(buf)


class FakeGMC:
    def __init__(self):
        self.maps: list[tuple] = []
        self.unmaps: list[tuple] = []
        self.flushes = 0

    def map(self, va, phys, size, flags, **kw):
        self.maps.append((va, phys, size, flags))

    def unmap(self, va, size, **kw):
        self.unmaps.append((va, size))

    def flush_tlb(self):
        self.flushes += 1


class Buffer:
    def __init__(self, name, va, size):
        self.name, self.va, self.size = name, va, size

    def __repr__(self):
        return f"<Buffer {self.name}>"


def fake_dev(target: str, gmc: bool = True, scatter: bool = False, buffers=()):
    disc = parse_discovery(build_discovery_table(target))
    mmio = FakeMMIO()
    dev = SimpleNamespace(bdf="fake", target=target, regs=RegisterFile(mmio, disc, bdf="fake"), mmio=mmio,
                          discovery=disc, pci=FakePCI(scatter))
    wptr = dev.regs.reg("OSSSYS", "IH_RB_WPTR").address

    def rb_cntl(value):  # the IH: WPTR_OVERFLOW_CLEAR (bit 31) clears IH_RB_WPTR.RB_OVERFLOW (bit 0)
        if value >> 31:
            mmio.values[wptr] = mmio.values.get(wptr, 0) & ~1
    mmio.on_write[dev.regs.reg("OSSSYS", "IH_RB_CNTL").address] = rb_cntl
    if gmc:
        dev.gmc = FakeGMC()
    if buffers:
        dev.owner_of = lambda va: next((b for b in buffers if b.va <= va < b.va + b.size), None)
    return dev


def reg(dev, name, block="OSSSYS"):
    return dev.regs.reg(block, name)


def val(dev, name, block="OSSSYS"):
    return dev.mmio.values.get(reg(dev, name, block).address, 0)


def fld(dev, name, f, block="OSSSYS"):
    return reg(dev, name, block).get(val(dev, name, block), f)


# --- a hand-written IH: IVs into the ring, the wptr into the writeback slot ---
def iv(client=0, src=0, ring=0, vmid=0, vmid_src=0, ts=0, pasid=0, node=0, data=(0, 0, 0, 0)):
    """The 8 dwords of an IV, packed from amdgpu_ih_decode_iv_helper's layout."""
    return [client | src << 8 | ring << 16 | vmid << 24 | vmid_src << 31, ts & 0xFFFFFFFF, (ts >> 32) & 0xFFFF,
            pasid | node << 16, *data]


class Writer:
    def __init__(self, ih: IH):
        self.ih, self.wptr = ih, 0

    def post(self, dwords, overflow: bool = False):
        host = self.ih.buf.host_addr
        (ctypes.c_uint32 * 8).from_address(host + self.wptr)[:] = dwords
        self.wptr = (self.wptr + 32) % self.ih.ring_size
        self.publish(overflow)

    def publish(self, overflow: bool = False):
        ctypes.c_uint32.from_address(self.ih.buf.host_addr + self.ih.ring_size).value = self.wptr | int(overflow)


@pytest.fixture(params=TARGETS)
def ih(request):
    dev = fake_dev(request.param, buffers=[Buffer("weights", 0x1000_0000, 0x10000)])
    return IH(ring_size=4096).init(dev)


# --- programming ---
@pytest.mark.parametrize("target", TARGETS)
def test_init_programs_ring_through_the_vm(target):
    dev = fake_dev(target)
    ih = IH().init(dev)
    va = ih.ring_va
    assert dev.gmc.maps == [(va, BUS0, 256 * 1024 + 4096, SYSTEM | SNOOPED | READ | WRITE)] and dev.gmc.flushes == 1
    assert val(dev, "IH_RB_BASE") == (va >> 8) & 0xFFFFFFFF and val(dev, "IH_RB_BASE_HI") == (va >> 40) & 0xFF
    assert val(dev, "IH_RB_WPTR_ADDR_LO") == (va + 256 * 1024) & 0xFFFFFFFF
    assert val(dev, "IH_RB_WPTR_ADDR_HI") == (va + 256 * 1024) >> 32
    want = dict(RB_ENABLE=1, ENABLE_INTR=1, MC_SPACE=4, RB_SIZE=16, WPTR_WRITEBACK_ENABLE=1, WPTR_OVERFLOW_ENABLE=1,
                MC_SNOOP=1, MC_RO=0, MC_VMID=0, RPTR_REARM=0,
                # ih_v6_0_toggle_ring_interrupts clears it after the pulse; ih_v7_0 leaves ih_v7_0_rb_cntl's 1
                WPTR_OVERFLOW_CLEAR=0 if target == "gfx1100" else 1)
    assert {f: fld(dev, "IH_RB_CNTL", f) for f in want} == want
    assert val(dev, "IH_RB_RPTR") == 0 and val(dev, "IH_RB_WPTR") == 0
    assert fld(dev, "IH_DOORBELL_RPTR", "ENABLE") == 0
    assert fld(dev, "IH_STORM_CLIENT_LIST_CNTL", "CLIENT18_IS_STORM_CLIENT") == 1
    assert fld(dev, "IH_INT_FLOOD_CNTL", "FLOOD_CNTL_ENABLE") == 1
    assert fld(dev, "IH_MSI_STORM_CTRL", "DELAY") == 3
    assert fld(dev, "IH_CNTL2", "SELF_IV_FORCE_WPTR_UPDATE_TIMEOUT") == 8
    assert fld(dev, "IH_CNTL2", "SELF_IV_FORCE_WPTR_UPDATE_ENABLE") == 1
    assert val(dev, "IH_CHICKEN") == 0  # GPA mode is only for bus addresses
    # the enable sequence: ih_v6_0 pulses WPTR_OVERFLOW_CLEAR 0 -> 1 -> 0 before ENABLE_INTR; ih_v7_0 does not
    a = reg(dev, "IH_RB_CNTL").address
    writes = [v for op, off, v in dev.mmio.log if op == "w" and off == a]
    enable_writes = [v for v in writes if v & 1]  # RB_ENABLE set
    clear = [bool(v >> 31) for v in enable_writes]
    assert clear == ([False, True, False] if target == "gfx1100" else [True])
    assert enable_writes[-1] & (1 << 17)  # ENABLE_INTR in the last write
    # base and CNTL are programmed while the ring is disabled (RB_ENABLE 0 before BASE is written)
    base = reg(dev, "IH_RB_BASE").address
    base_at = next(i for i, (op, off, _) in enumerate(dev.mmio.log) if op == "w" and off == base)
    assert all(not v & 1 for op, off, v in dev.mmio.log[:base_at] if op == "w" and off == a)


def test_bus_mode_uses_the_bus_address():
    dev = fake_dev("gfx1100", gmc=False)
    ih = IH(ring_size=8192).init(dev)
    assert ih.address_mode == "bus" and ih.gpu_addr == BUS0
    assert fld(dev, "IH_RB_CNTL", "MC_SPACE") == 2 and fld(dev, "IH_RB_CNTL", "RB_SIZE") == 11
    assert fld(dev, "IH_CHICKEN", "MC_SPACE_GPA_ENABLE") == 1
    assert val(dev, "IH_RB_BASE") == BUS0 >> 8 and val(dev, "IH_RB_WPTR_ADDR_LO") == (BUS0 + 8192) & 0xFFFFFFFF
    # scattered pages cannot be one bus range: a clear error, and the memory is given back
    dev2 = fake_dev("gfx1100", gmc=False, scatter=True)
    with pytest.raises(IHError, match="not contiguous on the bus"):
        IH(ring_size=8192).init(dev2)
    assert len(dev2.pci.freed) == 1 and not dev2.pci.live


def test_scattered_pages_map_run_by_run():
    dev = fake_dev("gfx1100", scatter=True)
    IH(ring_size=8192).init(dev)
    assert [(va - dev.gmc.maps[0][0], phys, size) for va, phys, size, _ in dev.gmc.maps] == \
        [(i * 4096, BUS0 + 2 * i * 4096, 4096) for i in range(3)]


def test_errors():
    with pytest.raises(IHError, match="power of two"):
        IH(ring_size=3000)
    with pytest.raises(IHError, match="power of two"):
        IH(ring_size=512 * 1024)
    with pytest.raises(IHError, match="needs the device's GMC"):
        IH(address="vm").init(fake_dev("gfx1100", gmc=False))


# --- decoding and polling ---
def test_decode_iv_layout():
    e = decode_iv(iv(client=0x12, src=0, ring=3, vmid=5, vmid_src=1, ts=0xABCD_1234_5678, pasid=0x4321, node=2,
                     data=(1, 2, 3, 4)))
    assert (e.client_id, e.src_id, e.ring_id, e.vmid, e.vmid_src) == (0x12, 0, 3, 5, 1)
    assert e.timestamp == 0xABCD_1234_5678 and e.pasid == 0x4321 and e.node_id == 2
    assert e.src_data == (1, 2, 3, 4) and e.client == "VMC" and e.is_vm_fault
    with pytest.raises(IHError):
        decode_iv([0] * 7)


def test_poll_reads_in_order_and_advances_rptr(ih):
    w = Writer(ih)
    assert not ih.poll()
    for i in range(3):
        w.post(iv(client=0x0a, src=181, data=(i, 0, 0, 0)))  # GFX CP EOP-like entries
    got = ih.poll()
    assert [e.src_data[0] for e in got] == [0, 1, 2] and not got.faults and not got.lost
    assert val(ih.dev, "IH_RB_RPTR") == 96 and ih.rptr == 96
    assert not ih.poll().entries
    # wrap-around: 4 KiB = 128 entries; go round twice in bursts
    n = 0
    for burst in (50, 100, 120, 7):
        for _ in range(burst):
            w.post(iv(client=0x0a, src=181, data=(n, 0, 0, 0)))
            n += 1
        got = ih.poll()
        assert [e.src_data[0] for e in got] == list(range(n - burst, n))
        assert val(ih.dev, "IH_RB_RPTR") == w.wptr
    assert ih.entries_seen == n + 3


def test_rptr_written_after_each_pass_of_32(ih):
    w = Writer(ih)
    for i in range(40):
        w.post(iv(client=0x0a, src=181))
    a = reg(ih.dev, "IH_RB_RPTR").address
    ih.dev.mmio.log.clear()
    assert len(ih.poll()) == 40
    assert [v for op, off, v in ih.dev.mmio.log if op == "w" and off == a] == [32 * 32, 40 * 32]
    # a bound on one poll: the rest is left for the next
    for i in range(20):
        w.post(iv(client=0x0a, src=181))
    assert len(ih.poll(max_entries=5)) == 5 and len(ih.poll()) == 15


def test_overflow_restarts_after_wptr_and_reports_the_loss(ih):
    w = Writer(ih)
    for i in range(200):  # more than the ring holds: the IH overwrote the oldest entries
        (ctypes.c_uint32 * 8).from_address(ih.buf.host_addr + w.wptr)[:] = iv(client=0x0a, src=181, data=(i, 0, 0, 0))
        w.wptr = (w.wptr + 32) % ih.ring_size
    w.publish(overflow=True)
    ih.dev.mmio.values[reg(ih.dev, "IH_RB_WPTR").address] = w.wptr | 1  # RB_OVERFLOW in the register too
    cntl = reg(ih.dev, "IH_RB_CNTL").address
    ih.dev.mmio.log.clear()
    got = ih.poll()
    assert got.lost and ih.overflows == 1
    ov = got.overflows[0]
    assert (ov.wptr, ov.rptr, ov.restart) == (w.wptr, 0, w.wptr + 32)
    assert "lost" in str(ov) and "ring_size" in str(ov)
    # WPTR_OVERFLOW_CLEAR pulsed 1 then 0 (ih_v7_0 left it at 1 after init: dropped to 0 first for a rising edge)
    pulses = [v >> 31 for op, off, v in ih.dev.mmio.log if op == "w" and off == cntl]
    assert pulses == ([1, 0] if ih.dev.target == "gfx1100" else [0, 1, 0])
    # reading resumed at wptr + 32: the 127 newest entries survive (the one at wptr was being overwritten)
    assert [e.src_data[0] for e in got] == list(range(200 - 127, 200))
    # the writeback still shows the overflow bit until the IH rewrites it; the register, cleared, is used instead
    assert val(ih.dev, "IH_RB_WPTR") == w.wptr
    assert not ih.poll().lost and ih.overflows == 1
    w.post(iv(client=0x0a, src=181, data=(500, 0, 0, 0)))
    assert [e.src_data[0] for e in ih.poll()] == [500]


# --- VM faults ---
def status_value(dev, block, name, **fields):
    return reg(dev, name, block).encode(0, **fields)


@pytest.mark.parametrize("target", TARGETS)
def test_gfxhub_fault_decoded(target):
    buf = Buffer("weights", 0x7_1234_0000, 0x10000)
    dev = fake_dev(target, buffers=[buf])
    seen = []
    ih = IH(ring_size=4096, on_fault=seen.append).init(dev)
    st_name = "GCVM_L2_PROTECTION_FAULT_STATUS" + ("_LO32" if target == "gfx1201" else "")
    dev.mmio.values[reg(dev, st_name, "GC").address] = status_value(dev, "GC", st_name, CID=8, RW=1,
                                                                    PERMISSION_FAULTS=4)
    addr = buf.va + 0x3000
    Writer(ih).post(iv(client=0x0a, src=0, ring=0, vmid=0, vmid_src=0, pasid=0,
                       data=((addr >> 12) & 0xFFFFFFFF, 0x20 | (addr >> 44) & 0xF, 0, 0)))
    cntl = reg(dev, "GCVM_L2_PROTECTION_FAULT_CNTL", "GC").address
    dev.mmio.values[cntl] = 0x3FFE  # other fields keep their values; bit 0 is set
    got = ih.poll()
    assert len(got.faults) == 1 and seen == got.faults and list(ih.faults) == got.faults
    f = got.faults[0]
    assert f.address == addr and f.write and not f.retry and f.hub == "gfxhub" and f.vmid == 0
    assert f.engine.startswith("TCP") and f.status_fields["cid"] == 8 and f.status_fields["rw"] == 1
    assert f.owner == "<Buffer weights> at offset 0x3000"
    assert dev.mmio.values[cntl] == 0x3FFF
    reads = [off for op, off, _ in dev.mmio.log if op == "r" and off == reg(dev, st_name, "GC").address]
    assert len(reads) == 2  # the dummy read, then the status (gmc_v11_0_process_interrupt, GFXHUB)
    df = f.device_fault()
    assert df.kind == "page fault" and df.address == addr and df.details["engine"].startswith("TCP")
    assert f"{addr:#x}" in str(df) and "weights" in str(df)


@pytest.mark.parametrize("target,cid,rw,engine", [("gfx1100", 19, 0, "VCNU0"), ("gfx1100", 15, 1, "OSSSYS"),
                                                  ("gfx1201", 23, 0, "HDP"), ("gfx1201", 60, 0, "unknown")])
def test_mmhub_fault_decoded(target, cid, rw, engine):
    dev = fake_dev(target)  # no owner_of: the owner is unknown
    ih = IH(ring_size=4096).init(dev)
    st_name = "MMVM_L2_PROTECTION_FAULT_STATUS" + ("_LO32" if target == "gfx1201" else "")
    dev.mmio.values[reg(dev, st_name, "MMHUB").address] = status_value(dev, "MMHUB", st_name, CID=cid, RW=rw)
    addr = 0xF_0000_1000 | (0x5 << 44)
    Writer(ih).post(iv(client=0x12, src=0, vmid=3, vmid_src=1, pasid=7,
                       data=((addr >> 12) & 0xFFFFFFFF, 0x80 | (addr >> 44) & 0xF, 0, 0)))
    (f,) = ih.poll().faults
    assert f.hub == "mmhub" and f.address == addr and f.retry and not f.write and f.vmid == 3 and f.pasid == 7
    assert f.engine.startswith(engine) and f.owner == "unknown"
    assert dev.mmio.values[reg(dev, "MMVM_L2_PROTECTION_FAULT_CNTL", "MMHUB").address] & 1


def test_handlers_see_their_entries(ih):
    got = []
    ih.add_handler(0x0a, 181, got.append)
    w = Writer(ih)
    w.post(iv(client=0x0a, src=181, data=(1, 0, 0, 0)))
    w.post(iv(client=0x12, src=5))
    w.post(iv(client=0x0a, src=181, data=(2, 0, 0, 0)))
    assert len(ih.poll()) == 3
    assert [e.src_data[0] for e in got] == [1, 2]


# --- life cycle ---
def test_suspend_resume_fini(ih):
    dev = ih.dev
    w = Writer(ih)
    w.post(iv(client=0x0a, src=181))
    ih.suspend()
    assert fld(dev, "IH_RB_CNTL", "RB_ENABLE") == 0 and fld(dev, "IH_RB_CNTL", "ENABLE_INTR") == 0
    assert fld(dev, "IH_CNTL2", "SELF_IV_FORCE_WPTR_UPDATE_ENABLE") == 0
    assert not ih.poll()  # disabled: nothing is read
    ih.resume()
    assert fld(dev, "IH_RB_CNTL", "RB_ENABLE") == 1 and ih.rptr == 0
    w.wptr = 0
    w.post(iv(client=0x0a, src=181, data=(9, 0, 0, 0)))
    assert [e.src_data[0] for e in ih.poll()] == [9]
    ih.fini()
    assert fld(dev, "IH_RB_CNTL", "RB_ENABLE") == 0
    assert dev.gmc.unmaps == [(ih.ring_va, 4096 + 4096)] and len(dev.pci.freed) == 1 and not dev.pci.live
    ih.fini()  # twice is harmless


# --- on the emulated card ---
@pytest.mark.parametrize("target", TARGETS)
def test_emulated_gmc_fault_arrives_decoded(tmp_path, target):
    import emu.am.ih as emu_ih
    from drivers.am.device import AMDevice
    from drivers.am.gmc import GMC
    from drivers.lock import ProcessLocks
    from emu.am import gmc as emu_gmc
    from emu.am.gfx import attach_gfx
    from emu.am.gpu import install_am_gpu
    from emu.pci import install_vfio
    from emu.system import EmulatedSystem
    from tests.firmware import fwgen

    fw = tmp_path / target
    fw.mkdir()
    fwgen.write_set(fw, target)
    system = EmulatedSystem(lock_dir=ProcessLocks("test_am_ih"))
    install_vfio(system)
    card = install_am_gpu(system, target, "0000:03:00.0", driver="vfio-pci", iommu_group=9, boot_delay_s=0,
                          vram_size=1024 << 20, bar0_size=256 << 20)
    dev = None
    try:
        emu_gmc.attach_gmc(card)
        emu_ih.attach_ih(card)
        attach_gfx(card)  # the GFX model owns CP_DEBUG, which the GFX hub's enable writes
        dev = AMDevice("0000:03:00.0", system, firmware_dirs=[fw], firmware_system_dirs=False)
        buf = Buffer("activations", 1 << 40, 1 << 20)
        dev.gmc = GMC().init(dev)
        dev.gmc.gfxhub_enable()
        dev.owner_of = lambda va: buf if buf.va <= va < buf.va + buf.size else None
        ih = IH().init(dev)
        va = buf.va + 0x5000  # nothing is mapped there
        with pytest.raises(emu_gmc.VMFault):
            card.gmc.walk(0, va, write=True)
        deadline = time.monotonic() + 5.0
        faults = []
        while not faults and time.monotonic() < deadline:  # the emulated IH may deliver from its own thread
            faults = ih.poll().faults
            if not faults:
                time.sleep(0.005)
        assert faults, f"no VM fault arrived on the IH ring within 5 s (card.vm_faults: {card.vm_faults})"
        f = faults[0]
        assert f.address == va and f.write and f.hub == "gfxhub"
        assert "activations" in f.owner and f.status is not None
        # more faults than the 4 KiB ring holds before a poll: the loss is reported, and the IH keeps working
        small = IH(ring_size=4096, ring_va=ih.ring_va - (1 << 30))
        ih.fini()
        small.init(dev)
        for i in range(200):
            with pytest.raises(emu_gmc.VMFault):
                card.gmc.walk(0, va + i * 4096, write=False)
        got, deadline = None, time.monotonic() + 5.0
        while time.monotonic() < deadline:
            got = small.poll()
            if got.entries:
                break
            time.sleep(0.005)
        assert got is not None and got.lost and small.overflows >= 1, "the overflow was not reported"
        assert all(e.is_vm_fault for e in got) and got.faults[-1].address == va + 199 * 4096
        with pytest.raises(emu_gmc.VMFault):
            card.gmc.walk(0, va + 0x400000, write=True)
        faults, lost, deadline = [], False, time.monotonic() + 5.0
        while not faults and time.monotonic() < deadline:
            p = small.poll()
            faults, lost = p.faults, lost or p.lost
            time.sleep(0 if faults else 0.005)
        assert [x.address for x in faults] == [va + 0x400000] and faults[0].write
        assert not lost, "the overflow was not cleared: a later poll reported a loss again"
        small.fini()
        dev.gmc.fini()
    finally:
        if dev is not None:
            dev.close()
        card.close()
