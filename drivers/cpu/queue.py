"""The CPU device's queue builder: the HCQ builder API encoded into the CPU command format."""
from __future__ import annotations

import struct
from typing import Any

from drivers.cpu.commands import LAYOUT, Op, header
from hcq.queue import HWQueue, QueueBuildError, Value, Var

_HEADERS = {op: header(op) for op in Op}


def _widths(layout: str) -> tuple[int, ...]:
    """Each operand's width in bits from a LAYOUT struct format ("<IQ6I" -> 32, 64, 32 x 6)."""
    out: list[int] = []
    count = ""
    for c in layout.lstrip("<"):
        if c.isdigit():
            count += c
            continue
        out += [64 if c == "Q" else 32] * int(count or 1)
        count = ""
    return tuple(out)


# A whole packet packed in one call: the usual case, every operand an int that fits (struct checks both).
_PACKETS = {op: struct.Struct("<I" + LAYOUT[op].lstrip("<")) for op in Op}
_WIDTHS = {op: _widths(LAYOUT[op]) for op in Op}


class CPUQueue(HWQueue):
    """Builds CPU command streams; `exec` stages kernel arguments in device memory the kernel reads."""

    def _emit(self, op: Op, *operands: Value) -> None:
        """One packet: the header, then the operands at LAYOUT's widths (64-bit ones low word first).

        A Var leaves zeros that replay patches; an int must fit its field unsigned."""
        try:
            self.streams["cmd"].frombytes(_PACKETS[op].pack(_HEADERS[op], *operands))
            return
        except struct.error:
            pass  # a Var, or a value the error below names: field by field
        words: list[int] = [_HEADERS[op]]
        fields: dict[int, tuple[Value, int, int, bool]] = {}
        for v, bits in zip(operands, _WIDTHS[op]):
            if isinstance(v, Var):
                fields[len(words)] = (v, bits, 0, False)
                words.extend((0, 0) if bits == 64 else (0,))
            elif not isinstance(v, int):
                raise QueueBuildError(f"{self._last_op()}: {v!r} is neither an int nor a Var")
            elif not 0 <= v < 1 << bits:
                raise QueueBuildError(f"{self._last_op()}: {v:#x} does not fit {bits} bits")
            elif bits == 64:
                words.extend((v & 0xFFFFFFFF, v >> 32))
            else:
                words.append(v)
        self._packet(words, fields)

    def _encode_wait(self, signal: Any, value: Value) -> None:
        self._emit(Op.WAIT, signal.va, value)

    def _encode_signal(self, signal: Any, value: Value) -> None:
        self._emit(Op.SIGNAL, signal.va, value)

    def _encode_timestamp(self, signal: Any) -> None:
        self._emit(Op.TIMESTAMP, signal.va)

    def _encode_exec(self, program: Any, args: Any, global_size: tuple, local_size: tuple) -> None:
        kernargs = getattr(args, "va", args)
        if not isinstance(kernargs, int) and not hasattr(kernargs, "name"):
            raise QueueBuildError(f"exec({program.name}): args must be a kernel-argument buffer or its address")
        self._emit(Op.EXEC, program.handle, kernargs, *global_size, *local_size)

    def _encode_copy(self, dst: Value, src: Value, size: int) -> None:
        self._emit(Op.COPY, dst, src, size)

    def _encode_memory_barrier(self) -> None:
        self.streams["cmd"].append(_HEADERS[Op.BARRIER])

    def _submit(self, device: Any) -> None:
        device.processor(self.engine).submit(self.cmd)

    engine = "compute"


class CPUCopyQueue(CPUQueue):
    """A queue on the CPU device's copy engine (its own host thread, so copies overlap compute)."""
    engine = "copy"
