"""The Linux sysfs view of an emulated PCI function, through the OS seam as a driver sees it."""
import ctypes
import errno
import os

import pytest

from autogen import pci_regs as R
from drivers.system import OSCallError
from emu.pci import BarSpec, LinkSpec, MemoryBacking, MMIOHandler, PCIFunction, install_pci_function
from emu.system import EmulatedSystem

MiB = 1 << 20
BDF = "0000:03:00.0"
D = f"/sys/bus/pci/devices/{BDF}"


@pytest.fixture
def rig():
    regs = {0: 0xCAFE}
    f = PCIFunction(0x1002, 0x744C, 0x030000, [
        BarSpec(0, 256 * MiB, MemoryBacking("vram", 256 * MiB), prefetchable=True,
                resizable_sizes=(256 * MiB, 512 * MiB, 1024 * MiB)),
        BarSpec(5, 1 * MiB, MMIOHandler(lambda o: regs[o], regs.__setitem__), is_64bit=False),
    ], revision=0xC8, link=LinkSpec(16.0, 16, 8.0, 8))
    s = EmulatedSystem()
    dev = install_pci_function(s, f, BDF, driver="amdgpu", iommu_group=7)
    yield s, f, dev
    f.close()


def test_identity_files_and_links(rig):
    s, f, _ = rig
    assert s.read_text(f"{D}/vendor") == "0x1002" and s.read_text(f"{D}/device") == "0x744c"
    assert s.read_text(f"{D}/class") == "0x030000" and s.read_text(f"{D}/revision") == "0xc8"
    assert os.path.basename(s.readlink(f"{D}/driver")) == "amdgpu"
    assert os.path.basename(s.readlink(f"{D}/iommu_group")) == "7"
    assert s.listdir("/sys/kernel/iommu_groups/7/devices") == [BDF]
    assert s.read_text(f"{D}/current_link_speed") == "8.0 GT/s PCIe" and s.read_text(f"{D}/current_link_width") == "8"
    assert s.read_text(f"{D}/max_link_speed") == "16.0 GT/s PCIe" and s.read_text(f"{D}/max_link_width") == "16"
    assert BDF in s.listdir("/sys/bus/pci/devices")


def test_config_file_and_resource_table(rig):
    s, f, _ = rig
    cfg = s.read_file(f"{D}/config")
    assert len(cfg) == 4096 and cfg[:4] == bytes.fromhex("0210 4c74".replace(" ", ""))
    fd = s.open(f"{D}/config")
    assert s.pread(fd, 2, R.PCI_VENDOR_ID) == b"\x02\x10"
    s.pwrite(fd, (R.PCI_COMMAND_MEMORY).to_bytes(2, "little"), R.PCI_COMMAND)
    assert f.memory_enabled
    s.close(fd)
    lines = s.read_text(f"{D}/resource").splitlines()
    assert len(lines) == 13
    start, end, flags = (int(x, 16) for x in lines[0].split())
    assert end - start + 1 == 256 * MiB and start % (256 * MiB) == 0 and flags & 0x2000 and flags & 0x100000
    assert lines[1].split() == ["0x" + "0" * 16] * 3
    assert s.pci_resource_size(BDF, 5) == 1 * MiB


def test_resource_mmap_and_mmio(rig):
    s, f, _ = rig
    addr, n = s.map_pci_resource(BDF, 0, 4096)
    ctypes.memmove(addr, b"vram!", 5)
    assert f.bar_spec(0).backing.read(0, 5) == b"vram!"
    s.munmap(addr, n)
    with pytest.raises(OSCallError, match="register space") as e:
        s.map_pci_resource(BDF, 5)
    assert e.value.errno == errno.ENODEV
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MEMORY, 2)
    fd = s.open(f"{D}/resource5")
    assert s.pread(fd, 4, 0) == (0xCAFE).to_bytes(4, "little")
    s.pwrite(fd, (5).to_bytes(4, "little"), 8)
    assert f.bar_read32(5, 8) == 5
    with pytest.raises(OSCallError) as e:
        s.pread(fd, 2, 0)
    assert e.value.errno == errno.EINVAL
    s.close(fd)


def test_resize_rules(rig):
    s, f, dev = rig
    assert s.read_text(f"{D}/resource0_resize") == "0000000000000700"
    with pytest.raises(OSCallError, match="unbind it first") as e:
        s.write_file(f"{D}/resource0_resize", b"10")
    assert e.value.errno == errno.EBUSY
    s.write_file(f"{D}/driver/unbind", BDF.encode())  # through the driver link, as people type it
    assert dev.driver is None and not s.exists(f"{D}/driver")
    with pytest.raises(OSCallError) as e:
        s.write_file(f"{D}/resource0_resize", b"12")
    assert e.value.errno == errno.EINVAL
    s.write_file(f"{D}/resource0_resize", b"10")
    assert f.bar_size(0) == 1024 * MiB and s.pci_resource_size(BDF, 0) == 1024 * MiB
    assert f.bar_address(0) % (1024 * MiB) == 0 and f.bar_address(0)


def test_enable_reset_bind_remove(rig):
    s, f, dev = rig
    with pytest.raises(OSCallError) as e:
        s.write_file(f"{D}/enable", b"1")
    assert e.value.errno == errno.EBUSY
    s.write_file("/sys/bus/pci/drivers/amdgpu/unbind", BDF.encode())
    with pytest.raises(OSCallError) as e:
        s.write_file(f"{D}/enable", b"0")
    assert e.value.errno == errno.EIO
    s.write_file(f"{D}/enable", b"1")
    assert f.memory_enabled and s.read_text(f"{D}/enable") == "1"
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER, 2)
    bar5 = f.config_read(R.PCI_BASE_ADDRESS_5)
    s.write_file(f"{D}/reset", b"1")
    assert f.counts["flrs"] == 1 and f.config_read(R.PCI_BASE_ADDRESS_5) == bar5 and f.bus_master  # restored
    with pytest.raises(OSCallError) as e:
        s.write_file(f"{D}/reset", b"2")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSCallError) as e:
        s.write_file("/sys/bus/pci/drivers/vfio-pci/bind", BDF.encode())
    assert e.value.errno == errno.ENOENT  # no vfio-pci driver on this bus
    s.write_file("/sys/bus/pci/drivers/amdgpu/bind", BDF.encode())
    assert dev.driver == "amdgpu"
    with pytest.raises(OSCallError) as e:
        s.write_file("/sys/bus/pci/drivers/amdgpu/bind", BDF.encode())
    assert e.value.errno == errno.EBUSY
    s.write_file(f"{D}/remove", b"1")
    assert not s.exists(D) and dev.driver is None
    s.write_file("/sys/bus/pci/rescan", b"1")
    assert s.read_text(f"{D}/vendor") == "0x1002"


def test_surprise_removal_in_sysfs(rig):
    s, f, _ = rig
    f.surprise_remove()
    assert s.read_file(f"{D}/config")[:4] == b"\xff" * 4
    assert s.read_text(f"{D}/current_link_speed") == "Unknown"
    assert s.read_text(f"{D}/vendor") == "0x1002"  # cached at enumeration, as the kernel's is
    with pytest.raises(OSCallError, match="removed"):
        s.map_pci_resource(BDF, 0, 4096)
