"""Memory behind the emulated NVIDIA RM: per-GPU VRAM and a system-memory pool (sparse memfds with an aligned free-list
allocator), and the memory objects RM hands out (VRAM, sysmem, OS descriptors over the process's own pages).

Each pool is mapped once into this process: that mapping is the emulated GPU's view (the `host` address a VASpace
mapping points at). A CPU mapping for the driver (NV_ESC_RM_MAP_MEMORY + mmap) maps the same memfd pages again at
the address the driver asks for, so both views share the bytes.
"""
from __future__ import annotations

import ctypes
import mmap as _mmap
import os
import threading
from dataclasses import dataclass

PAGE_4K, PAGE_64K, PAGE_2M = 4 << 10, 64 << 10, 2 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
MAP_FAILED = ctypes.c_void_p(-1).value
FALLOC_PUNCH_HOLE = 0x03  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (linux/falloc.h)


def align_up(v: int, a: int) -> int:
    return -(-v // a) * a


class Pool:
    """A memfd-backed pool (one GPU's VRAM, or system memory) with a first-fit allocator that honours alignment.

    `host` is the emulator's own mapping of the whole pool (the GPU's view of it); the pool is sparse, so only pages
    that were touched take memory, and freed ranges are punched out again."""

    def __init__(self, name: str, size: int):
        self.name, self.size = name, size
        self.fd = os.memfd_create(f"baregpu-emu-nv-{name}", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, size)
        self._free: list[tuple[int, int]] = [(0, size)]
        self._lock = threading.Lock()  # several driver threads allocate at once
        host = _libc.mmap(None, size, _mmap.PROT_READ | _mmap.PROT_WRITE, _mmap.MAP_SHARED, self.fd, 0)
        if host in (None, MAP_FAILED):
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), f"emulated NV pool {name}: mapping {size:#x} bytes failed")
        self.host: int = host

    def alloc(self, size: int, align: int) -> int | None:
        """Offset of `size` bytes aligned to `align`, or None when no free range fits (the caller says NO_MEMORY)."""
        with self._lock:
            for i, (off, n) in enumerate(self._free):
                start = align_up(off, align)
                if start + size <= off + n:
                    pieces = [(o, m) for o, m in ((off, start - off), (start + size, off + n - start - size)) if m]
                    self._free[i:i + 1] = pieces
                    return start
        return None

    def release(self, off: int, size: int) -> None:
        with self._lock:
            self._free.append((off, size))
            self._free.sort()
            merged: list[tuple[int, int]] = []
            for o, n in self._free:
                if merged and merged[-1][0] + merged[-1][1] == o:
                    merged[-1] = (merged[-1][0], merged[-1][1] + n)
                else:
                    merged.append((o, n))
            self._free = merged
        # A freed allocation must not keep memory resident (and the next owner must read zeros, as RM scrubs).
        _libc.fallocate(self.fd, FALLOC_PUNCH_HOLE, off, size)

    @property
    def free_bytes(self) -> int:
        with self._lock:
            return sum(n for _, n in self._free)

    def map_for_cpu(self, off: int, length: int, prot: int, flags: int, addr: int) -> int:
        """Map [off, off+length) of the pool into this process for the driver (at `addr` with MAP_FIXED when given)."""
        flags = (flags & ~(_mmap.MAP_PRIVATE | 0x20)) | _mmap.MAP_SHARED  # never private or anonymous: the GPU's bytes
        ret = _libc.mmap(addr or None, length, prot, flags, self.fd, off)
        if ret in (None, MAP_FAILED):
            raise OSError(ctypes.get_errno(), f"mapping {length:#x} bytes of emulated {self.name} at {off:#x} failed")
        return ret

    def close(self) -> None:
        if self.fd >= 0:
            _libc.munmap(self.host, self.size)
            os.close(self.fd)
            self.fd = -1


@dataclass
class MemObject:
    """What RM keeps for a memory object: where its bytes are and how the GPU and the CPU reach them.

    kind: "vram" | "sysmem" | "osdesc" | "usermode". pool is None for OS descriptors (the process's own pages, which
    the in-process emulated GPU reads directly at `host`) and for usermode (the GPU's register page, `fd` given)."""
    kind: str
    size: int
    host: int
    page_size: int = PAGE_4K
    pool: Pool | None = None
    offset: int = 0
    fd: int = -1  # usermode: the memfd the GPU object shares its register page through

    def map_for_cpu(self, off: int, length: int, prot: int, flags: int, addr: int) -> int:
        if self.pool is not None:
            return self.pool.map_for_cpu(self.offset + off, length, prot, flags, addr)
        if self.fd >= 0:
            flags = (flags & ~(_mmap.MAP_PRIVATE | 0x20)) | _mmap.MAP_SHARED
            ret = _libc.mmap(addr or None, length, prot, flags, self.fd, off)
            if ret in (None, MAP_FAILED):
                raise OSError(ctypes.get_errno(), f"mapping the emulated {self.kind} page failed")
            return ret
        raise OSError(22, f"emulated {self.kind} memory has no pages RM can map for the CPU")

    def free(self) -> None:
        if self.pool is not None:
            self.pool.release(self.offset, self.size)
            self.pool = None


def page_size_for(attr: int, attr2: int, size: int, vram: bool) -> int:
    """The page size RM picks from NVOS32_ATTR_PAGE_SIZE / NVOS32_ATTR2_PAGE_SIZE_HUGE (nvos.h; memory_mgr.c
    memmgrDeterminePageSize): 4K, BIG (64K), HUGE (2M unless attr2 says 512M), DEFAULT: big pages for VRAM of at
    least a big page, else 4K. The emulator rounds sizes up to the page size, as RM's allocation does."""
    from autogen import nv_rm
    field = (attr >> nv_rm.NVOS32_ATTR_PAGE_SIZE_SHIFT) & ((1 << nv_rm.NVOS32_ATTR_PAGE_SIZE_WIDTH) - 1)
    if field == nv_rm.NVOS32_ATTR_PAGE_SIZE_4KB:
        return PAGE_4K
    if field == nv_rm.NVOS32_ATTR_PAGE_SIZE_BIG:
        return PAGE_64K
    if field == nv_rm.NVOS32_ATTR_PAGE_SIZE_HUGE:
        huge = (attr2 >> nv_rm.NVOS32_ATTR2_PAGE_SIZE_HUGE_SHIFT) & ((1 << nv_rm.NVOS32_ATTR2_PAGE_SIZE_HUGE_WIDTH) - 1)
        return 512 << 20 if huge == nv_rm.NVOS32_ATTR2_PAGE_SIZE_HUGE_512MB else PAGE_2M
    return PAGE_64K if vram and size >= PAGE_64K else PAGE_4K
