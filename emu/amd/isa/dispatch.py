"""A compute dispatch as the hardware does it: from the COMPUTE_* registers the queue wrote and the DISPATCH_DIRECT
packet only (the CP never reads the kernel descriptor for a PM4 dispatch), set up every wave's initial state and run
the workgroups on the wave executor.

Facts: AMDGPUUsage "Initial Kernel Execution State" (the SGPR and VGPR set-up order) and the compute_pgm_rsrc1/2/3
tables (what each RSRC field means); the field masks and shifts come from the register headers
(autogen/gc_11_0_0.py, gc_12_0_0.py), never from numbers written here.

    launch = isa_launch(vm, regs, (gx, gy, gz), initiator, "gfx1100", code_cache)
    launch.run(0, launch.workgroups)      # or in pieces, from any thread; faults raise GPUFault
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import numpy as np

from autogen import gc_11_0_0 as gc11
from autogen import gc_12_0_0 as gc12
from emu.amd.isa.alu_fp import FloatMode
from emu.amd.isa.vm import AddressSpace, GPUFault
from emu.amd.isa.wave import TTMP0, Program, Wave, run_workgroup

MAX_WORKGROUP_THREADS = 1024  # AMDGPUUsage: the largest flat work-group size
# LDS_SIZE granule: AMDGPUUsage compute_pgm_rsrc2 GRANULATED_LDS_SIZE, "GFX7-GFX11 roundup(lds-size / (128 * 4))";
# GFX12 encodes in the same 512-byte units (LLVM AMDGPUAsmPrinter getSIProgramInfo: LDSAlignShift 9 for both)
LDS_GRANULE = 512
# COMPUTE_TMPRING_SIZE.WAVESIZE units: 256 bytes on gfx11 and gfx12 alike (LLVM test CodeGen/AMDGPU/scratch-
# config: "SPI_TMPRING_SIZE.WAVESIZE = 17" for both gfx1100 and gfx1200; Mesa ac_gpu_info.c: granularity shift 8
# from GFX11 on)
WAVESIZE_UNIT = {"gfx11": 256, "gfx12": 256}
PGM_ADDRESS_SHIFT = 8  # COMPUTE_PGM_LO/HI hold the code address bits 47:8 (256-byte aligned code)
SCRATCH_BASE_SHIFT = 8  # COMPUTE_DISPATCH_SCRATCH_BASE_LO/HI hold the scratch base bits 47:8


class DispatchError(GPUFault):
    """The registers describe a dispatch the hardware would not run (or this emulator does not)."""

    def __init__(self, message: str, va: Optional[int] = None):
        super().__init__(message, "bad dispatch", va)


def _field(gc: Any, reg: str, name: str, value: int) -> int:
    return (value & getattr(gc, f"{reg}__{name}_MASK")) >> getattr(gc, f"{reg}__{name}__SHIFT")


@dataclass(frozen=True)
class Setup:
    """What the registers say about one dispatch."""
    target: str
    code_va: int
    lanes: int
    vgprs: int
    user_sgprs: tuple[int, ...]
    tgid: tuple[bool, bool, bool]
    tg_size: bool
    scratch_en: bool
    tid_dims: int  # 1, 2 or 3 work-item ID components
    lds_bytes: int
    local: tuple[int, int, int]
    start: tuple[int, int, int]
    grid: tuple[int, int, int]
    scratch_base: int
    scratch_waves: int
    scratch_wave_bytes: int
    rsrc1: int

    @property
    def gfx12(self) -> bool:
        return self.target.startswith("gfx12")

    @property
    def threads(self) -> int:
        return self.local[0] * self.local[1] * self.local[2]

    @property
    def waves(self) -> int:
        return -(-self.threads // self.lanes)


def read_setup(regs: Callable[[str], int], grid: tuple[int, int, int], initiator: int, target: str) -> Setup:
    """Decode the dispatch registers; DispatchError for what the hardware (or this emulator) does not run."""
    if not target.startswith(("gfx11", "gfx12")):
        raise DispatchError(f"the wave executor runs gfx11 and gfx12 code, not {target}")
    gc = gc12 if target.startswith("gfx12") else gc11
    ini = "COMPUTE_DISPATCH_INITIATOR"
    if not _field(gc, ini, "COMPUTE_SHADER_EN", initiator):
        raise DispatchError(f"DISPATCH_DIRECT initiator {initiator:#x} without COMPUTE_SHADER_EN")
    for bit in ("USE_THREAD_DIMENSIONS", "PARTIAL_TG_EN"):
        if _field(gc, ini, bit, initiator):  # the grid would count threads, with partial workgroups: not emulated
            raise DispatchError(f"DISPATCH_DIRECT initiator {initiator:#x} sets {bit}, which is not emulated "
                                "(dispatches count whole workgroups)")
    wave32 = bool(_field(gc, ini, "CS_W32_EN", initiator))
    lanes = 32 if wave32 else 64
    code_va = (regs("PGM_LO") | _field(gc, "COMPUTE_PGM_HI", "DATA", regs("PGM_HI")) << 32) << PGM_ADDRESS_SHIFT
    rsrc1, rsrc2, rsrc3 = regs("PGM_RSRC1"), regs("PGM_RSRC2"), regs("PGM_RSRC3")
    # AMDGPUUsage compute_pgm_rsrc1 GRANULATED_WORKITEM_VGPR_COUNT, GFX10-GFX12: (count / granule) - 1 with a granule
    # of 8 VGPRs in wave32 and 4 in wave64; GRANULATED_WAVEFRONT_SGPR_COUNT is reserved: every wave has 106 SGPRs
    vgprs = (_field(gc, "COMPUTE_PGM_RSRC1", "VGPRS", rsrc1) + 1) * (8 if wave32 else 4)
    if gc is gc11 and _field(gc, "COMPUTE_PGM_RSRC3", "SHARED_VGPR_CNT", rsrc3):
        raise DispatchError(f"COMPUTE_PGM_RSRC3 {rsrc3:#x} asks for shared VGPRs, which are not emulated")
    n_user = _field(gc, "COMPUTE_PGM_RSRC2", "USER_SGPR", rsrc2)
    user = tuple(regs(f"USER_DATA_{i}") & 0xFFFFFFFF for i in range(n_user))
    tgid = tuple(bool(_field(gc, "COMPUTE_PGM_RSRC2", f"TGID_{d}_EN", rsrc2)) for d in "XYZ")
    lds = _field(gc, "COMPUTE_PGM_RSRC2", "LDS_SIZE", rsrc2) * LDS_GRANULE
    local = tuple(_field(gc, f"COMPUTE_NUM_THREAD_{d}", "NUM_THREAD_FULL", regs(f"NUM_THREAD_{d}")) for d in "XYZ")
    if min(local) < 1 or local[0] * local[1] * local[2] > MAX_WORKGROUP_THREADS:
        raise DispatchError(f"COMPUTE_NUM_THREAD_X/Y/Z say a workgroup of {local}: each must be at least 1 and the "
                            f"product at most {MAX_WORKGROUP_THREADS}")
    force0 = _field(gc, ini, "FORCE_START_AT_000", initiator)
    start = (0, 0, 0) if force0 else tuple(regs(f"START_{d}") & 0xFFFFFFFF for d in "XYZ")
    tmpring = regs("TMPRING_SIZE")
    unit = WAVESIZE_UNIT["gfx12" if gc is gc12 else "gfx11"]
    base = (regs("DISPATCH_SCRATCH_BASE_LO") |
            _field(gc, "COMPUTE_DISPATCH_SCRATCH_BASE_HI", "DATA", regs("DISPATCH_SCRATCH_BASE_HI")) << 32)
    return Setup(target, code_va, lanes, vgprs, user, tgid,  # type: ignore[arg-type]
                 bool(_field(gc, "COMPUTE_PGM_RSRC2", "TG_SIZE_EN", rsrc2)),
                 bool(_field(gc, "COMPUTE_PGM_RSRC2", "SCRATCH_EN", rsrc2)),
                 _field(gc, "COMPUTE_PGM_RSRC2", "TIDIG_COMP_CNT", rsrc2) + 1, lds, local, start,  # type: ignore
                 tuple(grid), base << SCRATCH_BASE_SHIFT,  # type: ignore[arg-type]
                 _field(gc, "COMPUTE_TMPRING_SIZE", "WAVES", tmpring),
                 _field(gc, "COMPUTE_TMPRING_SIZE", "WAVESIZE", tmpring) * unit, rsrc1)


def program_for(vm: AddressSpace, setup: Setup, code_cache: dict) -> Program:
    """The compiled program at the code address: decoded once per code address and shape, and rebuilt when the
    bytes there changed (another kernel loaded at the same address)."""
    start, size = vm.span(setup.code_va)
    code = vm.read_bytes(start, size, "instruction fetch")  # every dispatch: the bytes there may have changed
    key = (setup.code_va, setup.target, setup.lanes, setup.vgprs, setup.rsrc1)
    prog = code_cache.get(key)
    if prog is None or prog.code != code or prog.base != start:
        prog = Program(code, start, setup.code_va - start, setup.target, setup.lanes, setup.vgprs)
        prog.mode = FloatMode.from_rsrc1(setup.rsrc1, setup.target)
        code_cache[key] = prog
    return prog


class Launch:
    """One dispatch, ready to run: `workgroups` in linear order (x fastest); run() may be called repeatedly, on
    any thread, for any pieces of that range. `instructions` counts the wave-instructions executed so far."""

    def __init__(self, vm: AddressSpace, setup: Setup, program: Program):
        self.vm, self.setup, self.program = vm, setup, program
        gx, gy, gz = setup.grid
        self.workgroups = gx * gy * gz
        self.instructions = 0
        self._lock = threading.Lock()
        self._packed: Optional[np.ndarray] = None

    def run(self, first: int, count: int) -> None:
        if first < 0 or count < 0 or first + count > self.workgroups:
            raise ValueError(f"workgroups [{first}, {first + count}) of a {self.workgroups}-workgroup dispatch")
        n = 0
        try:
            for g in range(first, first + count):
                n += run_workgroup(self.waves(g))
        finally:
            with self._lock:
                self.instructions += n

    def waves(self, g: int) -> list[Wave]:
        """The waves of linear workgroup `g`, initialised as AMDGPUUsage "Initial Kernel Execution State" says."""
        st, prog = self.setup, self.program
        gx, gy, _ = st.grid
        wid = (st.start[0] + g % gx, st.start[1] + g // gx % gy, st.start[2] + g // (gx * gy))
        lds = np.zeros(st.lds_bytes, np.uint8)  # each workgroup gets its own LDS allocation
        packed = self._packed
        if packed is None:  # the same for every workgroup of the dispatch: computed once
            packed = self._packed = _packed_ids(st.local, st.waves * st.lanes, st.tid_dims)
        out = []
        for i in range(st.waves):
            slot = (g * st.waves + i) % st.scratch_waves if st.scratch_waves else 0
            scratch: Any
            if not st.scratch_en:
                scratch = "COMPUTE_PGM_RSRC2.SCRATCH_EN is 0"
            elif not st.scratch_wave_bytes:
                scratch = "COMPUTE_TMPRING_SIZE gives each wave 0 bytes of scratch"
            else:
                scratch = (st.scratch_base + slot * st.scratch_wave_bytes, st.scratch_wave_bytes // st.lanes)
            w = Wave(prog, self.vm, i, lds, scratch, g)
            s = w.s
            s[:len(st.user_sgprs)] = st.user_sgprs  # user SGPRs: COMPUTE_USER_DATA_0..n-1 into s0..s(n-1)
            pos = len(st.user_sgprs)
            if st.gfx12:  # architected SGPRs: workgroup ID X in TTMP9, Y and Z in TTMP7[15:0] / [31:16]
                if st.tgid[0]:  # (LLVM SIISelLowering getWorkGroupID with FeatureArchitectedSGPRs, gfx12)
                    s[TTMP0 + 9] = wid[0] & 0xFFFFFFFF
                s[TTMP0 + 7] = (wid[1] & 0xFFFF if st.tgid[1] else 0) | ((wid[2] & 0xFFFF) << 16 if st.tgid[2] else 0)
            else:  # then the enabled system SGPRs in order: workgroup ID X, Y, Z, workgroup info, wave scratch offset
                for d in range(3):
                    if st.tgid[d]:
                        s[pos] = wid[d] & 0xFFFFFFFF
                        pos += 1
            if st.tg_size:  # work-group info: waves in the group in bits 5:0, this wave's index in bits 11:6 (Mesa
                s[pos] = st.waves | i << 6  # ac_nir: num_subgroups = tg_size & 0x3f, subgroup_id = tg_size[11:6])
                pos += 1
            if st.scratch_en:  # private segment wave byte offset: this wave's slot in the scratch ring
                s[pos] = slot * st.scratch_wave_bytes & 0xFFFFFFFF
                pos += 1
            if pos > 106:
                raise DispatchError(f"{pos} user and system SGPRs: more than the 106 a wave has")
            w.v[0] = packed[i * st.lanes:(i + 1) * st.lanes]
            w.set_exec((1 << min(st.lanes, st.threads - i * st.lanes)) - 1)
            out.append(w)
        return out


_PACKED: dict[tuple, np.ndarray] = {}  # (local size, lanes in all waves, ID components) -> packed v0 values
SETUP_CACHE_SIZE = 1024  # decoded register sets kept per cache; past this the cache starts over


def _packed_ids(local: tuple[int, int, int], n: int, dims: int) -> np.ndarray:
    """v0 of every lane of a workgroup (read-only, shared): gfx11+ pack the work-item IDs X in bits 9:0, Y in
    19:10, Z in 29:20 (AMDGPUUsage, VGPR set-up for GFX90A/GFX11+), only the components TIDIG_COMP_CNT enables."""
    key = (local, n, dims)
    packed = _PACKED.get(key)
    if packed is None:
        nx, ny, _ = local
        flat = np.arange(n)
        tid = (flat % nx, flat // nx % ny, flat // (nx * ny))
        packed = np.zeros(n, np.uint32)
        for d in range(dims):
            packed |= (tid[d].astype(np.uint32) & 0x3FF) << (10 * d)
        packed.flags.writeable = False
        if len(_PACKED) >= SETUP_CACHE_SIZE:
            _PACKED.clear()
        _PACKED[key] = packed
    return packed


def isa_launch(vm: AddressSpace, regs: Callable[[str], int], grid: tuple[int, int, int], initiator: int,
               target: str, code_cache: dict, setup_cache: Optional[dict] = None,
               regs_key: Optional[tuple] = None) -> Launch:
    """Prepare a DISPATCH_DIRECT: regs(name) reads COMPUTE_<name> ("PGM_LO", "PGM_RSRC2", "USER_DATA_0", ...),
    grid is the packet's workgroup counts. The code is fetched through `vm` and decoded on first use.

    `regs_key`, with a `setup_cache` dict: a hashable snapshot of every COMPUTE_* register value except
    COMPUTE_USER_DATA_* (say the queue's (register, value) pairs). The registers are then decoded once per distinct
    snapshot, grid, initiator and target; each dispatch reads only its user SGPRs afresh (the kernel-argument
    pointer changes every launch). A register set the hardware would refuse is never cached: it is refused again."""
    key = None if setup_cache is None or regs_key is None else (regs_key, tuple(grid), initiator, target)
    setup = setup_cache.get(key) if key is not None else None
    if setup is None:
        setup = read_setup(regs, grid, initiator, target)
        if setup.vgprs > 256:
            raise DispatchError(f"COMPUTE_PGM_RSRC1 asks for {setup.vgprs} VGPRs; a wave has at most 256")
        if key is not None:
            if len(setup_cache) >= SETUP_CACHE_SIZE:
                setup_cache.clear()
            setup_cache[key] = setup
    else:  # the same registers but for the user data: only the user SGPRs can differ
        user = tuple(regs(f"USER_DATA_{i}") & 0xFFFFFFFF for i in range(len(setup.user_sgprs)))
        if user != setup.user_sgprs:
            setup = replace(setup, user_sgprs=user)
    return Launch(vm, setup, program_for(vm, setup, code_cache))
