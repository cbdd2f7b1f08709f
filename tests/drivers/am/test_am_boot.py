"""The AM bring-up so far, end to end on an emulated card with every modelled block attached (install_am_gpu with
blocks=True): open and identify, the GMC's hubs and page tables, the PSP's bootloader, ring and IP firmware, and the
SMU, which answers only because the PSP loaded its firmware. The blocks are taken in amdgpu's order (gmc before psp:
the TMR's addresses come from the FB location; smu after psp on these parts)."""
from __future__ import annotations

import pytest

from drivers.am.device import AMDevice
from drivers.am.gmc import GMC
from drivers.am.psp import PSP
from drivers.am.smu import SMU
from drivers.lock import ProcessLocks
from emu.am.gpu import install_am_gpu
from emu.system import EmulatedSystem
from tests.firmware import fwgen

BDF = "0000:03:00.0"
GFX_FW_TYPE_SMU = 18  # psp_gfx_if.h enum psp_gfx_fw_type
MB = 1 << 20


@pytest.mark.parametrize("target", ["gfx1100", "gfx1201"])
def test_a_cold_boot_reaches_a_running_smu(tmp_path, target):
    fw = tmp_path / "fw"
    fw.mkdir()
    fwgen.write_set(fw, target)
    system = EmulatedSystem(lock_dir=ProcessLocks(f"test_am_boot {target}"))
    card = install_am_gpu(system, target, BDF, boot_delay_s=0, vram_size=1024 * MB, bar0_size=1024 * MB,
                          firmware=fw, blocks=True)
    dev = AMDevice(BDF, system, firmware_dirs=[fw], firmware_system_dirs=False)
    try:
        assert dev.target == target
        dev.gmc = GMC().init(dev)
        psp = PSP(handshake_delay_s=0).init(dev)
        assert GFX_FW_TYPE_SMU in card.psp.loaded, "the PSP did not load the SMU's firmware"
        smu = SMU().init(dev)  # answers only because the PSP loaded its firmware (emu/am/smu.py reads its record)
        assert smu.alive() and smu.describe()
        assert psp.describe()
        smu.fini()
        psp.fini()
        dev.gmc.fini()
    finally:
        dev.close()
        card.close()


def test_without_the_psp_the_smu_does_not_answer(tmp_path):
    """The SMU's firmware comes from the PSP on these parts: a driver that skips the PSP gets a clear SMU error."""
    from drivers.am.smu import SMUError
    fw = tmp_path / "fw"
    fw.mkdir()
    fwgen.write_set(fw, "gfx1100")
    system = EmulatedSystem(lock_dir=ProcessLocks("test_am_boot no psp"))
    card = install_am_gpu(system, "gfx1100", BDF, boot_delay_s=0, vram_size=1024 * MB, bar0_size=1024 * MB,
                          firmware=fw, blocks=True)
    dev = AMDevice(BDF, system, firmware_dirs=[fw], firmware_system_dirs=False)
    try:
        with pytest.raises(SMUError):
            SMU(timeout=0.2).init(dev)
    finally:
        dev.close()
        card.close()
