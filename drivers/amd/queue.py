"""AMD hardware queues: the ring a KFD queue runs from, and the PM4 (compute) and SDMA (copy) builders.

A ring is written at the write pointer, published by storing the write pointer and ringing the doorbell;
the command processor advances the read pointer as it consumes. A submit never overwrites words the GPU
has not consumed: it waits (bounded) for the read pointer first. PM4 pointers count dwords, SDMA pointers
count bytes (amdgpu's ring code does the same).
"""
from __future__ import annotations

import ctypes
import threading
import time
from array import array
from collections import deque
from typing import Any, Sequence

from compiler.toolchain import store_fence
from drivers.amd import pm4, sdma
from hcq.errors import HCQError
from hcq.queue import HWQueue, QueueBuildError, Value, Var
from hcq.signal import QueueState

SUBMIT_TIMEOUT_S = 10.0
HISTORY = 4  # submissions kept for hang reports


# Why a store fence before a doorbell: on x86 stores to write-back memory are not reordered with each other (TSO),
# but a KFD ring may be mapped write-combining or uncached while the doorbell is an uncached MMIO page, and
# write-combined stores may reach memory after a later uncached store (Intel SDM vol. 3, 11.3.1 "Buffering of Write
# Combining Memory Locations"); on aarch64 even normal stores may be reordered. ROCr (hsa_signal_store_screlease on
# the doorbell) and amdgpu's amdgpu_ring_set_wptr path (WDOORBELL64 after an mb()) fence for the same reason.
# compiler.toolchain.store_fence JITs the instruction (SFENCE on x86-64, a release fence elsewhere).


class RingFullError(HCQError):
    """The GPU did not consume enough of the ring within the bound; the message has the pointers."""


class Ring:
    """One KFD queue's ring buffer, pointers and doorbell, as the driver sees them; submit is atomic across threads."""

    def __init__(self, name: str, kind: str, ring_buf: Any, rptr_addr: int, wptr_addr: int, doorbell_addr: int,
                 queue_id: int):
        self.name, self.kind, self.queue_id = name, kind, queue_id
        self.buf, self.size = ring_buf, ring_buf.size
        self.unit = 4 if kind == "compute" else 1  # bytes per pointer unit
        self._rptr = ctypes.c_uint64.from_address(rptr_addr)
        self._wptr_mem = ctypes.c_uint64.from_address(wptr_addr)
        self._doorbell = ctypes.c_uint64.from_address(doorbell_addr)
        self._fence = store_fence()  # JIT-compiled once per process; run between the ring writes and the doorbell
        self.wptr = 0
        self.history: deque[tuple[int, list[int]]] = deque(maxlen=HISTORY)
        self.doorbells = 0
        self._lock = threading.Lock()  # the write pointer, the ring words after it and the doorbell go together
        self.barrier_slot: Any = None  # SDMA: the word a copy-queue memory barrier fences and polls (AMDCopyQueue)
        self._barrier_seq = 0

    @property
    def read_ptr(self) -> int:
        return self._rptr.value

    def submit(self, words: Sequence[int]) -> None:
        """Copy words into the ring after the GPU freed room for them, then publish and ring the doorbell."""
        nbytes = 4 * len(words)
        if nbytes > self.size:
            raise RingFullError(f"{self.name}: a submission of {nbytes} bytes does not fit the {self.size}-byte ring")
        with self._lock:
            self._write(words, nbytes)

    def _write(self, words: Sequence[int], nbytes: int) -> None:
        deadline = time.perf_counter() + SUBMIT_TIMEOUT_S
        while (self.wptr - self._rptr.value) * self.unit + nbytes > self.size:
            if time.perf_counter() > deadline:
                raise RingFullError(f"{self.name}: no room for {nbytes} bytes after {SUBMIT_TIMEOUT_S} s; "
                                    f"{self.debug_state().describe()}")
            time.sleep(20e-6)
        data = words if isinstance(words, array) else array("I", words)
        src = data.buffer_info()[0]  # copy straight from the array's storage: no per-word Python work
        pos = self.wptr * self.unit % self.size
        first = min(nbytes, self.size - pos)
        ctypes.memmove(self.buf.host_addr + pos, src, first)
        if first < nbytes:  # wrap to the start of the ring
            ctypes.memmove(self.buf.host_addr, src + first, nbytes - first)
        self.history.append((self.wptr, data))
        self.wptr += nbytes // self.unit
        self._wptr_mem.value = self.wptr
        # The ring words and the write pointer reach memory before the doorbell store: the engine fetches from the
        # write pointer the moment the doorbell lands, and must never see the new pointer over stale packets.
        self._fence()
        self._doorbell.value = self.wptr
        self.doorbells += 1

    def next_barrier_seq(self) -> int:
        """A fresh 32-bit value for one SDMA memory barrier (the caller holds the device's submit lock)."""
        self._barrier_seq = (self._barrier_seq + 1) & 0xFFFFFFFF
        return self._barrier_seq

    def debug_state(self) -> QueueState:
        """Pointers and the last submissions decoded, marking how far the GPU got."""
        rptr = self._rptr.value
        lines = []
        decode = pm4.decode if self.kind == "compute" else sdma.decode
        for start, words in list(self.history):  # a copy: another thread's submit may append meanwhile
            try:
                for p in decode(list(words)):
                    at = start + p.offset * 4 // self.unit
                    mark = "  <- read pointer here" if at <= rptr < at + max(1, len(getattr(p, "body", [])) + 1) else ""
                    lines.append(f"{at:#08x} {str(p).split(' ', 1)[1]}{mark}")
            except ValueError as e:
                lines.append(f"{start:#08x} undecodable: {e}")
        return QueueState(self.name, rptr, self.wptr, "\n".join(lines[-12:]),
                          {"queue_id": self.queue_id, "doorbells": self.doorbells})


class AMDComputeQueue(HWQueue):
    """PM4 commands for a KFD compute queue."""

    def __init__(self, device: Any):
        super().__init__(device)
        self.family = pm4.family_for(device.target)  # gfx11 and gfx12 differ in cache-flush bits
        self._replay_lock = threading.Lock()  # a replay's wait for its previous run and its submit go together

    def _encode_wait(self, signal: Any, value: Value) -> None:
        # MEC compares the whole 64-bit signal (WAIT_REG_MEM64, PAL's PM4_MEC_WAIT_REG_MEM64 on gfx10 to gfx12): a
        # wait for 2**32 + k must not pass when only the low word reached k. Signals are 8-byte aligned.
        v = 0 if isinstance(value, Var) else value
        if not 0 <= v < 1 << 64:
            raise QueueBuildError(f"wait({getattr(signal, 'name', signal)}, {v:#x}): signal values are 64-bit")
        self._packet(pm4.wait_reg_mem64(signal.va, v, family=self.family),
                     {pm4.WAIT_REG_MEM64_REF_WORD: (value, 64, 0, False)})

    def _encode_signal(self, signal: Any, value: Value) -> None:
        v = 0 if isinstance(value, Var) else value
        # The contract: value and its time. Then the device's mailbox slot is written and the interrupt raised once
        # that write is confirmed: amdkfd ignores an interrupt whose slot is unsignalled (kfd_events.c
        # kfd_signal_event_interrupt), so this is what wakes sleepers on the device's signal event.
        d = self.device
        self._words(pm4.release_mem(signal.va + 8, 0, pm4.DATA_SEL_TIMESTAMP, family=self.family))
        self._packet(pm4.release_mem(signal.va, v, pm4.DATA_SEL_VALUE_64, pm4.INT_SEL_NONE, family=self.family),
                     {pm4.RELEASE_MEM_DATA_WORD: (value, 64, 0, False)})
        self._words(pm4.release_mem(d.signal_slot_va, d.signal_event_id, pm4.DATA_SEL_VALUE_64,
                                    pm4.INT_SEL_SEND_INT_AFTER_WRITE_CONFIRM, int_ctxid=d.signal_event_id,
                                    family=self.family))

    def _encode_timestamp(self, signal: Any) -> None:
        self._words(pm4.release_mem(signal.va + 8, 0, pm4.DATA_SEL_TIMESTAMP, family=self.family))

    def _encode_exec(self, program: Any, args: Any, global_size: tuple, local_size: tuple) -> None:
        if tuple(local_size) != tuple(program.local_size):
            raise QueueBuildError(f"exec({program.name}): built for local size {program.local_size}, launched with "
                                  f"{tuple(local_size)}")
        kernargs = getattr(args, "va", args)
        setup = program.dispatch_setup.get(self.family)
        if setup is None:  # what a program fixes is encoded once: a submit only appends it and fills in the rest
            setup = program.dispatch_setup[self.family] = self._program_registers(program)
        fixed, user_data, pointers, dispatch = setup
        ka = 0 if isinstance(kernargs, Var) else kernargs
        gs = [0 if isinstance(g, Var) else g for g in global_size]
        if not 0 <= ka < 1 << 64:
            raise QueueBuildError(f"exec({program.name}): kernel arguments at {ka:#x} are not a 64-bit GPU address")
        if not all(0 <= g <= 0xFFFFFFFF for g in gs):
            raise QueueBuildError(f"exec({program.name}): grid {tuple(global_size)} does not fit DISPATCH_DIRECT's "
                                  "32-bit sizes")
        # The user SGPRs that hold addresses in the argument block (the kernel-argument pointer; the dispatch packet
        # after the arguments) are filled per exec; the rest of the user data the program fixed.
        head = list(user_data)
        for at, add in pointers:
            head[at], head[at + 1] = (ka + add) & 0xFFFFFFFF, (ka + add) >> 32 & 0xFFFFFFFF
        w = pm4.DISPATCH_DIRECT_SIZE_WORD
        launch = dispatch[:w] + gs + dispatch[w + 3:]
        self._words(fixed)
        if ka is kernargs and gs == list(global_size):  # no Var: nothing to record for replay
            self.streams["cmd"].extend(head + launch)
            return
        if head:
            self._packet(head, {at: (kernargs + add if add else kernargs, 64, 0, False) for at, add in pointers})
        self._packet(launch, {w + i: (g, 32, 0, False) for i, g in enumerate(global_size)})

    def _program_registers(self, program: Any) -> tuple[array, list[int], list[tuple[int, int]], list[int]]:
        """What a program fixes, encoded: SET_SH_REG packets for its registers (code address, resources with the
        LDS size, scratch, local size); the user-data SET_SH_REG for exactly the USER_SGPR_COUNT registers its
        descriptor asks for, with (word, addend) for each pointer into the argument block that exec fills; and the
        DISPATCH_DIRECT packet (with its initiator) with zeros where each exec writes its grid."""
        regs, base, d, out = self.device.gc, self.device.gc_base, program.descriptor, array("I")

        def sh(reg: int, *values: int) -> None:
            out.extend(pm4.set_sh_reg(base + reg, list(values), family=self.family))
        sh(regs.regCOMPUTE_PGM_LO, (program.code_va >> 8) & 0xFFFFFFFF, program.code_va >> 40)
        sh(regs.regCOMPUTE_PGM_RSRC1, d.compute_pgm_rsrc1, program.rsrc2)
        sh(regs.regCOMPUTE_PGM_RSRC3, d.compute_pgm_rsrc3)
        scratch = program.scratch
        if scratch is None:  # SCRATCH_EN is 0: the SPI gives its waves no scratch slot
            sh(regs.regCOMPUTE_TMPRING_SIZE, 0)
        else:  # architected flat scratch (GFX11+): slots and their size, and where they are (address >> 8)
            sh(regs.regCOMPUTE_TMPRING_SIZE, scratch.tmpring_size(regs))
            va = scratch.buffer.va >> 8
            sh(regs.regCOMPUTE_DISPATCH_SCRATCH_BASE_LO, va & 0xFFFFFFFF,
               (va >> 32) & regs.COMPUTE_DISPATCH_SCRATCH_BASE_HI__DATA_MASK)
        sh(regs.regCOMPUTE_RESOURCE_LIMITS, 0)
        sh(regs.regCOMPUTE_STATIC_THREAD_MGMT_SE0, 0xFFFFFFFF, 0xFFFFFFFF)
        sh(regs.regCOMPUTE_START_X, 0, 0, 0)
        sh(regs.regCOMPUTE_NUM_THREAD_X, *program.local_size)
        initiator = (regs.COMPUTE_DISPATCH_INITIATOR__COMPUTE_SHADER_EN_MASK |
                     regs.COMPUTE_DISPATCH_INITIATOR__FORCE_START_AT_000_MASK |
                     regs.COMPUTE_DISPATCH_INITIATOR__ORDER_MODE_MASK |
                     (regs.COMPUTE_DISPATCH_INITIATOR__CS_W32_EN_MASK if d.wave32 else 0))
        # User SGPRs in the order AMDGPUUsage lays them out; the program refused at load what is not served here.
        values: list[int] = []
        pointers: list[tuple[int, int]] = []
        for what, n in program.user_sgprs:
            if what == "kernarg_segment_ptr":
                pointers.append((len(values), 0))
            elif what == "dispatch_ptr":
                pointers.append((len(values), program.dispatch_packet_offset))
            elif what == "private_segment_size":  # bytes of private memory per work-item
                values.append(d.private_segment_fixed_size)
                continue
            elif what != "padding":
                raise QueueBuildError(f"exec({program.name}): user SGPRs {what} are not filled by this driver")
            values.extend([0] * n)
        user_data = pm4.set_sh_reg(base + regs.regCOMPUTE_USER_DATA_0, values, family=self.family) if values else []
        first = len(user_data) - len(values)  # the register values follow the packet header and register offset
        return (out, user_data, [(first + at, add) for at, add in pointers],
                pm4.dispatch_direct(0, 0, 0, initiator, family=self.family))

    def _encode_copy(self, dst: Value, src: Value, size: int) -> None:
        raise QueueBuildError("copies on AMD go on the copy queue (SDMA): use device.copy_queue()")

    def _encode_memory_barrier(self) -> None:
        # Earlier dispatches finished: CS_PARTIAL_FLUSH stalls the queue until every earlier compute wave retired
        # (Mesa si_emit_cache_flush for SI_CONTEXT_CS_PARTIAL_FLUSH: EVENT_WRITE CS_PARTIAL_FLUSH, EVENT_INDEX 4).
        self._words(pm4.event_write(self.family.events.CS_PARTIAL_FLUSH, family=self.family))
        # Their writes visible: write back and invalidate every cache level over the whole address space before
        # later packets run (amdgpu gfx_v11_0_emit_mem_sync's ACQUIRE_MEM, plus a GLK write-back).
        self._words(pm4.acquire_mem(pm4.gcr_invalidate_all(self.family), family=self.family))

    def submit(self, device: Any, values: dict[str, int] | None = None) -> "AMDComputeQueue":
        """As HWQueue.submit; a replay first waits, outside the device's submit lock, for this queue's previous
        run, so other threads keep submitting while it waits (their work may be what that run waits for)."""
        if not (self.patches and self.timeline_value is not None):  # not replayed through an indirect buffer
            return super().submit(device, values)
        with self._replay_lock:
            if self._ib_tag:
                device.timeline.wait(self._ib_tag, SUBMIT_TIMEOUT_S)
            return super().submit(device, values)

    def _submit(self, device: Any) -> None:
        device.check()
        if self.patches and self.timeline_value is not None:
            self._submit_indirect(device)
        else:
            device.compute_ring.submit(array("I", self.cmd))

    def _submit_indirect(self, device: Any) -> None:
        """Replay through an indirect buffer: the ring gets one INDIRECT_BUFFER packet however long the queue is.

        The buffer is rewritten only after the previous run of this queue finished (the timeline value it
        signalled), so the GPU never executes a half-patched stream.
        """
        from hcq.buffer import MemFlags
        words = self.cmd
        if self._ib is None or self._ib.size < 4 * len(words):
            if self._ib is not None:  # outgrown: the GPU may still run the old one
                device.free_after(self._ib, self._ib_tag)
            device.reclaim_deferred()  # buffers other queues outgrew or dropped, whose runs finished
            self._ib = device.alloc(4 * len(words), MemFlags.HOST_VISIBLE | MemFlags.UNCACHED)
        elif self._ib_tag:
            device.timeline.wait(self._ib_tag, SUBMIT_TIMEOUT_S)
        ctypes.memmove(self._ib.host_addr, words.buffer_info()[0], 4 * len(words))
        self._ib_tag = self._resolved_timeline
        key = (self._ib.va, len(words))
        if self._ib_packet_key != key:  # encoded once per buffer and length: a replay only rings it again
            self._ib_packet = array("I", pm4.indirect_buffer(self._ib.va, len(words), family=self.family))
            self._ib_packet_key = key
        device.compute_ring.submit(self._ib_packet)

    _ib = None
    _ib_tag = 0
    _ib_packet_key: tuple = ()
    _ib_packet = array("I")

    def __del__(self) -> None:
        # A replayed queue's indirect buffer goes back to the heap once its last run finished.
        if self._ib is not None and self.device is not None and not self.device.closed:
            try:
                self.device.free_after(self._ib, self._ib_tag)
            except Exception:  # interpreter shutdown
                pass
    _resolved_timeline = 0

    def apply(self, values: dict[str, int]) -> None:
        super().apply(values)
        tv = self.timeline_value
        self._resolved_timeline = values[tv.name] + tv.offset if isinstance(tv, Var) else (tv or 0)


class AMDCopyQueue(HWQueue):
    """SDMA commands for a KFD SDMA queue."""

    def __init__(self, device: Any):
        super().__init__(device)
        self._barriers: list[int] = []  # word index of each memory barrier's FENCE data; its POLL value follows

    def _encode_wait(self, signal: Any, value: Value) -> None:
        # SDMA 6/7 compare 32 bits only (POLL_REGMEM; no 64-bit poll: sdma_v6_0_0_pkt_open.h), and "X >= V" on a
        # 64-bit X is a disjunction over its two words (hi > V.hi, or hi == V.hi and lo >= V.lo) that no sequence
        # of single-word polls expresses: waiting for the high word then the low one hangs if X passes V with a
        # smaller low word, and checking once (COND_EXE) races with the writer. So the copy queue waits exactly on:
        #  - a value below 2**32: the low word >= V, exact while the signal stays below 2**32 (past it, with a
        #    smaller low word, the engine stalls; it never passes early);
        #  - a multiple of 2**32: the high word >= V >> 32, exact for every signal value (the low word is 0);
        # and refuses any other value rather than wait wrongly. A replayed value (a Var) patches the low-word form:
        # one >= 2**32 is refused at submit ("does not fit the 32-bit field"). Waits on such values belong on the
        # compute queue (WAIT_REG_MEM64); a cross-queue wait there costs one signal.
        if isinstance(value, Var):
            self._packet(sdma.poll_regmem(signal.va, 0), {sdma.POLL_VALUE_WORD: (value, 32, 0, False)})
            return
        if not 0 <= value < 1 << 64:
            raise QueueBuildError(f"wait({getattr(signal, 'name', signal)}, {value:#x}): signal values are 64-bit")
        if value < 1 << sdma.POLL_VALUE_BITS:
            self._words(sdma.poll_regmem(signal.va, value))
        elif value & 0xFFFFFFFF == 0:
            self._words(sdma.poll_regmem(signal.va + 4, value >> 32))
        else:
            raise QueueBuildError(
                f"wait({getattr(signal, 'name', signal)}, {value:#x}): the copy engine (SDMA POLL_REGMEM) compares 32 "
                "bits, so it waits exactly only for values below 2**32 or multiples of 2**32; wait on the compute "
                "queue (64-bit WAIT_REG_MEM64) and signal the copy queue from there")

    def _encode_signal(self, signal: Any, value: Value) -> None:
        v = 0 if isinstance(value, Var) else value
        self._words(sdma.timestamp(signal.va + 8))
        # SDMA writes 32 bits a FENCE (sdma_v6_0_ring_emit_fence writes 64-bit seqs as two fences). The low word
        # first: between the two writes the signal reads (old high, new low), which is never above the new value,
        # so no 64-bit waiter passes early (high first would show (new high, old low), possibly above it).
        self._packet(sdma.fence(signal.va, v & 0xFFFFFFFF), {sdma.FENCE_DATA_WORD: (value, 32, 0, True)})
        self._packet(sdma.fence(signal.va + 4, v >> 32), {sdma.FENCE_DATA_WORD: (value, 32, 32, True)})
        # The mailbox slot, then the trap: amdkfd only wakes events whose slot was written. One 32-bit fence is
        # enough: the kernel resets slots to all ones, so any other low word reads as signalled.
        self._words(sdma.fence(self.device.signal_slot_va, self.device.signal_event_id))
        self._words(sdma.trap(self.device.signal_event_id))

    def _encode_timestamp(self, signal: Any) -> None:
        self._words(sdma.timestamp(signal.va + 8))

    def _encode_exec(self, program: Any, args: Any, global_size: tuple, local_size: tuple) -> None:
        raise QueueBuildError("kernels run on the compute queue: use device.compute_queue()")

    def _encode_copy(self, dst: Value, src: Value, size: int) -> None:
        chunk = sdma.COPY_MAX_BYTES
        for off in range(0, size, chunk):
            n = min(chunk, size - off)
            d = dst + off if isinstance(dst, Var) else dst + off
            s_ = src + off if isinstance(src, Var) else src + off
            words = sdma.copy_linear_one(0 if isinstance(d, Var) else d, 0 if isinstance(s_, Var) else s_, n)
            self._packet(words, {sdma.COPY_DST_WORD: (d, 64, 0, False), sdma.COPY_SRC_WORD: (s_, 64, 0, False)})

    def _encode_memory_barrier(self) -> None:
        # Earlier copies finished: a FENCE is written only once earlier packets completed, and polling until it
        # landed holds later packets back until then (sdma_v6_0_ring_emit_pipeline_sync: POLL_REGMEM "==" on the
        # ring's last fence). Each run needs a value the word did not hold before, so _submit writes a fresh one.
        slot = self._barrier_slot()
        self._barriers.append(len(self.cmd) + sdma.FENCE_DATA_WORD)
        self._words(sdma.fence(slot, 0))
        self._words(sdma.poll_regmem(slot, 0, func="=="))
        # Their writes visible: write back and invalidate the caches (sdma_v6_0_ring_emit_mem_sync's GCR_REQ).
        self._words(sdma.gcr_req())

    def _barrier_slot(self) -> int:
        """The GPU address of the word this device's copy-queue barriers fence and poll (allocated once)."""
        ring = self.device.sdma_ring
        with ring._lock:
            if ring.barrier_slot is None:
                from hcq.buffer import MemFlags
                ring.barrier_slot = self.device.alloc(64, MemFlags.HOST_VISIBLE | MemFlags.UNCACHED)
        return ring.barrier_slot.va

    def bind(self, values: dict[str, int]) -> "AMDCopyQueue":
        q = super().bind(values)
        q._barriers = list(self._barriers)  # the copy's barriers take fresh values at its own submit
        return q

    def _submit(self, device: Any) -> None:
        device.check()
        words = array("I", self.cmd)
        poll = len(sdma.fence(0, 0)) + sdma.POLL_VALUE_WORD  # the POLL_REGMEM's value, from the FENCE's data word
        for at in self._barriers:  # under the device's submit lock: sequence numbers follow ring order
            seq = device.sdma_ring.next_barrier_seq()
            words[at] = seq
            words[at - sdma.FENCE_DATA_WORD + poll] = seq
        device.sdma_ring.submit(words)
