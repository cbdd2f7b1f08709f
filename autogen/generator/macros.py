"""C macros to Python: collect #defines with libclang and translate the ones that are expressions.

ctypeslib2 leaves function-like macros and ioctl numbers as comments; the drivers need both (PACKET3(op, n),
field shift/mask helpers, AMDKFD_IOC_*), so we translate macros ourselves: object-like macros are evaluated
to their values, function-like macros become Python functions, and every macro we cannot translate is
reported by name rather than dropped.
"""
from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass, field
from typing import Any

# ioctl encoders stay calls into autogen.ioctl instead of being expanded from asm-generic/ioctl.h
IOCTL_BUILTINS = ("_IOC", "_IO", "_IOR", "_IOW", "_IOWR")

# Words that may form a C type in a cast or sizeof; a parenthesised run of these followed by an operand is a cast.
TYPE_WORDS = {"unsigned", "signed", "int", "long", "short", "char", "float", "double", "const", "volatile", "void",
              "bool", "_Bool", "size_t", "uintptr_t", "intptr_t"} | {
    f"{p}{n}" for n in (8, 16, 32, 64) for p in ("u", "s", "__u", "__s", "__le", "__be", "uint", "int")} | {
    f"{p}{n}_t" for n in (8, 16, 32, 64) for p in ("uint", "int")}

CTYPES_OF = {"char": "ctypes.c_char", "short": "ctypes.c_short", "int": "ctypes.c_int", "long": "ctypes.c_long",
             "unsigned": "ctypes.c_uint", "float": "ctypes.c_float", "double": "ctypes.c_double",
             "size_t": "ctypes.c_size_t", "void*": "ctypes.c_void_p"} | {
    f"{p}{n}{s}": f"ctypes.c_{'u' if p in ('u', '__u', 'uint', '__le', '__be') else ''}int{n}"
    for n in (8, 16, 32, 64) for p in ("u", "s", "__u", "__s", "__le", "__be", "uint", "int") for s in ("", "_t")}

_INT_LITERAL = re.compile(r"^(0[xX][0-9a-fA-F]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)([uUlL]*)$")
_FLOAT_LITERAL = re.compile(r"^([0-9]*\.[0-9]*([eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)[fFlL]?$")


@dataclass
class Macro:
    """One #define: name, parameter list (None when object-like), body tokens, and where it was defined."""
    name: str
    params: list[str] | None
    body: list[str]
    file: str
    line: int


class Untranslatable(Exception):
    """The macro's body is not an expression we can express in Python."""


def collect(tu: Any) -> list[Macro]:
    """Every macro definition in a libclang translation unit parsed with PARSE_DETAILED_PROCESSING_RECORD."""
    import clang.cindex as ci
    out = []
    for cur in tu.cursor.get_children():
        if cur.kind != ci.CursorKind.MACRO_DEFINITION or cur.location.file is None:
            continue
        toks = list(cur.get_tokens())
        if not toks:
            continue
        name_tok, rest = toks[0], toks[1:]
        params = None
        # Function-like only when '(' touches the name; "#define X (1)" is object-like.
        if rest and rest[0].spelling == "(" and rest[0].extent.start.line == name_tok.extent.start.line and \
                rest[0].extent.start.column == name_tok.extent.start.column + len(name_tok.spelling):
            close = [t.spelling for t in rest].index(")")
            params = [t.spelling for t in rest[1:close] if t.spelling != ","]
            rest = rest[close + 1:]
        out.append(Macro(cur.spelling, params, [t.spelling for t in rest], str(cur.location.file), cur.location.line))
    return out


def _split_args(tokens: list[str], start: int) -> tuple[list[list[str]], int]:
    """Split a call's arguments at top-level commas; start indexes the '('; returns (args, index after ')')."""
    depth, args, cur = 0, [], []
    for i in range(start, len(tokens)):
        t = tokens[i]
        if t == "(":
            depth += 1
            if depth == 1:
                continue
        elif t == ")":
            depth -= 1
            if depth == 0:
                args.append(cur)
                return ([] if args == [[]] else args), i + 1
        elif t == "," and depth == 1:
            args.append(cur)
            cur = []
            continue
        cur.append(t)
    raise Untranslatable("unbalanced parentheses")


@dataclass
class Translator:
    """Translates the macros of the target headers; `external` macros (from included headers) are expanded inline."""
    external: dict[str, Macro]
    namespace: dict[str, Any]
    local: set[str] = field(default_factory=set)

    def expand(self, tokens: list[str], shadow: frozenset[str] = frozenset(), depth: int = 0) -> list[str]:
        """Expand macros that will not exist in the generated module, as the preprocessor would."""
        if depth > 32:
            raise Untranslatable("macro expansion too deep (recursive macro?)")
        out, i = [], 0
        while i < len(tokens):
            t = tokens[i]
            m = self.external.get(t)
            if m is None or t in shadow or t in self.local or t in IOCTL_BUILTINS:
                out.append(t)
                i += 1
                continue
            if m.params is None:
                out.extend(self.expand(m.body, shadow | {t}, depth + 1))
                i += 1
                continue
            if i + 1 >= len(tokens) or tokens[i + 1] != "(":
                out.append(t)
                i += 1
                continue
            args, i = _split_args(tokens, i + 1)
            if "..." in m.params or len(args) != len(m.params):
                raise Untranslatable(f"{t} called with {len(args)} arguments, takes {len(m.params)}")
            subst = dict(zip(m.params, args))
            body = [tok for b in m.body for tok in (["("] + subst[b] + [")"] if b in subst else [b])]
            out.extend(self.expand(body, shadow | {t}, depth + 1))
        return out

    def python(self, tokens: list[str], params: dict[str, str] | None = None) -> str:
        """A Python expression for C expression tokens; raises Untranslatable."""
        params = params or {}
        out: list[str] = []
        i = 0
        while i < len(tokens):
            t = tokens[i]
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            if t in ("struct", "union", "enum") and nxt is not None:
                out.append(f"{t}_{nxt}")
                i += 2
                continue
            if t == "sizeof":
                if nxt != "(":
                    raise Untranslatable("sizeof without parentheses")
                args, j = _split_args(tokens, i + 1)
                out.append(f"ctypes.sizeof({self._type(args[0], params)})")
                i = j
                continue
            if t == "(" and self._is_cast(tokens, i):
                i = tokens.index(")", i) + 1
                continue
            out.append(self._token(t, params))
            i += 1
        if self._mixes_comparison_and_bitwise(out):
            raise Untranslatable("mixes comparisons and bitwise operators without parentheses (C and Python "
                                 "order them differently)")
        if self._top_level_comma(out):
            raise Untranslatable("a comma list (printf-style arguments), not one expression")
        src = tidy(out)
        try:
            ast.parse(src, mode="eval")
        except SyntaxError as e:
            raise Untranslatable(f"not a Python expression: {src!r}") from e
        return src

    @staticmethod
    def _mixes_comparison_and_bitwise(tokens: list[str]) -> bool:
        seen: dict[int, set[str]] = {}
        depth = 0
        for t in tokens:
            depth += (t == "(") - (t == ")")
            if t in ("==", "!=", "<", ">", "<=", ">="):
                seen.setdefault(depth, set()).add("cmp")
            elif t in ("&", "|", "^"):
                seen.setdefault(depth, set()).add("bit")
        return any(len(kinds) == 2 for kinds in seen.values())

    @staticmethod
    def _top_level_comma(tokens: list[str]) -> bool:
        depth = 0
        for t in tokens:
            depth += (t == "(") - (t == ")")
            if t == "," and depth == 0:
                return True
        return False

    def _type(self, toks: list[str], params: dict[str, str]) -> str:
        if len(toks) == 1 and toks[0] in params:
            return params[toks[0]]
        if len(toks) == 2 and toks[0] in ("struct", "union", "enum"):
            return f"{toks[0]}_{toks[1]}"
        key = "".join(w for w in toks if w not in ("const", "volatile", "signed"))
        key = {"unsignedint": "unsigned", "unsignedlong": "ctypes.c_ulong"}.get(key, key)
        if key in CTYPES_OF:
            return CTYPES_OF[key]
        if key.startswith("ctypes."):
            return key
        if len(toks) == 1 and re.match(r"^[A-Za-z_]\w*$", toks[0]):
            return toks[0]  # a typedef the ctypes part of the module defines
        raise Untranslatable(f"sizeof of unknown type {' '.join(toks)}")

    def _is_cast(self, tokens: list[str], i: int) -> bool:
        j = i + 1
        while j < len(tokens) and (tokens[j] in TYPE_WORDS or tokens[j] == "*"):
            j += 1
        if j == i + 1 or j >= len(tokens) or tokens[j] != ")":
            return False
        after = tokens[j + 1] if j + 1 < len(tokens) else None
        return after is not None and after not in (")", ",", "|", "&", "+", "*", "/", "<<", ">>", "?", ":")

    def _token(self, t: str, params: dict[str, str]) -> str:
        if t in params:
            return params[t]
        m = _INT_LITERAL.match(t)
        if m:
            digits = m.group(1)
            if len(digits) > 1 and digits[0] == "0" and digits[1] not in "xXbB":
                return "0o" + digits[1:]
            return digits
        if _FLOAT_LITERAL.match(t):
            return t.rstrip("fFlL")
        if t.startswith("'"):
            return str(ord(ast.literal_eval(t)))
        if t.startswith('"'):
            return t
        simple = {"&&": "and", "||": "or", "!": "not", "/": "//"}
        if t in simple:
            return simple[t]
        if t in ("?", ":", "#", "##", "{", "}", ";", "=", "->", ".", "++", "--", "...", "+=", "-=", "|=", "&=",
                 "do", "while", "if", "else", "return", "__attribute__", "typeof", "__typeof__", "offsetof"):
            raise Untranslatable(f"uses {t!r}")
        if keyword.iskeyword(t):
            raise Untranslatable(f"uses the Python keyword {t!r} as a name")
        return t


def tidy(tokens: list[str]) -> str:
    """Join expression tokens the way a person would write them."""
    src = " ".join(tokens)
    src = re.sub(r"\( ", "(", src)
    src = re.sub(r" \)", ")", src)
    src = re.sub(r" ,", ",", src)
    src = re.sub(r"\b(\w+) \(", lambda m: m.group(0) if keyword.iskeyword(m.group(1)) else m.group(1) + "(", src)
    src = re.sub(r"\bnot \(", "not (", src)
    return src


@dataclass
class Translated:
    """What came out for the target headers: Python source lines and the macros that could not be translated."""
    lines: list[str]
    untranslated: dict[str, str]
    empty: list[str]
    filtered: int


def _format_value(value: Any, body: list[str]) -> str:
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return hex(value) if any(t.lower().startswith("0x") for t in body) or value > 0xFFFF else str(value)
    return repr(value)


def _param_name(p: str) -> str:
    return p + "_" if keyword.iskeyword(p) or p in ("type",) else p


def translate(local: list[Macro], external: dict[str, Macro], namespace: dict[str, Any],
              keep: re.Pattern[str] | None = None) -> Translated:
    """Translate `local` macros (the target headers') in definition order, retrying until no more progress."""
    filtered = 0
    if keep is not None:
        filtered = sum(1 for m in local if not keep.search(m.name))
        local = [m for m in local if keep.search(m.name)]
    tr = Translator(external, namespace, {m.name for m in local})
    done: dict[str, str] = {}
    empty: list[str] = []
    errors: dict[str, str] = {}
    pending = []
    for m in local:
        if m.params is None and not m.body:
            empty.append(m.name)
        elif m.name in IOCTL_BUILTINS:
            errors[m.name] = "ioctl encoder: provided by autogen.ioctl"
        else:
            pending.append(m)
    while pending:
        progress, still = False, []
        for m in pending:
            try:
                done[m.name] = _translate_one(tr, m, namespace)
                errors.pop(m.name, None)
                progress = True
            except Untranslatable as e:
                errors[m.name] = str(e)
                still.append(m)
        pending = still if progress else []
    lines = [done[m.name] for m in local if m.name in done]
    return Translated(lines, {k: v for k, v in errors.items()}, empty, filtered)


def _translate_one(tr: Translator, m: Macro, ns: dict[str, Any]) -> str:
    if m.params is None:
        expr = tr.python(tr.expand(m.body))
        try:
            value = eval(expr, ns)  # noqa: S307 - our own pinned headers, evaluated at generation time only
        except NameError as e:
            raise Untranslatable(f"refers to {e.name}, which is not defined") from None
        except Exception as e:  # a C expression Python cannot evaluate (pointer arithmetic, casts to structs, ...)
            raise Untranslatable(f"cannot evaluate {expr!r}: {e}") from None
        if isinstance(value, type) or callable(value):
            raise Untranslatable("names a type or function, not a value")
        ns[m.name] = value
        text = f"{m.name} = {_format_value(value, m.body)}"
        plain = len(m.body) == 1 or (len(m.body) == 3 and m.body[0] == "(" and m.body[2] == ")")
        if plain:
            return text
        comment = tidy(m.body)
        return f"{text}  # {comment if len(comment) <= 100 else comment[:97] + '...'}"
    if "..." in m.params:
        raise Untranslatable("variadic macro")
    params = {p: _param_name(p) for p in m.params}
    expr = tr.python(tr.expand(m.body, frozenset(m.params)), params)
    src = f"\ndef {m.name}({', '.join(params.values())}):\n    return {expr}\n"
    trial: dict[str, Any] = dict(ns)
    try:
        exec(src, trial)  # noqa: S102 - see above
        trial[m.name](*([1] * len(params)))
    except NameError as e:
        raise Untranslatable(f"refers to {e.name}, which is not defined") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise Untranslatable(f"cannot evaluate with integer arguments: {e}") from None
    except ArithmeticError:
        pass  # a division by a parameter: valid code, just not for the trial arguments
    ns[m.name] = trial[m.name]
    return src
