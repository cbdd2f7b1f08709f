"""SysfsPCIDevice end to end on the emulated PCI bus (emu/pci), and its error paths on a bare EmulatedSystem."""
from __future__ import annotations

import ctypes

import pytest

from autogen import pci_regs as R
from drivers.pci import open_pci_device
from drivers.pci.interface import PCIError
from drivers.pci.sysfs import FileBarMapping, HostBarMapping, SysfsPCIDevice
from emu.system import EmulatedSystem

BDF = "0000:03:00.0"
MB = 1 << 20


class Regs:
    """A register file for the MMIO BAR: a dict, recording writes."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {0: 0x12345678}
        self.writes: list[tuple[int, int]] = []

    def read32(self, offset: int) -> int:
        return self.values.get(offset, 0)

    def write32(self, offset: int, value: int) -> None:
        self.values[offset] = value
        self.writes.append((offset, value))


def make_function(regs: Regs):
    from emu.pci.function import BarSpec, LinkSpec, MemoryBacking, MSIXSpec, PCIFunction
    bars = [BarSpec(0, 256 * MB, MemoryBacking("vram", 256 * MB), is_64bit=True, prefetchable=True,
                    resizable_sizes=(256 * MB, 512 * MB, 1024 * MB)),
            BarSpec(2, 2 * MB, MemoryBacking("doorbell", 2 * MB), is_64bit=True),
            BarSpec(5, 512 * 1024, regs, is_64bit=False)]
    return PCIFunction(0x1002, 0x744C, 0x030000, bars, link=LinkSpec(16.0, 16, 8.0, 8),
                       msix=MSIXSpec(4, 5, 0x42000, 0x43000))


@pytest.fixture
def bus():
    from emu.pci.sysfs import install_pci_function
    regs = Regs()
    system = EmulatedSystem()
    function = make_function(regs)
    dev = install_pci_function(system, function, BDF, driver="amdgpu")
    yield system, function, dev, regs
    function.close()


def test_bound_driver_is_refused_with_the_commands(bus) -> None:
    system, *_ = bus
    with pytest.raises(PCIError) as e:
        SysfsPCIDevice(BDF, system)
    msg = str(e.value)
    assert "'amdgpu'" in msg and f"echo {BDF} | sudo tee /sys/bus/pci/drivers/amdgpu/unbind" in msg
    assert "/sys/bus/pci/drivers/amdgpu/bind" in msg and "unbind=True" in msg


def test_unbind_remembers_how_to_rebind(bus, caplog) -> None:
    system, function, dev, _ = bus
    pci = SysfsPCIDevice(BDF, system, unbind=True)
    assert dev.driver is None and pci.driver() is None and pci.unbound_driver == "amdgpu"
    assert pci.rebind_command == f"echo {BDF} | sudo tee /sys/bus/pci/drivers/amdgpu/bind"
    with caplog.at_level("WARNING"):
        pci.close()
    assert pci.rebind_command in caplog.text
    system.write_file("/sys/bus/pci/drivers/amdgpu/bind", BDF.encode())  # the command works
    assert dev.driver == "amdgpu"


def test_config_capabilities_and_link(bus) -> None:
    system, function, _dev, _ = bus
    pci = SysfsPCIDevice(BDF, system, unbind=True)
    assert pci.config_read(R.PCI_VENDOR_ID, 2) == 0x1002 and pci.config_read(R.PCI_DEVICE_ID, 2) == 0x744C
    assert pci.config_read(R.PCI_CLASS_REVISION) >> 8 == 0x030000
    expected = [(c, p, e) for c, p, e in function.capabilities()]
    assert [(c.id, c.offset, c.extended) for c in pci.capabilities()] == expected
    assert pci.find_capability(R.PCI_CAP_ID_EXP) is not None
    assert pci.find_capability(R.PCI_EXT_CAP_ID_REBAR, extended=True) is not None
    link = pci.link_status()
    assert (link.speed_gts, link.width, link.max_speed_gts, link.max_width) == (8.0, 8, 16.0, 16)
    # agrees with what sysfs itself says
    assert system.read_text(f"/sys/bus/pci/devices/{BDF}/current_link_speed") == "8.0 GT/s PCIe"
    assert [c.id for c in pci.capabilities()] == [c.id for c in pci.capabilities()]  # stable across reads
    pci.close()


def test_bars_map_read_write(bus) -> None:
    system, function, _dev, regs = bus
    pci = SysfsPCIDevice(BDF, system, unbind=True)
    bars = {b.index: b for b in pci.bars()}
    assert sorted(bars) == [0, 2, 5]
    assert bars[0].size == 256 * MB and bars[0].is_64bit and bars[0].prefetchable and not bars[0].io
    assert bars[0].address == function.bar_address(0)
    assert bars[5].size == 512 * 1024 and not bars[5].is_64bit
    pci.enable()  # memory decoding on: with it off the function answers all ones
    vram = pci.map_bar(0)
    assert isinstance(vram, HostBarMapping) and vram.host_addr and vram.size == 256 * MB
    vram.write32(0x1000, 0xDEADBEEF)
    vram.write(0x2001, b"hello")
    assert function.bar_read32(0, 0x1000) == 0xDEADBEEF and function.bar_read(0, 0x2001, 5) == b"hello"
    window = pci.map_bar(0, offset=0x1004, size=0x100)  # unaligned window: mapped from the page below
    window.write32(0xFC, 7)
    assert vram.read32(0x1100) == 7 and window.read(0xFC, 4) == (7).to_bytes(4, "little")
    with pytest.raises(PCIError, match="outside"):
        window.read32(0x100)
    mmio = pci.map_bar(5)  # the emulator's register BAR cannot be mmapped: positioned accesses instead
    assert isinstance(mmio, FileBarMapping) and mmio.host_addr is None
    assert mmio.read32(0) == 0x12345678
    mmio.write_many([(0x10, 1), (0x14, 2)])
    assert regs.writes == [(0x10, 1), (0x14, 2)] and mmio.read_many([0x10, 0x14]) == [1, 2]
    with pytest.raises(PCIError, match="not implemented"):
        pci.map_bar(1)
    with pytest.raises(PCIError, match="outside"):
        pci.map_bar(2, offset=2 * MB)
    pci.close()
    with pytest.raises(PCIError, match="closed"):
        vram.read32(0)


def test_enable_sets_memory_and_bus_master(bus) -> None:
    system, function, dev, _ = bus
    pci = SysfsPCIDevice(BDF, system, unbind=True)
    assert not function.bus_master
    pci.enable()
    assert function.memory_enabled and function.bus_master and dev.enable_cnt == 1
    pci.enable()  # enabling twice does not take a second enable count
    assert dev.enable_cnt == 1
    pci.close()


def test_reset_keeps_config_and_mappings(bus) -> None:
    system, function, _dev, _ = bus
    resets = []
    function.on_reset = lambda: resets.append(1)
    pci = SysfsPCIDevice(BDF, system, unbind=True)
    pci.enable()
    vram = pci.map_bar(0)
    pci.reset()
    assert resets == [1] and function.bus_master  # pci_reset_function restores the saved command register
    vram.write32(0, 5)
    assert function.bar_read32(0, 0) == 5
    pci.close()


def test_resize_bar(bus) -> None:
    system, function, _dev, _ = bus
    pci = SysfsPCIDevice(BDF, system, unbind=True)
    assert pci.resizable_bar_sizes(0) == [256 * MB, 512 * MB, 1024 * MB]
    assert pci.resizable_bar_sizes(2) == []
    old = pci.map_bar(0)
    pci.resize_bar(0, 1024 * MB)
    assert function.bar_size(0) == 1024 * MB and {b.index: b.size for b in pci.bars()}[0] == 1024 * MB
    assert pci.rebar()[0].current_size == 1024 * MB
    with pytest.raises(PCIError, match="resize"):
        old.read32(0)  # the old mapping was dropped with the old resource file
    pci.enable()
    new = pci.map_bar(0)
    new.write32(1000 * MB, 9)
    assert function.bar_read32(0, 1000 * MB) == 9
    with pytest.raises(PCIError, match=r"allows \[256, 512, 1024\] MB"):
        pci.resize_bar(0, 2048 * MB)
    with pytest.raises(PCIError, match="not resizable"):
        pci.resize_bar(2, 4 * MB)
    with pytest.raises(PCIError, match="power of two"):
        pci.resize_bar(0, 300 * MB)
    system.write_file("/sys/bus/pci/drivers/amdgpu/bind", BDF.encode())
    with pytest.raises(PCIError, match="while 'amdgpu' is bound"):
        pci.resize_bar(0, 512 * MB)
    pci.close()


def test_dma_buffers_have_bus_addresses(bus) -> None:
    system, function, _dev, _ = bus
    pci = SysfsPCIDevice(BDF, system, unbind=True)
    pci.enable()
    buf = pci.dma_alloc(3 * 4096 + 5)
    assert buf.size == 4 * 4096 and len(buf.bus_pages) == 4
    ctypes.memmove(buf.host_addr + 4096 + 8, b"from the cpu", 12)
    assert function.dma_read(buf.bus_address(4096 + 8), 12) == b"from the cpu"  # the device reads what the CPU wrote
    function.dma_write(buf.bus_address(3 * 4096), b"from the gpu")
    assert ctypes.string_at(buf.host_addr + 3 * 4096, 12) == b"from the gpu"
    mmap_flags = [c.args[3] for c in system.calls_named("mmap") if c.args[0] == -1][-1]
    assert mmap_flags & 0x2000 and mmap_flags & 0x8000  # MAP_LOCKED | MAP_POPULATE
    pci.dma_free(buf)
    with pytest.raises(PCIError, match="double free"):
        pci.dma_free(buf)
    pci.close()


def test_hidden_pfns_say_root(bus) -> None:
    system, *_ = bus
    system.pagemap = lambda vaddr, npages: [1 << 63] * npages  # what a process without CAP_SYS_ADMIN reads
    pci = SysfsPCIDevice(BDF, system, unbind=True)
    with pytest.raises(PCIError, match="root.*CAP_SYS_ADMIN.*VFIO"):
        pci.dma_alloc(4096)
    assert not pci._dma
    pci.close()


def test_translating_iommu_refuses_physical_addresses() -> None:
    from emu.pci.sysfs import install_pci_function
    system = EmulatedSystem()
    function = make_function(Regs())
    install_pci_function(system, function, BDF, iommu_group=7)
    system.add_file("/sys/kernel/iommu_groups/7/type", "DMA-FQ\n")
    pci = SysfsPCIDevice(BDF, system)
    with pytest.raises(PCIError, match="iommu=pt.*VFIO"):
        pci.dma_alloc(4096)
    system.add_file("/sys/kernel/iommu_groups/7/type", "identity\n")
    pci.dma_free(pci.dma_alloc(4096))
    pci.close()
    function.close()


def test_surprise_removal_is_named(bus) -> None:
    system, function, _dev, _ = bus
    pci = SysfsPCIDevice(BDF, system, unbind=True)
    function.surprise_remove()
    with pytest.raises(PCIError, match="all ones"):
        pci.capabilities()
    pci.close()


def test_open_pci_device_picks_sysfs(bus) -> None:
    system, *_ = bus
    pci = open_pci_device(BDF, system, unbind=True)
    assert isinstance(pci, SysfsPCIDevice)
    pci.close()


def test_missing_device_and_missing_seam_calls() -> None:
    system = EmulatedSystem()
    with pytest.raises(PCIError, match="no such PCI device.*lspci"):
        SysfsPCIDevice(BDF, system)


class NonRootSystem(EmulatedSystem):
    """What a process without CAP_SYS_ADMIN sees: config opens read-only and reads stop at 64 bytes."""

    def open(self, path: str, flags: int = 2) -> int:
        if path.endswith("/config") and flags & 3:
            raise PermissionError(13, f"open({path!r}) failed: Permission denied")
        return super().open(path, flags)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return super().pread(fd, max(0, min(size, 64 - offset)), offset)


def test_without_root_config_is_short_and_read_only() -> None:
    from emu.pci.sysfs import install_pci_function
    system = NonRootSystem()
    function = make_function(Regs())
    install_pci_function(system, function, BDF)
    pci = SysfsPCIDevice(BDF, system)
    assert pci.config_read(R.PCI_VENDOR_ID, 2) == 0x1002
    with pytest.raises(PCIError, match="64 bytes.*root"):
        pci.capabilities()
    with pytest.raises(PCIError, match="64 bytes.*root"):
        pci.config_read(0x100)
    with pytest.raises(PCIError, match="read-only.*root"):
        pci.config_write(R.PCI_COMMAND, 0, 2)
    pci.close()
    function.close()


class NoPositionedIO(EmulatedSystem):
    """A seam without pread/pwrite (drivers/system.py's System today)."""
    pread = None
    pwrite = None


def test_a_seam_without_pread_is_named() -> None:
    from emu.pci.sysfs import install_pci_function
    system = NoPositionedIO()
    function = make_function(Regs())
    install_pci_function(system, function, BDF)
    pci = SysfsPCIDevice(BDF, system)
    with pytest.raises(PCIError, match=r"no pread\(fd, size, offset\)"):
        pci.config_read(0)
    with pytest.raises(PCIError, match=r"no pwrite\(fd, data, offset\)"):
        pci.config_write(R.PCI_COMMAND, 0, 2)
    pci.close()
    function.close()
