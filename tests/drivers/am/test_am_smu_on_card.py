"""The AM driver's SMU block (drivers/am/smu.py) end to end on the emulated card (emu/am/smu.py attach_smu): bring-up
on gfx11 and gfx12 (gfx12's mailbox through the RSMU window), version checks against the smc image the PSP would
have loaded, the power limit, clocks, idle power, unload, and the emulator's faults (firmware not loaded, a silent
SMU, a failing message, a slow SMU, a reset under the driver)."""
from __future__ import annotations

import pytest

from drivers.am.device import AMDevice
from drivers.am.smu import SMU, SMUError, SMUResponseError, SMUTimeoutError
from drivers.lock import ProcessLocks
from emu.am.gpu import install_am_gpu
from emu.am.smu import attach_smu
from emu.system import EmulatedSystem
from tests.firmware import fwgen

BDF = "0000:03:00.0"
MB = 1 << 20
TARGETS = ["gfx1100", "gfx1102", "gfx1201"]


@pytest.fixture(scope="module")
def fwdirs(tmp_path_factory):
    out = {}
    for target in TARGETS:
        d = tmp_path_factory.mktemp(f"fw-smu-{target}")
        fwgen.write_set(d, target)
        out[target] = d
    return out


@pytest.fixture
def gpu(fwdirs):
    """gpu(target, fw_loaded=True, version_from_image=True, latency_s=0) -> (card, AMDevice). The SMU firmware is
    marked loaded as the PSP model would (card.smu_fw_loaded, card.smu_fw_version = the smc image's version)."""
    made: list = []

    def make(target: str = "gfx1100", fw_loaded: bool = True, version_from_image: bool = True,
             latency_s: float = 0.0):
        system = EmulatedSystem(lock_dir=ProcessLocks("test_am_smu_emu"))
        card = install_am_gpu(system, target, BDF, boot_delay_s=0, vram_size=256 * MB)
        made.append(card)
        if getattr(card, "smu", None) is None:  # until install_am_gpu wires it
            attach_smu(card, latency_s=latency_s)
        else:
            card.smu.latency_s = latency_s
        dev = AMDevice(BDF, system, firmware_dirs=[fwdirs[target]], firmware_system_dirs=False)
        made.append(dev)
        if version_from_image:
            card.smu_fw_version = dev.firmware["smc"].ucode_version
        card.smu_fw_loaded = fw_loaded
        return card, dev

    yield make
    for obj in reversed(made):
        obj.close()


def _clean(card) -> None:
    assert card.smu.errors == [], card.smu.errors
    assert card.regs.errors == [], card.regs.errors


@pytest.mark.parametrize("target", TARGETS)
def test_bring_up_on_the_emulated_card(gpu, target):
    card, dev = gpu(target)
    smu = SMU().init(dev)
    emu = card.smu
    assert smu.warnings == []
    assert smu.versions["smu_version"] == dev.firmware["smc"].ucode_version
    assert smu.versions["if_version"] == emu.gen.driver_if_version
    assert smu.enabled_features == emu.enabled and emu.enabled
    assert smu.power_limit == emu.sku.power_default
    for name in ("GFXCLK", "SOCCLK", "UCLK", "FCLK"):
        table = emu.sku.clocks[name]
        assert smu.clocks[name].levels == list(table.levels), name
        assert smu.clocks[name].fine_grained == table.fine_grained
    assert [m.name for m in emu.messages[:5]] == ["GetDriverIfVersion", "GetSmuVersion", "SetAllowedFeaturesMaskHigh",
                                                  "SetAllowedFeaturesMaskLow", "EnableAllSmuFeatures"]
    assert all(m.response == 1 for m in emu.messages)
    assert smu.timings["total"] > 0 and smu.describe()["state"] == "running"
    _clean(card)


def test_gfx12_mailbox_is_reached_through_rsmu(gpu):
    card, dev = gpu("gfx1201")
    SMU().init(dev)
    assert card.regs.counts["BIF_BX_PF0_RSMU_DATA"] > 0 and card.regs.counts["MP1_SMN_C2PMSG_66"] > 0
    _clean(card)


def test_power_limit_set_read_back_and_refused(gpu):
    card, dev = gpu()
    smu = SMU(power_limit_w=320).init(dev)
    assert smu.power_limit == 320 == card.smu.power_limit
    with pytest.raises(SMUResponseError, match=r"SetPptLimit \(0x32\) with argument 0x000001f4 was answered 0xff") \
            as e:
        smu.set_power_limit(500)  # outside the emulated board's range: the PMFW fails it
    assert e.value.errno == "EIO" and card.smu.power_limit == 320
    assert smu.send("GetPptLimit") == 320  # the mailbox goes on


def test_idle_power_restore_and_unload(gpu):
    card, dev = gpu()
    smu = SMU().init(dev)
    smu.idle_power()
    for name in ("GFXCLK", "SOCCLK", "UCLK", "FCLK"):
        low = card.smu.sku.clocks[name].levels[0]
        assert card.smu.clock_range(name) == (low, low), name
    smu.restore_clocks()
    for name in ("GFXCLK", "UCLK"):
        levels = card.smu.sku.clocks[name].levels
        assert card.smu.clock_range(name) == (levels[0], levels[-1])
    smu.fini()
    last = card.smu.messages[-1]
    assert (last.name, last.arg, last.response) == ("PrepareMp1ForUnload", 0x55, 1)
    assert card.smu.unload_prepared and smu.state == "unloaded"
    _clean(card)


def test_firmware_not_loaded(gpu):
    card, dev = gpu(fw_loaded=False)
    with pytest.raises(SMUError, match="INTERRUPTS_ENABLED.*PSP"):
        SMU().init(dev)
    assert card.smu.messages == []


def test_firmware_not_loaded_without_the_status_check_times_out(gpu):
    card, dev = gpu(fw_loaded=False)
    with pytest.raises(SMUTimeoutError, match=r"did not answer GetDriverIfVersion.*0\.05 s"):
        SMU(check_fw_status=False, timeout=0.05).init(dev)


def test_a_silent_smu_is_a_bounded_timeout(gpu):
    card, dev = gpu()
    smu = SMU(timeout=0.05).init(dev)
    card.smu.never_respond()
    with pytest.raises(SMUTimeoutError, match="GetSmuVersion"):
        smu.send("GetSmuVersion")
    with pytest.raises(SMUTimeoutError, match="previous message"):
        smu.send("GetSmuVersion")
    assert not smu.alive(timeout=0.02)


def test_a_failing_message(gpu):
    card, dev = gpu()
    card.smu.fail("EnableAllSmuFeatures")
    with pytest.raises(SMUResponseError, match=r"EnableAllSmuFeatures \(0x6\).*0xff \(CMD_FAIL") as e:
        SMU().init(dev)
    assert e.value.message == "EnableAllSmuFeatures" and e.value.arg == 0


def test_version_mismatch_is_reported(gpu):
    card, dev = gpu(version_from_image=False)  # the board's own PMFW runs, not the image in the set
    smu = SMU().init(dev)
    assert len(smu.warnings) == 1 and "not the one in this firmware set" in smu.warnings[0]
    with pytest.raises(SMUError, match="strict_versions"):
        SMU(strict_versions=True).init(dev)


def test_a_slow_smu_is_waited_for(gpu):
    card, dev = gpu(latency_s=0.002)
    smu = SMU().init(dev)
    assert smu.state == "running"
    _clean(card)


def test_a_reset_under_the_driver(gpu):
    card, dev = gpu()
    smu = SMU().init(dev)
    card.power_on()  # a function reset: the SMU's firmware is gone until the PSP loads it again
    with pytest.raises(SMUTimeoutError):
        smu.send("GetSmuVersion", timeout=0.05)
    with pytest.raises(SMUError, match="not running"):
        SMU().init(dev)
    card.smu_fw_version = dev.firmware["smc"].ucode_version
    card.smu_fw_loaded = True
    assert SMU().init(dev).state == "running"


def test_warm_init_after_an_earlier_driver(gpu):
    card, dev = gpu()
    SMU().init(dev).fini(unload=False)
    smu = SMU().init(dev)
    assert smu.state == "running" and smu.warnings == []
    _clean(card)
