"""Opening and identifying the emulated AMD GPU (emu/am/gpu.py install_am_gpu) with the AM driver: sysfs and VFIO,
gfx1100 and gfx1201, the small-BAR path with and without a resize, a slow and a dead IFWI, a corrupted table, surprise
removal, and the fixed pre-discovery registers checked against the generated register modules."""
from __future__ import annotations

import math

import pytest

from autogen import pci_regs as R
from drivers.am.device import AMDevice, AMError
from drivers.am.discovery import DiscoveryError
from drivers.am.regs import FIXED, DeviceGoneError, RegisterError
from drivers.lock import ProcessLocks
from emu.am.gpu import install_am_gpu
from emu.pci import install_vfio
from emu.system import EmulatedSystem
from tests.firmware import fwgen

BDF = "0000:03:00.0"
MB = 1 << 20


@pytest.fixture(scope="module")
def fwdirs(tmp_path_factory):
    out = {}
    for target in ("gfx1100", "gfx1201"):
        d = tmp_path_factory.mktemp(f"fw-{target}")
        fwgen.write_set(d, target)
        out[target] = d
    return out


@pytest.fixture
def gpu(fwdirs):
    """gpu(target, vfio=False, **card_options) -> (card, open(**AMDevice options))."""
    made: list = []

    def make(target: str = "gfx1100", vfio: bool = False, **options):
        system = EmulatedSystem(lock_dir=ProcessLocks("test_am_open_emu"))
        if vfio:
            install_vfio(system)
        options.setdefault("boot_delay_s", 0)
        card = install_am_gpu(system, target, BDF, driver="vfio-pci" if vfio else None,
                              iommu_group=5 if vfio else None, **options)
        made.append(card)

        def open_(**kw) -> AMDevice:
            kw.setdefault("firmware_system_dirs", False)
            dev = AMDevice(BDF, system, firmware_dirs=[fwdirs[target]], **kw)
            made.append(dev)
            return dev
        return card, open_

    yield make
    for obj in reversed(made):
        obj.close()


@pytest.mark.parametrize("target", ["gfx1100", "gfx1201"])
@pytest.mark.parametrize("vfio", [False, True], ids=["sysfs", "vfio"])
def test_open_emulated_card(gpu, target, vfio):
    card, open_ = gpu(target, vfio, vram_size=512 * MB, bar0_size=512 * MB)
    dev = open_()
    assert dev.target == target and dev.vram_size == 512 * MB
    assert dev.backend == ("vfio" if vfio else "sysfs") and dev.discovery_via == "BAR0"
    assert dev.discovery.version("GC") == card.board.block("GC").version
    info = dev.describe()
    assert info["pci"]["device"] == f"{card.function.device:#06x}" and info["target"] == target
    assert info["link"]["max_width"] == card.function.link.max_width
    assert {f["role"] for f in info["firmware"]} >= {"sos", "smc", "mec", "sdma"}
    dev.close()
    assert not card.function.command & R.PCI_COMMAND_MASTER


@pytest.mark.parametrize("target", ["gfx1100", "gfx1201"])
def test_fixed_registers_agree_with_the_generated_modules(gpu, target):
    """amdgpu_discovery.c's fixed dword offsets are the named registers placed at the discovered bases."""
    _, open_ = gpu(target, vram_size=256 * MB)
    dev = open_()
    mp0 = "MP0_SMN_C2PMSG_33" if target == "gfx1100" else "MPASP_SMN_C2PMSG_33"  # mp_14_0_2 renames it
    assert dev.regs.reg("MP0", mp0).dword == FIXED["MP0_SMN_C2PMSG_33"]
    assert dev.regs.reg("NBIF", "RCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE").dword == FIXED["RCC_CONFIG_MEMSIZE"]
    for name in ("MM_INDEX", "MM_DATA", "MM_INDEX_HI"):
        assert dev.regs.reg("NBIF", f"BIF_BX_PF0_{name}").dword == FIXED[name]
    assert dev.regs.read("RCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE", "NBIF") == 256
    assert dev.regs.read("GRBM_STATUS", "GC") >> 31 == 0  # GUI_ACTIVE clear: nothing runs


def test_small_bar_mm_index_path(gpu):
    card, open_ = gpu(vram_size=1024 * MB)  # BAR0 defaults to 256 MiB
    dev = open_(resize_bar=False)
    assert dev.discovery_via == "MM_INDEX/MM_DATA" and dev.target == "gfx1100"
    assert dev.bar_resize["result"] == "not attempted" and card.function.bar_size(0) == 256 * MB


def test_vram_through_the_index_pair_is_the_cards_vram(gpu):
    card, open_ = gpu(vram_size=1024 * MB)
    dev = open_(resize_bar=False)
    far = 1024 * MB - 8 * MB  # beyond the 256 MiB BAR0
    dev.regs.vram_write(far, b"baregpu!" * 4)
    assert card.vram_read(far, 32) == b"baregpu!" * 4 and dev.regs.vram_read(far + 8, 8) == b"baregpu!"


def test_small_bar_resized(gpu):
    card, open_ = gpu(vram_size=1024 * MB)
    dev = open_()
    assert dev.bar_resize["result"] == "resized" and card.function.bar_size(0) == 1024 * MB
    assert dev.discovery_via == "BAR0" and dev.target == "gfx1100"
    # The VRAM window is the card's VRAM: the table read through BAR0 is the one the card wrote.
    assert dev.vram.read(card.discovery_offset, 16) == card.vram_read(card.discovery_offset, 16)


def test_small_bar_vfio_cannot_resize(gpu):
    card, open_ = gpu("gfx1201", vfio=True, vram_size=1024 * MB)
    dev = open_()
    assert dev.bar_resize["result"] == "refused" and "resource0_resize" in dev.bar_resize["detail"]
    assert dev.discovery_via == "MM_INDEX/MM_DATA" and dev.target == "gfx1201"


def test_ifwi_still_booting_is_waited_for(gpu):
    _, open_ = gpu(vram_size=256 * MB, boot_delay_s=0.05)
    dev = open_()
    assert dev.target == "gfx1100" and dev.timings["ifwi"] > 0.0


def test_ifwi_never_finishes(gpu):
    _, open_ = gpu(vram_size=256 * MB, boot_delay_s=math.inf)
    with pytest.raises(AMError) as e:
        open_(ifwi_timeout=0.05)
    assert "MP0_SMN_C2PMSG_33" in str(e.value) and "bit 31" in str(e.value)


def test_corrupted_table(gpu):
    card, open_ = gpu(vram_size=256 * MB)
    card.vram_write(card.discovery_offset + 0x30, b"\xde\xad")
    with pytest.raises(DiscoveryError, match="checksum"):
        open_()


def test_surprise_removal(gpu):
    card, open_ = gpu(vram_size=1024 * MB)
    dev = open_(resize_bar=False)
    card.surprise_remove()
    with pytest.raises(DeviceGoneError, match="is gone"):
        dev.regs.read("RCC_CONFIG_MEMSIZE")
    with pytest.raises(DeviceGoneError):
        dev.regs.vram_read(card.discovery_offset, 64)


def test_unmodelled_register_is_named(gpu):
    _, open_ = gpu(vram_size=256 * MB)
    dev = open_()
    with pytest.raises(RegisterError) as e:
        dev.regs.read("CP_HQD_ACTIVE", "GC")
    assert "CP_HQD_ACTIVE" in str(e.value)
