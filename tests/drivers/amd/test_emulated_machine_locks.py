"""The emulated machine is machine-wide, like a card: processes opening emulated AMD:0 meet its lock; private
machines (tests') meet nobody; a killed holder leaves nothing behind; bad BAREGPU_EMU_AMD values are named.

Children are Python processes opening devices the way users do (BAREGPU_EMULATE=amd and the registry, or the
tensor layer). Every child step waits for a line the child prints, with a bound; no test sleeps and hopes.
"""
from __future__ import annotations

import os
import re
import signal
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from child_process import Child
from drivers.amd.kfd import KFDDevice
from drivers.lock import DeviceBusyError, holder_info
from emu.machine import amd_targets, emulated_system

ROOT = Path(__file__).resolve().parents[3]
STEP_TIMEOUT_S = 20  # a bound for one step of a child (imports and bring-up included), far above what it takes
LABEL = "AMD:0 (gfx1100, PCI 0000:03:00.0, emulated)"
KEY = "emulated-kfd-gpu-4369"  # the first emulated GPU's KFD gpu_id is 0x1111

PRELUDE = """\
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
"""

# Opens emulated AMD:0 through the registry, as a program would, and holds it until a line arrives on stdin.
HOLD = """
from drivers.registry import open_device
dev = open_device("AMD")
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
dev.close()
print("released", flush=True)
"""

# Opens emulated AMD:0 through the tensor layer; says when its first try failed and it starts to wait.
OPEN_THROUGH_TENSORS = """
import tensor
from drivers.lock import DeviceBusyError
real_sleep = time.sleep
def sleep(seconds):
    if not getattr(sleep, "said", False):
        sleep.said = True
        print("waiting", flush=True)
    real_sleep(seconds)
time.sleep = sleep
try:
    start = time.monotonic()
    tensor.memory("AMD")
    print("opened", round(time.monotonic() - start, 3), flush=True)
except DeviceBusyError as e:
    print("refused", e.holder_pid, "|", e, flush=True)
"""


@pytest.fixture
def lock_dir(tmp_path, monkeypatch):
    """This test's own lock directory, for this process and its children, so runs never meet each other."""
    where = tmp_path / "locks"
    monkeypatch.setenv("BAREGPU_LOCK_DIR", str(where))
    for name in ("BAREGPU_LOCK_WAIT", "BAREGPU_EMU_AMD"):
        monkeypatch.delenv(name, raising=False)
    return where


@pytest.fixture
def spawn(lock_dir):
    """Start children on the machine-wide emulated machine (BAREGPU_EMULATE=amd) and this test's lock dir;
    any still running at the end are killed."""
    children: list[Child] = []

    def start(code: str, **env: str) -> Child:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path, BAREGPU_EMULATE="amd", **env)
        children.append(Child(PRELUDE + textwrap.dedent(code), env, STEP_TIMEOUT_S))
        return children[-1]

    yield start
    for c in children:
        c.close()


def test_a_second_process_is_refused_naming_the_emulated_device_and_how_to_wait(spawn):
    holder = spawn(HOLD)
    pid = int(holder.expect("ready").split()[1])
    line = spawn(OPEN_THROUGH_TENSORS).expect("refused")
    msg = line.split("|", 1)[1]
    assert line.startswith(f"refused {pid} |")
    assert msg.strip().startswith(f"device {LABEL} is in use by process {pid} (")
    assert "set BAREGPU_LOCK_WAIT=SECONDS (or pass wait=SECONDS) to wait for it" in msg
    assert KEY not in msg, "the message names the device as users know it, not the lock's key"
    assert "\\n" in msg, "the holder's multi-line -c script is shown on one line, its newlines escaped"
    holder.send("go")
    holder.expect("released")
    assert holder.finish() == 0


def test_with_a_lock_wait_the_second_process_gets_the_device_once_the_first_lets_go(spawn, lock_dir):
    holder = spawn(HOLD)
    pid = int(holder.expect("ready").split()[1])
    waiter = spawn(OPEN_THROUGH_TENSORS, BAREGPU_LOCK_WAIT=str(STEP_TIMEOUT_S))
    waiter.expect("waiting")  # its first try failed: the device is busy and it waits
    assert holder_info(KEY, lock_dir)["pid"] == pid
    holder.send("go")
    holder.expect("released")
    waited = float(waiter.expect("opened").split()[1])
    assert 0 < waited < STEP_TIMEOUT_S
    assert waiter.finish() == 0 and holder.finish() == 0


def _alive(pid: int) -> bool:
    """Whether pid runs (a zombie, dead but not yet reaped by init, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _tmp_entries() -> set[str]:
    return {os.path.join(d, n) for d in {"/tmp", tempfile.gettempdir()} for n in os.listdir(d)}


def _ours(paths: set[str], pid: int) -> list[str]:
    # /tmp is shared with whatever else runs here: only what names baregpu or the killed process is ours.
    return sorted(p for p in paths if "baregpu" in os.path.basename(p) or re.search(rf"(?<!\d){pid}(?!\d)", p))


# HOLD, with the emulated command processor (a process of its own) started, as any submit would.
HOLD_WITH_CP = HOLD.replace('print("ready", os.getpid(), flush=True)',
                            'print("ready", os.getpid(), dev.system.kfd.cp().proc.pid, flush=True)')


def test_a_holder_killed_with_sigkill_frees_the_device_and_leaves_nothing_behind(spawn, lock_dir):
    before = _tmp_entries()
    holder = spawn(HOLD_WITH_CP)
    pid, cp = map(int, holder.expect("ready").split()[1:])
    assert holder_info(KEY, lock_dir)["pid"] == pid
    os.kill(pid, signal.SIGKILL)
    assert holder.proc.wait(STEP_TIMEOUT_S) == -signal.SIGKILL
    assert holder_info(KEY, lock_dir) is None, "the kernel dropped the dead holder's lock"
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while _alive(cp) and time.monotonic() < deadline:  # it sees its control socket close, then exits
        time.sleep(0.05)
    assert not _alive(cp), "the killed holder's emulated command processor must exit too"
    dev = KFDDevice(0, emulated_system("amd"))  # this process now takes the same machine-wide AMD:0
    try:
        assert holder_info(KEY, lock_dir)["pid"] == os.getpid() and dev.lock.label == LABEL
    finally:
        dev.close()
    assert _ours(_tmp_entries() - before, pid) == [], "a killed process must leave nothing in /tmp"
    # Lock files may stay, as for cards (their contents are only information); no folder per process or machine.
    assert [p.name for p in lock_dir.iterdir()] == [f"{KEY}.lock"]


def test_private_machines_meet_nobody(spawn, lock_dir):
    holder = spawn(HOLD)
    pid = int(holder.expect("ready").split()[1])
    one, two = emulated_system("amd", private=True), emulated_system("amd", ("gfx1201",), private=True)
    devs = [KFDDevice(0, one), KFDDevice(0, two)]  # the machine-wide AMD:0 is held; private ones are free
    try:
        assert [d.lock.label for d in devs] == [LABEL, "AMD:0 (gfx1201, PCI 0000:03:00.0, emulated)"]
        with pytest.raises(DeviceBusyError, match=f"device {re.escape(LABEL)} is in use by process {os.getpid()}"):
            KFDDevice(0, one)  # within one private machine, a GPU is still owned once
        with pytest.raises(DeviceBusyError, match=f"in use by process {pid}"):
            KFDDevice(0, emulated_system("amd"))
    finally:
        for d in devs:
            d.close()
    assert holder_info(KEY, lock_dir)["pid"] == pid
    assert [p.name for p in lock_dir.iterdir()] == [f"{KEY}.lock"], "private machines write no lock files"
    holder.send("go")
    holder.expect("released")
    assert holder.finish() == 0


def test_machine_wide_locks_live_in_the_lock_dir_under_keys_of_their_own(lock_dir):
    dev = KFDDevice(0, emulated_system("amd"))
    try:
        assert dev.lock.path == str(lock_dir / f"{KEY}.lock")
        # A real card's KFD gpu_id may equal an emulated one's; its key never carries the "emulated-" prefix.
        assert holder_info("kfd-gpu-4369", lock_dir) is None
    finally:
        dev.close()


@pytest.mark.parametrize("value, problem", [("", "(it is empty)"), (" , ", "(it is empty)"),
                                            ("gfx9999", "('gfx9999' unknown)"),
                                            ("gfx1100,gfx9999", "('gfx9999' unknown)")])
def test_bad_emulated_gpu_lists_are_refused_naming_the_variable_and_the_targets(monkeypatch, value, problem):
    monkeypatch.setenv("BAREGPU_EMU_AMD", value)
    with pytest.raises(ValueError) as e:
        emulated_system("amd")
    msg = str(e.value)
    assert msg.startswith(f"environment variable BAREGPU_EMU_AMD={value!r} is not valid")
    assert "gfx targets from gfx1100, gfx1201, gfx942" in msg and problem in msg
    assert "amdgpu" not in msg, "an emulated machine has no amdgpu to load"


def test_the_emulated_gpu_list_defaults_to_one_gfx1100_and_takes_several(monkeypatch):
    monkeypatch.delenv("BAREGPU_EMU_AMD", raising=False)
    assert amd_targets() == ("gfx1100",)
    monkeypatch.setenv("BAREGPU_EMU_AMD", " gfx1100 , gfx942 ")
    assert amd_targets() == ("gfx1100", "gfx942")
    assert [g.target for g in emulated_system("amd", private=True).kfd.gpus] == ["gfx1100", "gfx942"]
