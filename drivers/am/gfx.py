"""The GFX block of an AM device, compute only, driver side: the MEC brought out of halt and compute queues programmed
straight into the hardware queue descriptors (HQDs), with no KIQ and no MES (as tinygrad's AM driver does).

What is programmed, and in which order, is amdgpu's (linux 6.12 gfx_v11_0.c / gfx_v12_0.c), minus the KIQ:

- `init(dev)`: gfx_v11_0_wait_for_rlc_autoload_complete (the PSP's AUTOLOAD_RLC started the RLC, which loads the CP
  firmware itself: poll until CP_STAT is 0 and RLC_RLCS_BOOTLOAD_STATUS.BOOTLOAD_COMPLETE is 1, bounded), the GFXHUB
  enabled through the GMC (gfx_v11_0_gfxhub_enable), gfx_v11_0_constants_init's SH_MEM_CONFIG / SH_MEM_BASES for every
  VMID (through GRBM_GFX_CNTL), gfx_v11_0_cp_set_doorbell_range (CP_RB_ / CP_MEC_DOORBELL_RANGE from the NBIO layout
  drivers/am/nbio.py DOORBELLS), then gfx_v11_0_cp_compute_enable (CP_MEC_RS64_CNTL when the CP firmware is RS64 -
  gfx_v11_0_init_microcode: PFP header v2 - and always on gfx12; CP_MEC_CNTL's ME1/ME2 halts otherwise).
- `create_compute_queue(...)`: one page-aligned DMA buffer per queue holding the MQD, the EOP buffer, the rptr report
  and wptr poll words and the ring, mapped into the GMC's VM (VMID 0) at a VA of this block's window; an MQD
  (autogen mqd_v11/mqd_v12 v1x_compute_mqd) filled as gfx_v11_0_compute_mqd_init fills it; soc21_grbm_select(1, pipe,
  queue, 0); the HQD registers written from the MQD in gfx_v11_0_kiq_init_register's order (which ends with
  CP_HQD_ACTIVE and CP_PQ_STATUS.DOORBELL_ENABLE); soc21_grbm_select(0, 0, 0, 0). Returns a `ComputeQueue`.
- `fini()` / `suspend()`: every queue dequeued (CP_HQD_DEQUEUE_REQUEST, bounded wait for CP_HQD_ACTIVE to clear, as
  gfx_v11_0_kiq_init_register does for an active queue), the MEC halted (cp_compute_enable(false)); fini also unmaps
  and frees the queues' memory. `resume()`: the MEC unhalted and every queue programmed again from its MQD, with its
  read and write pointers restarted at 0 (amdgpu's kcq resume restores the MQD backup the same way).

Decisions that differ from amdgpu (one process owns the card, everything runs in VMID 0):
- No KIQ, no MES: the HQDs are written by MMIO, so queues are ME 1 (MEC1) pipe 0..3 queue 0..7 chosen by the caller.
- SH_MEM_BASES is written for VMID 0 too (amdgpu skips VMID 0, its kernel context, which runs no shaders with flat
  apertures); AM runs user work in VMID 0 and needs the LDS/scratch apertures there.
- Queue memory is system memory (snooped) for now: the CPU writes the ring and reads the rptr through the DMA
  buffer's host address. VRAM placement is not offered yet.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from drivers.am.nbio import DOORBELLS, DoorbellLayout
from drivers.am.regs import Reg
from drivers.pci.interface import DMABuffer
from hcq.errors import HCQError

log = logging.getLogger(__name__)

PAGE = 4096
MEC_HPD_SIZE = 2048  # gfx_v11_0.c GFX11_MEC_HPD_SIZE / gfx_v12_0.c GFX12_MEC_HPD_SIZE: EOP bytes per queue
MQD_HEADER = 0xC0310800  # gfx_v11_0_compute_mqd_init / gfx_v12_0_compute_mqd_init mqd->header
# gfx_v11_0.c / gfx_v12_0.c register defaults the MQD starts from (regCP_*_DEFAULT)
CP_HQD_EOP_CONTROL_DEFAULT = 0x00000006
CP_MQD_CONTROL_DEFAULT = 0x00000100
CP_HQD_PQ_CONTROL_DEFAULT = 0x00308509
CP_HQD_PERSISTENT_STATE_DEFAULT = 0x0BE05501
CP_HQD_IB_CONTROL_DEFAULT = 0x00300000
CP_HQD_PQ_DOORBELL_CONTROL_DEFAULT = 0x00000000  # gc_11_0_0_default.h
CP_HQD_PQ_RPTR_DEFAULT = 0x00000000  # gc_11_0_0_default.h
GPU_PAGE_SIZE = 4096  # AMDGPU_GPU_PAGE_SIZE: RPTR_BLOCK_SIZE = order_base_2(4096 / 4) - 1
# soc21_enum.h / soc24_enum.h: SH_MEM_ADDRESS_MODE_64 = 0, SH_MEM_ALIGNMENT_MODE_UNALIGNED = 3
SH_MEM_ADDRESS_MODE_64, SH_MEM_ALIGNMENT_MODE_UNALIGNED = 0, 3
# gmc_v11_0_early_init / gmc_v12_0_early_init: shared_aperture_start 0x2000000000000000, private 0x1000000000000000
SHARED_APERTURE_START, PRIVATE_APERTURE_START = 0x2000_0000_0000_0000, 0x1000_0000_0000_0000
NUM_VMIDS = 16  # AMDGPU_NUM_VMID: the GFXHUB's id_mgr num_ids
MEC_ME = 1  # soc21_grbm_select me: 0 is the gfx ME, 1 the first MEC (amdgpu's compute rings use mec 0 -> me 1)
PIPES_PER_MEC, QUEUES_PER_PIPE = 4, 8  # gfx_v11_0_sw_init / gfx_v12_0_sw_init: num_pipe_per_mec, num_queue_per_pipe
AUTOLOAD_TIMEOUT_S = 1.0  # amdgpu waits usec_timeout (100000) iterations of udelay(1); a poll over MMIO is slower
DEQUEUE_TIMEOUT_S = 0.1  # gfx_v11_0_kiq_init_register: usec_timeout (100 ms) for CP_HQD_ACTIVE to clear
POLL_S = 0.0005
DEFAULT_VA_BASE = 0x7F00_0000_0000  # this block's VA window for queue memory, below 2^47 and above any aperture
DEFAULT_VA_SIZE = 1 << 36
# byte offsets inside one queue's buffer: MQD page, EOP page, pointer page (rptr report, wptr poll), then the ring
MQD_OFF, EOP_OFF, PTR_OFF, RING_OFF = 0x0000, 0x1000, 0x2000, 0x3000
RPTR_OFF, WPTR_OFF = PTR_OFF, PTR_OFF + 0x100  # separate 256-byte slots, as the kernel's wb slots are apart


class GFXError(HCQError):
    """The GFX block could not be brought up or a queue could not be made; the message names the device, the step or
    register, and what to do."""


def _order_base_2(n: int) -> int:
    """The kernel's order_base_2: ceil(log2(n))."""
    return (n - 1).bit_length() if n > 1 else 0


@dataclass
class ComputeQueue:
    """One compute queue programmed into an HQD: where it lives (ME/pipe/queue), its doorbell and memory.

    `ring` is the CPU view of the ring (a ctypes array of bytes, `ring_size` long, at GPU VA `ring_va`); `rptr_va` /
    `wptr_va` the GPU addresses of the rptr the CP reports and of the 64-bit wptr it may poll; `doorbell_index` the
    64-bit doorbell slot (DoorbellLayout units), `doorbell_offset` its byte offset in BAR2. The HCQ queue writes
    packets into `ring`, stores the new wptr (in dwords, not wrapped) with `write_wptr`, and rings the doorbell with
    `ring_doorbell` (the same value). `read_rptr()` reads what the CP reported (dwords, wrapped by the ring size)."""
    me: int
    pipe: int
    queue: int
    doorbell_index: int
    doorbell_offset: int
    ring_va: int
    ring_size: int
    rptr_va: int
    wptr_va: int
    eop_va: int
    mqd_va: int
    va: int
    buffer: DMABuffer
    mqd: Any
    ring: Any = field(repr=False)
    doorbells: Any = field(repr=False, default=None)
    active: bool = False

    @property
    def ring_host_addr(self) -> int:
        """The CPU address of the ring's first byte."""
        return self.buffer.host_addr + RING_OFF

    def read_rptr(self) -> int:
        """The read pointer the CP last reported (dwords)."""
        return ctypes.c_uint32.from_address(self.buffer.host_addr + RPTR_OFF).value

    def read_wptr(self) -> int:
        """The 64-bit write pointer word as last stored (dwords)."""
        return ctypes.c_uint64.from_address(self.buffer.host_addr + WPTR_OFF).value

    def write_wptr(self, value: int) -> None:
        """Store the 64-bit write pointer (dwords) where the CP's wptr poll address points."""
        ctypes.c_uint64.from_address(self.buffer.host_addr + WPTR_OFF).value = value

    def ring_doorbell(self, value: int) -> None:
        """Write `value` (the new wptr, dwords) to the queue's 64-bit doorbell in BAR2 (amdgpu's WDOORBELL64): one
        64-bit store when BAR2 is mapped into this process, else the low dword then the high one."""
        bar = self.doorbells
        if bar is None:
            raise GFXError(f"compute queue (me {self.me} pipe {self.pipe} queue {self.queue}) has no doorbell BAR "
                           f"mapping: the device was opened without BAR2")
        host = getattr(bar, "host_addr", None)
        if host:
            ctypes.c_uint64.from_address(host + self.doorbell_offset).value = value & (2 ** 64 - 1)
        else:
            bar.write_many([(self.doorbell_offset, value & 0xFFFFFFFF),
                            (self.doorbell_offset + 4, (value >> 32) & 0xFFFFFFFF)])

    def describe(self) -> dict[str, Any]:
        """The queue as plain data (reports, hang bundles)."""
        return dict(me=self.me, pipe=self.pipe, queue=self.queue, doorbell_index=self.doorbell_index,
                    doorbell_offset=self.doorbell_offset, ring_va=self.ring_va, ring_size=self.ring_size,
                    rptr_va=self.rptr_va, wptr_va=self.wptr_va, eop_va=self.eop_va, mqd_va=self.mqd_va,
                    active=self.active, rptr=self.read_rptr(), wptr=self.read_wptr())


class GFX:
    """The compute side of the GFX block of one AM device (see the module docstring for the order).

    `layout` is the doorbell assignment (drivers/am/nbio.py DOORBELLS); `rs64` forces the MEC flavour (default: RS64 on
    gfx12, on gfx11 when the PFP firmware header is v2, as gfx_v11_0_init_microcode decides); `autoload_timeout`
    bounds the RLC autoload wait; `va_base` / `va_size` the VM window queue memory is mapped into. `sleep` is the
    wait between polls (tests pass a no-op)."""

    def __init__(self, *, layout: DoorbellLayout = DOORBELLS, rs64: Optional[bool] = None,
                 autoload_timeout: float = AUTOLOAD_TIMEOUT_S, dequeue_timeout: float = DEQUEUE_TIMEOUT_S,
                 va_base: int = DEFAULT_VA_BASE, va_size: int = DEFAULT_VA_SIZE,
                 sleep: Callable[[float], None] = time.sleep):
        if va_base % PAGE or va_size % PAGE or va_base + va_size > 1 << 48:
            raise GFXError(f"VA window {va_base:#x}+{va_size:#x} must be page-aligned and inside the 48-bit VM")
        self.layout, self._rs64 = layout, rs64
        self.autoload_timeout, self.dequeue_timeout = autoload_timeout, dequeue_timeout
        self.va_base, self.va_size = va_base, va_size
        self._sleep = sleep
        self.dev: Any = None
        self.gen = 0
        self.rs64 = False
        self.mec_enabled = False
        self.queues: list[ComputeQueue] = []
        self._next_va = va_base
        self._lock = threading.RLock()  # amdgpu's srbm_mutex: GRBM_GFX_CNTL selects a bank for the writes after it

    # --- register helpers ---
    def _reg(self, name: str) -> Reg:
        return self.dev.regs.reg("GC", name)

    def _read(self, name: str) -> int:
        return self.dev.regs.read(self._reg(name))

    def _write(self, name: str, value: int) -> None:
        self.dev.regs.write(self._reg(name), value)

    def _enc(self, name: str, value: int = 0, **fields: int) -> int:
        return self._reg(name).encode(value, **fields)

    @property
    def bdf(self) -> str:
        return getattr(self.dev, "bdf", "?")

    # --- life cycle ---
    def init(self, dev: Any) -> "GFX":
        """Wait for the RLC autoload, enable the GFXHUB, set SH_MEM and the doorbell ranges, unhalt the MEC."""
        self.dev = dev
        major = dev.discovery.version("GC")[0]
        if major not in (11, 12):
            raise GFXError(f"{self.bdf}: GC {major}.x is not supported by the AM GFX block (gfx11 and gfx12 are)")
        self.gen = major
        self.rs64 = self._decide_rs64() if self._rs64 is None else self._rs64
        self.wait_for_rlc_autoload()
        gmc = getattr(dev, "gmc", None)
        if gmc is not None and not gmc.hub_enabled.get("GC", False):
            gmc.gfxhub_enable()  # gfx_v11_0_hw_init -> gfx_v11_0_gfxhub_enable, once GC is powered
        self.constants_init()
        self.set_doorbell_range()
        self.compute_enable(True)
        return self

    def _decide_rs64(self) -> bool:
        if self.gen >= 12:
            return True  # gfx_v12_0_cp_compute_enable only knows CP_MEC_RS64_CNTL
        fw = getattr(self.dev, "firmware", None)
        try:
            pfp = fw["pfp"] if fw is not None and "pfp" in fw else None
        except KeyError:
            pfp = None
        if pfp is None:
            return True  # every gfx11 dGPU's CP firmware in linux-firmware is RS64 (gc_11_0_*_pfp.bin header v2)
        return tuple(pfp.header_version)[0] == 2  # gfx_v11_0_init_microcode: amdgpu_ucode_hdr_version(pfp, 2, 0)

    def fini(self) -> None:
        """Dequeue every queue, halt the MEC, unmap and free the queues' memory."""
        if self.dev is None:
            return
        errors = []
        for q in list(self.queues):
            try:
                self.destroy_compute_queue(q)
            except GFXError as e:
                errors.append(str(e))
        if self.mec_enabled:
            self.compute_enable(False)
        if errors:
            raise GFXError(f"{self.bdf}: GFX fini finished with errors: {'; '.join(errors)}")

    def suspend(self) -> None:
        """Dequeue every queue (their memory and MQDs stay) and halt the MEC."""
        for q in self.queues:
            if q.active:
                self._dequeue(q)
        if self.mec_enabled:
            self.compute_enable(False)

    def resume(self) -> None:
        """Unhalt the MEC and program every queue again from its MQD, pointers restarted at 0."""
        self.wait_for_rlc_autoload()
        self.constants_init()
        self.set_doorbell_range()
        self.compute_enable(True)
        for q in self.queues:
            ctypes.memset(q.buffer.host_addr + PTR_OFF, 0, PAGE)
            self._program_hqd(q)

    # --- bring-up steps ---
    def wait_for_rlc_autoload(self) -> None:
        """gfx_v11_0_wait_for_rlc_autoload_complete: CP_STAT == 0 and BOOTLOAD_COMPLETE == 1, bounded."""
        stat_name = "RLC_RLCS_BOOTLOAD_STATUS"
        deadline = time.monotonic() + self.autoload_timeout
        cp_stat = boot = 0
        while True:
            cp_stat, boot = self._read("CP_STAT"), self._read(stat_name)
            if cp_stat == 0 and self._reg(stat_name).get(boot, "BOOTLOAD_COMPLETE") == 1:
                return
            if time.monotonic() >= deadline:
                raise GFXError(f"{self.bdf}: RLC autoload did not complete in {self.autoload_timeout:.3f} s "
                               f"(CP_STAT {cp_stat:#x}, {stat_name} {boot:#x}, BOOTLOAD_COMPLETE "
                               f"{self._reg(stat_name).get(boot, 'BOOTLOAD_COMPLETE')}): the PSP must load the RLC "
                               f"and CP firmware and send AUTOLOAD_RLC first (PSP.init); check the PSP's report")
            self._sleep(POLL_S)

    def grbm_select(self, me: int = 0, pipe: int = 0, queue: int = 0, vmid: int = 0) -> None:
        """soc21_grbm_select: route the banked CP/SH registers to (me, pipe, queue, vmid). Hold self._lock around it."""
        self._write("GRBM_GFX_CNTL", self._enc("GRBM_GFX_CNTL", PIPEID=pipe, MEID=me, VMID=vmid, QUEUEID=queue))

    def constants_init(self) -> None:
        """gfx_v11_0_constants_init's SH_MEM part: SH_MEM_CONFIG (64-bit, unaligned, prefetch 3) and the LDS/scratch
        apertures in SH_MEM_BASES for every VMID (VMID 0 too: see the module docstring)."""
        config = self._enc("SH_MEM_CONFIG", ADDRESS_MODE=SH_MEM_ADDRESS_MODE_64,
                           ALIGNMENT_MODE=SH_MEM_ALIGNMENT_MODE_UNALIGNED, INITIAL_INST_PREFETCH=3)
        bases = self._enc("SH_MEM_BASES", PRIVATE_BASE=PRIVATE_APERTURE_START >> 48,
                          SHARED_BASE=SHARED_APERTURE_START >> 48)
        with self._lock:
            try:
                for vmid in range(NUM_VMIDS):
                    self.grbm_select(0, 0, 0, vmid)
                    self._write("SH_MEM_CONFIG", config)
                    self._write("SH_MEM_BASES", bases)
            finally:
                self.grbm_select()

    def set_doorbell_range(self) -> None:
        """gfx_v11_0_cp_set_doorbell_range: the gfx and compute doorbell windows the CP listens to."""
        rb_lo, rb_hi = self.layout.gfx_range_bytes()
        mec_lo, mec_hi = self.layout.mec_range_bytes()
        self._write("CP_RB_DOORBELL_RANGE_LOWER", rb_lo)
        self._write("CP_RB_DOORBELL_RANGE_UPPER", rb_hi)
        self._write("CP_MEC_DOORBELL_RANGE_LOWER", mec_lo)
        self._write("CP_MEC_DOORBELL_RANGE_UPPER", mec_hi)

    def compute_enable(self, enable: bool) -> None:
        """gfx_v11_0_cp_compute_enable / gfx_v12_0_cp_compute_enable: unhalt (or halt) the MEC."""
        on, off = (1, 0) if enable else (0, 1)
        if self.rs64:
            r = self._reg("CP_MEC_RS64_CNTL")
            fields = dict(MEC_INVALIDATE_ICACHE=off, MEC_HALT=off)
            for p in range(PIPES_PER_MEC):
                fields[f"MEC_PIPE{p}_RESET"] = off
                fields[f"MEC_PIPE{p}_ACTIVE"] = on
            self.dev.regs.write(r, r.encode(self.dev.regs.read(r), **fields))
        else:
            r = self._reg("CP_MEC_CNTL")
            fields = dict(MEC_ME1_HALT=off, MEC_ME2_HALT=off)  # no MES KIQ here: ME2 is unhalted too
            self.dev.regs.write(r, r.encode(self.dev.regs.read(r), **fields))
        self.mec_enabled = enable
        self._sleep(50e-6)  # udelay(50) after the write

    # --- queues ---
    def _alloc_va(self, size: int) -> int:
        if self._next_va + size > self.va_base + self.va_size:
            raise GFXError(f"{self.bdf}: the GFX VA window {self.va_base:#x}+{self.va_size:#x} is full; pass a larger "
                           f"va_size to GFX()")
        va = self._next_va
        self._next_va += size
        return va

    def _map(self, va: int, buf: DMABuffer) -> None:
        """Map the buffer's pages at `va`, one GMC mapping per run of contiguous bus pages."""
        from drivers.am.gmc import PTE_EXECUTABLE, PTE_READABLE, PTE_SNOOPED, PTE_SYSTEM, PTE_WRITEABLE
        gmc = getattr(self.dev, "gmc", None)
        if gmc is None:
            raise GFXError(f"{self.bdf}: a compute queue's memory is mapped through the GMC, which is not up: boot "
                           f"the gmc block first")
        flags = PTE_SYSTEM | PTE_SNOOPED | PTE_READABLE | PTE_WRITEABLE | PTE_EXECUTABLE
        ps = buf.page_size
        pages = buf.bus_pages
        i = 0
        while i < len(pages):
            j = i + 1
            while j < len(pages) and pages[j] == pages[j - 1] + ps:
                j += 1
            gmc.map(va + i * ps, pages[i], (j - i) * ps, flags, flush=False)
            i = j
        gmc.flush_tlb()

    def create_compute_queue(self, ring_size: int = 1 << 16, *, pipe: int = 0, queue: int = 0,
                             doorbell_index: Optional[int] = None, priority: int = 0,
                             queue_priority: int = 0) -> ComputeQueue:
        """Make and activate a compute queue on MEC1 `pipe` / `queue` with a `ring_size`-byte ring (a power of two,
        at least 4 KiB). `doorbell_index` (64-bit doorbell units) defaults to the layout's next kernel compute ring
        doorbell (mec_ring0 + n); it must lie inside the MEC doorbell range."""
        if self.dev is None or not self.mec_enabled:
            raise GFXError(f"{self.bdf}: create_compute_queue before GFX.init (or after fini/suspend): the MEC is "
                           f"halted")
        if not 0 <= pipe < PIPES_PER_MEC or not 0 <= queue < QUEUES_PER_PIPE:
            raise GFXError(f"{self.bdf}: MEC1 has pipes 0..{PIPES_PER_MEC - 1} and queues 0..{QUEUES_PER_PIPE - 1}; "
                           f"got pipe {pipe} queue {queue}")
        if ring_size < PAGE or ring_size & (ring_size - 1):
            raise GFXError(f"{self.bdf}: ring size {ring_size:#x} must be a power of two of at least {PAGE:#x} bytes "
                           f"(CP_HQD_PQ_CONTROL.QUEUE_SIZE is log2(dwords) - 1)")
        with self._lock:
            for q in self.queues:
                if (q.pipe, q.queue) == (pipe, queue):
                    raise GFXError(f"{self.bdf}: MEC1 pipe {pipe} queue {queue} already holds a queue; destroy it "
                                   f"first or pick another (pipe, queue)")
            if doorbell_index is None:
                used = {q.doorbell_index for q in self.queues}
                free = [d for d in self.layout.mec_rings if d not in used]
                if not free:
                    raise GFXError(f"{self.bdf}: all {len(self.layout.mec_rings)} kernel compute doorbells are in use; "
                                   f"pass doorbell_index from the user-queue range "
                                   f"{self.layout.userqueue_start:#x}..{self.layout.userqueue_end:#x}")
                doorbell_index = free[0]
            lo, hi = self.layout.kiq, self.layout.userqueue_end
            if not lo <= doorbell_index <= hi:
                raise GFXError(f"{self.bdf}: doorbell {doorbell_index:#x} is outside the MEC doorbell range "
                               f"{lo:#x}..{hi:#x} (CP_MEC_DOORBELL_RANGE): the CP would never see it")
            if any(q.doorbell_index == doorbell_index for q in self.queues):
                raise GFXError(f"{self.bdf}: doorbell {doorbell_index:#x} is already used by another queue")
            size = RING_OFF + ring_size
            buf = self.dev.pci.dma_alloc(size)
            try:
                ctypes.memset(buf.host_addr, 0, RING_OFF)  # MQD, EOP and pointers start at zero
                va = self._alloc_va(size)
                self._map(va, buf)
            except BaseException:
                self.dev.pci.dma_free(buf)
                raise
            mqd_cls = _mqd_struct(self.gen)
            mqd = mqd_cls.from_address(buf.host_addr + MQD_OFF)
            q = ComputeQueue(me=MEC_ME, pipe=pipe, queue=queue, doorbell_index=doorbell_index,
                             doorbell_offset=self.layout.byte_offset(doorbell_index), ring_va=va + RING_OFF,
                             ring_size=ring_size, rptr_va=va + RPTR_OFF, wptr_va=va + WPTR_OFF, eop_va=va + EOP_OFF,
                             mqd_va=va + MQD_OFF, va=va, buffer=buf, mqd=mqd,
                             ring=(ctypes.c_uint8 * ring_size).from_address(buf.host_addr + RING_OFF),
                             doorbells=getattr(self.dev, "doorbells", None))
            self._fill_mqd(q, priority, queue_priority)
            self._program_hqd(q)
            self.queues.append(q)
            log.info("%s: compute queue me %d pipe %d queue %d, doorbell %#x, ring %#x bytes at VA %#x", self.bdf,
                     q.me, pipe, queue, doorbell_index, ring_size, q.ring_va)
            return q

    def _fill_mqd(self, q: ComputeQueue, pipe_priority: int, queue_priority: int) -> None:
        """gfx_v11_0_compute_mqd_init (gfx_v12_0_compute_mqd_init is the same for these fields)."""
        m = q.mqd
        m.header = MQD_HEADER
        m.compute_pipelinestat_enable = 1
        for se in range(4):
            setattr(m, f"compute_static_thread_mgmt_se{se}", 0xFFFFFFFF)
        m.compute_misc_reserved = 0x7
        eop = q.eop_va >> 8
        m.cp_hqd_eop_base_addr_lo, m.cp_hqd_eop_base_addr_hi = eop & 0xFFFFFFFF, eop >> 32
        # register value is 2^(EOP_SIZE+1) dwords
        m.cp_hqd_eop_control = self._enc("CP_HQD_EOP_CONTROL", CP_HQD_EOP_CONTROL_DEFAULT,
                                         EOP_SIZE=_order_base_2(MEC_HPD_SIZE // 4) - 1)
        m.cp_hqd_dequeue_request = 0
        m.cp_hqd_pq_rptr = 0
        m.cp_hqd_pq_wptr_lo = m.cp_hqd_pq_wptr_hi = 0
        m.cp_mqd_base_addr_lo = q.mqd_va & 0xFFFFFFFC
        m.cp_mqd_base_addr_hi = q.mqd_va >> 32
        m.cp_mqd_control = self._enc("CP_MQD_CONTROL", CP_MQD_CONTROL_DEFAULT, VMID=0)
        base = q.ring_va >> 8
        m.cp_hqd_pq_base_lo, m.cp_hqd_pq_base_hi = base & 0xFFFFFFFF, base >> 32
        m.cp_hqd_pq_control = self._enc("CP_HQD_PQ_CONTROL", CP_HQD_PQ_CONTROL_DEFAULT,
                                        QUEUE_SIZE=_order_base_2(q.ring_size // 4) - 1,
                                        RPTR_BLOCK_SIZE=_order_base_2(GPU_PAGE_SIZE // 4) - 1,
                                        UNORD_DISPATCH=1, TUNNEL_DISPATCH=0, PRIV_STATE=1, KMD_QUEUE=1)
        m.cp_hqd_pq_rptr_report_addr_lo = q.rptr_va & 0xFFFFFFFC
        m.cp_hqd_pq_rptr_report_addr_hi = (q.rptr_va >> 32) & 0xFFFF
        m.cp_hqd_pq_wptr_poll_addr_lo = q.wptr_va & 0xFFFFFFFC
        m.cp_hqd_pq_wptr_poll_addr_hi = (q.wptr_va >> 32) & 0xFFFF
        # the kernel's ring->doorbell_index is in dwords (64-bit index << 1)
        m.cp_hqd_pq_doorbell_control = self._enc("CP_HQD_PQ_DOORBELL_CONTROL", CP_HQD_PQ_DOORBELL_CONTROL_DEFAULT,
                                                 DOORBELL_OFFSET=self.layout.dword(q.doorbell_index), DOORBELL_EN=1,
                                                 DOORBELL_SOURCE=0, DOORBELL_HIT=0)
        m.cp_hqd_pq_rptr = CP_HQD_PQ_RPTR_DEFAULT
        m.cp_hqd_vmid = 0
        m.cp_hqd_persistent_state = self._enc("CP_HQD_PERSISTENT_STATE", CP_HQD_PERSISTENT_STATE_DEFAULT,
                                              PRELOAD_SIZE=0x55)
        m.cp_hqd_ib_control = self._enc("CP_HQD_IB_CONTROL", CP_HQD_IB_CONTROL_DEFAULT, MIN_IB_AVAIL_SIZE=3)
        m.cp_hqd_pipe_priority = pipe_priority
        m.cp_hqd_queue_priority = queue_priority
        m.cp_hqd_active = 1  # prop->hqd_active: the direct path activates it at once

    def _select_queue(self, q: ComputeQueue) -> None:
        self.grbm_select(q.me, q.pipe, q.queue, 0)

    def _program_hqd(self, q: ComputeQueue) -> None:
        """soc21_grbm_select(me, pipe, queue, 0); gfx_v11_0_kiq_init_register's writes; select (0, 0, 0, 0)."""
        m = q.mqd
        with self._lock:
            self._select_queue(q)
            try:
                poll = self._read("CP_PQ_WPTR_POLL_CNTL")
                self._write("CP_PQ_WPTR_POLL_CNTL", self._enc("CP_PQ_WPTR_POLL_CNTL", poll, EN=0))  # no wptr polling
                self._write("CP_HQD_EOP_BASE_ADDR", m.cp_hqd_eop_base_addr_lo)
                self._write("CP_HQD_EOP_BASE_ADDR_HI", m.cp_hqd_eop_base_addr_hi)
                self._write("CP_HQD_EOP_CONTROL", m.cp_hqd_eop_control)
                self._write("CP_HQD_PQ_DOORBELL_CONTROL", m.cp_hqd_pq_doorbell_control)
                if self._read("CP_HQD_ACTIVE") & 1:  # a queue left active in this slot: dequeue it first
                    self._dequeue_selected(q)
                    self._write("CP_HQD_DEQUEUE_REQUEST", m.cp_hqd_dequeue_request)
                    self._write("CP_HQD_PQ_RPTR", m.cp_hqd_pq_rptr)
                    self._write("CP_HQD_PQ_WPTR_LO", m.cp_hqd_pq_wptr_lo)
                    self._write("CP_HQD_PQ_WPTR_HI", m.cp_hqd_pq_wptr_hi)
                self._write("CP_MQD_BASE_ADDR", m.cp_mqd_base_addr_lo)
                self._write("CP_MQD_BASE_ADDR_HI", m.cp_mqd_base_addr_hi)
                self._write("CP_MQD_CONTROL", m.cp_mqd_control)
                self._write("CP_HQD_PQ_BASE", m.cp_hqd_pq_base_lo)
                self._write("CP_HQD_PQ_BASE_HI", m.cp_hqd_pq_base_hi)
                self._write("CP_HQD_PQ_CONTROL", m.cp_hqd_pq_control)
                self._write("CP_HQD_PQ_RPTR_REPORT_ADDR", m.cp_hqd_pq_rptr_report_addr_lo)
                self._write("CP_HQD_PQ_RPTR_REPORT_ADDR_HI", m.cp_hqd_pq_rptr_report_addr_hi)
                self._write("CP_HQD_PQ_WPTR_POLL_ADDR", m.cp_hqd_pq_wptr_poll_addr_lo)
                self._write("CP_HQD_PQ_WPTR_POLL_ADDR_HI", m.cp_hqd_pq_wptr_poll_addr_hi)
                lo, hi = self.layout.mec_range_bytes()  # use_doorbell: the MEC range again, as the kernel does
                self._write("CP_MEC_DOORBELL_RANGE_LOWER", lo)
                self._write("CP_MEC_DOORBELL_RANGE_UPPER", hi)
                self._write("CP_HQD_PQ_DOORBELL_CONTROL", m.cp_hqd_pq_doorbell_control)
                self._write("CP_HQD_PQ_WPTR_LO", m.cp_hqd_pq_wptr_lo)
                self._write("CP_HQD_PQ_WPTR_HI", m.cp_hqd_pq_wptr_hi)
                self._write("CP_HQD_VMID", m.cp_hqd_vmid)
                self._write("CP_HQD_PERSISTENT_STATE", m.cp_hqd_persistent_state)
                self._write("CP_HQD_ACTIVE", m.cp_hqd_active)  # activate the queue
                self._write("CP_PQ_STATUS", self._enc("CP_PQ_STATUS", self._read("CP_PQ_STATUS"), DOORBELL_ENABLE=1))
            finally:
                self.grbm_select()
        q.active = True

    def _dequeue_selected(self, q: ComputeQueue) -> None:
        """CP_HQD_DEQUEUE_REQUEST = 1 and a bounded wait for CP_HQD_ACTIVE to clear (the bank is selected)."""
        self._write("CP_HQD_DEQUEUE_REQUEST", 1)
        deadline = time.monotonic() + self.dequeue_timeout
        while self._read("CP_HQD_ACTIVE") & 1:
            if time.monotonic() >= deadline:
                raise GFXError(f"{self.bdf}: MEC1 pipe {q.pipe} queue {q.queue} stayed active "
                               f"{self.dequeue_timeout:.3f} s after CP_HQD_DEQUEUE_REQUEST: the MEC is hung or halted; "
                               f"a cold boot (reset) clears it")
            self._sleep(POLL_S)

    def _dequeue(self, q: ComputeQueue) -> None:
        with self._lock:
            self._select_queue(q)
            try:
                if self._read("CP_HQD_ACTIVE") & 1:
                    self._dequeue_selected(q)
                self._write("CP_HQD_DEQUEUE_REQUEST", 0)
            finally:
                self.grbm_select()
        q.active = False

    def destroy_compute_queue(self, q: ComputeQueue) -> None:
        """Dequeue `q`, unmap its memory and free it."""
        with self._lock:
            if q not in self.queues:
                raise GFXError(f"{self.bdf}: compute queue pipe {q.pipe} queue {q.queue} is not one of this block's")
            try:
                if q.active:
                    self._dequeue(q)
            finally:
                self.queues.remove(q)
                gmc = getattr(self.dev, "gmc", None)
                if gmc is not None:
                    gmc.unmap(q.va, RING_OFF + q.ring_size)
                self.dev.pci.dma_free(q.buffer)

    def describe(self) -> dict[str, Any]:
        """The block's state as plain data."""
        return dict(gen=self.gen, rs64=self.rs64, mec_enabled=self.mec_enabled,
                    queues=[q.describe() for q in self.queues])

    def __repr__(self) -> str:
        return f"GFX({self.bdf}, gfx{self.gen}, {len(self.queues)} queue(s), mec {'on' if self.mec_enabled else 'off'})"


def _mqd_struct(gen: int) -> Any:
    """The compute MQD struct of a GFX generation (autogen v11_structs.h / v12_structs.h bindings)."""
    if gen == 11:
        from autogen.mqd_v11 import struct_v11_compute_mqd
        return struct_v11_compute_mqd
    from autogen.mqd_v12 import struct_v12_compute_mqd
    return struct_v12_compute_mqd


__all__ = ["ComputeQueue", "GFX", "GFXError", "MEC_HPD_SIZE"]
