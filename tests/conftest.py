"""Fixtures every test directory can use."""
from __future__ import annotations

import pytest


@pytest.fixture
def lld() -> str:
    """ld.lld's path; skips the test, naming the package, where it is not installed (a machine ./setup.sh did not
    prepare): AMD code objects, which the emulated GPUs run too, cannot be linked without it."""
    from compiler.toolchain import lld_missing, lld_path
    if lld_missing():
        pytest.skip(lld_missing())
    return lld_path()


@pytest.fixture
def ptxas() -> str:
    """ptxas's path; skips the test, naming both ways to get it, where there is none: the emulated NVIDIA GPU runs what
    a cubin carries, and cubins come from ptxas."""
    from compiler.ptxas import ptxas_missing, ptxas_path
    if ptxas_missing():
        pytest.skip(ptxas_missing())
    return ptxas_path()


@pytest.fixture(scope="session", autouse=True)
def private_lock_dir(tmp_path_factory: pytest.TempPathFactory):
    """Device locks of this test run live in a folder of its own: machine-wide emulated GPUs (gpu_probe, the
    registry) then never meet a developer's program or another test run, and children inherit the folder."""
    import os
    old = os.environ.get("BAREGPU_LOCK_DIR")
    os.environ["BAREGPU_LOCK_DIR"] = str(tmp_path_factory.mktemp("locks"))
    yield os.environ["BAREGPU_LOCK_DIR"]
    if old is None:
        os.environ.pop("BAREGPU_LOCK_DIR", None)
    else:
        os.environ["BAREGPU_LOCK_DIR"] = old
