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
