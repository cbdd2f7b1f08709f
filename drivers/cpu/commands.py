"""The CPU device's command format: what its host-thread "command processor" executes.

The host has no hardware command format, so the CPU device defines a small one in the same shape as the
GPU ones (a header word with opcode and length, then operands), which lets it share the queue builder,
replay patching and hang reports with every other driver.
"""
from __future__ import annotations

import struct
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


def decode(words: Sequence[int], start: int = 0) -> list[Command]:
    """Decode a command stream; raises CommandDecodeError at the first malformed word."""
    out, i = [], start
    while i < len(words):
        h = words[i]
        try:
            op = Op(h & 0xFFFF)
        except ValueError:
            raise CommandDecodeError(f"word {i}: unknown opcode {h & 0xFFFF:#x} (header {h:#010x})") from None
        n = h >> 16
        if n != PAYLOAD_DWORDS[op]:
            raise CommandDecodeError(f"word {i}: {op.name} carries {n} payload words, expected {PAYLOAD_DWORDS[op]}")
        if i + 1 + n > len(words):
            raise CommandDecodeError(f"word {i}: {op.name} runs past the end of the stream ({len(words)} words)")
        raw = struct.pack(f"<{n}I", *words[i + 1:i + 1 + n])
        out.append(Command(i, op, dict(zip(OPERANDS[op], struct.unpack(LAYOUT[op], raw)))))
        i += 1 + n
    return out


def format_commands(cmds: Sequence[Command]) -> str:
    """One line per command, for hang reports."""
    return "\n".join(str(c) for c in cmds)
