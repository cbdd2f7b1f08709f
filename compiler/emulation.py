"""The emulation record: a kernel's host build carried inside an AMD code object, for the emulated GPU's fast mode
(BAREGPU_EMU_KERNELS=host), which runs it instead of the code object's machine code on the kernel-argument block
the driver prepared for the real one. By default the emulated GPU runs the machine code and ignores the record.

Record layout, little-endian: magic "BAREGPUH", u32 name length, name (UTF-8), three u32 local sizes, u64 object
size, the host object file.
"""
from __future__ import annotations

import struct
from typing import Optional

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
