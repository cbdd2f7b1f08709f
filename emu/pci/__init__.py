"""The emulated PCI bus under the OS seam: a generic PCI Express function and its Linux interfaces.

API (what the PCI backends in drivers/pci, through the OS seam, and the emulated AMD GPU in emu/am code against):

`emu.pci.function`
- `PCIFunction(vendor, device, class_code, bars=[BarSpec(...)], subsystem_vendor=, subsystem_device=, revision=,
  link=LinkSpec(max_speed_gts, max_width, speed_gts, width), msi_vectors=1, msix=MSIXSpec(count, bar, table_offset,
  pba_offset), flr=True, on_reset=fn(), on_resize=fn(index, old_size, new_size))`.
  Config space: `config_read(off, size)`, `config_write(off, value, size)` (naturally aligned), `config_read_bytes`,
  `config_write_bytes` (split as the kernel splits), `capabilities()` -> [(id, offset, extended)].
  Write masks: IDs/class read-only; command RW (memory, master, parity, SERR, INTx disable); status errors RW1C;
  BARs answer the sizing protocol; PCIe DEVCTL bit 15 starts an FLR; Resizable BAR control's size field resizes.
  BARs: `bar_read32/bar_write32(index, off)`, `bar_read/bar_write(index, off, ...)`, `bar_size`, `bar_address`,
  `resizable_sizes(index)` (bitmap, bit n = 2^(20+n) bytes). A BarSpec's backing is a `MemoryBacking(name, size,
  fd=None, offset=0)` (memfd: VRAM, doorbells; mapped for real by the driver) or an MMIO object with
  read32/write32 (`MMIOHandler(read32, write32)`: registers; the GPU model raises on unknown ones).
  Accesses with memory decoding off read all ones and are recorded in `faults`.
  Reset: `flr()` (config defaults, BAR sizes back to default, then on_reset), `save_state()`/`restore_state()`.
  Interrupts: `raise_interrupt(vector)` -> delivered?; goes to `interrupt_sink(kind, vector)` ("msix"/"msi"/"intx");
  masked MSI-X vectors stay pending until unmasked; MSI needs bus mastering. `set_msix`, `set_msi` are what the
  kernel does when it enables them.
  DMA: `dma_translate(bus_addr, size, write)` -> host address, `dma_read`, `dma_write`; through `iommu` (set by a
  VFIO container; None = identity, matching EmulatedSystem.pagemap); `IOMMUFault` when refused (also in `faults`).
  Faults: `surprise_remove()` (config and MMIO reads all ones, writes dropped, no interrupts or DMA).
  `counts` (Counter): config_reads/writes, mmio_reads/writes, interrupts, dma, flrs, bar_resizes, faults.

`emu.pci.sysfs`
- `install_pci_function(system, function, bdf, driver=None, iommu_group=None)` -> SysfsDevice: the files of
  /sys/bus/pci/devices/<bdf> (see that module), driver bind/unbind, iommu_group links. `pci_bus(system)` is the bus.
  resourceN of an MMIO BAR is not mmappable (ENODEV); it answers 4-byte pread/pwrite instead.

`emu.pci.vfio`
- `install_vfio(system)`: /dev/vfio/vfio, and /dev/vfio/<group> while a device of the group is bound to vfio-pci.
  Container: GET_API_VERSION, CHECK_EXTENSION, SET_IOMMU (type1/type1v2), IOMMU_GET_INFO, IOMMU_MAP_DMA/UNMAP_DMA.
  Group: GET_STATUS, SET_CONTAINER, UNSET_CONTAINER, GET_DEVICE_FD (returns the fd). Device: GET_INFO,
  GET_REGION_INFO, GET_IRQ_INFO, SET_IRQS (MSI/MSI-X eventfd triggers), RESET, pread/pwrite at region offsets,
  mmap of memory BARs. MMIO BAR regions are READ|WRITE without MMAP.

Seam additions this needs (emu/system.py, additions only): NodeHandler.pread/pwrite, EmulatedSystem.pread/pwrite,
add_attribute (live sysfs attributes: read_file -> show, write_file -> store), install_handler, handler_of.
"""
from emu.pci.function import (BarSpec, IOMMUFault, LinkSpec, MemoryBacking, MMIOHandler, MSIXSpec, PCIFunction,
                              PCIFunctionError)
from emu.pci.sysfs import SysfsDevice, install_pci_function, pci_bus
from emu.pci.vfio import EmulatedVFIO, install_vfio

__all__ = ["BarSpec", "IOMMUFault", "LinkSpec", "MemoryBacking", "MMIOHandler", "MSIXSpec", "PCIFunction",
           "PCIFunctionError", "SysfsDevice", "install_pci_function", "pci_bus", "EmulatedVFIO", "install_vfio"]
