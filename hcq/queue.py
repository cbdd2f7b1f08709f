"""The queue builder every driver implements, and replay: a built queue submitted again with new values.

A builder appends 32-bit command words through its vendor's encoders. Any operand may be a `Var` instead
of a number; the builder then writes a placeholder and records where the value lives (a `Patch`). Replaying
writes the new values at exactly those places, never re-encoding, so its cost grows with what changed.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from array import array
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np

from hcq.errors import HCQError

NUMPY_PATCHES = 16  # a Var patched in more places than this is written with one numpy store


@dataclass(frozen=True)
class Var:
    """A named value a built queue takes anew at each submit (signal values, kernel arguments, addresses).

    `offset` is added to the bound value, so `Var("timeline") + 1` patches "timeline value plus one".
    """
    name: str
    offset: int = 0

    def __add__(self, k: int) -> "Var":
        return Var(self.name, self.offset + k)

    def __sub__(self, k: int) -> "Var":
        return Var(self.name, self.offset - k)


Value = Union[int, Var]


@dataclass(frozen=True)
class Patch:
    """Where a Var's value goes: a word index in one of the queue's streams, its width, and a shift."""
    var: Var
    stream: str  # "cmd" for the command words, or a vendor stream name such as "kernargs"
    index: int  # 32-bit word index in that stream
    bits: int = 32  # 32 or 64 (64 spans two words, low word first)
    shift: int = 0  # the value is stored right-shifted (addresses in 256-byte units, etc.)
    truncate: bool = False  # keep only the field's bits: one half of a value split over two 32-bit fields


class QueueBuildError(HCQError):
    """A queue was built or replayed with bad input; the message names the operation and the value."""


class HWQueue(ABC):
    """A command stream under construction or ready to (re)submit.

    Public methods return self so a queue reads as the sequence of work it does. Vendors implement the
    `_encode_*` hooks and `_submit`; values go through `_u32`/`_u64` so Vars are recorded for replay.
    """

    def __init__(self, device: Any = None) -> None:
        self.device = device
        self.streams: dict[str, array] = {"cmd": array("I")}
        self.patches: list[Patch] = []
        self.vars: set[str] = set()
        self._ops: list[tuple] = []  # what was built (name, args), formatted only when an error names it
        self.staged: list[tuple[str, bytes]] = []  # kernel-argument blocks staged at each submit
        self.timeline_value: Value | None = None  # what this queue signals on its device's timeline
        self.profiled: list[tuple[str, Any, Any]] = []

    # --- the builder API (the same for every driver) ---
    def wait(self, signal: Any, value: Value) -> "HWQueue":
        """Stall the queue until signal >= value."""
        self._op("wait", signal, value)
        self._encode_wait(signal, value)
        return self

    def signal(self, signal: Any, value: Value) -> "HWQueue":
        """Write value (and a timestamp) to signal once all earlier work in this queue completed."""
        self._op("signal", signal, value)
        if self.device is not None and signal is getattr(self.device, "_timeline", None):
            self.timeline_value = value
        self._encode_signal(signal, value)
        return self

    def timestamp(self, signal: Any) -> "HWQueue":
        """Write the GPU clock into signal's timestamp when the queue reaches this point."""
        self._op("timestamp", signal)
        self._encode_timestamp(signal)
        return self

    def exec(self, program: Any, args: Any, global_size: Sequence[Value], local_size: Sequence[int]) -> "HWQueue":
        """Launch program over global_size workgroups of local_size threads.

        args is a kernel-argument buffer, its address (or a Var for one), or the argument bytes themselves
        (program.pack_args(...)): bytes are staged in the device's argument ring at every submit and that
        memory is reused only after the device timeline shows the submission finished.
        """
        if isinstance(args, (bytes, bytearray)):
            var = Var(f"kernargs.{len(self.staged)}")
            self.staged.append((var.name, bytes(args)))
            args = var
        gs, ls = tuple(global_size), tuple(local_size)
        if len(gs) != 3 or len(ls) != 3:
            raise QueueBuildError(f"exec({getattr(program, 'name', program)}): global and local sizes take 3 "
                                  f"dimensions, got {gs} and {ls}")
        if min(ls) < 1 or min(g if isinstance(g, int) else 1 for g in gs) < 1:
            raise QueueBuildError(f"exec({getattr(program, 'name', program)}): sizes must be >= 1, got "
                                  f"global {gs} local {ls}")
        self._op("exec", program, gs, ls)
        if self._profiling():
            self._profiled(lambda: f"exec {getattr(program, 'name', program)}",
                           lambda: self._encode_exec(program, args, gs, ls))
        else:
            self._encode_exec(program, args, gs, ls)
        return self

    def copy(self, dst: Value, src: Value, size: int) -> "HWQueue":
        """Copy size bytes from GPU address src to dst."""
        if size < 0:
            raise QueueBuildError(f"copy of {size} bytes: the size must be >= 0")
        self._op("copy", dst, src, size)
        if self._profiling():
            self._profiled(lambda: f"copy {size} bytes", lambda: self._encode_copy(dst, src, size))
        else:
            self._encode_copy(dst, src, size)
        return self

    def _profiling(self) -> bool:
        return self.device is not None and getattr(self.device, "profiling", False)

    def _profiled(self, name: Callable[[], str], encode: Callable[[], None]) -> None:
        """Encode, bracketed by timestamps (the device is profiling); only then is the name formatted."""
        what = name()
        start, end = self.device.new_signal(0, name=f"prof.{what}.start"), self.device.new_signal(0, name=f"prof.{what}.end")
        self._encode_timestamp(start)
        encode()
        self._encode_timestamp(end)
        self.profiled.append((what, start, end))

    def memory_barrier(self) -> "HWQueue":
        """Earlier work on this queue finished and its writes visible to later work and to the host (drivers say
        per engine how: a partial flush plus cache actions on AMD compute, a fence-and-poll plus GCR on SDMA)."""
        self._op("memory_barrier")
        self._encode_memory_barrier()
        return self

    def submit(self, device: Any, values: dict[str, int] | None = None) -> "HWQueue":
        """Patch in `values` for every Var (all must be given) and hand the stream to the device.

        Safe from several threads: patching and handing over happen under the device's submit_lock, so each
        submission reaches its hardware queue whole, with its own values (drivers copy the words they are handed).
        """
        values = dict(values or {})
        with device.submit_lock:
            device.check()  # closed by another thread meanwhile: raise before touching its memory
            if self.staged:
                tag = self.timeline_value if not isinstance(self.timeline_value, Var) else \
                    values.get(self.timeline_value.name, 0) + self.timeline_value.offset
                if not isinstance(tag, int) or tag <= 0:
                    tag = device.timeline_value + 1  # no timeline signal here: free only after a later one
                for name, blob in self.staged:
                    values[name] = device.stage_kernargs(blob, tag)
            missing = self.vars - values.keys()
            if missing:
                raise QueueBuildError(f"submit needs values for {sorted(missing)} (this queue was built with them "
                                      "as Vars)")
            self.apply(values)
            self._submit(device)
            if self.profiled:
                device.profile_log.extend(self.profiled)
        return self

    # --- replay machinery ---
    def apply(self, values: dict[str, int]) -> None:
        """Write each Var's value into every place it was recorded."""
        self._write_values(self.streams, values)

    def bind(self, values: dict[str, int]) -> "HWQueue":
        """A new queue with this one's commands and `values` written in for every Var, as if it had been built
        with those numbers, without encoding again; this queue is left as it was.

        For work that repeats with different numbers (the tensor layer's launches): build a template once with
        Vars, bind it per submission and submit the copy. Unlike replaying the template, each bound copy is its
        own submission: nothing waits for an earlier run before its words are reused (a driver that replays
        through an indirect buffer must), and the copy carries no Vars, so drivers submit it as built.
        """
        if self.staged or self.profiled:
            raise QueueBuildError("bind(): this queue carries per-submission state (kernel-argument bytes staged at "
                                  "submit, or profiling timestamps): build the template with args as an address or a "
                                  "Var and profiling off")
        missing = self.vars - values.keys()
        if missing:
            raise QueueBuildError(f"bind needs values for {sorted(missing)} (this queue was built with them as Vars)")
        q = self._blank()
        q.streams = {name: array("I", words) for name, words in self.streams.items()}
        q._ops = list(self._ops)
        tv = self.timeline_value
        q.timeline_value = values[tv.name] + tv.offset if isinstance(tv, Var) else tv
        self._write_values(q.streams, values)
        return q

    def _blank(self) -> "HWQueue":
        """An empty builder like this one (drivers whose constructor takes more than the device override this)."""
        return type(self)(self.device)

    def _write_values(self, streams: dict[str, array], values: dict[str, int]) -> None:
        """Write each Var's value into `streams` (this queue's, or a bound copy's) wherever it was recorded."""
        if self._plan_len != len(self.patches):
            self._plan = self._patch_plan()
            self._plan_len = len(self.patches)
        for name, offset, shift, bits, truncate, stream, indices in self._plan:
            v = (values[name] + offset) >> shift  # once per distinct field, however many places it goes
            if truncate:
                v &= (1 << bits) - 1
            if not 0 <= v < 1 << bits:
                raise QueueBuildError(f"{name}={v:#x} does not fit the {bits}-bit field it patches")
            words = streams[stream]
            if type(indices) is not list:  # many places (a kernel-argument Var over a long queue): one numpy store
                view = np.frombuffer(words, np.uint32)  # dropped at once: an exported array cannot grow
                if bits == 32:
                    view[indices] = v
                else:
                    view[indices] = v & 0xFFFFFFFF
                    view[indices + 1] = v >> 32
                del view
            elif bits == 32:
                for i in indices:
                    words[i] = v
            else:
                lo, hi = v & 0xFFFFFFFF, v >> 32
                for i in indices:
                    words[i] = lo
                    words[i + 1] = hi

    _plan_len = 0
    _plan: list = []

    def _patch_plan(self) -> list:
        """The patches grouped by what they write: (var, offset, shift, bits, truncate, stream) -> word indices."""
        groups: dict[tuple, list[int]] = {}
        for p in self.patches:
            groups.setdefault((p.var.name, p.var.offset, p.shift, p.bits, p.truncate, p.stream), []).append(p.index)
        return [(*key, np.array(idx, np.intp) if len(idx) > NUMPY_PATCHES else idx) for key, idx in groups.items()]

    def _u32(self, v: Value, stream: str = "cmd", shift: int = 0) -> None:
        self._put(v, stream, 32, shift)

    def _packet(self, words: list[int], fields: dict[int, tuple[Value, int, int, bool]], stream: str = "cmd") -> None:
        """Append an encoded packet; for each Var among `fields` ({word offset: (value, bits, shift, truncate)})
        record a patch at that offset (the encoder wrote a placeholder there). Int fields are already encoded."""
        base = len(self.streams.setdefault(stream, array("I")))
        for off, (v, bits, shift, truncate) in fields.items():
            if isinstance(v, Var):
                self.patches.append(Patch(v, stream, base + off, bits, shift, truncate))
                self.vars.add(v.name)
        self.streams[stream].extend(words)

    def _u64(self, v: Value, stream: str = "cmd", shift: int = 0) -> None:
        self._put(v, stream, 64, shift)

    def _put(self, v: Value, stream: str, bits: int, shift: int) -> None:
        words = self.streams.setdefault(stream, array("I"))
        if isinstance(v, Var):
            self.patches.append(Patch(v, stream, len(words), bits, shift))
            self.vars.add(v.name)
            words.extend([0] * (bits // 32))
            return
        if not isinstance(v, int):
            raise QueueBuildError(f"{self._last_op()}: {v!r} is neither an int nor a Var")
        v >>= shift
        if not 0 <= v < 1 << bits:
            raise QueueBuildError(f"{self._last_op()}: {v:#x} does not fit {bits} bits")
        words.extend([v & 0xFFFFFFFF] if bits == 32 else [v & 0xFFFFFFFF, v >> 32])

    def _words(self, ws: Iterable[int], stream: str = "cmd") -> None:
        self.streams.setdefault(stream, array("I")).extend(ws)

    def _op(self, name: str, *args: Any) -> None:
        self._ops.append((name, args))

    def _last_op(self) -> str:
        if not self._ops:
            return "queue"
        name, args = self._ops[-1]
        return f"{name}({', '.join(getattr(a, 'name', None) or repr(a) for a in args)})"

    @property
    def cmd(self) -> array:
        return self.streams["cmd"]

    def __len__(self) -> int:
        return len(self.streams["cmd"])

    # --- vendor hooks ---
    @abstractmethod
    def _encode_wait(self, signal: Any, value: Value) -> None: ...

    @abstractmethod
    def _encode_signal(self, signal: Any, value: Value) -> None: ...

    @abstractmethod
    def _encode_timestamp(self, signal: Any) -> None: ...

    @abstractmethod
    def _encode_exec(self, program: Any, args: Any, global_size: tuple, local_size: tuple) -> None: ...

    @abstractmethod
    def _encode_copy(self, dst: Value, src: Value, size: int) -> None: ...

    @abstractmethod
    def _encode_memory_barrier(self) -> None: ...

    @abstractmethod
    def _submit(self, device: Any) -> None: ...
