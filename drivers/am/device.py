"""An AMD GPU driven with no kernel driver: opening it over the PCI device interface and identifying it.

The order is amdgpu's (amdgpu_device.c amdgpu_device_init, amdgpu_discovery.c amdgpu_discovery_init), minus what a
kernel driver does for the OS: take the device lock (keyed by PCI address), open the function through the backend
the OS offers (drivers.pci.open_pci_device: VFIO when vfio-pci holds it, sysfs otherwise), check it is an AMD
display/accelerator function, enable memory decoding and bus mastering, map the register BAR (BAR5), wait for the
IFWI to finish (MP0_SMN_C2PMSG_33 bit 31, up to 2 s, as amdgpu_discovery_read_binary_from_mem), read the VRAM size
(RCC_CONFIG_MEMSIZE), grow BAR0 to cover VRAM when the Resizable BAR capability and the backend allow
(amdgpu_device_resize_fb_bar), map BAR0 (the VRAM window) and BAR2 (doorbells), read the IP discovery table from the
top of VRAM (through BAR0 when it reaches there, else through MM_INDEX/MM_DATA as amdgpu_device_vram_access does),
and from the versions it lists choose the gfx target and load the firmware set.

No IP block is touched yet: the blocks (NBIO, GMC, IH, PSP, SMU, GFX, SDMA) come in files of their own.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Optional

from autogen import pci_regs as R
from drivers.am.discovery import (DISCOVERY_TMR_SIZE, IFWI_WAIT_S, Discovery, DiscoveryError, discovery_offset,
                                  ifwi_ready, read_discovery, vram_size_from_memsize)
from drivers.am.firmware import firmware_summary, firmware_versions, load_firmware
from drivers.am.regs import ALL_ONES, MP0_SMN_C2PMSG_33, DeviceGoneError, RegisterFile
from drivers.lock import DeviceLock
from drivers.pci import open_pci_device
from drivers.pci.interface import BarInfo, BarMapping, PCIDevice, PCIError
from drivers.system import System
from firmware.images import PathLike
from firmware.select import FirmwareSet
from hcq.errors import HCQError

log = logging.getLogger(__name__)

AMD_VENDOR_ID = 0x1002  # include/linux/pci_ids.h PCI_VENDOR_ID_ATI
# amdgpu_drv.c pciidlist: any 0x1002 function of class VGA, display-other or processing accelerator (MI300) goes
# through IP discovery (CHIP_IP_DISCOVERY); pci_ids.h PCI_CLASS_DISPLAY_VGA/_OTHER, PCI_CLASS_ACCELERATOR_PROCESSING.
GPU_CLASSES = {0x0300: "VGA", 0x0380: "display", 0x1200: "processing accelerator"}
VRAM_BAR, DOORBELL_BAR, MMIO_BAR = 0, 2, 5  # amdgpu_device_init: rmmio is BAR5 (CHIP_BONAIRE and newer); doorbells BAR2
IFWI_POLL_S = 0.001  # amdgpu_discovery_read_binary_from_mem: msleep(1) between reads
_BACKENDS = {"SysfsPCIDevice": "sysfs", "VFIOPCIDevice": "vfio"}


class AMError(HCQError):
    """Opening or identifying an AM GPU failed; the message names the device (PCI address), the step and what to do."""


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class AMDevice:
    """One AMD GPU driven directly over its PCI function (no kernel driver). See the module docstring for the order.

    `bdf` is the PCI address ("0000:03:00.0"); `system` the OS seam (default: drivers.emulation.system_for("amd"));
    `unbind` lets the sysfs backend unbind a bound kernel driver (close() says how to bind it back); `firmware_dirs`
    are searched before BAREGPU_FIRMWARE_DIR and the kernel's directories (`firmware_system_dirs=False` leaves those
    out). `pci` may hand in an already opened PCIDevice (the USB bridge's); the device then owns and closes it.
    `ifwi_timeout` bounds the wait for the IFWI (2 s, as amdgpu); `resize_bar=False` never resizes BAR0.

    After open: `target` ("gfx1100"), `discovery`, `vram_size`, `firmware` (a firmware.select.FirmwareSet), `regs`
    (drivers.am.regs.RegisterFile over BAR5), `mmio`, `vram`, `doorbells` (BarMappings), `bar_resize` (what happened
    to BAR0), `discovery_via` ("BAR0" or "MM_INDEX/MM_DATA"), `timings` (seconds per stage), `lock` (DeviceLock).
    """

    def __init__(self, bdf: str, system: Optional[System] = None, unbind: bool = False,
                 firmware_dirs: Iterable[PathLike] = (), *, pci: Optional[PCIDevice] = None,
                 lock_wait: Optional[float] = None, ifwi_timeout: float = IFWI_WAIT_S, resize_bar: bool = True,
                 firmware_system_dirs: bool = True):
        if system is None:
            from drivers.emulation import system_for
            system = system_for("amd")
        self.bdf, self.system = bdf, system
        self.closed = False
        self.pci: Optional[PCIDevice] = None
        self.mmio: Optional[BarMapping] = None
        self.vram: Optional[BarMapping] = None
        self.doorbells: Optional[BarMapping] = None
        self.regs: Optional[RegisterFile] = None
        self.discovery: Optional[Discovery] = None
        self.firmware: Optional[FirmwareSet] = None
        self.target: Optional[str] = None
        self.vram_size = 0
        self.ids: dict[str, int] = {}
        self.bars: dict[int, BarInfo] = {}
        self.bar_resize: dict[str, Any] = {}
        self.discovery_via = ""
        self.timings: dict[str, float] = {}
        self._command_found: Optional[int] = None
        emulated = bool(getattr(system, "emulated", False))
        # The key is the lock file's stable identity; emulated machines lock under keys of their own (as KFDDevice).
        key = ("emulated-" if emulated else "") + f"pci-{bdf}"
        label = f"AM {bdf}" + (" (emulated)" if emulated else "")
        self.lock = DeviceLock(key, system.lock_dir, wait=lock_wait, label=label).acquire()
        try:
            self._open(pci, unbind, list(firmware_dirs), ifwi_timeout, resize_bar, firmware_system_dirs)
        except BaseException:
            self.close()
            raise
        self.lock.on_release(self.close)

    # --- opening ---
    def _stage(self, name: str, start: float) -> None:
        self.timings[name] = time.monotonic() - start

    def _open(self, pci: Optional[PCIDevice], unbind: bool, firmware_dirs: list, ifwi_timeout: float,
              resize_bar: bool, firmware_system_dirs: bool) -> None:
        t = time.monotonic()
        self.pci = pci if pci is not None else open_pci_device(self.bdf, self.system, unbind=unbind)
        self._identify()
        self._command_found = self.ids["command"]
        self.pci.enable()
        self.bars = {b.index: b for b in self.pci.bars()}
        missing = [i for i in (VRAM_BAR, DOORBELL_BAR, MMIO_BAR) if i not in self.bars]
        if missing:
            raise AMError(f"{self.bdf}: BAR {', '.join(map(str, missing))} is not implemented (the function has BARs "
                          f"{sorted(self.bars)}); an AMD GPU has VRAM at BAR0, doorbells at BAR2 and registers at BAR5")
        self.mmio = self.pci.map_bar(MMIO_BAR)
        self.regs = RegisterFile(self.mmio, bdf=self.bdf, gone_check=self.check_present)
        self._stage("open", t)

        t = time.monotonic()
        self._wait_ifwi(ifwi_timeout)
        self._stage("ifwi", t)

        t = time.monotonic()
        memsize = self.regs.read("RCC_CONFIG_MEMSIZE")
        try:
            self.vram_size = vram_size_from_memsize(memsize)
        except DiscoveryError as e:
            raise DiscoveryError(f"{self.bdf}: {e}") from None
        self.bar_resize = self._resize_vram_bar(resize_bar)
        self.vram = self.pci.map_bar(VRAM_BAR)
        self.doorbells = self.pci.map_bar(DOORBELL_BAR)
        self._stage("bars", t)

        t = time.monotonic()
        self.discovery = self._read_discovery()
        self.regs.discovery = self.discovery
        try:
            self.target = self.discovery.gfx_target(rev_id=self.ids["revision"])
        except DiscoveryError as e:
            raise DiscoveryError(f"{self.bdf}: {e}") from None
        self._stage("discovery", t)

        t = time.monotonic()
        # FirmwareError (one image) / FirmwareSetError (several) name each file, the problem and where we looked.
        self.firmware = load_firmware(self.discovery, firmware_dirs, pci_device=self.ids["device"],
                                      pci_revision=self.ids["revision"], system=firmware_system_dirs)
        self._stage("firmware", t)
        log.info("%s: %s, %d MiB VRAM, discovery via %s, firmware %s", self.bdf, self.target, self.vram_size >> 20,
                 self.discovery_via, ", ".join(self.firmware.images))

    def _identify(self) -> None:
        assert self.pci is not None
        vendor, device, class_rev, sub_vendor, sub_device, command = self.pci.config_read_many(
            [(R.PCI_VENDOR_ID, 2), (R.PCI_DEVICE_ID, 2), (R.PCI_CLASS_REVISION, 4), (R.PCI_SUBSYSTEM_VENDOR_ID, 2),
             (R.PCI_SUBSYSTEM_ID, 2), (R.PCI_COMMAND, 2)])
        if vendor == 0xFFFF:
            raise DeviceGoneError(self._gone_message("its PCI config space reads all ones"))
        self.ids = dict(vendor=vendor, device=device, revision=class_rev & 0xFF, class_code=class_rev >> 8,
                        subsystem_vendor=sub_vendor, subsystem_device=sub_device, command=command)
        kind = GPU_CLASSES.get(class_rev >> 16)
        if vendor != AMD_VENDOR_ID or kind is None:
            raise AMError(f"{self.bdf} is not an AMD GPU: vendor {vendor:#06x}, device {device:#06x}, class "
                          f"{class_rev >> 8:#08x}; AM drives AMD (vendor 0x1002) functions of class VGA (0x0300), "
                          f"display (0x0380) or processing accelerator (0x1200) — `lspci -D -d 1002:` lists them")

    def _gone_message(self, evidence: str) -> str:
        return (f"the AMD GPU at {self.bdf} is gone: {evidence}, so it was removed from the bus, lost power or its "
                f"PCIe link went down (dmesg shows AER or 'link down' messages). Nothing read from it is valid. "
                f"Re-seat or power-cycle the card, or rescan the bus (`echo 1 | sudo tee /sys/bus/pci/rescan`), "
                f"then open it again")

    def check_present(self) -> None:
        """Raise DeviceGoneError when the function no longer answers config reads (after MMIO read all ones).

        Reads the ID and class dwords: vfio-pci serves the IDs from its virtual copy, so the class dword (read from the
        device) is what tells a live function from a gone one there."""
        assert self.pci is not None
        try:
            ids, class_rev = self.pci.config_read_many([(R.PCI_VENDOR_ID, 4), (R.PCI_CLASS_REVISION, 4)])
        except PCIError as e:
            raise DeviceGoneError(self._gone_message(f"MMIO reads return 0xffffffff and config space cannot be read "
                                                     f"({e})")) from e
        if ALL_ONES in (ids, class_rev):
            raise DeviceGoneError(self._gone_message("MMIO reads return 0xffffffff and its PCI config space reads all "
                                                     "ones"))

    def _wait_ifwi(self, timeout: float) -> None:
        """amdgpu_discovery_read_binary_from_mem: poll MP0_SMN_C2PMSG_33 until bit 31 (IFWI init done), bounded."""
        assert self.regs is not None
        start = time.monotonic()
        while True:
            value = self.regs.read("MP0_SMN_C2PMSG_33")  # an all-ones read checks the device is still there
            if ifwi_ready(value):
                return
            waited = time.monotonic() - start
            if waited >= timeout:
                raise AMError(
                    f"{self.bdf}: the card's firmware (IFWI) has not finished initialising: MP0_SMN_C2PMSG_33 (dword "
                    f"{MP0_SMN_C2PMSG_33:#x}) read {value:#010x} for {waited:.2f} s and bit 31 (IFWI init done) stayed clear, so "
                    f"the IP discovery table in VRAM is not valid yet. amdgpu waits 2 s for it; a card that never sets "
                    f"it needs a power cycle (a cold boot reruns IFWI init) — or pass a longer ifwi_timeout if it is "
                    f"still booting (hotplug over USB4 can take longer)")
            time.sleep(min(IFWI_POLL_S, max(0.0, timeout - waited)))

    def _resize_vram_bar(self, allowed: bool) -> dict[str, Any]:
        """amdgpu_device_resize_fb_bar: when BAR0 is smaller than VRAM, ask for VRAM's size rounded up to a power of
        two, capped at the largest size the Resizable BAR capability offers. Returns what happened, in words too."""
        assert self.pci is not None
        before = self.bars[VRAM_BAR].size
        out: dict[str, Any] = dict(before=before, after=before, requested=None)
        if before >= self.vram_size:
            return dict(out, result="not needed", detail=f"BAR0 ({before >> 20} MiB) already covers VRAM")
        try:
            sizes = self.pci.resizable_bar_sizes(VRAM_BAR)
        except PCIError as e:
            sizes, why = [], f"the Resizable BAR capability could not be read ({e})"
        else:
            why = "the function has no Resizable BAR entry for BAR0 (enable Resizable BAR / Above 4G Decoding in " \
                  "the firmware setup)"
        if not sizes:
            return dict(out, result="not resizable", detail=why)
        want = _pow2_at_least(self.vram_size)
        fitting = [s for s in sizes if s <= want]
        target = max(fitting) if fitting else 0
        if target <= before:
            return dict(out, result="at its largest", detail=f"the largest BAR0 size offered ({max(sizes) >> 20} MiB) "
                                                              f"is not above the current {before >> 20} MiB")
        out["requested"] = target
        if not allowed:
            return dict(out, result="not attempted", detail="resize_bar=False")
        try:
            self.pci.resize_bar(VRAM_BAR, target)
        except PCIError as e:
            log.info("%s: BAR0 stays %d MiB: %s", self.bdf, before >> 20, e)
            return dict(out, result="refused", detail=str(e))
        self.bars = {b.index: b for b in self.pci.bars()}
        after = self.bars[VRAM_BAR].size
        log.info("%s: BAR0 resized from %d MiB to %d MiB", self.bdf, before >> 20, after >> 20)
        return dict(out, after=after, result="resized", detail=f"BAR0 resized from {before >> 20} MiB to "
                                                               f"{after >> 20} MiB")

    def _read_discovery(self) -> Discovery:
        assert self.regs is not None and self.vram is not None
        offset = discovery_offset(self.vram_size)
        if offset + DISCOVERY_TMR_SIZE <= self.vram.size:
            self.discovery_via, reader = "BAR0", self.vram.read  # amdgpu_device_aper_access
        else:
            self.discovery_via, reader = "MM_INDEX/MM_DATA", self.regs.vram_read  # amdgpu_device_mm_access

        def read(off: int, size: int) -> bytes:
            try:
                data = reader(off, size)
            except PCIError as e:
                self.check_present()
                raise AMError(f"{self.bdf}: reading the discovery table ({size} bytes at VRAM {off:#x}) through "
                              f"{self.discovery_via} failed: {e}") from e
            if data == b"\xff" * len(data):
                self.check_present()  # a gone card reads all ones; a live one with such a table fails the checks
            return data

        try:
            return read_discovery(read, self.vram_size)
        except DiscoveryError as e:
            raise DiscoveryError(f"{self.bdf}: the IP discovery table at VRAM {offset:#x} (read through "
                                 f"{self.discovery_via}) is unusable: {e}") from None

    # --- reports ---
    @property
    def backend(self) -> str:
        """'sysfs', 'vfio', or the PCIDevice class name for other backends."""
        return _BACKENDS.get(type(self.pci).__name__, type(self.pci).__name__)

    @property
    def rebind_command(self) -> Optional[str]:
        """The command that binds back a kernel driver this device unbound (None when it unbound none)."""
        return getattr(self.pci, "rebind_command", None)

    def describe(self) -> dict[str, Any]:
        """PCI ids, link, BARs, VRAM, IP versions, target and firmware versions, as plain data (gpu_probe, --json)."""
        link = None
        if self.pci is not None and not self.closed:
            try:
                ls = self.pci.link_status()
            except PCIError:
                ls = None
            if ls is not None:
                link = dict(speed_gts=ls.speed_gts, width=ls.width, max_speed_gts=ls.max_speed_gts,
                            max_width=ls.max_width)
        ips: dict[str, dict[str, Any]] = {}
        if self.discovery is not None:
            for e in self.discovery.ips:
                entry = ips.setdefault(e.name, dict(version=".".join(map(str, e.version)), instances=0))
                entry["instances"] += 1
        ids = {k: v for k, v in self.ids.items() if k != "command"}
        return dict(
            bdf=self.bdf, backend=self.backend, emulated=bool(getattr(self.system, "emulated", False)),
            pci={k: f"{v:#06x}" if k != "class_code" else f"{v:#08x}" for k, v in ids.items()},
            link=link,
            bars=[dict(index=b.index, size=b.size, address=f"{b.address:#x}", is_64bit=b.is_64bit,
                       prefetchable=b.prefetchable) for b in sorted(self.bars.values(), key=lambda b: b.index)],
            bar0_resize=dict(self.bar_resize),
            vram_size=self.vram_size, visible_vram=self.bars[VRAM_BAR].size if VRAM_BAR in self.bars else 0,
            discovery_via=self.discovery_via, ip_versions=ips, target=self.target,
            firmware_ip_versions={b: ".".join(map(str, v)) for b, v in firmware_versions(self.discovery).items()}
            if self.discovery is not None else {},
            firmware=firmware_summary(self.firmware) if self.firmware is not None else [],
            timings={k: round(v, 6) for k, v in self.timings.items()},
            unbound_driver=getattr(self.pci, "unbound_driver", None), rebind_command=self.rebind_command,
            lock=self.lock.key)

    # --- closing ---
    def close(self) -> None:
        """Unmap the BARs, give decoding/bus mastering back as found, close the PCI backend (which says how to bind
        back a driver it unbound), and release the device lock. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        try:
            for m in (self.doorbells, self.vram, self.mmio):
                if m is not None:
                    try:
                        m.close()
                    except PCIError:
                        pass  # closing anyway: the backend's close() drops what is left
            self.doorbells = self.vram = self.mmio = None
            if self.pci is not None:
                self._restore_command()
                rebind = self.rebind_command
                try:
                    self.pci.close()
                finally:
                    if rebind:
                        log.warning("%s: AM unbound its kernel driver; to give the GPU back to it run: %s",
                                    self.bdf, rebind)
        finally:
            self.lock.release()

    def _restore_command(self) -> None:
        """Put memory decoding and bus mastering back as they were found (only those two bits, only if we set them)."""
        found = self._command_found
        if found is None or self.pci is None:
            return
        bits = R.PCI_COMMAND_MEMORY | R.PCI_COMMAND_MASTER
        try:
            now = self.pci.config_read(R.PCI_COMMAND, 2)
            if now != 0xFFFF and (now & bits) != (found & bits):
                self.pci.config_write(R.PCI_COMMAND, (now & ~bits) | (found & bits), 2)
        except PCIError as e:
            log.info("%s: leaving the PCI command register as it is: %s", self.bdf, e)

    def __enter__(self) -> "AMDevice":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.target}, {self.vram_size >> 20} MiB VRAM, {self.backend}"
        return f"AMDevice({self.bdf!r}, {state})"


__all__ = ["AMDevice", "AMError", "AMD_VENDOR_ID", "DeviceGoneError", "GPU_CLASSES"]
