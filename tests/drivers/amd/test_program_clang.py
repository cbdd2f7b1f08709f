"""A code object from another compiler: clang-19's OpenCL for amdgcn-amd-amdhsa (its register allocation, user SGPR
layout, metadata and hidden arguments, none of them ours) loads through the driver, packs its arguments from its
own metadata, and runs as machine code on the emulated GPU."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from drivers.amd.kfd import KFDDevice
from emu.machine import emulated_system
from hcq.buffer import MemFlags

CLANG = "clang-19"
SOURCE = Path(__file__).parent / "foreign" / "axpb.cl"
H = MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE


def clang_code_object(target: str, tmp: Path) -> bytes:
    """axpb.cl compiled by clang-19 and linked by ld.lld, as clang's own driver does for amdgcn-amd-amdhsa."""
    from compiler.toolchain import lld_missing, lld_path
    if shutil.which(CLANG) is None:
        pytest.skip(f"{CLANG} is not installed (Debian's clang-19; ./setup.sh installs it)")
    if lld_missing():
        pytest.skip(lld_missing())
    obj, co = tmp / f"axpb-{target}.o", tmp / f"axpb-{target}.co"
    for cmd in ([CLANG, "-x", "cl", "-cl-std=CL2.0", "-target", "amdgcn-amd-amdhsa", f"-mcpu={target}", "-nogpulib",
                 "-O2", "-c", str(SOURCE), "-o", str(obj)], [lld_path(), "-shared", str(obj), "-o", str(co)]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{cmd[0]} failed:\n{proc.stderr}"
    return co.read_bytes()


@pytest.mark.parametrize("target", ["gfx1100", "gfx1201"])
def test_an_opencl_kernel_built_by_clang_runs_on_the_emulated_gpu(target, tmp_path):
    binary = clang_code_object(target, tmp_path)
    d = KFDDevice(0, emulated_system("amd", (target,), private=True))
    try:
        prog = d.load_program(binary, "axpb", (64, 1, 1))
        hidden = [a[".value_kind"] for a in prog.metadata[".args"] if a[".value_kind"].startswith("hidden_")]
        assert "hidden_group_size_x" in hidden, hidden  # the kernel's workgroup size comes from its hidden arguments
        x = np.linspace(-4, 4, 320, dtype=np.float32)
        src, dst = d.alloc(x.nbytes, H), d.alloc(x.nbytes, H)
        src.numpy(np.float32)[:] = x
        dst.numpy(np.float32)[:] = -7
        n, groups = 300, (5, 1, 1)
        args = prog.pack_args(dst.va, src.va, 0.5, n, global_size=groups, local_size=(64, 1, 1))
        q = d.compute_queue().memory_barrier().exec(prog, args, groups, (64, 1, 1))
        q.signal(d.timeline, d.next_timeline_value()).submit(d)
        d.synchronize(timeout=60)
        got = dst.numpy(np.float32)
        np.testing.assert_array_equal(got[:n], np.float32(x[:n] * np.float32(0.5) + np.float32(1.0)))
        np.testing.assert_array_equal(got[n:], -7)
    finally:
        d.close()
