"""The KFD driver on a real AMD GPU: selected when /dev/kfd is present, skipped with the reason otherwise."""
from __future__ import annotations

import os

import pytest

from drivers.amd.topology import read_topology
from drivers.system import LinuxSystem
from hcq.buffer import MemFlags

pytestmark = pytest.mark.hardware


def _real_gpu_reason() -> str | None:
    if not os.path.exists("/dev/kfd"):
        return "no AMD GPU: /dev/kfd does not exist on this machine"
    if not os.access("/dev/kfd", os.R_OK | os.W_OK):
        return "/dev/kfd is not accessible: join the render and video groups"
    if not read_topology(LinuxSystem()):
        return "/dev/kfd exists but the KFD topology lists no GPU"
    return None


@pytest.mark.skipif(_real_gpu_reason() is not None, reason=str(_real_gpu_reason()))
def test_real_gpu_memory_round_trip():
    from drivers.amd.kfd import KFDDevice
    with KFDDevice(0, LinuxSystem()) as dev:
        buf = dev.alloc(1 << 20, MemFlags.HOST_VISIBLE)
        view = buf.cpu_view()
        view[:8] = b"baregpu!"
        assert bytes(view[:8]) == b"baregpu!"
        dev.free(buf)
