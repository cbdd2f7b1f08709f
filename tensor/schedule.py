"""The scheduler: which kernels and uploads realize a set of lazy nodes, in what order, and running them.

Kernel boundaries are the nodes whose value other work reads from memory: every reduction and matmul, every
upload, the nodes asked for, and every MAX_FUSED_DEPTH-th op of a long elementwise chain. Elementwise ops, constants and views between boundaries are fused into the
kernel that reads them (so an elementwise chain is one kernel, and elementwise producers of a reduction or a
matmul are computed inside it).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from hcq.env import env_flag
from tensor.codegen import kernel_for, signature
from tensor.dtypes import itemsize
from tensor.lazy import LazyNode, walk


@dataclass
class ScheduleItem:
    """One step of a realization: an upload of host data or a kernel computing `node`."""
    kind: str  # "upload", "kernel", or "alias" (a reshape of a realized node: the same bytes, no work)
    node: LazyNode

    @property
    def device(self) -> str:
        return self.node.device

    def __repr__(self) -> str:
        if self.kind != "kernel":
            what = self.kind
        elif self.node.kind == "reduce":
            what = f"reduce {self.node.arg[0]}"
        else:
            what = "matmul" if self.node.kind == "matmul" else "elementwise"
        return f"<{self.kind} {what} {self.node.shape} {self.node.dtype} on {self.node.device}>"


def schedule(roots: list[LazyNode]) -> list[ScheduleItem]:
    """The items that realize roots, dependencies first; nothing runs. Kernels: [i for i in items if
    i.kind == "kernel"]."""
    items: list[ScheduleItem] = []
    planned: set[int] = set()
    # An explicit stack, not a nested recursive function: that one kept a reference cycle (function <-> its cell)
    # holding every planned node, so device buffers waited for the cyclic garbage collector.
    stack: list[tuple[LazyNode, str]] = [(r, "") for r in reversed(roots)]
    while stack:
        node, kind = stack.pop()
        if kind:  # its dependencies are planned: the node itself comes next
            items.append(ScheduleItem(kind, node))
            continue
        if node.realized or node.id in planned:
            continue
        planned.add(node.id)
        if node.kind == "host":
            items.append(ScheduleItem("upload", node))
        elif node.kind == "view" and node.arg[0] == "reshape":  # row-major data reshapes for free
            stack += [(node, "alias"), (node.srcs[0], "")]
        else:
            region = walk([node], stop=lambda n: n is not node and n.stored)
            stack.append((node, "kernel"))
            stack += [(n, "") for n in reversed(region) if n is not node and n.stored]
    return items


def run(items: list[ScheduleItem], devices: Any) -> None:
    """Carry out items in order on their devices; kernels are submitted, not waited for.

    Safe from several threads, also for schedules that share nodes: each item runs under its device runtime's
    lock, and an item whose node another thread realized meanwhile is skipped (its inputs are realized either
    way: by an earlier item of this schedule or by whoever realized them first).
    BAREGPU_DEBUG (a yes/no switch) prints each kernel launched to stderr.
    """
    debug = env_flag("BAREGPU_DEBUG")
    for it in items:
        node = it.node
        rt = devices[node.device]
        with rt.lock:
            if node.realized:
                continue
            _run_item(it, node, rt, debug)


def _run_item(it: ScheduleItem, node: LazyNode, rt: Any, debug: bool) -> None:
    """One item, with the runtime's lock held and the node not yet realized."""
    if it.kind == "upload":
        node.become_buffer(rt, rt.upload(node.arg))
        return
    if it.kind == "alias":
        node.become_alias(node.srcs[0])
        return
    sig, inputs = signature(node)
    built = rt.kernels.get(sig)
    if built is None:  # a new kind of kernel: build its IR, compile (or load from the disk cache) and load it
        kernel, order, grid = kernel_for(node, host=rt.target == "host")
        assert [n.id for n in order] == [n.id for n in inputs], "kernel parameters out of region order"
        built = rt.kernels[sig] = (rt.program(kernel), kernel.local_size, grid, kernel.name)
    prog, local, grid, name = built
    out = rt.alloc(node.size * itemsize(node.dtype))
    rt.launch(prog, local, [out] + [n.buffer for n in inputs], grid)
    if debug:
        print(f"baregpu: {rt.name} kernel {name} grid {grid} local {local} inputs {len(inputs)}", file=sys.stderr)
    node.become_buffer(rt, out)
