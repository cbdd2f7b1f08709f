"""The emulated AMD command processors (PM4 compute and SDMA), running in their own process.

The parent (the emulated kernel) starts this process with the memory pools' memfds and a control socket.
Buffer objects are mapped here at the same virtual addresses the driver uses, so a GPU address means
the same bytes in both processes. Each queue is polled through its doorbell; packets are decoded with this
module's own reading of the packet formats (never the driver's) and executed. Faults (bad packets, accesses
outside any buffer) are reported to the parent, which turns them into KFD exception events.

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
                                                      "INDIRECT_BUFFER", "EVENT_WRITE", "RELEASE_MEM", "ACQUIRE_MEM")}
SDMA_NAMES = {sd.SDMA_OP_COPY: "COPY_LINEAR", sd.SDMA_OP_FENCE: "FENCE", sd.SDMA_OP_TRAP: "TRAP",
              sd.SDMA_OP_POLL_REGMEM: "POLL_REGMEM", sd.SDMA_OP_CONST_FILL: "CONSTANT_FILL", sd.SDMA_OP_TIMESTAMP: "TIMESTAMP"}
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
class Queue:
    """One hardware queue as the CP sees it (addresses are GPU VAs mapped in this process)."""
    qid: int
    kind: str  # "compute" or "sdma"
    ring: int
    ring_size: int  # bytes
    rptr: int  # VA of the u64 read pointer the CP writes
    wptr: int  # VA of the u64 write pointer the driver writes
    doorbell: int  # VA in the doorbell page
    rptr_value: int = 0  # dwords for compute, bytes for sdma
    stalled: bool = False
    faulted: bool = False
    sh_regs: dict[int, int] = field(default_factory=dict)
    gc_base: int = 0
    target: str = ""
    not_before: float = 0.0  # fault injection: the queue runs nothing until this time (a late signal)
    last_wptr: int = 0


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

    def u32(self, va: int) -> int:
        return ctypes.c_uint32.from_address(self.check(va, 4, "read")).value

    def u64(self, va: int) -> int:
        return ctypes.c_uint64.from_address(self.check(va, 8, "read")).value

    def put32(self, va: int, v: int) -> None:
        ctypes.c_uint32.from_address(self.check(va, 4, "write")).value = v & 0xFFFFFFFF

    def put64(self, va: int, v: int) -> None:
        ctypes.c_uint64.from_address(self.check(va, 8, "write")).value = v & 0xFFFFFFFFFFFFFFFF


def _bits(w: int, shift: int, width: int) -> int:
    return (w >> shift) & ((1 << width) - 1)


def _compare(func: int, value: int, ref: int) -> bool:
    return {0: True, 1: value < ref, 2: value <= ref, 3: value == ref, 4: value != ref, 5: value >= ref,
            6: value > ref}.get(func, False)


class CommandProcessor:
    """Polls every queue's doorbell and executes what the driver submitted."""

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
                if not q.stalled and not q.faulted:
                    try:
                        progressed |= self.step(q)
                    except Fault as f:
                        q.faulted = True
                        self.send(op="fault", qid=q.qid, kind=f.kind, message=str(f), va=f.va)
            idle = 0 if progressed else min(idle + 1, 50)
            if not self.read_control(0 if progressed else 0.0002 * idle):
                return

    def step(self, q: Queue) -> bool:
        """Execute what is between the read pointer and the doorbell; True if anything was consumed."""
        # The write pointer lives in memory the driver updates; the doorbell only says "look" (we poll anyway).
        wptr = self.mem.u64(q.wptr)
        unit = 4 if q.kind == "compute" else 1  # compute pointers count dwords, SDMA pointers count bytes
        ring_dwords = q.ring_size // 4
        if wptr <= q.rptr_value or time.monotonic() < q.not_before:
            return False
        self.count("doorbells_seen" if wptr != q.last_wptr else "polls")
        q.last_wptr = wptr
        start = q.rptr_value * unit // 4
        count = (wptr - q.rptr_value) * unit // 4
        if count > ring_dwords:
            raise Fault("bad packet", f"queue {q.qid}: write pointer {wptr:#x} is more than a ring ahead of read "
                        f"pointer {q.rptr_value:#x}")
        words = [ctypes.c_uint32.from_address(q.ring + 4 * ((start + i) % ring_dwords)).value for i in range(count)]
        done = self.execute_pm4(q, words) if q.kind == "compute" else self.execute_sdma(q, words)
        if done == 0:
            return False
        q.rptr_value += done * 4 // unit
        ctypes.c_uint64.from_address(q.rptr).value = q.rptr_value
        return True

    def execute_pm4(self, q: Queue, words: list[int]) -> int:
        i = 0
        while i < len(words):
            h = words[i]
            if h >> 30 == 2:
                i += 1
                continue
            if h >> 30 != 3:
                raise Fault("bad packet", f"queue {q.qid}: dword {q.rptr_value + i:#x}: header {h:#010x} is not type 3")
            op, count = _bits(h, 8, 8), _bits(h, 16, 14)
            if op == nvd.PACKET3_NOP and count == 0x3FFF:
                i += 1
                continue
            n = count + 1
            if i + 1 + n > len(words):
                return i  # the rest of this packet is not submitted yet
            body = words[i + 1:i + 1 + n]
            if not self.pm4_packet(q, op, body):
                return i  # a wait that is not satisfied yet: retry from here later
            i += 1 + n
        return i

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def pm4_packet(self, q: Queue, op: int, b: list[int]) -> bool:
        done = self._pm4_packet(q, op, b)
        if done:
            self.count(f"pm4.{PM4_NAMES.get(op, hex(op))}")
        return done

    def _pm4_packet(self, q: Queue, op: int, b: list[int]) -> bool:
        if op == nvd.PACKET3_NOP or op == nvd.PACKET3_ACQUIRE_MEM or op == nvd.PACKET3_EVENT_WRITE:
            return True  # caches and pipeline events: the emulator is coherent and in order
        if op == nvd.PACKET3_RELEASE_MEM and len(b) == 7:
            data_sel, int_sel = _bits(b[1], 29, 3), _bits(b[1], 24, 3)
            addr = b[2] | b[3] << 32
            if data_sel == 1:
                self.mem.put32(addr, b[4])
            elif data_sel == 2:
                self.mem.put64(addr, b[4] | b[5] << 32)
            elif data_sel == 3:
                self.mem.put64(addr, gpu_clock())
            elif data_sel != 0:
                raise Fault("bad packet", f"queue {q.qid}: RELEASE_MEM data_sel {data_sel} is not supported")
            if int_sel:
                self.send(op="interrupt", qid=q.qid, ctxid=b[6])
            return True
        if op == nvd.PACKET3_WAIT_REG_MEM and len(b) == 6:
            func, mem_space = _bits(b[0], 0, 3), _bits(b[0], 4, 2)
            if mem_space != 1:
                raise Fault("bad packet", f"queue {q.qid}: WAIT_REG_MEM on registers is not available to user queues")
            return _compare(func, self.mem.u32(b[1] | b[2] << 32) & b[4], b[3])
        if op == nvd.PACKET3_SET_SH_REG and len(b) >= 2:
            for k, v in enumerate(b[1:]):
                q.sh_regs[nvd.PACKET3_SET_SH_REG_START + b[0] + k] = v
            return True
        if op == nvd.PACKET3_INDIRECT_BUFFER and len(b) == 3:
            addr, size = b[0] | b[1] << 32, _bits(b[2], 0, 20)
            self.mem.check(addr, 4 * size, "INDIRECT_BUFFER")
            ib = [ctypes.c_uint32.from_address(addr + 4 * k).value for k in range(size)]
            if self.execute_pm4(q, ib) != size:
                raise Fault("bad packet", f"queue {q.qid}: INDIRECT_BUFFER at {addr:#x} ends inside a packet or waits")
            return True
        if op == nvd.PACKET3_DISPATCH_DIRECT and len(b) == 4:
            self.dispatch(q, b[0], b[1], b[2], b[3])
            return True
        raise Fault("bad packet", f"queue {q.qid}: PM4 opcode {op:#x} with {len(b)} body dwords is not supported")

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

    def execute_sdma(self, q: Queue, words: list[int]) -> int:
        lengths = {sd.SDMA_OP_COPY: 7, sd.SDMA_OP_FENCE: 4, sd.SDMA_OP_TRAP: 2, sd.SDMA_OP_POLL_REGMEM: 6,
                   sd.SDMA_OP_CONST_FILL: 5, sd.SDMA_OP_TIMESTAMP: 3}
        i = 0
        while i < len(words):
            h = words[i]
            op = h & 0xFF
            n = 1 + _bits(h, 16, 14) if op == sd.SDMA_OP_NOP else lengths.get(op)
            if n is None:
                raise Fault("bad packet", f"queue {q.qid}: byte {4 * i + q.rptr_value:#x}: SDMA op {op:#x} is not supported")
            if i + n > len(words):
                return i
            w = words[i:i + n]
            if op == sd.SDMA_OP_POLL_REGMEM or op == sd.SDMA_OP_NOP:
                pass
            else:
                self.count(f"sdma.{SDMA_NAMES.get(op, hex(op))}")
            if op == sd.SDMA_OP_COPY:
                size, src, dst = (w[1] & 0x3FFFFFFF) + 1, w[3] | w[4] << 32, w[5] | w[6] << 32
                if self.mem._user(src, size) or self.mem._user(dst, size):
                    self.mem.write(dst, self.mem.read(src, size, "COPY_LINEAR source"), "COPY_LINEAR destination")
                else:
                    ctypes.memmove(self.mem.check(dst, size, "COPY_LINEAR destination"),
                                   self.mem.check(src, size, "COPY_LINEAR source"), size)
                self.count("bytes_copied", size)
            elif op == sd.SDMA_OP_FENCE:
                self.mem.put32(w[1] | w[2] << 32, w[3])
            elif op == sd.SDMA_OP_TRAP:
                self.send(op="interrupt", qid=q.qid, ctxid=w[1] & 0xFFFFFFF)
            elif op == sd.SDMA_OP_POLL_REGMEM:
                if not _compare(_bits(w[0], 28, 3), self.mem.u32(w[1] | w[2] << 32) & w[4], w[3]):
                    return i
                self.count("sdma.POLL_REGMEM")
            elif op == sd.SDMA_OP_CONST_FILL:
                dst, size = w[1] | w[2] << 32, (w[4] & 0x3FFFFFFF) + 1
                arr = (ctypes.c_uint32 * (size // 4)).from_address(self.mem.check(dst, size, "CONSTANT_FILL"))
                for k in range(size // 4):
                    arr[k] = w[3]
            elif op == sd.SDMA_OP_TIMESTAMP:
                self.mem.put64((w[1] & ~7 & 0xFFFFFFFF) | w[2] << 32, gpu_clock())
            i += n
        return i


def main() -> None:
    """Entry point: python -m emu.amd.cp CONTROL_FD NAME=FD ..."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    pools = {k: int(v) for k, v in (a.split("=") for a in sys.argv[2:])}
    CommandProcessor(sock, pools).run()


if __name__ == "__main__":
    main()
