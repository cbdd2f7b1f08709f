"""Kernel IR to LLVM IR text, for the host (x86-64) and AMDGPU.

Targets differ in few places, so a target is a small set of hooks: how the kernel receives its
parameters, where special indices come from, how local memory and barriers look, and which address space
private variables live in. The host has no threads of its own: its kernel loops over workgroups and, inside
each, runs the workgroup's threads one after another; a body with barriers is cut at the barriers into
phases that each loop over all threads, and per-thread variables become arrays indexed by thread.
"""
from __future__ import annotations

import struct

import numpy as np

from compiler import ir
from compiler.kernargs import arg_layout

LLTYPE = {"float32": "float", "float16": "half", "int32": "i32", "bool": "i1"}
ALIGN = {"float32": 4, "float16": 2, "int32": 4, "bool": 1}
SUFFIX = {"float": "f32", "half": "f16"}


def _lt(d: ir.DType) -> str:
    return LLTYPE[d.name]


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
    """Shared expression and statement lowering; subclasses are targets."""

    private_space = ""  # address space suffix for allocas
    ptr_global = "ptr"

    def __init__(self, k: ir.Kernel):
        self.k = k
        self.lines: list[str] = []
        self.entry: list[str] = []
        self.decls: set[str] = set()
        self.n = 0
        self.has_barriers = contains_barrier(k.body)
        self.params: dict[int, str] = {}

    def tmp(self) -> str:
        self.n += 1
        return f"%t{self.n}"

    def label(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    def emit(self, line: str) -> None:
        self.lines.append("  " + line)

    def block(self, name: str) -> None:
        self.lines.append(f"{name}:")

    def declare(self, decl: str) -> None:
        self.decls.add(decl)

    # --- target hooks ---
    def special(self, kind: str, dim: int) -> str:
        raise NotImplementedError

    def var_ptr(self, v: ir.Var) -> str:
        raise NotImplementedError

    def memory_ptr(self, m: ir.Memory, index: str) -> str:
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    # --- expressions ---
    def expr(self, e: ir.Expr) -> str:
        if isinstance(e, ir.Const):
            return _const(e)
        if isinstance(e, ir.Special):
            if e.kind == "lsize":
                return str(self.k.local_size[e.dim])
            return self.special(e.kind, e.dim)
        if isinstance(e, ir.ScalarParam):
            return self.params[e.index]
        if isinstance(e, ir.VarRef):
            t = self.tmp()
            self.emit(f"{t} = load {_lt(e.dtype)}, ptr{self.private_space} {self.var_ptr(e.var)}")
            return t
        if isinstance(e, ir.Load):
            idx = self.expr(e.index)
            ptr = self.memory_ptr(e.mem, idx)
            t = self.tmp()
            self.emit(f"{t} = load {_lt(e.dtype)}, {ptr}, align {ALIGN[e.dtype.name]}")
            return t
        if isinstance(e, ir.BinOp):
            return self.binop(e)
        if isinstance(e, ir.UnOp):
            a = self.expr(e.a)
            t = self.tmp()
            ty = _lt(e.dtype)
            if e.op == "neg":
                self.emit(f"{t} = fneg {ty} {a}" if e.dtype.kind == "f" else f"{t} = sub {ty} 0, {a}")
            else:
                fn = f"llvm.{e.op}.{SUFFIX[ty]}"
                self.declare(f"declare {ty} @{fn}({ty})")
                self.emit(f"{t} = call {ty} @{fn}({ty} {a})")
            return t
        if isinstance(e, ir.Cast):
            return self.cast(self.expr(e.a), e.a.dtype, e.dtype)
        if isinstance(e, ir.Where):
            c, a, b = self.expr(e.cond), self.expr(e.a), self.expr(e.b)
            t = self.tmp()
            self.emit(f"{t} = select i1 {c}, {_lt(e.dtype)} {a}, {_lt(e.dtype)} {b}")
            return t
        raise ir.IRError(f"cannot render {e!r}")

    def binop(self, e: ir.BinOp) -> str:
        a, b = self.expr(e.a), self.expr(e.b)
        ty, t, f = _lt(e.a.dtype), self.tmp(), e.a.dtype.kind == "f"
        simple = {"add": ("fadd", "add"), "sub": ("fsub", "sub"), "mul": ("fmul", "mul"), "div": ("fdiv", "sdiv"),
                  "mod": ("frem", "srem"), "and": (None, "and"), "or": (None, "or")}
        cmp = {"lt": ("olt", "slt"), "le": ("ole", "sle"), "eq": ("oeq", "eq"), "ne": ("une", "ne")}
        if e.op in simple:
            self.emit(f"{t} = {simple[e.op][0 if f else 1]} {ty} {a}, {b}")
        elif e.op in cmp:
            self.emit(f"{t} = {'fcmp' if f else 'icmp'} {cmp[e.op][0 if f else 1]} {ty} {a}, {b}")
        elif e.op in ("max", "min"):
            fn = f"llvm.{e.op}num.{SUFFIX[ty]}" if f else f"llvm.s{e.op}.i32"
            self.declare(f"declare {ty} @{fn}({ty}, {ty})")
            self.emit(f"{t} = call {ty} @{fn}({ty} {a}, {ty} {b})")
        else:
            raise ir.IRError(f"unknown binary op {e.op}")
        return t

    def cast(self, v: str, src: ir.DType, dst: ir.DType) -> str:
        if src == dst:
            return v
        t, s, d = self.tmp(), _lt(src), _lt(dst)
        if dst.kind == "b":
            self.emit(f"{t} = fcmp une {s} {v}, 0.0" if src.kind == "f" else f"{t} = icmp ne {s} {v}, 0")
        elif src.kind == "b":
            self.emit(f"{t} = uitofp i1 {v} to {d}" if dst.kind == "f" else f"{t} = zext i1 {v} to {d}")
        elif src.kind == "f" and dst.kind == "f":
            self.emit(f"{t} = {'fpext' if dst.bits > src.bits else 'fptrunc'} {s} {v} to {d}")
        elif src.kind == "f":
            self.emit(f"{t} = fptosi {s} {v} to {d}")
        else:
            self.emit(f"{t} = sitofp {s} {v} to {d}")
        return t

    # --- statements ---
    def stmts(self, body: list) -> None:
        for s in body:
            if isinstance(s, ir.Store):
                idx, val = self.expr(s.index), self.expr(s.value)
                self.emit(f"store {_lt(s.value.dtype)} {val}, {self.memory_ptr(s.mem, idx)}, align {ALIGN[s.value.dtype.name]}")
            elif isinstance(s, ir.Assign):
                val = self.expr(s.value)
                self.emit(f"store {_lt(s.var.dtype)} {val}, ptr{self.private_space} {self.var_ptr(s.var)}")
            elif isinstance(s, ir.If):
                self.if_(s.cond, lambda: self.stmts(s.body))
            elif isinstance(s, ir.Range):
                self.range(s.var, s.start, s.end, lambda: self.stmts(s.body))
            elif isinstance(s, ir.Barrier):
                self.barrier()

    def if_(self, cond: ir.Expr, body) -> None:
        c = self.expr(cond)
        then, done = self.label("then"), self.label("endif")
        self.emit(f"br i1 {c}, label %{then}, label %{done}")
        self.block(then)
        body()
        self.emit(f"br label %{done}")
        self.block(done)

    def range(self, var: ir.Var, start: ir.Expr, end: ir.Expr, body) -> None:
        ptr = self.var_ptr(var)
        self.emit(f"store i32 {self.expr(start)}, ptr{self.private_space} {ptr}")
        head, inner, done = self.label("loop"), self.label("body"), self.label("endloop")
        self.emit(f"br label %{head}")
        self.block(head)
        i = self.tmp()
        self.emit(f"{i} = load i32, ptr{self.private_space} {ptr}")
        c = self.tmp()
        self.emit(f"{c} = icmp slt i32 {i}, {self.expr(end)}")
        self.emit(f"br i1 {c}, label %{inner}, label %{done}")
        self.block(inner)
        body()
        j, k = self.tmp(), self.tmp()
        self.emit(f"{j} = load i32, ptr{self.private_space} {ptr}")
        self.emit(f"{k} = add i32 {j}, 1")
        self.emit(f"store i32 {k}, ptr{self.private_space} {ptr}")
        self.emit(f"br label %{head}")
        self.block(done)


class AMDGPURenderer(Renderer):
    """One thread's view: specials from intrinsics, LDS in addrspace(3), private variables in addrspace(5)."""

    private_space = " addrspace(5)"

    def __init__(self, k: ir.Kernel):
        super().__init__(k)
        self.var_ptrs: dict[int, str] = {}

    def special(self, kind: str, dim: int) -> str:
        fn = f"llvm.amdgcn.{'workgroup' if kind == 'wg' else 'workitem'}.id.{'xyz'[dim]}"
        self.declare(f"declare i32 @{fn}()")
        t = self.tmp()
        self.emit(f"{t} = call i32 @{fn}()")
        return t

    def var_ptr(self, v: ir.Var) -> str:
        if id(v) not in self.var_ptrs:
            p = f"%var_{v.name}"
            self.entry.append(f"  {p} = alloca {_lt(v.dtype)}, align 4, addrspace(5)")
            self.var_ptrs[id(v)] = p
        return self.var_ptrs[id(v)]

    def memory_ptr(self, m: ir.Memory, index: str) -> str:
        i64, t = self.tmp(), self.tmp()
        self.emit(f"{i64} = sext i32 {index} to i64")
        if m.space == "global":
            self.emit(f"{t} = getelementptr inbounds {_lt(m.dtype)}, ptr addrspace(1) %{m.name}, i64 {i64}")
            return f"ptr addrspace(1) {t}"
        self.emit(f"{t} = getelementptr inbounds [{m.size} x {_lt(m.dtype)}], ptr addrspace(3) @{self.k.name}_{m.name}, i64 0, i64 {i64}")
        return f"ptr addrspace(3) {t}"

    def barrier(self) -> None:
        self.declare("declare void @llvm.amdgcn.s.barrier()")
        self.emit('fence syncscope("workgroup") release')
        self.emit("call void @llvm.amdgcn.s.barrier()")
        self.emit('fence syncscope("workgroup") acquire')

    def render(self) -> str:
        k = self.k
        args = []
        for p in k.params:
            if isinstance(p, ir.Memory):
                args.append(f"ptr addrspace(1) noalias align {ALIGN[p.dtype.name]} %{p.name}")
            else:
                args.append(f"i32 %{p.name}")
                self.params[p.index] = f"%{p.name}"
        self.stmts(k.body)
        threads = k.local_size[0] * k.local_size[1] * k.local_size[2]
        globals_ = [f"@{k.name}_{m.name} = internal addrspace(3) global [{m.size} x {_lt(m.dtype)}] undef, align 16"
                    for m in k.locals]
        fn = [f"define amdgpu_kernel void @{k.name}({', '.join(args)}) #0 {{", "entry:", *self.entry,
              *self.lines, "  ret void", "}"]
        attrs = [f'attributes #0 = {{ "amdgpu-flat-work-group-size"="1,{threads}" nounwind }}',
                 "!llvm.module.flags = !{!0}", '!0 = !{i32 1, !"amdhsa_code_object_version", i32 500}']
        return "\n".join(globals_ + sorted(self.decls) + fn + attrs) + "\n"


class HostRenderer(Renderer):
    """The host target: `void name(ptr args, i32 gx, i32 gy, i32 gz)` runs the whole grid on one CPU thread;
    args is the kernel-argument block in the AMDGPU layout."""

    def __init__(self, k: ir.Kernel):
        super().__init__(k)
        self.var_ptrs: dict[int, str] = {}
        self.uniform_vars: set[int] = set()
        self.threads = k.local_size[0] * k.local_size[1] * k.local_size[2]
        self.in_thread = False
        self.ids = {}
        for kind in ("wg", "lid"):
            for d in range(3):
                self.ids[(kind, d)] = f"%{kind}{d}"
                self.entry.append(f"  %{kind}{d} = alloca i32, align 4")

    def special(self, kind: str, dim: int) -> str:
        if kind == "lid" and not self.in_thread:
            raise ir.IRError(f"{self.k.name}: local id read outside per-thread code on the host target "
                             "(a loop or if around a barrier must be uniform)")
        t = self.tmp()
        self.emit(f"{t} = load i32, ptr {self.ids[(kind, dim)]}")
        return t

    def flat_lid(self) -> str:
        x, y, z = (self.special("lid", d) for d in range(3))
        lx, ly = self.k.local_size[0], self.k.local_size[1]
        t1, t2, t3, t4 = self.tmp(), self.tmp(), self.tmp(), self.tmp()
        self.emit(f"{t1} = mul i32 {z}, {ly}")
        self.emit(f"{t2} = add i32 {t1}, {y}")
        self.emit(f"{t3} = mul i32 {t2}, {lx}")
        self.emit(f"{t4} = add i32 {t3}, {x}")
        return t4

    def var_ptr(self, v: ir.Var) -> str:
        per_thread = self.has_barriers and id(v) not in self.uniform_vars
        if id(v) not in self.var_ptrs:
            p = f"%var_{v.name}"
            n = self.threads if per_thread else 1
            self.entry.append(f"  {p} = alloca [{n} x {_lt(v.dtype)}], align 16")
            self.var_ptrs[id(v)] = p
        if not per_thread:
            return self.var_ptrs[id(v)]
        idx, i64, t = self.flat_lid(), self.tmp(), self.tmp()
        self.emit(f"{i64} = sext i32 {idx} to i64")
        self.emit(f"{t} = getelementptr inbounds [{self.threads} x {_lt(v.dtype)}], ptr {self.var_ptrs[id(v)]}, i64 0, i64 {i64}")
        return t

    def memory_ptr(self, m: ir.Memory, index: str) -> str:
        i64, t = self.tmp(), self.tmp()
        self.emit(f"{i64} = sext i32 {index} to i64")
        base = f"%{m.name}" if m.space == "global" else f"%lds_{m.name}"
        self.emit(f"{t} = getelementptr inbounds {_lt(m.dtype)}, ptr {base}, i64 {i64}")
        return f"ptr {t}"

    def barrier(self) -> None:
        raise ir.IRError(f"{self.k.name}: a barrier inside divergent control flow cannot run on the host target")

    def counted(self, ptr: str, count: str, body) -> None:
        """for *ptr in 0..count: body()"""
        self.emit(f"store i32 0, ptr {ptr}")
        head, inner, done = self.label("h"), self.label("b"), self.label("e")
        self.emit(f"br label %{head}")
        self.block(head)
        i, c = self.tmp(), self.tmp()
        self.emit(f"{i} = load i32, ptr {ptr}")
        self.emit(f"{c} = icmp slt i32 {i}, {count}")
        self.emit(f"br i1 {c}, label %{inner}, label %{done}")
        self.block(inner)
        body()
        j, k = self.tmp(), self.tmp()
        self.emit(f"{j} = load i32, ptr {ptr}")
        self.emit(f"{k} = add i32 {j}, 1")
        self.emit(f"store i32 {k}, ptr {ptr}")
        self.emit(f"br label %{head}")
        self.block(done)

    def thread_loop(self, body) -> None:
        def run() -> None:
            self.in_thread = True
            body()
            self.in_thread = False
        ls = self.k.local_size
        self.counted("%lid2", str(ls[2]), lambda: self.counted("%lid1", str(ls[1]), lambda: self.counted("%lid0", str(ls[0]), run)))

    def phases(self, body: list) -> None:
        """Statements with barriers: uniform control flow outside, per-thread groups inside thread loops."""
        group: list = []

        def flush() -> None:
            if group:
                stmts = list(group)
                self.thread_loop(lambda: self.stmts(stmts))
                group.clear()
        for s in body:
            if isinstance(s, ir.Barrier):
                flush()
            elif isinstance(s, (ir.If, ir.Range)) and contains_barrier(s.body):
                flush()
                if isinstance(s, ir.Range):
                    self.uniform_vars.add(id(s.var))
                    self.range(s.var, s.start, s.end, lambda s=s: self.phases(s.body))
                else:
                    self.if_(s.cond, lambda s=s: self.phases(s.body))
            else:
                group.append(s)
        flush()

    def render(self) -> str:
        k = self.k
        offsets = {a.name: a.offset for a in arg_layout(k)}
        for p in k.params:
            slot, t = self.tmp(), self.tmp()
            self.entry.append(f"  {slot} = getelementptr inbounds i8, ptr %args, i64 {offsets[p.name]}")
            if isinstance(p, ir.Memory):
                self.entry.append(f"  %{p.name} = load ptr, ptr {slot}")
            else:
                self.entry.append(f"  {t} = load i32, ptr {slot}")
                self.params[p.index] = t
        for m in k.locals:
            self.entry.append(f"  %lds_{m.name} = alloca [{m.size} x {_lt(m.dtype)}], align 16")
        grid = ["%gz", "%gy", "%gx"]

        def body() -> None:
            if self.has_barriers:
                self.phases(k.body)
            else:
                self.thread_loop(lambda: self.stmts(k.body))
        self.counted("%wg2", grid[0], lambda: self.counted("%wg1", grid[1], lambda: self.counted("%wg0", grid[2], body)))
        fn = [f"define void @{k.name}(ptr noalias %args, i32 %gx, i32 %gy, i32 %gz) {{", "entry:", *self.entry,
              *self.lines, "  ret void", "}"]
        return "\n".join(sorted(self.decls) + fn) + "\n"


def render(k: ir.Kernel, target: str) -> str:
    """LLVM IR text of a kernel for 'host' or an AMDGPU processor name (gfx1100, gfx1201, gfx942)."""
    return (HostRenderer(k) if target == "host" else AMDGPURenderer(k)).render()
