"""Bring a GPU up and check it: what gpu_probe runs on every device whose driver is built.

Each step is what a user's first program does, timed and checked against the host: open the device (VM,
queues, events), allocate device and host-visible memory, copy through the copy engine and back, run a
compiled kernel on the compute queue, and wait on a signal. A failing step is reported with its error and
the steps after it are skipped; nothing here raises.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from drivers.system import System
from hcq.env import EnvError

CHECK_TIMEOUT_S = 60.0  # an emulated GPU runs kernels on the host: generous, but bounded
COPY_BYTES = 1 << 20


@dataclass
class Step:
    """One bring-up step: what it does, whether it worked, how long it took, and what went wrong.

    `bad_environment` is True when it failed on a BAREGPU_* variable's value: the user's to fix, not the device's.
    """
    name: str
    ok: bool
    ms: float
    detail: str = ""
    bad_environment: bool = False


@dataclass
class Check:
    """The bring-up of one device; `emulated` is True when the device is the emulated machine's, not hardware."""
    device: str
    target: str
    emulated: bool
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def bad_environment(self) -> bool:
        """True when a step failed on a bad BAREGPU_* variable (hcq.env.EnvError) rather than on the device."""
        return any(s.bad_environment for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "target": self.target, "emulated": self.emulated, "ok": self.ok,
                "steps": [asdict(s) for s in self.steps]}


def _step(check: Check, name: str, fn: Callable[[], str]) -> bool:
    t0 = time.perf_counter()
    bad_env = False
    try:
        detail = fn() or ""
        ok = True
    except Exception as e:  # the report names any failure; a probe never crashes on a broken device
        detail, ok, bad_env = f"{type(e).__name__}: {e}", False, isinstance(e, EnvError)
    check.steps.append(Step(name, ok, round((time.perf_counter() - t0) * 1000, 2), detail, bad_env))
    return ok


def check_amd(system: System, index: int) -> Check:
    """Bring up AMD GPU `index` of the KFD topology through `system` and run the checks."""
    from hcq.buffer import MemFlags
    dev: Any = None
    check = Check(f"AMD:{index}" if index else "AMD", "unknown", bool(getattr(system, "emulated", False)))

    def open_device() -> str:
        nonlocal dev
        from drivers.amd.kfd import KFDDevice
        dev = KFDDevice(index, system)
        check.target = dev.target
        return f"{dev.target}, gpu_id {dev.node.gpu_id:#x}"

    def memory() -> str:
        bufs = [dev.alloc(COPY_BYTES, MemFlags.DEVICE_LOCAL), dev.alloc(COPY_BYTES, MemFlags.HOST_VISIBLE),
                dev.alloc(COPY_BYTES, MemFlags.HOST_VISIBLE)]
        check_bufs.extend(bufs)
        return f"3 x {COPY_BYTES >> 20} MiB (device-local, host-visible x2)"

    def copy() -> str:
        vram, src, dst = check_bufs
        data = np.random.default_rng(0).integers(0, 256, COPY_BYTES, dtype=np.uint8)
        src.numpy(np.uint8)[:] = data
        v1 = dev.next_timeline_value()
        dev.copy_queue().copy(vram.va, src.va, COPY_BYTES).signal(dev.timeline, v1).submit(dev)
        v2 = dev.next_timeline_value()
        dev.copy_queue().wait(dev.timeline, v1).copy(dst.va, vram.va, COPY_BYTES).signal(dev.timeline, v2).submit(dev)
        dev.synchronize(timeout=CHECK_TIMEOUT_S)
        if not np.array_equal(dst.numpy(np.uint8), data):
            bad = int(np.argmax(dst.numpy(np.uint8) != data))
            raise RuntimeError(f"the copy came back different from byte {bad:#x} on")
        return f"{COPY_BYTES >> 20} MiB host -> device -> host through the copy queue"

    def kernel() -> str:
        from compiler import KernelCache, compile_kernel
        from compiler.ir import Kernel, f32
        k = Kernel("bringup_axpy", local_size=(64, 1, 1))
        x, y = k.buffer("x", f32), k.buffer("y", f32, writable=True)
        n = k.scalar("n")
        i = k.global_id(0)
        with k.if_(i < n):
            y[i] = x[i] * 2.0 + y[i]
        with tempfile.TemporaryDirectory() as tmp:
            prog = dev.load_program(compile_kernel(k, dev.target, KernelCache(Path(tmp)),
                                                    emulation=getattr(system, "host_kernels", False)))
        count = 1000
        _, src, dst = check_bufs
        xs = np.arange(count, dtype=np.float32)
        src.numpy(np.float32, count)[:] = xs
        dst.numpy(np.float32, count)[:] = 1.0
        dev.compute_queue().exec(prog, prog.pack_args(src.va, dst.va, count), (-(-count // 64), 1, 1), (64, 1, 1)) \
            .signal(dev.timeline, dev.next_timeline_value()).submit(dev)
        dev.synchronize(timeout=CHECK_TIMEOUT_S)
        got = dst.numpy(np.float32, count)
        if not np.array_equal(got, xs * 2 + 1):
            raise RuntimeError(f"y = 2x + y came back wrong at {int(np.argmax(got != xs * 2 + 1))}")
        return f"y = 2x + y over {count} elements, compiled for {dev.target}"

    def signal() -> str:
        sig = dev.new_signal(0)
        q = dev.compute_queue().signal(sig, 7)
        t0 = time.perf_counter()
        q.submit(dev)
        sig.wait(7, CHECK_TIMEOUT_S)
        return f"signal written by the GPU seen after {(time.perf_counter() - t0) * 1e6:.0f} us"

    check_bufs: list[Any] = []
    try:
        for name, fn in (("open", open_device), ("memory", memory), ("copy", copy), ("kernel", kernel),
                         ("signal", signal)):
            if not _step(check, name, fn):
                break
    finally:
        if dev is not None:
            dev.close()
    return check


def render(checks: list[Check]) -> list[str]:
    """The checks as text lines; every line of an emulated device's check starts with [emulated], as in gpu_probe."""
    from tools.gpu_probe import EMULATED_TAG
    lines = []
    for c in checks:
        tag = EMULATED_TAG if c.emulated else ""
        lines.append(f"{tag}Bring-up {c.device} ({c.target}): {'OK' if c.ok else 'FAILED'}")
        for s in c.steps:
            lines.append(f"{tag}    {'ok ' if s.ok else 'FAIL'} {s.name:<7} {s.ms:9.2f} ms  {s.detail}")
    return lines
