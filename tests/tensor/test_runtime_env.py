"""The tensor runtime's environment variables: read where they matter, and a bad value names the variable."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from hcq.env import EnvError
from tensor import DEVICES, Tensor
from tensor.runtime import Devices, Runtime

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan"])
def test_a_bad_sync_timeout_is_refused_when_a_runtime_is_made(monkeypatch, value):
    monkeypatch.setenv("BAREGPU_SYNC_TIMEOUT", value)
    with pytest.raises(EnvError, match=rf"BAREGPU_SYNC_TIMEOUT='{value}' is not valid: .*number of seconds greater "
                                       "than 0"):
        Runtime("CPU", device=DEVICES["CPU"].dev)


def test_the_sync_timeout_is_read_at_runtime_creation_not_at_import(monkeypatch):
    monkeypatch.setenv("BAREGPU_SYNC_TIMEOUT", "2.5")
    assert Runtime("CPU", device=DEVICES["CPU"].dev).sync_timeout == 2.5
    monkeypatch.delenv("BAREGPU_SYNC_TIMEOUT")
    assert Runtime("CPU", device=DEVICES["CPU"].dev).sync_timeout == 120.0
    env = dict(os.environ, BAREGPU_SYNC_TIMEOUT="abc", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", "import tensor.runtime"], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, f"importing with a bad value failed: {done.stderr[-2000:]}"


@pytest.mark.parametrize("value", ["1", "yes", "On"])
def test_debug_on_prints_each_kernel(monkeypatch, capsys, value):
    monkeypatch.setenv("BAREGPU_DEBUG", value)
    (Tensor(np.arange(6, dtype=np.float32), "CPU") * 3 + len(value)).numpy()
    assert "baregpu: CPU kernel" in capsys.readouterr().err


def test_debug_off_prints_nothing_and_a_bad_value_names_the_variable(monkeypatch, capsys):
    x = Tensor(np.arange(6, dtype=np.float32), "CPU")
    monkeypatch.setenv("BAREGPU_DEBUG", "no")
    (x - 7).numpy()
    assert "baregpu:" not in capsys.readouterr().err
    monkeypatch.setenv("BAREGPU_DEBUG", "abc")
    with pytest.raises(EnvError, match=r"BAREGPU_DEBUG='abc' is not valid: it takes one of 1, yes, true, on or 0"):
        (x - 8).numpy()


@pytest.mark.parametrize("value, why", [("XYZ", "unknown kind 'XYZ'"), ("AMD:x", "index after ':' must be a number"),
                                        ("QCOM", "not built yet")])
def test_a_bad_default_device_names_the_variable(monkeypatch, value, why):
    monkeypatch.setenv("BAREGPU_DEVICE", value)
    with pytest.raises(EnvError, match=rf"BAREGPU_DEVICE='{value}' is not valid: it names the tensor layer's default "
                                       rf"device, such as CPU, AMD or AMD:1 \(.*{why}"):
        Devices()[None]


def test_a_bad_name_given_in_code_does_not_blame_the_variable(monkeypatch):
    monkeypatch.setenv("BAREGPU_DEVICE", "CPU")
    with pytest.raises(ValueError, match="unknown kind 'XYZ'") as e:
        Devices()["XYZ"]
    assert "BAREGPU_DEVICE" not in str(e.value)


def test_the_default_device_comes_from_the_variable(monkeypatch):
    monkeypatch.setenv("BAREGPU_DEVICE", " cpu ")
    devices = Devices()
    try:
        assert devices.default == "CPU" and devices[None].name == "CPU"
    finally:
        devices.close()
