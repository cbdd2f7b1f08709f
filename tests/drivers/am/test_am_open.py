"""Opening and identifying an AM GPU (drivers/am/device.py, regs.py, firmware.py) on an emulated PCI function.

The card here is a small stand-in built from emu/pci and emu/am/discovery (the discovery bytes a real board carries,
a register handler answering the few registers opening reads, and refusing every other one with EIO as the emulated
GPU does), so these tests pin the driver's side of the boot sequence: sysfs and VFIO, big and small BAR0 (with and
without a resize), the IFWI wait, a corrupt table, missing firmware, surprise removal and the device lock.
"""
from __future__ import annotations

import errno
import logging
import time

import pytest

from autogen import gc_11_0_0, pci_regs as R
from drivers.am.device import AMDevice, AMError
from drivers.am.discovery import DISCOVERY_TMR_OFFSET, DiscoveryError
from drivers.am.regs import DeviceGoneError, Reg, RegisterError, RegisterFile, load_module, module_names_for
from drivers.lock import DeviceBusyError, ProcessLocks
from drivers.pci.interface import PCIError
from drivers.system import OSCallError
from emu.am.discovery import board, build_discovery_table
from emu.pci import BarSpec, LinkSpec, MemoryBacking, MSIXSpec, PCIFunction, install_pci_function, install_vfio
from emu.system import EmulatedSystem
from firmware.ucode import FirmwareError
from tests.firmware import fwgen

BDF = "0000:03:00.0"
MB = 1 << 20
DEVICE_IDS = {"gfx1100": (0x744C, 0xC8), "gfx1102": (0x7480, 0xC0), "gfx1201": (0x7550, 0xC0)}

# amdgpu_discovery.c: the fixed dword offsets the stand-in answers.
MM_INDEX, MM_DATA, MM_INDEX_HI, MEMSIZE, C2PMSG_33 = 0x0, 0x1, 0x6, 0xDE3, 0x16061


class StandInRegs:
    """BAR5 of the stand-in: MM_INDEX/MM_INDEX_HI/MM_DATA over VRAM, RCC_CONFIG_MEMSIZE, MP0_SMN_C2PMSG_33 (ready
    after `ifwi_after` reads; None: never). Anything else fails with EIO naming the dword, as the emulated GPU does."""

    def __init__(self, vram: MemoryBacking, vram_size: int, ifwi_after: int | None = 0):
        self.vram, self.vram_size, self.ifwi_after = vram, vram_size, ifwi_after
        self.index = self.index_hi = 0
        self.c2pmsg_reads = 0
        self.accesses: list[tuple[str, int, int]] = []

    def _vram_addr(self) -> int:
        assert self.index & 1 << 31, "MM_INDEX bit 31 (the VRAM aperture) must be set"
        return (self.index_hi << 31) | (self.index & 0x7FFFFFFF)

    def read32(self, offset: int) -> int:
        dw = offset >> 2
        if dw == MEMSIZE:
            value = self.vram_size >> 20
        elif dw == C2PMSG_33:
            self.c2pmsg_reads += 1
            ready = self.ifwi_after is not None and self.c2pmsg_reads > self.ifwi_after
            value = 0x80000000 if ready else 0
        elif dw == MM_DATA:
            value = self.vram.read32(self._vram_addr())
        elif dw in (MM_INDEX, MM_INDEX_HI):
            value = self.index if dw == MM_INDEX else self.index_hi
        else:
            raise OSCallError(errno.EIO, f"unmodelled register dword {dw:#x} read at BAR5 + {offset:#x}")
        self.accesses.append(("r", dw, value))
        return value

    def write32(self, offset: int, value: int) -> None:
        dw = offset >> 2
        self.accesses.append(("w", dw, value))
        if dw == MM_INDEX:
            self.index = value
        elif dw == MM_INDEX_HI:
            self.index_hi = value
        elif dw == MM_DATA:
            self.vram.write32(self._vram_addr(), value)
        else:
            raise OSCallError(errno.EIO, f"unmodelled register dword {dw:#x} written {value:#x}")


class Card:
    """A stand-in AMD PCI GPU on an emulated bus: VRAM BAR0 (resizable when asked), doorbell BAR2, register BAR5."""

    def __init__(self, system: EmulatedSystem, target: str = "gfx1100", *, vram_size: int = 256 * MB,
                 bar0: int = 256 * MB, rebar: bool = False, vfio: bool = False, driver: str | None = None,
                 ifwi_after: int | None = 0, table: bytes | None = None, vendor: int = 0x1002):
        self.system, self.target, self.vram_size = system, target, vram_size
        device, revision = DEVICE_IDS[target]
        self.vram = MemoryBacking("vram", vram_size)
        self.table = build_discovery_table(target) if table is None else table
        self.vram.write(vram_size - DISCOVERY_TMR_OFFSET, self.table)
        self.regs = StandInRegs(self.vram, vram_size, ifwi_after)
        top = max(vram_size, bar0)
        sizes = tuple(s for s in (256 * MB, 512 * MB, 1024 * MB, 2048 * MB) if s <= top) if rebar else ()
        bars = [BarSpec(0, bar0, self.vram, is_64bit=True, prefetchable=True, resizable_sizes=sizes),
                BarSpec(2, 2 * MB, MemoryBacking("doorbell", 2 * MB), is_64bit=True, prefetchable=True),
                BarSpec(5, 1 * MB, self.regs, is_64bit=False)]
        self.function = PCIFunction(vendor, device, 0x030000, bars, revision=revision,
                                    link=LinkSpec(16.0, 16, 16.0, 16), msix=MSIXSpec(4, 5, 0xF0000, 0xF1000))
        if vfio:
            install_vfio(system)
        self.dev = install_pci_function(system, self.function, BDF, driver="vfio-pci" if vfio else driver,
                                        iommu_group=7 if vfio else None)

    def close(self) -> None:
        self.function.close()


@pytest.fixture(scope="module")
def fwdirs(tmp_path_factory):
    """A valid generated firmware set per target (tests/firmware/fwgen.py)."""
    out = {}
    for target in DEVICE_IDS:
        d = tmp_path_factory.mktemp(f"fw-{target}")
        device, revision = DEVICE_IDS[target]
        fwgen.write_set(d, target, pci_device=device, pci_revision=revision)
        out[target] = d
    return out


@pytest.fixture
def system():
    return EmulatedSystem(lock_dir=ProcessLocks("test_am_open"))


@pytest.fixture
def make(system, fwdirs):
    cards: list[Card] = []
    devices: list[AMDevice] = []

    def card(target: str = "gfx1100", **kw) -> Card:
        c = Card(system, target, **kw)
        cards.append(c)
        return c

    def open_(target: str = "gfx1100", fw=None, **kw) -> AMDevice:
        kw.setdefault("firmware_system_dirs", False)
        d = AMDevice(BDF, system, firmware_dirs=[fw or fwdirs[target]], **kw)
        devices.append(d)
        return d

    yield card, open_
    for d in devices:
        d.close()
    for c in cards:
        c.close()


# --- opening and identifying ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("target,vfio", [("gfx1100", False), ("gfx1100", True), ("gfx1201", False),
                                         ("gfx1201", True), ("gfx1102", False)])
def test_open_identifies_the_card(make, target, vfio):
    card, open_ = make
    c = card(target, vfio=vfio)
    dev = open_(target)
    b = board(target)
    assert dev.target == target and dev.vram_size == 256 * MB
    assert dev.backend == ("vfio" if vfio else "sysfs")
    assert dev.discovery_via == "BAR0" and dev.bar_resize["result"] == "not needed"
    assert dev.discovery.version("GC") == b.block("GC").version
    assert dev.discovery.version("MP0") == b.block("MP0").version
    # Memory decoding and bus mastering are on while we hold it.
    assert c.function.command & (R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER) == \
        R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER
    names = {img.name for img in dev.firmware.images.values()}
    gc = "gc_{}_{}_{}".format(*b.block("GC").version)
    assert f"{gc}_pfp.bin" in names and f"{gc}_mec.bin" in names
    assert "sos" in dev.firmware and "smc" in dev.firmware and "sdma" in dev.firmware
    info = dev.describe()
    device, revision = DEVICE_IDS[target]
    assert info["pci"]["vendor"] == "0x1002" and info["pci"]["device"] == f"{device:#06x}"
    assert info["pci"]["revision"] == f"{revision:#06x}"
    assert info["link"] == dict(speed_gts=16.0, width=16, max_speed_gts=16.0, max_width=16)
    assert [(x["index"], x["size"]) for x in info["bars"]] == [(0, 256 * MB), (2, 2 * MB), (5, 1 * MB)]
    assert info["target"] == target and info["vram_size"] == 256 * MB and info["visible_vram"] == 256 * MB
    assert info["ip_versions"]["GC"]["version"] == "{}.{}.{}".format(*b.block("GC").version)
    assert info["ip_versions"]["SDMA0"]["instances"] == 2
    assert info["firmware_ip_versions"]["MP1"] == "{}.{}.{}".format(*b.block("MP1").version)
    assert {f["role"] for f in info["firmware"]} >= {"sos", "ta", "smc", "pfp", "me", "rlc", "mec", "imu", "sdma"}
    assert all(f["ucode_version"] is not None for f in info["firmware"])
    assert set(info["timings"]) == {"open", "ifwi", "bars", "discovery", "firmware"}
    assert info["lock"] == f"emulated-pci-{BDF}" and info["rebind_command"] is None
    assert "gfx" in repr(dev)
    dev.close()
    # Left as found: bus mastering off again; memory decoding as the backend had it (vfio-pci turns it on when the
    # device fd opens, sysfs found it off).
    assert not c.function.command & R.PCI_COMMAND_MASTER
    assert bool(c.function.command & R.PCI_COMMAND_MEMORY) == vfio
    assert "closed" in repr(dev)
    dev.close()  # twice is fine


def test_firmware_dir_from_the_environment(make, system, fwdirs, monkeypatch):
    card, _ = make
    card()
    monkeypatch.setenv("BAREGPU_FIRMWARE_DIR", str(fwdirs["gfx1100"]))
    with AMDevice(BDF, system, firmware_system_dirs=False) as dev:
        assert dev.firmware["sos"].path.startswith(str(fwdirs["gfx1100"]))


# --- a BAR0 smaller than VRAM --------------------------------------------------------------------------------------

def _mm_reads(c: Card) -> list[int]:
    """VRAM addresses the driver read through MM_DATA, from the index writes before each read."""
    out, index, hi = [], 0, 0
    for op, dw, value in c.regs.accesses:
        if op == "w" and dw == MM_INDEX:
            index = value
        elif op == "w" and dw == MM_INDEX_HI:
            hi = value
        elif op == "r" and dw == MM_DATA:
            assert index & 1 << 31  # amdgpu_device_mm_access sets the aperture bit on every index write
            out.append(hi << 31 | index & 0x7FFFFFFF)
    return out


def test_small_bar_without_resize_reads_through_mm_index(make):
    card, open_ = make
    c = card(vram_size=1024 * MB, bar0=256 * MB)  # no Resizable BAR capability
    dev = open_()
    assert dev.vram_size == 1024 * MB and dev.target == "gfx1100"
    assert dev.discovery_via == "MM_INDEX/MM_DATA"
    assert dev.bar_resize["result"] == "not resizable" and "Resizable BAR" in dev.bar_resize["detail"]
    reads = _mm_reads(c)
    start = 1024 * MB - DISCOVERY_TMR_OFFSET
    assert reads == list(range(start, start + 10 * 1024, 4))  # the whole DISCOVERY_TMR_SIZE, dword by dword
    assert dev.describe()["visible_vram"] == 256 * MB


def test_table_above_2gib_sets_mm_index_hi(make):
    card, open_ = make
    c = card(vram_size=4096 * MB, bar0=256 * MB)
    dev = open_()
    assert dev.discovery_via == "MM_INDEX/MM_DATA" and dev.target == "gfx1100"
    hi_writes = [v for op, dw, v in c.regs.accesses if op == "w" and dw == MM_INDEX_HI]
    assert hi_writes == [1]  # written once, when it changes (amdgpu_device_mm_access)
    assert _mm_reads(c)[0] == 4096 * MB - DISCOVERY_TMR_OFFSET


def test_small_bar_is_resized_through_sysfs(make):
    card, open_ = make
    c = card(vram_size=1024 * MB, bar0=256 * MB, rebar=True)
    dev = open_()
    assert dev.bar_resize["result"] == "resized"
    assert (dev.bar_resize["before"], dev.bar_resize["after"]) == (256 * MB, 1024 * MB)
    assert c.function.bar_size(0) == 1024 * MB and dev.vram.size == 1024 * MB
    assert dev.discovery_via == "BAR0" and _mm_reads(c) == []
    assert dev.target == "gfx1100"


def test_small_bar_resize_refused_by_vfio_falls_back(make):
    card, open_ = make
    c = card(vram_size=1024 * MB, bar0=256 * MB, rebar=True, vfio=True)
    dev = open_()
    assert dev.bar_resize["result"] == "refused" and "vfio-pci" in dev.bar_resize["detail"]
    assert dev.bar_resize["requested"] == 1024 * MB and c.function.bar_size(0) == 256 * MB
    assert dev.discovery_via == "MM_INDEX/MM_DATA" and dev.target == "gfx1100"


def test_resize_can_be_declined(make):
    card, open_ = make
    c = card(vram_size=512 * MB, bar0=256 * MB, rebar=True)
    dev = open_(resize_bar=False)
    assert dev.bar_resize["result"] == "not attempted" and c.function.bar_size(0) == 256 * MB
    assert dev.discovery_via == "MM_INDEX/MM_DATA"


# --- the IFWI wait ---------------------------------------------------------------------------------------------------

def test_ifwi_that_finishes_late_is_waited_for(make):
    card, open_ = make
    c = card(ifwi_after=5)
    dev = open_()
    assert dev.target == "gfx1100" and c.regs.c2pmsg_reads == 6


def test_ifwi_never_ready_times_out_naming_the_register(make, system):
    card, open_ = make
    c = card(ifwi_after=None)
    t = time.monotonic()
    with pytest.raises(AMError) as e:
        open_(ifwi_timeout=0.05)
    assert time.monotonic() - t < 2.0
    msg = str(e.value)
    assert BDF in msg and "MP0_SMN_C2PMSG_33" in msg and "0x00000000" in msg and "bit 31" in msg
    assert c.regs.c2pmsg_reads >= 2
    assert not c.function.command & R.PCI_COMMAND_MASTER  # a failed open leaves the device as found
    c.regs.ifwi_after = 0  # and the lock was released: the next open works
    assert open_().target == "gfx1100"


# --- bad tables, missing firmware ------------------------------------------------------------------------------------

def test_corrupt_discovery_table(make):
    card, open_ = make
    table = bytearray(build_discovery_table("gfx1100"))
    table[0x40] ^= 0x5A
    card(table=bytes(table))
    with pytest.raises(DiscoveryError) as e:
        open_()
    msg = str(e.value)
    assert BDF in msg and "checksum" in msg and "BAR0" in msg


def test_missing_table_through_mm_index(make):
    card, open_ = make
    card(vram_size=512 * MB, table=b"\0" * 64)
    with pytest.raises(DiscoveryError) as e:
        open_()
    assert "MM_INDEX/MM_DATA" in str(e.value) and "signature" in str(e.value)


def test_missing_firmware_names_the_file(make, tmp_path):
    card, open_ = make
    card()
    fwgen.write_set(tmp_path, "gfx1100", skip=("gc_11_0_0_mec.bin",), pci_device=0x744C, pci_revision=0xC8)
    with pytest.raises(FirmwareError) as e:
        open_(fw=tmp_path)
    msg = str(e.value)
    assert "gc_11_0_0_mec.bin" in msg and "not found" in msg and str(tmp_path) in msg
    assert "firmware-amd-graphics" in msg or "linux-firmware" in msg
    assert open_().firmware["mec"].name == "gc_11_0_0_mec.bin"  # the lock went with the failed open


def test_not_an_amd_gpu(make):
    card, open_ = make
    card(vendor=0x10DE)
    with pytest.raises(AMError) as e:
        open_()
    assert "0x10de" in str(e.value) and "not an AMD GPU" in str(e.value)


# --- surprise removal ------------------------------------------------------------------------------------------------

def test_removed_before_open(make):
    card, open_ = make
    c = card()
    c.function.surprise_remove()
    with pytest.raises(DeviceGoneError) as e:
        open_()
    assert "is gone" in str(e.value) and BDF in str(e.value)


def test_removed_while_open(make):
    card, open_ = make
    c = card()
    dev = open_()
    c.function.surprise_remove()
    with pytest.raises(DeviceGoneError) as e:
        dev.regs.read("RCC_CONFIG_MEMSIZE")
    assert "is gone" in str(e.value) and "0xffffffff" in str(e.value)
    with pytest.raises(DeviceGoneError):
        dev.regs.vram_read(0, 16)
    with pytest.raises(DeviceGoneError):
        dev.regs.read_regs([dev.regs.fixed("RCC_CONFIG_MEMSIZE"), dev.regs.fixed("MP0_SMN_C2PMSG_33")])
    dev.close()  # closing a gone card still releases everything


def test_removed_during_ifwi_wait(make):
    card, open_ = make
    c = card(ifwi_after=None)
    real_read = c.regs.read32

    def read32(offset: int) -> int:
        if c.regs.c2pmsg_reads == 3:
            c.function.surprise_remove()
        return real_read(offset)

    c.regs.read32 = read32
    with pytest.raises(DeviceGoneError):
        open_(ifwi_timeout=1.0)


# --- the lock and the kernel driver ----------------------------------------------------------------------------------

def test_second_open_is_refused_by_the_lock(make):
    card, open_ = make
    card()
    dev = open_()
    with pytest.raises(DeviceBusyError) as e:
        open_()
    assert BDF in str(e.value)
    dev.close()
    assert open_().target == "gfx1100"


def test_bound_kernel_driver_is_refused_then_unbound_on_request(make, caplog):
    card, open_ = make
    c = card(driver="amdgpu")
    with pytest.raises(PCIError) as e:
        open_()
    assert "amdgpu" in str(e.value) and "unbind=True" in str(e.value)
    dev = open_(unbind=True)
    assert c.dev.driver is None
    info = dev.describe()
    assert info["unbound_driver"] == "amdgpu"
    assert info["rebind_command"] == f"echo {BDF} | sudo tee /sys/bus/pci/drivers/amdgpu/bind"
    with caplog.at_level(logging.WARNING, logger="drivers.am.device"):
        dev.close()
    assert any("/sys/bus/pci/drivers/amdgpu/bind" in r.getMessage() for r in caplog.records)


# --- registers -------------------------------------------------------------------------------------------------------

def test_registers_by_block_and_name(make):
    card, open_ = make
    card()
    dev = open_()
    r = dev.regs.reg("GC", "regGRBM_GFX_INDEX")
    base = dev.discovery.base("GC", 0, gc_11_0_0.regGRBM_GFX_INDEX_BASE_IDX)
    assert r.address == (base + gc_11_0_0.regGRBM_GFX_INDEX) * 4 and r.segment == 1 and r.block == "GC"
    assert dev.regs.reg("GC", "GRBM_GFX_INDEX") is r  # cached, prefix optional
    v = r.encode(SE_INDEX=3, SA_BROADCAST_WRITES=1, INSTANCE_BROADCAST_WRITES=1)
    assert v == 3 << 16 | 1 << 29 | 1 << 30 and r.get(v, "SE_INDEX") == 3
    with pytest.raises(RegisterError, match="no field 'NOPE'.*SE_INDEX"):
        r.encode(NOPE=1)
    with pytest.raises(RegisterError, match="does not fit"):
        r.encode(SE_INDEX=0x1FF)
    with pytest.raises(RegisterError, match="NOT_A_REGISTER is not in autogen.gc_11_0_0"):
        dev.regs.reg("GC", "NOT_A_REGISTER")
    # The stand-in refuses GC registers as the emulated GPU refuses unmodelled ones: the error names the register.
    with pytest.raises(RegisterError) as e:
        dev.regs.read(r)
    assert "GRBM_GFX_INDEX" in str(e.value) and "unmodelled register" in str(e.value)


def test_register_modules_follow_discovered_versions(make):
    card, open_ = make
    card("gfx1201")
    dev = open_("gfx1201")
    assert dev.regs.module("GC").__name__ == "autogen.gc_12_0_0"
    assert dev.regs.module("SDMA0").__name__ == "autogen.gc_12_0_0"
    assert module_names_for("MP0", (13, 0, 10)) == ("mp_13_0_0", "mp_13_0_2")
    assert module_names_for("MMHUB", (3, 0, 2)) == ("mmhub_3_0_2",)
    with pytest.raises(RegisterError, match="no register module is known for VCN 5.0.0"):
        load_module("VCN", (5, 0, 0))
    with pytest.raises(RegisterError, match=r"autogen/smuio_99_0_0\.py|not generated|no register module"):
        load_module("SMUIO", (99, 0, 0))
    dev.regs.use_module("SMUIO", gc_11_0_0)
    assert dev.regs.module("SMUIO") is gc_11_0_0


class CountingBar:
    """A BarMapping stand-in counting round trips."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {}
        self.calls: list[str] = []

    def read32(self, offset):
        self.calls.append("read32")
        return self.values.get(offset, 0)

    def write32(self, offset, value):
        self.calls.append("write32")
        self.values[offset] = value

    def read_many(self, offsets):
        self.calls.append("read_many")
        return [self.values.get(o, 0) for o in offsets]

    def write_many(self, writes):
        self.calls.append("write_many")
        for o, v in writes:
            self.values[o] = v


def test_register_lists_are_one_batch():
    bar = CountingBar()
    rf = RegisterFile(bar, bdf=BDF)
    a, b = rf.fixed("RCC_CONFIG_MEMSIZE"), rf.fixed("MP0_SMN_C2PMSG_33")
    rf.write_regs([(a, 0x400), (b, 1 << 31)])
    assert rf.read_regs([a, b]) == [0x400, 1 << 31]
    assert bar.calls == ["write_many", "read_many"]
    assert rf.snapshot({"memsize": a}) == {"memsize": 0x400}
    rf.wreg32(0x1234, 7)
    assert rf.rreg32(0x1234) == 7 and bar.values[0x1234 * 4] == 7
    with pytest.raises(RegisterError, match="not a fixed-offset register"):
        rf.fixed("GRBM_STATUS")
    with pytest.raises(RegisterError, match="not read yet"):
        rf.reg("GC", "GRBM_GFX_INDEX")
    with pytest.raises(RegisterError, match="dword-aligned"):
        rf.vram_read(2, 4)
    assert isinstance(a, Reg) and str(a).startswith("RCC_CONFIG_MEMSIZE")
