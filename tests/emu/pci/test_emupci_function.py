"""The emulated PCI function's config-space protocol: write masks, BAR sizing, capabilities, Resizable BAR, FLR,
interrupts, DMA and surprise removal."""
import pytest

from autogen import pci_regs as R
from emu.pci.function import (EXP_POS, BarSpec, IOMMUFault, LinkSpec, MemoryBacking, MMIOHandler, MSIXSpec,
                              PCIFunction, PCIFunctionError)

GiB, MiB = 1 << 30, 1 << 20


class Regs:
    """A tiny register file: known offsets only; unknown ones raise, as the GPU model will."""

    def __init__(self):
        self.regs = {0x0: 0x1234, 0x10: 0}

    def read32(self, off):
        if off not in self.regs:
            raise KeyError(f"unmodelled register {off:#x}")
        return self.regs[off]

    def write32(self, off, value):
        if off not in self.regs:
            raise KeyError(f"unmodelled register {off:#x}")
        self.regs[off] = value


def make(**kw):
    regs = Regs()
    events = {"reset": 0, "resize": []}
    f = PCIFunction(0x1002, 0x744C, 0x030000, [
        BarSpec(0, 256 * MiB, MemoryBacking("vram", 256 * MiB), prefetchable=True,
                resizable_sizes=(256 * MiB, 512 * MiB, 1 * GiB, 32 * GiB)),
        BarSpec(2, 2 * MiB, MemoryBacking("doorbell", 2 * MiB), prefetchable=True),
        BarSpec(5, 1 * MiB, MMIOHandler(regs.read32, regs.write32), is_64bit=False),
    ], subsystem_vendor=0x1002, subsystem_device=0x0E3B, revision=0xC8, link=LinkSpec(16.0, 16, 8.0, 8),
        msix=MSIXSpec(4, 5, 0x42000, 0x43000),
        on_reset=lambda: events.__setitem__("reset", events["reset"] + 1),
        on_resize=lambda i, o, n: events["resize"].append((i, o, n)), **kw)
    return f, regs, events


def test_ids_are_read_only_and_command_masked():
    f, _, _ = make()
    assert f.config_read(0) == 0x744C1002
    f.config_write(0, 0xFFFFFFFF)
    assert f.config_read(0) == 0x744C1002
    assert f.config_read(R.PCI_CLASS_REVISION) == 0x030000C8
    f.config_write(R.PCI_COMMAND, 0xFFFF, 2)
    assert f.config_read(R.PCI_COMMAND, 2) == 0x0546  # memory, master, parity, SERR, INTx disable only
    assert f.memory_enabled and f.bus_master
    with pytest.raises(PCIFunctionError):
        f.config_read(2, 4)  # misaligned


def test_bar_sizing_protocol():
    f, _, _ = make()
    f.config_write(R.PCI_BASE_ADDRESS_0, 0xFFFFFFFF)
    f.config_write(R.PCI_BASE_ADDRESS_1, 0xFFFFFFFF)
    lo, hi = f.config_read(R.PCI_BASE_ADDRESS_0), f.config_read(R.PCI_BASE_ADDRESS_1)
    assert lo & 0xF == R.PCI_BASE_ADDRESS_MEM_TYPE_64 | R.PCI_BASE_ADDRESS_MEM_PREFETCH
    size = (~((hi << 32) | (lo & ~0xF)) & (1 << 64) - 1) + 1
    assert size == 256 * MiB
    f.config_write(R.PCI_BASE_ADDRESS_5, 0xFFFFFFFF)
    assert (~(f.config_read(R.PCI_BASE_ADDRESS_5) & ~0xF) & 0xFFFFFFFF) + 1 == 1 * MiB
    assert f.config_read(R.PCI_BASE_ADDRESS_4) == 0  # an unimplemented BAR reads 0
    f.config_write(R.PCI_BASE_ADDRESS_0, 0x12345678)
    assert f.config_read(R.PCI_BASE_ADDRESS_0) == 0x1000000C  # address bits below the size are hardwired 0


def test_capability_walk_and_link():
    f, _, _ = make()
    caps = f.capabilities()
    ids = [(c, e) for c, _, e in caps]
    assert ids == [(R.PCI_CAP_ID_PM, False), (R.PCI_CAP_ID_EXP, False), (R.PCI_CAP_ID_MSI, False),
                   (R.PCI_CAP_ID_MSIX, False), (R.PCI_EXT_CAP_ID_REBAR, True)]
    lnksta = f.config_read(EXP_POS + R.PCI_EXP_LNKSTA, 2)
    assert lnksta & R.PCI_EXP_LNKSTA_CLS == 3 and (lnksta & R.PCI_EXP_LNKSTA_NLW) >> 4 == 8
    lnkcap = f.config_read(EXP_POS + R.PCI_EXP_LNKCAP)
    assert lnkcap & R.PCI_EXP_LNKCAP_SLS == 4 and (lnkcap & R.PCI_EXP_LNKCAP_MLW) >> 4 == 16
    assert f.config_read(EXP_POS + R.PCI_EXP_DEVCAP) & R.PCI_EXP_DEVCAP_FLR


def test_resizable_bar():
    f, _, ev = make()
    assert f.resizable_sizes(0) == (1 << 8) | (1 << 9) | (1 << 10) | (1 << 15)
    pos = next(o for c, o, e in f.capabilities() if e)
    ctrl = f.config_read(pos + R.PCI_REBAR_CTRL)
    assert ctrl & R.PCI_REBAR_CTRL_BAR_IDX == 0 and (ctrl & R.PCI_REBAR_CTRL_NBAR_MASK) >> 5 == 1
    assert (ctrl & R.PCI_REBAR_CTRL_BAR_SIZE) >> 8 == 8
    f.config_write(pos + R.PCI_REBAR_CTRL, (ctrl & ~R.PCI_REBAR_CTRL_BAR_SIZE) | 15 << 8)
    assert f.bar_size(0) == 32 * GiB and ev["resize"] == [(0, 256 * MiB, 32 * GiB)]
    f.config_write(R.PCI_BASE_ADDRESS_0, 0xFFFFFFFF)
    f.config_write(R.PCI_BASE_ADDRESS_1, 0xFFFFFFFF)
    assert f.config_read(R.PCI_BASE_ADDRESS_1) == 0xFFFFFFF8  # sizing now reads 32 GiB
    # an unadvertised size, and a resize with memory decoding on, are ignored and recorded
    f.config_write(pos + R.PCI_REBAR_CTRL, (ctrl & ~R.PCI_REBAR_CTRL_BAR_SIZE) | 11 << 8)
    assert f.bar_size(0) == 32 * GiB and "does not advertise" in f.faults[-1]
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MEMORY, 2)
    f.config_write(pos + R.PCI_REBAR_CTRL, (ctrl & ~R.PCI_REBAR_CTRL_BAR_SIZE) | 9 << 8)
    assert f.bar_size(0) == 32 * GiB and "memory decoding is on" in f.faults[-1]


def test_flr_restores_defaults_and_calls_hook():
    f, _, ev = make()
    pos = next(o for c, o, e in f.capabilities() if e)
    f.config_write(pos + R.PCI_REBAR_CTRL, 10 << 8)
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER, 2)
    f.config_write(R.PCI_BASE_ADDRESS_5, 0xFE000000)
    f.config_write(EXP_POS + R.PCI_EXP_DEVCTL, R.PCI_EXP_DEVCTL_BCR_FLR, 2)
    assert ev["reset"] == 1 and f.command == 0 and f.bar_size(0) == 256 * MiB
    assert f.config_read(R.PCI_BASE_ADDRESS_5) == 0
    assert not f.config_read(EXP_POS + R.PCI_EXP_DEVCTL, 2) & R.PCI_EXP_DEVCTL_BCR_FLR  # reads back 0
    saved = None
    f.config_write(R.PCI_BASE_ADDRESS_5, 0xFE000000)
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MEMORY, 2)
    saved = f.save_state()
    f.flr()
    f.restore_state(saved)
    assert f.config_read(R.PCI_BASE_ADDRESS_5) == 0xFE000000 and f.memory_enabled


def test_mmio_and_memory_bars():
    f, regs, _ = make()
    assert f.bar_read32(5, 0) == 0xFFFFFFFF and "memory decoding is off" in f.faults[-1]
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MEMORY, 2)
    assert f.bar_read32(5, 0) == 0x1234
    f.bar_write32(5, 0x10, 7)
    assert regs.regs[0x10] == 7
    with pytest.raises(KeyError, match="unmodelled register 0x20"):
        f.bar_read32(5, 0x20)
    f.bar_write(0, 0x1000, b"hello")
    assert f.bar_read(0, 0x1000, 5) == b"hello"
    assert f.bar_spec(0).backing.read(0x1000, 5) == b"hello"


def test_msix_delivery_masking_and_pending():
    f, _, _ = make()
    got = []
    f.interrupt_sink = lambda kind, v: got.append((kind, v))
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER, 2)
    f.set_msix(True)
    assert not f.raise_interrupt(1)  # every vector starts masked: pending
    assert f.bar_read32(5, 0x43000) == 0b10  # PBA
    f.bar_write32(5, 0x42000 + 16 + 12, 0)  # unmask vector 1: the pending message goes out
    assert got == [("msix", 1)] and f.bar_read32(5, 0x43000) == 0
    assert f.raise_interrupt(1) and got[-1] == ("msix", 1)
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MEMORY, 2)
    assert not f.raise_interrupt(1) and "bus mastering is off" in f.faults[-1]


def test_dma_translation_and_faults():
    f, _, _ = make()
    with pytest.raises(IOMMUFault, match="bus mastering"):
        f.dma_translate(0x1000, 4, False)
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MASTER, 2)
    f.iommu = lambda a, n, w: (_ for _ in ()).throw(IOMMUFault(a, n, w, "no mapping"))
    with pytest.raises(IOMMUFault, match="no mapping"):
        f.dma_read(0x1000, 4)
    assert "no mapping" in f.faults[-1]


def test_surprise_removal_reads_all_ones():
    f, _, _ = make()
    f.config_write(R.PCI_COMMAND, R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER, 2)
    f.surprise_remove()
    assert f.config_read(0) == 0xFFFFFFFF and f.config_read(0, 2) == 0xFFFF and f.config_read(3, 1) == 0xFF
    assert f.bar_read32(5, 0) == 0xFFFFFFFF
    assert f.bar_read(0, 0, 8) == b"\xff" * 8
    f.config_write(R.PCI_COMMAND, 0, 2)  # dropped
    assert not f.raise_interrupt(0)
    with pytest.raises(IOMMUFault, match="removed"):
        f.dma_translate(0, 4, True)


def test_bad_specs_are_refused():
    with pytest.raises(PCIFunctionError, match="power of two"):
        PCIFunction(1, 2, 3, [BarSpec(0, 3000, MemoryBacking("x", 4096))])
    with pytest.raises(PCIFunctionError, match="overlapping"):
        PCIFunction(1, 2, 3, [BarSpec(0, 4096, MemoryBacking("x", 4096)), BarSpec(1, 4096, MemoryBacking("y", 4096))])
    with pytest.raises(PCIFunctionError, match="MSI-X"):
        PCIFunction(1, 2, 3, [BarSpec(0, 4096, MemoryBacking("x", 4096))], msix=MSIXSpec(1, 0, 0, 0x100))
