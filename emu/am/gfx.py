"""The emulated GFX block's compute-side bring-up surface (GC 11 / GC 12): RLC autoload status, GRBM selection, MEC
halt control, the MEC doorbell range and the per-queue HQD registers. Packets are not run here: a queue that becomes
active is validated and described in `card.gfx.queues`, and the `on_queue_active` hooks hand it to whoever runs it.

What the kernel does and this model answers to (linux-source-6.12, drivers/gpu/drm/amd/amdgpu):
- gfx_v11_0_wait_for_rlc_autoload_complete / gfx_v12_0_wait_for_rlc_autoload_complete: poll until CP_STAT == 0 and
  RLC_RLCS_BOOTLOAD_STATUS.BOOTLOAD_COMPLETE == 1. The PSP's AUTOLOAD_RLC (emu/am/psp.py, card.on_rlc_autoload)
  starts the autoload; it completes only when the firmware it needs was loaded through LOAD_IP_FW (`REQUIRED`):
  otherwise it stays pending (BOOTLOAD_COMPLETE 0, the kernel times out) and `autoload_error` says what is missing.
- soc21_grbm_select / soc24_grbm_select: GRBM_GFX_CNTL MEID/PIPEID/QUEUEID/VMID select which hardware queue (HQD)
  the CP_HQD_* / CP_MQD_* registers address. Every register in the MQD's register window (CP_MQD_BASE_ADDR ..
  CP_HQD_PQ_WPTR_HI; struct v11/v12_compute_mqd dwords 128..184 mirror it) is banked per (me, pipe, queue).
- gfx_v11_0_constants_init / gfx_v11_0_init_compute_vmid: SH_MEM_CONFIG / SH_MEM_BASES, banked per VMID by
  GRBM_GFX_CNTL.VMID (`sh_mem(vmid)`); gfx_v11_0_cp_set_doorbell_range also writes CP_RB_DOORBELL_RANGE_LOWER/UPPER.
- gfx_v11_0_cp_compute_enable / gfx_v12_0_cp_compute_enable: CP_MEC_CNTL (MEC_ME1_HALT/MEC_ME2_HALT, F32 MEC) or
  CP_MEC_RS64_CNTL (MEC_HALT, MEC_PIPEn_RESET/ACTIVE, RS64 MEC). Both reset halted (gc_11_0_0_default.h).
- gfx_v11_0_kiq_init_register / gfx_v12_0_kiq_init_register (and tinygrad's AM setup_ring, which writes the MQD's
  register window in one go): program the bank, CP_MEC_DOORBELL_RANGE_LOWER/UPPER, then CP_HQD_ACTIVE = 1; a
  dequeue is CP_HQD_DEQUEUE_REQUEST = 1 and a poll of CP_HQD_ACTIVE until 0.

On CP_HQD_ACTIVE = 1 the bank is checked as the CP would use it (`validate`): ring base and size, the ring, the rptr
report, the wptr poll address, the EOP buffer and the MQD translated through the GMC (card.gmc.walk) in the bank's
VMID, the doorbell inside the MEC doorbell range. A bad bank is recorded in `errors` naming the register, ACTIVE stays
0 (a real CP would hang or fault on it). A good one becomes an `HQDQueue` in `queues` and the hooks run.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

from emu.am.regs import MASK32, Register

PAGE = 4096
HQD_FIRST, HQD_LAST = "CP_MQD_BASE_ADDR", "CP_HQD_PQ_WPTR_HI"  # the MQD register window (struct v11_compute_mqd)
MEC_ME = 1         # gfx_v11_0.c / gfx_v12_0.c gfx*_kiq_map_queues: compute rings are on me 1 (MEC1)
MEC_PIPES = 4      # CP_MEC_RS64_CNTL carries MEC_PIPE0..3 (gc_11_0_0_sh_mask.h, gc_12_0_0_sh_mask.h)
MEC_QUEUES = 8     # GRBM_GFX_CNTL.QUEUEID is 3 bits; gfx_v11_0_sw_init uses up to 8 queues per pipe
WALK_EVERY_PAGE_UP_TO = 4096  # pages: rings this big are checked page by page; bigger ones at both ends only
# Bank reset values (gc_11_0_0_default.h reg*_DEFAULT; the 6.12 tree has no gc_12_0_0_default.h, so GC 12 takes the
# same values: the emulator's choice).
HQD_DEFAULTS = {"CP_HQD_PERSISTENT_STATE": 0x0BE05501, "CP_HQD_PQ_CONTROL": 0x00308509,
                "CP_HQD_IB_CONTROL": 0x00300000, "CP_MQD_CONTROL": 0x00000100, "CP_HQD_EOP_CONTROL": 0x00000006}
CP_MEC_CNTL_DEFAULT = 0x50000000       # gc_11_0_0_default.h regCP_MEC_CNTL_DEFAULT: ME1 and ME2 halted
CP_MEC_RS64_CNTL_DEFAULT = 0x40000000  # gc_11_0_0_default.h regCP_MEC_RS64_CNTL_DEFAULT: MEC_HALT
GRBM_GFX_INDEX_DEFAULT = 0xE0000000    # gc_11_0_0_default.h: SE/SA/INSTANCE broadcast
CP_MEC_DOORBELL_RANGE_UPPER_DEFAULT = 0xFFC  # gc_11_0_0_default.h
CP_RB_DOORBELL_RANGE_UPPER_DEFAULT = 0x108   # gc_11_0_0_default.h
# Registers banked per VMID by GRBM_GFX_CNTL.VMID (gfx_v11_0_constants_init / gfx_v11_0_init_compute_vmid select
# each VMID with soc21_grbm_select(adev, 0, 0, 0, vmid) and write them), with gc_11_0_0_default.h reset values.
VMID_BANKED = {"SH_MEM_CONFIG": 0x0000C000, "SH_MEM_BASES": 0x00000000}
NUM_VMIDS = 16

# psp_gfx_if.h enum psp_gfx_fw_type values the autoload needs: RLC_G and a MEC image (F32 CP_MEC or RS64_MEC;
# GC 12 is RS64 only). Which images a real RLC insists on is not public; these are the compute path's minimum.
FW_RLC_G, FW_CP_MEC, FW_RS64_MEC = 8, 4, 89
REQUIRED: dict[int, tuple[tuple[str, tuple[int, ...]], ...]] = {
    11: (("RLC_G", (FW_RLC_G,)), ("CP_MEC or RS64_MEC", (FW_CP_MEC, FW_RS64_MEC))),
    12: (("RLC_G", (FW_RLC_G,)), ("RS64_MEC", (FW_RS64_MEC,))),
}


@dataclass(frozen=True)
class HQDQueue:
    """An active hardware queue as the CP sees it: where its ring is (GPU VA in `vmid`, `ring_size` bytes), where the
    CP reports the read pointer and polls the write pointer, its doorbell (dword index into the doorbell BAR, None
    when it has none), its EOP buffer and MQD, and the raw PQ_CONTROL / AQL_CONTROL values."""
    me: int
    pipe: int
    queue: int
    vmid: int
    ring_addr: int
    ring_size: int
    rptr_report_addr: int
    wptr_poll_addr: int
    doorbell: Optional[int]
    eop_addr: int
    eop_size: int
    mqd_addr: int
    pq_control: int
    aql_control: int


class GFX:
    """The GFX block of one card: `queues` ((me, pipe, queue) -> HQDQueue), `errors` (every refused activation or
    autoload, in words), `autoload_complete` / `autoload_error`, hooks `on_queue_active(queue)` and
    `on_queue_inactive(queue)`. `cp_busy` (a test knob) keeps CP_STAT non-zero."""

    def __init__(self, card: Any):
        self.card = card
        self.regs = card.regs
        self.major = card.board.block("GC").version[0]
        if self.major not in REQUIRED:
            raise ValueError(f"{card.board.product}: GC {card.board.block('GC').version} is neither GFX11 nor GFX12; "
                             "the GFX model covers those")
        self.mod = importlib.import_module(f"autogen.{self.regs.header('GC')}")
        self.on_queue_active: list[Callable[[HQDQueue], None]] = []
        self.on_queue_inactive: list[Callable[[HQDQueue], None]] = []
        self.cp_busy = False
        self._define()
        self.reset()

    # -- helpers --
    def mask(self, reg: str, field: str) -> int:
        return getattr(self.mod, f"{reg}__{field}_MASK")

    def field(self, value: int, reg: str, field: str) -> int:
        m = self.mask(reg, field)
        return (value & m) >> ((m & -m).bit_length() - 1)

    def selected(self) -> tuple[int, int, int]:
        """(me, pipe, queue) as GRBM_GFX_CNTL selects them now (soc21_grbm_select)."""
        v = self.regs.reg("GRBM_GFX_CNTL").value
        return (self.field(v, "GRBM_GFX_CNTL", "MEID"), self.field(v, "GRBM_GFX_CNTL", "PIPEID"),
                self.field(v, "GRBM_GFX_CNTL", "QUEUEID"))

    def bank(self, key: tuple[int, int, int]) -> dict[str, int]:
        """The HQD register values of queue `key` (created at reset values on first touch)."""
        b = self._banks.get(key)
        if b is None:
            b = self._banks[key] = {n: HQD_DEFAULTS.get(n, 0) for n in self._hqd_names}
        return b

    # -- registers --
    def _define(self) -> None:
        rf = self.regs
        rf.define("CP_STAT", "GC", wmask=0, on_read=lambda r: self._cp_stat())
        rf.define("RLC_RLCS_BOOTLOAD_STATUS", "GC", wmask=0, on_read=lambda r: self._bootload_status())
        rf.define("GRBM_GFX_CNTL", "GC")
        rf.define("GRBM_GFX_INDEX", "GC", reset=GRBM_GFX_INDEX_DEFAULT)
        rf.define("CP_MEC_CNTL", "GC", reset=CP_MEC_CNTL_DEFAULT)
        rf.define("CP_MEC_RS64_CNTL", "GC", reset=CP_MEC_RS64_CNTL_DEFAULT)
        rf.define("CP_MEC_DOORBELL_RANGE_LOWER", "GC")
        rf.define("CP_MEC_DOORBELL_RANGE_UPPER", "GC", reset=CP_MEC_DOORBELL_RANGE_UPPER_DEFAULT)
        rf.define("CP_DEBUG", "GC", reset=0x00400000)  # gc_11_0_0_default.h; amdgpu only dumps it (gc_reg_list_11_0)
        rf.define("CP_RB_DOORBELL_RANGE_LOWER", "GC")  # gfx_v11_0_cp_set_doorbell_range (the gfx rings' window)
        rf.define("CP_RB_DOORBELL_RANGE_UPPER", "GC", reset=CP_RB_DOORBELL_RANGE_UPPER_DEFAULT)
        for name in VMID_BANKED:
            rf.define(name, "GC", wmask=0, on_read=self._vmid_read, on_write=self._vmid_write)
        rf.define("CP_PQ_WPTR_POLL_CNTL", "GC")  # gfx_v11_0_kiq_init_register clears EN (read-modify-write)
        rf.define("CP_PQ_STATUS", "GC")          # ... and sets DOORBELL_ENABLE after activating the KIQ
        # The MQD register window: every offset from CP_MQD_BASE_ADDR to CP_HQD_PQ_WPTR_HI, banked. Offsets the
        # header names twice become aliases; offsets it does not name (reserved dwords of the MQD, which a driver
        # writing the window in one go also writes) are modelled as CP_MQD_RESERVED_<offset> (an emulator name).
        seg = getattr(self.mod, f"reg{HQD_FIRST}_BASE_IDX")
        lo, hi = getattr(self.mod, f"reg{HQD_FIRST}"), getattr(self.mod, f"reg{HQD_LAST}")
        by_off: dict[int, list[str]] = {}
        for attr, val in vars(self.mod).items():
            if attr.startswith("reg") and not attr.endswith("_BASE_IDX") and isinstance(val, int) and lo <= val <= hi \
                    and getattr(self.mod, f"{attr}_BASE_IDX", None) == seg:
                by_off.setdefault(val, []).append(attr[3:])
        self._hqd_names: list[str] = []
        special = {"CP_HQD_ACTIVE": self._active_written, "CP_HQD_DEQUEUE_REQUEST": self._dequeue_written}
        for off in range(lo, hi + 1):
            names = sorted(by_off.get(off, []))
            if names:
                name, aliases = names[0], tuple(names[1:])
                kw: dict[str, Any] = {}
                for n in names:
                    if n in special:
                        kw["on_write"] = lambda r, v, f=special[n]: f(v)
                reg = rf.define(name, "GC", aliases=aliases, wmask=0, on_read=self._bank_read,
                                on_write=kw.get("on_write", self._bank_write))
            else:
                name = f"CP_MQD_RESERVED_{off:X}"
                reg = rf.add(Register(name, "GC", off, seg=seg, wmask=0, on_read=self._bank_read,
                                      on_write=self._bank_write))
            self._hqd_names.append(reg.name)

    def _bank_read(self, reg: Register) -> int:
        return self.bank(self.selected())[reg.name]

    def _bank_write(self, reg: Register, value: int) -> None:
        self.bank(self.selected())[reg.name] = value & MASK32

    def selected_vmid(self) -> int:
        """GRBM_GFX_CNTL.VMID: which VMID's SH_MEM_* registers are addressed now."""
        return self.field(self.regs.reg("GRBM_GFX_CNTL").value, "GRBM_GFX_CNTL", "VMID")

    def sh_mem(self, vmid: int) -> dict[str, int]:
        """VMID's SH_MEM_CONFIG / SH_MEM_BASES as the driver left them (for the shader model)."""
        return dict(self._vmid_banks[vmid])

    def _vmid_read(self, reg: Register) -> int:
        return self._vmid_banks[self.selected_vmid()][reg.name]

    def _vmid_write(self, reg: Register, value: int) -> None:
        self._vmid_banks[self.selected_vmid()][reg.name] = value & MASK32

    def _cp_stat(self) -> int:
        # gfx_v11_0_wait_for_rlc_autoload_complete wants 0: busy until the autoload is done (or while cp_busy)
        busy = self.cp_busy or (self.autoload_started and not self.autoload_complete)
        return self.mask("CP_STAT", "CP_BUSY") if busy else 0

    def _bootload_status(self) -> int:
        return self.mask("RLC_RLCS_BOOTLOAD_STATUS", "BOOTLOAD_COMPLETE") if self.autoload_complete else 0

    # -- state --
    def reset(self) -> None:
        """Power-on or function reset: no autoload, no queues, every HQD bank at its reset values."""
        self._banks: dict[tuple[int, int, int], dict[str, int]] = {}
        self._vmid_banks = [dict(VMID_BANKED) for _ in range(NUM_VMIDS)]
        self.queues: dict[tuple[int, int, int], HQDQueue] = {}
        self.errors: list[str] = []
        self.autoload_started = False
        self.autoload_complete = False
        self.autoload_error: Optional[str] = None

    # -- RLC autoload --
    def rlc_autoload(self) -> None:
        """The PSP ran AUTOLOAD_RLC: complete it when the needed firmware was loaded, else keep it pending."""
        psp = getattr(self.card, "psp", None)
        loaded = set(getattr(psp, "autoload_set", None) or getattr(psp, "loaded", {}) or ())
        self.autoload_started = True
        missing = [what for what, alts in REQUIRED[self.major] if not loaded & set(alts)]
        if missing:
            self.autoload_complete = False
            self.autoload_error = (f"RLC autoload pending: {', '.join(missing)} not loaded through the PSP (LOAD_IP_FW "
                                   "before AUTOLOAD_RLC); RLC_RLCS_BOOTLOAD_STATUS.BOOTLOAD_COMPLETE stays 0")
            self.errors.append(self.autoload_error)
            return
        self.autoload_complete, self.autoload_error = True, None

    def complete_autoload(self) -> None:
        """Put the RLC in the autoloaded state directly (a warm card, or tests that skip the PSP)."""
        self.autoload_started = self.autoload_complete = True
        self.autoload_error = None

    # -- MEC --
    def rs64(self) -> bool:
        """Whether the MEC runs RS64 firmware (GC 12 always; GC 11 when RS64_MEC was loaded: rs64_enable)."""
        if self.major >= 12:
            return True
        psp = getattr(self.card, "psp", None)
        return FW_RS64_MEC in (getattr(psp, "loaded", None) or {})

    def mec_running(self, pipe: int) -> bool:
        """Whether MEC1 pipe `pipe` runs, as gfx_v1x_0_cp_compute_enable left CP_MEC_RS64_CNTL / CP_MEC_CNTL."""
        if self.rs64():
            v = self.regs.reg("CP_MEC_RS64_CNTL").value
            return not self.field(v, "CP_MEC_RS64_CNTL", "MEC_HALT") and \
                bool(self.field(v, "CP_MEC_RS64_CNTL", f"MEC_PIPE{pipe}_ACTIVE")) and \
                not self.field(v, "CP_MEC_RS64_CNTL", f"MEC_PIPE{pipe}_RESET")
        return not self.field(self.regs.reg("CP_MEC_CNTL").value, "CP_MEC_CNTL", "MEC_ME1_HALT")

    def queue_ready(self, key: tuple[int, int, int]) -> tuple[bool, str]:
        """Whether an active queue would be processed now, and if not why (for the CP model attached later)."""
        if key not in self.queues:
            return False, f"HQD me {key[0]} pipe {key[1]} queue {key[2]} is not active"
        if not self.autoload_complete:
            return False, "the RLC autoload has not completed (no MEC firmware running)"
        if not self.mec_running(key[1]):
            reg = "CP_MEC_RS64_CNTL" if self.rs64() else "CP_MEC_CNTL"
            return False, f"MEC pipe {key[1]} is halted or in reset ({reg} {self.regs.reg(reg).value:#x})"
        return True, "ready"

    # -- HQD activation --
    def _active_written(self, value: int) -> None:
        key = self.selected()
        b = self.bank(key)
        if not value & self.mask("CP_HQD_ACTIVE", "ACTIVE"):
            b["CP_HQD_ACTIVE"] = value & MASK32
            self._deactivate(key)
            return
        if key in self.queues:  # writing 1 again to an active queue changes nothing
            return
        err = None
        try:
            q = self.validate(key)
        except _BankError as e:
            err = str(e)
        if err is not None:
            self.errors.append(err)
            b["CP_HQD_ACTIVE"] = value & ~self.mask("CP_HQD_ACTIVE", "ACTIVE") & MASK32
            return
        b["CP_HQD_ACTIVE"] = value & MASK32
        self.queues[key] = q
        for hook in list(self.on_queue_active):
            hook(q)

    def _dequeue_written(self, value: int) -> None:
        key = self.selected()
        req = self.mask("CP_HQD_DEQUEUE_REQUEST", "DEQUEUE_REQ")
        # the dequeue completes at once: the request bits read back clear, ACTIVE drops (kiq_init_register polls it)
        self.bank(key)["CP_HQD_DEQUEUE_REQUEST"] = value & ~req & MASK32
        if value & req:
            self.bank(key)["CP_HQD_ACTIVE"] &= ~self.mask("CP_HQD_ACTIVE", "ACTIVE") & MASK32
            self._deactivate(key)

    def _deactivate(self, key: tuple[int, int, int]) -> None:
        q = self.queues.pop(key, None)
        if q is not None:
            for hook in list(self.on_queue_inactive):
                hook(q)

    def _walk(self, vmid: int, va: int, size: int, what: str, reg: str, write: bool) -> None:
        gmc = getattr(self.card, "gmc", None)
        if gmc is None:
            raise _BankError(f"{what} at {va:#x}: no GMC model on this card to translate it (attach_gmc first)")
        pages = range(va // PAGE, (va + size - 1) // PAGE + 1)
        if len(pages) > WALK_EVERY_PAGE_UP_TO:
            pages = [pages[0], pages[-1]]
        for p in pages:
            a = max(va, p * PAGE)
            try:
                gmc.walk(vmid, a, write)
            except Exception as e:  # VMFault (recorded in card.vm_faults) or an address the hub refuses
                raise _BankError(f"{reg}: {what} {va:#x} (+{size:#x}) is not mapped {'writable ' if write else ''}"
                                 f"in VMID {vmid} at {a:#x}: {e}") from None

    def validate(self, key: tuple[int, int, int]) -> HQDQueue:
        """Check the bank of `key` as the CP would on activation; the HQDQueue, or _BankError naming the register."""
        me, pipe, queue = key
        b = self.bank(key)
        where = f"HQD me {me} pipe {pipe} queue {queue}"

        def bad(reg: str, why: str) -> _BankError:
            return _BankError(f"{where}: CP_HQD_ACTIVE=1 refused: {reg} {why}")

        if me != MEC_ME:
            raise bad("GRBM_GFX_CNTL", f"selects me {me}: only MEC1 (me {MEC_ME}) compute queues are modelled (me 0 "
                      "is the graphics ME with its CP_GFX_HQD registers, me 2/3 are MES)")
        if pipe >= MEC_PIPES or queue >= MEC_QUEUES:
            raise bad("GRBM_GFX_CNTL", f"selects pipe {pipe} queue {queue}: MEC1 has pipes 0..{MEC_PIPES - 1}, "
                      f"queues 0..{MEC_QUEUES - 1}")
        vmid = self.field(b["CP_HQD_VMID"], "CP_HQD_VMID", "VMID")
        ring = (b["CP_HQD_PQ_BASE_HI"] << 32 | b["CP_HQD_PQ_BASE"]) << 8  # compute_mqd_init: hqd_base_gpu_addr >> 8
        qs = self.field(b["CP_HQD_PQ_CONTROL"], "CP_HQD_PQ_CONTROL", "QUEUE_SIZE")
        ring_size = 4 << (qs + 1)  # compute_mqd_init: QUEUE_SIZE = order_base_2(queue_size / 4) - 1
        if ring == 0:
            raise bad("CP_HQD_PQ_BASE", "is 0: no ring programmed")
        if ring >> 48:
            raise bad("CP_HQD_PQ_BASE_HI", f"puts the ring at {ring:#x}, beyond the 48-bit GPU VA")
        if qs > 25:  # 2^27 dwords = 512 MiB; a bigger PQ is no sane ring (the emulator's bound)
            raise bad("CP_HQD_PQ_CONTROL", f"QUEUE_SIZE {qs} ({ring_size:#x} bytes) is not a sane ring size")
        self._walk(vmid, ring, ring_size, "ring", "CP_HQD_PQ_BASE", write=False)
        rptr = (b["CP_HQD_PQ_RPTR_REPORT_ADDR_HI"] << 32 | b["CP_HQD_PQ_RPTR_REPORT_ADDR"]) & ~3 & (1 << 48) - 1
        if rptr == 0:
            raise bad("CP_HQD_PQ_RPTR_REPORT_ADDR", "is 0: the CP has nowhere to report the read pointer")
        self._walk(vmid, rptr, 8, "rptr report address", "CP_HQD_PQ_RPTR_REPORT_ADDR", write=True)
        wptr = (b["CP_HQD_PQ_WPTR_POLL_ADDR_HI"] << 32 | b["CP_HQD_PQ_WPTR_POLL_ADDR"]) & ~3 & (1 << 48) - 1
        if wptr:
            self._walk(vmid, wptr, 8, "wptr poll address", "CP_HQD_PQ_WPTR_POLL_ADDR", write=False)
        db_ctl = b["CP_HQD_PQ_DOORBELL_CONTROL"]
        doorbell: Optional[int] = None
        if self.field(db_ctl, "CP_HQD_PQ_DOORBELL_CONTROL", "DOORBELL_EN"):
            doorbell = self.field(db_ctl, "CP_HQD_PQ_DOORBELL_CONTROL", "DOORBELL_OFFSET")  # dword index
            lower = self.regs.reg("CP_MEC_DOORBELL_RANGE_LOWER").value & self.mask(
                "CP_MEC_DOORBELL_RANGE_LOWER", "DOORBELL_RANGE_LOWER")
            upper = self.regs.reg("CP_MEC_DOORBELL_RANGE_UPPER").value & self.mask(
                "CP_MEC_DOORBELL_RANGE_UPPER", "DOORBELL_RANGE_UPPER")
            # kiq_init_register: RANGE_LOWER/UPPER = (doorbell index * 2) << 2, byte offsets, upper inclusive
            if not lower <= doorbell * 4 <= upper:
                raise bad("CP_HQD_PQ_DOORBELL_CONTROL", f"DOORBELL_OFFSET {doorbell:#x} (byte {doorbell * 4:#x}) is "
                          f"outside CP_MEC_DOORBELL_RANGE_LOWER..UPPER {lower:#x}..{upper:#x}: the MEC never sees it")
            bar = getattr(self.card, "doorbells", None)
            size = getattr(bar, "size", None)
            if isinstance(size, int) and doorbell * 4 + 8 > size:
                raise bad("CP_HQD_PQ_DOORBELL_CONTROL", f"DOORBELL_OFFSET {doorbell:#x} is past the {size:#x}-byte "
                          "doorbell BAR")
        elif not self.field(self.regs.reg("CP_PQ_WPTR_POLL_CNTL").value, "CP_PQ_WPTR_POLL_CNTL", "EN"):
            raise bad("CP_HQD_PQ_DOORBELL_CONTROL", "has DOORBELL_EN 0 and CP_PQ_WPTR_POLL_CNTL.EN is 0: nothing "
                      "would ever tell the CP the write pointer moved")
        eop = (b["CP_HQD_EOP_BASE_ADDR_HI"] << 32 | b["CP_HQD_EOP_BASE_ADDR"]) << 8  # compute_mqd_init: >> 8
        eop_size = 4 << (self.field(b["CP_HQD_EOP_CONTROL"], "CP_HQD_EOP_CONTROL", "EOP_SIZE") + 1)
        if eop == 0:
            raise bad("CP_HQD_EOP_BASE_ADDR", "is 0: no EOP buffer")
        if eop >> 48:
            raise bad("CP_HQD_EOP_BASE_ADDR_HI", f"puts the EOP buffer at {eop:#x}, beyond the 48-bit GPU VA")
        self._walk(vmid, eop, min(eop_size, 1 << 20), "EOP buffer", "CP_HQD_EOP_BASE_ADDR", write=True)
        mqd = (b["CP_MQD_BASE_ADDR_HI"] << 32 | b["CP_MQD_BASE_ADDR"]) & ~3 & (1 << 48) - 1
        if mqd == 0:
            raise bad("CP_MQD_BASE_ADDR", "is 0: the CP saves the queue state there on a dequeue")
        mqd_vmid = self.field(b["CP_MQD_CONTROL"], "CP_MQD_CONTROL", "VMID")
        self._walk(mqd_vmid, mqd, 2048, "MQD", "CP_MQD_BASE_ADDR", write=True)  # sizeof(struct v11_compute_mqd)
        return HQDQueue(me, pipe, queue, vmid, ring, ring_size, rptr, wptr, doorbell, eop, eop_size, mqd,
                        b["CP_HQD_PQ_CONTROL"], b["CP_HQD_AQL_CONTROL"])


class _BankError(Exception):
    """An HQD bank the CP could not run (the message names the register)."""


def attach_gfx(card: Any) -> GFX:
    """Model the GFX block's compute bring-up registers on `card` (an emu.am.gpu.AMGPU): defines them on card.regs,
    keeps the model at card.gfx, completes the RLC autoload from the PSP's AUTOLOAD_RLC (card.on_rlc_autoload) and
    resets on every power-on. Attach the GMC first (queues are checked through card.gmc.walk)."""
    if getattr(card, "gfx", None) is not None:
        raise ValueError("attach_gfx: this card already has a GFX model attached")
    gfx = GFX(card)
    card.gfx = gfx
    if not hasattr(card, "on_rlc_autoload"):
        card.on_rlc_autoload = []
    card.on_rlc_autoload.append(gfx.rlc_autoload)
    card.on_power_on.append(gfx.reset)
    return gfx
