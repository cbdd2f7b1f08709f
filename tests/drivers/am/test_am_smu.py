"""The AM driver's SMU block (drivers/am/smu.py) against a fake register BAR with a scripted SMU behind it.

The fake SMU here is the test's own model of smu_cmn.c's mailbox (C2PMSG_66 message, C2PMSG_82 argument/result,
C2PMSG_90 response; MP1 14.x's mailbox past the BAR reached through RSMU_INDEX/RSMU_DATA, as amdgpu_device_rreg does),
so these tests pin the driver's side: message order, the protocol steps, response decoding into errors, timeouts,
the hung state, version checks against the smc image, features, power limit, clocks, idle power and unload.
End-to-end tests against emu/am/smu.py are in test_am_smu_emu.py.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Optional

import pytest

from drivers.am.discovery import parse_discovery
from drivers.am.regs import RegisterFile
from drivers.am.smu import (ALL_FEATURES, MP1_PUBLIC, PPSMC_MSG, SMN_MP1_FIRMWARE_FLAGS, SMU, SMUError, SMUHungError,
                            SMUResponseError, SMUTimeoutError, VARIANTS, decode_version)
from drivers.pci.interface import BarMapping
from emu.am.discovery import build_discovery_table
from firmware.select import FirmwareSet
from firmware.ucode import parse
from tests.firmware import fwgen

M = PPSMC_MSG
SMU_VERSION = 0x004E4F00  # 78.79.0
FW_FLAGS_ADDR = MP1_PUBLIC | SMN_MP1_FIRMWARE_FLAGS
IF_VERSIONS = {"gfx1100": 0x3D, "gfx1102": 0x35, "gfx1201": 0x2E}
LEVELS = {0: [500, 1200, 2500], 1: [800, 1200], 2: [96, 456, 772, 1249], 3: [700, 1900]}  # PPCLK -> MHz


class FakeSMU:
    """A scripted SMU: answers each message when the message register is written (or after `delay_reads` reads of
    the response register), with state for features, the PPT limit and DPM tables. `responses` forces an answer per
    message id (0: never answers); `log` records (message id, argument); `trace` every register access by name."""

    def __init__(self, if_version: int, smu_version: int = SMU_VERSION, ppt_bit: int = 24):
        self.if_version, self.smu_version, self.ppt_bit = if_version, smu_version, ppt_bit
        self.fw_flags = 1
        self.msg = self.arg = 0
        self.resp = 1  # left by an earlier driver, or 0 at cold boot; the first message must not care
        self.pending: Optional[int] = None
        self.delay_reads = 0
        self.responses: dict[int, int] = {}
        self.supported = ALL_FEATURES & ~(1 << 20)  # BACO not supported, say
        self.allowed = 0
        self.enabled = 0
        self.ppt = 300
        self.ppt_max = 355
        self.soft: dict[int, tuple[int, int]] = {}
        self.unloaded = False
        self.log: list[tuple[int, int]] = []
        self.trace: list[tuple[str, str, int]] = []
        self.fine_grained = {0: True}

    def wrote_msg(self, msg: int) -> None:
        self.log.append((msg, self.arg))
        self.pending = self.delay_reads
        self.msg = msg

    def answer(self) -> None:
        msg, arg = self.msg, self.arg
        if msg in self.responses:
            self.resp = self.responses[msg]
            return
        if self.unloaded:
            self.resp = 0
            return
        result, resp = arg, 1
        if msg == M["GetSmuVersion"]:
            result = self.smu_version
        elif msg == M["GetDriverIfVersion"]:
            result = self.if_version
        elif msg == M["SetAllowedFeaturesMaskHigh"]:
            self.allowed = (self.allowed & 0xFFFFFFFF) | arg << 32
        elif msg == M["SetAllowedFeaturesMaskLow"]:
            self.allowed = (self.allowed & ~0xFFFFFFFF) | arg
        elif msg == M["EnableAllSmuFeatures"]:
            self.enabled = self.allowed & self.supported
        elif msg == M["GetRunningSmuFeaturesLow"]:
            result = self.enabled & 0xFFFFFFFF
        elif msg == M["GetRunningSmuFeaturesHigh"]:
            result = self.enabled >> 32
        elif msg == M["SetPptLimit"]:
            if not self.enabled >> self.ppt_bit & 1:
                resp = 0xFD
            else:
                self.ppt = min(arg, self.ppt_max)
        elif msg == M["GetPptLimit"]:
            resp, result = (1, self.ppt) if arg == 0 else (0xFD, arg)
        elif msg == M["GetDpmFreqByIndex"]:
            clk, level = arg >> 16, arg & 0xFFFF
            levels = LEVELS.get(clk)
            if levels is None:
                resp = 0xFD
            elif level == 0xFF:
                result = len(levels) | (1 << 31 if self.fine_grained.get(clk) else 0)
            elif level < len(levels):
                result = levels[level]
            else:
                resp = 0xFD
        elif msg in (M["SetSoftMinByFreq"], M["SetSoftMaxByFreq"]):
            clk, mhz = arg >> 16, arg & 0xFFFF
            lo, hi = self.soft.get(clk, (0, 0xFFFF))
            self.soft[clk] = (mhz, hi) if msg == M["SetSoftMinByFreq"] else (lo, mhz)
        elif msg == M["PrepareMp1ForUnload"]:
            self.unloaded = True
        else:
            resp = 0xFE
        self.resp, self.arg = resp, result & 0xFFFFFFFF

    def read_resp(self) -> int:
        if self.pending is not None:
            if self.pending <= 0:
                self.pending = None
                self.answer()
            else:
                self.pending -= 1
        return self.resp


class FakeBar(BarMapping):
    """BAR5 with the three mailbox registers at their discovered addresses (directly when inside the BAR, else only
    through the RSMU index/data pair), RSMU_INDEX/DATA, and MP1_FIRMWARE_FLAGS in SMN space. Anything else raises."""

    def __init__(self, smu: FakeSMU, size: int = 1 << 20):
        self.index, self.size, self.smu = 5, size, smu
        self.addrs: dict[int, str] = {}
        self.rsmu_index = 0

    def place(self, name: str, address: int) -> None:
        self.addrs[address] = name

    def _get(self, name: str) -> int:
        s = self.smu
        if name == "msg":
            return s.msg
        if name == "arg":
            return s.arg
        if name == "resp":
            return s.read_resp()
        if name == "fw_flags":
            return s.fw_flags
        if name == "rsmu_index":
            return self.rsmu_index
        if name == "rsmu_data":
            return self._get(self._smn_name())
        raise AssertionError(name)

    def _set(self, name: str, value: int) -> None:
        s = self.smu
        if name == "msg":
            s.wrote_msg(value)
        elif name == "arg":
            s.arg = value
        elif name == "resp":
            s.resp = value
        elif name == "rsmu_index":
            self.rsmu_index = value
        elif name == "rsmu_data":
            self._set(self._smn_name(), value)
        else:
            raise AssertionError(f"write to read-only {name}")

    def _smn_name(self) -> str:
        if self.rsmu_index == FW_FLAGS_ADDR:
            return "fw_flags"
        name = self.addrs.get(self.rsmu_index)
        if name is None or name.startswith("rsmu"):
            raise AssertionError(f"SMN access at {self.rsmu_index:#x}: nothing modelled there")
        return name

    def _name(self, offset: int) -> str:
        name = self.addrs.get(offset)
        if name is None:
            raise AssertionError(f"access at BAR5 + {offset:#x}: nothing modelled there")
        return name

    def read32(self, offset: int) -> int:
        assert offset < self.size, f"read at {offset:#x} is past the {self.size:#x}-byte BAR"
        name = self._name(offset)
        value = self._get(name)
        self.smu.trace.append(("read", name, value))
        return value

    def write32(self, offset: int, value: int) -> None:
        assert offset < self.size, f"write at {offset:#x} is past the {self.size:#x}-byte BAR"
        name = self._name(offset)
        self.smu.trace.append(("write", name, value))
        self._set(name, value)

    def read(self, offset: int, size: int) -> bytes:
        raise AssertionError("no VRAM here")

    def write(self, offset: int, data: bytes) -> None:
        raise AssertionError("no VRAM here")


def make_dev(target: str = "gfx1100", *, smc_version: Optional[int] = SMU_VERSION, **smu_kw):
    """(dev stand-in, FakeSMU, FakeBar): an AMDevice's regs/discovery/firmware/bdf over the fake BAR."""
    disc = parse_discovery(build_discovery_table(target))
    ppt_bit = VARIANTS[tuple(disc.version("MP1"))[:3]].ppt_feature_bit
    smu = FakeSMU(IF_VERSIONS[target], ppt_bit=ppt_bit, **smu_kw)
    bar = FakeBar(smu)
    regs = RegisterFile(bar, discovery=disc, bdf="0000:03:00.0")
    for name, reg in (("msg", "MP1_SMN_C2PMSG_66"), ("arg", "MP1_SMN_C2PMSG_82"), ("resp", "MP1_SMN_C2PMSG_90")):
        bar.place(name, regs.reg("MP1", reg).address)
    bar.place("rsmu_index", regs.reg("NBIF", "BIF_BX_PF0_RSMU_INDEX").address)
    bar.place("rsmu_data", regs.reg("NBIF", "BIF_BX_PF0_RSMU_DATA").address)
    images = {}
    if smc_version is not None:
        images["smc"] = parse(fwgen.image("smc", ucode_version=smc_version), name="smu_13_0_0.bin")
    dev = SimpleNamespace(bdf="0000:03:00.0", regs=regs, discovery=disc, firmware=FirmwareSet(images), target=target)
    return dev, smu, bar


def names(smu: FakeSMU) -> list[str]:
    inv = {v: k for k, v in PPSMC_MSG.items()}
    return [inv.get(m, hex(m)) for m, _ in smu.log]


@pytest.mark.parametrize("target", ["gfx1100", "gfx1102", "gfx1201"])
def test_bring_up_sends_the_kernels_sequence(target):
    dev, fake, bar = make_dev(target)
    smu = SMU().init(dev)
    assert names(fake)[:7] == ["GetDriverIfVersion", "GetSmuVersion", "SetAllowedFeaturesMaskHigh",
                               "SetAllowedFeaturesMaskLow", "EnableAllSmuFeatures", "GetRunningSmuFeaturesHigh",
                               "GetRunningSmuFeaturesLow"]
    assert names(fake)[7] == "GetPptLimit" and fake.log[7][1] == 0  # POWER_SOURCE_AC << 16
    assert fake.allowed == ALL_FEATURES and smu.enabled_features == ALL_FEATURES & ~(1 << 20)
    assert smu.versions["smu_version"] == SMU_VERSION and smu.versions["if_version"] == IF_VERSIONS[target]
    assert smu.warnings == [] and smu.power_limit == 300 and smu.state == "running"
    assert smu.clocks["GFXCLK"].levels == LEVELS[0] and smu.clocks["GFXCLK"].fine_grained
    assert smu.clocks["UCLK"].levels == LEVELS[2] and not smu.clocks["UCLK"].fine_grained
    assert (smu.clocks["SOCCLK"].min, smu.clocks["FCLK"].max) == (800, 1900)
    assert set(smu.timings) >= {"fw_status", "versions", "allowed_features", "enable_features", "enabled_features",
                                "power_limit", "clocks", "total"}
    info = smu.describe()
    assert info["variant"] == VARIANTS[tuple(dev.discovery.version("MP1"))[:3]].name
    assert info["clocks"]["GFXCLK"]["levels_mhz"] == LEVELS[0]


def test_one_message_follows_smu_cmn_order():
    dev, fake, bar = make_dev()
    smu = SMU(check_fw_status=False).init(dev)
    fake.trace.clear()
    assert smu.send("GetSmuVersion") == SMU_VERSION
    t = [(k, n) for k, n, _ in fake.trace]
    # wait for the previous response, then clear it, argument, message, poll, read the result
    assert t[0] == ("read", "resp")
    assert t[1:4] == [("write", "resp"), ("write", "arg"), ("write", "msg")]
    assert t[4] == ("read", "resp") and t[-1] == ("read", "arg")
    assert fake.trace[1][2] == 0


def test_first_message_ignores_the_initial_response_value():
    """SMU_FW_INIT: at cold boot the response register reads 0; the first message must not wait on it."""
    dev, fake, bar = make_dev()
    fake.resp = 0
    smu = SMU(timeout=0.05).init(dev)
    assert smu.state == "running"


def test_gfx12_mailbox_goes_through_rsmu():
    """MP1 14.x's C2PMSG registers sit in segment 1, past the 1 MiB BAR: amdgpu_device_rreg sends them to pcie_rreg."""
    dev, fake, bar = make_dev("gfx1201")
    assert dev.regs.reg("MP1", "MP1_SMN_C2PMSG_66").address >= bar.size
    SMU().init(dev)
    assert ("write", "rsmu_index", dev.regs.reg("MP1", "MP1_SMN_C2PMSG_66").address) in fake.trace
    assert not any(n in ("msg", "arg", "resp") for _, n, _ in fake.trace)  # never directly
    i = fake.trace.index(("write", "rsmu_index", dev.regs.reg("MP1", "MP1_SMN_C2PMSG_66").address))
    assert [(k, n) for k, n, _ in fake.trace[i:i + 3]] == [("write", "rsmu_index"), ("read", "rsmu_index"),
                                                           ("write", "rsmu_data")]


def test_gfx11_mailbox_is_direct():
    dev, fake, bar = make_dev("gfx1100")
    SMU().init(dev)
    assert ("write", "msg", M["EnableAllSmuFeatures"]) in fake.trace


def test_fw_status_read_through_smn_and_refused_when_clear():
    dev, fake, bar = make_dev()
    fake.fw_flags = 0
    with pytest.raises(SMUError, match=r"INTERRUPTS_ENABLED.*PSP") as e:
        SMU().init(dev)
    assert f"{FW_FLAGS_ADDR:#x}" in str(e.value)
    assert fake.log == []  # nothing sent to an SMU that is not running
    assert ("write", "rsmu_index", FW_FLAGS_ADDR) in fake.trace


@pytest.mark.parametrize("code,errno,words", [(0xFF, "EIO", "CMD_FAIL"), (0xFE, "EOPNOTSUPP", "does not implement"),
                                              (0xFD, "EINVAL", "bad prerequisites"), (0xFC, "EBUSY", "BUSY_OTHER")])
def test_responses_decode_into_errors_naming_message_argument_and_answer(code, errno, words):
    dev, fake, bar = make_dev()
    smu = SMU().init(dev)
    fake.responses[M["SetSoftMinByFreq"]] = code
    with pytest.raises(SMUResponseError, match=words) as e:
        smu.send("SetSoftMinByFreq", 0x0001_0123)
    err = e.value
    assert (err.message, err.msg_id, err.arg, err.response, err.errno) == ("SetSoftMinByFreq", 0x19, 0x10123, code,
                                                                           errno)
    assert "SetSoftMinByFreq (0x19)" in str(err) and "0x00010123" in str(err) and f"{code:#x}" in str(err)
    assert smu.hung is None
    del fake.responses[M["SetSoftMinByFreq"]]
    assert smu.send("GetSmuVersion") == SMU_VERSION  # a defined failure does not stop the mailbox


def test_no_answer_is_a_bounded_timeout_and_the_next_message_waits_for_it():
    dev, fake, bar = make_dev()
    smu = SMU().init(dev)
    fake.responses[M["GetPptLimit"]] = 0
    with pytest.raises(SMUTimeoutError, match=r"did not answer GetPptLimit \(0x33\).*0\.05 s"):
        smu.send("GetPptLimit", 0, timeout=0.05)
    # smu_cmn_send_smc_msg_with_param: the next message polls the previous response first, and is not sent
    sent = len(fake.log)
    with pytest.raises(SMUTimeoutError, match=r"previous message \(GetPptLimit.*GetSmuVersion \(0x2\).*not sent"):
        smu.send("GetSmuVersion", timeout=0.05)
    assert len(fake.log) == sent
    del fake.responses[M["GetPptLimit"]]
    fake.answer()  # the SMU finally finishes
    assert smu.send("GetSmuVersion") == SMU_VERSION


def test_slow_answers_are_waited_for():
    dev, fake, bar = make_dev()
    smu = SMU(timeout=2.0).init(dev)
    fake.delay_reads = 60  # past the quick reads, into the backoff
    assert smu.send("GetSmuVersion") == SMU_VERSION


def test_an_unknown_answer_hangs_the_smu():
    dev, fake, bar = make_dev()
    smu = SMU().init(dev)
    fake.responses[M["GetSmuVersion"]] = 0x42
    with pytest.raises(SMUResponseError, match="0x42.*EREMOTEIO") as e:
        smu.send("GetSmuVersion")
    assert e.value.errno == "EREMOTEIO" and smu.hung
    sent = len(fake.log)
    with pytest.raises(SMUHungError, match=r"hung .*reset"):
        smu.send("GetDriverIfVersion")
    assert len(fake.log) == sent
    assert not smu.alive()
    smu.fini()  # leaves a hung SMU alone, without raising


def test_version_mismatches_warn_like_the_kernel(caplog):
    dev, fake, bar = make_dev(smc_version=0x004E4000)
    fake.if_version = 0x3C
    with caplog.at_level(logging.WARNING, logger="drivers.am.smu"):
        smu = SMU().init(dev)
    assert len(smu.warnings) == 2
    assert "driver interface 0x3c" in smu.warnings[0] and "0x3d" in smu.warnings[0]
    assert "smu_13_0_0.bin" in smu.warnings[1] and decode_version(SMU_VERSION) in smu.warnings[1]
    assert "not the one in this firmware set" in caplog.text


def test_strict_versions_refuse():
    dev, fake, bar = make_dev(smc_version=0x004E4000)
    with pytest.raises(SMUError, match="strict_versions.*smu_13_0_0.bin"):
        SMU(strict_versions=True).init(dev)
    assert names(fake) == ["GetDriverIfVersion", "GetSmuVersion"]


def test_no_smc_image_skips_the_firmware_comparison():
    dev, fake, bar = make_dev(smc_version=None)
    smu = SMU(strict_versions=True).init(dev)
    assert smu.versions["firmware"] is None and smu.warnings == []


def test_scpm_leaves_the_allowed_mask_to_the_psp():
    dev, fake, bar = make_dev()
    fake.allowed = ALL_FEATURES  # what the PSP set
    dev.scpm_enabled = True
    smu = SMU().init(dev)
    assert smu.scpm and "SetAllowedFeaturesMaskHigh" not in names(fake)
    dev2, fake2, _ = make_dev()
    fake2.allowed = ALL_FEATURES
    SMU(scpm=True).init(dev2)
    assert "SetAllowedFeaturesMaskLow" not in names(fake2)


def test_allowed_mask_is_sent_high_then_low():
    dev, fake, bar = make_dev()
    mask = 0x1234_5678_9ABC_DEF0
    SMU(allowed_features=mask).init(dev)
    assert fake.log[2] == (M["SetAllowedFeaturesMaskHigh"], 0x12345678)
    assert fake.log[3] == (M["SetAllowedFeaturesMaskLow"], 0x9ABCDEF0)


def test_power_limit_set_and_read_back():
    dev, fake, bar = make_dev()
    smu = SMU(power_limit_w=250).init(dev)
    assert smu.power_limit == 250 and fake.ppt == 250
    i = names(fake).index("SetPptLimit")
    assert fake.log[i] == (M["SetPptLimit"], 250) and names(fake)[i + 1] == "GetPptLimit"
    assert smu.set_power_limit(400) == 355  # clamped by the firmware: reported, with a warning
    assert "400 W" in smu.warnings[-1] and "355 W" in smu.warnings[-1]
    with pytest.raises(ValueError):
        smu.set_power_limit(0)


def test_power_limit_needs_the_ppt_feature():
    dev, fake, bar = make_dev()
    fake.supported &= ~(1 << 24)  # FEATURE_THROTTLERS_BIT on 13.0.0
    smu = SMU().init(dev)
    assert smu.power_limit is None and "GetPptLimit" not in names(fake)
    with pytest.raises(SMUError, match=r"PPT feature \(FEATURE_THROTTLERS_BIT, bit 24\) is not running"):
        smu.set_power_limit(200)
    dev2, fake2, _ = make_dev()
    fake2.supported &= ~(1 << 24)
    with pytest.raises(SMUError, match="PPT feature"):
        SMU(power_limit_w=200).init(dev2)


def test_gfx12_ppt_feature_bit_is_23():
    dev, fake, bar = make_dev("gfx1201")
    fake.supported &= ~(1 << 23)
    assert SMU().init(dev).power_limit is None


def test_clocks_without_dpm_are_not_queried():
    dev, fake, bar = make_dev()
    fake.supported &= ~(1 << 3)  # FEATURE_DPM_UCLK_BIT
    smu = SMU().init(dev)
    assert not smu.clocks["UCLK"].dpm_enabled and smu.clocks["UCLK"].levels == []
    assert not any(m == M["GetDpmFreqByIndex"] and a >> 16 == 2 for m, a in fake.log)
    smu.idle_power()
    assert 2 not in fake.soft


def test_bad_level_count_is_an_error(monkeypatch):
    dev, fake, bar = make_dev()
    smu = SMU().init(dev)
    monkeypatch.setitem(LEVELS, 0, list(range(100, 1800, 100)))  # 17 levels: more than MAX_DPM_LEVELS
    with pytest.raises(SMUError, match="17 DPM levels for GFXCLK"):
        smu.read_clocks(["GFXCLK"])


def test_idle_power_and_restore():
    dev, fake, bar = make_dev()
    smu = SMU().init(dev)
    fake.log.clear()
    smu.idle_power()
    # smu_v13_0_set_soft_freq_limited_range: max first, then min, (clock << 16) | MHz
    assert fake.log[:2] == [(M["SetSoftMaxByFreq"], 0 << 16 | 500), (M["SetSoftMinByFreq"], 0 << 16 | 500)]
    assert fake.soft == {0: (500, 500), 1: (800, 800), 2: (96, 96), 3: (700, 700)}
    assert smu.state == "idle" and smu.clocks["UCLK"].soft_range == (96, 96) and "idle_power" in smu.timings
    smu.restore_clocks()
    assert fake.soft == {0: (500, 2500), 1: (800, 1200), 2: (96, 1249), 3: (700, 1900)}


@pytest.mark.parametrize("target,arg", [("gfx1100", 0x55), ("gfx1102", 0), ("gfx1201", 0)])
def test_fini_prepares_for_unload(target, arg):
    dev, fake, bar = make_dev(target)
    smu = SMU().init(dev)
    smu.fini()
    assert fake.log[-1] == (M["PrepareMp1ForUnload"], arg) and smu.state == "unloaded"
    with pytest.raises(SMUError, match="prepared for unload"):
        smu.send("GetSmuVersion")
    n = len(fake.log)
    smu.fini()  # twice is harmless
    assert len(fake.log) == n


def test_fini_without_unload_leaves_it_running_low():
    dev, fake, bar = make_dev()
    smu = SMU().init(dev)
    smu.fini(unload=False)
    assert "PrepareMp1ForUnload" not in names(fake) and smu.state == "idle"
    assert smu.send("GetSmuVersion") == SMU_VERSION


def test_suspend_resume():
    dev, fake, bar = make_dev()
    smu = SMU().init(dev)
    smu.suspend()
    assert smu.state == "suspended" and fake.soft[0] == (500, 500)
    fake.log.clear()
    smu.resume()
    assert names(fake)[:3] == ["SetAllowedFeaturesMaskHigh", "SetAllowedFeaturesMaskLow", "EnableAllSmuFeatures"]
    assert smu.state == "running"


def test_warm_reinit_on_a_running_smu():
    """A second driver instance (warm boot) finds the response register at 1 and brings it up again."""
    dev, fake, bar = make_dev()
    SMU().init(dev)
    smu2 = SMU().init(dev)
    assert smu2.state == "running" and smu2.versions["smu_version"] == SMU_VERSION


def test_alive():
    dev, fake, bar = make_dev()
    smu = SMU().init(dev)
    assert smu.alive()
    fake.responses[M["GetSmuVersion"]] = 0
    assert not smu.alive(timeout=0.02)


def test_unsupported_mp1_version_and_bad_arguments():
    dev, fake, bar = make_dev()
    dev.discovery = SimpleNamespace(version=lambda b, i=0: (13, 0, 6))
    with pytest.raises(SMUError, match=r"MP1 \(SMU\) 13\.0\.6 is not supported.*VARIANTS"):
        SMU().init(dev)
    with pytest.raises(ValueError, match="unknown clock"):
        SMU(clocks=["DCLK"])
    with pytest.raises(SMUError, match="init"):
        SMU().send("GetSmuVersion")
    dev, fake, bar = make_dev()
    smu = SMU().init(dev)
    with pytest.raises(ValueError, match="unknown SMU message"):
        smu.send("NoSuchMessage")
    with pytest.raises(ValueError, match="32 bits"):
        smu.send("TestMessage", 1 << 32)
    with pytest.raises(SMUError, match="not read"):
        SMU().set_soft_range("GFXCLK", 1, 2)


def test_unopened_device_is_refused():
    dev = SimpleNamespace(bdf="0000:03:00.0", regs=None, discovery=None)
    with pytest.raises(SMUError, match="open the AMDevice first"):
        SMU().init(dev)


def test_variants_match_the_kernel_facts():
    assert VARIANTS[(13, 0, 0)].driver_if_version == 0x3D and VARIANTS[(13, 0, 7)].driver_if_version == 0x35
    assert VARIANTS[(14, 0, 2)].driver_if_version == VARIANTS[(14, 0, 3)].driver_if_version == 0x2E
    assert VARIANTS[(13, 0, 10)] == VARIANTS[(13, 0, 0)]
    assert decode_version(0x004E4F00) == "0x004e4f00 (program 0, 78.79.0)"


def test_init_again_after_unload():
    """After PrepareMp1ForUnload the same SMU object refuses messages until init runs again (after a card reset)."""
    dev, fake, bar = make_dev()
    smu = SMU().init(dev)
    smu.fini()
    fake.unloaded = False  # the card was reset and the PSP loaded the SMU again
    assert smu.init(dev).state == "running" and smu.send("GetSmuVersion") == SMU_VERSION
