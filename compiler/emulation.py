"""The emulation record: a kernel's host build carried inside an AMD code object, for the emulated GPU's fast mode
(BAREGPU_EMU_KERNELS=host), which runs it instead of the code object's machine code on the kernel-argument block
the driver prepared for the real one. By default the emulated GPU runs the machine code and ignores the record.

Record layout, little-endian: magic "BAREGPUH", u32 name length, name (UTF-8), three u32 local sizes, u64 object
size, the host object file.
"""
from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
from typing import Any, Optional

EMULATION_MAGIC = b"BAREGPUH"


def emulation_record(name: str, local_size: tuple[int, int, int], host_obj: bytes) -> bytes:
    """The host build of a kernel as the emulated GPU finds it in a loaded code object."""
    raw = name.encode()
    return (EMULATION_MAGIC + struct.pack("<I", len(raw)) + raw + struct.pack("<3I", *local_size)
            + struct.pack("<Q", len(host_obj)) + host_obj)


def parse_emulation_record(image: bytes, start: int = 0) -> Optional[tuple[str, tuple[int, int, int], bytes]]:
    """(kernel name, local size, host object) of the first record in a loaded image at or after start, or None."""
    at = image.find(EMULATION_MAGIC, start)
    if at < 0:
        return None
    n = struct.unpack_from("<I", image, at + 8)[0]
    name = bytes(image[at + 12:at + 12 + n]).decode()
    local = struct.unpack_from("<3I", image, at + 12 + n)
    size = struct.unpack_from("<Q", image, at + 24 + n)[0]
    return name, local, bytes(image[at + 32 + n:at + 32 + n + size])


def with_host_build(llvm_ir: str, name: str, local_size: tuple[int, int, int], host_obj: bytes) -> str:
    """AMD LLVM IR plus the record as a read-only global in the constant address space, so it loads with the image."""
    blob = emulation_record(name, local_size, host_obj)
    text = "".join(f"\\{b:02X}" for b in blob)
    return llvm_ir + f'@__baregpu_host_{name} = protected addrspace(4) constant [{len(blob)} x i8] c"{text}", align 16\n'


# --- the NVIDIA form: a checked host build carried in the cubin ---
# NVIDIA's SASS has no public semantics, so the emulated NVIDIA GPU always runs the host build. It is built with
# every buffer access checked (compiler.llvm_render.CheckedHostRenderer) and carried as a global byte array of the
# PTX module, which ptxas places in the cubin's global data, uploaded with the image.
#
# Record layout, little-endian: magic "BAREGPUN", u32 format version (1), u32 name length, name (UTF-8), three u32
# local sizes, u32 parameter count, per parameter (u32 offset in the parameter block, u32 size, u32 1 for a buffer
# else 0), u64 object size, the host object file.
NV_EMULATION_MAGIC = b"BAREGPUN"
NV_RECORD_VERSION = 1


@dataclass(frozen=True)
class NVHostBuild:
    """A kernel's checked host build as the emulated NVIDIA GPU finds it in an uploaded cubin."""
    name: str
    local_size: tuple[int, int, int]
    params: tuple[tuple[int, int, bool], ...]  # (offset, size, is_buffer) in the parameter block
    obj: bytes


class HostFault(ctypes.Structure):
    """Where a checked host build records its first out-of-range access (see CheckedHostRenderer)."""
    _fields_ = [("offset", ctypes.c_int64), ("param", ctypes.c_uint32), ("write", ctypes.c_uint32),
                ("hit", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


def nv_emulation_record(name: str, local_size: tuple[int, int, int], params: list[tuple[int, int, bool]],
                        host_obj: bytes) -> bytes:
    """The record for one kernel (see the layout above)."""
    raw = name.encode()
    out = NV_EMULATION_MAGIC + struct.pack("<II", NV_RECORD_VERSION, len(raw)) + raw + struct.pack("<3I", *local_size)
    out += struct.pack("<I", len(params)) + b"".join(struct.pack("<III", o, n, int(b)) for o, n, b in params)
    return out + struct.pack("<Q", len(host_obj)) + host_obj


def parse_nv_emulation_records(image: bytes) -> list[NVHostBuild]:
    """Every NV emulation record in an uploaded image, in order; a truncated or unknown-version record is a
    ValueError naming where it is."""
    out, at = [], image.find(NV_EMULATION_MAGIC)
    view = memoryview(image)
    while at >= 0:
        try:
            version, n = struct.unpack_from("<II", view, at + 8)
            if version != NV_RECORD_VERSION:
                raise ValueError(f"format version {version}, this emulator reads {NV_RECORD_VERSION}")
            pos = at + 16
            name = bytes(view[pos:pos + n]).decode()
            pos += n
            local = struct.unpack_from("<3I", view, pos)
            count = struct.unpack_from("<I", view, pos + 12)[0]
            pos += 16
            params = tuple((o, size, bool(b)) for o, size, b in struct.iter_unpack("<III", view[pos:pos + 12 * count]))
            if len(params) != count:
                raise ValueError("truncated parameter list")
            pos += 12 * count
            size = struct.unpack_from("<Q", view, pos)[0]
            obj = bytes(view[pos + 8:pos + 8 + size])
            if len(obj) != size:
                raise ValueError(f"the host object is truncated ({len(obj)} of {size} bytes)")
        except (struct.error, UnicodeDecodeError) as e:
            raise ValueError(f"the NV emulation record at offset {at:#x} is malformed: {e}") from None
        except ValueError as e:
            raise ValueError(f"the NV emulation record at offset {at:#x}: {e}") from None
        out.append(NVHostBuild(name, tuple(local), params, obj))
        at = image.find(NV_EMULATION_MAGIC, pos + 8 + size)
    return out


def load_checked_host(obj: bytes, name: str) -> Any:
    """The checked host build's entry point: f(args, gx, gy, gz, first, count, limits, fault)."""
    from compiler.toolchain import CheckedHostFunction
    return CheckedHostFunction(obj, name)


def with_nv_host_build(llvm_ir: str, name: str, record: bytes) -> str:
    """NVPTX LLVM IR plus the record as an externally visible global: LLVM keeps a global other modules could name,
    ptxas puts it in the cubin's global data, and the driver uploads that with the image. (llvm.used would also keep
    it, but makes ptxas emit a relocated address of it that a loader would have to resolve.)"""
    text = "".join(f"\\{b:02X}" for b in record)
    from compiler.cubin import EMULATION_RECORD_PREFIX
    return llvm_ir + (f'@{EMULATION_RECORD_PREFIX}{name} = addrspace(1) constant [{len(record)} x i8] c"{text}", '
                      'align 16\n')
