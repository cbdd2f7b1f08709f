"""One HCQ device as the tensor layer drives it: memory with deferred frees, uploads and downloads through the
copy queue, kernels compiled and loaded once, and every submission ordered after the previous one.

Submissions on one device form one chain on its timeline (each waits for the value the previous one signals),
so a kernel never reads a buffer before the copy or kernel that writes it finished, and the timeline only
grows. Work on different devices is independent: nothing here waits across devices except `copy_between`.

Threads: see Runtime. The runtime's lock is taken before the device's own locks, never after.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Optional

import numpy as np

from compiler import KernelCache, compile_kernel, ir
from drivers.registry import canonical_name, open_device
from hcq.buffer import Buffer, MemFlags
from hcq.env import EnvError, env_seconds, raw
from hcq.errors import OutOfMemoryError
from hcq.queue import Var

SYNC_TIMEOUT_S = 120.0  # the default of BAREGPU_SYNC_TIMEOUT: an emulated GPU runs kernels on the host
DEVICE_MEM = MemFlags.DEVICE_LOCAL
STAGING_MEM = MemFlags.HOST_VISIBLE


def sync_timeout() -> float:
    """Seconds to wait for a device: BAREGPU_SYNC_TIMEOUT (a number > 0), default SYNC_TIMEOUT_S."""
    return env_seconds("BAREGPU_SYNC_TIMEOUT", SYNC_TIMEOUT_S)


class Runtime:
    """The tensor layer's view of one open HCQ device.

    Threads: one Runtime (one per device per process, from `Devices`) may be used from several threads. Its
    submissions, allocations, frees, caches and accounting change under `lock`, so every submission still
    joins the one chain on the device's timeline; the lock is not held while a thread waits for the device.
    Tensors are immutable values here: threads may realize and read the same tensors, and graphs sharing
    nodes, and get the single-threaded results (a node another thread realized meanwhile is not computed
    again). A tensor may die in any thread; its memory comes back once the device passed its last use.
    Closing a device (DEVICES.close()) while other threads use it is not supported: they get DeviceClosedError.
    BAREGPU_SYNC_TIMEOUT is read when the runtime is made (a bad value raises there, naming it).
    """

    def __init__(self, name: str, device: Any = None):
        self.name = canonical_name(name)
        self.sync_timeout = sync_timeout()  # before opening: a bad value must not leave a device open
        self.dev = device if device is not None else open_device(self.name)
        self.target = "host" if type(self.dev).__name__ == "CPUDevice" else self.dev.target
        self.emulated = bool(getattr(getattr(self.dev, "system", None), "emulated", False))
        # the emulated GPU's fast mode runs the host build a code object carries: build kernels with one
        self.host_builds = bool(getattr(getattr(self.dev, "system", None), "host_kernels", False))
        self.cache = KernelCache()
        self.programs: dict[str, Any] = {}  # IR digest -> loaded program
        self.kernels: dict[tuple, tuple] = {}  # scheduler signature -> (program, local size, grid, name)
        self.last = 0  # the timeline value of the newest submission
        # Buffers freed by tensors, returned once the GPU passed: appended without the lock (a tensor's __del__
        # runs in whatever thread drops it, even one holding the lock), taken off under it.
        self._pending: deque[tuple[int, Buffer]] = deque()
        self.used = 0
        self.peak = 0
        self.kernels_run = 0
        self._launches: dict[tuple, tuple[Any, Any]] = {}  # (id(program), local, grid) -> (program, template)
        self.lock = threading.RLock()  # reentrant: alloc's out-of-memory path reclaims and synchronizes inside it

    # --- memory ---
    def alloc(self, nbytes: int, flags: MemFlags = DEVICE_MEM) -> Buffer:
        """nbytes of device memory; on exhaustion waits for pending frees once before giving up."""
        nbytes = max(nbytes, 4)
        with self.lock:
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
        """Return the released buffers whose last submission finished."""
        if not self._pending:  # nothing released: skip the lock and the timeline read
            return
        with self.lock:
            if self.dev.closed:  # the device took its memory with it
                self._pending.clear()
                return
            done = self.dev.timeline.value
            # Releases from several threads may append a smaller value after a larger one: that one waits longer.
            while self._pending and self._pending[0][0] <= done:
                _, buf = self._pending.popleft()
                if not buf.freed:
                    self.used -= buf.size
                    self.dev.free(buf)

    def reset_peak(self) -> None:
        with self.lock:
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
        """Wait (without the lock) for everything submitted so far, then return released memory."""
        self.dev.synchronize(timeout=self.sync_timeout)
        self.reclaim()

    # --- transfers ---
    def copy(self, dst: Buffer, src: Buffer, nbytes: int) -> int:
        """Copy on the copy queue after everything before it; returns its timeline value (0: nothing to copy)."""
        if not nbytes:
            return 0
        with self.lock:  # the chain's last value, the queue's wait on it and the new value go together
            return self._submit(self._chain(self.dev.copy_queue()).copy(dst.va, src.va, nbytes))

    def upload(self, data: np.ndarray) -> Buffer:
        """A device buffer holding data's bytes: written in place when the host sees device memory (the CPU
        device), else copied in by the copy queue from a host-visible staging buffer."""
        raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        buf = self.alloc(raw.size)
        if raw.size and buf.host_addr is not None:
            # A fresh buffer: no submitted work touches it (released memory returns only once the timeline passed
            # its last user), so the host may write it now and later submissions, chained on the timeline, see it.
            buf.cpu_view()[:raw.size] = raw
        elif raw.size:
            staging = self.alloc(raw.size, STAGING_MEM)
            staging.numpy(np.uint8, raw.size)[:] = raw
            self.copy(buf, staging, raw.size)
            self.release(staging)
        return buf

    def download(self, buf: Buffer, nbytes: int) -> bytes:
        """The first nbytes of buf after everything submitted before finished: read in place when the host sees
        device memory (the CPU device), else copied out by the copy queue."""
        if not nbytes:
            return b""
        if buf.host_addr is not None:
            # No copy to order behind the writer: wait for the work submitted so far (the writer is among it).
            self.dev.timeline.wait(self.last, self.sync_timeout)
            data = bytes(buf.cpu_view()[:nbytes])
            self.reclaim()
            return data
        staging = self.alloc(nbytes, STAGING_MEM)
        done = self.copy(staging, buf, nbytes)
        self.dev.timeline.wait(done, self.sync_timeout)  # our copy only: other threads' later work need not finish
        data = bytes(staging.cpu_view()[:nbytes])
        self.release(staging)
        self.reclaim()
        return data

    # --- kernels ---
    def program(self, kernel: ir.Kernel) -> Any:
        """The kernel compiled and loaded on this device, once per process however many threads ask."""
        key = kernel.key()
        with self.lock:
            prog = self.programs.get(key)
            if prog is None:
                emulation = self.host_builds and self.target != "host"
                built = compile_kernel(kernel, self.target, self.cache, emulation=emulation)
                prog = self.programs[key] = self.dev.load_program(built)
        return prog

    def launch(self, prog: Any, local_size: tuple[int, int, int], buffers: list[Buffer],
               grid: tuple[int, int, int]) -> None:
        """Run a loaded program over grid workgroups with these buffers as its arguments, after everything
        before it."""
        if 0 in grid:
            return
        args = prog.pack_args(*[b.va for b in buffers])
        dev = self.dev
        with self.lock:
            if dev.profiling:  # each launch gets its own timestamp signals: encode it afresh
                q = self._chain(dev.compute_queue())
                q.memory_barrier()
                q.exec(prog, args, grid, local_size)
                self._submit(q)
            else:
                template = self._launch_template(prog, tuple(local_size), tuple(grid))
                with dev.submit_lock:  # the timeline value, its kernel arguments and the submit go together
                    dev.check()  # closed or faulted: raise before writing arguments into its memory
                    v = dev.next_timeline_value()
                    values = {"after": self.last, "kernargs": dev.stage_kernargs(args, v), "value": v}
                    template.bind(values).submit(dev)
                self.last = v
            self.kernels_run += 1

    LAUNCH_TEMPLATES = 4096  # encoded launches kept per device; past this the cache starts over

    def _launch_template(self, prog: Any, local_size: tuple, grid: tuple) -> Any:
        """The launch of prog over grid encoded once, with Vars for what each launch changes: the timeline value
        it waits for ("after"; 0 passes at once), its kernel arguments and the value it signals. Lock held."""
        key = (id(prog), local_size, grid)
        hit = self._launches.get(key)
        if hit is not None and hit[0] is prog:  # the same program object, not a new one at a reused id
            return hit[1]
        if len(self._launches) >= self.LAUNCH_TEMPLATES:
            self._launches.clear()
        timeline = self.dev.timeline
        q = self.dev.compute_queue().wait(timeline, Var("after")).memory_barrier()
        q.exec(prog, Var("kernargs"), grid, local_size).signal(timeline, Var("value"))
        self._launches[key] = (prog, q)
        return q

    def close(self) -> None:
        """Wait for the device's work, then close it (already closed, e.g. by its lock's exit handler: nothing)."""
        if self.dev.closed:
            return
        try:
            self.synchronize()
        finally:
            with self.lock:
                self.dev.close()


def copy_between(src_rt: Runtime, src: Buffer, dst_rt: Runtime, nbytes: int) -> Buffer:
    """A buffer on dst_rt with the first nbytes of src: src's copy queue moves them to host memory, dst's copy
    queue moves them in. The host waits for src's side only."""
    data = np.frombuffer(src_rt.download(src, nbytes), np.uint8)
    return dst_rt.upload(data)


class Devices:
    """The runtimes a process has opened, by canonical name (a device is opened once: it is locked to us).

    Safe from several threads: threads asking for the same device at once get the same Runtime.
    """

    def __init__(self) -> None:
        self._open: dict[str, Runtime] = {}
        self._lock = threading.RLock()  # held while opening: a second thread waits for the first's Runtime

    @property
    def default(self) -> str:
        """BAREGPU_DEVICE, canonical ("CPU" when unset); a malformed name raises naming the variable."""
        text = raw("BAREGPU_DEVICE")
        if text is None:
            return "CPU"
        try:
            return canonical_name(text)
        except ValueError as e:
            raise _device_env_error(text, e) from None

    def __getitem__(self, name: Optional[str]) -> Runtime:
        rt = self._open.get(name) if name else None  # a node's device is already canonical: skip parsing it
        if rt is not None:
            return rt
        from_env = not name
        key = canonical_name(name) if name else self.default
        rt = self._open.get(key)
        if rt is not None:
            return rt
        with self._lock:
            rt = self._open.get(key)
            if rt is None:
                try:
                    rt = Runtime(key)
                except (ValueError, LookupError, NotImplementedError) as e:
                    if not from_env or isinstance(e, EnvError):
                        raise
                    raise _device_env_error(raw("BAREGPU_DEVICE") or key, e) from e
                self._open[key] = rt
        return rt

    def add(self, name: str, device: Any) -> Runtime:
        """Use an HCQ device opened elsewhere under `name` (e.g. a device on a machine you built yourself)."""
        key = canonical_name(name)
        with self._lock:
            if key in self._open:
                raise ValueError(f"device {key} is already open in this process; close it first (DEVICES.close())")
            rt = self._open[key] = Runtime(key, device)
        return rt

    def remove(self, name: str) -> Any:
        """Stop using the device `add` lent under `name` and hand it back open (its lender closes it); tensors still
        on it must not be used afterwards. Waits for the work the tensor layer submitted to it."""
        key = canonical_name(name)
        with self._lock:
            rt = self._open.pop(key, None)
        if rt is None:
            raise KeyError(f"device {key} is not open in the tensor layer")
        rt.synchronize()
        return rt.dev

    def opened(self) -> list[Runtime]:
        with self._lock:
            return list(self._open.values())

    def close(self) -> None:
        with self._lock:
            runtimes, self._open = list(self._open.values()), {}
        for rt in runtimes:
            try:
                rt.close()
            except Exception:
                pass


def _device_env_error(text: str, cause: BaseException) -> EnvError:
    """The error for a BAREGPU_DEVICE that names no device this process can open, with the reason."""
    reason = str(cause).rstrip(".")
    return EnvError("BAREGPU_DEVICE", text, f"it names the tensor layer's default device, such as CPU, AMD or "
                    f"AMD:1 ({reason})")
