"""Kernel IR to LLVM IR text, for the host (x86-64), AMDGPU and NVPTX.

Targets differ in few places, so a target is a small class of hooks over one shared lowering: how the
kernel receives its parameters, where special indices come from, where variables and local arrays live,
how a barrier looks, and what the module carries around the function.

The host has no threads of its own: its kernel loops over workgroups and, inside each, runs the workgroup's
threads one after another. A body with barriers is cut at the barriers into phases that each loop over all
threads; uniform control flow around barriers (validated) stays outside the thread loops, and so do loops with
uniform bounds inside a phase, around the innermost (x) thread loop, which LLVM then vectorizes. A variable used
in more than one of these thread loops becomes an array with one slot per thread.

Names: user names are identifiers without dots, and every name this module makes has a dot in it
(`%.t3`, `.loop4`, `%.var.acc`), so the two never collide.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from compiler import host_math, ir
from compiler.kernargs import arg_layout
from compiler.validate import validate

LLTYPE = {"float32": "float", "float16": "half", "int32": "i32", "bool": "i1"}
ALIGN = {"float32": 4, "float16": 2, "int32": 4, "bool": 1}
SUFFIX = {"float": "f32", "half": "f16", "i32": "i32"}
AMD_TARGETS = ("gfx1100", "gfx1201", "gfx942")
NV_TARGETS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")


def _lt(d: ir.DType) -> str:
    return LLTYPE[d.name]


LOG2E, LN2 = 1.4426950408889634, 0.6931471805599453
# GPU targets compute exp, log and cos from their native exp2, log2 and sin: op -> (via, scale, offset), then log's
# result times ln 2; the host has its own accurate definitions of all three (compiler/host_math).
GPU_VIA = {"exp": ("exp2", LOG2E, 0.0), "log": ("log2", 1.0, 0.0), "cos": ("sin", 1.0, np.pi / 2)}


def _fconst(v: float, ty: str) -> str:
    """A float or half constant, as LLVM spells it."""
    return _const(ir.Const(v, ir.f32 if ty == "float" else ir.f16))


def _const(c: ir.Const) -> str:
    if c.dtype.kind == "f":
        # LLVM spells float constants as the hex of a double holding exactly the narrower value.
        narrow = {32: np.float32, 16: np.float16}[c.dtype.bits](c.value)
        return "0x%016X" % struct.unpack("<Q", struct.pack("<d", float(narrow)))[0]
    if c.dtype.kind == "b":
        return "true" if c.value else "false"
    return str(int(c.value))


def contains_barrier(body: list) -> bool:
    for s in body:
        if isinstance(s, ir.Barrier):
            return True
        if isinstance(s, (ir.If, ir.Range)) and contains_barrier(s.body):
            return True
    return False


class Renderer:
    """Shared expression and statement lowering for one kernel; subclasses are targets."""

    private_as = 0  # address space number of private variables (allocas)
    global_space = ""  # address space suffix of buffer pointers
    local_space = ""  # address space suffix of local arrays

    def __init__(self, k: ir.Kernel):
        self.k = k
        self.lines: list[str] = []
        self.entry: list[str] = []
        self.decls: set[str] = set()
        self.n = 0
        self.params: dict[int, str] = {}
        self.var_ptrs: dict[int, str] = {}
        self.alloca_space = f" addrspace({self.private_as})" if self.private_as else ""

    def tmp(self) -> str:
        self.n += 1
        return f"%.t{self.n}"

    def label(self, base: str) -> str:
        self.n += 1
        return f".{base}{self.n}"

    def emit(self, line: str) -> str:
        """Append an instruction; an `X = ...` line's X is returned so callers can chain."""
        self.lines.append("  " + line)
        return line.split(" = ", 1)[0] if " = " in line else ""

    def block(self, name: str) -> None:
        self.lines.append(f"{name}:")

    def declare(self, decl: str) -> None:
        self.decls.add(decl)

    def call(self, ret: str, fn: str, *args: str, flags: str = "") -> str:
        """Call an intrinsic or runtime function, declaring it once."""
        arg_types = ", ".join(a.split(" ", 1)[0] for a in args)
        self.declare(f"declare {ret} @{fn}({arg_types})")
        t = self.tmp()
        self.emit(f"{t} = call {flags + ' ' if flags else ''}{ret} @{fn}({', '.join(args)})")
        return t

    # --- target hooks ---
    def special(self, kind: str, dim: int) -> str:
        """The workgroup id ('wg') or local id ('lid') in dimension dim, as an i32 value."""
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def var_ptr(self, v: ir.Var) -> str:
        """A pointer to variable v's storage (default: one private slot, allocated at entry)."""
        if id(v) not in self.var_ptrs:
            p = f"%.var.{v.name}"
            where = f", addrspace({self.private_as})" if self.private_as else ""
            self.entry.append(f"  {p} = alloca {_lt(v.dtype)}, align 4{where}")
            self.var_ptrs[id(v)] = p
        return self.var_ptrs[id(v)]

    def local_base(self, m: ir.Memory) -> str:
        """The address of local array m (default: a module global in the local address space)."""
        return f"@{self.k.name}.lds.{m.name}"

    def unary_intrinsic(self, op: str, ty: str, a: str) -> str:
        """exp2, log2, sqrt, sin of a float value; exp, log and cos through exp2, log2 and sin (GPU targets)."""
        if op in GPU_VIA:
            via, scale, offset = GPU_VIA[op]
            x = self.emit(f"{self.tmp()} = fmul {ty} {a}, {_fconst(scale, ty)}") if scale != 1.0 else a
            x = self.emit(f"{self.tmp()} = fadd {ty} {x}, {_fconst(offset, ty)}") if offset else x
            r = self.unary_intrinsic(via, ty, x)
            return self.emit(f"{self.tmp()} = fmul {ty} {r}, {_fconst(LN2, ty)}") if op == "log" else r
        return self.call(ty, f"llvm.{op}.{SUFFIX[ty]}", f"{ty} {a}")

    # --- expressions ---
    def expr(self, e: ir.Expr) -> str:
        if isinstance(e, ir.Const):
            return _const(e)
        if isinstance(e, ir.Special):
            return str(self.k.local_size[e.dim]) if e.kind == "lsize" else self.special(e.kind, e.dim)
        if isinstance(e, ir.ScalarParam):
            return self.params[e.index]
        if isinstance(e, ir.VarRef):
            t = self.tmp()
            return self.emit(f"{t} = load {_lt(e.dtype)}, ptr{self.alloca_space} {self.var_ptr(e.var)}")
        if isinstance(e, ir.Load):
            ptr = self.memory_ptr(e.mem, self.mem_index(e.index))
            t = self.tmp()
            return self.emit(f"{t} = load {_lt(e.dtype)}, {ptr}, align {ALIGN[e.dtype.name]}")
        if isinstance(e, ir.BinOp):
            return self.binop(e)
        if isinstance(e, ir.UnOp):
            return self.unop(e)
        if isinstance(e, ir.Cast):
            return self.cast(self.expr(e.a), e.a.dtype, e.dtype)
        if isinstance(e, ir.MulAdd):  # llvm.fmuladd: fused where the target has FMA, else multiply then add
            ty = _lt(e.dtype)
            a, b, c = self.expr(e.a), self.expr(e.b), self.expr(e.c)
            return self.call(ty, f"llvm.fmuladd.{SUFFIX[ty]}", f"{ty} {a}", f"{ty} {b}", f"{ty} {c}")
        if isinstance(e, ir.Where):
            c, a, b = self.expr(e.cond), self.expr(e.a), self.expr(e.b)
            t = self.tmp()
            return self.emit(f"{t} = select i1 {c}, {_lt(e.dtype)} {a}, {_lt(e.dtype)} {b}")
        raise ir.IRError(f"cannot render {e!r}")

    def mem_index(self, e: ir.Expr) -> str:
        """An element index (an int32 value) for memory_ptr; a hook so the host can mark its arithmetic."""
        return self.expr(e)

    def memory_ptr(self, m: ir.Memory, index: str) -> str:
        """`ptr<space> %p` for element `index` (an int32 value) of m."""
        i64, t = self.tmp(), self.tmp()
        self.emit(f"{i64} = sext i32 {index} to i64")
        if m.space == "global":
            self.emit(f"{t} = getelementptr inbounds {_lt(m.dtype)}, ptr{self.global_space} %{m.name}, i64 {i64}")
            return f"ptr{self.global_space} {t}"
        self.emit(f"{t} = getelementptr inbounds [{m.size} x {_lt(m.dtype)}], ptr{self.local_space} {self.local_base(m)}, "
                  f"i64 0, i64 {i64}")
        return f"ptr{self.local_space} {t}"

    def unop(self, e: ir.UnOp) -> str:
        a, ty, t = self.expr(e.a), _lt(e.dtype), self.tmp()
        if e.op == "neg":
            return self.emit(f"{t} = fneg {ty} {a}" if e.dtype.kind == "f" else f"{t} = sub {ty} 0, {a}")
        if e.op == "not":
            return self.emit(f"{t} = xor {ty} {a}, {'true' if ty == 'i1' else '-1'}")
        return self.unary_intrinsic(e.op, ty, a)

    def binop(self, e: ir.BinOp) -> str:
        a, b = self.expr(e.a), self.expr(e.b)
        ty, f = _lt(e.a.dtype), e.a.dtype.kind == "f"
        simple = {"add": ("fadd", "add"), "sub": ("fsub", "sub"), "mul": ("fmul", "mul"), "div": ("fdiv", None),
                  "mod": ("frem", None), "and": (None, "and"), "or": (None, "or"), "xor": (None, "xor")}
        cmp = {"lt": ("olt", "slt"), "le": ("ole", "sle"), "eq": ("oeq", "eq"), "ne": ("une", "ne")}
        if e.op in ("idiv", "mod") and not f:
            return self.int_division(e.op, a, b)
        if e.op in simple:
            t = self.tmp()
            return self.emit(f"{t} = {simple[e.op][0 if f else 1]} {ty} {a}, {b}")
        if e.op in cmp:
            t = self.tmp()
            return self.emit(f"{t} = {'fcmp' if f else 'icmp'} {cmp[e.op][0 if f else 1]} {ty} {a}, {b}")
        if e.op in ("max", "min"):
            fn = f"llvm.{e.op}num.{SUFFIX[ty]}" if f else f"llvm.s{e.op}.i32"
            return self.call(ty, fn, f"{ty} {a}", f"{ty} {b}")
        raise ir.IRError(f"unknown binary op {e.op}")

    def int_division(self, op: str, a: str, b: str) -> str:
        """sdiv/srem with the divisor made safe: 0 and -1 (INT_MIN / -1 overflows) would trap on x86."""
        z, m1, bad, d = self.tmp(), self.tmp(), self.tmp(), self.tmp()
        self.emit(f"{z} = icmp eq i32 {b}, 0")
        self.emit(f"{m1} = icmp eq i32 {b}, -1")
        self.emit(f"{bad} = or i1 {z}, {m1}")
        self.emit(f"{d} = select i1 {bad}, i32 1, i32 {b}")
        if op == "mod":
            t = self.tmp()
            return self.emit(f"{t} = srem i32 {a}, {d}")  # x % -1 is 0, which x % 1 gives
        q, neg, t = self.tmp(), self.tmp(), self.tmp()
        self.emit(f"{q} = sdiv i32 {a}, {d}")
        self.emit(f"{neg} = sub i32 0, {a}")
        return self.emit(f"{t} = select i1 {m1}, i32 {neg}, i32 {q}")

    def cast(self, v: str, src: ir.DType, dst: ir.DType) -> str:
        if src == dst:
            return v
        s, d = _lt(src), _lt(dst)
        if src.kind == "f" and dst.kind == "i":
            # Saturating: out-of-range values clamp and NaN becomes 0, where fptosi would give poison.
            return self.call(d, f"llvm.fptosi.sat.{d}.{SUFFIX[s]}", f"{s} {v}")
        t = self.tmp()
        if dst.kind == "b":
            return self.emit(f"{t} = fcmp une {s} {v}, 0.0" if src.kind == "f" else f"{t} = icmp ne {s} {v}, 0")
        if src.kind == "b":
            return self.emit(f"{t} = uitofp i1 {v} to {d}" if dst.kind == "f" else f"{t} = zext i1 {v} to {d}")
        if src.kind == "f":
            return self.emit(f"{t} = {'fpext' if dst.bits > src.bits else 'fptrunc'} {s} {v} to {d}")
        return self.emit(f"{t} = sitofp {s} {v} to {d}")

    # --- statements ---
    def stmts(self, body: list) -> None:
        for s in body:
            if isinstance(s, ir.Store):
                idx, val = self.mem_index(s.index), self.expr(s.value)
                self.emit(f"store {_lt(s.value.dtype)} {val}, {self.memory_ptr(s.mem, idx)}, "
                          f"align {ALIGN[s.value.dtype.name]}")
            elif isinstance(s, ir.Assign):
                val = self.expr(s.value)
                self.emit(f"store {_lt(s.var.dtype)} {val}, ptr{self.alloca_space} {self.var_ptr(s.var)}")
            elif isinstance(s, ir.If):
                self.if_(s.cond, lambda s=s: self.stmts(s.body))
            elif isinstance(s, ir.Range):
                self.range(s, lambda s=s: self.stmts(s.body))
            elif isinstance(s, ir.Barrier):
                self.barrier()

    def if_(self, cond: ir.Expr, body: Callable[[], None]) -> None:
        c = self.expr(cond)
        then, done = self.label("then"), self.label("endif")
        self.emit(f"br i1 {c}, label %{then}, label %{done}")
        self.block(then)
        body()
        self.emit(f"br label %{done}")
        self.block(done)

    def range(self, s: ir.Range, body: Callable[[], None]) -> None:
        start, end = self.expr(s.start), self.expr(s.end)  # both evaluated once, before the loop
        ptr = self.var_ptr(s.var)
        self.emit(f"store i32 {start}, ptr{self.alloca_space} {ptr}")
        self.counted_loop(ptr, end, s.step, body, self.alloca_space)

    def counted_loop(self, ptr: str, end: str, step: int, body: Callable[[], None], space: str = "") -> None:
        """while (*ptr < end) { body(); *ptr += step; } with *ptr already set."""
        head, inner, done = self.label("loop"), self.label("body"), self.label("endloop")
        self.emit(f"br label %{head}")
        self.block(head)
        i, c = self.tmp(), self.tmp()
        self.emit(f"{i} = load i32, ptr{space} {ptr}")
        self.emit(f"{c} = icmp slt i32 {i}, {end}")
        self.emit(f"br i1 {c}, label %{inner}, label %{done}")
        self.block(inner)
        body()
        j, nxt = self.tmp(), self.tmp()
        self.emit(f"{j} = load i32, ptr{space} {ptr}")
        self.emit(f"{nxt} = add i32 {j}, {step}")
        self.emit(f"store i32 {nxt}, ptr{space} {ptr}")
        self.emit(f"br label %{head}")
        self.block(done)

    def function(self, signature: str, attrs: str = "") -> list[str]:
        return [f"define {signature}{attrs} {{", ".entry:", *self.entry, *self.lines, "  ret void", "}"]

    def render(self) -> str:
        raise NotImplementedError


class GPURenderer(Renderer):
    """One thread's view, shared by AMDGPU and NVPTX: parameters are function arguments, local arrays module
    globals in addrspace(3), specials from intrinsics."""

    global_space = " addrspace(1)"
    local_space = " addrspace(3)"
    calling_convention = ""

    def arguments(self) -> str:
        out = []
        for p in self.k.params:
            if isinstance(p, ir.Memory):
                # No noalias: buffers may alias (in-place kernels); readonly only promises we do not write through it.
                ro = "" if p.writable else " readonly"
                out.append(f"ptr addrspace(1){ro} align {ALIGN[p.dtype.name]} %{p.name}")
            else:
                out.append(f"i32 %{p.name}")
                self.params[p.index] = f"%{p.name}"
        return ", ".join(out)

    def module_tail(self) -> list[str]:
        """Attributes and metadata after the function."""
        return []

    def render(self) -> str:
        k = self.k
        args = self.arguments()
        self.stmts(k.body)
        lds = [f"@{k.name}.lds.{m.name} = internal addrspace(3) global [{m.size} x {_lt(m.dtype)}] poison, align 16"
               for m in k.locals]
        fn = self.function(f"{self.calling_convention} void @{k.name}({args}) #0", self.function_metadata())
        return "\n".join(lds + sorted(self.decls) + fn + self.module_tail()) + "\n"

    def function_metadata(self) -> str:
        return ""


class AMDGPURenderer(GPURenderer):
    """amdgpu_kernel with code object v5 metadata; private variables in addrspace(5)."""

    private_as = 5
    calling_convention = "amdgpu_kernel"

    def special(self, kind: str, dim: int) -> str:
        return self.call("i32", f"llvm.amdgcn.{'workgroup' if kind == 'wg' else 'workitem'}.id.{'xyz'[dim]}")

    def barrier(self) -> None:
        # The fences make LDS and global writes before the barrier visible to the workgroup after it.
        self.emit('fence syncscope("workgroup") release')
        self.declare("declare void @llvm.amdgcn.s.barrier()")
        self.emit("call void @llvm.amdgcn.s.barrier()")
        self.emit('fence syncscope("workgroup") acquire')

    def function_metadata(self) -> str:
        return " !reqd_work_group_size !1"

    def module_tail(self) -> list[str]:
        x, y, z = self.k.local_size
        return [f'attributes #0 = {{ "amdgpu-flat-work-group-size"="1,{self.k.threads}" '
                '"uniform-work-group-size"="true" nounwind }',
                "!llvm.module.flags = !{!0}",
                '!0 = !{i32 1, !"amdhsa_code_object_version", i32 500}',
                f"!1 = !{{i32 {x}, i32 {y}, i32 {z}}}"]


class NVPTXRenderer(GPURenderer):
    """ptx_kernel; shared memory in addrspace(3); sin and log2 are the hardware approximations."""

    calling_convention = "ptx_kernel"

    def special(self, kind: str, dim: int) -> str:
        return self.call("i32", f"llvm.nvvm.read.ptx.sreg.{'ctaid' if kind == 'wg' else 'tid'}.{'xyz'[dim]}")

    def barrier(self) -> None:
        # bar.sync 0 orders shared and global memory among the CTA's threads; our validator keeps it non-divergent.
        self.declare("declare void @llvm.nvvm.barrier.cta.sync.aligned.all(i32)")
        self.emit("call void @llvm.nvvm.barrier.cta.sync.aligned.all(i32 0)")

    def unary_intrinsic(self, op: str, ty: str, a: str) -> str:
        # NVPTX selects llvm.sin only as sin.approx (with afn) and has no log2 lowering at all.
        if op == "sin":
            return self.call(ty, f"llvm.sin.{SUFFIX[ty]}", f"{ty} {a}", flags="afn")
        if op == "log2":
            f = a if ty == "float" else self.emit(f"{self.tmp()} = fpext half {a} to float")
            r = self.call("float", "llvm.nvvm.lg2.approx.f", f"float {f}")
            return r if ty == "float" else self.emit(f"{self.tmp()} = fptrunc float {r} to half")
        return super().unary_intrinsic(op, ty, a)

    def module_tail(self) -> list[str]:
        x, y, z = self.k.local_size
        return [f'attributes #0 = {{ "nvvm.reqntid"="{x},{y},{z}" nounwind }}']


# --- the host target ---

@dataclass
class Phase:
    """Statements between barriers: run by every thread of the workgroup in turn."""
    stmts: list


@dataclass
class UniformIf:
    """An if around a barrier: its (uniform) condition is evaluated once per workgroup."""
    stmt: ir.If
    items: list


@dataclass
class UniformRange:
    """A loop around a barrier: its bounds and counter are per workgroup."""
    stmt: ir.Range
    items: list


PhaseItem = Union[Phase, UniformIf, UniformRange]


def split_phases(body: list) -> list[PhaseItem]:
    """Cut a body at its barriers: per-thread phases, and the uniform control flow around barriers."""
    items: list[PhaseItem] = []
    group: list = []

    def flush() -> None:
        if group:
            items.append(Phase(list(group)))
            group.clear()
    for s in body:
        if isinstance(s, ir.Barrier):
            flush()
        elif isinstance(s, ir.If) and contains_barrier(s.body):
            flush()
            items.append(UniformIf(s, split_phases(s.body)))
        elif isinstance(s, ir.Range) and contains_barrier(s.body):
            flush()
            items.append(UniformRange(s, split_phases(s.body)))
        else:
            group.append(s)
    flush()
    return items


@dataclass
class RowRange:
    """A loop with uniform bounds at the top level of a phase, run around the innermost (x) thread loop."""
    stmt: ir.Range
    items: list


@dataclass
class RowIf:
    """An if with a uniform condition at the top level of a phase, taken once around the x thread loop."""
    stmt: ir.If
    items: list


RowItem = Union[list, RowRange, RowIf]


def is_uniform(e: ir.Expr, uniform_vars: frozenset = frozenset()) -> bool:
    """True when e is the same in every thread of a workgroup by construction: constants, workgroup ids, kernel
    parameters and counters of uniform loops, combined by arithmetic (no local ids, other variables or loads)."""
    return all(isinstance(x, (ir.Const, ir.ScalarParam, ir.BinOp, ir.UnOp, ir.Cast, ir.Where, ir.MulAdd))
               or (isinstance(x, ir.Special) and x.kind != "lid")
               or (isinstance(x, ir.VarRef) and x.var in uniform_vars) for x in ir.subexprs(e))


def uniform_counters(items: list[PhaseItem]) -> frozenset:
    """The counters of the loops around barriers: the same in every thread wherever they can be read."""
    out: set[ir.Var] = set()
    for it in items:
        if isinstance(it, UniformRange):
            out.add(it.stmt.var)
        if not isinstance(it, Phase):
            out |= uniform_counters(it.items)
    return frozenset(out)


def split_rows(stmts: list, uniform_vars: frozenset = frozenset()) -> list[RowItem]:
    """A phase's statements as runs of statements (each looped over x) and the uniform loops and ifs around them.

    Threads of one phase are independent (sharing data without a barrier is a race on any GPU), so their order is
    free: running a uniform loop outside the x loop rather than inside it makes the x loop innermost, where LLVM
    vectorizes across threads and keeps a row of per-thread accumulators in registers for the whole loop (the
    register-blocked matmul: neighbouring threads read neighbouring words); a uniform if is decided once per row."""
    items: list[RowItem] = []
    run: list = []
    for st in stmts:
        if isinstance(st, ir.Range) and is_uniform(st.start, uniform_vars) and is_uniform(st.end, uniform_vars):
            if run:
                items.append(run)
                run = []
            items.append(RowRange(st, split_rows(st.body, uniform_vars | {st.var})))
        elif isinstance(st, ir.If) and is_uniform(st.cond, uniform_vars):
            if run:
                items.append(run)
                run = []
            items.append(RowIf(st, split_rows(st.body, uniform_vars)))
        else:
            run.append(st)
    if run:
        items.append(run)
    return items


def _row_runs(items: list[RowItem]) -> list[list]:
    """Every run of statements in a phase's row items, nested loops and ifs included."""
    out: list[list] = []
    for it in items:
        out += _row_runs(it.items) if isinstance(it, (RowRange, RowIf)) else [it]
    return out


def _row_loops(items: list[RowItem]) -> list[ir.Var]:
    out: list[ir.Var] = []
    for it in items:
        if isinstance(it, RowRange):
            out += [it.stmt.var] + _row_loops(it.items)
        elif isinstance(it, RowIf):
            out += _row_loops(it.items)
    return out


def _vars_in(stmts: list) -> set[ir.Var]:
    found: set[ir.Var] = set()
    for s in stmts:
        for e in ir.stmt_exprs(s):
            found |= {x.var for x in ir.subexprs(e) if isinstance(x, ir.VarRef)}
        if isinstance(s, ir.Assign):
            found.add(s.var)
        if isinstance(s, (ir.If, ir.Range)):
            found |= _vars_in(s.body)
        if isinstance(s, ir.Range):
            found.add(s.var)
    return found


def per_thread_vars(items: list[PhaseItem]) -> set[ir.Var]:
    """Variables that need a slot per thread: used in more than one phase, or in a phase and in uniform code.
    Loop counters of uniform loops are never among them: they live once per workgroup."""
    contexts: dict[ir.Var, set[int]] = {}
    uniform_loops: set[ir.Var] = set()
    counters = uniform_counters(items)
    phase_no = [0]

    def scan(items: list[PhaseItem]) -> None:
        for it in items:
            if isinstance(it, Phase):
                rows = split_rows(it.stmts, counters)
                uniform_loops.update(_row_loops(rows))  # a row loop's counter is one per row of threads
                for run in _row_runs(rows):  # each run of statements is its own x loop
                    phase_no[0] += 1
                    for v in _vars_in(run):
                        contexts.setdefault(v, set()).add(phase_no[0])
            else:
                exprs = [it.stmt.cond] if isinstance(it, UniformIf) else [it.stmt.start, it.stmt.end]
                for e in exprs:
                    for x in ir.subexprs(e):
                        if isinstance(x, ir.VarRef):
                            contexts.setdefault(x.var, set()).add(0)  # 0: uniform code
                if isinstance(it, UniformRange):
                    uniform_loops.add(it.stmt.var)
                scan(it.items)
    scan(items)
    return {v for v, c in contexts.items() if len(c) > 1 and v not in uniform_loops}


class HostRenderer(Renderer):
    """`void name(ptr args, i32 gx, i32 gy, i32 gz, i64 first, i64 count)` runs `count` workgroups of the gx x gy x gz
    grid on the calling CPU thread, from linear workgroup index `first` on (index = (z * gy + y) * gx + x, x fastest),
    so several threads can each run a slice of one grid; the caller keeps first + count within the grid. args is the
    kernel-argument block in the layout of compiler.kernargs (the AMDGPU one), buffers as 64-bit addresses."""

    def __init__(self, k: ir.Kernel):
        super().__init__(k)
        self.phases = split_phases(k.body)
        self.per_thread = per_thread_vars(self.phases)
        self.uniform_vars = uniform_counters(self.phases)
        self.in_thread = False
        for kind in ("wg", "lid"):
            for d in range(3):
                self.entry.append(f"  %.{kind}{d} = alloca i32, align 4")

    def special(self, kind: str, dim: int) -> str:
        if kind == "lid" and not self.in_thread:
            raise ir.IRError(f"{self.k.name}: local id read in uniform code around a barrier on the host target")
        t = self.tmp()
        return self.emit(f"{t} = load i32, ptr %.{kind}{dim}")

    def flat_lid(self) -> str:
        x, y, z = (self.special("lid", d) for d in range(3))
        lx, ly = self.k.local_size[0], self.k.local_size[1]
        t1, t2, t3, t4 = self.tmp(), self.tmp(), self.tmp(), self.tmp()
        self.emit(f"{t1} = mul i32 {z}, {ly}")
        self.emit(f"{t2} = add i32 {t1}, {y}")
        self.emit(f"{t3} = mul i32 {t2}, {lx}")
        return self.emit(f"{t4} = add i32 {t3}, {x}")

    def var_ptr(self, v: ir.Var) -> str:
        if v not in self.per_thread:
            return super().var_ptr(v)
        threads, ty = self.k.threads, _lt(v.dtype)
        if id(v) not in self.var_ptrs:
            self.var_ptrs[id(v)] = f"%.var.{v.name}"
            self.entry.append(f"  %.var.{v.name} = alloca [{threads} x {ty}], align 16")
        # Uniform code reads thread 0's copy: the validator made every value it reads the same in all threads.
        idx = self.flat_lid() if self.in_thread else "0"
        i64, t = self.tmp(), self.tmp()
        self.emit(f"{i64} = sext i32 {idx} to i64")
        return self.emit(f"{t} = getelementptr inbounds [{threads} x {ty}], ptr {self.var_ptrs[id(v)]}, i64 0, i64 {i64}")

    def local_base(self, m: ir.Memory) -> str:
        return f"%.lds.{m.name}"

    def mem_index(self, e: ir.Expr) -> str:
        """The index with its sums and products marked nsw (no signed wrap): LLVM then sees thread x's addresses as
        consecutive (the sign extension folds into them) and vectorizes them as loads and stores, not gathers. A
        valid index never overflows int32, so the flag only drops a wrapped meaning no valid access has."""
        if isinstance(e, ir.BinOp) and e.op in ("add", "sub", "mul") and e.dtype == ir.i32:
            a, b = self.mem_index(e.a), self.mem_index(e.b)
            return self.emit(f"{self.tmp()} = {e.op} nsw i32 {a}, {b}")
        return self.expr(e)

    def barrier(self) -> None:
        raise ir.IRError(f"{self.k.name}: a barrier inside divergent control flow cannot run on the host target")

    def unary_intrinsic(self, op: str, ty: str, a: str) -> str:
        if ty == "half":
            # Computed in float and rounded once, as numpy does; no half-precision libm calls needed.
            f = self.emit(f"{self.tmp()} = fpext half {a} to float")
            r = self.unary_intrinsic(op, "float", f)
            return self.emit(f"{self.tmp()} = fptrunc float {r} to half")
        if op in host_math.FUNCTIONS:
            # Our own branch-free definitions, which the loop vectorizer widens; llvm.exp2 etc. become libm calls.
            self.declare(host_math.definition(op))
            for decl in host_math.DECLARATIONS:
                self.declare(decl)
            return self.emit(f"{self.tmp()} = call float @.host.{op}.f32(float {a})")  # defined, so not declared
        return super().unary_intrinsic(op, ty, a)

    def counted(self, ptr: str, count: str, body: Callable[[], None]) -> None:
        """for *ptr in 0..count: body()"""
        self.emit(f"store i32 0, ptr {ptr}")
        self.counted_loop(ptr, count, 1, body)

    def x_loop(self, stmts: list) -> None:
        def run() -> None:
            self.in_thread = True
            self.stmts(stmts)
            self.in_thread = False
        self.counted("%.lid0", str(self.k.local_size[0]), run)

    def row(self, items: list[RowItem]) -> None:
        for it in items:
            if isinstance(it, RowRange):
                self.range(it.stmt, lambda it=it: self.row(it.items))
            elif isinstance(it, RowIf):
                self.if_(it.stmt.cond, lambda it=it: self.row(it.items))
            else:
                self.x_loop(it)

    def thread_loop(self, stmts: list) -> None:
        """Every thread of the workgroup runs stmts: z and y loops outside, uniform loops and ifs, x innermost."""
        rows = split_rows(stmts, self.uniform_vars)
        ls = self.k.local_size
        self.counted("%.lid2", str(ls[2]), lambda: self.counted("%.lid1", str(ls[1]), lambda: self.row(rows)))

    def run_items(self, items: list[PhaseItem]) -> None:
        for it in items:
            if isinstance(it, Phase):
                self.thread_loop(it.stmts)
            elif isinstance(it, UniformIf):
                self.if_(it.stmt.cond, lambda it=it: self.run_items(it.items))
            else:
                self.range(it.stmt, lambda it=it: self.run_items(it.items))

    def workgroup_range(self, body: Callable[[], None]) -> None:
        """body() for workgroups first .. first + count - 1: the start's (x, y, z) is divided out once, then stepped."""
        start, run, done = self.label("wgstart"), self.label("wgrun"), self.label("wgdone")
        self.entry.append("  %.left = alloca i64, align 8")
        gx, gy = self.emit("%.gx64 = zext i32 %.gx to i64"), self.emit("%.gy64 = zext i32 %.gy to i64")
        gxy = self.emit(f"%.gxy = mul i64 {gx}, {gy}")
        anything = self.emit(f"{self.tmp()} = icmp sgt i64 %.count, 0")
        self.emit(f"br i1 {anything}, label %{start}, label %{done}")  # count 0 skips the divisions (gx may be 0)
        self.block(start)
        plane = self.emit(f"{self.tmp()} = urem i64 %.first, {gxy}")
        coords = (self.emit(f"{self.tmp()} = urem i64 {plane}, {gx}"), self.emit(f"{self.tmp()} = udiv i64 {plane}, {gx}"),
                  self.emit(f"{self.tmp()} = udiv i64 %.first, {gxy}"))
        for d, c in enumerate(coords):
            self.emit(f"store i32 {self.emit(f'{self.tmp()} = trunc i64 {c} to i32')}, ptr %.wg{d}")
        self.emit("store i64 %.count, ptr %.left")
        self.emit(f"br label %{run}")
        self.block(run)
        body()
        # Step x; a wrap carries into y, and y's wrap into z (branch-free, so the loop stays one block around body).
        carry = "1"
        for d, size in ((0, "%.gx"), (1, "%.gy"), (2, "")):
            old = self.emit(f"{self.tmp()} = load i32, ptr %.wg{d}")
            nxt = self.emit(f"{self.tmp()} = add i32 {old}, {carry}")
            if size:
                wrap = self.emit(f"{self.tmp()} = icmp eq i32 {nxt}, {size}")
                nxt = self.emit(f"{self.tmp()} = select i1 {wrap}, i32 0, i32 {nxt}")
                carry = self.emit(f"{self.tmp()} = zext i1 {wrap} to i32")
            self.emit(f"store i32 {nxt}, ptr %.wg{d}")
        left = self.emit(f"{self.tmp()} = load i64, ptr %.left")
        left = self.emit(f"{self.tmp()} = sub i64 {left}, 1")
        self.emit(f"store i64 {left}, ptr %.left")
        more = self.emit(f"{self.tmp()} = icmp sgt i64 {left}, 0")
        self.emit(f"br i1 {more}, label %{run}, label %{done}")
        self.block(done)

    def render(self) -> str:
        k = self.k
        offsets = {a.name: a.offset for a in arg_layout(k)}
        for p in k.params:
            slot = f"%.arg.{p.name}"
            self.entry.append(f"  {slot} = getelementptr inbounds i8, ptr %.args, i64 {offsets[p.name]}")
            self.entry.append(f"  %{p.name} = load {'ptr' if isinstance(p, ir.Memory) else 'i32'}, ptr {slot}")
            if isinstance(p, ir.ScalarParam):
                self.params[p.index] = f"%{p.name}"
        for m in k.locals:
            self.entry.append(f"  %.lds.{m.name} = alloca [{m.size} x {_lt(m.dtype)}], align 16")
        self.workgroup_range(lambda: self.run_items(self.phases))
        fn = self.function(f"void @{k.name}(ptr noalias %.args, i32 %.gx, i32 %.gy, i32 %.gz, i64 %.first, i64 %.count)")
        return "\n".join(sorted(self.decls) + fn) + "\n"


class CheckedHostRenderer(HostRenderer):
    """The host build the emulated NVIDIA GPU runs: every buffer access is checked against the mapping its buffer's
    address lies in, as the GPU's MMU would fault it.

    Signature: fn(args, gx, gy, gz, first, count, limits, fault). args holds each buffer as a host address the
    emulator translated; limits holds, per buffer parameter in order, the bytes accessible from that address (the rest
    of its mapping). An access outside [0, limit) is skipped (a load reads 0) and the first one is recorded in fault,
    a compiler.emulation.HostFault: byte offset from the buffer's base, buffer index, whether it was a store, hit=1.
    The emulator reports it as an MMU fault at the buffer's GPU address plus the offset."""

    def __init__(self, k: ir.Kernel):
        super().__init__(k)
        self.buffer_index = {m.name: i for i, m in enumerate(p for p in k.params if isinstance(p, ir.Memory))}
        self.entry.append("  %.dummy = alloca [2 x i64], align 16")  # what a skipped access reads and writes
        self.writing = False

    def stmts(self, body: list) -> None:
        for s in body:
            if isinstance(s, ir.Store):
                idx, val = self.mem_index(s.index), self.expr(s.value)
                self.writing = True
                ptr = self.memory_ptr(s.mem, idx)
                self.writing = False
                self.emit(f"store {_lt(s.value.dtype)} {val}, {ptr}, align {ALIGN[s.value.dtype.name]}")
            else:
                super().stmts([s])

    def memory_ptr(self, m: ir.Memory, index: str) -> str:
        if m.space != "global":
            return super().memory_ptr(m, index)
        size = m.dtype.bits // 8
        j = self.buffer_index[m.name]
        i64, gep = self.tmp(), self.tmp()
        self.emit(f"{i64} = sext i32 {index} to i64")
        self.emit(f"{gep} = getelementptr {_lt(m.dtype)}, ptr %{m.name}, i64 {i64}")
        off = self.emit(f"{self.tmp()} = mul i64 {i64}, {size}")
        end = self.emit(f"{self.tmp()} = add i64 {off}, {size}")
        # Unsigned: a negative offset is huge and fails; both ends inside the mapping.
        lo = self.emit(f"{self.tmp()} = icmp ult i64 {off}, %.limit{j}")
        hi = self.emit(f"{self.tmp()} = icmp ule i64 {end}, %.limit{j}")
        ok = self.emit(f"{self.tmp()} = and i1 {lo}, {hi}")
        bad, cont, record = self.label("oob"), self.label("inb"), self.label("oobfirst")
        self.emit(f"br i1 {ok}, label %{cont}, label %{bad}")
        self.block(bad)
        self.emit("store i64 0, ptr %.dummy, align 16")  # a skipped load reads zero
        hit_ptr = self.emit(f"{self.tmp()} = getelementptr inbounds i8, ptr %.fault, i64 16")
        hit = self.emit(f"{self.tmp()} = load i32, ptr {hit_ptr}, align 4")
        first = self.emit(f"{self.tmp()} = icmp eq i32 {hit}, 0")
        self.emit(f"br i1 {first}, label %{record}, label %{cont}")
        self.block(record)  # only the first bad access is recorded: later ones are usually its consequences
        self.emit(f"store i64 {off}, ptr %.fault, align 8")
        param_ptr = self.emit(f"{self.tmp()} = getelementptr inbounds i8, ptr %.fault, i64 8")
        self.emit(f"store i32 {j}, ptr {param_ptr}, align 4")
        write_ptr = self.emit(f"{self.tmp()} = getelementptr inbounds i8, ptr %.fault, i64 12")
        self.emit(f"store i32 {int(self.writing)}, ptr {write_ptr}, align 4")
        self.emit(f"store i32 1, ptr {hit_ptr}, align 4")
        self.emit(f"br label %{cont}")
        self.block(cont)
        ptr = self.emit(f"{self.tmp()} = select i1 {ok}, ptr {gep}, ptr %.dummy")
        return f"ptr {ptr}"

    def render(self) -> str:
        for name, j in self.buffer_index.items():
            self.entry.append(f"  %.limitp{j} = getelementptr inbounds i64, ptr %.limits, i64 {j}")
            self.entry.append(f"  %.limit{j} = load i64, ptr %.limitp{j}, align 8")
        text = super().render()
        return text.replace("i64 %.first, i64 %.count)", "i64 %.first, i64 %.count, ptr noalias %.limits, "
                            "ptr noalias %.fault)", 1)


def target_kind(target: str) -> str:
    """'host', 'amd' or 'nv' for a target name; a clear error for anything else."""
    if target == "host":
        return "host"
    if target in AMD_TARGETS:
        return "amd"
    if target in NV_TARGETS:
        return "nv"
    raise ir.IRError(f"unknown target {target!r}; targets are host, {', '.join(AMD_TARGETS + NV_TARGETS)}")


def render(k: ir.Kernel, target: str) -> str:
    """LLVM IR text of a validated kernel for 'host', an AMDGPU processor (gfx1100, gfx1201, gfx942) or an NVIDIA
    architecture (sm_75 ... sm_90)."""
    validate(k)
    cls = {"host": HostRenderer, "amd": AMDGPURenderer, "nv": NVPTXRenderer}[target_kind(target)]
    return cls(k).render()


def render_checked_host(k: ir.Kernel) -> str:
    """LLVM IR of the host build with every buffer access checked (CheckedHostRenderer), for the emulated NVIDIA GPU."""
    validate(k)
    return CheckedHostRenderer(k).render()
