"""The emulated AMD command processors (PM4 compute and SDMA), running in their own process.

The parent (the emulated kernel) starts this process with the memory pools' memfds, a control socket and a kick
eventfd. Buffer objects are mapped here at the same virtual addresses the driver uses, so a GPU address means
the same bytes in both processes. A queue runs when its doorbell is written: the doorbell's value is the new
write pointer (the write pointer in memory is never polled, as on gfx11 where amdgpu turns wptr polling off).
Packets are decoded with this module's own reading of the packet formats (never the driver's) and validated
as strictly as the hardware: a violation is a fault naming the queue, where the packet sits and what is wrong
with it, reported to the parent, which turns it into a KFD exception event. Legal waits block, in the ring and
in indirect buffers alike: each queue keeps its place (ring read pointer, the stack of indirect buffers it is
in) and resumes when the wait is satisfied.

Every queue, compute and SDMA alike, runs on its own thread, as engines and queues progress independently on
hardware: a queue blocked on a wait never delays another. A doorbell watcher thread looks at the doorbell page
every 200 us while doorbells ring and backs off to 5 ms when idle; the emulated kernel kicks it (an eventfd) when a
process enters WAIT_EVENTS, so a driver that sleeps on a signal never waits out the back-off.

A DISPATCH_DIRECT starts a kernel that runs asynchronously to the packets after it: only CS_PARTIAL_FLUSH, an
end-of-pipe or shader-done RELEASE_MEM, or a queue with nothing else to do waits for it. Without hazard mode a
dispatch runs at once, deterministically.

Hazard mode (a seed: BAREGPU_EMU_HAZARD, or emulated_system(..., hazard=seed)) exploits every freedom the stream
leaves, driven by one seeded RNG per queue: dispatches no barrier orders run late, in a random order, their
workgroups interleaved in pieces; queues yield at random points between packets; and a cache model: a copy-engine
write into device memory the host cannot map stays invisible to a compute queue's kernels until that queue
invalidates its shader caches with ACQUIRE_MEM. Fault messages name the seed.

Messages are JSON lines on two sockets. Control (parent asks, CP answers each with an ack): map, userptr, unmap,
queue, destroy, stall, delay, poison, counters, quit. Map and userptr are posted instead (no ack): the parent counts
them in a shared word before its ioctl returns, and a queue waits until they are applied before running what a
doorbell brought, so the driver never waits for a mapping and still never meets one missing. Events (CP to
parent): interrupt (a RELEASE_MEM or TRAP with a context id), fault, ready.
"""
from __future__ import annotations

import ctypes
import json
import os
import random
import select
import socket
import sys
import threading
import time
import traceback
from array import array
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from autogen import gc_11_0_0 as gc11
from autogen import gc_12_0_0 as gc12
from autogen import pm4_nvd as nvd
from autogen import sdma_v6 as sd
from autogen import soc21_enum as ev
from compiler import parse_emulation_record
from compiler.toolchain import load_host
from emu.amd.isa.dispatch import isa_launch
from emu.amd.isa.vm import AddressSpace, GPUFault
from emu.gate import MapGate

PROT_RW, MAP_SHARED, MAP_FIXED_NOREPLACE = 3, 0x01, 0x100000
PR_SET_TIMERSLACK = 29  # linux/prctl.h: a thread's sleeps overshoot by up to its timer slack (50 us by default)
PM4_NAMES = {getattr(nvd, f"PACKET3_{n}"): n for n in ("NOP", "SET_SH_REG", "DISPATCH_DIRECT", "WAIT_REG_MEM",
                                                      "WAIT_REG_MEM64", "INDIRECT_BUFFER", "EVENT_WRITE",
                                                      "RELEASE_MEM", "ACQUIRE_MEM")}
# Body lengths of the packets with a fixed size, each as amdgpu (or Mesa/PAL) emits it:
PM4_BODY = {
    nvd.PACKET3_WAIT_REG_MEM: 6,  # gfx_v11_0.c gfx_v11_0_wait_reg_mem: PACKET3(PACKET3_WAIT_REG_MEM, 5)
    nvd.PACKET3_WAIT_REG_MEM64: 8,  # PAL PM4_MEC_WAIT_REG_MEM64: control, addr lo/hi, reference lo/hi, mask lo/hi, poll
    nvd.PACKET3_INDIRECT_BUFFER: 3,  # gfx_v11_0.c gfx_v11_0_ring_emit_ib_compute: PACKET3(PACKET3_INDIRECT_BUFFER, 2)
    nvd.PACKET3_RELEASE_MEM: 7,  # gfx_v11_0.c gfx_v11_0_ring_emit_fence: PACKET3(PACKET3_RELEASE_MEM, 6)
    nvd.PACKET3_ACQUIRE_MEM: 7,  # gfx_v11_0.c gfx_v11_0_emit_mem_sync: PACKET3(PACKET3_ACQUIRE_MEM, 6)
    # gfx_v8_0.c: PACKET3(PACKET3_EVENT_WRITE, 0). (The sampling events that also write memory take three body
    # dwords, PAL PM4_MEC_EVENT_WRITE; they are not emulated, so a pipeline event's one is the only length.)
    nvd.PACKET3_EVENT_WRITE: 1,
    nvd.PACKET3_DISPATCH_DIRECT: 4,  # gfx_v8_0.c gfx_v8_0_do_edc_gpr_workarounds: PACKET3(PACKET3_DISPATCH_DIRECT, 3)
}
# nvd.h EVENT_INDEX comment: "0 - any non-TS event ... 4 - *S_PARTIAL_FLUSH".
EVENT_INDEX_OTHER, EVENT_INDEX_PARTIAL_FLUSH = 0, 4
# EVENT_WRITE events a compute queue runs, with the EVENT_INDEX each takes (soc21_enum.h VGT_EVENT_TYPE numbers).
# CACHE_FLUSH / CACHE_FLUSH_AND_INV_EVENT flush the colour and depth back ends: a compute queue has none to flush.
EVENT_WRITE_EVENTS = {ev.CS_PARTIAL_FLUSH: EVENT_INDEX_PARTIAL_FLUSH, ev.CACHE_FLUSH: EVENT_INDEX_OTHER,
                      ev.CACHE_FLUSH_AND_INV_EVENT: EVENT_INDEX_OTHER}
# RELEASE_MEM: event_index 5 (end of pipe) takes the timestamp events, 6 (shader done) CS_DONE (kfd_pm4_headers_ai.h
# event_index__mec_release_mem__end_of_pipe/shader_done; amdgpu's fences use CACHE_FLUSH_AND_INV_TS_EVENT with 5).
RELEASE_EVENTS = {5: (ev.CACHE_FLUSH_TS, ev.CACHE_FLUSH_AND_INV_TS_EVENT, ev.BOTTOM_OF_PIPE_TS), 6: (ev.CS_DONE,)}
RELEASE_GCR_FIELD = ((1 << 13) - 1) << 12  # PAL gfx11 RELEASE_MEM ordinal2 gcr_cntl: 13 bits from bit 12
RELEASE_GCR_KNOWN = (nvd.PACKET3_RELEASE_MEM_GCR_GLM_WB | nvd.PACKET3_RELEASE_MEM_GCR_GLM_INV |
                     nvd.PACKET3_RELEASE_MEM_GCR_GLV_INV | nvd.PACKET3_RELEASE_MEM_GCR_GL1_INV |
                     nvd.PACKET3_RELEASE_MEM_GCR_GL2_US | 3 << 17 | nvd.PACKET3_RELEASE_MEM_GCR_GL2_DISCARD |
                     nvd.PACKET3_RELEASE_MEM_GCR_GL2_INV | nvd.PACKET3_RELEASE_MEM_GCR_GL2_WB |
                     3 * nvd.PACKET3_RELEASE_MEM_GCR_SEQ)  # nvd.h bits; GL2_RANGE and SEQ are 2-bit fields
# RELEASE_MEM ordinal2 outside EVENT_TYPE[5:0], EVENT_INDEX[11:8], GCR, CACHE_POLICY[26:25] and EXECUTE[28] (nvd.h)
RELEASE_DW0_RESERVED = 0xFFFFFFFF & ~(0x3F | 0xF << 8 | RELEASE_GCR_FIELD | 3 << 25 | 1 << 28)
# RELEASE_MEM ordinal3: DST_SEL[17:16], INT_SEL[26:24], DATA_SEL[31:29] (nvd.h); bits 23:20 carry MES notification
# fields on MES-scheduled queues (kfd_pm4_headers_ai.h mes_intr_pipe / mes_action_id), not emulated; the rest reserved.
RELEASE_DW1_MES = 0xF << 20
RELEASE_DW1_RESERVED = 0xFFFFFFFF & ~(3 << 16 | RELEASE_DW1_MES | 7 << 24 | 7 << 29)


def _gcr_shift(fn: Any) -> int:
    return fn(1).bit_length() - 1


# ACQUIRE_MEM GCR_CNTL fields (nvd.h PACKET3_ACQUIRE_MEM_GCR_CNTL_*, "GCR_CNTL [18:0]"): the 2-bit ones and their
# values that select a range of addresses (COHER_BASE/SIZE), which is not emulated, or are reserved.
GCR_GLI_INV = _gcr_shift(nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GLI_INV)  # 0 NOP, 1 ALL, 2 RANGE, 3 FIRST_LAST
GCR_GL1_RANGE = _gcr_shift(nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL1_RANGE)  # 0 ALL, 1 reserved, 2 RANGE, 3 FIRST_LAST
GCR_GL2_RANGE = _gcr_shift(nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_GL2_RANGE)  # 0 ALL, 1 VOL, 2 RANGE, 3 FIRST_LAST
GCR_SEQ = _gcr_shift(nvd.PACKET3_ACQUIRE_MEM_GCR_CNTL_SEQ)  # 0 PARALLEL, 1 FORWARD, 2 REVERSE (3 undefined)
GCR_BITS = {n: _gcr_shift(getattr(nvd, f"PACKET3_ACQUIRE_MEM_GCR_CNTL_{n}"))
            for n in ("GLV_INV", "GL1_INV", "GL2_INV", "GLK_INV")}
# A copy-engine write reaches a kernel's vector loads through GL0 (GLV), GL1 and GL2, its scalar loads through GLK,
# GL1 and GL2: invalidating all four is what makes it visible (the set amdgpu's gfx_v11_0_emit_mem_sync invalidates).
ACQUIRE_VISIBLE = sum(1 << s for s in GCR_BITS.values())
NOP_ONE_DWORD = 0x3FFF  # gfx_v11_0.c: ring->funcs->nop = PACKET3(PACKET3_NOP, 0x3FFF), a header-only NOP
# soc21_enum.h CPF_PERF_SEL_CSF_BUSY_FOR_FETCHING_RING/_IB1/_IB2: the fetcher serves the ring and two IB levels.
MAX_IB_LEVEL = 2
STEP_PACKETS = 256  # packets a queue runs per turn, so a queue that loops (a self-chained IB) lets go of the memory map
SDMA_NAMES = {sd.SDMA_OP_NOP: "NOP", sd.SDMA_OP_COPY: "COPY", sd.SDMA_OP_FENCE: "FENCE", sd.SDMA_OP_TRAP: "TRAP",
              sd.SDMA_OP_POLL_REGMEM: "POLL_REGMEM", sd.SDMA_OP_CONST_FILL: "CONSTANT_FILL",
              sd.SDMA_OP_TIMESTAMP: "TIMESTAMP", sd.SDMA_OP_GCR_REQ: "GCR_REQ"}
SDMA_OPS = {getattr(sd, n): n[len("SDMA_OP_"):] for n in dir(sd)
            if n.startswith("SDMA_OP_") and not n.startswith("SDMA_OP_AQL")}
SDMA_COPY_SUBOPS = {getattr(sd, n): n[len("SDMA_SUBOP_"):] for n in dir(sd) if n.startswith("SDMA_SUBOP_COPY_")}
SDMA_TIMESTAMP_SUBOPS = {sd.SDMA_SUBOP_TIMESTAMP_SET: "TIMESTAMP_SET", sd.SDMA_SUBOP_TIMESTAMP_GET: "TIMESTAMP_GET",
                         sd.SDMA_SUBOP_TIMESTAMP_GET_GLOBAL: "TIMESTAMP_GET_GLOBAL"}
# (op, sub-op) -> packet dwords, for what this engine runs (sdma_v6_0.c emits each; sizes from the SDMA_PKT_* layouts)
SDMA_LENGTHS = {(sd.SDMA_OP_COPY, sd.SDMA_SUBOP_COPY_LINEAR): 7, (sd.SDMA_OP_FENCE, 0): 4, (sd.SDMA_OP_TRAP, 0): 2,
                (sd.SDMA_OP_POLL_REGMEM, 0): 6, (sd.SDMA_OP_CONST_FILL, 0): 5, (sd.SDMA_OP_GCR_REQ, 0): 5,
                (sd.SDMA_OP_TIMESTAMP, sd.SDMA_SUBOP_TIMESTAMP_SET): 3,
                (sd.SDMA_OP_TIMESTAMP, sd.SDMA_SUBOP_TIMESTAMP_GET): 3,
                (sd.SDMA_OP_TIMESTAMP, sd.SDMA_SUBOP_TIMESTAMP_GET_GLOBAL): 3}
# The doorbell watcher looks every DOORBELL_ACTIVE_S while doorbells rang within DOORBELL_ACTIVE_WINDOW_S, then
# backs off (doubling) to DOORBELL_IDLE_S; a WAIT_EVENTS kick makes it look at once. (Shorter active intervals, or
# queues polling their own doorbells, cost the driver's process more CPU on 2 cores than the latency they save.)
DOORBELL_ACTIVE_S, DOORBELL_ACTIVE_WINDOW_S, DOORBELL_IDLE_S = 200e-6, 0.01, 0.005
# A queue blocked on an unsatisfied wait re-reads memory with this back-off; writes by other queues of this process
# and kicks wake it at once, so the back-off only bounds how late a host write is seen.
WAIT_POLL_MIN_S, WAIT_POLL_MAX_S = 20e-6, 0.002
POSTED_TIMEOUT_S = 10.0  # the most a queue waits for the control thread to apply posted mappings
# Hazard mode: per packet, the chance a queue yields (sleeping one of the durations) and the chance it runs a piece
# of a pending dispatch; the most pieces one dispatch's workgroups are cut into; the stale pages a compute queue
# remembers (older ones are dropped: an evicted line reads fresh, which hardware may also do).
HAZARD_YIELD_P, HAZARD_YIELDS_S, HAZARD_PIECE_P, HAZARD_MAX_PIECES = 0.125, (0.0, 0.0, 50e-6, 200e-6), 0.25, 4
HAZARD_STALE_PAGES = 4096
PAGE = 4096
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
for _fn in (_libc.process_vm_readv, _libc.process_vm_writev):
    _fn.restype = ctypes.c_ssize_t
    _fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]


GPU_CLOCK_HZ = 100_000_000  # gfx11/gfx12 timestamps count a 100 MHz reference clock


def gpu_clock() -> int:
    """The GPU timestamp counter: ticks of the reference clock."""
    return time.perf_counter_ns() * GPU_CLOCK_HZ // 1_000_000_000


def _precise_sleeps() -> None:
    """Make this thread's short sleeps short: a 1 ns timer slack instead of the default 50 us."""
    _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


class Fault(Exception):
    """A GPU fault: the queue stops and the parent is told."""

    def __init__(self, kind: str, message: str, va: int | None = None):
        super().__init__(message)
        self.kind, self.va = kind, va


@dataclass
class IBFrame:
    """An indirect buffer the CP is executing: its words (fetched when it was called) and how far it got."""
    addr: int
    words: Any  # array of u32
    level: int  # 1 for a buffer the ring called, 2 for one an IB1 called
    pos: int = 0


class HostLaunch:
    """A started dispatch of a kernel's host build: `workgroups` in its grid, and `run(first, count)` runs workgroups
    [first, first + count) in linear order (x fastest). The host function's signature is
    fn(kernargs, gx, gy, gz, first, count)."""

    def __init__(self, fn: Any, kernargs: int, grid: tuple[int, int, int]):
        self.fn, self.kernargs, self.grid = fn, kernargs, grid
        self.workgroups = grid[0] * grid[1] * grid[2]

    def run(self, first: int, count: int) -> None:
        self.fn(self.kernargs, *self.grid, first, count)


class ISALaunch:
    """A started dispatch on the wave executor (emu/amd/isa): the real machine code, set up from the registers. A
    fault the kernel causes becomes the queue's fault; executed wave-instructions are counted as `isa_instructions`."""

    def __init__(self, cp: "CommandProcessor", q: "Queue", launch: Any):
        self.cp, self.qid, self.launch = cp, q.qid, launch
        self.workgroups = launch.workgroups

    def run(self, first: int, count: int) -> None:
        before = self.launch.instructions
        try:
            self.launch.run(first, count)
        except GPUFault as e:
            raise Fault(e.kind, f"queue {self.qid}: {e}", e.va) from None
        finally:
            self.cp.count("isa_instructions", self.launch.instructions - before)


class UserPages:
    """A userptr range as the wave executor reaches it: through the CP's Memory (process_vm_readv/writev)."""

    def __init__(self, mem: "Memory", va: int):
        self.mem, self.va = mem, va

    def read(self, offset: int, size: int) -> bytes:
        return self.mem.read(self.va + offset, size, "kernel access")

    def write(self, offset: int, data: bytes) -> None:
        self.mem.write(self.va + offset, bytes(data), "kernel access")


@dataclass
class Piece:
    """Workgroups [first, first + count) of a started dispatch that have not run yet."""
    launch: Any
    first: int
    count: int


@dataclass
class Queue:
    """One hardware queue as the CP sees it (addresses are GPU VAs mapped in this process)."""
    qid: int
    kind: str  # "compute" or "sdma"
    ring: int
    ring_size: int  # bytes
    rptr: int  # VA of the u64 read pointer the CP writes
    wptr: int  # VA of the u64 write pointer the driver writes (the CP never reads it: the doorbell carries it)
    doorbell: int  # address of this queue's 8-byte doorbell in the doorbell page
    rptr_value: int = 0  # dwords for compute, bytes for sdma
    wptr_value: int = 0  # the write pointer the last doorbell write carried, in the same units
    doorbell_seen: int = 0  # the doorbell's value when the queue last took it: a change is a doorbell write
    stalled: bool = False
    faulted: bool = False
    dead: bool = False  # destroyed: its thread ends
    waiting: bool = False  # blocked on a wait that is not satisfied yet
    sh_regs: dict[int, int] = field(default_factory=dict)
    gc_base: int = 0
    target: str = ""
    not_before: float = 0.0  # fault injection: the queue runs nothing until this time (a late signal)
    ibs: list[IBFrame] = field(default_factory=list)  # the indirect buffers the queue is inside, outermost first
    ring_ib_len: int = 0  # dwords of the ring's INDIRECT_BUFFER packet, retired when its buffer has run
    local_ts_offset: int = 0  # SDMA TIMESTAMP_SET: the local counter minus the global clock
    wake: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    pending: list[Piece] = field(default_factory=list)  # hazard mode: started dispatches' workgroups not run yet
    rng: random.Random | None = None  # hazard mode only
    vm: AddressSpace = field(default_factory=AddressSpace)  # the wave executor's view of GPU memory
    code_cache: dict = field(default_factory=dict)  # decoded kernels by code address (per queue: queues run in threads)
    setup_cache: dict = field(default_factory=dict)  # decoded dispatch registers (isa_launch's setup_cache)
    stale: dict[int, Any] = field(default_factory=dict)  # hazard mode, compute: page VA -> StalePage


class StalePage:
    """Hazard mode's cache model for one 4 KiB page of one compute queue: the bytes its caches may still hold
    (`old`, the page before the first copy-engine write since the queue last invalidated) where `live` says so."""

    def __init__(self, old: Any, live: Any):
        self.old, self.live = old, live


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class Memory:
    """The buffer objects mapped into this process, for access checks; userptr ranges live in the driver's
    process and are reached with process_vm_readv/writev, as a GPU reaches user pages by DMA.

    The tables are replaced, never changed in place, so queue threads may read them while the control thread
    maps and unmaps. `generation` counts the changes: it goes up after a table is replaced, so a reader that reads
    it first and the tables after sees tables at least that new (the wave executor's maps resync only when it
    moved)."""

    def __init__(self, pools: dict[str, int]):
        self.pools = pools
        self.ranges: dict[int, int] = {}  # va -> size
        self.hidden: dict[int, int] = {}  # va -> size of the VRAM buffers the host cannot map (no PUBLIC flag)
        self.userptr: dict[int, tuple[int, int, int]] = {}  # va -> (size, host address, pid)
        self.remote: dict[int, tuple[int, UserPages]] = {}  # userptr va -> (size, the wave executor's accessor)
        self.poisoned: list[tuple[int, int]] = []  # fault injection: ranges that fault although mapped
        self.generation = 0

    def map(self, va: int, size: int, pool: str, off: int, host: bool = True) -> None:
        ret = _libc.mmap(va, size, PROT_RW, MAP_SHARED | MAP_FIXED_NOREPLACE, self.pools[pool], off)
        if ret != va:
            raise OSError(ctypes.get_errno(), f"cp: cannot map {pool}+{off:#x} at {va:#x} (got {ret})")
        self.ranges = {**self.ranges, va: size}
        if not host:
            self.hidden = {**self.hidden, va: size}
        self.generation += 1

    def unmap(self, va: int) -> None:
        """Drop a mapping; the caller holds the map gate exclusively."""
        size = self.ranges.get(va)
        self.ranges = {k: v for k, v in self.ranges.items() if k != va}
        self.hidden = {k: v for k, v in self.hidden.items() if k != va}
        self.generation += 1
        if size:
            _libc.munmap(va, size)

    def add_userptr(self, va: int, size: int, host: int, pid: int) -> None:
        self.userptr = {**self.userptr, va: (size, host, pid)}
        self.remote = {**self.remote, va: (size, UserPages(self, va))}  # one accessor per mapping: syncs keep it
        self.generation += 1

    def drop_userptr(self, va: int) -> None:
        self.userptr = {k: v for k, v in self.userptr.items() if k != va}
        self.remote = {k: v for k, v in self.remote.items() if k != va}
        self.generation += 1

    def poison(self, va: int, size: int) -> None:
        self.poisoned = self.poisoned + [(va, size)]
        self.generation += 1

    def is_hidden(self, va: int, size: int) -> bool:
        """Whether [va, va+size) lies in VRAM the host cannot map (the cache model tracks only such memory)."""
        return any(start <= va and va + size <= start + n for start, n in self.hidden.items())

    def _user(self, va: int, size: int) -> tuple[int, int] | None:
        for start, (n, host, pid) in self.userptr.items():
            if start <= va and va + size <= start + n:
                return host + (va - start), pid
        return None

    def _vm(self, fn: Any, pid: int, local: int, remote: int, size: int, what: str) -> None:
        lo, ro = _IOVec(local, size), _IOVec(remote, size)
        if fn(pid, ctypes.byref(lo), 1, ctypes.byref(ro), 1, 0) != size:
            raise Fault("page fault", f"{what}: user pages at {remote:#x} of process {pid} are not accessible "
                        f"(errno {ctypes.get_errno()})", remote)

    def read(self, va: int, size: int, what: str) -> bytes:
        """Bytes at a GPU address, wherever they live."""
        user = self._user(va, size)
        if user is None:
            return ctypes.string_at(self.check(va, size, what), size)
        buf = ctypes.create_string_buffer(size)
        self._vm(_libc.process_vm_readv, user[1], ctypes.addressof(buf), user[0], size, what)
        return buf.raw

    def write(self, va: int, data: bytes, what: str) -> None:
        user = self._user(va, len(data))
        if user is None:
            ctypes.memmove(self.check(va, len(data), what), data, len(data))
            return
        buf = ctypes.create_string_buffer(data, len(data))
        self._vm(_libc.process_vm_writev, user[1], ctypes.addressof(buf), user[0], len(data), what)

    def check(self, va: int, size: int, what: str) -> int:
        for start, n in self.poisoned:
            if va < start + n and start < va + size:
                raise Fault("page fault", f"{what} touches [{va:#x}, {va + size:#x}), which faults (injected)", max(va, start))
        for start, n in self.ranges.items():
            if start <= va and va + size <= start + n:
                return va
        raise Fault("page fault", f"{what} touches [{va:#x}, {va + size:#x}) outside every mapped buffer", va)

    def u32(self, va: int, what: str = "read") -> int:
        return int.from_bytes(self.read(va, 4, what), "little")

    def u64(self, va: int, what: str = "read") -> int:
        return int.from_bytes(self.read(va, 8, what), "little")

    def words(self, va: int, count: int, what: str) -> array:
        """`count` dwords at a GPU address (an indirect buffer, say)."""
        return array("I", self.read(va, 4 * count, what))

    def put32(self, va: int, v: int) -> None:
        ctypes.c_uint32.from_address(self.check(va, 4, "write")).value = v & 0xFFFFFFFF

    def put64(self, va: int, v: int) -> None:
        ctypes.c_uint64.from_address(self.check(va, 8, "write")).value = v & 0xFFFFFFFFFFFFFFFF


def _bits(w: int, shift: int, width: int) -> int:
    return (w >> shift) & ((1 << width) - 1)


def _sdma_field(w: list[int] | array, packet: str, name: str) -> int:
    """A field of an SDMA packet, located by the sdma_v6 layout (dword offset, mask, shift)."""
    key = f"SDMA_PKT_{packet}_{name}"
    return (w[getattr(sd, key + "_offset")] >> getattr(sd, key + "_shift")) & getattr(sd, key + "_mask")


# WAIT_REG_MEM_FUNCTION in nvd.h and SDMA POLL_REGMEM's FUNC: 0 always, 1 <, 2 <=, 3 ==, 4 !=, 5 >=, 6 >; 7 reserved.
_COMPARE = {0: lambda v, r: True, 1: lambda v, r: v < r, 2: lambda v, r: v <= r, 3: lambda v, r: v == r,
            4: lambda v, r: v != r, 5: lambda v, r: v >= r, 6: lambda v, r: v > r}


class CommandProcessor:
    """Runs every queue on its own thread, a doorbell watcher, and the control channel to the emulated kernel.

    Counters (the parent's `counters` op): `pm4.X` / `sdma.X` packets executed by name; `doorbells_seen` doorbell
    rewrites a queue took (writes between two looks coalesce, as the value does); `wait_polls` evaluations of a
    wait that was not satisfied yet; `bytes_copied` by SDMA COPY; `dispatches` kernels started, `workgroups` run;
    `kicks` WAIT_EVENTS kicks received; `hazard_yields`, `hazard_stale_pages` (hazard mode). Queue threads update
    them under one lock.
    """

    def __init__(self, sock: socket.socket, ctl: socket.socket, pools: dict[str, int], kick_fd: int | None = None,
                 hazard: int | None = None, host_kernels: bool = False, posted_fd: int | None = None):
        self.sock, self.ctl = sock, ctl  # events to the parent (any thread); control requests and their answers
        self.mem = Memory(pools)
        size = os.fstat(pools["doorbells"]).st_size
        self.doorbells = _libc.mmap(None, size, PROT_RW, MAP_SHARED, pools["doorbells"], 0)
        self.queues: dict[int, Queue] = {}  # replaced, never changed in place (threads iterate it)
        self.programs: dict[int, Any] = {}  # code object base -> host function
        self.counters: dict[str, int] = {}
        if kick_fd is not None and kick_fd >= 1024:
            # select() takes fds below FD_SETSIZE (1024) only, and it is kept for its microsecond timeouts (poll's are
            # milliseconds): the inherited number can be high when the driver's process has many files open.
            low = os.dup(kick_fd)
            os.close(kick_fd)
            kick_fd = low
        self.kick_fd = kick_fd
        self.hazard = hazard
        self.host_kernels = host_kernels  # the fast mode: run the host build a code object carries, not its ISA
        self.gate = MapGate()
        self.hazard_lock = threading.Lock()  # hazard mode: kernels and copy-engine writes one at a time (cache model)
        self._count_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._stopping = False
        self._buf = b""
        # Posted control messages (emu/amd/kfd.py CPLink.post): the emulated kernel's count of those sent, in a
        # shared word, and how many of them the control thread applied.
        self.posted = None if posted_fd is None else ctypes.c_uint64.from_address(
            _libc.mmap(None, PAGE, PROT_RW, MAP_SHARED, posted_fd, 0))
        self.applied = 0
        self._applied_cv = threading.Condition()

    def send(self, **msg: Any) -> None:
        data = (json.dumps(msg) + "\n").encode()
        with self._send_lock:  # every queue thread reports: one message at a time on the socket
            self.sock.sendall(data)

    def count(self, name: str, n: int = 1) -> None:
        with self._count_lock:
            self.counters[name] = self.counters.get(name, 0) + n

    # --- control ---
    def reply(self, **msg: Any) -> None:
        self.ctl.sendall((json.dumps(msg) + "\n").encode())

    def control(self, msg: dict[str, Any]) -> bool:
        if "posted" in msg:  # posted (map, userptr): no answer; queues wait on `applied` instead
            try:
                if msg["op"] not in ("map", "userptr"):
                    raise KeyError(f"{msg['op']} cannot be posted")
                self._control(msg)
            except (Fault, OSError, KeyError) as e:  # the mapping the driver was promised is not there
                self.send(op="fault", qid=None, kind="internal error", va=None,
                          message=f"emulated command processor could not apply posted {msg['op']}: {e}")
            with self._applied_cv:
                self.applied = msg["posted"]
                self._applied_cv.notify_all()
            return True
        try:
            return self._control(msg)
        except (Fault, OSError, KeyError) as e:
            self.reply(op="ack", seq=msg.get("seq"), error=str(e))
            return True

    def await_posted(self) -> None:
        """Before a queue runs what a doorbell brought: every control message the emulated kernel posted before
        it (the shared posted count, read after the doorbell) has been applied here."""
        if self.posted is None:
            return
        want = self.posted.value
        if self.applied >= want:
            return
        with self._applied_cv:
            if not self._applied_cv.wait_for(lambda: self.applied >= want or self._stopping, POSTED_TIMEOUT_S):
                raise Fault("internal error", f"the emulated command processor applied {self.applied} of the {want} "
                            f"mappings posted before this doorbell within {POSTED_TIMEOUT_S:g} s: its control thread "
                            "is stuck (an emulator bug; the queue stops rather than run on missing memory)")

    def _control(self, msg: dict[str, Any]) -> bool:
        op = msg["op"]
        if op == "map":
            self.mem.map(msg["va"], msg["size"], msg["pool"], msg["off"], msg.get("host", True))
        elif op == "userptr":
            self.mem.add_userptr(msg["va"], msg["size"], msg["host"], msg["pid"])
        elif op == "unmap":
            with self.gate.exclusive():  # no queue is inside a packet or a kernel while the pages go
                self.mem.drop_userptr(msg["va"])
                size = self.mem.ranges.get(msg["va"], 0)
                self.mem.unmap(msg["va"])
                self.programs.pop(msg["va"], None)
                for q in self.queues.values():
                    for page in [p for p in q.stale if msg["va"] <= p < msg["va"] + size]:
                        del q.stale[page]
        elif op == "queue":
            q = Queue(msg["qid"], msg["kind"], msg["ring"], msg["ring_size"], msg["rptr"], msg["wptr"],
                      self.doorbells + msg["doorbell_off"], gc_base=msg["gc_base"], target=msg["target"])
            self.mem.check(q.ring, q.ring_size, "ring")
            self.mem.check(q.rptr, 8, "read pointer")
            self.mem.check(q.wptr, 8, "write pointer")
            ctypes.c_uint64.from_address(q.doorbell).value = 0
            if self.hazard is not None:  # one generator per queue: a failing seed replays the same choices
                q.rng = random.Random(self.hazard * 1_000_003 + q.qid)
            q.thread = threading.Thread(target=self.serve, args=(q,), name=f"cp-{q.kind}-{q.qid}", daemon=True)
            self.queues = {**self.queues, q.qid: q}
            q.thread.start()
        elif op == "destroy":
            q = self.queues.get(msg["qid"])
            if q is not None:
                self.queues = {k: v for k, v in self.queues.items() if k != q.qid}
                q.dead = True
                q.wake.set()
                if q.thread is not None:
                    q.thread.join(10.0)  # after the ack the driver frees the ring: the queue must be done with it
        elif op == "stall":
            self.queues[msg["qid"]].stalled = msg.get("on", True)
            self.queues[msg["qid"]].wake.set()
        elif op == "delay":
            self.queues[msg["qid"]].not_before = time.monotonic() + msg["seconds"]
            self.queues[msg["qid"]].wake.set()
        elif op == "poison":
            self.mem.poison(msg["va"], msg["size"])
        elif op == "counters":
            with self._count_lock:
                counters = dict(self.counters)
            self.reply(op="ack", seq=msg.get("seq"), counters=counters)
            return True
        elif op == "quit":
            return False
        if "posted" not in msg:
            self.reply(op="ack", seq=msg.get("seq"))
        return True

    def read_control(self) -> bool:
        """Apply the control messages that arrived (blocking until some do); False once the parent is gone."""
        data = self.ctl.recv(1 << 16)
        if not data:
            return False
        self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            if not self.control(json.loads(line)):
                return False
        return True

    # --- threads ---
    def run(self) -> None:
        """Serve control messages on this thread until quit; queues and the doorbell watcher run on their own."""
        watcher = threading.Thread(target=self.watch, name="cp-doorbells", daemon=True)
        watcher.start()
        self.send(op="ready", pid=os.getpid())
        try:
            while self.read_control():
                pass
        finally:
            self._stopping = True
            for q in self.queues.values():
                q.dead = True
                q.wake.set()

    def watch(self) -> None:
        """The doorbell watcher: wake the queues whose doorbell changed. It looks every DOORBELL_ACTIVE_S while
        doorbells rang lately, backing off to DOORBELL_IDLE_S when idle; a kick (the emulated kernel, when a process
        enters WAIT_EVENTS) makes it look at once and also wakes the queues blocked on waits, since the host may
        have written what they poll."""
        _precise_sleeps()
        interval, active_until = DOORBELL_IDLE_S, 0.0
        while not self._stopping:
            kicked = False
            if self.kick_fd is not None:
                ready, _, _ = select.select([self.kick_fd], [], [], interval)
                if ready:
                    os.eventfd_read(self.kick_fd)
                    kicked = True
                    self.count("kicks")
            else:
                time.sleep(interval)
            rang = False
            for q in self.queues.values():
                if ctypes.c_uint64.from_address(q.doorbell).value != q.doorbell_seen:
                    q.wake.set()
                    rang = True
                elif kicked and q.waiting:
                    q.wake.set()
            now = time.monotonic()
            if rang:
                active_until = now + DOORBELL_ACTIVE_WINDOW_S
            interval = DOORBELL_ACTIVE_S if now < active_until else min(interval * 2, DOORBELL_IDLE_S)

    def notify_writes(self, by: Queue) -> None:
        """A queue wrote memory: queues blocked on a wait look again now instead of at their next poll."""
        for q in self.queues.values():
            if q.waiting and q is not by:
                q.wake.set()

    def serve(self, q: Queue) -> None:
        """A queue's thread: take doorbells and run packets; sleep while there is nothing to run, poll (with a
        back-off) while blocked on a wait."""
        _precise_sleeps()
        poll = WAIT_POLL_MIN_S
        while not q.dead:
            q.wake.clear()  # before looking: a doorbell written while we look wakes the next sleep
            state = self.turn(q)
            if state == "progress":
                poll = WAIT_POLL_MIN_S
                continue
            if state == "wait":
                q.wake.wait(poll)
                poll = min(poll * 2, WAIT_POLL_MAX_S)
            elif state == "held" and not q.stalled:
                q.wake.wait(max(0.0, q.not_before - time.monotonic()))
            else:  # idle, stalled or faulted: until the watcher sees a doorbell, a destroy or the stall ends
                q.wake.wait()

    def turn(self, q: Queue) -> str:
        """Run what the queue can run now: "progress", "wait" (blocked on a wait), "held" (stalled or delayed) or
        "idle" (nothing submitted, or faulted)."""
        if q.faulted:
            return "idle"
        with self.gate.shared():
            try:
                return self._turn(q)
            except Fault as f:
                self.fault(q, f.kind, str(f), f.va)
            except Exception as e:  # an emulator bug: the queue stops and says so, the process lives on
                self.fault(q, "internal error", f"queue {q.qid}: emulated CP error {type(e).__name__}: {e}\n"
                           f"{traceback.format_exc(limit=4)}", None)
        return "idle"

    def _turn(self, q: Queue) -> str:
        self.ring_doorbell(q)
        self.await_posted()  # after reading the doorbell: the mappings posted before it are in place
        if q.stalled or time.monotonic() < q.not_before:
            return "held"
        q.waiting = False
        progressed = self.run_pm4(q) if q.kind == "compute" else self.run_sdma(q)
        if progressed:
            ctypes.c_uint64.from_address(q.rptr).value = q.rptr_value
        elif q.pending:  # the front end has nothing to do (or waits): the started dispatches run to the end
            self.drain(q)
            progressed = True
        if progressed:
            return "progress"
        return "wait" if q.waiting else "idle"

    def fault(self, q: Queue, kind: str, message: str, va: int | None) -> None:
        q.faulted = True
        q.pending.clear()
        if self.hazard is not None:  # a failing seed is the reproducer
            message += f" [hazard seed {self.hazard}]"
        self.send(op="fault", qid=q.qid, kind=kind, message=message, va=va)

    # --- dispatches: started, run later, drained by barriers ---
    def start(self, q: Queue, launch: Any) -> None:
        """A DISPATCH_DIRECT started `launch`: without hazard mode it runs now; in hazard mode its workgroups are
        cut into pieces that run later, interleaved with other pending dispatches' pieces."""
        self.count("dispatches")
        if not launch.workgroups:
            return
        if q.rng is None:
            launch.run(0, launch.workgroups)
            self.count("workgroups", launch.workgroups)
            return
        n = min(launch.workgroups, q.rng.randint(1, HAZARD_MAX_PIECES))
        cuts = sorted(q.rng.sample(range(1, launch.workgroups), n - 1)) if n > 1 else []
        edges = [0] + cuts + [launch.workgroups]
        q.pending += [Piece(launch, a, b - a) for a, b in zip(edges, edges[1:])]

    def run_piece(self, q: Queue) -> None:
        """Hazard mode: run one pending piece, chosen at random."""
        piece = q.pending.pop(q.rng.randrange(len(q.pending)))
        with self.hazard_lock:
            self.with_stale_view(q, lambda: piece.launch.run(piece.first, piece.count))
        self.count("workgroups", piece.count)

    def drain(self, q: Queue) -> None:
        """Every started dispatch of the queue runs to completion (in hazard mode, its pieces in random order)."""
        while q.pending:
            self.run_piece(q)
        self.notify_writes(q)

    def hazard_step(self, q: Queue) -> None:
        """Hazard mode, between two packets: maybe yield to other queues, maybe run a piece of a pending dispatch."""
        rng = q.rng
        if rng.random() < HAZARD_YIELD_P:
            self.count("hazard_yields")
            time.sleep(rng.choice(HAZARD_YIELDS_S))
        if q.pending and rng.random() < HAZARD_PIECE_P:
            self.run_piece(q)

    # --- hazard mode's cache model ---
    def copy_engine_wrote(self, dst: int, size: int) -> None:
        """Hazard mode, before a copy-engine write of [dst, dst+size): for every compute queue, remember the bytes
        its caches may keep serving until it invalidates them. Only VRAM the host cannot map is tracked: no host
        reader may meet the stale bytes a kernel is shown."""
        if not self.mem.is_hidden(dst, size):
            return
        import numpy as np  # hazard mode only: the default CP never loads it
        for q in self.queues.values():
            if q.kind != "compute":
                continue
            for page in range(dst - dst % PAGE, dst + size, PAGE):
                rec = q.stale.get(page)
                if rec is None:
                    if len(q.stale) >= HAZARD_STALE_PAGES:  # evicted: that line reads fresh from now on
                        del q.stale[next(iter(q.stale))]
                    rec = q.stale[page] = StalePage(np.frombuffer(ctypes.string_at(page, PAGE), np.uint8).copy(),
                                                    np.zeros(PAGE, bool))
                    self.count("hazard_stale_pages")
                lo, hi = max(dst, page) - page, min(dst + size, page + PAGE) - page
                rec.live[lo:hi] = True

    def invalidate(self, q: Queue) -> None:
        """The queue's shader caches were invalidated: every earlier copy-engine write is visible to it now."""
        q.stale.clear()

    def with_stale_view(self, q: Queue, run: Any) -> None:
        """Run kernel work while the queue's stale pages show the bytes its caches may still hold; then the pages
        get their current bytes back, except where the kernel stored (those are current for this queue now).
        The caller holds hazard_lock, so no other engine sees the stale bytes meanwhile."""
        if not q.stale:
            run()
            return
        import numpy as np
        shown = []
        for page, rec in q.stale.items():
            view = np.ctypeslib.as_array((ctypes.c_uint8 * PAGE).from_address(page))
            current = view.copy()
            view[rec.live] = rec.old[rec.live]
            shown.append((page, rec, view, current))
        try:
            run()
        finally:
            for page, rec, view, current in shown:
                stored = rec.live & (view != rec.old)
                rec.live &= ~stored
                view[rec.live] = current[rec.live]
                if not rec.live.any():
                    del q.stale[page]

    # --- doorbells and rings ---
    def ring_doorbell(self, q: Queue) -> None:
        """A changed doorbell is a doorbell write, and its value the queue's new write pointer.

        gfx11 MEC takes the write pointer from the doorbell: gfx_v11_0.c gfx_v11_0_kiq_init_register clears
        CP_PQ_WPTR_POLL_CNTL.EN, and gfx_v11_0_compute_mqd_init says the polled address is "only used if" it is set;
        SDMA takes it from the doorbell too (sdma_v6_0.c sdma_v6_0_ring_set_wptr: WDOORBELL64(..., wptr << 2)).
        """
        value = ctypes.c_uint64.from_address(q.doorbell).value
        if value == q.doorbell_seen:
            return
        q.doorbell_seen = value
        self.count("doorbells_seen")  # writes between two looks coalesce into one, as the value does
        unit = 4 if q.kind == "compute" else 1  # compute pointers count dwords, SDMA pointers count bytes
        if value < q.rptr_value or (value - q.rptr_value) * unit > q.ring_size:
            raise Fault("bad packet", f"queue {q.qid}: the doorbell was written with write pointer {value:#x}, "
                        f"{'behind' if value < q.rptr_value else 'more than a ring ahead of'} the read pointer "
                        f"{q.rptr_value:#x} (ring of {q.ring_size:#x} bytes)")
        if q.kind == "sdma" and value % 4:  # sdma_v6_0_ring_set_wptr writes ring->wptr << 2: whole dwords
            raise Fault("bad packet", f"queue {q.qid}: the doorbell was written with write pointer {value:#x}, "
                        "which is not a whole number of dwords (SDMA pointers count bytes)")
        q.wptr_value = value

    def ring_words(self, q: Queue, start: int, count: int) -> list[int]:
        ring_dwords = q.ring_size // 4
        return [ctypes.c_uint32.from_address(q.ring + 4 * ((start + i) % ring_dwords)).value for i in range(count)]

    # --- PM4 ---
    def run_pm4(self, q: Queue) -> bool:
        """Run packets from where the queue is (the innermost indirect buffer, else the ring) until the ring is
        empty, a wait is not yet satisfied, or this turn's budget is spent."""
        progressed = False
        ring: list[int] | None = None
        ring_base = 0
        for _ in range(STEP_PACKETS):
            if q.ibs:
                frame = q.ibs[-1]
                if frame.pos >= len(frame.words):
                    q.ibs.pop()
                    if not q.ibs:  # the ring's INDIRECT_BUFFER retires once everything it called has run
                        q.rptr_value += q.ring_ib_len
                    progressed = True
                    continue
                words, pos, level = frame.words, frame.pos, frame.level
                where = f"IB{level} at {frame.addr:#x} dword {pos:#x}"
            else:
                if q.rptr_value >= q.wptr_value:
                    break
                if ring is None or q.rptr_value - ring_base >= len(ring):
                    ring_base, ring = q.rptr_value, self.ring_words(q, q.rptr_value, q.wptr_value - q.rptr_value)
                words, pos, level = ring, q.rptr_value - ring_base, 0
                where = f"ring dword {q.rptr_value:#x}"
            header = words[pos]
            n = self.pm4_length(q, header, where)
            if pos + n > len(words):
                name = PM4_NAMES.get(_bits(header, 8, 8), "packet")
                if level:
                    raise Fault("bad packet", f"queue {q.qid}: {where}: {name} header {header:#010x} says {n} dwords "
                                f"but the indirect buffer ends after {len(words) - pos}")
                if 4 * n > q.ring_size:
                    raise Fault("bad packet", f"queue {q.qid}: {where}: {name} header {header:#010x} says {n} dwords, "
                                f"more than the {q.ring_size:#x}-byte ring holds")
                break  # the rest of the packet is not submitted yet: the next doorbell brings it
            if q.rng is not None:
                self.hazard_step(q)
            op, body = _bits(header, 8, 8), words[pos + 1:pos + n]
            if op == nvd.PACKET3_INDIRECT_BUFFER:
                self.call_ib(q, body, level, n, where)
                progressed = True
                continue
            if not self.pm4_packet(q, op, body, where):
                self.count("wait_polls")  # a wait not satisfied yet: the queue keeps its place and polls again
                q.waiting = True
                break
            self.count(f"pm4.{PM4_NAMES[op]}")
            if level:
                q.ibs[-1].pos += n
            else:
                q.rptr_value += n
            progressed = True
        return progressed
    def pm4_length(self, q: Queue, header: int, where: str) -> int:
        """Dwords in the packet this header starts; type-2 and other non-type-3 headers fault."""
        kind = header >> 30
        if kind == 2:  # gfx_v11_0.c gfx_v11_0_compute_ring_init: "type-2 packets are deprecated on MEC"
            raise Fault("bad packet", f"queue {q.qid}: {where}: type-2 header {header:#010x}; compute (MEC) queues "
                        "take type-3 packets only (pad with a type-3 NOP)")
        if kind != 3:
            raise Fault("bad packet", f"queue {q.qid}: {where}: header {header:#010x} is type {kind}, not a type-3 "
                        "packet")
        op, count = _bits(header, 8, 8), _bits(header, 16, 14)
        return 1 if op == nvd.PACKET3_NOP and count == NOP_ONE_DWORD else count + 2

    def call_ib(self, q: Queue, b: Any, level: int, n: int, where: str) -> None:
        """INDIRECT_BUFFER: validate it, fetch its words and make it where the queue executes next."""
        def bad(why: str) -> Fault:
            return Fault("bad packet", f"queue {q.qid}: {where}: INDIRECT_BUFFER {why}")
        if len(b) != PM4_BODY[nvd.PACKET3_INDIRECT_BUFFER]:
            raise bad(f"with {len(b)} body dwords; the packet has {PM4_BODY[nvd.PACKET3_INDIRECT_BUFFER]}")
        addr, size = (b[0] & ~3) | b[1] << 32, _bits(b[2], 0, 20)
        chain, valid = _bits(b[2], 20, 1), _bits(b[2], 23, 1)
        if not valid:  # nvd.h INDIRECT_BUFFER_VALID (1 << 23): amdgpu sets it on every IB it emits
            raise bad(f"at {addr:#x} ({size} dwords) has VALID=0 (control {b[2]:#010x})")
        if b[0] & 3:  # gfx_v11_0_ring_emit_ib_compute: the low bits of the address dword are the IB swap mode
            raise bad(f"at {addr:#x} asks for byte swap mode {b[0] & 3}, which little-endian hosts never use")
        new_level = level if level and chain else level + 1  # a chained IB replaces the one it ends, at its level
        if new_level > MAX_IB_LEVEL:
            raise bad(f"at {addr:#x} called from IB{level}: the CP fetches the ring and {MAX_IB_LEVEL} levels of "
                      "indirect buffers, no deeper (a buffer that calls itself ends here)")
        words = self.mem.words(addr, size, f"INDIRECT_BUFFER at {where}")
        self.count("pm4.INDIRECT_BUFFER")
        frame = IBFrame(addr, words, new_level)
        if level == 0:
            q.ring_ib_len = n
            q.ibs.append(frame)
        elif chain:
            q.ibs[-1] = frame
        else:
            q.ibs[-1].pos += n  # the caller resumes after this packet once the callee has run
            q.ibs.append(frame)

    def pm4_packet(self, q: Queue, op: int, b: Any, where: str) -> bool:
        """Execute one packet; False if it is a wait that is not satisfied yet (nothing was consumed)."""
        name = PM4_NAMES.get(op)

        def bad(why: str) -> Fault:
            return Fault("bad packet", f"queue {q.qid}: {where}: {name or f'PM4 opcode {op:#x}'} {why}")
        if name is None:
            raise bad(f"with {len(b)} body dwords is not a packet this CP runs")
        want = PM4_BODY.get(op)
        if want is not None and len(b) != want:
            raise bad(f"with {len(b)} body dwords; the packet has {want}")
        if op == nvd.PACKET3_NOP:
            return True
        if op == nvd.PACKET3_ACQUIRE_MEM:
            self.acquire_mem(q, b, bad)
            return True
        if op == nvd.PACKET3_EVENT_WRITE:
            self.event_write(q, b, bad)
            return True
        if op == nvd.PACKET3_RELEASE_MEM:
            self.release_mem(q, b, bad)
            return True
        if op in (nvd.PACKET3_WAIT_REG_MEM, nvd.PACKET3_WAIT_REG_MEM64):
            return self.wait_reg_mem(op == nvd.PACKET3_WAIT_REG_MEM64, b, bad, where)
        if op == nvd.PACKET3_SET_SH_REG:
            if len(b) < 2:
                raise bad(f"with {len(b)} body dwords: it needs a register offset and at least one value")
            first = nvd.PACKET3_SET_SH_REG_START + _bits(b[0], 0, 16)
            last = first + len(b) - 2
            if last >= nvd.PACKET3_SET_SH_REG_END:  # nvd.h: SH registers are [SET_SH_REG_START, SET_SH_REG_END)
                raise bad(f"writes registers {first:#x}..{last:#x}, past the SH range "
                          f"[{nvd.PACKET3_SET_SH_REG_START:#x}, {nvd.PACKET3_SET_SH_REG_END:#x})")
            for k, v in enumerate(b[1:]):
                q.sh_regs[first + k] = v
            return True
        if op == nvd.PACKET3_DISPATCH_DIRECT:
            self.start(q, self.dispatch(q, b[0], b[1], b[2], b[3]))
            return True
        raise bad("is not a packet this CP runs")

    def event_write(self, q: Queue, b: Any, bad: Any) -> None:
        """EVENT_WRITE: CS_PARTIAL_FLUSH waits until every earlier dispatch of the queue finished; the cache-flush
        events act on the graphics back ends, which a compute queue does not have; other events are not emulated."""
        etype, index = _bits(b[0], 0, 6), _bits(b[0], 8, 4)
        label = ev.VGT_EVENT_TYPE__enumvalues.get(etype, f"event {etype}")
        if etype not in EVENT_WRITE_EVENTS:
            raise bad(f"{label} (EVENT_TYPE {etype}) is not emulated (CS_PARTIAL_FLUSH, CACHE_FLUSH and "
                      "CACHE_FLUSH_AND_INV_EVENT are)")
        if b[0] & ~(0x3F | 0xF << 8):  # nvd.h EVENT_TYPE(x) << 0 (6 bits, soc21_enum.h), EVENT_INDEX(x) << 8
            raise bad(f"{label}: dword {b[0]:#010x} sets bits outside EVENT_TYPE [5:0] and EVENT_INDEX [11:8]")
        if index != EVENT_WRITE_EVENTS[etype]:  # nvd.h: "4 - *S_PARTIAL_FLUSH", "0 - any non-TS event"
            raise bad(f"{label} with EVENT_INDEX {index}; it takes {EVENT_WRITE_EVENTS[etype]}")
        if etype == ev.CS_PARTIAL_FLUSH:
            self.drain(q)

    def acquire_mem(self, q: Queue, b: Any, bad: Any) -> None:
        """ACQUIRE_MEM (gfx10+ layout, nvd.h): GCR_CNTL's cache actions over the whole address space. It does not
        wait for earlier dispatches (that is CS_PARTIAL_FLUSH's job); its invalidations make copy-engine writes
        visible to the queue's later kernels (hazard mode's cache model)."""
        gcr = b[6]
        if b[0]:  # PAL PM4_MEC_ACQUIRE_MEM ordinal2: COHER_CNTL is gfx9's; gfx10+ reserve the dword (amdgpu writes 0)
            raise bad(f"COHER_CNTL {b[0]:#x}: gfx10 and later take cache actions from GCR_CNTL only")
        if b[5] >> 16:  # PAL ordinal7: POLL_INTERVAL [15:0], the rest reserved
            raise bad(f"poll dword {b[5]:#x} sets reserved bits above POLL_INTERVAL [15:0]")
        if gcr >> 19:  # nvd.h ACQUIRE_MEM: "GCR_CNTL [18:0]"
            raise bad(f"GCR_CNTL {gcr:#x} sets reserved bits above 18")
        gli, gl1, gl2, seq = (_bits(gcr, s, 2) for s in (GCR_GLI_INV, GCR_GL1_RANGE, GCR_GL2_RANGE, GCR_SEQ))
        if gl1 == 1 or seq == 3:  # nvd.h: GL1_RANGE "1:reserved"; SEQ is 0 PARALLEL, 1 FORWARD, 2 REVERSE
            raise bad(f"GCR_CNTL {gcr:#x}: {'GL1_RANGE 1' if gl1 == 1 else 'SEQ 3'} is reserved")
        if gli >= 2 or gl1 >= 2 or gl2 >= 2 or gcr & nvd.PACKET3_ACQUIRE_MEM_GCR_RANGE_IS_PA:
            raise bad(f"GCR_CNTL {gcr:#x} asks for ranged cache actions (RANGE / FIRST_LAST / RANGE_IS_PA over "
                      "COHER_BASE/SIZE), which are not emulated: act on the whole address space")
        if gcr & ACQUIRE_VISIBLE == ACQUIRE_VISIBLE:
            self.invalidate(q)

    def release_mem(self, q: Queue, b: Any, bad: Any) -> None:
        """RELEASE_MEM: once every earlier dispatch finished (end of pipe / shader done), do the GCR cache actions,
        then write the data and raise the interrupt."""
        etype, event_index, gcr = _bits(b[0], 0, 6), _bits(b[0], 8, 4), b[0] & RELEASE_GCR_FIELD
        dst_sel, int_sel, data_sel = _bits(b[1], 16, 2), _bits(b[1], 24, 3), _bits(b[1], 29, 3)
        addr = b[2] | b[3] << 32
        if event_index not in RELEASE_EVENTS:  # PAL ME_RELEASE_MEM event_index: 5 end of pipe, 6 shader done
            raise bad(f"event_index {event_index}: a release is an end-of-pipe (5) or shader-done (6) event")
        if etype not in RELEASE_EVENTS[event_index]:
            names = ", ".join(ev.VGT_EVENT_TYPE__enumvalues[e] for e in RELEASE_EVENTS[event_index])
            raise bad(f"event {ev.VGT_EVENT_TYPE__enumvalues.get(etype, etype)} with event_index {event_index}: it "
                      f"takes {names}")
        if b[0] & RELEASE_DW0_RESERVED:
            raise bad(f"dword {b[0]:#010x} sets reserved bits {b[0] & RELEASE_DW0_RESERVED:#x}")
        if gcr & ~RELEASE_GCR_KNOWN:
            raise bad(f"GCR bits {gcr & ~RELEASE_GCR_KNOWN:#x} are reserved (nvd.h PACKET3_RELEASE_MEM_GCR_*)")
        if _bits(b[0], 17, 2):  # GL2_RANGE: ranged write-back needs an address range this packet does not carry
            raise bad(f"GCR GL2_RANGE {_bits(b[0], 17, 2)} (a ranged L2 action) is not emulated")
        if _bits(b[0], 22, 2) == 3:  # SEQ: 0 parallel, 1 forward, 2 reverse (as ACQUIRE_MEM's)
            raise bad("GCR SEQ 3 is reserved")
        if b[1] & RELEASE_DW1_RESERVED:
            raise bad(f"control dword {b[1]:#010x} sets reserved bits {b[1] & RELEASE_DW1_RESERVED:#x}")
        if b[1] & RELEASE_DW1_MES:
            raise bad(f"control dword {b[1]:#010x} asks for a MES notification (bits 23:20), which is not emulated")
        if dst_sel > 1:  # PAL dst_sel: 0 memory controller, 1 TC L2; 2 and 3 write queue registers
            raise bad(f"dst_sel {dst_sel} (a queue register) is not emulated")
        if int_sel > 3:  # PAL int_sel 4-6 send the context id conditionally: not emulated
            raise bad(f"int_sel {int_sel} is not emulated")
        if int_sel == 1 and data_sel:  # nvd.h INT_SEL: "1 - interrupt only (DATA_SEL = 0)"
            raise bad(f"int_sel 1 (interrupt only) with data_sel {data_sel}: it writes no data")
        # PAL PM4_MEC_RELEASE_MEM: address_lo_32b is bits 31:2, address_lo_64b bits 31:3 (the rest reserved)
        align = {1: 4, 2: 8, 3: 8}.get(data_sel)
        if data_sel and align is None:
            raise bad(f"data_sel {data_sel} is not emulated (0 none, 1 32-bit, 2 64-bit, 3 GPU clock are)")
        if align and addr % align:
            raise bad(f"writes {8 * align}-bit data (data_sel {data_sel}) to {addr:#x}, not {align}-byte aligned")
        # End of pipe / shader done: every earlier dispatch of this queue has finished. (Its GCR invalidations have
        # no GLK bit, so the cache model does not count them as making copy-engine writes visible.)
        self.drain(q)
        if data_sel == 1:
            self.mem.write(addr, b[4].to_bytes(4, "little"), "RELEASE_MEM")
        elif data_sel == 2:
            self.mem.write(addr, (b[4] | b[5] << 32).to_bytes(8, "little"), "RELEASE_MEM")
        elif data_sel == 3:
            self.mem.write(addr, gpu_clock().to_bytes(8, "little"), "RELEASE_MEM")
        if data_sel:
            self.notify_writes(q)
        if int_sel:
            self.send(op="interrupt", qid=q.qid, ctxid=b[6])

    def wait_reg_mem(self, wide: bool, b: Any, bad: Any, where: str) -> bool:
        """WAIT_REG_MEM compares 32 bits; WAIT_REG_MEM64 compares 64 (PAL PM4_MEC_WAIT_REG_MEM64)."""
        func, mem_space, operation = _bits(b[0], 0, 3), _bits(b[0], 4, 2), _bits(b[0], 6, 2)
        if mem_space != 1:
            raise bad("on a register (MEM_SPACE 0): user queues wait on memory")
        if operation != 0:  # nvd.h WAIT_REG_MEM_OPERATION: 1 is write/wait/write on registers
            raise bad(f"OPERATION {operation} is not emulated (0, wait, is)")
        if func not in _COMPARE:
            raise bad(f"FUNCTION {func} is reserved (nvd.h WAIT_REG_MEM_FUNCTION: 0-6)")
        addr = b[1] | b[2] << 32
        size = 8 if wide else 4
        if addr % size:  # PAL: mem_poll_addr_lo is bits 31:2 (WAIT_REG_MEM) or 31:3 (WAIT_REG_MEM64)
            raise bad(f"polls {addr:#x}, which is not {size}-byte aligned")
        ref, mask = (b[3] | b[4] << 32, b[5] | b[6] << 32) if wide else (b[3], b[4])
        what = f"{'WAIT_REG_MEM64' if wide else 'WAIT_REG_MEM'} at {where}"
        value = self.mem.u64(addr, what) if wide else self.mem.u32(addr, what)
        return _COMPARE[func](value & mask, ref)

    def reg(self, q: Queue, name: str) -> int:
        gc = gc12 if q.target.startswith("gfx12") else gc11
        return q.sh_regs.get(q.gc_base + getattr(gc, f"regCOMPUTE_{name}"), 0)

    def dispatch(self, q: Queue, gx: int, gy: int, gz: int, initiator: int) -> Any:
        """Start a kernel and return its launch (`.workgroups`, `.run(first, count)`); the caller decides when its
        workgroups run. By default the wave executor runs the machine code COMPUTE_PGM points at, set up from the
        COMPUTE_* registers alone, as the hardware does; in host-kernel mode (the explicit fast mode) the host build
        carried in the code object runs instead."""
        if not initiator & 1:
            raise Fault("bad packet", f"queue {q.qid}: DISPATCH_DIRECT without COMPUTE_SHADER_EN")
        if not self.host_kernels:
            mem = self.mem
            generation = mem.generation  # first: the tables read after it are at least this new
            q.vm.sync(mem.ranges, mem.poisoned, mem.remote, generation)
            # Every register but the user data, as the key of the queue's decoded set-ups (isa_launch)
            user_data = q.gc_base + (gc12 if q.target.startswith("gfx12") else gc11).regCOMPUTE_USER_DATA_0
            regs_key = tuple(kv for kv in q.sh_regs.items() if not user_data <= kv[0] < user_data + 16)
            try:
                launch = isa_launch(q.vm, lambda name: self.reg(q, name), (gx, gy, gz), initiator, q.target,
                                    q.code_cache, q.setup_cache, regs_key)
            except GPUFault as e:
                raise Fault(e.kind, f"queue {q.qid}: {e}", e.va) from None
            return ISALaunch(self, q, launch)
        code = (self.reg(q, "PGM_LO") | (self.reg(q, "PGM_HI") & 0xFF) << 32) << 8
        kernargs = self.reg(q, "USER_DATA_0") | self.reg(q, "USER_DATA_1") << 32
        local = (self.reg(q, "NUM_THREAD_X"), self.reg(q, "NUM_THREAD_Y"), self.reg(q, "NUM_THREAD_Z"))
        fn = self.kernel_at(q, code)
        if tuple(fn.local_size) != local:
            raise Fault("bad packet", f"queue {q.qid}: COMPUTE_NUM_THREAD is {local}, the kernel at {code:#x} was built "
                        f"for {tuple(fn.local_size)}")
        self.mem.check(kernargs, 8, "kernel arguments")
        return HostLaunch(fn, kernargs, (gx, gy, gz))

    def kernel_at(self, q: Queue, code: int) -> Any:
        start = next((va for va, n in self.mem.ranges.items() if va <= code < va + n), None)
        if start is None:
            raise Fault("page fault", f"queue {q.qid}: COMPUTE_PGM points at {code:#x}, outside every buffer", code)
        if start not in self.programs:
            image = ctypes.string_at(start, self.mem.ranges[start])
            found = parse_emulation_record(image)
            if found is None:
                raise Fault("bad packet", f"queue {q.qid}: the code object at {start:#x} carries no host build; the "
                            "emulated GPU runs kernels compiled with compile_kernel(..., emulation=True)")
            name, local, obj = found
            fn = load_host(obj, name)
            fn.local_size = local
            self.programs[start] = fn
        return self.programs[start]

    # --- SDMA ---
    def run_sdma(self, q: Queue) -> bool:
        """Run SDMA packets from the read pointer until the ring is empty, a poll is not yet satisfied, or this
        turn's budget is spent. SDMA pointers count bytes."""
        if q.rptr_value >= q.wptr_value:
            return False
        words = self.ring_words(q, q.rptr_value // 4, (q.wptr_value - q.rptr_value) // 4)
        pos = 0
        for _ in range(STEP_PACKETS):
            if pos >= len(words):
                break
            where = f"ring byte {q.rptr_value + 4 * pos:#x}"
            n = self.sdma_length(q, words[pos], where)
            if pos + n > len(words):
                if 4 * n > q.ring_size:
                    raise Fault("bad packet", f"queue {q.qid}: {where}: SDMA header {words[pos]:#010x} says {n} "
                                f"dwords, more than the {q.ring_size:#x}-byte ring holds")
                break  # the rest of the packet is not submitted yet
            if q.rng is not None:
                self.hazard_step(q)
            if not self.sdma_packet(q, words[pos:pos + n], where):
                self.count("wait_polls")
                q.waiting = True
                break
            pos += n
        q.rptr_value += 4 * pos
        return pos > 0

    def sdma_length(self, q: Queue, header: int, where: str) -> int:
        """Dwords in the SDMA packet this header starts; an op or sub-op this engine does not run faults here,
        before anything of it runs (COPY_TILED must not run as a linear copy)."""
        op, sub = _bits(header, 0, 8), _bits(header, 8, 8)
        if op == sd.SDMA_OP_NOP:
            return 1 + _sdma_field([header], "NOP", "HEADER_count")
        n = SDMA_LENGTHS.get((op, sub))
        if n is None:
            subs = {sd.SDMA_OP_COPY: SDMA_COPY_SUBOPS, sd.SDMA_OP_TIMESTAMP: SDMA_TIMESTAMP_SUBOPS}.get(op, {})
            what = f"SDMA op {op:#x} ({SDMA_OPS.get(op, 'unknown')}) sub-op {sub:#x}"
            if sub in subs:
                what += f" ({subs[sub]})"
            raise Fault("bad packet", f"queue {q.qid}: {where}: {what} (header {header:#010x}) is not run by the "
                        "emulated SDMA engine")
        return n

    def sdma_packet(self, q: Queue, w: list[int], where: str) -> bool:
        """Execute one SDMA packet; False if it is a poll that is not satisfied yet (nothing was consumed)."""
        op, sub = _bits(w[0], 0, 8), _bits(w[0], 8, 8)
        name = SDMA_TIMESTAMP_SUBOPS[sub] if op == sd.SDMA_OP_TIMESTAMP else (
            "COPY_LINEAR" if op == sd.SDMA_OP_COPY else SDMA_NAMES[op])

        def bad(why: str) -> Fault:
            return Fault("bad packet", f"queue {q.qid}: {where}: {name} {why}")
        if op == sd.SDMA_OP_NOP:
            return True
        if op == sd.SDMA_OP_POLL_REGMEM:
            if not _sdma_field(w, "POLL_REGMEM", "HEADER_mem_poll") or \
                    _sdma_field(w, "POLL_REGMEM", "HEADER_hdp_flush"):
                raise bad(f"(header {w[0]:#010x}) polls a register or flushes HDP: user queues poll memory only")
            func = _sdma_field(w, "POLL_REGMEM", "HEADER_func")
            if func not in _COMPARE:
                raise bad(f"FUNC {func} is reserved (0-6 are compares)")
            addr = w[1] | w[2] << 32
            if addr % 4:  # sdma_v6_0.c sdma_v6_0_ring_emit_pipeline_sync writes addr & 0xfffffffc
                raise bad(f"polls {addr:#x}, which is not 4-byte aligned")
            value = self.mem.u32(addr, f"POLL_REGMEM at {where}")  # a 32-bit compare: the packet has one value dword
            if not _COMPARE[func](value & w[4], w[3]):
                return False
        elif op == sd.SDMA_OP_COPY:
            if _sdma_field(w, "COPY_LINEAR", "HEADER_broadcast") or _sdma_field(w, "COPY_LINEAR", "HEADER_tmz"):
                raise bad(f"(header {w[0]:#010x}) with broadcast or TMZ is not emulated")
            size = _sdma_field(w, "COPY_LINEAR", "COUNT_count") + 1
            src, dst = w[3] | w[4] << 32, w[5] | w[6] << 32
            with self.copy_engine_write(dst, size):
                if self.mem._user(src, size) or self.mem._user(dst, size):
                    self.mem.write(dst, self.mem.read(src, size, f"COPY_LINEAR source at {where}"),
                                   f"COPY_LINEAR destination at {where}")
                else:
                    ctypes.memmove(self.mem.check(dst, size, f"COPY_LINEAR destination at {where}"),
                                   self.mem.check(src, size, f"COPY_LINEAR source at {where}"), size)
            self.count("bytes_copied", size)
        elif op == sd.SDMA_OP_FENCE:
            addr = w[1] | w[2] << 32
            if addr % 4:  # sdma_v6_0.c sdma_v6_0_ring_emit_fence: "zero in first two bits"
                raise bad(f"writes {addr:#x}, which is not 4-byte aligned")
            self.mem.write(addr, w[3].to_bytes(4, "little"), f"FENCE at {where}")
        elif op == sd.SDMA_OP_TRAP:
            self.send(op="interrupt", qid=q.qid, ctxid=_sdma_field(w, "TRAP", "INT_CONTEXT_int_context"))
        elif op == sd.SDMA_OP_CONST_FILL:
            fill = _sdma_field(w, "CONSTANT_FILL", "HEADER_fillsize")
            dst, size = w[1] | w[2] << 32, _sdma_field(w, "CONSTANT_FILL", "COUNT_count") + 1
            if fill != 2:  # sdma_v6_0_emit_fill_buffer: FILLSIZE(2), a dword fill; other sizes are not emulated
                raise bad(f"FILLSIZE {fill} is not emulated (2, dwords, is)")
            if dst % 4 or size % 4:
                raise bad(f"of {size:#x} bytes at {dst:#x}: a dword fill covers whole aligned dwords")
            with self.copy_engine_write(dst, size):
                self.mem.write(dst, w[3].to_bytes(4, "little") * (size // 4), f"CONSTANT_FILL at {where}")
        elif op == sd.SDMA_OP_GCR_REQ:
            pass  # cache write-back/invalidate (sdma_v6_0_ring_emit_mem_sync): the emulated memory is coherent
        elif op == sd.SDMA_OP_TIMESTAMP:
            if sub == sd.SDMA_SUBOP_TIMESTAMP_SET:  # sets the engine's local counter: it writes no memory
                q.local_ts_offset = (w[1] | w[2] << 32) - gpu_clock()
            else:
                if w[1] & 7:  # SDMA_PKT_TIMESTAMP_GET*_WRITE_ADDR_LO: write_addr_31_3, bits 2:0 reserved
                    raise bad(f"address dword {w[1]:#010x} sets reserved bits 2:0 (the address is 8-byte aligned)")
                addr = w[1] | w[2] << 32
                ts = gpu_clock() + (q.local_ts_offset if sub == sd.SDMA_SUBOP_TIMESTAMP_GET else 0)
                self.mem.write(addr, (ts & (1 << 64) - 1).to_bytes(8, "little"), f"{name} at {where}")
        if op in (sd.SDMA_OP_COPY, sd.SDMA_OP_FENCE, sd.SDMA_OP_CONST_FILL, sd.SDMA_OP_TIMESTAMP):
            self.notify_writes(q)
        self.count(f"sdma.{name}")
        return True

    @contextmanager
    def copy_engine_write(self, dst: int, size: int) -> Iterator[None]:
        """Around a copy-engine write: in hazard mode it is serialized with kernels and recorded by the cache model."""
        if self.hazard is None:
            yield
            return
        with self.hazard_lock:
            self.copy_engine_wrote(dst, size)
            yield


def main() -> None:
    """Entry point: python -m emu.amd.cp EVENTS_FD NAME=FD ... control=FD [kick=FD] [posted=FD] [hazard=SEED]
    [host_kernels=1]"""
    sock = socket.socket(fileno=int(sys.argv[1]))
    args = {k: int(v) for k, v in (a.split("=") for a in sys.argv[2:])}
    ctl = socket.socket(fileno=args.pop("control"))
    kick, hazard = args.pop("kick", None), args.pop("hazard", None)
    host_kernels = bool(args.pop("host_kernels", 0))
    posted = args.pop("posted", None)
    CommandProcessor(sock, ctl, args, kick, hazard, host_kernels, posted).run()


if __name__ == "__main__":
    main()
