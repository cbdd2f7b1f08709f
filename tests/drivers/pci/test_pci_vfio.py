"""VFIOPCIDevice end to end on the emulated PCI bus with emulated VFIO (emu/pci/vfio.py)."""
from __future__ import annotations

import ctypes

import pytest

from autogen import pci_regs as R
from autogen import vfio as V
from drivers.pci import open_pci_device
from drivers.pci.interface import PCIError
from drivers.pci.sysfs import FileBarMapping, HostBarMapping
from drivers.pci.vfio import IOVA_BASE, IOVA_SIZE, VFIOPCIDevice
from emu.system import EmulatedSystem

BDF = "0000:03:00.0"
OTHER = "0000:03:00.1"
MB = 1 << 20


class Regs:
    def __init__(self) -> None:
        self.values: dict[int, int] = {0: 0xCAFE0001}

    def read32(self, offset: int) -> int:
        return self.values.get(offset, 0)

    def write32(self, offset: int, value: int) -> None:
        self.values[offset] = value


def make_function(regs=None, flr=True):
    from emu.pci.function import BarSpec, LinkSpec, MemoryBacking, MSIXSpec, PCIFunction
    bars = [BarSpec(0, 256 * MB, MemoryBacking("vram", 256 * MB), is_64bit=True, prefetchable=True,
                    resizable_sizes=(256 * MB, 512 * MB)),
            BarSpec(2, 2 * MB, MemoryBacking("doorbell", 2 * MB), is_64bit=True),
            BarSpec(5, 512 * 1024, regs or Regs(), is_64bit=False)]
    return PCIFunction(0x1002, 0x744C, 0x030000, bars, link=LinkSpec(16.0, 16, 16.0, 16),
                       msix=MSIXSpec(4, 5, 0x42000, 0x43000), flr=flr)


@pytest.fixture
def vfio():
    from emu.pci import install_pci_function, install_vfio
    system = EmulatedSystem()
    install_vfio(system)
    function = make_function()
    dev = install_pci_function(system, function, BDF, driver="vfio-pci", iommu_group=11)
    yield system, function, dev
    function.close()


def test_open_flow_and_config(vfio) -> None:
    system, function, _dev = vfio
    pci = VFIOPCIDevice(BDF, system)
    assert pci.group == "11"
    assert pci.config_read(R.PCI_VENDOR_ID, 2) == 0x1002
    assert [(c.id, c.offset, c.extended) for c in pci.capabilities()] == function.capabilities()
    link = pci.link_status()
    assert (link.speed_gts, link.width, link.max_speed_gts, link.max_width) == (16.0, 16, 16.0, 16)
    assert pci.resizable_bar_sizes(0) == [256 * MB, 512 * MB]
    opened = [c.args[0] for c in system.calls_named("open") if c.error is None]
    assert opened == ["/dev/vfio/vfio", "/dev/vfio/11"]
    names = [c.args[1] for c in system.calls_named("ioctl")][:6]
    assert names == [V.VFIO_GET_API_VERSION, V.VFIO_CHECK_EXTENSION, V.VFIO_GROUP_GET_STATUS,
                     V.VFIO_GROUP_SET_CONTAINER, V.VFIO_SET_IOMMU, V.VFIO_GROUP_GET_DEVICE_FD]
    pci.close()
    assert pci.device_fd == pci.group_fd == pci.container_fd == -1
    VFIOPCIDevice(BDF, system).close()  # the group can be opened again after close


def test_group_open_twice_is_busy(vfio) -> None:
    system, *_ = vfio
    pci = VFIOPCIDevice(BDF, system)
    with pytest.raises(PCIError, match="another process holds the group"):
        VFIOPCIDevice(BDF, system)
    pci.close()


def test_bars_enable_and_access(vfio) -> None:
    system, function, _dev = vfio
    pci = VFIOPCIDevice(BDF, system)
    bars = {b.index: b for b in pci.bars()}
    assert sorted(bars) == [0, 2, 5] and bars[0].size == 256 * MB and bars[0].prefetchable and bars[0].is_64bit
    assert bars[0].address == function.bar_address(0)
    pci.enable()
    assert function.memory_enabled and function.bus_master
    vram = pci.map_bar(0, offset=0x3000, size=0x2000)
    assert isinstance(vram, HostBarMapping)
    vram.write32(0x10, 0x55AA55AA)
    assert function.bar_read32(0, 0x3010) == 0x55AA55AA
    regs = pci.map_bar(5)
    assert isinstance(regs, FileBarMapping)
    assert regs.read32(0) == 0xCAFE0001
    regs.write32(0x100, 3)
    assert function.bar_read32(5, 0x100) == 3
    with pytest.raises(PCIError, match="not implemented"):
        pci.map_bar(3)
    pci.close()


def test_resize_is_refused_with_the_sysfs_commands(vfio) -> None:
    system, *_ = vfio
    pci = VFIOPCIDevice(BDF, system)
    with pytest.raises(PCIError, match=r"resource0_resize.*vfio-pci/bind"):
        pci.resize_bar(0, 512 * MB)
    with pytest.raises(PCIError, match=r"allows \[256, 512\] MB"):
        pci.resize_bar(0, 1024 * MB)
    pci.resize_bar(0, 256 * MB)  # already that size: nothing to do
    pci.close()


def test_dma_through_the_iommu(vfio) -> None:
    system, function, _dev = vfio
    pci = VFIOPCIDevice(BDF, system)
    pci.enable()
    a = pci.dma_alloc(8192)
    b = pci.dma_alloc(100)
    assert a.bus_pages[1] == a.bus_pages[0] + 4096 and b.size == 4096
    assert all(IOVA_BASE <= p < IOVA_BASE + IOVA_SIZE and p % 4096 == 0 for p in a.bus_pages + b.bus_pages)
    assert not set(a.bus_pages) & set(b.bus_pages)
    ctypes.memmove(a.host_addr + 4100, b"via iommu", 9)
    assert function.dma_read(a.bus_address(4100), 9) == b"via iommu"
    function.dma_write(b.bus_address(0), b"back")
    assert ctypes.string_at(b.host_addr, 4) == b"back"
    pci.dma_free(a)
    from emu.pci.function import IOMMUFault
    with pytest.raises(IOMMUFault):
        function.dma_read(IOVA_BASE, 4)  # unmapped from the IOMMU
    c = pci.dma_alloc(8192)
    assert c.bus_pages == a.bus_pages  # IOVA space is reused
    pci.close()


def test_msix_interrupts_reach_the_eventfd(vfio) -> None:
    system, function, _dev = vfio
    pci = VFIOPCIDevice(BDF, system)
    pci.enable()
    fds = pci.enable_interrupts(2)
    assert len(fds) == 2 and function.msix_enabled
    assert pci.wait_interrupt(1, timeout_s=0) == 0
    assert function.raise_interrupt(1)
    function.raise_interrupt(1)
    assert pci.wait_interrupt(1, timeout_s=0.01) == 2 and pci.wait_interrupt(0, timeout_s=0) == 0
    with pytest.raises(PCIError, match="VFIO offers 4"):
        pci.enable_interrupts(5)
    pci.disable_interrupts()
    assert not function.msix_enabled
    with pytest.raises(PCIError, match="not enabled"):
        pci.wait_interrupt(0, 0)
    fds = pci.enable_interrupts(1, index=V.VFIO_PCI_MSI_IRQ_INDEX)
    assert function.msi_enabled and function.raise_interrupt(0) and pci.wait_interrupt(0, 0.01) == 1
    pci.close()


def test_reset(vfio) -> None:
    system, function, _dev = vfio
    resets = []
    function.on_reset = lambda: resets.append(1)
    pci = VFIOPCIDevice(BDF, system)
    opened = len(resets)  # vfio_pci_core_enable resets the function when the device fd opens
    pci.enable()
    pci.reset()
    assert len(resets) == opened + 1 and function.bus_master
    pci.close()


def test_reset_without_flr_is_named() -> None:
    from emu.pci import install_pci_function, install_vfio
    system = EmulatedSystem()
    install_vfio(system)
    function = make_function(flr=False)
    install_pci_function(system, function, BDF, driver="vfio-pci", iommu_group=3)
    pci = VFIOPCIDevice(BDF, system)
    with pytest.raises(PCIError, match="no function reset"):
        pci.reset()
    pci.close()
    function.close()


def test_group_not_viable_names_the_offender() -> None:
    from emu.pci import install_pci_function, install_vfio
    system = EmulatedSystem()
    install_vfio(system)
    gpu, audio = make_function(), make_function()
    install_pci_function(system, gpu, BDF, driver="vfio-pci", iommu_group=5)
    install_pci_function(system, audio, OTHER, driver="snd_hda_intel", iommu_group=5)
    with pytest.raises(PCIError) as e:
        VFIOPCIDevice(BDF, system)
    msg = str(e.value)
    assert "group 5 is not viable" in msg and f"{OTHER} is bound to snd_hda_intel" in msg
    assert "/sys/bus/pci/drivers/snd_hda_intel/unbind" in msg
    assert not system._fds  # everything opened was closed again
    system.write_file("/sys/bus/pci/drivers/snd_hda_intel/unbind", OTHER.encode())
    VFIOPCIDevice(BDF, system).close()  # viable once the other function lets go
    gpu.close()
    audio.close()


def test_open_pci_device_picks_vfio(vfio) -> None:
    system, *_ = vfio
    pci = open_pci_device(BDF, system)
    assert isinstance(pci, VFIOPCIDevice)
    pci.close()
