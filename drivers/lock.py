"""Device locks: one process owns one GPU.

Taking a device flocks a file named after it and writes who holds it (PID, command line, start time). The
kernel drops a flock when its holder dies, so a crashed holder leaves no stale lock; the file's old
contents are only information and are overwritten by the next holder. SIGTERM (what CI cancellation
sends) is turned into SystemExit so devices close cleanly, and SIGINT already raises KeyboardInterrupt.
"""
from __future__ import annotations

import atexit
import fcntl
import json
import os
import re
import signal
import sys
import threading
import time
import weakref
from typing import Any, Callable

POLL_START_S, POLL_MAX_S = 0.01, 0.2


class DeviceBusyError(RuntimeError):
    """Another process holds the device; the message names it and says what to do."""

    def __init__(self, key: str, holder: dict[str, Any] | None, waited: float | None):
        self.key = key
        self.holder_pid = holder.get("pid") if holder else None
        self.holder_cmdline = holder.get("cmdline") if holder else None
        self.held_for_s = time.time() - holder["since"] if holder and "since" in holder else None
        who = (f"process {self.holder_pid} ({self.holder_cmdline})" if holder else "another process (its details "
               "could not be read)")
        held = f", held for {self.held_for_s:.1f} s" if self.held_for_s is not None else ""
        waited_txt = f" Waited {waited:.1f} s for it." if waited else ""
        hint = ("stop that process, or pass wait=SECONDS to wait for it" if not waited
                else "stop that process or wait longer")
        super().__init__(f"device {key} is in use by {who}{held}.{waited_txt} To use it: {hint}.")


def default_lock_dir() -> str:
    """$BAREGPU_LOCK_DIR, else /run/lock/baregpu (tmpfs, cleared at boot), else /tmp/baregpu-locks."""
    env = os.environ.get("BAREGPU_LOCK_DIR")
    if env:
        return env
    if os.access("/run/lock", os.W_OK):
        return "/run/lock/baregpu"
    return "/tmp/baregpu-locks"


def lock_path(key: str, lock_dir: str | None = None) -> str:
    """The lock file of a device key such as 'pci-0000:03:00.0'; unsafe characters become '_'."""
    safe = re.sub(r"[^A-Za-z0-9._:-]", "_", key).replace(":", "_")
    return os.path.join(lock_dir or default_lock_dir(), f"{safe}.lock")


def _ensure_dir(path: str) -> None:
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        try:
            os.chmod(path, 0o1777)  # shared between users, like /tmp: everyone may lock, nobody may delete others'
        except PermissionError:
            pass


def _read_holder(fd: int) -> dict[str, Any] | None:
    for _ in range(3):  # the holder writes right after it locks; give a racing reader a moment
        try:
            raw = os.pread(fd, 4096, 0)
            if raw.strip():
                return json.loads(raw)
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    return None


def holder_info(key: str, lock_dir: str | None = None) -> dict[str, Any] | None:
    """Who holds the device now (pid, cmdline, since, started), or None if nobody does."""
    path = lock_path(key, lock_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# The set of locks this process holds. It is process-global because signals and exit are process-wide.
_held: "weakref.WeakSet[DeviceLock]" = weakref.WeakSet()
_install_lock = threading.Lock()
_handler_installed = False


def _release_all() -> None:
    for lk in list(_held):
        lk.release()


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _install_exit_hooks() -> None:
    global _handler_installed
    with _install_lock:
        if _handler_installed:
            return
        _handler_installed = True
        atexit.register(_release_all)
        # Only take over SIGTERM if nobody else did, and only from the main thread (Python's rule).
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)


class DeviceLock:
    """An exclusive, process-owned lock on one device; `wait` opts in to a bounded wait for the holder."""

    def __init__(self, key: str, lock_dir: str | None = None, wait: float | None = None):
        self.key = key
        self.lock_dir = lock_dir or default_lock_dir()
        self.path = lock_path(key, self.lock_dir)
        self.wait = wait
        self._fd: int | None = None
        self._callbacks: list[Callable[[], None]] = []

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "DeviceLock":
        """Take the device or raise DeviceBusyError naming the holder (after waiting, if wait was given)."""
        if self._fd is not None:
            return self
        _ensure_dir(self.lock_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            os.fchmod(fd, 0o666)
        except PermissionError:
            pass  # another user created it; it is already shared
        start = time.monotonic()
        delay = POLL_START_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if self.wait is None or waited >= self.wait:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise DeviceBusyError(self.key, holder, waited if self.wait else None) from None
                time.sleep(min(delay, self.wait - waited))
                delay = min(delay * 2, POLL_MAX_S)
        info = {"pid": os.getpid(), "cmdline": _cmdline(), "since": time.time(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        _install_exit_hooks()
        _held.add(self)
        return self

    def on_release(self, callback: Callable[[], None]) -> None:
        """Run callback (e.g. close the device's queues) before the lock is dropped; last registered runs first."""
        self._callbacks.append(callback)

    def release(self) -> None:
        """Run the release callbacks, clear the holder info and unlock; safe to call twice."""
        if self._fd is None:
            return
        callbacks, self._callbacks = self._callbacks[::-1], []
        try:
            for cb in callbacks:
                cb()
        finally:
            fd, self._fd = self._fd, None
            _held.discard(self)
            try:
                os.ftruncate(fd, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def __enter__(self) -> "DeviceLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"DeviceLock({self.key!r}, {'held' if self.held else 'free'})"


def _cmdline() -> str:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            return " ".join(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
    except OSError:
        return " ".join(sys.argv)
