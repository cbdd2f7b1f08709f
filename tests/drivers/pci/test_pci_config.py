"""config.py's decoders on config spaces built by hand from the spec's layouts (PCI Local Bus 6.x, PCIe Base 7.5, 7.8.6)."""
from __future__ import annotations

import pytest

from autogen import pci_regs as R
from drivers.pci import config as C
from drivers.pci.interface import BarInfo, Capability, PCIError


def put(buf: bytearray, off: int, value: int, size: int) -> None:
    buf[off:off + size] = value.to_bytes(size, "little")


def build_config(ext: bool = True) -> bytearray:
    """A GPU-like function: 64-bit prefetchable BAR0, 64-bit BAR2, I/O BAR4, 32-bit BAR5; PM -> MSI -> PCIe -> MSI-X;
    extended AER -> ReBAR (BAR0 and BAR2) -> vendor-specific."""
    cfg = bytearray(4096 if ext else 256)
    put(cfg, R.PCI_VENDOR_ID, 0x1002, 2)
    put(cfg, R.PCI_DEVICE_ID, 0x744C, 2)
    put(cfg, R.PCI_STATUS, R.PCI_STATUS_CAP_LIST, 2)
    put(cfg, R.PCI_BASE_ADDRESS_0, 0x0000000C | R.PCI_BASE_ADDRESS_MEM_TYPE_64 | R.PCI_BASE_ADDRESS_MEM_PREFETCH, 4)
    put(cfg, R.PCI_BASE_ADDRESS_1, 0x00000078, 4)  # BAR0 at 0x78_0000_0000
    put(cfg, R.PCI_BASE_ADDRESS_2, 0xF0000000 | R.PCI_BASE_ADDRESS_MEM_TYPE_64, 4)
    put(cfg, R.PCI_BASE_ADDRESS_3, 0, 4)
    put(cfg, R.PCI_BASE_ADDRESS_4, 0xE001, 4)  # I/O at 0xe000
    put(cfg, R.PCI_BASE_ADDRESS_5, 0xFCE00000, 4)
    put(cfg, R.PCI_CAPABILITY_LIST, 0x48, 1)
    put(cfg, 0x48, R.PCI_CAP_ID_PM | 0x50 << 8, 2)
    put(cfg, 0x50, R.PCI_CAP_ID_MSI | 0x64 << 8, 2)
    put(cfg, 0x64, R.PCI_CAP_ID_EXP | 0xA0 << 8, 2)
    put(cfg, 0x64 + R.PCI_EXP_FLAGS, 0x0002, 2)  # capability version 2
    put(cfg, 0x64 + R.PCI_EXP_LNKCAP, R.PCI_EXP_LNKCAP_SLS_16_0GB | 16 << 4, 4)
    put(cfg, 0x64 + R.PCI_EXP_LNKSTA, R.PCI_EXP_LNKSTA_CLS_8_0GB | 8 << 4, 2)
    put(cfg, 0x64 + R.PCI_EXP_LNKCAP2, 0x1E, 4)  # 2.5 .. 16 GT/s
    put(cfg, 0xA0, R.PCI_CAP_ID_MSIX | 0x00 << 8, 2)
    if ext:
        put(cfg, 0x100, R.PCI_EXT_CAP_ID_ERR | 1 << 16 | 0x200 << 20, 4)
        put(cfg, 0x200, R.PCI_EXT_CAP_ID_REBAR | 1 << 16 | 0x300 << 20, 4)
        # entry 0: BAR0, 256 MB .. 16 GB (bits 8..14 of the size field), now 256 MB, 2 resizable BARs
        put(cfg, 0x200 + R.PCI_REBAR_CAP, 0x7F00 << 4, 4)
        put(cfg, 0x200 + R.PCI_REBAR_CTRL, 0 | 2 << R.PCI_REBAR_CTRL_NBAR_SHIFT | 8 << R.PCI_REBAR_CTRL_BAR_SHIFT, 4)
        # entry 1: BAR2, 2 MB only, now 2 MB
        put(cfg, 0x208 + R.PCI_REBAR_CAP, 0x2 << 4, 4)
        put(cfg, 0x208 + R.PCI_REBAR_CTRL, 2 | 1 << R.PCI_REBAR_CTRL_BAR_SHIFT, 4)
        put(cfg, 0x300, R.PCI_EXT_CAP_ID_VNDR | 1 << 16, 4)
    return cfg


def test_capability_walk_classic_then_extended() -> None:
    caps = C.capabilities(C.ConfigSpace(build_config()))
    assert caps == [Capability(R.PCI_CAP_ID_PM, 0x48), Capability(R.PCI_CAP_ID_MSI, 0x50),
                    Capability(R.PCI_CAP_ID_EXP, 0x64), Capability(R.PCI_CAP_ID_MSIX, 0xA0),
                    Capability(R.PCI_EXT_CAP_ID_ERR, 0x100, True), Capability(R.PCI_EXT_CAP_ID_REBAR, 0x200, True),
                    Capability(R.PCI_EXT_CAP_ID_VNDR, 0x300, True)]


def test_no_cap_list_bit_means_no_classic_list_and_256_bytes_means_no_extended() -> None:
    cfg = build_config(ext=False)
    assert [c.id for c in C.capabilities(C.ConfigSpace(cfg))] == [1, 5, 0x10, 0x11]
    put(cfg, R.PCI_STATUS, 0, 2)
    assert C.capabilities(C.ConfigSpace(cfg)) == []


def test_looping_lists_end() -> None:
    cfg = build_config()
    put(cfg, 0xA0, R.PCI_CAP_ID_MSIX | 0x48 << 8, 2)  # MSI-X points back at PM
    put(cfg, 0x300, R.PCI_EXT_CAP_ID_VNDR | 1 << 16 | 0x100 << 20, 4)  # vendor cap points back at AER
    caps = C.capabilities(C.ConfigSpace(cfg))
    assert len(caps) == 7


def test_pointer_low_bits_are_ignored_and_header_pointers_end_the_list() -> None:
    cfg = build_config(ext=False)
    put(cfg, 0x48, R.PCI_CAP_ID_PM | 0x53 << 8, 2)  # __pci_find_next_cap_ttl masks pos &= ~3
    put(cfg, 0x50, R.PCI_CAP_ID_MSI | 0x20 << 8, 2)  # a pointer below 0x40 ends the walk
    assert [c.offset for c in C.classic_capabilities(C.ConfigSpace(cfg))] == [0x48, 0x50]


def test_removed_device_reads_all_ones() -> None:
    cfg = C.ConfigSpace(b"\xff" * 4096, "0000:03:00.0")
    with pytest.raises(PCIError, match="all ones.*0000:03:00.0|0000:03:00.0.*all ones"):
        cfg.check_present()
    assert C.extended_capabilities(cfg) == []


def test_link_status_prefers_lnkcap2_vector() -> None:
    link = C.link_status(C.ConfigSpace(build_config()))
    assert (link.speed_gts, link.width, link.max_speed_gts, link.max_width) == (8.0, 8, 16.0, 16)
    assert C.decode_link(R.PCI_EXP_LNKCAP_SLS_8_0GB | 4 << 4, R.PCI_EXP_LNKSTA_CLS_2_5GB | 1 << 4, 0x7E).max_speed_gts == 64.0
    assert C.decode_link(R.PCI_EXP_LNKCAP_SLS_5_0GB | 1 << 4, 0, 0).max_speed_gts == 5.0


def test_no_pcie_capability_means_no_link() -> None:
    cfg = build_config(ext=False)
    put(cfg, 0x50, R.PCI_CAP_ID_MSI | 0xA0 << 8, 2)  # skip the PCIe capability
    assert C.link_status(C.ConfigSpace(cfg)) is None


def test_rebar_entries_and_encoding() -> None:
    entries = C.rebar_entries(C.ConfigSpace(build_config()))
    assert set(entries) == {0, 2}
    bar0 = entries[0]
    assert bar0.sizes == [(256 << 20) << i for i in range(7)]
    assert bar0.current_size == 256 << 20 and bar0.ctrl_offset == 0x208 - 8 + R.PCI_REBAR_CTRL
    assert entries[2].sizes == [2 << 20] and entries[2].current == 1
    assert C.rebar_encoding(1 << 20) == 0 and C.rebar_encoding(16 << 30) == 14
    for bad in (0, 3 << 20, 512 << 10):
        with pytest.raises(PCIError, match="power of two"):
            C.rebar_encoding(bad)
    assert C.rebar_entries(C.ConfigSpace(build_config(ext=False))) == {}


def test_bar_registers() -> None:
    bars = C.bar_registers(C.ConfigSpace(build_config()))
    assert bars == [C.BarRegister(0, 0x78_0000_0000, True, True, False), C.BarRegister(2, 0xF0000000, True, False, False),
                    C.BarRegister(4, 0xE000, False, False, True), C.BarRegister(5, 0xFCE00000, False, False, False)]


def test_bar_sizing_readback() -> None:
    assert C.bar_size_from_readback(0xF000000C, 0xFFFFFFFF, is_64bit=True) == 256 << 20
    assert C.bar_size_from_readback(0x0000000C, 0xFFFFFFFC, is_64bit=True) == 16 << 30
    assert C.bar_size_from_readback(0xFFF80000) == 512 << 10
    assert C.bar_size_from_readback(0xFFFFFF01, io=True) == 256
    assert C.bar_size_from_readback(0) == 0


def test_resource_table() -> None:
    text = ("0x0000007800000000 0x000000780fffffff 0x000000000014220c\n"
            "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
            "0x00000000f0000000 0x00000000f01fffff 0x0000000000140204\n"
            "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
            "0x000000000000e000 0x000000000000e0ff 0x0000000000040101\n"
            "0x00000000fce00000 0x00000000fce7ffff 0x0000000000040200\n"
            "0x00000000fce80000 0x00000000fce9ffff 0x0000000000046200\n")
    bars = C.bars_from_resource_table(C.parse_resource_table(text))
    assert bars == [BarInfo(0, 0x78_0000_0000, 256 << 20, True, True, False), BarInfo(2, 0xF0000000, 2 << 20, True, False, False),
                    BarInfo(4, 0xE000, 256, False, False, True), BarInfo(5, 0xFCE00000, 512 << 10, False, False, False)]
    with pytest.raises(PCIError, match="start end flags"):
        C.parse_resource_table("0x0 0x1\n")


def test_short_snapshot_says_root() -> None:
    cfg = C.ConfigSpace(bytes(build_config()[:64]), "0000:03:00.0")
    with pytest.raises(PCIError, match="past the 64 bytes"):
        C.capabilities(cfg)
    with pytest.raises(PCIError, match="needs root"):
        C.ConfigSpace(b"\0" * 16)
