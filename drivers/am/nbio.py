"""The NBIO (northbridge interface) and SOC-common block of an AM device, for a compute-only bring-up.

What it programs is what amdgpu's soc21.c / soc24.c common block and their NBIO files (nbio_v4_3.c for NBIO 4.3.x,
the gfx11 dGPUs; nbif_v6_3_1.c for NBIF 6.3.1, the gfx12 dGPUs) program:

- `init(dev)`: soc21_common_early_init's set_reg_remap (the HDP flush registers remapped into the MMIO hole at
  MMIO_REG_HOLE_OFFSET), then soc21_common_hw_init: init_registers (RCC_DEV0_EPF2_STRAP2 STRAP_NO_SOFT_RESET_DEV0_F2
  cleared), remap_hdp_registers (BIF_BX0_REMAP_HDP_MEM/REG_FLUSH_CNTL), enable_doorbell_aperture
  (RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN), then soc21_common_late_init's enable_doorbell_selfring_aperture (BAR2's bus
  address). ASPM/LTR (CONFIG_PCIEASPM, PCIe 7.4/7.6 only), clock gating and RAS are left out.
- The doorbell routing other blocks ask for (`sdma_doorbell_range`, `ih_doorbell_range`, `gc_doorbell_init`) and the
  IH's interrupt control (`ih_control`); `init(dev, program_doorbells=True)` also routes the default layout itself
  (SDMA, IH, GC) so a bring-up has working doorbells before those blocks exist. The layout is `DOORBELLS`
  (soc21_init_doorbell_index / soc24_init_doorbell_index: amdgpu_doorbell.h AMDGPU_NAVI10_DOORBELL_*, in 64-bit
  doorbell units; the hardware's doorbell "index" fields take dword units, `DoorbellLayout.dword`).
- `flush_hdp()`: hdp_v6_0_flush_hdp / hdp_v7_0_flush_hdp with no ring: write 0 at the remapped
  HDP_MEM_FLUSH_CNTL, then read RCC_CONFIG_MEMSIZE to post it (the kernel reads the memory size, not the remapped
  register, "because reading back the remapped register causes problems on some platforms").
- `fini()` / `suspend()`: soc21_common_hw_fini (both doorbell apertures off); `resume()`: hw_init and late_init again.

Registers past the register BAR (nbio_4_3_0's S2A_DOORBELL_ENTRY_*_CTRL, RCC_DEV0_EPF2_STRAP2) go through the RSMU
index/data pair; drivers/am/regs.py RegisterFile does that (amdgpu_device_rreg/wreg -> pcie_rreg/wreg).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Optional

from drivers.am.regs import Reg, RegisterError, RegisterFile
from hcq.errors import HCQError

log = logging.getLogger(__name__)

PAGE_SIZE = 4096
# amdgpu.h MMIO_REG_HOLE_OFFSET (0x80000 - PAGE_SIZE): the MMIO page the HDP flush registers are remapped to; the
# kernel uses it when PAGE_SIZE <= 4096 and not SR-IOV (nbio_v4_3_set_reg_remap / nbif_v6_3_1_set_reg_remap)
MMIO_REG_HOLE_OFFSET = 0x80000 - PAGE_SIZE
KFD_MMIO_REMAP_HDP_MEM_FLUSH_CNTL = 0  # include/uapi/linux/kfd_ioctl.h enum: byte offsets in the remapped page
KFD_MMIO_REMAP_HDP_REG_FLUSH_CNTL = 4
# nbio_v4_3_gc_doorbell_init / nbif_v6_3_1_gc_doorbell_init: S2A entries 0 and 3 (ENABLE=1, AWID=3 / 6,
# AWADDR_31_28=3)
GC_DOORBELL_ENTRY_0 = 0x30000007
GC_DOORBELL_ENTRY_3 = 0x3000000D
SDMA_DOORBELL_AWID, SDMA_DOORBELL_AWADDR = 0xE, 0x3  # nbio_v4_3_sdma_doorbell_range
IH_DOORBELL_AWID, IH_DOORBELL_AWADDR, IH_DOORBELL_SIZE = 0x0, 0x0, 2  # nbio_v4_3_ih_doorbell_range
DOORBELL_BAR = 2  # amdgpu_doorbell_init: adev->doorbell.base = pci_resource_start(pdev, 2)


class NBIOError(HCQError):
    """The NBIO block could not be set up or used; the message names the device, the register or step, and what to
    do."""


@dataclass(frozen=True)
class DoorbellLayout:
    """The kernel's doorbell assignment for soc21 and soc24 (soc21_init_doorbell_index / soc24_init_doorbell_index,
    amdgpu_doorbell.h enum AMDGPU_NAVI10_DOORBELL_ASSIGNMENT). Every index is in 64-bit doorbell units, counted from
    the start of the doorbell BAR (BAR2); `dword(i)` is what the hardware's doorbell offset fields and the S2A ranges
    take (the kernel's `ring->doorbell_index = index << 1`), `byte_offset(i)` the offset in BAR2.

    `sdma_doorbell_range` is in dwords per SDMA engine (the kernel's adev->doorbell_index.sdma_doorbell_range = 20:
    exactly the 0xA 64-bit slots between sDMA_ENGINE0 and sDMA_ENGINE1)."""
    kiq: int = 0x000
    hiq: int = 0x001
    diq: int = 0x002
    mec_rings: tuple[int, ...] = (0x003, 0x004, 0x005, 0x006, 0x007, 0x008, 0x009, 0x00A)
    mes_rings: tuple[int, ...] = (0x00B, 0x00C)
    userqueue_start: int = 0x00D
    userqueue_end: int = 0x08A
    gfx_rings: tuple[int, ...] = (0x08B, 0x08C)
    gfx_userqueue_start: int = 0x08D
    gfx_userqueue_end: int = 0x0FF
    sdma_engines: tuple[int, ...] = (0x100, 0x10A)  # sDMA_ENGINE0/1 (soc21/soc24 assign two engines)
    ih: int = 0x178
    vcn: tuple[int, ...] = (0x188, 0x189, 0x18A, 0x18B)  # DOORBELL64_VCN0_1 .. VCN6_7
    vpe: int = 0x190  # soc21 only (soc24_init_doorbell_index assigns no VPE ring)
    first_non_cp: int = 0x100
    last_non_cp: int = 0x190
    max_assignment_dwords: int = 0x190 << 1  # AMDGPU_NAVI10_DOORBELL_MAX_ASSIGNMENT << 1
    sdma_doorbell_range: int = 20

    @staticmethod
    def dword(index: int) -> int:
        """A 64-bit doorbell index as the dword index the hardware takes (index << 1)."""
        return index << 1

    @staticmethod
    def byte_offset(index: int) -> int:
        """A 64-bit doorbell index as the byte offset of its doorbell in BAR2."""
        return index * 8

    def mec_ring(self, n: int) -> int:
        """The kernel compute ring `n`'s doorbell (gfx_v11_0_compute_ring_init: mec_ring0 + n)."""
        if not 0 <= n < len(self.mec_rings):
            raise ValueError(f"compute ring {n} has no kernel doorbell (0..{len(self.mec_rings) - 1}); user queues "
                             f"take {self.userqueue_start:#x}..{self.userqueue_end:#x}")
        return self.mec_rings[n]

    def sdma(self, instance: int) -> int:
        """SDMA engine `instance`'s doorbell (sdma_v6_0_sw_init / sdma_v7_0_sw_init)."""
        if not 0 <= instance < len(self.sdma_engines):
            raise ValueError(f"SDMA instance {instance} has no doorbell (0..{len(self.sdma_engines) - 1})")
        return self.sdma_engines[instance]

    def mec_range_bytes(self) -> tuple[int, int]:
        """CP_MEC_DOORBELL_RANGE_LOWER/UPPER as gfx_v11_0_cp_set_doorbell_range writes them: (kiq*2)<<2 and
        (userqueue_end*2)<<2 (byte offsets of the dword doorbells)."""
        return self.dword(self.kiq) << 2, self.dword(self.userqueue_end) << 2

    def gfx_range_bytes(self) -> tuple[int, int]:
        """CP_RB_DOORBELL_RANGE_LOWER/UPPER (gfx_v11_0_cp_set_doorbell_range): (gfx_ring0*2)<<2, (gfx_userqueue_end*2)<<2."""
        return self.dword(self.gfx_rings[0]) << 2, self.dword(self.gfx_userqueue_end) << 2

    def as_dict(self) -> dict[str, Any]:
        """The layout as plain data (reports, --json)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


DOORBELLS = DoorbellLayout()


@dataclass(frozen=True)
class NBIOVariant:
    """What differs between the NBIO files: the S2A doorbell entry registers' prefix and whether init_registers
    clears STRAP_NO_SOFT_RESET_DEV0_F2 (nbio_v4_3_init_registers: only on NBIO 4.3.0; nbif_v6_3_1: always)."""
    name: str
    s2a: str
    strap2: bool


def variant_for(version: tuple[int, ...]) -> NBIOVariant:
    """The NBIO variant for a discovered NBIF version (amdgpu_discovery_set_ip_blocks' NBIO_HWIP switch)."""
    v = tuple(version[:3])
    if v[:2] == (4, 3):
        return NBIOVariant("nbio_v4_3", "S2A_DOORBELL_ENTRY_", strap2=v == (4, 3, 0))
    if v == (6, 3, 1):
        return NBIOVariant("nbif_v6_3_1", "GDC_S2A0_S2A_DOORBELL_ENTRY_", strap2=True)
    raise NBIOError(f"NBIO {'.'.join(map(str, v))} is not supported by the AM NBIO driver (it knows 4.3.x, the gfx11 "
                    f"dGPUs' nbio_v4_3.c, and 6.3.1, the gfx12 dGPUs' nbif_v6_3_1.c)")


@dataclass
class DoorbellRange:
    """One S2A doorbell routing entry as programmed: entry number, enabled, AWID, first dword, size in dwords."""
    entry: int
    enabled: bool
    awid: int = 0
    offset: int = 0
    size: int = 0
    value: int = 0


class NBIO:
    """The NBIO/SOC-common block of one AM device (see the module docstring for what each step programs).

    `init(dev)` takes an opened AMDevice (regs, discovery, bars/pci); `program_doorbells` routes the default
    doorbell layout (SDMA engines, IH, GC entries) during init, as the SDMA, IH and GFX blocks would later; the
    `selfring` aperture is enabled in init (soc21_common_late_init) unless False. After init: `variant`,
    `remap_offset` (byte offset in BAR5 of the remapped HDP flush page), `ranges` (S2A entries programmed),
    `hdp_flushes` (count), `warnings`. `flush_hdp()` is what GMC.map calls through dev.nbio."""

    def __init__(self, *, layout: DoorbellLayout = DOORBELLS, program_doorbells: bool = True, selfring: bool = True):
        self.layout = layout
        self.program_doorbells, self.selfring = program_doorbells, selfring
        self.dev: Any = None
        self.regs: Optional[RegisterFile] = None
        self.bdf = ""
        self.variant: Optional[NBIOVariant] = None
        self.remap_offset = MMIO_REG_HOLE_OFFSET
        self.doorbell_base = 0
        self.ranges: dict[int, DoorbellRange] = {}
        self.hdp_flushes = 0
        self.warnings: list[str] = []
        self.state = "off"
        self._hdp_lock = threading.Lock()  # one flush write + posting read at a time
        self._remap_reg: Optional[Reg] = None

    # --- the IP block ---
    def init(self, dev: Any) -> "NBIO":
        """early_init (set_reg_remap), hw_init (init_registers, remap_hdp_registers, doorbell aperture), late_init
        (selfring aperture), and the default doorbell routing when `program_doorbells`."""
        if getattr(dev, "regs", None) is None or getattr(dev, "discovery", None) is None:
            raise NBIOError(f"{getattr(dev, 'bdf', '?')}: the NBIO block needs an opened device (registers and IP "
                            f"discovery); open the AMDevice first")
        self.dev, self.regs, self.bdf = dev, dev.regs, dev.bdf
        self.variant = variant_for(tuple(dev.discovery.version("NBIF")))
        self.remap_offset = MMIO_REG_HOLE_OFFSET  # set_reg_remap, bare-metal 4 KiB-page path
        self.doorbell_base = self._doorbell_bar_address()
        r = self.regs.reg("NBIF", "RCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE")  # placed now: flush_hdp posts through it
        self._remap_reg = Reg("HDP_MEM_FLUSH_CNTL (remapped)", "NBIF", 0, 0, 0,
                              self.remap_offset + KFD_MMIO_REMAP_HDP_MEM_FLUSH_CNTL, r.module)
        self.hw_init()
        self.late_init()
        if self.program_doorbells:
            self.program_default_doorbells()
        dev.nbio = self  # GMC and the other blocks find flush_hdp and the layout here
        return self

    def hw_init(self) -> None:
        """soc21_common_hw_init / soc24_common_hw_init, without ASPM."""
        self.init_registers()
        self.remap_hdp_registers()
        self.enable_doorbell_aperture(True)
        self.state = "running"

    def late_init(self) -> None:
        """soc21_common_late_init: the selfring doorbell aperture, late because BAR2 may have moved."""
        if self.selfring:
            self.enable_doorbell_selfring_aperture(True)

    def fini(self) -> None:
        """soc21_common_hw_fini: the doorbell aperture and the selfring aperture off."""
        if self.regs is None or self.state == "off":
            return
        self.enable_doorbell_aperture(False)
        self.enable_doorbell_selfring_aperture(False)
        self.state = "off"

    def suspend(self) -> None:
        """soc21_common_suspend: hw_fini."""
        self.fini()

    def resume(self) -> None:
        """soc21_common_resume: hw_init, then late_init (amdgpu_device_resume runs late_init again), and the default
        doorbell routing again when init programmed it."""
        self._need_init("resume")
        self.doorbell_base = self._doorbell_bar_address()
        self.hw_init()
        self.late_init()
        if self.program_doorbells:
            self.program_default_doorbells()

    # --- steps (amdgpu_nbio_funcs) ---
    def init_registers(self) -> None:
        """nbio_v4_3_init_registers / nbif_v6_3_1_init_registers: clear STRAP_NO_SOFT_RESET_DEV0_F2 in
        RCC_DEV0_EPF2_STRAP2 (NBIO 4.3.0 and NBIF 6.3.1 only)."""
        regs, v = self._need_init("init_registers")
        if not v.strap2:
            return
        try:
            strap = regs.reg("NBIF", "RCC_DEV0_EPF2_STRAP2")
        except RegisterError as e:
            # the register is in NBIO segment 5 (0x04040000 in beige_goby_ip_offset.h NBIO_BASE); a discovery table
            # without that segment cannot place it. The strap only keeps function 2 out of soft resets, which a
            # compute bring-up does not need, so this is a warning, not a failure.
            msg = f"{self.bdf}: init_registers skipped clearing STRAP_NO_SOFT_RESET_DEV0_F2: {e}"
            self.warnings.append(msg)
            log.warning("%s", msg)
            return
        regs.update(strap, STRAP_NO_SOFT_RESET_DEV0_F2=0)

    def remap_hdp_registers(self) -> None:
        """nbio_v4_3_remap_hdp_registers: tell the BIF where the HDP flush registers are remapped (byte offsets)."""
        regs, _ = self._need_init("remap_hdp_registers")
        regs.write_regs([
            (regs.reg("NBIF", "BIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL"), self.remap_offset + KFD_MMIO_REMAP_HDP_MEM_FLUSH_CNTL),
            (regs.reg("NBIF", "BIF_BX0_REMAP_HDP_REG_FLUSH_CNTL"), self.remap_offset + KFD_MMIO_REMAP_HDP_REG_FLUSH_CNTL),
        ])

    def enable_doorbell_aperture(self, enable: bool) -> None:
        """nbio_v4_3_enable_doorbell_aperture: RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN.BIF_DOORBELL_APER_EN."""
        regs, _ = self._need_init("enable_doorbell_aperture")
        regs.update("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN", "NBIF", BIF_DOORBELL_APER_EN=int(enable))

    def enable_doorbell_selfring_aperture(self, enable: bool) -> None:
        """nbio_v4_3_enable_doorbell_selfring_aperture: on, the base is BAR2's bus address (low, then high) and the
        control EN=1, MODE=1, SIZE=0; off, the control is 0 (the base is left)."""
        regs, _ = self._need_init("enable_doorbell_selfring_aperture")
        cntl = regs.reg("NBIF", "BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_CNTL")
        writes = []
        value = 0
        if enable:
            value = cntl.encode(0, DOORBELL_SELFRING_GPA_APER_EN=1, DOORBELL_SELFRING_GPA_APER_MODE=1,
                                DOORBELL_SELFRING_GPA_APER_SIZE=0)
            writes += [(regs.reg("NBIF", "BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_BASE_LOW"),
                        self.doorbell_base & 0xFFFFFFFF),
                       (regs.reg("NBIF", "BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_BASE_HIGH"), self.doorbell_base >> 32)]
        writes.append((cntl, value))
        regs.write_regs(writes)

    def mc_access_enable(self, enable: bool) -> None:
        """nbio_v4_3_mc_access_enable: BIF_BX0_BIF_FB_EN read and write enables (0 to turn both off)."""
        regs, _ = self._need_init("mc_access_enable")
        r = regs.reg("NBIF", "BIF_BX0_BIF_FB_EN")
        regs.write(r, r.encode(0, FB_READ_EN=1, FB_WRITE_EN=1) if enable else 0)

    def get_memsize(self) -> int:
        """nbio_v4_3_get_memsize: RCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE (MiB of VRAM)."""
        regs, _ = self._need_init("get_memsize")
        return regs.read("RCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE", "NBIF")

    # --- doorbell routing ---
    def _s2a(self, entry: int) -> Reg:
        regs, v = self._need_init("doorbell routing")
        return regs.reg("NBIF", f"{v.s2a}{entry}_CTRL")

    def _route(self, entry: int, enable: bool, awid: int, offset: int, size: int, awaddr: int) -> DoorbellRange:
        """Read-modify-write one S2A entry as nbio_v4_3_*_doorbell_range do (REG_SET_FIELD on the value read)."""
        regs, _ = self._need_init("doorbell routing")
        r = self._s2a(entry)
        p = f"S2A_DOORBELL_PORT{entry}_"
        value = regs.read(r)
        if enable:
            if not 0 <= offset < 1 << 10 or not 0 <= size < 1 << 8:
                raise NBIOError(f"{self.bdf}: doorbell range {offset:#x}+{size} (dwords) does not fit {r.name} "
                                f"(RANGE_OFFSET is 10 bits, RANGE_SIZE 8 bits)")
            value = r.encode(value, **{p + "ENABLE": 1, p + "AWID": awid, p + "RANGE_OFFSET": offset,
                                       p + "RANGE_SIZE": size, p + "AWADDR_31_28_VALUE": awaddr})
        else:
            value = r.encode(value, **{p + "RANGE_SIZE": 0})  # the kernel only zeroes the size
        regs.write(r, value)
        rng = DoorbellRange(entry, enable, awid if enable else 0, offset if enable else 0, size if enable else 0, value)
        self.ranges[entry] = rng
        return rng

    def sdma_doorbell_range(self, instance: int, enable: bool = True, index: Optional[int] = None,
                            size: Optional[int] = None) -> Optional[DoorbellRange]:
        """nbio_v4_3_sdma_doorbell_range: S2A entry 2 routes the SDMA doorbells; only instance 0 programs it, with a
        size covering every engine (sdma_v6_0_gfx_resume: index = engine 0's dword doorbell, size =
        sdma_doorbell_range * num_instances), so instance 1 is a no-op as in the kernel. `index` and `size` are in
        dwords (default: the layout's)."""
        if instance != 0:
            self._need_init("sdma_doorbell_range")
            return None
        n = self._sdma_instances()
        index = self.layout.dword(self.layout.sdma(0)) if index is None else index
        size = self.layout.sdma_doorbell_range * n if size is None else size
        return self._route(2, enable, SDMA_DOORBELL_AWID, index, size, SDMA_DOORBELL_AWADDR)

    def ih_doorbell_range(self, enable: bool = True, index: Optional[int] = None) -> DoorbellRange:
        """nbio_v4_3_ih_doorbell_range: S2A entry 1 routes the IH ring 0 doorbell (AWID 0, size 2 dwords). `index` in
        dwords (default: the layout's IH doorbell, ih_v6_0_sw_init's ih << 1)."""
        index = self.layout.dword(self.layout.ih) if index is None else index
        return self._route(1, enable, IH_DOORBELL_AWID, index, IH_DOORBELL_SIZE, IH_DOORBELL_AWADDR)

    def gc_doorbell_init(self) -> None:
        """nbio_v4_3_gc_doorbell_init: S2A entries 0 and 3 (the CP's doorbells) with the kernel's fixed values."""
        regs, _ = self._need_init("gc_doorbell_init")
        writes = [(self._s2a(0), GC_DOORBELL_ENTRY_0), (self._s2a(3), GC_DOORBELL_ENTRY_3)]
        regs.write_regs(writes)
        for (r, v), entry in zip(writes, (0, 3)):
            p = f"S2A_DOORBELL_PORT{entry}_"
            self.ranges[entry] = DoorbellRange(entry, True, r.get(v, p + "AWID"), 0, 0, v)

    def program_default_doorbells(self) -> None:
        """The routing the GFX, SDMA and IH blocks ask for in their hw_init, with the default layout."""
        self.gc_doorbell_init()
        self.sdma_doorbell_range(0, True)
        self.ih_doorbell_range(True)

    def ih_control(self, dummy_page_addr: int) -> None:
        """nbio_v4_3_ih_control: INTERRUPT_CNTL2 = the dummy page's bus address >> 8, then INTERRUPT_CNTL with
        IH_DUMMY_RD_OVERRIDE=0 and IH_REQ_NONSNOOP_EN=0 (the IH block calls this in its irq init)."""
        regs, _ = self._need_init("ih_control")
        if dummy_page_addr & 0xFF or not 0 <= dummy_page_addr >> 8 <= 0xFFFFFFFF:
            raise NBIOError(f"{self.bdf}: the IH dummy page address {dummy_page_addr:#x} must be 256-byte aligned and "
                            f"below 2^40 (INTERRUPT_CNTL2 holds it >> 8)")
        regs.write("BIF_BX0_INTERRUPT_CNTL2", dummy_page_addr >> 8, "NBIF")
        regs.update("BIF_BX0_INTERRUPT_CNTL", "NBIF", IH_DUMMY_RD_OVERRIDE=0, IH_REQ_NONSNOOP_EN=0)

    # --- HDP ---
    def flush_hdp(self) -> None:
        """Make CPU writes through BAR0 visible to the GPU: hdp_v6_0_flush_hdp / hdp_v7_0_flush_hdp with no ring
        (write 0 to the remapped HDP_MEM_FLUSH_CNTL, then read RCC_CONFIG_MEMSIZE to post the write)."""
        regs, _ = self._need_init("flush_hdp")
        assert self._remap_reg is not None
        with self._hdp_lock:
            regs.write(self._remap_reg, 0)
            regs.read("RCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE", "NBIF")
            self.hdp_flushes += 1

    def hdp_flush_regs(self) -> tuple[Reg, Reg]:
        """(BIF_BX_PF0_GPU_HDP_FLUSH_REQ, BIF_BX_PF0_GPU_HDP_FLUSH_DONE): what the GFX and SDMA rings' HDP flush
        packets name (get_hdp_flush_req_offset / get_hdp_flush_done_offset; `.dword` is the kernel's offset)."""
        regs, _ = self._need_init("hdp_flush_regs")
        return regs.reg("NBIF", "BIF_BX_PF0_GPU_HDP_FLUSH_REQ"), regs.reg("NBIF", "BIF_BX_PF0_GPU_HDP_FLUSH_DONE")

    def hdp_flush_mask(self, engine: str) -> int:
        """The ref_and_mask bit of an engine in GPU_HDP_FLUSH_REQ/DONE (nbio_v4_3_hdp_flush_reg): "CP0".."CP9",
        "SDMA0", "SDMA1"."""
        _, done = self.hdp_flush_regs()
        try:
            return done.encode(0, **{engine.upper(): 1})
        except RegisterError as e:
            raise NBIOError(f"{self.bdf}: no HDP flush bit for engine {engine!r} (CP0..CP9, SDMA0, SDMA1): {e}") from None

    # --- helpers ---
    def _need_init(self, what: str) -> tuple[RegisterFile, NBIOVariant]:
        if self.regs is None or self.variant is None:
            raise NBIOError(f"NBIO.{what}: the block is not initialised; call init(dev) with an opened AMDevice first")
        return self.regs, self.variant

    def _sdma_instances(self) -> int:
        # adev->sdma.num_instances: the SDMA0 hardware id's instances in the discovery table, less harvested ones
        disc = self.dev.discovery
        n = len(disc.active_instances("SDMA0")) if disc.has("SDMA0") else 0
        return max(1, min(n, len(self.layout.sdma_engines)))

    def _doorbell_bar_address(self) -> int:
        bars = getattr(self.dev, "bars", None) or {}
        bar = bars.get(DOORBELL_BAR) if isinstance(bars, dict) else None
        if bar is None and getattr(self.dev, "pci", None) is not None:
            bar = next((b for b in self.dev.pci.bars() if b.index == DOORBELL_BAR), None)
        if bar is None:
            if self.selfring:
                raise NBIOError(f"{self.bdf}: the doorbell BAR (BAR2) is not known, so the selfring doorbell aperture "
                                f"has no base; open the device fully, or pass selfring=False")
            return 0
        return bar.address

    def describe(self) -> dict[str, Any]:
        """The block's state as plain data (gpu_probe, --json)."""
        return dict(variant=self.variant.name if self.variant else None, state=self.state,
                    remap_offset=f"{self.remap_offset:#x}", doorbell_base=f"{self.doorbell_base:#x}",
                    hdp_flushes=self.hdp_flushes, warnings=list(self.warnings),
                    ranges={e: dict(enabled=r.enabled, awid=r.awid, offset=r.offset, size=r.size,
                                    value=f"{r.value:#010x}") for e, r in sorted(self.ranges.items())},
                    layout=self.layout.as_dict())

    def __repr__(self) -> str:
        return f"NBIO({self.bdf or 'unattached'}, {self.variant.name if self.variant else '?'}, {self.state})"


__all__ = ["DOORBELLS", "DoorbellLayout", "DoorbellRange", "KFD_MMIO_REMAP_HDP_MEM_FLUSH_CNTL",
           "KFD_MMIO_REMAP_HDP_REG_FLUSH_CNTL", "MMIO_REG_HOLE_OFFSET", "NBIO", "NBIOError", "NBIOVariant",
           "variant_for"]
