"""One HCQ device as the tensor layer drives it: memory with deferred frees, uploads and downloads through the
copy queue, kernels compiled and loaded once, and every submission ordered after the previous one.

Submissions on one device form one chain on its timeline (each waits for the value the previous one signals),
so a kernel never reads a buffer before the copy or kernel that writes it finished, and the timeline only
grows. Work on different devices is independent: nothing here waits across devices except `copy_between`.
"""
from __future__ import annotations

import os
from collections import deque
from typing import Any, Optional

import numpy as np

from compiler import KernelCache, compile_kernel, ir
from drivers.registry import canonical_name, open_device
from hcq.buffer import Buffer, MemFlags
from hcq.errors import OutOfMemoryError

SYNC_TIMEOUT_S = float(os.environ.get("BAREGPU_SYNC_TIMEOUT", "120"))  # an emulated GPU runs kernels on the host
DEVICE_MEM = MemFlags.DEVICE_LOCAL
STAGING_MEM = MemFlags.HOST_VISIBLE


class Runtime:
    """The tensor layer's view of one open HCQ device."""

    def __init__(self, name: str, device: Any = None):
        self.name = canonical_name(name)
        self.dev = device if device is not None else open_device(self.name)
        self.target = "host" if type(self.dev).__name__ == "CPUDevice" else self.dev.target
        self.emulated = bool(getattr(getattr(self.dev, "system", None), "emulated", False))
        self.cache = KernelCache()
        self.programs: dict[str, Any] = {}  # IR digest -> loaded program
        self.kernels: dict[tuple, tuple] = {}  # scheduler signature -> (program, local size, grid, name)
        self.last = 0  # the timeline value of the newest submission
        self._pending: deque[tuple[int, Buffer]] = deque()  # buffers freed by tensors, returned once the GPU passed
        self.used = 0
        self.peak = 0
        self.kernels_run = 0

    # --- memory ---
    def alloc(self, nbytes: int, flags: MemFlags = DEVICE_MEM) -> Buffer:
        """nbytes of device memory; on exhaustion waits for pending frees once before giving up."""
        nbytes = max(nbytes, 4)
        self.reclaim()
        try:
            buf = self.dev.alloc(nbytes, flags)
        except OutOfMemoryError:
            self.synchronize()
            self.reclaim()
            buf = self.dev.alloc(nbytes, flags)
        self.used += buf.size
        self.peak = max(self.peak, self.used)
        return buf

    def release(self, buf: Buffer) -> None:
        """Free buf once every submission made so far has finished (it may still be read or written)."""
        self._pending.append((self.last, buf))

    def reclaim(self) -> None:
        if self.dev.closed:  # the device took its memory with it
            self._pending.clear()
            return
        done = self.dev.timeline.value
        while self._pending and self._pending[0][0] <= done:
            _, buf = self._pending.popleft()
            if not buf.freed:
                self.used -= buf.size
                self.dev.free(buf)

    def reset_peak(self) -> None:
        self.peak = self.used

    # --- ordering ---
    def _chain(self, q: Any) -> Any:
        if self.last:
            q.wait(self.dev.timeline, self.last)
        return q

    def _submit(self, q: Any) -> int:
        v = self.dev.next_timeline_value()
        q.signal(self.dev.timeline, v).submit(self.dev)
        self.last = v
        return v

    def synchronize(self) -> None:
        self.dev.synchronize(timeout=SYNC_TIMEOUT_S)
        self.reclaim()

    # --- transfers ---
    def copy(self, dst: Buffer, src: Buffer, nbytes: int) -> None:
        if nbytes:
            self._submit(self._chain(self.dev.copy_queue()).copy(dst.va, src.va, nbytes))

    def upload(self, data: np.ndarray) -> Buffer:
        """A device buffer holding data's bytes, copied in by the copy queue from a host-visible staging buffer."""
        raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        buf = self.alloc(raw.size)
        if raw.size:
            staging = self.alloc(raw.size, STAGING_MEM)
            staging.numpy(np.uint8, raw.size)[:] = raw
            self.copy(buf, staging, raw.size)
            self.release(staging)
        return buf

    def download(self, buf: Buffer, nbytes: int) -> bytes:
        """The first nbytes of buf, copied out by the copy queue after everything before it finished."""
        if not nbytes:
            return b""
        staging = self.alloc(nbytes, STAGING_MEM)
        self.copy(staging, buf, nbytes)
        self.dev.timeline.wait(self.last, SYNC_TIMEOUT_S)
        data = bytes(staging.cpu_view()[:nbytes])
        self.release(staging)
        self.reclaim()
        return data

    # --- kernels ---
    def program(self, kernel: ir.Kernel) -> Any:
        key = kernel.key()
        prog = self.programs.get(key)
        if prog is None:
            built = compile_kernel(kernel, self.target, self.cache, emulation=self.emulated and self.target != "host")
            prog = self.programs[key] = self.dev.load_program(built)
        return prog

    def launch(self, prog: Any, local_size: tuple[int, int, int], buffers: list[Buffer],
               grid: tuple[int, int, int]) -> None:
        """Run a loaded program over grid workgroups with these buffers as its arguments, after everything
        before it."""
        if 0 in grid:
            return
        q = self._chain(self.dev.compute_queue())
        q.memory_barrier()
        q.exec(prog, prog.pack_args(*[b.va for b in buffers]), grid, local_size)
        self._submit(q)
        self.kernels_run += 1

    def close(self) -> None:
        """Wait for the device's work, then close it (already closed, e.g. by its lock's exit handler: nothing)."""
        if self.dev.closed:
            return
        try:
            self.synchronize()
        finally:
            self.dev.close()


def copy_between(src_rt: Runtime, src: Buffer, dst_rt: Runtime, nbytes: int) -> Buffer:
    """A buffer on dst_rt with the first nbytes of src: src's copy queue moves them to host memory, dst's copy
    queue moves them in. The host waits for src's side only."""
    data = np.frombuffer(src_rt.download(src, nbytes), np.uint8)
    return dst_rt.upload(data)


class Devices:
    """The runtimes a process has opened, by canonical name (a device is opened once: it is locked to us)."""

    def __init__(self) -> None:
        self._open: dict[str, Runtime] = {}

    @property
    def default(self) -> str:
        return canonical_name(os.environ.get("BAREGPU_DEVICE", "CPU"))

    def __getitem__(self, name: Optional[str]) -> Runtime:
        key = canonical_name(name or self.default)
        rt = self._open.get(key)
        if rt is None:
            rt = self._open[key] = Runtime(key)
        return rt

    def add(self, name: str, device: Any) -> Runtime:
        """Use an HCQ device opened elsewhere under `name` (e.g. a device on a machine you built yourself)."""
        key = canonical_name(name)
        if key in self._open:
            raise ValueError(f"device {key} is already open in this process; close it first (DEVICES.close())")
        rt = self._open[key] = Runtime(key, device)
        return rt

    def opened(self) -> list[Runtime]:
        return list(self._open.values())

    def close(self) -> None:
        for rt in self._open.values():
            try:
                rt.close()
            except Exception:
                pass
        self._open.clear()
