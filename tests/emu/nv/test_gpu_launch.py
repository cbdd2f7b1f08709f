"""Kernel launches on the emulated NVIDIA GPU: the QMD read as hardware reads it, the cubin's host build run with
every access checked, launch validation, and hazard mode (a release without RELEASE_WFI may land before the
kernel ran; a copy without FLUSH_ENABLE may land after its semaphore)."""
from __future__ import annotations

import ctypes
import struct

import numpy as np
import pytest

from autogen import nv_classes as C
from autogen import nv_rm as R
from compiler import KernelCache, compile_kernel
from compiler.cubin import Cubin
from compiler.ir import Kernel, f32
from compiler.ptxas import ptxas_missing
from emu.nv.qmd import read_qmd
from test_gpu import until
from gpu_rig import DATA_VA, SUBCH, Rig, inc, qmd, sem_release

NO_PTXAS = ptxas_missing()
pytestmark = pytest.mark.skipif(NO_PTXAS is not None, reason=f"no ptxas: {NO_PTXAS}")
IMG, A, OUT, CB, QMD_VA, SEM = (0x30_0000_0000, 0x40_0000_0000, 0x40_0001_0000, 0x40_0002_0000, 0x40_0003_0000,
                                0x50_0000_0000)
N = 100
PCAS = {"sm_86": ("NVC7C0_", 3), "sm_89": ("NVC9C0_", 3), "sm_90": ("NVCBC0_", 4)}


def add_one() -> Kernel:
    k = Kernel("nv_emu_add_one", local_size=(32, 1, 1))
    out, a, n = k.buffer("out", f32, writable=True), k.buffer("a", f32), k.scalar("n")
    i = k.workgroup_id(0) * 32 + k.local_id(0)
    with k.if_(i < n):
        out[i] = a[i] + 1.0
    return k


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    cache = KernelCache(tmp_path_factory.mktemp("kernels"))
    return {sm: compile_kernel(add_one(), sm, cache, emulation=True) for sm in ("sm_86", "sm_90")}


class Launcher:
    """A compute rig with the cubin uploaded whole, buffers a/out, constant bank 0 and a QMD."""

    def __init__(self, ck, sm: str, hazard: int | None = None):
        self.r = Rig(sm, "compute", hazard=hazard)
        self.sm, self.ck = sm, ck
        cub = ck.cubin
        img = self.r.map(IMG, (len(cub) + 0xFFF) & ~0xFFF, "cubin")
        ctypes.memmove(img, cub, len(cub))
        self.text = next(s.offset for s in Cubin(cub).sections if s.name == ".text." + ck.name)
        self.a, self.out = self.r.map(A, 4 * N, "a"), self.r.map(OUT, 4 * N, "out")
        self.cb, self.q, self.sem = self.r.map(CB, 0x1000), self.r.map(QMD_VA, 0x1000), self.r.map(SEM, 0x1000)
        ctypes.memmove(self.a, np.arange(N, dtype=np.float32).tobytes(), 4 * N)
        self.params(OUT, A, N)
        self.write_qmd()

    def params(self, out: int, a: int, n: int) -> None:
        ctypes.memmove(self.cb + self.ck.cubin_kernel.param_bank_offset, struct.pack("<QQI", out, a, n), 20)

    def write_qmd(self, version: int | None = None, **kw) -> None:
        args = dict(grid=((N + 31) // 32, 1, 1), block=(32, 1, 1), program=IMG + self.text, cbuf0=(CB, 0x400),
                    registers=self.ck.cubin_kernel.registers)
        args.update(kw)
        raw = qmd(version or PCAS[self.sm][1], **args)
        ctypes.memmove(self.q, raw, len(raw))

    def launch_words(self) -> list[int]:
        p = PCAS[self.sm][0]
        s = SUBCH["compute"]
        return (inc(s, getattr(C, p + "INVALIDATE_SHADER_CACHES_NO_WFI"), 0x1011)
                + inc(s, getattr(C, p + "SEND_PCAS_A"), QMD_VA >> 8)
                + inc(s, getattr(C, p + "SEND_SIGNALING_PCAS2_B"),
                      getattr(C, p + "SEND_SIGNALING_PCAS2_B_PCAS_ACTION_INVALIDATE_COPY_SCHEDULE")))

    def output(self) -> np.ndarray:
        return np.frombuffer(ctypes.string_at(self.out, 4 * N), np.float32)


@pytest.mark.parametrize("sm", ["sm_86", "sm_90"])
def test_a_launch_runs_the_host_build_on_the_mapped_buffers(builds, sm):
    L = Launcher(builds[sm], sm)
    try:
        L.r.submit(L.launch_words() + sem_release(SEM, 1))
        L.r.wait_idle()
        assert not L.r.errors
        np.testing.assert_array_equal(L.output(), np.arange(N, dtype=np.float32) + 1)
        assert ctypes.c_uint64.from_address(L.sem).value == 1 and L.r.gpu.counters()["launches"] == 1
    finally:
        L.r.close()


def test_an_out_of_range_access_is_an_mmu_fault_at_its_gpu_va(builds):
    L = Launcher(builds["sm_90"], "sm_90")
    try:
        L.params(OUT, A + 200, N)  # `a` now ends 50 elements in
        L.r.submit(L.launch_words())
        token, code, info = L.r.wait_error()
        assert (code, info["address"], info["access"], info["engine"]) == (
            R.ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT, A + 4 * N, "read", "compute")
    finally:
        L.r.close()


@pytest.mark.parametrize("change, match", [
    (dict(block=(64, 1, 1)), "built for blocks of (32, 1, 1)"),
    (dict(cbuf0=None), "constant buffer 0 is not valid"),
    (dict(grid=(0, 1, 1)), "grid x is 0"),
    (dict(block=(32, 1, 65)), "block z"),
    (dict(registers=255, block=(1024, 1, 1)), "registers"),
    (dict(shared=228 * 1024), "SHARED_MEMORY_SIZE"),
    (dict(minor=1), "minor version"),
    (dict(program=IMG + 4), "not the start of any kernel"),
])
def test_bad_qmds_are_gr_exceptions(builds, change, match):
    L = Launcher(builds["sm_90"], "sm_90")
    try:
        L.write_qmd(**change)
        L.r.submit(L.launch_words())
        _, code, info = L.r.wait_error()
        assert code == R.ROBUST_CHANNEL_GR_EXCEPTION and match in info["message"], info
    finally:
        L.r.close()


def test_an_ampere_compute_class_refuses_a_v04_qmd(builds):
    L = Launcher(builds["sm_86"], "sm_86")
    try:
        L.write_qmd(version=4)
        L.r.submit(L.launch_words())
        _, code, info = L.r.wait_error()
        assert code == R.ROBUST_CHANNEL_GR_EXCEPTION and "QMD_MAJOR_VERSION 4" in info["message"]
    finally:
        L.r.close()


def test_a_cubin_without_a_host_build_is_refused_by_name(tmp_path):
    ck = compile_kernel(add_one(), "sm_90", KernelCache(tmp_path))
    L = Launcher(ck, "sm_90")
    try:
        L.r.submit(L.launch_words())
        _, code, info = L.r.wait_error()
        assert code == R.ROBUST_CHANNEL_GR_EXCEPTION and "emulation=True" in info["message"]
    finally:
        L.r.close()


def test_qmd_reader_reads_fields_where_the_headers_put_them():
    q = read_qmd(qmd(4, grid=(5, 6, 7), block=(8, 4, 2), program=0x1_2345_6700, cbuf0=(0x7_0000_0040, 0x210),
                     registers=40, shared=0x800))
    assert (q.major, q.grid, q.block, q.program_address, q.cbuf, q.register_count, q.shared_memory_size) == (
        4, (5, 6, 7), (8, 4, 2), 0x1_2345_6700, {0: (0x7_0000_0040, 0x210)}, 40, 0x800)
    q = read_qmd(qmd(3, grid=(9, 1, 1), program=0xAB_0000_0100, cbuf0=(0x1000, 0x160)))
    assert (q.major, q.grid, q.program_address, q.cbuf) == (3, (9, 1, 1), 0xAB_0000_0100, {0: (0x1000, 0x160)})


def _snapshots(builds, seed: int, wfi: bool) -> bool:
    """Launch, release (with or without RELEASE_WFI), NON_STALL_INTERRUPT: was the kernel's output complete when
    the interrupt came (the release had landed)?"""
    L = Launcher(builds["sm_90"], "sm_90", hazard=seed)
    seen = []
    L.r.gpu.on_nonstall = lambda t: seen.append(bool((L.output() == np.arange(N) + 1).all()))
    try:
        L.r.submit(L.launch_words() + sem_release(SEM, 1, wfi=wfi) + inc(0, C.NVC56F_NON_STALL_INTERRUPT, 0))
        L.r.wait_idle()
        until(lambda: (L.output() == np.arange(N) + 1).all())  # it always runs in the end (the channel drains)
        assert not L.r.errors and len(seen) == 1
        return seen[0]
    finally:
        L.r.close()


def test_hazard_mode_lands_an_unordered_release_before_the_kernel(builds):
    assert all(_snapshots(builds, seed, wfi=True) for seed in range(6))
    assert not all(_snapshots(builds, seed, wfi=False) for seed in range(6))
    assert _snapshots(builds, 3, wfi=False) == _snapshots(builds, 3, wfi=False)  # reproducible per seed


@pytest.mark.parametrize("flush", [True, False])
def test_hazard_mode_lands_an_unflushed_copy_after_its_semaphore(flush):
    from test_gpu import copy_words
    r = Rig("sm_90", "copy", hazard=1)
    try:
        src, dst = r.map(DATA_VA, 0x1000), r.map(DATA_VA + 0x1000, 0x1000)
        sem = r.map(DATA_VA + 0x10000, 0x1000)
        ctypes.memmove(src, b"\x5a" * 64, 64)
        seen = []
        r.gpu.on_nonstall = lambda t: seen.append(ctypes.string_at(dst, 64) == b"\x5a" * 64)
        s = SUBCH["copy"]
        words = inc(s, C.NVC8B5_SET_SEMAPHORE_A, (DATA_VA + 0x10000) >> 32, (DATA_VA + 0x10000) & 0xFFFFFFFF, 1, 0)
        r.submit(words + copy_words(DATA_VA, DATA_VA + 0x1000, 64, sem=1, intr=2, flush=flush))
        r.wait_idle()
        until(lambda: ctypes.string_at(dst, 64) == b"\x5a" * 64)
        assert seen == [flush]
        assert ctypes.c_uint64.from_address(sem).value == 1
    finally:
        r.close()
