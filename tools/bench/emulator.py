"""The emulated AMD GPU's own costs: how fast its wave executor runs machine code, and what one small kernel costs
end to end on it next to the CPU device, with the machine code, the host-build fast mode and hazard mode.

1. ISA executor speed: a tiled matmul and an elementwise chain realized on an emulated gfx1100 running machine
   code; the wave-instructions the command processor reports executed (its `isa_instructions` counter) over the
   wall time of the realize. The time per wave-instruction is the row; the note gives instructions per second.
2. Per kernel: `(a + 1).numpy()` on 16 floats, each call timed singly, on the CPU device and on emulated gfx1100
   running machine code, running host builds (BAREGPU_EMU_KERNELS=host), and running machine code in hazard
   mode. Each emulated row says how many times the CPU's median it costs.

Rows are measured and printed, never asserted (timing on a shared machine is not a test).
"""
from __future__ import annotations

import time
from typing import Any

from tools.bench import Bench, Context, Result, summarize

HAZARD_SEED = 1  # any seed: the row measures hazard mode's cost, not a particular interleaving


def _emulated(kernels: str = "isa", hazard: int | None = None) -> Any:
    """An emulated gfx1100 on a private machine, opened as the tensor layer's "AMD"."""
    from drivers.amd.kfd import KFDDevice
    from emu.machine import HAZARD_OFF, emulated_system
    from tensor import DEVICES
    system = emulated_system("amd", ("gfx1100",), private=True, kernels=kernels,
                             hazard=HAZARD_OFF if hazard is None else hazard)
    DEVICES.close()
    DEVICES.add("AMD", KFDDevice(0, system))
    return system


def _isa_speed(ctx: Context) -> list[Result]:
    import numpy as np

    from tensor import DEVICES, Tensor
    system = _emulated()
    rng = np.random.default_rng(0)
    n = ctx.size(128, 32)
    a = Tensor(rng.standard_normal((n, n)).astype(np.float32), device="AMD")
    b = Tensor(rng.standard_normal((n, n)).astype(np.float32), device="AMD")
    x = Tensor(rng.standard_normal(ctx.size(1 << 16, 1 << 12)).astype(np.float32), device="AMD")
    work = {f"matmul {n}x{n}x{n} (tiled, LDS)": lambda: (a @ b).numpy(),
            f"exp/sin chain on {x.shape[0]} f32": lambda: ((x * 0.5).exp().sin() + 1.0).numpy()}
    rows = []
    try:
        for name, fn in work.items():
            fn()  # compiles, loads and decodes once
            samples, total = [], 0
            for _ in range(ctx.rounds(5)):
                before = system.kfd.cp_counters().get("isa_instructions", 0)
                t0 = time.perf_counter()
                fn()
                seconds = time.perf_counter() - t0
                count = system.kfd.cp_counters().get("isa_instructions", 0) - before
                samples.append(seconds * 1e6 / max(count, 1))
                total += count
            r = summarize(f"emulated gfx1100 wave executor: {name}, per wave-instruction", samples, total,
                          note="whole realize (driver and copies included) over the instructions executed")
            r.extra["measured"] = f"{1e6 / r.p50_us / 1e3:.0f}k wave-instructions/s"
            r.note += f"; {r.extra['measured']}"
            rows.append(r)
    finally:
        DEVICES.close()
    return rows


def _tiny_on(device: str, calls: int) -> list[float]:
    import numpy as np

    from tensor import Tensor
    a = Tensor(np.arange(16, dtype=np.float32), device=device)
    (a + 1).numpy()  # compiles and loads the kernel
    now, samples = time.perf_counter_ns, []
    for _ in range(calls):
        t0 = now()
        (a + 1).numpy()
        samples.append((now() - t0) / 1e3)
    return samples


def _per_kernel(ctx: Context) -> list[Result]:
    from tensor import DEVICES
    calls = ctx.size(200, 10)
    cpu = summarize("per kernel: (a + 1).numpy(), 16 f32, synced, timed singly (CPU)", _tiny_on("CPU", calls),
                    calls)
    rows = [cpu]
    modes = [("machine code", "isa", None), ("host builds (fast mode)", "host", None),
             ("machine code, hazard mode", "isa", HAZARD_SEED)]
    try:
        for label, kernels, hazard in modes:
            _emulated(kernels, hazard)
            r = summarize(f"per kernel: the same on emulated gfx1100, {label}", _tiny_on("AMD", calls), calls)
            r.extra["x CPU"] = r.p50_us / cpu.p50_us
            r.note = f"{r.extra['x CPU']:.1f}x the CPU device"
            rows.append(r)
            DEVICES.close()
    finally:
        DEVICES.close()
    return rows


BENCHES = [
    Bench("emulator.isa", "emulated AMD wave executor: time per wave-instruction (matmul, elementwise chain)",
          _isa_speed),
    Bench("emulator.per_kernel", "per-kernel cost: CPU vs emulated AMD (machine code, host builds, hazard mode)",
          _per_kernel),
]
