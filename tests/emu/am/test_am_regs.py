"""The emulated AMD GPU's register file on its own: addresses from discovery bases, masks, hooks, MM_INDEX/MM_DATA,
and the refusal of unmodelled registers by name."""
from __future__ import annotations

import errno

import pytest

from drivers.system import OSCallError
from emu.am.discovery import BOARDS, MP0_SMN_C2PMSG_33, RCC_CONFIG_MEMSIZE, board
from emu.am.regs import (IFWI_INIT_DONE, MM_INDEX_APER, Register, RegisterError, RegisterFile, VRAMPort,
                         _module_registers, header_for, install_boot_registers)

TARGETS = sorted(BOARDS)
VRAM = 8 << 20


class Rig:
    """A register file with a bytearray for VRAM and switchable IFWI/busy flags."""

    def __init__(self, target: str):
        self.vram = bytearray(VRAM)
        self.ready = False
        self.busy = False
        self.rf = RegisterFile(board(target))
        port = VRAMPort(VRAM, lambda a: int.from_bytes(self.vram[a:a + 4], "little"),
                        lambda a, v: self.vram.__setitem__(slice(a, a + 4), v.to_bytes(4, "little")))
        install_boot_registers(self.rf, vram=port, ifwi_ready=lambda: self.ready, gfx_busy=lambda: self.busy)


@pytest.fixture(params=TARGETS)
def rig(request):
    return Rig(request.param)


def test_fixed_addresses_match_amdgpu_discovery(rig):
    # amdgpu_discovery.c reads these at fixed dword offsets before any base is known; the board's bases must agree.
    rf = rig.rf
    assert rf.reg("MM_INDEX").address == 0 and rf.reg("MM_DATA").address == 1 and rf.reg("MM_INDEX_HI").address == 6
    assert rf.reg("RCC_CONFIG_MEMSIZE").address == RCC_CONFIG_MEMSIZE
    assert rf.reg("MP0_SMN_C2PMSG_33").address == MP0_SMN_C2PMSG_33
    assert rf.reg("IP_DISCOVERY_VERSION").address == 0x16A00
    gc = rf.board.block("GC").bases[0][0]
    assert rf.reg("GRBM_STATUS").address == gc + 0xDA4  # gc_1x_0_0_offset.h regGRBM_STATUS, base idx 0


def test_memsize_is_read_only_and_in_mib(rig):
    rf = rig.rf
    assert rf.read("RCC_CONFIG_MEMSIZE") == VRAM >> 20
    rf.write("RCC_CONFIG_MEMSIZE", 0x1234)
    assert rf.read("RCC_CONFIG_MEMSIZE") == VRAM >> 20


def test_ifwi_bit_follows_the_boot_and_is_not_host_writable(rig):
    rf = rig.rf
    assert rf.read("MP0_SMN_C2PMSG_33") & IFWI_INIT_DONE == 0
    rf.write("MP0_SMN_C2PMSG_33", 0xFFFFFFFF)  # the host may write the mailbox's other bits, never bit 31
    assert rf.read("MP0_SMN_C2PMSG_33") == 0x7FFFFFFF
    rig.ready = True
    assert rf.read("MP0_SMN_C2PMSG_33") == 0xFFFFFFFF
    rf.power_on()
    assert rf.read("MP0_SMN_C2PMSG_33") == IFWI_INIT_DONE  # back to reset (0) plus the IFWI's bit


def test_grbm_status_reports_busy_and_ignores_writes(rig):
    rf = rig.rf
    assert rf.read("GRBM_STATUS") == 0
    rig.busy = True
    assert rf.read("GRBM_STATUS") == 1 << 31
    rf.write("GRBM_STATUS", 0xFFFF)
    rig.busy = False
    assert rf.read("GRBM_STATUS") == 0


def test_discovery_version_register(rig):
    assert rig.rf.read("IP_DISCOVERY_VERSION") == (4 if rig.rf.board.ip_header_version == 4 else 0)


def mm_write(rf, addr, value):
    # amdgpu_device_mm_access's sequence: MM_INDEX = pos | 1 << 31, MM_INDEX_HI = pos >> 31, then MM_DATA.
    rf.write32(0, (addr & 0xFFFFFFFF) | MM_INDEX_APER)
    rf.write32(6 * 4, addr >> 31)
    rf.write32(4, value)


def mm_read(rf, addr):
    rf.write32(0, (addr & 0xFFFFFFFF) | MM_INDEX_APER)
    rf.write32(6 * 4, addr >> 31)
    return rf.read32(4)


def test_mm_index_data_reach_vram(rig):
    rf = rig.rf
    mm_write(rf, 0x1000, 0xDEADBEEF)
    assert rig.vram[0x1000:0x1004] == bytes.fromhex("efbeadde")
    rig.vram[VRAM - 4:VRAM] = b"\x01\x02\x03\x04"
    assert mm_read(rf, VRAM - 4) == 0x04030201
    assert rf.counts["BIF_BX_PF0_MM_DATA"] == 2
    assert ("read", "BIF_BX_PF0_MM_DATA", 0x04030201) in rf.log


def test_mm_data_refuses_outside_vram_and_unaligned(rig):
    rf = rig.rf
    with pytest.raises(RegisterError, match="outside|inside the 0x800000 bytes of VRAM") as e:
        mm_read(rf, VRAM)
    assert e.value.errno == errno.EIO and isinstance(e.value, OSCallError)
    with pytest.raises(RegisterError, match="4-byte-aligned"):
        mm_write(rf, 0x1002, 1)
    with pytest.raises(RegisterError):
        mm_read(rf, 1 << 31)  # MM_INDEX_HI = 1: 2 GiB, beyond this VRAM
    assert len(rf.errors) == 3


def test_mm_index_without_aperture_bit_reaches_registers(rig):
    rf = rig.rf
    rf.write32(0, RCC_CONFIG_MEMSIZE * 4)  # bit 31 clear: the index is a register byte offset
    assert rf.read32(4) == VRAM >> 20
    rf.write32(0, 4)  # MM_DATA through itself
    with pytest.raises(RegisterError, match="through themselves"):
        rf.read32(4)


def test_unmodelled_register_is_named_from_the_generated_header(rig):
    rf = rig.rf
    gc = rf.board.block("GC")
    module = header_for("GC", gc.version)
    off, seg = _module_registers(module)["CP_HQD_ACTIVE"]
    addr = gc.bases[0][seg] + off
    ver = ".".join(map(str, gc.version))
    with pytest.raises(RegisterError) as e:
        rf.read32(addr * 4)
    msg = str(e.value)
    assert f"unmodelled register CP_HQD_ACTIVE (GC {ver} seg {seg} + {off:#x}) read at BAR5 + {addr * 4:#x}" in msg
    with pytest.raises(RegisterError, match=r"CP_HQD_ACTIVE .* written 0x1 at BAR5"):
        rf.write32(addr * 4, 1)
    assert len(rf.errors) == 2 and "CP_HQD_ACTIVE" in rf.errors[0]


def test_unnamed_address_names_the_nearest_segment(rig):
    rf = rig.rf
    with pytest.raises(RegisterError, match=r"unmodelled register at NBIF [\d.]+ seg 0 \+ 0x7 \(no register of nbi"):
        rf.read32(7 * 4)
    with pytest.raises(RegisterError, match="4-byte-aligned offset inside"):
        rf.read32(2)


def test_add_refuses_a_second_register_at_one_address(rig):
    with pytest.raises(ValueError, match="already"):
        rig.rf.add(Register("OTHER", None, RCC_CONFIG_MEMSIZE))
    with pytest.raises(ValueError, match="already modelled"):
        rig.rf.add(Register("MM_DATA", None, 0x40))
    with pytest.raises(KeyError, match="not a modelled register"):
        rig.rf.reg("NOPE")


def test_hooks_and_write_mask():
    rf = RegisterFile(board("gfx1100"))
    seen = []
    r = rf.add(Register("TEST", "GC", 0x10, reset=0xA5, wmask=0x0F, on_write=lambda reg, v: seen.append(v)))
    assert rf.read("TEST") == 0xA5
    rf.write("TEST", 0xFF)
    assert r.value == 0xAF and seen == [0xFF]
    rf.power_on()
    assert rf.read("TEST") == 0xA5


def test_headers_follow_the_kernels_ip_files():
    assert header_for("MP0", (13, 0, 7)) == "mp_13_0_2"  # psp_v13_0.c
    assert header_for("GC", (11, 0, 2)) == "gc_11_0_0"  # gfx_v11_0.c
    assert header_for("NBIF", (4, 3, 1)) == "nbio_4_3_0"  # nbio_v4_3.c
    assert header_for("MMHUB", (3, 0, 2)) == "mmhub_3_0_2"  # mmhub_v3_0_2.c
    assert header_for("SDMA0", (7, 0, 1)) == "gc_12_0_0"  # sdma_v7_0.c
