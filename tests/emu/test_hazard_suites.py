"""A representative part of the HCQ contract suite and of the tensor suite, run in-process on emulated AMD GPUs in
hazard mode over three seeds: what the driver and the tensor layer order must stay right however the emulated GPU
reorders, interleaves and caches what they leave unordered.

The whole suites run in hazard mode with BAREGPU_EMU_HAZARD=<seed> (every emulated machine the fixtures make takes
it), e.g. `BAREGPU_EMU_HAZARD=3 pytest tests/hcq/test_contract.py tests/tensor -k AMD`.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from drivers.amd.kfd import KFDDevice
from emu.machine import emulated_system

SEEDS = (11, 12, 13)
TESTS = Path(__file__).resolve().parents[1]


def load(path: Path, name: str):
    """A test module loaded under a name of its own (its directory on sys.path for its helpers)."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


@pytest.fixture(scope="module")
def contract():
    return load(TESTS / "hcq" / "test_contract.py", "hazard_contract")


@pytest.fixture(scope="module")
def tensor_tests():
    return load(TESTS / "tensor" / "test_ops.py", "hazard_tensor_ops"), load(TESTS / "tensor" / "test_mlp.py",
                                                                            "hazard_tensor_mlp")


@pytest.mark.parametrize("seed", SEEDS)
def test_contract_subset_in_hazard_mode(contract, seed, tmp_path, lld):
    cases = [
        lambda d: contract.test_signal_written_by_the_queue(d),
        lambda d: contract.test_cross_queue_wait_orders_copy_after_compute(d),
        lambda d: contract.test_compiled_kernel_reads_its_arguments(d, tmp_path / "a"),
        lambda d: contract.test_staged_kernel_arguments_are_reused_only_after_completion(d, tmp_path / "b"),
        lambda d: contract.test_replay_patches_only_the_recorded_values(d),
        lambda d: contract.test_memory_barrier_orders_a_copy_after_the_one_before_it(d, "compute"),
        lambda d: contract.test_memory_barrier_orders_a_copy_after_the_one_before_it(d, "copy"),
        lambda d: contract.test_copies_of_odd_sizes_and_offsets(d, 4095, 5, 3),
    ]
    for case in cases:
        dev = KFDDevice(0, emulated_system("amd", ("gfx1100",), private=True, hazard=seed), ring_size=4096)
        try:
            case(dev)
            assert dev.system.kfd.hazard == seed
        finally:
            dev.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_tensor_subset_in_hazard_mode(tensor_tests, seed, lld):
    from tensor import DEVICES
    ops, mlp = tensor_tests
    DEVICES.close()
    system = emulated_system("amd", ("gfx1100", "gfx1201"), private=True, hazard=seed)
    DEVICES.add("AMD", KFDDevice(0, system))
    DEVICES.add("AMD:1", KFDDevice(1, system))
    try:
        for name in ("AMD", "AMD:1"):
            ops.test_creation(name)
            ops.test_views_without_copies(name)
            ops.test_reductions(name, 1, False)
            ops.test_large_reduction_uses_every_element(name)
            ops.test_matmul(name, (5, 7), (7, 3))
            mlp.test_mlp_forward_matches_numpy(name)
        assert system.kfd.cp_counters().get("hazard_yields", 0) > 0  # hazard mode was on and exercised
    finally:
        DEVICES.close()
