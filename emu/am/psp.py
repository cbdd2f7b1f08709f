"""The emulated PSP (MP0): the bootloader mailbox, the secure OS (SOS), its KM (GPCOM) ring and the firmware it loads.

Modelled as amdgpu 6.12 drives psp_v13_0 (gfx11: MP0 13.0.0/13.0.7) and psp_v14_0 (gfx12: MP0 14.0.2/14.0.3), on
bare metal (the SR-IOV mailboxes C2PMSG_101..103 are not modelled, so touching them is a named register error):

Bootloader (psp_v13_0.c / psp_v14_0.c *_bootloader_load_component, *_bootloader_load_sos):
- C2PMSG_35 reads exactly 0x80000000 when the bootloader is idle and ready (v13 waits with mask 0xffffffff, v14 with
  0x80000000). The host stages a component in a 1 MiB buffer, writes its MC address >> 20 to C2PMSG_36 and the
  command (enum psp_bootloader_cmd) to C2PMSG_35; bit 31 clears while the bootloader works and comes back set when
  it is done. A failure sets bits [7:0] (psp_v13_0.c wait_for_bootloader comment: "If there is an error in
  processing command, bits[7:0] will be set") -- v13's exact-match wait then times out; v14's masked wait does not
  see it, but a failed boot never brings the SOS up, so C2PMSG_81 stays 0.
- After LOAD_SOSDRV the SOS comes up: C2PMSG_81 (sign of life) becomes non-zero, C2PMSG_58 holds the SOS version
  (v13 only: psp_v13_0_init_sos_version), C2PMSG_64 reads GFX_FLAG_RESPONSE (psp_gfx_if.h: "When PSP GFX I/F is
  initialized, the flag is set").

The staged bytes must be the matching component of a SOS image the card trusts (a real PSP checks AMD's signature;
this one compares with images it was given: `attach_psp(card, firmware=dir_or_mapping)`, each parsed here with the
autogen/amdgpu_ucode.py layouts, and trusted only when its header is consistent and its crc32 matches the payload).

KM ring (psp_v1x_0_ring_create / ring_stop / ring_set_wptr, amdgpu_psp.c psp_ring_cmd_submit / psp_cmd_submit_buf):
C2PMSG_69/70 ring MC address, C2PMSG_71 size in bytes, C2PMSG_64 = ring type << 16 (KM: 2) creates it,
GFX_CTRL_CMD_ID_DESTROY_RINGS destroys it; the response is bit 31 | status[15:0]. C2PMSG_67 is the write pointer in
dwords; writing it runs the 64-byte frames (struct psp_gfx_rb_frame) up to it: each names a 1 KiB command buffer
(struct psp_gfx_cmd_resp) whose response (at +864) is written before the frame's fence value.

GPCOM commands: SETUP_TMR, DESTROY_TMR, LOAD_TOC (answers the TMR size), LOAD_IP_FW (the payload must be the section
of a trusted IP image that amdgpu_ucode.c amdgpu_ucode_init_single_fw would stage for that fw_type), AUTOLOAD_RLC,
LOAD_ASD / LOAD_TA (a trusted TA component), UNLOAD_TA; INVOKE_CMD and BOOT_CFG answer TEE_ERROR_NOT_SUPPORTED (TAs
are not modelled); anything else PSP_ERR_UNKNOWN_COMMAND. `PSP.loaded` records every accepted IP firmware by
GFX_FW_TYPE (the GFX/SDMA/SMU models read it).

Memory: every address the PSP is given is an MC address. The PSP reads and writes through `card.mc` when a GMC model
has set one (an object with read(mc, size), write(mc, data) and vram_offset(mc) -> int | None); until then through
`FallbackMC`: the FB aperture [fb_base, fb_base + VRAM size) is VRAM (fb_base is `card.fb_base` when set, else
DEFAULT_FB_BASE), and any other address is a bus address reached by the PCI function's DMA (through its IOMMU).

Fault injection (attributes of `card.psp`): `never_ready` (the PSP never answers anything), `hang_at` / `fail_at`
(a bootloader stage, by name ("kdb", "spl", "sys_drv", "soc_drv", "intf_drv", "dbg_drv", "ras_drv",
"ipkeymgr_drv", "sos") that never completes / completes with an error), `ring_hang` (frames are never consumed),
`fail_fw_types` (LOAD_IP_FW of these types answers an error). `latency_s` delays bootloader completion.

Power-on: every power-on or function reset (card.on_power_on) puts the PSP back to the bootloader with nothing
loaded. A card that was brought up and not reset keeps its SOS alive (the kernel then skips the bootloader:
psp_v13_0_is_sos_alive); `PSP.boot_sos()` puts a fresh card in that state directly, for warm-boot tests.
"""
from __future__ import annotations

import ctypes
import enum
import hashlib
import os
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from autogen import amdgpu_ucode as U

MASK32 = 0xFFFFFFFF
MiB = 1 << 20
# amdgpu_ucode.h UCODE_MAX_PSP_PACKAGING: ((sizeof(union header) - sizeof(common header) - 4) / sizeof(desc)) * 2
UCODE_MAX_PSP_PACKAGING = ((ctypes.sizeof(U.union_amdgpu_firmware_header)
                            - ctypes.sizeof(U.struct_common_firmware_header) - 4)
                           // ctypes.sizeof(U.struct_psp_fw_bin_desc)) * 2
PSP_1_MEG = 0x100000  # amdgpu_psp.h: the firmware-private staging buffer (psp_copy_fw refuses more)
DEFAULT_FB_BASE = 0x8000000000  # the FB aperture's MC base the VBIOS leaves (MMMC_VM_FB_LOCATION_BASE << 24) when no
# GMC model says otherwise; an emulator choice (gmc_v11_0.c reads it, it does not set it)

# -- psp_gfx_if.h facts --
GFX_CMD_STATUS_MASK = 0x0000FFFF      # psp_gfx_if.h GFX_CMD_STATUS_MASK
GFX_CMD_ID_MASK = 0x000F0000          # psp_gfx_if.h GFX_CMD_ID_MASK
GFX_FLAG_RESPONSE = 0x80000000        # psp_gfx_if.h GFX_FLAG_RESPONSE / GFX_CMD_RESPONSE_MASK
GFX_CTRL_CMD_ID_INIT_RBI_RING = 0x00010000    # psp_gfx_if.h enum psp_gfx_crtl_cmd_id
GFX_CTRL_CMD_ID_INIT_GPCOM_RING = 0x00020000  # (= PSP_RING_TYPE__KM << 16, what psp_v13_0_ring_create writes)
GFX_CTRL_CMD_ID_DESTROY_RINGS = 0x00030000
PSP_RING_TYPE_KM = 2                  # amdgpu_psp.h enum psp_ring_type PSP_RING_TYPE__KM
PSP_GFX_CMD_BUF_VERSION = 1           # psp_gfx_if.h
PSP_ERR_UNKNOWN_COMMAND = 0x00000100  # psp_gfx_if.h
TEE_SUCCESS = 0x00000000              # psp_gfx_if.h enum tee_error_code
TEE_ERROR_NOT_SUPPORTED = 0xFFFF000A  # psp_gfx_if.h enum tee_error_code
# The header's tee_error_code values are GlobalPlatform's TEE error numbering; these follow the same numbering
# (GlobalPlatform TEE Client API v1.0 section 4.4.2, TEEC_ERROR_*). Which code a real SOS answers for each failure
# is not public: amdgpu only tests status != 0 (psp_cmd_submit_buf), so the choice is the emulator's.
TEE_ERROR_BAD_FORMAT = 0xFFFF0005
TEE_ERROR_BAD_PARAMETERS = 0xFFFF0006
TEE_ERROR_BAD_STATE = 0xFFFF0007
TEE_ERROR_ITEM_NOT_FOUND = 0xFFFF0008
TEE_ERROR_SECURITY = 0xFFFF000F

# Bootloader error codes in C2PMSG_35 bits [7:0]: which values a real bootloader uses is not public (psp_v13_0.c only
# says the bits are set on error), so these are the emulator's.
BL_ERR_BAD_IMAGE = 0x01     # staged bytes are not a trusted component of that kind
BL_ERR_ORDER = 0x02         # a stage that needs an earlier one (SOS without SYS_DRV), or the SOS is already up
BL_ERR_UNKNOWN = 0x03       # not a bootloader command
BL_ERR_INJECTED = 0x7F      # fault injection: fail_at

# enum psp_gfx_cmd_id (psp_gfx_if.h)
GFX_CMD_ID_LOAD_TA = 0x01
GFX_CMD_ID_UNLOAD_TA = 0x02
GFX_CMD_ID_INVOKE_CMD = 0x03
GFX_CMD_ID_LOAD_ASD = 0x04
GFX_CMD_ID_SETUP_TMR = 0x05
GFX_CMD_ID_LOAD_IP_FW = 0x06
GFX_CMD_ID_DESTROY_TMR = 0x07
GFX_CMD_ID_LOAD_TOC = 0x20
GFX_CMD_ID_AUTOLOAD_RLC = 0x21
GFX_CMD_ID_BOOT_CFG = 0x22
CMD_NAMES = {GFX_CMD_ID_LOAD_TA: "LOAD_TA", GFX_CMD_ID_UNLOAD_TA: "UNLOAD_TA", GFX_CMD_ID_INVOKE_CMD: "INVOKE_CMD",
             GFX_CMD_ID_LOAD_ASD: "LOAD_ASD", GFX_CMD_ID_SETUP_TMR: "SETUP_TMR", GFX_CMD_ID_LOAD_IP_FW: "LOAD_IP_FW",
             GFX_CMD_ID_DESTROY_TMR: "DESTROY_TMR", GFX_CMD_ID_LOAD_TOC: "LOAD_TOC",
             GFX_CMD_ID_AUTOLOAD_RLC: "AUTOLOAD_RLC", GFX_CMD_ID_BOOT_CFG: "BOOT_CFG"}


class FWType(enum.IntEnum):
    """enum psp_gfx_fw_type (psp_gfx_if.h): the values LOAD_IP_FW carries for the IPs of gfx11/gfx12 boards."""
    CP_ME = 1
    CP_PFP = 2
    CP_CE = 3
    CP_MEC = 4
    CP_MEC_ME1 = 5
    CP_MEC_ME2 = 6
    RLC_V = 7
    RLC_G = 8
    SDMA0 = 9
    SMU = 18
    RLC_RESTORE_LIST_GPM_MEM = 20
    RLC_RESTORE_LIST_SRM_MEM = 21
    RLC_RESTORE_LIST_SRM_CNTL = 22
    RLC_P = 25
    RLC_IRAM = 26
    GLOBAL_TAP_DELAYS = 27
    SE0_TAP_DELAYS = 28
    SE1_TAP_DELAYS = 29
    CP_MES = 33
    MES_STACK = 34
    RLC_DRAM_BOOT = 48
    SE2_TAP_DELAYS = 65
    SE3_TAP_DELAYS = 66
    IMU_I = 68
    IMU_D = 69
    SDMA_UCODE_TH0 = 71
    SDMA_UCODE_TH1 = 72
    PPTABLE = 73
    CP_MES_KIQ = 81
    MES_KIQ_STACK = 82
    RS64_PFP = 87
    RS64_ME = 88
    RS64_MEC = 89
    RS64_PFP_P0_STACK = 90
    RS64_PFP_P1_STACK = 91
    RS64_ME_P0_STACK = 92
    RS64_ME_P1_STACK = 93
    RS64_MEC_P0_STACK = 94
    RS64_MEC_P1_STACK = 95
    RS64_MEC_P2_STACK = 96
    RS64_MEC_P3_STACK = 97


# enum psp_bootloader_cmd (amdgpu_psp.h) -> the stage's name (the psp_context field the kernel stages from)
class BLCmd(enum.IntEnum):
    """enum psp_bootloader_cmd (amdgpu_psp.h)."""
    LOAD_SYSDRV = 0x10000
    LOAD_SOSDRV = 0x20000
    LOAD_KEY_DATABASE = 0x80000
    LOAD_SOCDRV = 0xB0000
    LOAD_DBGDRV = 0xC0000  # = PSP_BL__LOAD_HADDRV on v14 (psp_v14_0_bootloader_load_dbg_drv)
    LOAD_INTFDRV = 0xD0000
    LOAD_RASDRV = 0xE0000
    LOAD_IPKEYMGRDRV = 0xF0000
    DRAM_LONG_TRAIN = 0x100000
    DRAM_SHORT_TRAIN = 0x200000
    LOAD_TOS_SPL_TABLE = 0x10000000


STAGES = {BLCmd.LOAD_KEY_DATABASE: "kdb", BLCmd.LOAD_TOS_SPL_TABLE: "spl", BLCmd.LOAD_SYSDRV: "sys_drv",
          BLCmd.LOAD_SOCDRV: "soc_drv", BLCmd.LOAD_INTFDRV: "intf_drv", BLCmd.LOAD_DBGDRV: "dbg_drv",
          BLCmd.LOAD_RASDRV: "ras_drv", BLCmd.LOAD_IPKEYMGRDRV: "ipkeymgr_drv", BLCmd.LOAD_SOSDRV: "sos"}

# amdgpu_ucode.h enum psp_fw_type -> component name (parse_sos_bin_descriptor)
_PSP_COMPONENTS = {U.PSP_FW_TYPE_PSP_SOS: "sos", U.PSP_FW_TYPE_PSP_SYS_DRV: "sys_drv", U.PSP_FW_TYPE_PSP_KDB: "kdb",
                   U.PSP_FW_TYPE_PSP_TOC: "toc", U.PSP_FW_TYPE_PSP_SPL: "spl", U.PSP_FW_TYPE_PSP_RL: "rl",
                   U.PSP_FW_TYPE_PSP_SOC_DRV: "soc_drv", U.PSP_FW_TYPE_PSP_INTF_DRV: "intf_drv",
                   U.PSP_FW_TYPE_PSP_DBG_DRV: "dbg_drv", U.PSP_FW_TYPE_PSP_RAS_DRV: "ras_drv",
                   U.PSP_FW_TYPE_PSP_IPKEYMGR_DRV: "ipkeymgr_drv"}


# -- psp_gfx_if.h structures (the few the ring needs), little-endian as the PSP reads them --
class RbFrame(ctypes.LittleEndianStructure):
    """struct psp_gfx_rb_frame (psp_gfx_if.h), 64 bytes."""
    _pack_ = 1
    _fields_ = [("cmd_buf_addr_lo", ctypes.c_uint32),  # +0
                ("cmd_buf_addr_hi", ctypes.c_uint32),  # +4
                ("cmd_buf_size", ctypes.c_uint32),     # +8
                ("fence_addr_lo", ctypes.c_uint32),    # +12
                ("fence_addr_hi", ctypes.c_uint32),    # +16
                ("fence_value", ctypes.c_uint32),      # +20
                ("sid_lo", ctypes.c_uint32),           # +24 (RBI only)
                ("sid_hi", ctypes.c_uint32),           # +28 (RBI only)
                ("vmid", ctypes.c_uint8),              # +32
                ("frame_type", ctypes.c_uint8),        # +33 (RBI only)
                ("reserved1", ctypes.c_uint8 * 2),     # +34 "reserved, must be 0"
                ("reserved2", ctypes.c_uint32 * 7)]    # +36 "reserved, must be 0"


class CmdLoadTA(ctypes.LittleEndianStructure):
    """struct psp_gfx_cmd_load_ta (psp_gfx_if.h)."""
    _pack_ = 1
    _fields_ = [("app_phy_addr_lo", ctypes.c_uint32), ("app_phy_addr_hi", ctypes.c_uint32),
                ("app_len", ctypes.c_uint32), ("cmd_buf_phy_addr_lo", ctypes.c_uint32),
                ("cmd_buf_phy_addr_hi", ctypes.c_uint32), ("cmd_buf_len", ctypes.c_uint32)]


class CmdSetupTMR(ctypes.LittleEndianStructure):
    """struct psp_gfx_cmd_setup_tmr (psp_gfx_if.h); tmr_flags bit 0 sriov_enabled, bit 1 virt_phy_addr."""
    _pack_ = 1
    _fields_ = [("buf_phy_addr_lo", ctypes.c_uint32), ("buf_phy_addr_hi", ctypes.c_uint32),
                ("buf_size", ctypes.c_uint32), ("tmr_flags", ctypes.c_uint32),
                ("system_phy_addr_lo", ctypes.c_uint32), ("system_phy_addr_hi", ctypes.c_uint32)]


class CmdLoadIPFW(ctypes.LittleEndianStructure):
    """struct psp_gfx_cmd_load_ip_fw (psp_gfx_if.h); fw_type is enum psp_gfx_fw_type (an int)."""
    _pack_ = 1
    _fields_ = [("fw_phy_addr_lo", ctypes.c_uint32), ("fw_phy_addr_hi", ctypes.c_uint32),
                ("fw_size", ctypes.c_uint32), ("fw_type", ctypes.c_uint32)]


class CmdLoadTOC(ctypes.LittleEndianStructure):
    """struct psp_gfx_cmd_load_toc (psp_gfx_if.h)."""
    _pack_ = 1
    _fields_ = [("toc_phy_addr_lo", ctypes.c_uint32), ("toc_phy_addr_hi", ctypes.c_uint32),
                ("toc_size", ctypes.c_uint32)]


class CmdResp(ctypes.LittleEndianStructure):
    """struct psp_gfx_resp (psp_gfx_if.h), 96 bytes at +864 of the command buffer."""
    _pack_ = 1
    _fields_ = [("status", ctypes.c_uint32),      # +0
                ("session_id", ctypes.c_uint32),  # +4
                ("fw_addr_lo", ctypes.c_uint32),  # +8
                ("fw_addr_hi", ctypes.c_uint32),  # +12
                ("tmr_size", ctypes.c_uint32),    # +16
                ("reserved", ctypes.c_uint32 * 11),
                ("uresp", ctypes.c_uint32 * 8)]   # +64 union psp_gfx_uresp


class CmdHeader(ctypes.LittleEndianStructure):
    """The first 28 bytes of struct psp_gfx_cmd_resp (psp_gfx_if.h); the command union follows at +28."""
    _pack_ = 1
    _fields_ = [("buf_size", ctypes.c_uint32), ("buf_version", ctypes.c_uint32), ("cmd_id", ctypes.c_uint32),
                ("resp_buf_addr_lo", ctypes.c_uint32), ("resp_buf_addr_hi", ctypes.c_uint32),
                ("resp_offset", ctypes.c_uint32), ("resp_buf_size", ctypes.c_uint32)]


CMD_BUF_SIZE = 1024   # sizeof(struct psp_gfx_cmd_resp): "total size 1024 bytes"
CMD_UNION_OFFSET = 28
RESP_OFFSET = 864     # psp_gfx_cmd_resp.resp: "+864 response"
FRAME_SIZE = ctypes.sizeof(RbFrame)
assert FRAME_SIZE == 64 and ctypes.sizeof(CmdResp) == 96 and ctypes.sizeof(CmdHeader) == CMD_UNION_OFFSET
EMU_TMR_SIZE = 0x400000  # what LOAD_TOC answers: PSP_TMR_SIZE (amdgpu_psp.h) for non-Aldebaran parts; the real size
# depends on the TOC's contents, which are not public


class PSPFirmwareError(ValueError):
    """A firmware image handed to the emulated PSP as trusted is unusable (names the image and what is wrong)."""


@dataclass
class TrustedComponent:
    """One payload the PSP accepts: where it came from and what it is."""
    kind: str        # "kdb", "sys_drv", "sos", "toc", ... or "ip" or "ta:<name>"
    data: bytes
    image: str       # the file name it came from
    version: int = 0

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class LoadedFirmware:
    """A firmware the SOS accepted through LOAD_IP_FW: its type, size, digest, where it came from, where it sits."""
    fw_type: int
    name: str
    size: int
    sha256: str
    image: str
    version: int
    tmr_addr: int


def _hdr(struct_type: Any, data: bytes) -> Any:
    """A header structure read from the start of an image."""
    return struct_type.from_buffer_copy(data[:ctypes.sizeof(struct_type)])


class TrustStore:
    """The images the emulated PSP treats as signed, parsed here with the amdgpu_ucode.h layouts: bootloader
    components by name, IP payloads by GFX_FW_TYPE, TA components. `rejected` says, per image, why it is not trusted."""

    def __init__(self) -> None:
        self.components: dict[str, list[TrustedComponent]] = {}
        self.ip: dict[int, list[TrustedComponent]] = {}
        self.ta: list[TrustedComponent] = []
        self.images: list[str] = []
        self.rejected: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self.images)

    # -- loading --
    @classmethod
    def from_source(cls, source: Union[str, os.PathLike, Mapping[str, bytes], None]) -> "TrustStore":
        """A store from a firmware directory (every *.bin in it; .xz/.zst are not read: give plain images) or a
        mapping of file name -> bytes."""
        store = cls()
        if source is None:
            return store
        if isinstance(source, Mapping):
            items = list(source.items())
        else:
            d = Path(source)
            if not d.is_dir():
                raise PSPFirmwareError(f"emulated PSP firmware directory {d} does not exist or is not a directory")
            items = [(p.name, p.read_bytes()) for p in sorted(d.glob("*.bin"))]
        for name, data in items:
            store.add(name, bytes(data))
        return store

    def add(self, name: str, data: bytes) -> bool:
        """Trust image `name` if its header checks out; returns whether it was trusted (else see `rejected`)."""
        try:
            self._add(name, data)
        except PSPFirmwareError as e:
            self.rejected[name] = str(e)
            return False
        self.images.append(name)
        return True

    def _common(self, name: str, data: bytes) -> Any:
        size = ctypes.sizeof(U.struct_common_firmware_header)
        if len(data) < size:
            raise PSPFirmwareError(f"{name}: {len(data)} bytes, shorter than the {size}-byte common header")
        c = U.struct_common_firmware_header.from_buffer_copy(data[:size])
        # amdgpu_ucode.c amdgpu_ucode_validate: size_bytes must match the file
        if c.size_bytes != len(data):
            raise PSPFirmwareError(f"{name}: header size_bytes {c.size_bytes:#x} but the image is {len(data):#x} "
                                   "bytes")
        if c.header_size_bytes > len(data) or c.ucode_array_offset_bytes + c.ucode_size_bytes > len(data):
            raise PSPFirmwareError(f"{name}: payload [{c.ucode_array_offset_bytes:#x}, +{c.ucode_size_bytes:#x}) or "
                                   f"header ({c.header_size_bytes:#x} bytes) runs past the {len(data):#x}-byte image")
        payload = data[c.ucode_array_offset_bytes:c.ucode_array_offset_bytes + c.ucode_size_bytes]
        # The emulator's stand-in for AMD's signature: crc32 must be zlib's CRC-32 of the payload (firmware/ucode.py
        # documents the same opt-in check; amdgpu itself never checks it)
        if zlib.crc32(payload) != c.crc32:
            raise PSPFirmwareError(f"{name}: crc32 {c.crc32:#010x} does not match the payload "
                                   f"({zlib.crc32(payload):#010x}): not signed as far as the emulated PSP is concerned")
        return c

    def _section(self, name: str, data: bytes, off: int, size: int, what: str) -> bytes:
        if size == 0 or off + size > len(data):
            raise PSPFirmwareError(f"{name}: {what} [{off:#x}, +{size:#x}) is empty or outside the {len(data):#x}-byte "
                                   "image")
        return data[off:off + size]

    def _put_comp(self, kind: str, data: bytes, image: str, version: int = 0) -> None:
        self.components.setdefault(kind, []).append(TrustedComponent(kind, data, image, version))

    def _put_ip(self, fw_type: int, data: bytes, image: str, version: int) -> None:
        self.ip.setdefault(int(fw_type), []).append(TrustedComponent(f"ip:{FWType(fw_type).name}", data, image,
                                                                     version))

    def _add(self, name: str, data: bytes) -> None:
        c = self._common(name, data)
        base = name.removesuffix(".bin")
        major, minor = c.header_version_major, c.header_version_minor
        if base.startswith("psp_") and (base.endswith("_sos") or base.endswith("_sos_kicker")):
            self._add_sos(name, data, c)
        elif base.startswith("psp_") and (base.endswith("_ta") or base.endswith("_ta_kicker")):
            self._add_ta(name, data, c)
        elif base.startswith("psp_") and base.endswith("_toc"):
            # psp_init_toc_microcode: the payload is the TOC
            self._put_comp("toc", self._section(name, data, c.ucode_array_offset_bytes, c.ucode_size_bytes, "toc"),
                           name, c.ucode_version)
        elif base.startswith("gc_") and (base.endswith("_pfp") or base.endswith("_me") or base.endswith("_mec")):
            self._add_cp(name, data, c, base.rsplit("_", 1)[1])
        elif base.startswith("gc_") and "_rlc" in base:
            self._add_rlc(name, data, c)
        elif base.startswith("gc_") and "_imu" in base:
            h = _hdr(U.struct_imu_firmware_header_v1_0, data)
            off = c.ucode_array_offset_bytes  # amdgpu_ucode_init_single_fw IMU_I / IMU_D
            self._put_ip(FWType.IMU_I, self._section(name, data, off, h.imu_iram_ucode_size_bytes, "imu iram"), name,
                         c.ucode_version)
            self._put_ip(FWType.IMU_D, self._section(name, data, off + h.imu_iram_ucode_size_bytes,
                                                     h.imu_dram_ucode_size_bytes, "imu dram"), name, c.ucode_version)
        elif base.startswith("gc_") and "mes" in base:
            self._add_mes(name, data, c, kiq=base.endswith("_mes1"))
        elif base.startswith("sdma_"):
            self._add_sdma(name, data, c)
        elif base.startswith("smu_"):
            # amdgpu_ucode_init_single_fw default: ucode_size_bytes at ucode_array_offset_bytes (AMDGPU_UCODE_ID_SMC)
            self._put_ip(FWType.SMU, self._section(name, data, c.ucode_array_offset_bytes, c.ucode_size_bytes,
                                                   "smc ucode"), name, c.ucode_version)
        elif base.startswith("gc_") and base.endswith("_toc"):
            pass  # the RLC backdoor TOC is not loaded through the PSP
        else:
            raise PSPFirmwareError(f"{name}: not a firmware name the emulated PSP knows (psp_*_sos/_ta/_toc, gc_*_pfp/"
                                   f"_me/_mec/_rlc/_imu/_mes*, sdma_*, smu_*); header v{major}.{minor}")

    def _add_sos(self, name: str, data: bytes, c: Any) -> None:
        major, minor = c.header_version_major, c.header_version_minor
        payload = c.ucode_array_offset_bytes
        if major == 2:
            hdr_t = U.struct_psp_firmware_header_v2_1 if minor == 1 else U.struct_psp_firmware_header_v2_0
            hsize = ctypes.sizeof(hdr_t)
            h = hdr_t.from_buffer_copy(data[:hsize])
            count = h.psp_fw_bin_count
            if count >= UCODE_MAX_PSP_PACKAGING:  # psp_init_sos_microcode: "packed SOS count exceeds maximum limit"
                raise PSPFirmwareError(f"{name}: psp_fw_bin_count {count} exceeds the packaging limit")
            dsize = ctypes.sizeof(U.struct_psp_fw_bin_desc)
            if hsize + count * dsize > len(data):
                raise PSPFirmwareError(f"{name}: {count} descriptors run past the image")
            for i in range(count):  # psp_init_sos_microcode: v2.1 primary [0, count - aux), aux [aux, count)
                d = U.struct_psp_fw_bin_desc.from_buffer_copy(data[hsize + i * dsize:hsize + (i + 1) * dsize])
                comp = _PSP_COMPONENTS.get(d.fw_type)
                if comp is None:
                    continue  # parse_sos_bin_descriptor: "Unsupported PSP FW type" is a warning
                # parse_sos_bin_descriptor: start = header + desc.offset_bytes + ucode_array_offset_bytes
                self._put_comp(comp, self._section(name, data, payload + d.offset_bytes, d.size_bytes, comp), name,
                               d.fw_version)
        elif major == 1:
            h0 = U.struct_psp_firmware_header_v1_0.from_buffer_copy(
                data[:ctypes.sizeof(U.struct_psp_firmware_header_v1_0)])
            # psp_init_sos_base_fw: sys_drv is the payload's first sos.offset_bytes, SOS follows at that offset
            self._put_comp("sys_drv", self._section(name, data, payload, h0.sos.offset_bytes, "sys_drv"), name,
                           c.ucode_version)
            self._put_comp("sos", self._section(name, data, payload + h0.sos.offset_bytes, h0.sos.size_bytes, "sos"),
                           name, h0.sos.fw_version)
            if minor in (1, 2, 3):
                t = {1: U.struct_psp_firmware_header_v1_1, 2: U.struct_psp_firmware_header_v1_2,
                     3: U.struct_psp_firmware_header_v1_3}[minor]
                h = t.from_buffer_copy(data[:ctypes.sizeof(t)])
                if minor == 1:
                    parts = [("toc", h.toc), ("kdb", h.kdb)]
                elif minor == 2:
                    parts = [("kdb", h.kdb)]
                else:  # v1.3: toc/kdb in v1_1, then spl, rl, sys_drv_aux, sos_aux
                    parts = [("toc", h.v1_1.toc), ("kdb", h.v1_1.kdb), ("spl", h.spl), ("rl", h.rl),
                             ("sys_drv", h.sys_drv_aux), ("sos", h.sos_aux)]
                for comp, d in parts:
                    if d.size_bytes:  # offsets are from the payload start (= sys_drv start) in every v1.x
                        self._put_comp(comp, self._section(name, data, payload + d.offset_bytes, d.size_bytes, comp),
                                       name, d.fw_version)
        else:
            raise PSPFirmwareError(f"{name}: SOS header version {major}.{minor} is not one psp_init_sos_microcode "
                                   "takes (1.x, 2.x)")

    def _add_ta(self, name: str, data: bytes, c: Any) -> None:
        if c.header_version_major != 2:
            return  # v1 TA images: the TAs are not modelled beyond v2's packed table
        hsize = ctypes.sizeof(U.struct_ta_firmware_header_v2_0)
        h = U.struct_ta_firmware_header_v2_0.from_buffer_copy(data[:hsize])
        dsize = ctypes.sizeof(U.struct_psp_fw_bin_desc)
        for i in range(h.ta_fw_bin_count):
            d = U.struct_psp_fw_bin_desc.from_buffer_copy(data[hsize + i * dsize:hsize + (i + 1) * dsize])
            # parse_ta_bin_descriptor: start = header + desc.offset_bytes + ucode_array_offset_bytes
            blob = self._section(name, data, c.ucode_array_offset_bytes + d.offset_bytes, d.size_bytes, "ta")
            self.ta.append(TrustedComponent(f"ta:{d.fw_type}", blob, name, d.fw_version))

    def _add_cp(self, name: str, data: bytes, c: Any, role: str) -> None:
        if c.header_version_major == 2:  # RS64 (gfx11/12): amdgpu_ucode_init_single_fw CP_RS64_* and *_STACK
            h = _hdr(U.struct_gfx_firmware_header_v2_0, data)
            ucode = self._section(name, data, c.ucode_array_offset_bytes, h.ucode_size_bytes, f"{role} ucode")
            stack = self._section(name, data, h.data_offset_bytes, h.data_size_bytes, f"{role} data")
            main = {"pfp": FWType.RS64_PFP, "me": FWType.RS64_ME, "mec": FWType.RS64_MEC}[role]
            stacks = {"pfp": (FWType.RS64_PFP_P0_STACK, FWType.RS64_PFP_P1_STACK),
                      "me": (FWType.RS64_ME_P0_STACK, FWType.RS64_ME_P1_STACK),
                      "mec": (FWType.RS64_MEC_P0_STACK, FWType.RS64_MEC_P1_STACK, FWType.RS64_MEC_P2_STACK,
                              FWType.RS64_MEC_P3_STACK)}[role]
            self._put_ip(main, ucode, name, c.ucode_version)
            for t in stacks:
                self._put_ip(t, stack, name, c.ucode_version)
        else:  # legacy F32 CP (gfx_firmware_header_v1_0)
            h = _hdr(U.struct_gfx_firmware_header_v1_0, data)
            off = c.ucode_array_offset_bytes
            if role == "mec":  # CP_MEC1: ucode minus the jump table; CP_MEC1_JT: the jump table
                self._put_ip(FWType.CP_MEC, self._section(name, data, off, c.ucode_size_bytes - h.jt_size * 4, "mec"),
                             name, c.ucode_version)
                if h.jt_size:
                    self._put_ip(FWType.CP_MEC_ME1, self._section(name, data, off + h.jt_offset * 4, h.jt_size * 4,
                                                                  "mec jt"), name, c.ucode_version)
            else:
                t = FWType.CP_PFP if role == "pfp" else FWType.CP_ME
                self._put_ip(t, self._section(name, data, off, c.ucode_size_bytes, role), name, c.ucode_version)

    def _add_rlc(self, name: str, data: bytes, c: Any) -> None:
        minor = c.header_version_minor if c.header_version_major == 2 else 0
        t = getattr(U, f"struct_rlc_firmware_header_v2_{minor}", U.struct_rlc_firmware_header_v2_0)
        h = t.from_buffer_copy(data[:ctypes.sizeof(t)])

        def f(n: str) -> Any:  # a field of the header or of its nested earlier versions
            node = h
            while not any(x[0] == n for x in node._fields_):
                node = getattr(node, node._fields_[0][0])
            return getattr(node, n)

        # RLC_G: the default case of amdgpu_ucode_init_single_fw (ucode_size_bytes at ucode_array_offset_bytes)
        self._put_ip(FWType.RLC_G, self._section(name, data, c.ucode_array_offset_bytes, c.ucode_size_bytes, "rlc"),
                     name, c.ucode_version)
        extra: list[tuple[int, str]] = []
        if minor >= 1:  # amdgpu_rlc.c amdgpu_gfx_rlc_init_microcode_v2_1: offsets from the header start
            extra += [(FWType.RLC_RESTORE_LIST_SRM_CNTL, "save_restore_list_cntl"),
                      (FWType.RLC_RESTORE_LIST_GPM_MEM, "save_restore_list_gpm"),
                      (FWType.RLC_RESTORE_LIST_SRM_MEM, "save_restore_list_srm")]
        if minor >= 2:  # _v2_2
            extra += [(FWType.RLC_IRAM, "rlc_iram_ucode"), (FWType.RLC_DRAM_BOOT, "rlc_dram_ucode")]
        if minor >= 3:  # _v2_3
            extra += [(FWType.RLC_P, "rlcp_ucode"), (FWType.RLC_V, "rlcv_ucode")]
        if minor >= 4:  # _v2_4
            extra += [(FWType.GLOBAL_TAP_DELAYS, "global_tap_delays_ucode"),
                      (FWType.SE0_TAP_DELAYS, "se0_tap_delays_ucode"),
                      (FWType.SE1_TAP_DELAYS, "se1_tap_delays_ucode"), (FWType.SE2_TAP_DELAYS, "se2_tap_delays_ucode"),
                      (FWType.SE3_TAP_DELAYS, "se3_tap_delays_ucode")]
        for fw_type, key in extra:
            size = f(f"{key}_size_bytes")
            if size:  # the kernel skips a section whose size is 0
                self._put_ip(fw_type, self._section(name, data, f(f"{key}_offset_bytes"), size, key), name,
                             c.ucode_version)

    def _add_mes(self, name: str, data: bytes, c: Any, kiq: bool) -> None:
        h = _hdr(U.struct_mes_firmware_header_v1_0, data)
        # amdgpu_ucode_init_single_fw CP_MES/CP_MES_DATA (pipe 0) and CP_MES1/CP_MES1_DATA (the KIQ pipe)
        ucode = self._section(name, data, h.mes_ucode_offset_bytes, h.mes_ucode_size_bytes, "mes ucode")
        stack = self._section(name, data, h.mes_ucode_data_offset_bytes, h.mes_ucode_data_size_bytes, "mes data")
        self._put_ip(FWType.CP_MES_KIQ if kiq else FWType.CP_MES, ucode, name, c.ucode_version)
        self._put_ip(FWType.MES_KIQ_STACK if kiq else FWType.MES_STACK, stack, name, c.ucode_version)
        if not kiq and "uni_mes" in name:  # gfx12 uni_mes: one image serves both pipes
            self._put_ip(FWType.CP_MES_KIQ, ucode, name, c.ucode_version)
            self._put_ip(FWType.MES_KIQ_STACK, stack, name, c.ucode_version)

    def _add_sdma(self, name: str, data: bytes, c: Any) -> None:
        if c.header_version_major == 2:  # SDMA_UCODE_TH0 (ctx) / TH1 (ctl)
            h = _hdr(U.struct_sdma_firmware_header_v2_0, data)
            ctx = self._section(name, data, c.ucode_array_offset_bytes, h.ctx_ucode_size_bytes, "sdma ctx")
            self._put_ip(FWType.SDMA_UCODE_TH0, ctx, name, c.ucode_version)
            self._put_ip(FWType.SDMA_UCODE_TH1, self._section(name, data, h.ctl_ucode_offset, h.ctl_ucode_size_bytes,
                                                              "sdma ctl"), name, c.ucode_version)
        elif c.header_version_major == 3:  # SDMA_RS64 (gfx12) goes as GFX_FW_TYPE_SDMA_UCODE_TH0 (psp_get_fw_type)
            h = _hdr(U.struct_sdma_firmware_header_v3_0, data)
            self._put_ip(FWType.SDMA_UCODE_TH0, self._section(name, data, c.ucode_array_offset_bytes,
                                                              h.ucode_size_bytes, "sdma rs64"), name, c.ucode_version)
        else:
            self._put_ip(FWType.SDMA0, self._section(name, data, c.ucode_array_offset_bytes, c.ucode_size_bytes,
                                                     "sdma"), name, c.ucode_version)

    # -- matching --
    def match(self, candidates: list[TrustedComponent], read: Any) -> Optional[TrustedComponent]:
        """The first candidate whose bytes `read(size)` returns (read is called once per distinct size)."""
        seen: dict[int, bytes] = {}
        for cand in candidates:
            n = len(cand.data)
            if n not in seen:
                seen[n] = read(n)
            if seen[n] == cand.data:
                return cand
        return None


class FallbackMC:
    """MC addresses as the PSP reaches them before a GMC model exists: the FB aperture is VRAM, anything else is a
    bus address the PCI function DMAs to (through its IOMMU)."""

    def __init__(self, card: Any):
        self.card = card

    @property
    def fb_base(self) -> int:
        """card.fb_base when set; else MMMC_VM_FB_LOCATION_BASE << 24 when a GMC model defines it (the aperture the
        driver reads: mmhub_v3_0_get_fb_location); else DEFAULT_FB_BASE."""
        base = getattr(self.card, "fb_base", None)
        if base is not None:
            return base
        try:
            return (self.card.regs.reg("MMMC_VM_FB_LOCATION_BASE").value & 0xFFFFFF) << 24
        except KeyError:
            return DEFAULT_FB_BASE

    def vram_offset(self, mc: int) -> Optional[int]:
        off = mc - self.fb_base
        return off if 0 <= off < self.card.vram_size else None

    def read(self, mc: int, size: int) -> bytes:
        off = self.vram_offset(mc)
        if off is not None:
            return self.card.vram_read(off, size)
        return self.card.function.dma_read(mc, size)

    def write(self, mc: int, data: bytes) -> None:
        off = self.vram_offset(mc)
        if off is not None:
            self.card.vram_write(off, data)
            return
        self.card.function.dma_write(mc, data)


class PSPMemoryError(Exception):
    """The PSP could not reach an MC address it was given (outside VRAM, an IOMMU fault, ...)."""


class PSP:
    """The emulated MP0 of one card (see the module docstring). State: `sos_alive`, `stages` (bootloader stages done,
    name -> TrustedComponent), `ring` ((mc address, size) or None), `rptr` (dwords), `tmr` ((mc, size) or None),
    `toc_loaded`, `loaded` (GFX_FW_TYPE -> LoadedFirmware), `autoload_started`, `commands` (every ring command:
    (name, status)), `events` (what happened, in words, failures included)."""

    def __init__(self, card: Any, trust: TrustStore, *, latency_s: float = 0.0):
        self.card = card
        self.trust = trust
        self.version: tuple[int, int, int] = tuple(card.board.block("MP0").version)  # type: ignore[assignment]
        if self.version[0] not in (13, 14):
            raise ValueError(f"emulated PSP models MP0 13.x (psp_v13_0) and 14.x (psp_v14_0), not {self.version}")
        self.v14 = self.version[0] == 14
        # amdgpu_psp.c psp_early_init: 14.0.2/14.0.3 have boot_time_tmr (no SETUP_TMR), 13.0.0/7/10 do not
        self.boot_time_tmr = self.v14
        self.latency_s = latency_s
        self.lock = threading.RLock()
        # fault injection
        self.never_ready = False
        self.hang_at: Optional[str] = None
        self.fail_at: Optional[str] = None
        self.ring_hang = False
        self.fail_fw_types: set[int] = set()
        self.events: list[str] = []
        self.reset()

    # -- state --
    def reset(self) -> None:
        """Back to the bootloader with nothing loaded (power-on, function reset)."""
        with self.lock:
            self.sos_alive = False
            self.sos_version = 0
            self.stages: dict[str, TrustedComponent] = {}
            self.bl_value = GFX_FLAG_RESPONSE  # C2PMSG_35 when idle: exactly bit 31
            self._bl_pending: Optional[tuple[int, float, int]] = None  # (cmd, when, result value)
            self.ctrl_value = 0  # C2PMSG_64: 0 until the SOS is up
            self.ring: Optional[tuple[int, int]] = None
            self.rptr = 0
            self.tmr: Optional[tuple[int, int]] = None
            self._tmr_next = 0
            self.toc_loaded = False
            self.tmr_size = EMU_TMR_SIZE
            self.loaded: dict[int, LoadedFirmware] = {}
            self.autoload_started = False
            self.autoload_set: frozenset[int] = frozenset()
            self.sessions: dict[int, TrustedComponent] = {}
            self._next_session = 1
            self.commands: list[tuple[str, int]] = []

    def boot_sos(self) -> None:
        """Put the PSP where a completed bootloader leaves it (the SOS alive), from the trusted images: for tests of
        warm boots, as if an earlier driver had booted it."""
        with self.lock:
            for stage in ("kdb", "spl", "sys_drv", "soc_drv", "intf_drv", "dbg_drv", "ras_drv", "sos"):
                cands = self.trust.components.get(stage)
                if cands:
                    self.stages[stage] = cands[0]
            if "sos" not in self.stages:
                raise PSPFirmwareError("boot_sos: the emulated PSP trusts no SOS image "
                                       "(attach_psp(card, firmware=...))")
            self._sos_up(self.stages["sos"])

    def _sos_up(self, sos: TrustedComponent) -> None:
        self.sos_alive = True
        self.sos_version = sos.version or 1
        self.ctrl_value = GFX_FLAG_RESPONSE

    def _event(self, msg: str) -> None:
        self.events.append(msg)

    @property
    def mc(self) -> Any:
        """Where MC addresses go: the GMC model's translator when one is set on the card, else FallbackMC."""
        mc = getattr(self.card, "mc", None)
        return mc if mc is not None else FallbackMC(self.card)

    def _read(self, mc: int, size: int, what: str) -> bytes:
        try:
            return self.mc.read(mc, size)
        except Exception as e:  # an IOMMU fault, an address outside VRAM: the PSP's access fails
            raise PSPMemoryError(f"PSP read of {size:#x} bytes of {what} at MC {mc:#x} failed: {e}") from e

    def _write(self, mc: int, data: bytes, what: str) -> None:
        try:
            self.mc.write(mc, data)
        except Exception as e:
            raise PSPMemoryError(f"PSP write of {len(data):#x} bytes of {what} at MC {mc:#x} failed: {e}") from e

    # -- bootloader --
    def _bl_ready(self) -> bool:
        return not self.never_ready and self.card.ifwi_ready()

    def bl_read(self) -> int:
        """C2PMSG_35 as the host reads it."""
        with self.lock:
            if not self._bl_ready():
                return 0
            if self._bl_pending is not None:
                cmd, when, result = self._bl_pending
                if when > time.monotonic() or result < 0:
                    return cmd & ~GFX_FLAG_RESPONSE & MASK32  # still working (or hung: result < 0)
                self._bl_pending = None
                self.bl_value = result
                if cmd == BLCmd.LOAD_SOSDRV and result == GFX_FLAG_RESPONSE:
                    self._sos_up(self.stages["sos"])
            return self.bl_value

    def bl_command(self, value: int, addr_reg: int) -> None:
        """The host wrote `value` to C2PMSG_35 with C2PMSG_36 = addr_reg."""
        with self.lock:
            if not self._bl_ready():
                self._event(f"bootloader command {value:#x} written before the bootloader was ready: ignored")
                return
            if self._bl_pending is not None and self._bl_pending[2] < 0:
                return  # hung
            result = self._bl_run(value, addr_reg)
            self._bl_pending = (value, time.monotonic() + self.latency_s, result)
            self.bl_value = value & ~GFX_FLAG_RESPONSE & MASK32

    def _bl_fail(self, code: int, msg: str) -> int:
        self._event(msg)
        return GFX_FLAG_RESPONSE | code

    def _bl_run(self, value: int, addr_reg: int) -> int:
        """Run one bootloader command; the C2PMSG_35 value it ends with (-1: it never ends)."""
        try:
            cmd = BLCmd(value)
        except ValueError:
            return self._bl_fail(BL_ERR_UNKNOWN, f"bootloader: {value:#x} is not a psp_bootloader_cmd")
        if cmd in (BLCmd.DRAM_LONG_TRAIN, BLCmd.DRAM_SHORT_TRAIN):
            self._event(f"bootloader: {cmd.name} (memory training is not modelled: done at once)")
            return GFX_FLAG_RESPONSE
        stage = STAGES[cmd]
        if self.hang_at == stage:
            self._event(f"bootloader: {stage} hangs (fault injection hang_at)")
            return -1
        if self.fail_at == stage:
            return self._bl_fail(BL_ERR_INJECTED, f"bootloader: {stage} fails (fault injection fail_at)")
        if self.sos_alive:
            return self._bl_fail(BL_ERR_ORDER, f"bootloader: {stage} after the SOS is already running (the kernel "
                                               "checks C2PMSG_81 first: psp_v13_0_is_sos_alive)")
        if not self.trust.components:
            return self._bl_fail(BL_ERR_BAD_IMAGE, f"bootloader: {stage}: the emulated PSP trusts no SOS image; give "
                                                   "it the firmware the driver loads (attach_psp(card, firmware=dir))")
        if stage == "sos" and "sys_drv" not in self.stages:
            return self._bl_fail(BL_ERR_ORDER, "bootloader: LOAD_SOSDRV before LOAD_SYSDRV (psp_hw_start loads the "
                                               "system driver first)")
        kinds = [stage]
        if stage == "spl" and not self.v14:
            # psp_v13_0_bootloader_load_spl stages psp->kdb (not psp->spl) with LOAD_TOS_SPL_TABLE; accept what the
            # kernel sends
            kinds.append("kdb")
        cands = [c for k in kinds for c in self.trust.components.get(k, [])]
        mc = (addr_reg & MASK32) << 20  # C2PMSG_36 = fw_pri_mc_addr >> 20
        if not cands:
            return self._bl_fail(BL_ERR_BAD_IMAGE, f"bootloader: {stage}: no trusted image has a {stage} component")
        try:
            hit = self.trust.match(cands, lambda n: self._read(mc, n, f"the staged {stage}"))
        except PSPMemoryError as e:
            return self._bl_fail(BL_ERR_BAD_IMAGE, f"bootloader: {stage}: {e}")
        if hit is None:
            sizes = sorted({len(c.data) for c in cands})
            return self._bl_fail(BL_ERR_BAD_IMAGE, f"bootloader: {stage}: the bytes staged at MC {mc:#x} (C2PMSG_36 "
                                                   f"{addr_reg:#x}) are not the {stage} of any trusted SOS image "
                                                   f"(component sizes {[hex(s) for s in sizes]})")
        self.stages[stage] = hit
        self._event(f"bootloader: {stage} loaded from {hit.image}")
        return GFX_FLAG_RESPONSE

    def sign_of_life(self) -> int:
        """C2PMSG_81 (and C2PMSG_58 on v13): the SOS version once the SOS runs, else 0."""
        with self.lock:
            if self.never_ready:
                return 0
            if not self.sos_alive:
                self.bl_read()  # a LOAD_SOSDRV whose latency passed completes now
            return self.sos_version if self.sos_alive else 0

    # -- KM ring control (C2PMSG_64) --
    def ctrl_read(self) -> int:
        with self.lock:
            if self.never_ready:
                return 0
            if not self.sos_alive:
                self.bl_read()  # a pending LOAD_SOSDRV may have completed
            return self.ctrl_value if self.sos_alive else 0

    def ctrl_command(self, value: int, regs: Any) -> None:
        with self.lock:
            if self.never_ready or not self.sos_alive:
                self._event(f"C2PMSG_64 {value:#x} written with no SOS running: ignored")
                return
            cmd = value & GFX_CMD_ID_MASK
            status = self._ctrl_run(value, cmd, regs)
            self.ctrl_value = GFX_FLAG_RESPONSE | (status & GFX_CMD_STATUS_MASK)

    def _ctrl_run(self, value: int, cmd: int, regs: Any) -> int:
        if value & ~GFX_CMD_ID_MASK:
            self._event(f"C2PMSG_64 {value:#x}: bits outside the command id (GFX_CMD_ID_MASK) are set")
            return PSP_ERR_UNKNOWN_COMMAND
        if cmd == GFX_CTRL_CMD_ID_DESTROY_RINGS:
            self.ring, self.rptr = None, 0
            self._event("KM ring destroyed")
            return 0
        if cmd == GFX_CTRL_CMD_ID_INIT_GPCOM_RING:
            if self.ring is not None:
                self._event("ring create while a KM ring exists (destroy it first: GFX_CTRL_CMD_ID_DESTROY_RINGS)")
                return TEE_ERROR_BAD_STATE & GFX_CMD_STATUS_MASK
            addr = regs("69") | regs("70") << 32
            size = regs("71")
            if size == 0 or size % FRAME_SIZE or size > 0x100000:
                self._event(f"ring create: size C2PMSG_71 {size:#x} must be a non-zero multiple of the 64-byte frame "
                            "(struct psp_gfx_rb_frame), at most 1 MiB")
                return TEE_ERROR_BAD_PARAMETERS & GFX_CMD_STATUS_MASK
            if addr % 4096:
                self._event(f"ring create: address {addr:#x} is not 4 KiB aligned (the kernel's ring is a page)")
                return TEE_ERROR_BAD_PARAMETERS & GFX_CMD_STATUS_MASK
            try:
                self._read(addr, size, "the KM ring")
            except PSPMemoryError as e:
                self._event(f"ring create: {e}")
                return TEE_ERROR_BAD_PARAMETERS & GFX_CMD_STATUS_MASK
            self.ring, self.rptr = (addr, size), 0
            self._event(f"KM ring created at MC {addr:#x}, {size:#x} bytes")
            return 0
        self._event(f"C2PMSG_64 command {value:#x} is not modelled (only INIT_GPCOM_RING and DESTROY_RINGS on bare "
                    "metal)")
        return PSP_ERR_UNKNOWN_COMMAND

    # -- KM ring frames (C2PMSG_67) --
    def wptr_written(self, wptr: int) -> None:
        with self.lock:
            if self.never_ready or not self.sos_alive or self.ring is None:
                self._event(f"C2PMSG_67 (write pointer) {wptr:#x} written with no KM ring: nothing runs")
                return
            addr, size = self.ring
            size_dw = size // 4
            if wptr % (FRAME_SIZE // 4) or wptr >= size_dw:
                self._event(f"write pointer {wptr:#x} dwords is not a frame boundary inside the {size_dw:#x}-dword "
                            "ring (psp_ring_cmd_submit advances it by 16 dwords modulo the ring)")
                return
            if self.ring_hang:
                self._event("KM ring hangs (fault injection ring_hang): frames not consumed")
                return
            while self.rptr != wptr:
                try:
                    self._frame(addr + self.rptr * 4)
                except PSPMemoryError as e:
                    self._event(f"KM ring frame at dword {self.rptr:#x}: {e}; the ring stops")
                    return
                self.rptr = (self.rptr + FRAME_SIZE // 4) % size_dw

    def _frame(self, at: int) -> None:
        f = RbFrame.from_buffer_copy(self._read(at, FRAME_SIZE, "a KM ring frame"))
        cmd_addr = f.cmd_buf_addr_lo | f.cmd_buf_addr_hi << 32
        fence = f.fence_addr_lo | f.fence_addr_hi << 32
        problems = []
        if any(f.reserved1) or any(f.reserved2):
            problems.append("reserved fields are not 0 (psp_gfx_rb_frame: 'reserved, must be 0')")
        if f.vmid or f.frame_type or f.sid_lo or f.sid_hi:
            problems.append(f"vmid {f.vmid}, frame_type {f.frame_type}, sid {f.sid_hi:#x}:{f.sid_lo:#x} must be 0 on "
                            "the KM ring (RBI-only fields)")
        if cmd_addr % 4096 or cmd_addr == 0:
            problems.append(f"command buffer MC {cmd_addr:#x} is not 4 KiB aligned ('must be 4 KB aligned')")
        if fence % 4 or fence == 0:
            problems.append(f"fence MC {fence:#x} is not a 4-byte-aligned address")
        if f.cmd_buf_size not in (0, CMD_BUF_SIZE) and f.cmd_buf_size < CMD_BUF_SIZE:
            problems.append(f"cmd_buf_size {f.cmd_buf_size:#x} is smaller than a psp_gfx_cmd_resp (1024 bytes)")
        if problems:
            # a frame the SOS cannot use: it skips it without a fence (the driver's fence wait times out)
            self._event(f"KM ring frame at MC {at:#x} refused: {'; '.join(problems)}")
            self.commands.append(("bad frame", -1))
            return
        buf = bytearray(self._read(cmd_addr, CMD_BUF_SIZE, "a command buffer"))
        hdr = CmdHeader.from_buffer_copy(buf[:CMD_UNION_OFFSET])
        resp = CmdResp()
        name = CMD_NAMES.get(hdr.cmd_id, f"cmd {hdr.cmd_id:#x}")
        if hdr.buf_size not in (0, CMD_BUF_SIZE) or hdr.buf_version not in (0, PSP_GFX_CMD_BUF_VERSION) or \
                hdr.resp_buf_addr_lo or hdr.resp_buf_addr_hi or hdr.resp_offset or hdr.resp_buf_size:
            # psp_gfx_cmd_resp: the resp_buf_* fields "are all 0 in GPCOM commands"; buf_size/buf_version are left 0
            # by amdgpu (acquire_psp_cmd_buf zeroes the buffer) or hold the structure's size and version
            self._event(f"{name}: header fields wrong (buf_size {hdr.buf_size:#x}, buf_version {hdr.buf_version}, "
                        f"resp_buf {hdr.resp_buf_addr_hi:#x}:{hdr.resp_buf_addr_lo:#x}/{hdr.resp_offset:#x}/"
                        f"{hdr.resp_buf_size:#x}): GPCOM commands carry 0 there")
            resp.status = TEE_ERROR_BAD_PARAMETERS
        else:
            try:
                self._command(hdr.cmd_id, bytes(buf[CMD_UNION_OFFSET:RESP_OFFSET]), resp, name)
            except PSPMemoryError as e:
                self._event(f"{name}: {e}")
                resp.status = TEE_ERROR_BAD_PARAMETERS
        self.commands.append((name, resp.status))
        self._write(cmd_addr + RESP_OFFSET, bytes(resp), "the response")
        self._write(fence, f.fence_value.to_bytes(4, "little"), "the fence")  # after the response, as the kernel reads

    def _fail(self, resp: CmdResp, status: int, msg: str) -> None:
        resp.status = status
        self._event(msg)

    def _command(self, cmd_id: int, body: bytes, resp: CmdResp, name: str) -> None:
        if cmd_id == GFX_CMD_ID_SETUP_TMR:
            c = CmdSetupTMR.from_buffer_copy(body[:ctypes.sizeof(CmdSetupTMR)])
            addr = c.buf_phy_addr_lo | c.buf_phy_addr_hi << 32
            pa = c.system_phy_addr_lo | c.system_phy_addr_hi << 32
            if c.tmr_flags & ~0x3 or c.tmr_flags & 0x1:
                return self._fail(resp, TEE_ERROR_BAD_PARAMETERS, f"SETUP_TMR: tmr_flags {c.tmr_flags:#x}: reserved "
                                  "bits or sriov_enabled set on bare metal")
            if addr % 4096 or c.buf_size == 0 or c.buf_size % 4096:
                return self._fail(resp, TEE_ERROR_BAD_PARAMETERS, f"SETUP_TMR: buffer MC {addr:#x} size {c.buf_size:#x}"
                                  ": address must be 4 KiB aligned and size a non-zero multiple of 4 KiB")
            if self.toc_loaded and c.buf_size < self.tmr_size:
                return self._fail(resp, TEE_ERROR_BAD_PARAMETERS, f"SETUP_TMR: {c.buf_size:#x} bytes, smaller than the "
                                  f"{self.tmr_size:#x} LOAD_TOC asked for")
            off = self.mc.vram_offset(addr)
            if off is None or off + c.buf_size > self.card.vram_size:
                return self._fail(resp, TEE_ERROR_BAD_PARAMETERS, f"SETUP_TMR: MC {addr:#x} + {c.buf_size:#x} is not "
                                  "inside VRAM (psp_tmr_init allocates the TMR in VRAM)")
            if c.tmr_flags & 0x2 and pa != off:
                return self._fail(resp, TEE_ERROR_BAD_PARAMETERS, f"SETUP_TMR: system_phy_addr {pa:#x} is not the "
                                  f"VRAM address {off:#x} of MC {addr:#x} (psp_prep_tmr_cmd_buf: amdgpu_gmc_vram_pa)")
            self.tmr, self._tmr_next = (addr, c.buf_size), 0
            self._event(f"TMR at MC {addr:#x}, {c.buf_size:#x} bytes")
        elif cmd_id == GFX_CMD_ID_DESTROY_TMR:
            self.tmr = None
        elif cmd_id == GFX_CMD_ID_LOAD_TOC:
            c = CmdLoadTOC.from_buffer_copy(body[:ctypes.sizeof(CmdLoadTOC)])
            addr = c.toc_phy_addr_lo | c.toc_phy_addr_hi << 32
            if addr % 4096 or not 0 < c.toc_size <= PSP_1_MEG:
                return self._fail(resp, TEE_ERROR_BAD_PARAMETERS, f"LOAD_TOC: MC {addr:#x} size {c.toc_size:#x}: "
                                  "address must be 4 KiB aligned, size 1..1 MiB")
            cands = [t for t in self.trust.components.get("toc", []) if len(t.data) == c.toc_size]
            hit = self.trust.match(cands, lambda n: self._read(addr, n, "the TOC"))
            if hit is None:
                return self._fail(resp, TEE_ERROR_SECURITY, f"LOAD_TOC: the {c.toc_size:#x} bytes at MC {addr:#x} are "
                                  "not the TOC of any trusted image")
            self.toc_loaded = True
            resp.tmr_size = self.tmr_size
        elif cmd_id == GFX_CMD_ID_LOAD_IP_FW:
            self._load_ip_fw(CmdLoadIPFW.from_buffer_copy(body[:ctypes.sizeof(CmdLoadIPFW)]), resp)
        elif cmd_id == GFX_CMD_ID_AUTOLOAD_RLC:
            if FWType.RLC_G not in self.loaded:
                return self._fail(resp, TEE_ERROR_BAD_STATE, "AUTOLOAD_RLC before RLC_G was loaded (psp_load_non_psp_fw"
                                  " starts the autoload after AMDGPU_UCODE_ID_RLC_G)")
            self.autoload_started = True
            self.autoload_set = frozenset(self.loaded)
            self._event(f"RLC autoload started with {sorted(FWType(t).name for t in self.loaded)}")
            for hook in list(getattr(self.card, "on_rlc_autoload", [])):
                hook()
        elif cmd_id in (GFX_CMD_ID_LOAD_ASD, GFX_CMD_ID_LOAD_TA):
            c = CmdLoadTA.from_buffer_copy(body[:ctypes.sizeof(CmdLoadTA)])
            addr = c.app_phy_addr_lo | c.app_phy_addr_hi << 32
            if addr % 4096 or c.app_len == 0:
                return self._fail(resp, TEE_ERROR_BAD_PARAMETERS, f"{name}: binary at MC {addr:#x} ({c.app_len:#x} "
                                  "bytes) must be 4 KiB aligned and non-empty")
            cands = [t for t in self.trust.ta if len(t.data) == c.app_len]
            hit = self.trust.match(cands, lambda n: self._read(addr, n, "the TA"))
            if hit is None:
                return self._fail(resp, TEE_ERROR_SECURITY, f"{name}: the {c.app_len:#x} bytes at MC {addr:#x} are not "
                                  "a component of any trusted TA image")
            sid = self._next_session
            self._next_session += 1
            self.sessions[sid] = hit
            resp.session_id = sid
        elif cmd_id == GFX_CMD_ID_UNLOAD_TA:
            sid = int.from_bytes(body[:4], "little")
            if self.sessions.pop(sid, None) is None:
                return self._fail(resp, TEE_ERROR_ITEM_NOT_FOUND, f"UNLOAD_TA: no session {sid}")
        elif cmd_id in (GFX_CMD_ID_INVOKE_CMD, GFX_CMD_ID_BOOT_CFG):
            return self._fail(resp, TEE_ERROR_NOT_SUPPORTED, f"{name}: trusted applications and boot config are not "
                              "modelled (amdgpu treats TA failures as warnings)")
        else:
            return self._fail(resp, PSP_ERR_UNKNOWN_COMMAND, f"{name}: not a command the emulated SOS knows")

    def _load_ip_fw(self, c: CmdLoadIPFW, resp: CmdResp) -> None:
        addr = c.fw_phy_addr_lo | c.fw_phy_addr_hi << 32
        try:
            t = FWType(c.fw_type)
        except ValueError:
            return self._fail(resp, TEE_ERROR_BAD_PARAMETERS, f"LOAD_IP_FW: fw_type {c.fw_type} is not a GFX_FW_TYPE "
                              "of a gfx11/gfx12 board")
        what = f"LOAD_IP_FW {t.name}"
        if addr % 4096 or c.fw_size == 0:
            return self._fail(resp, TEE_ERROR_BAD_PARAMETERS, f"{what}: MC {addr:#x} size {c.fw_size:#x}: the address "
                              "must be 4 KiB aligned ('must be 4 KB aligned') and the size non-zero")
        if not self.boot_time_tmr and self.tmr is None and t != FWType.SMU:
            # psp_hw_start: SETUP_TMR comes before every IP firmware but the PMFW (pmfw_centralized_cstate_management)
            return self._fail(resp, TEE_ERROR_BAD_STATE, f"{what}: no TMR set up yet (SETUP_TMR first on MP0 "
                              f"{'.'.join(map(str, self.version))})")
        if t in self.fail_fw_types:
            return self._fail(resp, TEE_ERROR_SECURITY, f"{what}: refused (fault injection fail_fw_types)")
        cands = self.trust.ip.get(t, [])
        if not cands:
            return self._fail(resp, TEE_ERROR_SECURITY, f"{what}: no trusted image provides a {t.name} payload")
        sized = [x for x in cands if len(x.data) == c.fw_size]
        hit = self.trust.match(sized, lambda n: self._read(addr, n, t.name))
        if hit is None:
            sizes = sorted({hex(len(x.data)) for x in cands})
            return self._fail(resp, TEE_ERROR_SECURITY, f"{what}: the {c.fw_size:#x} bytes at MC {addr:#x} are not the "
                              f"{t.name} payload of any trusted image (sizes {sizes})")
        base = self.tmr[0] if self.tmr else 0
        tmr_addr = base + self._tmr_next
        self._tmr_next += (len(hit.data) + 4095) // 4096 * 4096
        self.loaded[int(t)] = LoadedFirmware(int(t), t.name, len(hit.data), hit.sha256, hit.image, hit.version,
                                             tmr_addr)
        resp.fw_addr_lo, resp.fw_addr_hi = tmr_addr & MASK32, tmr_addr >> 32
        self._event(f"{what}: loaded from {hit.image}")


def attach_psp(card: Any, firmware: Union[str, os.PathLike, Mapping[str, bytes], TrustStore, None] = None, *,
               latency_s: float = 0.0) -> PSP:
    """Model MP0 on `card`: define its mailbox registers on card.regs, keep the PSP as `card.psp`, and reset it on
    every power-on. `firmware` is what the PSP trusts (a directory of plain *.bin images, a name -> bytes mapping, or
    a TrustStore); without it every bootloader stage fails, naming the missing trust."""
    trust = firmware if isinstance(firmware, TrustStore) else TrustStore.from_source(firmware)
    psp = PSP(card, trust, latency_s=latency_s)
    rf = card.regs
    v14 = psp.v14

    def define(n: int, **kw: Any) -> Any:
        # psp_v13_0.c uses regMP0_SMN_C2PMSG_<n> (mp_13_0_2); psp_v14_0.c regMPASP_SMN_C2PMSG_<n> (mp_14_0_2)
        return rf.define(f"MP0_SMN_C2PMSG_{n}", "MP0", names=(f"MPASP_SMN_C2PMSG_{n}",), **kw)

    regs: dict[str, Any] = {}
    regs["36"] = define(36)  # the staged image's MC address >> 20
    regs["69"] = define(69)  # ring address low
    regs["70"] = define(70)  # ring address high
    regs["71"] = define(71)  # ring size in bytes
    regs["67"] = define(67, on_write=lambda r, v: psp.wptr_written(v))  # KM write pointer (dwords)

    def reg_value(n: str) -> int:
        return regs[n].value

    define(35, on_read=lambda r: psp.bl_read(), on_write=lambda r, v: psp.bl_command(v, regs["36"].value))
    define(64, on_read=lambda r: psp.ctrl_read(), on_write=lambda r, v: psp.ctrl_command(v, reg_value))
    # C2PMSG_81: the SOS sign of life, read-only to the host (psp_v13_0_is_sos_alive: non-zero once it runs)
    define(81, wmask=0, on_read=lambda r: psp.sign_of_life())
    if not v14:
        # C2PMSG_58: the SOS version (psp_v13_0_init_sos_version); psp_v14_0 never reads it
        define(58, wmask=0, on_read=lambda r: psp.sign_of_life())
    card.psp = psp
    if not hasattr(card, "on_rlc_autoload"):
        card.on_rlc_autoload = []
    card.on_power_on.append(psp.reset)
    return psp
