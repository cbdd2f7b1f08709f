"""The emulated interrupt handler (OSSSYS: IH 6.0 on gfx11, IH 7.0 on gfx12): its rings, the IV entries it writes,
the write-pointer writeback, overflow, and the VM-fault interrupts of the GMC model.

What the kernel programs and this model answers to (linux-source-6.12, drivers/gpu/drm/amd/amdgpu):
- ih_v6_0.c / ih_v7_0.c `*_enable_ring`: IH_RB_BASE = address >> 8, IH_RB_BASE_HI = address >> 40 (8 bits),
  IH_RB_CNTL (ih_v6_0_rb_cntl: RB_SIZE = log2 of the size in dwords, MC_SPACE 2 = a bus address when use_bus_addr,
  else 4 = an address the MM hub translates for MC_VMID; WPTR_OVERFLOW_ENABLE; WPTR_WRITEBACK_ENABLE; ring 1:
  RB_FULL_DRAIN_ENABLE), IH_RB_WPTR_ADDR_LO/HI (ring 0 only: where the IH writes IH_RB_WPTR after each entry),
  IH_RB_WPTR/IH_RB_RPTR zeroed, IH_DOORBELL_RPTR (OFFSET, ENABLE: the host's read pointer arrives by doorbell).
- `*_toggle_ring_interrupts`: RB_ENABLE, ENABLE_INTR (ring 0 only), WPTR_OVERFLOW_CLEAR written 0 then 1 ("switching
  the bit from 0 to 1" clears RB_OVERFLOW: the rising edge is what counts), then 0 again.
- `*_get_wptr`: RB_OVERFLOW (bit 0 of IH_RB_WPTR, and of its writeback copy) says the ring wrapped over unread
  entries; the kernel restarts "from the last not overwritten vector (wptr + 32)". So on a full ring the IH keeps
  writing over the oldest entry and flags it (when WPTR_OVERFLOW_ENABLE); with RB_FULL_DRAIN_ENABLE (ring 1) it drops
  the new entry instead. Full = writing would make WPTR equal RPTR (one slot stays empty); once WPTR has caught RPTR,
  every later write lands on an unread entry (and counts as an overflow) until the host moves RPTR or rewrites WPTR.
- `*_irq_init`: IH_RING1_CLIENT_CFG_INDEX/DATA (CLIENT_ID, SOURCE_ID, SOURCE_ID_MATCH_ENABLE) "redirect the
  interrupts to IH RB1"; IH_CNTL2.SELF_IV_FORCE_WPTR_UPDATE_ENABLE makes the IH report ring 1's WPTR with a self IV
  on ring 0 (client SOC21_IH_CLIENTID_IH, source 0, ring_id 1, src_data[0] = the WPTR; ih_v6_0_self_irq).
- The IV entry (amdgpu_ih.c amdgpu_ih_decode_iv_helper), 8 dwords: dw0 client[7:0] source[15:8] ring_id[23:16]
  vmid[27:24] vmid_src[31]; dw1 timestamp[31:0]; dw2 timestamp[47:32] in [15:0], timestamp_src[31]; dw3 pasid[15:0]
  node_id[23:16]; dw4..7 src_data[0..3].
- VM faults (gmc_v11_0.c / gmc_v12_0.c gmc_*_process_interrupt and sw_init's amdgpu_irq_add_id): the GFX hub's
  UTCL2 faults come as client SOC21_IH_CLIENTID_GFX (0x0a) source UTCL2_1_0__SRCID__FAULT (0), the MM hub's as
  SOC21_IH_CLIENTID_VMC (0x12) source VMC_1_0__SRCID__VM_FAULT (0); src_data[0] = address >> 12, src_data[1] bits
  3:0 = address bits 47:44, bit 5 = write, bit 7 = retry; vmid_src 1 for the MM hub. The PASID is the IH's lookup of
  the VMID in IH_VMID_<n>_LUT (GFX hub) / IH_VMID_<n>_LUT_MM (MM hub), which gmc_v11_0_emit_pasid_mapping programs.

Emulator choices (no public source says otherwise): the timestamp is a 100 MHz count of the host's monotonic clock;
an interrupt (MSI vector 0) is raised for every ring-0 entry while ENABLE_INTR is set; the ring-1 self IV is sent at
once (no timeout/threshold moderation); a IH_RING1_CLIENT_CFG slot routes only once written since power-on.
What the IH cannot do (a bad MC_SPACE, a ring too large for the pointer fields, a write that faults in the hub or the
IOMMU) drops the entry and is recorded in `errors` and as a PCI function fault, never raised at the poster.
"""
from __future__ import annotations

import importlib
import time
from typing import Any, Callable, Optional, Sequence

from emu.am.regs import MASK32, Register

IV_SIZE = 32  # amdgpu_ih_decode_iv_helper: 8 dwords, rptr += 32
NUM_VMIDS = 16
NUM_ROUTES = 8  # IH_RING1_CLIENT_CFG_INDEX.INDEX is 3 bits (osssys_6_0_0_sh_mask.h)
MAX_RB_SIZE = 16  # IH_RB_WPTR/RPTR.OFFSET cover byte offsets 17:2: 2^16 dwords (256 KiB, IH_RING_SIZE) at most

# soc15_ih_clientid.h enum soc21_ih_clientid
CLIENT_IH = 0x00   # SOC21_IH_CLIENTID_IH
CLIENT_GFX = 0x0A  # SOC21_IH_CLIENTID_GFX
CLIENT_VMC = 0x12  # SOC21_IH_CLIENTID_VMC
# ivsrcid/vmc/irqsrcs_vmc_1_0.h
SRC_UTCL2_FAULT = 0  # UTCL2_1_0__SRCID__FAULT
SRC_VMC_VM_FAULT = 0  # VMC_1_0__SRCID__VM_FAULT
# gmc_v11_0_process_interrupt: src_data[1] bits
FAULT_WRITE = 0x20
FAULT_RETRY = 0x80

MC_SPACE_BUS = 2  # ih_v6_0_rb_cntl: use_bus_addr ? 2 : 4
MC_SPACE_MC = 4


class _FaultFeed(list):
    """card.vm_faults, wrapped: every record the GMC appends is also handed to the IH."""

    def __init__(self, items: Sequence[Any], sink: Callable[[Any], None]):
        super().__init__(items)
        self._sink = sink

    def append(self, record: Any) -> None:
        super().append(record)
        self._sink(record)

    def extend(self, records: Any) -> None:
        for r in records:
            self.append(r)

    def __iadd__(self, records: Any) -> "_FaultFeed":
        self.extend(records)
        return self


class IHRing:
    """One IH ring (0: IH_RB_*, 1: IH_RB_*_RING1): its registers and what the IH keeps of it."""

    def __init__(self, ih: "IH", index: int):
        self.ih, self.index = ih, index
        self.suffix = "" if index == 0 else "_RING1"
        self.cntl: Register
        self.base: Register
        self.base_hi: Register
        self.rptr_reg: Register
        self.wptr_reg: Register
        self.doorbell: Register
        self.wptr_lo: Optional[Register] = None
        self.wptr_hi: Optional[Register] = None
        self.clear_prev = False  # WPTR_OVERFLOW_CLEAR as last written: a 0 -> 1 switch clears RB_OVERFLOW
        self.enable_prev = False
        self.wrapped_at: Optional[int] = None  # the RPTR when WPTR caught it (overwriting since), None when in sync
        self.written = 0
        self.dropped = 0
        self.overflows = 0

    # -- decoded state --
    def field(self, name: str) -> int:
        """A field of this ring's IH_RB_CNTL (0 when the ring's CNTL has no such field, e.g. ENABLE_INTR on ring 1)."""
        mask = self.ih.mask(f"IH_RB_CNTL{self.suffix}", name)
        return (self.cntl.value & mask) >> _shift(mask) if mask else 0

    @property
    def size(self) -> int:
        """Ring size in bytes: RB_SIZE is log2 of the size in dwords (ih_v6_0_rb_cntl: order_base_2(ring_size / 4))."""
        return 4 << self.field("RB_SIZE")

    @property
    def address(self) -> int:
        # ih_v6_0_enable_ring: "[39:8] of 40-bit address of the beginning of the ring buffer", HI holds 47:40
        return (self.base_hi.value & 0xFF) << 40 | self.base.value << 8

    @property
    def wptr_address(self) -> Optional[int]:
        if self.wptr_lo is None or self.wptr_hi is None:
            return None
        return (self.wptr_hi.value & 0xFFFF) << 32 | self.wptr_lo.value & ~3 & MASK32

    def doorbell_offset(self) -> Optional[int]:
        """The doorbell dword index the host's read pointer arrives at, when IH_DOORBELL_RPTR.ENABLE is set."""
        name = f"IH_DOORBELL_RPTR{self.suffix}"
        v = self.doorbell.value
        if not v & self.ih.mask(name, "ENABLE"):
            return None
        return v & self.ih.mask(name, "OFFSET")

    def rptr(self) -> int:
        """The host's read pointer in bytes: from the doorbell when enabled, else IH_RB_RPTR."""
        off = self.doorbell_offset()
        if off is not None and 0 <= off * 4 <= self.ih.card.doorbells.size - 4:
            return self.ih.card.doorbells.read32(off * 4) & self.ih.mask("IH_RB_RPTR", "OFFSET")
        return self.rptr_reg.value & self.ih.mask("IH_RB_RPTR", "OFFSET")

    def wptr(self) -> int:
        return self.wptr_reg.value & self.ih.mask("IH_RB_WPTR", "OFFSET")

    def overflowed(self) -> bool:
        return bool(self.wptr_reg.value & self.ih.mask("IH_RB_WPTR", "RB_OVERFLOW"))

    def pending(self) -> int:
        """Entries written and not yet read (by the pointers)."""
        return ((self.wptr() - self.rptr()) % self.size) // IV_SIZE


class IH:
    """The card's interrupt handler: `rings` (0 and 1), `post` (what an engine does to raise an interrupt), the
    VMID -> PASID tables, and counters (`posted`, `errors`, per ring written/dropped/overflows)."""

    def __init__(self, card: Any):
        self.card = card
        self.regs = card.regs
        version = tuple(card.board.block("OSSSYS").version)
        module = self.regs.header("OSSSYS")
        if version[0] not in (6, 7) or module is None:
            raise ValueError(f"{card.board.product}: OSSSYS {'.'.join(map(str, version))} is not IH 6.0/7.0; the IH "
                             "model covers ih_v6_0 (gfx11) and ih_v7_0 (gfx12)")
        self.version = version
        self.mod = importlib.import_module(f"autogen.{module}")
        self.rings = [IHRing(self, 0), IHRing(self, 1)]
        self.errors: list[str] = []
        self.posted = 0
        self.vm_faults_seen = 0
        self.vm_faults_posted = 0
        self.own_faults = 0
        self._own_access = False
        self._last_ts = 0
        self._route_written = [False] * NUM_ROUTES
        self._route = [0] * NUM_ROUTES
        self._define_registers()

    # -- registers --
    def mask(self, reg: str, field: str) -> int:
        """A field mask from the OSSSYS header (0 when the register has no such field)."""
        return getattr(self.mod, f"{reg}__{field}_MASK", 0)

    def _wmask(self, reg: str) -> int:
        # Only the bits the header names are writable; reserved bits read back 0.
        m = 0
        for attr, val in vars(self.mod).items():
            if attr.startswith(f"{reg}__") and attr.endswith("_MASK") and isinstance(val, int):
                m |= val
        return m & MASK32 if m else MASK32

    def _def(self, name: str, **kw: Any) -> Register:
        kw.setdefault("wmask", self._wmask(name))
        return self.regs.define(name, "OSSSYS", **kw)

    def _define_registers(self) -> None:
        for ring in self.rings:
            s = ring.suffix
            ring.cntl = self._def(f"IH_RB_CNTL{s}", on_write=lambda r, v, ring=ring: self._cntl_write(ring, v))
            ring.base = self._def(f"IH_RB_BASE{s}")
            ring.base_hi = self._def(f"IH_RB_BASE_HI{s}")
            ring.rptr_reg = self._def(f"IH_RB_RPTR{s}", on_read=lambda r, ring=ring: ring.rptr(),
                                      on_write=lambda r, v, ring=ring: self._rptr_write(ring))
            # The host zeroes WPTR (enable_ring, toggle off) and may clear RB_OVERFLOW; RB_LEFT_NONE and
            # RB_MAY_OVERFLOW are the IH's status bits.
            ring.wptr_reg = self._def(f"IH_RB_WPTR{s}", wmask=self.mask("IH_RB_WPTR", "OFFSET") |
                                      self.mask("IH_RB_WPTR", "RB_OVERFLOW"),
                                      on_write=lambda r, v, ring=ring: setattr(ring, "wrapped_at", None))
            ring.doorbell = self._def(f"IH_DOORBELL_RPTR{s}",
                                      on_write=lambda r, v, ring=ring: self._doorbell_write(ring))
        r0 = self.rings[0]
        r0.wptr_lo = self._def("IH_RB_WPTR_ADDR_LO")
        r0.wptr_hi = self._def("IH_RB_WPTR_ADDR_HI")
        self.cntl2 = self._def("IH_CNTL2")
        self.cfg_index = self._def("IH_RING1_CLIENT_CFG_INDEX")
        self.cfg_data = self._def("IH_RING1_CLIENT_CFG_DATA", on_read=lambda r: self._route[self._route_index()],
                                  on_write=lambda r, v: self._route_write(r))
        # Programmed by ih_v6_0_irq_init / clock and power gating, stored only (storm, flood, clock, SRAM power).
        for name in ("IH_CHICKEN", "IH_STORM_CLIENT_LIST_CNTL", "IH_INT_FLOOD_CNTL", "IH_MSI_STORM_CTRL",
                     "IH_CLK_CTRL", "IH_MEM_POWER_CTRL"):
            self._def(name)
        self.lut = [self._def(f"IH_VMID_{v}_LUT") for v in range(NUM_VMIDS)]
        self.lut_mm = [self._def(f"IH_VMID_{v}_LUT_MM") for v in range(NUM_VMIDS)]

    def _route_index(self) -> int:
        return self.cfg_index.value & self.mask("IH_RING1_CLIENT_CFG_INDEX", "INDEX")

    def _route_write(self, reg: Register) -> None:
        i = self._route_index()
        self._route[i], self._route_written[i] = reg.value, True

    def _cntl_write(self, ring: IHRing, value: int) -> None:
        name = f"IH_RB_CNTL{ring.suffix}"
        clear = self.mask(name, "WPTR_OVERFLOW_CLEAR")
        if value & clear and not ring.clear_prev:
            # ih_v6_0_toggle_ring_interrupts: the 0 -> 1 switch of WPTR_OVERFLOW_CLEAR clears RB_OVERFLOW
            ring.wptr_reg.value &= ~self.mask("IH_RB_WPTR", "RB_OVERFLOW") & MASK32
        ring.clear_prev = bool(value & clear)
        enable = self.mask(name, "RB_ENABLE")
        if value & enable and not ring.enable_prev:
            problem = self._config_problem(ring)
            if problem:
                self._error(f"IH ring {ring.index} enabled ({name} = {value:#010x}) but {problem}")
        ring.enable_prev = bool(value & enable)

    def _rptr_write(self, ring: IHRing) -> None:
        ring.wrapped_at = None
        self._mirror_rptr(ring)

    def _mirror_rptr(self, ring: IHRing) -> None:
        # The doorbell slot mirrors the host's last read pointer, so a later doorbell enable starts from it.
        off = ring.doorbell_offset()
        if off is not None and 0 <= off * 4 <= self.card.doorbells.size - 4:
            self.card.doorbells.write32(off * 4, ring.rptr_reg.value & self.mask("IH_RB_RPTR", "OFFSET"))

    def _doorbell_write(self, ring: IHRing) -> None:
        off = ring.doorbell_offset()
        if off is None:
            return
        if not 0 <= off * 4 <= self.card.doorbells.size - 4:
            self._error(f"IH_DOORBELL_RPTR{ring.suffix}.OFFSET {off:#x} is a doorbell beyond the "
                        f"{self.card.doorbells.size:#x}-byte doorbell BAR: the read pointer stays IH_RB_RPTR "
                        f"{ring.suffix}; use the doorbell index the NBIO IH doorbell range covers")
            return
        self._mirror_rptr(ring)

    # -- state --
    def reset(self) -> None:
        """A power-on or function reset: registers are back at reset (the register file did it); routes unwritten."""
        with self.regs.lock:
            self._route_written = [False] * NUM_ROUTES
            self._route = [0] * NUM_ROUTES
            for ring in self.rings:
                ring.clear_prev = ring.enable_prev = False
                ring.wrapped_at = None

    def _error(self, message: str) -> None:
        self.errors.append(message)
        self.card.function.fault(message)

    def _config_problem(self, ring: IHRing) -> Optional[str]:
        if ring.field("RB_SIZE") > MAX_RB_SIZE:
            return (f"RB_SIZE {ring.field('RB_SIZE')} (2^n dwords) is larger than the IH_RB_WPTR/RPTR OFFSET "
                    f"fields reach (at most {MAX_RB_SIZE}: 256 KiB); use a ring of at most 256 KiB")
        space = ring.field("MC_SPACE")
        if space not in (MC_SPACE_BUS, MC_SPACE_MC):
            return (f"MC_SPACE {space} is neither 2 (bus address) nor 4 (MC address through the MM hub), the two "
                    "ih_v6_0_rb_cntl programs")
        if space == MC_SPACE_MC and getattr(self.card, "gmc", None) is None:
            return "MC_SPACE 4 (MC address) needs the MM hub, and no GMC model is attached (attach_gmc)"
        return None

    def pasid(self, vmid: int, mm: bool = False) -> int:
        """The PASID the IH looks up for `vmid` (IH_VMID_<vmid>_LUT, or _LUT_MM for the MM hub's VMIDs)."""
        return (self.lut_mm if mm else self.lut)[vmid].value & 0xFFFF

    # -- memory --
    def _write_mem(self, ring: IHRing, addr: int, data: bytes, what: str) -> bool:
        """Write `data` at `addr` in the ring's address space (MC_SPACE); False (error recorded) when it cannot."""
        space = ring.field("MC_SPACE")
        self._own_access = True
        try:
            if space == MC_SPACE_BUS:
                self.card.function.dma_write(addr, data)
                return True
            gmc = getattr(self.card, "gmc", None)
            if space != MC_SPACE_MC or gmc is None:
                self._error(f"IH ring {ring.index}: {what} not written: {self._config_problem(ring)}")
                return False
            vmid = ring.field("MC_VMID")
            kind, where = gmc.walk(vmid, addr, True, hub="mm")
            if kind == "vram":
                self.card.vram_write(where, data)
            else:
                self.card.function.dma_write(where, data)
            return True
        except Exception as e:  # an IOMMU fault, bus mastering off, a VM fault in the hub, outside VRAM
            self._error(f"IH ring {ring.index}: {what} at {addr:#x} (MC_SPACE {space}) not written: {e}")
            return False
        finally:
            self._own_access = False

    def _writeback(self, ring: IHRing) -> None:
        addr = ring.wptr_address
        if addr is None or not ring.field("WPTR_WRITEBACK_ENABLE"):
            return
        # ih_v6_0_get_wptr reads the writeback copy first and tests RB_OVERFLOW in it: the whole IH_RB_WPTR value.
        self._write_mem(ring, addr, ring.wptr_reg.value.to_bytes(4, "little"), "the WPTR writeback")

    # -- posting --
    def _timestamp(self) -> int:
        ts = max(time.monotonic_ns() // 10, self._last_ts + 1) & ((1 << 48) - 1)
        self._last_ts = ts
        return ts

    def _route_ring(self, client_id: int, src_id: int) -> int:
        if not self.rings[1].field("RB_ENABLE"):
            return 0
        for i in range(NUM_ROUTES):
            if not self._route_written[i]:
                continue
            d = self._route[i]
            if d & self.mask("IH_RING1_CLIENT_CFG_DATA", "CLIENT_ID") != client_id:
                continue
            if d & self.mask("IH_RING1_CLIENT_CFG_DATA", "SOURCE_ID_MATCH_ENABLE") and \
                    (d & self.mask("IH_RING1_CLIENT_CFG_DATA", "SOURCE_ID")) >> 8 != src_id:
                continue
            return 1
        return 0

    def post(self, client_id: int, src_id: int, src_data: Sequence[int] = (), *, vmid: int = 0, vmid_src: int = 0,
             ring_id: int = 0, pasid: Optional[int] = None, node_id: int = 0, ring: Optional[int] = None) -> bool:
        """Raise an interrupt as an engine does: write one IV entry at the WPTR of ring `ring` (None: ring 1 when an
        IH_RING1_CLIENT_CFG slot matches the client/source and ring 1 is enabled, else ring 0), advance the WPTR,
        write it back, and signal MSI vector 0 (ring 0 with ENABLE_INTR). `pasid` None: the IH's VMID LUT. Returns
        whether the entry was written (False: the ring is disabled, drained when full, or unreachable)."""
        if not 0 <= client_id <= 0xFF or not 0 <= src_id <= 0xFF or not 0 <= ring_id <= 0xFF:
            raise ValueError(f"client_id {client_id}, src_id {src_id}, ring_id {ring_id}: each is 8 bits in dw0")
        if not 0 <= vmid < NUM_VMIDS or vmid_src not in (0, 1) or not 0 <= node_id <= 0xFF:
            raise ValueError(f"vmid {vmid} (4 bits), vmid_src {vmid_src} (1 bit), node_id {node_id} (8 bits) out of "
                             "range")
        if len(src_data) > 4 or any(not 0 <= d <= MASK32 for d in src_data):
            raise ValueError(f"src_data {list(src_data)}: at most 4 dwords (AMDGPU_IRQ_SRC_DATA_MAX_SIZE_DW)")
        if pasid is not None and not 0 <= pasid <= 0xFFFF:
            raise ValueError(f"pasid {pasid:#x} is 16 bits in dw3")
        if ring not in (None, 0, 1):
            raise ValueError(f"ring {ring}: the IH has rings 0 and 1")
        with self.regs.lock:
            index = self._route_ring(client_id, src_id) if ring is None else ring
            if pasid is None:
                pasid = self.pasid(vmid, mm=bool(vmid_src))
            ts = self._timestamp()
            dw = [client_id | src_id << 8 | ring_id << 16 | vmid << 24 | vmid_src << 31,
                  ts & MASK32, ts >> 32 & 0xFFFF, pasid | node_id << 16, *src_data, *[0] * (4 - len(src_data))]
            return self._put(self.rings[index], b"".join(d.to_bytes(4, "little") for d in dw))

    def _put(self, ring: IHRing, entry: bytes) -> bool:
        if not ring.field("RB_ENABLE"):
            ring.dropped += 1
            return False
        problem = self._config_problem(ring)
        if problem:
            ring.dropped += 1
            self._error(f"IH ring {ring.index}: entry dropped: {problem}")
            return False
        size = ring.size
        wptr, rptr = ring.wptr() % size, ring.rptr() % size
        overflow = self.mask("IH_RB_WPTR", "RB_OVERFLOW")
        if ring.wrapped_at is not None and ring.wrapped_at != rptr:
            ring.wrapped_at = None  # the host moved its read pointer on since the wrap: the pointers mean it again
        full = (wptr + IV_SIZE) % size == rptr  # one more would make WPTR == RPTR (empty)
        if full and ring.field("RB_FULL_DRAIN_ENABLE"):
            ring.overflows += 1
            if ring.field("WPTR_OVERFLOW_ENABLE"):
                ring.wptr_reg.value |= overflow
            ring.dropped += 1  # drained: the new entry is dropped, the unread ones stay
            self._writeback(ring)
            return False
        if full or ring.wrapped_at is not None:
            # Written over unread entries (ih_v6_0_get_wptr: restart from "the last not overwritten vector"); once
            # WPTR has caught RPTR every later write lands on an unread entry until the host moves RPTR.
            ring.overflows += 1
            ring.wrapped_at = rptr
            if ring.field("WPTR_OVERFLOW_ENABLE"):
                ring.wptr_reg.value |= overflow
        if not self._write_mem(ring, ring.address + wptr, entry, f"the IV entry at offset {wptr:#x}"):
            ring.dropped += 1
            return False
        new = (wptr + IV_SIZE) % size
        offset = self.mask("IH_RB_WPTR", "OFFSET")
        ring.wptr_reg.value = (ring.wptr_reg.value & ~offset | new & offset) & MASK32
        ring.written += 1
        self.posted += 1
        self._writeback(ring)
        if ring.index == 0 and ring.field("ENABLE_INTR"):
            self.card.function.raise_interrupt(0)
        if ring.index == 1 and self.cntl2.value & self.mask("IH_CNTL2", "SELF_IV_FORCE_WPTR_UPDATE_ENABLE"):
            # ih_v6_0_self_irq: ring 1's WPTR arrives as a self IV (client IH, source 0, ring_id 1) on ring 0
            self.post(CLIENT_IH, 0, [ring.wptr_reg.value], ring_id=1, ring=0)
        return True

    # -- VM faults --
    def watch_vm_faults(self) -> None:
        """Turn every VMFaultRecord the GMC appends to card.vm_faults from now on into a VM fault IV (attach_ih
        does this when the GMC is attached first; call it again after a later attach_gmc replaced the list)."""
        faults = getattr(self.card, "vm_faults", None)
        if faults is None or isinstance(faults, _FaultFeed):
            return
        self.card.vm_faults = _FaultFeed(faults, self._vm_fault)

    def vm_fault_entry(self, record: Any) -> dict[str, Any]:
        """The IV fields a GMC VMFaultRecord becomes (gmc_v11_0_process_interrupt decodes them back)."""
        mm = record.hub == "mm"
        data1 = (record.va >> 44) & 0xF | (FAULT_WRITE if record.write else 0) | (FAULT_RETRY if record.retry else 0)
        return dict(client_id=CLIENT_VMC if mm else CLIENT_GFX, src_id=SRC_VMC_VM_FAULT if mm else SRC_UTCL2_FAULT,
                    src_data=[(record.va >> 12) & MASK32, data1, 0, 0], vmid=record.vmid, vmid_src=int(mm))

    def _vm_fault(self, record: Any) -> None:
        with self.regs.lock:
            self.vm_faults_seen += 1
            if self._own_access:
                # The IH's own ring or writeback write faulted: reported in errors, not as an IV (it could not be
                # written either).
                self.own_faults += 1
                return
            if not record.interrupt:
                return  # the context's *_PROTECTION_FAULT_ENABLE_INTERRUPT is clear
            if self.post(**self.vm_fault_entry(record)):
                self.vm_faults_posted += 1


def _shift(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def attach_ih(card: Any) -> IH:
    """Model the interrupt handler on `card` (an emu.am.gpu.AMGPU): defines the OSSSYS IH registers on card.regs,
    keeps the model at card.ih, resets it on every power-on, and (when the GMC is attached: attach it first) turns
    the GMC's VM faults into IV entries."""
    if getattr(card, "ih", None) is not None:
        raise ValueError("attach_ih: this card already has an IH model attached")
    ih = IH(card)
    card.ih = ih
    card.on_power_on.append(ih.reset)
    ih.watch_vm_faults()
    return ih
