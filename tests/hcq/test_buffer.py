"""Buffers: views share memory and bounds, CPU views write through, and freed handles fail clearly."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from hcq.allocator import VAHeap
from hcq.buffer import Buffer, MemFlags
from hcq.errors import InvalidHandleError

VA = 0x1000_0000


@pytest.fixture
def host():
    mem = (ctypes.c_uint8 * 4096)()
    return mem, Buffer(VA, 4096, "dev0", MemFlags.HOST_VISIBLE, host_addr=ctypes.addressof(mem))


def test_cpu_view_and_numpy_write_through_to_memory(host):
    mem, buf = host
    view = buf.cpu_view()
    assert (len(view), view.format, view.readonly) == (4096, "B", False)
    view[10] = 0xAB
    assert mem[10] == 0xAB
    mem[11] = 0xCD
    assert buf.cpu_view()[11] == 0xCD, "reads see the memory, not a copy"
    arr = buf.numpy(np.uint32, count=4, offset=16)
    arr[:] = [1, 2, 3, 4]
    assert bytes(mem[16:32]) == np.arange(1, 5, dtype="<u4").tobytes()
    assert buf.numpy(np.float32).shape == (1024,)
    assert buf.numpy(np.float64, offset=8).shape == (511,)


def test_a_released_cpu_view_does_not_break_later_ones(host):
    _, buf = host
    buf.cpu_view().release()
    buf.cpu_view()[0] = 1
    assert buf.cpu_view()[0] == 1


def test_numpy_bounds_are_checked_with_the_buffer_named(host):
    _, buf = host
    with pytest.raises(ValueError, match=r"numpy\(count=2, offset=4088\) of uint64 needs bytes \[4088, 4104\) "
                                         r"but Buffer\(va=0x10000000, size=4096, on dev0\) has 4096"):
        buf.numpy(np.uint64, count=2, offset=4088)
    for offset in (-1, 4097):
        with pytest.raises(ValueError, match=rf"numpy\(offset={offset}\) is outside Buffer"):
            buf.numpy(np.uint8, offset=offset)
    with pytest.raises(ValueError, match="count=-3"):
        buf.numpy(np.uint8, count=-3)


def test_views_offset_addresses_share_memory_and_check_bounds(host):
    mem, buf = host
    v = buf.view(1024, 512)
    assert (v.va, v.size, v.base, v.offset, v.flags) == (buf.va + 1024, 512, buf, 1024, buf.flags)
    assert v.host_addr == buf.host_addr + 1024 and v.device == "dev0"
    vv = v.view(16, 16)
    assert vv.base is buf and vv.offset == 1040 and vv.va == buf.va + 1040, "views of views point at the root"
    vv.cpu_view()[0] = 7
    assert mem[1040] == 7
    vv.numpy(np.uint16)[:] = 0xBEEF
    assert buf.numpy(np.uint16, count=8, offset=1040).tolist() == [0xBEEF] * 8
    assert buf.view(4096).size == 0 and buf.view(100).size == 3996
    with pytest.raises(ValueError, match=r"view \[500, 520\) is outside Buffer\(va=0x10000400, size=512, on dev0, "
                                         r"view \+1024\) \(size 512\); pick 0 <= offset and offset \+ size <= 512"):
        v.view(500, 20)
    for offset, size in ((-1, 4), (0, 4097), (4000, 100), (10, -1)):
        with pytest.raises(ValueError, match="is outside"):
            buf.view(offset, size)


def test_use_after_free_is_an_error_for_the_buffer_and_its_views(host):
    _, buf = host
    v = buf.view(0, 16)
    vv = v.view(4, 4)
    buf.cpu_view()  # builds the cached view, which free must not leave usable
    buf.mark_freed()
    assert buf.freed and v.freed and vv.freed
    for call in (buf.cpu_view, v.cpu_view, vv.cpu_view, lambda: buf.view(0, 1), lambda: v.add_mapping("dev1"),
                 lambda: buf.numpy(np.uint8)):
        with pytest.raises(InvalidHandleError, match=r"on Buffer\(va=0x1000000[04], size=\d+, on dev0.*freed\): its "
                                                     "memory was freed"):
            call()
    assert "freed" in repr(v)


def test_device_local_memory_has_no_cpu_view():
    buf = Buffer(0x2000, 64, "dev0", MemFlags.DEVICE_LOCAL)
    assert buf.cpu_view() is None and buf.view(8, 8).cpu_view() is None and buf.view(8).host_addr is None
    with pytest.raises(ValueError, match="not host-visible; allocate it with MemFlags.HOST_VISIBLE"):
        buf.numpy(np.float32)


def test_mappings_are_shared_with_views(host):
    _, buf = host
    v = buf.view(64)
    assert buf.mapped_on == {"dev0"}
    buf.add_mapping("dev1")
    v.add_mapping("dev2")
    assert v.mapped_on == buf.mapped_on == {"dev0", "dev1", "dev2"}


def test_flags_combine_and_leave_room_for_driver_bits():
    flags = MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE | MemFlags.UNCACHED
    assert MemFlags.HOST_VISIBLE in flags and MemFlags.EXECUTABLE not in flags
    assert max(f.value for f in MemFlags) < 1 << 16


def test_a_heap_backed_buffer_round_trip():
    """The shape a driver has: VA from the heap, host memory behind it, mark_freed when the heap takes it back."""
    mem = (ctypes.c_uint8 * (1 << 16))()
    host_base = ctypes.addressof(mem)
    heap = VAHeap(1 << 40, 1 << 16, 256, "dev0 VA")
    va = heap.alloc(1000)
    buf = Buffer(va, 1000, "dev0", MemFlags.HOST_VISIBLE, host_addr=host_base + (va - heap.base))
    buf.cpu_view()[:4] = b"\x01\x02\x03\x04"
    assert bytes(mem[va - heap.base:va - heap.base + 4]) == b"\x01\x02\x03\x04"
    heap.free(buf.va)
    buf.mark_freed()
    with pytest.raises(InvalidHandleError, match="freed"):
        buf.cpu_view()
    with pytest.raises(InvalidHandleError, match="no live allocation starts there"):
        heap.free(buf.va)


def test_negative_size_is_refused():
    with pytest.raises(ValueError, match="Buffer at va 0x2000: size must be >= 0, got -1"):
        Buffer(0x2000, -1, "dev0", MemFlags.DEVICE_LOCAL)
