"""python -m tools.gpu_probe (installed as the gpu-probe command): what GPUs this machine has, which driver path
would handle each, and what blocks it, in words a person can act on; then every device that is ready to use (nothing
blocks it and every path it needs is built) is brought up and checked (tools/bringup.py), the emulated machine (an
emulated AMD GPU and an emulated NVIDIA GPU) standing in when there is no GPU. `--json` prints the same report for
programs. The exit status says how it went (EXIT_CODES, also in --help).

For NVIDIA it reports the driver (version, open or proprietary kernel module, UVM) and, through RM, each GPU the
driver has: name, architecture, sm target, the classes the NV driver would choose, VRAM and BAR1 (drivers/nv/probe.py).

Every file it reads goes through the OS seam, so tests describe a machine with an emulated system.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import posixpath
import sys
from typing import Any

from drivers.amd.topology import pci_address
from drivers.registry import NOT_BUILT
from drivers.system import LinuxSystem, System
from hcq.env import env_flag

# The --json shape's version. 2: "nvidia" holds the driver's facts and one entry per GPU RM has ("gpus", which in 1
# named the /dev/nvidiaN nodes: those are "nodes" now); PCI entries carry "target" (the AMD gfx or NVIDIA sm target).
# 3: AMD PCI entries carry "path_reason", "notes" and "doctor" (module, IOMMU, BAR0 vs VRAM, link, lock, identify,
# firmware); the AM path is "AM over sysfs" or "AM over VFIO" (was "AM (no kernel driver)"); KFD GPUs carry "gpu_id";
# checks carry "not_built" and "notes".
SCHEMA = 3
VENDORS = {0x1002: "AMD", 0x10DE: "NVIDIA", 0x5143: "Qualcomm", 0x8086: "Intel", 0x1AF4: "Red Hat (virtio)",
           0x1234: "QEMU", 0x1013: "Cirrus Logic", 0x15AD: "VMware", 0x1B36: "Red Hat (QEMU)"}
ASM2464 = {(0x174C, 0x2463), (0x174C, 0x2464)}
MIN_LARGE_BAR = 256 << 20  # AM maps all of VRAM through BAR0 only when resizable BAR gave it room
PCI_ROOT, KFD_TOPOLOGY, USB_ROOT = "/sys/bus/pci/devices", "/sys/class/kfd/kfd/topology/nodes", "/sys/bus/usb/devices"
AMD_KFD, AM_SYSFS, AM_VFIO = "AMD (KFD)", "AM over sysfs", "AM over VFIO"
AM_PATHS = (AM_SYSFS, AM_VFIO)
# What the AM path lacks before a program can use it: its blocks boot (tools/bringup.py check_am), its queues do not.
AM_NOT_BUILT = "not built yet: GFX/SDMA queues (issue 11)"
AM_STAND_IN_BDF = "0000:0c:00.0"  # the stand-in's AM card; the emulated KFD GPU claims 0000:03:00.0
AM_STAND_IN_TARGET = "gfx1100"
GENERATED_FIRMWARE = ("the firmware is generated test firmware (tests/firmware/fwgen.py: valid headers, made-up "
                      "payloads, written to a temporary directory for this run), not AMD's")


def _attr(system: System, path: str) -> str | None:
    """A sysfs attribute, or None when it cannot be read (missing, permission, I/O error)."""
    try:
        return system.read_text(path)
    except OSError:
        return None


def _link_name(system: System, path: str) -> str | None:
    """Basename of a sysfs link's target (bound driver, IOMMU group), or None when there is no link."""
    try:
        return posixpath.basename(system.readlink(path))
    except OSError:
        return None


def _hex(text: str | None) -> int | None:
    try:
        return int(text, 16) if text else None
    except ValueError:
        return None


def _listdir(system: System, path: str) -> list[str]:
    try:
        return system.listdir(path)
    except OSError:
        return []


def _open_error(system: System, path: str) -> int | None:
    """errno of opening a device node read-write (None when it opened), to tell missing from forbidden."""
    try:
        fd = system.open(path, os.O_RDWR)
    except OSError as e:
        return e.errno or errno.EIO
    system.close(fd)
    return None


def _bars(system: System, bdf: str) -> list[dict[str, int]] | None:
    """Nonzero BARs with their index and size, or None when the resource table cannot be read."""
    text = _attr(system, f"{PCI_ROOT}/{bdf}/resource")
    if text is None:
        return None
    bars = []
    for i, line in enumerate(text.splitlines()[:6]):  # lines 0-5 are the BARs; then the ROM and bridge windows
        try:
            start, end, _flags = (int(x, 16) for x in line.split())
        except ValueError:
            continue
        if end:
            bars.append({"index": i, "size": end - start + 1})
    return bars


def _size_text(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} B"


def probe_pci(system: System, kfd: dict | None, nvidia: dict | None) -> list[dict[str, Any]]:
    """PCI display controllers (class 0x03) and processing accelerators (0x12), with their driver path."""
    out = []
    for bdf in _listdir(system, PCI_ROOT):
        cls = _hex(_attr(system, f"{PCI_ROOT}/{bdf}/class"))
        if cls is None or (cls >> 16) not in (0x03, 0x12):
            continue
        vendor = _hex(_attr(system, f"{PCI_ROOT}/{bdf}/vendor"))
        dev = {"bdf": bdf, "vendor_id": vendor, "device_id": _hex(_attr(system, f"{PCI_ROOT}/{bdf}/device")),
               "vendor": VENDORS.get(vendor or -1, "unknown vendor"), "class": cls,
               "kernel_driver": _link_name(system, f"{PCI_ROOT}/{bdf}/driver"),
               "bars": _bars(system, bdf), "iommu_group": _link_name(system, f"{PCI_ROOT}/{bdf}/iommu_group"),
               # filled in by probe() from the KFD node or the RM GPU at the same PCI address
               "gfx": None, "target": None}
        if vendor == 0x10DE and dev["kernel_driver"] is None and bdf in _nv_bdfs(nvidia):
            # RM lists only GPUs nvidia.ko drives: a sysfs without the driver link (a container's, the emulated
            # machine's) must not make a working card read as unbound
            dev["kernel_driver"] = "nvidia"
        if vendor == 0x1002 and dev["kernel_driver"] is None and bdf in _kfd_bdfs(kfd):
            # as for RM above: KFD lists only GPUs amdgpu drives, whatever a container's sysfs shows
            dev["kernel_driver"] = "amdgpu"
        dev["path"], dev["blockers"] = _pci_path(system, dev, kfd, nvidia)
        out.append(dev)
    return out


def _rebar_sizes(system: System, bdf: str, index: int = 0) -> list[int]:
    """The sizes the Resizable BAR capability offers for BAR `index`, from sysfs resourceN_resize (pci-sysfs.c
    resource_resize_show: a hex bitmap, bit n meaning 1 MiB << n); [] when the BAR is not resizable or unreadable."""
    bits = _hex(_attr(system, f"{PCI_ROOT}/{bdf}/resource{index}_resize"))
    return [(1 << 20) << n for n in range(64) if (bits or 0) >> n & 1]


def _rebar_max(system: System, bdf: str) -> int:
    return max(_rebar_sizes(system, bdf), default=0)


def _link(system: System, bdf: str) -> dict[str, Any] | None:
    """Current and maximum PCIe link speed and width from sysfs (pci-sysfs.c current_link_*/max_link_*, which read
    LNKSTA and LNKCAP/LNKCAP2), and whether the link trained below what the card can do."""
    def speed(name: str) -> float | None:
        text = _attr(system, f"{PCI_ROOT}/{bdf}/{name}")  # "16.0 GT/s PCIe", or "Unknown"
        try:
            return float(text.split()[0]) if text else None
        except ValueError:
            return None

    def width(name: str) -> int | None:
        text = _attr(system, f"{PCI_ROOT}/{bdf}/{name}")
        return int(text) if text and text.strip().isdigit() else None

    link = {"speed_gts": speed("current_link_speed"), "width": width("current_link_width"),
            "max_speed_gts": speed("max_link_speed"), "max_width": width("max_link_width")}
    if all(v is None for v in link.values()):
        return None
    link["degraded"] = bool((link["speed_gts"] is not None and link["max_speed_gts"] is not None
                             and link["speed_gts"] < link["max_speed_gts"])
                            or (link["width"] is not None and link["max_width"] is not None
                                and link["width"] < link["max_width"]))
    return link


def _iommu(system: System, group: str | None) -> dict[str, Any]:
    """The IOMMU's state: on when /sys/kernel/iommu_groups has groups; this device's group, its members and type
    (iommu.c iommu_group_show_type: DMA, DMA-FQ, identity (passthrough), blocked or unmanaged)."""
    groups = _listdir(system, "/sys/kernel/iommu_groups")
    out: dict[str, Any] = {"enabled": bool(groups), "group": group, "type": None, "members": []}
    if group is not None:
        out["type"] = _attr(system, f"/sys/kernel/iommu_groups/{group}/type")
        out["members"] = sorted(_listdir(system, f"/sys/kernel/iommu_groups/{group}/devices"))
    return out


def _lock_key(system: System, dev: dict[str, Any], kfd: dict | None) -> str | None:
    """The device-lock key the driver of this path takes (drivers/am/device.py AMDevice, drivers/amd/kfd.py)."""
    prefix = "emulated-" if getattr(system, "emulated", False) else ""
    if dev["path"] in AM_PATHS:
        return f"{prefix}pci-{dev['bdf']}"
    node = _kfd_bdfs(kfd).get(dev["bdf"])
    if dev["path"] == AMD_KFD and node and node.get("gpu_id") is not None:
        return f"{prefix}kfd-gpu-{node['gpu_id']}"
    return None


def _lock_holder(system: System, key: str | None) -> dict[str, Any] | None:
    """Who holds the device lock now (drivers/lock.py holder_info), or None when nobody does or it cannot be read."""
    if key is None:
        return None
    from drivers.lock import holder_info
    try:
        return holder_info(key, getattr(system, "lock_dir", None))
    except (OSError, ValueError):
        return None


def _identify_am(system: System, dev: dict[str, Any], firmware_dirs: list[str]) -> dict[str, Any]:
    """Open the card with the AM driver (drivers/am/device.py: identify, IFWI, BARs, discovery, firmware) without
    bringing any IP block up or resizing BAR0, and return what it says (AMDevice.describe) or what stopped it.

    "firmware_missing" names each image that is missing or corrupt (firmware/select.py picks them by the IP
    versions the card's discovery table lists)."""
    from drivers.am.device import AMDevice
    from drivers.lock import DeviceBusyError
    from firmware.ucode import FirmwareError, FirmwareSetError
    out: dict[str, Any] = {"ok": False, "error": None, "firmware_missing": []}
    try:
        am = AMDevice(dev["bdf"], system, firmware_dirs=firmware_dirs, resize_bar=False, lock_wait=0)
    except DeviceBusyError as e:
        out["error"] = f"in use: {e}"
        return out
    except FirmwareError as e:
        errors = e.errors if isinstance(e, FirmwareSetError) else [e]
        out["firmware_missing"] = [{"file": x.file, "problem": x.problem} for x in errors]
        out["error"] = str(e)
        return out
    except Exception as e:  # the report names any failure; the probe never crashes on a broken card
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    try:
        out.update(am.describe(), ok=True)
    finally:
        am.close()
    return out


def _amd_doctor(system: System, dev: dict[str, Any], kfd: dict | None, identify: bool,
                firmware_dirs: list[str], generated_firmware: bool) -> dict[str, Any]:
    """The doctor checks of one AMD card (see probe); adds to dev's blockers and notes what it finds."""
    bdf, notes = dev["bdf"], dev["notes"]
    bar0 = next((b["size"] for b in dev["bars"] or [] if b["index"] == 0), None)
    sizes = _rebar_sizes(system, bdf)
    doc: dict[str, Any] = {"kernel_module": dev["kernel_driver"], "iommu": _iommu(system, dev["iommu_group"]),
                           "bar0": {"size": bar0, "vram_size": None, "resizable_sizes": sizes,
                                    "covers_vram": None},
                           "link": _link(system, bdf), "lock": None, "identify": None,
                           "firmware": {"dirs": list(firmware_dirs), "generated": generated_firmware,
                                        "present": None, "missing": [], "images": []}}
    key = _lock_key(system, dev, kfd)
    holder = _lock_holder(system, key)
    doc["lock"] = {"key": key, "holder": holder}
    if holder:
        dev["blockers"].append(f"in use by PID {holder.get('pid')} ({holder.get('cmdline') or 'unknown command'}) "
                               f"since {holder.get('since') or 'an unknown time'}: stop it first")
    iommu = doc["iommu"]
    if dev["path"] == AM_SYSFS and iommu["group"] is not None and iommu["type"] != "identity":
        # drivers/pci/sysfs.py _check_dma_translation refuses DMA memory then: physical addresses are not bus ones
        dev["blockers"].append(f"the IOMMU translates its DMA (group {iommu['group']}, type {iommu['type'] or 'unknown'})"
                               ": AM over sysfs hands the card physical addresses, so boot with iommu=pt, or bind the "
                               "card to vfio-pci to use AM over VFIO")
    link = doc["link"]
    if link and link["degraded"]:
        notes.append(f"the PCIe link runs at {link['speed_gts']:g} GT/s x{link['width']} of the card's "
                     f"{link['max_speed_gts']:g} GT/s x{link['max_width']}: check the slot, riser and BIOS PCIe setting "
                     "(copies will be slower; nothing else changes)")
    if identify and dev["path"] in AM_PATHS and not dev["blockers"]:
        ident = _identify_am(system, dev, firmware_dirs)
        doc["identify"] = ident
        fw = doc["firmware"]
        if ident["ok"]:
            dev["target"] = ident["target"]
            vram = ident["vram_size"]
            doc["bar0"]["vram_size"] = vram
            fw.update(present=True, images=ident["firmware"])
            resize = ident.get("bar0_resize") or {}
            if bar0 is not None and bar0 < vram:
                doc["bar0"]["covers_vram"] = False
                if resize.get("requested"):
                    notes.append(f"BAR0 ({_size_text(bar0)}) shows part of VRAM ({_size_text(vram)}); Resizable BAR "
                                 f"offers {_size_text(resize['requested'])}, and AM asks for it when it opens the card")
                else:
                    notes.append(f"BAR0 ({_size_text(bar0)}) shows part of VRAM ({_size_text(vram)}) and Resizable "
                                 "BAR cannot grow it: AM reaches the rest through MM_INDEX/MM_DATA, which is slow; "
                                 "enable Resizable BAR and Above 4G decoding in the firmware setup")
            elif bar0 is not None:
                doc["bar0"]["covers_vram"] = True
        elif ident["firmware_missing"]:
            fw.update(present=False, missing=ident["firmware_missing"])
            names = ", ".join(m["file"] for m in ident["firmware_missing"])
            dev["blockers"].append(f"firmware missing or corrupt: {names}: install firmware-amd-graphics (Debian) or "
                                   "linux-firmware, or put the files in a directory named by BAREGPU_FIRMWARE_DIR")
        else:
            dev["blockers"].append(f"AM could not open it: {ident['error']}")
    if generated_firmware and dev["path"] in AM_PATHS:
        notes.append(GENERATED_FIRMWARE)
    return doc


def _vfio_blockers(system: System, bdf: str, group: str | None) -> list[str]:
    """Why the IOMMU group of a vfio-pci bound device cannot be used from here (empty when it can)."""
    if group is None:
        return ["bound to vfio-pci but it has no IOMMU group: enable the IOMMU in the firmware setup and on the "
                "kernel command line (amd_iommu=on or intel_iommu=on)"]
    blockers = []
    for member in _listdir(system, f"/sys/kernel/iommu_groups/{group}/devices"):
        drv = _link_name(system, f"{PCI_ROOT}/{member}/driver")
        if member != bdf and drv not in (None, "vfio-pci", "pcieport"):  # VFIO refuses a group shared with a host driver
            blockers.append(f"IOMMU group {group} also holds {member}, bound to {drv}: bind it to vfio-pci as well")
    node = f"/dev/vfio/{group}"
    err = _open_error(system, node)
    if err in (errno.EACCES, errno.EPERM):
        blockers.append(f"cannot open {node}: give your user access to it (a udev rule or chown) or run as root")
    elif err == errno.EBUSY:
        blockers.append(f"{node} is in use by another process: stop it first")
    elif err == errno.ENOENT:
        blockers.append(f"{node} does not exist: load vfio-pci (modprobe vfio-pci) and bind the card to it again")
    elif err is not None:
        blockers.append(f"cannot open {node}: {os.strerror(err)}")
    return blockers


def _kfd_bdfs(kfd: dict[str, Any] | None) -> dict[str, Any]:
    """{PCI address: KFD GPU entry} of the GPUs KFD's topology lists."""
    return {g["bdf"]: g for g in (kfd or {}).get("gpus", []) if g.get("bdf")}


def _pci_path(system: System, dev: dict[str, Any], kfd: dict | None,
              nvidia: dict | None) -> tuple[str | None, list[str]]:
    """The driver path that would handle a PCI device, and what blocks it, from its vendor and bound driver.

    AMD devices also get "path_reason" (why this path) set on `dev`."""
    drv, vendor, bdf = dev["kernel_driver"], dev["vendor_id"], dev["bdf"]
    if vendor == 0x1002:
        if drv == "amdgpu":
            if kfd is None:
                dev["path_reason"] = "amdgpu is bound, so the kernel driver owns the card and KFD is the way in"
                return AMD_KFD, ["amdgpu is bound but /dev/kfd is missing: load amdgpu with KFD support "
                                 "(CONFIG_HSA_AMD) or unbind amdgpu to use the AM path"]
            node = _kfd_bdfs(kfd).get(bdf)
            if node is None and kfd.get("gpus"):
                dev["path_reason"] = "amdgpu is bound, so the kernel driver owns the card and KFD is the way in"
                return AMD_KFD, [f"amdgpu is bound but KFD's topology does not list {bdf}: amdgpu failed to bring it "
                                 "up for compute (dmesg | grep amdgpu says why), or unbind amdgpu to use the AM path"]
            dev["path_reason"] = ("amdgpu is bound and /dev/kfd lists it" + (f" (KFD node {node['node']})" if node
                                  else "") + "; unbinding amdgpu would let AM drive it instead")
            return AMD_KFD, []
        blockers = []
        if dev["bars"] is None:
            blockers.append("its BARs could not be read (sysfs resource file missing or unreadable): run as root")
        elif max((b["size"] for b in dev["bars"]), default=0) < MIN_LARGE_BAR:
            grow = _rebar_max(system, bdf)
            if grow < MIN_LARGE_BAR:
                blockers.append("BAR0 is smaller than 256 MiB: enable Resizable BAR and Above 4G decoding in the "
                                "firmware setup")
        if drv == "vfio-pci":
            dev["path_reason"] = "bound to vfio-pci: AM drives it through VFIO (the IOMMU maps its DMA)"
            blockers += _vfio_blockers(system, bdf, dev["iommu_group"])
            return AM_VFIO, blockers
        if drv is not None:
            dev["path_reason"] = (f"bound to {drv}, which AM cannot share the card with: unbinding {drv} lets AM drive "
                                  "it through sysfs (or bind it to vfio-pci for AM over VFIO)")
            blockers.append(f"bound to {drv}: unbind it (echo {bdf} > /sys/bus/pci/drivers/{drv}/unbind)")
        else:
            dev["path_reason"] = "no kernel driver is bound: AM drives it through its sysfs resource files"
            if _open_error(system, f"{PCI_ROOT}/{bdf}/resource0") in (errno.EACCES, errno.EPERM):
                # with no driver bound, AM maps the BARs through sysfs files that only root may open
                blockers.append("cannot open its BAR0 (sysfs resource0): run as root, or bind the card to vfio-pci")
        return AM_SYSFS, blockers
    if vendor == 0x10DE:
        if drv == "nouveau":
            return "NV (RM/UVM)", ["nouveau is bound; the NV path needs NVIDIA's open kernel module (nvidia.ko)"]
        if drv is None:
            return "NV (RM/UVM)", ["no kernel driver is bound: load NVIDIA's open kernel module (modprobe nvidia)"]
        if drv != "nvidia":
            return "NV (RM/UVM)", [f"{drv} is bound: unbind it (echo {bdf} > /sys/bus/pci/drivers/{drv}/unbind) and "
                                   "load NVIDIA's open kernel module (modprobe nvidia)"]
        # the driver's own problems (device nodes, UVM, the module's flavour and version) are the "nvidia" entry's
        # blockers, which block every NVIDIA card; what is here is about this card alone
        if not nvidia:
            return "NV (RM/UVM)", ["nvidia is bound but neither its device nodes nor its version file are here: check "
                                   "the module loaded (dmesg), and in a container pass /dev/nvidia* and /proc through"]
        if nvidia.get("rm_probed") and bdf not in _nv_bdfs(nvidia):
            return "NV (RM/UVM)", [f"the NVIDIA driver is bound but RM does not list the GPU at {bdf}: it failed to "
                                   "initialize or is excluded (nvidia-smi and dmesg say why)"]
        return "NV (RM/UVM)", []
    return None, []  # rendered as "no driver path (unsupported vendor)"; nothing the user could unblock


def _gfx_name(version: int) -> str:
    """KFD's gfx_target_version (major*10000 + minor*100 + stepping) as the LLVM target name, e.g. gfx90a."""
    major, minor, step = version // 10000, (version // 100) % 100, version % 100
    return f"gfx{major}{minor:x}{step:x}"


def probe_kfd(system: System) -> dict[str, Any] | None:
    """/dev/kfd and the GPU nodes of its topology."""
    if not system.exists("/dev/kfd"):
        return None
    err = _open_error(system, "/dev/kfd")
    info: dict[str, Any] = {"openable": err is None, "blockers": [], "gpus": []}
    if err in (errno.EACCES, errno.EPERM):
        info["blockers"].append("cannot open /dev/kfd: add yourself to the render and video groups "
                                "(sudo usermod -aG render,video $USER) and log in again")
    elif err is not None:
        info["blockers"].append(f"cannot open /dev/kfd: {os.strerror(err)}")
    # in index order, as drivers/amd/topology.py numbers them, so node i here is KFDDevice(i) in the bring-up
    for node in sorted((n for n in _listdir(system, KFD_TOPOLOGY) if n.isdigit()), key=int):
        props: dict[str, int] = {}
        for line in (_attr(system, f"{KFD_TOPOLOGY}/{node}/properties") or "").splitlines():
            key, _, value = line.partition(" ")
            try:
                props[key] = int(value)
            except ValueError:
                continue
        version = props.get("gfx_target_version", 0)
        if not version:
            continue  # a CPU node
        minor, loc = props.get("drm_render_minor"), props.get("location_id")
        render = f"/dev/dri/renderD{minor}" if minor is not None else None
        gpu_id = _attr(system, f"{KFD_TOPOLOGY}/{node}/gpu_id")
        gpu = {"node": int(node) if node.isdigit() else node, "name": _attr(system, f"{KFD_TOPOLOGY}/{node}/name") or "",
               "gpu_id": int(gpu_id) if gpu_id and gpu_id.strip().isdigit() else None,
               "gfx": _gfx_name(version), "simd_count": props.get("simd_count"), "location_id": loc,
               "domain": props.get("domain"), "bdf": pci_address(props.get("domain") or 0, loc) if loc is not None else None,
               "render_node": render, "render_node_present": bool(render and system.exists(render))}
        if render and not gpu["render_node_present"]:
            info["blockers"].append(f"KFD node {node} names {render}, which does not exist")
        elif render and err is None and _open_error(system, render) in (errno.EACCES, errno.EPERM):
            info["blockers"].append(f"cannot open {render}: add yourself to the render and video groups "
                                    "(sudo usermod -aG render,video $USER) and log in again")
        info["gpus"].append(gpu)
    return info


PROPRIETARY = ("the loaded NVIDIA driver{version} is the proprietary kernel module; the NV path needs NVIDIA's open "
               "kernel module (baregpu's RM/UVM interface facts are the open module's): install the open flavour of "
               "the driver (Debian/Ubuntu: nvidia-open or nvidia-driver-<branch>-open; NVIDIA's .run installer: "
               "-m=kernel-open), then reload nvidia or reboot")
NO_UVM = ("/dev/nvidia-uvm is missing: load nvidia-uvm (sudo modprobe nvidia-uvm; sudo nvidia-modprobe -u -c0 makes "
          "the node; in a container pass /dev/nvidia-uvm through)")
NO_CONTROL_NODE = ("the nvidia module is loaded but /dev/nvidiactl is missing: make the device nodes (sudo "
                   "nvidia-modprobe -c0 -u, or run nvidia-smi once as root; in a container pass /dev/nvidia* through)")


def _nv_bdfs(nvidia: dict[str, Any] | None) -> set[str]:
    """PCI addresses of the GPUs RM listed."""
    return {g["pci"] for g in (nvidia or {}).get("gpus", []) if g.get("pci")}


def _pin_blocker(version: str | None) -> str | None:
    """Why the driver's branch refuses ours (NVDevice's interface version check), or None when it will not."""
    from drivers.nv.device import ANY_DRIVER_ENV, PINNED_VERSION
    if not version or version.split(".")[0] == PINNED_VERSION.split(".")[0] or env_flag(ANY_DRIVER_ENV):
        return None  # RM's relaxed check compares the branch (the number before the first '.')
    branch = PINNED_VERSION.split(".")[0]
    return (f"the NVIDIA driver is {version}, but baregpu's RM/UVM structures are pinned to the {branch} branch "
            f"({PINNED_VERSION}) and the driver refuses another branch's interface: install a {branch}.x open driver, "
            f"or move the pin (autogen/include/nv/VERSION says how); {ANY_DRIVER_ENV}=1 tries anyway")


def probe_nvidia(system: System) -> dict[str, Any] | None:
    """NVIDIA's driver and GPUs, or None when neither its device nodes nor its version file are here.

    The driver: version, whether it is the open kernel module, UVM, the /dev nodes. The GPUs: what RM says about
    each (drivers/nv/probe.py: name, architecture, sm target, classes and QMD version, VRAM, BAR1, PCI address), with
    `driver_missing` saying what the NV driver lacks for it (drivers.nv.device.unbuilt_paths). RM is asked only when
    /dev/nvidiactl opens. `blockers` are the driver's problems: they block every NVIDIA GPU here.
    """
    from drivers.nv import probe as nv_probe
    from drivers.nv.device import unbuilt_paths
    nodes = sorted(n for n in _listdir(system, "/dev") if n.startswith("nvidia"))
    facts = nv_probe.driver_facts(system)
    if not nodes and not facts["loaded"]:
        return None
    version = _attr(system, "/proc/driver/nvidia/version")
    blockers = []
    ctl_error = _open_error(system, "/dev/nvidiactl") if "nvidiactl" in nodes else errno.ENOENT
    for name in ("nvidiactl", "nvidia-uvm"):
        err = ctl_error if name == "nvidiactl" else _open_error(system, f"/dev/{name}") if name in nodes else None
        if err in (errno.EACCES, errno.EPERM):
            blockers.append(f"cannot open /dev/{name}: join the group that owns it (often video) or fix its mode "
                            "(nvidia module option NVreg_DeviceFileMode)")
    if "nvidiactl" not in nodes:
        blockers.append(NO_CONTROL_NODE)
    if facts["open_kernel_module"] is False:
        blockers.append(PROPRIETARY.format(version=f" ({facts['version']})" if facts["version"] else ""))
    if "nvidia-uvm" not in nodes:
        blockers.append(NO_UVM)
    pin = _pin_blocker(facts["version"])
    if pin:
        blockers.append(pin)
    gpus: list[dict[str, Any]] = []
    rm_probed = False
    if ctl_error is None:
        for g in nv_probe.probe(system)["gpus"]:
            if "target" not in g:  # RM refused a question: its "problem" is the error
                blockers.append(f"baregpu could not ask the NVIDIA driver about NV:{g['index']} ({g.get('problem')}): "
                                "check the driver with nvidia-smi and dmesg")
                break
            g["driver_missing"] = unbuilt_paths(g["target"]) if g["target"] else \
                f"the NVIDIA (RM/UVM) driver is not built for {g['arch']} GPUs yet: {g.get('problem', 'no sm target')}"
            gpus.append(g)
        else:
            rm_probed = True
    return {"nvidiactl": "nvidiactl" in nodes, "uvm": "nvidia-uvm" in nodes,
            "nodes": [n for n in nodes if n[6:].isdigit()], "loaded": facts["loaded"],
            "driver_version": version.splitlines()[0] if version else None, "version": facts["version"],
            "open_kernel_module": facts["open_kernel_module"], "rm_probed": rm_probed, "gpus": gpus,
            "blockers": blockers}


def probe_kgsl(system: System) -> dict[str, Any] | None:
    """Qualcomm Adreno through /dev/kgsl-3d0."""
    if not system.exists("/dev/kgsl-3d0"):
        return None
    err = _open_error(system, "/dev/kgsl-3d0")
    blockers = [] if err is None else [f"cannot open /dev/kgsl-3d0: {os.strerror(err)}"
                                       + (": add a udev rule or run as root" if err in (errno.EACCES, errno.EPERM) else "")]
    return {"gpu_model": _attr(system, "/sys/class/kgsl/kgsl-3d0/gpu_model"), "path": "QCOM (kgsl)", "blockers": blockers}


def probe_usb(system: System) -> list[dict[str, Any]]:
    """ASM2464 USB3-to-PCIe bridges, which carry an AMD GPU to the AM path over USB."""
    out = []
    for name in _listdir(system, USB_ROOT):
        ids = (_hex(_attr(system, f"{USB_ROOT}/{name}/idVendor")), _hex(_attr(system, f"{USB_ROOT}/{name}/idProduct")))
        if ids not in ASM2464:
            continue
        bus, devnum = _attr(system, f"{USB_ROOT}/{name}/busnum"), _attr(system, f"{USB_ROOT}/{name}/devnum")
        dev = {"sysfs": name, "vendor_id": ids[0], "product_id": ids[1], "product": _attr(system, f"{USB_ROOT}/{name}/product"),
               "bus": int(bus) if bus and bus.isdigit() else None, "device": int(devnum) if devnum and devnum.isdigit() else None,
               "path": "USB (ASM2464 bridge) -> AM", "blockers": []}
        if dev["bus"] is not None and dev["device"] is not None:
            node = f"/dev/bus/usb/{dev['bus']:03d}/{dev['device']:03d}"
            err = _open_error(system, node)
            if err in (errno.EACCES, errno.EPERM):
                dev["blockers"].append(f"cannot open {node}: add a udev rule granting your user access to "
                                       "174c:2463/2464, or run as root")
            elif err == errno.ENOENT:
                dev["blockers"].append(f"{node} does not exist: USB device nodes are not available here "
                                       "(in a container, pass /dev/bus/usb through)")
            elif err is not None:
                dev["blockers"].append(f"cannot open {node}: {os.strerror(err)}")
        out.append(dev)
    return out


# Each driver path and the registry name of the driver behind it (for NOT_BUILT).
PATH_DRIVER = {AMD_KFD: "AMD", AM_SYSFS: "AM", AM_VFIO: "AM", "NV (RM/UVM)": "NV", "QCOM (kgsl)": "QCOM",
               "USB (ASM2464 bridge) -> AM": "USB"}


def driver_missing(path: str | None) -> str | None:
    """Why baregpu cannot drive a device on this path yet, or None when its driver is built."""
    if path in AM_PATHS:
        return AM_NOT_BUILT  # AM opens and boots its blocks (the bring-up shows it), but has no queues yet
    return NOT_BUILT.get(PATH_DRIVER.get(path or "", ""))


def kfd_target_missing(target: str | None) -> str | None:
    """What the AMD (KFD) driver lacks for a GPU of this gfx target (the driver says), or None when it lacks nothing."""
    if target is None:
        return None  # no KFD node names it: nothing to judge by, and the bring-up says what fails
    from drivers.amd.kfd import unbuilt_paths
    return unbuilt_paths(target)


def probe(system: System, emulated: bool = False, nv_system: System | None = None, *, identify: bool = False,
          firmware_dirs: list[str] | tuple[str, ...] = (), generated_firmware: bool = False) -> dict[str, Any]:
    """The whole report as a dict (the --json output); never raises for a missing or unreadable file.

    Each AMD PCI card gets "path_reason" (why its path applies), "notes" (what slows it or needs attention without
    blocking it) and "doctor": the bound kernel module, the IOMMU (on or off, the card's group, its members and type),
    BAR0 against VRAM and the sizes Resizable BAR offers, the PCIe link (current against maximum), the holder of its
    device lock, and, with `identify`, what the AM driver reads when it opens an unblocked AM-path card (IP versions,
    target, VRAM, firmware images found in `firmware_dirs` first; no IP block is brought up and BAR0 is not
    resized), naming each missing firmware file. `generated_firmware` says those images are generated test firmware.

    `emulated` says the machine is the emulated one: every device entry then carries "emulated": true, so the
    report can never pass an emulated GPU off as a real one. `nv_system` is where NVIDIA's driver and GPUs are
    looked for when that is another System than `system` (the emulated machine's NVIDIA half); its PCI devices
    are listed too.
    """
    nv_system = system if nv_system is None else nv_system
    kfd, nvidia = probe_kfd(system), probe_nvidia(nv_system)
    pci = probe_pci(system, kfd, nvidia)
    if nv_system is not system:
        seen = {d["bdf"] for d in pci}
        pci += [d for d in probe_pci(nv_system, None, nvidia) if d["bdf"] not in seen]
    report = {"schema": SCHEMA, "pci": pci, "kfd": kfd, "nvidia": nvidia,
              "kgsl": probe_kgsl(system), "usb": probe_usb(system)}
    kfd_gpus = (kfd or {}).get("gpus", [])
    nv_gpus = (nvidia or {}).get("gpus", [])
    for g in kfd_gpus:
        g["driver_missing"] = kfd_target_missing(g["gfx"])
    node_blockers = {"AMD (KFD)": (kfd or {}).get("blockers"), "NV (RM/UVM)": (nvidia or {}).get("blockers")}
    # per device some driver path would handle: (nothing blocks it, the path as the summary names it, what is not built)
    ready: list[tuple[bool, str, str | None]] = []
    for d in report["pci"]:
        d["gfx"] = next((g["gfx"] for g in kfd_gpus if g["bdf"] == d["bdf"]), None)
        nv = next((g for g in nv_gpus if g["pci"] == d["bdf"]), None) if d["path"] == "NV (RM/UVM)" else None
        d["target"] = d["gfx"] or (nv["target"] if nv else None)
        if d["vendor_id"] == 0x1002:
            d.setdefault("path_reason", None)
            d["notes"] = []
            d["doctor"] = _amd_doctor(system, d, kfd, identify, list(firmware_dirs), generated_firmware)
        if d["path"]:
            d["driver_missing"] = driver_missing(d["path"])
            if d["path"] == "AMD (KFD)" and not d["driver_missing"]:
                d["driver_missing"] = kfd_target_missing(d["gfx"])
            if nv and not d["driver_missing"]:
                d["driver_missing"] = nv["driver_missing"]
            ready.append((not d["blockers"] and not node_blockers.get(d["path"]),
                          _built_label(d["path"], nv or d), d["driver_missing"]))
    pci_bdfs = {d["bdf"] for d in report["pci"]}
    # KFD and RM GPUs whose PCI device sysfs did not show (a container with only the device nodes passed through)
    # count too
    ready += [(not kfd["blockers"], _built_label("AMD (KFD)", g), g["driver_missing"])
              for g in kfd_gpus if g["bdf"] not in pci_bdfs]
    ready += [(not nvidia["blockers"], _built_label("NV (RM/UVM)", g), g["driver_missing"])
              for g in nv_gpus if g["pci"] not in pci_bdfs]
    for d in report["usb"] + ([report["kgsl"]] if report["kgsl"] else []):
        d["driver_missing"] = driver_missing(d["path"])
        ready.append((not d["blockers"], d["path"], d["driver_missing"]))
    for d in report["pci"] + report["usb"] + kfd_gpus + nv_gpus + [x for x in (kfd, nvidia, report["kgsl"]) if x]:
        d["emulated"] = emulated
    # Unblocked, but waiting on something baregpu has not built yet: not ready to use either.
    not_built = sorted({label for ok, label, missing in ready if ok and missing})
    report["summary"] = {"devices": len(ready), "usable": sum(ok and not missing for ok, _, missing in ready),
                         "not_built": not_built, "found_any": bool(ready or kfd or nvidia),
                         "pci_scanned": len(_listdir(system, PCI_ROOT)) + (
                             len(_listdir(nv_system, PCI_ROOT)) if nv_system is not system else 0),
                         "emulated": emulated}
    report["emulated"] = emulated
    return report


def _built_label(path: str, dev: dict[str, Any]) -> str:
    """How the summary names what a device waits on: the path, or the path and target when only that is missing
    (an AMD gfx target; an NVIDIA sm target, or its architecture when the driver knows no target for it)."""
    if path == "AMD (KFD)" and dev.get("gfx"):
        return f"{path} for {dev['gfx']}"
    if path == "NV (RM/UVM)" and (dev.get("target") or dev.get("arch")):
        return f"{path} for {dev.get('target') or dev['arch']}"
    return path


NOTHING = ("No GPU found: no PCI display device with a driver path, /dev/kfd, /dev/nvidiactl, /dev/kgsl-3d0 or "
           "ASM2464 USB bridge on this machine.")
EMULATED_TAG = "[emulated] "
STAND_IN = ("No GPU on this machine: the emulated machine, an emulated AMD GPU (through KFD) and an emulated NVIDIA GPU, "
            f"stands in for one (what BAREGPU_EMULATE=1 selects); every line marked {EMULATED_TAG.strip()} is about it, "
            "not about real hardware. --no-emulate skips it; --emulate also shows an emulated AMD PCI card with no "
            "kernel driver (the AM path, still being built: booted with generated test firmware, no queues yet).")


def _id(value: int | None) -> str:
    return "unknown" if value is None else f"{value:04x}"


def _missing(dev: dict[str, Any]) -> str:
    return f" ({dev['driver_missing']})" if dev.get("driver_missing") else ""


def _blocked(blockers: list[str] | None) -> list[str]:
    return [f"    blocked: {b}" for b in blockers or []]


MODULE_FLAVOUR = {True: "open kernel module", False: "proprietary kernel module (the NV path needs the open one)",
                  None: "kernel module flavour unknown (no /proc/driver/nvidia/version)"}


def _render_nvidia(nv: dict[str, Any], pci_bdfs: set[str]) -> list[str]:
    """The NVIDIA block: the driver, its nodes, then each GPU RM listed with its architecture, classes and memory."""
    version = f"NVIDIA driver {nv['version']}" if nv["version"] else "NVIDIA driver (version unknown)"
    lines = [f"{version}, {MODULE_FLAVOUR[nv['open_kernel_module']]}; nvidiactl "
             f"{'present' if nv['nvidiactl'] else 'missing'}, nvidia-uvm {'present' if nv['uvm'] else 'missing'}; "
             f"GPU nodes: {', '.join(nv['nodes']) or 'none'}"]
    if nv["driver_version"]:
        lines.append(f"    {nv['driver_version']}")
    for g in nv["gpus"]:
        name = f"NV:{g['index']}" if g["index"] else "NV"
        lines.append(f"    {name}: {g['name'] or 'unnamed GPU'} at {g['pci'] or 'unknown PCI address'}: {g['arch']}, "
                     f"{g['target'] or 'no sm target'}, VRAM {_size_text(g['vram_bytes'])}, "
                     f"BAR1 {_size_text(g['bar1_bytes'])}")
        c = g["classes"]
        lines.append(f"        classes: channel {c['channel'] or 'none'}, compute {c['compute'] or 'none'}, "
                     f"copy {c['copy'] or 'none'}, QMD {g['qmd'] or 'none'}")
        if g["driver_missing"]:
            if g["pci"] not in pci_bdfs:  # a PCI block says it already
                lines.append(f"        not ready: {g['driver_missing']}")
        else:
            lines.append(f"        driver: built for {g['target']}")
    return lines + _blocked(nv["blockers"])


def _render_doctor(doc: dict[str, Any]) -> list[str]:
    """The doctor checks of an AMD card as lines (the blockers and notes they led to follow them)."""
    io = doc["iommu"]
    if not io["enabled"]:
        iommu = "off (no IOMMU groups)"
    else:
        iommu = f"on; group {io['group'] or 'none'}" + (f", type {io['type']}" if io["type"] else "") + \
            (f", {len(io['members'])} device(s) in it" if io["members"] else "")
    lines = [f"    IOMMU:         {iommu}"]
    link = doc["link"]
    if link:
        def one(speed: float | None, width: int | None) -> str:
            return f"{'?' if speed is None else f'{speed:g}'} GT/s x{'?' if width is None else width}"
        lines.append(f"    PCIe link:     {one(link['speed_gts'], link['width'])} (card's maximum "
                     f"{one(link['max_speed_gts'], link['max_width'])}){', degraded' if link['degraded'] else ''}")
    bar = doc["bar0"]
    if bar["size"] is not None:
        text = _size_text(bar["size"])
        if bar["vram_size"]:
            text += f" for {_size_text(bar['vram_size'])} of VRAM" + ("" if bar["covers_vram"] else " (part of it)")
        if bar["resizable_sizes"]:
            text += f"; Resizable BAR offers up to {_size_text(max(bar['resizable_sizes']))}"
        lines.append(f"    BAR0:          {text}")
    lock = doc["lock"]
    if lock and lock["key"]:
        h = lock["holder"]
        lines.append("    device lock:   " + (f"held by PID {h.get('pid')} ({h.get('cmdline')})" if h else "free"))
    ident = doc.get("identify")
    if ident and ident["ok"]:
        ips = ", ".join(f"{k} {v['version']}" + (f" x{v['instances']}" if v["instances"] > 1 else "")
                        for k, v in ident["ip_versions"].items())
        lines.append(f"    identified:    {ident['target']}, {_size_text(ident['vram_size'])} VRAM, discovery via "
                     f"{ident['discovery_via']}, {ident['backend']} backend")
        lines.append(f"    IP versions:   {ips}")
    fw = doc["firmware"]
    if fw["present"]:
        lines.append(f"    firmware:      {len(fw['images'])} image(s) found"
                     + (" (generated test firmware)" if fw["generated"] else "") + ": "
                     + ", ".join(f"{i['name']} v{i['ucode_version']:#x}" if isinstance(i.get("ucode_version"), int)
                                 else str(i["name"]) for i in fw["images"]))
    elif fw["present"] is False:
        lines.append(f"    firmware:      missing or corrupt: {', '.join(m['file'] for m in fw['missing'])}")
    return lines


def render(report: dict[str, Any]) -> str:
    """The report as text for a person: one block per device, each blocker on its own "blocked:" line.

    Every line of an emulated machine's report starts with [emulated], so no line of it reads as real hardware.
    """
    lines = []
    for d in report["pci"]:
        bars = ", ".join(f"BAR{b['index']} {_size_text(b['size'])}" for b in d["bars"]) if d["bars"] else "unknown"
        target = d.get("target") or d["gfx"]
        lines.append(f"PCI {d['bdf']}  {d['vendor']} {_id(d['vendor_id'])}:{_id(d['device_id'])}"
                     + (f"  {target}" if target else ""))
        lines.append(f"    kernel driver: {d['kernel_driver'] or 'none'}; IOMMU group: {d['iommu_group'] or 'none'}")
        lines.append(f"    BARs:          {bars}")
        lines.append(f"    driver path:   {d['path'] or 'no driver path (unsupported vendor)'}{_missing(d)}")
        if d.get("path_reason"):
            lines.append(f"    why:           {d['path_reason']}")
        if d.get("doctor"):
            lines += _render_doctor(d["doctor"])
        lines += _blocked(d["blockers"])
        lines += [f"    note: {n}" for n in d.get("notes") or []]
    kfd, pci_bdfs = report["kfd"], {d["bdf"] for d in report["pci"]}
    if kfd:
        lines.append(f"/dev/kfd  {'opens' if kfd['openable'] else 'does not open'}; {len(kfd['gpus'])} GPU node(s)")
        for g in kfd["gpus"]:
            name = f" {g['name']}" if g["name"] and g["name"] != g["gfx"] else ""
            lines.append(f"    node {g['node']}: {g['gfx']}{name} at {g['bdf'] or 'unknown'}, {g['simd_count']} SIMDs, "
                         f"{g['render_node'] or 'no render node'}{'' if g['render_node_present'] else ' (missing)'}")
            if g.get("driver_missing") and g["bdf"] not in pci_bdfs:  # a PCI block says it already
                lines.append(f"    not ready: {g['driver_missing']}")
        lines += _blocked(kfd["blockers"])
    if report["nvidia"]:
        lines += _render_nvidia(report["nvidia"], pci_bdfs)
    if report["kgsl"]:
        k = report["kgsl"]
        lines.append(f"/dev/kgsl-3d0  Adreno {k['gpu_model'] or '(model unknown)'}")
        lines.append(f"    driver path:   {k['path']}{_missing(k)}")
        lines += _blocked(k["blockers"])
    for u in report["usb"]:
        where = f"bus {u['bus']} device {u['device']}" if u["bus"] is not None else "bus unknown"
        lines.append(f"USB {u['sysfs']}  ASMedia {_id(u['vendor_id'])}:{_id(u['product_id'])} {u['product'] or ''}  ({where})")
        lines.append(f"    driver path:   {u['path']}{_missing(u)}")
        lines += _blocked(u["blockers"])
    s = report["summary"]
    if not s["found_any"]:
        if not report["pci"]:
            lines.append(f"Scanned {s['pci_scanned']} PCI device(s): none is a display controller or accelerator.")
        lines.append(NOTHING)
    else:
        line = f"{s['devices']} {'emulated ' if report.get('emulated') else ''}device(s) with a driver path, " \
               f"{s['usable']} ready to use"
        if s["not_built"]:
            line += f"; not built yet in baregpu: {', '.join(s['not_built'])}"
        lines.append(line + ".")
    if report.get("emulated"):
        lines = [EMULATED_TAG + line for line in lines]
    return "\n".join(lines)


# Exit status, in the manner of nvidia-smi's and rocminfo's documented return codes; 2 is argparse's own.
EXIT_OK = 0  # every device found is ready to use and passed every bring-up check it was given
EXIT_CHECK_FAILED = 1  # a bring-up check failed
EXIT_USAGE = 2  # bad arguments or a bad BAREGPU_* environment variable
EXIT_NO_GPU = 3  # no GPU found (with --no-emulate, or when nothing at all could be probed)
EXIT_NOT_READY = 4  # a GPU was found but something blocks it or baregpu has not built what it needs
EXIT_CODES = f"""exit status:
  {EXIT_OK}  every device found is ready to use and, unless --no-check, was brought up and passed every check
  {EXIT_CHECK_FAILED}  a bring-up check failed (the report names the device, the step and the error)
  {EXIT_USAGE}  usage error: bad arguments, conflicting flags, or a bad BAREGPU_* environment variable
     (one a bring-up step read included: the report names it)
  {EXIT_NO_GPU}  no GPU found (with --no-emulate, or when nothing at all could be probed)
  {EXIT_NOT_READY}  a GPU was found but is not ready to use: something blocks it, or baregpu has not built
     the driver path it needs yet (the report says which and what to do)
With no GPU on this machine the emulated machine stands in (unless --no-emulate), and the status is its."""


def exit_status(report: dict[str, Any], checks: list[Any]) -> int:
    """The exit status a report and its bring-up checks come to (EXIT_CODES says what each means)."""
    s = report["summary"]
    if any(c.bad_environment for c in checks):
        return EXIT_USAGE  # e.g. BAREGPU_LOCK_WAIT=soon stopped the open: the variable is wrong, not the device
    if any(not c.ok for c in checks):
        return EXIT_CHECK_FAILED
    if not s["found_any"]:
        return EXIT_NO_GPU
    if not s["devices"] or s["usable"] < s["devices"]:
        return EXIT_NOT_READY
    return EXIT_OK


DESCRIPTION = """What GPUs this machine has, which driver path would handle each, and what blocks it, in words
you can act on; then every device that is ready to use is brought up and checked: open, memory,
a copy, a compiled kernel and a signal (an NVIDIA GPU's open stage by stage, then a tensor
computation checked against numpy too). With no GPU the emulated machine (an AMD and an NVIDIA
GPU) stands in. --json prints the same report for programs."""  # wrapped by hand: the raw formatter keeps the exit table's layout


def prog_name() -> str:
    """How the user ran the probe, for the usage line: `gpu-probe` (the console script) or python -m tools.gpu_probe."""
    launcher = sys.modules.get("__main__")
    # pip's console-script launcher is a plain file (no module spec) that imported this main: name it as it was typed
    if getattr(launcher, "__spec__", None) is None and getattr(launcher, "main", None) is main and sys.argv[0]:
        return os.path.basename(sys.argv[0])
    return "python -m tools.gpu_probe"


def build_parser() -> argparse.ArgumentParser:
    """The command line: --json, --no-check, and --emulate or --no-emulate (never both)."""
    ap = argparse.ArgumentParser(prog=prog_name(), description=DESCRIPTION, epilog=EXIT_CODES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--no-check", action="store_true",
                    help="only report what is there (NVIDIA's RM is still asked about its GPUs); bring no device up")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--emulate", action="store_true",
                       help="probe the emulated machine: an emulated AMD and NVIDIA GPU (as BAREGPU_EMULATE=1; "
                            "BAREGPU_EMULATE=amd or nv picks one)")
    which.add_argument("--no-emulate", action="store_true",
                       help="probe this machine's real hardware only: never stand the emulated machine in for a GPU "
                            "(overrides BAREGPU_EMULATE)")
    return ap


def main(argv: list[str] | None = None, system: System | None = None) -> int:
    """Entry point: print the report, then bring up and check every device that is ready to use.

    Returns the exit status (EXIT_CODES); argparse exits with 2 itself on bad arguments. With no GPU on this
    machine the emulated machine is probed and checked instead, unless --no-emulate. A `system` handed in
    (tests describing a machine) is only reported on, never driven, and never replaced by the emulated one.
    """
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit:
        to_stdout(None)  # --help | head: the help text is still buffered and its reader may be gone
        raise
    chosen = system is None  # a system handed in (tests) describes a machine; only one chosen here is driven
    made: list[Any] = []  # the emulated machines (and AM cards) made here, shut down when the report is done
    try:
        try:
            report, texts, (system, nv_system) = _survey(args, system, made)
        except ValueError as e:  # hcq.env.EnvError among them: a bad BAREGPU_* value is the user's, like a bad flag
            print(f"{ap.prog}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        checks = run_checks(system, report, nv_system) if chosen and not args.no_check else []
    finally:
        for machine in made:
            _shut_down(machine)
    report["checks"] = [c.as_dict() for c in checks]
    status = exit_status(report, checks)
    if args.json:
        out = json.dumps(report, indent=2)
    else:
        from tools.bringup import render as render_checks
        out = "\n".join(texts + render_checks(checks))
    to_stdout(out)
    return status


def to_stdout(text: str | None) -> None:
    """Print `text` (if any) and flush; a reader that has gone (| head) ends the output quietly, with no traceback."""
    try:
        if text is not None:
            print(text)
        sys.stdout.flush()  # a reader gone early shows here, not as an error at interpreter exit
    except BrokenPipeError:
        # the Python docs' SIGPIPE recipe: send the rest to devnull so the exit-time flush stays quiet
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


EMULATED_VENDORS = ("amd", "nv")  # the vendors the emulated machine has hardware for, in report order


def _emulated_machine(vendors: set[str], made: list[Any], with_am: bool = True) -> tuple[System, System, list[str]]:
    """The emulated machine with `vendors`' GPUs, as (the System for everything but NVIDIA, the one for NVIDIA, the
    AM card's firmware directories): the AMD and NVIDIA halves are separate emulated systems. The AMD half also has an
    emulated AMD PCI card with no kernel driver, for the AM path, whose firmware is generated into a temporary
    directory for this run. Raises EnvError for a bad BAREGPU_EMU_AMD/BAREGPU_EMU_NV."""
    from drivers.emulation import emulated_system
    halves = {}
    fw_dirs: list[str] = []
    for vendor in EMULATED_VENDORS:
        if vendor in vendors:
            halves[vendor] = emulated_system(vendor)
            made.append(halves[vendor])
    if "amd" in halves and with_am:
        fw_dirs = _install_am_stand_in(halves["amd"], made)
    main = halves.get("amd") or halves["nv"]
    return main, halves.get("nv", main), fw_dirs


def _install_am_stand_in(system: System, made: list[Any]) -> list[str]:
    """Put an emulated AMD PCI card (emu/am, no kernel driver bound) on `system`'s bus, with every modelled IP block,
    and firmware generated for it into a temporary directory (tests/firmware/fwgen.py). Returns the firmware
    directories ([] when the generator is not importable, as from an installed gpu-probe without the source tree:
    the card's firmware check then says what is missing)."""
    import shutil
    import tempfile
    from emu.am.gpu import install_am_gpu  # tools may import emu: the stand-in is emulated hardware by design
    tmp = tempfile.mkdtemp(prefix="baregpu-probe-fw-")
    made.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    try:
        from tests.firmware import fwgen
    except ImportError:
        fwgen, fw_dir = None, None
    else:
        fw_dir = tmp
        fwgen.write_set(fw_dir, AM_STAND_IN_TARGET)
    card = install_am_gpu(system, AM_STAND_IN_TARGET, AM_STAND_IN_BDF, firmware=fw_dir, blocks=True)
    made.append(card.close)
    return [fw_dir] if fw_dir else []


def _shut_down(thing: Any) -> None:
    """Stop what the probe made: an emulated machine's NVIDIA engines (its doorbell watcher and pools; its AMD half
    stops with its last file; the emulated system offers no shutdown of its own, so this reaches the emulated RM it
    keeps, `nv`), or a cleanup callable (an AM card's close, the generated firmware's removal)."""
    if callable(thing):
        thing()
        return
    nv = getattr(thing, "nv", None)
    if nv is not None:
        nv.close()


def _survey(args: argparse.Namespace, system: System | None,
            made: list[System]) -> tuple[dict[str, Any], list[str], tuple[System, System]]:
    """Pick the machine (real, emulated, or the one handed in), probe it, and stand the emulated one in when the
    real one has no GPU; returns the report, its text blocks, and (the System, the NVIDIA System) to bring up.

    BAREGPU_EMULATE picks the emulated vendors (amd, nv, or 1 for both); --emulate with no pick, and the stand-in,
    take both. Emulated machines made here are appended to `made`. Raises ValueError (EnvError) for a bad
    BAREGPU_EMULATE, BAREGPU_EMU_AMD or BAREGPU_EMU_NV."""
    from drivers.emulation import emulated_vendors
    chosen = system is None
    # read even under --no-emulate: a bad value is named, not ignored
    picked = emulated_vendors() & set(EMULATED_VENDORS)
    emulated = chosen and not args.no_emulate and (args.emulate or bool(picked))
    fw_dirs: list[str] = []
    if system is None:
        if emulated:
            *systems, fw_dirs = _emulated_machine(picked or set(EMULATED_VENDORS), made, with_am=args.emulate)
        else:
            systems = [LinuxSystem()] * 2
    else:
        systems = [system, system]
    report = probe(systems[0], emulated, systems[1], identify=chosen, firmware_dirs=fw_dirs,
                   generated_firmware=bool(fw_dirs))
    texts = [render(report)]
    if chosen and not report["summary"]["found_any"] and not emulated and not args.no_emulate:
        # The automatic stand-in leaves the AM card out until AM runs queues: a machine with no GPU then reports what
        # works (exit 0); --emulate shows the AM card and its unfinished path (exit 4, "not ready").
        *systems, fw_dirs = _emulated_machine(set(EMULATED_VENDORS), made, with_am=False)
        # the real machine's (empty) report stays in the JSON
        report = dict(probe(systems[0], True, systems[1], identify=True, firmware_dirs=fw_dirs,
                            generated_firmware=bool(fw_dirs)), machine=report)
        texts += [STAND_IN, render(report)]
    return report, texts, (systems[0], systems[1])


def nv_ready(report: dict[str, Any]) -> list[int]:
    """The RM indexes of the NVIDIA GPUs ready to bring up: nothing blocks the driver or the card, and the NV driver
    is built for the GPU."""
    nvidia = report.get("nvidia")
    if not nvidia or nvidia.get("blockers"):
        return []
    blocked = {d["bdf"] for d in report.get("pci", []) if d["blockers"]}
    return [g["index"] for g in nvidia.get("gpus", []) if not g.get("driver_missing") and g.get("pci") not in blocked]


def am_ready(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The AM-path PCI cards to bring up as far as AM goes: nothing blocks them and the AM driver identified them.
    AM is not built to the end (AM_NOT_BUILT), so their bring-up stops before the smoke checks and they are not
    counted ready to use."""
    return [d for d in report.get("pci", []) if d.get("path") in AM_PATHS and not d["blockers"]
            and ((d.get("doctor") or {}).get("identify") or {}).get("ok")]


def run_checks(system: System, report: dict[str, Any], nv_system: System | None = None) -> list[Any]:
    """Bring up every GPU that is ready to use (nothing blocks it and its driver paths are built): each KFD GPU
    through `system`, then each AM card as far as the AM driver goes (its blocks, no queues yet), then each NVIDIA
    GPU through `nv_system` (default `system`)."""
    from tools.bringup import check_am, check_amd, check_nv
    checks = []
    kfd = report.get("kfd")
    if kfd and not kfd.get("blockers"):
        checks += [check_amd(system, i) for i, g in enumerate(kfd.get("gpus", [])) if not g.get("driver_missing")]
    for d in am_ready(report):
        fw = d["doctor"]["firmware"]
        checks.append(check_am(system, d["bdf"], fw["dirs"], generated_firmware=fw["generated"]))
    checks += [check_nv(system if nv_system is None else nv_system, i) for i in nv_ready(report)]
    return checks


if __name__ == "__main__":
    sys.exit(main())
