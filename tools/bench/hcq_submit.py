"""Driver-side submission cost on the CPU device: encode+submit, replay per kernel, and signal waits."""
from __future__ import annotations

import time
from pathlib import Path

from tools.bench import Result, measure

SUBMIT_TARGET_US, REPLAY_TARGET_US = 5.0, 0.5  # issue targets: per submit, per kernel in a replayed queue


class Nop:
    """A program that does nothing: the measurement is the driver's cost, not the kernel's."""
    name = "nop"

    def run(self, kernargs: int, global_size, local_size) -> None:
        pass


def run() -> list[Result]:
    return run_cpu() + run_amd()


def run_amd() -> list[Result]:
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
    dev = KFDDevice(0, emulated_system("amd", ("gfx1100",)))
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

        return [measure("hcq: build + submit one exec (KFD driver, emulated gfx1100)", build_and_submit, rounds=10,
                        target_us=SUBMIT_TARGET_US, note="driver time only; emulator excluded"),
                measure(f"hcq: replay per kernel (KFD driver, {kernels}-kernel queue)", replay, rounds=10,
                        target_us=REPLAY_TARGET_US, note="driver time only; emulator excluded")]
    finally:
        dev.close()


def run_cpu() -> list[Result]:
    from drivers.cpu.device import CPUDevice
    from hcq.queue import Var
    dev = CPUDevice(arena_size=1 << 28)
    try:
        prog = dev.load_program(Nop())
        args = dev.alloc(64)
        sig = dev.new_signal(0)

        def build_and_submit() -> int:
            for _ in range(200):
                dev.compute_queue().exec(prog, args, (1, 1, 1), (1, 1, 1)).submit(dev)
            return 200

        kernels = 100
        q = dev.compute_queue()
        for _ in range(kernels):
            q.exec(prog, Var("args"), (1, 1, 1), (1, 1, 1))
        q.signal(sig, Var("v"))
        value = [0]

        def replay() -> int:
            value[0] += 1
            q.submit(dev, {"args": args.va, "v": value[0]})
            return kernels

        sig.value = 1 << 40

        def wait_reached() -> int:
            for _ in range(1000):
                sig.wait(1, timeout=1)
            return 1000

        results = [measure("hcq: build + submit one exec (CPU device)", build_and_submit, target_us=SUBMIT_TARGET_US,
                           note="encode + ring copy; the engine runs concurrently"),
                   measure(f"hcq: replay, per kernel ({kernels}-kernel queue)", replay, target_us=REPLAY_TARGET_US,
                           note="patch 2 vars + copy the stream to the ring"),
                   measure("hcq: signal wait, already reached", wait_reached)]
        dev.synchronize(timeout=60)
        return results
    finally:
        dev.close()
