"""Driver-side submission cost on the CPU device: encode+submit, replay per kernel, and signal waits."""
from __future__ import annotations

from tools.bench import Result, measure

SUBMIT_TARGET_US, REPLAY_TARGET_US = 5.0, 0.5  # issue targets: per submit, per kernel in a replayed queue


class Nop:
    """A program that does nothing: the measurement is the driver's cost, not the kernel's."""
    name = "nop"

    def run(self, kernargs: int, global_size, local_size) -> None:
        pass


def run() -> list[Result]:
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
