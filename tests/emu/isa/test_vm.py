"""The executor's view of GPU memory: checked lane-parallel reads and writes, faults that name the address, the
access and the nearest buffer, and injected poison."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from emu.amd.isa.vm import AddressSpace, VMFault

A, B = 0x7F00_0000, 0x7F00_2000


@pytest.fixture
def vm():
    space = AddressSpace()
    space.bufs = {A: np.zeros(4096, np.uint8), B: np.zeros(256, np.uint8)}
    for va, arr in space.bufs.items():
        space.map(va, arr.size, arr)
    return space


def test_gather_and_scatter_across_two_buffers(vm):
    vm.bufs[A][:16] = np.arange(16, dtype=np.uint8)
    vm.bufs[B][8:12] = [0xAA, 0xBB, 0xCC, 0xDD]
    got = vm.read(np.array([A, A + 4, B + 8, A + 1], np.uint64), 4)
    assert got.view("<u4").ravel().tolist() == [0x03020100, 0x07060504, 0xDDCCBBAA, 0x04030201]
    vm.write(np.array([B + 0, A + 100], np.uint64), np.array([[1, 2], [3, 4]], np.uint8))
    assert vm.bufs[B][:2].tolist() == [1, 2] and vm.bufs[A][100:102].tolist() == [3, 4]


@pytest.mark.parametrize("size", [1, 2, 4, 8, 12, 16])
def test_every_access_size_round_trips(vm, size):
    data = np.arange(3 * size, dtype=np.uint8).reshape(3, size)
    addrs = np.array([A + 7, A + 7 + 64, B + 256 - size], np.uint64)
    vm.write(addrs, data)
    assert (vm.read(addrs, size) == data).all()


def test_a_read_past_the_end_names_the_address_and_the_buffer(vm):
    with pytest.raises(VMFault) as e:
        vm.read(np.array([A, A + 4096 + 0x40], np.uint64), 4, lanes=np.array([0, 5]))
    f = e.value
    assert f.va == A + 4096 + 0x40 and f.access == "read" and f.kind == "page fault" and f.lane == 5
    assert "0x40 bytes past the end of the buffer at 0x7f000000 (4096 bytes)" in str(f)


def test_an_access_straddling_the_end_faults_before_writing_anything(vm):
    with pytest.raises(VMFault) as e:
        vm.write(np.array([A, A + 4094], np.uint64), np.full((2, 4), 9, np.uint8))
    assert e.value.access == "write" and e.value.va == A + 4094
    assert "over the end of the buffer at 0x7f000000" in str(e.value)
    assert not vm.bufs[A].any()  # checked first, then written


def test_below_every_buffer_and_between_buffers(vm):
    with pytest.raises(VMFault, match="bytes before the buffer at 0x7f000000"):
        vm.read(np.array([A - 8], np.uint64), 4)
    with pytest.raises(VMFault, match="past the end of the buffer at 0x7f000000"):
        vm.read(np.array([A + 4200], np.uint64), 4)
    with pytest.raises(VMFault, match="before the buffer at 0x7f002000"):
        vm.read(np.array([B - 4], np.uint64), 4)


def test_poisoned_bytes_fault_although_mapped(vm):
    vm.poison(A + 0x100, 0x10)
    vm.read(np.array([A + 0xFC], np.uint64), 4)  # ends just before the poison
    with pytest.raises(VMFault, match="poisoned") as e:
        vm.read(np.array([A + 0xFE], np.uint64), 4)
    assert e.value.va == A + 0x100


def test_unmap_and_sync_follow_the_owner(vm):
    vm.unmap(B)
    with pytest.raises(VMFault):
        vm.read(np.array([B], np.uint64), 4)
    host = (ctypes.c_uint8 * 64)()
    host[3] = 77
    va = ctypes.addressof(host)
    vm.sync({va: 64})  # host memory at its own address, as in the CP's process
    assert vm.ranges == {va: 64}
    assert vm.read(np.array([va + 3], np.uint64), 1)[0, 0] == 77
    vm.write(np.array([va], np.uint64), np.array([[5]], np.uint8))
    assert host[0] == 5


def test_remote_ranges_go_through_their_accessor(vm):
    class Remote:
        def __init__(self):
            self.mem = bytearray(32)

        def read(self, off, n):
            return bytes(self.mem[off:off + n])

        def write(self, off, data):
            self.mem[off:off + len(data)] = data
    r = Remote()
    vm.map(0x1000, 32, r)
    vm.write(np.array([0x1004, 0x1010], np.uint64), np.array([[1, 2], [3, 4]], np.uint8))
    assert r.mem[4:6] == b"\x01\x02" and vm.read(np.array([0x1010], np.uint64), 2).tolist() == [[3, 4]]


def test_lookups_are_vectorized_over_many_lanes(vm):
    addrs = A + 4 * np.arange(1024, dtype=np.uint64)
    vm.write(addrs, np.arange(4096, dtype=np.uint32).astype(np.uint8).reshape(1024, 4))
    assert (vm.read(addrs, 4).ravel() == np.arange(4096).astype(np.uint8)).all()
