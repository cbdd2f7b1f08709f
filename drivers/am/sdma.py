"""The system DMA engines (SDMA), driver side: queue 0 (the kernel's "gfx" ring) of each SDMA instance, set up for
the AM HCQ device to submit SDMA packets to.

The order and values are amdgpu's (linux 6.12) for firmware loaded by the PSP (drivers/am/psp.py loads the SDMA
image; nothing is loaded here): sdma_v6_0.c (SDMA 6.x, gfx11) and sdma_v7_0.c (SDMA 7.x, gfx12) `start` (unhalt the
engines, context-empty interrupt on; v7's ctx_switch_enable is empty), `gfx_resume` for queue 0 of every instance
(SEM_WAIT_FAIL_TIMER_CNTL 0 on v6, RB_CNTL size and RB_PRIV, pointers 0, the wptr poll address, the rptr writeback
address, RPTR_WRITEBACK_ENABLE, WPTR_POLL_ENABLE 0, F32_WPTR_POLL_ENABLE / MCU_WPTR_POLL_ENABLE 1, the ring base,
MINOR_PTR_UPDATE around the wptr write, the doorbell and its offset, the NBIO's SDMA doorbell range for instance 0,
the hang watchdog, UTCL1_CNTL RESP_MODE 3 / REDO_DELAY 9, the UTCL1_PAGE cache policies, unhalt, RB_ENABLE,
IB_ENABLE), and `hw_fini` (context-empty interrupt off, rings and IBs off, engines halted). Register offsets:
sdma_v6_0_get_reg_offset / sdma_v7_0_get_reg_offset put SDMA1 at +0x600 and SDMA1's F32/MCU_CNTL at +0x20; the
generated SDMA1_* names (gc_11_0_0 / gc_12_0_0) carry those offsets, so each instance's registers are named directly.

Decisions that differ from amdgpu:
- Before programming, every instance is stopped and halted (sdma_v6_0_enable(false), i.e. what hw_fini leaves):
  amdgpu starts from a card its own hw_fini or a reset left halted; a warm-booted card here may still have an
  enabled ring pointing at a previous process's freed memory.
- The ring lives in system memory (a DMA buffer) mapped into the process VM at `ring_va` + instance * RING_VA_STRIDE
  (PTE_SYSTEM | PTE_SNOOPED, as drivers/am/ih.py maps its ring), followed in the same buffer by the rptr writeback
  and the wptr poll slot (amdgpu takes both from its writeback page). The SDMA reaches memory through the GFXHUB
  (sdma_v6_0_sw_init: ring->vm_hub = AMDGPU_GFXHUB(0)), which the GFX block enables; `enable_gfxhub=True` enables it
  here when no GFX block has yet, otherwise a missing GFXHUB is reported in `warnings`.
- The ring test (amdgpu_ring_test_helper) is not run here: it needs the engine to execute packets; the HCQ device's
  first submission is the test.
- Ring size: `ring_size` bytes (power of two, default 64 KiB); amdgpu_ring_init gives its SDMA gfx ring
  roundup_pow_of_two(1024 dwords * 4 * amdgpu_sched_hw_submission (2)) = 8 KiB; HCQ submissions want more room.
"""
from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass, field
from typing import Any, Optional

from drivers.am.regs import Reg
from drivers.pci.interface import DMABuffer
from hcq.errors import HCQError

log = logging.getLogger(__name__)

PAGE = 4096
DEFAULT_RING_SIZE = 64 * 1024
MIN_RING_SIZE = 256
MAX_RING_SIZE = 1 << 22  # RB_SIZE is 5 bits of log2(dwords); 4 MiB keeps the ring one reasonable DMA buffer
DEFAULT_RING_VA = 0xFFFF_4000_0000  # SDMA rings in the process VM (the IH ring sits at 0xFFFF_0000_0000)
RING_VA_STRIDE = 0x100_0000  # 16 MiB between instances' rings
RPTR_WB_OFFSET, WPTR_POLL_OFFSET = 0, 64  # in the page after the ring: separate cache lines, 8 bytes each
CACHE_READ_POLICY_L2_DEFAULT = 2  # sdma_common.h CACHE_READ_POLICY_L2__DEFAULT = __NOA
CACHE_WRITE_POLICY_L2_DEFAULT = 3  # sdma_common.h CACHE_WRITE_POLICY_L2__DEFAULT = __BYPASS
UTCL1_PAGE_KEEP = 0xFF0FFF  # sdma_v6_0_gfx_resume: "clean read policy and write policy bits"
USEC_TIMEOUT = 100000  # amdgpu.h AMDGPU_MAX_USEC_TIMEOUT: adev->usec_timeout
QUEUE_HANG_COUNT = max(USEC_TIMEOUT // 100000, 1)  # sdma_v6_0_gfx_resume: watchdog, 100 ms per unit
UTCL1_RESP_MODE, UTCL1_REDO_DELAY = 3, 9  # sdma_v6_0_gfx_resume: "Set up RESP_MODE to non-copy addresses"


class SDMAError(HCQError):
    """The SDMA block could not be set up or used; the message names the instance, register or step, and what to
    do."""


@dataclass
class SDMAQueue:
    """Queue 0 of one SDMA instance as programmed: what the AM HCQ device needs to submit to it.

    `ring` is the CPU view of the ring (a writable memoryview of `ring_size` bytes); `ring_va` the GPU address the
    engine reads it at; `rptr_va` / `wptr_va` the GPU addresses of the rptr writeback and the wptr poll slot, and
    `rptr_host` / `wptr_host` their CPU addresses (64-bit little-endian, in BYTES, as the SDMA counts: amdgpu keeps
    ring->wptr in dwords and writes wptr << 2). `doorbell_index` is the dword doorbell index the engine was given
    (SDMA0_QUEUE0_DOORBELL_OFFSET.OFFSET), `doorbell_offset` its byte offset in the doorbell BAR (`doorbell_bar`), and
    `wptr` the last write pointer submitted (bytes, not wrapped: the SDMA's 64-bit pointer keeps counting)."""
    instance: int
    ring: memoryview
    ring_size: int
    ring_va: int
    rptr_va: int
    wptr_va: int
    rptr_host: int
    wptr_host: int
    doorbell_index: int
    doorbell_offset: int
    doorbell_bar: int = 2
    wptr: int = 0
    buf: Optional[DMABuffer] = field(default=None, repr=False)
    _doorbells: Any = field(default=None, repr=False)

    def read_rptr(self) -> int:
        """The engine's read pointer in bytes from the writeback slot (sdma_v6_0_ring_get_rptr reads it, >> 2 for
        dwords)."""
        return ctypes.c_uint64.from_address(self.rptr_host).value

    def read_wptr_shadow(self) -> int:
        """The wptr poll slot (bytes), what sdma_v6_0_ring_get_wptr reads."""
        return ctypes.c_uint64.from_address(self.wptr_host).value

    def submit(self, wptr_bytes: int) -> None:
        """Publish a new write pointer (bytes): store it in the wptr poll slot, then write it to the doorbell as one
        64-bit value (sdma_v6_0_ring_set_wptr's doorbell path: atomic64_set, then WDOORBELL64)."""
        if wptr_bytes & 3 or wptr_bytes < 0:
            raise SDMAError(f"SDMA{self.instance}: wptr {wptr_bytes:#x} must be a non-negative multiple of 4 bytes "
                            f"(the SDMA counts whole dwords in bytes)")
        if self._doorbells is None:
            raise SDMAError(f"SDMA{self.instance}: no doorbell BAR mapping; the device must have BAR2 mapped "
                            f"(AMDevice.doorbells) to submit")
        ctypes.c_uint64.from_address(self.wptr_host).value = wptr_bytes
        self.wptr = wptr_bytes
        host = getattr(self._doorbells, "host_addr", None)
        if host:
            ctypes.c_uint64.from_address(host + self.doorbell_offset).value = wptr_bytes  # one 64-bit store
        else:
            self._doorbells.write(self.doorbell_offset, wptr_bytes.to_bytes(8, "little"))

    def as_dict(self) -> dict[str, Any]:
        """The queue as plain data (describe, --json)."""
        return dict(instance=self.instance, ring_size=self.ring_size, ring_va=f"{self.ring_va:#x}",
                    rptr_va=f"{self.rptr_va:#x}", wptr_va=f"{self.wptr_va:#x}", doorbell_index=self.doorbell_index,
                    doorbell_offset=f"{self.doorbell_offset:#x}", doorbell_bar=self.doorbell_bar, wptr=self.wptr)


class SDMA:
    """The SDMA engines of one AM device (see the module docstring for what is programmed).

    `init(dev)` takes an opened AMDevice with its GMC (dev.gmc) initialised, the PSP having loaded the SDMA firmware;
    it halts and stops every instance, unhalts them (start), and with `queues=True` (default) creates queue 0 of each
    instance (`create_queue`). After init: `version` (SDMA major, 6 or 7), `num_instances`, `queues` {instance:
    SDMAQueue}, `warnings`. `fini()` stops and halts the engines and frees the rings; `suspend()` stops and halts
    them keeping the rings; `resume()` starts them again and reprograms every queue with its pointers at 0."""

    def __init__(self, *, ring_size: int = DEFAULT_RING_SIZE, ring_va: int = DEFAULT_RING_VA, queues: bool = True,
                 enable_gfxhub: bool = False):
        if ring_size & (ring_size - 1) or not MIN_RING_SIZE <= ring_size <= MAX_RING_SIZE:
            raise SDMAError(f"SDMA ring size {ring_size:#x} must be a power of two from {MIN_RING_SIZE} bytes to "
                            f"{MAX_RING_SIZE >> 20} MiB (RB_CNTL.RB_SIZE holds log2 of the size in dwords)")
        if ring_va % PAGE:
            raise SDMAError(f"SDMA ring VA {ring_va:#x} must be 4 KiB aligned")
        self.ring_size, self.ring_va_base = ring_size, ring_va
        self.make_queues, self.enable_gfxhub = queues, enable_gfxhub
        self.dev: Any = None
        self.version = 0
        self.num_instances = 0
        self.queues: dict[int, SDMAQueue] = {}
        self.warnings: list[str] = []
        self.state = "off"
        self._mapped: dict[int, tuple[int, int]] = {}  # instance -> (va, size) mapped in the GMC

    # --- registers ---
    def _reg(self, instance: int, name: str) -> Reg:
        """SDMA<instance>_<name> in the GC block (the generated SDMA1 names carry sdma_v6_0_get_reg_offset's
        offsets)."""
        return self.dev.regs.reg("GC", f"SDMA{instance}_{name}")

    def _read(self, instance: int, name: str) -> int:
        return self.dev.regs.read(self._reg(instance, name))

    def _write(self, instance: int, name: str, value: int) -> None:
        self.dev.regs.write(self._reg(instance, name), value)

    def _rmw(self, instance: int, name: str, **fields: int) -> int:
        """Read, REG_SET_FIELD each field, write; returns the value written."""
        r = self._reg(instance, name)
        value = r.encode(self.dev.regs.read(r), **fields)
        self.dev.regs.write(r, value)
        return value

    # --- the IP block ---
    def init(self, dev: Any) -> "SDMA":
        """sdma_v6_0_hw_init / sdma_v7_0_hw_init (PSP-loaded firmware): stop and halt, start, then queue 0 of each
        instance."""
        if getattr(dev, "regs", None) is None or getattr(dev, "discovery", None) is None:
            raise SDMAError(f"{getattr(dev, 'bdf', '?')}: the SDMA block needs an opened device (registers and IP "
                            f"discovery); open the AMDevice first")
        self.dev = dev
        try:
            self.version = dev.discovery.version("SDMA0")[0]
        except Exception as e:  # the discovery error names what is missing
            raise SDMAError(f"{dev.bdf}: the IP discovery table gives no SDMA0 block: {e}") from e
        if self.version not in (6, 7):
            raise SDMAError(f"{dev.bdf}: SDMA {self.version}.x is not supported (sdma_v6_0 for gfx11, sdma_v7_0 for "
                            f"gfx12)")
        # adev->sdma.num_instances: the discovered SDMA0 instances, at most the two the doorbell layout assigns
        self.num_instances = max(1, min(len(dev.discovery.active_instances("SDMA0")), 2))
        gmc = getattr(dev, "gmc", None)
        if gmc is None:
            raise SDMAError(f"{dev.bdf}: the SDMA reads its ring through the GPU VM, so the GMC (dev.gmc) must be "
                            f"initialised first (amdgpu's order: GMC, ..., PSP, SDMA)")
        hubs = getattr(gmc, "hub_enabled", None)
        if isinstance(hubs, dict) and not hubs.get("GC", True):
            if self.enable_gfxhub:
                gmc.gfxhub_enable()  # gfx_v11_0_gfxhub_enable: normally the GFX block's hw_init, before SDMA's
            else:
                msg = (f"{dev.bdf}: the GFXHUB is not enabled (no GFX block yet); the SDMA's memory accesses go "
                       f"through it (ring->vm_hub = AMDGPU_GFXHUB(0)), so its queues will not run until it is: "
                       f"bring up GFX first or pass SDMA(enable_gfxhub=True)")
                self.warnings.append(msg)
                log.warning("%s", msg)
        self.hw_fini()  # a warm card may hold an enabled ring from a previous owner (module docstring)
        self.start()
        if self.make_queues:
            try:
                for i in range(self.num_instances):
                    self.create_queue(i)
            except BaseException:
                self.fini()
                raise
        return self

    def start(self) -> None:
        """sdma_v6_0_start / sdma_v7_0_start without direct loading: unhalt the engines, then (v6) the context-empty
        interrupt on (sdma_v6_0_ctxempty_int_enable; v7's ctx_switch_enable is empty)."""
        self._need_init("start")
        self._enable(True)
        if self.version == 6:
            for i in range(self.num_instances):
                self._rmw(i, "CNTL", CTXEMPTY_INT_ENABLE=1)
        self.state = "running"

    def _enable(self, enable: bool) -> None:
        """sdma_v6_0_enable / sdma_v7_0_enable: stop the rings first when disabling, then F32_CNTL.HALT (v6) or
        MCU_CNTL.HALT (v7) on every instance."""
        if not enable:
            self._gfx_stop()
        for i in range(self.num_instances):
            if self.version == 6:
                self._rmw(i, "F32_CNTL", HALT=int(not enable))
            else:
                self._rmw(i, "MCU_CNTL", HALT=int(not enable))

    def _gfx_stop(self) -> None:
        """sdma_v6_0_gfx_stop: RB_ENABLE 0, then IB_ENABLE 0, on queue 0 of every instance."""
        for i in range(self.num_instances):
            self._rmw(i, "QUEUE0_RB_CNTL", RB_ENABLE=0)
            self._rmw(i, "QUEUE0_IB_CNTL", IB_ENABLE=0)

    def hw_fini(self) -> None:
        """sdma_v6_0_hw_fini / sdma_v7_0_hw_fini: context-empty interrupt off (v6), rings off, engines halted."""
        self._need_init("hw_fini")
        if self.version == 6:
            for i in range(self.num_instances):
                self._rmw(i, "CNTL", CTXEMPTY_INT_ENABLE=0)
        self._enable(False)
        self.state = "halted"

    def suspend(self) -> None:
        """sdma_v6_0_suspend: hw_fini; the rings and their mappings stay."""
        if self.dev is None or self.state == "off":
            return
        self.hw_fini()

    def resume(self) -> None:
        """sdma_v6_0_resume: hw_init again; every queue is reprogrammed on its ring with its pointers at 0."""
        self._need_init("resume")
        self.hw_fini()
        self.start()
        for i in sorted(self.queues):
            self._program_queue(self.queues[i])

    def fini(self) -> None:
        """hw_fini, then unmap and free every ring (sdma_v6_0_hw_fini + sw_fini's amdgpu_ring_fini)."""
        if self.dev is None:
            return
        try:
            if self.state != "off":
                self.hw_fini()
        finally:
            for i in list(self.queues):
                self._release(i)
            self.state = "off"

    # --- queues ---
    def create_queue(self, instance: int) -> SDMAQueue:
        """Set up queue 0 of SDMA `instance` on a fresh ring (sdma_v6_0_sw_init's ring + sdma_v6_0_gfx_resume for that
        instance) and return its description. An existing queue of that instance is stopped and replaced."""
        self._need_init("create_queue")
        if not 0 <= instance < self.num_instances:
            raise SDMAError(f"{self.dev.bdf}: SDMA instance {instance} does not exist (this card has "
                            f"{self.num_instances}: 0..{self.num_instances - 1})")
        if instance in self.queues:
            self._rmw(instance, "QUEUE0_RB_CNTL", RB_ENABLE=0)
            self._rmw(instance, "QUEUE0_IB_CNTL", IB_ENABLE=0)
            self._release(instance)
        layout = getattr(getattr(self.dev, "nbio", None), "layout", None)
        if layout is None:
            from drivers.am.nbio import DOORBELLS as layout  # the kernel's soc21/soc24 assignment
        engine = layout.sdma(instance)
        buf = self.dev.pci.dma_alloc(self.ring_size + PAGE)
        try:
            ctypes.memset(buf.host_addr, 0, self.ring_size + PAGE)
            va = self.ring_va_base + instance * RING_VA_STRIDE
            self._map(instance, buf, va)
            wb = self.ring_size  # the writeback page follows the ring
            q = SDMAQueue(instance=instance,
                          ring=memoryview((ctypes.c_char * self.ring_size).from_address(buf.host_addr)).cast("B"),
                          ring_size=self.ring_size, ring_va=va, rptr_va=va + wb + RPTR_WB_OFFSET,
                          wptr_va=va + wb + WPTR_POLL_OFFSET, rptr_host=buf.host_addr + wb + RPTR_WB_OFFSET,
                          wptr_host=buf.host_addr + wb + WPTR_POLL_OFFSET,
                          doorbell_index=layout.dword(engine),  # sdma_v6_0_sw_init: sdma_engine[i] << 1, dwords
                          doorbell_offset=layout.byte_offset(engine), buf=buf,
                          _doorbells=getattr(self.dev, "doorbells", None))
            self.queues[instance] = q
            self._program_queue(q)
        except BaseException:
            self.queues.pop(instance, None)
            self._release_buf(instance, buf)
            raise
        return q

    def _map(self, instance: int, buf: DMABuffer, va: int) -> None:
        """Map the ring and its writeback page at `va` as snooped system memory, one map per bus-contiguous run."""
        from drivers.am.gmc import PTE_READABLE, PTE_SNOOPED, PTE_SYSTEM, PTE_WRITEABLE
        gmc = self.dev.gmc
        flags = PTE_SYSTEM | PTE_SNOOPED | PTE_READABLE | PTE_WRITEABLE
        ps, pages = buf.page_size, buf.bus_pages
        n = (self.ring_size + PAGE) // ps
        start = 0
        try:
            for i in range(1, n + 1):
                if i == n or pages[i] != pages[start] + (i - start) * ps:
                    gmc.map(va + start * ps, pages[start], (i - start) * ps, flags, flush=False)
                    start = i
        except BaseException:
            if start:
                gmc.unmap(va, start * ps)
            raise
        self._mapped[instance] = (va, self.ring_size + PAGE)
        gmc.flush_tlb()

    def _program_queue(self, q: SDMAQueue) -> None:
        """sdma_v6_0_gfx_resume / sdma_v7_0_gfx_resume for queue 0 of one instance (bare metal, doorbell on)."""
        i, v6 = q.instance, self.version == 6
        ctypes.memset(q.rptr_host, 0, 8)
        ctypes.memset(q.wptr_host, 0, 8)
        q.wptr = 0
        if v6:
            self._write(i, "SEM_WAIT_FAIL_TIMER_CNTL", 0)  # v6 only (commented out in sdma_v7_0_gfx_resume)
        rb = self._reg(i, "QUEUE0_RB_CNTL")
        rb_bufsz = (self.ring_size // 4).bit_length() - 1  # order_base_2(ring_size / 4); a power of two here
        rb_cntl = rb.encode(self.dev.regs.read(rb), RB_SIZE=rb_bufsz, RB_PRIV=1)
        self.dev.regs.write(rb, rb_cntl)
        self.dev.regs.write_regs([(self._reg(i, n), 0) for n in ("QUEUE0_RB_RPTR", "QUEUE0_RB_RPTR_HI",
                                                                 "QUEUE0_RB_WPTR", "QUEUE0_RB_WPTR_HI")])
        self.dev.regs.write_regs([
            (self._reg(i, "QUEUE0_RB_WPTR_POLL_ADDR_LO"), q.wptr_va & 0xFFFFFFFF),
            (self._reg(i, "QUEUE0_RB_WPTR_POLL_ADDR_HI"), q.wptr_va >> 32),
            (self._reg(i, "QUEUE0_RB_RPTR_ADDR_HI"), (q.rptr_va >> 32) & 0xFFFFFFFF),
            (self._reg(i, "QUEUE0_RB_RPTR_ADDR_LO"), q.rptr_va & 0xFFFFFFFC),
        ])
        poll = "F32_WPTR_POLL_ENABLE" if v6 else "MCU_WPTR_POLL_ENABLE"  # the field's name per generation
        rb_cntl = rb.encode(rb_cntl, RPTR_WRITEBACK_ENABLE=1, WPTR_POLL_ENABLE=0, **{poll: 1})
        self.dev.regs.write_regs([
            (self._reg(i, "QUEUE0_RB_BASE"), (q.ring_va >> 8) & 0xFFFFFFFF),
            (self._reg(i, "QUEUE0_RB_BASE_HI"), (q.ring_va >> 40) & 0xFFFFFFFF),
            # "before programing wptr to a less value, need set minor_ptr_update first"
            (self._reg(i, "QUEUE0_MINOR_PTR_UPDATE"), 1),
            (self._reg(i, "QUEUE0_RB_WPTR"), 0),  # lower_32_bits(ring->wptr) << 2, ring->wptr = 0
            (self._reg(i, "QUEUE0_RB_WPTR_HI"), 0),
        ])
        self._rmw(i, "QUEUE0_DOORBELL", ENABLE=1)
        self._rmw(i, "QUEUE0_DOORBELL_OFFSET", OFFSET=q.doorbell_index)
        nbio = getattr(self.dev, "nbio", None)
        if i == 0 and nbio is not None and hasattr(nbio, "sdma_doorbell_range"):
            # adev->nbio.funcs->sdma_doorbell_range(adev, 0, true, doorbell_index, sdma_doorbell_range * instances)
            layout = getattr(nbio, "layout", None)
            size = layout.sdma_doorbell_range * self.num_instances if layout is not None else None
            nbio.sdma_doorbell_range(0, True, q.doorbell_index, size)
        elif i == 0:
            msg = (f"{self.dev.bdf}: no NBIO block (dev.nbio): the SDMA doorbell range was not routed; doorbell "
                   f"writes reach the engine only if something else routed S2A entry 2")
            self.warnings.append(msg)
            log.warning("%s", msg)
        self._write(i, "QUEUE0_MINOR_PTR_UPDATE", 0)  # "set minor_ptr_update to 0 after wptr programed"
        self._rmw(i, "WATCHDOG_CNTL", QUEUE_HANG_COUNT=QUEUE_HANG_COUNT)
        self._rmw(i, "UTCL1_CNTL", RESP_MODE=UTCL1_RESP_MODE, REDO_DELAY=UTCL1_REDO_DELAY)
        page = self._reg(i, "UTCL1_PAGE")
        tmp = self.dev.regs.read(page) & UTCL1_PAGE_KEEP
        tmp |= CACHE_READ_POLICY_L2_DEFAULT << 12 | CACHE_WRITE_POLICY_L2_DEFAULT << 14
        if v6:
            tmp |= page.encode(0, LLC_NOALLOC=1)  # SDMA0_UTCL1_PAGE__LLC_NOALLOC_MASK: v6 only
        self.dev.regs.write(page, tmp)
        if v6:  # unhalt engine
            self._rmw(i, "F32_CNTL", HALT=0, TH1_RESET=0)
        else:
            self._rmw(i, "MCU_CNTL", HALT=0, RESET=0)
        self.dev.regs.write(rb, rb.encode(rb_cntl, RB_ENABLE=1))  # enable DMA RB
        self._rmw(i, "QUEUE0_IB_CNTL", IB_ENABLE=1)  # enable DMA IBs

    def _release(self, instance: int) -> None:
        q = self.queues.pop(instance, None)
        if q is not None:
            q.ring.release()
            self._release_buf(instance, q.buf)

    def _release_buf(self, instance: int, buf: Optional[DMABuffer]) -> None:
        mapped = self._mapped.pop(instance, None)
        if mapped is not None:
            self.dev.gmc.unmap(*mapped)
        if buf is not None:
            self.dev.pci.dma_free(buf)

    # --- helpers ---
    def _need_init(self, what: str) -> None:
        if self.dev is None or not self.version:
            raise SDMAError(f"SDMA.{what}: the block is not initialised; call init(dev) with an opened AMDevice first")

    def describe(self) -> dict[str, Any]:
        """The block's state as plain data (gpu_probe, --json)."""
        return dict(version=self.version, state=self.state, instances=self.num_instances,
                    queues={i: q.as_dict() for i, q in sorted(self.queues.items())}, warnings=list(self.warnings))

    def __repr__(self) -> str:
        return f"SDMA({getattr(self.dev, 'bdf', None) or 'unattached'}, v{self.version}, {self.state})"


__all__ = ["SDMA", "SDMAError", "SDMAQueue"]
