"""The CPU device's command format: what the queue builder encodes decodes back to the same operations, and a
malformed stream is refused with the word offset named."""
from __future__ import annotations

from array import array
from types import SimpleNamespace

import pytest

from drivers.cpu.commands import PAYLOAD_DWORDS, CommandDecodeError, Op, decode, header
from drivers.cpu.queue import CPUQueue
from hcq.queue import Var


def test_every_operation_round_trips_through_the_encoder_and_decoder():
    sig = SimpleNamespace(va=0x7F00_0000_1000)
    prog = SimpleNamespace(handle=7, name="k", local_size=(8, 4, 2))
    q = CPUQueue(None)
    q.wait(sig, 2 ** 40 + 5).exec(prog, 0xDEAD_BEE0, (3, 2, 1), (8, 4, 2)).copy(0x1000, 0x2000, 2 ** 33 + 1)
    q.memory_barrier().timestamp(sig).signal(sig, 9)
    cmds = decode(q.cmd)
    assert [c.op for c in cmds] == [Op.WAIT, Op.EXEC, Op.COPY, Op.BARRIER, Op.TIMESTAMP, Op.SIGNAL]
    assert cmds[0].fields == {"signal": sig.va, "value": 2 ** 40 + 5}
    assert cmds[1].fields == {"program": 7, "kernargs": 0xDEAD_BEE0, "gx": 3, "gy": 2, "gz": 1, "lx": 8, "ly": 4,
                              "lz": 2}
    assert cmds[2].fields == {"dst": 0x1000, "src": 0x2000, "size": 2 ** 33 + 1}
    assert cmds[3].fields == {} and cmds[4].fields == {"signal": sig.va}
    assert cmds[5].fields == {"signal": sig.va, "value": 9}
    offsets = [c.offset for c in cmds]
    assert offsets == [sum(1 + PAYLOAD_DWORDS[c.op] for c in cmds[:k]) for k in range(len(cmds))]
    assert decode(list(q.cmd)) == cmds, "a plain list of words decodes the same as the array"


def test_patched_values_decode_where_the_vars_were():
    sig = SimpleNamespace(va=0x5000)
    q = CPUQueue(None).signal(sig, Var("v")).copy(Var("dst"), 0x10, 4)
    q.apply({"v": 2 ** 35 + 3, "dst": 0xABC0})
    sig_cmd, copy_cmd = decode(q.cmd)
    assert sig_cmd.fields["value"] == 2 ** 35 + 3 and copy_cmd.fields["dst"] == 0xABC0


@pytest.mark.parametrize("words,message", [
    ([0x0009], r"word 0: unknown opcode 0x9"),
    ([header(Op.NOP), header(Op.SIGNAL) + (1 << 16)], r"word 1: SIGNAL carries 5 payload words, expected 4"),
    ([header(Op.COPY), 1, 2], r"word 0: COPY runs past the end of the stream \(3 words\)"),
])
def test_malformed_streams_name_the_word(words, message):
    with pytest.raises(CommandDecodeError, match=message):
        decode(array("I", words))
