"""Buffers: views share memory and bounds, CPU views write through, and freed handles fail clearly."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from hcq.buffer import Buffer, MemFlags
from hcq.errors import InvalidHandleError


@pytest.fixture
def host():
    mem = (ctypes.c_uint8 * 4096)()
    return mem, Buffer(0x1000_0000, 4096, "dev0", MemFlags.HOST_VISIBLE, host_addr=ctypes.addressof(mem))


def test_cpu_view_and_numpy_write_through_to_memory(host):
    mem, buf = host
    buf.cpu_view()[10] = 0xAB
    assert mem[10] == 0xAB
    arr = buf.numpy(np.uint32, count=4, offset=16)
    arr[:] = [1, 2, 3, 4]
    assert bytes(mem[16:20]) == (1).to_bytes(4, "little")


def test_views_offset_addresses_share_memory_and_check_bounds(host):
    mem, buf = host
    v = buf.view(1024, 512)
    assert (v.va, v.size, v.base, v.offset) == (buf.va + 1024, 512, buf, 1024)
    vv = v.view(16, 16)
    assert vv.base is buf and vv.offset == 1040 and vv.va == buf.va + 1040
    vv.cpu_view()[0] = 7
    assert mem[1040] == 7
    with pytest.raises(ValueError, match=r"view \[500, 520\) is outside"):
        v.view(500, 20)
    with pytest.raises(ValueError):
        buf.view(-1, 4)


def test_use_after_free_is_an_error_for_the_buffer_and_its_views(host):
    _, buf = host
    v = buf.view(0, 16)
    buf.mark_freed()
    for call in (buf.cpu_view, v.cpu_view, lambda: buf.view(0, 1), lambda: v.add_mapping("dev1")):
        with pytest.raises(InvalidHandleError, match="was freed"):
            call()
    assert "freed" in repr(v)


def test_device_local_memory_has_no_cpu_view():
    buf = Buffer(0x2000, 64, "dev0", MemFlags.DEVICE_LOCAL)
    assert buf.cpu_view() is None
    with pytest.raises(ValueError, match="not host-visible"):
        buf.numpy(np.float32)


def test_mappings_are_shared_with_views(host):
    _, buf = host
    v = buf.view(64)
    buf.add_mapping("dev1")
    assert v.mapped_on == {"dev0", "dev1"}
