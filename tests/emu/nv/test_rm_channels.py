"""Channels, OS events and channel errors through the emulated RM (fake GPU: the RM side only)."""
from __future__ import annotations

import ctypes
import errno
import select
import time

import pytest

from autogen import nv_classes as cls
from autogen import nv_rm as rm
from drivers.system import OSCallError
from tests.emu.nv.conftest import RMClient, UVMClient

RING_VA, USERD_VA = 0x200000000, 0x200100000


def setup_channel(c: RMClient, u: UVMClient, engine_type: int = rm.NV2080_ENGINE_TYPE_GRAPHICS, entries: int = 64,
                  **overrides: int) -> dict[str, int]:
    dev, sub = c.device()
    vas = c.alloc(dev, 0, cls.FERMI_VASPACE_A, rm.NV_VASPACE_ALLOCATION_PARAMETERS(
        flags=rm.NV_VASPACE_ALLOCATION_FLAGS_ENABLE_PAGE_FAULTING | rm.NV_VASPACE_ALLOCATION_FLAGS_IS_EXTERNALLY_OWNED))
    u.setup(0, vas)
    ring = c.memory(dev, 1 << 20, vram=False)
    userd = c.memory(dev, 4096, vram=False)
    notifier = c.memory(dev, 4096, vram=False)
    assert u.create_range(RING_VA, 1 << 20) == rm.NV_OK and u.map(RING_VA, 1 << 20, ring) == rm.NV_OK
    group = c.alloc(dev, 0, cls.KEPLER_CHANNEL_GROUP_A, rm.NV_CHANNEL_GROUP_ALLOCATION_PARAMETERS(
        engineType=engine_type))
    share = c.alloc(group, 0, cls.FERMI_CONTEXT_SHARE_A, rm.NV_CTXSHARE_ALLOCATION_PARAMETERS(hVASpace=vas))
    h = dict(dev=dev, sub=sub, vas=vas, ring=ring, userd=userd, notifier=notifier, group=group, share=share)
    p = channel_params(h, entries, **overrides)
    h["channel_status"] = c.alloc(group, 0, cls.HOPPER_CHANNEL_GPFIFO_A, p, expect=None)
    return h


def channel_params(h: dict[str, int], entries: int = 64, **overrides: int) -> rm.NV_CHANNEL_ALLOC_PARAMS:
    p = rm.NV_CHANNEL_ALLOC_PARAMS(hObjectError=h["notifier"], hObjectBuffer=h["ring"], gpFifoOffset=RING_VA,
                                   gpFifoEntries=entries, hContextShare=h["share"])
    p.hUserdMemory[0], p.userdOffset[0] = h["userd"], 0
    for k, v in overrides.items():
        if k == "userdOffset":
            p.userdOffset[0] = v
        else:
            setattr(p, k, v)
    return p


@pytest.fixture
def uvmc(nvsys, client):
    return UVMClient(nvsys[0], client)


def test_channel_handed_to_gpu_and_scheduled(client, uvmc, nvsys):
    _, nv = nvsys
    c = client
    h = setup_channel(c, uvmc)
    ch = h["channel_status"]
    assert ch >> 20 == 0xCAF  # an RM-chosen handle, not a status
    compute = c.alloc(ch, 0, cls.HOPPER_COMPUTE_A, None)
    assert compute
    tok = rm.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN_PARAMS()
    assert c.control(ch, rm.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN, tok) == rm.NV_OK and tok.workSubmitToken
    gpu = nv.gpus[0]
    desc = gpu.channels[tok.workSubmitToken]
    assert (desc.engine, desc.gpfifo_va, desc.entries, desc.host_class) == ("compute", RING_VA, 64,
                                                                            cls.HOPPER_CHANNEL_GPFIFO_A)
    userd_mem = nv.clients[c.client].objects[h["userd"]].state["mem"]
    assert desc.userd_host == userd_mem.host
    assert gpu.objects == [(tok.workSubmitToken, cls.HOPPER_COMPUTE_A)]
    assert c.control(h["group"], rm.NVA06C_CTRL_CMD_GPFIFO_SCHEDULE,
                     rm.NVA06C_CTRL_GPFIFO_SCHEDULE_PARAMS(bEnable=1)) == rm.NV_OK
    assert gpu.scheduled == [([tok.workSubmitToken], True)]
    # the copy class does not belong under a compute channel; another architecture's class is not this GPU's
    assert c.status_of_alloc(ch, cls.HOPPER_DMA_COPY_A, None) == rm.NV_ERR_INVALID_ARGUMENT
    assert c.status_of_alloc(ch, cls.AMPERE_COMPUTE_B, None) == rm.NV_ERR_INVALID_CLASS
    assert c.free(h["group"]) == rm.NV_OK and not gpu.channels  # freeing the group frees its channel


@pytest.mark.parametrize("overrides,status", [
    (dict(gpFifoEntries=48), rm.NV_ERR_INVALID_ARGUMENT),  # not a power of two
    (dict(gpFifoOffset=RING_VA + (1 << 20)), rm.NV_ERR_INVALID_ADDRESS),  # ring not mapped in the VA space
    (dict(userdOffset=100), rm.NV_ERR_INVALID_ADDRESS),  # USERD not 512-aligned
    (dict(userdOffset=4096), rm.NV_ERR_INVALID_ARGUMENT),  # USERD past its memory
    (dict(engineType=rm.NV2080_ENGINE_TYPE_COPY0), rm.NV_ERR_INVALID_ARGUMENT),  # engine differs from the group's
    (dict(hVASpace=1), rm.NV_ERR_INVALID_ARGUMENT),  # both a context share and a VA space
    (dict(hObjectBuffer=0x4242), rm.NV_ERR_OBJECT_NOT_FOUND),
])
def test_channel_parameter_rules(client, uvmc, overrides, status):
    h = setup_channel(client, uvmc, **overrides)
    assert h["channel_status"] == status


def test_channel_group_rules(client, uvmc):
    c = client
    h = setup_channel(c, uvmc)
    assert c.status_of_alloc(h["dev"], cls.KEPLER_CHANNEL_GROUP_A,
                             rm.NV_CHANNEL_GROUP_ALLOCATION_PARAMETERS(engineType=0x3F)) == rm.NV_ERR_INVALID_ARGUMENT
    assert c.status_of_alloc(h["dev"], cls.HOPPER_CHANNEL_GPFIFO_A, channel_params(h)) == \
        rm.NV_ERR_INVALID_OBJECT_PARENT  # channels live in channel groups
    small = c.memory(h["dev"], 4096, vram=False)
    free_vas = c.memory(h["dev"], 4096, vram=False)
    assert c.status_of_alloc(h["group"], cls.HOPPER_CHANNEL_GPFIFO_A,
                             channel_params({**h, "notifier": small, "userd": free_vas})) == rm.NV_OK
    assert c.status_of_alloc(h["group"], cls.HOPPER_CHANNEL_GPFIFO_A,
                             channel_params({**h, "share": 0})) == rm.NV_ERR_INVALID_ARGUMENT  # mixing ctxshare modes


def arm_os_event(c: RMClient, system, sub: int, flags: int = rm.NV01_EVENT_NONSTALL_INTR) -> tuple[int, int]:
    fd = system.open("/dev/nvidiactl")
    a = rm.nv_ioctl_alloc_os_event_t(hClient=c.client, hDevice=sub, fd=fd)
    system.ioctl(fd, rm.NV_IOC_ALLOC_OS_EVENT, a)
    assert a.Status == rm.NV_OK
    ev = c.alloc(sub, 0, cls.NV01_EVENT_OS_EVENT, rm.NV0005_ALLOC_PARAMETERS(
        hParentClient=c.client, hSrcResource=sub, hClass=cls.NV01_EVENT_OS_EVENT,
        notifyIndex=rm.NV2080_NOTIFIERS_FIFO_EVENT_MTHD | flags, data=fd))
    assert c.control(sub, rm.NV2080_CTRL_CMD_EVENT_SET_NOTIFICATION, rm.NV2080_CTRL_EVENT_SET_NOTIFICATION_PARAMS(
        event=rm.NV2080_NOTIFIERS_FIFO_EVENT_MTHD, action=rm.NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_REPEAT)) == 0
    return fd, ev


def get_event(system, fd: int) -> tuple[int, rm.NvUnixEvent, int]:
    ev = rm.NvUnixEvent()
    p = rm.NVOS41_PARAMETERS(pEvent=ctypes.addressof(ev))
    system.ioctl(fd, rm.NV_IOC_RM_GET_EVENT_DATA, p)
    return p.status, ev, p.MoreEvents


def test_os_event_poll_and_drain(client, nvsys):
    system, nv = nvsys
    c = client
    dev, sub = c.device()
    fd, ev = arm_os_event(c, system, sub)
    kicks = nv.gpus[0].kicks
    t0 = time.monotonic()
    assert system.poll(fd, select.POLLIN | select.POLLPRI, 50) == 0  # nothing yet: a bounded sleep
    assert time.monotonic() - t0 < 2 and nv.gpus[0].kicks > kicks  # and the doorbell watcher was kicked
    nv.gpus[0].on_nonstall(1)
    nv.gpus[0].on_nonstall(1)
    assert system.poll(fd, select.POLLIN, 1000) == select.POLLIN | select.POLLPRI
    status, e, more = get_event(system, fd)
    assert status == rm.NV_OK and e.hObject == ev and e.NotifyIndex == rm.NV2080_NOTIFIERS_FIFO_EVENT_MTHD and more == 1
    status, e, more = get_event(system, fd)
    assert status == rm.NV_OK and more == 0
    assert get_event(system, fd)[0] == rm.NV_ERR_OPERATING_SYSTEM  # drained
    # an OS event object needs NV_ESC_ALLOC_OS_EVENT for its fd first; the same (client, fd) registers once
    assert c.status_of_alloc(sub, cls.NV01_EVENT_OS_EVENT, rm.NV0005_ALLOC_PARAMETERS(
        hParentClient=c.client, hSrcResource=sub, hClass=cls.NV01_EVENT_OS_EVENT,
        notifyIndex=rm.NV2080_NOTIFIERS_FIFO_EVENT_MTHD, data=9999)) == rm.NV_ERR_INVALID_ARGUMENT
    again = rm.nv_ioctl_alloc_os_event_t(hClient=c.client, hDevice=sub, fd=fd)
    system.ioctl(fd, rm.NV_IOC_ALLOC_OS_EVENT, again)
    assert again.Status == rm.NV_ERR_INSUFFICIENT_RESOURCES
    freed = rm.nv_ioctl_free_os_event_t(hClient=c.client, hDevice=sub, fd=12345)
    system.ioctl(fd, rm.NV_IOC_FREE_OS_EVENT, freed)
    assert freed.Status == rm.NV_ERR_INVALID_EVENT


def test_disarmed_event_is_not_posted(client, nvsys):
    system, nv = nvsys
    c = client
    _, sub = c.device()
    fd, _ = arm_os_event(c, system, sub)
    assert c.control(sub, rm.NV2080_CTRL_CMD_EVENT_SET_NOTIFICATION, rm.NV2080_CTRL_EVENT_SET_NOTIFICATION_PARAMS(
        event=rm.NV2080_NOTIFIERS_FIFO_EVENT_MTHD, action=rm.NV2080_CTRL_EVENT_SET_NOTIFICATION_ACTION_DISABLE)) == 0
    nv.gpus[0].on_nonstall(1)
    assert system.poll(fd, select.POLLIN, 20) == 0


def test_channel_error_writes_notifier_and_wakes(client, uvmc, nvsys):
    system, nv = nvsys
    c = client
    h = setup_channel(c, uvmc)
    ch = h["channel_status"]
    compute = c.alloc(ch, 0, cls.HOPPER_COMPUTE_A, None)
    fd, _ = arm_os_event(c, system, h["sub"])
    tok = rm.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN_PARAMS()
    c.control(ch, rm.NVC36F_CTRL_CMD_GPFIFO_GET_WORK_SUBMIT_TOKEN, tok)
    # The debugger sits under the device (resource_list.h), never under the client.
    assert c.status_of_alloc(c.client, rm.GT200_DEBUGGER, rm.NV83DE_ALLOC_PARAMETERS(
        hAppClient=c.client, hClass3dObject=compute)) == rm.NV_ERR_INVALID_OBJECT_PARENT
    dbg = c.alloc(h["dev"], 0, rm.GT200_DEBUGGER, rm.NV83DE_ALLOC_PARAMETERS(hAppClient=c.client,
                                                                             hClass3dObject=compute))
    nv.gpus[0].on_error(tok.workSubmitToken, rm.ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT,
                        {"address": 0xDEAD000, "access": "write", "engine": "compute"})
    note = rm.NvNotification.from_address(nv.clients[c.client].objects[h["notifier"]].state["mem"].host)
    assert note.info32 == rm.ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT and note.status == 0xFFFF
    assert note.info16 == rm.NV2080_ENGINE_TYPE_GRAPHICS and (note.timeStampNanoseconds[0] or
                                                              note.timeStampNanoseconds[1])
    assert system.poll(fd, select.POLLIN, 1000) != 0  # the sleeper wakes
    info = rm.NV83DE_CTRL_DEBUG_READ_MMU_FAULT_INFO_PARAMS()
    assert c.control(dbg, rm.NV83DE_CTRL_CMD_DEBUG_READ_MMU_FAULT_INFO, info) == rm.NV_OK
    assert info.count == 1 and info.mmuFaultInfoList[0].faultAddress == 0xDEAD000
    assert info.mmuFaultInfoList[0].accessType == 1
    assert c.control(dbg, rm.NV83DE_CTRL_CMD_DEBUG_READ_MMU_FAULT_INFO, info) == rm.NV_OK and info.count == 0
    nv.kill_channel(0, tok.workSubmitToken)  # the fault-injection hook goes through the GPU
    assert note.info32 == rm.ROBUST_CHANNEL_PBDMA_ERROR


def test_closing_nvidiactl_frees_its_clients(nvsys):
    system, nv = nvsys
    c = RMClient(system, nv)
    c.device()
    assert c.client in nv.clients
    system.close(c.ctl)
    assert c.client not in nv.clients
    with pytest.raises(OSCallError) as e:
        system.ioctl(c.ctl, rm.NV_IOC_RM_FREE, rm.NVOS00_PARAMETERS())
    assert e.value.errno == errno.EBADF


def test_with_the_emulated_gpu():
    """The same bring-up against EMU-GPU's EmuNVGPU: the channel is accepted, the timer runs, close stops it."""
    from emu.nv.rm import EmulatedNV
    from emu.system import EmulatedSystem
    nv = EmulatedNV(("sm_90",), vram_limit=64 << 20, sysmem_limit=64 << 20)
    system = EmulatedSystem()
    nv.install(system)
    try:
        c = RMClient(system, nv)
        h = setup_channel(c, UVMClient(system, c))
        assert h["channel_status"] >> 20 == 0xCAF
        assert c.alloc(h["channel_status"], 0, cls.HOPPER_COMPUTE_A, None)
        assert c.control(h["group"], rm.NVA06C_CTRL_CMD_GPFIFO_SCHEDULE,
                         rm.NVA06C_CTRL_GPFIFO_SCHEDULE_PARAMS(bEnable=1)) == rm.NV_OK
        t = rm.NV2080_CTRL_TIMER_GET_TIME_PARAMS()
        assert c.control(h["sub"], rm.NV2080_CTRL_CMD_TIMER_GET_TIME, t) == rm.NV_OK and t.time_nsec > 0
        assert isinstance(nv.counters(0), dict)
        assert c.free(h["group"]) == rm.NV_OK
    finally:
        nv.close()
