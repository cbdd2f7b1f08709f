"""The emulated RM's rules: escapes and their errnos, the handle tree, controls, memory and CPU mappings."""
from __future__ import annotations

import ctypes
import errno
import mmap

import pytest

from autogen import nv_classes as cls
from autogen import nv_rm as rm
from autogen.ioctl import _IOWR
from drivers.system import OSCallError
from emu.nv.rm import NV_VERSION_STRING, EmulatedNV
from emu.system import EmulatedSystem
from tests.emu.nv.conftest import FakeGPU, RMClient


def version(cmd: int, text: bytes) -> rm.nv_ioctl_rm_api_version_t:
    p = rm.nv_ioctl_rm_api_version_t(cmd=cmd)
    ctypes.memmove(ctypes.addressof(p) + rm.nv_ioctl_rm_api_version_t.versionString.offset, text, len(text))
    return p


def test_version_check_strict_relaxed_and_mismatch(nvsys):
    system, _ = nvsys
    ctl = system.open("/dev/nvidiactl")
    p = version(rm.NV_RM_API_VERSION_CMD_STRICT, NV_VERSION_STRING.encode())
    assert system.ioctl(ctl, rm.NV_IOC_CHECK_VERSION_STR, p) == 0 and p.reply == rm.NV_RM_API_VERSION_REPLY_RECOGNIZED
    branch = NV_VERSION_STRING.split(".")[0].encode()  # RELAXED compares up to the first '.': any release of it
    relaxed = version(rm.NV_RM_API_VERSION_CMD_RELAXED, branch + b".1")
    assert system.ioctl(ctl, rm.NV_IOC_CHECK_VERSION_STR, relaxed) == 0
    bad = version(rm.NV_RM_API_VERSION_CMD_STRICT, b"535.104.05")
    with pytest.raises(OSCallError) as e:  # osapi.c RmPerformVersionCheck -> NV_ERR_GENERIC -> -EINVAL
        system.ioctl(ctl, rm.NV_IOC_CHECK_VERSION_STR, bad)
    assert e.value.errno == errno.EINVAL and "535.104.05" in str(e.value)
    assert bytes(bad.versionString).split(b"\0")[0] == NV_VERSION_STRING.encode()  # RM writes its own version back
    dev = system.open("/dev/nvidia0")
    with pytest.raises(OSCallError) as e:  # NV_CTL_DEVICE_ONLY
        system.ioctl(dev, rm.NV_IOC_CHECK_VERSION_STR, version(0, NV_VERSION_STRING.encode()))
    assert e.value.errno == errno.EINVAL


def test_the_emulated_module_is_the_pinned_release():
    from autogen.generator.nv_sources import pinned_versions
    from drivers.nv.device import PINNED_VERSION
    assert NV_VERSION_STRING == pinned_versions()["open-gpu-kernel-modules"].split()[0] == PINNED_VERSION


def test_files_and_card_info(nvsys):
    system, nv = nvsys
    assert NV_VERSION_STRING in system.read_file("/proc/driver/nvidia/version").decode()
    assert system.read_text("/sys/module/nvidia/version") == NV_VERSION_STRING
    bdf = nv.rgpus[0].bdf
    assert system.read_text(f"/sys/bus/pci/devices/{bdf}/vendor") == "0x10de"
    assert system.read_text(f"/sys/bus/pci/devices/{bdf}/device") == "0x2335"
    ctl = system.open("/dev/nvidiactl")
    cards = (rm.nv_ioctl_card_info_t * 32)()
    system.ioctl(ctl, _IOWR(rm.NV_IOCTL_MAGIC, rm.NV_ESC_CARD_INFO, cards), cards)
    assert cards[0].valid and cards[0].pci_info.vendor_id == 0x10DE and cards[0].minor_number == 0
    assert not cards[1].valid


def test_alloc_sizes_and_nodes(nvsys, client):
    system, _ = nvsys
    assert client.client >> 20 == 0xC1D  # RM chose the client handle
    p = rm.NVOS21_PARAMETERS(hRoot=0, hObjectParent=0, hObjectNew=0, hClass=cls.NV01_ROOT_CLIENT)
    system.ioctl(client.ctl, rm.NV_IOC_RM_ALLOC_NVOS21, p)  # the short form, told apart by size
    assert p.status == rm.NV_OK and p.hObjectNew not in (0, client.client)
    with pytest.raises(OSCallError) as e:  # neither NVOS21 nor NVOS64 (escape.c: NV_ERR_INVALID_ARGUMENT -> EINVAL)
        system.ioctl(client.ctl, _IOWR(rm.NV_IOCTL_MAGIC, rm.NV_ESC_RM_ALLOC, 24), bytearray(24))
    assert e.value.errno == errno.EINVAL
    dev0 = system.open("/dev/nvidia0")
    with pytest.raises(OSCallError):  # RM_ALLOC of a non-event class only on nvidiactl
        client.alloc(client.client, 0, cls.NV01_DEVICE_0, rm.NV0080_ALLOC_PARAMETERS(), fd=dev0)
    with pytest.raises(OSCallError) as e:  # the kernel would copy in past the end of a smaller buffer
        system.ioctl(client.ctl, rm.NV_IOC_RM_ALLOC, rm.NVOS00_PARAMETERS())
    assert e.value.errno == errno.EFAULT


def test_handle_tree_rules(client):
    c = client
    dev, sub = c.device()
    assert c.status_of_alloc(c.client, cls.NV20_SUBDEVICE_0, rm.NV2080_ALLOC_PARAMETERS()) == \
        rm.NV_ERR_INVALID_OBJECT_PARENT
    assert c.status_of_alloc(0xBAD, cls.NV20_SUBDEVICE_0, rm.NV2080_ALLOC_PARAMETERS()) == rm.NV_ERR_OBJECT_NOT_FOUND
    assert c.status_of_alloc(dev, cls.NV20_SUBDEVICE_0, rm.NV2080_ALLOC_PARAMETERS(), handle=sub) == \
        rm.NV_ERR_INSERT_DUPLICATE_NAME
    assert c.status_of_alloc(dev, 0x1234, None) == rm.NV_ERR_INVALID_CLASS
    assert c.status_of_alloc(c.client, cls.NV01_DEVICE_0, rm.NV0080_ALLOC_PARAMETERS(deviceId=3)) == \
        rm.NV_ERR_INVALID_ARGUMENT
    assert c.status_of_alloc(dev, cls.KEPLER_CHANNEL_GROUP_A, None) == rm.NV_ERR_INVALID_ARGUMENT  # params required
    assert c.alloc(dev, 0, cls.NV20_SUBDEVICE_0, None, expect=None, client=0x1234) == rm.NV_ERR_INVALID_OBJECT_HANDLE
    um = c.alloc(sub, 0, cls.TURING_USERMODE_A, None)
    assert um and c.status_of_alloc(dev, cls.TURING_USERMODE_A, None) == rm.NV_ERR_INVALID_OBJECT_PARENT
    # RM_FREE frees the subtree; an unknown handle frees as NV_OK (RS_COMPATABILITY_MODE)
    assert c.free(dev) == rm.NV_OK
    assert c.control(sub, rm.NV2080_CTRL_CMD_MC_GET_ARCH_INFO, rm.NV2080_CTRL_MC_GET_ARCH_INFO_PARAMS()) == \
        rm.NV_ERR_OBJECT_NOT_FOUND
    assert c.free(0x5555) == rm.NV_OK


def test_classes_by_architecture():
    nv = EmulatedNV(("sm_86", "sm_90"), vram_limit=16 << 20, sysmem_limit=16 << 20, gpu_factory=FakeGPU)
    system = EmulatedSystem()
    nv.install(system)
    try:
        c = RMClient(system, nv)
        for gpu, ok, bad in ((0, cls.AMPERE_CHANNEL_GPFIFO_A, cls.HOPPER_COMPUTE_A),
                             (1, cls.HOPPER_CHANNEL_GPFIFO_A, cls.AMPERE_COMPUTE_B)):
            dev, sub = c.device(gpu)
            lst = rm.NV0080_CTRL_GPU_GET_CLASSLIST_V2_PARAMS()
            assert c.control(dev, rm.NV0080_CTRL_CMD_GPU_GET_CLASSLIST_V2, lst) == rm.NV_OK
            classes = set(lst.classList[:lst.numClasses])
            assert ok in classes and bad not in classes and rm.GT200_DEBUGGER in classes
            arch = rm.NV2080_CTRL_MC_GET_ARCH_INFO_PARAMS()
            assert c.control(sub, rm.NV2080_CTRL_CMD_MC_GET_ARCH_INFO, arch) == rm.NV_OK
            assert arch.architecture == (rm.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GA100 if gpu == 0 else
                                         rm.NV2080_CTRL_MC_ARCH_INFO_ARCHITECTURE_GH100)
    finally:
        nv.close()


def test_controls(client, nvsys):
    _, nv = nvsys
    c = client
    ids = rm.NV0000_CTRL_GPU_GET_PROBED_IDS_PARAMS()
    assert c.control(c.client, rm.NV0000_CTRL_CMD_GPU_GET_PROBED_IDS, ids) == rm.NV_OK
    assert ids.gpuIds[0] == nv.rgpus[0].gpu_id and ids.gpuIds[1] == rm.NV0000_CTRL_GPU_INVALID_ID
    info = rm.NV0000_CTRL_GPU_GET_ID_INFO_V2_PARAMS(gpuId=ids.gpuIds[0])
    assert c.control(c.client, rm.NV0000_CTRL_CMD_GPU_GET_ID_INFO_V2, info) == rm.NV_OK
    assert info.deviceInstance == 0 and info.gpuInstance == 0
    assert c.control(c.client, rm.NV0000_CTRL_CMD_GPU_GET_ID_INFO_V2,
                     rm.NV0000_CTRL_GPU_GET_ID_INFO_V2_PARAMS(gpuId=7)) == rm.NV_ERR_INVALID_ARGUMENT
    dev, sub = c.device()
    gid = rm.NV2080_CTRL_GPU_GET_GID_INFO_PARAMS(flags=rm.NV2080_GPU_CMD_GPU_GET_GID_FLAGS_FORMAT_BINARY)
    assert c.control(sub, rm.NV2080_CTRL_CMD_GPU_GET_GID_INFO, gid) == rm.NV_OK
    assert gid.length == 16 and bytes(gid.data[:16]) == nv.rgpus[0].uuid
    items = (rm.NV2080_CTRL_GR_INFO * 2)(rm.NV2080_CTRL_GR_INFO(index=rm.NV0080_CTRL_GR_INFO_INDEX_SM_VERSION),
                                         rm.NV2080_CTRL_GR_INFO(index=rm.NV0080_CTRL_GR_INFO_INDEX_LITTER_NUM_GPCS))
    gr = rm.NV2080_CTRL_GR_GET_INFO_PARAMS(grInfoListSize=2, grInfoList=ctypes.addressof(items))
    assert c.control(sub, rm.NV2080_CTRL_CMD_GR_GET_INFO, gr) == rm.NV_OK
    assert items[0].data == 0x0900 and items[1].data == 8
    fb = rm.NV2080_CTRL_FB_GET_INFO_V2_PARAMS(fbInfoListSize=1)
    fb.fbInfoList[0].index = rm.NV2080_CTRL_FB_INFO_INDEX_RAM_SIZE
    assert c.control(sub, rm.NV2080_CTRL_CMD_FB_GET_INFO_V2, fb) == rm.NV_OK and fb.fbInfoList[0].data == 64 << 10
    name = rm.NV2080_CTRL_GPU_GET_NAME_STRING_PARAMS()
    assert c.control(sub, rm.NV2080_CTRL_CMD_GPU_GET_NAME_STRING, name) == rm.NV_OK
    assert bytes(name.gpuNameString.ascii).split(b"\0")[0] == b"NVIDIA H200"
    t0, t1 = rm.NV2080_CTRL_TIMER_GET_TIME_PARAMS(), rm.NV2080_CTRL_TIMER_GET_TIME_PARAMS()
    assert c.control(sub, rm.NV2080_CTRL_CMD_TIMER_GET_TIME, t0) == rm.NV_OK
    assert c.control(sub, rm.NV2080_CTRL_CMD_TIMER_GET_TIME, t1) == rm.NV_OK and t1.time_nsec >= t0.time_nsec > 0
    # the errors: unknown command, wrong size, wrong object, unknown client
    assert c.control(sub, 0x20809999, rm.NV2080_CTRL_TIMER_GET_TIME_PARAMS()) == rm.NV_ERR_NOT_SUPPORTED
    assert c.control(sub, rm.NV2080_CTRL_CMD_TIMER_GET_TIME, rm.NV2080_CTRL_MC_GET_ARCH_INFO_PARAMS()) == \
        rm.NV_ERR_INVALID_ARGUMENT
    assert c.control(dev, rm.NV2080_CTRL_CMD_TIMER_GET_TIME, t0) == rm.NV_ERR_NOT_SUPPORTED
    assert c.control(sub, rm.NV2080_CTRL_CMD_TIMER_GET_TIME, t0, client=0x77) == rm.NV_ERR_INVALID_CLIENT


def test_vram_alignment_exhaustion_and_reuse(client):
    c = client
    dev, _ = c.device()
    m = rm.NV_MEMORY_ALLOCATION_PARAMS(owner=c.client, size=5000, attr=rm.NVOS32_ATTR_PAGE_SIZE_HUGE <<
                                       rm.NVOS32_ATTR_PAGE_SIZE_SHIFT)
    h = c.alloc(dev, 0, cls.NV01_MEMORY_LOCAL_USER, m)
    assert h and m.size == 2 << 20 and m.offset % (2 << 20) == 0 and m.limit == m.size - 1
    big = c.memory(dev, 40 << 20)
    assert c.memory(dev, 40 << 20, expect=rm.NV_ERR_NO_MEMORY) == rm.NV_ERR_NO_MEMORY  # vram_limit is 64 MiB
    assert c.free(big) == rm.NV_OK
    assert c.memory(dev, 40 << 20)  # freed space is reused
    assert c.memory(dev, 0, expect=rm.NV_ERR_INVALID_ARGUMENT) == rm.NV_ERR_INVALID_ARGUMENT
    assert c.memory(dev, 4096, alignment=3 << 12, expect=rm.NV_ERR_INVALID_ARGUMENT) == rm.NV_ERR_INVALID_ARGUMENT


def map_memory(c: RMClient, dev: int, mem: int, length: int, fd: int) -> rm.nv_ioctl_nvos33_parameters_with_fd:
    w = rm.nv_ioctl_nvos33_parameters_with_fd(fd=fd)
    w.params.hClient, w.params.hDevice, w.params.hMemory, w.params.length = c.client, dev, mem, length
    c.ioctl(c.ctl, rm.NV_IOC_RM_MAP_MEMORY, w)
    return w


def test_cpu_mapping_rules(client, nvsys):
    system, nv = nvsys
    c = client
    dev, sub = c.device()
    vram = c.memory(dev, 1 << 20)
    wrong = system.open("/dev/nvidiactl")
    assert map_memory(c, dev, vram, 1 << 20, wrong).params.status == rm.NV_ERR_INVALID_ARGUMENT  # BAR needs nvidiaN
    fd = system.open("/dev/nvidia0")
    with pytest.raises(OSCallError) as e:  # no context yet
        system.mmap(fd, 1 << 20)
    assert e.value.errno == errno.EINVAL
    assert map_memory(c, dev, vram, 1 << 20, fd).params.status == rm.NV_OK
    assert map_memory(c, dev, vram, 1 << 20, fd).params.status == rm.NV_ERR_STATE_IN_USE  # one context per fd
    assert map_memory(c, dev, vram, 2 << 20, system.open("/dev/nvidia0")).params.status == rm.NV_ERR_INVALID_LIMIT
    with pytest.raises(OSCallError) as e:
        system.mmap(fd, 1 << 20, offset=4096)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSCallError) as e:
        system.mmap(fd, 4096)
    assert e.value.errno == errno.ENXIO
    addr = system.mmap(fd, 1 << 20)
    ctypes.c_uint64.from_address(addr + 8).value = 0x1122334455667788
    mem = nv.clients[c.client].objects[vram].state["mem"]
    assert ctypes.c_uint64.from_address(mem.host + 8).value == 0x1122334455667788  # the GPU's view of the same bytes
    system.munmap(addr, 1 << 20)
    sysmem = c.memory(dev, 8192, vram=False)
    ctlfd = system.open("/dev/nvidiactl")
    assert map_memory(c, dev, sysmem, 8192, ctlfd).params.status == rm.NV_OK  # system memory maps through nvidiactl
    assert system.mmap(ctlfd, 8192)
    um = c.alloc(sub, 0, cls.TURING_USERMODE_A, None)
    ufd = system.open("/dev/nvidia0")
    assert map_memory(c, sub, um, 0x10000, ufd).params.status == rm.NV_OK
    uaddr = system.mmap(ufd, 0x10000)
    ctypes.c_uint32.from_address(uaddr + cls.NVC361_NOTIFY_CHANNEL_PENDING).value = 7
    assert ctypes.c_uint32.from_address(nv.gpus[0].usermode_host + cls.NVC361_NOTIFY_CHANNEL_PENDING).value == 7


def os_descriptor(c: RMClient, fd: int, dev: int, addr: int, size: int, flags: int | None = None):
    w = rm.nv_ioctl_nvos02_parameters_with_fd(fd=-1)
    w.params.hRoot, w.params.hObjectParent, w.params.hClass = c.client, dev, cls.NV01_MEMORY_SYSTEM_OS_DESCRIPTOR
    w.params.flags = (rm.NVOS02_FLAGS_MAPPING_NO_MAP << rm.NVOS02_FLAGS_MAPPING_SHIFT) | \
        (rm.NVOS02_FLAGS_COHERENCY_CACHED << rm.NVOS02_FLAGS_COHERENCY_SHIFT) if flags is None else flags
    w.params.pMemory, w.params.limit = addr, size - 1
    c.ioctl(fd, rm.NV_IOC_RM_ALLOC_MEMORY, w)
    return w.params


def test_os_descriptor(client, nvsys):
    system, nv = nvsys
    c = client
    dev, _ = c.device()
    buf = mmap.mmap(-1, 3 * 4096)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    fd = system.open("/dev/nvidia0")
    p = os_descriptor(c, fd, dev, addr, 3 * 4096)
    assert p.status == rm.NV_OK and nv.clients[c.client].objects[p.hObjectNew].state["mem"].host == addr
    assert os_descriptor(c, fd, dev, addr + 8, 4096).status == rm.NV_ERR_NOT_SUPPORTED
    assert os_descriptor(c, fd, dev, addr, 4096, flags=0).status == rm.NV_ERR_INVALID_FLAGS  # MAPPING not NO_MAP
    with pytest.raises(OSCallError):  # NV_ACTUAL_DEVICE_ONLY: not on nvidiactl
        os_descriptor(c, c.ctl, dev, addr, 4096)
