"""Fixtures every test directory can use."""
from __future__ import annotations

import pytest


@pytest.fixture
def lld() -> str:
    """ld.lld's path; skips the test, naming the package, where it is not installed (a machine ./setup.sh did not
    prepare): AMD code objects, which the emulated GPUs run too, cannot be linked without it."""
    from compiler.toolchain import ToolchainError, lld_path
    try:
        return lld_path()
    except ToolchainError as e:
        pytest.skip(str(e))
