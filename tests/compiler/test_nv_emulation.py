"""The checked host build the emulated NVIDIA GPU runs: carried in the cubin, every buffer access bounded by the
mapping its buffer lies in, the first bad access recorded (and skipped) for the emulator to report as an MMU fault."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from compiler import compile_kernel
from compiler.emulation import (HostFault, NVHostBuild, load_checked_host, nv_emulation_record,
                                parse_nv_emulation_records)
from compiler.ir import Kernel, f32
from compiler.ptxas import ptxas_missing

NO_PTXAS = ptxas_missing()
needs_ptxas = pytest.mark.skipif(NO_PTXAS is not None, reason=f"no ptxas: {NO_PTXAS}")


def add_one() -> Kernel:
    k = Kernel("nv_add_one", local_size=(32, 1, 1))
    out, a, n = k.buffer("out", f32, writable=True), k.buffer("a", f32), k.scalar("n")
    i = k.workgroup_id(0) * 32 + k.local_id(0)
    with k.if_(i < n):
        out[i] = a[i] + 1.0
    return k


def run(build: NVHostBuild, blob: bytes, grid: int, limits: list[int]) -> HostFault:
    f = load_checked_host(build.obj, build.name)
    args = ctypes.create_string_buffer(blob, len(blob))
    lim = (ctypes.c_uint64 * len(limits))(*limits)
    fault = HostFault()
    f(ctypes.addressof(args), grid, 1, 1, 0, grid, ctypes.addressof(lim), ctypes.addressof(fault))
    return fault


def test_records_round_trip_and_refuse_truncation():
    rec = nv_emulation_record("k", (8, 2, 1), [(0, 8, True), (8, 4, False)], b"\x7fELF-object")
    image = b"\0" * 40 + rec + b"junk" + nv_emulation_record("k2", (1, 1, 1), [], b"o2")
    got = parse_nv_emulation_records(image)
    assert [(r.name, r.local_size, r.params, r.obj) for r in got] == [
        ("k", (8, 2, 1), ((0, 8, True), (8, 4, False)), b"\x7fELF-object"), ("k2", (1, 1, 1), (), b"o2")]
    with pytest.raises(ValueError, match="offset 0x28.*truncated"):
        parse_nv_emulation_records(b"\0" * 40 + rec[:-3])


@needs_ptxas
def test_the_cubin_carries_a_checked_build_that_bounds_every_access(cache):
    ck = compile_kernel(add_one(), "sm_90", cache, emulation=True)
    (build,) = parse_nv_emulation_records(ck.cubin)
    assert build.name == "nv_add_one" and build.local_size == (32, 1, 1)
    assert build.params == ((0, 8, True), (8, 8, True), (16, 4, False))
    assert ck.cubin_kernel.param_layout == [(o, n) for o, n, _ in build.params]  # the cbank block is the host's block
    n = 100
    a, out = np.arange(n, dtype=np.float32), np.zeros(n, np.float32)
    blob = ck.pack_args(out.ctypes.data, a.ctypes.data, n)

    assert run(build, blob, 4, [4 * n, 4 * n]).hit == 0
    np.testing.assert_array_equal(out, a + 1)

    out[:] = 0
    fault = run(build, blob, 4, [4 * n, 4 * 50])  # `a` is mapped for 50 elements only
    assert (fault.hit, fault.param, fault.offset, fault.write) == (1, 1, 200, 0)
    np.testing.assert_array_equal(out[:50], a[:50] + 1)
    assert (out[50:] == 1).all()  # the skipped loads read 0

    fault = run(build, blob, 4, [10, 4 * n])  # `out` has room for two floats and a half
    assert (fault.hit, fault.param, fault.offset, fault.write) == (1, 0, 8, 1)


@needs_ptxas
def test_a_build_without_emulation_carries_no_record(cache):
    assert parse_nv_emulation_records(compile_kernel(add_one(), "sm_90", cache).cubin) == []


def test_the_host_target_has_no_emulation_build(cache):
    from compiler.toolchain import ToolchainError
    with pytest.raises(ToolchainError, match="host target"):
        compile_kernel(add_one(), "host", cache, emulation=True)
