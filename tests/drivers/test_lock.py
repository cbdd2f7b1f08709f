"""Device locks across real processes: refusal naming the holder, bounded waits, dead holders, signals."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from drivers.lock import DeviceBusyError, DeviceLock, holder_info, lock_path

ROOT = Path(__file__).resolve().parents[2]


class Child:
    """A Python child process that runs `code` with the lock dir and reports progress on stdout."""

    def __init__(self, code: str, lock_dir: Path):
        script = "import sys, time, os\nsys.path.insert(0, %r)\nfrom drivers.lock import *\nLOCK_DIR = %r\n" % (
            str(ROOT), str(lock_dir)) + textwrap.dedent(code)
        self.proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)

    def expect(self, word: str, timeout: float = 20) -> str:
        """Read stdout lines until one starts with word; fail (with stderr) if the child exits or stalls."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(word):
                return line.strip()
        self.proc.kill()
        raise AssertionError(f"child never printed {word!r}; stderr:\n{self.proc.stderr.read()}")

    def finish(self, timeout: float = 20) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)

    def send(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()


HOLD = """
lk = DeviceLock("pci-0000:03:00.0", LOCK_DIR).acquire()
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
lk.release()
print("released", flush=True)
"""


def test_acquire_release_and_holder_info(tmp_path):
    with DeviceLock("emu-amd-0", str(tmp_path)) as lk:
        assert lk.held
        info = holder_info("emu-amd-0", str(tmp_path))
        assert info["pid"] == os.getpid() and info["cmdline"] and 0 <= time.time() - info["since"] < 60
    assert not lk.held and holder_info("emu-amd-0", str(tmp_path)) is None
    lk.release()  # twice is fine


def test_second_process_is_refused_with_the_holders_pid(tmp_path):
    with DeviceLock("pci-0000:03:00.0", str(tmp_path)):
        child = Child("""
            try:
                DeviceLock("pci-0000:03:00.0", LOCK_DIR).acquire()
                print("acquired")
            except DeviceBusyError as e:
                print("refused", e.holder_pid, "|", e)
        """, tmp_path)
        line = child.expect("refused")
        assert child.finish() == 0
    assert f"refused {os.getpid()} |" in line and "held for" in line and "wait=SECONDS" in line


def test_holder_in_another_process_is_named(tmp_path):
    child = Child(HOLD, tmp_path)
    pid = int(child.expect("ready").split()[1])
    try:
        with pytest.raises(DeviceBusyError) as e:
            DeviceLock("pci-0000:03:00.0", str(tmp_path)).acquire()
        assert e.value.holder_pid == pid and e.value.held_for_s >= 0
        assert f"process {pid}" in str(e.value)
    finally:
        child.send("go")
        child.expect("released")
        assert child.finish() == 0


def test_bounded_wait_gets_the_device_when_the_holder_lets_go(tmp_path):
    child = Child(HOLD, tmp_path)
    child.expect("ready")
    child.send("go")  # the holder releases while we wait
    lk = DeviceLock("pci-0000:03:00.0", str(tmp_path), wait=20).acquire()
    assert lk.held
    lk.release()
    assert child.finish() == 0


def test_bounded_wait_gives_up_and_says_so(tmp_path):
    child = Child(HOLD, tmp_path)
    child.expect("ready")
    try:
        start = time.monotonic()
        with pytest.raises(DeviceBusyError, match=r"Waited 0\.\d s"):
            DeviceLock("pci-0000:03:00.0", str(tmp_path), wait=0.3).acquire()
        assert time.monotonic() - start < 10  # bounded: not a timing test, a "does not hang" test
    finally:
        child.send("go")
        child.finish()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    child = Child(HOLD, tmp_path)
    child.expect("ready")
    child.proc.kill()
    child.finish()
    assert holder_info("pci-0000:03:00.0", str(tmp_path)) is None
    with DeviceLock("pci-0000:03:00.0", str(tmp_path)) as lk:
        assert lk.held and holder_info("pci-0000:03:00.0", str(tmp_path))["pid"] == os.getpid()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_release_the_device_cleanly(tmp_path, sig):
    marker = tmp_path / "cleaned"
    child = Child(f"""
        lk = DeviceLock("pci-0000:03:00.0", LOCK_DIR).acquire()
        lk.on_release(lambda: open({str(marker)!r}, "w").write("queues closed"))
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
    """, tmp_path)
    child.expect("ready")
    child.proc.send_signal(sig)
    rc = child.finish()
    assert rc != 0, "the child should exit because of the signal"
    assert marker.read_text() == "queues closed", "cleanup must run before the process exits"
    with DeviceLock("pci-0000:03:00.0", str(tmp_path)) as lk:
        assert lk.held


def test_keys_are_independent_and_file_names_are_safe(tmp_path):
    a = DeviceLock("pci-0000:03:00.0", str(tmp_path)).acquire()
    b = DeviceLock("usb-2/1:asm2464", str(tmp_path)).acquire()
    try:
        assert a.held and b.held and a.path != b.path
        for p in (a.path, b.path):
            assert Path(p).parent == tmp_path and "/" not in Path(p).name and ":" not in Path(p).name
    finally:
        a.release()
        b.release()
    assert lock_path("x/../../etc", str(tmp_path)).startswith(str(tmp_path))
