"""The CPU device's queue builder: the HCQ builder API encoded into the CPU command format."""
from __future__ import annotations

from typing import Any

from drivers.cpu.commands import Op, header
from hcq.queue import HWQueue, QueueBuildError, Value


class CPUQueue(HWQueue):
    """Builds CPU command streams; `exec` stages kernel arguments in device memory the kernel reads."""

    def _encode_wait(self, signal: Any, value: Value) -> None:
        self._words([header(Op.WAIT)])
        self._u64(signal.va)
        self._u64(value)

    def _encode_signal(self, signal: Any, value: Value) -> None:
        self._words([header(Op.SIGNAL)])
        self._u64(signal.va)
        self._u64(value)

    def _encode_timestamp(self, signal: Any) -> None:
        self._words([header(Op.TIMESTAMP)])
        self._u64(signal.va)

    def _encode_exec(self, program: Any, args: Any, global_size: tuple, local_size: tuple) -> None:
        kernargs = getattr(args, "va", args)
        if not isinstance(kernargs, int) and not hasattr(kernargs, "name"):
            raise QueueBuildError(f"exec({program.name}): args must be a kernel-argument buffer or its address")
        self._words([header(Op.EXEC), program.handle])
        self._u64(kernargs)
        for g in global_size:
            self._u32(g)
        self._words(local_size)

    def _encode_copy(self, dst: Value, src: Value, size: int) -> None:
        self._words([header(Op.COPY)])
        self._u64(dst)
        self._u64(src)
        self._u64(size)

    def _encode_memory_barrier(self) -> None:
        self._words([header(Op.BARRIER)])

    def _submit(self, device: Any) -> None:
        device.processor(self.engine).submit(self.cmd)

    engine = "compute"


class CPUCopyQueue(CPUQueue):
    """A queue on the CPU device's copy engine (its own host thread, so copies overlap compute)."""
    engine = "copy"
