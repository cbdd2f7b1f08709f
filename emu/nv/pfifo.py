"""The emulated NVIDIA GPU's host (PFIFO/PBDMA) for one channel: GPFIFO entries, pushbuffer method headers, host
methods and semaphores, and dispatch of engine methods to the objects bound to subchannels.

Every channel runs on its own thread, as channels progress independently on hardware: a channel blocked on a
semaphore acquire never delays another. A channel looks at its USERD GPPut only when the doorbell watcher
(gpu.py) wakes it. It then fetches GPFIFO entries [GPGet, GPPut) through its VA space, decodes each entry
(clc56f.h NVC56F_GP_ENTRY0/1, dev_pbdma.ref "GP_ENTRY"), fetches the entry's pushbuffer segment and decodes the
method headers in it (clc56f.h NVC56F_DMA_*: incrementing, non-incrementing, increment-once, immediate, end of
segment; a method sequence may continue into the next segment, as the PBDMA keeps its state across segments), and
writes GPGet back to USERD after each entry. Methods below 0x100 are host methods (dev_pbdma.ref NV_UDMA_*), on any
subchannel; others go to the engine object SET_OBJECT bound to the subchannel.

A violation stops the channel with a channel error reported through the GPU's on_error: GPGet stays at the
offending entry. Codes are RM's (nverror.h): ROBUST_CHANNEL_PBDMA_ERROR (32) for a bad GP entry, method header or
host method, ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT (31) for an unmapped access, ROBUST_CHANNEL_GR_EXCEPTION (13)
for a bad compute method or QMD, ROBUST_CHANNEL_CE0_ERROR (39) for a bad copy.

Ordering: engine work a method starts (a kernel launch, a copy) is `Work`. Without hazard mode it runs at once, in
stream order. In hazard mode (a seed) unordered work stays pending: later host methods run first, and pending work
runs in pieces at random points, when the channel waits for idle (WFI, SEM_EXECUTE with RELEASE_WFI, SET_REFERENCE),
while it waits on an acquire, and when the channel runs out of entries. So a semaphore release without RELEASE_WFI
after a launch may land before the kernel has run, and a copy without FLUSH_ENABLE may land after its own
semaphore: the missing barrier fails. Launches stay in order among themselves.
"""
from __future__ import annotations

import ctypes
import random
import struct
import sys
import threading
import time
import traceback
from array import array
from typing import TYPE_CHECKING

from autogen import nv_classes as C
from autogen import nv_rm as R
from emu.nv.engines import (COMPUTE_CLASSES, COPY_CLASSES, ChannelError, ComputeEngine, CopyEngine, Engine, Work,
                            mmu_error)
from emu.nv.vaspace import MMUFault

if TYPE_CHECKING:
    from emu.nv.gpu import ChannelDesc, EmuNVGPU

USERD_GPGET = C.AmpereAControlGPFifo.GPGet.offset  # 0x88 (clc56f.h AmpereAControlGPFifo)
USERD_GPPUT = C.AmpereAControlGPFifo.GPPut.offset  # 0x8c
USERD_REFERENCE = C.AmpereAControlGPFifo.Reference.offset  # 0x48: SET_REFERENCE's value
H = C  # host method offsets are NVC56F_*: the same in HOPPER_CHANNEL_GPFIFO_A (clc86f.h transcribes only a subset)
SEM_EXECUTE_KNOWN = (0x7 | 1 << 12 | 1 << 20 | 1 << 24 | 1 << 25 | 0xF << 27 | 1 << 31)  # clc56f.h SEM_EXECUTE fields
ACQUIRES = (C.NVC56F_SEM_EXECUTE_OPERATION_ACQUIRE, C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_STRICT_GEQ,
            C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_CIRC_GEQ, C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_AND,
            C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_NOR)
# MEM_OP_D operations a user channel may run; MMU_TLB_INVALIDATE(_TARGETED) and ACCESS_COUNTER_CLR are privileged
# (dev_pbdma.ref NV_PPBDMA_CONFIG_AUTH_LEVEL), and a user channel is NON_PRIVILEGED.
MEM_OPS_USER = {C.NVC56F_MEM_OP_D_OPERATION_MEMBAR, C.NVC56F_MEM_OP_D_OPERATION_L2_PEERMEM_INVALIDATE,
                C.NVC56F_MEM_OP_D_OPERATION_L2_SYSMEM_INVALIDATE, C.NVC56F_MEM_OP_D_OPERATION_L2_CLEAN_COMPTAGS,
                C.NVC56F_MEM_OP_D_OPERATION_L2_FLUSH_DIRTY, C.NVC56F_MEM_OP_D_OPERATION_L2_WAIT_FOR_SYS_PENDING_READS}
MEM_OPS_PRIVILEGED = {C.NVC56F_MEM_OP_D_OPERATION_MMU_TLB_INVALIDATE,
                      C.NVC56F_MEM_OP_D_OPERATION_MMU_TLB_INVALIDATE_TARGETED,
                      C.NVC56F_MEM_OP_D_OPERATION_ACCESS_COUNTER_CLR}
# Host methods in clc56f.h this emulator refuses by name (so the error says what they are).
HOST_REFUSED = {0x04: "ILLEGAL", 0x10: "SEMAPHOREA", 0x14: "SEMAPHOREB", 0x18: "SEMAPHOREC", 0x1C: "SEMAPHORED",
                0x84: "CLEAR_FAULTED"}
DMA_NOP = 0x00000000  # clc56f.h NVC56F_DMA_NOP (not transcribed into autogen/include/nv/classes.h)
WAKE_POLL_S = 0.05  # a channel thread's longest sleep: it notices close/remove/kill within this
ACQUIRE_POLL_MIN_S, ACQUIRE_POLL_MAX_S = 20e-6, 1e-3  # acquire re-read back-off; a release anywhere wakes it at once
HAZARD_YIELD_P, HAZARD_YIELDS_S, HAZARD_PIECE_P = 0.125, (0.0, 0.0, 50e-6, 200e-6), 0.25


class Stopped(Exception):
    """The channel was removed, killed or the GPU closed: the thread stops processing at once."""


class Channel:
    """One GPFIFO channel: its own thread, host state, engine objects and pending engine work."""

    def __init__(self, gpu: "EmuNVGPU", desc: "ChannelDesc"):
        self.gpu, self.desc = gpu, desc
        self.token = desc.token
        self.vas = desc.vaspace
        self.entries = desc.entries
        self.hopper = desc.host_class == C.HOPPER_CHANNEL_GPFIFO_A
        self.stalled = False  # hang injection (EmuNVGPU.stall): set on the channels that existed when it was called
        self.objects: dict[int, Engine] = {}
        self.subch: dict[int, Engine] = {}
        self.sem_lo = self.sem_hi = self.payload_lo = self.payload_hi = 0
        self.mem_op = [0, 0, 0]
        self.pb_ext = 0  # Hopper SET_PB_SEGMENT_EXTENDED_BASE: address bits 56:40 of later segments
        self.pb_state: tuple[int, int, int, int] | None = None  # (opcode, method, subchannel, data words left)
        self.pending: list[Work] = []
        self.rng = random.Random(f"{gpu.hazard}:{desc.token}") if gpu.hazard is not None else None
        self.enabled = self.dead = self.removed = False
        self.not_before = 0.0
        self.get = 0
        self.counts = {"gpfifo_entries": 0, "methods": 0}
        self.wake = threading.Event()
        self._set_gpget(0)
        self.thread = threading.Thread(target=self._main, name=f"nv{gpu.index}-channel-{desc.token:#x}", daemon=True)
        self.thread.start()

    # --- set-up (called by EmuNVGPU) ---
    def add_object(self, hclass: int) -> None:
        if self.desc.engine == "compute":
            if hclass not in COMPUTE_CLASSES or hclass != self.gpu.compute_class:
                raise ValueError(f"channel {self.token:#x} is a compute channel on {self.gpu.sm}: its engine object "
                                 f"is class {self.gpu.compute_class:#x}, not {hclass:#x}")
            self.objects[hclass] = ComputeEngine(self, hclass)
        else:
            if hclass not in COPY_CLASSES or hclass != self.gpu.copy_class:
                raise ValueError(f"channel {self.token:#x} is a copy channel on {self.gpu.sm}: its engine object is "
                                 f"class {self.gpu.copy_class:#x}, not {hclass:#x}")
            self.objects[hclass] = CopyEngine(self, hclass)

    def has_work(self) -> bool:
        return self.enabled and not self.dead and self._gpput() != self.get

    # --- USERD ---
    def _gpput(self) -> int:
        return ctypes.c_uint32.from_address(self.desc.userd_host + USERD_GPPUT).value

    def _set_gpget(self, value: int) -> None:
        ctypes.c_uint32.from_address(self.desc.userd_host + USERD_GPGET).value = value

    # --- the thread ---
    def _main(self) -> None:
        while True:
            rung = self.wake.wait(WAKE_POLL_S)
            if self.gpu.closing or self.removed:
                return
            if not rung:  # only a doorbell (or scheduling) makes the channel look at GPPut
                continue
            self.wake.clear()
            if self.dead or not self.enabled:
                continue
            try:
                self._serve()
            except Stopped:
                continue
            except ChannelError as e:
                self.fail(e)
            except Exception as e:  # an emulator bug: still a channel error, so the driver sees it, with the trace
                traceback.print_exc(file=sys.stderr)
                self.fail(ChannelError(R.ROBUST_CHANNEL_PBDMA_ERROR, "host",
                                       f"internal error of the emulated GPU: {type(e).__name__}: {e}"))

    def fail(self, e: ChannelError) -> None:
        if self.dead:
            return
        self.dead = True
        self.pending.clear()
        self.gpu.report_error(self.token, e.code, e.info())

    def _check(self) -> None:
        """Between methods: stop when removed/killed/closing; hold while the engine is stalled or the channel
        delayed (fault injection)."""
        gpu = self.gpu
        while True:
            if gpu.closing or self.removed or self.dead:
                raise Stopped()
            now = time.monotonic()
            if self.stalled:
                time.sleep(0.002)
            elif now < self.not_before:
                time.sleep(min(0.002, self.not_before - now))
            else:
                return

    def _serve(self) -> None:
        put = self._gpput()
        if put >= self.entries:
            raise ChannelError(R.ROBUST_CHANNEL_PBDMA_ERROR, "host",
                               f"GPPut {put} is outside the GPFIFO ring of {self.entries} entries (USERD+{USERD_GPPUT:#x}"
                               " holds an entry index)")
        while self.get != put:
            self._check()
            self._entry(self.get)
            self.get = (self.get + 1) % self.entries
            self._set_gpget(self.get)
            self.counts["gpfifo_entries"] += 1
            if self.rng is not None and self.rng.random() < HAZARD_YIELD_P:
                time.sleep(self.rng.choice(HAZARD_YIELDS_S))
        self.drain()

    # --- GPFIFO entries and pushbuffer segments ---
    def _entry(self, index: int) -> None:
        va = self.desc.gpfifo_va + index * C.NVC56F_GP_ENTRY__SIZE
        try:
            e0, e1 = struct.unpack("<II", self.vas.read(va, 8))
        except MMUFault as e:
            raise mmu_error(e, "host", f"fetching GPFIFO entry {index}") from None
        where = f"GPFIFO entry {index} ({e0:#010x} {e1:#010x})"
        length = e1 >> C.NVC56F_GP_ENTRY1_LENGTH_SHIFT & ((1 << C.NVC56F_GP_ENTRY1_LENGTH_WIDTH) - 1)
        if length == 0:  # a control entry: OPCODE in ENTRY1 7:0, OPERAND in ENTRY0 (dev_pbdma.ref GP_ENTRY1_LENGTH)
            opcode = e1 & 0xFF
            if opcode == C.NVC56F_GP_ENTRY1_OPCODE_NOP:
                return
            if self.hopper and opcode == C.NVC86F_GP_ENTRY1_OPCODE_SET_PB_SEGMENT_EXTENDED_BASE:
                self.pb_ext = e0 >> C.NVC86F_GP_ENTRY0_PB_EXTENDED_BASE_OPERAND_SHIFT & \
                    ((1 << C.NVC86F_GP_ENTRY0_PB_EXTENDED_BASE_OPERAND_WIDTH) - 1)
                return
            if opcode in (C.NVC56F_GP_ENTRY1_OPCODE_GP_CRC, C.NVC56F_GP_ENTRY1_OPCODE_PB_CRC):
                raise self._pbdma(f"{where}: control opcode {'GP_CRC' if opcode == 2 else 'PB_CRC'} (CRC checks) is "
                                  "not emulated")
            raise self._pbdma(f"{where}: control opcode {opcode} is ILLEGAL or invalid (dev_pbdma.ref: "
                              "NV_PPBDMA_INTR_0_GPENTRY)")
        if e0 & 1:
            raise self._pbdma(f"{where}: FETCH_CONDITIONAL (subdevice masks) is not emulated; use FETCH_UNCONDITIONAL")
        if e0 & 2 or e1 & 1 << 8:
            raise self._pbdma(f"{where}: reserved bits are set (ENTRY0 bit 1, ENTRY1 bit 8)")
        addr = self.pb_ext << 40 | (e1 & 0xFF) << 32 | (e0 & ~3)
        try:
            raw = self.vas.read(addr, length * 4)
        except MMUFault as e:
            raise mmu_error(e, "host", f"{where}: fetching its pushbuffer segment {addr:#x}+{length * 4:#x}") from None
        words = array("I")
        words.frombytes(raw)
        self._segment(words, addr, where)

    def _pbdma(self, message: str) -> ChannelError:
        return ChannelError(R.ROBUST_CHANNEL_PBDMA_ERROR, "host", f"channel {self.token:#x}: {message}")

    def _segment(self, words: array, addr: int, where: str) -> None:
        i, n = 0, len(words)
        if self.pb_state is not None:  # a method sequence that began in an earlier segment
            i = self._data(words, 0)
        while i < n:
            hdr = words[i]
            i += 1
            op = hdr >> 29
            if op in (C.NVC56F_DMA_SEC_OP_INC_METHOD, C.NVC56F_DMA_SEC_OP_NON_INC_METHOD, C.NVC56F_DMA_SEC_OP_ONE_INC,
                      C.NVC56F_DMA_SEC_OP_IMMD_DATA_METHOD):
                if hdr & 1 << 12:  # between ADDRESS 11:0 and SUBCHANNEL 15:13 (clc56f.h NVC56F_DMA_INCR_*)
                    raise self._pbdma(f"{where}: method header {hdr:#010x} at {addr + 4 * (i - 1):#x} sets reserved "
                                      "bit 12")
                method, subch = (hdr & 0xFFF) << 2, hdr >> 13 & 7
                count = hdr >> 16 & 0x1FFF
                if op == C.NVC56F_DMA_SEC_OP_IMMD_DATA_METHOD:
                    self._method(subch, method, count)
                elif count:
                    self.pb_state = (op, method, subch, count)
                    i = self._data(words, i)
            elif op == C.NVC56F_DMA_SEC_OP_END_PB_SEGMENT:
                if hdr & 0x1FFFFFFF:
                    raise self._pbdma(f"{where}: END_PB_SEGMENT {hdr:#010x} sets reserved bits 28:0")
                return
            elif hdr == DMA_NOP:
                continue
            else:
                what = {C.NVC56F_DMA_SEC_OP_GRP0_USE_TERT: "a subdevice-mask or legacy method header",
                        C.NVC56F_DMA_SEC_OP_GRP2_USE_TERT: "a legacy non-incrementing method header",
                        C.NVC56F_DMA_SEC_OP_RESERVED6: "the reserved SEC_OP 6"}[op]
                raise self._pbdma(f"{where}: pushbuffer entry {hdr:#010x} at {addr + 4 * (i - 1):#x} is {what}, which "
                                  "this emulator does not run (dev_pbdma.ref: NV_PPBDMA_INTR_0_PBENTRY)")

    def _data(self, words: array, i: int) -> int:
        """Feed data words from index i to the method sequence in progress; returns the next index."""
        op, method, subch, left = self.pb_state
        n = len(words)
        while left and i < n:
            self._method(subch, method, words[i])
            i += 1
            left -= 1
            if op == C.NVC56F_DMA_SEC_OP_INC_METHOD:
                method += 4
            elif op == C.NVC56F_DMA_SEC_OP_ONE_INC:
                method += 4
                op = C.NVC56F_DMA_SEC_OP_NON_INC_METHOD  # increment once: every later word goes to method+4
        self.pb_state = (op, method, subch, left) if left else None
        return i

    # --- methods ---
    def _method(self, subch: int, method: int, data: int) -> None:
        self.counts["methods"] += 1
        if self.gpu.closing or self.removed or self.dead or self.stalled or self.not_before:
            self._check()
            if self.not_before and time.monotonic() >= self.not_before:
                self.not_before = 0.0
        if method < 0x100:
            self._host(subch, method, data)
        else:
            eng = self.subch.get(subch)
            if eng is None:
                raise self._pbdma(f"method {method:#x} (data {data:#x}) on subchannel {subch}, which no SET_OBJECT "
                                  "bound to an engine object")
            work = eng.method(method, data)
            if work is not None:
                self.submit(work)
        if self.pending and self.rng is not None and self.rng.random() < HAZARD_PIECE_P:
            self._step()

    def submit(self, work: Work) -> None:
        """Run engine work now, or (hazard mode, unordered work) leave it pending."""
        if self.rng is not None and not work.ordered:
            self.pending.append(work)
            return
        while not work.step():
            pass

    def defer(self, work: Work) -> None:
        if work.pieces:
            self.pending.append(work)

    def _step(self) -> None:
        if self.pending and self.pending[0].step():
            self.pending.pop(0)

    def drain(self) -> None:
        """Wait for idle: run every pending piece of engine work, in order."""
        while self.pending:
            self._step()

    def write_memory(self, va: int, data: bytes, engine: str, what: str) -> None:
        try:
            with self.vas.gate.shared():
                self.vas.write(va, data)
        except MMUFault as e:
            raise mmu_error(e, engine, what) from None

    def _host(self, subch: int, method: int, data: int) -> None:
        if method == C.NVC56F_SET_OBJECT:
            hclass, reserved = data & 0xFFFF, data >> (C.NVC56F_SET_OBJECT_ENGINE_SHIFT + C.NVC56F_SET_OBJECT_ENGINE_WIDTH)
            engine = data >> C.NVC56F_SET_OBJECT_ENGINE_SHIFT & 0x1F
            if reserved:
                raise self._pbdma(f"SET_OBJECT {data:#x} sets reserved bits 31:21")
            if engine == C.NVC56F_SET_OBJECT_ENGINE_SW:
                raise self._pbdma(f"SET_OBJECT {data:#x} binds a software engine; no software class exists here")
            if subch >= 5:  # dev_pbdma.ref NV_PPBDMA_INTR_0_DEVICE: subchannels 5-7 carry software methods
                raise self._pbdma(f"SET_OBJECT class {hclass:#x} on subchannel {subch}: subchannels 5-7 are for "
                                  "software methods; bind engine objects on 0-4")
            eng = self.objects.get(hclass)
            if eng is None:
                raise self._pbdma(f"SET_OBJECT class {hclass:#x} on subchannel {subch}: no object of that class was "
                                  f"allocated on this {self.desc.engine} channel (have: "
                                  f"{[hex(c) for c in self.objects] or 'none'})")
            self.subch[subch] = eng
        elif method == C.NVC56F_NOP:
            pass
        elif method == C.NVC56F_NON_STALL_INTERRUPT:
            self.gpu.nonstall(self.token)
        elif method == 0x24:  # NVC56F_FB_FLUSH (clc56f.h: deprecated, a SYS_MEMBAR): memory is coherent here
            pass
        elif C.NVC56F_MEM_OP_A <= method <= C.NVC56F_MEM_OP_C:
            self.mem_op[(method - C.NVC56F_MEM_OP_A) // 4] = data
        elif method == C.NVC56F_MEM_OP_D:
            op = data >> C.NVC56F_MEM_OP_D_OPERATION_SHIFT
            if op in MEM_OPS_PRIVILEGED:
                raise self._pbdma(f"MEM_OP_D operation {op:#x} (TLB invalidate / access counter clear) is privileged; "
                                  "a user channel is NON_PRIVILEGED (dev_pbdma.ref NV_PPBDMA_CONFIG_AUTH_LEVEL)")
            if op not in MEM_OPS_USER:
                raise self._pbdma(f"MEM_OP_D operation {op:#x} is not one this emulator runs (MEMBAR, L2 flush/"
                                  "invalidate)")
        elif method == C.NVC56F_SET_REFERENCE:
            self.drain()  # SET_REF waits for the engine to be idle (dev_pbdma.ref GP_ENTRY1_SYNC note)
            ctypes.c_uint32.from_address(self.desc.userd_host + USERD_REFERENCE).value = data
        elif method == C.NVC56F_SEM_ADDR_LO:
            self.sem_lo = data & ~3  # bits 1:0 are ignored so software can pack an address directly (dev_pbdma.ref)
        elif method == C.NVC56F_SEM_ADDR_HI:
            width = C.NVC86F_SEM_ADDR_HI_OFFSET_WIDTH if self.hopper else C.NVC56F_SEM_ADDR_HI_OFFSET_WIDTH
            if data >> width:
                raise self._pbdma(f"SEM_ADDR_HI {data:#x} sets bits above its {width}-bit OFFSET field")
            self.sem_hi = data
        elif method == C.NVC56F_SEM_PAYLOAD_LO:
            self.payload_lo = data
        elif method == C.NVC56F_SEM_PAYLOAD_HI:
            self.payload_hi = data
        elif method == C.NVC56F_SEM_EXECUTE:
            self._sem_execute(data)
        elif method == C.NVC56F_WFI:
            if data >> 1:
                raise self._pbdma(f"WFI {data:#x} sets reserved bits 31:1")
            self.drain()
        elif method == 0x80:  # NVC56F_YIELD: a scheduling hint
            pass
        elif method in HOST_REFUSED:
            raise self._pbdma(f"host method {HOST_REFUSED[method]} ({method:#x}) is not emulated; semaphores use "
                              "SEM_ADDR_LO/HI, SEM_PAYLOAD_LO/HI and SEM_EXECUTE")
        else:
            raise self._pbdma(f"host method {method:#x} (data {data:#x}) is not a valid host method "
                              "(dev_pbdma.ref: NV_PPBDMA_INTR_0_METHOD)")

    def _sem_execute(self, data: int) -> None:
        if data & ~SEM_EXECUTE_KNOWN:
            raise self._pbdma(f"SEM_EXECUTE {data:#x} sets reserved bits {data & ~SEM_EXECUTE_KNOWN & 0xFFFFFFFF:#x}")
        op = data & 0x7
        wfi = data >> C.NVC56F_SEM_EXECUTE_RELEASE_WFI_SHIFT & 1
        p64 = data >> C.NVC56F_SEM_EXECUTE_PAYLOAD_SIZE_SHIFT & 1
        ts = data >> C.NVC56F_SEM_EXECUTE_RELEASE_TIMESTAMP_SHIFT & 1
        size = 8 if p64 else 4
        addr = self.sem_hi << 32 | self.sem_lo
        payload = (self.payload_hi << 32 | self.payload_lo) if p64 else self.payload_lo
        mask = (1 << (8 * size)) - 1
        if op in ACQUIRES:
            if addr % size:  # dev_pbdma.ref SEM_EXECUTE: NV_PBDMA_INTR_0_SEMAPHORE for a misaligned address
                raise self._pbdma(f"semaphore acquire of a {size * 8}-bit payload at {addr:#x}: the address must be "
                                  f"{size}-byte aligned")
            self._acquire(op, addr, size, payload, mask)
            return
        if op not in (C.NVC56F_SEM_EXECUTE_OPERATION_RELEASE, C.NVC56F_SEM_EXECUTE_OPERATION_REDUCTION):
            raise self._pbdma(f"SEM_EXECUTE OPERATION {op} is reserved")
        align = 16 if ts else size
        if addr % align:
            raise self._pbdma(f"semaphore release at {addr:#x}: a {size * 8}-bit payload{' with a timestamp' if ts else ''}"
                              f" needs {align}-byte alignment (dev_pbdma.ref SEM_EXECUTE)")
        if wfi:
            self.drain()
        value = payload
        if op == C.NVC56F_SEM_EXECUTE_OPERATION_REDUCTION:
            value = self._reduce(data, addr, size, payload, mask)
        if ts:  # the timestamp first, then the payload (zero-extended to 8 bytes), dev_pbdma.ref "16-byte semaphores"
            self.write_memory(addr + 8, self.gpu.clock_ns().to_bytes(8, "little"), "host", "a semaphore timestamp")
            self.write_memory(addr, value.to_bytes(8, "little"), "host", "a semaphore release")
        else:
            self.write_memory(addr, value.to_bytes(size, "little"), "host", "a semaphore release")
        self.gpu.count("semaphores")
        self.gpu.semaphore_released()

    def _read_sem(self, addr: int, size: int) -> int:
        try:
            with self.vas.gate.shared():
                host = self.vas.translate(addr, size, False)
                return (ctypes.c_uint64 if size == 8 else ctypes.c_uint32).from_address(host).value
        except MMUFault as e:
            raise mmu_error(e, "host", "a semaphore read") from None

    def _reduce(self, data: int, addr: int, size: int, payload: int, mask: int) -> int:
        red = data >> C.NVC56F_SEM_EXECUTE_REDUCTION_SHIFT & 0xF
        signed = not data >> C.NVC56F_SEM_EXECUTE_REDUCTION_FORMAT_SHIFT & 1
        v = self._read_sem(addr, size)
        bits = size * 8

        def s(x: int) -> int:
            return x - (1 << bits) if signed and x >> (bits - 1) else x
        if red in (C.NVC56F_SEM_EXECUTE_REDUCTION_INC, C.NVC56F_SEM_EXECUTE_REDUCTION_DEC) and size == 8:
            raise self._pbdma("SEM_EXECUTE REDUCTION INC/DEC with a 64-bit payload is unsupported (dev_pbdma.ref)")
        ops = {C.NVC56F_SEM_EXECUTE_REDUCTION_IMIN: lambda: v if s(v) < s(payload) else payload,
               C.NVC56F_SEM_EXECUTE_REDUCTION_IMAX: lambda: v if s(v) > s(payload) else payload,
               C.NVC56F_SEM_EXECUTE_REDUCTION_IXOR: lambda: v ^ payload,
               C.NVC56F_SEM_EXECUTE_REDUCTION_IAND: lambda: v & payload,
               C.NVC56F_SEM_EXECUTE_REDUCTION_IOR: lambda: v | payload,
               C.NVC56F_SEM_EXECUTE_REDUCTION_IADD: lambda: v + payload,
               C.NVC56F_SEM_EXECUTE_REDUCTION_INC: lambda: 0 if v >= payload else v + 1,
               C.NVC56F_SEM_EXECUTE_REDUCTION_DEC: lambda: payload if v == 0 or v > payload else v - 1}
        if red not in ops:
            raise self._pbdma(f"SEM_EXECUTE REDUCTION {red} is reserved")
        return ops[red]() & mask

    def _acquire(self, op: int, addr: int, size: int, payload: int, mask: int) -> None:
        self.gpu.count("acquires")
        delay = ACQUIRE_POLL_MIN_S
        while True:
            self._check()
            gen = self.gpu.release_generation
            v = self._read_sem(addr, size)
            if op == C.NVC56F_SEM_EXECUTE_OPERATION_ACQUIRE:
                ok = v == payload
            elif op == C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_STRICT_GEQ:
                ok = v >= payload
            elif op == C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_CIRC_GEQ:
                ok = ((v - payload) & mask) >> (size * 8 - 1) == 0
            elif op == C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_AND:
                ok = (v & payload) != 0
            else:
                ok = (~(v | payload) & mask) != 0
            if ok:
                return
            if self.pending:  # work this channel already started keeps running while host waits
                self._step()
                continue
            self.gpu.wait_release(gen, delay)
            delay = min(delay * 2, ACQUIRE_POLL_MAX_S)
