"""The PSP (MP0): bootloader stages up to the secure OS, the KM (GPCOM) ring, the TMR, and loading each IP's firmware.

The order is amdgpu's for psp_v13_0 (gfx11: MP0 13.0.x) and psp_v14_0 (gfx12: MP0 14.0.x), Linux 6.12:
amdgpu_psp.c psp_load_fw -> psp_ring_init, psp_hw_start (bootloader stages, psp_ring_create, psp_tmr_init with
LOAD_TOC, the SMU firmware where the PMFW manages DF C-states, psp_tmr_load with SETUP_TMR), then
psp_load_non_psp_fw (LOAD_IP_FW for each ucode in enum AMDGPU_UCODE_ID order, then AUTOLOAD_RLC after RLC_G).

Where the buffers live: amdgpu puts the 1 MiB firmware staging buffer and the ucode buffer in GTT and the ring, the
command and the fence buffers in VRAM-or-GTT, and hands the PSP their MC addresses through GART. AM brings the PSP up
before any GART exists, so all five live in system memory (drivers.pci DMABuffer) and the PSP is given their bus
addresses (`bus_to_mc`, identity by default; a GMC that maps system memory through an aperture supplies its own).
The staging buffer must be contiguous on the bus and 1 MiB aligned (C2PMSG_36 takes the address >> 20). The TMR is
in VRAM, as amdgpu places it (AMDGPU_HAS_VRAM), given to the PSP by MC address (fb_base + offset).

Stricter than the kernel, on purpose: a non-zero response status is an error naming the firmware, the command and
the status (psp_cmd_submit_buf only warns on bare metal); the secure OS is waited for as C2PMSG_81 becoming
non-zero (psp_v13_0_bootloader_load_sos waits for it to change from a value read 20 ms after the command, which
misses an SOS that came up inside those 20 ms). Like the kernel, psp_v13_0 stages the KDB for the SPL command
(psp_v13_0_bootloader_load_spl passes &psp->kdb in 6.12); psp_v14_0 stages the SPL.

psp_gfx_if.h is not generated (autogen has no binding for it): the structs this file needs are declared below, each
field cited to the header; their sizes are checked at import.
"""
from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from drivers.am.discovery import discovery_offset
from drivers.pci.interface import DMABuffer, PCIError
from hcq.errors import HCQError

if TYPE_CHECKING:
    from drivers.am.device import AMDevice
    from firmware.select import FirmwareSet
    from firmware.ucode import FirmwareImage

log = logging.getLogger(__name__)

u32 = ctypes.c_uint32


# --- psp_gfx_if.h (Linux 6.12 drivers/gpu/drm/amd/amdgpu/psp_gfx_if.h) ---
class PspGfxRbFrame(ctypes.Structure):
    """struct psp_gfx_rb_frame: one 64-byte KM ring entry."""
    _fields_ = [("cmd_buf_addr_lo", u32),  # +0  bits [31:0] of the command buffer address
                ("cmd_buf_addr_hi", u32),  # +4  bits [63:32]
                ("cmd_buf_size", u32),  # +8  command buffer size in bytes
                ("fence_addr_lo", u32),  # +12 bits [31:0] of the fence address
                ("fence_addr_hi", u32),  # +16 bits [63:32]
                ("fence_value", u32),  # +20 fence value
                ("sid_lo", u32),  # +24 SID (RBI only)
                ("sid_hi", u32),  # +28
                ("vmid", ctypes.c_uint8),  # +32 VMID of every address in the frame
                ("frame_type", ctypes.c_uint8),  # +33 1: destroy context frame (RBI only)
                ("reserved1", ctypes.c_uint8 * 2),  # +34
                ("reserved2", u32 * 7)]  # +36 (total 64 bytes)


class PspGfxCmdLoadIpFw(ctypes.Structure):
    """struct psp_gfx_cmd_load_ip_fw."""
    _fields_ = [("fw_phy_addr_lo", u32),  # bits [31:0] of the firmware's address (4 KB aligned)
                ("fw_phy_addr_hi", u32),  # bits [63:32]
                ("fw_size", u32),  # firmware size in bytes
                ("fw_type", u32)]  # enum psp_gfx_fw_type


class PspGfxCmdSetupTmr(ctypes.Structure):
    """struct psp_gfx_cmd_setup_tmr (the bitfield union is `tmr_flags`: bit 0 sriov_enabled, bit 1 virt_phy_addr)."""
    _fields_ = [("buf_phy_addr_lo", u32),  # bits [31:0] of the TMR's GPU address (4 KB aligned)
                ("buf_phy_addr_hi", u32),  # bits [63:32]
                ("buf_size", u32),  # bytes, a multiple of 4 KB
                ("tmr_flags", u32),  # union { bitfield {sriov_enabled:1, virt_phy_addr:1, reserved:30}; tmr_flags }
                ("system_phy_addr_lo", u32),  # bits [31:0] of the TMR's system physical address
                ("system_phy_addr_hi", u32)]  # bits [63:32]


class PspGfxCmdLoadToc(ctypes.Structure):
    """struct psp_gfx_cmd_load_toc."""
    _fields_ = [("toc_phy_addr_lo", u32),  # bits [31:0] of the TOC's address (4 KB aligned)
                ("toc_phy_addr_hi", u32),  # bits [63:32]
                ("toc_size", u32)]  # bytes


TMR_FLAG_VIRT_PHY_ADDR = 1 << 1  # psp_gfx_cmd_setup_tmr.bitfield.virt_phy_addr: both addresses are given
GFX_BUF_MAX_DESC = 64  # psp_gfx_if.h
# union psp_gfx_commands is as large as its largest member, psp_gfx_cmd_invoke_cmd: session_id, ta_cmd_id and a
# psp_gfx_buf_list (num_desc, total_size, 64 x psp_gfx_buf_desc of 3 dwords: "total 776 bytes").
_COMMANDS_SIZE = 8 + 8 + GFX_BUF_MAX_DESC * 12


class PspGfxCommands(ctypes.Union):
    """union psp_gfx_commands (only the members AM sends are named; `raw` gives it the header's size)."""
    _fields_ = [("cmd_setup_tmr", PspGfxCmdSetupTmr),
                ("cmd_load_ip_fw", PspGfxCmdLoadIpFw),
                ("cmd_load_toc", PspGfxCmdLoadToc),
                ("raw", ctypes.c_uint8 * _COMMANDS_SIZE)]


class PspGfxResp(ctypes.Structure):
    """struct psp_gfx_resp (96 bytes)."""
    _fields_ = [("status", u32),  # +0  status of command execution
                ("session_id", u32),  # +4  session ID (LOAD_TA)
                ("fw_addr_lo", u32),  # +8  bits [31:0] of the firmware's address within the TMR (LOAD_IP_FW)
                ("fw_addr_hi", u32),  # +12 bits [63:32]
                ("tmr_size", u32),  # +16 TMR size to reserve (LOAD_TOC)
                ("reserved", u32 * 11),  # +20
                ("uresp", u32 * 8)]  # +64 union psp_gfx_uresp (largest: psp_gfx_uresp_reserved, 8 dwords)


class PspGfxCmdResp(ctypes.Structure):
    """struct psp_gfx_cmd_resp (1024 bytes): the command buffer a ring frame points to; the PSP writes `resp`."""
    _fields_ = [("buf_size", u32),  # +0  total size of the buffer
                ("buf_version", u32),  # +4  PSP_GFX_CMD_BUF_VERSION
                ("cmd_id", u32),  # +8  command ID
                ("resp_buf_addr_lo", u32),  # +12 RBI only (0 on GPCOM)
                ("resp_buf_addr_hi", u32),  # +16
                ("resp_offset", u32),  # +20
                ("resp_buf_size", u32),  # +24
                ("cmd", PspGfxCommands),  # +28 command-specific structures
                ("reserved_1", ctypes.c_uint8 * (864 - _COMMANDS_SIZE - 28)),
                ("resp", PspGfxResp),  # +864 response
                ("reserved_2", ctypes.c_uint8 * (1024 - 864 - 96))]


assert ctypes.sizeof(PspGfxRbFrame) == 64 and ctypes.sizeof(PspGfxResp) == 96
assert ctypes.sizeof(PspGfxCmdResp) == 1024 and PspGfxCmdResp.resp.offset == 864 and PspGfxCmdResp.cmd.offset == 28

# enum psp_gfx_cmd_id (psp_gfx_if.h)
GFX_CMD_ID_SETUP_TMR = 0x5
GFX_CMD_ID_LOAD_IP_FW = 0x6
GFX_CMD_ID_DESTROY_TMR = 0x7
GFX_CMD_ID_LOAD_TOC = 0x20
GFX_CMD_ID_AUTOLOAD_RLC = 0x21
CMD_NAMES = {GFX_CMD_ID_SETUP_TMR: "SETUP_TMR", GFX_CMD_ID_LOAD_IP_FW: "LOAD_IP_FW", GFX_CMD_ID_DESTROY_TMR:
             "DESTROY_TMR", GFX_CMD_ID_LOAD_TOC: "LOAD_TOC", GFX_CMD_ID_AUTOLOAD_RLC: "AUTOLOAD_RLC"}
# enum psp_gfx_crtl_cmd_id (psp_gfx_if.h)
GFX_CTRL_CMD_ID_DESTROY_RINGS = 0x00030000
# enum psp_ring_type (amdgpu_psp.h)
PSP_RING_TYPE_KM = 2
# enum psp_bootloader_cmd (amdgpu_psp.h)
PSP_BL_LOAD_SYSDRV = 0x10000
PSP_BL_LOAD_SOSDRV = 0x20000
PSP_BL_LOAD_KEY_DATABASE = 0x80000
PSP_BL_LOAD_SOCDRV = 0xB0000
PSP_BL_LOAD_DBGDRV = 0xC0000  # PSP_BL__LOAD_HADDRV is the same value (psp_v14_0 renamed dbg_drv had_drv)
PSP_BL_LOAD_INTFDRV = 0xD0000
PSP_BL_LOAD_RASDRV = 0xE0000
PSP_BL_LOAD_IPKEYMGRDRV = 0xF0000
PSP_BL_LOAD_TOS_SPL_TABLE = 0x10000000

# enum psp_gfx_fw_type (psp_gfx_if.h), the ones gfx11/gfx12 parts load.
GFX_FW_TYPE = {
    "CP_ME": 1, "CP_PFP": 2, "CP_MEC": 4, "CP_MEC_ME1": 5, "RLC_V": 7, "RLC_G": 8, "SDMA0": 9, "SMU": 18,
    "RLC_RESTORE_LIST_GPM_MEM": 20, "RLC_RESTORE_LIST_SRM_MEM": 21, "RLC_RESTORE_LIST_SRM_CNTL": 22, "RLC_P": 25,
    "RLC_IRAM": 26, "GLOBAL_TAP_DELAYS": 27, "SE0_TAP_DELAYS": 28, "SE1_TAP_DELAYS": 29, "CP_MES": 33,
    "MES_STACK": 34, "RLC_DRAM_BOOT": 48, "SE2_TAP_DELAYS": 65, "SE3_TAP_DELAYS": 66, "IMU_I": 68, "IMU_D": 69,
    "SDMA_UCODE_TH0": 71, "SDMA_UCODE_TH1": 72, "CP_MES_KIQ": 81, "MES_KIQ_STACK": 82, "RS64_PFP": 87,
    "RS64_ME": 88, "RS64_MEC": 89, "RS64_PFP_P0_STACK": 90, "RS64_PFP_P1_STACK": 91, "RS64_ME_P0_STACK": 92,
    "RS64_ME_P1_STACK": 93, "RS64_MEC_P0_STACK": 94, "RS64_MEC_P1_STACK": 95, "RS64_MEC_P2_STACK": 96,
    "RS64_MEC_P3_STACK": 97,
}

PSP_1_MEG = 0x100000  # amdgpu_psp.h: the firmware staging buffer's size and alignment
PSP_FENCE_BUFFER_SIZE = 0x1000  # amdgpu_psp.h
PSP_CMD_BUFFER_SIZE = 0x1000  # amdgpu_psp.h
PSP_RING_SIZE = 0x1000  # amdgpu_psp.c psp_ring_init: ring->ring_size
PSP_TMR_SIZE = 0x400000  # amdgpu_psp.h PSP_TMR_SIZE (every part but Aldebaran)
PSP_TMR_ALIGNMENT = 0x100000  # amdgpu_psp.h
PAGE = 0x1000

# Timeouts, from the kernel's loops: psp_wait_for polls adev->usec_timeout (100000) times 1 us apart; the bootloader
# waits retry it 10 times (psp_v13_0/psp_v14_0 wait_for_bootloader); a command waits psp_timeout (20000) polls of
# 60-100 us (psp_cmd_submit_buf). The SOS wait is one psp_wait_for, which a real SOS meets; 1 s is given here.
BOOTLOADER_TIMEOUT_S = 1.0
SOS_TIMEOUT_S = 1.0
RING_TIMEOUT_S = 0.1
CMD_TIMEOUT_S = 2.0
HANDSHAKE_DELAY_S = 0.02  # psp_v13_0/psp_v14_0: "there might be handshake issue with hardware which needs delay"


class PSPError(HCQError):
    """The PSP failed a stage or a command; the message names the stage or firmware, the register or command, the
    value or status seen, and what to do."""


@dataclass(frozen=True)
class PSPVersionInfo:
    """What differs between the PSP versions AM drives (amdgpu_psp.c psp_early_init, psp_v13_0.c, psp_v14_0.c)."""
    reg_prefix: str  # psp_v13_0: regMP0_SMN_C2PMSG_*; psp_v14_0: regMPASP_SMN_C2PMSG_*
    bootloader_mask: int  # psp_v13_0_wait_for_bootloader: mask 0xffffffff; psp_v14_0: 0x80000000
    autoload: bool  # psp->autoload_supported
    boot_time_tmr: bool  # psp->boot_time_tmr
    pmfw_cstate: bool  # psp->pmfw_centralized_cstate_management (the SMU firmware goes before SETUP_TMR)
    spl_from_kdb: bool  # psp_v13_0_bootloader_load_spl stages &psp->kdb (6.12)
    has_ipkeymgr: bool  # only psp_v14_0 has bootloader_load_ipkeymgr_drv
    reads_sos_version: bool  # psp_v13_0_init_sos_version: C2PMSG_58


def _v13(autoload: bool = True, boot_time_tmr: bool = False, pmfw: bool = False) -> PSPVersionInfo:
    return PSPVersionInfo("MP0_SMN_C2PMSG_", 0xFFFFFFFF, autoload, boot_time_tmr, pmfw, True, False, True)


def _v14() -> PSPVersionInfo:
    return PSPVersionInfo("MPASP_SMN_C2PMSG_", 0x80000000, True, True, False, False, True, False)


VERSIONS: dict[tuple[int, int, int], PSPVersionInfo] = {
    (13, 0, 0): _v13(pmfw=True), (13, 0, 7): _v13(pmfw=True), (13, 0, 10): _v13(),  # psp_early_init, _cstate_mgmt
    (13, 0, 6): _v13(autoload=False, boot_time_tmr=True), (13, 0, 14): _v13(autoload=False, boot_time_tmr=True),
    (14, 0, 2): _v14(), (14, 0, 3): _v14(),
}

# amdgpu_psp.c psp_hw_start: the bootloader stages in order: (SOS image section, command, stage name).
BOOT_STAGES = (("kdb", PSP_BL_LOAD_KEY_DATABASE, "KDB"), ("spl", PSP_BL_LOAD_TOS_SPL_TABLE, "SPL"),
               ("sys_drv", PSP_BL_LOAD_SYSDRV, "SYS_DRV"), ("soc_drv", PSP_BL_LOAD_SOCDRV, "SOC_DRV"),
               ("intf_drv", PSP_BL_LOAD_INTFDRV, "INTF_DRV"), ("dbg_drv", PSP_BL_LOAD_DBGDRV, "DBG_DRV"),
               ("ras_drv", PSP_BL_LOAD_RASDRV, "RAS_DRV"), ("ipkeymgr_drv", PSP_BL_LOAD_IPKEYMGRDRV, "IPKEYMGR_DRV"),
               ("sos", PSP_BL_LOAD_SOSDRV, "SOS"))


@dataclass(frozen=True)
class Ucode:
    """One LOAD_IP_FW: amdgpu's ucode id name, the psp_gfx_fw_type, the firmware role and section, the bytes."""
    name: str
    fw_type: int
    role: str
    section: str
    data: bytes = field(repr=False)


@dataclass
class LoadRecord:
    """A command the PSP accepted: what, the fence value it wrote back, the response (fw address in the TMR)."""
    command: str
    name: str
    fw_type: Optional[int]
    size: int
    fence: int
    fw_addr: int = 0


def _blob(img: "FirmwareImage", section: str) -> bytes:
    s = img.sections.get(section)
    return b"" if s is None else img.data[s.offset:s.end]


def ucode_list(fw: "FirmwareSet", *, autoload: bool = True) -> list[Ucode]:
    """The LOAD_IP_FW list in enum AMDGPU_UCODE_ID order (amdgpu_ucode.h), as psp_load_non_psp_fw walks it.

    Which ids a part registers follows each IP's init_microcode with load_type PSP: amdgpu_sdma.c (v2: TH0/TH1, v3:
    RS64), gfx_v11_0.c/gfx_v12_0.c through amdgpu_gfx_cp_init_microcode (RS64 with v2 headers; gfx12 has one PFP/ME
    stack and two MEC stacks, gfx11 two and four), amdgpu_mes.c (pipe 0: CP_MES/_DATA, pipe 1: CP_MES1/_DATA; with
    uni_mes both pipes take the one image), imu_v11_0.c/imu_v12_0.c, amdgpu_rlc.c (v2.1 restore lists, v2.2 IRAM/DRAM,
    RLC_P/V only for exactly v2.3, tap delays only for v2.4). Empty sections are skipped (fw_load_skip_check), so are
    the SMC (loaded on its own when autoload is supported) and the MEC jump table under autoload."""
    out: list[Ucode] = []

    def add(name: str, fw_type: str, role: str, section: str, data: Optional[bytes] = None) -> None:
        if role not in fw:
            return
        blob = _blob(fw[role], section) if data is None else data
        if blob:
            out.append(Ucode(name, GFX_FW_TYPE[fw_type], role, section, blob))

    if "sdma" in fw:
        major = fw["sdma"].header_version[0]
        if major == 1:
            add("SDMA0", "SDMA0", "sdma", "ucode")
        elif major == 2:
            add("SDMA_UCODE_TH0", "SDMA_UCODE_TH0", "sdma", "ctx")
            add("SDMA_UCODE_TH1", "SDMA_UCODE_TH1", "sdma", "ctl")
        else:
            add("SDMA_RS64", "SDMA_UCODE_TH0", "sdma", "ucode")  # psp_get_fw_type: SDMA_RS64 -> TH0
    rs64 = "pfp" in fw and fw["pfp"].header_version[0] == 2  # gfx_v11_0_init_microcode: rs64_enable by header
    gfx12 = "pfp" in fw and fw["pfp"].ip_version[0] >= 12
    if not rs64:
        add("CP_PFP", "CP_PFP", "pfp", "payload", fw["pfp"].payload if "pfp" in fw else b"")
        add("CP_ME", "CP_ME", "me", "payload", fw["me"].payload if "me" in fw else b"")
    else:
        add("CP_RS64_PFP", "RS64_PFP", "pfp", "ucode")
        add("CP_RS64_ME", "RS64_ME", "me", "ucode")
        add("CP_RS64_MEC", "RS64_MEC", "mec", "ucode")
        for p in range(1 if gfx12 else 2):
            add(f"CP_RS64_PFP_P{p}_STACK", f"RS64_PFP_P{p}_STACK", "pfp", "data")
        for p in range(1 if gfx12 else 2):
            add(f"CP_RS64_ME_P{p}_STACK", f"RS64_ME_P{p}_STACK", "me", "data")
        for p in range(2 if gfx12 else 4):
            add(f"CP_RS64_MEC_P{p}_STACK", f"RS64_MEC_P{p}_STACK", "mec", "data")
    if not rs64:
        add("CP_MEC1", "CP_MEC", "mec", "ucode")
        if not autoload:
            add("CP_MEC1_JT", "CP_MEC_ME1", "mec", "jt")
    kiq = "mes_kiq" if "mes_kiq" in fw else "mes"  # uni_mes: amdgpu_mes_init_microcode gives both pipes one image
    add("CP_MES", "CP_MES", "mes", "ucode")
    add("CP_MES_DATA", "MES_STACK", "mes", "data")
    add("CP_MES1", "CP_MES_KIQ", kiq, "ucode")
    add("CP_MES1_DATA", "MES_KIQ_STACK", kiq, "data")
    add("IMU_I", "IMU_I", "imu", "iram")
    add("IMU_D", "IMU_D", "imu", "dram")
    if "rlc" in fw:
        minor = fw["rlc"].header_version[1]
        if minor == 4:
            for n, t in (("GLOBAL", "GLOBAL"), ("SE0", "SE0"), ("SE1", "SE1"), ("SE2", "SE2"), ("SE3", "SE3")):
                add(f"{n}_TAP_DELAYS", f"{t}_TAP_DELAYS", "rlc", f"{n.lower()}_tap_delays")
        if minor >= 1:
            add("RLC_RESTORE_LIST_CNTL", "RLC_RESTORE_LIST_SRM_CNTL", "rlc", "restore_list_cntl")
            add("RLC_RESTORE_LIST_GPM_MEM", "RLC_RESTORE_LIST_GPM_MEM", "rlc", "restore_list_gpm")
            add("RLC_RESTORE_LIST_SRM_MEM", "RLC_RESTORE_LIST_SRM_MEM", "rlc", "restore_list_srm")
        if minor >= 2:
            add("RLC_IRAM", "RLC_IRAM", "rlc", "iram")
            add("RLC_DRAM", "RLC_DRAM_BOOT", "rlc", "dram")
        if minor == 3:
            add("RLC_P", "RLC_P", "rlc", "rlcp")
            add("RLC_V", "RLC_V", "rlc", "rlcv")
        add("RLC_G", "RLC_G", "rlc", "ucode")
    if not autoload:
        add("SMC", "SMU", "smc", "ucode")
    return out


def smc_ucode(fw: "FirmwareSet") -> Optional[Ucode]:
    """The SMU firmware as psp_load_smu_fw loads it (AMDGPU_UCODE_ID_SMC: the common payload), or None."""
    if "smc" not in fw:
        return None
    data = _blob(fw["smc"], "ucode")
    return Ucode("SMC", GFX_FW_TYPE["SMU"], "smc", "ucode", data) if data else None


class _Window:
    """A contiguous, suitably aligned range of a DMABuffer: its CPU address, bus address and size."""

    def __init__(self, buf: DMABuffer, offset: int, size: int):
        self.buf, self.offset, self.size = buf, offset, size
        self.host = buf.host_addr + offset
        self.bus = buf.bus_address(offset)

    def write(self, data: bytes, at: int = 0) -> None:
        ctypes.memmove(self.host + at, data, len(data))

    def read(self, size: int, at: int = 0) -> bytes:
        return ctypes.string_at(self.host + at, size)

    def zero(self, size: Optional[int] = None) -> None:
        ctypes.memset(self.host, 0, self.size if size is None else size)

    def u32(self, at: int = 0) -> int:
        return ctypes.c_uint32.from_address(self.host + at).value


def _contiguous_window(buf: DMABuffer, size: int, align: int) -> Optional[int]:
    """The first offset in `buf` where `size` bytes are contiguous on the bus and the bus address is `align`-aligned."""
    ps = buf.page_size
    pages = buf.bus_pages
    need = (size + ps - 1) // ps
    for first in range(0, len(pages) - need + 1):
        if pages[first] % align:
            continue
        if all(pages[first + i] == pages[first] + i * ps for i in range(need)):
            return first * ps
    return None


class PSP:
    """The PSP block (amdgpu's IP-block shape): `init(dev)` brings the PSP up and loads every IP firmware the set
    holds, `fini()` tears down the TMR and the ring and frees its memory, `suspend()`/`resume()` as amdgpu's.

    After init: `version` (MP0), `sos_was_alive` (warm: the bootloader stages were skipped), `stages` (the
    bootloader stages run), `sos_version` (C2PMSG_58 on psp_v13_0), `tmr_size`, `tmr_offset` (VRAM) and `tmr_mc`
    (None when the PSP keeps a boot-time TMR), `loaded` (LoadRecords in order), `timings` (seconds per stage).

    Options: `bus_to_mc` maps a bus address to the address the PSP is given (identity); `fb_base` is VRAM's MC base
    (default: dev.gmc.fb_base, else MMMC_VM_FB_LOCATION_BASE as mmhub_v3_0_get_fb_location reads it); `tmr_offset`
    places the TMR in VRAM (default: top of VRAM below the discovery table, 1 MiB aligned); the timeouts bound
    each wait; `handshake_delay_s` is the kernel's 20 ms after ring and SOS commands; `poll_s` the poll interval.
    """

    def __init__(self, *, bus_to_mc: Optional[Callable[[int], int]] = None, fb_base: Optional[int] = None,
                 fb_offset: Optional[int] = None, tmr_offset: Optional[int] = None,
                 bootloader_timeout: float = BOOTLOADER_TIMEOUT_S, sos_timeout: float = SOS_TIMEOUT_S,
                 ring_timeout: float = RING_TIMEOUT_S, cmd_timeout: float = CMD_TIMEOUT_S,
                 handshake_delay_s: float = HANDSHAKE_DELAY_S, poll_s: float = 0.0001):
        self.bus_to_mc = bus_to_mc or (lambda a: a)
        self._fb_base, self._fb_offset, self._tmr_offset_opt = fb_base, fb_offset, tmr_offset
        self.bootloader_timeout, self.sos_timeout = bootloader_timeout, sos_timeout
        self.ring_timeout, self.cmd_timeout = ring_timeout, cmd_timeout
        self.handshake_delay_s, self.poll_s = handshake_delay_s, poll_s
        self.dev: Optional["AMDevice"] = None
        self.version: tuple[int, int, int] = (0, 0, 0)
        self.info: Optional[PSPVersionInfo] = None
        self.timings: dict[str, float] = {}
        self.stages: list[str] = []
        self.loaded: list[LoadRecord] = []
        self.sos_was_alive = False
        self.sos_version: Optional[int] = None
        self.tmr_size = 0
        self.tmr_offset: Optional[int] = None
        self.tmr_mc: Optional[int] = None
        self.ring_created = False
        self._fence_value = 0
        self._buffers: list[DMABuffer] = []
        self._fw_pri: Optional[_Window] = None
        self._ring: Optional[_Window] = None
        self._fence: Optional[_Window] = None
        self._cmd: Optional[_Window] = None
        self._fw_buf: Optional[_Window] = None
        self._fw_offsets: dict[str, int] = {}

    # --- naming ---
    @property
    def name(self) -> str:
        return f"{self.dev.bdf if self.dev else '?'}: PSP (MP0 {'.'.join(map(str, self.version))})"

    def _reg(self, n: int):
        assert self.dev is not None and self.dev.regs is not None and self.info is not None
        return self.dev.regs.reg("MP0", f"{self.info.reg_prefix}{n}")

    def _rd(self, n: int) -> int:
        return self.dev.regs.read(self._reg(n))  # type: ignore[union-attr]

    def _wr(self, n: int, value: int) -> None:
        self.dev.regs.write(self._reg(n), value)  # type: ignore[union-attr]

    def _stage(self, name: str, start: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - start

    # --- IP-block interface ---
    def init(self, dev: "AMDevice") -> "PSP":
        """sw_init (buffers) then psp_load_fw: hw_start and every IP firmware. Returns self."""
        self.dev = dev
        if dev.discovery is None or dev.firmware is None or dev.regs is None or dev.pci is None:
            raise PSPError(f"{dev.bdf}: the PSP needs an opened AMDevice (discovery, firmware, registers, PCI)")
        self.version = tuple(dev.discovery.version("MP0"))  # type: ignore[assignment]
        self.info = VERSIONS.get(self.version)
        if self.info is None:
            known = ", ".join(".".join(map(str, v)) for v in sorted(VERSIONS))
            raise PSPError(f"{dev.bdf}: MP0 {'.'.join(map(str, self.version))} is not a PSP version AM drives "
                           f"(psp_v13_0/psp_v14_0 parts: {known})")
        if "sos" not in dev.firmware:
            raise PSPError(f"{self.name}: the firmware set has no SOS image (psp_*_sos.bin); the bootloader stages "
                           f"cannot run without it")
        t = time.monotonic()
        self._sw_init()
        self._stage("sw_init", t)
        try:
            self._load_fw()
        except BaseException:
            self._free()
            raise
        return self

    def fini(self) -> None:
        """psp_hw_fini: DESTROY_TMR when a TMR was set up, destroy the ring, free the buffers. Errors are logged (the
        card may be gone); the buffers are freed either way."""
        try:
            if self.ring_created:
                self._tmr_terminate()
                self._ring_stop()
        except (PSPError, HCQError) as e:
            log.warning("%s: leaving the PSP: %s", self.name, e)
        finally:
            self._free()

    def suspend(self) -> None:
        """psp_suspend: DESTROY_TMR, then stop the ring (the buffers stay for resume)."""
        if self.ring_created:
            self._tmr_terminate()
            self._ring_stop()

    def resume(self) -> None:
        """psp_resume: hw_start again, then every IP firmware."""
        if self._fence is not None:
            self._fence.zero()
        self.loaded.clear()
        self._hw_start()
        self._load_non_psp_fw()

    # --- buffers (psp_sw_init, psp_ring_init, amdgpu_ucode_init_bo) ---
    def _alloc(self, size: int) -> DMABuffer:
        assert self.dev is not None and self.dev.pci is not None
        try:
            buf = self.dev.pci.dma_alloc(size)
        except PCIError as e:
            raise PSPError(f"{self.name}: allocating {size:#x} bytes of DMA memory failed: {e}") from e
        self._buffers.append(buf)
        return buf

    def _sw_init(self) -> None:
        assert self.dev is not None and self.dev.firmware is not None
        # The staging buffer: 1 MiB, contiguous and 1 MiB aligned on the bus (C2PMSG_36 holds address >> 20).
        buf = self._alloc(2 * PSP_1_MEG)
        off = _contiguous_window(buf, PSP_1_MEG, PSP_1_MEG)
        if off is None:
            raise PSPError(f"{self.name}: no 1 MiB-aligned, bus-contiguous 1 MiB window in a 2 MiB DMA buffer (its "
                           f"pages start at {buf.bus_pages[0]:#x}); the PSP bootloader takes the staging buffer's "
                           f"address >> 20 (psp_v13_0_bootloader_load_component), so it needs one. The sysfs backend "
                           f"gives scattered physical pages: use the VFIO backend, whose IOVAs are contiguous")
        self._fw_pri = _Window(buf, off, PSP_1_MEG)
        small = self._alloc(3 * PAGE)  # ring, fence and command buffer: one page each (psp_ring_init, psp_sw_init)
        self._ring = _Window(small, 0, PSP_RING_SIZE)
        self._fence = _Window(small, PAGE, PSP_FENCE_BUFFER_SIZE)
        self._cmd = _Window(small, 2 * PAGE, PSP_CMD_BUFFER_SIZE)
        # amdgpu_ucode_init_bo: every ucode in one buffer, each at a page-aligned offset.
        ucodes = ucode_list(self.dev.firmware, autoload=self.info.autoload)  # type: ignore[union-attr]
        smc = smc_ucode(self.dev.firmware)
        layout, total = {}, 0
        for u in ucodes + ([smc] if smc else []):
            layout[u.name] = total
            total += (len(u.data) + PAGE - 1) // PAGE * PAGE
        if total:
            fwb = self._alloc(total)
            if _contiguous_window(fwb, total, PAGE) != 0:
                raise PSPError(f"{self.name}: the {total:#x}-byte ucode buffer is not contiguous on the bus; each "
                               f"LOAD_IP_FW takes one address and a size. Use the VFIO backend")
            self._fw_buf = _Window(fwb, 0, total)
            for u in ucodes + ([smc] if smc else []):
                self._fw_buf.write(u.data, layout[u.name])
        self._fw_offsets = layout

    def _free(self) -> None:
        pci = self.dev.pci if self.dev is not None else None
        for buf in self._buffers:
            try:
                if pci is not None:
                    pci.dma_free(buf)
            except PCIError as e:
                log.info("%s: freeing a DMA buffer: %s", self.name, e)
        self._buffers.clear()
        self._fw_pri = self._ring = self._fence = self._cmd = self._fw_buf = None
        self.ring_created = False

    # --- psp_load_fw ---
    def _load_fw(self) -> None:
        assert self._fence is not None
        self._fence.zero()  # psp_load_fw: memset(psp->fence_buf, 0, PSP_FENCE_BUFFER_SIZE)
        self._hw_start()
        self._load_non_psp_fw()
        log.info("%s: up (%s), %d firmware loaded, TMR %s", self.name, "warm" if self.sos_was_alive else "cold",
                 len(self.loaded), f"{self.tmr_size:#x} at VRAM {self.tmr_offset:#x}" if self.tmr_offset is not None
                 else "boot-time")

    def _hw_start(self) -> None:
        """psp_hw_start."""
        assert self.info is not None and self.dev is not None
        t = time.monotonic()
        self.sos_was_alive = self.is_sos_alive()
        if not self.sos_was_alive:
            self._bootloader()
        elif self.info.reads_sos_version:
            self.sos_version = self._rd(58)  # psp_v13_0_bootloader_load_sos: alive -> init_sos_version
        self._stage("bootloader", t)

        t = time.monotonic()
        self._ring_create()
        self._stage("ring", t)

        t = time.monotonic()
        if not self.info.boot_time_tmr or self.info.autoload:
            self._tmr_init()
        if self.info.pmfw_cstate:  # "TMR setup should be performed after PMFW loaded"
            self._load_smu_fw()
        if not self.info.boot_time_tmr or not self.info.autoload:
            self._tmr_load()
        self._stage("tmr", t)

    # --- bootloader ---
    def is_sos_alive(self) -> bool:
        """psp_v13_0_is_sos_alive / psp_v14_0_is_sos_alive: C2PMSG_81 (the sOS sign of life) is non-zero."""
        return self._rd(81) != 0

    def _wait(self, what: str, n: int, mask: int, want: int, timeout: float, hint: str) -> int:
        """psp_wait_for: poll C2PMSG_<n> until (value & mask) == want, bounded; PSPError naming everything if not."""
        start = time.monotonic()
        while True:
            value = self._rd(n)
            if value & mask == want:
                return value
            waited = time.monotonic() - start
            if waited >= timeout:
                reg = self._reg(n)
                raise PSPError(f"{self.name}: {what}: timed out after {waited:.3f} s waiting for {reg.name} & "
                               f"{mask:#010x} == {want:#010x}; it reads {value:#010x}" + (f". {hint}" if hint else ""))
            if self.poll_s:
                time.sleep(self.poll_s)

    def _wait_bootloader(self, stage: str) -> None:
        """psp_v13_0/psp_v14_0_wait_for_bootloader: C2PMSG_35 ready (bit 31; v13 wants every other bit clear)."""
        assert self.info is not None
        try:
            self._wait(f"bootloader stage {stage}", 35, self.info.bootloader_mask, 0x80000000,
                       self.bootloader_timeout, "")
        except PSPError as e:
            value = self._rd(35)
            why = (f"the bootloader is ready but reports status {value & 0xFFFF:#06x} for the last command (bits "
                   f"[15:0]): it refused the staged component" if value & 0x80000000 and value & 0xFFFF else
                   "the bootloader never signalled ready (bit 31)")
            raise PSPError(f"{e.args[0]}. {why}. A PSP that does not answer needs a cold boot (function reset or "
                           f"power cycle); a refused component means the SOS image does not match this card "
                           f"(check psp_*_sos.bin)") from None

    def _stage_copy(self, data: bytes, what: str) -> int:
        """psp_copy_fw: zero the staging buffer, copy the component; returns the address the PSP is given."""
        assert self._fw_pri is not None
        if not data or len(data) > PSP_1_MEG:
            raise PSPError(f"{self.name}: {what} is {len(data)} bytes; psp_copy_fw takes 1 byte to 1 MiB "
                           f"('PSP firmware is invalid'): the SOS image is corrupt")
        self._fw_pri.zero()
        self._fw_pri.write(data)
        return self.bus_to_mc(self._fw_pri.bus)

    def _bootloader(self) -> None:
        assert self.info is not None and self.dev is not None and self.dev.firmware is not None
        sos = self.dev.firmware["sos"]
        for section, cmd, stage in BOOT_STAGES:
            if stage == "IPKEYMGR_DRV" and not self.info.has_ipkeymgr:
                continue  # psp_v13_0 has no bootloader_load_ipkeymgr_drv
            source = "kdb" if stage == "SPL" and self.info.spl_from_kdb else section
            if not _blob(sos, section):  # is_psp_fw_valid: the component must be in the image
                continue
            t = time.monotonic()
            data = _blob(sos, source)
            if self.is_sos_alive():  # psp_v13_0_bootloader_load_component: the sOS came up already
                break
            self._wait_bootloader(stage)
            addr = self._stage_copy(data, f"the {stage} component of {sos.name}")
            self._wr(36, addr >> 20)  # "Provide the PSP KDB to bootloader": the staging buffer's address >> 20
            self._wr(35, cmd)
            if stage == "SOS":
                if self.handshake_delay_s:
                    time.sleep(self.handshake_delay_s)  # psp_v13_0_bootloader_load_sos: mdelay(20)
                self._wait_sos()
                if self.info.reads_sos_version:
                    self.sos_version = self._rd(58)  # psp_v13_0_init_sos_version
            else:
                self._wait_bootloader(stage)
            self.stages.append(stage)
            self._stage(f"bootloader_{stage.lower()}", t)

    def _wait_sos(self) -> None:
        start = time.monotonic()
        while True:
            value = self._rd(81)
            if value:
                return
            waited = time.monotonic() - start
            if waited >= self.sos_timeout:
                raise PSPError(f"{self.name}: bootloader stage SOS: the secure OS gave no sign of life: "
                               f"{self._reg(81).name} still reads {value:#010x} {waited:.3f} s after "
                               f"LOAD_SOSDRV (C2PMSG_35 reads {self._rd(35):#010x}). The SOS image may not match "
                               f"this card (check psp_*_sos.bin), or the PSP is hung: cold-boot the card")
            if self.poll_s:
                time.sleep(self.poll_s)

    # --- the KM ring ---
    def _ring_create(self) -> None:
        """psp_v13_0_ring_create / psp_v14_0_ring_create (bare metal)."""
        assert self._ring is not None
        if self.sos_was_alive and self._rd(71) != 0:
            # Warm: an earlier process left its ring; destroy it first (not in amdgpu, whose suspend stops it).
            self._ring_stop()
        self._wait("KM ring creation (waiting for the sOS to be ready)", 64, 0x80000000, 0x80000000,
                   self.ring_timeout, "The secure OS is not ready for a ring; cold-boot the card")
        self._ring.zero()
        mc = self.bus_to_mc(self._ring.bus)
        self._wr(69, mc & 0xFFFFFFFF)
        self._wr(70, mc >> 32)
        self._wr(71, PSP_RING_SIZE)
        self._wr(64, PSP_RING_TYPE_KM << 16)
        if self.handshake_delay_s:
            time.sleep(self.handshake_delay_s)
        try:
            self._wait("KM ring creation", 64, 0x8000FFFF, 0x80000000, self.ring_timeout, "")
        except PSPError as e:
            value = self._rd(64)
            raise PSPError(f"{e.args[0]}" + (f". The sOS refused the ring with status {value & 0xFFFF:#06x}"
                                             if value & 0x80000000 else ". The sOS never answered")
                           + f" (ring at {mc:#x}, {PSP_RING_SIZE:#x} bytes)") from None
        self.ring_created = True

    def _ring_stop(self) -> None:
        """psp_v13_0_ring_stop: GFX_CTRL_CMD_ID_DESTROY_RINGS, then wait for bit 31."""
        self._wr(64, GFX_CTRL_CMD_ID_DESTROY_RINGS)
        if self.handshake_delay_s:
            time.sleep(self.handshake_delay_s)
        self._wait("destroying the KM ring", 64, 0x80000000, 0x80000000, self.ring_timeout, "")
        self.ring_created = False

    def _submit(self, cmd: PspGfxCmdResp, what: str, fw_type: Optional[int] = None, size: int = 0) -> PspGfxResp:
        """psp_cmd_submit_buf + psp_ring_cmd_submit: the command into the command buffer, a frame at the write pointer
        (C2PMSG_67, in dwords), the new write pointer, then a bounded wait for the fence value; the response checked."""
        assert self._cmd is not None and self._fence is not None and self._ring is not None
        name = CMD_NAMES.get(cmd.cmd_id, f"command {cmd.cmd_id:#x}")
        self._cmd.zero()
        self._cmd.write(bytes(cmd))
        self._fence_value += 1
        index = self._fence_value
        ring_dw, frame_dw = PSP_RING_SIZE // 4, ctypes.sizeof(PspGfxRbFrame) // 4
        wptr = self._rd(67)
        slot = 0 if wptr % ring_dw == 0 else wptr // frame_dw
        if slot >= PSP_RING_SIZE // ctypes.sizeof(PspGfxRbFrame):
            raise PSPError(f"{self.name}: {name} for {what}: the ring write pointer {self._reg(67).name} reads "
                           f"{wptr:#x} dwords, past the {ring_dw}-dword ring ('write_frame is pointing to address "
                           f"out of bounds'); the PSP state is corrupt: cold-boot the card")
        cmd_mc, fence_mc = self.bus_to_mc(self._cmd.bus), self.bus_to_mc(self._fence.bus)
        frame = PspGfxRbFrame(cmd_buf_addr_lo=cmd_mc & 0xFFFFFFFF, cmd_buf_addr_hi=cmd_mc >> 32,
                              fence_addr_lo=fence_mc & 0xFFFFFFFF, fence_addr_hi=fence_mc >> 32, fence_value=index)
        self._ring.write(bytes(frame), slot * ctypes.sizeof(PspGfxRbFrame))
        self._wr(67, (wptr + frame_dw) % ring_dw)
        start = time.monotonic()
        while self._fence.u32() != index:
            waited = time.monotonic() - start
            if waited >= self.cmd_timeout:
                resp = PspGfxCmdResp.from_buffer_copy(self._cmd.read(ctypes.sizeof(PspGfxCmdResp)))
                raise PSPError(f"{self.name}: {name} for {what} timed out: the fence at {fence_mc:#x} reads "
                               f"{self._fence.u32()} after {waited:.3f} s, waiting for {index} (ring write pointer "
                               f"{self._rd(67):#x}, response status {resp.resp.status:#x}). The sOS stopped "
                               f"answering: cold-boot the card")
            if self.poll_s:
                time.sleep(self.poll_s)
        resp = PspGfxCmdResp.from_buffer_copy(self._cmd.read(ctypes.sizeof(PspGfxCmdResp))).resp
        if resp.status:
            raise PSPError(f"{self.name}: {name} for {what} failed: the PSP answered status {resp.status:#010x} "
                           f"(psp_gfx_resp.status; fence {index})" + (f", firmware type {fw_type}, {size} bytes"
                                                                      if fw_type is not None else "")
                           + ". The image may be corrupt or not meant for this card: check its file")
        self.loaded.append(LoadRecord(name, what, fw_type, size, index,
                                      resp.fw_addr_lo | (resp.fw_addr_hi << 32)))
        return resp

    # --- TMR ---
    def _vram_bases(self) -> tuple[int, int]:
        """(fb_base, fb_offset): VRAM's MC base and its physical base (mmhub_v3_0_get_fb_location/_get_mc_fb_offset)."""
        assert self.dev is not None and self.dev.regs is not None
        gmc = getattr(self.dev, "gmc", None)
        fb_base = self._fb_base if self._fb_base is not None else getattr(gmc, "fb_base", None)
        fb_offset = self._fb_offset if self._fb_offset is not None else getattr(gmc, "fb_offset", None)
        if fb_base is None:
            fb_base = (self.dev.regs.read("MMMC_VM_FB_LOCATION_BASE", "MMHUB") & 0xFFFFFF) << 24
        if fb_offset is None:
            fb_offset = (self.dev.regs.read("MMMC_VM_FB_OFFSET", "MMHUB") & 0xFFFFFF) << 24
        return fb_base, fb_offset

    def _tmr_init(self) -> None:
        """psp_tmr_init: LOAD_TOC when the SOS image has a TOC (the PSP answers the TMR size), then the TMR in VRAM."""
        assert self.dev is not None and self.dev.firmware is not None and self.info is not None
        size = PSP_TMR_SIZE
        toc = _blob(self.dev.firmware["sos"], "toc")
        if toc:
            cmd = PspGfxCmdResp(cmd_id=GFX_CMD_ID_LOAD_TOC)
            addr = self._stage_copy(toc, "the TOC")
            cmd.cmd.cmd_load_toc.toc_phy_addr_lo, cmd.cmd.cmd_load_toc.toc_phy_addr_hi = addr & 0xFFFFFFFF, addr >> 32
            cmd.cmd.cmd_load_toc.toc_size = len(toc)
            size = self._submit(cmd, "the TOC", size=len(toc)).tmr_size
            if not size or size % PAGE:
                raise PSPError(f"{self.name}: LOAD_TOC answered a TMR size of {size:#x} bytes; it must be a "
                               f"non-zero multiple of 4 KiB (psp_gfx_cmd_setup_tmr.buf_size)")
        self.tmr_size = size
        if self.info.boot_time_tmr:
            return  # the PSP keeps the TMR it set up at boot (psp_tmr_init allocates none)
        if self._tmr_offset_opt is not None:
            offset = self._tmr_offset_opt
        else:  # top of VRAM, below the discovery table amdgpu reserves there, PSP_TMR_ALIGNMENT aligned
            offset = (discovery_offset(self.dev.vram_size) - size) // PSP_TMR_ALIGNMENT * PSP_TMR_ALIGNMENT
        if offset < 0 or offset % PSP_TMR_ALIGNMENT or offset + size > self.dev.vram_size:
            raise PSPError(f"{self.name}: a {size:#x}-byte TMR at VRAM {offset:#x} does not fit the "
                           f"{self.dev.vram_size:#x} bytes of VRAM with 1 MiB alignment (PSP_TMR_ALIGNMENT)")
        self.tmr_offset = offset

    def _tmr_load(self) -> None:
        """psp_tmr_load / psp_prep_tmr_cmd_buf: SETUP_TMR with the MC and the physical address, virt_phy_addr set."""
        cmd = PspGfxCmdResp(cmd_id=GFX_CMD_ID_SETUP_TMR)
        tmr = cmd.cmd.cmd_setup_tmr
        if self.tmr_offset is not None:
            fb_base, fb_offset = self._vram_bases()
            self.tmr_mc = fb_base + self.tmr_offset
            pa = fb_offset + self.tmr_offset  # amdgpu_gmc_vram_pa
            tmr.buf_phy_addr_lo, tmr.buf_phy_addr_hi = self.tmr_mc & 0xFFFFFFFF, self.tmr_mc >> 32
            tmr.buf_size = self.tmr_size
            tmr.system_phy_addr_lo, tmr.system_phy_addr_hi = pa & 0xFFFFFFFF, pa >> 32
        tmr.tmr_flags = TMR_FLAG_VIRT_PHY_ADDR
        self._submit(cmd, "the TMR", size=tmr.buf_size)

    def _tmr_terminate(self) -> None:
        """psp_tmr_unload: DESTROY_TMR (sent whenever the ring is up, as amdgpu does)."""
        self._submit(PspGfxCmdResp(cmd_id=GFX_CMD_ID_DESTROY_TMR), "the TMR")

    # --- IP firmware ---
    def _load_ip_fw(self, u: Ucode) -> None:
        """psp_execute_ip_fw_load: LOAD_IP_FW with the ucode's address, size and type."""
        assert self._fw_buf is not None and self.dev is not None and self.dev.firmware is not None
        t = time.monotonic()
        addr = self.bus_to_mc(self._fw_buf.bus + self._fw_offsets[u.name])
        cmd = PspGfxCmdResp(cmd_id=GFX_CMD_ID_LOAD_IP_FW)
        ld = cmd.cmd.cmd_load_ip_fw
        ld.fw_phy_addr_lo, ld.fw_phy_addr_hi = addr & 0xFFFFFFFF, addr >> 32
        ld.fw_size, ld.fw_type = len(u.data), u.fw_type
        what = f"{u.name} ({self.dev.firmware[u.role].name} {u.section})"
        self._submit(cmd, what, fw_type=u.fw_type, size=len(u.data))
        self._stage(f"fw_{u.name.lower()}", t)

    def _load_smu_fw(self) -> None:
        """psp_load_smu_fw."""
        assert self.dev is not None and self.dev.firmware is not None
        u = smc_ucode(self.dev.firmware)
        if u is not None:
            self._load_ip_fw(u)

    def _load_non_psp_fw(self) -> None:
        """psp_load_non_psp_fw: the SMU first (autoload without PMFW C-state management), then each ucode, and
        AUTOLOAD_RLC once RLC_G is in (psp_rlc_autoload_start)."""
        assert self.info is not None and self.dev is not None and self.dev.firmware is not None
        t = time.monotonic()
        if self.info.autoload and not self.info.pmfw_cstate:
            self._load_smu_fw()
        for u in ucode_list(self.dev.firmware, autoload=self.info.autoload):
            self._load_ip_fw(u)
            if self.info.autoload and u.name == "RLC_G":
                self._submit(PspGfxCmdResp(cmd_id=GFX_CMD_ID_AUTOLOAD_RLC), "RLC autoload")
        self._stage("ip_firmware", t)

    def describe(self) -> dict[str, Any]:
        """Plain data for reports: version, warm/cold, stages, TMR, firmware loaded, timings."""
        return dict(version=".".join(map(str, self.version)), warm=self.sos_was_alive, stages=list(self.stages),
                    sos_version=self.sos_version, tmr_size=self.tmr_size, tmr_offset=self.tmr_offset,
                    tmr_mc=self.tmr_mc, loaded=[dict(command=r.command, name=r.name, fw_type=r.fw_type, size=r.size,
                                                     fence=r.fence) for r in self.loaded],
                    timings={k: round(v, 6) for k, v in self.timings.items()})


__all__ = ["BOOT_STAGES", "GFX_FW_TYPE", "LoadRecord", "PSP", "PSPError", "PSPVersionInfo", "PspGfxCmdResp",
           "PspGfxRbFrame", "PspGfxResp", "Ucode", "VERSIONS", "smc_ucode", "ucode_list"]
