"""The AM PSP driver (drivers/am/psp.py) against a fake register file and a small fake PSP written here from the kernel
(psp_v13_0.c / psp_v14_0.c / amdgpu_psp.c / psp_gfx_if.h), independent of emu/: bootloader stages with the staged
bytes checked, the KM ring, TOC/TMR, LOAD_IP_FW order and bytes, fences, warm boot, and every failure's message.
The end-to-end run on the emulated card is tests/drivers/am/test_am_psp_emu.py."""
from __future__ import annotations

import ctypes
import types

import pytest

from drivers.am import psp as P
from drivers.am.regs import RegisterFile
from drivers.pci.interface import BarMapping, DMABuffer, PCIError
from firmware.select import KNOWN_CHIPS, load_set
from tests.firmware import fwgen

MB = 1 << 20
VRAM = 1 << 30
FB_BASE = 0x8000000000  # what gmc_v11 reads as FB_LOCATION_BASE << 24 on dGPUs
BASES = {"MP0": 0x16000, "MMHUB": 0x1A000}


class FakeDiscovery:
    def __init__(self, target: str):
        self.ips = {b: v for b, v in KNOWN_CHIPS[target].items()}
        self.ips["MMHUB"] = (3, 0, 0) if target.startswith("gfx11") else (4, 1, 0)

    def version(self, block, instance=0):
        return self.ips[block.upper()]

    def base(self, block, instance=0, segment=0):
        return BASES[block.upper()]

    def has(self, block):
        return block.upper() in self.ips


class Bar(BarMapping):
    index, size = 5, 1 << 20

    def __init__(self):
        self.values: dict[int, int] = {}
        self.on_write: dict[int, object] = {}
        self.log: list[tuple[int, int]] = []

    def read32(self, offset):
        return self.values.get(offset, 0)

    def write32(self, offset, value):
        self.log.append((offset, value))
        self.values[offset] = value
        hook = self.on_write.get(offset)
        if hook is not None:
            hook(value)

    def read(self, offset, size):
        raise AssertionError("no bulk reads here")

    def write(self, offset, data):
        raise AssertionError("no bulk writes here")


class FakePCI:
    """DMA memory from ctypes buffers; bus addresses contiguous from `bus_base` (or scattered)."""

    def __init__(self, bus_base=0x1_0000_3000, scatter=False):
        self.bus_base, self.scatter = bus_base, scatter
        self.live: dict[int, tuple] = {}
        self.freed = 0

    def dma_alloc(self, size):
        raw = ctypes.create_string_buffer(size + 4096)
        host = (ctypes.addressof(raw) + 4095) // 4096 * 4096
        pages = [self.bus_base + (i * 2 if self.scatter else i) * 4096 for i in range(size // 4096)]
        self.bus_base += (size * (2 if self.scatter else 1)) + 4096 * 5
        buf = DMABuffer(host, size, pages)
        self.live[host] = (raw, buf)
        return buf

    def dma_free(self, buf):
        if self.live.pop(buf.host_addr, None) is None:
            raise PCIError("double free")
        self.freed += 1

    def bus_read(self, addr, size):
        for _, buf in self.live.values():
            for i, p in enumerate(buf.bus_pages):
                if p <= addr < p + 4096:
                    return ctypes.string_at(buf.host_addr + i * 4096 + addr - p, size)
        raise AssertionError(f"bus address {addr:#x} is not DMA memory")

    def bus_write(self, addr, data):
        for _, buf in self.live.values():
            for i, p in enumerate(buf.bus_pages):
                if p <= addr < p + 4096:
                    ctypes.memmove(buf.host_addr + i * 4096 + addr - p, data, len(data))
                    return
        raise AssertionError(f"bus address {addr:#x} is not DMA memory")


class FakePSP:
    """The PSP's side of the mailbox and the ring, as the kernel expects it to behave."""

    def __init__(self, dev, *, alive=False, ready=True, refuse_stage=None, never_alive=False, fail_fw_type=None,
                 no_fence=False, toc_tmr=0x600000, ring_left=False):
        self.dev, self.bar, self.pci = dev, dev.regs.mmio, dev.pci
        self.prefix = "MP0_SMN_C2PMSG_" if dev.discovery.version("MP0")[0] == 13 else "MPASP_SMN_C2PMSG_"
        self.refuse_stage, self.never_alive, self.fail_fw_type = refuse_stage, never_alive, fail_fw_type
        self.no_fence, self.toc_tmr = no_fence, toc_tmr
        self.staged: list[tuple[int, bytes, int]] = []  # (command, bytes, C2PMSG_36)
        self.commands: list[tuple[P.PspGfxCmdResp, P.PspGfxRbFrame]] = []
        self.ring_events: list[str] = []
        self.fw: list[tuple[int, bytes]] = []
        self.rptr = 0
        self.set(81, 0x1234 if alive else 0)
        self.set(35, 0x80000000 if ready else 0)
        self.set(64, 0x80000000)
        self.set(71, 0x1000 if ring_left else 0)
        if self.prefix.startswith("MP0"):
            self.set(58, 0x00310044)  # psp_v13_0_init_sos_version reads it; mp_14_0_2 has no C2PMSG_58
        self.bar.on_write[self.addr(35)] = self.on_35
        self.bar.on_write[self.addr(64)] = self.on_64
        self.bar.on_write[self.addr(67)] = self.on_67

    def addr(self, n):
        return self.dev.regs.reg("MP0", f"{self.prefix}{n}").address

    def get(self, n):
        return self.bar.values.get(self.addr(n), 0)

    def set(self, n, v):
        self.bar.values[self.addr(n)] = v

    def on_35(self, cmd):
        where = self.get(36) << 20
        self.staged.append((cmd, self.pci.bus_read(where, P.PSP_1_MEG), self.get(36)))
        if cmd == self.refuse_stage:
            self.set(35, 0x80000000 | 0x17)
            return
        if cmd == P.PSP_BL_LOAD_SOSDRV:
            self.set(35, 0)
            if not self.never_alive:
                self.set(81, 0xC0DE)
            return
        self.set(35, 0x80000000)

    def on_64(self, value):
        if value == P.GFX_CTRL_CMD_ID_DESTROY_RINGS:
            self.ring_events.append("destroy")
        elif value == P.PSP_RING_TYPE_KM << 16:
            self.ring_events.append(f"create {self.get(69) | self.get(70) << 32:#x} {self.get(71):#x}")
            self.rptr = 0
            self.set(67, 0)  # a new ring starts empty (the kernel reads the write pointer back from C2PMSG_67)
        self.set(64, 0x80000000)

    def on_67(self, wptr):
        ring = self.get(69) | self.get(70) << 32
        while self.rptr != wptr:
            frame = P.PspGfxRbFrame.from_buffer_copy(self.pci.bus_read(ring + self.rptr * 4, 64))
            self.rptr = (self.rptr + 16) % (0x1000 // 4)
            cmd_addr = frame.cmd_buf_addr_lo | frame.cmd_buf_addr_hi << 32
            cmd = P.PspGfxCmdResp.from_buffer_copy(self.pci.bus_read(cmd_addr, 1024))
            self.commands.append((cmd, frame))
            if cmd.cmd_id == P.GFX_CMD_ID_LOAD_TOC:
                cmd.resp.tmr_size = self.toc_tmr
            if cmd.cmd_id == P.GFX_CMD_ID_LOAD_IP_FW:
                ld = cmd.cmd.cmd_load_ip_fw
                self.fw.append((ld.fw_type, self.pci.bus_read(ld.fw_phy_addr_lo | ld.fw_phy_addr_hi << 32,
                                                              ld.fw_size)))
                cmd.resp.fw_addr_lo = 0x1000 * len(self.fw)
                if ld.fw_type == self.fail_fw_type:
                    cmd.resp.status = 0xFFFF0002
            self.pci.bus_write(cmd_addr, bytes(cmd))
            if not self.no_fence:
                fence = frame.fence_addr_lo | frame.fence_addr_hi << 32
                self.pci.bus_write(fence, frame.fence_value.to_bytes(4, "little"))

    def names(self):
        return [P.CMD_NAMES[c.cmd_id] for c, _ in self.commands]


@pytest.fixture(scope="module")
def fwsets(tmp_path_factory):
    out = {}
    for target in ("gfx1100", "gfx1201"):
        d = tmp_path_factory.mktemp(f"psp-fw-{target}")
        gen = fwgen.write_set(d, target)
        out[target] = (load_set(KNOWN_CHIPS[target], [d], system=False), gen)
    return out


def make_dev(fwsets, target="gfx1100", pci=None, **psp_kw):
    disc = FakeDiscovery(target)
    bar = Bar()
    regs = RegisterFile(bar, disc, bdf="0000:03:00.0")
    dev = types.SimpleNamespace(bdf="0000:03:00.0", regs=regs, discovery=disc, firmware=fwsets[target][0],
                                pci=pci or FakePCI(), vram_size=VRAM)
    fake = FakePSP(dev, **psp_kw)
    return dev, fake


FAST = dict(bootloader_timeout=0.05, sos_timeout=0.05, ring_timeout=0.05, cmd_timeout=0.1, handshake_delay_s=0,
            fb_base=FB_BASE, fb_offset=0)


def test_structs_match_the_header():
    assert ctypes.sizeof(P.PspGfxCmdResp) == 1024 and P.PspGfxCmdResp.resp.offset == 864
    assert ctypes.sizeof(P.PspGfxRbFrame) == 64 and P.PspGfxRbFrame.fence_value.offset == 20
    assert P.PspGfxRbFrame.vmid.offset == 32 and P.PspGfxResp.tmr_size.offset == 16
    assert P.PspGfxCmdSetupTmr.system_phy_addr_lo.offset == 16 and P.PspGfxCmdLoadIpFw.fw_type.offset == 12


def test_ucode_order_gfx11_and_gfx12(fwsets):
    names11 = [u.name for u in P.ucode_list(fwsets["gfx1100"][0])]
    assert names11 == ["SDMA_UCODE_TH0", "SDMA_UCODE_TH1", "CP_RS64_PFP", "CP_RS64_ME", "CP_RS64_MEC",
                       "CP_RS64_PFP_P0_STACK", "CP_RS64_PFP_P1_STACK", "CP_RS64_ME_P0_STACK", "CP_RS64_ME_P1_STACK",
                       "CP_RS64_MEC_P0_STACK", "CP_RS64_MEC_P1_STACK", "CP_RS64_MEC_P2_STACK",
                       "CP_RS64_MEC_P3_STACK", "CP_MES", "CP_MES_DATA", "CP_MES1", "CP_MES1_DATA", "IMU_I", "IMU_D",
                       "RLC_RESTORE_LIST_CNTL", "RLC_RESTORE_LIST_GPM_MEM", "RLC_RESTORE_LIST_SRM_MEM", "RLC_IRAM",
                       "RLC_DRAM", "RLC_P", "RLC_V", "RLC_G"]
    fw12 = fwsets["gfx1201"][0]
    l12 = P.ucode_list(fw12)
    names12 = [u.name for u in l12]
    assert names12[:2] == ["SDMA_RS64", "CP_RS64_PFP"] and "CP_RS64_PFP_P1_STACK" not in names12
    assert "CP_RS64_MEC_P1_STACK" in names12 and "CP_RS64_MEC_P2_STACK" not in names12
    mes1 = next(u for u in l12 if u.name == "CP_MES1")  # uni_mes: the KIQ pipe loads the same image
    assert mes1.role == "mes" and mes1.data == fw12["mes"].blob("ucode")
    assert all(u.name != "SMC" for u in l12)  # autoload: the SMC goes on its own
    assert [u.name for u in P.ucode_list(fw12, autoload=False)][-1] == "SMC"


def test_cold_boot_gfx1100(fwsets):
    dev, fake = make_dev(fwsets, "gfx1100")
    gen = fwsets["gfx1100"][1]["psp_13_0_0_sos.bin"]
    psp = P.PSP(**FAST).init(dev)
    assert psp.stages == ["KDB", "SPL", "SYS_DRV", "SOC_DRV", "INTF_DRV", "DBG_DRV", "RAS_DRV", "SOS"]
    assert not psp.sos_was_alive and psp.sos_version == 0x00310044
    expect = {P.PSP_BL_LOAD_KEY_DATABASE: "kdb", P.PSP_BL_LOAD_TOS_SPL_TABLE: "kdb",  # psp_v13_0 stages KDB for SPL
              P.PSP_BL_LOAD_SYSDRV: "sys_drv", P.PSP_BL_LOAD_SOCDRV: "soc_drv", P.PSP_BL_LOAD_INTFDRV: "intf_drv",
              P.PSP_BL_LOAD_DBGDRV: "dbg_drv", P.PSP_BL_LOAD_RASDRV: "ras_drv", P.PSP_BL_LOAD_SOSDRV: "sos"}
    assert [c for c, _, _ in fake.staged] == list(expect)
    for cmd, data, reg36 in fake.staged:
        blob = gen.blobs[expect[cmd]]
        assert data[:len(blob)] == blob and data[len(blob):] == bytes(P.PSP_1_MEG - len(blob))
        assert (reg36 << 20) == psp._fw_pri.bus and psp._fw_pri.bus % MB == 0
    assert fake.ring_events == [f"create {psp._ring.bus:#x} 0x1000"]
    names = fake.names()
    # psp_hw_start on 13.0.0: LOAD_TOC, the SMU (PMFW C-state management), SETUP_TMR; then the IP firmware.
    assert names[:3] == ["LOAD_TOC", "LOAD_IP_FW", "SETUP_TMR"] and fake.fw[0][0] == P.GFX_FW_TYPE["SMU"]
    assert fake.fw[0][1] == fwsets["gfx1100"][0]["smc"].blob("ucode")
    toc_cmd = fake.commands[0][0].cmd.cmd_load_toc
    assert toc_cmd.toc_size == len(gen.blobs["toc"]) and toc_cmd.toc_phy_addr_lo == psp._fw_pri.bus & 0xFFFFFFFF
    tmr = fake.commands[2][0].cmd.cmd_setup_tmr
    assert psp.tmr_size == tmr.buf_size == 0x600000 and tmr.tmr_flags == P.TMR_FLAG_VIRT_PHY_ADDR
    assert (tmr.buf_phy_addr_lo | tmr.buf_phy_addr_hi << 32) == FB_BASE + psp.tmr_offset
    assert (tmr.system_phy_addr_lo | tmr.system_phy_addr_hi << 32) == psp.tmr_offset
    assert psp.tmr_offset % MB == 0 and psp.tmr_offset + psp.tmr_size <= VRAM - (64 << 10)
    ucodes = P.ucode_list(fwsets["gfx1100"][0])
    assert [t for t, _ in fake.fw[1:]] == [u.fw_type for u in ucodes]
    assert [d for _, d in fake.fw[1:]] == [u.data for u in ucodes]
    assert names[-1] == "AUTOLOAD_RLC" and names[-2] == "LOAD_IP_FW" and fake.fw[-1][0] == P.GFX_FW_TYPE["RLC_G"]
    assert [f.fence_value for _, f in fake.commands] == list(range(1, len(fake.commands) + 1))
    assert [r.fence for r in psp.loaded] == list(range(1, len(fake.commands) + 1))
    assert psp.loaded[3].fw_addr == 0x2000  # the response's fw_addr_lo/hi is kept
    assert {"bootloader", "bootloader_kdb", "bootloader_sos", "ring", "tmr", "ip_firmware", "fw_rlc_g"} <= \
        set(psp.timings)
    psp.fini()
    assert fake.names()[-1] == "DESTROY_TMR" and fake.ring_events[-1] == "destroy" and dev.pci.freed == 3


def test_cold_boot_gfx1201(fwsets):
    dev, fake = make_dev(fwsets, "gfx1201")
    gen = fwsets["gfx1201"][1]["psp_14_0_3_sos.bin"]
    psp = P.PSP(**FAST).init(dev)
    assert fake.prefix == "MPASP_SMN_C2PMSG_"
    spl = next(d for c, d, _ in fake.staged if c == P.PSP_BL_LOAD_TOS_SPL_TABLE)
    assert spl[:len(gen.blobs["spl"])] == gen.blobs["spl"]  # psp_v14_0 stages the SPL itself
    names = fake.names()
    # 14.0.x: boot-time TMR with autoload: LOAD_TOC, no SETUP_TMR; the SMU first among the IP firmware.
    assert "SETUP_TMR" not in names and names[0] == "LOAD_TOC" and psp.tmr_offset is None
    assert fake.fw[0][0] == P.GFX_FW_TYPE["SMU"] and fake.fw[1][0] == P.GFX_FW_TYPE["SDMA_UCODE_TH0"]
    assert names[-1] == "AUTOLOAD_RLC" and psp.sos_version is None
    psp.fini()
    assert "DESTROY_TMR" in fake.names()


def test_warm_boot_skips_the_bootloader_and_replaces_a_left_ring(fwsets):
    dev, fake = make_dev(fwsets, "gfx1100", alive=True, ring_left=True)
    psp = P.PSP(**FAST).init(dev)
    assert psp.sos_was_alive and psp.stages == [] and fake.staged == []
    assert fake.ring_events[0] == "destroy" and fake.ring_events[1].startswith("create")
    assert fake.names()[-1] == "AUTOLOAD_RLC"


def test_suspend_resume_reloads(fwsets):
    dev, fake = make_dev(fwsets, "gfx1100")
    psp = P.PSP(**FAST).init(dev)
    n = len(fake.fw)
    psp.suspend()
    assert fake.ring_events[-1] == "destroy"
    psp.resume()
    assert len(fake.fw) == 2 * n and fake.staged[-1][0] == P.PSP_BL_LOAD_SOSDRV and len(fake.staged) == 8
    psp.fini()


def test_bootloader_never_ready(fwsets):
    dev, fake = make_dev(fwsets, "gfx1100", ready=False)
    with pytest.raises(P.PSPError) as e:
        P.PSP(**FAST).init(dev)
    msg = str(e.value)
    assert "bootloader stage KDB" in msg and "MP0_SMN_C2PMSG_35" in msg and "0x00000000" in msg
    assert "never signalled ready" in msg and "cold boot" in msg
    assert dev.pci.freed == 3 and not dev.pci.live  # buffers given back on failure


def test_bootloader_refuses_a_component(fwsets):
    dev, fake = make_dev(fwsets, "gfx1100", refuse_stage=P.PSP_BL_LOAD_SYSDRV)
    with pytest.raises(P.PSPError) as e:
        P.PSP(**FAST).init(dev)
    assert "SYS_DRV" in str(e.value) and "0x80000017" in str(e.value) and "status 0x0017" in str(e.value)


def test_sos_never_alive(fwsets):
    dev, fake = make_dev(fwsets, "gfx1201", never_alive=True)
    with pytest.raises(P.PSPError) as e:
        P.PSP(**FAST).init(dev)
    assert "SOS" in str(e.value) and "MPASP_SMN_C2PMSG_81" in str(e.value) and "psp_*_sos.bin" in str(e.value)


def test_load_ip_fw_failure_names_firmware_command_and_status(fwsets):
    dev, fake = make_dev(fwsets, "gfx1100", fail_fw_type=P.GFX_FW_TYPE["RLC_G"])
    with pytest.raises(P.PSPError) as e:
        P.PSP(**FAST).init(dev)
    msg = str(e.value)
    assert "LOAD_IP_FW" in msg and "RLC_G" in msg and "gc_11_0_0_rlc.bin" in msg and "0xffff0002" in msg


def test_command_timeout(fwsets):
    dev, fake = make_dev(fwsets, "gfx1100", no_fence=True)
    with pytest.raises(P.PSPError) as e:
        P.PSP(**FAST).init(dev)
    assert "LOAD_TOC" in str(e.value) and "timed out" in str(e.value) and "waiting for 1" in str(e.value)


def test_scattered_dma_is_refused(fwsets):
    dev, fake = make_dev(fwsets, "gfx1100", pci=FakePCI(scatter=True))
    with pytest.raises(P.PSPError) as e:
        P.PSP(**FAST).init(dev)
    assert "1 MiB-aligned" in str(e.value) and "VFIO" in str(e.value)


def test_unknown_psp_version(fwsets):
    dev, fake = make_dev(fwsets, "gfx1100")
    dev.discovery.ips["MP0"] = (13, 0, 99)
    with pytest.raises(P.PSPError, match="13.0.99 is not a PSP version"):
        P.PSP(**FAST).init(dev)
