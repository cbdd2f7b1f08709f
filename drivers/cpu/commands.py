"""The CPU device's command format: what its host-thread "command processor" executes.

The host has no hardware command format, so the CPU device defines a small one in the same shape as the
GPU ones (a header word with opcode and length, then operands), which lets it share the queue builder,
replay patching and hang reports with every other driver.
"""
from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass
from enum import IntEnum
from typing import Sequence


class Op(IntEnum):
    """Opcodes; the header word is opcode | (payload dwords << 16)."""
    NOP = 0
    WAIT = 1  # signal va (u64), value (u64): stall until *va >= value
    SIGNAL = 2  # signal va (u64), value (u64): write value and a timestamp
    TIMESTAMP = 3  # signal va (u64): write a timestamp only
    EXEC = 4  # program id (u32), kernarg va (u64), global x/y/z (u32), local x/y/z (u32)
    COPY = 5  # dst va (u64), src va (u64), size (u64)
    BARRIER = 6  # no payload: the CPU executes in order, so this only orders memory (a fence)


PAYLOAD_DWORDS = {Op.NOP: 0, Op.WAIT: 4, Op.SIGNAL: 4, Op.TIMESTAMP: 2, Op.EXEC: 9, Op.COPY: 6, Op.BARRIER: 0}
OPERANDS = {Op.WAIT: ("signal", "value"), Op.SIGNAL: ("signal", "value"), Op.TIMESTAMP: ("signal",),
            Op.EXEC: ("program", "kernargs", "gx", "gy", "gz", "lx", "ly", "lz"),
            Op.COPY: ("dst", "src", "size"), Op.NOP: (), Op.BARRIER: ()}
LAYOUT = {Op.WAIT: "<QQ", Op.SIGNAL: "<QQ", Op.TIMESTAMP: "<Q", Op.EXEC: "<IQ6I", Op.COPY: "<QQQ",
          Op.NOP: "<", Op.BARRIER: "<"}


def header(op: Op) -> int:
    """The header word of a packet."""
    return int(op) | (PAYLOAD_DWORDS[op] << 16)


class CommandDecodeError(ValueError):
    """A malformed CPU command stream: the message names the word offset."""


@dataclass
class Command:
    """One decoded command: its offset in words, opcode and named operands."""
    offset: int
    op: Op
    fields: dict[str, int]

    def __str__(self) -> str:
        return f"{self.offset:#06x} {self.op.name}" + "".join(f" {k}={v:#x}" for k, v in self.fields.items())


# Every valid header word -> (opcode, payload words, operand names, payload struct): decoding is a lookup.
_BY_HEADER = {header(op): (op, PAYLOAD_DWORDS[op], OPERANDS[op], struct.Struct(LAYOUT[op])) for op in Op}


def decode(words: Sequence[int], start: int = 0) -> list[Command]:
    """Decode a command stream; raises CommandDecodeError at the first malformed word."""
    out, i, end = [], start, len(words)
    raw = words.tobytes() if isinstance(words, array) else struct.pack(f"<{end}I", *words)
    while i < end:
        h = words[i]
        known = _BY_HEADER.get(h)
        if known is None:
            _bad_header(h, i)
        op, n, names, layout = known
        if i + 1 + n > end:
            raise CommandDecodeError(f"word {i}: {op.name} runs past the end of the stream ({end} words)")
        out.append(Command(i, op, dict(zip(names, layout.unpack_from(raw, 4 * (i + 1))))))
        i += 1 + n
    return out


def _bad_header(h: int, i: int) -> None:
    """Raise the error that says what is wrong with header word h at word i."""
    try:
        op = Op(h & 0xFFFF)
    except ValueError:
        raise CommandDecodeError(f"word {i}: unknown opcode {h & 0xFFFF:#x} (header {h:#010x})") from None
    raise CommandDecodeError(f"word {i}: {op.name} carries {h >> 16} payload words, expected {PAYLOAD_DWORDS[op]}")


def format_commands(cmds: Sequence[Command]) -> str:
    """One line per command, for hang reports."""
    return "\n".join(str(c) for c in cmds)
