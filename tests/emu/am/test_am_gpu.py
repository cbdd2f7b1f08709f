"""The emulated AMD GPU on the emulated PCI bus, seen through the OS seam as a driver sees it: sysfs and VFIO, BARs
and their resize, VRAM through BAR0 and through MM_INDEX/MM_DATA, the discovery table where amdgpu looks for it,
the unmodelled-register error, surprise removal, function reset and the boot delay."""
from __future__ import annotations

import ctypes
import errno
import math
import time

import pytest

from autogen import discovery as d
from autogen import pci_regs as R
from autogen import vfio as V
from drivers.system import OSCallError
from emu.am.discovery import (DISCOVERY_TMR_OFFSET, DISCOVERY_TMR_SIZE, MP0_SMN_C2PMSG_33, RCC_CONFIG_MEMSIZE,
                              build_discovery_table)
from emu.am.gpu import PCI_IDS, BootState, install_am_gpu
from emu.am.regs import _module_registers, header_for
from emu.pci import install_vfio
from emu.system import EmulatedSystem

MiB = 1 << 20
BDF = "0000:03:00.0"
D = f"/sys/bus/pci/devices/{BDF}"
VRAM = 512 * MiB  # sparse: only touched pages cost memory
MM_INDEX, MM_DATA, MM_INDEX_HI = 0x0, 0x4, 0x18  # byte offsets in BAR5 (dword offsets 0, 1, 6)


@pytest.fixture
def made():
    cards = []

    def make(target="gfx1100", **kw):
        s = EmulatedSystem()
        kw.setdefault("vram_size", VRAM)
        kw.setdefault("boot_delay_s", 0)
        card = install_am_gpu(s, target, BDF, **kw)
        cards.append(card)
        return s, card
    yield make
    for c in cards:
        c.close()


class Regs:
    """BAR5 through resource5 (4-byte pread/pwrite: the emulator's MMIO path) — what a sysfs backend does."""

    def __init__(self, s, path=f"{D}/resource5"):
        self.s, self.fd = s, s.open(path)

    def rd(self, byte_off):
        return int.from_bytes(self.s.pread(self.fd, 4, byte_off), "little")

    def wr(self, byte_off, value):
        self.s.pwrite(self.fd, value.to_bytes(4, "little"), byte_off)

    def mm_read(self, addr, size):
        # amdgpu_device_mm_access: MM_INDEX = pos | 1 << 31, MM_INDEX_HI = pos >> 31 when it changes, MM_DATA.
        out, hi = bytearray(), None
        for pos in range(addr, addr + size, 4):
            self.wr(MM_INDEX, (pos & 0x7FFFFFFF) | 1 << 31)
            if pos >> 31 != hi:
                hi = pos >> 31
                self.wr(MM_INDEX_HI, hi)
            out += self.rd(MM_DATA).to_bytes(4, "little")
        return bytes(out)

    def mm_write(self, addr, data):
        for i in range(0, len(data), 4):
            self.wr(MM_INDEX, ((addr + i) & 0x7FFFFFFF) | 1 << 31)
            self.wr(MM_INDEX_HI, (addr + i) >> 31)
            self.wr(MM_DATA, int.from_bytes(data[i:i + 4], "little"))


def enable(s):
    s.write_file(f"{D}/enable", b"1")


def resources(s):
    return [tuple(int(x, 16) for x in line.split()) for line in s.read_text(f"{D}/resource").splitlines()]


@pytest.mark.parametrize("target", sorted(PCI_IDS))
def test_ids_class_and_bars_through_sysfs(made, target):
    s, card = made(target)
    assert s.read_text(f"{D}/vendor") == "0x1002"
    assert s.read_text(f"{D}/device") == f"0x{PCI_IDS[target].device:04x}"
    assert s.read_text(f"{D}/class") == "0x030000"
    res = resources(s)
    size = [end - start + 1 if end else 0 for start, end, _ in res]
    flags = [f for _, _, f in res]
    assert size[:6] == [256 * MiB, 0, 2 * MiB, 0, 0, 1 * MiB]
    mem64_pref = 0x200 | 0x100000 | 0x2000  # IORESOURCE_MEM | IORESOURCE_MEM_64 | IORESOURCE_PREFETCH
    assert flags[0] & mem64_pref == mem64_pref and flags[2] & mem64_pref == mem64_pref
    assert flags[5] & 0x200 and not flags[5] & (0x100000 | 0x2000)  # BAR5: 32-bit, not prefetchable
    # Resizable BAR: 256 MiB (bit 8) up to VRAM (512 MiB, bit 9)
    assert int(s.read_text(f"{D}/resource0_resize"), 16) == 0b11 << 8
    assert s.read_text(f"{D}/max_link_width") == str(PCI_IDS[target].link.max_width)
    assert card.state is BootState.POWER_ON


def test_bar0_resize_to_all_of_vram(made):
    s, card = made()
    s.write_file(f"{D}/resource0_resize", b"9")  # 2^9 MiB = 512 MiB
    assert s.pci_resource_size(BDF, 0) == VRAM == card.function.bar_size(0)
    enable(s)
    fd = s.open(f"{D}/resource0")
    addr = s.mmap(fd, VRAM, offset=0)
    try:  # the whole of VRAM is visible now, the discovery table at its top included
        top = ctypes.string_at(addr + VRAM - DISCOVERY_TMR_OFFSET, 4)
        assert int.from_bytes(top, "little") == d.BINARY_SIGNATURE
    finally:
        s.munmap(addr, VRAM)
    with pytest.raises(OSCallError) as e:
        s.write_file(f"{D}/resource0_resize", b"10")  # 1 GiB: beyond what the capability offers
    assert e.value.errno == errno.EINVAL


def test_vram_through_bar0_and_mm_data_is_the_same_memory(made):
    s, card = made()
    enable(s)
    regs = Regs(s)
    fd = s.open(f"{D}/resource0")
    bar = s.mmap(fd, 256 * MiB)
    try:
        ctypes.memmove(bar + 0x10000, b"written via BAR0", 16)
        assert regs.mm_read(0x10000, 16) == b"written via BAR0"
        regs.mm_write(0x20000, b"via MM_DATA!")
        assert ctypes.string_at(bar + 0x20000, 12) == b"via MM_DATA!"
        # beyond the 256 MiB BAR only the index registers reach VRAM
        regs.mm_write(300 * MiB, b"high")
        assert card.vram_read(300 * MiB, 4) == b"high"
    finally:
        s.munmap(bar, 256 * MiB)


def test_discovery_table_where_the_kernel_looks(made):
    # amdgpu_discovery_read_binary_from_mem: wait for C2PMSG_33 bit 31, VRAM size from RCC_CONFIG_MEMSIZE << 20,
    # read DISCOVERY_TMR_SIZE bytes at vram_size - DISCOVERY_TMR_OFFSET (here through MM_INDEX/MM_DATA).
    s, card = made("gfx1201", vram_size=1024 * MiB)
    enable(s)
    regs = Regs(s)
    assert regs.rd(MP0_SMN_C2PMSG_33 * 4) & 1 << 31
    vram_size = regs.rd(RCC_CONFIG_MEMSIZE * 4) << 20
    assert vram_size == 1024 * MiB
    blob = regs.mm_read(vram_size - DISCOVERY_TMR_OFFSET, DISCOVERY_TMR_SIZE)
    want = build_discovery_table("gfx1201")
    assert blob[:len(want)] == want
    assert regs.rd(0x16A00 * 4) == 4  # IP_DISCOVERY_VERSION on a v4 board


def test_unmodelled_register_error_names_it(made):
    s, card = made()
    enable(s)
    regs = Regs(s)
    gc = card.board.block("GC")
    off, seg = _module_registers(header_for("GC", gc.version))["CP_HQD_PQ_BASE"]
    byte = (gc.bases[0][seg] + off) * 4
    with pytest.raises(OSCallError) as e:
        regs.wr(byte, 0x1234)
    assert e.value.errno == errno.EIO
    assert f"unmodelled register CP_HQD_PQ_BASE (GC 11.0.0 seg {seg} + {off:#x}) written 0x1234" in str(e.value)
    with pytest.raises(OSCallError, match="CP_HQD_PQ_BASE .* read"):
        regs.rd(byte)
    assert len(card.regs.errors) == 2 and card.function.faults[-1] == card.regs.errors[-1]
    assert s.calls_named("pwrite")[-1].error is e.value  # the seam recorded the failed access


def test_vfio_regions_registers_and_vram(made):
    s, card = made("gfx1102", driver="vfio-pci", iommu_group=9)
    install_vfio(s)
    container, group = s.open("/dev/vfio/vfio"), s.open("/dev/vfio/9")
    s.ioctl(group, V.VFIO_GROUP_SET_CONTAINER, ctypes.c_int(container))
    s.ioctl(container, V.VFIO_SET_IOMMU, V.VFIO_TYPE1v2_IOMMU)
    dev = s.ioctl(group, V.VFIO_GROUP_GET_DEVICE_FD, ctypes.create_string_buffer(BDF.encode()))

    def region(i):
        info = V.struct_vfio_region_info(argsz=ctypes.sizeof(V.struct_vfio_region_info), index=i)
        s.ioctl(dev, V.VFIO_DEVICE_GET_REGION_INFO, info)
        return info
    r0, r2, r5 = region(0), region(2), region(5)
    assert (r0.size, r2.size, r5.size) == (256 * MiB, 2 * MiB, 1 * MiB)
    assert r0.flags & V.VFIO_REGION_INFO_FLAG_MMAP and not r5.flags & V.VFIO_REGION_INFO_FLAG_MMAP
    cfg = region(V.VFIO_PCI_CONFIG_REGION_INDEX).offset
    assert int.from_bytes(s.pread(dev, 4, cfg), "little") == 0x7480_1002
    s.pwrite(dev, R.PCI_COMMAND_MEMORY.to_bytes(2, "little"), cfg + R.PCI_COMMAND)

    def rd(off):
        return int.from_bytes(s.pread(dev, 4, r5.offset + off), "little")

    def wr(off, v):
        s.pwrite(dev, v.to_bytes(4, "little"), r5.offset + off)
    assert rd(RCC_CONFIG_MEMSIZE * 4) == VRAM >> 20
    card.vram_write(0x4000, b"\x11\x22\x33\x44")
    wr(MM_INDEX, 0x4000 | 1 << 31)
    wr(MM_INDEX_HI, 0)
    assert rd(MM_DATA) == 0x44332211
    bar = s.mmap(dev, 4096, offset=r0.offset + 0x4000)
    try:
        assert ctypes.string_at(bar, 4) == b"\x11\x22\x33\x44"
    finally:
        s.munmap(bar, 4096)
    with pytest.raises(OSCallError, match="unmodelled register"):
        rd(0x7 * 4)


def test_surprise_removal_reads_all_ones(made):
    s, card = made()
    enable(s)
    regs = Regs(s)
    assert regs.rd(RCC_CONFIG_MEMSIZE * 4) == VRAM >> 20
    card.surprise_remove()
    assert regs.rd(RCC_CONFIG_MEMSIZE * 4) == 0xFFFFFFFF
    assert regs.rd(0x7 * 4) == 0xFFFFFFFF  # nothing reaches the register file: no unmodelled-register error either
    regs.wr(MM_INDEX, 0x1000 | 1 << 31)  # dropped
    assert card.regs.reg("MM_INDEX").value == 0
    assert s.read_file(f"{D}/config")[:4] == b"\xff" * 4
    assert not card.regs.errors


def test_function_reset_returns_to_power_on(made):
    s, card = made()
    enable(s)
    regs = Regs(s)
    resets = []
    card.on_power_on.append(lambda: resets.append(card.state))
    regs.wr(MM_INDEX, 0x1234 | 1 << 31)
    card.mark_initialised()
    card.vram_write(0x100, b"kept")
    s.write_file(f"{D}/reset", b"1")  # pci_reset_function: FLR, config saved and restored around it
    assert card.state is BootState.POWER_ON and resets == [BootState.POWER_ON]
    assert regs.rd(MM_INDEX) == 0  # registers back to reset values
    assert card.vram_read(0x100, 4) == b"kept"  # memory survives a function reset
    assert regs.rd(MP0_SMN_C2PMSG_33 * 4) & 1 << 31  # boot_delay_s=0: the IFWI is done again at once


def test_boot_delay_holds_the_table_back(made):
    s, card = made(boot_delay_s=0.05)
    enable(s)
    regs = Regs(s)
    top = VRAM - DISCOVERY_TMR_OFFSET
    first = regs.rd(MP0_SMN_C2PMSG_33 * 4)
    if not first & 1 << 31:  # (on a very slow machine the 50 ms may already be over)
        assert card.vram_read(top, 4) == b"\0\0\0\0"  # not written before IFWI init completes
    deadline = time.monotonic() + 5.0
    while not regs.rd(MP0_SMN_C2PMSG_33 * 4) & 1 << 31:
        assert time.monotonic() < deadline, "C2PMSG_33 bit 31 never came up"
        time.sleep(0.005)
    assert int.from_bytes(card.vram_read(top, 4), "little") == d.BINARY_SIGNATURE


def test_ifwi_that_never_finishes(made):
    s, card = made(boot_delay_s=math.inf)
    enable(s)
    regs = Regs(s)
    assert not regs.rd(MP0_SMN_C2PMSG_33 * 4) & 1 << 31
    assert card.vram_read(VRAM - DISCOVERY_TMR_OFFSET, 4) == b"\0\0\0\0"


def test_doorbell_bar_is_shared_memory(made):
    s, card = made()
    enable(s)
    fd = s.open(f"{D}/resource2")
    db = s.mmap(fd, 2 * MiB)
    try:
        ctypes.c_uint32.from_address(db + 8).value = 0x55
        assert card.doorbells.read32(8) == 0x55
    finally:
        s.munmap(db, 2 * MiB)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="whole number of MiB"):
        install_am_gpu(EmulatedSystem(), vram_size=MiB + 4096)
    with pytest.raises(ValueError, match="bar0_size"):
        install_am_gpu(EmulatedSystem(), vram_size=64 * MiB, bar0_size=128 * MiB)
    with pytest.raises(KeyError, match="known targets"):
        install_am_gpu(EmulatedSystem(), "gfx9999")
