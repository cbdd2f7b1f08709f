"""The emulated SMU (emu/am/smu.py) driven through its registers as amdgpu's smu_cmn.c does: clear C2PMSG_90, write
C2PMSG_82 then C2PMSG_66, read the answer and the result. On gfx12 the mailbox sits past the register BAR and is
reached through the RSMU index/data pair (amdgpu_device_indirect_rreg). Expected facts are typed here from the
kernel headers, not taken from the module under test."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from emu.am.gpu import AMGPU
from emu.am.regs import RegisterError
from emu.am.smu import attach_smu

MiB = 1 << 20
TARGETS = ["gfx1100", "gfx1102", "gfx1201"]
OK, FAIL, UNKNOWN, PREREQ, BUSY = 0x1, 0xFF, 0xFE, 0xFD, 0xFC  # smu_cmn.c SMU_RESP_*

# PPSMC_MSG_* (smu_v13_0_0_ppsmc.h / smu_v14_0_2_ppsmc.h; these ids are the same in both)
TestMessage, GetSmuVersion, GetDriverIfVersion = 0x1, 0x2, 0x3
SetAllowedFeaturesMaskLow, SetAllowedFeaturesMaskHigh, EnableAllSmuFeatures, DisableAllSmuFeatures = 0x4, 0x5, 0x6, 0x7
EnableSmuFeaturesLow, DisableSmuFeaturesLow = 0x8, 0xA
GetRunningSmuFeaturesLow, GetRunningSmuFeaturesHigh = 0xC, 0xD
SetDriverDramAddrHigh, SetDriverDramAddrLow, SetToolsDramAddrHigh, SetToolsDramAddrLow = 0xE, 0xF, 0x10, 0x11
TransferTableSmu2Dram = 0x12
SetSoftMinByFreq, SetSoftMaxByFreq, SetHardMinByFreq, SetHardMaxByFreq = 0x19, 0x1A, 0x1B, 0x1C
GetMinDpmFreq, GetMaxDpmFreq, GetDpmFreqByIndex = 0x1D, 0x1E, 0x1F
AllowGfxOff, PowerUpVcn, PowerDownVcn, PowerUpJpeg = 0x28, 0x2A, 0x2B, 0x2C
PrepareMp1ForUnload, SetPptLimit, GetPptLimit = 0x2E, 0x32, 0x33
PPCLK_GFXCLK, PPCLK_UCLK = 0, 2  # smu13/smu14 driver_if PPCLK_e
DRIVER_IF = {"gfx1100": 0x3D, "gfx1102": 0x35, "gfx1201": 0x2E}  # SMU13_0_0_, SMU13_0_7_, SMU14 ..._V14_0_2
THROTTLERS_BIT = {"gfx1100": 24, "gfx1102": 24, "gfx1201": 23}  # FEATURE_THROTTLERS_BIT per driver_if header
VCN_INSTANCES = {"gfx1100": 2, "gfx1102": 1, "gfx1201": 1}


class Mailbox:
    """The host side of the mailbox, written here from smu_cmn.c (not from any driver of ours)."""

    def __init__(self, card: AMGPU):
        self.card, self.rf = card, card.regs

    def _addr(self, name: str) -> int:
        return self.rf.reg(name).address * 4

    def read(self, name: str) -> int:
        addr = self._addr(name)
        if addr < self.rf.bar_size:
            return self.rf.read32(addr)
        self.rf.write("BIF_BX_PF0_RSMU_INDEX", addr)  # amdgpu_device_indirect_rreg: index, read back, data
        self.rf.read("BIF_BX_PF0_RSMU_INDEX")
        return self.rf.read("BIF_BX_PF0_RSMU_DATA")

    def write(self, name: str, value: int) -> None:
        addr = self._addr(name)
        if addr < self.rf.bar_size:
            return self.rf.write32(addr, value)
        self.rf.write("BIF_BX_PF0_RSMU_INDEX", addr)
        self.rf.read("BIF_BX_PF0_RSMU_INDEX")
        self.rf.write("BIF_BX_PF0_RSMU_DATA", value)

    def post(self, msg: int, arg: int = 0, clear: bool = True) -> None:
        if clear:
            self.write("MP1_SMN_C2PMSG_90", 0)
        self.write("MP1_SMN_C2PMSG_82", arg)
        self.write("MP1_SMN_C2PMSG_66", msg)

    def send(self, msg: int, arg: int = 0) -> tuple[int, int]:
        """(response, C2PMSG_82 after) — latency 0, so the answer is there at once."""
        self.post(msg, arg)
        return self.read("MP1_SMN_C2PMSG_90"), self.read("MP1_SMN_C2PMSG_82")

    def ok(self, msg: int, arg: int = 0) -> int:
        resp, out = self.send(msg, arg)
        assert resp == OK, f"message {msg:#x} arg {arg:#x} answered {resp:#x}; errors {self.card.smu.errors}"
        return out

    def enable_all(self) -> None:
        self.ok(SetAllowedFeaturesMaskHigh, 0xFFFFFFFF)
        self.ok(SetAllowedFeaturesMaskLow, 0xFFFFFFFF)
        self.ok(EnableAllSmuFeatures)


def make(target: str, **kw) -> AMGPU:
    card = AMGPU(target, vram_size=64 * MiB, boot_delay_s=0)
    attach_smu(card, **kw)
    return card


@pytest.fixture(params=TARGETS)
def card(request):
    c = make(request.param)
    yield c
    c.close()


@pytest.fixture
def mb(card):
    card.smu_fw_loaded = True  # what the PSP model does once it has loaded the SMC image
    return Mailbox(card)


def test_mailbox_registers_sit_where_the_kernel_headers_put_them(card):
    mp1 = card.board.block("MP1").bases[0]
    if card.target.startswith("gfx11"):  # mp_13_0_0_offset.h (and smu_v13_0.c): seg 0 + 0x282 / 0x292 / 0x29a
        expect = {"MP1_SMN_C2PMSG_66": mp1[0] + 0x282, "MP1_SMN_C2PMSG_82": mp1[0] + 0x292,
                  "MP1_SMN_C2PMSG_90": mp1[0] + 0x29A}
    else:  # mp_14_0_2_offset.h: seg 1 + 0x82 / 0x92 / 0x9a
        expect = {"MP1_SMN_C2PMSG_66": mp1[1] + 0x82, "MP1_SMN_C2PMSG_82": mp1[1] + 0x92,
                  "MP1_SMN_C2PMSG_90": mp1[1] + 0x9A}
    for name, addr in expect.items():
        assert card.regs.reg(name).address == addr
    assert card.regs.reg("MP1_FIRMWARE_FLAGS").address * 4 == 0x03B00000 | 0x3010024  # MP1_Public | smn...FLAGS
    nbif = card.board.block("NBIF").bases[0][1]  # BIF_BX_PF0_RSMU_INDEX/DATA: NBIO seg 1 + 0 / + 1
    assert card.regs.reg("BIF_BX_PF0_RSMU_INDEX").address == nbif
    assert card.regs.reg("BIF_BX_PF0_RSMU_DATA").address == nbif + 1


def test_gfx12_mailbox_is_past_the_bar_and_reached_through_the_index_window():
    card = make("gfx1201")
    try:
        card.smu_fw_loaded = True
        addr = card.regs.reg("MP1_SMN_C2PMSG_90").address * 4
        assert addr >= card.regs.bar_size
        with pytest.raises(RegisterError):
            card.regs.read32(addr)
        assert Mailbox(card).ok(GetDriverIfVersion) == 0x2E
        card.regs.write("BIF_BX_PF0_RSMU_INDEX", 0x3FFFFC)  # nothing modelled there
        with pytest.raises(RegisterError, match="RSMU_INDEX 0x3ffffc"):
            card.regs.read("BIF_BX_PF0_RSMU_DATA")
    finally:
        card.close()


def test_no_answer_until_the_firmware_is_loaded(card):
    m = Mailbox(card)
    assert m.read("MP1_FIRMWARE_FLAGS") == 0
    resp, _ = m.send(GetSmuVersion)
    assert resp == 0 and card.smu.messages[-1].response is None
    card.smu_fw_loaded = True
    assert m.read("MP1_FIRMWARE_FLAGS") & 1  # MP1_FIRMWARE_FLAGS__INTERRUPTS_ENABLED (smu_v13_0_check_fw_status)
    assert m.read("MP1_SMN_C2PMSG_90") == OK  # PMFW ready; the kernel ignores this first value anyway
    assert m.ok(GetSmuVersion) == card.smu.sku.fw_version


def test_versions(card, mb):
    assert mb.ok(GetDriverIfVersion) == DRIVER_IF[card.target]
    assert mb.ok(TestMessage, 41) == 42


def test_firmware_version_comes_from_the_psp_when_it_says():
    card = make("gfx1100")
    try:
        card.smu_fw_version, card.smu_fw_loaded = 0x004E7A00, True
        assert Mailbox(card).ok(GetSmuVersion) == 0x004E7A00
    finally:
        card.close()


def test_the_psp_models_record_of_the_smc_image_starts_the_firmware():
    from emu.am.psp import LoadedFirmware  # the PSP model's record of a LOAD_IP_FW (GFX_FW_TYPE_SMU = 18)
    card = make("gfx1102")
    try:
        m = Mailbox(card)
        assert m.send(GetSmuVersion)[0] == 0
        card.psp = SimpleNamespace(loaded={18: LoadedFirmware(18, "SMU", 4096, "", "smu_13_0_7.bin", 0x00503F00, 0)})
        assert m.ok(GetSmuVersion) == 0x00503F00
    finally:
        card.close()


def test_bring_up_sequence_enables_the_allowed_features(card, mb):
    # smu_smc_hw_setup order: driver table, tools table, allowed mask (High then Low), enable all, read back
    mb.ok(SetDriverDramAddrHigh, 0x0000_8000)
    mb.ok(SetDriverDramAddrLow, 0x0010_0000)
    mb.ok(SetToolsDramAddrHigh, 0x0000_8000)
    mb.ok(SetToolsDramAddrLow, 0x0020_0000)
    assert card.smu.tables["driver"] == 0x8000_0010_0000 and card.smu.tables["tools"] == 0x8000_0020_0000
    mb.ok(SetAllowedFeaturesMaskHigh, 0x0000_0003)
    mb.ok(SetAllowedFeaturesMaskLow, 0xFFFF_FFFF)
    mb.ok(EnableAllSmuFeatures)
    assert mb.ok(GetRunningSmuFeaturesLow) == 0xFFFF_FFFF
    assert mb.ok(GetRunningSmuFeaturesHigh) == 0x3
    mb.ok(DisableSmuFeaturesLow, 1 << 1)  # FEATURE_DPM_GFXCLK_BIT
    assert mb.ok(GetRunningSmuFeaturesLow) == 0xFFFF_FFFD
    mb.ok(EnableSmuFeaturesLow, 1 << 1)
    mb.ok(DisableAllSmuFeatures)
    assert mb.ok(GetRunningSmuFeaturesLow) == 0 and mb.ok(GetRunningSmuFeaturesHigh) == 0
    assert not card.smu.errors


def test_enable_all_without_an_allowed_mask_enables_what_the_firmware_supports(card, mb):
    mb.ok(EnableAllSmuFeatures)  # SCPM boards: the driver sends no allowed mask (smu_smc_hw_setup)
    assert mb.ok(GetRunningSmuFeaturesLow) == 0xFFFF_FFFF
    assert mb.ok(GetRunningSmuFeaturesHigh) == card.smu.supported >> 32 != 0


def test_table_address_arguments_are_checked(mb):
    assert mb.send(SetDriverDramAddrLow, 0x1000)[0] == PREREQ  # Low before High
    assert mb.send(SetDriverDramAddrHigh, 0x1_0000)[0] == FAIL  # beyond a 48-bit MC address
    assert any("SetDriverDramAddrLow" in e for e in mb.card.smu.errors)


@pytest.mark.parametrize("target,msg,expect", [
    ("gfx1100", 0x4E, OK),       # DALNotPresent: smu_v13_0_0_ppsmc.h only
    ("gfx1102", 0x4E, UNKNOWN),  # not in smu_v13_0_7_ppsmc.h
    ("gfx1201", 0x2F, UNKNOWN),  # Mode1Reset: absent from smu_v14_0_2_ppsmc.h
    ("gfx1100", 0x52, UNKNOWN),  # PPSMC_Message_Count
    ("gfx1201", 0x59, UNKNOWN),
    ("gfx1100", 0x0, UNKNOWN),
    ("gfx1100", 0x1_0001, UNKNOWN),
])
def test_unknown_commands_per_header(target, msg, expect):
    card = make(target)
    try:
        card.smu_fw_loaded = True
        assert Mailbox(card).send(msg)[0] == expect
    finally:
        card.close()


def test_a_known_but_unmodelled_message_says_so(mb):
    assert mb.send(TransferTableSmu2Dram, 0)[0] == UNKNOWN
    assert any("TransferTableSmu2Dram" in e and "not modelled" in e for e in mb.card.smu.errors)


def test_dpm_clock_queries(card, mb):
    gfx = card.smu.sku.clocks["GFXCLK"]
    count = mb.ok(GetDpmFreqByIndex, PPCLK_GFXCLK << 16 | 0xFF)
    assert count == 0x8000_0000 | 2  # fine-grained: bit 31, min and max
    assert mb.ok(GetDpmFreqByIndex, PPCLK_GFXCLK << 16 | 1) == gfx.levels[-1]
    uclk = card.smu.sku.clocks["UCLK"].levels
    assert mb.ok(GetDpmFreqByIndex, PPCLK_UCLK << 16 | 0xFF) == len(uclk)
    assert [mb.ok(GetDpmFreqByIndex, PPCLK_UCLK << 16 | i) for i in range(len(uclk))] == list(uclk)
    assert mb.send(GetDpmFreqByIndex, PPCLK_UCLK << 16 | len(uclk))[0] == FAIL
    assert mb.ok(GetMinDpmFreq, PPCLK_UCLK << 16) == uclk[0] and mb.ok(GetMaxDpmFreq, PPCLK_UCLK << 16) == uclk[-1]
    assert mb.send(GetMinDpmFreq, 40 << 16)[0] == FAIL  # not a PPCLK_e


def test_clock_limits_need_dpm_and_clamp(card, mb):
    assert mb.send(SetSoftMinByFreq, PPCLK_GFXCLK << 16 | 1000)[0] == PREREQ  # DPM_GFXCLK not enabled yet
    mb.enable_all()
    lo, hi = card.smu.sku.clocks["GFXCLK"].levels
    mb.ok(SetSoftMinByFreq, PPCLK_GFXCLK << 16 | 1000)
    mb.ok(SetSoftMaxByFreq, PPCLK_GFXCLK << 16 | 0xFFFF)  # no limit (tinygrad's reset uses the same)
    assert card.smu.clock_range("GFXCLK") == (1000, hi)
    mb.ok(SetHardMaxByFreq, PPCLK_GFXCLK << 16 | 0xFFF0)  # clamped to the table
    mb.ok(SetSoftMaxByFreq, PPCLK_GFXCLK << 16 | 1200)
    assert card.smu.clock_range("GFXCLK") == (1000, 1200)
    mb.ok(SetSoftMinByFreq, PPCLK_GFXCLK << 16)  # 0: back to the table minimum
    mb.ok(SetHardMinByFreq, PPCLK_GFXCLK << 16 | 10)
    assert card.smu.clock_range("GFXCLK") == (lo, 1200)


def test_power_limit(card, mb):
    sku = card.smu.sku
    assert mb.send(SetPptLimit, sku.power_default)[0] == PREREQ  # the PPT (THROTTLERS) feature is off
    mb.ok(SetAllowedFeaturesMaskHigh, 0)
    mb.ok(SetAllowedFeaturesMaskLow, 1 << THROTTLERS_BIT[card.target])
    mb.ok(EnableAllSmuFeatures)
    mb.ok(SetPptLimit, sku.power_min)
    assert mb.ok(GetPptLimit, 0 << 16) == sku.power_min  # POWER_SOURCE_AC << 16
    assert mb.send(SetPptLimit, sku.power_max + 1)[0] == FAIL
    assert mb.send(GetPptLimit, 2 << 16)[0] == FAIL
    assert card.smu.power_limit == sku.power_min


def test_vcn_and_jpeg_power(card, mb):
    n = VCN_INSTANCES[card.target]
    for i in range(n):
        mb.ok(PowerUpVcn, i << 16)
    assert card.smu.vcn_powered == set(range(n))
    assert mb.send(PowerUpVcn, n << 16)[0] == FAIL
    mb.ok(PowerDownVcn, 0)
    mb.ok(PowerUpJpeg, 0)
    assert 0 not in card.smu.vcn_powered and card.smu.jpeg_powered == {0}


def test_gfxoff_needs_its_feature(mb):
    assert mb.send(AllowGfxOff)[0] == PREREQ
    mb.enable_all()
    mb.ok(AllowGfxOff)
    assert mb.card.smu.gfxoff_allowed


def test_prepare_for_unload(mb):
    mb.enable_all()
    mb.ok(PrepareMp1ForUnload)
    assert mb.card.smu.unload_prepared


def test_fault_never_responds(mb):
    mb.card.smu.never_respond()
    resp, _ = mb.send(GetSmuVersion)
    assert resp == 0 and mb.read("MP1_SMN_C2PMSG_90") == 0
    mb.card.smu.clear_faults()
    assert mb.ok(GetDriverIfVersion) == DRIVER_IF[mb.card.target]


def test_fault_fails_one_message(mb):
    mb.card.smu.fail("EnableAllSmuFeatures")
    mb.card.smu.fail(GetDriverIfVersion, BUSY)
    assert mb.send(EnableAllSmuFeatures)[0] == FAIL
    assert mb.card.smu.enabled == 0  # a failed message has no effect
    assert mb.send(GetDriverIfVersion, 7) == (BUSY, 7)  # no result written back
    assert mb.ok(GetSmuVersion)
    with pytest.raises(ValueError):
        mb.card.smu.fail(GetSmuVersion, 0)


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_busy_while_a_message_executes_and_busy_other_for_an_early_one():
    card = make("gfx1100", latency_s=0.5)
    try:
        card.smu_fw_loaded = True
        clock = card.smu.clock = FakeClock()
        m = Mailbox(card)
        m.read("MP1_SMN_C2PMSG_90")  # firmware starts
        m.post(GetDriverIfVersion)
        assert card.smu.busy and m.read("MP1_SMN_C2PMSG_90") == 0
        assert m.read("MP1_SMN_C2PMSG_82") == 0  # still the argument
        clock.t += 0.5
        assert m.read("MP1_SMN_C2PMSG_90") == OK and m.read("MP1_SMN_C2PMSG_82") == 0x3D
        assert not card.smu.busy
        m.post(GetSmuVersion)
        m.post(TestMessage, 1)  # without waiting: the PMFW rejects it
        clock.t += 0.5
        assert m.read("MP1_SMN_C2PMSG_90") == BUSY
        assert any("still executing" in e for e in card.smu.errors)
    finally:
        card.close()


def test_a_message_without_clearing_the_response_is_noted(mb):
    mb.ok(GetSmuVersion)
    mb.post(GetDriverIfVersion, clear=False)
    assert any("C2PMSG_90 still held" in e for e in mb.card.smu.errors)


def test_power_on_puts_the_smu_back_cold(card, mb):
    mb.enable_all()
    card.power_on()
    assert card.smu_fw_loaded is False and card.smu.enabled == 0 and not card.smu.running
    assert mb.send(GetSmuVersion)[0] == 0
    card.smu_fw_loaded = True
    assert mb.ok(GetRunningSmuFeaturesLow) == 0
