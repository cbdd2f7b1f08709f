"""gpu_probe on this machine, and on emulated machines described through the OS seam."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.nv.device import PINNED_VERSION
from drivers.system import LinuxSystem, OSCallError
from emu.system import EmulatedSystem, NodeHandler
from hcq.env import EnvError
from tools.gpu_probe import (AM_NOT_BUILT, AM_STAND_IN_BDF, EMULATED_TAG, EXIT_CHECK_FAILED, EXIT_NO_GPU, EXIT_NOT_READY, EXIT_OK, EXIT_USAGE, NO_UVM,
                             SCHEMA, exit_status, kfd_target_missing, main, probe, render)

ROOT = Path(__file__).resolve().parents[2]
AMD_BDF = "0000:03:00.0"


def pci_device(system: EmulatedSystem, bdf: str, vendor: int, device: int, driver: str | None,
               bar0: int, cls: int = 0x030000, iommu: str | None = "17") -> None:
    base = f"/sys/bus/pci/devices/{bdf}"
    system.add_file(f"{base}/vendor", f"{vendor:#06x}\n")
    system.add_file(f"{base}/device", f"{device:#06x}\n")
    system.add_file(f"{base}/class", f"{cls:#08x}\n")
    start = 0x7C00000000
    system.add_file(f"{base}/resource", f"{start:#018x} {start + bar0 - 1:#018x} 0x14220c\n"
                    "0x0000000000000000 0x0000000000000000 0x0\n0x00000000fcc00000 0x00000000fcc7ffff 0x40200\n")
    if driver:
        system.add_link(f"{base}/driver", f"../../../bus/pci/drivers/{driver}")
    if iommu:
        system.add_link(f"{base}/iommu_group", f"../../../kernel/iommu_groups/{iommu}")
        # passthrough, so AM over sysfs may hand the card physical addresses (drivers/pci/sysfs.py)
        system.add_file(f"/sys/kernel/iommu_groups/{iommu}/type", "identity\n")


def forbidden(flags: int) -> NodeHandler:
    """A device node opener for a node this user may not open."""
    raise OSCallError(errno.EACCES, "permission denied")


def kfd_topology(system: EmulatedSystem, gfx_version: int = 110000, render_minor: int = 128) -> None:
    root = "/sys/class/kfd/kfd/topology/nodes"
    system.add_file(f"{root}/0/name", "\n")
    system.add_file(f"{root}/0/properties", "cpu_cores_count 16\nsimd_count 0\ngfx_target_version 0\n")
    system.add_file(f"{root}/1/name", "gfx1100\n")
    system.add_file(f"{root}/1/properties", f"cpu_cores_count 0\nsimd_count 192\ngfx_target_version {gfx_version}\n"
                    f"location_id 768\ndomain 0\ndrm_render_minor {render_minor}\n")


@pytest.fixture(autouse=True)
def own_lock_dir(tmp_path, monkeypatch):
    """The emulated machine is machine-wide (its GPUs' locks meet other processes', as cards do): a lock directory
    of this test's own keeps probes here, and the subprocesses they start, from meeting other test runs."""
    monkeypatch.setenv("BAREGPU_LOCK_DIR", str(tmp_path / "locks"))


@pytest.fixture
def nv_machine():
    """A private emulated machine with an H200 (sm_90) and an Ampere GPU (sm_86) behind the emulated RM and UVM."""
    from emu.machine import emulated_system
    system = emulated_system("nv", ("sm_90", "sm_86"), private=True)
    yield system
    system.nv.close()


@pytest.fixture
def emulators():
    """What the stand-in's bring-up needs on this machine: ld.lld for the AMD code object, ptxas for the cubin."""
    from compiler.ptxas import ptxas_missing
    from compiler.toolchain import lld_missing
    missing = lld_missing() or ptxas_missing()
    if missing:
        pytest.skip(missing)


@pytest.fixture
def amd_kfd_machine():
    s = EmulatedSystem()
    pci_device(s, AMD_BDF, 0x1002, 0x744C, "amdgpu", 16 << 30)
    s.add_node("/dev/kfd", lambda flags: NodeHandler())
    s.add_node("/dev/dri/renderD128", lambda flags: NodeHandler())
    kfd_topology(s)
    return s


def probe_cmd(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.gpu_probe", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_runs_on_this_machine_in_text_and_json():
    from compiler.ptxas import ptxas_missing
    from compiler.toolchain import lld_missing
    # Without ld.lld or ptxas the emulated stand-in's kernel checks cannot build (test_emulated_machine_... skips).
    extra = ["--no-emulate"] if lld_missing() or ptxas_missing() else []
    text = probe_cmd(*extra)
    assert text.stdout.strip() and text.stderr == "", text.stderr
    js = probe_cmd("--json", *extra)
    report = json.loads(js.stdout)
    assert report["schema"] == SCHEMA == 3 and {"pci", "kfd", "nvidia", "kgsl", "usb", "summary"} <= report.keys()
    # the status is the report's (no bring-up fails on this machine), the same in text and JSON
    assert js.returncode == text.returncode == exit_status(report, []) != EXIT_CHECK_FAILED
    assert all(c["ok"] for c in report["checks"])
    bad = probe_cmd("--bogus")
    assert bad.returncode == EXIT_USAGE and "unrecognized arguments: --bogus" in bad.stderr


def test_amd_card_with_kfd_is_ready(amd_kfd_machine):
    report = probe(amd_kfd_machine)
    (card,) = report["pci"]
    assert card["path"] == "AMD (KFD)" and card["blockers"] == [] and card["kernel_driver"] == "amdgpu"
    assert card["bars"][0] == {"index": 0, "size": 16 << 30} and card["iommu_group"] == "17"
    (gpu,) = report["kfd"]["gpus"]
    assert gpu["gfx"] == "gfx1100" and gpu["render_node"] == "/dev/dri/renderD128" and gpu["render_node_present"]
    text = render(report)
    assert "AMD (KFD)" in text and "gfx1100" in text and "BAR0 16 GiB" in text and "blocked" not in text
    assert report["summary"] == {"devices": 1, "usable": 1, "not_built": [], "found_any": True, "pci_scanned": 1,
                                 "emulated": False}


def test_gfx_names_from_kfd_versions():
    s = EmulatedSystem()
    s.add_node("/dev/kfd", lambda flags: NodeHandler())
    kfd_topology(s, gfx_version=120001)
    assert probe(s)["kfd"]["gpus"][0]["gfx"] == "gfx1201"
    s2 = EmulatedSystem()
    s2.add_node("/dev/kfd", lambda flags: NodeHandler())
    kfd_topology(s2, gfx_version=90402)
    assert probe(s2)["kfd"]["gpus"][0]["gfx"] == "gfx942"


def test_unbound_amd_card_with_small_bar_goes_to_am_and_says_to_enable_resizable_bar():
    s = EmulatedSystem()
    pci_device(s, AMD_BDF, 0x1002, 0x744C, None, 256 << 20 >> 1)
    (card,) = probe(s)["pci"]
    assert card["path"] == "AM over sysfs"
    assert any("Resizable BAR" in b for b in card["blockers"])


def test_amd_card_bound_to_amdgpu_without_kfd_is_blocked():
    s = EmulatedSystem()
    pci_device(s, AMD_BDF, 0x1002, 0x744C, "amdgpu", 16 << 30)
    (card,) = probe(s)["pci"]
    assert card["path"] == "AMD (KFD)" and "CONFIG_HSA_AMD" in card["blockers"][0]


def test_nvidia_with_nouveau_is_blocked():
    s = EmulatedSystem()
    pci_device(s, "0000:01:00.0", 0x10DE, 0x2330, "nouveau", 64 << 30)
    (card,) = probe(s)["pci"]
    assert card["path"] == "NV (RM/UVM)" and "nouveau is bound" in card["blockers"][0]
    assert "blocked: nouveau is bound" in render(probe(s))


def test_nvidia_without_uvm_names_the_module_to_load(nv_machine, capsys):
    del nv_machine.nodes["/dev/nvidia-uvm"]
    report = probe(nv_machine)
    nv = report["nvidia"]
    assert nv["blockers"] == [NO_UVM] and nv["uvm"] is False and nv["nodes"] == ["nvidia0", "nvidia1"]
    assert "modprobe nvidia-uvm" in NO_UVM
    # the driver's problem blocks every NVIDIA card, and says so once, under the driver
    assert [d["blockers"] for d in report["pci"]] == [[], []] and report["summary"]["usable"] == 0
    text = render(report)
    assert text.count("blocked: /dev/nvidia-uvm is missing: load nvidia-uvm") == 1 and "nvidia-uvm missing" in text
    assert main([], system=nv_machine) == EXIT_NOT_READY and "Bring-up" not in capsys.readouterr().out


def test_the_nvidia_report_on_an_emulated_machine(nv_machine):
    report = probe(nv_machine)
    nv = report["nvidia"]
    assert (nv["version"], nv["open_kernel_module"], nv["uvm"], nv["nvidiactl"], nv["rm_probed"]) == \
        (PINNED_VERSION, True, True, True, True)
    assert nv["blockers"] == [] and "Open Kernel Module" in nv["driver_version"]
    h200, ampere = nv["gpus"]
    assert (h200["index"], h200["name"], h200["arch"], h200["target"], h200["qmd"]) == \
        (0, "NVIDIA H200", "Hopper", "sm_90", "V04_00")
    assert h200["classes"] == {"channel": "HOPPER_CHANNEL_GPFIFO_A", "compute": "HOPPER_COMPUTE_A",
                               "copy": "HOPPER_DMA_COPY_A"}
    assert (ampere["arch"], ampere["target"], ampere["qmd"], ampere["classes"]["compute"]) == \
        ("Ampere", "sm_86", "V03_00", "AMPERE_COMPUTE_B")
    assert all(g["vram_bytes"] > 0 and g["bar1_bytes"] > 0 and g["driver_missing"] is None for g in nv["gpus"])
    assert not nv_machine.nv.clients, "the probe's RM clients are freed"
    # each RM GPU is the PCI card at its address: one device each, both ready, the sm target on the PCI line
    cards = {d["bdf"]: d for d in report["pci"]}
    assert set(cards) == {h200["pci"], ampere["pci"]}
    assert [(cards[g["pci"]]["path"], cards[g["pci"]]["target"], cards[g["pci"]]["blockers"]) for g in nv["gpus"]] == \
        [("NV (RM/UVM)", "sm_90", []), ("NV (RM/UVM)", "sm_86", [])]
    assert report["summary"]["devices"] == 2 and report["summary"]["usable"] == 2
    text = render(report)
    assert f"NVIDIA driver {PINNED_VERSION}, open kernel module; nvidiactl present, nvidia-uvm present" in text
    assert f"NV: NVIDIA H200 at {h200['pci']}: Hopper, sm_90, VRAM {h200['vram_bytes'] >> 30} GiB, BAR1 " \
           f"{h200['bar1_bytes'] >> 30} GiB" in text
    assert "classes: channel HOPPER_CHANNEL_GPFIFO_A, compute HOPPER_COMPUTE_A, copy HOPPER_DMA_COPY_A, QMD V04_00" in text
    assert "NV:1: " in text and "driver: built for sm_86" in text and "blocked" not in text
    assert "2 device(s) with a driver path, 2 ready to use." in text


def test_the_proprietary_module_blocks_the_nv_path_and_says_what_to_install(nv_machine, capsys):
    nv_machine.add_file("/proc/driver/nvidia/version",
                        f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {PINNED_VERSION}  Release Build\n")
    report = probe(nv_machine)
    nv = report["nvidia"]
    assert nv["open_kernel_module"] is False and report["summary"]["usable"] == 0
    (blocker,) = nv["blockers"]
    assert blocker.startswith(f"the loaded NVIDIA driver ({PINNED_VERSION}) is the proprietary kernel module; "
                              "the NV path needs NVIDIA's open kernel module")
    assert "nvidia-open" in blocker and "-m=kernel-open" in blocker
    text = render(report)
    assert f"NVIDIA driver {PINNED_VERSION}, proprietary kernel module (the NV path needs the open one)" in text
    assert main([], system=nv_machine) == EXIT_NOT_READY
    assert f"blocked: the loaded NVIDIA driver ({PINNED_VERSION}) is the proprietary kernel module" in \
        capsys.readouterr().out


def test_a_driver_of_another_branch_is_named_with_the_pin(nv_machine, monkeypatch):
    nv_machine.add_file("/proc/driver/nvidia/version",
                        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.54.14  Release Build\n")
    (blocker,) = probe(nv_machine)["nvidia"]["blockers"]
    branch = PINNED_VERSION.split(".")[0]
    assert blocker.startswith(f"the NVIDIA driver is 550.54.14, but baregpu's RM/UVM structures are pinned to the "
                              f"{branch} branch ({PINNED_VERSION})")
    assert "autogen/include/nv/VERSION" in blocker and "BAREGPU_NV_ANY_DRIVER=1 tries anyway" in blocker
    monkeypatch.setenv("BAREGPU_NV_ANY_DRIVER", "1")  # the user asked to try: then nothing blocks it
    assert probe(nv_machine)["nvidia"]["blockers"] == []


def test_an_nvidia_gpu_the_driver_is_not_built_for_waits_on_it(nv_machine, monkeypatch, capsys):
    import drivers.nv.device
    why = "the NVIDIA (RM/UVM) driver is not built for sm_86 yet: (as a newer GPU would be)"
    monkeypatch.setattr(drivers.nv.device, "unbuilt_paths", lambda target: why if target == "sm_86" else None)
    report = probe(nv_machine)
    assert [g["driver_missing"] for g in report["nvidia"]["gpus"]] == [None, why]
    assert report["summary"]["usable"] == 1 and report["summary"]["not_built"] == ["NV (RM/UVM) for sm_86"]
    text = render(report)
    assert f"driver path:   NV (RM/UVM) ({why})" in text
    assert "1 ready to use; not built yet in baregpu: NV (RM/UVM) for sm_86." in text
    from tools.gpu_probe import nv_ready
    assert nv_ready(report) == [0]  # only the GPU the driver is built for is brought up


def test_asm2464_bridge_is_listed_and_permission_problems_explained():
    s = EmulatedSystem()
    base = "/sys/bus/usb/devices/2-1"
    for attr, val in (("idVendor", "174c"), ("idProduct", "2464"), ("product", "ASM2464PD"), ("busnum", "2"),
                      ("devnum", "3")):
        s.add_file(f"{base}/{attr}", val + "\n")
    s.add_file("/sys/bus/usb/devices/1-1/idVendor", "1d6b\n")  # a hub: not a bridge
    s.add_node("/dev/bus/usb/002/003", forbidden)
    (usb,) = probe(s)["usb"]
    assert usb["path"] == "USB (ASM2464 bridge) -> AM" and (usb["bus"], usb["device"]) == (2, 3)
    assert "udev rule" in usb["blockers"][0]
    s.add_node("/dev/bus/usb/002/003", lambda flags: NodeHandler())
    report = probe(s)
    assert report["usb"][0]["blockers"] == [] and "USB (ASM2464 bridge) -> AM" in render(report)
    del s.nodes["/dev/bus/usb/002/003"]
    assert "pass /dev/bus/usb through" in probe(s)["usb"][0]["blockers"][0]


def test_unopenable_kfd_says_which_groups_to_join():
    s = EmulatedSystem()
    s.add_node("/dev/kfd", forbidden)
    kfd_topology(s)
    kfd = probe(s)["kfd"]
    assert not kfd["openable"] and "render and video groups" in kfd["blockers"][0]


def test_empty_machine_says_so_and_exits_with_no_gpu(capsys):
    assert main([], system=EmulatedSystem()) == EXIT_NO_GPU
    out = capsys.readouterr().out
    assert "No GPU found" in out and EMULATED_TAG not in out
    assert main(["--json"], system=EmulatedSystem()) == EXIT_NO_GPU
    assert json.loads(capsys.readouterr().out)["summary"]["found_any"] is False


def test_unreadable_attributes_do_not_crash_the_probe():
    s = EmulatedSystem()
    s.add_file(f"/sys/bus/pci/devices/{AMD_BDF}/class", "0x030000\n")
    s.add_file(f"/sys/bus/pci/devices/{AMD_BDF}/vendor", "0x1002\n")  # no device, resource or driver link
    (card,) = probe(s)["pci"]
    assert card["bars"] is None and card["device_id"] is None
    assert any("BARs could not be read" in b for b in card["blockers"])
    text = render(probe(s))
    assert "AMD 1002:unknown" in text and "BARs:          unknown" in text


def test_sysfs_laid_out_as_on_linux_with_device_links():
    # /sys/bus/pci/devices/* are links into /sys/devices; the driver and iommu_group links live behind them
    s = EmulatedSystem()
    real = f"/sys/devices/pci0000:00/0000:00:01.1/{AMD_BDF}"
    s.add_link(f"/sys/bus/pci/devices/{AMD_BDF}", f"../../../devices/pci0000:00/0000:00:01.1/{AMD_BDF}")
    pci_device(s, AMD_BDF, 0x1002, 0x744C, None, 16 << 30)
    for name in ("vendor", "device", "class", "resource"):
        s.add_file(f"{real}/{name}", s.files.pop(f"/sys/bus/pci/devices/{AMD_BDF}/{name}"))
    s.links.pop(f"/sys/bus/pci/devices/{AMD_BDF}/iommu_group")
    s.add_link(f"{real}/driver", "../../../../bus/pci/drivers/amdgpu")
    s.add_link(f"{real}/iommu_group", "../../../../kernel/iommu_groups/17")
    (card,) = probe(s)["pci"]
    assert (card["kernel_driver"], card["iommu_group"], card["bars"][0]["size"]) == ("amdgpu", "17", 16 << 30)


def test_amd_card_on_vfio_needs_a_usable_iommu_group():
    s = EmulatedSystem()
    pci_device(s, AMD_BDF, 0x1002, 0x744C, "vfio-pci", 16 << 30)
    s.add_link("/sys/kernel/iommu_groups/17/devices/" + AMD_BDF, f"../../../../devices/pci0000:00/{AMD_BDF}")
    s.add_node("/dev/vfio/17", lambda flags: NodeHandler())
    (card,) = probe(s)["pci"]
    assert card["path"] == "AM over VFIO" and card["blockers"] == [] and "vfio-pci" in card["path_reason"]
    # the audio function shares the group but is still bound to a host driver, and the group node is root-only
    s.add_link("/sys/kernel/iommu_groups/17/devices/0000:03:00.1", "../../../../devices/pci0000:00/0000:03:00.1")
    s.add_link("/sys/bus/pci/devices/0000:03:00.1/driver", "../../../bus/pci/drivers/snd_hda_intel")
    s.add_node("/dev/vfio/17", forbidden)
    (card,) = probe(s)["pci"]
    assert "0000:03:00.1, bound to snd_hda_intel" in card["blockers"][0]
    assert "cannot open /dev/vfio/17" in card["blockers"][1]
    s2 = EmulatedSystem()
    pci_device(s2, AMD_BDF, 0x1002, 0x744C, "vfio-pci", 16 << 30, iommu=None)
    assert "no IOMMU group" in probe(s2)["pci"][0]["blockers"][0]


def test_unbound_amd_card_whose_bars_only_root_may_map():
    s = EmulatedSystem()
    pci_device(s, AMD_BDF, 0x1002, 0x744C, None, 16 << 30)
    s.add_node(f"/sys/bus/pci/devices/{AMD_BDF}/resource0", forbidden)
    (card,) = probe(s)["pci"]
    assert card["path"] == "AM over sysfs" and card["blockers"] == [
        "cannot open its BAR0 (sysfs resource0): run as root, or bind the card to vfio-pci"]


def test_amd_card_bound_to_another_driver_says_how_to_unbind():
    s = EmulatedSystem()
    pci_device(s, AMD_BDF, 0x1002, 0x744C, "radeon", 16 << 30)
    assert probe(s)["pci"][0]["blockers"] == [f"bound to radeon: unbind it (echo {AMD_BDF} > "
                                              "/sys/bus/pci/drivers/radeon/unbind)"]


def test_kfd_render_node_permissions_block_the_card(amd_kfd_machine):
    amd_kfd_machine.add_node("/dev/dri/renderD128", forbidden)
    report = probe(amd_kfd_machine)
    assert report["kfd"]["openable"] and "render and video groups" in report["kfd"]["blockers"][0]
    assert report["summary"]["usable"] == 0 and "blocked: cannot open /dev/dri/renderD128" in render(report)


def test_kfd_gpu_without_a_visible_pci_device_is_still_counted():
    s = EmulatedSystem()
    s.add_node("/dev/kfd", lambda flags: NodeHandler())
    s.add_node("/dev/dri/renderD128", lambda flags: NodeHandler())
    kfd_topology(s)
    report = probe(s)
    assert report["kfd"]["gpus"][0]["bdf"] == AMD_BDF  # location_id 768 is bus 3, device 0, function 0
    assert report["summary"]["devices"] == 1 and report["summary"]["usable"] == 1


def test_unsupported_display_device_has_no_driver_path_and_is_not_a_gpu():
    s = EmulatedSystem()
    pci_device(s, "0000:00:02.0", 0x1234, 0x1111, None, 16 << 20)
    pci_device(s, "0000:00:03.0", 0x1AF4, 0x1000, "virtio-pci", 16 << 20, cls=0x020000)  # a NIC: not listed
    report = probe(s)
    (card,) = report["pci"]
    assert card["path"] is None and card["blockers"] == [] and card["vendor"] == "QEMU"
    text = render(report)
    assert "no driver path (unsupported vendor)" in text and "No GPU found" in text


def test_nvidia_device_node_permissions():
    s = EmulatedSystem()
    pci_device(s, "0000:01:00.0", 0x10DE, 0x2330, "nvidia", 64 << 30)
    s.add_node("/dev/nvidiactl", forbidden)
    s.add_node("/dev/nvidia-uvm", lambda flags: NodeHandler())
    report = probe(s)
    assert report["pci"][0]["blockers"] == [] and "cannot open /dev/nvidiactl" in report["nvidia"]["blockers"][0]
    assert report["summary"]["usable"] == 0


def test_kgsl_is_reported_with_its_model():
    s = EmulatedSystem()
    s.add_node("/dev/kgsl-3d0", lambda flags: NodeHandler())
    s.add_file("/sys/class/kgsl/kgsl-3d0/gpu_model", "Adreno630v2\n")
    report = probe(s)
    assert report["kgsl"] == {"gpu_model": "Adreno630v2", "path": "QCOM (kgsl)", "blockers": [],
                              "driver_missing": "the Qualcomm Adreno (kgsl) driver is not built yet", "emulated": False}
    text = render(report)
    assert "QCOM (kgsl) (the Qualcomm Adreno (kgsl) driver is not built yet)" in text
    # Nothing blocks it, but there is no driver to use it with yet: not "ready to use".
    assert report["summary"]["usable"] == 0 and report["summary"]["not_built"] == ["QCOM (kgsl)"]
    assert "0 ready to use; not built yet in baregpu: QCOM (kgsl)." in text


def test_nvidia_card_without_the_nvidia_module():
    s = EmulatedSystem()
    pci_device(s, "0000:01:00.0", 0x10DE, 0x2330, None, 64 << 30, cls=0x030200)
    pci_device(s, "0000:02:00.0", 0x10DE, 0x2330, "vfio-pci", 64 << 30, cls=0x030200)
    unbound, vfio = probe(s)["pci"]
    assert unbound["blockers"] == ["no kernel driver is bound: load NVIDIA's open kernel module (modprobe nvidia)"]
    assert "unbind it (echo 0000:02:00.0 > /sys/bus/pci/drivers/vfio-pci/unbind)" in vfio["blockers"][0]


def test_mi300_style_accelerator_class_is_listed_and_json_is_stable(amd_kfd_machine, capsys):
    pci_device(amd_kfd_machine, "0000:c1:00.0", 0x1002, 0x74A1, "amdgpu", 256 << 30, cls=0x120000)
    # amdgpu holds it but KFD's topology does not list it: amdgpu did not bring it up for compute
    assert main(["--json"], system=amd_kfd_machine) == EXIT_NOT_READY
    report = json.loads(capsys.readouterr().out)
    assert "KFD's topology does not list 0000:c1:00.0" in report["pci"][1]["blockers"][0]
    assert [d["bdf"] for d in report["pci"]] == [AMD_BDF, "0000:c1:00.0"]
    assert [d["gfx"] for d in report["pci"]] == ["gfx1100", None]
    assert list(report) == ["schema", "pci", "kfd", "nvidia", "kgsl", "usb", "summary", "emulated", "checks"]


NV_STEPS = ["rm client", "device", "va space", "channels", "memory", "signal", "copy", "kernel", "tensor"]


def test_emulated_machine_is_brought_up_and_checked(capsys, emulators):
    assert main(["--emulate"]) == EXIT_NOT_READY  # the AM card: booted, but its queues are not built yet
    out = capsys.readouterr().out
    assert "[emulated] Bring-up AMD (gfx1100): OK" in out and "[emulated] Bring-up NV (sm_90): OK" in out
    for step in ("open", "memory", "copy", "kernel", "signal", *NV_STEPS):
        assert f"[emulated]     ok  {step}" in out
    # every line is about the emulated machine, and every line says so
    assert all(line.startswith(EMULATED_TAG) for line in out.splitlines()), out
    assert main(["--emulate", "--json"]) == EXIT_NOT_READY
    report = json.loads(capsys.readouterr().out)
    assert report["emulated"] is True
    assert [(c["device"], c["target"], c["ok"], c["emulated"]) for c in report["checks"]] == \
        [("AMD", "gfx1100", True, True), (f"AM {AM_STAND_IN_BDF}", "gfx1100", True, True), ("NV", "sm_90", True, True)]
    amd, am, nv = report["checks"]
    assert am["not_built"] == AM_NOT_BUILT
    assert [s["name"] for s in amd["steps"]] == ["open", "memory", "copy", "kernel", "signal"]
    assert [s["name"] for s in nv["steps"]] == NV_STEPS
    assert report["nvidia"]["emulated"] is True and [g["emulated"] for g in report["nvidia"]["gpus"]] == [True]
    assert [d["emulated"] for d in report["pci"]] == [True, True]  # the AM card's and the emulated H200's


def test_check_nv_brings_up_an_emulated_h200_stage_by_stage(nv_machine, ptxas):
    from drivers.nv.device import OPEN_STAGES
    from tools.bringup import check_nv, render
    check = check_nv(nv_machine, 0)
    assert check.ok and (check.device, check.target, check.emulated) == ("NV", "sm_90", True)
    assert [s.name for s in check.steps] == NV_STEPS == [n for n, _ in OPEN_STAGES] + NV_STEPS[4:]
    assert all(s.ms >= 0 for s in check.steps)
    details = {s.name: s.detail for s in check.steps}
    assert "NVIDIA H200, sm_90, HOPPER_COMPUTE_A, HOPPER_DMA_COPY_A, QMD V04_00" == details["device"]
    assert "registered with UVM" in details["va space"] and "HOPPER_CHANNEL_GPFIFO_A" in details["channels"]
    assert "matches numpy" in details["tensor"]
    as_json = json.loads(json.dumps(check.as_dict()))
    assert as_json["ok"] is True and [s["name"] for s in as_json["steps"]] == NV_STEPS
    assert set(as_json["steps"][0]) == {"name", "ok", "ms", "detail", "bad_environment"}
    lines = render([check])
    assert lines[0] == "[emulated] Bring-up NV (sm_90): OK" and "[emulated]     ok  rm client " in lines[1]
    assert not nv_machine.nv.clients, "the device was closed: its RM client is freed"
    from tensor import DEVICES
    assert "NV" not in [rt.name for rt in DEVICES.opened()], "the tensor layer gave the device back"
    assert check_nv(nv_machine, 1).ok  # the Ampere GPU, with QMD V03


def test_check_nv_names_the_stage_the_open_stopped_in(nv_machine):
    from tools.bringup import check_nv, render
    del nv_machine.nodes["/dev/nvidia-uvm"]  # the device stage initializes UVM
    check = check_nv(nv_machine, 0)
    assert not check.ok and [(s.name, s.ok) for s in check.steps] == [("rm client", True), ("device", False)]
    assert "/dev/nvidia-uvm" in check.steps[1].detail and "UVM initialized" in check.steps[1].detail
    assert "FAIL device" in "\n".join(render([check]))


def test_a_failing_bring_up_step_is_reported_and_stops_the_rest():
    from emu.machine import emulated_system
    from tools.bringup import check_amd, render
    check = check_amd(emulated_system("amd", ("gfx1201",), vram_limit=1 << 20), 0)
    assert not check.ok and check.target == "gfx1201"
    assert [(s.name, s.ok) for s in check.steps] == [("open", True), ("memory", False)]
    assert "OutOfMemoryError" in check.steps[1].detail
    assert "FAIL memory" in "\n".join(render([check]))


def test_no_check_opens_nothing_and_no_emulate_keeps_the_real_report(capsys):
    assert main(["--emulate", "--no-check", "--json"]) == EXIT_NOT_READY  # the AM card is not ready
    assert json.loads(capsys.readouterr().out)["checks"] == []
    status = main(["--no-emulate", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["emulated"] is False and "machine" not in report
    assert status == exit_status(report, [])  # this machine's own answer: EXIT_NO_GPU where it has no GPU


def test_an_nvidia_driver_that_does_not_answer_rm_blocks_its_cards():
    """nvidia bound and every node opens, but RM answers nothing (here: nodes with no RM behind them): the NV path is
    built, so what the report says is that the driver did not answer, not that something is unbuilt."""
    s = EmulatedSystem()
    pci_device(s, "0000:00:06.0", 0x10DE, 0x2330, "nvidia", 16 << 20)
    for node in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0"):
        s.add_node(node, lambda flags: NodeHandler())
    report = probe(s)
    (card,) = report["pci"]
    assert card["path"] == "NV (RM/UVM)" and card["blockers"] == [] and card["driver_missing"] is None
    (blocker,) = report["nvidia"]["blockers"]
    assert blocker.startswith("baregpu could not ask the NVIDIA driver about NV:0 (") and "nvidia-smi" in blocker
    assert report["nvidia"]["rm_probed"] is False and report["nvidia"]["gpus"] == []
    assert report["summary"]["usable"] == 0 and report["summary"]["not_built"] == []
    assert "not built" not in render(report)


def test_a_card_rm_does_not_list_is_blocked(nv_machine):
    pci_device(nv_machine, "0000:07:00.0", 0x10DE, 0x2330, "nvidia", 16 << 20)  # bound, but RM never brought it up
    cards = {d["bdf"]: d for d in probe(nv_machine)["pci"]}
    assert cards["0000:07:00.0"]["blockers"] == ["the NVIDIA driver is bound but RM does not list the GPU at "
                                                 "0000:07:00.0: it failed to initialize or is excluded (nvidia-smi "
                                                 "and dmesg say why)"]
    assert [d["blockers"] for bdf, d in cards.items() if bdf != "0000:07:00.0"] == [[], []]


# --- as users meet it: exit status, flags, pipes, names, labels, targets, environment ---

def test_exit_codes_are_distinct_and_documented_in_help(capsys):
    codes = {EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_NO_GPU, EXIT_NOT_READY}
    assert len(codes) == 5 and EXIT_OK == 0 and EXIT_USAGE == 2  # 2 is argparse's own usage-error status
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "exit status:" in out
    for code, words in ((EXIT_OK, "every device found is ready to use"), (EXIT_CHECK_FAILED, "a bring-up check failed"),
                        (EXIT_USAGE, "usage error"), (EXIT_NO_GPU, "no GPU found"),
                        (EXIT_NOT_READY, "a GPU was found but is not ready to use")):
        assert f"  {code}  {words}" in out


def test_no_emulate_on_a_machine_without_a_gpu_exits_with_no_gpu_and_shows_nothing_emulated(capsys):
    if probe(LinuxSystem())["summary"]["found_any"]:
        pytest.skip("this machine has a GPU: --no-emulate reports it (the described-machine tests cover the codes)")
    assert main(["--no-emulate"]) == EXIT_NO_GPU
    out = capsys.readouterr().out
    assert "No GPU found" in out and "/dev/kfd  opens" not in out and "emulated" not in out


def test_the_default_stand_in_labels_every_emulated_line_and_not_the_real_ones(capsys):
    if probe(LinuxSystem())["summary"]["found_any"]:
        pytest.skip("this machine has a GPU: the emulated machine does not stand in")
    assert main(["--no-check"]) == EXIT_OK  # the automatic stand-in leaves the unfinished AM card out
    lines = capsys.readouterr().out.splitlines()
    stand_in = next(i for i, line in enumerate(lines) if line.startswith("No GPU on this machine"))
    assert any(line.startswith("No GPU found") for line in lines[:stand_in])
    assert not any(line.startswith(EMULATED_TAG) for line in lines[:stand_in + 1])
    assert lines[stand_in + 1:] and all(line.startswith(EMULATED_TAG) for line in lines[stand_in + 1:])
    assert any("/dev/kfd  opens" in line for line in lines[stand_in + 1:])
    assert any("NV: NVIDIA H200" in line and "sm_90" in line for line in lines[stand_in + 1:])
    assert "--emulate also shows an emulated AMD PCI card with no kernel driver" in lines[stand_in]
    assert not any("generated test firmware" in line for line in lines[stand_in + 1:])
    assert main(["--no-check", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["emulated"] is True and report["summary"]["emulated"] is True and report["kfd"]["emulated"] is True
    assert [g["emulated"] for g in report["kfd"]["gpus"]] == [True]
    assert report["nvidia"]["emulated"] is True and [(g["target"], g["emulated"]) for g in report["nvidia"]["gpus"]] \
        == [("sm_90", True)]
    assert (report["summary"]["devices"], report["summary"]["usable"]) == (2, 2)  # the KFD GPU and the NVIDIA one
    assert report["machine"]["emulated"] is False and report["machine"]["summary"]["found_any"] is False


@pytest.mark.parametrize("pick, kfd, nvidia", [("amd", True, False), ("nv", False, True), ("1", True, True),
                                                ("amd,nv", True, True)])
def test_baregpu_emulate_picks_the_emulated_vendors(monkeypatch, capsys, pick, kfd, nvidia):
    monkeypatch.setenv("BAREGPU_EMULATE", pick)
    for flags in ([], ["--emulate"]):  # --emulate takes the variable's pick too
        # --emulate adds the AM card to the AMD half; its queues are not built yet, so it is found but not ready
        am = kfd and bool(flags)
        assert main(["--no-check", "--json", *flags]) == (EXIT_NOT_READY if am else EXIT_OK)
        report = json.loads(capsys.readouterr().out)
        assert report["emulated"] is True and "machine" not in report
        assert (report["kfd"] is not None, report["nvidia"] is not None) == (kfd, nvidia)
        assert report["summary"]["devices"] == kfd + am + nvidia


def test_a_described_real_machine_is_never_labelled_emulated(amd_kfd_machine, capsys):
    pci_device(amd_kfd_machine, "0000:01:00.0", 0x10DE, 0x2330, "nouveau", 64 << 30)
    assert main(["--json"], system=amd_kfd_machine) == EXIT_NOT_READY  # nouveau blocks the NVIDIA card
    report = json.loads(capsys.readouterr().out)
    entries = report["pci"] + [report["kfd"]] + report["kfd"]["gpus"] + [report["summary"]]
    assert report["emulated"] is False and [e["emulated"] for e in entries] == [False] * len(entries)
    assert EMULATED_TAG not in render(probe(amd_kfd_machine))
    report = probe(amd_kfd_machine, emulated=True)
    assert all(line.startswith(EMULATED_TAG) for line in render(report).splitlines())
    assert "2 emulated device(s) with a driver path" in render(report)


def test_exit_status_per_case_on_described_machines(amd_kfd_machine, capsys):
    assert main([], system=amd_kfd_machine) == EXIT_OK  # ready, and a described machine is never driven
    amd_kfd_machine.add_node("/dev/dri/renderD128", forbidden)
    assert main([], system=amd_kfd_machine) == EXIT_NOT_READY  # blocked: the report says which group to join
    s = EmulatedSystem()
    s.add_node("/dev/kgsl-3d0", lambda flags: NodeHandler())
    assert main(["--no-check"], system=s) == EXIT_NOT_READY  # nothing blocks it, but its driver is not built
    s = EmulatedSystem()
    pci_device(s, "0000:00:02.0", 0x1234, 0x1111, None, 16 << 20)  # a QEMU display: no driver path, not a GPU
    assert main([], system=s) == EXIT_NO_GPU
    capsys.readouterr()


def test_a_failing_bring_up_exits_with_check_failed(monkeypatch, capsys):
    import drivers.emulation
    from emu.machine import emulated_system
    # an emulated machine whose VRAM is too small for the memory step, as a broken card would be
    monkeypatch.setattr(drivers.emulation, "emulated_system",
                        lambda vendor, targets=None: emulated_system(vendor, ("gfx1100",), vram_limit=1 << 20))
    monkeypatch.setenv("BAREGPU_EMULATE", "amd")
    assert main(["--emulate"]) == EXIT_CHECK_FAILED
    out = capsys.readouterr().out
    assert "[emulated] Bring-up AMD (gfx1100): FAILED" in out and "[emulated]     FAIL memory" in out
    assert "ok  copy" not in out  # the steps after a failure are skipped


def test_conflicting_flags_are_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--emulate", "--no-emulate"])
    assert exc.value.code == EXIT_USAGE
    assert "argument --no-emulate: not allowed with argument --emulate" in capsys.readouterr().err


@pytest.mark.parametrize("fmt, unbuffered, status", [([], False, EXIT_NOT_READY), (["--json"], False, EXIT_NOT_READY),
                                                     (["--json"], True, EXIT_NOT_READY), (["--help"], False, 0)],
                         ids=["text", "json", "json-unbuffered", "help"])
def test_a_reader_that_leaves_early_gets_no_traceback(fmt, unbuffered, status):
    # buffered stdout (a user's default) fails at the flush, PYTHONUNBUFFERED=1 at the write: both must be quiet
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "tools.gpu_probe", "--emulate", "--no-check", *fmt], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the probe writes a byte (| head that already has its line)
    _, err = proc.communicate(timeout=60)
    assert err.decode() == "" and proc.returncode == status


def test_usage_line_names_the_command_the_way_it_was_run(tmp_path):
    bad = probe_cmd("--bogus")
    assert bad.stderr.startswith("usage: python -m tools.gpu_probe ") and bad.returncode == EXIT_USAGE
    # a launcher of the shape pip writes for [project.scripts] gpu-probe = "tools.gpu_probe:main"
    script = tmp_path / "gpu-probe"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom tools.gpu_probe import main\n"
                      "if __name__ == '__main__':\n    sys.exit(main())\n")
    script.chmod(0o755)
    env = dict(os.environ, PYTHONPATH=str(ROOT), BAREGPU_EMULATE="bogus")
    bad = subprocess.run([str(script), "--bogus"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert bad.stderr.startswith("usage: gpu-probe [-h]") and "gpu-probe: error: unrecognized" in bad.stderr
    env_bad = subprocess.run([str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert env_bad.returncode == EXIT_USAGE and env_bad.stderr.startswith("gpu-probe: error: environment variable "
                                                                         "BAREGPU_EMULATE='bogus' is not valid")
    assert "Traceback" not in env_bad.stderr and env_bad.stderr.count("\n") == 1  # one paragraph


@pytest.mark.parametrize("name, value, words", [
    ("BAREGPU_EMULATE", "bogus", ["'bogus' unknown", "amd, nv, qcom, usb"]),
    ("BAREGPU_EMULATE", "1,amd", ["'1' unknown", "amd, nv, qcom, usb"]),
    ("BAREGPU_EMULATE", ",", ["names no vendor"]),
    ("BAREGPU_EMU_AMD", "", ["empty", "gfx1100", "gfx942"]),
    ("BAREGPU_EMU_AMD", "gfx9000", ["'gfx9000' unknown", "gfx1100", "gfx1201", "gfx942"]),
    ("BAREGPU_EMU_AMD", "gfx1100,,gfx90a", ["'gfx90a' unknown", "gfx1100"]),
    ("BAREGPU_EMU_NV", "sm_100", ["'sm_100' unknown", "sm_90"]),
    ("BAREGPU_NV_ANY_DRIVER", "maybe", []),
])
def test_bad_environment_values_are_usage_errors_that_name_them(monkeypatch, capsys, name, value, words):
    monkeypatch.setenv(name, value)
    if name.startswith("BAREGPU_EMU_"):  # so the emulated machine is what gets probed
        monkeypatch.setenv("BAREGPU_EMULATE", name.rsplit("_", 1)[1].lower())
    if name == "BAREGPU_NV_ANY_DRIVER":  # read when a driver of another branch than the pin is found
        monkeypatch.setattr("drivers.nv.device.PINNED_VERSION", "999.1.1")
        monkeypatch.setenv("BAREGPU_EMULATE", "nv")
    assert main(["--no-check"]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"python -m tools.gpu_probe: error: environment variable {name}={value!r} is not valid")
    assert "is amdgpu loaded" not in err
    for w in words:
        assert w in err


def test_a_bad_emulate_value_is_named_even_under_no_emulate(monkeypatch, capsys):
    monkeypatch.setenv("BAREGPU_EMULATE", "amdd")
    assert main(["--no-emulate", "--no-check"]) == EXIT_USAGE
    assert "BAREGPU_EMULATE='amdd'" in capsys.readouterr().err


def test_gfx942_is_not_ready_and_says_what_is_not_built(monkeypatch, capsys):
    assert kfd_target_missing("gfx1100") is None and kfd_target_missing("gfx1201") is None
    assert kfd_target_missing("gfx942") == ("the AMD (KFD) driver is not built for gfx942 yet: its compute queues take "
                                            "AQL packets, which are not built yet (PM4 compute queues are built for "
                                            "gfx11 and gfx12)")
    monkeypatch.setenv("BAREGPU_EMU_AMD", "gfx942")
    monkeypatch.setenv("BAREGPU_EMULATE", "amd")  # the AMD half alone: the NVIDIA one would be brought up
    assert main(["--emulate"]) == EXIT_NOT_READY  # not brought up, so nothing fails: it is simply not ready
    out = capsys.readouterr().out
    assert "[emulated]     not ready: the AMD (KFD) driver is not built for gfx942 yet: its compute queues take AQL packets" in out
    assert "0 ready to use; not built yet in baregpu: AM over sysfs, AMD (KFD) for gfx942." in out
    assert "Bring-up AMD" not in out  # the KFD GPU is not brought up (the AM card is, as far as AM goes)
    assert main(["--emulate", "--json"]) == EXIT_NOT_READY
    report = json.loads(capsys.readouterr().out)
    (gpu,) = report["kfd"]["gpus"]
    assert gpu["gfx"] == "gfx942" and "AQL packets" in gpu["driver_missing"]
    assert [c["device"] for c in report["checks"]] == [f"AM {AM_STAND_IN_BDF}"]
    assert report["summary"]["usable"] == 0 and report["summary"]["not_built"] == ["AM over sysfs", "AMD (KFD) for gfx942"]


def test_a_real_gfx942_card_is_not_counted_ready(amd_kfd_machine):
    s = EmulatedSystem()
    pci_device(s, AMD_BDF, 0x1002, 0x74A1, "amdgpu", 256 << 30, cls=0x120000)
    s.add_node("/dev/kfd", lambda flags: NodeHandler())
    s.add_node("/dev/dri/renderD128", lambda flags: NodeHandler())
    kfd_topology(s, gfx_version=90402)
    report = probe(s)
    (card,) = report["pci"]
    assert card["blockers"] == [] and "not built for gfx942" in card["driver_missing"]
    assert report["summary"]["usable"] == 0 and report["summary"]["devices"] == 1
    assert "driver path:   AMD (KFD) (the AMD (KFD) driver is not built for gfx942 yet" in render(report)
    assert probe(amd_kfd_machine)["summary"]["usable"] == 1  # the same card shape as a gfx1100 is ready


def test_mixed_machine_brings_up_what_is_built_and_skips_gfx942(monkeypatch, capsys, lld):
    monkeypatch.setenv("BAREGPU_EMU_AMD", "gfx1100,gfx942")
    monkeypatch.setenv("BAREGPU_EMULATE", "amd")
    assert main(["--emulate", "--json"]) == EXIT_NOT_READY  # one ready and checked, one not built
    report = json.loads(capsys.readouterr().out)
    assert [(c["device"], c["target"], c["ok"]) for c in report["checks"]] == [("AMD", "gfx1100", True),
                                                                                (f"AM {AM_STAND_IN_BDF}", "gfx1100", True)]
    assert report["summary"]["usable"] == 1 and report["summary"]["devices"] == 3


def test_kfd_nodes_are_listed_in_index_order_as_the_driver_numbers_them():
    s = EmulatedSystem()
    s.add_node("/dev/kfd", lambda flags: NodeHandler())
    root = "/sys/class/kfd/kfd/topology/nodes"
    for node, version in (("10", 110000), ("2", 90402)):  # listed "10" before "2" when sorted as text
        s.add_file(f"{root}/{node}/name", "\n")
        s.add_file(f"{root}/{node}/properties", f"simd_count 96\ngfx_target_version {version}\n")
    assert [(g["node"], g["gfx"]) for g in probe(s)["kfd"]["gpus"]] == [(2, "gfx942"), (10, "gfx1100")]


def test_a_bad_variable_read_during_bring_up_is_a_usage_error_not_a_broken_device(monkeypatch, capsys):
    monkeypatch.setenv("BAREGPU_LOCK_WAIT", "soon")  # the lock's own message suggests setting it
    assert main(["--emulate"]) == EXIT_USAGE
    out = capsys.readouterr().out
    assert "[emulated]     FAIL open" in out and "BAREGPU_LOCK_WAIT='soon' is not valid" in out
    assert "[emulated]     FAIL rm client" in out  # the NVIDIA GPU's lock is taken in its RM client stage
    assert main(["--emulate", "--json"]) == EXIT_USAGE
    amd, am, nv = json.loads(capsys.readouterr().out)["checks"]
    assert am["steps"][0]["name"] == "open" and am["steps"][0]["bad_environment"] is True
    (step,) = amd["steps"]
    assert step["name"] == "open" and step["bad_environment"] is True and "EnvError" in step["detail"]
    (step,) = nv["steps"]
    assert step["name"] == "rm client" and step["bad_environment"] is True and "BAREGPU_LOCK_WAIT" in step["detail"]


# --- the AM path: an emulated AMD PCI card with no kernel driver (emu/am), firmware generated per test ---

AM_BDF = "0000:0c:00.0"


@pytest.fixture
def am_card(tmp_path):
    """A private emulated machine with an emulated gfx1100 PCI card and no kernel driver; (system, card, firmware dir)."""
    from drivers.lock import ProcessLocks
    from emu.am.gpu import install_am_gpu
    from tests.firmware import fwgen
    fw = tmp_path / "fw"
    fwgen.write_set(fw, "gfx1100")
    system = EmulatedSystem(lock_dir=ProcessLocks("test_gpu_probe am"))
    card = install_am_gpu(system, "gfx1100", AM_BDF, boot_delay_s=0, vram_size=1 << 30, firmware=fw, blocks=True)
    yield system, card, fw
    card.close()


def test_an_unbound_amd_card_goes_to_am_over_sysfs_with_the_doctor_checks(am_card):
    system, _, fw = am_card
    report = probe(system, identify=True, firmware_dirs=[str(fw)], generated_firmware=True)
    (card,) = report["pci"]
    assert card["path"] == "AM over sysfs" and card["blockers"] == [] and "no kernel driver" in card["path_reason"]
    assert card["target"] == "gfx1100" and card["driver_missing"] == AM_NOT_BUILT
    doc = card["doctor"]
    assert doc["kernel_module"] is None and doc["iommu"] == {"enabled": False, "group": None, "type": None,
                                                             "members": []}
    assert doc["link"] == {"speed_gts": 16.0, "width": 16, "max_speed_gts": 16.0, "max_width": 16, "degraded": False}
    assert doc["bar0"]["size"] == 256 << 20 and doc["bar0"]["vram_size"] == 1 << 30
    assert max(doc["bar0"]["resizable_sizes"]) == 1 << 30 and doc["bar0"]["covers_vram"] is False
    assert doc["lock"] == {"key": f"emulated-pci-{AM_BDF}", "holder": None}
    ident = doc["identify"]
    assert ident["ok"] and ident["ip_versions"]["GC"]["version"] == "11.0.0" and ident["bar0_resize"]["result"] == \
        "not attempted"  # the doctor never resizes BAR0
    assert doc["firmware"]["present"] and doc["firmware"]["generated"] and len(doc["firmware"]["images"]) == 11
    assert any("Resizable BAR offers 1 GiB" in n for n in card["notes"])
    assert any("generated test firmware" in n for n in card["notes"])
    assert report["summary"]["usable"] == 0 and report["summary"]["not_built"] == ["AM over sysfs"]
    text = render(report)
    for words in ("driver path:   AM over sysfs (not built yet: GFX/SDMA queues (issue 11))", "IOMMU:         off",
                  "PCIe link:     16 GT/s x16", "device lock:   free", "identified:    gfx1100, 1 GiB VRAM",
                  "firmware:      11 image(s) found (generated test firmware)"):
        assert words in text, text
    # without identify (a described machine) the card is not opened: no target, nothing read through the driver
    assert probe(system)["pci"][0]["doctor"]["identify"] is None


def test_missing_firmware_is_named_file_by_file(am_card, tmp_path):
    from tests.firmware import fwgen
    system, _, _ = am_card
    partial = tmp_path / "partial"
    fwgen.write_set(partial, "gfx1100", skip=("smu_13_0_0.bin", "gc_11_0_0_mec.bin"))
    (card,) = probe(system, identify=True, firmware_dirs=[str(partial)])["pci"]
    fw = card["doctor"]["firmware"]
    assert fw["present"] is False and {m["file"] for m in fw["missing"]} == {"smu_13_0_0.bin", "gc_11_0_0_mec.bin"}
    (blocker,) = card["blockers"]
    assert "smu_13_0_0.bin" in blocker and "gc_11_0_0_mec.bin" in blocker and "firmware-amd-graphics" in blocker


def test_an_am_card_in_use_names_the_holder(am_card):
    from drivers.am.device import AMDevice
    system, _, fw = am_card
    with AMDevice(AM_BDF, system, firmware_dirs=[fw], firmware_system_dirs=False):
        (card,) = probe(system, identify=True, firmware_dirs=[str(fw)])["pci"]
    assert card["doctor"]["lock"]["holder"]["pid"] == os.getpid()
    assert card["blockers"] == [b for b in card["blockers"] if b.startswith(f"in use by PID {os.getpid()}")] != []
    assert card["doctor"]["identify"] is None  # a blocked card is not opened


def test_a_translating_iommu_blocks_am_over_sysfs_and_a_slow_link_is_noted():
    s = EmulatedSystem()
    pci_device(s, AMD_BDF, 0x1002, 0x744C, None, 16 << 30)
    s.add_file("/sys/kernel/iommu_groups/17/type", "DMA-FQ\n")
    base = f"/sys/bus/pci/devices/{AMD_BDF}"
    for name, text in (("current_link_speed", "8.0 GT/s PCIe"), ("current_link_width", "8"),
                       ("max_link_speed", "16.0 GT/s PCIe"), ("max_link_width", "16")):
        s.add_file(f"{base}/{name}", text + "\n")
    (card,) = probe(s)["pci"]
    assert card["doctor"]["iommu"]["type"] == "DMA-FQ"
    assert card["blockers"] == ["the IOMMU translates its DMA (group 17, type DMA-FQ): AM over sysfs hands the card "
                                "physical addresses, so boot with iommu=pt, or bind the card to vfio-pci to use AM "
                                "over VFIO"]
    assert card["doctor"]["link"]["degraded"] and any("8 GT/s x8 of the card's 16 GT/s x16" in n for n in card["notes"])


def test_a_small_bar0_that_resizable_bar_can_grow_does_not_block():
    s = EmulatedSystem()
    pci_device(s, AMD_BDF, 0x1002, 0x744C, None, 128 << 20)
    s.add_file(f"/sys/bus/pci/devices/{AMD_BDF}/resource0_resize", f"{0b111111000:016x}\n")  # 8 MiB .. 256 MiB
    (card,) = probe(s)["pci"]
    assert card["blockers"] == [] and card["doctor"]["bar0"]["resizable_sizes"][-1] == 256 << 20


def test_check_am_boots_the_blocks_stage_by_stage_and_says_queues_are_not_built(am_card):
    from tools.bringup import check_am, render as render_checks
    system, _, fw = am_card
    check = check_am(system, AM_BDF, [str(fw)], generated_firmware=True)
    assert check.ok and (check.device, check.target, check.emulated) == (f"AM {AM_BDF}", "gfx1100", True)
    assert [s.name for s in check.steps] == ["open", "ifwi", "bars", "discovery", "firmware", "gmc", "psp", "smu"]
    assert check.not_built == AM_NOT_BUILT and all(s.ms >= 0 for s in check.steps)
    assert "11 images" in check.steps[4].detail and "smu_13_0_0.bin" in check.steps[6].detail
    lines = render_checks([check])
    assert lines[0] == f"[emulated] Bring-up AM {AM_BDF} (gfx1100): OK"
    assert any("smoke checks (signal, copy, kernel, tensor) not run: not built yet: GFX/SDMA queues" in l for l in lines)
    assert any("generated test firmware" in l for l in lines)
    assert check.as_dict()["not_built"] == AM_NOT_BUILT
    # closed again: a second bring-up opens the card (a cold or warm boot, whichever the card allows)
    assert check_am(system, AM_BDF, [str(fw)]).steps[0].ok


def test_check_am_stops_at_the_block_that_fails(tmp_path):
    """A card whose PSP was given no firmware to trust fails the PSP stage; the SMU is not tried."""
    from drivers.lock import ProcessLocks
    from emu.am.gpu import install_am_gpu
    from tests.firmware import fwgen
    from tools.bringup import check_am
    fw = tmp_path / "fw"
    fwgen.write_set(fw, "gfx1100")
    system = EmulatedSystem(lock_dir=ProcessLocks("test_gpu_probe am psp"))
    card = install_am_gpu(system, "gfx1100", AM_BDF, boot_delay_s=0, vram_size=1 << 30, blocks=True)
    try:
        check = check_am(system, AM_BDF, [str(fw)])
    finally:
        card.close()
    assert not check.ok and [s.name for s in check.steps][-2:] == ["gmc", "psp"] and not check.steps[-1].ok
    assert check.not_built == "" and "PSP" in check.steps[-1].detail
