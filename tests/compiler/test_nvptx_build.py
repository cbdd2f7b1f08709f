"""NVIDIA builds: PTX text from the NVPTX backend, assembled by ptxas when this machine has it."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from compiler import ToolchainError, compile_kernel
from compiler.ir import Kernel, f32
from sample_kernels import elementwise, every_op, matmul, row_sum

PTXAS = shutil.which("ptxas")


def test_ptx_has_the_kernel_entry_its_shape_and_barriers(cache):
    ck = compile_kernel(matmul(), "sm_90", cache)
    text = ck.ptx
    assert ".target sm_90" in text and ".address_size 64" in text
    params = re.search(r"\.visible \.entry matmul\((.*?)\)", text, re.S).group(1)
    kinds = re.findall(r"\.param \.(u64|u32)", params)
    assert kinds == ["u64" if a.kind == "buffer" else "u32" for a in ck.args], "one PTX parameter per kernel argument"
    assert ".reqntid 8, 8, 1" in text
    assert len(re.findall(r"\bbar\.sync\s+0;", text)) >= 2
    shared = sum(int(n) for n in re.findall(r"\.shared \.align \d+ \.b8 \S+\[(\d+)\]", text))
    assert shared == ck.lds_bytes == 2 * 8 * 8 * 4
    assert "%tid.x" in text and "%ctaid.y" in text


def test_elementwise_ptx_needs_no_shared_memory_or_barrier(cache):
    text = compile_kernel(elementwise("nv_add", f32, lambda x, y: x + y), "sm_80", cache).ptx
    assert ".target sm_80" in text and ".shared" not in text and "bar.sync" not in text
    assert re.search(r"add\.(rn\.)?f32", text)


def test_shared_memory_past_the_static_limit_is_refused(cache):
    k = Kernel("big_lds")
    k.local_array(f32, 12 * 1024 + 1)
    with pytest.raises(ToolchainError, match="local arrays take 49156 bytes; NVIDIA allows 49152"):
        compile_kernel(k, "sm_90", cache)


@pytest.mark.parametrize("sm", ["sm_75", "sm_90"])
def test_every_operation_builds(cache, sm):
    text = compile_kernel(every_op(), sm, cache).ptx
    assert "sin.approx.f32" in text and "lg2.approx.f32" in text, "NVPTX sin and log2 are the hardware approximations"


@pytest.mark.skipif(PTXAS is None, reason="ptxas is not installed (pip extra 'nv': nvidia-cuda-nvcc-cu12)")
@pytest.mark.parametrize("make", [row_sum, matmul, every_op])
def test_ptxas_accepts_the_ptx(cache, tmp_path, make):
    kernel = make()
    ck = compile_kernel(kernel, "sm_90", cache)
    src = tmp_path / f"{kernel.name}.ptx"
    src.write_text(ck.ptx)
    proc = subprocess.run([PTXAS, "-arch=sm_90", "-v", str(src), "-o", str(tmp_path / "out.cubin")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    smem = re.search(r"(\d+) bytes smem", proc.stderr)
    assert (int(smem.group(1)) if smem else 0) == ck.lds_bytes, "ptxas reserves exactly our local arrays"
    assert "0 bytes spill stores" in proc.stderr
