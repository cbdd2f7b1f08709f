"""Facts about this machine's NVIDIA driver and GPUs for gpu_probe, without opening a GPU for work.

The driver: its version and whether it is the open kernel module (the RM/UVM path needs it: the proprietary module
keeps the same escapes but this project's interface facts are pinned to the open one), and whether UVM is loaded.
Per GPU (an RM client only, no VA space, memory or channels): name, architecture, sm target, the classes the
driver would choose, VRAM and BAR1 size, PCI address.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from drivers.system import OSCallError, System

VERSION_FILES = ("/proc/driver/nvidia/version", "/sys/module/nvidia/version")
OPEN_MODULE = "Open Kernel Module"  # the first line of /proc/driver/nvidia/version says which module is loaded


def driver_facts(system: System) -> dict[str, Any]:
    """Driver version, whether it is the open kernel module, device nodes present; {"loaded": False, ...} when none."""
    text = ""
    for path in VERSION_FILES:
        try:
            text = system.read_text(path)
            break
        except (OSError, OSCallError):
            continue
    facts: dict[str, Any] = {"loaded": bool(text), "version": None, "open_kernel_module": None,
                             "uvm": system.exists("/dev/nvidia-uvm"), "control_node": system.exists("/dev/nvidiactl")}
    if not text:
        facts["problem"] = "no NVIDIA kernel driver is loaded (neither /proc/driver/nvidia/version nor " \
                           "/sys/module/nvidia/version exists): install and load nvidia (open) and nvidia-uvm"
        return facts
    m = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", text)
    facts["version"] = m.group(1) if m else text.splitlines()[0]
    if "NVRM version" in text:  # /proc's text says which module; the sysfs file holds only the number
        facts["open_kernel_module"] = OPEN_MODULE in text
    problems = []
    if facts["open_kernel_module"] is False:
        problems.append("the loaded driver is NVIDIA's proprietary kernel module; this path needs the open kernel "
                        "module (nvidia-open / the -open driver package)")
    if not facts["uvm"]:
        problems.append("/dev/nvidia-uvm is missing: load nvidia-uvm (modprobe nvidia-uvm; nvidia-modprobe -u -c0)")
    if problems:
        facts["problem"] = "; ".join(problems)
    return facts


def gpu_facts(system: System, index: int) -> dict[str, Any]:
    """One GPU's facts through an RM client of its own (freed again); raises NVError/OSCallError when RM refuses."""
    from autogen import nv_rm as R
    from drivers.nv import device as D
    from drivers.nv.rm import RMClient, class_name

    fd = system.open("/dev/nvidiactl")
    rm = RMClient(system, fd, f"NV:{index}")
    try:
        rm.alloc_root()
        probed = rm.control(rm.client, R.NV0000_CTRL_CMD_GPU_GET_PROBED_IDS, R.NV0000_CTRL_GPU_GET_PROBED_IDS_PARAMS(),
                            "NV0000_CTRL_CMD_GPU_GET_PROBED_IDS")
        ids = [g for g in probed.gpuIds if g != R.NV0000_CTRL_GPU_INVALID_ID]
        if not 0 <= index < len(ids):
            raise IndexError(f"NV:{index} does not exist: RM probed {len(ids)} GPU(s)")
        info = rm.control(rm.client, R.NV0000_CTRL_CMD_GPU_GET_ID_INFO_V2,
                          R.NV0000_CTRL_GPU_GET_ID_INFO_V2_PARAMS(gpuId=ids[index]), "NV0000_CTRL_CMD_GPU_GET_ID_INFO_V2")
        cards = (R.nv_ioctl_card_info_t * R.NV_MAX_DEVICES)()
        rm.escape(fd, R.NV_ESC_CARD_INFO, cards, "NV_ESC_CARD_INFO")
        card = next((c for c in cards if c.valid and c.gpu_id == ids[index]), None)
        from autogen import nv_classes as C
        device = rm.alloc(rm.client, C.NV01_DEVICE_0, R.NV0080_ALLOC_PARAMETERS(
            deviceId=info.deviceInstance, hClientShare=rm.client,
            vaMode=R.NV_DEVICE_ALLOCATION_VAMODE_MULTIPLE_VASPACES))
        sub = rm.alloc(device, C.NV20_SUBDEVICE_0, R.NV2080_ALLOC_PARAMETERS(subDeviceId=info.subDeviceInstance))
        arch = rm.control(sub, R.NV2080_CTRL_CMD_MC_GET_ARCH_INFO, R.NV2080_CTRL_MC_GET_ARCH_INFO_PARAMS(),
                          "NV2080_CTRL_CMD_MC_GET_ARCH_INFO")
        cl = rm.control(device, R.NV0080_CTRL_CMD_GPU_GET_CLASSLIST_V2, R.NV0080_CTRL_GPU_GET_CLASSLIST_V2_PARAMS(),
                        "NV0080_CTRL_CMD_GPU_GET_CLASSLIST_V2")
        classes = set(cl.classList[:cl.numClasses])
        fb = R.NV2080_CTRL_FB_GET_INFO_V2_PARAMS(fbInfoListSize=2)
        fb.fbInfoList[0].index, fb.fbInfoList[1].index = (R.NV2080_CTRL_FB_INFO_INDEX_RAM_SIZE,
                                                          R.NV2080_CTRL_FB_INFO_INDEX_BAR1_SIZE)
        rm.control(sub, R.NV2080_CTRL_CMD_FB_GET_INFO_V2, fb, "NV2080_CTRL_CMD_FB_GET_INFO_V2")
        name = rm.control(sub, R.NV2080_CTRL_CMD_GPU_GET_NAME_STRING, R.NV2080_CTRL_GPU_GET_NAME_STRING_PARAMS(
            gpuNameStringFlags=R.NV2080_CTRL_GPU_GET_NAME_STRING_FLAGS_TYPE_ASCII), "NV2080_CTRL_CMD_GPU_GET_NAME_STRING")
        chosen: dict[str, Optional[str]] = {}
        for what, options in (("channel", D.CHANNEL_CLASSES), ("compute", D.COMPUTE_CLASSES), ("copy", D.COPY_CLASSES)):
            c = next((c for c in options if c in classes), None)
            chosen[what] = class_name(c) if c is not None else None
        compute = next((c for c in D.COMPUTE_CLASSES if c in classes), None)
        target = D.target_for(arch.architecture, arch.implementation)
        pci = card.pci_info if card is not None else None
        facts = {
            "index": index, "name": bytes(name.gpuNameString.ascii).split(b"\0")[0].decode(errors="replace"),
            "arch": D.ARCH_NAMES.get(arch.architecture, f"{arch.architecture:#x}"),
            "architecture": arch.architecture, "implementation": arch.implementation, "target": target,
            "classes": chosen, "qmd": D.QMD_VERSION.get(compute) if compute is not None else None,
            "vram_bytes": fb.fbInfoList[0].data << 10, "bar1_bytes": fb.fbInfoList[1].data << 10,
            "pci": f"{pci.domain:04x}:{pci.bus:02x}:{pci.slot:02x}.{pci.function}" if pci is not None else None,
            "minor": card.minor_number if card is not None else None,
        }
        missing = [w for w, c in chosen.items() if c is None]
        if target is None or missing:
            facts["problem"] = (f"{facts['arch']} is not driven yet" +
                                (f": no {', '.join(missing)} class this driver knows" if missing else ""))
        return facts
    finally:
        try:
            if rm.client:
                rm.free(rm.client, rm.client, "client")
        finally:
            system.close(fd)


def probe(system: Optional[System] = None) -> dict[str, Any]:
    """Everything gpu_probe reports about NVIDIA here: {"driver": {...}, "gpus": [{...}, ...]}; a GPU RM refuses
    carries "problem" instead of its facts."""
    from drivers.emulation import system_for
    system = system or system_for("nv")
    out: dict[str, Any] = {"driver": driver_facts(system), "gpus": []}
    if not out["driver"]["control_node"]:
        return out
    for index in range(64):
        try:
            out["gpus"].append(gpu_facts(system, index))
        except IndexError:
            break
        except Exception as e:  # noqa: BLE001 - a probe reports what failed instead of stopping
            out["gpus"].append({"index": index, "problem": f"{type(e).__name__}: {e}"})
            break
    return out
