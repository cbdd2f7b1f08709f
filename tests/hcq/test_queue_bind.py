"""HWQueue.bind (a template's commands with values written in, as a queue of its own) and the CPU encoder's
one-call packet path, on the CPU device and the KFD driver over an emulated gfx1100."""
from __future__ import annotations

import ctypes
from array import array

import numpy as np
import pytest

from drivers.cpu.commands import Op, decode
from drivers.cpu.queue import CPUQueue
from hcq.queue import QueueBuildError, Var
from tests.hcq.test_contract import DEVICES, close_device, compile_for, host_buf


@pytest.fixture(params=sorted(DEVICES))
def device(request):
    dev = DEVICES[request.param]()
    yield dev
    close_device(dev)


def _copy_kernel():
    from compiler.ir import Kernel, f32
    k = Kernel("bind_copy", local_size=(32, 1, 1))
    out, a = k.buffer("out", f32, writable=True), k.buffer("a", f32)
    i = k.global_id(0)
    with k.if_(i < 32):
        out[i] = a[i] + 1.0
    return k


def test_bound_copies_run_with_their_own_values_and_leave_the_template_alone(device, tmp_path):
    from compiler import KernelCache
    prog = compile_for(device, _copy_kernel(), KernelCache(tmp_path))
    tl = device.timeline
    template = device.compute_queue().wait(tl, Var("after")).memory_barrier()
    template.exec(prog, Var("args"), (1, 1, 1), (32, 1, 1)).signal(tl, Var("value"))
    words = {name: array("I", w) for name, w in template.streams.items()}
    srcs, outs = [], []
    for n in range(3):  # three launches in flight at once: each reads its own argument block
        a, out = host_buf(device, 128), host_buf(device, 128)
        blob = prog.pack_args(out.va, a.va)  # the whole block the kernel reads (NVIDIA: its constant bank 0)
        args = host_buf(device, max(64, len(blob)))
        a.numpy(np.float32)[:] = np.arange(32, dtype=np.float32) * (n + 1)
        args.cpu_view()[:len(blob)] = blob
        v = device.next_timeline_value()
        q = template.bind({"after": v - 1, "args": args.va, "value": v})
        assert not q.vars and not q.patches and q.timeline_value == v
        q.submit(device)
        srcs.append(a)
        outs.append(out)
    device.synchronize(timeout=30)
    for n, out in enumerate(outs):
        np.testing.assert_array_equal(out.numpy(np.float32), np.arange(32, dtype=np.float32) * (n + 1) + 1)
    assert {name: array("I", w) for name, w in template.streams.items()} == words  # never patched in place
    assert template.vars == {"after", "args", "value"}


def test_bind_names_missing_values_and_values_that_do_not_fit(device):
    q = device.compute_queue().signal(device.timeline, Var("value"))
    with pytest.raises(QueueBuildError, match=r"bind needs values for \['value'\]"):
        q.bind({})
    with pytest.raises(QueueBuildError, match="does not fit the 64-bit field"):
        q.bind({"value": -1})


def test_bind_refuses_a_queue_with_per_submission_state():
    """Argument bytes are staged at each submit of the queue that carries them: a bound copy cannot share them."""
    class Prog:
        name, handle = "p", 1
    staged = CPUQueue().exec(Prog(), b"\0" * 16, (1, 1, 1), (1, 1, 1))
    with pytest.raises(QueueBuildError, match="per-submission state"):
        staged.bind({})


def test_cpu_packets_are_the_same_from_ints_and_from_bound_vars():
    """The one-call packing of int operands and the field-by-field path a Var takes encode the same words."""
    class Prog:
        name, handle = "p", 7
    built = CPUQueue().wait(_Sig(0x1000), 5).memory_barrier().exec(Prog(), 0x2000, (3, 2, 1), (64, 1, 1))
    built.copy(0x3000, 0x4000, 1 << 40).timestamp(_Sig(0x5000)).signal(_Sig(0x1000), 6)
    template = CPUQueue().wait(_Sig(0x1000), Var("w")).memory_barrier().exec(Prog(), Var("k"), (Var("gx"), 2, 1),
                                                                             (64, 1, 1))
    template.copy(Var("d"), 0x4000, 1 << 40).timestamp(_Sig(0x5000)).signal(_Sig(0x1000), Var("w") + 1)
    bound = template.bind({"w": 5, "k": 0x2000, "gx": 3, "d": 0x3000})
    assert bound.cmd == built.cmd
    ops = [c.op for c in decode(built.cmd)]
    assert ops == [Op.WAIT, Op.BARRIER, Op.EXEC, Op.COPY, Op.TIMESTAMP, Op.SIGNAL]
    exec_fields = decode(built.cmd)[2].fields
    assert (exec_fields["kernargs"], exec_fields["gx"], exec_fields["lx"], exec_fields["program"]) == (0x2000, 3, 64, 7)


@pytest.mark.parametrize("bad, message", [(-1, "does not fit 64 bits"), (1 << 64, "does not fit 64 bits"),
                                          (1.5, "neither an int nor a Var")])
def test_cpu_packets_refuse_values_that_do_not_fit(bad, message):
    with pytest.raises(QueueBuildError, match=message):
        CPUQueue().signal(_Sig(0x1000), bad)


class _Sig:
    """Just an address: what the CPU encoder reads from a signal."""

    def __init__(self, va: int):
        self.va = va


def test_grid_sizes_below_one_are_refused_before_encoding():
    class Prog:
        name, handle = "p", 1
    for gs, ls in (((0, 1, 1), (1, 1, 1)), ((1, 1, 1), (1, 0, 1))):
        with pytest.raises(QueueBuildError, match="sizes must be >= 1"):
            CPUQueue().exec(Prog(), 0x1000, gs, ls)
    q = CPUQueue().exec(Prog(), 0x1000, (Var("g"), 1, 1), (1, 1, 1))  # a Var grid is checked when bound
    assert q.vars == {"g"}


def test_host_memory_sees_the_bound_signal_value():
    from drivers.cpu.device import CPUDevice
    with CPUDevice(arena_size=1 << 22, workers=1) as dev:
        sig = dev.new_signal(0)
        template = dev.compute_queue().signal(sig, Var("v"))
        for v in (3, 9):
            template.bind({"v": v}).submit(dev)
            sig.wait(v, 10)
        assert ctypes.c_uint64.from_address(sig.host_addr).value == 9
