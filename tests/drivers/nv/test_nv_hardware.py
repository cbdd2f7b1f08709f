"""The NV driver on a real NVIDIA GPU: selected when /dev/nvidiactl is present, skipped with the reason otherwise.
The contract and tensor suites run on the real card too (their device lists find it); these check what only a
card can: the probe's facts against the driver's, and a kernel's SASS (which the emulator never runs) computing."""
from __future__ import annotations

import os

import numpy as np
import pytest

from drivers.system import LinuxSystem
from hcq.buffer import MemFlags

pytestmark = pytest.mark.hardware


def _real_gpu_reason() -> str | None:
    from drivers.registry import nv_gpu_count
    if not os.path.exists("/dev/nvidiactl"):
        return "no NVIDIA GPU: /dev/nvidiactl does not exist on this machine"
    if not os.access("/dev/nvidiactl", os.R_OK | os.W_OK):
        return "/dev/nvidiactl is not accessible: join the group that owns it (often video)"
    if not os.path.exists("/dev/nvidia-uvm"):
        return "/dev/nvidia-uvm is missing: load nvidia-uvm (modprobe nvidia-uvm)"
    if not nv_gpu_count(LinuxSystem()):
        return "/dev/nvidiactl exists but there is no /dev/nvidiaN"
    return None


REASON = _real_gpu_reason()
needs_gpu = pytest.mark.skipif(REASON is not None, reason=str(REASON))


@needs_gpu
def test_the_probe_and_the_driver_agree_on_the_card():
    from drivers.nv.device import NVDevice
    from drivers.nv.probe import probe
    facts = probe(LinuxSystem())
    assert facts["driver"]["open_kernel_module"], facts["driver"]
    with NVDevice(0, LinuxSystem()) as dev:
        assert facts["gpus"][0]["target"] == dev.target


@needs_gpu
def test_the_sass_of_a_compiled_kernel_computes_on_the_card(tmp_path):
    from compiler import KernelCache, compile_kernel
    from compiler.ir import Kernel, f32
    from drivers.nv.device import NVDevice
    k = Kernel("nv_hw_axpb", local_size=(128, 1, 1))
    x, y, n = k.buffer("x", f32), k.buffer("y", f32, writable=True), k.scalar("n")
    i = k.global_id(0)
    with k.if_(i < n):
        y[i] = x[i] * 3.0 + 0.5
    with NVDevice(0, LinuxSystem()) as dev:
        prog = dev.load_program(compile_kernel(k, dev.target, KernelCache(tmp_path)))
        count = 100_000
        xb = dev.alloc(4 * count, MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE)
        yb = dev.alloc(4 * count, MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE)
        xs = np.random.default_rng(0).standard_normal(count).astype(np.float32)
        xb.numpy(np.float32)[:] = xs
        dev.compute_queue().exec(prog, prog.pack_args(xb.va, yb.va, count), (-(-count // 128), 1, 1), (128, 1, 1)) \
            .signal(dev.timeline, dev.next_timeline_value()).submit(dev)
        dev.synchronize(timeout=30)
        np.testing.assert_allclose(yb.numpy(np.float32), xs * 3.0 + 0.5, rtol=1e-6)
