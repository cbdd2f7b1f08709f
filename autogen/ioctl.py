"""Linux ioctl request numbers: the _IOC encoding of direction, type, number and argument size.

Layout from include/uapi/asm-generic/ioctl.h (x86-64 and arm64 use the generic one): nr 8 bits, type 8 bits,
size 14 bits, direction 2 bits; direction NONE=0, WRITE=1, READ=2.
"""
from __future__ import annotations

import ctypes

_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS, _IOC_DIRBITS = 8, 8, 14, 2
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _size(arg: int | type) -> int:
    return arg if isinstance(arg, int) else ctypes.sizeof(arg)


def _type(t: int | str | bytes) -> int:
    return ord(t) if isinstance(t, (str, bytes)) else t


def _IOC(direction: int, typ: int | str, nr: int, size: int | type) -> int:
    """Encode an ioctl request; size may be a byte count or a ctypes type."""
    size = _size(size)
    if not 0 <= size < (1 << _IOC_SIZEBITS):
        raise ValueError(f"ioctl argument size {size} does not fit in {_IOC_SIZEBITS} bits")
    return (direction << _IOC_DIRSHIFT) | (_type(typ) << _IOC_TYPESHIFT) | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT)


def _IO(typ: int | str, nr: int) -> int:
    """An ioctl with no argument."""
    return _IOC(_IOC_NONE, typ, nr, 0)


def _IOR(typ: int | str, nr: int, argtype: int | type) -> int:
    """An ioctl the kernel writes back to user space (user reads)."""
    return _IOC(_IOC_READ, typ, nr, argtype)


def _IOW(typ: int | str, nr: int, argtype: int | type) -> int:
    """An ioctl that passes an argument to the kernel (user writes)."""
    return _IOC(_IOC_WRITE, typ, nr, argtype)


def _IOWR(typ: int | str, nr: int, argtype: int | type) -> int:
    """An ioctl whose argument goes both ways."""
    return _IOC(_IOC_READ | _IOC_WRITE, typ, nr, argtype)


def decode(request: int) -> tuple[int, int, int, int]:
    """(direction, type, nr, size) of a request number; for error messages and traces."""
    return ((request >> _IOC_DIRSHIFT) & ((1 << _IOC_DIRBITS) - 1), (request >> _IOC_TYPESHIFT) & 0xFF,
            (request >> _IOC_NRSHIFT) & 0xFF, (request >> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1))
