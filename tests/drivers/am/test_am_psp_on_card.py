"""The AM PSP driver end to end on the emulated card: emu/am/psp.py (attach_psp) validates what drivers/am/psp.py
stages and sends with its own reading of the headers. The unit tests with a fake
register file are tests/drivers/am/test_am_psp.py."""
from __future__ import annotations

import pytest

from drivers.am.device import AMDevice
from drivers.am.psp import PSP, PSPError
from drivers.lock import ProcessLocks
from emu.am.gpu import install_am_gpu
from emu.pci import install_vfio
from emu.system import EmulatedSystem
from tests.firmware import fwgen

import emu.am.psp as emu_psp  # noqa: E402

BDF = "0000:03:00.0"
MB = 1 << 20
FAST = dict(handshake_delay_s=0, bootloader_timeout=2.0, sos_timeout=2.0, ring_timeout=1.0, cmd_timeout=2.0)


@pytest.fixture(scope="module")
def fwdirs(tmp_path_factory):
    out = {}
    for target in ("gfx1100", "gfx1201"):
        d = tmp_path_factory.mktemp(f"psp-emu-fw-{target}")
        fwgen.write_set(d, target)
        out[target] = d
    return out


@pytest.fixture
def card_dev(fwdirs):
    """card_dev(target, vfio) -> (card, open()): an emulated card (sysfs, or behind VFIO) with the GMC and PSP models
    attached; the PSP trusts the generated firmware set."""
    made: list = []

    def make(target: str = "gfx1100", vfio: bool = False):
        system = EmulatedSystem(lock_dir=ProcessLocks("test_am_psp_emu"))
        if vfio:
            install_vfio(system)
        card = install_am_gpu(system, target, BDF, driver="vfio-pci" if vfio else None,
                              iommu_group=7 if vfio else None, boot_delay_s=0, vram_size=1024 * MB,
                              bar0_size=1024 * MB)
        made.append(card)
        try:
            from emu.am.gmc import attach_gmc
            attach_gmc(card)  # MMMC_VM_FB_LOCATION_BASE / FB_OFFSET, which the TMR's addresses are made from
        except ImportError:
            pass
        emu_psp.attach_psp(card, firmware=fwdirs[target])  # the images the emulated PSP trusts

        def open_() -> AMDevice:
            dev = AMDevice(BDF, system, firmware_dirs=[fwdirs[target]], firmware_system_dirs=False)
            made.append(dev)
            return dev
        return card, open_

    yield make
    for obj in reversed(made):
        obj.close()


@pytest.mark.parametrize("target", ["gfx1100", "gfx1201"])
@pytest.mark.parametrize("vfio", [False, True], ids=["sysfs", "vfio"])
def test_psp_cold_boot(card_dev, target, vfio):
    card, open_ = card_dev(target, vfio)
    dev = open_()
    psp = PSP(**FAST).init(dev)
    assert not psp.sos_was_alive and psp.stages[0] == "KDB" and psp.stages[-1] == "SOS"
    assert psp.loaded[-1].command == "AUTOLOAD_RLC" and card.psp.sos_alive
    assert any(r.name.startswith("RLC_G") for r in psp.loaded)
    names = [r.command for r in psp.loaded]
    assert ("SETUP_TMR" in names) == (target == "gfx1100")  # psp_v14_0 parts keep a boot-time TMR
    assert psp.timings["bootloader"] > 0 and psp.timings["ip_firmware"] > 0
    psp.fini()


@pytest.mark.parametrize("target", ["gfx1100", "gfx1201"])
def test_psp_warm_boot_skips_the_bootloader(card_dev, target):
    """sysfs: nothing resets the function between processes, so the second open finds the sOS alive. (vfio-pci
    resets the function when the device is opened and released, so over VFIO every open is a cold boot.)"""
    card, open_ = card_dev(target)
    dev = open_()
    psp = PSP(**FAST).init(dev)
    psp.fini()
    dev.close()
    dev2 = open_()
    psp2 = PSP(**FAST).init(dev2)
    assert psp2.sos_was_alive and psp2.stages == []
    assert psp2.loaded[-1].command == "AUTOLOAD_RLC"
    psp2.fini()


QUICK = dict(FAST, bootloader_timeout=0.1, sos_timeout=0.1, ring_timeout=0.1, cmd_timeout=0.2)


@pytest.mark.parametrize("fault, expect", [
    (dict(never_ready=True), r"bootloader stage KDB.*C2PMSG_35.*never signalled ready"),
    (dict(fail_at="sys_drv"), r"bootloader stage SYS_DRV.*refused"),
    (dict(hang_at="spl"), r"bootloader stage SPL.*C2PMSG_35"),
    (dict(ring_hang=True), r"LOAD_TOC for the TOC timed out"),
])
def test_psp_faults_give_clear_errors(card_dev, fault, expect):
    card, open_ = card_dev("gfx1100")
    dev = open_()
    for k, v in fault.items():
        setattr(card.psp, k, v)
    with pytest.raises(PSPError, match=expect):
        PSP(**QUICK).init(dev)


def test_psp_load_ip_fw_failure_names_the_firmware(card_dev):
    from drivers.am.psp import GFX_FW_TYPE
    card, open_ = card_dev("gfx1100")
    dev = open_()
    card.psp.fail_fw_types = {GFX_FW_TYPE["RS64_MEC"]}
    with pytest.raises(PSPError, match=r"LOAD_IP_FW for CP_RS64_MEC \(gc_11_0_0_mec.bin ucode\) failed.*status"):
        PSP(**QUICK).init(dev)


def test_psp_refuses_a_corrupt_sos_component(fwdirs, tmp_path, card_dev):
    """A SOS image whose SYS_DRV bytes are not what the emulated bootloader expects: a clear failure naming the
    stage: the emulated bootloader compares the staged bytes with the images it trusts."""
    card, open_ = card_dev("gfx1100")
    dev = open_()
    sos = dev.firmware["sos"]
    s = sos.sections["sys_drv"]
    bad = bytearray(sos.data)
    bad[s.offset] ^= 0xFF
    object.__setattr__(sos, "data", bytes(bad))  # the set is ours: corrupt the bytes the driver stages
    with pytest.raises(PSPError, match="bootloader stage SYS_DRV.*refused"):
        PSP(**QUICK).init(dev)
