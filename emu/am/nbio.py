"""The emulated NBIO / NBIF (the host bridge: nbio_v4_3.c for gfx11, nbif_v6_3_1.c for gfx12, driven from soc21.c /
soc24.c): what amdgpu programs at init and what the other blocks consult.

- Doorbell routing (the S2A doorbell entries): a doorbell write in BAR2 reaches an engine only while the doorbell
  aperture is enabled (RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN.BIF_DOORBELL_APER_EN: enable_doorbell_aperture, from
  soc21_common_hw_init) and an enabled S2A entry claims it. Entry N is S2A_DOORBELL_ENTRY_N_CTRL on NBIO 4.3 (NBIO
  seg 3, past the 1 MiB register BAR: amdgpu reaches it through RSMU) and GDC_S2A0_S2A_DOORBELL_ENTRY_N_CTRL on NBIF
  6.3.1 (seg 2). Fields (nbio_4_3_0_sh_mask.h): ENABLE [0], AWID [5:1], RANGE_OFFSET [16:7] (a dword doorbell index),
  RANGE_SIZE [24:17] (dwords), AWADDR_31_28 [31:28]. The ports amdgpu uses: 1 IH (ih_doorbell_range), 2 SDMA
  (sdma_doorbell_range: one range for every SDMA engine), 4/5 VCN 0/1 (vcn_doorbell_range), 0 and 3 GC
  (gc_doorbell_init writes them with RANGE_SIZE 0). The emulator's reading of that last fact: an enabled entry with
  RANGE_SIZE 0 on a GC port is the default route, taking every doorbell no sized range claims (the CP then picks its
  own by CP_*_DOORBELL_RANGE, which is the GC model's business). Every entry resets to 0, so until the driver programs
  a route its doorbells are dropped, as hardware drops them; `dropped` records each with the reason.
  `route(byte_offset) -> (engine, instance) | None` is what the SDMA/GFX/IH/VCN models call; `ring(offset, value)`
  routes one observed write (delivering it to `listen`ers, or recording the drop); `poll()` finds the dwords of BAR2
  that changed since the last poll (BAR2 is plain shared memory: the driver's writes are not trapped) and rings each.
- Self-ring aperture (enable_doorbell_selfring_aperture): BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_BASE_LOW/HIGH and
  _CNTL; `selfring_offset(bus_addr)` says which doorbell a GPU-side write to that bus address rings, if any.
- HDP flush: nbio_v4_3_remap_hdp_registers writes the byte offset in BAR5 where HDP_MEM_FLUSH_CNTL / HDP_REG_FLUSH_CNTL
  appear (rmmio_remap.reg_offset + KFD_MMIO_REMAP_HDP_{MEM,REG}_FLUSH_CNTL: 0x7f000 / 0x7f004 on 4 KiB pages,
  nbio_v4_3_set_reg_remap) into BIF_BX0_REMAP_HDP_{MEM,REG}_FLUSH_CNTL (ADDRESS [18:2]); from then on a write at that
  offset flushes (hdp_v6_0_flush_hdp / hdp_v7_0_flush_hdp: write 0, then read RCC_CONFIG_MEMSIZE to post it). Before the
  remap nothing answers there. BIF_BX_PF0_HDP_MEM_COHERENCY_FLUSH_CNTL (its own address) flushes too, and the ring path
  (sdma_v6_0_ring_emit_hdp_flush / gfx_v11_0_ring_emit_hdp_flush) writes a client bit to BIF_BX_PF0_GPU_HDP_FLUSH_REQ
  and waits for it in BIF_BX_PF0_GPU_HDP_FLUSH_DONE. The HDP model (`card.hdp`, an HDP) counts flushes and makes "VRAM
  written through BAR0, then read by an engine with no flush between" observable: see HDP.
- Registers amdgpu reads or programs once: RCC_STRAP0_RCC_DEV0_EPF0_STRAP0 (get_rev_id: STRAP_ATI_REV_ID [27:24]),
  BIF_BX0_BIF_FB_EN (mc_access_enable), BIF_BX0_INTERRUPT_CNTL/CNTL2 (ih_control), BIF_BX0_BIF_DOORBELL_INT_CNTL (RAS
  interrupt state), RCC_DEV0_EPF2_STRAP2 (init_registers), REGS_ROM_OFFSET_CTRL (get_rom_offset). RCC_CONFIG_MEMSIZE is
  emu/am/regs.py's. Clock gating and ASPM (CPM_CONTROL, PCIE_*) are not modelled.
- RSMU index/data (BIF_BX_PF0_RSMU_INDEX/DATA/INDEX_HI, NBIF seg 1 + 0/1/2: get_pcie_index_offset /
  get_pcie_data_offset): `install_rsmu_window(rf)` makes them a window onto every register the register file models,
  at its byte address (dword address * 4; SMN addresses such as MP1_FIRMWARE_FLAGS are registers placed at their SMN
  dword), as amdgpu_device_indirect_rreg/wreg use them: write INDEX, read it back, then read or write DATA.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional

from emu.am.regs import MASK32, Register, RegisterError, RegisterFile

# -- S2A doorbell entry fields (nbio_4_3_0_sh_mask.h / nbif_6_3_1_sh_mask.h S2A_DOORBELL_ENTRY_N_CTRL__*) --
S2A_ENABLE = 0x1
S2A_AWID_SHIFT, S2A_AWID_MASK = 1, 0x3E
S2A_RANGE_OFFSET_SHIFT, S2A_RANGE_OFFSET_MASK = 7, 0x1FF80
S2A_RANGE_SIZE_SHIFT, S2A_RANGE_SIZE_MASK = 17, 0x1FE0000
S2A_AWADDR_SHIFT, S2A_AWADDR_MASK = 28, 0xF0000000
S2A_ENTRIES = 10  # S2A_DOORBELL_ENTRY_0..9_CTRL in both headers
# The engine behind each port, as the kernel's nbio functions use them (see the module docstring).
PORT_ENGINE: dict[int, tuple[str, int]] = {0: ("GC", 0), 1: ("IH", 0), 2: ("SDMA", 0), 3: ("GC", 0), 4: ("VCN", 0),
                                            5: ("VCN", 1)}
GC_PORTS = (0, 3)  # nbio_v4_3_gc_doorbell_init / nbif_v6_3_1_gc_doorbell_init

DOORBELL_APER_EN = 0x1  # RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN__BIF_DOORBELL_APER_EN_MASK
SELFRING_EN, SELFRING_MODE = 0x1, 0x2  # BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_CNTL__..._EN_MASK / _MODE_MASK
SELFRING_SIZE_SHIFT, SELFRING_SIZE_MASK = 8, 0xFFF00  # ..._APER_SIZE
REMAP_ADDRESS_MASK = 0x7FFFC  # BIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL__ADDRESS_MASK (same for REG_FLUSH)
KFD_MMIO_REMAP_HDP_MEM_FLUSH_CNTL, KFD_MMIO_REMAP_HDP_REG_FLUSH_CNTL = 0, 4  # include/uapi/linux/kfd_ioctl.h
MMIO_REG_HOLE_OFFSET = 0x80000 - 4096  # nbio_v4_3.c / nbif_v6_3_1.c, with 4 KiB pages
REV_ID_SHIFT, REV_ID_MASK = 24, 0xF000000  # RCC_STRAP0_RCC_DEV0_EPF0_STRAP0__STRAP_ATI_REV_ID_DEV0_F0
FB_READ_EN, FB_WRITE_EN = 0x1, 0x2  # BIF_BX0_BIF_FB_EN__FB_READ_EN_MASK / FB_WRITE_EN_MASK
NO_SOFT_RESET_DEV0_F2 = 0x80  # RCC_DEV0_EPF2_STRAP2__STRAP_NO_SOFT_RESET_DEV0_F2_MASK
HDP_FLUSH_CLIENTS = {f"CP{i}": 1 << i for i in range(10)} | {"SDMA0": 1 << 10, "SDMA1": 1 << 11}  # ..._FLUSH_DONE__*
HDP_FLUSH_CLIENT_MASK = 0xFFF

RSMU_INDEX, RSMU_DATA, RSMU_INDEX_HI = "BIF_BX_PF0_RSMU_INDEX", "BIF_BX_PF0_RSMU_DATA", "BIF_BX_PF0_RSMU_INDEX_HI"
PAGE = 4096


# -- the RSMU window --
def _register_at(rf: RegisterFile, dword: int) -> Optional[Register]:
    # The register file's address map (emu/am/regs.py keeps no public lookup by address; O(1) matters here).
    return rf._by_addr.get(dword)


def install_rsmu_window(rf: RegisterFile) -> None:
    """Model BIF_BX_PF0_RSMU_INDEX / RSMU_DATA / RSMU_INDEX_HI (NBIF seg 1 + 0/1/2) as a window onto the whole
    register file: DATA reads or writes the modelled register at byte address INDEX_HI << 32 | INDEX (hooks and
    writable bits apply, as a direct access would). INDEX reads back what was written (amdgpu_device_indirect_rreg
    reads it to post the write). An address no register covers, a misaligned one, or the window itself is refused:
    RegisterError naming the address, logged in rf.errors."""
    def fail(msg: str) -> RegisterError:
        with rf.lock:
            rf.errors.append(msg)
        if rf.on_error is not None:
            rf.on_error(msg)
        return RegisterError(msg)

    def target(what: str) -> Register:
        addr = hi.value << 32 | index.value
        if addr & 3:
            raise fail(f"RSMU_DATA {what} through RSMU_INDEX {addr:#x}: not a 4-byte-aligned register address")
        reg = _register_at(rf, addr >> 2)
        if reg is None:
            raise fail(f"RSMU_DATA {what} through RSMU_INDEX {addr:#x}: no modelled register at that address "
                       f"({rf.describe(addr >> 2)}); model it in emu/am, or check the driver's address")
        if reg.address in window:
            raise fail(f"RSMU_DATA {what}: the index window cannot reach itself (index {addr:#x}, {reg.name})")
        return reg

    def data_read(_reg: Register) -> int:
        reg = target("read")
        value = (reg.on_read(reg) if reg.on_read else reg.value) & MASK32
        rf.counts[reg.name] += 1
        rf.log.append(("read", reg.name, value))
        return value

    def data_write(_reg: Register, value: int) -> None:
        reg = target(f"write of {value:#x}")
        reg.value = (reg.value & ~reg.wmask | value & reg.wmask) & MASK32
        rf.counts[reg.name] += 1
        rf.log.append(("write", reg.name, value))
        if reg.on_write:
            reg.on_write(reg, value)

    index = rf.define(RSMU_INDEX, "NBIF")
    hi = rf.define(RSMU_INDEX_HI, "NBIF", wmask=0xFF)  # BIF_BX_PF0_RSMU_INDEX_HI__RSMU_INDEX_HI_MASK
    data = rf.define(RSMU_DATA, "NBIF", on_read=data_read, on_write=data_write)
    window = {index.address, hi.address, data.address}


# -- doorbells --
@dataclass(frozen=True)
class DroppedDoorbell:
    """A doorbell write no engine received: BAR2 byte offset, the value written, and why (in words)."""
    offset: int
    value: Optional[int]
    reason: str


@dataclass(frozen=True)
class S2AEntry:
    """One decoded S2A_DOORBELL_ENTRY_N_CTRL."""
    port: int
    enable: bool
    awid: int
    range_offset: int  # dword doorbell index
    range_size: int    # dwords
    awaddr_31_28: int

    @staticmethod
    def decode(port: int, value: int) -> "S2AEntry":
        return S2AEntry(port, bool(value & S2A_ENABLE), (value & S2A_AWID_MASK) >> S2A_AWID_SHIFT,
                        (value & S2A_RANGE_OFFSET_MASK) >> S2A_RANGE_OFFSET_SHIFT,
                        (value & S2A_RANGE_SIZE_MASK) >> S2A_RANGE_SIZE_SHIFT,
                        (value & S2A_AWADDR_MASK) >> S2A_AWADDR_SHIFT)

    def covers(self, index: int) -> bool:
        return self.enable and self.range_size > 0 and self.range_offset <= index < self.range_offset + self.range_size


# -- HDP --
@dataclass(frozen=True)
class StaleRead:
    """An engine read VRAM that the host wrote through BAR0 after the last HDP flush: what, where, how it was seen."""
    engine: str
    addr: int
    size: int
    how: str  # "marked" (host_wrote) or "changed" (a watched page differs from its content at the last flush)
    flushes: int  # the flush count at the time


class HDP:
    """The host data path's write buffer, as far as a test can see it. Host writes through BAR0 sit in the HDP
    until a flush; an engine reading that VRAM before the flush may see old data. BAR0 is shared memory (the driver's
    stores are not trapped), so staleness is found two ways:
    - `host_wrote(addr, size)`: a host path that knows it wrote VRAM marks the range; a flush clears every mark.
    - `watch(addr, size)`: an engine names VRAM it will read (a ring, an IB, an MQD); the model keeps each page's
      bytes as of the last flush (or the watch). A later difference nobody explained as `engine_wrote` is a host
      write with no flush since.
    `check(engine, addr, size)` is what an engine calls before it reads: True (and a StaleRead in `stale_reads`) when
    the range is stale. `flushes` counts memory flushes (by `source` in `by_source`), `reg_flushes` register flushes.
    VRAM addresses are offsets into the card's VRAM (card.vram)."""

    def __init__(self, vram: Any):
        self._vram = vram
        self.lock = threading.RLock()
        self.flushes = 0
        self.reg_flushes = 0
        self.by_source: Counter[str] = Counter()
        self.stale_reads: list[StaleRead] = []
        self._marked: list[tuple[int, int]] = []
        self._baseline: dict[int, bytes] = {}

    def reset(self) -> None:
        """Power-on: nothing buffered, nothing watched, counters kept (they count over the card's life)."""
        with self.lock:
            self._marked.clear()
            self._baseline.clear()

    def _pages(self, addr: int, size: int) -> range:
        if size <= 0 or addr < 0 or addr + size > len(self._vram):
            raise ValueError(f"HDP range {addr:#x}+{size:#x} is outside the {len(self._vram):#x} bytes of VRAM")
        return range(addr // PAGE, (addr + size - 1) // PAGE + 1)

    def _page(self, p: int) -> bytes:
        return bytes(self._vram[p * PAGE:(p + 1) * PAGE])

    def flush(self, source: str = "host") -> None:
        """Write the HDP's buffered host writes to memory: marks cleared, watched pages re-baselined."""
        with self.lock:
            self.flushes += 1
            self.by_source[source] += 1
            self._marked.clear()
            for p in self._baseline:
                self._baseline[p] = self._page(p)

    def reg_flush(self) -> None:
        """HDP_REG_FLUSH_CNTL: register writes through the HDP posted (counted only)."""
        with self.lock:
            self.reg_flushes += 1

    def host_wrote(self, addr: int, size: int) -> None:
        """A host write through BAR0 to VRAM [addr, addr+size): buffered until the next flush."""
        self._pages(addr, size)
        with self.lock:
            self._marked.append((addr, addr + size))

    def watch(self, addr: int, size: int) -> None:
        """Track VRAM [addr, addr+size) from now: its bytes now are taken as flushed."""
        with self.lock:
            for p in self._pages(addr, size):
                self._baseline.setdefault(p, self._page(p))

    def unwatch(self, addr: int, size: int) -> None:
        with self.lock:
            for p in self._pages(addr, size):
                self._baseline.pop(p, None)

    def engine_wrote(self, addr: int, size: int) -> None:
        """An engine wrote VRAM [addr, addr+size) itself (not through the HDP): its watched pages follow."""
        with self.lock:
            for p in self._pages(addr, size):
                if p in self._baseline:
                    self._baseline[p] = self._page(p)

    def stale(self, addr: int, size: int) -> Optional[str]:
        """Why [addr, addr+size) is stale ("marked" / "changed"), or None; records nothing."""
        pages = self._pages(addr, size)
        with self.lock:
            end = addr + size
            if any(a < end and addr < b for a, b in self._marked):
                return "marked"
            for p in pages:
                base = self._baseline.get(p)
                if base is not None and base != self._page(p):
                    return "changed"
        return None

    def check(self, engine: str, addr: int, size: int) -> bool:
        """An engine is about to read VRAM [addr, addr+size): True, recorded in `stale_reads`, if it is stale."""
        how = self.stale(addr, size)
        if how is None:
            return False
        with self.lock:
            self.stale_reads.append(StaleRead(engine, addr, size, how, self.flushes))
        return True


# -- the NBIO model --
class NBIO:
    """The NBIO/NBIF state of one card (`card.nbio`): doorbell routing, the self-ring aperture, the HDP flush
    registers and their remap, and the registers amdgpu reads once. See the module docstring.

    `dropped` lists every doorbell write no engine received; `rung` counts delivered ones per (engine, instance);
    `listen(engine, fn)` registers fn(offset, value, instance) for doorbells routed to `engine`."""

    def __init__(self, card: Any, *, rev_id: int = 0):
        if not 0 <= rev_id <= 0xF:
            raise ValueError(f"rev_id {rev_id:#x} does not fit STRAP_ATI_REV_ID (4 bits)")
        self.card = card
        self.rf: RegisterFile = card.regs
        self.lock = threading.RLock()
        self.dropped: list[DroppedDoorbell] = []
        self.rung: Counter[tuple[str, int]] = Counter()
        self._listeners: dict[str, list[Callable[[int, int, int], None]]] = {}
        self._snapshot: Optional[bytes] = None
        self._remapped: dict[str, Register] = {}
        self.hdp = HDP(card.vram)
        rf = self.rf
        gfx12 = rf.header("NBIF") == "nbif_6_3_1"
        # nbif_v6_3_1.c names the entries GDC_S2A0_S2A_DOORBELL_ENTRY_N_CTRL; nbio_v4_3.c S2A_DOORBELL_ENTRY_N_CTRL
        prefix = "GDC_S2A0_S2A_DOORBELL_ENTRY" if gfx12 else "S2A_DOORBELL_ENTRY"
        self.entries = [rf.define(f"{prefix}_{n}_CTRL", "NBIF") for n in range(S2A_ENTRIES)]
        self.aper = rf.define("RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN", "NBIF", wmask=DOORBELL_APER_EN)
        self.sr_cntl = rf.define("BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_CNTL", "NBIF",
                                 wmask=SELFRING_EN | SELFRING_MODE | SELFRING_SIZE_MASK)
        self.sr_low = rf.define("BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_BASE_LOW", "NBIF")
        self.sr_high = rf.define("BIF_BX_PF0_DOORBELL_SELFRING_GPA_APER_BASE_HIGH", "NBIF")
        # HDP flush: the remap registers place the flush registers in BAR5 where the driver asks
        self.remap_mem = rf.define("BIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL", "NBIF", wmask=REMAP_ADDRESS_MASK,
                                   on_write=lambda r, v: self._remap("HDP_MEM_FLUSH_CNTL", r.value))
        self.remap_reg = rf.define("BIF_BX0_REMAP_HDP_REG_FLUSH_CNTL", "NBIF", wmask=REMAP_ADDRESS_MASK,
                                   on_write=lambda r, v: self._remap("HDP_REG_FLUSH_CNTL", r.value))
        self.native_flush = rf.define("BIF_BX_PF0_HDP_MEM_COHERENCY_FLUSH_CNTL", "NBIF",
                                      on_write=lambda r, v: self.hdp.flush("BIF_BX_PF0_HDP_MEM_COHERENCY_FLUSH_CNTL"))
        self.flush_done = rf.define("BIF_BX_PF0_GPU_HDP_FLUSH_DONE", "NBIF", wmask=0)
        self.flush_req = rf.define("BIF_BX_PF0_GPU_HDP_FLUSH_REQ", "NBIF", wmask=HDP_FLUSH_CLIENT_MASK,
                                   on_write=self._flush_req)
        # read once at init
        rf.define("RCC_STRAP0_RCC_DEV0_EPF0_STRAP0", "NBIF", reset=rev_id << REV_ID_SHIFT, wmask=0)
        # BIF_FB_EN: the emulator's choice is that the IFWI leaves framebuffer access on (BAR0 works from boot)
        self.fb_en = rf.define("BIF_BX0_BIF_FB_EN", "NBIF", reset=FB_READ_EN | FB_WRITE_EN,
                               wmask=FB_READ_EN | FB_WRITE_EN)
        rf.define("BIF_BX0_INTERRUPT_CNTL", "NBIF")
        self.int_cntl2 = rf.define("BIF_BX0_INTERRUPT_CNTL2", "NBIF")
        rf.define("BIF_BX0_BIF_DOORBELL_INT_CNTL", "NBIF")
        # NBIO seg 5 registers: only where the board's discovery table lists a sixth NBIF base (emu/am/discovery.py
        # lists five today); `missing` names what could not be placed.
        self.missing: list[str] = []
        seg5 = [("RCC_DEV0_EPF2_STRAP2", {"reset": NO_SOFT_RESET_DEV0_F2}),  # init_registers clears the bit
                ("REGS_ROM_OFFSET_CTRL", {"wmask": 0})]  # get_rom_offset: ROM_OFFSET 0, no ROM behind the BAR
        for name, kw in seg5:
            try:
                rf.define(name, "NBIF", **kw)
            except ValueError as e:
                self.missing.append(f"{name}: {e}")

    # -- power --
    def reset(self) -> None:
        """Power-on / function reset: the registers are back at reset (the register file did that); the remapped
        flush registers leave BAR5, the doorbell snapshot and the HDP's buffered state go."""
        with self.lock:
            for name in list(self._remapped):
                self._unplace(name)
            self._snapshot = None
        self.hdp.reset()

    # -- HDP flush registers --
    def _unplace(self, name: str) -> None:
        reg = self._remapped.pop(name, None)
        if reg is not None:
            with self.rf.lock:
                if self.rf._by_addr.get(reg.address) is reg:  # regs.py has no remove; the map is ours to edit here
                    del self.rf._by_addr[reg.address]
                for n in (reg.name, *reg.aliases):
                    if self.rf._by_name.get(n) is reg:
                        del self.rf._by_name[n]

    def _remap(self, name: str, byte_offset: int) -> None:
        # nbio_v4_3_remap_hdp_registers: the flush register answers at this BAR5 byte offset from now on
        with self.lock:
            self._unplace(name)
            if byte_offset == 0:
                return  # 0: not remapped (reset value)
            dword = byte_offset >> 2
            native = self.native_flush.address
            if name == "HDP_MEM_FLUSH_CNTL" and dword == native:
                return  # the PAGE_SIZE > 4096 layout: reg_offset is the native register itself (set_reg_remap)
            clash = _register_at(self.rf, dword)
            if clash is not None:
                raise self.rf._error(f"BIF_BX0_REMAP_{name} = {byte_offset:#x} places {name} on {clash.name} "
                                     f"(BAR5 + {byte_offset:#x}); remap it to a free offset such as "
                                     f"{MMIO_REG_HOLE_OFFSET:#x} (MMIO_REG_HOLE_OFFSET)")
            if name == "HDP_MEM_FLUSH_CNTL":
                reg = Register(name, None, dword, on_write=lambda r, v: self.hdp.flush("remap"))
            else:
                reg = Register(name, None, dword, on_write=lambda r, v: self.hdp.reg_flush())
            self._remapped[name] = self.rf.add(reg)

    def _flush_req(self, reg: Register, value: int) -> None:
        # emit_hdp_flush: the engine writes its client bit to FLUSH_REQ and waits for it in FLUSH_DONE. The flush is
        # done by the time the write returns here, so each requested bit reads back done at once.
        bits = value & HDP_FLUSH_CLIENT_MASK
        if bits:
            self.hdp.flush("GPU_HDP_FLUSH_REQ")
            self.flush_done.value = (self.flush_done.value | bits) & MASK32

    @property
    def remap_offset(self) -> Optional[int]:
        """The BAR5 byte offset the host flush register answers at, or None before remap_hdp_registers."""
        reg = self._remapped.get("HDP_MEM_FLUSH_CNTL")
        if reg is not None:
            return reg.address * 4
        return self.native_flush.address * 4 if self.remap_mem.value == self.native_flush.address * 4 else None

    # -- registers read by other models --
    @property
    def rev_id(self) -> int:
        return (self.rf.reg("RCC_STRAP0_RCC_DEV0_EPF0_STRAP0").value & REV_ID_MASK) >> REV_ID_SHIFT

    @property
    def fb_access(self) -> tuple[bool, bool]:
        """(read, write) enables of BIF_BX0_BIF_FB_EN (mc_access_enable)."""
        return bool(self.fb_en.value & FB_READ_EN), bool(self.fb_en.value & FB_WRITE_EN)

    @property
    def dummy_page_addr(self) -> int:
        """The IH dummy-read page (ih_control writes dummy_page_addr >> 8 to BIF_BX0_INTERRUPT_CNTL2)."""
        return self.int_cntl2.value << 8

    # -- doorbells --
    @property
    def aperture_enabled(self) -> bool:
        return bool(self.aper.value & DOORBELL_APER_EN)

    def entry(self, port: int) -> S2AEntry:
        """The decoded S2A entry `port` (0-9)."""
        return S2AEntry.decode(port, self.entries[port].value)

    def _why_dropped(self, offset: int) -> Optional[str]:
        size = self.card.doorbells.size
        if offset & 3 or not 0 <= offset < size:
            return f"BAR2 offset {offset:#x} is not a 4-byte-aligned offset inside the {size:#x}-byte doorbell BAR"
        if not self.aperture_enabled:
            return ("the doorbell aperture is disabled (RCC_DEV0_EPF0_RCC_DOORBELL_APER_EN.BIF_DOORBELL_APER_EN = 0; "
                    "amdgpu's enable_doorbell_aperture sets it in soc21/soc24 common hw_init)")
        return None

    def _route(self, offset: int) -> Optional[tuple[str, int]]:
        index = offset >> 2
        entries = [self.entry(p) for p in range(S2A_ENTRIES)]
        for e in entries:
            if e.covers(index):
                return PORT_ENGINE.get(e.port, (f"S2A_PORT{e.port}", 0))
        for p in GC_PORTS:  # the default route (see the module docstring)
            if entries[p].enable and entries[p].range_size == 0:
                return PORT_ENGINE[p]
        return None

    def route(self, offset: int) -> Optional[tuple[str, int]]:
        """The (engine, instance) a doorbell write at BAR2 byte `offset` reaches now, or None when it would be
        dropped (aperture off, or no enabled entry claims it and no GC default route is on). Records nothing."""
        with self.rf.lock:
            if self._why_dropped(offset) is not None:
                return None
            return self._route(offset)

    def listen(self, engine: str, fn: Callable[[int, int, int], None]) -> None:
        """Call fn(offset, value, instance) for every doorbell `ring` routes to `engine` ("GC", "SDMA", "IH", "VCN")."""
        with self.lock:
            self._listeners.setdefault(engine, []).append(fn)

    def ring(self, offset: int, value: Optional[int] = None) -> Optional[tuple[str, int]]:
        """One doorbell write at BAR2 byte `offset` (value as written, if known): delivered to the listeners of the
        engine it routes to, or recorded in `dropped` with the reason. Returns the route or None."""
        with self.rf.lock:
            why = self._why_dropped(offset)
            dest = None if why is not None else self._route(offset)
            if dest is None and why is None:
                why = (f"no S2A doorbell entry claims doorbell index {offset >> 2:#x} (BAR2 + {offset:#x}) and no GC "
                       "default route is enabled (amdgpu's sdma/ih/vcn_doorbell_range and gc_doorbell_init program "
                       "them)")
        if dest is None:
            with self.lock:
                self.dropped.append(DroppedDoorbell(offset, value, why or ""))
            return None
        with self.lock:
            self.rung[dest] += 1
            listeners = list(self._listeners.get(dest[0], ()))
        for fn in listeners:
            fn(offset, 0 if value is None else value, dest[1])
        return dest

    def poll(self) -> list[tuple[int, int, Optional[tuple[str, int]]]]:
        """Ring every BAR2 dword that changed since the last poll (the first poll takes the baseline and rings
        nothing). Returns (offset, value, route or None) for each, in address order."""
        bar = self.card.doorbells
        now = bar.read(0, bar.size)
        with self.lock:
            before, self._snapshot = self._snapshot, now
        if before is None:
            return []
        out = []
        for page in range(0, len(now), PAGE):
            if now[page:page + PAGE] == before[page:page + PAGE]:
                continue
            for off in range(page, min(page + PAGE, len(now)), 4):
                if now[off:off + 4] != before[off:off + 4]:
                    value = int.from_bytes(now[off:off + 4], "little")
                    out.append((off, value, self.ring(off, value)))
        return out

    # -- self-ring --
    def selfring_offset(self, bus_addr: int) -> Optional[int]:
        """The BAR2 byte offset a GPU-side write to `bus_addr` rings through the self-ring aperture, or None (aperture
        off, or the address outside [base, base + doorbell BAR size)). APER_SIZE 0, all amdgpu writes, is taken as
        the whole doorbell BAR (the emulator's reading)."""
        cntl = self.sr_cntl.value
        if not cntl & SELFRING_EN:
            return None
        base = self.sr_high.value << 32 | self.sr_low.value
        off = bus_addr - base
        return off if 0 <= off < self.card.doorbells.size else None


def attach_nbio(card: Any, *, rev_id: int = 0) -> NBIO:
    """Give `card` (an emu.am.gpu.AMGPU) its NBIO/NBIF model: the registers above on card.regs, the RSMU window if
    the register file lacks it (attach_smu may have installed it through install_rsmu_window already), `card.nbio`
    (an NBIO) and `card.hdp` (its HDP). `rev_id` is what STRAP_ATI_REV_ID reports (get_rev_id). Reset on every
    power-on."""
    if getattr(card, "nbio", None) is not None:
        raise ValueError("attach_nbio: this card already has an NBIO model attached")
    try:
        card.regs.reg(RSMU_INDEX)
    except KeyError:
        install_rsmu_window(card.regs)
    nbio = NBIO(card, rev_id=rev_id)
    card.nbio = nbio
    card.hdp = nbio.hdp
    card.on_power_on.append(nbio.reset)
    return nbio
