"""The OS seam: the real implementation against the kernel, and an injected emulated one that records every call."""
from __future__ import annotations

import ast
import ctypes
import errno
import os
from pathlib import Path

import pytest

from autogen import kfd
from drivers.system import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, LinuxSystem, OSCallError, System
from emu.system import EmulatedSystem, NodeHandler

ROOT = Path(__file__).resolve().parents[2]


def read_kfd_version(system: System) -> tuple[int, int, int]:
    """A driver-shaped consumer: open a node, ioctl a struct, map a page, read sysfs; all through the seam."""
    fd = system.open("/dev/kfd")
    try:
        args = kfd.struct_kfd_ioctl_get_version_args()
        system.ioctl(fd, kfd.AMDKFD_IOC_GET_VERSION, args)
        addr = system.mmap(fd, PAGE_SIZE, offset=0x1000)
        first_word = ctypes.c_uint32.from_address(addr).value
        system.munmap(addr, PAGE_SIZE)
        return args.major_version, args.minor_version, first_word
    finally:
        system.close(fd)


class FakeKfd(NodeHandler):
    def __init__(self):
        self.page = (ctypes.c_uint32 * (PAGE_SIZE // 4))()
        self.page[0] = 0xC0FFEE

    def ioctl(self, request, arg):
        if request != kfd.AMDKFD_IOC_GET_VERSION:
            return super().ioctl(request, arg)
        arg.major_version, arg.minor_version = kfd.KFD_IOCTL_MAJOR_VERSION, kfd.KFD_IOCTL_MINOR_VERSION
        return 0

    def mmap(self, length, prot, flags, offset, addr):
        assert offset == 0x1000
        return ctypes.addressof(self.page)


def test_injected_system_sees_every_call_in_order():
    system = EmulatedSystem()
    system.add_node("/dev/kfd", lambda flags: FakeKfd())
    major, minor, word = read_kfd_version(system)
    assert (major, minor, word) == (kfd.KFD_IOCTL_MAJOR_VERSION, kfd.KFD_IOCTL_MINOR_VERSION, 0xC0FFEE)
    assert [c.name for c in system.calls] == ["open", "ioctl", "mmap", "munmap", "close"]
    ioctl = system.calls_named("ioctl")[0]
    assert ioctl.args[1] == kfd.AMDKFD_IOC_GET_VERSION and ioctl.args[2].major_version == major


def test_injected_system_reports_errors_like_the_kernel():
    system = EmulatedSystem()
    with pytest.raises(OSCallError) as e:
        system.open("/dev/kfd")
    assert e.value.errno == errno.ENOENT and "/dev/kfd" in str(e.value)
    system.add_node("/dev/kfd", lambda flags: NodeHandler())
    fd = system.open("/dev/kfd")
    with pytest.raises(OSCallError) as e:
        system.ioctl(fd, 0x1234)
    assert e.value.errno == errno.ENOTTY
    assert system.calls[-1].error is e.value


def test_emulated_sysfs_follows_links_and_lists_directories():
    system = EmulatedSystem()
    system.add_file("/sys/bus/pci/devices/0000:03:00.0/vendor", "0x1002\n")
    system.add_file("/sys/bus/pci/devices/0000:03:00.0/resource",
                    "0x0000007c00000000 0x0000007fffffffff 0x000000000014220c\n0x0 0x0 0x0\n")
    system.add_link("/sys/class/drm/card0/device", "../../../bus/pci/devices/0000:03:00.0")
    system.add_link("/sys/bus/pci/devices/0000:03:00.0/driver", "../../../bus/pci/drivers/amdgpu")
    assert system.read_text("/sys/bus/pci/devices/0000:03:00.0/vendor") == "0x1002"
    assert system.listdir("/sys/bus/pci/devices") == ["0000:03:00.0"]
    assert system.pci_resource_size("0000:03:00.0", 0) == 16 << 30
    assert system.pci_resource_size("0000:03:00.0", 1) == 0
    assert os.path.basename(system.readlink("/sys/bus/pci/devices/0000:03:00.0/driver")) == "amdgpu"
    assert system.exists("/sys/bus/pci") and not system.exists("/sys/bus/usb")


def test_eventfd_semantics_match_linux():
    for system in (LinuxSystem(), EmulatedSystem()):
        fd = system.eventfd(0, os.O_NONBLOCK)
        system.write(fd, (3).to_bytes(8, "little"))
        system.write(fd, (4).to_bytes(8, "little"))
        assert int.from_bytes(system.read(fd, 8), "little") == 7
        with pytest.raises(OSError) as e:
            system.read(fd, 8)
        assert e.value.errno == errno.EAGAIN
        system.close(fd)


def test_linux_system_maps_memory_and_reads_pagemap():
    system = LinuxSystem()
    addr = system.mmap(-1, 2 * PAGE_SIZE, flags=MAP_PRIVATE | MAP_ANONYMOUS)
    try:
        ctypes.memset(addr, 0x5A, 2 * PAGE_SIZE)  # fault the pages in so pagemap reports them
        entries = system.pagemap(addr, 2)
        assert len(entries) == 2 and all(e >> 63 for e in entries)
    finally:
        system.munmap(addr, 2 * PAGE_SIZE)


def test_linux_system_errors_name_the_call():
    system = LinuxSystem()
    with pytest.raises(OSCallError, match="open.*does-not-exist"):
        system.open("/dev/does-not-exist")
    fd = system.open("/dev/null")
    try:
        with pytest.raises(OSCallError, match=r"ioctl\(fd=\d+, 0x541b\)") as e:
            system.ioctl(fd, 0x541B, ctypes.c_int())  # FIONREAD on /dev/null: not a tty-like device
        assert e.value.errno == errno.ENOTTY
    finally:
        system.close(fd)


def test_drivers_reach_the_os_only_through_the_seam():
    """No driver module but the seam itself (and the process lock) imports os-level device access."""
    allowed = {"system.py", "lock.py"}
    offenders = []
    for path in (ROOT / "drivers").rglob("*.py"):
        if path.name in allowed:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            mod = node.module if isinstance(node, ast.ImportFrom) else None
            if {"fcntl", "mmap"} & set(names) or mod in ("fcntl", "mmap"):
                offenders.append(f"{path.relative_to(ROOT)} imports {mod or names}")
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" and \
                    node.attr in ("open", "read", "write", "listdir", "readlink", "ioctl"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} calls os.{node.attr}")
    assert not offenders, offenders


def test_poll_reports_an_event_fd_that_became_readable():
    import select
    from drivers.system import LinuxSystem
    s = LinuxSystem()
    fd = s.eventfd()
    try:
        assert s.poll(fd, select.POLLIN, 1) == 0  # nothing written: the bounded wait times out
        s.write(fd, (1).to_bytes(8, "little"))
        assert s.poll(fd, select.POLLIN, 1000) & select.POLLIN
    finally:
        s.close(fd)
