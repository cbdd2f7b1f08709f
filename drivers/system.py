"""The OS seam: the one object through which every driver reaches the kernel.

Every open, ioctl, mmap/munmap, sysfs read/write, pagemap read, PCI resource mapping and eventfd a
driver makes goes through a `System`. `LinuxSystem` calls the kernel; `emu/` provides an emulated one.
Drivers receive the object and never import os/fcntl/mmap for device access themselves, so the real
driver code is the code under test.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import mmap as _mmap
import os
from abc import ABC, abstractmethod
from typing import Union

# Argument to ioctl: a ctypes object (passed by reference and updated in place), a writable buffer, or an int.
IoctlArg = Union[ctypes.Structure, ctypes.Union, ctypes.Array, bytearray, int, None]

PROT_READ, PROT_WRITE, PROT_EXEC = _mmap.PROT_READ, _mmap.PROT_WRITE, _mmap.PROT_EXEC
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = _mmap.MAP_SHARED, _mmap.MAP_PRIVATE, _mmap.MAP_ANONYMOUS
MAP_FIXED = 0x10  # linux/mman.h (asm-generic); the mmap module does not export it
MAP_NORESERVE = 0x4000  # asm-generic/mman.h
PAGE_SIZE = _mmap.PAGESIZE
# /proc/self/pagemap entry: bit 63 present, bits 0-54 page frame number (Documentation/admin-guide/mm/pagemap.rst)
PAGEMAP_PRESENT = 1 << 63
PAGEMAP_PFN_MASK = (1 << 55) - 1


class OSCallError(OSError):
    """An OS call made by a driver failed; the message names the call, the path or fd, and the errno."""


class System(ABC):
    """The interface every driver's OS access goes through (files, ioctls, mappings, sysfs, PCI, eventfd)."""

    # Where device locks live for devices reached through this system (see drivers/lock.py).
    lock_dir: str | None = None
    # True when the hardware behind this system is emulated (names and lock keys say so).
    emulated: bool = False
    # True when that emulated hardware runs the host build a code object carries instead of its machine code (the
    # emulated GPU's fast mode): kernels must then be compiled with compile_kernel(..., emulation=True).
    host_kernels: bool = False

    # -- files and device nodes --
    @abstractmethod
    def open(self, path: str, flags: int = os.O_RDWR) -> int:
        """Open a file or device node and return its fd (always close-on-exec)."""

    @abstractmethod
    def close(self, fd: int) -> None:
        """Close an fd returned by `open` or `eventfd`."""

    @abstractmethod
    def read(self, fd: int, size: int) -> bytes:
        """Read up to size bytes from fd."""

    @abstractmethod
    def write(self, fd: int, data: bytes) -> int:
        """Write data to fd; return the number of bytes written."""

    @abstractmethod
    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        """Issue an ioctl; a ctypes/bytearray arg is passed by reference and updated in place."""

    # -- memory mappings; addresses are plain ints so drivers can hand them to the GPU --
    @abstractmethod
    def mmap(self, fd: int, length: int, prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_SHARED,
             offset: int = 0, addr: int = 0) -> int:
        """Map fd (or -1 with MAP_ANONYMOUS) and return the address."""

    @abstractmethod
    def munmap(self, addr: int, length: int) -> None:
        """Unmap a range returned by `mmap`."""

    # -- sysfs, procfs and other small files --
    @abstractmethod
    def read_file(self, path: str) -> bytes:
        """Read a whole small file (sysfs attribute, topology property)."""

    @abstractmethod
    def write_file(self, path: str, data: bytes) -> None:
        """Write a small file (sysfs attribute: bind/unbind, reset, enable)."""

    @abstractmethod
    def listdir(self, path: str) -> list[str]:
        """List a directory, sorted; a missing directory raises FileNotFoundError."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether a path exists."""

    @abstractmethod
    def readlink(self, path: str) -> str:
        """Read a symlink (sysfs driver/iommu_group links)."""

    @abstractmethod
    def pagemap(self, vaddr: int, npages: int) -> list[int]:
        """Raw /proc/self/pagemap entries for npages pages starting at page-aligned vaddr."""

    @abstractmethod
    def eventfd(self, initval: int = 0, flags: int = 0) -> int:
        """Create an eventfd (close-on-exec) and return it."""

    @abstractmethod
    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Read up to size bytes at offset without moving the file position (PCI config space, VFIO regions)."""

    @abstractmethod
    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """Write data at offset without moving the file position; return the bytes written."""

    @abstractmethod
    def poll(self, fd: int, events: int, timeout_ms: int) -> int:
        """Wait up to timeout_ms for `events` (select.POLLIN, POLLPRI, ...) on fd; return the events that occurred
        (0 on timeout). A driver sleeping on a device's event fd uses it (the NVIDIA OS event)."""

    # -- helpers built on the primitives above; implementations need not override them --
    def read_text(self, path: str) -> str:
        """A sysfs attribute as stripped text."""
        return self.read_file(path).decode(errors="replace").strip()

    def physical_pages(self, vaddr: int, npages: int) -> list[int]:
        """Physical addresses of npages pages at vaddr; raises if a page is not resident or PFNs are hidden."""
        out = []
        for i, entry in enumerate(self.pagemap(vaddr, npages)):
            pfn = entry & PAGEMAP_PFN_MASK
            if not entry & PAGEMAP_PRESENT or pfn == 0:
                raise OSCallError(errno.EFAULT, f"page at {vaddr + i * PAGE_SIZE:#x} is not resident or its PFN is hidden "
                                                 "(reading physical addresses needs CAP_SYS_ADMIN); touch and lock the memory first, "
                                                 "or run as root")
            out.append(pfn * PAGE_SIZE)
        return out

    def map_pci_resource(self, bdf: str, bar: int, length: int | None = None, offset: int = 0,
                         prot: int = PROT_READ | PROT_WRITE) -> tuple[int, int]:
        """Map BAR `bar` of PCI device `bdf` through sysfs; return (address, length)."""
        path = f"/sys/bus/pci/devices/{bdf}/resource{bar}"
        if length is None:
            length = self.pci_resource_size(bdf, bar) - offset
        fd = self.open(path, os.O_RDWR | os.O_SYNC)
        try:
            return self.mmap(fd, length, prot, MAP_SHARED, offset), length
        finally:
            self.close(fd)

    def pci_resource_size(self, bdf: str, bar: int) -> int:
        """Size of a BAR from the sysfs `resource` table (start end flags per line)."""
        lines = self.read_text(f"/sys/bus/pci/devices/{bdf}/resource").splitlines()
        if bar >= len(lines):
            raise OSCallError(errno.ENOENT, f"{bdf} has no BAR {bar} (sysfs resource lists {len(lines)})")
        start, end, _flags = (int(x, 16) for x in lines[bar].split())
        return 0 if end == 0 else end - start + 1


def libc() -> ctypes.CDLL:
    """libc with the prototypes the seam uses (mmap returns a full 64-bit address)."""
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lib.mmap.restype = ctypes.c_void_p
    lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
    lib.eventfd.argtypes = [ctypes.c_uint, ctypes.c_int]
    return lib


class LinuxSystem(System):
    """The real OS: every call goes straight to the Linux kernel."""

    MAP_FAILED = ctypes.c_void_p(-1).value

    def __init__(self, lock_dir: str | None = None):
        self._libc = libc()
        self.lock_dir = lock_dir

    def _fail(self, what: str) -> OSCallError:
        err = ctypes.get_errno()
        return OSCallError(err, f"{what} failed: {os.strerror(err)} (errno {err})")

    def open(self, path: str, flags: int = os.O_RDWR) -> int:
        try:
            return os.open(path, flags | os.O_CLOEXEC)
        except OSError as e:
            raise OSCallError(e.errno, f"open({path!r}) failed: {e.strerror}") from None

    def close(self, fd: int) -> None:
        os.close(fd)

    def read(self, fd: int, size: int) -> bytes:
        return os.read(fd, size)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def ioctl(self, fd: int, request: int, arg: IoctlArg = None) -> int:
        if arg is None or isinstance(arg, int):
            ptr = arg
        elif isinstance(arg, bytearray):
            ptr = ctypes.addressof((ctypes.c_char * len(arg)).from_buffer(arg))
        else:
            ptr = ctypes.addressof(arg)
        ret = self._libc.ioctl(fd, request, ptr)
        if ret < 0:
            raise self._fail(f"ioctl(fd={fd}, {request:#x})")
        return ret

    def mmap(self, fd: int, length: int, prot: int = PROT_READ | PROT_WRITE, flags: int = MAP_SHARED,
             offset: int = 0, addr: int = 0) -> int:
        ret = self._libc.mmap(addr or None, length, prot, flags, fd, offset)
        if ret is None or ret == self.MAP_FAILED:
            raise self._fail(f"mmap(fd={fd}, length={length:#x}, offset={offset:#x})")
        return ret

    def munmap(self, addr: int, length: int) -> None:
        if self._libc.munmap(addr, length) != 0:
            raise self._fail(f"munmap({addr:#x}, {length:#x})")

    def read_file(self, path: str) -> bytes:
        with open(path, "rb", buffering=0) as f:
            return f.read()

    def write_file(self, path: str, data: bytes) -> None:
        with open(path, "wb", buffering=0) as f:
            f.write(data)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def pagemap(self, vaddr: int, npages: int) -> list[int]:
        with open("/proc/self/pagemap", "rb", buffering=0) as f:
            f.seek((vaddr // PAGE_SIZE) * 8)
            raw = f.read(npages * 8)
        return [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]

    def eventfd(self, initval: int = 0, flags: int = 0) -> int:
        fd = self._libc.eventfd(initval, flags | os.O_CLOEXEC)
        if fd < 0:
            raise self._fail("eventfd")
        return fd

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        try:
            return os.pread(fd, size, offset)
        except OSError as e:
            raise OSCallError(e.errno, f"pread of {size} bytes at {offset:#x} failed: {e.strerror}") from None

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        try:
            return os.pwrite(fd, data, offset)
        except OSError as e:
            raise OSCallError(e.errno, f"pwrite of {len(data)} bytes at {offset:#x} failed: {e.strerror}") from None

    def poll(self, fd: int, events: int, timeout_ms: int) -> int:
        import select
        p = select.poll()
        p.register(fd, events)
        try:
            ready = p.poll(max(0, timeout_ms))
        except InterruptedError:
            return 0  # a signal ended the sleep early: the caller re-reads its condition and waits again
        return ready[0][1] if ready else 0
