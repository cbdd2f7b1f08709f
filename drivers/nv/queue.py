"""NVIDIA hardware queues: the GPFIFO channel a queue runs on, and the compute (QMD launch) and copy builders.

A submission is one pushbuffer segment: the queue's method words, then a release of the channel's own 64-bit
"done" counter (after a wait for idle), then the QMDs its launches point at (256-byte aligned). It is copied into
the channel's pushbuffer ring (host-visible memory), a GPFIFO entry pointing at it is written at GP_PUT, GP_PUT is
stored in USERD, and the channel's work submit token is written to the usermode doorbell
(clc361.h NVC361_NOTIFY_CHANNEL_PENDING). The done counter is what frees pushbuffer space: a segment (and its QMDs)
is reused only after the GPU released the counter behind it, so nothing the GPU may still read is overwritten; a
full pushbuffer or GPFIFO ring waits (bounded) and then raises RingFullError with the pointers. GP_GET (USERD)
bounds the GPFIFO entries in flight.

Replay: every submission copies the queue's words (and QMDs) into fresh pushbuffer space, so a replayed queue is
patched in place (its Var fields) and never rewrites a QMD the GPU is still reading. QMD fields that carry a Var
(grid, the constant bank 0 address) are patched as bit fields of the QMD stream; the QMD addresses in SEND_PCAS_A
are filled in at submit, once the segment's place is known.
"""
from __future__ import annotations

import ctypes
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from autogen import nv_classes as C
from compiler.toolchain import store_fence
from drivers.nv import methods as m
from drivers.nv import qmd as Q
from hcq.errors import HCQError
from hcq.queue import HWQueue, QueueBuildError, Value, Var
from hcq.signal import QueueState

SUBMIT_TIMEOUT_S = 10.0
HISTORY = 4  # submissions kept per channel for hang reports
PUSH_ALIGN = 256  # pushbuffer segments start 256-byte aligned, so their QMDs can be (SEND_PCAS_A holds address >> 8)
CBANK_ALIGN = 256  # constant buffer addresses: QMD V04 stores them >> 6; we keep every block 256-byte aligned
U32 = 0xFFFFFFFF
# USERD words the driver touches (clc56f.h AmpereAControlGPFifo: GPGet at 0x88, GPPut at 0x8c)
GPGET_OFFSET = C.AmpereAControlGPFifo.GPGet.offset
GPPUT_OFFSET = C.AmpereAControlGPFifo.GPPut.offset


class RingFullError(HCQError):
    """The GPU did not consume enough of a channel's GPFIFO or pushbuffer ring within the bound; the message has
    the pointers."""


class GPFifo:
    """One GPFIFO channel as the driver drives it: the entry ring, USERD, the doorbell, the pushbuffer ring and the
    done counter. Submission is atomic across threads."""

    def __init__(self, name: str, kind: str, host_cls: int, engine_cls: int, subchannel: int, ring_addr: int,
                 entries: int, userd_addr: int, doorbell_addr: int, token: int, push_buf: Any, done: Any,
                 handle: int = 0, notifier_addr: int = 0):
        self.name, self.kind, self.host_cls, self.engine_cls, self.subchannel = name, kind, host_cls, engine_cls, subchannel
        self.entries, self.token, self.handle = entries, token, handle
        self._ring = (ctypes.c_uint64 * entries).from_address(ring_addr)
        self._gpget = ctypes.c_uint32.from_address(userd_addr + GPGET_OFFSET)
        self._gpput = ctypes.c_uint32.from_address(userd_addr + GPPUT_OFFSET)
        self._doorbell = ctypes.c_uint32.from_address(doorbell_addr)
        self.push, self.done = push_buf, done
        self.notifier_addr = notifier_addr
        self._fence = store_fence()
        self.put = 0  # entries written (monotonic); GP_PUT is put % entries
        self.seq = 0  # submissions made; the done counter reaches seq when the last one finished
        self.head = 0  # next free byte in the pushbuffer
        self.live: deque[tuple[int, int, int]] = deque()  # (offset, end, seq) pushbuffer segments in flight
        self.history: deque[tuple[int, int, int, array]] = deque(maxlen=HISTORY)  # (put, seq, segment va, words)
        self.doorbells = 0
        self._lock = threading.Lock()
        # The done-counter release every submission ends with, encoded once; its payload words change per submit.
        self._tail = array("I", m.semaphore_release(done.va, 0, wfi=True, host=host_cls))

    @property
    def read_ptr(self) -> int:
        return self._gpget.value

    @property
    def write_ptr(self) -> int:
        return self._gpput.value

    # --- pushbuffer space ---
    def _reclaim(self) -> None:
        done = self.done.value
        while self.live and self.live[0][2] <= done:
            self.live.popleft()

    def _place(self, size: int) -> int:
        """Where a segment of size bytes fits without touching a live one, or -1 (the oldest must finish first)."""
        cap = self.push.size
        if not self.live:
            return self.head if self.head + size <= cap else 0
        tail = self.live[0][0]
        if tail < self.head:
            if self.head + size <= cap:
                return self.head
            return 0 if size <= tail else -1
        return self.head if self.head + size <= tail else -1

    def _wait(self, ready: Any, what: str) -> None:
        deadline = time.perf_counter() + SUBMIT_TIMEOUT_S
        pause = 10e-6
        while not ready():
            if time.perf_counter() > deadline:
                raise RingFullError(f"{self.name}: no room in the {what} after {SUBMIT_TIMEOUT_S} s; "
                                    f"{self.debug_state().describe()}")
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)

    def submit(self, words: Sequence[int], qmds: Optional[array] = None,
               fixups: Sequence[tuple[int, int]] = ()) -> int:
        """Copy one submission into the pushbuffer and hand it to the GPU; returns its sequence number.

        `fixups` are (word index of a SEND_PCAS_A value, byte offset of its QMD in `qmds`): the QMD address is only
        known once the segment is placed."""
        with self._lock:
            seq = self.seq + 1
            data = array("I", words)
            # The done counter, after everything before it went idle: frees this segment (and its QMDs) for reuse.
            tail = len(data)
            data.extend(self._tail)
            data[tail + 3], data[tail + 4] = seq & U32, seq >> 32  # SEM_PAYLOAD_LO/HI after the header and address
            cmd_bytes = 4 * len(data)
            qoff = -(-cmd_bytes // PUSH_ALIGN) * PUSH_ALIGN if qmds else cmd_bytes
            total = -(-(qoff + 4 * len(qmds or ())) // PUSH_ALIGN) * PUSH_ALIGN
            if total > self.push.size:
                raise RingFullError(f"{self.name}: a submission of {total} bytes does not fit the {self.push.size}-byte "
                                    "pushbuffer ring; split the queue")
            if len(data) > m.MAX_GP_LENGTH:
                raise RingFullError(f"{self.name}: a submission of {len(data)} words is longer than one GPFIFO entry "
                                    f"can run ({m.MAX_GP_LENGTH}); split the queue")
            off = -1

            def room() -> bool:
                nonlocal off
                self._reclaim()
                off = self._place(total)
                return off >= 0
            self._wait(room, "pushbuffer ring")
            # One entry is always left empty: GP_PUT == GP_GET means empty (the GPFIFO ring of clc56f.h).
            self._wait(lambda: (self.put - self._gpget.value) % self.entries < self.entries - 1, "GPFIFO ring")
            base = self.push.va + off
            for at, q in fixups:
                data[at] = (base + qoff + q) >> 8
            host = self.push.host_addr + off
            ctypes.memmove(host, data.buffer_info()[0], cmd_bytes)
            if qmds:
                ctypes.memmove(host + qoff, qmds.buffer_info()[0], 4 * len(qmds))
            self.live.append((off, off + total, seq))
            self.head = off + total
            self._ring[self.put % self.entries] = m.gpfifo_entry(base, len(data))
            self.history.append((self.put, seq, base, data))
            self.put += 1
            self.seq = seq
            # The segment and the entry reach memory before GP_PUT, GP_PUT before the doorbell: the host fetches
            # the moment the doorbell lands and must never see the new GP_PUT over stale entries.
            self._fence()
            self._gpput.value = self.put % self.entries
            self._fence()
            self._doorbell.value = self.token
            self.doorbells += 1
            return seq

    def pending(self) -> list[tuple[int, int, int, array]]:
        """The submissions the done counter has not passed yet (oldest first), from the kept history."""
        done = self.done.value
        return [h for h in list(self.history) if h[1] > done]

    def debug_state(self) -> QueueState:
        """GP_GET/GP_PUT and the last submissions' methods decoded, marking which finished."""
        done = self.done.value
        lines = []
        for put, seq, va, words in list(self.history):
            state = "done" if seq <= done else "NOT DONE"
            lines.append(f"entry {put % self.entries} (submission {seq}, {len(words)} words at {va:#x}, {state}):")
            try:
                for meth in m.decode(list(words), {self.subchannel: self.engine_cls}):
                    lines.append(f"  subch {meth.subchannel} {meth.name} = {meth.value:#x}")
            except m.NVDecodeError as e:
                lines.append(f"  undecodable: {e}")
        # Pointers as entry counts since the channel began (GP_GET/GP_PUT themselves wrap at the ring's size).
        get = self._gpget.value
        consumed = self.put - (self.put - get) % self.entries
        return QueueState(self.name, consumed, self.put, "\n".join(lines[-24:]),
                          {"GP_GET": get, "GP_PUT": self._gpput.value, "token": self.token,
                           "done": f"{done}/{self.seq}", "doorbells": self.doorbells})


@dataclass(frozen=True)
class _FieldPatch:
    var: Var
    bit: int  # bit offset in the queue's QMD stream
    width: int
    shift: int  # the value is stored right-shifted by this many bits
    truncate: bool  # keep only the field's bits: one part of an address split over two fields


class _HostMethods(HWQueue):
    """What both NV queues share: host-class semaphores (the channel class's methods, on any subchannel)."""

    def _host(self) -> int:
        return self.device.classes.channel

    def _encode_wait(self, signal: Any, value: Value) -> None:
        # ACQ_STRICT_GEQ on the 64-bit payload (clc56f.h SEM_EXECUTE OPERATION/PAYLOAD_SIZE): the channel stalls
        # until the whole 64-bit signal is >= value; a low word alone never passes it.
        v = 0 if isinstance(value, Var) else value
        if not 0 <= v < 1 << 64:
            raise QueueBuildError(f"wait({getattr(signal, 'name', signal)}, {v:#x}): signal values are 64-bit")
        self._packet(m.semaphore_acquire(signal.va, v, host=self._host()), {3: (value, 64, 0, False)})

    def _encode_signal(self, signal: Any, value: Value) -> None:
        # After earlier work is idle (RELEASE_WFI), write the 64-bit value and the GPU time (RELEASE_TIMESTAMP writes
        # the 16-byte {payload, timestamp} the HCQ Signal is). Then NON_STALL_INTERRUPT: RM turns the channel's
        # non-stall interrupt into the NV01_EVENT_OS_EVENT the device armed, which wakes a sleeping wait.
        v = 0 if isinstance(value, Var) else value
        if not 0 <= v < 1 << 64:
            raise QueueBuildError(f"signal({getattr(signal, 'name', signal)}, {v:#x}): signal values are 64-bit")
        words = m.semaphore_release(signal.va, v, timestamp=True, wfi=True, host=self._host())
        self._packet(words, {3: (value, 64, 0, False)})
        self._words(m.non_stall_interrupt(0))

    def _encode_timestamp(self, signal: Any) -> None:
        # The host writes a timestamp only as the second half of a 16-byte semaphore release: the signal's time
        # lands in its timestamp slot and its value is set to 0. Timestamps therefore go to signals of their own
        # (as profiling does), never to a signal something waits on.
        self._words(m.semaphore_release(signal.va, 0, timestamp=True, wfi=True, host=self._host()))


class NVComputeQueue(_HostMethods):
    """Methods for a compute channel: host semaphores, QMD launches (SEND_PCAS_A + SEND_SIGNALING_PCAS2_B), cache
    invalidation and wait-for-idle barriers."""

    def __init__(self, device: Any):
        super().__init__(device)
        self.streams["qmd"] = array("I")
        self._fields: list[_FieldPatch] = []
        self._fixups: list[tuple[int, int]] = []  # (cmd word of a SEND_PCAS_A value, byte offset of its QMD)

    @property
    def _channel(self) -> GPFifo:
        return self.device.compute_channel

    def _encode_copy(self, dst: Value, src: Value, size: int) -> None:
        raise QueueBuildError("copies on NV go on the copy queue (the copy engine): use device.copy_queue()")

    def _encode_memory_barrier(self) -> None:
        # Earlier launches finished: WFI waits until the channel's engine is idle (clc56f.h NVC56F_WFI). Their writes
        # visible to later launches and the host: INVALIDATE_SHADER_CACHES (itself waits for idle) flushes the
        # shader data caches (FLUSH_DATA) and invalidates the data and constant caches.
        cls = self.device.classes.compute
        self._words(m.wait_for_idle())
        self._words(m.invalidate_shader_caches(data=True, constant=True, flush_data=True, cls=cls))

    def _encode_exec(self, program: Any, args: Any, global_size: tuple, local_size: tuple) -> None:
        if tuple(local_size) != tuple(program.local_size):
            raise QueueBuildError(f"exec({program.name}): loaded for local size {program.local_size}, launched with "
                                  f"{tuple(local_size)}")
        cb = getattr(args, "va", args)
        staged = next((blob for name, blob in self.staged if isinstance(cb, Var) and name == cb.name), None)
        if staged is not None and len(staged) != program.cbank0_size:
            raise QueueBuildError(f"exec({program.name}): {len(staged)} bytes of arguments, but its constant bank 0 "
                                  f"is {program.cbank0_size}: pass the block program.pack_args(...) makes")
        if not isinstance(cb, Var):
            if not isinstance(cb, int) or not 0 <= cb < 1 << 64 or cb % CBANK_ALIGN:
                raise QueueBuildError(f"exec({program.name}): kernel arguments at {cb!r} must be a {CBANK_ALIGN}-byte "
                                      "aligned GPU address of the block program.pack_args made (constant bank 0)")
        dev, version = self.device, program.qmd_version
        if program.local_memory is not None:  # the backing store of local memory, before the launch that needs it
            self._words(program.local_memory)
        word = program.qmd_base
        lay = Q.layout(version)
        grid_fields = ("cta_raster_width", "cta_raster_height", "cta_raster_depth") if version == "V03_00" else \
            ("grid_width", "grid_height", "grid_depth")
        qbase = 32 * len(self.streams["qmd"])
        for f, g in zip(grid_fields, global_size):
            fld = lay[f]
            if isinstance(g, Var):
                self._field(g, qbase + fld.shift, fld.width, 0, False)
            elif not 1 <= g <= fld.max:
                raise QueueBuildError(f"exec({program.name}): grid {tuple(global_size)} does not fit the QMD's "
                                      f"{f} ({fld.width} bits)")
            else:
                word |= g << fld.shift
        for f, bits, shift in _cbuf0_fields(version):
            fld = lay[f]
            if isinstance(cb, Var):
                self._field(cb, qbase + fld.shift, fld.width, shift, True)
            else:
                word |= ((cb >> shift) & ((1 << fld.width) - 1)) << fld.shift
        raw = word.to_bytes(program.qmd_bytes, "little")
        qoff = 4 * len(self.streams["qmd"])
        self.streams["qmd"].frombytes(raw)
        self.streams["qmd"].extend([0] * ((-len(raw) % PUSH_ALIGN) // 4))  # the next QMD 256-byte aligned too
        launch = m.launch_qmd(0, cls=dev.classes.compute)
        self._fixups.append((len(self.cmd) + 1, qoff))
        self._words(launch)

    def _field(self, var: Var, bit: int, width: int, shift: int, truncate: bool) -> None:
        self._fields.append(_FieldPatch(var, bit, width, shift, truncate))
        self.vars.add(var.name)

    def _write_values(self, streams: dict, values: dict[str, int]) -> None:
        super()._write_values(streams, values)
        if not self._fields:
            return
        if self._field_plan_len != len(self._fields):
            self._field_plan = self._plan_fields()
            self._field_plan_len = len(self._fields)
        words = streams["qmd"]
        view = None
        for name, offset, shift, truncate, width, at, where in self._field_plan:
            v = (values[name] + offset) >> shift  # once per distinct field, however many QMDs carry it
            if truncate:
                v &= (1 << width) - 1
            elif not 0 <= v < 1 << width:
                raise QueueBuildError(f"{name}={v:#x} does not fit the {width}-bit QMD field it patches")
            if isinstance(where, np.ndarray):  # a field inside one word, in many QMDs: one masked numpy store
                if view is None:
                    view = np.frombuffer(words, np.uint32)  # dropped at the end: an exported array cannot grow
                mask = ((1 << width) - 1) << at
                view[where] = (view[where] & np.uint32(~mask & U32)) | np.uint32(v << at)
                continue
            for first, last in where:
                cur = 0
                for k in range(first, last + 1):
                    cur |= words[k] << (32 * (k - first))
                cur = (cur & ~(((1 << width) - 1) << at)) | (v << at)
                for k in range(first, last + 1):
                    words[k] = (cur >> (32 * (k - first))) & U32
        del view

    _field_plan_len = 0
    _field_plan: list = []

    def _plan_fields(self) -> list:
        """The field patches grouped by what they write and where in a word: fields inside one word (most QMD fields)
        become one numpy index array per group; fields across words keep their (first, last) word spans."""
        groups: dict[tuple, list] = {}
        for p in self._fields:
            first, last = p.bit // 32, (p.bit + p.width - 1) // 32
            key = (p.var.name, p.var.offset, p.shift, p.truncate, p.width, p.bit - 32 * first, first == last)
            groups.setdefault(key, []).append((first, last))
        return [(*key[:6], np.array([f for f, _ in spans], np.intp) if key[6] else spans)
                for key, spans in groups.items()]

    def bind(self, values: dict[str, int]) -> "NVComputeQueue":
        q = super().bind(values)
        q._fixups = list(self._fixups)
        return q

    def _submit(self, device: Any) -> None:
        device.check()
        device.compute_channel.submit(self.cmd, self.streams["qmd"] if self._fixups else None, self._fixups)


class NVCopyQueue(_HostMethods):
    """Methods for a copy channel: host semaphores and copy-engine copies (LAUNCH_DMA, pitch, split at
    methods.COPY_MAX_LINE)."""

    def _encode_exec(self, program: Any, args: Any, global_size: tuple, local_size: tuple) -> None:
        raise QueueBuildError("kernels run on the compute queue: use device.compute_queue()")

    def _encode_copy(self, dst: Value, src: Value, size: int) -> None:
        cls = self.device.classes.copy
        for off in range(0, size, m.COPY_MAX_LINE):
            n = min(m.COPY_MAX_LINE, size - off)
            d, s = dst + off, src + off
            # NON_PIPELINED: this copy starts once the one before it finished (the order the stream says);
            # FLUSH_ENABLE: its writes are flushed before the engine reports it done.
            words = m.copy(0 if isinstance(d, Var) else d, 0 if isinstance(s, Var) else s, n, cls=cls)
            # copy() starts with OFFSET_IN_UPPER, OFFSET_IN_LOWER, OFFSET_OUT_UPPER, OFFSET_OUT_LOWER (one header)
            self._packet(words, {1: (s, 32, 32, True), 2: (s, 32, 0, True), 3: (d, 32, 32, True),
                                 4: (d, 32, 0, True)})

    def _encode_memory_barrier(self) -> None:
        # Copies already run in order (NON_PIPELINED) and flush their writes (FLUSH_ENABLE); WFI makes the channel
        # wait until the engine is idle, so nothing after the barrier starts before everything before it ended.
        self._words(m.wait_for_idle())

    def _submit(self, device: Any) -> None:
        device.check()
        device.copy_channel.submit(self.cmd)


def _cbuf0_fields(version: str) -> list[tuple[str, int, int]]:
    """(field, bits, value shift) of constant buffer 0's address in a QMD version."""
    if version == "V03_00":
        return [("constant_buffer_addr_lower[0]", 32, 0), ("constant_buffer_addr_upper[0]", 17, 32)]
    return [("constant_buffer_addr_lower_shifted6[0]", 32, 6), ("constant_buffer_addr_upper_shifted6[0]", 19, 38)]
