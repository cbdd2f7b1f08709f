"""Driver-side submission cost: encode+submit, replay per kernel, signal waits, and kernel-argument staging
against the number of launches in flight, on the CPU device and the KFD driver over the emulated gfx1100.

"submit only, no sync" rows time building and submitting; the device's execution and the wait for it are
outside the timed region (the device is synchronized after each timed loop). The "synced" row beside them
times submit then synchronize, call by call.

Staging rows: a launch passing its arguments as bytes has them copied into the device's kernel-argument ring at
submit, where they stay until the timeline shows the launch finished. To hold D launches in flight, the
compute engine is first made to wait on a gate signal, D launches are queued behind it (untimed), then
launches are built and submitted one by one (timed singly), then the gate opens. The three depths run
interleaved round by round; the target is a flat cost: the median at 64 and 256 within 1.25x of that at 1.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tools.bench import Bench, Context, Result, interleave, measure, summarize

SUBMIT_TARGET_US, REPLAY_TARGET_US = 5.0, 0.5  # issue targets: per submit, per kernel in a replayed queue
STAGING_DEPTHS = (1, 64, 256)  # launches in flight (the CPU ring takes 256 submissions; prefill packs 8 per one)
STAGING_FLAT = 1.25  # "flat": deeper queues cost at most this much more per launch than 1 in flight
STAGING_PREFILL_PER_SUBMIT = 8
KFD_LOCK_WAIT_S = 30.0  # seconds to wait for the emulated GPU when another process holds it


class Nop:
    """A program that does nothing: the measurement is the driver's cost, not the kernel's."""
    name = "nop"

    def run(self, kernargs: int, global_size, local_size) -> None:
        pass


def run_amd(ctx: Context) -> list[Result]:
    """The KFD driver's own cost on the emulated gfx1100: encoding and ringing, while the emulated CP runs in
    another process (so its time is not in these numbers, though it shares the machine's cores)."""
    import tempfile

    import numpy as np  # noqa: F401 - the compiler needs it loaded before timing starts

    from compiler import KernelCache, compile_kernel
    from compiler.ir import Kernel, f32
    from drivers.amd.kfd import KFDDevice
    from emu.machine import emulated_system
    from hcq.buffer import MemFlags
    from hcq.queue import Var
    k = Kernel("nop_amd", local_size=(32, 1, 1))
    out = k.buffer("out", f32, writable=True)
    with k.if_(k.global_id(0) < 0):
        out[0] = 1.0
    # The emulated machine is machine-wide: another program (a test, gpu_probe) may hold it for a moment.
    dev = KFDDevice(0, emulated_system("amd", ("gfx1100",)), lock_wait=KFD_LOCK_WAIT_S)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prog = dev.load_program(compile_kernel(k, "gfx1100", KernelCache(Path(tmp)), emulation=True))
        args = dev.alloc(64, MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE)

        def build_and_submit() -> tuple[int, float]:
            t0 = time.perf_counter()
            for _ in range(100):
                dev.compute_queue().exec(prog, args, (1, 1, 1), (32, 1, 1)).submit(dev)
            spent = time.perf_counter() - t0
            dev.synchronize(timeout=60)  # not the driver's cost; keeps the ring from filling
            return 100, spent

        kernels = 50
        q = dev.compute_queue()
        for _ in range(kernels):
            q.exec(prog, Var("args"), (1, 1, 1), (32, 1, 1))
        q.signal(dev.timeline, Var("t"))

        def replay() -> tuple[int, float]:
            t0 = time.perf_counter()
            q.submit(dev, {"args": args.va, "t": dev.next_timeline_value()})
            spent = time.perf_counter() - t0
            dev.synchronize(timeout=60)
            return kernels, spent

        rounds = ctx.rounds(10)
        return [measure("hcq: build + submit one exec, submit only, no sync (KFD driver, emulated gfx1100)",
                        build_and_submit, rounds=rounds, target_us=SUBMIT_TARGET_US,
                        note="driver time only; emulator excluded"),
                measure(f"hcq: replay per kernel, submit only, no sync (KFD driver, {kernels}-kernel queue)", replay,
                        rounds=rounds, target_us=REPLAY_TARGET_US, note="driver time only; emulator excluded")]
    finally:
        dev.close()


def run_cpu(ctx: Context) -> list[Result]:
    from drivers.cpu.device import CPUDevice
    from hcq.queue import Var
    rounds = ctx.rounds(30)
    per_round = 20 if ctx.quick else 200
    dev = CPUDevice(arena_size=1 << 28)
    try:
        prog = dev.load_program(Nop())
        args = dev.alloc(64)
        sig = dev.new_signal(0)

        def drain() -> None:
            """Wait for everything submitted (queues that signal nothing are covered by one that signals after)."""
            dev.compute_queue().signal(dev.timeline, dev.next_timeline_value()).submit(dev)
            dev.synchronize(timeout=60)

        def build_and_submit() -> tuple[int, float]:
            t0 = time.perf_counter()
            for _ in range(per_round):
                dev.compute_queue().exec(prog, args, (1, 1, 1), (1, 1, 1)).submit(dev)
            spent = time.perf_counter() - t0
            drain()  # the engine's work, outside the measurement
            return per_round, spent

        def build_submit_sync() -> tuple[int, float]:
            spent = 0.0
            for _ in range(per_round):
                t0 = time.perf_counter()
                q = dev.compute_queue().exec(prog, args, (1, 1, 1), (1, 1, 1))
                q.signal(dev.timeline, dev.next_timeline_value()).submit(dev)
                dev.synchronize(timeout=60)
                spent += time.perf_counter() - t0
            return per_round, spent

        kernels = 100
        q = dev.compute_queue()
        for _ in range(kernels):
            q.exec(prog, Var("args"), (1, 1, 1), (1, 1, 1))
        q.signal(sig, Var("v"))
        value = [0]

        def replay() -> tuple[int, float]:
            t0 = time.perf_counter()
            value[0] += 1
            q.submit(dev, {"args": args.va, "v": value[0]})
            spent = time.perf_counter() - t0
            sig.wait(value[0], timeout=60)
            return kernels, spent

        sig2 = dev.new_signal(1 << 40)

        def wait_reached() -> int:
            for _ in range(per_round * 5):
                sig2.wait(1, timeout=1)
            return per_round * 5

        results = [measure("hcq: build + submit one exec, submit only, no sync (CPU device)", build_and_submit,
                           rounds=rounds, target_us=SUBMIT_TARGET_US, note="encode + ring copy; the engine runs "
                           "concurrently, synchronized outside the timed loop"),
                   measure("hcq: build + submit one exec + synchronize, synced, per call (CPU device)",
                           build_submit_sync, rounds=rounds, note="the whole call: the engine runs the no-op and "
                           "signals, the host wakes"),
                   measure(f"hcq: replay, per kernel, submit only, no sync ({kernels}-kernel queue, CPU device)",
                           replay, rounds=rounds, target_us=REPLAY_TARGET_US,
                           note="patch 2 vars + copy the stream to the ring"),
                   measure("hcq: signal wait, already reached", wait_reached, rounds=rounds)]
        drain()
        return results
    finally:
        dev.close()


def run_staging(ctx: Context) -> list[Result]:
    """Per-launch build + submit with kernel arguments staged, at each depth of STAGING_DEPTHS (see the docstring)."""
    from drivers.cpu.device import CPUDevice
    timed = 4 if ctx.quick else 16
    dev = CPUDevice(arena_size=1 << 28)
    try:
        prog = dev.load_program(Nop())
        gate = dev.new_signal(0)
        blob = bytes(16)  # two buffer addresses' worth, like a small tensor kernel

        def launch_queue(execs: int) -> Any:
            q = dev.compute_queue()
            q.wait(dev.timeline, dev.timeline_value)  # the tensor runtime's chain: after the previous submission
            q.memory_barrier()
            for _ in range(execs):
                q.exec(prog, blob, (1, 1, 1), (1, 1, 1))
            return q.signal(dev.timeline, dev.next_timeline_value())

        def at_depth(depth: int) -> tuple[int, float]:
            gate.value = 0
            dev.compute_queue().wait(gate, 1).submit(dev)
            left = depth
            while left:
                n = min(left, STAGING_PREFILL_PER_SUBMIT)
                launch_queue(n).submit(dev)
                left -= n
            spent = 0.0
            for _ in range(timed):
                t0 = time.perf_counter()
                launch_queue(1).submit(dev)
                spent += time.perf_counter() - t0
            gate.value = 1
            dev.synchronize(timeout=60)
            return timed, spent

        rounds = ctx.rounds(30)
        samples, ops = interleave([lambda d=d: at_depth(d) for d in STAGING_DEPTHS], rounds)
        results = []
        for depth, s, n in zip(STAGING_DEPTHS, samples, ops):
            results.append(summarize(f"hcq: kernel-arg staging, build + submit per launch, {depth} in flight, "
                                     "submit only, no sync (CPU device)", s, n,
                                     note=f"{timed} launches timed singly per round behind {depth} held by a gate"))
        base = results[0].p50_us
        for r, depth in zip(results, STAGING_DEPTHS):
            growth = r.p50_us / base if base > 0 else float("inf")
            r.extra.update({"depth": depth, "vs depth 1": growth})
            r.note += f"; {growth:.2f}x the 1-in-flight p50"
            r.extra["measured"] = f"{growth:.2f}x 1 in flight"
            if depth != STAGING_DEPTHS[0]:
                r.target, r.met = f"flat: <= {STAGING_FLAT:g}x 1 in flight", growth <= STAGING_FLAT
        return results
    finally:
        dev.close()


BENCHES = [
    Bench("hcq.cpu", "hcq: build + submit (no sync / synced), replay, signal wait on the CPU device", run_cpu,
          f"p50 <= {SUBMIT_TARGET_US:g} us per submit, <= {REPLAY_TARGET_US:g} us per replayed kernel"),
    Bench("hcq.staging", "hcq: kernel-arg staging, build + submit per launch with "
          + ", ".join(map(str, STAGING_DEPTHS)) + " in flight (CPU device)", run_staging,
          f"flat: <= {STAGING_FLAT:g}x 1 in flight"),
    Bench("hcq.kfd", "hcq: build + submit and replay on the KFD driver over the emulated gfx1100", run_amd,
          f"p50 <= {SUBMIT_TARGET_US:g} us per submit, <= {REPLAY_TARGET_US:g} us per replayed kernel"),
]
