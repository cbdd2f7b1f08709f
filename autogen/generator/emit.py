"""Generate one bindings module: ctypeslib2 for the types, our macro translator for the #defines, and a
provenance header that says exactly where every line came from and what was left out."""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from autogen.generator import macros as macro_mod
from autogen.generator.fetch import ensure
from autogen.generator.sources import PACKAGES, Target

GENERATOR_VERSION = "1"
SHIM = Path(__file__).resolve().parent.parent / "shim"
OUTPUT_DIR = Path(__file__).resolve().parent.parent


class GenerateError(RuntimeError):
    """A header did not parse or a binding could not be generated; the message has clang's diagnostics."""


def libclang_dir() -> str:
    """The folder holding libclang.so: $CLANG_LIBRARY_PATH, else the one the libclang wheel ships."""
    env = os.environ.get("CLANG_LIBRARY_PATH")
    if env:
        return env
    import clang
    native = Path(clang.__file__).resolve().parent / "native"
    if not (native / "libclang.so").exists():
        raise GenerateError("libclang.so not found: pip install 'baregpu[autogen]' (libclang==18.1.1) "
                            "or set CLANG_LIBRARY_PATH to the folder that holds libclang.so")
    return str(native)


def tool_versions() -> str:
    def v(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "missing"
    return f"baregpu autogen {GENERATOR_VERSION}, ctypeslib2 {v('ctypeslib2')}, libclang {v('libclang')}"


def clang_args(t: Target) -> list[str]:
    args = ["-nostdinc", "--target=x86_64-linux-gnu"]
    for pkg, rel in t.include:
        args.append(f"-I{ensure(pkg) / rel}")
    args += [f"-D{d}" for d in t.defines]
    if t.shim:
        args += [f"-I{SHIM}", "-include", str(SHIM / "kernel_types.h")]
    return args + list(t.extra_args)


def header_paths(t: Target) -> list[Path]:
    root = ensure(t.package)
    paths = [root / h for h in t.headers]
    for p in paths:
        if not p.exists():
            raise GenerateError(f"{t.module}: {p} is missing from {t.package}; is the pinned package complete?")
    return paths


_BOILERPLATE = re.compile(r"class AsDictMixin:.*?\nclass Union\(ctypes\.Union, AsDictMixin\):\n    pass\n", re.S)
# clang2py's fallback for a target word size different from the host's; we only generate for 64-bit hosts.
_POINTER_T = re.compile(r"# if local wordsize is same as target.*?\n        return _class\n", re.S)
_HELPERS = re.compile(r"\n(def string_cast|def char_pointer_cast|class FunctionFactoryStub|c_int128 =|c_uint128 =|"
                      r"c_long_double_t =|class AsDictMixin)")


def run_ctypeslib(t: Target, headers: list[Path]) -> str:
    """Types from ctypeslib2's clang2py, with its boilerplate and machine-specific header lines removed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.py"
        cmd = [str(Path(sys.executable).parent / "clang2py"), "-k", t.types or "", "-o", str(out),
               "--clang-args", " ".join(clang_args(t))]
        if t.type_filter:
            cmd += ["-r", t.type_filter]
        cmd += [str(h) for h in headers]
        env = dict(os.environ, CLANG_LIBRARY_PATH=libclang_dir())
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        errors = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower() and "Source code has" not in ln]
        if proc.returncode != 0 or not out.exists() or "Please fix" in proc.stderr:
            raise GenerateError(f"{t.module}: clang2py failed ({proc.returncode}):\n" + "\n".join(errors or
                                proc.stderr.splitlines()[-20:]))
        text = out.read_text()
    text = _BOILERPLATE.sub("", text, count=1)
    if _HELPERS.search(text):
        raise GenerateError(f"{t.module}: clang2py emitted a helper this generator does not handle "
                            f"({_HELPERS.search(text).group(1)}); extend emit.run_ctypeslib")
    text = _POINTER_T.sub("POINTER_T = ctypes.POINTER\n", text, count=1)
    text = re.sub(r"\n__all__ = \\?\s*\[.*?\]\n", "\n", text, flags=re.S)
    body = [ln for ln in text.splitlines() if not re.match(r"^# (-\*-|TARGET arch|WORD_SIZE|POINTER_SIZE|LONGDOUBLE_SIZE)", ln)
            and ln not in ("import ctypes", "#")]
    return re.sub(r"\n{3,}", "\n\n\n", "\n".join(body)).strip("\n")


def parse_macros(t: Target, headers: list[Path]) -> tuple[list[macro_mod.Macro], dict[str, macro_mod.Macro]]:
    """(macros defined in the target headers in order, every other macro visible to them by name)."""
    import clang.cindex as ci
    if not ci.Config.loaded:
        ci.Config.set_library_path(libclang_dir())
    with tempfile.TemporaryDirectory() as tmp:
        unit = Path(tmp) / "unit.c"
        unit.write_text("".join(f'#include "{h}"\n' for h in headers))
        tu = ci.Index.create().parse(str(unit), args=clang_args(t),
                                     options=ci.TranslationUnit.PARSE_DETAILED_PROCESSING_RECORD |
                                     ci.TranslationUnit.PARSE_SKIP_FUNCTION_BODIES)
        errs = [f"{d.location.file}:{d.location.line}: {d.spelling}" for d in tu.diagnostics
                if d.severity >= ci.Diagnostic.Error]
        if errs:
            raise GenerateError(f"{t.module}: headers do not parse:\n" + "\n".join(errs[:20]))
        found = macro_mod.collect(tu)
    targets = {str(h) for h in headers}
    local = [m for m in found if m.file in targets]
    external = {m.name: m for m in found if m.file not in targets}
    return local, external


def _wrap_list(items: list[str], width: int = 110) -> list[str]:
    return ["#   " + ln for ln in textwrap.wrap(", ".join(items), width - 4)] if items else []


def bindings(t: Any, headers: list[Path]) -> tuple[str, Any]:
    """The ctypes declarations of a target's headers, and its macros translated against them."""
    types = run_ctypeslib(t, headers) if t.types else ""
    namespace: dict[str, Any] = {}
    exec("import ctypes\nfrom autogen.base import Structure, Union\n"  # noqa: S102 - our generated code
         "from autogen.ioctl import _IO, _IOR, _IOW, _IOWR, _IOC\n" + types, namespace)
    local, external = parse_macros(t, headers)
    return types, macro_mod.translate(local, external, namespace, t.macro_keep)


def generate(t: Target) -> str:
    """The full text of a generated module."""
    headers = header_paths(t)
    types, tr = bindings(t, headers)
    pkg = PACKAGES[t.package]
    rel = [str(h.relative_to(ensure(t.package))) for h in headers]
    return module_text(t, [f"# Package: {pkg.name} {pkg.version} ({pkg.arch}), .deb sha256 {pkg.sha256}",
                           *(f"# Header: {r}" for r in rel)], types, tr)


def module_text(t: Any, provenance: list[str], types: str, tr: Any) -> str:
    """A generated module: the do-not-edit line, where its facts come from, the generator and a summary of the
    macros, then the target's docstring, the types and the translated macros."""
    head = [
        "# Generated by `python -m tools.autogen` from pinned sources; do not edit by hand.",
        *provenance,
        f"# Generator: {tool_versions()}",
        f"# Macros: {len(tr.lines)} translated, {len(tr.empty)} defined without a value, "
        f"{len(tr.untranslated)} not translated, {tr.filtered} left out by the filter"
        + (f" {t.macro_filter!r}" if t.macro_filter else ""),
    ]
    if tr.empty:
        head += ["# Defined without a value:", *_wrap_list(tr.empty)]
    if tr.untranslated:
        head.append("# Not translated (name: why):")
        head += [f"#   {k}: {v}"[:160] for k, v in sorted(tr.untranslated.items())]
    parts = ["\n".join(head), f'"""{t.doc}"""', "# ruff: noqa\nimport ctypes\n\nfrom autogen.base import Structure, Union\n"
             "from autogen.ioctl import _IO, _IOC, _IOR, _IOW, _IOWR"]
    if types:
        parts.append(types)
    if tr.lines:
        parts.append("\n".join(tr.lines))
    return "\n\n".join(parts).rstrip() + "\n"


def write(t: Target, out_dir: Path = OUTPUT_DIR) -> Path:
    path = out_dir / f"{t.module}.py"
    path.write_text(generate(t))
    return path
