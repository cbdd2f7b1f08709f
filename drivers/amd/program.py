"""AMD programs: a code object loaded into GPU memory, its kernel descriptor, and what a dispatch needs."""
from __future__ import annotations

from typing import Any

from compiler.elf import CodeObject
from hcq.buffer import MemFlags


class AMDProgram:
    """A kernel's code object, loaded the way a loader does it: PT_LOAD segments copied at their addresses."""

    def __init__(self, device: Any, compiled: Any):
        if compiled.target != device.target:
            raise ValueError(f"{compiled.name} was built for {compiled.target}, but {device.name} is a {device.target}: "
                             f"compile it for {device.target}")
        self.name, self.compiled = compiled.name, compiled
        co = CodeObject(compiled.binary, compiled.name)
        image = co.image()
        self.image = device.alloc(len(image), MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE | MemFlags.EXECUTABLE,
                                  align=0x1000)
        self.image.cpu_view()[:len(image)] = image
        self.descriptor = compiled.descriptor
        self.descriptor_va = self.image.va + co.symbols[f"{self.name}.kd"].value
        self.code_va = self.descriptor_va + self.descriptor.kernel_code_entry_byte_offset
        if self.code_va % 256:
            raise ValueError(f"{self.name}: kernel code at {self.code_va:#x} is not 256-byte aligned (COMPUTE_PGM_LO "
                             "holds address bits 39:8)")
        self.local_size = compiled.local_size
        self.device = device
        self.dispatch_setup: dict[Any, Any] = {}  # the queue's encoded register block for this program, built once

    def pack_args(self, *values: int) -> bytes:
        return self.compiled.pack_args(*values)

    def free(self) -> None:
        self.device.free(self.image)
