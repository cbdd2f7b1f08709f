"""python -m tools.autogen: regenerate the ctypes bindings in autogen/ from pinned Debian packages, and the
NVIDIA ones (autogen/nv_*.py) from our headers in autogen/include/nv (versions pinned in its VERSION file).

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
    from autogen.generator.nv_sources import NV_TARGETS
    from autogen.generator.sources import PACKAGES, TARGETS
    unknown = [m for m in args.modules if m not in TARGETS and m not in NV_TARGETS]
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join([*TARGETS, *NV_TARGETS])}")
    targets = [TARGETS[m] for m in (args.modules or TARGETS) if m in TARGETS]
    nv_targets = [NV_TARGETS[m] for m in (args.modules or NV_TARGETS) if m in NV_TARGETS]
    if args.list:
        for t in targets:
            print(f"{t.module:14} {t.package:18} {', '.join(t.headers)}")
        for o in nv_targets:
            print(f"{o.module:14} {'autogen/include/nv':18} {', '.join(o.headers)}")
        return 0
    try:
        needed = {p for t in [*targets, *(o.target() for o in nv_targets)] for p in (t.package, *(i[0] for i in t.include))}
        for name in sorted(needed if not args.fetch else PACKAGES):
            print(f"source {name} {PACKAGES[name].version}: {ensure(name)}", file=sys.stderr)
    except FetchError as e:
        print(f"autogen: {e}", file=sys.stderr)
        return 2
    if args.fetch:
        return 0

    from autogen.generator import nv_emit
    from autogen.generator.emit import OUTPUT_DIR, GenerateError, write
    # (module, writer) for both kinds; the NVIDIA modules are counted on their own line in --check.
    groups = [("modules", [(t.module, lambda d, t=t: write(t, d)) for t in targets]),
              ("NVIDIA modules (autogen/include/nv)", [(o.module, lambda d, o=o: nv_emit.write(o, d))
                                                       for o in nv_targets])]
    try:
        if not args.check:
            for _, jobs in groups:
                for _, job in jobs:
                    print(f"wrote {job(OUTPUT_DIR)}", file=sys.stderr)
            return 0
        any_different = False
        with tempfile.TemporaryDirectory() as tmp:
            for label, jobs in groups:
                if not jobs:
                    continue
                different = 0
                for module, job in jobs:
                    fresh = job(Path(tmp)).read_text()
                    committed_path = OUTPUT_DIR / f"{module}.py"
                    committed = committed_path.read_text() if committed_path.exists() else ""
                    if fresh != committed:
                        different += 1
                        sys.stdout.writelines(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True),
                                                                   f"committed/{module}.py", f"generated/{module}.py"))
                print(f"autogen --check: {len(jobs) - different} of {len(jobs)} {label} match", file=sys.stderr)
                any_different |= different > 0
        return 1 if any_different else 0
    except GenerateError as e:
        print(f"autogen: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
