"""Device locks: one process owns one GPU.

Taking a device flocks a file named after it and writes who holds it (PID, command line, start time) into
that file as JSON. The kernel drops a flock when its holder dies, so a crashed or killed holder leaves no
stale lock: the file's old contents are only information, and the next holder overwrites them. A second
process is refused at once with a `DeviceBusyError` that names the holder, unless it opts in to a bounded
wait (`wait=SECONDS`, or BAREGPU_LOCK_WAIT=SECONDS for programs that cannot pass it, such as the tensor layer).
Messages name the device by a label users know (`AMD:0 (gfx1100, PCI 0000:03:00.0)`); the key stays the
lock file's stable identity. A `ProcessLocks` space instead of a directory keeps locks inside this process:
private emulated machines use one, since nothing outside the process can reach their GPUs. SIGTERM (what CI
cancellation sends) is turned into SystemExit so that `finally` blocks and `atexit` release devices cleanly;
SIGINT already raises KeyboardInterrupt.

    with DeviceLock("pci-0000:03:00.0", label="AMD:0 (gfx1100, PCI 0000:03:00.0)") as lk:
        lk.on_release(device.close)   # runs before the lock goes, also on SIGTERM/SIGINT/exit
        ...
"""
from __future__ import annotations

import atexit
import datetime
import fcntl
import hashlib
import json
import os
import re
import shlex
import signal
import stat
import sys
import threading
import time
import weakref
from typing import Any, Callable

from hcq.env import env_seconds, raw

__all__ = ["DeviceBusyError", "DeviceLock", "ProcessLocks", "holder_info", "lock_path", "default_lock_dir",
           "LOCK_WAIT_ENV", "POLL_START_S", "POLL_MAX_S"]

LOCK_WAIT_ENV = "BAREGPU_LOCK_WAIT"  # seconds to wait for a busy device when the caller passes no wait=

POLL_START_S = 0.01  # first pause of a bounded wait; doubles after each failed try
POLL_MAX_S = 0.2  # longest pause: a freed device is noticed within this
_READ_TRIES = 3  # a holder writes its info right after it locks; a racing reader retries this often
_READ_PAUSE_S = 0.005
_MAX_INFO_BYTES = 64 * 1024
_MAX_CMDLINE_CHARS = 2000  # keeps the info file and error messages readable
_MAX_NAME_CHARS = 100  # file names stay well under NAME_MAX even with the hash suffix
UNKNOWN = "unknown"


class DeviceBusyError(RuntimeError):
    """Another process holds the device. The message names the holder and says what to do.

    Attributes: key, label (the device as users know it; the key when none was given), path (the lock file,
    None for a ProcessLocks space), holder_pid (int or None when the holder could not be read), holder_cmdline
    (str, "unknown" when it could not be read), held_for_s (float or None), waited_s (float, or None when no
    wait was asked for).
    """

    def __init__(self, key: str, holder: dict[str, Any] | None, waited_s: float | None = None,
                 path: str | None = None, label: str | None = None):
        self.key = key
        self.label = label or key
        self.path = path
        self.waited_s = waited_s
        holder = holder or {}
        pid = holder.get("pid")
        self.holder_pid: int | None = pid if isinstance(pid, int) else None
        self.holder_cmdline: str = str(holder.get("cmdline") or UNKNOWN)
        since = holder.get("since")
        # Wall clocks can step backwards; a negative duration would only confuse.
        self.held_for_s: float | None = max(0.0, time.time() - since) if isinstance(since, (int, float)) else None
        super().__init__(self._message())

    def _message(self) -> str:
        if self.holder_pid is None:
            where = f" (`fuser -v {self.path}` lists it)" if self.path else ""
            who = f"another process whose details could not be read{where}"
        else:
            # A `python -c` script's newlines would break the message over lines: show them escaped instead.
            shown = re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], self.holder_cmdline)
            who = f"process {self.holder_pid} ({shown})"
        held = f", held for {self.held_for_s:.1f} s" if self.held_for_s is not None else ""
        waited = f" Waited {self.waited_s:.1f} s for it." if self.waited_s is not None else ""
        if self.holder_pid == os.getpid():
            todo = "this process already holds it through another DeviceLock or device object: close that one first"
        elif self.waited_s is not None:
            todo = f"stop that process, or set a longer {LOCK_WAIT_ENV}=SECONDS (or pass a longer wait=SECONDS)"
        else:
            todo = f"stop that process, or set {LOCK_WAIT_ENV}=SECONDS (or pass wait=SECONDS) to wait for it"
        return f"device {self.label} is in use by {who}{held}.{waited} To use it: {todo}."


def default_lock_dir() -> str:
    """$BAREGPU_LOCK_DIR, else /run/lock/baregpu (tmpfs, cleared at boot) if /run/lock is writable,
    else /tmp/baregpu-locks."""
    env = raw("BAREGPU_LOCK_DIR")
    if env:
        return env
    if os.access("/run/lock", os.W_OK | os.X_OK):
        return "/run/lock/baregpu"
    return "/tmp/baregpu-locks"


def lock_path(key: str, lock_dir: str | os.PathLike[str] | None = None) -> str:
    """The lock file of a device key such as 'pci-0000:03:00.0'.

    Characters other than letters, digits, '.', '_' and '-' become '_'; when anything was replaced a short
    hash of the key is appended, so two keys never share a file and no key can name a path outside lock_dir.
    """
    if not key:
        raise ValueError("a device lock needs a non-empty key")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", key).lstrip(".")[:_MAX_NAME_CHARS] or "_"
    if safe != key:
        safe += "-" + hashlib.sha256(key.encode()).hexdigest()[:10]
    return os.path.join(os.fspath(lock_dir) if lock_dir else default_lock_dir(), safe + ".lock")


class ProcessLocks:
    """A lock space only this process can see, used instead of a lock directory: a private emulated machine's.

    Its GPUs live in this process's memory, so no other process can open them; keeping their locks in memory
    too means they can never meet another process's, and a killed process leaves no file, folder or socket
    behind. Within the process a second holder is refused, or waits, exactly as with lock files.
    """

    def __init__(self, name: str = "private"):
        self.name = name
        self._holders: dict[str, dict[str, Any]] = {}
        self._cv = threading.Condition()
        with _state_mutex:
            _spaces.add(self)

    def holder(self, key: str) -> dict[str, Any] | None:
        """The holder's info (as holder_info gives it), or None when nobody in this process holds `key`."""
        with self._cv:
            info = self._holders.get(key)
            return dict(info) if info is not None else None

    def _forget_after_fork(self) -> None:
        # The child's copy of the space is held by nobody: the holders were the parent's objects.
        self._cv = threading.Condition()
        self._holders.clear()

    def __repr__(self) -> str:
        return f"ProcessLocks({self.name!r}, held={sorted(self._holders)})"


def holder_info(key: str, lock_dir: str | os.PathLike[str] | ProcessLocks | None = None) -> dict[str, Any] | None:
    """Who holds the device now, as the holder wrote it (pid, cmdline, since, started, key, label), or None if
    nobody holds it. A holder whose file is empty or unreadable is reported with pid None and cmdline
    "unknown"."""
    if isinstance(lock_dir, ProcessLocks):
        return lock_dir.holder(key)
    path = lock_path(key, lock_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        # A shared probe that fails means someone holds it exclusively; the holder itself is never disturbed.
        if _try_flock(fd, fcntl.LOCK_SH):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        return _read_holder(fd) or {"pid": None, "cmdline": UNKNOWN, "since": None, "started": None, "key": key}
    finally:
        os.close(fd)


class DeviceLock:
    """An exclusive, process-owned lock on one device.

    `acquire()` takes the device or raises DeviceBusyError at once; `wait=SECONDS` (or, when wait is not
    given, the environment's BAREGPU_LOCK_WAIT=SECONDS) opts in to polling for at most that long. `label`
    names the device in messages as users know it; `lock_dir` may be a ProcessLocks space instead of a
    directory. Locks are released by `release()`, by leaving a `with` block, at interpreter exit,
    on SIGTERM/SIGINT (through SystemExit/KeyboardInterrupt), and by the kernel if the process dies.
    A held lock that is dropped without release stays held until the process exits. A child made with
    fork() does not inherit it, and exec'd children never see the file descriptor.
    """

    def __init__(self, key: str, lock_dir: str | os.PathLike[str] | ProcessLocks | None = None,
                 wait: float | None = None, label: str | None = None):
        if wait is not None and not wait >= 0:
            raise ValueError(f"wait must be None or a number of seconds >= 0, got {wait!r}")
        if wait is None:
            wait = env_seconds(LOCK_WAIT_ENV, None)
        self.key = key
        self.label = label or key
        self.space = lock_dir if isinstance(lock_dir, ProcessLocks) else None
        if self.space is not None:
            if not key:
                raise ValueError("a device lock needs a non-empty key")
            self.lock_dir: str | None = None
            self.path: str | None = None
        else:
            self.lock_dir = os.fspath(lock_dir) if lock_dir else default_lock_dir()
            self.path = lock_path(key, self.lock_dir)
        self.wait = wait
        self._fd: int | None = None
        self._in_space = False  # held in self.space (a ProcessLocks) rather than through a flocked file
        self._callbacks: list[Callable[[], Any]] = []
        self._mutex = threading.RLock()  # one DeviceLock may be shared by threads; the fd changes hands under it

    @property
    def held(self) -> bool:
        """Whether this object holds the device now."""
        return self._fd is not None or self._in_space

    def acquire(self) -> DeviceLock:
        """Take the device and record this process as its holder; returns self. Raises DeviceBusyError
        naming the holder if it is taken (after waiting up to `wait` seconds, if given). Does nothing if
        already held by this object."""
        with self._mutex:
            if self.held:
                return self
            if self.space is not None:
                self._take_in_space(self.space)
                _register(self)
                return self
            fd = self._open()
            try:
                self._take(fd)
                self._record(fd)
            except BaseException:
                os.close(fd)  # closing also drops the flock if we got it
                raise
            self._fd = fd
            _register(self)
        return self

    def on_release(self, callback: Callable[[], Any]) -> None:
        """Run callback (e.g. close the device's queues) before the lock is dropped; the last registered
        runs first. Callbacks run once, on the next release (explicit, exit, or signal)."""
        with self._mutex:
            self._callbacks.append(callback)

    def release(self) -> None:
        """Run the release callbacks, clear the holder info and unlock. Safe to call twice, and from a
        callback. The lock is dropped even if a callback raises; the first such error is re-raised after."""
        with self._mutex:
            if not self.held:
                return
            callbacks, self._callbacks = self._callbacks[::-1], []
        error: BaseException | None = None
        for cb in callbacks:  # outside the mutex: a callback (a device's close) may call release() again
            try:
                cb()
            except BaseException as e:  # noqa: BLE001 - the lock must still go; re-raised below
                error = error or e
        with self._mutex:
            fd, self._fd = self._fd, None
            in_space, self._in_space = self._in_space, False
            with _state_mutex:
                _held.discard(self)
        if in_space and self.space is not None:
            with self.space._cv:
                self.space._holders.pop(self.key, None)
                self.space._cv.notify_all()
        if fd is not None:
            try:
                os.ftruncate(fd, 0)  # readers then see no holder rather than a stale one
            except OSError:
                pass  # the unlock below matters; the info is only information
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        if error is not None:
            raise error

    def __enter__(self) -> DeviceLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        where = f"space={self.space!r}" if self.space is not None else f"path={self.path!r}"
        return f"DeviceLock({self.key!r}, {'held' if self.held else 'free'}, {where})"

    # -- internals --

    def _open(self) -> int:
        _ensure_dir(self.lock_dir)
        try:
            # O_CLOEXEC (Python's default, said explicitly): exec'd children must not keep the device locked.
            # O_NOFOLLOW: in a world-writable directory a planted symlink must not make us truncate another file.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        except PermissionError as e:
            raise PermissionError(e.errno, f"cannot open the lock file of device {self.key}: {e.strerror}. It "
                                  f"belongs to another user and is not shared; its owner can run "
                                  f"chmod 666 {self.path}", self.path) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"the lock file of device {self.key} is not a regular file: {self.path}")
            try:
                os.fchmod(fd, 0o666)  # the umask cut bits off at creation; every user must be able to lock it
            except PermissionError:
                pass  # another user created it, and made it shared then
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _take(self, fd: int) -> None:
        start = time.monotonic()
        pause = POLL_START_S
        while True:
            if _try_flock(fd, fcntl.LOCK_EX):
                return
            waited = time.monotonic() - start
            remaining = (self.wait or 0.0) - waited
            if remaining <= 0:
                holder = _read_holder(fd)
                # An empty file under a lock is a holder_info() probe (held for microseconds) or a holder that
                # has not written yet; one more try after the reader's retries tells a probe from a holder.
                if holder is None and _try_flock(fd, fcntl.LOCK_EX):
                    return
                raise DeviceBusyError(self.key, holder, waited if self.wait is not None else None, self.path,
                                      self.label)
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, POLL_MAX_S)

    def _take_in_space(self, space: ProcessLocks) -> None:
        # Holders are threads of this process, so a condition variable replaces polling; the wait stays bounded.
        start = time.monotonic()
        with space._cv:
            while self.key in space._holders:
                waited = time.monotonic() - start
                remaining = (self.wait or 0.0) - waited
                if remaining <= 0:
                    raise DeviceBusyError(self.key, dict(space._holders[self.key]),
                                          waited if self.wait is not None else None, None, self.label)
                space._cv.wait(remaining)
            space._holders[self.key] = self._info()
            self._in_space = True

    def _info(self) -> dict[str, Any]:
        now = time.time()
        return {"pid": os.getpid(), "cmdline": _cmdline(), "since": now,
                "started": datetime.datetime.fromtimestamp(now).astimezone().isoformat(timespec="milliseconds"),
                "key": self.key, "label": self.label}

    def _record(self, fd: int) -> None:
        data = json.dumps(self._info()).encode()
        os.ftruncate(fd, 0)  # truncate first: a dead holder's longer JSON must not leave a tail behind ours
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, data[offset:], offset)

    def _forget_after_fork(self) -> None:
        # The child shares the parent's open file description: unlocking or truncating here would free the
        # parent's device, so the child only drops its own reference.
        self._mutex = threading.RLock()
        fd, self._fd = self._fd, None
        self._in_space = False  # the space itself is cleared by its own after-fork step
        self._callbacks = []
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _try_flock(fd: int, op: int) -> bool:
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _read_holder(fd: int) -> dict[str, Any] | None:
    for attempt in range(_READ_TRIES):
        try:
            info = json.loads(os.pread(fd, _MAX_INFO_BYTES, 0))
            if isinstance(info, dict):
                return info
        except (OSError, ValueError):
            pass  # empty or half-written: the holder is between truncate and write
        if attempt + 1 < _READ_TRIES:
            time.sleep(_READ_PAUSE_S)
    return None


def _ensure_dir(path: str) -> None:
    if os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    try:
        os.mkdir(path)
    except FileExistsError:
        return  # another process made it first; it set the mode
    # Shared between users and sticky, like /tmp: everyone may lock, nobody may delete another's file.
    # mkdir's mode is cut by the umask, so set it explicitly.
    os.chmod(path, 0o1777)


def _cmdline() -> str:
    try:
        with open("/proc/self/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        args = []
    text = shlex.join(args or [sys.executable, *sys.argv])
    return text if len(text) <= _MAX_CMDLINE_CHARS else text[:_MAX_CMDLINE_CHARS - 3] + "..."


# The one piece of process-global state in this module. Signals and interpreter exit are process-wide, so
# the set of locks to release on them has to be too; it is weak so it never keeps a lock object alive.
_held: weakref.WeakSet[DeviceLock] = weakref.WeakSet()
_spaces: weakref.WeakSet[ProcessLocks] = weakref.WeakSet()  # reset in a forked child, like _held
_state_mutex = threading.Lock()
_atexit_registered = False
_sigterm_decided = False


def _register(lock: DeviceLock) -> None:
    global _atexit_registered, _sigterm_decided
    with _state_mutex:
        _held.add(lock)
        if not _atexit_registered:
            atexit.register(_release_all)
            _atexit_registered = True
        # Python only lets the main thread set handlers; take SIGTERM over only if nobody else has.
        if not _sigterm_decided and threading.current_thread() is threading.main_thread():
            _sigterm_decided = True
            try:
                if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                    signal.signal(signal.SIGTERM, _exit_on_sigterm)
            except ValueError:
                pass  # not the main interpreter: signals are not ours to handle


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    # Back to the default first, so that a second SIGTERM kills the process even if cleanup hangs.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise SystemExit(128 + signum)


def _release_all() -> None:
    for lk in list(_held):
        try:
            lk.release()
        except BaseException as e:  # noqa: BLE001 - one failing callback must not keep other devices locked
            print(f"baregpu: releasing {lk!r} at exit: {type(e).__name__}: {e}", file=sys.stderr)


def _after_fork_in_child() -> None:
    global _state_mutex
    _state_mutex = threading.Lock()  # another thread may have held it at the fork; it never will release here
    for lk in list(_held):
        lk._forget_after_fork()
    _held.clear()
    for space in list(_spaces):
        space._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
