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

Bring-up (`boot()`): the IP blocks that are in the tree, in amdgpu's order (amdgpu_discovery.c
amdgpu_discovery_set_ip_blocks on bare metal: common/NBIO, GMC, IH, PSP, SMU), each timed. Cold or warm is decided
first: warm only when the note our previous process left next to the device lock says it left the card warm-bootable
AND the card agrees (the PSP's secure OS is alive: MP0_SMN_C2PMSG_81 non-zero, psp_v13_0_is_sos_alive); anything
else is a cold boot, which resets the function first (soc21_need_reset_on_init resets when the sOS is alive; we reset
on every cold boot, since a half-done bootloader leaves C2PMSG_81 at zero too) and waits for the IFWI again. Leaving
(close(), and through the device lock SIGTERM and interpreter exit) finis the blocks in reverse order and records in
the note whether the card was left warm-bootable; a process that dies without closing leaves the note saying the card
is in use, so the next open cold-boots and says why.
"""
from __future__ import annotations

import datetime
import importlib
import json
import logging
import os
import time
import weakref
from typing import Any, Iterable, Optional

from autogen import pci_regs as R
from drivers.am.discovery import (DISCOVERY_TMR_SIZE, IFWI_WAIT_S, Discovery, DiscoveryError, discovery_offset,
                                  ifwi_ready, read_discovery, vram_size_from_memsize)
from drivers.am.firmware import firmware_summary, firmware_versions, load_firmware
from drivers.am.regs import ALL_ONES, MP0_SMN_C2PMSG_33, DeviceGoneError, RegisterError, RegisterFile
from drivers.lock import DeviceLock, ProcessLocks
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


class AMBootError(AMError):
    """The bring-up failed at one stage. `stage` names it ("reset", "ifwi", "gmc", "psp", ...), `cause` is the block's
    own error; the card was left for a cold boot (reset when the function allows it) and the note says so."""

    def __init__(self, message: str, stage: str, cause: Optional[BaseException] = None):
        super().__init__(message)
        self.stage, self.cause = stage, cause


# amdgpu_discovery.c amdgpu_discovery_set_ip_blocks (bare metal): common (NBIO), GMC, IH, PSP, SMU, then display,
# GFX, SDMA, MES. (module under drivers/am, class) for each block AM brings up, in that order.
# amdgpu_discovery_set_ip_blocks' bare-metal order: common (NBIO), GMC, IH, PSP, SMU, then GFX and SDMA (the GFX
# block enables the GFX hub the SDMA rings go through).
BLOCK_ORDER: tuple[tuple[str, str], ...] = (("nbio", "NBIO"), ("gmc", "GMC"), ("ih", "IH"), ("psp", "PSP"),
                                            ("smu", "SMU"), ("gfx", "GFX"), ("sdma", "SDMA"))
LEAVE_MODES = ("warm", "cold")
NOTE_VERSION = 1
# psp_v13_0.c / psp_v14_0.c *_is_sos_alive: the sOS sign of life, by MP0 major version (mp_13_0_2 / mp_14_0_2 names)
_SOL_REGS = {13: "MP0_SMN_C2PMSG_81", 14: "MPASP_SMN_C2PMSG_81"}
# A private emulated machine's locks live in a ProcessLocks space, not in files: its notes live here, per space.
_space_notes: "weakref.WeakKeyDictionary[ProcessLocks, dict[str, dict[str, Any]]]" = weakref.WeakKeyDictionary()


def boot_note_path(lock: DeviceLock) -> Optional[str]:
    """The note file next to a device lock file (`<lock>.boot.json`); None for a ProcessLocks space (kept in memory).
    The lock file itself is emptied on release (drivers/lock.py), so what outlives the holder needs a file of its own."""
    if lock.path is None:
        return None
    return (lock.path[:-len(".lock")] if lock.path.endswith(".lock") else lock.path) + ".boot.json"


def read_boot_note(lock: DeviceLock) -> Optional[dict[str, Any]]:
    """What the previous holder recorded about the card (see AMDevice.boot), or None when there is no usable note."""
    if lock.space is not None:
        note = _space_notes.get(lock.space, {}).get(lock.key)
        return dict(note) if note is not None else None
    path = boot_note_path(lock)
    try:
        with open(path, "rb") as f:  # type: ignore[arg-type]
            note = json.loads(f.read(64 * 1024))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.info("%s: the boot note %s is unreadable (%s): treated as absent", lock.key, path, e)
        return None
    return note if isinstance(note, dict) and note.get("version") == NOTE_VERSION else None


def write_boot_note(lock: DeviceLock, note: dict[str, Any]) -> Optional[str]:
    """Record `note` for the next holder (atomically: a reader sees the old note or the new one). Returns None, or
    why it could not be written (then the next open finds no note, or an older one saying "in use": a cold boot)."""
    note = dict(note, version=NOTE_VERSION)
    if lock.space is not None:
        _space_notes.setdefault(lock.space, {})[lock.key] = note
        return None
    path = boot_note_path(lock)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(note, f)
        os.chmod(tmp, 0o666)  # the next holder may be another user (the lock file is shared the same way)
        os.replace(tmp, path)  # type: ignore[arg-type]
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass  # never created
        log.warning("%s: could not record the card's state in %s: %s; the next open will cold-boot", lock.key, path, e)
        return str(e)
    return None


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
        self._ifwi_timeout = ifwi_timeout
        # The IP blocks once booted (None until then, or when not asked for); the blocks find each
        # other through these (the PSP reads dev.gmc for VRAM's MC base, the GMC dev.nbio for the HDP flush).
        self.nbio: Any = None
        self.gmc: Any = None
        self.ih: Any = None
        self.psp: Any = None
        self.smu: Any = None
        self.blocks: list[tuple[str, Any]] = []  # (name, block) brought up, in order
        self.boot_info: Optional[dict[str, Any]] = None
        self.leave = "warm"
        self._boot_state = "not booted"  # -> booting -> up | failed; close() leaves the blocks only when up
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
    def _stage(self, name: str, start: float) -> float:
        self.timings[name] = took = time.monotonic() - start
        return took

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

    # --- bring-up ---
    def sos_alive(self) -> Optional[int]:
        """The PSP's sOS sign of life (MP0_SMN_C2PMSG_81, psp_v13_0_is_sos_alive): its value (non-zero: the secure OS
        runs, so the card was brought up since its last reset), or None when this MP0 has no such register here."""
        assert self.regs is not None and self.discovery is not None
        major = self.discovery.version("MP0")[0]
        names = [_SOL_REGS[major]] if major in _SOL_REGS else list(_SOL_REGS.values())
        for name in names:
            try:
                return self.regs.read(self.regs.reg("MP0", name))
            except DeviceGoneError:
                raise
            except RegisterError:
                continue  # not this generation's name
        return None

    def _identity(self) -> dict[str, Any]:
        return dict(bdf=self.bdf, target=self.target, vram_size=self.vram_size, device=self.ids.get("device"),
                    revision=self.ids.get("revision"))

    def _note(self, state: str, reason: str, **extra: Any) -> None:
        now = time.time()
        note = dict(state=state, reason=reason, pid=os.getpid(), at=now,
                    at_text=datetime.datetime.fromtimestamp(now).astimezone().isoformat(timespec="milliseconds"),
                    identity=self._identity(), **extra)
        why = write_boot_note(self.lock, note)
        if why is not None and self.boot_info is not None:
            self.boot_info["note_error"] = why

    def _decide(self, previous: Optional[dict[str, Any]], force_cold: bool) -> tuple[str, str, Optional[int]]:
        """('warm' | 'cold', why, the sOS sign of life read)."""
        try:
            sol = self.sos_alive()
        except DeviceGoneError:
            raise
        except RegisterError as e:
            return "cold", f"the PSP's sign of life could not be read ({e})", None
        alive = f"the PSP's secure OS is running (C2PMSG_81 reads {sol:#x})" if sol else \
            "the PSP's secure OS is not running (C2PMSG_81 reads 0)"
        if force_cold:
            return "cold", "a cold boot was asked for (boot(cold=True))", sol
        if previous is None:
            return "cold", ("no note from an earlier AM process on this card (first open since the machine started, or "
                            f"the note was lost); {alive}, so the card's state is unknown"), sol
        who = f"process {previous.get('pid')} ({previous.get('at_text', '?')})"
        state = previous.get("state")
        if state == "in-use":
            booted = "after its bring-up finished" if previous.get("booted") else "during its bring-up"
            return "cold", (f"{who} did not close the card cleanly: it crashed or was killed {booted}, so the "
                            f"blocks' state is unknown"), sol
        if state != "warm":
            return "cold", f"{who} left the card for a cold boot: {previous.get('reason', 'no reason recorded')}", sol
        if previous.get("identity") != self._identity():
            return "cold", (f"{who}'s note describes another card ({previous.get('identity')}); this one is "
                            f"{self._identity()}"), sol
        if not sol:
            return "cold", (f"{who} left the card warm-bootable, but {alive}: the card was reset or power-cycled "
                            f"since"), sol
        return "warm", f"{who} left the card warm-bootable and {alive}", sol

    def boot(self, blocks: Optional[Iterable[str]] = None, *, block_options: Optional[dict[str, dict[str, Any]]] = None,
             cold: bool = False, leave: str = "warm") -> dict[str, Any]:
        """Bring the card up: decide cold or warm, on cold reset the function and wait for the IFWI again, then init
        the IP blocks (`blocks`: names from BLOCK_ORDER, default all) in amdgpu's order, each timed. Blocks whose file
        is not in drivers/am are skipped and named in describe(). `block_options` are each block's constructor
        keywords ({"psp": {"handshake_delay_s": 0}}); `cold=True` forces a cold boot; `leave` is what close() leaves
        ("warm": SMU idle and running, PSP ring destroyed, next open may warm-boot; "cold": the SMU unloaded, the next
        open resets). Returns `boot_info` (also in describe()["boot"]). A failure raises AMBootError naming the stage,
        after leaving the blocks already up, resetting the function and noting the card is to be cold-booted."""
        if self.closed or self.regs is None or self.pci is None:
            raise AMError(f"{self.bdf}: boot() on a closed device: open a new AMDevice")
        if self._boot_state in ("booting", "up"):
            raise AMError(f"{self.bdf}: the card is already {'up' if self._boot_state == 'up' else 'booting'}; "
                          f"close() and open it again to boot it again")
        if leave not in LEAVE_MODES:
            raise ValueError(f"leave={leave!r}: must be one of {LEAVE_MODES}")
        known = [n for n, _ in BLOCK_ORDER]
        wanted = known if blocks is None else list(blocks)
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ValueError(f"unknown IP block(s) {unknown}; AM brings up {known} (in that order)")
        options = dict(block_options or {})
        bad = [n for n in options if n not in known]
        if bad:
            raise ValueError(f"block_options for unknown IP block(s) {bad}; the blocks are {known}")
        self.leave = leave
        self._boot_state = "booting"
        start = time.monotonic()
        previous = read_boot_note(self.lock)
        kind, reason, sol = self._decide(previous, cold)
        info: dict[str, Any] = dict(kind=kind, reason=reason, sos_sign_of_life=sol, previous_note=previous,
                                    stages={}, skipped=[], blocks={}, reset=None, leave=leave)
        self.boot_info = info
        log.info("%s: %s boot: %s", self.bdf, kind, reason)
        self._note("in-use", f"booting ({kind})", booted=False, boot=kind)
        try:
            if kind == "cold":
                self._cold_reset(info)
            else:
                info["skipped"] += ["reset", "ifwi"]
            for name, cls_name in BLOCK_ORDER:
                if name not in wanted:
                    info["blocks"][name] = "not asked for"
                    continue
                block = getattr(importlib.import_module(f"drivers.am.{name}"), cls_name)
                self._boot_block(info, name, block, options.get(name, {}))
        except BaseException as e:
            self._abort_boot(info, e)
            raise
        psp = self.psp
        if psp is not None and getattr(psp, "sos_was_alive", False):
            info["skipped"].append("psp bootloader")  # psp_hw_start: the sOS is alive, its stages are not rerun
        info["total_s"] = round(self._stage("boot", start), 6)
        self._boot_state = "up"
        self._note("in-use", f"up ({kind} boot)", booted=True, boot=kind)
        log.info("%s: %s boot in %.1f ms (%s)", self.bdf, kind, info["total_s"] * 1e3,
                 ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in info["stages"].items()))
        return info

    def _cold_reset(self, info: dict[str, Any]) -> None:
        """Function reset (FLR, or the backend's method), then the IFWI's init again (the table is rewritten)."""
        assert self.pci is not None
        t = time.monotonic()
        try:
            self.pci.reset()
            info["reset"] = "function reset"
        except PCIError as e:
            # No reset method: boot on from whatever state the card is in (the PSP skips a bootloader that is done).
            info["reset"] = f"not reset: {e}"
            log.warning("%s: cold boot without a reset: %s", self.bdf, e)
        info["stages"]["reset"] = round(self._stage("boot.reset", t), 6)
        t = time.monotonic()
        try:
            self._wait_ifwi(self._ifwi_timeout)
        except AMError as e:
            raise AMBootError(f"{self.bdf}: bring-up failed at stage ifwi (after the function reset): {e}", "ifwi",
                              e) from e
        info["stages"]["ifwi"] = round(self._stage("boot.ifwi", t), 6)

    def _boot_block(self, info: dict[str, Any], name: str, cls: Any, opts: dict[str, Any]) -> None:
        t = time.monotonic()
        try:
            block = cls(**opts).init(self)
        except Exception as e:
            took = self._stage(f"boot.{name}", t)
            info["stages"][name] = round(took, 6)
            info["blocks"][name] = f"failed: {e}"
            raise AMBootError(f"{self.bdf}: bring-up ({info['kind']} boot) failed at stage {name} after "
                              f"{took:.3f} s: {e}", name, e) from e
        setattr(self, name, block)
        self.blocks.append((name, block))
        info["stages"][name] = round(self._stage(f"boot.{name}", t), 6)
        info["blocks"][name] = "up"

    def _fini_blocks(self, leave: str) -> list[str]:
        """Fini the blocks in reverse order; returns what went wrong, in words (each block is finied regardless)."""
        errors: list[str] = []
        while self.blocks:
            name, block = self.blocks.pop()
            t = time.monotonic()
            try:
                if name == "smu":
                    if getattr(block, "hung", None):
                        errors.append(f"smu: hung ({block.hung})")
                    block.fini(unload=leave == "cold")  # warm: idle clocks, the SMU keeps running
                else:
                    block.fini()
            except Exception as e:  # noqa: BLE001 - every block must still be left; reported below
                errors.append(f"{name}: {e}")
                log.warning("%s: leaving the %s block: %s", self.bdf, name.upper(), e)
            self._stage(f"leave.{name}", t)
            setattr(self, name, None)
        return errors

    def _abort_boot(self, info: dict[str, Any], error: BaseException) -> None:
        """A stage failed (or the process is being stopped): leave the blocks that came up, reset the function so the
        card is at power-on, and note that the next open must cold-boot."""
        self._boot_state = "failed"
        stage = error.stage if isinstance(error, AMBootError) else "boot"
        errors = self._fini_blocks("cold")
        try:
            assert self.pci is not None
            self.pci.reset()
            after = "the function was reset"
        except (PCIError, AssertionError) as e:
            after = f"the function could not be reset ({e})"
        info["failed"] = dict(stage=stage, error=str(error), left=errors, after=after)
        self._note("cold", f"the bring-up failed at stage {stage} ({type(error).__name__}: {error}); {after}",
                   booted=False)

    def _leave_card(self, leave: str) -> None:
        """close(): fini the blocks in reverse order and note whether the card is warm-bootable now."""
        t = time.monotonic()
        errors = self._fini_blocks(leave)
        self._boot_state = "left"
        if leave == "cold":
            state, reason = "cold", "closed with leave='cold' (the SMU was unloaded)"
        elif errors:
            state, reason = "cold", "leaving the blocks failed: " + "; ".join(errors)
        else:
            try:
                sol = self.sos_alive()
            except RegisterError as e:
                sol, errors = None, [str(e)]
            state, reason = ("warm", "closed cleanly: SMU idle, PSP ring and TMR destroyed, GMC hubs disabled") \
                if sol else ("cold", f"after leaving, the PSP's secure OS is not running ({errors or 'C2PMSG_81 0'})")
        self._stage("leave", t)
        self._note(state, reason, booted=True)
        log.info("%s: left %s: %s", self.bdf, state, reason)

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
            boot=self._boot_report(),
            unbound_driver=getattr(self.pci, "unbound_driver", None), rebind_command=self.rebind_command,
            lock=self.lock.key)

    def _boot_report(self) -> dict[str, Any]:
        if self.boot_info is None:
            return dict(kind=None, state=self._boot_state, note=boot_note_path(self.lock) or "in memory (private "
                        "machine)")
        info = dict(self.boot_info, state=self._boot_state)
        info["blocks_detail"] = {n: b.describe() for n, b in self.blocks if hasattr(b, "describe")}
        return info

    # --- closing ---
    def close(self, leave: Optional[str] = None) -> None:
        """Leave the blocks when booted (reverse order; `leave` "warm" or "cold", default boot()'s), unmap the BARs, give decoding/bus mastering back as found, close the PCI backend (which says how to bind
        back a driver it unbound), and release the device lock. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._boot_state == "up":
                try:
                    self._leave_card(leave or self.leave)
                except Exception as e:  # noqa: BLE001 - the BARs and the lock must still go
                    log.warning("%s: leaving the card: %s", self.bdf, e)
                    self._note("cold", f"leaving the card failed: {e}", booted=True)
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


__all__ = ["AMBootError", "AMDevice", "AMError", "AMD_VENDOR_ID", "BLOCK_ORDER", "DeviceGoneError", "GPU_CLASSES",
           "boot_note_path", "read_boot_note", "write_boot_note"]
