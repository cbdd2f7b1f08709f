"""The SMU (MP1, the power-management firmware) of an AM GPU: its message mailbox and a compute driver's bring-up.

The mailbox is smu_cmn.c's (smu_cmn_send_smc_msg_with_param), on the registers smu_v13_0_0_ppt.c / smu_v13_0.c /
smu_v14_0_2_ppt.c set_smu_mailbox_registers name: MP1_SMN_C2PMSG_66 the message, MP1_SMN_C2PMSG_82 the argument (and
the result), MP1_SMN_C2PMSG_90 the response. One message:
1. wait (bounded) for the previous message's response to be non-zero (skipped for the first message after init, as the
   kernel skips it in state SMU_FW_INIT: the register's value at that point means nothing);
2. write 0 to the response register, the argument, then the message id (__smu_cmn_send_msg);
3. wait (bounded: the kernel polls usec_timeout * 20 = 2 s) for a non-zero response and decode it (OK 1, FAIL 0xFF,
   UNKNOWN_CMD 0xFE, CMD_BAD_PREREQ 0xFD, BUSY_OTHER 0xFC; anything else leaves the SMU hung, SMU_FW_HANG);
4. read the result from the argument register.

The bring-up (amdgpu_smu.c smu_hw_init / smu_start_smc_engine / smu_smc_hw_setup, trimmed to what a compute-only
driver needs: no pptable upload, no display, thermal alerts or overdrive): the firmware-is-running check
(MP1_FIRMWARE_FLAGS.INTERRUPTS_ENABLED through SMN, smu_v13_0_check_fw_status), the SMU and driver-interface versions
(smu_cmn_get_smc_version) against the smc image and the interface version the kernel pairs with this MP1 version,
the allowed feature mask (SetAllowedFeaturesMaskHigh/Low, unless SCPM owns it), EnableAllSmuFeatures, the enabled
feature mask (GetRunningSmuFeaturesHigh/Low), an optional power limit (SetPptLimit) read back (GetPptLimit), and the
DPM levels of the clocks a compute job cares about (GetDpmFreqByIndex, smu_v13_0_set_single_dpm_table). Leaving:
`idle_power()` pins every clock to its lowest level; `fini()` sends PrepareMp1ForUnload (smu_cmn_set_mp1_state /
smu_v13_0_0_set_mp1_state).

Registers past the end of the register BAR (MP1's segment 1 on MP1 14.x) and SMN addresses are reached through the
NBIO's RSMU index/data pair, as amdgpu_device_rreg hands them to pcie_rreg (amdgpu_device_indirect_rreg): the register
file (drivers/am/regs.py RegisterFile.read/write, smn_read/smn_write) does that for every block.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Optional, Union

from drivers.am.regs import Reg, RegisterError, RegisterFile
from hcq.errors import HCQError

if TYPE_CHECKING:
    from drivers.am.device import AMDevice

log = logging.getLogger(__name__)

# smu_cmn.c: the response codes (SMU_RESP_*), their errno (__smu_cmn_reg2errno) and meaning (__smu_cmn_poll_stat).
RESP_NONE, RESP_OK, RESP_CMD_FAIL, RESP_CMD_UNKNOWN, RESP_CMD_BAD_PREREQ, RESP_BUSY_OTHER, RESP_DEBUG_END = \
    0x0, 0x1, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB
RESPONSES: dict[int, tuple[str, str, str]] = {
    RESP_NONE: ("NONE", "ETIME", "no answer: the SMU is still busy with the message"),
    RESP_OK: ("OK", "", "executed, result success"),
    RESP_CMD_FAIL: ("CMD_FAIL", "EIO", "executed, result failure"),
    RESP_CMD_UNKNOWN: ("CMD_UNKNOWN", "EOPNOTSUPP", "unknown command: this firmware does not know the message"),
    RESP_CMD_BAD_PREREQ: ("CMD_BAD_PREREQ", "EINVAL", "valid command, bad prerequisites (argument or state)"),
    RESP_BUSY_OTHER: ("BUSY_OTHER", "EBUSY", "rejected: the SMU is busy with other commands (retry after 10 us)"),
    RESP_DEBUG_END: ("DEBUG_END", "EREMOTEIO", "debug data dump end: the SMU is in a debug state"),
}

# smu_v13_0_0_ppsmc.h, smu_v13_0_7_ppsmc.h and smu_v14_0_2_ppsmc.h give these messages the same ids.
PPSMC_MSG: dict[str, int] = {
    "TestMessage": 0x1, "GetSmuVersion": 0x2, "GetDriverIfVersion": 0x3,
    "SetAllowedFeaturesMaskLow": 0x4, "SetAllowedFeaturesMaskHigh": 0x5,
    "EnableAllSmuFeatures": 0x6, "DisableAllSmuFeatures": 0x7,
    "GetRunningSmuFeaturesLow": 0xC, "GetRunningSmuFeaturesHigh": 0xD,
    "SetSoftMinByFreq": 0x19, "SetSoftMaxByFreq": 0x1A, "SetHardMinByFreq": 0x1B, "SetHardMaxByFreq": 0x1C,
    "GetMinDpmFreq": 0x1D, "GetMaxDpmFreq": 0x1E, "GetDpmFreqByIndex": 0x1F,
    "AllowGfxOff": 0x28, "DisallowGfxOff": 0x29,
    "PrepareMp1ForUnload": 0x2E, "SetPptLimit": 0x32, "GetPptLimit": 0x33,
}
MSG_NAMES = {v: k for k, v in PPSMC_MSG.items()}

# smu13_driver_if_v13_0_0.h / _v13_0_7.h / smu14_driver_if_v14_0.h: PPCLK_e (the same four first entries in each).
PPCLK: dict[str, int] = {"GFXCLK": 0, "SOCCLK": 1, "UCLK": 2, "FCLK": 3}
# The same headers' FEATURE_DPM_*_BIT: the feature that must run for a clock to have DPM levels
# (smu_cmn_clk_dpm_is_enabled).
CLOCK_DPM_FEATURE: dict[str, int] = {"GFXCLK": 1, "UCLK": 3, "FCLK": 4, "SOCCLK": 5}
COMPUTE_CLOCKS = ("GFXCLK", "SOCCLK", "UCLK", "FCLK")
MAX_DPM_LEVELS = 16  # smu_v13_0.h / smu_v14_0.h MAX_DPM_LEVELS
DPM_LEVEL_COUNT = 0xFF  # smu_v13_0_get_dpm_level_count: level index 0xff asks for the number of levels
DPM_FINE_GRAINED = 1 << 31  # smu_v13_0_get_fine_grained_status: bit 31 of that answer; the value is bits 30:0
POWER_SOURCE_AC = 0  # smu13_driver_if_v13_0_0.h / smu14_driver_if_v14_0.h POWER_SOURCE_e; GetPptLimit takes it << 16

# smu_v13_0.h / smu_v14_0.h: MP1_Public | smnMP1_FIRMWARE_FLAGS, read with RREG32_PCIE in *_check_fw_status.
MP1_PUBLIC = 0x03B00000
SMN_MP1_FIRMWARE_FLAGS = 0x3010024
FIRMWARE_FLAGS_INTERRUPTS_ENABLED = 1 << 0  # MP1_FIRMWARE_FLAGS__INTERRUPTS_ENABLED_MASK (mp_13_0_0_sh_mask.h)

ALL_FEATURES = (1 << 64) - 1  # smu_v13_0_0_get_allowed_feature_mask starts from all 64 bits set
RESPONSE_TIMEOUT_S = 2.0  # __smu_cmn_poll_stat: adev->usec_timeout (100 ms) * 20 polls of udelay(1) ~ 2 s


@dataclass(frozen=True)
class SMUVariant:
    """What differs between the MP1 versions this driver knows: the kernel's ppt file, the driver-interface version it
    pairs with, the argument PrepareMp1ForUnload takes, and where the power-limit (PPT) feature bit sits."""
    name: str
    driver_if_version: int
    unload_arg: int
    ppt_feature_bit: int
    sources: str


# amdgpu_smu.c smu_set_funcs: which ppt file drives which MP1 version.
VARIANTS: dict[tuple[int, int, int], SMUVariant] = {
    # smu13_driver_if_v13_0_0.h SMU13_0_0_DRIVER_IF_VERSION 0x3D; smu_v13_0_0_set_mp1_state sends Unload with 0x55;
    # smu_v13_0_0_ppt.c feature map: SMU_FEATURE_PPT_BIT = FEATURE_THROTTLERS_BIT (24).
    (13, 0, 0): SMUVariant("smu_v13_0_0", 0x3D, 0x55, 24, "smu_v13_0_0_ppt.c"),
    (13, 0, 10): SMUVariant("smu_v13_0_0", 0x3D, 0x55, 24, "smu_v13_0_0_ppt.c"),
    # smu13_driver_if_v13_0_7.h 0x35; smu_v13_0_7_set_mp1_state -> smu_cmn_set_mp1_state (argument 0); bit 24.
    (13, 0, 7): SMUVariant("smu_v13_0_7", 0x35, 0x0, 24, "smu_v13_0_7_ppt.c"),
    # smu_v14_0.h SMU14_DRIVER_IF_VERSION_SMU_V14_0_2 0x2E (14.0.2 and 14.0.3); smu_cmn_set_mp1_state (argument 0);
    # smu14_driver_if_v14_0.h FEATURE_THROTTLERS_BIT is 23.
    (14, 0, 2): SMUVariant("smu_v14_0_2", 0x2E, 0x0, 23, "smu_v14_0_2_ppt.c"),
    (14, 0, 3): SMUVariant("smu_v14_0_2", 0x2E, 0x0, 23, "smu_v14_0_2_ppt.c"),
}


class SMUError(HCQError):
    """The SMU could not be brought up or did not do what was asked; the message names the step and what to do."""


class SMUResponseError(SMUError):
    """A message was answered with something other than OK, or not at all. `message` (name), `msg_id`, `arg`,
    `response` (the C2PMSG_90 value; 0 when it never answered) and `errno` (the kernel's name for it) say which."""

    def __init__(self, text: str, *, message: str, msg_id: int, arg: int, response: int):
        super().__init__(text)
        self.message, self.msg_id, self.arg, self.response = message, msg_id, arg, response
        self.errno = RESPONSES.get(response, ("", "EREMOTEIO", ""))[1]


class SMUTimeoutError(SMUResponseError):
    """The SMU left the response register at 0 past the timeout (the kernel's -ETIME)."""


class SMUHungError(SMUError):
    """An earlier answer was not a known response code, so (as smu_cmn.c's SMU_FW_HANG) nothing more is sent."""


def _msg_label(msg_id: int) -> str:
    name = MSG_NAMES.get(msg_id)
    return f"{name} ({msg_id:#x})" if name else f"message {msg_id:#x}"


def decode_version(v: int) -> str:
    """An SMU firmware version as the kernel prints it: program, then major.minor.debug (smu_v13_0_check_fw_version)."""
    return f"{v:#010x} (program {v >> 24 & 0xFF}, {v >> 16 & 0xFF}.{v >> 8 & 0xFF}.{v & 0xFF})"


@dataclass
class ClockInfo:
    """One clock's DPM table as the SMU reports it (MHz): `levels` (empty when its DPM feature is off), whether the
    SMU treats it as fine grained, and the soft range last set (None: never set by us)."""
    name: str
    dpm_enabled: bool
    levels: list[int] = field(default_factory=list)
    fine_grained: bool = False
    soft_range: Optional[tuple[int, int]] = None

    @property
    def min(self) -> Optional[int]:
        return self.levels[0] if self.levels else None

    @property
    def max(self) -> Optional[int]:
        return self.levels[-1] if self.levels else None


class SMU:
    """The SMU (MP1) IP block of an AMDevice, driven as amdgpu's swsmu drives smu_v13_0 / smu_v14_0 dGPUs.

    `init(dev)` brings it up (see the module docstring) and records `versions`, `enabled_features`, `power_limit`
    (watts), `clocks` (ClockInfo by name) and `timings` (seconds per step). Options: `timeout` (seconds per wait,
    2 s as the kernel), `allowed_features` (the 64-bit mask sent with SetAllowedFeaturesMask*), `scpm` (True: the
    PSP owns the feature mask, so it is not sent; None: take `dev.scpm_enabled` when the PSP block set it),
    `power_limit_w` (set this PPT limit during init; None: only read it), `clocks` (the clocks whose DPM levels are
    read), `strict_versions` (a version mismatch is an error instead of a warning; the kernel only warns),
    `check_fw_status` (read MP1_FIRMWARE_FLAGS first, as smu_start_smc_engine does).

    `send(msg, arg)` sends any message by name or id and returns its result. `idle_power()`, `restore_clocks()`,
    `set_power_limit()`, `suspend()`/`resume()` and `fini()` follow amdgpu's IP-block shape.
    """

    def __init__(self, *, timeout: float = RESPONSE_TIMEOUT_S, allowed_features: int = ALL_FEATURES,
                 scpm: Optional[bool] = None, power_limit_w: Optional[int] = None,
                 clocks: Iterable[str] = COMPUTE_CLOCKS, strict_versions: bool = False, check_fw_status: bool = True):
        unknown = [c for c in clocks if c not in PPCLK]
        if unknown:
            raise ValueError(f"unknown clock(s) {unknown}; the SMU clocks this driver knows are {list(PPCLK)}")
        if not 0 <= allowed_features <= ALL_FEATURES:
            raise ValueError(f"allowed_features {allowed_features:#x} must fit 64 bits (NUM_FEATURES is 64)")
        self.timeout = timeout
        self.allowed_features = allowed_features
        self.scpm_option = scpm
        self.power_limit_w = power_limit_w
        self.clock_names = tuple(clocks)
        self.strict_versions = strict_versions
        self.check_fw_status_option = check_fw_status
        self.dev: Optional["AMDevice"] = None
        self.bdf = ""
        self.ip_version: Optional[tuple[int, ...]] = None
        self.variant: Optional[SMUVariant] = None
        self.scpm = False
        self.versions: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.enabled_features = 0
        self.power_limit: Optional[int] = None
        self.clocks: dict[str, ClockInfo] = {}
        self.timings: dict[str, float] = {}
        self.messages_sent = 0
        self.state = "down"  # down -> running -> idle/suspended -> unloaded
        self.hung: Optional[str] = None
        self._first = True
        self._io: Optional[RegisterFile] = None
        self._msg = self._arg = self._resp = None  # type: Optional[Reg]
        self._lock = threading.Lock()  # smu->message_lock: one message at a time

    # --- wiring ---
    def _attach(self, dev: "AMDevice") -> None:
        if dev.regs is None or dev.discovery is None:
            raise SMUError(f"{dev.bdf}: the SMU needs an opened device (registers and IP discovery); open the AMDevice "
                           f"first")
        self.dev, self.bdf = dev, dev.bdf
        version = tuple(dev.discovery.version("MP1"))
        self.ip_version = version
        variant = VARIANTS.get(version[:3])  # type: ignore[index]
        if variant is None:
            known = ", ".join(".".join(map(str, v)) for v in VARIANTS)
            raise SMUError(f"{self.bdf}: MP1 (SMU) {'.'.join(map(str, version))} is not supported by the AM SMU "
                           f"driver (it knows {known}: the gfx11 and gfx12 dGPUs); add its ppt facts to "
                           f"drivers/am/smu.py VARIANTS")
        self.variant = variant
        self._io = dev.regs  # past-BAR registers and SMN go through the RSMU pair there
        # smu_v13_0_0_ppt.c / smu_v13_0.c / smu_v14_0_2_ppt.c set_smu_mailbox_registers
        self._msg = dev.regs.reg("MP1", "MP1_SMN_C2PMSG_66")
        self._arg = dev.regs.reg("MP1", "MP1_SMN_C2PMSG_82")
        self._resp = dev.regs.reg("MP1", "MP1_SMN_C2PMSG_90")
        scpm = self.scpm_option
        if scpm is None:
            scpm = bool(getattr(dev, "scpm_enabled", False))  # the PSP block sets it from the SOS (amdgpu_psp.c)
        self.scpm = scpm

    def _step(self, name: str, fn, *args):
        t = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.timings[name] = time.monotonic() - t

    # --- the IP block ---
    def init(self, dev: "AMDevice") -> "SMU":
        """Bring the SMU up on `dev` (smu_hw_init for a compute-only driver); returns self."""
        total = time.monotonic()
        self.timings = {}
        self.warnings = []
        self.versions = {}
        self.clocks = {}
        self.state = "down"  # a fresh bring-up, whatever an earlier init or fini left
        self._attach(dev)
        self.hung = None
        self._first = True  # smu_start_smc_engine: smc_fw_state = SMU_FW_INIT
        if self.check_fw_status_option:
            self._step("fw_status", self.check_fw_status)
        self._step("versions", self.check_versions)
        self._setup()
        self.timings["total"] = time.monotonic() - total
        log.info("%s: SMU %s up in %.1f ms: features %#018x, power limit %s W, %s", self.bdf,
                 self.versions.get("smu_version_text"), self.timings["total"] * 1e3, self.enabled_features,
                 self.power_limit, ", ".join(f"{c.name} {c.min}-{c.max} MHz" for c in self.clocks.values()
                                             if c.levels))
        return self

    def _setup(self) -> None:
        """smu_smc_hw_setup, trimmed: features, power limit, clocks."""
        if not self.scpm:  # smu_smc_hw_setup: SetAllowedFeaturesMask* is not permitted with SCPM
            self._step("allowed_features", self.set_allowed_features, self.allowed_features)
        self._step("enable_features", self.send, "EnableAllSmuFeatures", 0)  # smu_v13_0_system_features_control
        self._step("enabled_features", self.read_enabled_features)
        self._step("power_limit", self._power_limit_step)
        self._step("clocks", self.read_clocks)
        self.state = "running"

    def fini(self, unload: bool = True) -> None:
        """Leave the SMU: with `unload` send PrepareMp1ForUnload (smu_cmn_set_mp1_state PP_MP1_STATE_UNLOAD; the PMFW
        itself disables the DPM features on 13.0.0/13.0.7/13.0.10/14.0.2/14.0.3, smu_disable_dpms) — after it the
        SMU takes no more messages until the card is reset. Without `unload`, pin the clocks low (idle_power) and
        leave the SMU running for a warm boot. Safe to call twice; a hung SMU is left as it is."""
        if self.dev is None or self.state in ("down", "unloaded") or self.hung:
            return
        t = time.monotonic()
        if unload:
            assert self.variant is not None
            self.send("PrepareMp1ForUnload", self.variant.unload_arg)
            self.state = "unloaded"
        else:
            self.idle_power()
        self.timings["fini"] = time.monotonic() - t

    def suspend(self) -> None:
        """Park the card: lowest clocks (the PMFW handles the DPM features itself on these parts)."""
        self.idle_power()
        self.state = "suspended"

    def resume(self) -> None:
        """Run the setup part of init again (features, power limit, clocks) on a running SMU."""
        if self.dev is None:
            raise SMUError("the SMU was never initialised: call init(dev) first")
        self._check_usable("resume")
        self._setup()

    # --- the mailbox ---
    def _check_usable(self, what: str) -> None:
        if self.hung:
            raise SMUHungError(f"{self.bdf}: the SMU is hung ({self.hung}), so {what} is not sent; the card needs a "
                               f"reset (mode1 reset or a power cycle) before its SMU answers again")
        if self.state == "unloaded":
            raise SMUError(f"{self.bdf}: the SMU was prepared for unload (PrepareMp1ForUnload), so {what} is not "
                           f"sent; reset the card and init the SMU again")

    def _poll(self, timeout: float) -> int:
        """__smu_cmn_poll_stat: read the response register until it is non-zero or `timeout` passes (bounded)."""
        assert self._io is not None and self._resp is not None
        deadline = time.monotonic() + timeout
        delay = 0.0
        spins = 0
        while True:
            value = self._io.read(self._resp)
            if value != RESP_NONE:
                return value
            if time.monotonic() >= deadline:
                return self._io.read(self._resp)  # the last word: read again before giving up
            spins += 1
            if spins > 32:  # a few quick reads first (an SMU answers in microseconds), then back off to 1 ms
                delay = min(0.001, max(20e-6, delay * 2))
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))

    def send(self, msg: Union[str, int], arg: int = 0, *, timeout: Optional[float] = None) -> int:
        """Send one message (name from PPSMC_MSG, or a raw id) with a 32-bit argument, wait for its answer and return
        the result read from the argument register (smu_cmn_send_smc_msg_with_param with read_arg). Raises
        SMUResponseError (SMUTimeoutError when it never answers) naming the message, argument and answer."""
        if self._io is None:
            raise SMUError("the SMU was never initialised: call init(dev) first")
        if isinstance(msg, str):
            if msg not in PPSMC_MSG:
                raise ValueError(f"unknown SMU message {msg!r}; known: {', '.join(PPSMC_MSG)}")
            msg_id = PPSMC_MSG[msg]
        else:
            msg_id = msg
        if not 0 <= msg_id <= 0xFFFF:
            raise ValueError(f"SMU message id {msg_id:#x} does not fit 16 bits (__smu_cmn_send_msg takes a u16)")
        if not 0 <= arg <= 0xFFFFFFFF:
            raise ValueError(f"SMU message argument {arg:#x} does not fit 32 bits")
        timeout = self.timeout if timeout is None else timeout
        label = _msg_label(msg_id)
        assert self._msg is not None and self._arg is not None and self._resp is not None
        with self._lock:
            self._check_usable(label)
            if self._first:
                self._first = False  # SMU_FW_INIT: ignore the initial response register value
            else:
                prev = self._poll(timeout)
                if prev == RESP_NONE:
                    last_msg, last_arg = self._io.read(self._msg), self._io.read(self._arg)
                    raise SMUTimeoutError(
                        f"{self.bdf}: the SMU has not finished its previous message ({_msg_label(last_msg)}, argument "
                        f"{last_arg:#010x}: MP1_SMN_C2PMSG_90 stayed 0 for {timeout:.2f} s), so {label} with argument "
                        f"{arg:#010x} was not sent. A busy SMU answers within milliseconds; one that never does is "
                        f"hung and needs a card reset", message=MSG_NAMES.get(msg_id, label), msg_id=msg_id, arg=arg,
                        response=prev)
                if prev not in RESPONSES or RESPONSES[prev][1] == "EREMOTEIO":
                    self.hung = f"the previous message's response register reads {prev:#x}"
                    self._check_usable(label)
            # __smu_cmn_send_msg: clear the response, then argument, then message (the message write starts it)
            self._io.write(self._resp, 0)
            self._io.write(self._arg, arg)
            self._io.write(self._msg, msg_id)
            self.messages_sent += 1
            resp = self._poll(timeout)
            if resp != RESP_OK:
                raise self._response_error(label, msg_id, arg, resp, timeout)
            return self._io.read(self._arg)  # smu_cmn_read_arg

    def _response_error(self, label: str, msg_id: int, arg: int, resp: int, timeout: float) -> SMUResponseError:
        name = MSG_NAMES.get(msg_id, label)
        if resp == RESP_NONE:
            return SMUTimeoutError(
                f"{self.bdf}: the SMU did not answer {label} with argument {arg:#010x} within {timeout:.2f} s "
                f"(MP1_SMN_C2PMSG_90 stayed 0, the kernel's -ETIME). Its firmware may still be busy, or hung: a longer "
                f"timeout or a card reset (mode1 reset or a power cycle) is what is left", message=name,
                msg_id=msg_id, arg=arg, response=resp)
        code, errno, meaning = RESPONSES.get(resp, (f"{resp:#x}", "EREMOTEIO", "not a response code the kernel knows"))
        if errno == "EREMOTEIO":
            self.hung = f"{label} was answered {resp:#x}"  # smu_cmn.c: -EREMOTEIO puts the SMU in SMU_FW_HANG
        hint = {
            RESP_CMD_FAIL: "the SMU ran it and it failed: check the argument against what this part supports",
            RESP_CMD_UNKNOWN: f"the running SMU firmware ({self.versions.get('smu_version_text', 'version unknown')}) "
                              f"does not implement it: update the SMU firmware (smu_*.bin) or do not send it",
            RESP_CMD_BAD_PREREQ: "the SMU refused it in its present state (a feature it needs is off, or the argument "
                                 "is out of range)",
            RESP_BUSY_OTHER: "send it again after a short wait",
        }.get(resp, "the SMU is now considered hung; the card needs a reset before it answers again")
        return SMUResponseError(f"{self.bdf}: SMU message {label} with argument {arg:#010x} was answered {resp:#x} "
                                f"({code}, -{errno}: {meaning}); {hint}", message=name, msg_id=msg_id, arg=arg,
                                response=resp)

    # --- bring-up steps ---
    def check_fw_status(self) -> None:
        """smu_v13_0_check_fw_status / smu_v14_0_check_fw_status: the SMU firmware runs once MP1_FIRMWARE_FLAGS
        has INTERRUPTS_ENABLED (read through SMN at MP1_Public | smnMP1_FIRMWARE_FLAGS)."""
        assert self._io is not None
        flags = self._io.smn_read(MP1_PUBLIC | SMN_MP1_FIRMWARE_FLAGS)
        self.versions["firmware_flags"] = flags
        if not flags & FIRMWARE_FLAGS_INTERRUPTS_ENABLED:
            raise SMUError(f"{self.bdf}: the SMU firmware is not running: MP1_FIRMWARE_FLAGS (SMN "
                           f"{MP1_PUBLIC | SMN_MP1_FIRMWARE_FLAGS:#x}) reads {flags:#010x} and INTERRUPTS_ENABLED (bit "
                           f"0) is clear (amdgpu: 'SMC is not ready'). The PSP loads the SMU firmware (smu_*.bin): "
                           f"bring the PSP up first, and check its load of the SMC image succeeded")

    def check_versions(self) -> dict[str, Any]:
        """smu_cmn_get_smc_version then *_check_fw_version: the interface version against the one the kernel pairs
        with this MP1 version, and the running firmware's version against the smc image's ucode_version."""
        assert self.variant is not None and self.dev is not None
        if_version = self.send("GetDriverIfVersion")
        smu_version = self.send("GetSmuVersion")
        image = None
        fw = getattr(self.dev, "firmware", None)
        if fw is not None and "smc" in fw:
            image = fw["smc"]
        v = dict(self.versions)
        v.update(smu_version=smu_version, smu_version_text=decode_version(smu_version), if_version=if_version,
                 expected_if_version=self.variant.driver_if_version, variant=self.variant.name,
                 ip_version=".".join(map(str, self.ip_version or ())),
                 firmware=getattr(image, "name", None), firmware_version=getattr(image, "ucode_version", None))
        self.versions = v
        problems = []
        if if_version != self.variant.driver_if_version:
            # smu_v13_0_check_fw_version: "not critical as our fw is designed to be backward compatible"
            problems.append(f"the SMU firmware speaks driver interface {if_version:#x}, the kernel's "
                            f"{self.variant.sources} is written for {self.variant.driver_if_version:#x}")
        if image is not None and image.ucode_version != smu_version:
            problems.append(f"the SMU runs firmware {decode_version(smu_version)} but the smc image {image.name} is "
                            f"{decode_version(image.ucode_version)}: the running firmware is not the one in this "
                            f"firmware set (an earlier driver loaded another, or the PSP did not load ours)")
        for p in problems:
            msg = f"{self.bdf}: {p}"
            self.warnings.append(msg)
            log.warning("%s", msg)
        if problems and self.strict_versions:
            raise SMUError(f"{self.bdf}: SMU version check failed (strict_versions): " + "; ".join(problems) +
                           ". Install the matching firmware (firmware-amd-graphics / linux-firmware) and cold-boot "
                           "the card, or open it with strict_versions=False")
        return v

    def set_allowed_features(self, mask: int) -> None:
        """smu_v13_0_set_allowed_mask: the high 32 bits, then the low 32 bits."""
        self.send("SetAllowedFeaturesMaskHigh", mask >> 32 & 0xFFFFFFFF)
        self.send("SetAllowedFeaturesMaskLow", mask & 0xFFFFFFFF)

    def read_enabled_features(self) -> int:
        """smu_cmn_get_enabled_mask (no GetEnabledSmuFeatures on these parts): GetRunningSmuFeaturesHigh, then Low."""
        high = self.send("GetRunningSmuFeaturesHigh")
        low = self.send("GetRunningSmuFeaturesLow")
        self.enabled_features = high << 32 | low
        return self.enabled_features

    def feature_enabled(self, bit: int) -> bool:
        """Whether feature `bit` (a FEATURE_*_BIT of the driver_if header) was running at the last read."""
        return bool(self.enabled_features >> bit & 1)

    @property
    def ppt_enabled(self) -> bool:
        """SMU_FEATURE_PPT_BIT (FEATURE_THROTTLERS_BIT) is running: power limits can be read and set."""
        assert self.variant is not None
        return self.feature_enabled(self.variant.ppt_feature_bit)

    def _power_limit_step(self) -> None:
        if self.power_limit_w is not None:
            self.set_power_limit(self.power_limit_w)
        elif self.ppt_enabled:
            self.read_power_limit()
        else:
            self.power_limit = None  # smu_v13_0_get_current_power_limit: -EINVAL without the PPT feature

    def read_power_limit(self) -> int:
        """smu_v13_0_get_current_power_limit: GetPptLimit with the AC power source in bits 31:16; watts."""
        self._require_ppt("read the power limit")
        self.power_limit = self.send("GetPptLimit", POWER_SOURCE_AC << 16)
        return self.power_limit

    def set_power_limit(self, watts: int) -> int:
        """smu_v13_0_set_power_limit: SetPptLimit(watts), then read it back (GetPptLimit). Returns the limit the SMU
        reports; a different value than asked is a warning (the firmware clamps to its table's range)."""
        if not 1 <= watts <= 0xFFFF:
            raise ValueError(f"power limit {watts} W is out of range (1..65535 W)")
        self._require_ppt(f"set a power limit of {watts} W")
        self.send("SetPptLimit", watts)
        got = self.read_power_limit()
        if got != watts:
            msg = f"{self.bdf}: asked the SMU for a {watts} W power limit, it reports {got} W"
            self.warnings.append(msg)
            log.warning("%s", msg)
        return got

    def _require_ppt(self, what: str) -> None:
        assert self.variant is not None
        if not self.ppt_enabled:
            raise SMUError(f"{self.bdf}: cannot {what}: the SMU's PPT feature (FEATURE_THROTTLERS_BIT, bit "
                           f"{self.variant.ppt_feature_bit}) is not running (enabled features "
                           f"{self.enabled_features:#018x}); the kernel answers -EOPNOTSUPP here. Enable the "
                           f"features first (init), and allow that bit in allowed_features")

    def read_clocks(self, names: Optional[Iterable[str]] = None) -> dict[str, ClockInfo]:
        """smu_v13_0_set_single_dpm_table for each clock whose DPM feature runs: the level count (index 0xff; bit 31
        says fine grained), then each level's frequency in MHz (bits 30:0)."""
        for name in (names or self.clock_names):
            clk = PPCLK[name]
            info = ClockInfo(name, self.feature_enabled(CLOCK_DPM_FEATURE[name]))
            if info.dpm_enabled:
                answer = self.send("GetDpmFreqByIndex", clk << 16 | DPM_LEVEL_COUNT)
                count = answer & ~DPM_FINE_GRAINED
                info.fine_grained = bool(answer & DPM_FINE_GRAINED)
                if not 1 <= count <= MAX_DPM_LEVELS:
                    raise SMUError(f"{self.bdf}: the SMU reports {count} DPM levels for {name} (answer {answer:#x}); "
                                   f"a clock has 1 to {MAX_DPM_LEVELS} (MAX_DPM_LEVELS)")
                info.levels = [self.send("GetDpmFreqByIndex", clk << 16 | i) & ~DPM_FINE_GRAINED
                               for i in range(count)]
            old = self.clocks.get(name)
            if old is not None:
                info.soft_range = old.soft_range
            self.clocks[name] = info
        return self.clocks

    def set_soft_range(self, name: str, min_mhz: int, max_mhz: int) -> None:
        """smu_v13_0_set_soft_freq_limited_range: SetSoftMaxByFreq, then SetSoftMinByFreq, each (clock << 16) | MHz.
        A clock without DPM is left alone, as the kernel does."""
        info = self.clocks.get(name)
        if info is None:
            raise SMUError(f"{self.bdf}: clock {name} was not read; read_clocks([{name!r}]) first")
        if not info.dpm_enabled:
            return
        if not 0 < min_mhz <= max_mhz <= 0xFFFF:
            raise ValueError(f"{name}: soft range {min_mhz}..{max_mhz} MHz must satisfy 0 < min <= max <= 65535")
        clk = PPCLK[name]
        self.send("SetSoftMaxByFreq", clk << 16 | max_mhz)
        self.send("SetSoftMinByFreq", clk << 16 | min_mhz)
        info.soft_range = (min_mhz, max_mhz)

    def idle_power(self) -> None:
        """Pin every read clock with DPM to its lowest level (the leaving path's low-power state)."""
        t = time.monotonic()
        self._check_usable("idle_power")
        for info in self.clocks.values():
            if info.levels:
                self.set_soft_range(info.name, info.levels[0], info.levels[0])
        self.state = "idle"
        self.timings["idle_power"] = time.monotonic() - t

    def restore_clocks(self) -> None:
        """Give every read clock its full DPM range back (AMD_DPM_FORCED_LEVEL_AUTO: the table's min..max)."""
        self._check_usable("restore_clocks")
        for info in self.clocks.values():
            if info.levels:
                self.set_soft_range(info.name, info.levels[0], info.levels[-1])
        self.state = "running"

    def alive(self, timeout: float = 0.1) -> bool:
        """Whether the SMU answers GetSmuVersion within `timeout` (for a warm-boot decision). Never raises for a
        silent or refusing SMU."""
        try:
            self.send("GetSmuVersion", timeout=timeout)
        except (SMUError, RegisterError):
            return False
        return True

    # --- reports ---
    def describe(self) -> dict[str, Any]:
        """The SMU's state as plain data (gpu_probe, --json)."""
        return dict(
            ip_version=".".join(map(str, self.ip_version or ())), variant=self.variant.name if self.variant else None,
            state=self.state, hung=self.hung, scpm=self.scpm,
            versions={k: v for k, v in self.versions.items()}, warnings=list(self.warnings),
            enabled_features=f"{self.enabled_features:#018x}", power_limit_w=self.power_limit,
            clocks={n: dict(dpm_enabled=c.dpm_enabled, levels_mhz=list(c.levels), fine_grained=c.fine_grained,
                            soft_range_mhz=list(c.soft_range) if c.soft_range else None)
                    for n, c in self.clocks.items()},
            messages_sent=self.messages_sent, timings={k: round(v, 6) for k, v in self.timings.items()})

    def __repr__(self) -> str:
        return f"SMU({self.bdf or 'unattached'}, {self.variant.name if self.variant else '?'}, {self.state})"


__all__ = ["ALL_FEATURES", "CLOCK_DPM_FEATURE", "COMPUTE_CLOCKS", "ClockInfo", "MSG_NAMES", "PPCLK", "PPSMC_MSG",
           "RESPONSES", "SMU", "SMUError", "SMUHungError", "SMUResponseError", "SMUTimeoutError", "SMUVariant",
           "VARIANTS", "decode_version"]
