"""A canonical text form of a kernel: stable across runs and processes, so its digest keys the compile cache."""
from __future__ import annotations

from compiler import ir


def expr(e: ir.Expr) -> str:
    """One expression as prefix text: (op a b), name[index], $var, value:dtype."""
    if isinstance(e, ir.Const):
        return f"{e.value!r}:{e.dtype.name}"
    if isinstance(e, ir.Special):
        return f"{e.kind}{e.dim}"
    if isinstance(e, ir.ScalarParam):
        return f"%{e.name}"
    if isinstance(e, ir.BinOp):
        return f"({e.op} {expr(e.a)} {expr(e.b)})"
    if isinstance(e, ir.UnOp):
        return f"({e.op} {expr(e.a)})"
    if isinstance(e, ir.Cast):
        return f"(cast {e.dtype.name} {expr(e.a)})"
    if isinstance(e, ir.Where):
        return f"(where {expr(e.cond)} {expr(e.a)} {expr(e.b)})"
    if isinstance(e, ir.MulAdd):
        return f"(muladd {expr(e.a)} {expr(e.b)} {expr(e.c)})"
    if isinstance(e, ir.Load):
        return f"{e.mem.name}[{expr(e.index)}]"
    if isinstance(e, ir.VarRef):
        return f"${e.var.name}"
    raise ir.IRError(f"unknown expression {e!r}")


def stmts(body: list, depth: int) -> list[str]:
    """Statements, one a line, nested blocks indented."""
    pad, out = "  " * depth, []
    for s in body:
        if isinstance(s, ir.Store):
            out.append(f"{pad}{s.mem.name}[{expr(s.index)}] = {expr(s.value)}")
        elif isinstance(s, ir.Assign):
            out.append(f"{pad}${s.var.name} = {expr(s.value)}")
        elif isinstance(s, ir.If):
            out += [f"{pad}if {expr(s.cond)}:"] + stmts(s.body, depth + 1)
        elif isinstance(s, ir.Range):
            out += [f"{pad}for ${s.var.name} in {expr(s.start)}..{expr(s.end)} step {s.step}:"] + stmts(s.body, depth + 1)
        elif isinstance(s, ir.Barrier):
            out.append(f"{pad}barrier")
        else:
            raise ir.IRError(f"unknown statement {s!r}")
    return out


def render(k: ir.Kernel) -> str:
    """The kernel as text: signature, local arrays, variables, body."""
    params = ", ".join(f"{p.name}: {'*' if isinstance(p, ir.Memory) else ''}{p.dtype.name}"
                       f"{' rw' if getattr(p, 'writable', False) else ''}" for p in k.params)
    head = [f"kernel {k.name}({params}) local_size={tuple(k.local_size)}"]
    head += [f"  local {m.name}: {m.dtype.name}[{m.size}]" for m in k.locals]
    head += [f"  var ${v.name}: {v.dtype.name}{' loop' if v.loop else ''}" for v in k.vars]
    return "\n".join(head + stmts(k.body, 1)) + "\n"
