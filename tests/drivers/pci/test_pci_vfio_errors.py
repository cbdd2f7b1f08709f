"""VFIOPCIDevice's refusals before any VFIO node answers: no IOMMU group, the wrong driver, no VFIO module; and the
request numbers it uses, checked against linux/vfio.h's _IO(VFIO_TYPE, VFIO_BASE + n) definitions."""
from __future__ import annotations

import pytest

from autogen import vfio as V
from autogen.ioctl import _IO
from drivers.pci.interface import PCIError
from drivers.pci.vfio import VFIOPCIDevice, _irq_set
from emu.system import EmulatedSystem

BDF = "0000:03:00.0"


def make(driver, group):
    from emu.pci.function import BarSpec, MemoryBacking, PCIFunction
    from emu.pci.sysfs import install_pci_function
    system = EmulatedSystem()
    function = PCIFunction(0x1002, 0x744C, 0x030000, [BarSpec(0, 1 << 20, MemoryBacking("vram", 1 << 20))])
    install_pci_function(system, function, BDF, driver=driver, iommu_group=group)
    return system, function


def test_no_iommu_group_names_the_kernel_parameters() -> None:
    system, function = make("vfio-pci", None)
    with pytest.raises(PCIError, match="IOMMU is off.*intel_iommu=on iommu=pt.*amd_iommu=on iommu=pt"):
        VFIOPCIDevice(BDF, system)
    function.close()


def test_wrong_driver_names_the_bind_commands() -> None:
    system, function = make("amdgpu", 4)
    with pytest.raises(PCIError) as e:
        VFIOPCIDevice(BDF, system)
    msg = str(e.value)
    assert "bound to amdgpu, not vfio-pci" in msg
    assert f"echo {BDF} | sudo tee /sys/bus/pci/drivers/amdgpu/unbind" in msg
    assert f"echo vfio-pci | sudo tee /sys/bus/pci/devices/{BDF}/driver_override" in msg
    assert f"echo {BDF} | sudo tee /sys/bus/pci/drivers/vfio-pci/bind" in msg
    function.close()


def test_no_vfio_module() -> None:
    system, function = make("vfio-pci", 4)
    if system.exists("/dev/vfio/vfio"):
        pytest.skip("the emulated bus installs /dev/vfio/vfio with the device")
    with pytest.raises(PCIError, match="modprobe vfio-pci"):
        VFIOPCIDevice(BDF, system)
    assert not [c for c in system.calls if c.name == "open" and c.error is None]  # nothing left open
    function.close()


def test_request_numbers_match_the_header() -> None:
    base = V.VFIO_BASE
    expected = {"VFIO_GET_API_VERSION": 0, "VFIO_CHECK_EXTENSION": 1, "VFIO_SET_IOMMU": 2, "VFIO_GROUP_GET_STATUS": 3,
                "VFIO_GROUP_SET_CONTAINER": 4, "VFIO_GROUP_GET_DEVICE_FD": 6, "VFIO_DEVICE_GET_INFO": 7,
                "VFIO_DEVICE_GET_REGION_INFO": 8, "VFIO_DEVICE_GET_IRQ_INFO": 9, "VFIO_DEVICE_SET_IRQS": 10,
                "VFIO_DEVICE_RESET": 11, "VFIO_IOMMU_MAP_DMA": 13, "VFIO_IOMMU_UNMAP_DMA": 14}
    for name, n in expected.items():
        assert getattr(V, name) == _IO(V.VFIO_TYPE, base + n), name


def test_irq_set_layout() -> None:
    import ctypes
    s = _irq_set(V.VFIO_IRQ_SET_DATA_EVENTFD | V.VFIO_IRQ_SET_ACTION_TRIGGER, V.VFIO_PCI_MSIX_IRQ_INDEX, 0, [7, 9])
    raw = bytes(s)
    assert ctypes.sizeof(s) == 20 + 8 == s.argsz  # offsetofend(count) is 20, then one int32 per eventfd
    assert int.from_bytes(raw[4:8], "little") == 0x24 and int.from_bytes(raw[8:12], "little") == 2
    assert int.from_bytes(raw[16:20], "little") == 2 and raw[20:] == (7).to_bytes(4, "little") + (9).to_bytes(4, "little")
