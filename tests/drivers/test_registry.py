"""Asking for a device by name: what is here, and how to get an emulated GPU when there is none."""
from __future__ import annotations

import pytest

from drivers import registry
from drivers.registry import DeviceNotFoundError, available_devices, canonical_name, open_device
from emu.system import EmulatedSystem


def bare_machine() -> EmulatedSystem:
    """A machine with no GPU of any kind, seen as a real one."""
    bare = EmulatedSystem()
    bare.emulated = False
    return bare


@pytest.fixture
def amd_machine(monkeypatch):
    """Point the registry's AMD machine at one the test builds, and its NVIDIA machine at one with no GPU (so a real
    card on the test machine does not show up); both restored afterwards."""
    monkeypatch.setitem(registry._SYSTEMS, "nv", bare_machine())

    def use(system):
        monkeypatch.setitem(registry._SYSTEMS, "amd", system)
        return system
    return use


@pytest.fixture
def nv_machine(monkeypatch):
    """Point the registry's NVIDIA machine at one the test builds, and its AMD machine at one with no GPU."""
    monkeypatch.setitem(registry._SYSTEMS, "amd", bare_machine())

    def use(system):
        monkeypatch.setitem(registry._SYSTEMS, "nv", system)
        return system
    return use


def test_no_amd_gpu_lists_what_is_here_and_how_to_emulate(amd_machine):
    amd_machine(bare_machine())  # a machine with no KFD topology, seen as a real one
    with pytest.raises(DeviceNotFoundError) as e:
        open_device("AMD")
    msg = str(e.value)
    assert "device 'AMD' is not here" in msg and "no AMD GPU that KFD lists" in msg
    assert "Devices here: CPU." in msg and "BAREGPU_EMULATE=amd" in msg
    assert isinstance(e.value, LookupError)


def test_an_index_beyond_the_emulated_gpus_names_the_variable_that_adds_them(amd_machine, tmp_path):
    from emu.machine import emulated_system
    amd_machine(emulated_system("amd", ("gfx1100",)))
    assert available_devices() == ["CPU", "AMD (emulated)"]
    with pytest.raises(DeviceNotFoundError, match=r"'AMD:2' is not here: the emulated machine has 1 AMD GPU\(s\) "
                                                  r"\(BAREGPU_EMU_AMD .*Devices here: CPU, AMD \(emulated\)\.$"):
        open_device("amd:2")


def test_no_nvidia_gpu_lists_what_is_here_and_how_to_emulate(nv_machine):
    nv_machine(bare_machine())
    with pytest.raises(DeviceNotFoundError) as e:
        open_device("NV")
    msg = str(e.value)
    assert "device 'NV' is not here" in msg and "/dev/nvidiactl: is nvidia loaded?" in msg
    assert "Devices here: CPU." in msg and "BAREGPU_EMULATE=amd or nv" in msg


def test_an_emulated_nvidia_gpu_opens_by_name(nv_machine):
    from emu.machine import emulated_system
    nv_machine(emulated_system("nv", ("sm_86",), private=True))
    assert available_devices() == ["CPU", "NV (emulated)"]
    dev = open_device("nv")
    try:
        assert dev.name == "NV" and dev.target == "sm_86"
    finally:
        dev.close()
    with pytest.raises(DeviceNotFoundError, match=r"'NV:1' is not here: the emulated machine has 1 NVIDIA GPU\(s\) "
                                                  r"\(BAREGPU_EMU_NV "):
        open_device("NV:1")


def test_unbuilt_and_unknown_kinds_and_bad_names(amd_machine):
    amd_machine(bare_machine())
    with pytest.raises(NotImplementedError, match=r"'QCOM': the Qualcomm Adreno \(kgsl\) driver is not built yet; "
                                                  r"devices here: CPU"):
        open_device("QCOM")
    with pytest.raises(ValueError, match=r"unknown kind 'TPU'; known: CPU, AMD, NV"):
        open_device("tpu")
    with pytest.raises(ValueError, match=r"index after ':' must be a number"):
        open_device("AMD:x")
    with pytest.raises(DeviceNotFoundError, match=r"'CPU:1' does not exist"):
        open_device("CPU:1")
    assert canonical_name("amd:0") == "AMD" and canonical_name(" amd:1 ") == "AMD:1"
