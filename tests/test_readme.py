"""README.md's examples run as written on a machine without a GPU, and its tables say what the code does."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """This environment less every BAREGPU_* choice a developer may have made: the README's reader has none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAREGPU_")}
    env["BAREGPU_LOCK_DIR"] = str(tmp_path / "locks")  # a test run's locks never meet a developer's programs
    if "BAREGPU_CACHE_DIR" in os.environ:
        env["BAREGPU_CACHE_DIR"] = os.environ["BAREGPU_CACHE_DIR"]
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("code", [c for lang, c in BLOCKS if lang == "python"], ids=lambda c: c.splitlines()[1][:40])
def test_python_examples_run_as_written(code, tmp_path):
    done = _run([sys.executable, "-c", code], _clean_env(tmp_path))
    assert done.returncode == 0, f"README example failed:\n{code}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.stdout.strip(), "the example printed nothing"


def test_the_emulated_example_runs_as_written(tmp_path, lld):
    shell = [c for lang, c in BLOCKS if lang == "sh" and "BAREGPU_EMULATE=1" in c]
    assert len(shell) == 1, "README should have one emulated tensor example"
    script = shell[0].replace(".venv/bin/python", sys.executable)
    done = _run(["bash", "-c", script], _clean_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[", "0", "2", "4", "6", "8", "10", "12", "14]"]


def test_asking_for_an_amd_gpu_without_one_says_how_to_emulate(tmp_path):
    if os.path.exists("/dev/kfd"):
        pytest.skip("this machine has /dev/kfd: 'AMD' is a real GPU here")
    done = _run([sys.executable, "-c", "from tensor import Tensor; Tensor.arange(3, device='AMD').numpy()"],
                _clean_env(tmp_path))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("drivers.registry.DeviceNotFoundError: device 'AMD' is not here"), last
    assert "Devices here: CPU." in last and "BAREGPU_EMULATE=amd" in last


def test_every_variable_the_code_reads_is_in_the_environment_table():
    read = set()
    for folder in ("hcq", "drivers", "emu", "tensor", "compiler", "tools", "autogen", "firmware"):
        for path in (ROOT / folder).rglob("*.py"):
            read |= set(re.findall(r"\"(BAREGPU_[A-Z_]+)\"", path.read_text()))
    table = set(re.findall(r"^\| `(BAREGPU_[A-Z_]+)` \|", README, re.M))
    assert read - table == set(), f"read by the code but not documented in README.md: {sorted(read - table)}"
    assert table - read == set(), f"documented in README.md but read nowhere: {sorted(table - read)}"


def test_no_link_points_outside_the_repository():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to {target}, which a clone does not contain"
    assert "../shared" not in README
