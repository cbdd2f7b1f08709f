"""tools/isa_opcodes.py: the committed emu/amd/isa/opcodes.py is what probing LLVM 19 produces today."""
from __future__ import annotations

from pathlib import Path

import pytest

from tools.isa_opcodes import OUTPUT, check, main, missing_tools

needs_llvm = pytest.mark.skipif(bool(missing_tools()), reason="llvm-19 not installed: apt-get install llvm-19")


@needs_llvm
def test_committed_tables_match_a_fresh_probe(capsys: pytest.CaptureFixture[str]) -> None:
    # The full probe of both targets (about 20 s on 2 cores): every encoding class of gfx1100 and gfx1201.
    status = main(["--check"])
    captured = capsys.readouterr()
    assert status == 0, f"opcodes.py is stale; run python -m tools.isa_opcodes\n{captured.out}{captured.err}"


def test_check_prints_a_unified_diff_when_the_file_differs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fresh = OUTPUT.read_text()
    stale = tmp_path / "opcodes.py"
    stale.write_text(fresh.replace("'s_add_u32'", "'s_add_old'", 1))
    assert check(fresh, stale) == 1
    captured = capsys.readouterr()
    assert "'s_add_old'" in captured.out and "'s_add_u32'" in captured.out
    assert captured.out.startswith("--- committed/")
    assert "(+1 -1 lines)" in captured.err
    stale.write_text(fresh)
    assert check(fresh, stale) == 0
