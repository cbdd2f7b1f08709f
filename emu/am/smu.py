"""The emulated SMU (MP1): the PMFW message mailbox as amdgpu's smu_cmn.c drives it, for smu_v13_0 (gfx11: MP1
13.0.0 Navi 31, 13.0.7 Navi 33) and smu_v14_0 (gfx12: MP1 14.0.2/14.0.3 Navi 48).

The mailbox (smu_v13_0_0_ppt.c / smu_v13_0.c and smu_v14_0_2_ppt.c set_smu_mailbox_registers):
- C2PMSG_66 message (writing it starts the message), C2PMSG_82 argument (the host writes the parameter; the firmware
  writes the result back there), C2PMSG_90 response (the host writes 0; the firmware writes the answer code).
- Registers: mp_13_0_0 MP1_SMN_C2PMSG_66/82/90 at MP1 seg 0 + 0x282/0x292/0x29a (smu_v13_0.c defines the same
  mmMP1_SMN_C2PMSG_* by hand); mp_14_0_2 the same names at MP1 seg 1 + 0x82/0x92/0x9a. MP1 seg 1 (0xDC0000) lies far
  beyond the 1 MiB register BAR, so on gfx12 amdgpu reaches them through the NBIO index/data pair
  (amdgpu_device_rreg: reg * 4 >= rmmio_size -> pcie_rreg = amdgpu_device_indirect_rreg, whose index/data are
  BIF_BX_PF0_RSMU_INDEX/RSMU_DATA: nbio_v4_3.c / nbif_v6_3_1.c get_pcie_index_offset). attach_smu installs that window
  (emu/am/nbio.py install_rsmu_window, a window onto the whole register file) when the register file lacks it.
- MP1_FIRMWARE_FLAGS (INTERRUPTS_ENABLED, bit 0) at the SMN address MP1_Public | smnMP1_FIRMWARE_FLAGS = 0x3B10024
  (smu_v13_0.h / smu_v14_0.h; smu_v13_0_check_fw_status / smu_v14_0_check_fw_status read it with RREG32_PCIE).

Answers (smu_cmn.c SMU_RESP_*): 1 OK, 0xFF FAIL, 0xFE UNKNOWN_CMD, 0xFD CMD_BAD_PREREQ, 0xFC BUSY_OTHER; 0 while busy.

Firmware: the SMU answers only once its firmware runs. On these parts the PSP loads it (amdgpu_psp.c LOAD_IP_FW of
the SMC image); the PSP model says so by setting `card.smu_fw_loaded = True` (and, if it knows it, the image's version
in `card.smu_fw_version`); a LOAD_IP_FW of GFX_FW_TYPE_SMU in emu/am/psp.py's `card.psp.loaded` counts too (its
ucode_version is then the version GetSmuVersion reports). attach_smu defines both (False / None) and a power-on or
function reset clears them. Until then every message stays unanswered (C2PMSG_90 keeps 0) and FIRMWARE_FLAGS reads
0. When the firmware starts, the emulator sets C2PMSG_90 to 1 (the emulator's choice: the kernel ignores the first
value it finds, smu_cmn.c SMU_FW_INIT) and FIRMWARE_FLAGS.INTERRUPTS_ENABLED.

State (card.smu, an SMU): enabled/allowed feature masks, soft/hard clock limits per clock, the power limit and source,
VCN/JPEG power, GFXOFF, the driver/tools/log table addresses, whether PrepareMp1ForUnload came; `busy` while a message
executes (`latency_s`, 0 by default: the answer is there when the message write returns; `clock` is the
time source, time.monotonic unless a test swaps it). `messages` records every
message with its answer, `errors` every protocol slip and unmodelled message in words.

Fault injection: `never_respond()` (messages are taken, C2PMSG_90 stays 0 for ever), `fail(msg, response=FAIL)` (that
message is answered `response` and has no effect), `clear_faults()`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from emu.am.nbio import RSMU_DATA, RSMU_INDEX, install_rsmu_window  # noqa: F401  the window is NBIO's (re-exported)
from emu.am.regs import MASK32, Register, RegisterFile

# smu_cmn.c: the response codes of C2PMSG_90 (also PPSMC_Result_* in smu_v13_0_0_ppsmc.h / smu_v14_0_2_ppsmc.h)
SMU_RESP_NONE = 0x00
SMU_RESP_OK = 0x01
SMU_RESP_CMD_FAIL = 0xFF
SMU_RESP_CMD_UNKNOWN = 0xFE
SMU_RESP_CMD_BAD_PREREQ = 0xFD
SMU_RESP_BUSY_OTHER = 0xFC

MP1_PUBLIC = 0x03B00000            # smu_v13_0.h / smu_v14_0.h MP1_Public
SMN_MP1_FIRMWARE_FLAGS = 0x3010024  # smu_v13_0.h / smu_v14_0.h smnMP1_FIRMWARE_FLAGS
FIRMWARE_FLAGS_ADDR = MP1_PUBLIC | SMN_MP1_FIRMWARE_FLAGS  # the byte address smu_v1x_0_check_fw_status reads
GFX_FW_TYPE_SMU = 18  # psp_gfx_if.h enum psp_gfx_fw_type GFX_FW_TYPE_SMU: the PSP's record that it loaded the PMFW
INTERRUPTS_ENABLED = 0x1           # mp_13_0_0_sh_mask.h MP1_FIRMWARE_FLAGS__INTERRUPTS_ENABLED_MASK (mp_14_0_2: CRU1)

# PPSMC_MSG_* ids that are the same in smu_v13_0_0_ppsmc.h, smu_v13_0_7_ppsmc.h and smu_v14_0_2_ppsmc.h.
_COMMON_MSGS: dict[str, int] = {
    "TestMessage": 0x1, "GetSmuVersion": 0x2, "GetDriverIfVersion": 0x3,
    "SetAllowedFeaturesMaskLow": 0x4, "SetAllowedFeaturesMaskHigh": 0x5,
    "EnableAllSmuFeatures": 0x6, "DisableAllSmuFeatures": 0x7,
    "EnableSmuFeaturesLow": 0x8, "EnableSmuFeaturesHigh": 0x9,
    "DisableSmuFeaturesLow": 0xA, "DisableSmuFeaturesHigh": 0xB,
    "GetRunningSmuFeaturesLow": 0xC, "GetRunningSmuFeaturesHigh": 0xD,
    "SetDriverDramAddrHigh": 0xE, "SetDriverDramAddrLow": 0xF,
    "SetToolsDramAddrHigh": 0x10, "SetToolsDramAddrLow": 0x11,
    "TransferTableSmu2Dram": 0x12, "TransferTableDram2Smu": 0x13, "UseDefaultPPTable": 0x14,
    "EnterBaco": 0x15, "ExitBaco": 0x16, "ArmD3": 0x17, "BacoAudioD3PME": 0x18,
    "SetSoftMinByFreq": 0x19, "SetSoftMaxByFreq": 0x1A, "SetHardMinByFreq": 0x1B, "SetHardMaxByFreq": 0x1C,
    "GetMinDpmFreq": 0x1D, "GetMaxDpmFreq": 0x1E, "GetDpmFreqByIndex": 0x1F, "OverridePcieParameters": 0x20,
    "DramLogSetDramAddrHigh": 0x21, "DramLogSetDramAddrLow": 0x22, "DramLogSetDramSize": 0x23,
    "SetWorkloadMask": 0x24, "GetVoltageByDpm": 0x25, "SetVideoFps": 0x26, "GetDcModeMaxDpmFreq": 0x27,
    "AllowGfxOff": 0x28, "DisallowGfxOff": 0x29, "PowerUpVcn": 0x2A, "PowerDownVcn": 0x2B,
    "PowerUpJpeg": 0x2C, "PowerDownJpeg": 0x2D, "PrepareMp1ForUnload": 0x2E,
    "SetSystemVirtualDramAddrHigh": 0x30, "SetSystemVirtualDramAddrLow": 0x31,
    "SetPptLimit": 0x32, "GetPptLimit": 0x33, "ReenableAcDcInterrupt": 0x34, "NotifyPowerSource": 0x35,
    "RunDcBtc": 0x36,
}


@dataclass(frozen=True)
class SMUGeneration:
    """What one PMFW message header and its driver-interface header fix: message ids, which ids the firmware does
    not know (0, the header's gaps, >= PPSMC_Message_Count), the driver interface version, the feature bits this
    model uses and the PPCLK_e clock order."""
    header: str
    messages: dict[str, int]
    message_count: int
    holes: frozenset[int]
    driver_if_version: int
    features: dict[str, int]
    clocks: tuple[str, ...]

    def name(self, msg: int) -> Optional[str]:
        for n, i in self.messages.items():
            if i == msg:
                return n
        return None

    def known(self, msg: int) -> bool:
        """Whether the firmware of this generation knows the message id (PPSMC_MSG_* defines it)."""
        return 0 < msg < self.message_count and msg not in self.holes


# smu13_driver_if_v13_0_0.h / _v13_0_7.h FEATURE_*_BIT (identical for the bits used here)
_FEATURES_13 = {"FW_DATA_READ": 0, "DPM_GFXCLK": 1, "DPM_UCLK": 3, "DPM_FCLK": 4, "DPM_SOCCLK": 5, "DPM_DCN": 8,
                "GFXOFF": 19, "MM_DPM": 21, "THROTTLERS": 24, "NUM": 52}  # NUM: bits 52..63 are FEATURE_SPARE_*
# smu14_driver_if_v14_0.h FEATURE_*_BIT
_FEATURES_14 = {"FW_DATA_READ": 0, "DPM_GFXCLK": 1, "DPM_UCLK": 3, "DPM_FCLK": 4, "DPM_SOCCLK": 5, "DPM_DCN": 7,
                "GFXOFF": 18, "MM_DPM": 20, "THROTTLERS": 23, "NUM": 58}  # 58 and 59..63 are spare

GEN_13_0_0 = SMUGeneration(
    header="smu_v13_0_0_ppsmc.h",
    messages={**_COMMON_MSGS, "Mode1Reset": 0x2F, "GetDebugData": 0x37, "SetTemperatureInputSelect": 0x38,
              "SetFwDstatesMask": 0x39, "SetThrottlerMask": 0x3A, "SetExternalClientDfCstateAllow": 0x3B,
              "SetMGpuFanBoostLimitRpm": 0x3C, "AllowIHHostInterrupt": 0x4C, "DALNotPresent": 0x4E,
              "Mode2Reset": 0x4F, "EnableUCLKShadow": 0x51},
    message_count=0x52, holes=frozenset({0x4D, 0x50}), driver_if_version=0x3D,  # SMU13_0_0_DRIVER_IF_VERSION
    features=_FEATURES_13,
    # smu13_driver_if_v13_0_0.h PPCLK_e
    clocks=("GFXCLK", "SOCCLK", "UCLK", "FCLK", "DCLK_0", "VCLK_0", "DCLK_1", "VCLK_1", "DISPCLK", "DPPCLK",
            "DPREFCLK", "DCFCLK", "DTBCLK"))
GEN_13_0_7 = SMUGeneration(
    header="smu_v13_0_7_ppsmc.h",
    messages={**_COMMON_MSGS, "Mode1Reset": 0x2F, "SetTemperatureInputSelect": 0x38, "SetFwDstatesMask": 0x39,
              "SetThrottlerMask": 0x3A, "SetExternalClientDfCstateAllow": 0x3B, "SetMGpuFanBoostLimitRpm": 0x3C,
              "AllowIHHostInterrupt": 0x4C, "EnableUCLKShadow": 0x51},
    # no GetDebugData, DALNotPresent or Mode2Reset in this header
    message_count=0x52, holes=frozenset({0x37, 0x4D, 0x4E, 0x4F, 0x50}), driver_if_version=0x35,  # _13_0_7_
    features=_FEATURES_13,
    clocks=GEN_13_0_0.clocks)  # smu13_driver_if_v13_0_7.h PPCLK_e: the same order
GEN_14_0_2 = SMUGeneration(
    header="smu_v14_0_2_ppsmc.h",
    messages={**_COMMON_MSGS, "SetTemperatureInputSelect": 0x38, "SetFwDstatesMask": 0x39, "SetThrottlerMask": 0x3A,
              "SetExternalClientDfCstateAllow": 0x3B, "SetMGpuFanBoostLimitRpm": 0x3C,
              "AllowIHHostInterrupt": 0x4D, "EnableShadowDpm": 0x4E, "Mode3Reset": 0x4F, "SetDriverDramAddr": 0x50,
              "SetToolsDramAddr": 0x51, "GetAllRunningSmuFeatures": 0x54},
    # no Mode1Reset (0x2f) nor GetDebugData (0x37): amdgpu resets gfx12 through the debug mailbox
    message_count=0x59, holes=frozenset({0x2F, 0x37}),
    driver_if_version=0x2E,  # smu_v14_0.h SMU14_DRIVER_IF_VERSION_SMU_V14_0_2 (14.0.2 and 14.0.3: smu_v14_0.c)
    features=_FEATURES_14,
    # smu14_driver_if_v14_0.h PPCLK_e
    clocks=("GFXCLK", "SOCCLK", "UCLK", "FCLK", "DCLK_0", "VCLK_0", "DISPCLK", "DPPCLK", "DPREFCLK", "DCFCLK",
            "DTBCLK"))

# MP1 version -> generation: amdgpu_smu.c smu_set_funcs (13.0.0 -> smu_v13_0_0_ppt, 13.0.7 -> smu_v13_0_7_ppt,
# 14.0.2 and 14.0.3 -> smu_v14_0_2_ppt)
GENERATIONS: dict[tuple[int, int, int], SMUGeneration] = {
    (13, 0, 0): GEN_13_0_0, (13, 0, 7): GEN_13_0_7, (14, 0, 2): GEN_14_0_2, (14, 0, 3): GEN_14_0_2,
}

# The clock a DPM feature governs (smu_cmn.c smu_cmn_clk_dpm_is_enabled: GFXCLK/SCLK -> DPM_GFXCLK, UCLK -> DPM_UCLK,
# SOCCLK -> DPM_SOCCLK, FCLK -> DPM_FCLK, VCLK/DCLK -> MM_DPM, DCEFCLK -> DPM_DCN).
_CLOCK_FEATURE = {"GFXCLK": "DPM_GFXCLK", "UCLK": "DPM_UCLK", "SOCCLK": "DPM_SOCCLK", "FCLK": "DPM_FCLK",
                  "VCLK_0": "MM_DPM", "DCLK_0": "MM_DPM", "VCLK_1": "MM_DPM", "DCLK_1": "MM_DPM",
                  "DCFCLK": "DPM_DCN"}


@dataclass(frozen=True)
class ClockTable:
    """One clock's DPM levels in MHz; fine-grained clocks answer GetDpmFreqByIndex(0xff) with bit 31 set
    (smu_v13_0.c smu_v13_0_get_fine_grained_status) and have two levels, min and max."""
    levels: tuple[int, ...]
    fine_grained: bool = False


@dataclass(frozen=True)
class SMUSku:
    """A board's PMFW view: its firmware version, clock tables and power limits (W). The numbers are the
    emulator's plausible choices (retail TBP for the default limit), not from any firmware table."""
    fw_version: int
    clocks: dict[str, ClockTable]
    power_default: int
    power_min: int
    power_max: int


SKUS: dict[str, SMUSku] = {
    # PMFW 78.105.0 (>= 0x004e3a00, the version smu_v13_0_0_get_allowed_feature_mask wants for GFXOFF)
    "gfx1100": SMUSku(0x004E6900, {
        "GFXCLK": ClockTable((500, 2500), True), "SOCCLK": ClockTable((500, 960, 1200)),
        "UCLK": ClockTable((96, 456, 772, 1249)), "FCLK": ClockTable((400, 1200, 1900, 2500)),
        "VCLK_0": ClockTable((500, 1400)), "DCLK_0": ClockTable((500, 1300)),
        "VCLK_1": ClockTable((500, 1400)), "DCLK_1": ClockTable((500, 1300))}, 355, 302, 402),
    "gfx1102": SMUSku(0x00503A00, {
        "GFXCLK": ClockTable((500, 2655), True), "SOCCLK": ClockTable((500, 960, 1200)),
        "UCLK": ClockTable((96, 456, 772, 1124)), "FCLK": ClockTable((400, 1200, 1800)),
        "VCLK_0": ClockTable((500, 1400)), "DCLK_0": ClockTable((500, 1300))}, 165, 140, 182),
    "gfx1201": SMUSku(0x00681A00, {
        "GFXCLK": ClockTable((500, 2520), True), "SOCCLK": ClockTable((500, 1000, 1250)),
        "UCLK": ClockTable((97, 600, 1000, 1258)), "FCLK": ClockTable((500, 1400, 2000, 2500)),
        "VCLK_0": ClockTable((500, 1500)), "DCLK_0": ClockTable((500, 1400))}, 220, 187, 242),
}


@dataclass
class Message:
    """One message as the SMU saw it: id, name (None if the header has none), argument, answer (None: never
    answered) and the value written back to C2PMSG_82 (None: left as written)."""
    msg: int
    name: Optional[str]
    arg: int
    response: Optional[int] = None
    result: Optional[int] = None


@dataclass
class _Pending:
    message: Message
    response: int
    result: Optional[int]
    due: float


class SMU:
    """The emulated PMFW behind the MP1 mailbox of one card (card.smu). See the module docstring for the protocol,
    the firmware-loaded flag, state and fault injection."""

    def __init__(self, card: Any, generation: SMUGeneration, sku: SMUSku, *, latency_s: float = 0.0):
        self.card = card
        self.gen = generation
        self.sku = sku
        self.latency_s = latency_s
        self.clock: Callable[[], float] = time.monotonic  # tests may replace it with a fake clock
        self.lock = threading.RLock()
        self.messages: list[Message] = []
        self.errors: list[str] = []
        self._never_respond = False
        self._fail: dict[int, int] = {}
        ip = card.board.block("VCN") if any(b.name == "VCN" for b in card.board.ips) else None
        self.vcn_instances = len(ip.bases) if ip is not None else 0
        self.msg_reg: Optional[Register] = None
        self.arg_reg: Optional[Register] = None
        self.resp_reg: Optional[Register] = None
        self.reset()

    # -- power --
    def reset(self) -> None:
        """Cold state: firmware not running, nothing enabled, limits at the board's defaults."""
        with self.lock:
            self.running = False
            self.fw_version = self.sku.fw_version
            self.allowed = (1 << 64) - 1  # no SetAllowedFeaturesMask: PMFW enables what it supports (SCPM boards)
            self.enabled = 0
            self.tables: dict[str, int] = {}
            self._high: dict[str, int] = {}
            self.soft: dict[str, list[int]] = {c: [t.levels[0], t.levels[-1]] for c, t in self.sku.clocks.items()}
            self.hard: dict[str, list[int]] = {c: [t.levels[0], t.levels[-1]] for c, t in self.sku.clocks.items()}
            self.power_limit = self.sku.power_default
            self.power_source = 0  # POWER_SOURCE_AC (smu13/14 driver_if PWR_MAP order: AC, DC)
            self.vcn_powered: set[int] = set()
            self.jpeg_powered: set[int] = set()
            self.gfxoff_allowed = False
            self.workload_mask = 0
            self.unload_prepared = False
            self._pending: Optional[_Pending] = None

    @property
    def supported(self) -> int:
        """The feature bits this PMFW has (every named FEATURE_*_BIT of the driver-interface header)."""
        return (1 << self.gen.features["NUM"]) - 1

    def feature(self, name: str) -> bool:
        """Whether the feature FEATURE_<name>_BIT is enabled."""
        return bool(self.enabled >> self.gen.features[name] & 1)

    @property
    def busy(self) -> bool:
        """A message is executing (its answer is not in C2PMSG_90 yet)."""
        with self.lock:
            self._sync()
            return self._pending is not None

    def clock_range(self, clock: str) -> tuple[int, int]:
        """The range (MHz) the clock may run in now: the soft limits inside the hard ones."""
        lo = max(self.soft[clock][0], self.hard[clock][0])
        hi = min(self.soft[clock][1], self.hard[clock][1])
        return lo, max(lo, hi)

    # -- faults --
    def never_respond(self) -> None:
        """From now on messages are taken but never answered: C2PMSG_90 stays 0 (a hung PMFW)."""
        with self.lock:
            self._never_respond = True

    def fail(self, msg: int | str, response: int = SMU_RESP_CMD_FAIL) -> None:
        """Answer `msg` (id or PPSMC name) with `response` (FAIL by default), without carrying it out."""
        mid = self.gen.messages[msg] if isinstance(msg, str) else msg
        if not 0 < response <= 0xFF:
            raise ValueError(f"response {response:#x} must be a non-zero byte (0 is 'no answer': use never_respond)")
        with self.lock:
            self._fail[mid] = response

    def clear_faults(self) -> None:
        with self.lock:
            self._never_respond = False
            self._fail.clear()

    # -- the mailbox --
    def _sync(self) -> None:
        """Catch up with time: start the firmware once the PSP has loaded it; publish a due answer."""
        if not self.running and self._firmware_loaded():
            self.running = True
            version = getattr(self.card, "smu_fw_version", None)
            if version is None:
                psp_fw = getattr(getattr(self.card, "psp", None), "loaded", {}).get(GFX_FW_TYPE_SMU)
                version = getattr(psp_fw, "version", None)  # the SMC image's common-header ucode_version
            if version is not None:
                self.fw_version = version & MASK32
            if self.resp_reg is not None:
                self.resp_reg.value = SMU_RESP_OK  # PMFW ready (the kernel ignores this first value: SMU_FW_INIT)
        p = self._pending
        if p is not None and self.clock() >= p.due:
            self._pending = None
            self._publish(p.message, p.response, p.result)

    def _firmware_loaded(self) -> bool:
        """card.smu_fw_loaded, or the PSP model's record of a LOAD_IP_FW of GFX_FW_TYPE_SMU (emu/am/psp.py
        PSP.loaded), whichever says so first."""
        if getattr(self.card, "smu_fw_loaded", False):
            return True
        loaded = getattr(getattr(self.card, "psp", None), "loaded", None)
        return isinstance(loaded, dict) and GFX_FW_TYPE_SMU in loaded

    def _publish(self, m: Message, response: int, result: Optional[int]) -> None:
        m.response, m.result = response, result
        if result is not None and self.arg_reg is not None:
            self.arg_reg.value = result & MASK32
        if self.resp_reg is not None:
            self.resp_reg.value = response

    def read_hook(self, reg: Register) -> int:
        with self.lock:
            self._sync()
            return reg.value

    def resp_written(self, reg: Register, value: int) -> None:
        with self.lock:
            self._sync()  # what was due happened before this write, which then wins
            reg.value = value
            if value != SMU_RESP_NONE:
                self.errors.append(f"host wrote {value:#x} to C2PMSG_90 (the response register); only the firmware "
                                   "answers there, the host clears it with 0 (smu_cmn.c __smu_cmn_send_msg)")

    def message_written(self, reg: Register, value: int) -> None:
        """C2PMSG_66 written: the firmware takes the message with C2PMSG_82 as its argument."""
        with self.lock:
            self._sync()
            arg = self.arg_reg.value if self.arg_reg is not None else 0
            m = Message(value, self.gen.name(value) if value <= 0xFFFF else None, arg)
            self.messages.append(m)
            if not self.running:
                return  # no firmware: nobody reads the mailbox
            if self._never_respond:
                return
            if self.resp_reg is not None and self.resp_reg.value != SMU_RESP_NONE:
                self.errors.append(f"message {self._describe(m)} written while C2PMSG_90 still held "
                                   f"{self.resp_reg.value:#x}: clear it to 0 first (smu_cmn.c __smu_cmn_send_msg), "
                                   "or the old answer reads as this message's")
            if self._pending is not None:
                # a message while one executes: the firmware rejects the new one once it is free
                running = self._describe(self._pending.message)
                self.errors.append(f"message {self._describe(m)} written while {running} was still executing: wait "
                                   "for C2PMSG_90 != 0 first (smu_cmn.c __smu_cmn_poll_stat)")
                self._pending = _Pending(m, SMU_RESP_BUSY_OTHER, None, self._pending.due)
                return
            if value in self._fail:
                response, result = self._fail[value], None
            else:
                response, result = self._execute(m)
            if self.latency_s > 0:
                self._pending = _Pending(m, response, result, self.clock() + self.latency_s)
            else:
                self._publish(m, response, result)

    def _describe(self, m: Message) -> str:
        return f"{m.name or 'unknown'}({m.msg:#x}, arg {m.arg:#x})"

    # -- the messages --
    def _execute(self, m: Message) -> tuple[int, Optional[int]]:
        if not self.gen.known(m.msg) or m.name is None:
            return SMU_RESP_CMD_UNKNOWN, None  # not a PPSMC_MSG_* of this generation's header
        handler: Optional[Callable[[int], tuple[int, Optional[int]]]] = getattr(self, f"_msg_{m.name}", None)
        if handler is None:
            self.errors.append(f"message {self._describe(m)} ({self.gen.header}) is not modelled by the emulated SMU;"
                               " it answered UNKNOWN_CMD (model it in emu/am/smu.py)")
            return SMU_RESP_CMD_UNKNOWN, None
        return handler(m.arg)

    def _ok(self, result: Optional[int] = None) -> tuple[int, Optional[int]]:
        return SMU_RESP_OK, result

    def _bad(self, why: str, m_name: str, arg: int, response: int = SMU_RESP_CMD_FAIL) -> tuple[int, Optional[int]]:
        self.errors.append(f"{m_name}(arg {arg:#x}): {why}")
        return response, None

    def _msg_TestMessage(self, arg: int):
        return self._ok((arg + 1) & MASK32)  # emulator's choice: no amdgpu caller reads the answer

    def _msg_GetSmuVersion(self, arg: int):
        return self._ok(self.fw_version)  # program << 24 | major << 16 | minor << 8 | debug (smu_v13_0.c)

    def _msg_GetDriverIfVersion(self, arg: int):
        return self._ok(self.gen.driver_if_version)

    def _msg_SetAllowedFeaturesMaskHigh(self, arg: int):
        # smu_v13_0_set_allowed_mask sends High, then Low
        self.allowed = arg << 32 | self.allowed & MASK32
        return self._ok()

    def _msg_SetAllowedFeaturesMaskLow(self, arg: int):
        self.allowed = self.allowed & ~MASK32 | arg
        return self._ok()

    def _msg_EnableAllSmuFeatures(self, arg: int):
        self.enabled = self.allowed & self.supported
        return self._ok()

    def _msg_DisableAllSmuFeatures(self, arg: int):
        self.enabled = 0
        self.gfxoff_allowed = False
        return self._ok()

    def _set_half(self, arg: int, high: bool, on: bool):
        mask = (arg << 32 if high else arg) & self.supported & (self.allowed if on else (1 << 64) - 1)
        self.enabled = self.enabled | mask if on else self.enabled & ~mask
        return self._ok()

    def _msg_EnableSmuFeaturesLow(self, arg: int):
        return self._set_half(arg, False, True)

    def _msg_EnableSmuFeaturesHigh(self, arg: int):
        return self._set_half(arg, True, True)

    def _msg_DisableSmuFeaturesLow(self, arg: int):
        return self._set_half(arg, False, False)

    def _msg_DisableSmuFeaturesHigh(self, arg: int):
        return self._set_half(arg, True, False)

    def _msg_GetRunningSmuFeaturesLow(self, arg: int):
        return self._ok(self.enabled & MASK32)

    def _msg_GetRunningSmuFeaturesHigh(self, arg: int):
        return self._ok(self.enabled >> 32)

    def _addr_high(self, table: str, name: str, arg: int):
        if arg > 0xFFFF:  # MC addresses are 48-bit (amdgpu_gmc.h AMDGPU_GMC_HOLE_START: the 48-bit VA space)
            return self._bad(f"upper address bits {arg:#x} exceed a 48-bit MC address", name, arg)
        self._high[table] = arg
        return self._ok()

    def _addr_low(self, table: str, name: str, arg: int):
        if table not in self._high:
            # smu_v13_0_set_driver_table_location / set_tool_table_location: High first, then Low
            return self._bad(f"sent without {name.replace('Low', 'High')} before it", name, arg,
                             SMU_RESP_CMD_BAD_PREREQ)
        self.tables[table] = self._high.pop(table) << 32 | arg
        return self._ok()

    def _msg_SetDriverDramAddrHigh(self, arg: int):
        return self._addr_high("driver", "SetDriverDramAddrHigh", arg)

    def _msg_SetDriverDramAddrLow(self, arg: int):
        return self._addr_low("driver", "SetDriverDramAddrLow", arg)

    def _msg_SetToolsDramAddrHigh(self, arg: int):
        return self._addr_high("tools", "SetToolsDramAddrHigh", arg)

    def _msg_SetToolsDramAddrLow(self, arg: int):
        return self._addr_low("tools", "SetToolsDramAddrLow", arg)

    def _msg_DramLogSetDramAddrHigh(self, arg: int):
        return self._addr_high("dram_log", "DramLogSetDramAddrHigh", arg)

    def _msg_DramLogSetDramAddrLow(self, arg: int):
        return self._addr_low("dram_log", "DramLogSetDramAddrLow", arg)

    def _msg_DramLogSetDramSize(self, arg: int):
        self.tables["dram_log_size"] = arg
        return self._ok()

    def _msg_SetSystemVirtualDramAddrHigh(self, arg: int):
        return self._addr_high("system_virtual", "SetSystemVirtualDramAddrHigh", arg)

    def _msg_SetSystemVirtualDramAddrLow(self, arg: int):
        return self._addr_low("system_virtual", "SetSystemVirtualDramAddrLow", arg)

    # clocks: param = clk_id << 16 | MHz (smu_v13_0.c set_soft/hard_freq_limited_range, get_dpm_freq_by_index)
    def _clock(self, name: str, arg: int, need_dpm: bool) -> tuple[Optional[str], Optional[tuple[int, Any]]]:
        clk_id = arg >> 16
        if clk_id >= len(self.gen.clocks):
            return None, self._bad(f"clock id {clk_id} is not a PPCLK_e of {self.gen.header} "
                                   f"({len(self.gen.clocks)} clocks)", name, arg)
        clock = self.gen.clocks[clk_id]
        if clock not in self.sku.clocks:
            return None, self._bad(f"PPCLK_{clock} has no DPM table on this board", name, arg,
                                   SMU_RESP_CMD_BAD_PREREQ)
        feat = _CLOCK_FEATURE[clock]
        if need_dpm and not self.feature(feat):
            # the kernel sends these only while the clock's DPM runs (smu_cmn_clk_dpm_is_enabled)
            return None, self._bad(f"FEATURE_{feat} is not enabled", name, arg, SMU_RESP_CMD_BAD_PREREQ)
        return clock, None

    def _set_limit(self, name: str, arg: int, limits: dict[str, list[int]], which: int):
        clock, err = self._clock(name, arg, True)
        if clock is None:
            return err
        table = self.sku.clocks[clock].levels
        mhz = arg & 0xFFFF
        if which == 0:
            value = table[0] if mhz == 0 else min(max(mhz, table[0]), table[-1])
            limits[clock][0] = value
            limits[clock][1] = max(limits[clock][1], value)
        else:
            value = table[-1] if mhz in (0, 0xFFFF) else min(max(mhz, table[0]), table[-1])
            limits[clock][1] = value
            limits[clock][0] = min(limits[clock][0], value)
        return self._ok()

    def _msg_SetSoftMinByFreq(self, arg: int):
        return self._set_limit("SetSoftMinByFreq", arg, self.soft, 0)

    def _msg_SetSoftMaxByFreq(self, arg: int):
        return self._set_limit("SetSoftMaxByFreq", arg, self.soft, 1)

    def _msg_SetHardMinByFreq(self, arg: int):
        return self._set_limit("SetHardMinByFreq", arg, self.hard, 0)

    def _msg_SetHardMaxByFreq(self, arg: int):
        return self._set_limit("SetHardMaxByFreq", arg, self.hard, 1)

    def _msg_GetMinDpmFreq(self, arg: int):
        clock, err = self._clock("GetMinDpmFreq", arg, False)
        return err if clock is None else self._ok(self.sku.clocks[clock].levels[0])

    def _msg_GetMaxDpmFreq(self, arg: int):
        clock, err = self._clock("GetMaxDpmFreq", arg, False)
        return err if clock is None else self._ok(self.sku.clocks[clock].levels[-1])

    def _msg_GetDcModeMaxDpmFreq(self, arg: int):
        return self._msg_GetMaxDpmFreq(arg)

    def _msg_GetDpmFreqByIndex(self, arg: int):
        clock, err = self._clock("GetDpmFreqByIndex", arg, False)
        if clock is None:
            return err
        t = self.sku.clocks[clock]
        idx = arg & 0xFFFF
        if idx == 0xFF:  # the level count; bit 31: fine-grained DPM (smu_v13_0_get_fine_grained_status)
            return self._ok(len(t.levels) | (0x80000000 if t.fine_grained else 0))
        if idx >= len(t.levels):
            return self._bad(f"level {idx} is past the {len(t.levels)} levels of PPCLK_{clock}",
                             "GetDpmFreqByIndex", arg)
        return self._ok(t.levels[idx])

    # power: SetPptLimit param = watts; GetPptLimit param = power source << 16 (smu_v13_0.c / smu_v14_0.c)
    def _msg_SetPptLimit(self, arg: int):
        if not self.feature("THROTTLERS"):  # SMU_FEATURE_PPT_BIT maps to FEATURE_THROTTLERS_BIT (*_ppt.c)
            return self._bad("FEATURE_THROTTLERS (the PPT feature) is not enabled", "SetPptLimit", arg,
                             SMU_RESP_CMD_BAD_PREREQ)
        if not self.sku.power_min <= arg <= self.sku.power_max:
            return self._bad(f"{arg} W is outside this board's {self.sku.power_min}..{self.sku.power_max} W",
                             "SetPptLimit", arg)
        self.power_limit = arg
        return self._ok()

    def _msg_GetPptLimit(self, arg: int):
        if arg >> 16 > 1:
            return self._bad(f"power source {arg >> 16} is neither AC (0) nor DC (1)", "GetPptLimit", arg)
        return self._ok(self.power_limit)

    def _msg_NotifyPowerSource(self, arg: int):
        if arg > 1:
            return self._bad(f"power source {arg} is neither AC (0) nor DC (1)", "NotifyPowerSource", arg)
        self.power_source = arg
        return self._ok()

    # multimedia power: param = instance << 16 (smu_v13_0_set_vcn_enable; JPEG: 0 on v13, instance << 16 on v14)
    def _mm(self, name: str, arg: int, powered: set[int], on: bool):
        inst = arg >> 16
        if inst >= self.vcn_instances or arg & 0xFFFF:
            return self._bad(f"instance {inst} (of {self.vcn_instances}) / low bits {arg & 0xFFFF:#x}", name, arg)
        (powered.add if on else powered.discard)(inst)
        return self._ok()

    def _msg_PowerUpVcn(self, arg: int):
        return self._mm("PowerUpVcn", arg, self.vcn_powered, True)

    def _msg_PowerDownVcn(self, arg: int):
        return self._mm("PowerDownVcn", arg, self.vcn_powered, False)

    def _msg_PowerUpJpeg(self, arg: int):
        return self._mm("PowerUpJpeg", arg, self.jpeg_powered, True)

    def _msg_PowerDownJpeg(self, arg: int):
        return self._mm("PowerDownJpeg", arg, self.jpeg_powered, False)

    def _msg_AllowGfxOff(self, arg: int):
        if not self.feature("GFXOFF"):
            return self._bad("FEATURE_GFXOFF is not enabled", "AllowGfxOff", arg, SMU_RESP_CMD_BAD_PREREQ)
        self.gfxoff_allowed = True
        return self._ok()

    def _msg_DisallowGfxOff(self, arg: int):
        self.gfxoff_allowed = False
        return self._ok()

    def _msg_SetWorkloadMask(self, arg: int):
        self.workload_mask = arg
        return self._ok()

    def _msg_PrepareMp1ForUnload(self, arg: int):
        # smu_v13_0_0_set_mp1_state(PP_MP1_STATE_UNLOAD): the driver is leaving; the state stays for the next one
        self.unload_prepared = True
        return self._ok()

    def _msg_AllowIHHostInterrupt(self, arg: int):
        return self._ok()

    def _msg_RunDcBtc(self, arg: int):
        return self._ok()

    def _msg_DALNotPresent(self, arg: int):
        return self._ok()  # smu_v13_0_0 only (smu_v13_0_system_features_control with no display)

    def _msg_OverridePcieParameters(self, arg: int):
        return self._ok()


def attach_smu(card: Any, *, latency_s: float = 0.0) -> SMU:
    """Give `card` (an emu.am.gpu.AMGPU) its SMU: the MP1 mailbox registers, MP1_FIRMWARE_FLAGS, the RSMU index
    window if the register file lacks it, `card.smu` (the SMU state), `card.smu_fw_loaded` (False: the PSP model sets
    it when it has loaded the SMC firmware) and `card.smu_fw_version` (None: the board's default version). A power-on
    or function reset puts the SMU back to its cold state with the firmware not loaded."""
    mp1 = card.board.block("MP1").version
    gen = GENERATIONS.get(tuple(mp1))
    if gen is None:
        raise ValueError(f"{card.board.product}: MP1 {'.'.join(map(str, mp1))} has no SMU model (known: "
                         f"{sorted('.'.join(map(str, v)) for v in GENERATIONS)})")
    sku = SKUS.get(card.target)
    if sku is None:
        raise ValueError(f"no SMU clock/power table for target {card.target} (known: {sorted(SKUS)})")
    rf: RegisterFile = card.regs
    smu = SMU(card, gen, sku, latency_s=latency_s)
    card.smu = smu
    card.smu_fw_loaded = False
    card.smu_fw_version = None

    smu.msg_reg = rf.define("MP1_SMN_C2PMSG_66", "MP1", on_write=smu.message_written, on_read=smu.read_hook)
    smu.arg_reg = rf.define("MP1_SMN_C2PMSG_82", "MP1", on_read=smu.read_hook)
    smu.resp_reg = rf.define("MP1_SMN_C2PMSG_90", "MP1", on_read=smu.read_hook, on_write=smu.resp_written)

    def flags(reg: Register) -> int:
        with smu.lock:
            smu._sync()
            return INTERRUPTS_ENABLED if smu.running else 0

    rf.add(Register("MP1_FIRMWARE_FLAGS", None, FIRMWARE_FLAGS_ADDR >> 2, wmask=0, on_read=flags))
    try:
        rf.reg(RSMU_INDEX)
    except KeyError:
        install_rsmu_window(rf)

    def power_on() -> None:
        smu.reset()
        card.smu_fw_loaded = False
        card.smu_fw_version = None

    card.on_power_on.append(power_on)
    return smu
