"""drivers.nv.probe: driver facts from the version files, per-GPU facts through a throwaway RM client."""
from __future__ import annotations

from drivers.nv import probe
from drivers.nv.device import PINNED_VERSION
from emu.system import EmulatedSystem


def test_probe_reports_the_driver_and_every_gpu():
    from emu.machine import emulated_system
    system = emulated_system("nv", ("sm_90", "sm_86"), private=True)
    try:
        out = probe.probe(system)
        d = out["driver"]
        assert d["loaded"] and d["open_kernel_module"] is True and d["uvm"] and d["version"] == PINNED_VERSION
        assert "problem" not in d
        h200, ampere = out["gpus"]
        assert h200["target"] == "sm_90" and h200["classes"]["compute"] == "HOPPER_COMPUTE_A" and h200["qmd"] == "V04_00"
        assert ampere["target"] == "sm_86" and ampere["classes"]["copy"] == "AMPERE_DMA_COPY_B"
        assert h200["vram_bytes"] > 0 and h200["bar1_bytes"] > 0 and h200["pci"] and "problem" not in h200
        assert not system.nv.clients, "the probe's RM clients are freed"
    finally:
        system.nv.close()


def test_the_proprietary_module_and_a_missing_uvm_are_named():
    s = EmulatedSystem()
    s.add_file("/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14  Release\n")
    facts = probe.driver_facts(s)
    assert facts["version"] == "550.54.14" and facts["open_kernel_module"] is False
    assert "open kernel module" in facts["problem"] and "nvidia-uvm" in facts["problem"]


def test_no_driver_says_what_to_load():
    facts = probe.driver_facts(EmulatedSystem())
    assert not facts["loaded"] and "nvidia-uvm" in facts["problem"]
    assert probe.probe(EmulatedSystem())["gpus"] == []


def test_unbuilt_paths_names_what_is_missing():
    from drivers.nv.device import unbuilt_paths
    assert unbuilt_paths("sm_90") is None and unbuilt_paths("sm_86") is None
    assert "not driven yet" in unbuilt_paths(None)
    assert "no sm_100 target" in unbuilt_paths("sm_100")
