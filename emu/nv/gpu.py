"""One emulated NVIDIA GPU: its usermode region (the doorbell), its channels, VA spaces, engines and fault injection.

The emulated RM (emu/nv/rm.py) owns the objects and calls this class to make the hardware side of them: a VA space
for each FERMI_VASPACE_A, a channel for each GPFIFO channel (ChannelDesc: the ring, its USERD, its engine), an engine
object per compute/copy object, and `schedule` for NVA06C_CTRL_CMD_GPFIFO_SCHEDULE. It sets `on_nonstall` and
`on_error` to receive the GPU's interrupts.

Doorbell: the usermode region (TURING_USERMODE_A, 64 KiB, memfd-backed so RM can hand it to the driver's mmap) has
NVC361_NOTIFY_CHANNEL_PENDING at 0x90: the driver writes a channel's work submit token there after GPPut. A watcher
thread takes the word with an atomic exchange (leaving EMPTY_DOORBELL in it, so the same token written again is
seen again) and wakes that channel. Two doorbells written between two looks collapse into the last one, so on any
doorbell the watcher also wakes every scheduled channel whose USERD GPPut differs from its GPGet. The watcher looks
every DOORBELL_ACTIVE_S for DOORBELL_ACTIVE_WINDOW_S after a doorbell, then backs off (doubling) to
DOORBELL_IDLE_S; `kick()` (RM calls it when a process goes to sleep on an event) makes it look at once.

Kernels run from the host build carried in the cubin (see engines.py): NVIDIA's SASS has no public semantics, so
host_kernels=False is not supported.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
import traceback
import weakref
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from autogen import nv_classes as C
from autogen import nv_rm as R
from emu.nv.pfifo import Channel
from emu.nv.vaspace import VA_BITS, VASpace

# Classes by architecture (the shared plan's table; nv0080 class list): channel, compute, copy.
ARCH_CLASSES = {
    "sm_86": (C.AMPERE_CHANNEL_GPFIFO_A, C.AMPERE_COMPUTE_B, C.AMPERE_DMA_COPY_B),
    "sm_89": (C.AMPERE_CHANNEL_GPFIFO_A, C.ADA_COMPUTE_A, C.AMPERE_DMA_COPY_B),
    "sm_90": (C.HOPPER_CHANNEL_GPFIFO_A, C.HOPPER_COMPUTE_A, C.HOPPER_DMA_COPY_A),
}
USERMODE_SIZE = C.NVC361_NV_USERMODE__SIZE  # 64 KiB (clc361.h)
DOORBELL = C.NVC361_NOTIFY_CHANNEL_PENDING  # 0x90
# What the watcher leaves in the doorbell word: no work submit token is all ones (RM's tokens are channel ids with
# a runlist id above them, far below 2**32 - 1), so a token written again after a take is always a change.
EMPTY_DOORBELL = 0xFFFFFFFF
DOORBELL_ACTIVE_S, DOORBELL_ACTIVE_WINDOW_S, DOORBELL_IDLE_S = 20e-6, 0.005, 0.001
# nverror.h ROBUST_CHANNEL_PREEMPTIVE_REMOVAL: what a killed channel reports (fault injection: "a dead channel").
ROBUST_CHANNEL_PREEMPTIVE_REMOVAL = R.ROBUST_CHANNEL_PREEMPTIVE_REMOVAL
CLOSE_JOIN_S = 1.0
PR_SET_TIMERSLACK = 29  # linux/prctl.h: sleeps overshoot by up to the timer slack (50 us by default)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PROT_RW, MAP_SHARED = 3, 0x01

_XCHG_IR = """
define i32 @baregpu_xchg32(ptr %p, i32 %v) {
  %old = atomicrmw xchg ptr %p, i32 %v seq_cst
  ret i32 %old
}
"""


@lru_cache(maxsize=None)
def atomic_exchange32() -> Any:
    """f(address, value) -> old: an atomic 32-bit exchange (LLVM's atomicrmw xchg, JIT-compiled for this host), so
    the doorbell can be taken and cleared without losing a write that lands between a read and a clear."""
    from compiler.toolchain import _host_tm, _llvm
    llvm = _llvm()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(_XCHG_IR), _host_tm())
    engine.finalize_object()
    fn = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_uint32)(
        engine.get_function_address("baregpu_xchg32"))
    fn.engine = engine  # the machine code lives as long as its JIT
    return fn


@dataclass
class ChannelDesc:
    """What the emulated RM tells the GPU about a GPFIFO channel it allocated."""
    token: int  # the work submit token (NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN)
    group: int  # the channel group (TSG) handle or id
    engine: str  # "compute" | "copy"
    vaspace: VASpace
    gpfifo_va: int  # GPU VA of the ring (NV_CHANNEL_ALLOC_PARAMS.gpFifoOffset)
    entries: int  # gpFifoEntries (a power of two)
    userd_host: int  # host address of the channel's USERD (AmpereAControlGPFifo: GPGet 0x88, GPPut 0x8c)
    host_class: int  # AMPERE_CHANNEL_GPFIFO_A (c56f) or HOPPER_CHANNEL_GPFIFO_A (c86f)


class EmuNVGPU:
    """An emulated NVIDIA GPU of architecture `sm` ("sm_86", "sm_89", "sm_90"); `hazard` is a seed for hazard mode."""

    def __init__(self, index: int, sm: str, hazard: int | None = None, host_kernels: bool = True):
        if sm not in ARCH_CLASSES:
            raise ValueError(f"emulated NVIDIA GPU {index}: architecture {sm!r} is not one of {sorted(ARCH_CLASSES)}")
        if not host_kernels:
            raise ValueError("host_kernels=False is not supported: NVIDIA's SASS has no public semantics, so the "
                             "emulated NVIDIA GPU runs each kernel's host build carried in its cubin (build kernels "
                             "with compile_kernel(..., emulation=True))")
        self.index, self.sm, self.hazard = index, sm, hazard
        self.host_class, self.compute_class, self.copy_class = ARCH_CLASSES[sm]
        self.on_nonstall: Callable[[int], None] | None = None
        self.on_error: Callable[[int, int, dict], None] | None = None
        self.closing = False
        self.channels: dict[int, Channel] = {}
        self.vaspaces: "weakref.WeakSet[VASpace]" = weakref.WeakSet()
        self.poisoned: list[tuple[int, int]] = []
        self.errors: list[tuple[int, int, dict]] = []  # every channel error reported, for tests and hang reports
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._retired: Counter = Counter()  # counts of removed channels
        self._release_cv = threading.Condition()
        self.release_generation = 0
        self._kick = threading.Event()
        self._xchg = atomic_exchange32()
        self.usermode_fd = os.memfd_create(f"baregpu-nv{index}-usermode", os.MFD_CLOEXEC)
        os.ftruncate(self.usermode_fd, USERMODE_SIZE)
        addr = _libc.mmap(None, USERMODE_SIZE, PROT_RW, MAP_SHARED, self.usermode_fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            os.close(self.usermode_fd)
            raise OSError(ctypes.get_errno(), f"emulated NVIDIA GPU {index}: cannot map the usermode region")
        self.usermode_host, self.usermode_size = addr, USERMODE_SIZE
        self._doorbell = addr + DOORBELL
        ctypes.c_uint32.from_address(self._doorbell).value = EMPTY_DOORBELL
        self._watcher = threading.Thread(target=self._watch, name=f"nv{index}-doorbell", daemon=True)
        self._watcher.start()

    # --- objects (the emulated RM) ---
    def new_vaspace(self) -> VASpace:
        """A fresh GPU VA space (FERMI_VASPACE_A)."""
        vas = VASpace(VA_BITS[self.sm], f"GPU {self.index} VA space")
        for va, size in self.poisoned:
            vas.poison(va, size)
        self.vaspaces.add(vas)
        return vas

    def add_channel(self, ch: ChannelDesc) -> None:
        """Create the hardware side of a GPFIFO channel; it runs nothing until scheduled and rung."""
        if ch.engine not in ("compute", "copy"):
            raise ValueError(f"channel {ch.token:#x}: engine {ch.engine!r} is not 'compute' or 'copy'")
        if ch.host_class != self.host_class:
            raise ValueError(f"channel {ch.token:#x}: class {ch.host_class:#x} is not this {self.sm} GPU's channel "
                             f"class {self.host_class:#x}")
        if ch.entries <= 0 or ch.entries & (ch.entries - 1):
            raise ValueError(f"channel {ch.token:#x}: {ch.entries} GPFIFO entries is not a power of two")
        if ch.gpfifo_va % C.NVC56F_GP_ENTRY__SIZE:
            raise ValueError(f"channel {ch.token:#x}: the GPFIFO at {ch.gpfifo_va:#x} is not 8-byte aligned")
        if not ch.userd_host:
            raise ValueError(f"channel {ch.token:#x}: no USERD")
        if ch.token == EMPTY_DOORBELL:
            raise ValueError(f"work submit token {ch.token:#x} is the value an empty doorbell holds")
        with self._lock:
            if ch.token in self.channels:
                raise ValueError(f"channel token {ch.token:#x} is already in use on GPU {self.index}")
            self.channels[ch.token] = Channel(self, ch)

    def _channel(self, token: int) -> Channel:
        c = self.channels.get(token)
        if c is None:
            raise KeyError(f"GPU {self.index} has no channel with token {token:#x}")
        return c

    def remove_channel(self, token: int) -> None:
        """Stop and forget a channel (RM_FREE of the channel); waits for its thread."""
        with self._lock:
            c = self.channels.pop(token, None)
        if c is None:
            raise KeyError(f"GPU {self.index} has no channel with token {token:#x}")
        c.removed = True
        c.wake.set()
        self.semaphore_released()  # an acquire in progress notices at once
        if c.thread is not threading.current_thread():
            c.thread.join(CLOSE_JOIN_S)
        self._retired.update(c.counts)

    def schedule(self, tokens: list[int], enable: bool) -> None:
        """NVA06C_CTRL_CMD_GPFIFO_SCHEDULE: put channels on (or off) the runlist; enabled channels look at GPPut."""
        for t in tokens:
            c = self._channel(t)
            c.enabled = enable
            if enable:
                c.wake.set()

    def add_object(self, token: int, hclass: int) -> None:
        """An engine object (compute or copy class) allocated under a channel: SET_OBJECT may bind it."""
        self._channel(token).add_object(hclass)

    def kick(self) -> None:
        """Look at the doorbell now (and let waiting acquires re-read memory the CPU may have written)."""
        self._kick.set()
        self.semaphore_released()

    def clock_ns(self) -> int:
        """The GPU timer (PTIMER): nanoseconds, which RM sets from the OS's wall clock."""
        return time.time_ns()

    # --- interrupts and events from the channels ---
    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def nonstall(self, token: int) -> None:
        self.count("nonstall_interrupts")
        cb = self.on_nonstall
        if cb is not None:
            try:
                cb(token)
            except Exception:
                traceback.print_exc(file=sys.stderr)

    def report_error(self, token: int, code: int, info: dict) -> None:
        self.count("errors")
        self.errors.append((token, code, info))
        cb = self.on_error
        if cb is not None:
            try:
                cb(token, code, info)
            except Exception:
                traceback.print_exc(file=sys.stderr)

    def semaphore_released(self) -> None:
        with self._release_cv:
            self.release_generation += 1
            self._release_cv.notify_all()

    def wait_release(self, generation: int, timeout: float) -> None:
        """Sleep until a semaphore is released anywhere on this GPU (or a kick), or timeout."""
        with self._release_cv:
            if self.release_generation == generation and not self.closing:
                self._release_cv.wait(timeout)

    # --- fault injection ---
    def stall(self, engine: str, on: bool = True) -> None:
        """Hang injection: the channels of `engine` ("compute" | "copy") that exist now stop consuming methods until
        un-stalled. Channels made later (a driver's recovery replaces the hung ones) run, as on a card whose hung
        channel was torn down."""
        if engine not in ("compute", "copy"):
            raise ValueError(f"engine {engine!r} is not 'compute' or 'copy'")
        for c in list(self.channels.values()):
            if c.desc.engine == engine:
                c.stalled = on
                if not on:
                    c.wake.set()

    def delay(self, token: int, seconds: float) -> None:
        """Late semaphores: the channel runs no further method for `seconds`."""
        self._channel(token).not_before = time.monotonic() + seconds

    def poison(self, va: int, size: int) -> None:
        """Accesses to [va, va+size) fault in every VA space of this GPU, although mapped."""
        self.poisoned.append((va, size))
        for vas in list(self.vaspaces):
            vas.poison(va, size)

    def kill_channel(self, token: int) -> None:
        """A dead channel: it stops, and reports a channel error (ROBUST_CHANNEL_PREEMPTIVE_REMOVAL)."""
        c = self._channel(token)
        if c.dead:
            return
        c.dead = True
        c.pending.clear()
        c.wake.set()
        self.semaphore_released()
        self.report_error(token, ROBUST_CHANNEL_PREEMPTIVE_REMOVAL,
                          {"address": None, "access": None, "engine": c.desc.engine,
                           "message": f"channel {token:#x} was removed (fault injection: a dead channel)"})

    def counters(self) -> dict[str, int]:
        """gpfifo_entries, methods, doorbells, launches, copies, bytes_copied, semaphores, acquires,
        nonstall_interrupts, errors."""
        with self._lock:
            out = Counter({k: 0 for k in ("gpfifo_entries", "methods", "doorbells", "launches", "copies",
                                          "bytes_copied", "semaphores", "acquires", "nonstall_interrupts", "errors")})
            out.update(self._counts)
            out.update(self._retired)
            for c in self.channels.values():
                out.update(c.counts)
        return dict(out)

    # --- the doorbell watcher ---
    def _watch(self) -> None:
        _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
        interval, last = DOORBELL_IDLE_S, 0.0
        while not self.closing:
            token = self._xchg(self._doorbell, EMPTY_DOORBELL)
            now = time.monotonic()
            if token != EMPTY_DOORBELL:
                self.count("doorbells")
                last, interval = now, DOORBELL_ACTIVE_S
                target = self.channels.get(token)
                if target is None:
                    self.count("doorbells_unknown_token")
                for c in list(self.channels.values()):
                    # the rung channel, and any scheduled channel with work: doorbells between looks collapse
                    if c is target and c.enabled or c.has_work():
                        c.wake.set()
                continue
            if now - last < DOORBELL_ACTIVE_WINDOW_S:
                interval = DOORBELL_ACTIVE_S
            else:
                interval = min(interval * 2, DOORBELL_IDLE_S)
            if self._kick.wait(interval):
                self._kick.clear()

    def close(self) -> None:
        """Stop the watcher and every channel thread (within about a second) and release the usermode region."""
        if self.closing:
            return
        self.closing = True
        self._kick.set()
        self.semaphore_released()
        for c in list(self.channels.values()):
            c.wake.set()
        deadline = time.monotonic() + CLOSE_JOIN_S
        self._watcher.join(max(0.0, deadline - time.monotonic()))
        for c in list(self.channels.values()):
            c.thread.join(max(0.0, deadline - time.monotonic()))
        # The region stays mapped: a driver may still hold its own mapping of the memfd, and a late reader of ours
        # must not fault; closing our fd is enough (the mapping keeps the memory until the process unmaps it).
        try:
            os.close(self.usermode_fd)
        except OSError:
            pass
