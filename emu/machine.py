"""Emulated machines: an EmulatedSystem with one vendor's hardware installed.

Machine-wide, like cards: every process of this machine sees the same emulated machine, so two processes
opening emulated AMD:0 meet its lock exactly as on a card. Its locks live in the ordinary lock directory
(default_lock_dir(), BAREGPU_LOCK_DIR) under keys of their own ("emulated-..."), so they never meet a real
card's. A private machine (`private=True`, for tests) keeps its locks inside the process (a ProcessLocks
space): it never meets another process or another private machine, and leaves nothing behind, even on kill -9.

Hazard mode (emu/amd/cp.py): BAREGPU_EMU_HAZARD=<seed> turns it on for every emulated machine made without an
explicit choice; `emulated_system(..., hazard=seed)` turns it on for one machine, `hazard=HAZARD_OFF` keeps it off.

Kernels: the emulated GPU runs a code object's machine code on its wave executor (emu/amd/isa). The fast mode,
for big benchmarks, runs the host build the code object carries instead: BAREGPU_EMU_KERNELS=host, or
`emulated_system(..., kernels="host")`; kernels must then be compiled with compile_kernel(..., emulation=True),
which the tensor layer does when the system's `host_kernels` says so.
"""
from __future__ import annotations

import itertools

from drivers.lock import ProcessLocks
from emu.system import EmulatedSystem
from hcq.env import EnvError, env_int, env_list, raw

EMU_AMD_ENV = "BAREGPU_EMU_AMD"
EMU_NV_ENV = "BAREGPU_EMU_NV"
EMU_HAZARD_ENV = "BAREGPU_EMU_HAZARD"
EMU_KERNELS_ENV = "BAREGPU_EMU_KERNELS"
KERNEL_MODES = ("isa", "host")  # the wave executor runs the machine code (default); the host build runs instead
HAZARD_OFF = -1  # emulated_system(hazard=HAZARD_OFF): no hazard mode whatever BAREGPU_EMU_HAZARD says
DEFAULT_AMD_TARGETS = ("gfx1100",)
DEFAULT_NV_TARGETS = ("sm_90",)

_private_machines = itertools.count()


def amd_targets() -> tuple[str, ...]:
    """The emulated AMD GPUs BAREGPU_EMU_AMD asks for, one gfx target each (default gfx1100).

    Raises EnvError naming the variable and the targets the emulated KFD has when the value is empty or
    names one it does not have."""
    from emu.amd.kfd import TARGETS
    return env_list(EMU_AMD_ENV, DEFAULT_AMD_TARGETS, TARGETS, "gfx target")


def hazard_seed() -> int | None:
    """The hazard-mode seed BAREGPU_EMU_HAZARD asks for (a whole number >= 0), or None when it is unset.

    Raises EnvError naming the variable when the value is not such a number."""
    if raw(EMU_HAZARD_ENV) is None:
        return None
    return env_int(EMU_HAZARD_ENV, 0, minimum=0, maximum=(1 << 63) - 1)


def kernel_mode() -> str:
    """How emulated GPUs run kernels, as BAREGPU_EMU_KERNELS asks: "isa" (default) or "host" (the fast mode)."""
    value = raw(EMU_KERNELS_ENV)
    if value is None:
        return KERNEL_MODES[0]
    if value.lower() not in KERNEL_MODES:
        raise EnvError(EMU_KERNELS_ENV, value, "it takes isa (run the code object's machine code on the wave "
                       "executor, the default) or host (run the host build the code object carries: faster)")
    return value.lower()


def nv_targets() -> tuple[str, ...]:
    """The emulated NVIDIA GPUs BAREGPU_EMU_NV asks for, one sm_XX each (default sm_90, an H200's Hopper).

    Raises EnvError naming the variable and the architectures the emulated RM has when the value is empty or
    names one it does not have."""
    from emu.nv.rm import TARGETS
    return env_list(EMU_NV_ENV, DEFAULT_NV_TARGETS, TARGETS, "NVIDIA architecture")


def _hazard(hazard: int | None) -> int | None:
    """The seed hazard= asks for (None: BAREGPU_EMU_HAZARD), or None for hazard mode off."""
    if hazard is None:
        hazard = hazard_seed()
    elif hazard < 0 and hazard != HAZARD_OFF:
        raise ValueError(f"hazard={hazard}: a hazard seed is a whole number >= 0 (or HAZARD_OFF, or None)")
    return None if hazard is None or hazard == HAZARD_OFF else hazard


def _nv_system(targets: tuple[str, ...] | None, private: bool, hazard: int | None, kernels: str | None,
               **options: int) -> EmulatedSystem:
    """An emulated machine with NVIDIA GPUs behind an emulated RM and UVM (emu/nv). They always run the checked host
    build each cubin carries (NVIDIA's machine code has no public semantics), so `host_kernels` is always true."""
    if kernels not in (None, "host"):
        raise ValueError(f"kernels={kernels!r}: the emulated NVIDIA GPU runs the host build a cubin carries (\"host\"); "
                         "NVIDIA's machine code has no public semantics to run")
    gpus = tuple(targets) if targets else nv_targets()
    locks = ProcessLocks(f"private emulated machine {next(_private_machines)}") if private else None
    system = EmulatedSystem(lock_dir=locks)
    from emu.nv.rm import EmulatedNV
    system.host_kernels = True
    system.nv = EmulatedNV(gpus, hazard=_hazard(hazard), **options)  # kept on the system so tests can reach it
    system.nv.install(system)
    return system


def emulated_system(vendor: str, targets: tuple[str, ...] | None = None, private: bool = False,
                    hazard: int | None = None, kernels: str | None = None, **options: int) -> EmulatedSystem:
    """A new emulated machine of `vendor` ("amd" or "nv") with `targets` (default: BAREGPU_EMU_AMD / BAREGPU_EMU_NV).

    `hazard`: a seed (>= 0) runs its command processors in hazard mode (work the streams leave unordered is
    reordered, interleaved and shown stale cache contents, reproducibly per seed); None takes BAREGPU_EMU_HAZARD;
    HAZARD_OFF turns it off. `kernels`: "isa" or "host" (see above); None takes BAREGPU_EMU_KERNELS.

    Machine-wide by default: its GPUs' locks meet every other process's (and this process's other machine-wide
    systems'), as cards do. `private=True` makes a machine whose GPUs only its own devices compete for: tests use
    it, so they meet neither other processes nor each other (a GPU of it is still opened once at a time).
    """
    if vendor == "nv":
        return _nv_system(targets, private, hazard, kernels, **options)
    if vendor != "amd":
        raise NotImplementedError(f"no emulated {vendor} hardware yet: amd and nv are emulated so far")
    gpus = tuple(targets) if targets else amd_targets()
    # None: the lock directory is looked up when a device is opened, so BAREGPU_LOCK_DIR set later still counts.
    locks = ProcessLocks(f"private emulated machine {next(_private_machines)}") if private else None
    system = EmulatedSystem(lock_dir=locks)
    from emu.amd.kfd import EmulatedKFD
    seed = _hazard(hazard)
    kernels = kernel_mode() if kernels is None else kernels
    if kernels not in KERNEL_MODES:
        raise ValueError(f"kernels={kernels!r}: the emulated GPU runs kernels as one of {KERNEL_MODES}")
    system.host_kernels = kernels == "host"
    system.kfd = EmulatedKFD(gpus, hazard=seed, host_kernels=system.host_kernels, **options)  # kept on the system so tests can reach the emulated kernel
    system.kfd.install(system)
    return system
