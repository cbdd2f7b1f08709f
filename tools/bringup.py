"""Bring a GPU up and check it: what gpu_probe runs on every device whose driver is built.

Each step is what a user's first program does, timed and checked against the host: open the device, allocate
device and host-visible memory, copy through the copy engine and back, run a compiled kernel on the compute
queue, and wait on a signal. An NVIDIA GPU's open is reported stage by stage (RM client, device, VA space with
UVM, channels), and its check ends with a small tensor computation compared with numpy. An AM card (an AMD GPU with
no kernel driver) is brought up as far as the AM driver goes today: its open stage by stage (identify, IFWI, BARs, IP
discovery, firmware), then the GMC, PSP and SMU blocks; its queues are not built yet, which the check says instead of
running smoke checks. A failing step is reported with its error and the steps after it are skipped; nothing here
raises.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from drivers.system import System
from hcq.env import EnvError

CHECK_TIMEOUT_S = 60.0  # an emulated GPU runs kernels on the host: generous, but bounded
COPY_BYTES = 1 << 20
KERNEL_COUNT = 1000  # elements of the y = 2x + y check


@dataclass
class Step:
    """One bring-up step: what it does, whether it worked, how long it took, and what went wrong.

    `bad_environment` is True when it failed on a BAREGPU_* variable's value: the user's to fix, not the device's.
    """
    name: str
    ok: bool
    ms: float
    detail: str = ""
    bad_environment: bool = False


@dataclass
class Check:
    """The bring-up of one device; `emulated` is True when the device is the emulated machine's, not hardware.

    `not_built` says what the driver lacks before the smoke checks can run (empty when they ran); `notes` are facts
    the reader must not miss (generated test firmware)."""
    device: str
    target: str
    emulated: bool
    steps: list[Step] = field(default_factory=list)
    not_built: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every step ran and passed."""
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def bad_environment(self) -> bool:
        """True when a step failed on a bad BAREGPU_* variable (hcq.env.EnvError) rather than on the device."""
        return any(s.bad_environment for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        """The check as gpu_probe's --json writes it."""
        return {"device": self.device, "target": self.target, "emulated": self.emulated, "ok": self.ok,
                "steps": [asdict(s) for s in self.steps], "not_built": self.not_built, "notes": list(self.notes)}


def _failure(e: BaseException) -> tuple[str, bool]:
    """A step's error as its detail, and whether a bad BAREGPU_* variable caused it."""
    return f"{type(e).__name__}: {e}", isinstance(e, EnvError)


def _step(check: Check, name: str, fn: Callable[[], str]) -> bool:
    t0 = time.perf_counter()
    bad_env = False
    try:
        detail = fn() or ""
        ok = True
    except Exception as e:  # the report names any failure; a probe never crashes on a broken device
        (detail, bad_env), ok = _failure(e), False
    check.steps.append(Step(name, ok, round((time.perf_counter() - t0) * 1000, 2), detail, bad_env))
    return ok


# --- the checks every HCQ device gets: memory, copy, kernel, signal ---

def _memory(dev: Any, bufs: list[Any]) -> str:
    from hcq.buffer import MemFlags
    bufs += [dev.alloc(COPY_BYTES, MemFlags.DEVICE_LOCAL), dev.alloc(COPY_BYTES, MemFlags.HOST_VISIBLE),
             dev.alloc(COPY_BYTES, MemFlags.HOST_VISIBLE)]
    return f"3 x {COPY_BYTES >> 20} MiB (device-local, host-visible x2)"


def _copy(dev: Any, bufs: list[Any]) -> str:
    vram, src, dst = bufs
    data = np.random.default_rng(0).integers(0, 256, COPY_BYTES, dtype=np.uint8)
    src.numpy(np.uint8)[:] = data
    v1 = dev.next_timeline_value()
    dev.copy_queue().copy(vram.va, src.va, COPY_BYTES).signal(dev.timeline, v1).submit(dev)
    v2 = dev.next_timeline_value()
    dev.copy_queue().wait(dev.timeline, v1).copy(dst.va, vram.va, COPY_BYTES).signal(dev.timeline, v2).submit(dev)
    dev.synchronize(timeout=CHECK_TIMEOUT_S)
    if not np.array_equal(dst.numpy(np.uint8), data):
        bad = int(np.argmax(dst.numpy(np.uint8) != data))
        raise RuntimeError(f"the copy came back different from byte {bad:#x} on")
    return f"{COPY_BYTES >> 20} MiB host -> device -> host through the copy queue"


def _kernel(dev: Any, system: System, bufs: list[Any]) -> str:
    from compiler import KernelCache, compile_kernel
    from compiler.ir import Kernel, f32
    k = Kernel("bringup_axpy", local_size=(64, 1, 1))
    x, y = k.buffer("x", f32), k.buffer("y", f32, writable=True)
    n = k.scalar("n")
    i = k.global_id(0)
    with k.if_(i < n):
        y[i] = x[i] * 2.0 + y[i]
    with tempfile.TemporaryDirectory() as tmp:
        prog = dev.load_program(compile_kernel(k, dev.target, KernelCache(Path(tmp)),
                                                emulation=getattr(system, "host_kernels", False)))
    count = KERNEL_COUNT
    _, src, dst = bufs
    xs = np.arange(count, dtype=np.float32)
    src.numpy(np.float32, count)[:] = xs
    dst.numpy(np.float32, count)[:] = 1.0
    dev.compute_queue().exec(prog, prog.pack_args(src.va, dst.va, count), (-(-count // 64), 1, 1), (64, 1, 1)) \
        .signal(dev.timeline, dev.next_timeline_value()).submit(dev)
    dev.synchronize(timeout=CHECK_TIMEOUT_S)
    got = dst.numpy(np.float32, count)
    if not np.array_equal(got, xs * 2 + 1):
        raise RuntimeError(f"y = 2x + y came back wrong at {int(np.argmax(got != xs * 2 + 1))}")
    return f"y = 2x + y over {count} elements, compiled for {dev.target}"


def _signal(dev: Any) -> str:
    sig = dev.new_signal(0)
    q = dev.compute_queue().signal(sig, 7)
    t0 = time.perf_counter()
    q.submit(dev)
    sig.wait(7, CHECK_TIMEOUT_S)
    return f"signal written by the GPU seen after {(time.perf_counter() - t0) * 1e6:.0f} us"


def _tensor(dev: Any) -> str:
    """A small fused computation through the tensor layer on the opened device, compared with numpy.

    The device is lent to the tensor layer under its own name for the step and taken back afterwards (still open:
    the bring-up closes it), so a process that already uses that name in the tensor layer cannot run this step."""
    from tensor import DEVICES, Tensor
    rng = np.random.default_rng(1)
    a = rng.standard_normal((32, 48), dtype=np.float32)
    b = rng.standard_normal((48, 16), dtype=np.float32)
    want = np.maximum(a @ b + 1.0, 0.0).sum(axis=1)
    DEVICES.add(dev.name, dev)
    try:
        got = (Tensor(a, device=dev.name) @ Tensor(b, device=dev.name) + 1.0).relu().sum(axis=1).numpy()
    finally:
        DEVICES.remove(dev.name)  # handed back open: the bring-up owns the device and closes it
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-3):
        worst = int(np.argmax(np.abs(got - want))) if got.shape == want.shape else -1
        raise RuntimeError(f"relu(a @ b + 1).sum(axis=1) came back wrong: shape {got.shape} (want {want.shape}), "
                           f"element {worst}: {got.flat[worst] if worst >= 0 else '-'} (want "
                           f"{want.flat[worst] if worst >= 0 else '-'})")
    return "relu(a @ b + 1).sum(axis=1), a 32x48, b 48x16 float32, through the tensor layer: matches numpy"


def check_amd(system: System, index: int) -> Check:
    """Bring up AMD GPU `index` of the KFD topology through `system` and run the checks."""
    dev: Any = None
    check = Check(f"AMD:{index}" if index else "AMD", "unknown", bool(getattr(system, "emulated", False)))

    def open_device() -> str:
        nonlocal dev
        from drivers.amd.kfd import KFDDevice
        dev = KFDDevice(index, system)
        check.target = dev.target
        return f"{dev.target}, gpu_id {dev.node.gpu_id:#x}"

    bufs: list[Any] = []
    try:
        for name, fn in (("open", open_device), ("memory", lambda: _memory(dev, bufs)),
                         ("copy", lambda: _copy(dev, bufs)), ("kernel", lambda: _kernel(dev, system, bufs)),
                         ("signal", lambda: _signal(dev))):
            if not _step(check, name, fn):
                break
    finally:
        if dev is not None:
            dev.close()
    return check


def _open_nv_staged(system: System, index: int, marks: list[tuple[str, float]]) -> Any:
    """NVDevice(index, system), noting in `marks` when each of its OPEN_STAGES ends (name, perf_counter)."""
    from drivers.nv.device import NVDevice
    return NVDevice(index, system, on_stage=lambda stage: marks.append((stage, time.perf_counter())))


def _nv_stage_detail(dev: Any, stage: str) -> str:
    """What a finished open stage set up, from the opened device."""
    if stage == "rm client":
        return f"client {dev.rm.client:#x}, GPU id {dev.gpu_id:#x} at PCI {dev.pci_address}"
    if stage == "device":
        c = dev.classes.describe()
        return f"{dev.gpu_name}, {dev.target}, {c['compute']}, {c['copy']}, QMD {dev.qmd_version}"
    if stage == "va space":
        return f"FERMI_VASPACE_A {dev.vaspace:#x} registered with UVM, GPU VAs from {dev.heap.base:#x}"
    return f"{dev.classes.describe()['channel']}: a compute and a copy channel, {dev.ring_entries} GPFIFO entries each"


def check_nv(system: System, index: int) -> Check:
    """Bring up NVIDIA GPU `index` (in RM's order) through `system` and run the checks.

    The open is reported as its stages (drivers.nv.device.OPEN_STAGES), each timed; then memory, a signal round trip, a copy, a
    compiled kernel and a small tensor computation checked against numpy."""
    dev: Any = None
    check = Check(f"NV:{index}" if index else "NV", "unknown", bool(getattr(system, "emulated", False)))

    def open_stages() -> bool:
        nonlocal dev
        from drivers.nv.device import OPEN_STAGES  # imported before the clock starts: its import is not the GPU's time
        marks: list[tuple[str, float]] = []
        t0 = time.perf_counter()
        error: BaseException | None = None
        try:
            dev = _open_nv_staged(system, index, marks)
            check.target = dev.target
        except Exception as e:  # reported as the stage it stopped in
            error = e
        names = [name for name, _ in OPEN_STAGES]
        if [name for name, _ in marks] != names[:len(marks)] or (error is None and len(marks) != len(names)):
            # the driver reported other stages than it declares: one step for the whole open
            ms = round((time.perf_counter() - t0) * 1000, 2)
            if error is None:
                check.steps.append(Step("open", True, ms, f"{dev.target} (stage times unavailable)"))
                return True
            check.steps.append(Step("open", False, ms, *_failure(error)))
            return False
        last = t0
        for name, at in marks:
            check.steps.append(Step(name, True, round((at - last) * 1000, 2),
                                    _nv_stage_detail(dev, name) if dev is not None else ""))
            last = at
        if error is None:
            return True
        failed = names[len(marks)]
        detail, bad_env = _failure(error)
        check.steps.append(Step(failed, False, round((time.perf_counter() - last) * 1000, 2),
                                f"{detail} (while setting up {dict(OPEN_STAGES)[failed]})", bad_env))
        return False

    bufs: list[Any] = []
    try:
        if open_stages():
            for name, fn in (("memory", lambda: _memory(dev, bufs)), ("signal", lambda: _signal(dev)),
                             ("copy", lambda: _copy(dev, bufs)), ("kernel", lambda: _kernel(dev, system, bufs)),
                             ("tensor", lambda: _tensor(dev))):
                if not _step(check, name, fn):
                    break
    finally:
        if dev is not None:
            dev.close()
    return check


# AMDevice's open stages (drivers/am/device.py AMDevice._open, its `timings` keys), in order, with what each does.
AM_OPEN_STAGES = (("open", "identify the PCI function and map the register BAR"),
                  ("ifwi", "wait for the card's firmware (IFWI) to finish"),
                  ("bars", "read the VRAM size and map the VRAM and doorbell BARs"),
                  ("discovery", "read the IP discovery table"),
                  ("firmware", "find and validate the firmware images"))


def _am_stage_detail(dev: Any, stage: str) -> str:
    """What a finished AM open stage found, from the opened device."""
    if stage == "open":
        i = dev.ids
        return f"{i['vendor']:04x}:{i['device']:04x} rev {i['revision']:#04x} over {dev.backend}"
    if stage == "ifwi":
        return "IFWI init done (MP0_SMN_C2PMSG_33 bit 31)"
    if stage == "bars":
        return f"{dev.vram_size >> 20} MiB VRAM, BAR0 {dev.bars[0].size >> 20} MiB ({dev.bar_resize.get('result')})"
    if stage == "discovery":
        ips = ", ".join(f"{b} {'.'.join(map(str, v))}" for b, v in
                        ((b, dev.discovery.version(b)) for b in ("GC", "MP0", "MP1", "SDMA0") if dev.discovery.has(b)))
        return f"{dev.target} via {dev.discovery_via}: {ips}"
    images = dev.firmware.images
    return f"{len(images)} images: " + ", ".join(f"{role} v{img.ucode_version:#x}" for role, img in images.items())


def check_am(system: System, bdf: str, firmware_dirs: list[str] | tuple[str, ...] = (), *,
             generated_firmware: bool = False) -> Check:
    """Bring up the AM card at PCI address `bdf` through `system` as far as the AM driver goes today: the open stage
    by stage (AM_OPEN_STAGES, each timed), then the GMC, the PSP (which loads every IP's firmware) and the SMU, in
    amdgpu's order; then say that the queues (and so the smoke checks) are not built yet. Blocks are taken down in
    reverse order and the card closed, whatever happened. `firmware_dirs` are searched first for the images;
    `generated_firmware` says they are generated test firmware (a note on the check)."""
    from tools.gpu_probe import AM_NOT_BUILT, GENERATED_FIRMWARE
    check = Check(f"AM {bdf}", "unknown", bool(getattr(system, "emulated", False)))
    if generated_firmware:
        check.notes.append(GENERATED_FIRMWARE)
    dev: Any = None
    blocks: list[Any] = []

    def open_stages() -> bool:
        nonlocal dev
        from drivers.am.device import AMDevice  # imported before the clock starts: its import is not the GPU's time
        t0 = time.perf_counter()
        error: BaseException | None = None
        try:
            dev = AMDevice(bdf, system, firmware_dirs=list(firmware_dirs))
            check.target = dev.target or "unknown"
        except Exception as e:  # reported as the stage it stopped in
            error = e
        if dev is not None:
            for name, _ in AM_OPEN_STAGES:
                check.steps.append(Step(name, True, round(dev.timings.get(name, 0.0) * 1000, 2),
                                        _am_stage_detail(dev, name)))
            return True
        detail, bad_env = _failure(error)  # type: ignore[arg-type]
        check.steps.append(Step("open", False, round((time.perf_counter() - t0) * 1000, 2),
                                f"{detail} (while opening the card: {', '.join(n for n, _ in AM_OPEN_STAGES)})",
                                bad_env))
        return False

    def gmc() -> str:
        from drivers.am.gmc import GMC
        dev.gmc = GMC().init(dev)
        blocks.append(dev.gmc)
        g = dev.gmc
        return f"MMHUB on, FB {g.fb_start:#x}-{g.fb_end:#x}, root page table at VRAM {g.root.offset:#x}"

    def psp() -> str:
        from drivers.am.psp import PSP
        p = PSP().init(dev)
        blocks.append(p)
        d = p.describe()
        # a record's name is "<ucode id> (<file> <section>)": the files say which images went in
        files = list(dict.fromkeys(r["name"].split("(", 1)[1].split()[0] for r in d["loaded"] if "(" in r["name"]))
        return (f"MP0 {d['version']}, {'warm' if d['warm'] else 'cold'} boot, SOS {d['sos_version']:#x}, "
                if d["sos_version"] is not None else f"MP0 {d['version']}, ") + \
            f"{len(d['loaded'])} loads from {len(files)} image(s): {', '.join(files)}"

    def smu() -> str:
        from drivers.am.smu import SMU
        m = SMU().init(dev)
        blocks.append(m)
        d = m.describe()
        return f"MP1 {d['ip_version']}, SMU firmware {d['versions'].get('smu_version_text', '?')}, features " \
            f"{d['enabled_features']}, power limit {d['power_limit_w']} W"

    try:
        if open_stages():
            for name, fn in (("gmc", gmc), ("psp", psp), ("smu", smu)):
                if not _step(check, name, fn):
                    break
            else:
                check.not_built = AM_NOT_BUILT  # the smoke checks (signal, copy, kernel, tensor) need queues
    finally:
        for block in reversed(blocks):
            try:
                block.fini()
            except Exception as e:  # still close the card; say what went wrong leaving
                check.notes.append(f"leaving {type(block).__name__}: {type(e).__name__}: {e}")
        if dev is not None:
            dev.close()
    return check


def render(checks: list[Check]) -> list[str]:
    """The checks as text lines; every line of an emulated device's check starts with [emulated], as in gpu_probe."""
    from tools.gpu_probe import EMULATED_TAG
    lines = []
    for c in checks:
        tag = EMULATED_TAG if c.emulated else ""
        width = max([7] + [len(s.name) for s in c.steps])
        lines.append(f"{tag}Bring-up {c.device} ({c.target}): {'OK' if c.ok else 'FAILED'}")
        for s in c.steps:
            lines.append(f"{tag}    {'ok ' if s.ok else 'FAIL'} {s.name:<{width}} {s.ms:9.2f} ms  {s.detail}")
        if c.not_built:
            lines.append(f"{tag}    smoke checks (signal, copy, kernel, tensor) not run: {c.not_built}")
        lines += [f"{tag}    note: {n}" for n in c.notes]
    return lines
