"""The emulated VFIO flow through the OS seam: container, group viability, device fd, regions, DMA, interrupts."""
import ctypes
import errno
import mmap

import pytest

from autogen import pci_regs as R
from autogen import vfio as V
from autogen.ioctl import _IO
from drivers.system import OSCallError
from emu.pci import (BarSpec, IOMMUFault, MemoryBacking, MMIOHandler, MSIXSpec, PCIFunction, install_pci_function,
                     install_vfio)
from emu.system import EmulatedSystem

MiB = 1 << 20
BDF, BDF2 = "0000:03:00.0", "0000:03:00.1"


def make_function():
    regs = {0: 0xBEEF, 4: 0}
    return PCIFunction(0x1002, 0x744C, 0x030000, [
        BarSpec(0, 16 * MiB, MemoryBacking("vram", 16 * MiB), prefetchable=True),
        BarSpec(5, 1 * MiB, MMIOHandler(lambda o: regs[o], regs.__setitem__), is_64bit=False),
    ], msix=MSIXSpec(4, 5, 0x42000, 0x43000))


@pytest.fixture
def rig():
    s = EmulatedSystem()
    f = make_function()
    audio = PCIFunction(0x1002, 0xAB30, 0x040300, [BarSpec(0, 16384, MemoryBacking("hda", 16384), is_64bit=False)])
    install_pci_function(s, f, BDF, driver="amdgpu", iommu_group=12)
    install_pci_function(s, audio, BDF2, driver="snd_hda_intel", iommu_group=12)
    install_vfio(s)
    yield s, f
    f.close()
    audio.close()


def bind_vfio(s, bdf, old):
    s.write_file(f"/sys/bus/pci/drivers/{old}/unbind", bdf.encode())
    s.write_file(f"/sys/bus/pci/devices/{bdf}/driver_override", b"vfio-pci")
    s.write_file("/sys/bus/pci/drivers/vfio-pci/bind", bdf.encode())


def open_device(s):
    container = s.open("/dev/vfio/vfio")
    group = s.open("/dev/vfio/12")
    s.ioctl(group, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int(container))
    s.ioctl(container, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
    dev = s.ioctl(group, V.VFIO_GROUP_GET_DEVICE_FD, ctypes.create_string_buffer(BDF.encode()))
    return container, group, dev


def test_ioctl_numbers_match_the_header():
    for name, n in [("VFIO_GET_API_VERSION", 0), ("VFIO_SET_IOMMU", 2), ("VFIO_GROUP_GET_DEVICE_FD", 6),
                    ("VFIO_DEVICE_GET_REGION_INFO", 8), ("VFIO_DEVICE_SET_IRQS", 10), ("VFIO_IOMMU_MAP_DMA", 13)]:
        assert getattr(V, name) == _IO(V.VFIO_TYPE, V.VFIO_BASE + n)


def test_group_viability_and_errors(rig):
    s, f = rig
    assert not s.exists("/dev/vfio/12")  # no device of the group on vfio-pci yet
    bind_vfio(s, BDF, "amdgpu")
    container = s.open("/dev/vfio/vfio")
    assert s.ioctl(container, V.VFIO_GET_API_VERSION) == V.VFIO_API_VERSION
    assert s.ioctl(container, V.VFIO_CHECK_EXTENSION, V.VFIO_TYPE1v2_IOMMU) == 1
    assert s.ioctl(container, V.VFIO_CHECK_EXTENSION, V.VFIO_SPAPR_TCE_IOMMU) == 0
    with pytest.raises(OSCallError) as e:
        s.ioctl(container, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)  # no group yet
    assert e.value.errno == errno.EINVAL
    group = s.open("/dev/vfio/12")
    with pytest.raises(OSCallError) as e:
        s.open("/dev/vfio/12")
    assert e.value.errno == errno.EBUSY
    st = V.struct_vfio_group_status(argsz=ctypes.sizeof(V.struct_vfio_group_status))
    s.ioctl(group, V.VFIO_GROUP_GET_STATUS, st)
    assert st.flags == 0  # the audio function is still on snd_hda_intel: not viable
    with pytest.raises(OSCallError, match="not viable") as e:
        s.ioctl(group, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int(container))
    assert e.value.errno == errno.EBUSY
    s.write_file("/sys/bus/pci/drivers/snd_hda_intel/unbind", BDF2.encode())
    s.ioctl(group, V.VFIO_GROUP_GET_STATUS, st)
    assert st.flags == V.VFIO_GROUP_FLAGS_VIABLE
    s.ioctl(group, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int(container))
    with pytest.raises(OSCallError) as e:
        s.ioctl(group, V.VFIO_GROUP_GET_DEVICE_FD, ctypes.create_string_buffer(BDF.encode()))
    assert e.value.errno == errno.EINVAL  # no IOMMU set yet
    s.ioctl(container, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
    s.ioctl(group, V.VFIO_GROUP_GET_STATUS, st)
    assert st.flags == V.VFIO_GROUP_FLAGS_VIABLE | V.VFIO_GROUP_FLAGS_CONTAINER_SET
    with pytest.raises(OSCallError) as e:
        s.ioctl(group, V.VFIO_GROUP_GET_DEVICE_FD, ctypes.create_string_buffer(BDF2.encode()))
    assert e.value.errno == errno.ENODEV  # not bound to vfio-pci
    dev = s.ioctl(group, V.VFIO_GROUP_GET_DEVICE_FD, ctypes.create_string_buffer(BDF.encode()))
    info = V.struct_vfio_device_info(argsz=ctypes.sizeof(V.struct_vfio_device_info))
    s.ioctl(dev, V.VFIO_DEVICE_GET_INFO, info)
    assert info.flags & V.VFIO_DEVICE_FLAGS_PCI and info.flags & V.VFIO_DEVICE_FLAGS_RESET
    assert info.num_regions == V.VFIO_PCI_NUM_REGIONS and info.num_irqs == V.VFIO_PCI_NUM_IRQS
    assert f.counts["flrs"] == 1  # vfio_pci_core_enable resets the function on open


def test_regions_config_mmap_and_reset(rig):
    s, f = rig
    s.write_file("/sys/bus/pci/drivers/snd_hda_intel/unbind", BDF2.encode())
    bind_vfio(s, BDF, "amdgpu")
    _, _, dev = open_device(s)

    def region(i):
        r = V.struct_vfio_region_info(argsz=ctypes.sizeof(V.struct_vfio_region_info), index=i)
        s.ioctl(dev, V.VFIO_DEVICE_GET_REGION_INFO, r)
        return r
    cfg, bar0, bar5, bar1 = region(V.VFIO_PCI_CONFIG_REGION_INDEX), region(0), region(5), region(1)
    assert cfg.size == 4096 and bar0.size == 16 * MiB and bar0.flags & V.VFIO_REGION_INFO_FLAG_MMAP
    assert bar5.size == 1 * MiB and not bar5.flags & V.VFIO_REGION_INFO_FLAG_MMAP and bar1.size == 0
    with pytest.raises(OSCallError) as e:
        region(V.VFIO_PCI_NUM_REGIONS)
    assert e.value.errno == errno.EINVAL
    assert s.pread(dev, 4, cfg.offset) == bytes.fromhex("02104c74")
    cmd = R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER
    s.pwrite(dev, cmd.to_bytes(2, "little"), cfg.offset + R.PCI_COMMAND)
    assert f.bus_master
    assert s.pread(dev, 4, bar5.offset) == (0xBEEF).to_bytes(4, "little")
    s.pwrite(dev, (9).to_bytes(4, "little"), bar5.offset + 4)
    assert f.bar_read32(5, 4) == 9
    addr = s.mmap(dev, 8192, offset=bar0.offset + 4096)
    ctypes.memmove(addr, b"hi", 2)
    assert f.bar_read(0, 4096, 2) == b"hi"
    s.munmap(addr, 8192)
    with pytest.raises(OSCallError):
        s.mmap(dev, 4096, offset=bar5.offset)
    with pytest.raises(OSCallError):
        s.mmap(dev, 32 * MiB, offset=bar0.offset)
    s.pwrite(dev, b"\0\0", cfg.offset + R.PCI_COMMAND)
    with pytest.raises(OSCallError) as e:
        s.pread(dev, 4, bar5.offset)
    assert e.value.errno == errno.EIO  # memory decoding off
    s.pwrite(dev, cmd.to_bytes(2, "little"), cfg.offset + R.PCI_COMMAND)
    s.ioctl(dev, V.VFIO_DEVICE_RESET)
    assert f.counts["flrs"] == 2 and f.bus_master  # state restored around the reset


def test_dma_mapping_and_iommu_faults(rig):
    s, f = rig
    s.write_file("/sys/bus/pci/drivers/snd_hda_intel/unbind", BDF2.encode())
    bind_vfio(s, BDF, "amdgpu")
    container, _, dev = open_device(s)
    buf = mmap.mmap(-1, 3 * 4096)
    host = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    m = V.struct_vfio_iommu_type1_dma_map(argsz=ctypes.sizeof(V.struct_vfio_iommu_type1_dma_map),
                                          flags=V.VFIO_DMA_MAP_FLAG_READ | V.VFIO_DMA_MAP_FLAG_WRITE,
                                          vaddr=host, iova=0x100000, size=2 * 4096)
    s.ioctl(container, V.VFIO_IOMMU_MAP_DMA, m)
    with pytest.raises(OSCallError) as e:
        s.ioctl(container, V.VFIO_IOMMU_MAP_DMA, m)
    assert e.value.errno == errno.EEXIST
    m.size = 100
    with pytest.raises(OSCallError) as e:
        s.ioctl(container, V.VFIO_IOMMU_MAP_DMA, m)
    assert e.value.errno == errno.EINVAL
    ro = V.struct_vfio_iommu_type1_dma_map(argsz=ctypes.sizeof(m), flags=V.VFIO_DMA_MAP_FLAG_READ,
                                           vaddr=host + 8192, iova=0x200000, size=4096)
    s.ioctl(container, V.VFIO_IOMMU_MAP_DMA, ro)
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER, 2)
    f.dma_write(0x100000 + 4096, b"dma!")
    assert buf[4096:4100] == b"dma!"
    with pytest.raises(IOMMUFault, match="no VFIO DMA mapping"):
        f.dma_read(0x300000, 4)
    with pytest.raises(IOMMUFault, match="does not allow"):
        f.dma_write(0x200000, b"x")
    with pytest.raises(IOMMUFault, match="past the end"):
        f.dma_read(0x100000 + 8190, 4)
    u = V.struct_vfio_iommu_type1_dma_unmap(argsz=ctypes.sizeof(V.struct_vfio_iommu_type1_dma_unmap),
                                            iova=0x100000, size=4096)
    with pytest.raises(OSCallError) as e:
        s.ioctl(container, V.VFIO_IOMMU_UNMAP_DMA, u)  # would cut a mapping in two
    assert e.value.errno == errno.EINVAL
    u.size = 2 * 4096
    s.ioctl(container, V.VFIO_IOMMU_UNMAP_DMA, u)
    assert u.size == 2 * 4096
    with pytest.raises(IOMMUFault):
        f.dma_read(0x100000, 4)
    del buf


def test_msix_interrupts_through_eventfds(rig):
    s, f = rig
    s.write_file("/sys/bus/pci/drivers/snd_hda_intel/unbind", BDF2.encode())
    bind_vfio(s, BDF, "amdgpu")
    _, _, dev = open_device(s)
    irq = V.struct_vfio_irq_info(argsz=ctypes.sizeof(V.struct_vfio_irq_info), index=V.VFIO_PCI_MSIX_IRQ_INDEX)
    s.ioctl(dev, V.VFIO_DEVICE_GET_IRQ_INFO, irq)
    assert irq.count == 4 and irq.flags & V.VFIO_IRQ_INFO_EVENTFD
    efd = s.eventfd()
    hdr = V.struct_vfio_irq_set(argsz=ctypes.sizeof(V.struct_vfio_irq_set) + 4,
                                flags=V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_TRIGGER,
                                index=V.VFIO_PCI_MSIX_IRQ_INDEX, start=0, count=1)
    arg = bytearray(bytes(hdr)[:20]) + efd.to_bytes(4, "little", signed=True)
    s.ioctl(dev, V.VFIO_DEVICE_SET_IRQS, arg)
    assert f.msix_enabled
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER, 2)
    assert f.raise_interrupt(0)
    assert int.from_bytes(s.read(efd, 8), "little") == 1
    bad = bytearray(bytes(hdr)[:20]) + efd.to_bytes(4, "little")
    bad[16:20] = (5).to_bytes(4, "little")  # count 5 > 4 vectors
    with pytest.raises(OSCallError) as e:
        s.ioctl(dev, V.VFIO_DEVICE_SET_IRQS, bad)
    assert e.value.errno == errno.EINVAL


def test_surprise_removal_over_vfio(rig):
    s, f = rig
    s.write_file("/sys/bus/pci/drivers/snd_hda_intel/unbind", BDF2.encode())
    bind_vfio(s, BDF, "amdgpu")
    _, _, dev = open_device(s)
    f.surprise_remove()
    off5 = 5 << 40
    assert s.pread(dev, 4, V.VFIO_PCI_CONFIG_REGION_INDEX << 40) == b"\xff" * 4
    assert s.pread(dev, 4, off5) == b"\xff" * 4


def test_installed_straight_onto_vfio_pci():
    s = EmulatedSystem()
    install_vfio(s)
    f = make_function()
    install_pci_function(s, f, BDF, driver="vfio-pci", iommu_group=3)
    assert s.exists("/dev/vfio/3")
    s.write_file("/sys/bus/pci/drivers/vfio-pci/unbind", BDF.encode())
    assert not s.exists("/dev/vfio/3")  # the group node goes with its last vfio-pci device
    f.close()
