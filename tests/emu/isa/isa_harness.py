"""A GPU without the CP process, for the ISA executor tests: numpy buffers mapped at made-up GPU addresses, a code
object loaded the way drivers/amd/program.py loads one, and the dispatch registers taken from the PM4 words the
driver's own encoder (drivers/amd/queue.py) writes, decoded back from SET_SH_REG packets."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from autogen import gc_11_0_0 as gc11
from autogen import gc_12_0_0 as gc12
from drivers.amd import pm4
from drivers.amd.queue import AMDComputeQueue
from drivers.amd.program import AMDProgram
from emu.amd.isa.dispatch import isa_launch
from emu.amd.isa.vm import AddressSpace

GC_BASE = 0x1260  # the GC segment base of gfx10-gfx12 (IP discovery), as the driver adds it to each register


class FakeGPU:
    """An address space of numpy buffers, a bump allocator and the launch path."""

    def __init__(self, target: str):
        self.target, self.vm, self.next_va = target, AddressSpace(), 0x7F00_0000_0000
        self.gc = gc12 if target.startswith("gfx12") else gc11
        self.code_cache: dict = {}
        self.launches: list = []

    def alloc(self, nbytes: int, align: int = 0x1000, gap: int = 0x1000) -> tuple[int, np.ndarray]:
        """A mapped buffer: (va, its bytes); buffers are `gap` bytes apart so overruns hit unmapped memory."""
        va = -(-self.next_va // align) * align
        arr = np.zeros(max(nbytes, 1), np.uint8)
        self.vm.map(va, arr.size, arr)
        self.next_va = va + arr.size + gap
        return va, arr

    def upload(self, a: np.ndarray) -> tuple[int, np.ndarray]:
        va, mem = self.alloc(a.nbytes)
        mem[:a.nbytes] = np.frombuffer(np.ascontiguousarray(a).tobytes(), np.uint8)
        return va, mem

    # --- what the driver's AMDProgram asks of a device ---
    name = "fake-gpu"
    node = SimpleNamespace(properties={"lds_size_in_kb": 64})

    def _buffer(self, nbytes: int, _flags: Any = None, align: int = 0x1000) -> SimpleNamespace:
        va, mem = self.alloc(nbytes, align)
        return SimpleNamespace(va=va, size=nbytes, cpu_view=lambda: memoryview(mem), numpy=lambda dt: mem.view(dt))

    def scratch_for(self, wave_bytes: int, name: str) -> Any:
        raise NotImplementedError("the harness kernels use no scratch")

    def free(self, buf: Any) -> None:
        pass

    def load(self, ck: Any) -> Any:
        """Load a compiled kernel with the driver's own loader (drivers/amd/program.py)."""
        dev = SimpleNamespace(target=self.target, name=self.name, node=self.node, alloc=self._buffer,
                              scratch_for=self.scratch_for, free=self.free)
        return AMDProgram(dev, ck)

    def registers(self, prog: Any, kernargs: int, grid: tuple) -> tuple[dict[int, int], int]:
        """The SH registers and initiator the driver's encoder writes for exec(prog, kernargs, grid)."""
        family = pm4.family_for(self.target)
        fake = SimpleNamespace(device=SimpleNamespace(gc=self.gc, gc_base=GC_BASE, target=self.target),
                               family=family)
        fixed, user_data, pointers, dispatch = AMDComputeQueue._program_registers(fake, prog)
        user_data = list(user_data)
        for at, add in pointers:
            user_data[at], user_data[at + 1] = (kernargs + add) & 0xFFFFFFFF, (kernargs + add) >> 32
        regs: dict[int, int] = {}
        initiator = None
        for p in pm4.decode(list(fixed) + user_data + list(dispatch), family=family):
            if p.name == "SET_SH_REG":
                for i in range(len(p.body) - 1):
                    regs[p.fields["reg"] + i - GC_BASE] = p.fields[f"value{i}"]
            elif p.name == "DISPATCH_DIRECT":
                initiator = p.fields["initiator"]
        return regs, initiator

    def launch(self, prog: SimpleNamespace, args: tuple, grid: tuple, rsrc2_patch: Any = None,
               regs_patch: dict | None = None) -> Any:
        """Pack the arguments, write the registers as the driver does, patch what a test asks, run the whole grid."""
        blob = prog.pack_args(*args)
        ka, mem = self.alloc(max(len(blob), 256))
        mem[:len(blob)] = np.frombuffer(blob, np.uint8)
        regs, initiator = self.registers(prog, ka, grid)
        gc = self.gc
        if rsrc2_patch:
            regs[gc.regCOMPUTE_PGM_RSRC2] = rsrc2_patch(regs[gc.regCOMPUTE_PGM_RSRC2])
        for name, v in (regs_patch or {}).items():
            regs[getattr(gc, f"regCOMPUTE_{name}")] = v
        launch = isa_launch(self.vm, lambda n: regs.get(getattr(gc, f"regCOMPUTE_{n}"), 0), grid, initiator,
                            self.target, self.code_cache)
        launch.run(0, launch.workgroups)
        self.launches.append(launch)
        return launch
