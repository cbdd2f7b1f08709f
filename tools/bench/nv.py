"""NVIDIA: our NV driver (drivers/nv, raw RM/UVM ioctls) next to NVIDIA's own CUDA driver (libcuda through
tools/cuda.py) on the same GPU, in the same run, round by round (tools.bench.interleave).

Rows (targets from issue 10, "Real H200"; measured and printed, never asserted):
1. nv.launch: an empty kernel's launch + sync latency. Ours: one exec + a timeline signal on the compute queue,
   then a wait on that signal (the queue built each call, and the same queue replayed with new values); CUDA:
   cuLaunchKernel + cuStreamSynchronize. Target: ours no slower than CUDA's (ratio of medians >= 1).
2. nv.replay: per-kernel cost of a queue of N execs built once with Vars and replayed with new values (submit
   only, and submit + wait for the last kernel), against a CUDA graph of N kernel nodes captured once
   (cuGraphLaunch + cuStreamSynchronize), per node. Target: below ~0.6 us per kernel (what CUDA graphs reach).
3. nv.copy: host->device, device->host and device->device copies of 64 MiB, each copy + wait. Ours: the copy
   queue between device memory and host-visible system memory (pinned: the GPU reaches it directly); CUDA:
   cuMemcpy*Async with cuMemHostAlloc'd (pinned) memory. GB/s count the bytes copied once. Target: >= 90% of
   CUDA's bandwidth.
4. nv.matmul: 2048x2048 f32. The tensor layer's `(a @ b).realize()` + synchronize on "NV" against numpy (this
   process, its BLAS's default threads); and the tensor layer's kernel itself, the same cubin our compiler
   makes, launched by our driver (exec + wait) and by CUDA (cuModuleLoadData of that cubin, cuLaunchKernel +
   sync): the kernel is equal, only the driver differs.

CUDA runs in a worker subprocess (CudaWorker): a CUDA error or a bad ctypes call there cannot take our
measurements down with it, and libcuda's threads and its own UVM registration stay out of our process. The
worker times its rounds itself, so the pipe is not billed to CUDA.

Without libcuda (or without an NVIDIA GPU) the CUDA side says "no libcuda" (its rows are not made; ours say so
in their note) and ours runs on the emulated NV GPU (sm_90), marked "emulated" in every row name: those numbers
measure the emulator, not a GPU. The real card is used when /dev/nvidiactl exists and BAREGPU_EMULATE does not
select nv.
"""
from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from tools.bench import Bench, BenchError, Context, Result, interleave, summarize, versus
from tools.bench.worker import JSONLineWorker

NODES = 1000  # kernels in the replayed queue and the CUDA graph
COPY_BYTES = 64 << 20
MATMUL_N = 2048
LAUNCH_GOAL = 1.0  # ours at least as fast as cuLaunchKernel + sync: CUDA's median / ours >= 1
REPLAY_TARGET_US = 0.6  # per kernel: CUDA graphs' per-node cost
COPY_GOAL = 0.9  # ours >= 90% of CUDA's bandwidth
NOP_LOCAL = (32, 1, 1)
WAIT_S = 60.0  # any one wait for device work: far above any row's real time, so a hang fails instead of stalling
WORKER_START_S = 120.0  # importing, cuInit and the primary context on a cold machine
WORKER_REQUEST_S = 300.0  # one round is at most a few 2048 matmuls or 64 MiB copies


# --- our side: the device ---
def _real_card() -> bool:
    """Whether to use the real card: /dev/nvidiactl exists and BAREGPU_EMULATE does not select nv."""
    from drivers.emulation import emulated_vendors
    return "nv" not in emulated_vendors() and os.path.exists("/dev/nvidiactl")


class NV:
    """Our NV device for one benchmark: the device, whether it is emulated, and a label for row names."""

    def __init__(self) -> None:
        if _real_card():
            from drivers.registry import open_device
            self.dev, self.emulated = open_device("NV"), False
        else:
            from drivers.nv.device import NVDevice
            from emu.machine import HAZARD_OFF, emulated_system
            system = emulated_system("nv", ("sm_90",), private=True, hazard=HAZARD_OFF)
            self.dev, self.emulated = NVDevice(0, system), True
        self.target: str = self.dev.target
        self.label = f"emulated {self.target}" if self.emulated else f"{self.target}, real"
        self.host_builds = bool(getattr(getattr(self.dev, "system", None), "host_kernels", False))

    def compile(self, kernel: Any) -> Any:
        """The kernel built for this device (carrying the host build when the emulated GPU runs host builds)."""
        from compiler import compile_kernel
        return compile_kernel(kernel, self.target, emulation=self.host_builds)

    def next_value(self) -> int:
        return self.dev.next_timeline_value()

    def wait(self, value: int) -> None:
        self.dev.timeline.wait(value, WAIT_S)

    def close(self) -> None:
        self.dev.close()


def nop_kernel() -> Any:
    """A kernel that does nothing (its one store never runs): the cost measured is the launch, not the work."""
    from compiler.ir import Kernel, f32
    k = Kernel("nop_nv", local_size=NOP_LOCAL)
    out = k.buffer("out", f32, writable=True)
    with k.if_(k.global_id(0) < 0):
        out[0] = 1.0
    return k


def launch_template(nv: NV, prog: Any, grid: tuple[int, int, int], local: tuple[int, int, int],
                    count: int = 1) -> Any:
    """`count` execs of prog and a timeline signal, built once: Vars for the argument block ("kernargs", staged per
    submit like the tensor layer's launches) and the timeline value ("v")."""
    from hcq.queue import Var
    q = nv.dev.compute_queue()
    for _ in range(count):
        q.exec(prog, Var("kernargs"), grid, local)
    return q.signal(nv.dev.timeline, Var("v"))


def submit(nv: NV, q: Any, blob: bytes) -> int:
    """Submit a launch_template with its arguments staged; the timeline value it signals."""
    v = nv.next_value()
    q.submit(nv.dev, {"kernargs": nv.dev.stage_kernargs(blob, v), "v": v})
    return v


# --- CUDA's side: the worker ---
class CudaWorker(JSONLineWorker):
    """libcuda in a subprocess (see the module docstring): `available` and `why` say whether CUDA runs here,
    `info` what the worker found (device name, compute capability, driver's CUDA version); `run(op, **args)`
    times one round there."""

    def __init__(self, start_timeout: float = WORKER_START_S, request_timeout: float = WORKER_REQUEST_S):
        super().__init__("CUDA", "tools.bench.nv", start_timeout, request_timeout)
        self.info: dict[str, Any] = {}
        self.why = ""
        if "ready" in self.first:
            self.info = self.first["ready"]
        else:
            self.why = str(self.first.get("unavailable") or f"the worker answered {self.first!r}")
            self.close()

    @property
    def available(self) -> bool:
        return bool(self.info)

    @property
    def describe(self) -> str:
        if not self.available:
            return f"CUDA: not measured ({self.why})"
        i = self.info
        return (f"CUDA: {i.get('name')} (cc {i.get('cc')}, {i.get('sms')} SMs), driver supports CUDA "
                f"{i.get('driver_cuda_version', 0) // 1000}.{i.get('driver_cuda_version', 0) % 1000 // 10}, "
                f"libcuda in worker pid {i.get('pid')}")

    @property
    def target(self) -> str:
        """The CUDA device's sm_XX (what a cubin for it is built for)."""
        return "sm_" + str(self.info.get("cc", "0.0")).replace(".", "")

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        if not self.available:
            raise BenchError(f"CUDA is not available here: {self.why}")
        return super().request(op, **args)

    def run(self, op: str, **args: Any) -> tuple[int, float]:
        """One timed round in the worker: (ops, seconds spent on them there)."""
        reply = self.request(op, **args)
        return int(reply["ops"]), float(reply["seconds"])


def cuda_worker(ctx: Context) -> CudaWorker:
    """The run's CUDA worker, started on first use and closed with the context (ctx.close())."""
    worker = ctx._workers.get("cuda")  # the Context keeps long-lived workers there and closes them at the end
    if worker is None:
        worker = ctx._workers["cuda"] = CudaWorker()
        ctx.note_info(worker.describe)
    return worker


class _CudaState:
    """The worker's side: one CUDA device, a non-blocking stream, the modules the parent sent, and buffers."""

    def __init__(self) -> None:
        from tools.cuda import Cuda
        self.cu = Cuda(0)
        self.stream = self.cu.stream_create()
        self.functions: dict[str, int] = {}
        self.modules: list[int] = []
        self.scratch = self.cu.mem_alloc(1 << 16)
        self.graphs: dict[tuple, tuple[int, int]] = {}
        self.copies: dict[int, tuple[int, int, int]] = {}
        self.matmul: dict[str, Any] = {}
        self.allocs: list[int] = []

    def blob(self, args: list[list[Any]]) -> bytes:
        """A parameter block from [offset, size, value] triples; value "scratch" is this worker's scratch buffer,
        "out"/"a"/"b" the matmul's buffers, an int itself."""
        size = max((off + n for off, n, _ in args), default=0)
        out = bytearray(size)
        for off, n, value in args:
            if isinstance(value, str):
                value = self.scratch if value == "scratch" else self.matmul[value]
            struct.pack_into("<Q" if n == 8 else "<i", out, off, value)
        return bytes(out)

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        cu, s = self.cu, self.stream
        if op == "load":
            module = cu.module_load_data(Path(req["path"]).read_bytes())
            self.modules.append(module)
            self.functions[req["key"]] = cu.module_get_function(module, req["name"])
            return {"ok": True}
        if op == "launch":  # reps x (cuLaunchKernel + cuStreamSynchronize), each call a round trip
            fn, blob, reps = self.functions[req["key"]], self.blob(req["args"]), int(req["reps"])
            grid, block = req["grid"], req["block"]
            t0 = time.perf_counter()
            for _ in range(reps):
                cu.launch(fn, grid, block, s, blob=blob)
                cu.stream_synchronize(s)
            return {"ops": reps, "seconds": time.perf_counter() - t0}
        if op == "graph":  # a captured graph of `nodes` launches: cuGraphLaunch + cuStreamSynchronize
            key = (req["key"], int(req["nodes"]))
            if key not in self.graphs:
                fn, blob = self.functions[req["key"]], self.blob(req["args"])
                with cu.capture(s) as g:
                    for _ in range(key[1]):
                        cu.launch(fn, req["grid"], req["block"], s, blob=blob)
                self.graphs[key] = (g[0], cu.graph_instantiate(g[0]))
            graph_exec = self.graphs[key][1]
            reps = int(req.get("reps", 1))
            t0 = time.perf_counter()
            for _ in range(reps):
                cu.graph_launch(graph_exec, s)
                cu.stream_synchronize(s)
            return {"ops": key[1] * reps, "seconds": time.perf_counter() - t0}
        if op == "copy":  # reps x (cuMemcpy*Async + cuStreamSynchronize) between pinned host and device memory
            size, reps = int(req["size"]), int(req["reps"])
            if size not in self.copies:
                host = cu.host_alloc(size)
                d0, d1 = cu.mem_alloc(size), cu.mem_alloc(size)
                self.copies[size] = (host, d0, d1)
                cu.memset_d8(d0, 0x5A, size)
            host, d0, d1 = self.copies[size]
            copy: Callable[[], None] = {
                "h2d": lambda: cu.memcpy_htod_async(d0, host, size, s),
                "d2h": lambda: cu.memcpy_dtoh_async(host, d0, size, s),
                "d2d": lambda: cu.memcpy_dtod_async(d1, d0, size, s)}[req["kind"]]
            t0 = time.perf_counter()
            for _ in range(reps):
                copy()
                cu.stream_synchronize(s)
            return {"ops": reps, "seconds": time.perf_counter() - t0}
        if op == "matmul_setup":  # upload the seeded operands, run once, check against numpy
            import numpy as np

            from tools.bench.reference import matmul_operands
            n = int(req["n"])
            a, b = matmul_operands(n)
            for name, arr in (("a", a), ("b", b), ("out", None)):
                ptr = self.matmul[name] = cu.mem_alloc(n * n * 4)
                self.allocs.append(ptr)
                if arr is not None:
                    cu.memcpy_htod_async(ptr, arr.ctypes.data, arr.nbytes, s)
            cu.stream_synchronize(s)
            fn = self.functions[req["key"]]
            cu.launch(fn, req["grid"], req["block"], s, blob=self.blob(req["args"]))
            got = np.empty((n, n), np.float32)
            cu.memcpy_dtoh_async(got.ctypes.data, self.matmul["out"], got.nbytes, s)
            cu.stream_synchronize(s)
            ref = a @ b
            return {"max_rel_err": float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-30))}
        raise ValueError(f"unknown op {op!r}; the worker knows load, launch, graph, copy, matmul_setup")

    def close(self) -> None:
        cu = self.cu
        for graph, graph_exec in self.graphs.values():
            cu.graph_exec_destroy(graph_exec)
            cu.graph_destroy(graph)
        for host, d0, d1 in self.copies.values():
            cu.free_host(host)
            cu.mem_free(d0)
            cu.mem_free(d1)
        for ptr in self.allocs + [self.scratch]:
            cu.mem_free(ptr)
        for module in self.modules:
            cu.module_unload(module)
        cu.stream_destroy(self.stream)
        cu.close()


def serve() -> None:
    """The CUDA worker's side: {"ready": info} (or {"unavailable": why} and exit), then one reply per request."""
    out = sys.stdout

    def send(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()
    try:
        state = _CudaState()
        info = state.cu.info()
    except Exception as e:  # no libcuda, no device: the parent's rows say so
        send({"unavailable": str(e) if "libcuda" in str(e) else f"{type(e).__name__}: {e}"})
        return
    send({"ready": {**info, "pid": os.getpid()}})
    for line in sys.stdin:
        try:
            reply = state.handle(json.loads(line))
        except Exception as e:  # the parent reports it with the request that caused it
            reply = {"error": f"{type(e).__name__}: {e}"}
        send(reply)
    state.close()


class CudaKernels:
    """Cubins handed to the CUDA worker, written to a temporary directory it reads (removed on close)."""

    def __init__(self, worker: CudaWorker):
        self.worker = worker
        self.tmp = tempfile.TemporaryDirectory(prefix="baregpu-nv-bench-")
        self.loaded: set[str] = set()

    def load(self, key: str, kernel: Any) -> Any:
        """Compile kernel for the CUDA device's architecture (no emulation record: a plain cubin) and load it
        there; the CompiledKernel."""
        from compiler import compile_kernel
        ck = compile_kernel(kernel, self.worker.target)
        if key not in self.loaded:
            path = Path(self.tmp.name) / f"{key}.cubin"
            path.write_bytes(ck.cubin)
            self.worker.request("load", key=key, path=str(path), name=ck.name)
            self.loaded.add(key)
        return ck

    def close(self) -> None:
        self.tmp.cleanup()


def _no_cuda_note(rows: list[Result], worker: CudaWorker) -> None:
    """Say on our rows that CUDA's side is missing: "no libcuda" (or the reason's first words; the whole reason is
    in the run's info lines)."""
    short = "no libcuda" if worker.why.startswith("no libcuda") else worker.why[:80]
    for r in rows:
        r.note = (r.note + "; " if r.note else "") + f"CUDA side not measured: {short}"
        r.extra["cuda"] = worker.why


def _bw(size: int, r: Result) -> float:
    """GB/s of one size-byte copy per op at the row's median."""
    return size / (r.p50_us * 1e-6) / 1e9 if r.p50_us > 0 else float("inf")


# --- 1. launch + sync ---
def run_launch(ctx: Context) -> list[Result]:
    worker = cuda_worker(ctx)
    calls = ctx.size(100, 5)
    nv = NV()
    kernels = CudaKernels(worker) if worker.available else None
    try:
        ck = nv.compile(nop_kernel())
        prog = nv.dev.load_program(ck)
        from hcq.buffer import MemFlags
        out = nv.dev.alloc(4096, MemFlags.DEVICE_LOCAL)
        blob = prog.pack_args(out.va)  # the program's own block (on NV: constant bank 0 with the parameters)
        tmpl = launch_template(nv, prog, (1, 1, 1), NOP_LOCAL)

        def built_each_call() -> tuple[int, float]:
            now, spent = time.perf_counter, 0.0
            for _ in range(calls):
                t0 = now()
                v = nv.next_value()
                nv.dev.compute_queue().exec(prog, blob, (1, 1, 1), NOP_LOCAL).signal(nv.dev.timeline, v).submit(nv.dev)
                nv.wait(v)
                spent += now() - t0
            return calls, spent

        def replayed() -> tuple[int, float]:
            now, spent = time.perf_counter, 0.0
            for _ in range(calls):
                t0 = now()
                nv.wait(submit(nv, tmpl, blob))
                spent += now() - t0
            return calls, spent

        fns = [built_each_call, replayed]
        if kernels is not None:
            cck = kernels.load("nop", nop_kernel())
            args = [[a.offset, a.size, "scratch"] for a in cck.args]
            fns.append(lambda: worker.run("launch", key="nop", reps=calls, args=args, grid=[1, 1, 1],
                                          block=list(NOP_LOCAL)))
        samples, ops = interleave(fns, ctx.rounds(30))
        fresh = summarize(f"nv launch+sync: empty kernel, queue built each call: exec + signal, wait ({nv.label})",
                          samples[0], ops[0], note=f"{calls} calls per round, each timed from build to wake-up")
        ours = summarize(f"nv launch+sync: empty kernel, replayed queue: exec + signal, wait ({nv.label})",
                         samples[1], ops[1], note="the tensor layer's path: args staged, Vars patched, submit, wait")
        rows = [fresh, ours]
        if kernels is not None:
            cuda = summarize(f"nv launch+sync: empty kernel, cuLaunchKernel + cuStreamSynchronize (CUDA, "
                             f"{worker.target})", samples[2], ops[2], note="the same kernel's cubin, in the worker")
            versus(ours, cuda, "CUDA", goal=LAUNCH_GOAL)
            versus(fresh, cuda, "CUDA")
            rows.append(cuda)
        else:
            ours.target, ours.met = f"<= CUDA's p50 (>= {LAUNCH_GOAL:.2f}x CUDA)", None
            _no_cuda_note(rows, worker)
        return rows
    finally:
        if kernels is not None:
            kernels.close()
        nv.close()


# --- 2. replay per kernel ---
def run_replay(ctx: Context) -> list[Result]:
    worker = cuda_worker(ctx)
    nv = NV()
    # the emulated GPU runs every kernel on the host: 100 per replay keeps a full run in minutes
    nodes = ctx.size(NODES if not nv.emulated else 100, 20)
    kernels = CudaKernels(worker) if worker.available else None
    try:
        ck = nv.compile(nop_kernel())
        prog = nv.dev.load_program(ck)
        from hcq.buffer import MemFlags
        out = nv.dev.alloc(4096, MemFlags.DEVICE_LOCAL)
        blob = prog.pack_args(out.va)  # the program's own block (on NV: constant bank 0 with the parameters)
        q = launch_template(nv, prog, (1, 1, 1), NOP_LOCAL, count=nodes)

        def submit_only() -> tuple[int, float]:
            t0 = time.perf_counter()
            v = submit(nv, q, blob)
            spent = time.perf_counter() - t0
            nv.wait(v)  # the device's work, outside the measurement
            return nodes, spent

        def submit_and_wait() -> int:
            nv.wait(submit(nv, q, blob))
            return nodes

        fns: list[Callable[[], Any]] = [submit_only, submit_and_wait]
        if kernels is not None:
            cck = kernels.load("nop", nop_kernel())
            args = [[a.offset, a.size, "scratch"] for a in cck.args]
            fns.append(lambda: worker.run("graph", key="nop", nodes=nodes, reps=1, args=args, grid=[1, 1, 1],
                                          block=list(NOP_LOCAL)))
        samples, ops = interleave(fns, ctx.rounds(20))
        driver = summarize(f"nv replay: {nodes}-exec queue, per kernel, submit only, no sync ({nv.label})",
                           samples[0], ops[0], note="patch 2 Vars + hand the stream to the GPFIFO; driver time only")
        ours = summarize(f"nv replay: {nodes}-exec queue, per kernel, submit + wait for the last ({nv.label})",
                         samples[1], ops[1], target_us=REPLAY_TARGET_US,
                         note="the whole replay over its kernels: what the GPU takes per kernel")
        rows = [driver, ours]
        if kernels is not None:
            cuda = summarize(f"nv replay: CUDA graph of {nodes} kernel nodes, per node, cuGraphLaunch + sync "
                             f"(CUDA, {worker.target})", samples[2], ops[2], note="captured once, launched per round")
            versus(ours, cuda, "CUDA graph")
            rows.append(cuda)
        else:
            _no_cuda_note(rows, worker)
        return rows
    finally:
        if kernels is not None:
            kernels.close()
        nv.close()


# --- 3. copies ---
def _host_memory(nv: NV, size: int) -> tuple[Any, str]:
    """Pinned system memory the copy engine reaches: a host-visible (not device-local) allocation, the analogue of
    cuMemHostAlloc; and a word for the row."""
    from hcq.buffer import MemFlags
    return nv.dev.alloc(size, MemFlags.HOST_VISIBLE), "host-visible sysmem"


def run_copy(ctx: Context) -> list[Result]:
    import numpy as np

    from hcq.buffer import MemFlags
    worker = cuda_worker(ctx)
    size = ctx.size(COPY_BYTES, 1 << 20)
    reps = ctx.size(4, 1)
    nv = NV()
    try:
        host, kind = _host_memory(nv, size)
        d0, d1 = nv.dev.alloc(size, MemFlags.DEVICE_LOCAL), nv.dev.alloc(size, MemFlags.DEVICE_LOCAL)
        from hcq.queue import Var

        def template(dst: int, src: int) -> Any:
            return nv.dev.copy_queue().copy(dst, src, size).signal(nv.dev.timeline, Var("v"))
        queues = {"h2d": template(d0.va, host.va), "d2h": template(host.va, d0.va), "d2d": template(d1.va, d0.va)}

        def run(k: str) -> None:
            v = nv.next_value()
            queues[k].submit(nv.dev, {"v": v})
            nv.wait(v)
        # untimed check that the three copies move the bytes: host -> d0 -> d1 -> host
        pattern = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8)
        host.numpy(np.uint8)[:] = pattern
        run("h2d")
        run("d2d")
        host.numpy(np.uint8)[:] = 0
        back = nv.next_value()
        nv.dev.copy_queue().copy(host.va, d1.va, size).signal(nv.dev.timeline, back).submit(nv.dev)
        nv.wait(back)
        if not np.array_equal(host.numpy(np.uint8), pattern):
            raise BenchError(f"{nv.label}: host -> device -> device -> host copies of {size} bytes did not bring the "
                             "bytes back; the copy rows would measure nothing")
        rows: list[Result] = []
        for k, what in (("h2d", "host -> device"), ("d2h", "device -> host"), ("d2d", "device -> device")):
            def ours(k: str = k) -> int:
                for _ in range(reps):
                    run(k)
                return reps
            fns: list[Callable[[], Any]] = [ours]
            if worker.available:
                fns.append(lambda k=k: worker.run("copy", kind=k, size=size, reps=reps))
            samples, ops = interleave(fns, ctx.rounds(10))
            memory = "device memory both sides" if k == "d2d" else kind
            mine = summarize(f"nv copy {what}, {size >> 20} MiB, copy + wait ({nv.label}, copy queue, {memory})",
                             samples[0], ops[0])
            mine.extra["GB/s"] = _bw(size, mine)
            mine.note = f"{mine.extra['GB/s']:.1f} GB/s"
            rows.append(mine)
            if worker.available:
                cuda = summarize(f"nv copy {what}, {size >> 20} MiB, cuMemcpy{k[0].upper()}to{k[2].upper()}Async + "
                                 f"sync (CUDA, pinned cuMemHostAlloc)", samples[1], ops[1])
                cuda.extra["GB/s"] = _bw(size, cuda)
                cuda.note = f"{cuda.extra['GB/s']:.1f} GB/s"
                versus(mine, cuda, "CUDA", goal=COPY_GOAL)
                rows.append(cuda)
            else:
                mine.target, mine.met = f">= {COPY_GOAL:.2f}x CUDA's bandwidth", None
                _no_cuda_note([mine], worker)
        return rows
    finally:
        nv.close()


# --- 4. matmul ---
def run_matmul(ctx: Context) -> list[Result]:
    import numpy as np

    from hcq.buffer import MemFlags
    from tensor import DEVICES, Tensor
    from tensor.codegen import kernel_for
    from tools.bench.reference import matmul_operands
    worker = cuda_worker(ctx)
    nv = NV()
    # an emulated GPU runs the host build on this machine's cores: a smaller matrix keeps the run in minutes
    n = ctx.size(MATMUL_N, 128) if not nv.emulated else ctx.size(512, 128)
    a_np, b_np = matmul_operands(n)
    DEVICES.close()
    DEVICES.add("NV", nv.dev)  # the tensor layer's "NV" is this device; DEVICES.close() closes it
    kernels = CudaKernels(worker) if worker.available else None
    try:
        rt = DEVICES["NV"]
        a, b = Tensor(a_np, device="NV").realize(), Tensor(b_np, device="NV").realize()
        rt.synchronize()
        ref = a_np @ b_np

        def rel_err(got: Any) -> float:
            return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-30))
        err = rel_err((a @ b).numpy())  # compiles and loads the kernel, and checks it
        if err > 1e-4:
            raise BenchError(f"{nv.label}: the tensor layer's {n}x{n} matmul differs from numpy by {err:.2e} "
                             "(relative to the largest value); its time would mean nothing")

        def tensor_layer() -> int:
            (a @ b).realize()
            rt.synchronize()
            return 1

        # the tensor layer's kernel itself, launched by our driver on our buffers
        kernel, inputs, grid = kernel_for((a @ b).node)
        if [x is a.node for x in inputs] != [True, False] or inputs[1] is not b.node:
            raise BenchError(f"the matmul kernel's inputs are not (a, b) in that order: {inputs}")
        ck = nv.compile(kernel)
        prog = nv.dev.load_program(ck)
        out = nv.dev.alloc(n * n * 4, MemFlags.DEVICE_LOCAL)
        blob = prog.pack_args(out.va, a.node.buffer.va, b.node.buffer.va)
        q = launch_template(nv, prog, grid, kernel.local_size)

        def ours_raw() -> int:
            nv.wait(submit(nv, q, blob))
            return 1

        def numpy_here() -> int:
            a_np @ b_np
            return 1

        fns: list[Callable[[], Any]] = [tensor_layer, ours_raw, numpy_here]
        cuda_err = None
        if kernels is not None:
            cck = kernels.load("matmul", kernel)
            args = [[x.offset, x.size, role] for x, role in zip(cck.args, ("out", "a", "b"))]
            cuda_err = worker.request("matmul_setup", key="matmul", n=n, grid=list(grid),
                                      block=list(kernel.local_size), args=args)["max_rel_err"]
            fns.append(lambda: worker.run("launch", key="matmul", reps=1, args=args, grid=list(grid),
                                          block=list(kernel.local_size)))
        samples, ops = interleave(fns, ctx.rounds(10))
        flop = 2 * n ** 3
        shape = f"{n}x{n}x{n} f32"
        rows = [summarize(f"nv matmul {shape}: tensor layer (a @ b).realize() + sync ({nv.label})", samples[0], ops[0]),
                summarize(f"nv matmul {shape}: its kernel {kernel.name}, our driver exec + wait ({nv.label})",
                          samples[1], ops[1]),
                summarize(f"nv matmul {shape}: numpy in this process (default BLAS threads)", samples[2], ops[2])]
        if kernels is not None:
            rows.append(summarize(f"nv matmul {shape}: the same cubin via cuModuleLoadData, cuLaunchKernel + sync "
                                  f"(CUDA, {worker.target})", samples[3], ops[3],
                                  note=f"result vs numpy: max rel err {cuda_err:.1e}"))
        for r in rows:
            r.extra["GFLOP/s"] = flop / (r.p50_us * 1e-6) / 1e9 if r.p50_us > 0 else float("inf")
            r.note = (r.note + "; " if r.note else "") + f"{r.extra['GFLOP/s']:.1f} GFLOP/s"
        versus(rows[0], rows[2], "numpy")
        if kernels is not None:
            versus(rows[1], rows[3], "CUDA (same cubin)")
        else:
            _no_cuda_note(rows[:2], worker)
        rows[0].note += f"; result vs numpy: max rel err {err:.1e}"
        if nv.emulated and not ctx.quick:
            rows[0].note += f"; emulated: {n} instead of {MATMUL_N}"
        return rows
    finally:
        if kernels is not None:
            kernels.close()
        DEVICES.close()  # closes nv.dev with the runtime
        if not nv.dev.closed:
            nv.close()


BENCHES = [
    Bench("nv.launch", "nv: empty-kernel launch + sync latency, ours (built each call, replayed) vs cuLaunchKernel + "
          "sync", run_launch, f"ours <= CUDA's p50 (>= {LAUNCH_GOAL:.2f}x CUDA)"),
    Bench("nv.replay", f"nv: per-kernel replay of a {NODES}-exec queue vs a CUDA graph of {NODES} nodes", run_replay,
          f"p50 <= {REPLAY_TARGET_US:g} us per kernel"),
    Bench("nv.copy", f"nv: H2D / D2H / D2D bandwidth at {COPY_BYTES >> 20} MiB, copy queue vs cuMemcpy*Async (pinned)",
          run_copy, f">= {COPY_GOAL:.2f}x CUDA's bandwidth"),
    Bench("nv.matmul", f"nv: {MATMUL_N}x{MATMUL_N} f32 matmul, tensor layer vs numpy; its kernel via our driver vs "
          "via CUDA (same cubin)", run_matmul),
]
