"""Device locks across real processes: refusal naming the holder, bounded waits, dead holders, signals.

Children are Python processes running short scripts. The test never sleeps and hopes: it waits (with a
bound) for a line the child prints once it has reached a point, and every process wait has a timeout.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import re
import signal
import stat
import textwrap
import threading
import time
from pathlib import Path

import pytest

from child_process import Child
from drivers.lock import (POLL_MAX_S, POLL_START_S, DeviceBusyError, DeviceLock, ProcessLocks, default_lock_dir,
                          holder_info, lock_path)

ROOT = Path(__file__).resolve().parents[2]
KEY = "pci-0000:03:00.0"
STEP_TIMEOUT_S = 10  # a bound for one step of a child, far above what any step takes

# The child's prelude puts SIGINT and SIGTERM back to Python's defaults: a test runner started in the
# background may pass them on ignored, and the signal tests are about the defaults.
PRELUDE = """\
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
from drivers.lock import *
LOCK_DIR = {lock_dir!r}
KEY = {key!r}
"""


def child(code: str, lock_dir: Path) -> Child:
    """A Python child running PRELUDE (with this test's lock dir) and then code."""
    script = PRELUDE.format(lock_dir=str(lock_dir), key=KEY) + textwrap.dedent(code)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return Child(script, env, STEP_TIMEOUT_S)


# How this process was started, as /proc shows it (pytest, or a pytest-xdist worker's python).
with open("/proc/self/cmdline", "rb") as _f:
    ARGV0 = _f.read().split(b"\0")[0].decode()


@pytest.fixture(autouse=True)
def no_wait_from_the_environment(monkeypatch):
    """A developer's BAREGPU_LOCK_WAIT must not turn these refusals into waits (children inherit this too)."""
    monkeypatch.delenv("BAREGPU_LOCK_WAIT", raising=False)


@pytest.fixture
def spawn(tmp_path):
    """Start children that use this test's own lock dir; any still running at the end are killed."""
    children: list[Child] = []

    def start(code: str) -> Child:
        children.append(child(code, tmp_path))
        return children[-1]

    yield start
    for c in children:
        c.close()


# Holds KEY until a line arrives on stdin, then releases it and says so.
HOLD = """
lk = DeviceLock(KEY, LOCK_DIR).acquire()
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
lk.release()
print("released", flush=True)
"""


# 1. in one process

def test_acquire_release_context_manager_and_holder_info(tmp_path):
    lk = DeviceLock("emu-amd-0", tmp_path)
    assert not lk.held and holder_info("emu-amd-0", tmp_path) is None
    with lk:
        assert lk.held and lk.acquire() is lk  # taking it again through the same object is a no-op
        info = holder_info("emu-amd-0", tmp_path)
        assert info["pid"] == os.getpid() and info["key"] == "emu-amd-0" and ARGV0 in info["cmdline"]
        assert 0 <= time.time() - info["since"] < 60
        assert abs(datetime.datetime.fromisoformat(info["started"]).timestamp() - info["since"]) < 0.01
        assert json.loads(Path(lk.path).read_text()) == info
    assert not lk.held and holder_info("emu-amd-0", tmp_path) is None
    assert Path(lk.path).read_text() == ""  # release clears the holder info
    lk.release()  # twice is fine
    lk.acquire()  # and the same object can take it again
    lk.release()


def test_a_second_lock_in_the_same_process_is_refused_and_says_so(tmp_path):
    with DeviceLock("emu-amd-0", tmp_path):
        with pytest.raises(DeviceBusyError, match="this process already holds it") as e:
            DeviceLock("emu-amd-0", tmp_path).acquire()
        assert e.value.holder_pid == os.getpid()


def test_release_callbacks_run_last_first_and_the_lock_goes_even_if_one_fails(tmp_path):
    order = []
    lk = DeviceLock("emu-amd-0", tmp_path).acquire()
    lk.on_release(lambda: order.append("first registered"))
    lk.on_release(lambda: 1 / 0)
    lk.on_release(lambda: (order.append("last registered"), lk.release()))  # a device's close may release too
    with pytest.raises(ZeroDivisionError):
        lk.release()
    assert order == ["last registered", "first registered"] and not lk.held
    assert holder_info("emu-amd-0", tmp_path) is None
    lk.release()  # the callbacks ran once
    assert order == ["last registered", "first registered"]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="wait"):
        DeviceLock("emu-amd-0", "/nonexistent", wait=-1)
    with pytest.raises(ValueError, match="key"):
        lock_path("", "/nonexistent")


# 2. refusal across processes

def test_a_second_process_is_refused_naming_the_holder(tmp_path, spawn):
    with DeviceLock(KEY, tmp_path):
        child = spawn("""
            try:
                DeviceLock(KEY, LOCK_DIR).acquire()
                print("acquired", flush=True)
            except DeviceBusyError as e:
                print("refused", e.holder_pid, "|", e, flush=True)
        """)
        line = child.expect("refused")
        assert child.finish() == 0
    msg = line.split("|", 1)[1]
    assert line.startswith(f"refused {os.getpid()} |")
    assert f"device {KEY}" in msg and f"process {os.getpid()} ({ARGV0}" in msg
    assert re.search(r"held for \d+\.\d s", msg)
    assert "stop that process, or set BAREGPU_LOCK_WAIT=SECONDS (or pass wait=SECONDS) to wait for it" in msg


def test_the_parent_is_refused_by_a_holding_child(tmp_path, spawn):
    child = spawn(HOLD)
    pid = int(child.expect("ready").split()[1])
    with pytest.raises(DeviceBusyError) as e:
        DeviceLock(KEY, tmp_path).acquire()
    err = e.value
    assert err.holder_pid == pid and "-c" in err.holder_cmdline and 0 <= err.held_for_s < 60
    assert err.waited_s is None and f"process {pid}" in str(err) and "held for" in str(err)
    child.send("go")
    child.expect("released")
    assert child.finish() == 0
    with DeviceLock(KEY, tmp_path) as lk:
        assert lk.held


# 3. bounded waits

def test_a_bounded_wait_gets_the_device_when_the_holder_lets_go(tmp_path, spawn, monkeypatch):
    child = spawn(HOLD)
    child.expect("ready")
    real_sleep, pauses = time.sleep, []

    def sleep(seconds: float) -> None:
        if not pauses:  # the first try failed and the waiter pauses: now the holder lets go
            child.send("go")
            child.expect("released")
        pauses.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    with DeviceLock(KEY, tmp_path, wait=10) as lk:
        assert lk.held and holder_info(KEY, tmp_path)["pid"] == os.getpid()
    assert pauses == [POLL_START_S]  # it did wait: one failed try, one pause, then the device was ours
    assert child.finish() == 0


def test_a_bounded_wait_backs_off_then_gives_up_and_says_so(tmp_path, spawn, monkeypatch):
    child = spawn(HOLD)
    pid = int(child.expect("ready").split()[1])
    real_sleep, pauses = time.sleep, []
    monkeypatch.setattr(time, "sleep", lambda s: (pauses.append(s), real_sleep(s)))

    start = time.monotonic()
    with pytest.raises(DeviceBusyError) as e:
        DeviceLock(KEY, tmp_path, wait=0.3).acquire()
    elapsed = time.monotonic() - start
    assert 0.3 <= elapsed < 5  # bounded: this is a "does not hang" check, not a timing test
    msg = str(e.value)
    assert e.value.holder_pid == pid and e.value.waited_s >= 0.3
    assert re.search(r"Waited 0\.\d s for it", msg)
    assert "set a longer BAREGPU_LOCK_WAIT=SECONDS (or pass a longer wait=SECONDS)" in msg

    pauses.clear()
    with pytest.raises(DeviceBusyError):
        DeviceLock(KEY, tmp_path, wait=0.6).acquire()
    # Doubling from 10 ms, capped at 200 ms; the last pause is cut to the deadline.
    assert pauses[:6] == pytest.approx([POLL_START_S * 2 ** i for i in range(5)] + [POLL_MAX_S])
    assert max(pauses) == pytest.approx(POLL_MAX_S) and sum(pauses) == pytest.approx(0.6, abs=0.05)

    child.send("go")
    child.expect("released")
    assert child.finish() == 0


# 4. dead holders

def test_a_killed_holder_leaves_no_stale_lock(tmp_path, spawn):
    child = spawn(HOLD)
    pid = int(child.expect("ready").split()[1])
    child.proc.send_signal(signal.SIGKILL)
    assert child.finish() == -signal.SIGKILL
    path = Path(lock_path(KEY, tmp_path))
    assert json.loads(path.read_text())["pid"] == pid  # its info is still there, but nobody holds the lock
    assert holder_info(KEY, tmp_path) is None
    with DeviceLock(KEY, tmp_path) as lk:
        assert lk.held and json.loads(path.read_text())["pid"] == os.getpid()


def test_a_dead_holders_longer_info_is_overwritten_not_appended_to(tmp_path):
    path = Path(lock_path(KEY, tmp_path))
    path.write_text(json.dumps({"pid": 1, "cmdline": "x" * 10000, "since": 0}))
    assert holder_info(KEY, tmp_path) is None
    with DeviceLock(KEY, tmp_path):
        info = json.loads(path.read_text())  # a tail of the old JSON would not parse
        assert info["pid"] == os.getpid() and info == holder_info(KEY, tmp_path)


def test_an_empty_or_half_written_holder_file_reads_as_unknown(tmp_path):
    path = lock_path(KEY, tmp_path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held by "someone" who has not written (all) of their info yet
        for contents in (b"", b'{"pid": 12'):
            os.ftruncate(fd, 0)
            os.pwrite(fd, contents, 0)
            info = holder_info(KEY, tmp_path)
            assert info["pid"] is None and info["cmdline"] == "unknown"
            with pytest.raises(DeviceBusyError, match="could not be read") as e:
                DeviceLock(KEY, tmp_path).acquire()
            assert e.value.holder_pid is None and e.value.holder_cmdline == "unknown" and path in str(e.value)
    finally:
        os.close(fd)
    with DeviceLock(KEY, tmp_path) as lk:
        assert lk.held


# 5, 6. signals

@pytest.mark.parametrize("sig, statuses", [(signal.SIGTERM, {128 + signal.SIGTERM, -signal.SIGTERM}),
                                           (signal.SIGINT, {128 + signal.SIGINT, -signal.SIGINT, 1})],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_releases_the_device_cleanly(tmp_path, spawn, sig, statuses):
    marker = tmp_path / "queues-closed"
    child = spawn(f"""
        lk = DeviceLock(KEY, LOCK_DIR).acquire()
        lk.on_release(lambda: open({str(marker)!r}, "w").write("closed"))
        print("ready", flush=True)
        while True:
            time.sleep(0.05)
    """)
    child.expect("ready")
    child.proc.send_signal(sig)
    assert child.finish() in statuses
    assert marker.read_text() == "closed", "the release callback must run before the process exits"
    assert holder_info(KEY, tmp_path) is None
    with DeviceLock(KEY, tmp_path) as lk:  # at once, no wait
        assert lk.held


def test_sigterm_handler_is_installed_only_from_the_main_thread_and_only_over_the_default(spawn):
    child = spawn("""
        import threading
        t = threading.Thread(target=lambda: DeviceLock("a", LOCK_DIR).acquire())
        t.start(); t.join()
        print("after-thread", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
        DeviceLock("b", LOCK_DIR).acquire()
        print("after-main", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
    """)
    assert child.expect("after-thread") == "after-thread True"
    assert child.expect("after-main") == "after-main False"
    assert child.finish() == 0

    child = spawn("""
        def mine(signum, frame):
            pass
        signal.signal(signal.SIGTERM, mine)
        DeviceLock("a", LOCK_DIR).acquire()
        print("kept", signal.getsignal(signal.SIGTERM) is mine, flush=True)
    """)
    assert child.expect("kept") == "kept True"
    assert child.finish() == 0


# children of the holder

def test_a_forked_child_neither_holds_nor_frees_the_parents_lock(tmp_path, spawn):
    child = spawn("""
        lk = DeviceLock(KEY, LOCK_DIR).acquire()
        pid = os.fork()
        if pid == 0:
            print("forked-held", lk.held, flush=True)
            sys.exit(0)  # runs atexit in the forked child: it must not unlock the shared file description
        os.waitpid(pid, 0)
        print("ready", os.getpid(), flush=True)
        sys.stdin.readline()
    """)
    assert child.expect("forked-held") == "forked-held False"
    pid = int(child.expect("ready").split()[1])
    assert holder_info(KEY, tmp_path)["pid"] == pid
    with pytest.raises(DeviceBusyError) as e:
        DeviceLock(KEY, tmp_path).acquire()
    assert e.value.holder_pid == pid
    child.send("go")
    assert child.finish() == 0
    assert holder_info(KEY, tmp_path) is None


def test_a_spawned_child_does_not_inherit_the_lock(tmp_path, spawn):
    """Even with close_fds=False the lock's fd is close-on-exec, so the holder's exit frees the device."""
    child = spawn("""
        import subprocess
        lk = DeviceLock(KEY, LOCK_DIR).acquire()
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], close_fds=False,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("ready", g.pid, flush=True)
        os._exit(0)  # no cleanup: only the kernel can drop the lock, and only if no child kept the fd
    """)
    grandchild = int(child.expect("ready").split()[1])
    try:
        assert child.finish() == 0
        os.kill(grandchild, 0)  # still alive, so a leaked fd would still hold the lock
        with DeviceLock(KEY, tmp_path) as lk:
            assert lk.held
    finally:
        try:
            os.kill(grandchild, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone


# 7. keys and files

def test_keys_are_independent_and_file_names_are_safe(tmp_path):
    keys = ["pci-0000:03:00.0", "kfd-gpu-48123", "emu-amd-0", "usb-2/1:asm2464", "../../etc/passwd", "a:b", "a_b"]
    locks = [DeviceLock(k, tmp_path).acquire() for k in keys]
    try:
        assert all(lk.held for lk in locks) and len({lk.path for lk in locks}) == len(keys)
        for lk in locks:
            name = Path(lk.path).name
            assert Path(lk.path).parent == tmp_path and not name.startswith(".") and ":" not in name
            assert holder_info(lk.key, tmp_path)["key"] == lk.key
        assert Path(lock_path("kfd-gpu-48123", tmp_path)).name == "kfd-gpu-48123.lock"  # safe keys stay readable
    finally:
        for lk in locks:
            lk.release()


def test_the_lock_dir_is_made_shared_and_sticky_and_follows_the_environment(tmp_path, monkeypatch):
    where = tmp_path / "made" / "here"
    old_umask = os.umask(0o077)  # a strict umask must not make the dir or the files private
    try:
        with DeviceLock("emu-amd-0", where) as lk:
            assert stat.S_IMODE(os.stat(where).st_mode) == 0o1777
            assert stat.S_IMODE(os.stat(lk.path).st_mode) == 0o666
    finally:
        os.umask(old_umask)
    monkeypatch.setenv("BAREGPU_LOCK_DIR", str(tmp_path / "env"))
    assert DeviceLock("emu-amd-0").lock_dir == str(tmp_path / "env")
    assert lock_path("emu-amd-0") == str(tmp_path / "env" / "emu-amd-0.lock")
    monkeypatch.delenv("BAREGPU_LOCK_DIR")
    assert default_lock_dir() in ("/run/lock/baregpu", "/tmp/baregpu-locks")


# 8. labels, BAREGPU_LOCK_WAIT, process-local lock spaces

LABEL = "AMD:0 (gfx1100, PCI 0000:03:00.0)"


def test_messages_name_the_device_by_its_label_and_the_file_by_its_key(tmp_path):
    with DeviceLock(KEY, tmp_path, label=LABEL) as lk:
        assert holder_info(KEY, tmp_path)["label"] == LABEL and lk.path == lock_path(KEY, tmp_path)
        with pytest.raises(DeviceBusyError) as e:
            DeviceLock(KEY, tmp_path, label=LABEL).acquire()
    assert str(e.value).startswith(f"device {LABEL} is in use by process {os.getpid()}")
    assert e.value.label == LABEL and e.value.key == KEY
    with DeviceLock(KEY, tmp_path):  # no label: the key names it, as before
        with pytest.raises(DeviceBusyError, match=f"^device {re.escape(KEY)} is in use"):
            DeviceLock(KEY, tmp_path).acquire()


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf"])
def test_a_bad_lock_wait_in_the_environment_is_refused_naming_it(tmp_path, monkeypatch, value):
    monkeypatch.setenv("BAREGPU_LOCK_WAIT", value)
    with pytest.raises(ValueError, match=f"BAREGPU_LOCK_WAIT={re.escape(repr(value))} is not valid: it takes a "
                                         "number of seconds greater than 0") as e:
        DeviceLock(KEY, tmp_path)
    assert e.value.name == "BAREGPU_LOCK_WAIT"
    assert DeviceLock(KEY, tmp_path, wait=1).wait == 1, "an explicit wait= does not read the variable"


def test_the_lock_wait_from_the_environment_waits_for_the_holder(tmp_path, spawn, monkeypatch):
    child = spawn(HOLD)
    pid = int(child.expect("ready").split()[1])
    monkeypatch.setenv("BAREGPU_LOCK_WAIT", "0.3")
    assert DeviceLock(KEY, tmp_path).wait == 0.3
    with pytest.raises(DeviceBusyError) as e:
        DeviceLock(KEY, tmp_path).acquire()
    assert e.value.holder_pid == pid and e.value.waited_s >= 0.3 and "set a longer BAREGPU_LOCK_WAIT" in str(e.value)
    monkeypatch.setenv("BAREGPU_LOCK_WAIT", "30")
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:  # the first failed try is the moment the holder lets go
        child.send("go")
        child.expect("released")
        monkeypatch.setattr(time, "sleep", real_sleep)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)
    with DeviceLock(KEY, tmp_path) as lk:
        assert lk.held and holder_info(KEY, tmp_path)["pid"] == os.getpid()
    assert child.finish() == 0


def test_a_process_lock_space_refuses_a_second_holder_and_touches_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("BAREGPU_LOCK_DIR", str(tmp_path / "never"))
    space, other = ProcessLocks("one"), ProcessLocks("two")
    with DeviceLock(KEY, space, label=LABEL) as lk:
        assert lk.held and lk.path is None and lk.lock_dir is None and "space=ProcessLocks('one'" in repr(lk)
        info = holder_info(KEY, space)
        assert info["pid"] == os.getpid() and info["label"] == LABEL and ARGV0 in info["cmdline"]
        with pytest.raises(DeviceBusyError, match=f"device {re.escape(LABEL)} is in use by process {os.getpid()}.*"
                                                  "this process already holds it") as e:
            DeviceLock(KEY, space, label=LABEL).acquire()
        assert e.value.path is None and e.value.waited_s is None
        with DeviceLock(KEY, other):  # another space is another machine
            assert holder_info(KEY, other)["pid"] == os.getpid()
        with DeviceLock(KEY, tmp_path):  # and a lock directory is another world
            pass
    assert holder_info(KEY, space) is None and not (tmp_path / "never").exists()
    with pytest.raises(ValueError, match="key"):
        DeviceLock("", space)


def test_a_process_lock_space_waits_for_another_thread_within_the_bound(tmp_path):
    space = ProcessLocks()
    holder = DeviceLock(KEY, space).acquire()
    with pytest.raises(DeviceBusyError, match=r"Waited 0\.\d s") as e:
        DeviceLock(KEY, space, wait=0.2).acquire()
    assert e.value.waited_s >= 0.2
    waiter_started = threading.Event()
    got: list[DeviceLock] = []

    def wait_for_it() -> None:
        waiter_started.set()
        got.append(DeviceLock(KEY, space, wait=STEP_TIMEOUT_S).acquire())

    t = threading.Thread(target=wait_for_it)
    t.start()
    assert waiter_started.wait(STEP_TIMEOUT_S)
    holder.release()  # whether the waiter is already waiting or not, it must get the device now
    t.join(STEP_TIMEOUT_S)
    assert not t.is_alive() and got and got[0].held and holder_info(KEY, space)["pid"] == os.getpid()
    got[0].release()


def test_a_forked_child_does_not_inherit_a_process_lock_space_holder(tmp_path):
    space = ProcessLocks()
    with DeviceLock(KEY, space):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its copy of the space is free, and it may take it
            try:
                ok = holder_info(KEY, space) is None and DeviceLock(KEY, space).acquire().held
                os.write(w, b"1" if ok else b"0")
            finally:
                os._exit(0)
        os.close(w)
        try:
            assert os.read(r, 1) == b"1"
        finally:
            os.close(r)
            os.waitpid(pid, 0)
        assert holder_info(KEY, space)["pid"] == os.getpid(), "the child's release must not free the parent's"
