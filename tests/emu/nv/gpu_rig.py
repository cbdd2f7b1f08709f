"""A test rig for the emulated NVIDIA GPU (tests/emu/nv/test_gpu*.py; this module holds no tests): host memory mapped into a VA space, one
channel, and method streams encoded here by hand from clc56f.h (never with drivers/nv's encoders)."""
from __future__ import annotations

import ctypes
import struct
import time

from autogen import nv_classes as C
from emu.nv.gpu import ARCH_CLASSES, ChannelDesc, EmuNVGPU

RING_VA, PB_VA, DATA_VA = 0x10_0000_0000, 0x10_0010_0000, 0x20_0000_0000
SUBCH = {"compute": 1, "copy": 4}  # the subchannels the engines are bound on (any of 0-4 works)


def inc(subch: int, method: int, *data: int) -> list[int]:
    """An incrementing method header (NVC56F_DMA_INCR: opcode 1, count 28:16, subchannel 15:13, address 11:0 in
    dwords) and its data."""
    return [1 << 29 | len(data) << 16 | subch << 13 | method >> 2, *data]


def non_inc(subch: int, method: int, *data: int) -> list[int]:
    return [3 << 29 | len(data) << 16 | subch << 13 | method >> 2, *data]


def one_inc(subch: int, method: int, *data: int) -> list[int]:
    return [5 << 29 | len(data) << 16 | subch << 13 | method >> 2, *data]


def immd(subch: int, method: int, value: int) -> list[int]:
    """NVC56F_DMA_IMMD: opcode 4, 13-bit data in 28:16."""
    assert value < 1 << 13
    return [4 << 29 | value << 16 | subch << 13 | method >> 2]


def sem_release(va: int, value: int, timestamp: bool = True, wfi: bool = True, p64: bool = True) -> list[int]:
    ex = C.NVC56F_SEM_EXECUTE_OPERATION_RELEASE | (wfi << 20) | (p64 << 24) | (timestamp << 25)
    return inc(0, C.NVC56F_SEM_ADDR_LO, va & 0xFFFFFFFF, va >> 32, value & 0xFFFFFFFF, value >> 32, ex)


def sem_acquire(va: int, value: int, op: int = C.NVC56F_SEM_EXECUTE_OPERATION_ACQ_STRICT_GEQ, p64: bool = True):
    return inc(0, C.NVC56F_SEM_ADDR_LO, va & 0xFFFFFFFF, va >> 32, value & 0xFFFFFFFF, value >> 32, op | (p64 << 24))


class Rig:
    """One emulated GPU, one VA space, one channel (`engine`) with its engine object bound on SUBCH[engine]."""

    def __init__(self, sm: str = "sm_90", engine: str = "compute", hazard: int | None = None, entries: int = 64,
                 token: int = 7, gpu: EmuNVGPU | None = None, vas=None, bind: bool = True):
        self.own_gpu = gpu is None
        self.gpu = gpu or EmuNVGPU(0, sm, hazard)
        self.sm, self.engine, self.token = self.gpu.sm, engine, token
        self.vas = vas or self.gpu.new_vaspace()
        self.keep: list = []
        self.errors: list[tuple[int, int, dict]] = []
        self.nonstall: list[int] = []
        self.gpu.on_error = lambda t, c, i: self.errors.append((t, c, i))
        self.gpu.on_nonstall = lambda t: self.nonstall.append(t)
        self.entries = entries
        base = token << 24
        self.ring = self.map(RING_VA + base, entries * 8, "gpfifo")
        self.pb_va = PB_VA + base
        self.pb_host = self.map(self.pb_va, 1 << 20, "pushbuffer")
        self.pb_used = 0
        self.userd = ctypes.create_string_buffer(512)
        self.put = 0
        host_class, compute, copy = ARCH_CLASSES[self.gpu.sm]
        self.hclass = compute if engine == "compute" else copy
        self.gpu.add_channel(ChannelDesc(token, 1, engine, self.vas, RING_VA + base, entries,
                                         ctypes.addressof(self.userd), host_class))
        self.gpu.add_object(token, self.hclass)
        self.gpu.schedule([token], True)
        if bind:
            self.submit(inc(SUBCH[engine], C.NVC56F_SET_OBJECT, self.hclass))
            self.wait_idle()

    def map(self, va: int, size: int, what: str = "buffer") -> int:
        buf = ctypes.create_string_buffer(size)
        self.keep.append(buf)
        self.vas.map(va, size, ctypes.addressof(buf), what)
        return ctypes.addressof(buf)

    @property
    def gpget(self) -> int:
        return struct.unpack_from("<I", self.userd, 0x88)[0]

    def entry(self, va: int, words: int, extra0: int = 0, extra1: int = 0) -> None:
        """Write one GP entry (NVC56F_GP_ENTRY0 GET 31:2, ENTRY1 GET_HI 7:0, LENGTH 30:10) and advance GPPut."""
        e0 = (va & 0xFFFFFFFC) | extra0
        e1 = (va >> 32 & 0xFF) | words << 10 | extra1
        struct.pack_into("<II", (ctypes.c_char * 8).from_address(self.ring + (self.put % self.entries) * 8), 0, e0, e1)
        self.put = (self.put + 1) % self.entries

    def ring_doorbell(self) -> None:
        struct.pack_into("<I", self.userd, 0x8C, self.put)
        ctypes.c_uint32.from_address(self.gpu.usermode_host + 0x90).value = self.token

    def push(self, words: list[int]) -> int:
        va = self.pb_va + self.pb_used
        ctypes.memmove(self.pb_host + self.pb_used, struct.pack(f"<{len(words)}I", *words), 4 * len(words))
        self.pb_used += 4 * len(words)
        return va

    def submit(self, words: list[int], doorbell: bool = True) -> None:
        self.entry(self.push(words), len(words))
        if doorbell:
            self.ring_doorbell()

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Until GPGet reaches GPPut (or the channel reported an error)."""
        end = time.monotonic() + timeout
        while self.gpget != self.put and not self.errors:
            if time.monotonic() > end:
                raise TimeoutError(f"GPGet {self.gpget} never reached GPPut {self.put}; counters "
                                   f"{self.gpu.counters()}")
            time.sleep(0.0005)

    def wait_error(self, timeout: float = 5.0) -> tuple[int, int, dict]:
        end = time.monotonic() + timeout
        while not self.errors:
            if time.monotonic() > end:
                raise TimeoutError(f"no channel error within {timeout}s; GPGet {self.gpget}, GPPut {self.put}")
            time.sleep(0.0005)
        return self.errors[0]

    def close(self) -> None:
        if self.own_gpu:
            self.gpu.close()


def qmd(version: int, grid=(1, 1, 1), block=(32, 1, 1), program: int = 0, cbuf0: tuple[int, int] | None = None,
        registers: int = 16, shared: int = 0, minor: int = 0) -> bytes:
    """A QMD written bit by bit from autogen.nv_qmd (clc6c0qmd.h V03_00 / clcbc0qmd.h V04_00)."""
    from autogen import nv_qmd as Q
    p = "NVC6C0_QMDV03_00_" if version == 3 else "NVCBC0_QMDV04_00_"
    word = 0

    def put(name: str, value: int, i: int | None = None) -> None:
        nonlocal word
        shift = getattr(Q, p + name + "_SHIFT")
        shift = shift(i) if i is not None else shift
        width = getattr(Q, p + name + "_WIDTH")
        assert 0 <= value < 1 << width, (name, value)
        word |= value << shift
    put("QMD_MAJOR_VERSION", version)
    put("QMD_VERSION" if version == 3 else "QMD_MINOR_VERSION", minor)
    for n, v in zip(("CTA_RASTER_WIDTH", "CTA_RASTER_HEIGHT", "CTA_RASTER_DEPTH") if version == 3 else
                    ("GRID_WIDTH", "GRID_HEIGHT", "GRID_DEPTH"), grid):
        put(n, v)
    for i, v in enumerate(block):
        put(f"CTA_THREAD_DIMENSION{i}", v)
    put("REGISTER_COUNT_V" if version == 3 else "REGISTER_COUNT", registers)
    put("SHARED_MEMORY_SIZE", shared)
    put("PROGRAM_ADDRESS_LOWER", program & 0xFFFFFFFF)
    put("PROGRAM_ADDRESS_UPPER", program >> 32)
    if cbuf0 is not None:
        addr, size = cbuf0
        put("CONSTANT_BUFFER_VALID", 1, 0)
        if version == 3:
            put("CONSTANT_BUFFER_ADDR_LOWER", addr & 0xFFFFFFFF, 0)
            put("CONSTANT_BUFFER_ADDR_UPPER", addr >> 32, 0)
        else:
            put("CONSTANT_BUFFER_ADDR_LOWER_SHIFTED6", (addr >> 6) & 0xFFFFFFFF, 0)
            put("CONSTANT_BUFFER_ADDR_UPPER_SHIFTED6", addr >> 38, 0)
        put("CONSTANT_BUFFER_SIZE_SHIFTED4", size >> 4, 0)
    return word.to_bytes(256 if version == 3 else 384, "little")
