"""The emulated AMD command processors (PM4 compute and SDMA), running in their own process.

The parent (the emulated kernel) starts this process with the memory pools' memfds and a control socket.
Buffer objects are mapped here at the same virtual addresses the driver uses, so a GPU address means
the same bytes in both processes. A queue runs when its doorbell is written: the doorbell's value is the new
write pointer (the write pointer in memory is never polled, as on gfx11 where amdgpu turns wptr polling off).
Packets are decoded with this module's own reading of the packet formats (never the driver's) and validated
as strictly as the hardware: a violation is a fault naming the queue, where the packet sits and what is wrong
with it, reported to the parent, which turns it into a KFD exception event. Legal waits block, in the ring and
in indirect buffers alike: each queue keeps its place (ring read pointer, the stack of indirect buffers it is
in) and resumes when the wait is satisfied.

Messages are JSON lines. Parent to CP: map, unmap, queue, destroy, stall, quit. CP to parent: interrupt
(a RELEASE_MEM or TRAP with a context id), fault, ready.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import socket
import sys
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from autogen import gc_11_0_0 as gc11
from autogen import gc_12_0_0 as gc12
from autogen import pm4_nvd as nvd
from autogen import sdma_v6 as sd
from compiler import parse_emulation_record
from compiler.toolchain import load_host

PROT_RW, MAP_SHARED, MAP_FIXED_NOREPLACE = 3, 0x01, 0x100000
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
    nvd.PACKET3_EVENT_WRITE: 1,  # gfx_v8_0.c gfx_v8_0_do_edc_gpr_workarounds: PACKET3(PACKET3_EVENT_WRITE, 0)
    nvd.PACKET3_DISPATCH_DIRECT: 4,  # gfx_v8_0.c gfx_v8_0_do_edc_gpr_workarounds: PACKET3(PACKET3_DISPATCH_DIRECT, 3)
}
NOP_ONE_DWORD = 0x3FFF  # gfx_v11_0.c: ring->funcs->nop = PACKET3(PACKET3_NOP, 0x3FFF), a header-only NOP
# soc21_enum.h CPF_PERF_SEL_CSF_BUSY_FOR_FETCHING_RING/_IB1/_IB2: the fetcher serves the ring and two IB levels.
MAX_IB_LEVEL = 2
STEP_PACKETS = 256  # packets a queue runs per turn, so a queue that loops (a self-chained IB) cannot starve others
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
    doorbell_seen: int = 0  # the doorbell's value when the CP last looked: a change is a doorbell write
    stalled: bool = False
    faulted: bool = False
    sh_regs: dict[int, int] = field(default_factory=dict)
    gc_base: int = 0
    target: str = ""
    not_before: float = 0.0  # fault injection: the queue runs nothing until this time (a late signal)
    ibs: list[IBFrame] = field(default_factory=list)  # the indirect buffers the queue is inside, outermost first
    ring_ib_len: int = 0  # dwords of the ring's INDIRECT_BUFFER packet, retired when its buffer has run
    local_ts_offset: int = 0  # SDMA TIMESTAMP_SET: the local counter minus the global clock


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class Memory:
    """The buffer objects mapped into this process, for access checks; userptr ranges live in the driver's
    process and are reached with process_vm_readv/writev, as a GPU reaches user pages by DMA."""

    def __init__(self, pools: dict[str, int]):
        self.pools = pools
        self.ranges: dict[int, int] = {}  # va -> size
        self.userptr: dict[int, tuple[int, int, int]] = {}  # va -> (size, host address, pid)
        self.poisoned: list[tuple[int, int]] = []  # fault injection: ranges that fault although mapped

    def map(self, va: int, size: int, pool: str, off: int) -> None:
        ret = _libc.mmap(va, size, PROT_RW, MAP_SHARED | MAP_FIXED_NOREPLACE, self.pools[pool], off)
        if ret != va:
            raise OSError(ctypes.get_errno(), f"cp: cannot map {pool}+{off:#x} at {va:#x} (got {ret})")
        self.ranges[va] = size

    def unmap(self, va: int) -> None:
        size = self.ranges.pop(va, None)
        if size:
            _libc.munmap(va, size)

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
    """Watches every queue's doorbell and executes what the driver submitted."""

    def __init__(self, sock: socket.socket, pools: dict[str, int]):
        self.sock = sock
        self.mem = Memory(pools)
        size = os.fstat(pools["doorbells"]).st_size
        self.doorbells = _libc.mmap(None, size, PROT_RW, MAP_SHARED, pools["doorbells"], 0)
        self.queues: dict[int, Queue] = {}
        self.programs: dict[int, Any] = {}  # code object base -> host function
        self.counters: dict[str, int] = {}
        self._buf = b""

    def send(self, **msg: Any) -> None:
        self.sock.sendall((json.dumps(msg) + "\n").encode())

    # --- control ---
    def control(self, msg: dict[str, Any]) -> bool:
        try:
            return self._control(msg)
        except (Fault, OSError, KeyError) as e:
            self.send(op="ack", seq=msg.get("seq"), error=str(e))
            return True

    def _control(self, msg: dict[str, Any]) -> bool:
        op = msg["op"]
        if op == "map":
            self.mem.map(msg["va"], msg["size"], msg["pool"], msg["off"])
        elif op == "userptr":
            self.mem.userptr[msg["va"]] = (msg["size"], msg["host"], msg["pid"])
        elif op == "unmap":
            self.mem.userptr.pop(msg["va"], None)
            self.mem.unmap(msg["va"])
            self.programs.pop(msg["va"], None)
        elif op == "queue":
            q = Queue(msg["qid"], msg["kind"], msg["ring"], msg["ring_size"], msg["rptr"], msg["wptr"],
                      self.doorbells + msg["doorbell_off"], gc_base=msg["gc_base"], target=msg["target"])
            self.mem.check(q.ring, q.ring_size, "ring")
            self.mem.check(q.rptr, 8, "read pointer")
            self.mem.check(q.wptr, 8, "write pointer")
            ctypes.c_uint64.from_address(q.doorbell).value = 0
            self.queues[q.qid] = q
        elif op == "destroy":
            self.queues.pop(msg["qid"], None)
        elif op == "stall":
            self.queues[msg["qid"]].stalled = msg.get("on", True)
        elif op == "delay":
            self.queues[msg["qid"]].not_before = time.monotonic() + msg["seconds"]
        elif op == "poison":
            self.mem.poisoned.append((msg["va"], msg["size"]))
        elif op == "counters":
            self.send(op="ack", seq=msg.get("seq"), counters=self.counters)
            return True
        elif op == "quit":
            return False
        self.send(op="ack", seq=msg.get("seq"))
        return True

    def read_control(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return True
        data = self.sock.recv(1 << 16)
        if not data:
            return False
        self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            if not self.control(json.loads(line)):
                return False
        return True

    # --- execution ---
    def run(self) -> None:
        self.send(op="ready", pid=os.getpid())
        idle = 0
        while True:
            progressed = False
            for q in list(self.queues.values()):
                if not q.faulted:
                    try:
                        progressed |= self.step(q)
                    except Fault as f:
                        q.faulted = True
                        self.send(op="fault", qid=q.qid, kind=f.kind, message=str(f), va=f.va)
            idle = 0 if progressed else min(idle + 1, 50)
            if not self.read_control(0 if progressed else 0.0002 * idle):
                return

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def step(self, q: Queue) -> bool:
        """Take a doorbell write if there was one, then run what the queue has; True if anything was consumed."""
        self.ring_doorbell(q)
        if q.stalled or time.monotonic() < q.not_before:
            return False
        progressed = self.run_pm4(q) if q.kind == "compute" else self.run_sdma(q)
        if progressed:
            ctypes.c_uint64.from_address(q.rptr).value = q.rptr_value
        return progressed

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
            op, body = _bits(header, 8, 8), words[pos + 1:pos + n]
            if op == nvd.PACKET3_INDIRECT_BUFFER:
                self.call_ib(q, body, level, n, where)
                progressed = True
                continue
            if not self.pm4_packet(q, op, body, where):
                self.count("wait_polls")  # a wait not satisfied yet: the queue keeps its place and polls again
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
            if b[6] >> 19:  # nvd.h ACQUIRE_MEM: "GCR_CNTL [18:0]"
                raise bad(f"GCR_CNTL {b[6]:#x} sets reserved bits above 18")
            return True  # the emulated memory is coherent and the queue runs in order: nothing to write back
        if op == nvd.PACKET3_EVENT_WRITE:
            return True  # pipeline events (CS_PARTIAL_FLUSH...): one dispatch at a time, so already drained
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
            self.dispatch(q, b[0], b[1], b[2], b[3])
            return True
        raise bad("is not a packet this CP runs")

    def release_mem(self, q: Queue, b: Any, bad: Any) -> None:
        event_index = _bits(b[0], 8, 4)
        dst_sel, int_sel, data_sel = _bits(b[1], 16, 2), _bits(b[1], 24, 3), _bits(b[1], 29, 3)
        addr = b[2] | b[3] << 32
        if event_index not in (5, 6):  # PAL ME_RELEASE_MEM event_index: 5 end of pipe, 6 shader done
            raise bad(f"event_index {event_index}: a release is an end-of-pipe (5) or shader-done (6) event")
        if dst_sel > 1:  # PAL dst_sel: 0 memory controller, 1 TC L2; 2 and 3 write queue registers
            raise bad(f"dst_sel {dst_sel} (a queue register) is not emulated")
        if int_sel > 3:  # PAL int_sel 4-6 send the context id conditionally: not emulated
            raise bad(f"int_sel {int_sel} is not emulated")
        # PAL PM4_MEC_RELEASE_MEM: address_lo_32b is bits 31:2, address_lo_64b bits 31:3 (the rest reserved)
        align = {1: 4, 2: 8, 3: 8}.get(data_sel)
        if data_sel and align is None:
            raise bad(f"data_sel {data_sel} is not emulated (0 none, 1 32-bit, 2 64-bit, 3 GPU clock are)")
        if align and addr % align:
            raise bad(f"writes {8 * align}-bit data (data_sel {data_sel}) to {addr:#x}, not {align}-byte aligned")
        if data_sel == 1:
            self.mem.write(addr, b[4].to_bytes(4, "little"), "RELEASE_MEM")
        elif data_sel == 2:
            self.mem.write(addr, (b[4] | b[5] << 32).to_bytes(8, "little"), "RELEASE_MEM")
        elif data_sel == 3:
            self.mem.write(addr, gpu_clock().to_bytes(8, "little"), "RELEASE_MEM")
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

    def dispatch(self, q: Queue, gx: int, gy: int, gz: int, initiator: int) -> None:
        """Run a kernel: find the host build in the loaded code object the program registers point into."""
        if not initiator & 1:
            raise Fault("bad packet", f"queue {q.qid}: DISPATCH_DIRECT without COMPUTE_SHADER_EN")
        code = (self.reg(q, "PGM_LO") | (self.reg(q, "PGM_HI") & 0xFF) << 32) << 8
        kernargs = self.reg(q, "USER_DATA_0") | self.reg(q, "USER_DATA_1") << 32
        local = (self.reg(q, "NUM_THREAD_X"), self.reg(q, "NUM_THREAD_Y"), self.reg(q, "NUM_THREAD_Z"))
        fn = self.kernel_at(q, code)
        if tuple(fn.local_size) != local:
            raise Fault("bad packet", f"queue {q.qid}: COMPUTE_NUM_THREAD is {local}, the kernel at {code:#x} was built "
                        f"for {tuple(fn.local_size)}")
        self.mem.check(kernargs, 8, "kernel arguments")
        fn(kernargs, gx, gy, gz, 0, gx * gy * gz)  # the whole grid in one call: the emulated CP is one engine

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
            if not self.sdma_packet(q, words[pos:pos + n], where):
                self.count("wait_polls")
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
        self.count(f"sdma.{name}")
        return True


def main() -> None:
    """Entry point: python -m emu.amd.cp CONTROL_FD NAME=FD ..."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    pools = {k: int(v) for k, v in (a.split("=") for a in sys.argv[2:])}
    CommandProcessor(sock, pools).run()


if __name__ == "__main__":
    main()
