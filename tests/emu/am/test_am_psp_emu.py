"""The emulated PSP (emu/am/psp.py), driven through its registers as amdgpu's psp_v13_0.c / psp_v14_0.c /
amdgpu_psp.c do -- never through drivers/. Firmware comes from tests/firmware/fwgen.py; what each component must be
is taken from fwgen's GeneratedImage.blobs, not from the emulator's own parsing."""
from __future__ import annotations

import ctypes
import mmap
import time

import pytest

from emu.am.gpu import AMGPU
from emu.am.psp import (BL_ERR_BAD_IMAGE, BL_ERR_ORDER, DEFAULT_FB_BASE, EMU_TMR_SIZE, GFX_CMD_ID_AUTOLOAD_RLC,
                        GFX_CMD_ID_LOAD_IP_FW, GFX_CMD_ID_LOAD_TOC, GFX_CMD_ID_SETUP_TMR, PSP_ERR_UNKNOWN_COMMAND,
                        TEE_ERROR_BAD_STATE, FWType, TrustStore, attach_psp)
from tests.firmware import fwgen

MiB = 1 << 20
READY = 0x80000000
# enum psp_bootloader_cmd (amdgpu_psp.h)
KDB, SPL, SYSDRV, SOCDRV, INTFDRV, DBGDRV, RASDRV, SOSDRV = (0x80000, 0x10000000, 0x10000, 0xB0000, 0xD0000, 0xC0000,
                                                            0xE0000, 0x20000)
# VRAM layout the tests use (offsets; MC = DEFAULT_FB_BASE + offset)
FW_PRI, RING, CMD, FENCE, FWBUF, TMR = 1 * MiB, 2 * MiB, 2 * MiB + 0x1000, 2 * MiB + 0x2000, 4 * MiB, 16 * MiB


def mc(off: int) -> int:
    return DEFAULT_FB_BASE + off


CARDS: list[AMGPU] = []


@pytest.fixture(autouse=True)
def _close_cards():
    yield
    while CARDS:
        CARDS.pop().close()


def new_card(target: str) -> AMGPU:
    card = AMGPU(target, vram_size=64 * MiB, boot_delay_s=0)
    CARDS.append(card)
    return card


class Host:
    """What amdgpu does to the PSP, by register name and VRAM writes."""

    def __init__(self, target: str, tmp_path, **attach):
        self.card = new_card(target)
        self.files = fwgen.write_set(tmp_path, target)
        self.sos = next(v for k, v in self.files.items() if k.endswith("_sos.bin"))
        self.psp = attach_psp(self.card, tmp_path, **attach)
        self.fence = 0

    def r(self, n: int) -> int:
        return self.card.regs.read(f"MP0_SMN_C2PMSG_{n}")

    def w(self, n: int, v: int) -> None:
        self.card.regs.write(f"MP0_SMN_C2PMSG_{n}", v)

    def stage(self, cmd: int, data: bytes) -> int:
        """psp_v13_0_bootloader_load_component: wait ready, copy to fw_pri (1 MiB, zeroed), C2PMSG_36, C2PMSG_35."""
        assert self.r(35) & READY
        self.card.vram_write(FW_PRI, data + bytes(MiB - len(data)))
        self.w(36, mc(FW_PRI) >> 20)
        self.w(35, cmd)
        return self.r(35)

    def boot(self, spl_blob: str = "kdb") -> None:
        b = self.sos.blobs
        for cmd, name in ((KDB, "kdb"), (SPL, spl_blob), (SYSDRV, "sys_drv"), (SOCDRV, "soc_drv"),
                          (INTFDRV, "intf_drv"), (DBGDRV, "dbg_drv"), (RASDRV, "ras_drv"), (SOSDRV, "sos")):
            assert self.stage(cmd, b[name]) == READY, (name, self.psp.events[-3:])
        assert self.r(81) != 0

    def create_ring(self, size: int = 0x1000) -> int:
        assert self.r(64) & READY  # psp_v13_0_ring_create: wait for the SOS ready for ring creation
        self.w(69, mc(RING) & 0xFFFFFFFF)
        self.w(70, mc(RING) >> 32)
        self.w(71, size)
        self.w(64, 2 << 16)  # PSP_RING_TYPE__KM << 16
        return self.r(64)

    def submit(self, cmd_id: int, body: bytes = b"", *, frame_patch: dict | None = None) -> tuple[int, bytes]:
        """psp_cmd_submit_buf + psp_ring_cmd_submit: the 1 KiB command (zeroed, cmd_id at +8, union at +28), a
        frame at the write pointer, the write pointer + 16 dwords. Returns (fence read back, response bytes)."""
        buf = bytearray(1024)
        buf[8:12] = cmd_id.to_bytes(4, "little")
        buf[28:28 + len(body)] = body
        self.card.vram_write(CMD, bytes(buf))
        self.fence += 1
        wptr = self.r(67)
        frame = bytearray(64)
        for off, v in ((0, mc(CMD) & 0xFFFFFFFF), (4, mc(CMD) >> 32), (12, mc(FENCE) & 0xFFFFFFFF),
                       (16, mc(FENCE) >> 32), (20, self.fence)):
            frame[off:off + 4] = v.to_bytes(4, "little")
        for off, v in (frame_patch or {}).items():
            frame[off] = v
        self.card.vram_write(RING + wptr * 4, bytes(frame))
        self.w(67, (wptr + 16) % (0x1000 // 4))
        fence = int.from_bytes(self.card.vram_read(FENCE, 4), "little")
        return fence, self.card.vram_read(CMD + 864, 96)


def status(resp: bytes) -> int:
    return int.from_bytes(resp[:4], "little")


def dwords(*vals: int) -> bytes:
    return b"".join(v.to_bytes(4, "little") for v in vals)


def load_ip(h: Host, fw_type: int, data: bytes, off: int = FWBUF) -> tuple[int, bytes]:
    h.card.vram_write(off, data)
    return h.submit(GFX_CMD_ID_LOAD_IP_FW, dwords(mc(off) & 0xFFFFFFFF, mc(off) >> 32, len(data), fw_type))


def setup_tmr(h: Host, size: int = EMU_TMR_SIZE) -> tuple[int, bytes]:
    return h.submit(GFX_CMD_ID_SETUP_TMR, dwords(mc(TMR) & 0xFFFFFFFF, mc(TMR) >> 32, size, 2, TMR, 0))


def load_toc(h: Host) -> tuple[int, bytes]:
    toc = h.sos.blobs["toc"]
    h.card.vram_write(FW_PRI, toc)
    return h.submit(GFX_CMD_ID_LOAD_TOC, dwords(mc(FW_PRI) & 0xFFFFFFFF, mc(FW_PRI) >> 32, len(toc)))


def blob(h: Host, suffix: str, section: str) -> bytes:
    """A section of the generated image whose name ends with `suffix` (or starts with it, for "smu_"/"sdma_")."""
    return next(v for k, v in h.files.items() if k.endswith(suffix) or k.startswith(suffix)).blobs[section]


# -- bootloader --
@pytest.mark.parametrize("target", ["gfx1100", "gfx1102"])
def test_gfx11_full_boot_ring_and_firmware(tmp_path, target):
    h = Host(target, tmp_path)
    assert h.r(35) == READY and h.r(81) == 0 and h.r(64) == 0
    h.boot()  # psp_v13_0_bootloader_load_spl stages the KDB with LOAD_TOS_SPL_TABLE: accepted
    assert h.r(58) == h.r(81) and h.r(64) == READY
    assert set(h.psp.stages) >= {"kdb", "spl", "sys_drv", "sos"}
    assert h.create_ring() == READY
    fence, resp = load_toc(h)
    assert fence == 1 and status(resp) == 0 and int.from_bytes(resp[16:20], "little") == EMU_TMR_SIZE
    # PMFW before the TMR (pmfw_centralized_cstate_management), then SETUP_TMR, then the rest
    assert status(load_ip(h, FWType.SMU, blob(h, "smu_", "ucode"))[1]) == 0
    assert status(setup_tmr(h)[1]) == 0
    for t, suffix, sec in ((FWType.RS64_PFP, "_pfp.bin", "ucode"), (FWType.RS64_PFP_P0_STACK, "_pfp.bin", "data"),
                           (FWType.RS64_MEC, "_mec.bin", "ucode"), (FWType.SDMA_UCODE_TH0, "sdma_", "ctx"),
                           (FWType.SDMA_UCODE_TH1, "sdma_", "ctl"), (FWType.IMU_I, "_imu.bin", "iram"),
                           (FWType.CP_MES, "_mes_2.bin", "ucode"), (FWType.MES_KIQ_STACK, "_mes1.bin", "data"),
                           (FWType.RLC_P, "_rlc.bin", "rlcp"), (FWType.RLC_G, "_rlc.bin", "ucode")):
        fence, resp = load_ip(h, t, blob(h, suffix, sec))
        assert fence == h.fence and status(resp) == 0, (t, h.psp.events[-1])
        assert int(t) in h.psp.loaded
    fence, resp = h.submit(GFX_CMD_ID_AUTOLOAD_RLC)
    assert status(resp) == 0 and h.psp.autoload_started and FWType.RS64_PFP in h.psp.autoload_set
    rec = h.psp.loaded[FWType.RLC_G]
    assert rec.image.endswith("_rlc.bin") and rec.size == len(blob(h, "_rlc.bin", "ucode"))
    assert h.psp.loaded[FWType.RS64_PFP].tmr_addr >= mc(TMR)


def test_gfx12_boot_uses_spl_and_boot_time_tmr(tmp_path):
    h = Host("gfx1201", tmp_path)
    assert h.card.regs.reg("MP0_SMN_C2PMSG_35").name == "MPASP_SMN_C2PMSG_35"
    # psp_v14_0_bootloader_load_spl stages psp->spl: the KDB under LOAD_TOS_SPL_TABLE is refused on v14
    assert h.stage(KDB, h.sos.blobs["kdb"]) == READY
    assert h.stage(SPL, h.sos.blobs["kdb"]) == READY | BL_ERR_BAD_IMAGE
    h.psp.reset()
    h.boot(spl_blob="spl")
    with pytest.raises(KeyError):
        h.card.regs.reg("MP0_SMN_C2PMSG_58")  # psp_v14_0 never reads it: not modelled
    assert h.create_ring() == READY
    assert status(load_toc(h)[1]) == 0
    # boot_time_tmr (psp_early_init, 14.0.2/14.0.3): LOAD_IP_FW without SETUP_TMR
    assert status(load_ip(h, FWType.SDMA_UCODE_TH0, blob(h, "sdma_", "ucode"))[1]) == 0
    assert status(load_ip(h, FWType.CP_MES_KIQ, blob(h, "_uni_mes.bin", "ucode"))[1]) == 0


def test_corrupt_or_wrong_component_fails_and_sos_never_lives(tmp_path):
    h = Host("gfx1100", tmp_path)
    kdb = bytearray(h.sos.blobs["kdb"])
    kdb[5] ^= 1
    assert h.stage(KDB, bytes(kdb)) == READY | BL_ERR_BAD_IMAGE  # v13's exact-match wait would time out
    assert "not the kdb" in h.psp.events[-1] and "kdb" not in h.psp.stages
    assert h.stage(SYSDRV, h.sos.blobs["sos"]) == READY | BL_ERR_BAD_IMAGE  # the wrong component
    assert h.stage(SOSDRV, h.sos.blobs["sos"]) == READY | BL_ERR_ORDER  # SOS before SYS_DRV
    assert h.r(81) == 0 and h.r(64) == 0
    assert h.stage(0x12345, b"x" * 4) & 0xFF  # not a bootloader command


def test_untrusted_images_and_no_firmware(tmp_path):
    good = fwgen.build("psp_sos")
    store = TrustStore.from_source({"psp_13_0_0_sos.bin": fwgen.flip_payload(good.data),
                                    "smu_13_0_0.bin": fwgen.truncate(fwgen.image("smc"), 100)})
    assert not store and "crc32" in store.rejected["psp_13_0_0_sos.bin"]
    assert "size_bytes" in store.rejected["smu_13_0_0.bin"]
    card = new_card("gfx1100")
    psp = attach_psp(card)
    card.vram_write(FW_PRI, good.blobs["kdb"])
    card.regs.write("MP0_SMN_C2PMSG_36", mc(FW_PRI) >> 20)
    card.regs.write("MP0_SMN_C2PMSG_35", KDB)
    assert card.regs.read("MP0_SMN_C2PMSG_35") == READY | BL_ERR_BAD_IMAGE
    assert "trusts no SOS image" in psp.events[-1]


def test_staging_in_system_memory_through_dma(tmp_path):
    h = Host("gfx1100", tmp_path)
    h.card.function.config_write(0x04, 0x0006, 2)  # memory + bus master (PCI_COMMAND)
    area = mmap.mmap(-1, 3 * MiB)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    aligned = (base + MiB - 1) & ~(MiB - 1)  # fw_pri is 1 MiB aligned (amdgpu_psp.c psp_sw_init: PSP_1_MEG)
    kdb = h.sos.blobs["kdb"]
    ctypes.memmove(aligned, kdb, len(kdb))
    h.w(36, aligned >> 20)
    h.w(35, KDB)
    assert h.r(35) == READY and "kdb" in h.psp.stages
    h.card.function.config_write(0x04, 0x0002, 2)  # bus master off: the PSP's read faults
    h.w(35, SYSDRV)
    assert h.r(35) == READY | BL_ERR_BAD_IMAGE and "bus mastering is off" in h.psp.events[-1]
    del base
    area.close()


# -- the KM ring --
def test_ring_commands_are_validated(tmp_path):
    h = Host("gfx1100", tmp_path)
    h.boot()
    assert h.create_ring(size=100) == READY | (0xFFFF0006 & 0xFFFF)  # not a multiple of the 64-byte frame
    assert h.create_ring() == READY
    assert h.create_ring() & 0xFFFF  # a ring exists: destroy first
    fence, resp = load_ip(h, FWType.RS64_PFP, blob(h, "_pfp.bin", "ucode"))
    assert fence == h.fence and status(resp) == TEE_ERROR_BAD_STATE  # no TMR yet on MP0 13.0.0
    assert status(setup_tmr(h)[1]) == 0
    bad = bytearray(blob(h, "_pfp.bin", "ucode"))
    bad[-1] ^= 0x80
    fence, resp = load_ip(h, FWType.RS64_PFP, bytes(bad))
    assert fence == h.fence and status(resp) != 0 and FWType.RS64_PFP not in h.psp.loaded
    _, resp = load_ip(h, FWType.RS64_ME, blob(h, "_pfp.bin", "ucode"))  # PFP bytes as ME
    assert status(resp) != 0
    _, resp = load_ip(h, FWType.RS64_PFP, blob(h, "_pfp.bin", "ucode"), off=FWBUF + 0x100)  # not 4 KiB aligned
    assert status(resp) != 0 and "4 KiB" in h.psp.events[-1]
    _, resp = load_ip(h, 200, b"\0" * 64)
    assert status(resp) != 0
    assert status(h.submit(0x1E)[1]) == PSP_ERR_UNKNOWN_COMMAND
    assert status(h.submit(GFX_CMD_ID_AUTOLOAD_RLC)[1]) == TEE_ERROR_BAD_STATE  # no RLC_G yet
    # a frame with a reserved byte set is skipped without a fence
    before = h.fence
    fence, _ = h.submit(GFX_CMD_ID_AUTOLOAD_RLC, frame_patch={34: 1})
    assert fence == before and "reserved" in h.psp.events[-1]
    # a write pointer that is not a frame boundary runs nothing
    h.w(67, h.r(67) + 3)
    assert "frame boundary" in h.psp.events[-1]
    # destroy, then create again
    h.w(64, 0x30000)
    assert h.r(64) == READY and h.psp.ring is None


# -- faults, power, warm state --
def test_fault_injection(tmp_path):
    h = Host("gfx1100", tmp_path)
    h.psp.never_ready = True
    assert h.r(35) == 0 and h.r(81) == 0 and h.r(64) == 0
    h.psp.never_ready = False
    h.psp.hang_at = "sys_drv"
    assert h.stage(KDB, h.sos.blobs["kdb"]) == READY
    h.card.vram_write(FW_PRI, h.sos.blobs["sys_drv"])
    h.w(35, SYSDRV)
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:  # bounded: it never answers
        assert not h.r(35) & READY
    h.card.power_on()  # a reset ends the hang
    h.psp.hang_at, h.psp.fail_at = None, "sos"
    for cmd, name in ((KDB, "kdb"), (SYSDRV, "sys_drv")):
        assert h.stage(cmd, h.sos.blobs[name]) == READY
    assert h.stage(SOSDRV, h.sos.blobs["sos"]) & 0xFF and h.r(81) == 0
    h.card.power_on()
    h.psp.fail_at = None
    h.boot()
    h.create_ring()
    h.psp.ring_hang = True
    fence, _ = load_toc(h)
    assert fence == 0
    h.psp.ring_hang = False
    h.card.power_on()
    h.boot()
    h.create_ring()
    assert status(setup_tmr(h)[1]) == 0
    h.psp.fail_fw_types = {FWType.RLC_G}
    assert status(load_ip(h, FWType.RLC_G, blob(h, "_rlc.bin", "ucode"))[1]) != 0


def test_power_on_resets_and_warm_state_persists(tmp_path):
    h = Host("gfx1100", tmp_path)
    h.boot()
    h.create_ring()
    assert status(setup_tmr(h)[1]) == 0
    assert status(load_ip(h, FWType.RLC_G, blob(h, "_rlc.bin", "ucode"))[1]) == 0
    # no reset: a later driver finds the SOS alive (it skips the bootloader) and the ring still there
    assert h.r(81) != 0 and h.psp.ring is not None and FWType.RLC_G in h.psp.loaded
    h.card.function.flr()
    assert h.r(81) == 0 and h.r(35) == READY and h.psp.ring is None and not h.psp.loaded
    h.psp.boot_sos()  # warm-boot helper: as if an earlier driver had booted it
    assert h.r(81) != 0 and h.r(64) == READY
    h.w(35, KDB)  # the bootloader is gone once the SOS runs
    assert h.r(35) == READY | BL_ERR_ORDER


def test_bootloader_latency(tmp_path):
    h = Host("gfx1100", tmp_path, latency_s=0.02)
    h.card.vram_write(FW_PRI, h.sos.blobs["kdb"])
    h.w(36, mc(FW_PRI) >> 20)
    h.w(35, KDB)
    assert not h.r(35) & READY  # working
    deadline = time.monotonic() + 2.0
    while not h.r(35) & READY:
        assert time.monotonic() < deadline, "bootloader never finished"
        time.sleep(0.001)
    assert h.r(35) == READY


def test_fb_aperture_follows_the_gmc_model(tmp_path):
    from emu.am.gmc import attach_gmc
    h = Host("gfx1100", tmp_path)
    attach_gmc(h.card)
    base = (h.card.regs.reg("MMMC_VM_FB_LOCATION_BASE").value & 0xFFFFFF) << 24
    assert h.psp.mc.vram_offset(base + FW_PRI) == FW_PRI
    h.boot()
