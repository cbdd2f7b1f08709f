"""The emulated AMD GPU as a PCI function (the AM path's card): IDs, BARs, VRAM, the register file, power-on state.

BARs are laid out as amdgpu expects on SOC15-and-later parts:
- BAR0: VRAM, 64-bit prefetchable, with a Resizable BAR capability (amdgpu_device_resize_fb_bar resizes resource 0
  up to the VRAM size). Default 256 MiB; it shows the first BAR-size bytes of VRAM.
- BAR2: doorbells, 64-bit prefetchable (amdgpu_doorbell_init: pci_resource_start/len(pdev, 2)), 2 MiB.
- BAR5: registers, 32-bit non-prefetchable, 1 MiB (amdgpu_device_init: rmmio = resource 5 for CHIP_BONAIRE and
  later).
Real cards also carry an I/O-port BAR4 (256 bytes); emu/pci's PCIFunction models memory BARs only, and amdgpu 6.12
never maps it, so it is absent here.

VRAM is one sparse memfd of `vram_size` bytes (pages cost nothing until touched), shared by BAR0's mapping, MM_DATA
and the card's own engines (`vram`, a mapping of all of it). At power-on the IFWI writes the IP discovery table at
vram_size - 64 KiB and then sets MP0_SMN_C2PMSG_33 bit 31, after `boot_delay_s` (amdgpu_discovery.c: "generally in
the 60-100ms range"; 0 for tests, math.inf for an IFWI that never finishes).

State: `state` is POWER_ON after power-on or a function reset and INITIALISED once the later blocks (PSP, SMU, GMC,
...) mark the card brought up; they read it to answer a warm boot as a card that is already running would.
"""
from __future__ import annotations

import enum
import math
import mmap
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from emu.am.discovery import DISCOVERY_TMR_OFFSET, Board, board, install_discovery_table
from emu.am.regs import RegisterFile, VRAMPort, install_boot_registers
from emu.pci import BarSpec, LinkSpec, MemoryBacking, MMIOHandler, PCIFunction, SysfsDevice, install_pci_function
from emu.system import EmulatedSystem

MiB = 1 << 20
AMD_VENDOR = 0x1002  # PCI_VENDOR_ID_ATI (include/linux/pci_ids.h), the vendor amdgpu_drv.c pciidlist matches
VGA_CLASS = 0x030000  # PCI_CLASS_DISPLAY_VGA << 8: amdgpu_drv.c matches any 0x1002 device of this class
VRAM_BAR, DOORBELL_BAR, REG_BAR = 0, 2, 5
DEFAULT_BDF = "0000:03:00.0"
DEFAULT_VRAM = 4 << 30  # sparse; the boards' real sizes (emu.am.discovery Board.vram_size) are larger
DEFAULT_VRAM_BAR = 256 * MiB  # the BAR0 size firmware sets before a resize (amdgpu_device_resize_fb_bar comment)
DOORBELL_BAR_SIZE = 2 * MiB
REG_BAR_SIZE = 1 * MiB
DEFAULT_BOOT_DELAY_S = 0.08  # amdgpu_discovery.c: IFWI init "generally ... in the 60-100ms range"


@dataclass(frozen=True)
class PCIIdentity:
    """What a board shows on the bus: device id, revision and link. Device ids are the retail cards' (pci.ids:
    0x744c Navi 31 RX 7900 XTX, 0x7480 Navi 33 RX 7600, 0x7550 Navi 48 RX 9070; amdgpu 6.12 claims them through
    its CHIP_IP_DISCOVERY class entries, not by id). Revisions are informational."""
    device: int
    revision: int
    link: LinkSpec


PCI_IDS: dict[str, PCIIdentity] = {
    "gfx1100": PCIIdentity(0x744C, 0xC8, LinkSpec(16.0, 16)),  # PCIe 4.0 x16
    "gfx1102": PCIIdentity(0x7480, 0xC7, LinkSpec(16.0, 8)),   # PCIe 4.0 x8
    "gfx1201": PCIIdentity(0x7550, 0xC0, LinkSpec(32.0, 16)),  # PCIe 5.0 x16
}


class BootState(enum.Enum):
    """Whether the card is fresh from power-on / reset, or was brought up by an earlier driver and left running."""
    POWER_ON = "power-on"
    INITIALISED = "initialised"


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class AMGPU:
    """One emulated AMD GPU: a PCIFunction (`function`) with VRAM, doorbell and register BARs, its register file
    (`regs`), VRAM (`vram`, all of it, shared with BAR0) and boot state (`state`).

    Hooks for the blocks built on top: `on_power_on` (callables run after every power-on or function reset),
    `gfx_busy` (GRBM_STATUS.GUI_ACTIVE). `sysfs` is the bus entry once installed (install_am_gpu)."""

    def __init__(self, target: str = "gfx1100", *, vram_size: int = DEFAULT_VRAM, bar0_size: Optional[int] = None,
                 boot_delay_s: float = DEFAULT_BOOT_DELAY_S, flr: bool = True,
                 discovery_options: Optional[dict[str, Any]] = None):
        self.target = target
        self.board: Board = board(target)
        ident = PCI_IDS[target]
        if vram_size < MiB or vram_size % MiB:
            # RCC_CONFIG_MEMSIZE reports VRAM in MiB (amdgpu_discovery.c shifts it by 20)
            raise ValueError(f"vram_size {vram_size:#x} must be a positive whole number of MiB")
        if boot_delay_s < 0:
            raise ValueError(f"boot_delay_s must be >= 0 (math.inf: the IFWI never finishes), got {boot_delay_s}")
        self.vram_size = vram_size
        self.boot_delay_s = boot_delay_s
        self.discovery_options = dict(discovery_options or {})
        self.state = BootState.POWER_ON
        self.on_power_on: list[Callable[[], None]] = []
        self.gfx_busy: Callable[[], bool] = lambda: False
        self.sysfs: Optional[SysfsDevice] = None
        self.discovery_offset = vram_size - DISCOVERY_TMR_OFFSET
        self._lock = threading.RLock()
        self._ifwi_done = False
        self._ifwi_at = 0.0
        self._timer: Optional[threading.Timer] = None
        self.power_ons = 0

        max_bar = _pow2_at_least(vram_size)
        bar0 = bar0_size if bar0_size is not None else min(DEFAULT_VRAM_BAR, max_bar)
        if bar0 < MiB or bar0 & (bar0 - 1) or bar0 > max_bar:
            raise ValueError(f"bar0_size {bar0:#x} must be a power of two from 1 MiB up to {max_bar:#x} (VRAM "
                             f"{vram_size:#x} rounded up to a power of two)")
        # Resizable BAR sizes: every power of two from the default up to VRAM rounded up (PCIe 7.8.6; a 24 GiB card
        # offers 32 GiB), so amdgpu_device_resize_fb_bar can make the BAR cover all of VRAM.
        sizes = tuple(1 << b for b in range(bar0.bit_length() - 1, max_bar.bit_length()))

        self.vram_fd = os.memfd_create(f"baregpu-emu-am-{target}-vram", os.MFD_CLOEXEC)
        os.ftruncate(self.vram_fd, vram_size)
        self.vram = mmap.mmap(self.vram_fd, vram_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.regs = RegisterFile(self.board, bar_size=REG_BAR_SIZE, on_error=self._register_error)
        install_boot_registers(self.regs, vram=VRAMPort(vram_size, self._vram_read32, self._vram_write32),
                               ifwi_ready=self.ifwi_ready, gfx_busy=lambda: self.gfx_busy())
        self.doorbells = MemoryBacking(f"am-{target}-doorbell", DOORBELL_BAR_SIZE)
        bars = [
            BarSpec(VRAM_BAR, bar0, MemoryBacking(f"am-{target}-vram", bar0, fd=self.vram_fd), prefetchable=True,
                    resizable_sizes=sizes),
            BarSpec(DOORBELL_BAR, DOORBELL_BAR_SIZE, self.doorbells, prefetchable=True),
            BarSpec(REG_BAR, REG_BAR_SIZE, MMIOHandler(self.regs.read32, self.regs.write32), is_64bit=False),
        ]
        self.function = PCIFunction(AMD_VENDOR, ident.device, VGA_CLASS, bars, subsystem_vendor=AMD_VENDOR,
                                    revision=ident.revision, link=ident.link, msi_vectors=1, flr=flr,
                                    on_reset=self.power_on)
        self.power_on()

    # -- power and boot --
    def power_on(self) -> None:
        """Cold state: registers at reset values, the IFWI starting over (table and C2PMSG_33 bit 31 after
        boot_delay_s), state POWER_ON, then the on_power_on hooks. A function reset lands here; VRAM keeps its
        contents (reset does not clear memory) except the discovery table the IFWI writes again."""
        self.regs.power_on()  # outside self._lock: register reads take the register file's lock, then this one
        with self._lock:
            self._cancel_timer()
            self.power_ons += 1
            self.state = BootState.POWER_ON
            self._ifwi_done = False
            end = self.discovery_offset + DISCOVERY_TMR_OFFSET
            self.vram[self.discovery_offset:end] = bytes(end - self.discovery_offset)  # not there until IFWI ran
            if self.boot_delay_s == 0:
                self._finish_ifwi()
            else:
                self._ifwi_at = time.monotonic() + self.boot_delay_s
                if math.isfinite(self.boot_delay_s):
                    self._timer = threading.Timer(self.boot_delay_s, self._timer_fired)
                    self._timer.daemon = True
                    self._timer.start()
        for hook in list(self.on_power_on):
            hook()

    def _finish_ifwi(self) -> None:
        # The IFWI's last act before raising C2PMSG_33 bit 31: the discovery table at the top of VRAM.
        self.discovery_offset = install_discovery_table(self.vram, self.vram_size, self.target,
                                                        **self.discovery_options)
        self._ifwi_done = True

    def _timer_fired(self) -> None:
        with self._lock:
            if not self._ifwi_done and not self.function.removed and time.monotonic() >= self._ifwi_at:
                self._finish_ifwi()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def ifwi_ready(self) -> bool:
        """Whether IFWI init has completed (C2PMSG_33 bit 31): the table is in VRAM from then on."""
        with self._lock:
            if not self._ifwi_done and math.isfinite(self._ifwi_at) and self.boot_delay_s and \
                    time.monotonic() >= self._ifwi_at and not self.function.removed:
                self._finish_ifwi()  # the deadline passed before the timer thread ran: finish now, in order
            return self._ifwi_done

    def mark_initialised(self) -> None:
        """The later blocks call this once the card is brought up: a later open finds it running (warm)."""
        self.state = BootState.INITIALISED

    # -- faults --
    def surprise_remove(self) -> None:
        """The card falls off the bus: config and MMIO reads return all ones, writes vanish (emu/pci)."""
        with self._lock:
            self._cancel_timer()
        self.function.surprise_remove()

    def _register_error(self, message: str) -> None:
        self.function.fault(message)

    # -- VRAM --
    def _check_vram(self, addr: int, size: int) -> None:
        if size < 0 or not 0 <= addr <= self.vram_size - size:
            raise ValueError(f"VRAM access of {size:#x} bytes at {addr:#x} is outside the {self.vram_size:#x} bytes "
                             f"of VRAM")

    def vram_read(self, addr: int, size: int) -> bytes:
        """Bytes of VRAM (the card's own view: engines, MM_DATA)."""
        self._check_vram(addr, size)
        return bytes(self.vram[addr:addr + size])

    def vram_write(self, addr: int, data: bytes) -> None:
        self._check_vram(addr, len(data))
        self.vram[addr:addr + len(data)] = bytes(data)

    def _vram_read32(self, addr: int) -> int:
        return int.from_bytes(self.vram[addr:addr + 4], "little")

    def _vram_write32(self, addr: int, value: int) -> None:
        self.vram[addr:addr + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")

    def close(self) -> None:
        """Release the memfds and the VRAM mapping (driver mappings of the BARs stay valid until unmapped)."""
        with self._lock:
            self._cancel_timer()
        self.function.close()
        if not self.vram.closed:
            self.vram.close()
        if self.vram_fd >= 0:
            os.close(self.vram_fd)
            self.vram_fd = -1


def install_am_gpu(system: EmulatedSystem, target: str = "gfx1100", bdf: str = DEFAULT_BDF,
                   driver: Optional[str] = None, iommu_group: Optional[int] = None, vram_size: int = DEFAULT_VRAM,
                   firmware: Any = None, blocks: bool = False, **card_options: Any) -> AMGPU:
    """Make an emulated AMD GPU for `target` and put it on `system`'s emulated PCI bus at `bdf` (sysfs files; bound
    to `driver` if given, e.g. "vfio-pci" once install_vfio ran; in `iommu_group`). card_options go to AMGPU
    (bar0_size, boot_delay_s, flr, discovery_options). With `blocks` every modelled IP block is attached: the GMC's
    hubs, NBIO, the IH, the SMU, the PSP (which trusts the firmware images in `firmware`, a directory or {name: bytes},
    the images the driver will load; without them every bootloader stage fails, saying so), GFX and SDMA. Returns the card;
    `card.sysfs` is its bus entry."""
    card = AMGPU(target, vram_size=vram_size, **card_options)
    try:
        if blocks:
            from emu.am.gfx import attach_gfx
            from emu.am.gmc import attach_gmc
            from emu.am.ih import attach_ih
            from emu.am.nbio import attach_nbio
            from emu.am.psp import attach_psp
            from emu.am.sdma import attach_sdma
            from emu.am.smu import attach_smu
            attach_gmc(card)  # first: the PSP and SMU find VRAM through its FB window; the IH watches its faults
            attach_nbio(card)  # before the SDMA, which listens on its doorbell routes
            attach_ih(card)
            attach_smu(card)
            attach_psp(card, firmware=firmware)
            attach_gfx(card)  # after the PSP: it hooks the PSP's RLC autoload
            attach_sdma(card)
        card.sysfs = install_pci_function(system, card.function, bdf, driver=driver, iommu_group=iommu_group)
    except BaseException:
        card.close()
        raise
    return card
