"""Checks a whole kernel before it is rendered, and names every problem it finds in one IRError.

The builder already refuses most mistakes as they are made (operand types, stores to read-only buffers);
this pass checks what only the whole kernel shows, and re-checks the rest for IR built by hand:
- every buffer, scalar, local array and variable used belongs to this kernel, and names are unique;
- loop counters are read only inside their loop;
- constant indices into local arrays are in bounds;
- barriers are reached by every thread: a barrier under an `if_` or `range` whose condition or bounds depend
  on the local id (directly, or through a variable or a load whose index does) is refused. On a GPU such a
  barrier hangs or is undefined; on the host target it could not be split into phases. Uniform control flow
  around barriers (conditions on scalars, workgroup ids, uniform loop counters) is allowed.
"""
from __future__ import annotations

from compiler import ir
from compiler.printer import expr as show


def divergent_vars(k: ir.Kernel) -> set[ir.Var]:
    """Variables whose value may differ between the threads of a workgroup (a fixed point over the body)."""
    found: set[ir.Var] = set()

    def visit(body: list, divergent: bool) -> bool:
        grew = False
        for s in body:
            if isinstance(s, ir.Assign) and s.var not in found and (divergent or is_divergent(s.value, found)):
                found.add(s.var)
                grew = True
            elif isinstance(s, ir.If):
                grew |= visit(s.body, divergent or is_divergent(s.cond, found))
            elif isinstance(s, ir.Range):
                d = divergent or is_divergent(s.start, found) or is_divergent(s.end, found)
                if d and s.var not in found:
                    found.add(s.var)
                    grew = True
                grew |= visit(s.body, d)
        return grew
    while visit(k.body, False):
        pass
    return found


def is_divergent(e: ir.Expr, dvars: set[ir.Var]) -> bool:
    """Whether e may differ between threads: it reads the local id or a divergent variable (a load is as
    divergent as its index)."""
    for x in ir.subexprs(e):
        if isinstance(x, ir.Special) and x.kind == "lid":
            return True
        if isinstance(x, ir.VarRef) and x.var in dvars:
            return True
    return False


def validate(k: ir.Kernel) -> None:
    """Raise IRError naming every problem in the kernel; return None for a well-formed kernel."""
    problems: list[str] = []
    owned_mem = {id(m) for m in k.buffers + k.locals}
    owned_scalars = {id(p) for p in k.scalars}
    owned_vars = {id(v) for v in k.vars}
    names = [p.name for p in k.params] + [m.name for m in k.locals] + [v.name for v in k.vars]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"the name {n!r} is used more than once")
    for n in names:
        if not n.isidentifier():
            problems.append(f"{n!r} is not an identifier")
    for m in k.buffers + k.locals:
        if m.dtype == ir.bool_:
            problems.append(f"{m.name}: bool memory is not supported; store int32 0/1 instead")
    dvars = divergent_vars(k)

    def check_expr(e: ir.Expr, open_loops: list[ir.Var], where: str) -> None:
        for x in ir.subexprs(e):
            if isinstance(x, ir.Load):
                if id(x.mem) not in owned_mem:
                    problems.append(f"{where}: {x.mem.name} belongs to kernel {x.mem.kernel.name}, not {k.name}")
                elif (x.mem.space == "local" and isinstance(x.index, ir.Const)
                      and not 0 <= x.index.value < x.mem.size):
                    problems.append(f"{where}: index {x.index.value} is outside local array {x.mem.name}[{x.mem.size}]")
            elif isinstance(x, ir.ScalarParam) and id(x) not in owned_scalars:
                problems.append(f"{where}: scalar {x.name} belongs to another kernel")
            elif isinstance(x, ir.VarRef):
                if id(x.var) not in owned_vars:
                    problems.append(f"{where}: variable {x.var.name} belongs to kernel {x.var.kernel.name}, not {k.name}")
                elif x.var.loop and not any(x.var is v for v in open_loops):
                    problems.append(f"{where}: loop counter {x.var.name} is read outside its loop")

    def visit(body: list, open_loops: list[ir.Var], divergent_cond: str | None) -> None:
        for s in body:
            for e in ir.stmt_exprs(s):
                check_expr(e, open_loops, _describe(s))  # a loop's bounds are outside it, like other statements
            if isinstance(s, ir.Store):
                if id(s.mem) not in owned_mem:
                    problems.append(f"{_describe(s)}: {s.mem.name} belongs to kernel {s.mem.kernel.name}, not {k.name}")
                if s.mem.space == "global" and not s.mem.writable:
                    problems.append(f"store to {s.mem.name}, which is read-only: declare it with writable=True")
                if s.value.dtype != s.mem.dtype:
                    problems.append(f"store of {s.value.dtype} into {s.mem.name} of {s.mem.dtype}; cast the value")
                if s.mem.space == "local" and isinstance(s.index, ir.Const) and not 0 <= s.index.value < s.mem.size:
                    problems.append(f"{_describe(s)}: index {s.index.value} is outside local array "
                                    f"{s.mem.name}[{s.mem.size}]")
            elif isinstance(s, ir.Assign):
                if id(s.var) not in owned_vars:
                    problems.append(f"{_describe(s)}: variable {s.var.name} belongs to another kernel")
                if s.value.dtype != s.var.dtype:
                    problems.append(f"assignment of {s.value.dtype} to variable {s.var.name} of {s.var.dtype}")
            elif isinstance(s, ir.If):
                if s.cond.dtype != ir.bool_:
                    problems.append(f"if needs a bool condition, got {s.cond.dtype}")
                d = divergent_cond or (f"if {show(s.cond)}" if is_divergent(s.cond, dvars) else None)
                visit(s.body, open_loops, d)
            elif isinstance(s, ir.Range):
                if s.start.dtype != ir.i32 or s.end.dtype != ir.i32:
                    problems.append(f"range bounds must be int32, got {s.start.dtype} and {s.end.dtype}")
                if not isinstance(s.step, int) or s.step < 1:
                    problems.append(f"range step must be a constant int >= 1, got {s.step!r}")
                divergent = is_divergent(s.start, dvars) or is_divergent(s.end, dvars)
                d = divergent_cond or (f"for ${s.var.name} in {show(s.start)}..{show(s.end)}" if divergent else None)
                visit(s.body, open_loops + [s.var], d)
            elif isinstance(s, ir.Barrier) and divergent_cond:
                problems.append(f"barrier inside control flow that depends on the local id ({divergent_cond}): "
                                "every thread of a workgroup must reach the same barriers")
    visit(k.body, [], None)
    if problems:
        raise ir.IRError(f"kernel {k.name}: " + "; ".join(dict.fromkeys(problems)))


def _describe(s: ir.Stmt) -> str:
    if isinstance(s, ir.Store):
        return f"store to {s.mem.name}"
    if isinstance(s, ir.Assign):
        return f"assignment to {s.var.name}"
    if isinstance(s, ir.If):
        return "if condition"
    if isinstance(s, ir.Range):
        return f"bounds of loop {s.var.name}"
    return type(s).__name__.lower()
