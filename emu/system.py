"""An emulated OS behind the driver seam: a virtual file tree, device nodes with ioctl/mmap handlers, and a
record of every call the driver made.

Emulated kernel interfaces (KFD, NVIDIA RM/UVM, kgsl, PCI sysfs) register themselves here as device nodes
and files; the driver under test receives this object where it would receive `LinuxSystem`.
"""
from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import select
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from drivers.system import MAP_ANONYMOUS, IoctlArg, OSCallError, PAGE_SIZE, System, libc

if TYPE_CHECKING:
    from drivers.lock import ProcessLocks


class NodeHandler:
    """One open file of an emulated device node; override what the device supports."""

    def ioctl(self, request: int, arg: IoctlArg) -> int:
        raise OSCallError(errno.ENOTTY, f"ioctl {request:#x} is not supported by this emulated device")

    def mmap(self, length: int, prot: int, flags: int, offset: int, addr: int) -> int:
        raise OSCallError(errno.ENODEV, "this emulated device cannot be mapped")

    def munmap(self, addr: int, length: int) -> None:
        """Undo a mapping this handler made (the default made none that needs undoing)."""

    def read(self, size: int) -> bytes:
        raise OSCallError(errno.EINVAL, "this emulated device cannot be read")

    def write(self, data: bytes) -> int:
        raise OSCallError(errno.EINVAL, "this emulated device cannot be written")

    def pread(self, size: int, offset: int) -> bytes:
        """Read up to size bytes at offset without moving a file position (config space, a VFIO region)."""
        raise OSCallError(errno.ESPIPE, "this emulated device cannot be read at an offset")

    def pwrite(self, data: bytes, offset: int) -> int:
        """Write data at offset without moving a file position; return the bytes written."""
        raise OSCallError(errno.ESPIPE, "this emulated device cannot be written at an offset")

    def poll(self, events: int, timeout_s: float) -> int:
        """The events of `events` pending on this file, after waiting up to timeout_s for one (0: none came)."""
        raise OSCallError(errno.EINVAL, "this emulated device cannot be polled")

    def close(self) -> None:
        pass


class EventFd(NodeHandler):
    """eventfd semantics: writes add to a counter, a read returns and clears it (EAGAIN when zero); poll says POLLIN
    while the counter is non-zero, waiting (bounded) for a write from another thread (an emulated device's)."""

    def __init__(self, initval: int):
        self.counter = initval
        self._cv = threading.Condition()

    def read(self, size: int) -> bytes:
        with self._cv:
            if self.counter == 0:
                raise OSCallError(errno.EAGAIN, "eventfd counter is zero")
            value, self.counter = self.counter, 0
        return value.to_bytes(8, "little")

    def write(self, data: bytes) -> int:
        with self._cv:
            self.counter += int.from_bytes(data[:8], "little")
            self._cv.notify_all()
        return 8

    def poll(self, events: int, timeout_s: float) -> int:
        with self._cv:
            self._cv.wait_for(lambda: self.counter != 0, timeout_s)
            return select.POLLIN & events if self.counter else 0


@dataclass
class Attribute:
    """A sysfs attribute whose content is computed when read (show) and acted on when written (store), as the
    kernel's device attributes are; a missing store makes writes fail with EACCES (kernfs_fop_open)."""
    show: Callable[[], bytes] | None = None
    store: Callable[[bytes], None] | None = None


@dataclass
class Call:
    """One recorded call through the seam."""
    name: str
    args: tuple
    result: Any = None
    error: BaseException | None = field(default=None, repr=False)


class EmulatedSystem(System):
    """A `System` whose files, links and device nodes are registered by emulated hardware; records every call.

    `lock_dir` is where drivers lock its devices: None for the ordinary lock directory (a machine-wide emulated
    machine, whose drivers lock under "emulated-" keys), or a ProcessLocks space (a private machine).
    """

    emulated = True

    def __init__(self, lock_dir: str | ProcessLocks | None = None):
        self.lock_dir = lock_dir
        self.files: dict[str, bytes] = {}
        self.links: dict[str, str] = {}
        self.nodes: dict[str, Callable[[int], NodeHandler]] = {}
        self.attributes: dict[str, Attribute] = {}
        self.calls: list[Call] = []
        self._fds: dict[int, NodeHandler] = {}
        self._next_fd = 1000
        self._anon: dict[int, int] = {}
        self._device_maps: dict[int, tuple[int, NodeHandler]] = {}
        self._libc = libc()

    # -- building the emulated machine --
    def add_file(self, path: str, data: bytes | str) -> None:
        self.files[posixpath.normpath(path)] = data.encode() if isinstance(data, str) else data

    def add_link(self, path: str, target: str) -> None:
        self.links[posixpath.normpath(path)] = target

    def add_node(self, path: str, opener: Callable[[int], NodeHandler]) -> None:
        """Register a device node; opener(flags) returns the handler for one open file."""
        self.nodes[posixpath.normpath(path)] = opener

    def add_attribute(self, path: str, show: Callable[[], bytes] | None = None,
                      store: Callable[[bytes], None] | None = None) -> None:
        """Register a live sysfs attribute: read_file calls show(), write_file calls store(data)."""
        self.attributes[posixpath.normpath(path)] = Attribute(show, store)

    def install_handler(self, handler: NodeHandler) -> int:
        """Give an already-made handler an fd (a device fd an ioctl returns, as VFIO_GROUP_GET_DEVICE_FD does)."""
        return self._install(handler)

    def handler_of(self, fd: int) -> NodeHandler:
        """The handler behind an fd of this system (an emulated kernel resolving an fd passed in an ioctl)."""
        return self._handler(fd)

    def calls_named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    # -- the seam --
    def _record(self, name: str, args: tuple, fn: Callable[[], Any]) -> Any:
        call = Call(name, args)
        self.calls.append(call)
        try:
            call.result = fn()
        except BaseException as e:
            call.error = e
            raise
        return call.result

    def _handler(self, fd: int) -> NodeHandler:
        if fd not in self._fds:
            raise OSCallError(errno.EBADF, f"fd {fd} is not open in the emulated system")
        return self._fds[fd]

    def _install(self, handler: NodeHandler) -> int:
        fd, self._next_fd = self._next_fd, self._next_fd + 1
        self._fds[fd] = handler
        return fd

    def open(self, path: str, flags: int = os.O_RDWR) -> int:
        def do() -> int:
            p = posixpath.normpath(path)
            if p not in self.nodes:
                raise OSCallError(errno.ENOENT, f"open({path!r}) failed: no such emulated device node")
            return self._install(self.nodes[p](flags))
        return self._record("open", (path, flags), do)

    def close(self, fd: int) -> None:
        def do() -> None:
            self._handler(fd).close()
            del self._fds[fd]
        return self._record("close", (fd,), do)

    def read(self, fd: int, size: int) -> bytes:
        return self._record("read", (fd, size), lambda: self._handler(fd).read(size))

    def write(self, fd: int, data: bytes) -> int:
        return self._record("write", (fd, bytes(data)), lambda: self._handler(fd).write(data))

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """pread(2) on an emulated node."""
        return self._record("pread", (fd, size, offset), lambda: self._handler(fd).pread(size, offset))

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """pwrite(2) on an emulated node."""
        return self._record("pwrite", (fd, bytes(data), offset), lambda: self._handler(fd).pwrite(bytes(data), offset))

    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        return self._record("ioctl", (fd, request, arg), lambda: self._handler(fd).ioctl(request, arg))

    def mmap(self, fd: int, length: int, prot: int = 3, flags: int = 1, offset: int = 0, addr: int = 0) -> int:
        def do() -> int:
            if flags & MAP_ANONYMOUS:
                ret = self._libc.mmap(addr or None, length, prot, flags, -1, 0)
                if ret is None or ret == ctypes.c_void_p(-1).value:
                    raise OSCallError(ctypes.get_errno(), f"anonymous mmap of {length:#x} bytes failed")
                self._forget_device_maps(ret, length)  # MAP_FIXED replaced whatever was there
                self._anon[ret] = length
                return ret
            handler = self._handler(fd)
            ret = handler.mmap(length, prot, flags, offset, addr)
            self._device_maps[ret] = (length, handler)
            return ret
        return self._record("mmap", (fd, length, prot, flags, offset, addr), do)

    def _forget_device_maps(self, addr: int, length: int) -> None:
        for start in [a for a in self._device_maps if addr <= a < addr + length]:
            n, handler = self._device_maps.pop(start)
            handler.munmap(start, n)

    def munmap(self, addr: int, length: int) -> None:
        def do() -> None:
            self._forget_device_maps(addr, length)
            overlapping = [a for a, n in self._anon.items() if a < addr + length and addr < a + n]
            for a in overlapping:
                del self._anon[a]
            if overlapping:  # real memory this process mapped: unmap exactly the range asked, as munmap does
                self._libc.munmap(addr, length)
        return self._record("munmap", (addr, length), do)

    def _lookup(self, path: str) -> bytes:
        p = posixpath.normpath(path)
        for _ in range(16):  # follow links in any path component, bounded against loops
            if p in self.files:
                return self.files[p]
            if p in self.attributes:
                attr = self.attributes[p]
                if attr.show is None:
                    raise OSCallError(errno.EACCES, f"{path}: emulated attribute is write-only")
                return attr.show()
            resolved = self._resolve(p)
            if resolved == p:
                break
            p = resolved
        raise OSCallError(errno.ENOENT, f"{path}: no such emulated file")

    def _resolve_fully(self, p: str) -> str:
        for _ in range(16):  # bounded against link loops
            resolved = self._resolve(p)
            if resolved == p:
                break
            p = resolved
        return p

    def _resolve(self, p: str) -> str:
        parts = p.split("/")
        for i in range(len(parts), 0, -1):
            head = "/".join(parts[:i]) or "/"
            if head in self.links:
                target = posixpath.join(posixpath.dirname(head), self.links[head])
                return posixpath.normpath("/".join([target] + parts[i:]))
        return p

    def read_file(self, path: str) -> bytes:
        return self._record("read_file", (path,), lambda: self._lookup(path))

    def write_file(self, path: str, data: bytes) -> None:
        def do() -> None:
            p = posixpath.normpath(path)
            if p not in self.files and p not in self.attributes:
                p = self._resolve_fully(p)  # writing through a link (.../devices/<bdf>/driver/unbind)
            if p in self.attributes:
                attr = self.attributes[p]
                if attr.store is None:
                    raise OSCallError(errno.EACCES, f"{path}: emulated attribute is read-only")
                attr.store(bytes(data))
                return
            if p not in self.files:
                raise OSCallError(errno.ENOENT, f"{path}: no such emulated file")
            self.files[p] = bytes(data)
        return self._record("write_file", (path, bytes(data)), do)

    def listdir(self, path: str) -> list[str]:
        def do() -> list[str]:
            p = self._resolve(posixpath.normpath(path))
            prefix = p.rstrip("/") + "/"
            names = {k[len(prefix):].split("/")[0] for k in (*self.files, *self.links, *self.nodes, *self.attributes) if k.startswith(prefix)}
            if not names:
                raise FileNotFoundError(errno.ENOENT, f"{path}: no such emulated directory")
            return sorted(names)
        return self._record("listdir", (path,), do)

    def exists(self, path: str) -> bool:
        def do() -> bool:
            p = self._resolve(posixpath.normpath(path))
            prefix = p.rstrip("/") + "/"
            everything = (*self.files, *self.links, *self.nodes, *self.attributes)
            return p in everything or any(k.startswith(prefix) for k in everything)
        return self._record("exists", (path,), do)

    def readlink(self, path: str) -> str:
        def do() -> str:
            head, name = posixpath.split(posixpath.normpath(path))
            for _ in range(16):  # like readlink(2): follow links in the parent components, not in the last one
                resolved = self._resolve(head)
                if resolved == head:
                    break
                head = resolved
            p = posixpath.join(head, name)
            if p not in self.links:
                raise OSCallError(errno.EINVAL, f"{path}: not an emulated symlink")
            return self.links[p]
        return self._record("readlink", (path,), do)

    def pagemap(self, vaddr: int, npages: int) -> list[int]:
        # Emulated DMA: the "physical" address of a page is its virtual address (an identity IOMMU).
        base = vaddr // PAGE_SIZE
        return self._record("pagemap", (vaddr, npages), lambda: [(1 << 63) | (base + i) for i in range(npages)])

    def eventfd(self, initval: int = 0, flags: int = 0) -> int:
        return self._record("eventfd", (initval, flags), lambda: self._install(EventFd(initval)))

    def poll(self, fd: int, events: int, timeout_ms: int) -> int:
        # Not recorded: a sleeping wait polls often, and the calls list would grow without bound.
        return self._handler(fd).poll(events, max(0, timeout_ms) / 1000)
