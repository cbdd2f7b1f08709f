"""Fixtures for the compiler tests."""
from __future__ import annotations

import pytest

from compiler import KernelCache


@pytest.fixture
def cache(tmp_path):
    """A kernel cache in the test's own folder, so counts start at zero and nothing leaks between tests."""
    return KernelCache(tmp_path / "kernels")
