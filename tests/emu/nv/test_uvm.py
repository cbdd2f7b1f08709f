"""The emulated /dev/nvidia-uvm: initialization, GPU registration, external ranges and mappings into the GPU VA
space (the VASpace EMU-GPU's engines translate through)."""
from __future__ import annotations

import ctypes

import pytest

from autogen import nv_classes as cls
from autogen import nv_rm as rm
from autogen import nv_uvm as uvm
from emu.nv.vaspace import MMUFault
from tests.emu.nv.conftest import UVMClient

BASE = 0x300000000


@pytest.fixture
def setup(nvsys, client):
    system, nv = nvsys
    dev, sub = client.device()
    vas = client.alloc(dev, 0, cls.FERMI_VASPACE_A, rm.NV_VASPACE_ALLOCATION_PARAMETERS())
    u = UVMClient(system, client)
    return system, nv, client, u, dev, vas


def test_initialize_rules(setup):
    system, nv, c, u, dev, vas = setup
    assert u.call(uvm.UVM_REGISTER_GPU, u.register_params(0)) == rm.NV_ERR_ILLEGAL_ACTION  # before INITIALIZE
    assert u.call(uvm.UVM_INITIALIZE, uvm.UVM_INITIALIZE_PARAMS(flags=0x4)) == rm.NV_ERR_INVALID_ARGUMENT
    assert u.call(uvm.UVM_INITIALIZE, uvm.UVM_INITIALIZE_PARAMS(flags=uvm.UVM_INIT_FLAGS_DISABLE_HMM)) == rm.NV_OK
    assert u.call(uvm.UVM_INITIALIZE, uvm.UVM_INITIALIZE_PARAMS(flags=0)) == rm.NV_ERR_INVALID_ARGUMENT
    assert u.call(uvm.UVM_INITIALIZE, uvm.UVM_INITIALIZE_PARAMS(flags=uvm.UVM_INIT_FLAGS_DISABLE_HMM)) == rm.NV_OK
    assert u.call(uvm.UVM_MM_INITIALIZE, uvm.UVM_MM_INITIALIZE_PARAMS(uvmFd=c.ctl), fd=u.mm_fd) == \
        rm.NV_ERR_INVALID_ARGUMENT  # not a UVM fd
    assert u.call(uvm.UVM_MM_INITIALIZE, uvm.UVM_MM_INITIALIZE_PARAMS(uvmFd=u.fd), fd=u.mm_fd) == rm.NV_OK
    assert u.call(uvm.UVM_MM_INITIALIZE, uvm.UVM_MM_INITIALIZE_PARAMS(uvmFd=u.fd), fd=u.mm_fd) == rm.NV_ERR_IN_USE
    assert u.call(uvm.UVM_INITIALIZE, uvm.UVM_INITIALIZE_PARAMS(), fd=u.mm_fd) == rm.NV_ERR_INVALID_ARGUMENT


def test_register_rules(setup):
    system, nv, c, u, dev, vas = setup
    assert u.call(uvm.UVM_INITIALIZE, uvm.UVM_INITIALIZE_PARAMS()) == rm.NV_OK
    bad = u.register_params(0)
    bad.gpu_uuid.uuid[0] ^= 0xFF
    assert u.call(uvm.UVM_REGISTER_GPU, bad) == rm.NV_ERR_GPU_UUID_NOT_FOUND
    nofd = u.register_params(0)
    nofd.rmCtrlFd = u.fd
    assert u.call(uvm.UVM_REGISTER_GPU, nofd) == rm.NV_ERR_INVALID_ARGUMENT  # rmCtrlFd must be nvidiactl
    p = uvm.UVM_REGISTER_GPU_VASPACE_PARAMS(rmCtrlFd=c.ctl, hClient=c.client, hVaSpace=vas)
    p.gpuUuid.uuid[:] = nv.rgpus[0].uuid
    assert u.call(uvm.UVM_REGISTER_GPU_VASPACE, p) == rm.NV_ERR_INVALID_DEVICE  # the GPU is not registered yet
    assert u.call(uvm.UVM_REGISTER_GPU, u.register_params(0)) == rm.NV_OK
    assert u.call(uvm.UVM_REGISTER_GPU, u.register_params(0)) == rm.NV_ERR_INVALID_DEVICE  # twice
    p.hVaSpace = dev
    assert u.call(uvm.UVM_REGISTER_GPU_VASPACE, p) == rm.NV_ERR_INVALID_OBJECT
    p.hVaSpace = vas
    assert u.call(uvm.UVM_REGISTER_GPU_VASPACE, p) == rm.NV_OK
    assert u.call(uvm.UVM_REGISTER_GPU_VASPACE, p) == rm.NV_ERR_INVALID_DEVICE


def test_ranges_and_mappings(setup):
    system, nv, c, u, dev, vas = setup
    u.setup(0, vas)
    mem = c.memory(dev, 2 << 20)
    host = nv.clients[c.client].objects[mem].state["mem"].host
    vaspace = nv.clients[c.client].objects[vas].state["vaspace"]
    assert u.create_range(BASE + 100, 4096) == rm.NV_ERR_INVALID_ADDRESS
    assert u.create_range(0, 4096) == rm.NV_ERR_INVALID_ADDRESS
    assert u.create_range(BASE, 4 << 20) == rm.NV_OK
    assert u.create_range(BASE + (2 << 20), 4 << 20) == rm.NV_ERR_UVM_ADDRESS_IN_USE
    assert u.map(BASE + (8 << 20), 4096, mem) == rm.NV_ERR_INVALID_ADDRESS  # not in an external range
    assert u.map(BASE, 4 << 20, mem) == rm.NV_ERR_INVALID_ARGUMENT  # longer than the memory
    assert u.map(BASE, 4096, dev) == rm.NV_ERR_INVALID_OBJECT  # not memory
    assert u.map(BASE, 4096, 0x999) == rm.NV_ERR_OBJECT_NOT_FOUND
    assert u.map(BASE, 2 << 20, mem, gpu=0) == rm.NV_OK
    assert vaspace.translate(BASE + 64, 8, True) == host + 64  # the GPU reaches the memory's pages at base
    assert u.map(BASE + (2 << 20), 4096, mem, offset=4096) == rm.NV_OK
    assert vaspace.translate(BASE + (2 << 20), 4, False) == host + 4096
    # RM freeing the memory while UVM maps it: the pages stay until UVM lets go (UVM holds a dup)
    pool = nv.rgpus[0].vram
    before = pool.free_bytes
    assert c.free(mem) == rm.NV_OK and pool.free_bytes == before
    assert u.free(BASE, 2 << 20) == rm.NV_ERR_INVALID_ADDRESS  # not the whole range
    assert u.free(BASE, 4 << 20) == rm.NV_OK
    assert pool.free_bytes == before + (2 << 20)
    with pytest.raises(MMUFault):
        vaspace.translate(BASE + 64, 8, False)


def test_unmap_external(setup):
    system, nv, c, u, dev, vas = setup
    u.setup(0, vas)
    mem = c.memory(dev, 1 << 20, vram=False)
    vaspace = nv.clients[c.client].objects[vas].state["vaspace"]
    assert u.create_range(BASE, 1 << 20) == rm.NV_OK and u.map(BASE, 1 << 20, mem) == rm.NV_OK
    p = uvm.UVM_UNMAP_EXTERNAL_PARAMS(base=BASE, length=1 << 20)
    p.gpuUuid.uuid[:] = nv.rgpus[0].uuid
    assert u.call(uvm.UVM_UNMAP_EXTERNAL, p) == rm.NV_OK
    with pytest.raises(MMUFault):
        vaspace.translate(BASE, 4, False)
    assert u.map(BASE, 1 << 20, mem) == rm.NV_OK  # the range is still there: map again
    ctypes.c_uint32.from_address(vaspace.translate(BASE, 4, True)).value = 5
    p.base = BASE + (1 << 20)
    assert u.call(uvm.UVM_UNMAP_EXTERNAL, p) == rm.NV_ERR_INVALID_ADDRESS
