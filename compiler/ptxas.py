"""ptxas: NVIDIA's PTX assembler, which turns the NVPTX backend's PTX into a cubin (an ELF of SASS for one sm_XX).

Where it comes from, in this order: `ptxas` on PATH (a CUDA toolkit install), else the copy inside the PyPI wheel
nvidia-cuda-nvcc (the `nv` extra: `pip install .[nv]`), which puts it at site-packages/nvidia/<dir>/bin/ptxas
(<dir> is cuda_nvcc in the -cu12 wheels and cu13 in CUDA 13's). The cubin is what our NV loader reads
(compiler/cubin.py); PTX stays available for the CUDA driver's JIT.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from compiler.toolchain import ToolchainError

HOW_TO_GET = ("install the CUDA toolkit and put its bin/ (with ptxas) on PATH, or install the `nv` extra "
              "(pip install .[nv], which brings the nvidia-cuda-nvcc-cu12 wheel and its ptxas)")
_SM = re.compile(r"sm_\d+[af]?")


def wheel_tool(tool: str) -> str | None:
    """A CUDA tool (ptxas, cuobjdump, nvdisasm) shipped in an NVIDIA PyPI wheel on sys.path: nvidia/*/bin/<tool>."""
    for entry in sys.path:
        base = Path(entry or ".") / "nvidia"
        if not base.is_dir():
            continue
        for found in sorted(base.glob(f"*/bin/{tool}")):
            if found.is_file() and os.access(found, os.X_OK):
                return str(found)
    return None


def find_tool(tool: str) -> str | None:
    """`tool` on PATH, else the one inside an NVIDIA wheel; None when neither exists."""
    return shutil.which(tool) or wheel_tool(tool)


def ptxas_path() -> str:
    """The ptxas to run; a ToolchainError naming both ways to get one when there is none."""
    found = find_tool("ptxas")
    if found is None:
        raise ToolchainError(f"ptxas not found (not on PATH, and no nvidia-cuda-nvcc wheel in this Python): NVIDIA "
                             f"kernels are assembled to cubins with it; {HOW_TO_GET}")
    return found


def ptxas_missing() -> str | None:
    """Why cubins cannot be built on this machine, or None."""
    try:
        ptxas_path()
    except ToolchainError as e:
        return str(e)
    return None


@lru_cache(maxsize=None)
def _version_of(path: str) -> str:
    proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise ToolchainError(f"{path} --version failed (exit {proc.returncode}): {proc.stderr.strip()}")
    # "Cuda compilation tools, release 13.0, V13.0.88" and the build line identify the assembler; the copyright
    # and build date lines add nothing a cache key needs.
    ident = [ln for ln in lines if ln.startswith(("Cuda compilation tools", "Build "))]
    return " | ".join(ident or lines)


def ptxas_version() -> str:
    """ptxas's release and build (part of every cubin's cache key)."""
    return _version_of(ptxas_path())


def assemble(ptx: str, name: str, sm: str) -> bytes:
    """The cubin ptxas makes of PTX text for architecture `sm` ("sm_90"); ptxas's own message on failure."""
    if not _SM.fullmatch(sm):
        raise ToolchainError(f"{name}: {sm!r} is not an NVIDIA architecture name like sm_90")
    exe = ptxas_path()
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / f"{name}.ptx", Path(tmp) / f"{name}.cubin"
        src.write_text(ptx)
        proc = subprocess.run([exe, f"-arch={sm}", "-o", str(dst), str(src)],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise ToolchainError(f"{name}: ptxas -arch={sm} failed (exit {proc.returncode}): "
                                 f"{(proc.stderr or proc.stdout).strip()}")
        return dst.read_bytes()
