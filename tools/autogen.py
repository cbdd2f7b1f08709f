"""python -m tools.autogen: regenerate the ctypes bindings in autogen/ from pinned Debian packages.

  python -m tools.autogen            fetch what is missing, regenerate every module
  python -m tools.autogen kfd vfio   regenerate some modules
  python -m tools.autogen --fetch    only download and verify the pinned sources
  python -m tools.autogen --check    regenerate into a temporary folder and diff against the committed files
"""
from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (1 when --check finds a difference)."""
    ap = argparse.ArgumentParser(prog="python -m tools.autogen", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help="modules to generate (default: all)")
    ap.add_argument("--fetch", action="store_true", help="download and verify the pinned sources, generate nothing")
    ap.add_argument("--check", action="store_true", help="diff freshly generated modules against the committed ones")
    ap.add_argument("--list", action="store_true", help="list modules and their sources")
    args = ap.parse_args(argv)

    from autogen.generator.fetch import FetchError, ensure
    from autogen.generator.sources import PACKAGES, TARGETS
    unknown = [m for m in args.modules if m not in TARGETS]
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    targets = [TARGETS[m] for m in (args.modules or TARGETS)]
    if args.list:
        for t in targets:
            print(f"{t.module:14} {t.package:18} {', '.join(t.headers)}")
        return 0
    try:
        for name in sorted({p for t in targets for p in (t.package, *(i[0] for i in t.include))} if not args.fetch
                           else PACKAGES):
            print(f"source {name} {PACKAGES[name].version}: {ensure(name)}", file=sys.stderr)
    except FetchError as e:
        print(f"autogen: {e}", file=sys.stderr)
        return 2
    if args.fetch:
        return 0

    from autogen.generator.emit import OUTPUT_DIR, GenerateError, write
    try:
        if not args.check:
            for t in targets:
                print(f"wrote {write(t)}", file=sys.stderr)
            return 0
        different = 0
        with tempfile.TemporaryDirectory() as tmp:
            for t in targets:
                fresh = write(t, Path(tmp)).read_text()
                committed_path = OUTPUT_DIR / f"{t.module}.py"
                committed = committed_path.read_text() if committed_path.exists() else ""
                if fresh != committed:
                    different += 1
                    sys.stdout.writelines(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True),
                                                               f"committed/{t.module}.py", f"generated/{t.module}.py"))
        print(f"autogen --check: {len(targets) - different} of {len(targets)} modules match", file=sys.stderr)
        return 1 if different else 0
    except GenerateError as e:
        print(f"autogen: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
