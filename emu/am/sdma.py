"""The emulated SDMA engines' registers (SDMA 6.0 on gfx11: sdma_v6_0.c; SDMA 7.0 on gfx12: sdma_v7_0.c): halting
and unhalting each instance, and the bring-up of its queue 0 (the kernel's gfx ring). The packets are not executed
here: the strict SDMA engine (emu/amd) attaches to `card.sdma` through its hooks.

What the kernel programs and this model answers to (linux-source-6.12, drivers/gpu/drm/amd/amdgpu):
- The registers live in GC's space (sdma_v6_0_get_reg_offset / sdma_v7_0_get_reg_offset): SDMA1's are SDMA0's plus
  SDMA1_REG_OFFSET (0x600 dwords) in GC seg 0, or plus SDMA1_HYP_DEC_REG_OFFSET (0x20) for the HYP_DEC range
  0x5880..0x589a, which sits in GC seg 1. The names are the generated gc_11_0_0 / gc_12_0_0 ones (SDMA0_*, SDMA1_*);
  the constructor checks the header's SDMA1 offsets against that rule.
- `*_enable`: F32_CNTL.HALT (gfx11) / MCU_CNTL.HALT (gfx12) halts (1) or unhalts (0) an instance; `*_gfx_resume`
  also clears TH1_RESET / RESET. Unhalting needs the SDMA firmware loaded by the PSP (front-door loading, what the AM
  path uses): amdgpu_sdma.c amdgpu_sdma_init_microcode registers SDMA_UCODE_TH0 and SDMA_UCODE_TH1 for a v2 header
  (SDMA 6.0) and SDMA_RS64 for a v3 header (SDMA 7.0), which amdgpu_psp.c psp_get_fw_type maps to
  GFX_FW_TYPE_SDMA_UCODE_TH0 (and _TH1): `card.psp.loaded` must hold those.
- `*_gfx_resume` for queue 0: QUEUE0_RB_CNTL (RB_SIZE = log2 of the size in dwords, RB_PRIV, RPTR_WRITEBACK_ENABLE,
  WPTR_POLL_ENABLE 0, F32_WPTR_POLL_ENABLE / MCU_WPTR_POLL_ENABLE 1, last RB_ENABLE), RB_RPTR/_HI and RB_WPTR/_HI
  zeroed, RB_WPTR_POLL_ADDR_LO/HI (the wptr shadow), RB_RPTR_ADDR_HI/LO (the rptr writeback), RB_BASE = address >> 8,
  RB_BASE_HI = address >> 40, MINOR_PTR_UPDATE 1 around the WPTR write ("before programing wptr to a less value, need
  set minor_ptr_update first"), DOORBELL.ENABLE and DOORBELL_OFFSET.OFFSET = the doorbell index (dwords), then NBIO's
  sdma_doorbell_range, WATCHDOG_CNTL, UTCL1_CNTL, UTCL1_PAGE, the unhalt, RB_ENABLE, IB_CNTL.IB_ENABLE. Also
  SEM_WAIT_FAIL_TIMER_CNTL (gfx11), CNTL (ctxempty_int_enable), FREEZE and QUEUE0_PREEMPT (soft_reset), STATUS_REG
  (is_idle: IDLE; sdma_v7_0 direct load: UCODE_INIT_DONE).
- The ring is fetched through the GFX hub (sdma_v6_0/v7_0 ring funcs: vmhub AMDGPU_GFXHUB(0)) in RB_CNTL.RB_VMID.

Queue activation: queue 0 of an instance becomes active when RB_ENABLE is set while the instance runs (unhalted and
out of reset), whichever comes last. It is then checked the way the engine would first use it, and a bad setup is a
RegisterError naming the register (the write fails; the register keeps what was written, the queue stays
inactive):
- RB_SIZE from MIN_RB_LOG2 to MAX_RB_LOG2 (emulator's bounds: a ring smaller than the 256-byte base alignment or
  larger than 64 MiB is taken as a programming error; amdgpu's SDMA rings are 256 KiB);
- every 4 KiB page of the ring, the rptr writeback address (when RPTR_WRITEBACK_ENABLE, written) and the wptr poll
  address (when a WPTR poll is enabled, read) translate through `card.gmc.walk` (a VMFault names RB_BASE, RB_RPTR_ADDR
  or RB_WPTR_POLL_ADDR);
- DOORBELL.ENABLE set (the kernel always uses the doorbell for SDMA rings), the offset inside BAR2, routed to SDMA by
  `card.nbio.route`, and not shared with another active queue.
The active queue is recorded in `card.sdma.queues[instance]` (an SDMAQueue) and every `on_queue_active` hook is
called with it; RB_ENABLE cleared, a halt or a reset removes it and calls `on_queue_inactive`. While a queue is
active, WPTR must not go backwards unless MINOR_PTR_UPDATE.ENABLE is set (checked when WPTR_HI is written: the kernel
writes LO then HI), and each completed WPTR register write calls `on_wptr(queue, wptr_bytes)`. Doorbells NBIO routes
to SDMA reach `on_doorbell(queue, value)` for the active queue they belong to, else `stray_doorbells`.
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from emu.am.regs import MASK32, Register, RegisterError

SDMA1_REG_OFFSET = 0x600  # sdma_v6_0.c / sdma_v7_0.c
HYP_DEC_START, HYP_DEC_END = 0x5880, 0x589A  # SDMA0_HYP_DEC_REG_START / _END (seg 1)
SDMA1_HYP_DEC_REG_OFFSET = 0x20
GFX_FW_TYPE_SDMA_UCODE_TH0, GFX_FW_TYPE_SDMA_UCODE_TH1 = 71, 72  # psp_gfx_if.h enum psp_gfx_fw_type
PAGE = 4096
MIN_RB_LOG2, MAX_RB_LOG2 = 6, 24  # dwords: 256 bytes .. 64 MiB (emulator's bounds, see the module docstring)
VA_LIMIT = 1 << 48  # gmc_v11_0_sw_init / gmc_v12_0_sw_init: amdgpu_vm_adjust_size(..., 48): 48-bit VA

# gc_11_0_0_default.h reset values (the gfx12 header set has no _default.h: there every register resets to 0 but
# MCU_CNTL, whose HALT is set at reset as F32_CNTL's is on gfx11 — the emulator's reading)
RESET_GFX11 = {"CNTL": 0x00002440, "UTCL1_CNTL": 0x2C000288, "UTCL1_PAGE": 0x010CEC00, "F32_CNTL": 0x08084001,
               "QUEUE0_RB_CNTL": 0x00040800, "QUEUE0_IB_CNTL": 0x00000100}
RESET_GFX12 = {"MCU_CNTL": 0x1, "QUEUE0_IB_CNTL": 0x00000100}

# The registers per instance (short names, after "SDMA<n>_"); those a header lacks are left out (SEM_WAIT_FAIL_TIMER_
# CNTL on gfx12, where sdma_v7_0_gfx_resume has its write commented out).
REGISTERS = ("CNTL", "SEM_WAIT_FAIL_TIMER_CNTL", "FREEZE", "WATCHDOG_CNTL", "UTCL1_CNTL", "UTCL1_PAGE", "STATUS_REG",
             "QUEUE0_RB_CNTL", "QUEUE0_RB_BASE", "QUEUE0_RB_BASE_HI", "QUEUE0_RB_RPTR", "QUEUE0_RB_RPTR_HI",
             "QUEUE0_RB_WPTR", "QUEUE0_RB_WPTR_HI", "QUEUE0_RB_RPTR_ADDR_HI", "QUEUE0_RB_RPTR_ADDR_LO",
             "QUEUE0_RB_WPTR_POLL_ADDR_HI", "QUEUE0_RB_WPTR_POLL_ADDR_LO", "QUEUE0_MINOR_PTR_UPDATE",
             "QUEUE0_DOORBELL", "QUEUE0_DOORBELL_OFFSET", "QUEUE0_IB_CNTL", "QUEUE0_PREEMPT")


@dataclass(frozen=True)
class SDMAQueue:
    """An active queue 0 of one SDMA instance, as the engine sees it at activation: the ring (MC address in `vmid`,
    size in bytes, and where its first byte translated to), the rptr writeback and wptr poll addresses (None when
    that feature is off), the doorbell (dword index and BAR2 byte offset) and the RB_CNTL it was enabled with."""
    instance: int
    vmid: int
    ring_addr: int
    ring_size: int
    ring_target: tuple[str, int]
    rptr_addr: Optional[int]
    wptr_poll_addr: Optional[int]
    doorbell_index: int
    doorbell_offset: int
    rb_cntl: int
    wptr: int


class SDMAInstance:
    """One SDMA instance's registers (`reg(short)`) and run state."""

    def __init__(self, sdma: "SDMA", index: int):
        self.sdma, self.index = sdma, index
        self.regs: dict[str, Register] = {}
        self.last_wptr = 0  # the WPTR as of the last completed (HI) write

    def reg(self, short: str) -> Register:
        return self.regs[short]

    def name(self, short: str) -> str:
        return f"SDMA{self.index}_{short}"

    def field(self, short: str, field: str) -> int:
        mask = self.sdma.mask(short, field)
        return (self.regs[short].value & mask) >> _shift(mask) if mask else 0

    @property
    def halted(self) -> bool:
        return bool(self.field(self.sdma.cntl, "HALT"))

    @property
    def running(self) -> bool:
        """Unhalted and its threads out of reset (gfx11 F32_CNTL.TH1_RESET, gfx12 MCU_CNTL.RESET)."""
        return not self.halted and not self.field(self.sdma.cntl, self.sdma.reset_field)

    def wptr(self) -> int:
        return self.regs["QUEUE0_RB_WPTR_HI"].value << 32 | self.regs["QUEUE0_RB_WPTR"].value


class SDMA:
    """The SDMA model of one card (`card.sdma`): `instances`, the active `queues` (instance -> SDMAQueue), the hooks
    `on_queue_active(queue)`, `on_queue_inactive(queue)`, `on_wptr(queue, wptr_bytes)`, `on_doorbell(queue, value)`,
    `busy(instance) -> bool` (STATUS_REG.IDLE clear while true), and `errors` (every refused setup, in words) and
    `stray_doorbells` ((offset, value) SDMA doorbells no active queue owns)."""

    def __init__(self, card: Any):
        self.card = card
        self.rf = card.regs
        gc = card.board.block("GC").version
        if gc[0] not in (11, 12):
            raise ValueError(f"{card.board.product}: GC {gc} is neither GFX11 nor GFX12; the SDMA model covers those")
        self.gfx12 = gc[0] == 12
        module = self.rf.header("GC")
        self.mod = importlib.import_module(f"autogen.{module}")
        # sdma_v6_0_enable: F32_CNTL; sdma_v7_0_enable: MCU_CNTL (with RESET for TH1_RESET, MCU_WPTR_POLL_ENABLE)
        self.cntl = "MCU_CNTL" if self.gfx12 else "F32_CNTL"
        self.reset_field = "RESET" if self.gfx12 else "TH1_RESET"
        self.poll_field = "MCU_WPTR_POLL_ENABLE" if self.gfx12 else "F32_WPTR_POLL_ENABLE"
        # amdgpu_sdma.c: v3 header (SDMA 7) -> SDMA_RS64 -> TH0; v2 header (SDMA 6) -> TH0 and TH1
        self.firmware = ((GFX_FW_TYPE_SDMA_UCODE_TH0,) if self.gfx12
                         else (GFX_FW_TYPE_SDMA_UCODE_TH0, GFX_FW_TYPE_SDMA_UCODE_TH1))
        self.lock = threading.RLock()
        self.queues: dict[int, SDMAQueue] = {}
        self.on_queue_active: list[Callable[[SDMAQueue], None]] = []
        self.on_queue_inactive: list[Callable[[SDMAQueue], None]] = []
        self.on_wptr: list[Callable[[SDMAQueue, int], None]] = []
        self.on_doorbell: list[Callable[[SDMAQueue, int], None]] = []
        self.busy: Callable[[int], bool] = lambda instance: False
        self.errors: list[str] = []
        self.stray_doorbells: list[tuple[int, int]] = []
        self.activations = 0
        count = len(card.board.block("SDMA0").bases)
        self.instances = [SDMAInstance(self, i) for i in range(count)]
        for inst in self.instances:
            self._define(inst)

    # -- header facts --
    def mask(self, short: str, field: str) -> int:
        """A field mask of SDMA0_<short> from the GC header (0 when the register has no such field)."""
        return getattr(self.mod, f"SDMA0_{short}__{field}_MASK", 0)

    def _wmask(self, short: str) -> int:
        # Only the bits the header names are writable; a register with no fields in the header takes all 32.
        m = 0
        prefix = f"SDMA0_{short}__"
        for attr, val in vars(self.mod).items():
            if attr.startswith(prefix) and attr.endswith("_MASK") and isinstance(val, int):
                m |= val
        return m & MASK32 if m else MASK32

    def _define(self, inst: SDMAInstance) -> None:
        resets = RESET_GFX12 if self.gfx12 else RESET_GFX11
        for short in REGISTERS + (self.cntl,):
            base = getattr(self.mod, f"regSDMA0_{short}", None)
            if base is None:
                continue
            seg = getattr(self.mod, f"regSDMA0_{short}_BASE_IDX")
            # sdma_v6_0_get_reg_offset: the HYP_DEC range is in seg 1, the rest in seg 0
            hyp = HYP_DEC_START <= base <= HYP_DEC_END
            if seg != (1 if hyp else 0):
                raise ValueError(f"{self.mod.__name__}: SDMA0_{short} is in seg {seg}, but sdma_v6_0_get_reg_offset "
                                 f"puts dword {base:#x} in seg {1 if hyp else 0}")
            off = base + inst.index * (SDMA1_HYP_DEC_REG_OFFSET if hyp else SDMA1_REG_OFFSET)
            name = inst.name(short)
            hdr = getattr(self.mod, f"reg{name}", None)
            if hdr is not None and hdr != off:
                raise ValueError(f"{self.mod.__name__}: {name} is at {hdr:#x}, but sdma_v6_0_get_reg_offset gives "
                                 f"{off:#x}")
            kw: dict[str, Any] = {"reset": resets.get(short, 0), "wmask": self._wmask(short)}
            if short == self.cntl:
                kw["on_write"] = lambda r, v, i=inst: self._cntl_write(i)
            elif short == "QUEUE0_RB_CNTL":
                kw["on_write"] = lambda r, v, i=inst: self._rb_cntl_write(i)
            elif short == "QUEUE0_RB_WPTR_HI":
                kw["on_write"] = lambda r, v, i=inst: self._wptr_write(i)
            elif short == "QUEUE0_DOORBELL":
                kw["wmask"] = self.mask(short, "ENABLE")  # CAPTURED is the engine's
            elif short == "STATUS_REG":
                kw["wmask"] = 0
                kw["on_read"] = lambda r, i=inst: self._status(i)
            inst.regs[short] = self.rf.add(Register(name, "GC", off, seg=seg, **kw))

    # -- state --
    def reset(self) -> None:
        """Power-on / function reset: the registers are back at reset (halted); queues go inactive."""
        with self.rf.lock:
            for inst in self.instances:
                inst.last_wptr = 0
            gone = [self.queues.pop(i) for i in sorted(self.queues)]
        for q in gone:
            for hook in list(self.on_queue_inactive):
                hook(q)

    def firmware_missing(self) -> list[str]:
        """The PSP firmware types an unhalt needs that `card.psp.loaded` lacks (names)."""
        psp = getattr(self.card, "psp", None)
        loaded = getattr(psp, "loaded", None) or {}
        names = {GFX_FW_TYPE_SDMA_UCODE_TH0: "GFX_FW_TYPE_SDMA_UCODE_TH0",
                 GFX_FW_TYPE_SDMA_UCODE_TH1: "GFX_FW_TYPE_SDMA_UCODE_TH1"}
        return [names[t] for t in self.firmware if int(t) not in {int(k) for k in loaded}]

    def _status(self, inst: SDMAInstance) -> int:
        v = 0 if self.busy(inst.index) else self.mask("STATUS_REG", "IDLE")
        if not self.firmware_missing():
            v |= self.mask("STATUS_REG", "UCODE_INIT_DONE")  # 0 on gfx11, whose header has no such field
        return v

    def _fail(self, message: str) -> RegisterError:
        with self.lock:
            self.errors.append(message)
        return self.rf._error(message)

    # -- hooks on register writes --
    def _cntl_write(self, inst: SDMAInstance) -> None:
        name = inst.name(self.cntl)
        if not inst.halted:
            missing = self.firmware_missing()
            if missing:
                inst.regs[self.cntl].value |= self.mask(self.cntl, "HALT")  # stays halted: there is nothing to run
                raise self._fail(
                    f"{name}.HALT cleared, but the SDMA firmware is not loaded: the PSP has not loaded {missing} "
                    "(load the SDMA firmware through the PSP — psp_load_non_psp_fw — before unhalting the engine)")
        if inst.running:
            if inst.field("QUEUE0_RB_CNTL", "RB_ENABLE") and inst.index not in self.queues:
                self._activate(inst)
        else:
            self._deactivate(inst)

    def _rb_cntl_write(self, inst: SDMAInstance) -> None:
        if not inst.field("QUEUE0_RB_CNTL", "RB_ENABLE"):
            self._deactivate(inst)
            return
        q = self.queues.get(inst.index)
        if q is not None and q.rb_cntl == inst.regs["QUEUE0_RB_CNTL"].value:
            return  # rewritten unchanged
        self._deactivate(inst)
        if inst.running:
            self._activate(inst)

    def _wptr_write(self, inst: SDMAInstance) -> None:
        new, old = inst.wptr(), inst.last_wptr
        inst.last_wptr = new
        q = self.queues.get(inst.index)
        if q is None:
            return
        if new < old and not inst.field("QUEUE0_MINOR_PTR_UPDATE", "ENABLE"):
            # sdma_v6_0_gfx_resume: "before programing wptr to a less value, need set minor_ptr_update first"
            raise self._fail(f"{inst.name('QUEUE0_RB_WPTR')}/_HI went back from {old:#x} to {new:#x} on the active "
                             f"queue while {inst.name('QUEUE0_MINOR_PTR_UPDATE')}.ENABLE is 0 (set it before "
                             "programming a smaller WPTR)")
        for hook in list(self.on_wptr):
            hook(q, new)

    # -- activation --
    def _walk(self, inst: SDMAInstance, vmid: int, addr: int, what: str, write: bool) -> tuple[str, int]:
        gmc = getattr(self.card, "gmc", None)
        if gmc is None:
            raise self._fail(f"{what} = {addr:#x}: the card has no GMC model to translate it (attach_gmc first)")
        if not 0 <= addr < VA_LIMIT:
            raise self._fail(f"{what} = {addr:#x} is not a 48-bit GPU address")
        try:
            # the SDMA rings' vmhub is AMDGPU_GFXHUB(0) (sdma_v6_0_ring_funcs / sdma_v7_0_ring_funcs)
            return gmc.walk(vmid, addr, write, hub="gfx")
        except Exception as e:  # VMFault (recorded by the GMC) or a bad argument
            raise self._fail(f"{what} = {addr:#x} does not translate in VMID {vmid} through the GFX hub: {e}") from e

    def _activate(self, inst: SDMAInstance) -> None:
        n = inst.name
        cntl = inst.regs["QUEUE0_RB_CNTL"].value
        log2 = inst.field("QUEUE0_RB_CNTL", "RB_SIZE")
        if not MIN_RB_LOG2 <= log2 <= MAX_RB_LOG2:
            raise self._fail(f"{n('QUEUE0_RB_CNTL')}.RB_SIZE = {log2} (a ring of {4 << log2:#x} bytes) is outside "
                             f"{MIN_RB_LOG2}..{MAX_RB_LOG2} (256 bytes .. 64 MiB); RB_SIZE is log2 of the ring size in "
                             "dwords (sdma_v6_0_gfx_resume: order_base_2(ring_size / 4))")
        size = 4 << log2
        vmid = inst.field("QUEUE0_RB_CNTL", "RB_VMID")
        # sdma_v6_0_gfx_resume: RB_BASE = gpu_addr >> 8, RB_BASE_HI = gpu_addr >> 40
        base = (inst.regs["QUEUE0_RB_BASE_HI"].value & 0xFFFFFF) << 40 | inst.regs["QUEUE0_RB_BASE"].value << 8
        where = f"{n('QUEUE0_RB_BASE')}/{n('QUEUE0_RB_BASE_HI')} (ring of {size:#x} bytes)"
        if base + size > VA_LIMIT:
            raise self._fail(f"{where} = {base:#x}: the ring ends past the 48-bit GPU address space")
        target = self._walk(inst, vmid, base, where, False)
        for page in range(base - base % PAGE + PAGE, base + size, PAGE):
            self._walk(inst, vmid, page, f"{where}, page at {page:#x}", False)
        rptr_addr = None
        if inst.field("QUEUE0_RB_CNTL", "RPTR_WRITEBACK_ENABLE"):
            rptr_addr = inst.regs["QUEUE0_RB_RPTR_ADDR_HI"].value << 32 | inst.regs["QUEUE0_RB_RPTR_ADDR_LO"].value
            self._walk(inst, vmid, rptr_addr, f"{n('QUEUE0_RB_RPTR_ADDR_LO')}/_HI (rptr writeback, "
                       f"{n('QUEUE0_RB_CNTL')}.RPTR_WRITEBACK_ENABLE)", True)
        poll_addr = None
        if inst.field("QUEUE0_RB_CNTL", "WPTR_POLL_ENABLE") or inst.field("QUEUE0_RB_CNTL", self.poll_field):
            poll_addr = (inst.regs["QUEUE0_RB_WPTR_POLL_ADDR_HI"].value << 32
                         | inst.regs["QUEUE0_RB_WPTR_POLL_ADDR_LO"].value)
            self._walk(inst, vmid, poll_addr, f"{n('QUEUE0_RB_WPTR_POLL_ADDR_LO')}/_HI (wptr poll, "
                       f"{n('QUEUE0_RB_CNTL')}.{self.poll_field})", False)
        if not inst.field("QUEUE0_DOORBELL", "ENABLE"):
            raise self._fail(f"{n('QUEUE0_DOORBELL')}.ENABLE is 0 on RB_ENABLE: the SDMA ring is driven by its "
                             "doorbell (sdma_v6_0_gfx_resume sets ENABLE for ring->use_doorbell, always true for SDMA)")
        index = inst.field("QUEUE0_DOORBELL_OFFSET", "OFFSET")  # dwords: REG_SET_FIELD(OFFSET, doorbell_index)
        offset = index * 4
        dname = f"{n('QUEUE0_DOORBELL_OFFSET')}.OFFSET = {index:#x} (BAR2 + {offset:#x})"
        if offset + 4 > self.card.doorbells.size:
            raise self._fail(f"{dname} is outside the {self.card.doorbells.size:#x}-byte doorbell BAR")
        nbio = getattr(self.card, "nbio", None)
        if nbio is None:
            raise self._fail(f"{dname}: the card has no NBIO model to route it (attach_nbio first)")
        route = nbio.route(offset)
        if route is None or route[0] != "SDMA":
            got = "is dropped (doorbell aperture off, or no S2A entry claims it)" if route is None \
                else f"routes to {route[0]} {route[1]}"
            raise self._fail(f"{dname} {got}, not to SDMA: program NBIO's SDMA doorbell range (sdma_doorbell_range, "
                             "S2A port 2) over it, or fix the offset")
        for other in self.queues.values():
            if other.instance != inst.index and other.doorbell_offset == offset:
                raise self._fail(f"{dname} is already the doorbell of SDMA{other.instance}'s active queue 0")
        q = SDMAQueue(inst.index, vmid, base, size, target, rptr_addr, poll_addr, index, offset, cntl, inst.wptr())
        with self.lock:
            self.queues[inst.index] = q
            self.activations += 1
        for hook in list(self.on_queue_active):
            hook(q)

    def _deactivate(self, inst: SDMAInstance) -> None:
        with self.lock:
            q = self.queues.pop(inst.index, None)
        if q is not None:
            for hook in list(self.on_queue_inactive):
                hook(q)

    # -- doorbells --
    def doorbell(self, offset: int, value: int, _instance: int = 0) -> None:
        """A doorbell NBIO routed to SDMA (its listener): handed to `on_doorbell` for the active queue it belongs to
        (NBIO's one SDMA range covers every instance, so the queue is found by its DOORBELL_OFFSET), else recorded in
        `stray_doorbells`."""
        with self.lock:
            q = next((q for q in self.queues.values() if q.doorbell_offset == offset), None)
            if q is None:
                self.stray_doorbells.append((offset, value))
                return
        for hook in list(self.on_doorbell):
            hook(q, value)


def _shift(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def attach_sdma(card: Any) -> SDMA:
    """Model the SDMA instances' registers on `card` (an emu.am.gpu.AMGPU): defines them on card.regs, keeps the model
    at card.sdma, resets it on every power-on, and listens to NBIO's SDMA doorbells when card.nbio is attached
    (attach GMC and NBIO first; the PSP is consulted at unhalt, whenever it is attached)."""
    if getattr(card, "sdma", None) is not None:
        raise ValueError("attach_sdma: this card already has an SDMA model attached")
    sdma = SDMA(card)
    card.sdma = sdma
    card.on_power_on.append(sdma.reset)
    nbio = getattr(card, "nbio", None)
    if nbio is not None:
        nbio.listen("SDMA", sdma.doorbell)
    return sdma
