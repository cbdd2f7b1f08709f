"""NVIDIA programs: a kernel of a cubin (ours or ptxas's for anyone's PTX) loaded into GPU memory, checked against
what a QMD launch serves, with its QMD template and its constant bank 0 layout.

The whole cubin file is uploaded into one buffer and the QMD's program address points at the kernel's
.text.<name> section inside it (file offsets keep each section's alignment), so everything the file carries
(the emulation record in .nv.global.init among it) is in GPU memory as it is on disk.

Constant bank 0 (what `pack_args` returns, and what a launch's kernel-argument address points at): the driver area
from offset 0 up to the cubin's EIATTR_PARAM_CBANK offset (0x210 on sm_90, 0x160 before; compiler.cubin
param_bank_offset), then the parameters in the cubin's KPARAM layout. The QMD's constant buffer 0 is that block's
address, so a staged block, a buffer, an address or a Var all work the same, replays included: the kernel-argument
address IS the constant bank address. The driver area holds what ptxas's SASS reads there: the block size (%ntid,
c[0x0][0x0..0x8]) and grid size (%nctaid, c[0x0][0xc..0x14]; filled when pack_args is given global_size), the
shared and local memory windows (0x18, 0x20) and the initial stack pointer (0x28).
"""
from __future__ import annotations

import struct
from typing import Any, Optional, Sequence

from compiler.cubin import Cubin, CubinError, CubinKernel
from drivers.nv import qmd as Q
from hcq.buffer import MemFlags

MAX_REGISTERS = 255  # per thread on sm_70 and later (CUDA C++ Programming Guide, technical specifications)
REGISTER_FILE = 65536  # 32-bit registers per SM (same table): threads x registers of one block must fit
MAX_BLOCK_THREADS = 1024
MAX_BARRIERS = 16  # named barriers per block (PTX ISA, bar/barrier: 0..15)
MAX_CBANK0 = 64 * 1024  # a constant bank holds 64 KiB (QMD CONSTANT_BUFFER_SIZE_SHIFTED4 is 13 bits of 16 bytes)
MAX_LOCAL_PER_THREAD = 512 * 1024  # CUDA's local memory limit per thread (technical specifications)
DRIVER_AREA = {"sm_90": 0x210}  # where parameters start when a cubin declares none (EIATTR_PARAM_CBANK otherwise)
DRIVER_AREA_DEFAULT = 0x160
# The driver area's words (what SASS reads; facts learned from tinygrad's ops_nv.py cbuf0 setup and checked against
# ptxas output: every sm_70+ kernel starts with MOV R1, c[0x0][0x28], the stack pointer).
NTID_OFFSET, NCTAID_OFFSET = 0x0, 0xC
SHARED_WINDOW_OFFSET, LOCAL_WINDOW_OFFSET, STACK_TOP_OFFSET = 0x18, 0x20, 0x28
STACK_TOP = 0xFFFDC0  # the stack starts near the top of the 16 MiB per-thread local window and grows down
# Shared memory carveouts an SM can be configured with, in KiB, and the most one block may use (CUDA C++
# Programming Guide, "Technical Specifications per Compute Capability": 8.6/8.9 up to 100 KiB per SM and 99 KiB per
# block; 9.0 up to 228 KiB per SM and 227 KiB per block).
CARVEOUTS_KB = {"sm_86": (0, 8, 16, 32, 64, 100), "sm_89": (0, 8, 16, 32, 64, 100),
                "sm_90": (0, 8, 16, 32, 64, 100, 132, 164, 196, 228)}
SHARED_PER_BLOCK = {"sm_86": 99 * 1024, "sm_89": 99 * 1024, "sm_90": 227 * 1024}


class ProgramLoadError(ValueError):
    """A kernel this driver cannot launch correctly; the message names the kernel, what it needs and what to do."""


def _sm_config(kb: int) -> int:
    """The QMD's *_SM_CONFIG_SHARED_MEM_SIZE encoding of a carveout: 4 KiB units, plus one."""
    return kb * 1024 // 4096 + 1


class NVProgram:
    """A cubin kernel loaded for QMD launches on one NVDevice.

    Load a CompiledKernel for the device's sm_XX (`device.load_program(compiled)`) or any cubin's bytes with the
    kernel's name (`device.load_program(cubin, name, local_size=None)`). Refused at load, naming the kernel, the
    feature and what to do: a cubin for another architecture, relocations (the loader resolves none), parameters
    outside constant bank 0, more registers or threads than a block can have, more shared memory than the
    architecture gives a block, more local memory than the device provides, a block shape other than the one the
    kernel requires. Served: constant banks other than 0 (uploaded, bound in the QMD), local memory (the device's
    backing store, sized on demand), named barriers.
    """

    def __init__(self, device: Any, cubin: bytes, name: str, local_size: Optional[Sequence[int]] = None,
                 compiled: Any = None):
        self.device, self.name, self.compiled = device, name, compiled
        try:
            cub = Cubin(cubin, name)
            kern = cub.kernel(name)
        except CubinError as e:
            raise ProgramLoadError(f"{name} cannot be loaded on {device.name}: {e}") from None
        self.cubin, self.kernel = cub, kern
        if local_size is None:
            local_size = getattr(compiled, "local_size", None) or kern.reqntid
        if local_size is None:
            raise ProgramLoadError(f"{name}: the cubin requires no block shape (.reqntid), so load_program needs "
                                   "local_size=(x, y, z)")
        self.local_size = tuple(int(x) for x in local_size)
        reasons = self._refusals(device, kern)
        if reasons:
            raise ProgramLoadError(f"{name} cannot run on {device.name} ({device.target}): " + "; ".join(reasons))
        text = cub.by_name[f".text.{name}"]
        self.param_offset = kern.param_bank_offset if kern.params else DRIVER_AREA.get(kern.target, DRIVER_AREA_DEFAULT)
        self.cbank0_size = -(-max(self.param_offset + kern.param_bank_size, kern.constant0_bytes, 0x30) // 16) * 16
        if self.cbank0_size > MAX_CBANK0:
            raise ProgramLoadError(f"{name}: constant bank 0 would be {self.cbank0_size} bytes; a bank holds "
                                   f"{MAX_CBANK0}: pass fewer or smaller parameters")
        self.local_per_thread = -(-kern.local_bytes // 16) * 16
        self.local_memory = device.local_memory_for(self.local_per_thread, name) if self.local_per_thread else None
        # Upload the whole file: the program address is the .text section's offset inside it.
        self.image = device.alloc(len(cubin), MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE | MemFlags.EXECUTABLE,
                                  align=0x1000)
        self.banks: list[Any] = []
        try:
            self.image.cpu_view()[:len(cubin)] = cubin
            self.code_va = self.image.va + text.offset
            self.qmd_version = device.qmd_version
            self.qmd_bytes = Q.size(self.qmd_version)
            self.qmd_base = int.from_bytes(self._qmd_template(device, kern), "little")
        except BaseException:
            self.free()
            raise

    # --- what a launch cannot serve ---
    def _refusals(self, device: Any, k: CubinKernel) -> list[str]:
        out = []
        if k.target != device.target:
            out.append(f"the cubin is for {k.target}: compile it for {device.target}")
        threads = self.local_size[0] * self.local_size[1] * self.local_size[2]
        if min(self.local_size) < 1 or threads > MAX_BLOCK_THREADS:
            out.append(f"a block of {self.local_size} is not 1..{MAX_BLOCK_THREADS} threads")
        elif threads > k.max_threads:
            out.append(f"a block of {threads} threads exceeds the kernel's limit of {k.max_threads} (.maxntid)")
        if k.reqntid is not None and tuple(k.reqntid) != self.local_size:
            out.append(f"the kernel requires blocks of {tuple(k.reqntid)} (.reqntid), loaded for {self.local_size}")
        if k.registers > MAX_REGISTERS:
            out.append(f"it uses {k.registers} registers per thread, more than {MAX_REGISTERS}")
        elif k.registers * -(-threads // 32) * 32 > REGISTER_FILE:
            out.append(f"{threads} threads x {k.registers} registers do not fit one SM's {REGISTER_FILE} registers: "
                       "use smaller blocks or build with fewer registers (-maxrregcount)")
        limit = SHARED_PER_BLOCK.get(device.target)
        if limit is not None and k.shared_window_bytes > limit:
            out.append(f"it needs {k.shared_window_bytes} bytes of shared memory and {device.target} gives a block "
                       f"{limit}: use less shared memory")
        if k.local_bytes > MAX_LOCAL_PER_THREAD:
            out.append(f"it needs {k.local_bytes} bytes of local memory per thread, more than {MAX_LOCAL_PER_THREAD}")
        if k.barriers > MAX_BARRIERS:
            out.append(f"it uses {k.barriers} named barriers, more than {MAX_BARRIERS}")
        if any(not 0 < bank < 8 for bank in k.constant_banks):
            out.append(f"it uses constant banks {sorted(k.constant_banks)}; a QMD binds banks 0..7")
        return out

    def _qmd_template(self, device: Any, k: CubinKernel) -> bytes:
        """The QMD of every launch of this program, with grid and constant bank 0 address left 0 (the queue fills
        them per launch)."""
        v = self.qmd_version
        lay = Q.layout(v)
        carve = CARVEOUTS_KB.get(k.target, CARVEOUTS_KB["sm_86"])
        need = k.shared_window_bytes
        target_kb = next(kb for kb in carve if kb * 1024 >= need)
        fields: dict[str, Any] = dict(
            block=self.local_size, register_count=k.registers, barrier_count=k.barriers,
            program_address=self.code_va, cbuf0_address=0, cbuf0_size=self.cbank0_size,
            shared_memory_size=-(-need // 256) * 256,
            min_sm_config_shared_mem_size=_sm_config(target_kb), target_sm_config_shared_mem_size=_sm_config(target_kb),
            max_sm_config_shared_mem_size=_sm_config(carve[-1]),
            qmd_group_id=0x3F, api_visible_call_limit=1, sampler_index=1,
            sass_version=int(k.target[3:]) // 10 << 4 | int(k.target[3:]) % 10,
            invalidate_shader_data_cache=1, invalidate_shader_constant_cache=1, invalidate_instruction_cache=1,
            invalidate_texture_header_cache=1, invalidate_texture_sampler_cache=1, invalidate_texture_data_cache=1,
            cwd_membar_type=1,  # L1_SYSMEMBAR (clc6c0qmd.h/clcbc0qmd.h CWD_MEMBAR_TYPE): writes visible at completion
            **{"constant_buffer_invalidate[0]": 1})
        if self.local_per_thread:
            fields["local_memory_high_size"] = self.local_per_thread
        if "sm_global_caching_enable" in lay:
            fields["sm_global_caching_enable"] = 1
        if "qmd_type" in lay:
            fields["qmd_type"] = 2  # GRID_CTA (clcbc0qmd.h NVCBC0_QMDV04_00_QMD_TYPE_GRID_CTA)
        raw = Q.encode_qmd(v, **fields)
        for bank, data in sorted(k.constant_banks.items()):  # other banks: uploaded once, bound in every launch
            buf = self.device.alloc(max(16, len(data)), MemFlags.DEVICE_LOCAL | MemFlags.HOST_VISIBLE, align=256)
            self.banks.append(buf)
            buf.cpu_view()[:len(data)] = data
            word = int.from_bytes(raw, "little")
            for f, val in _bank_fields(v, bank, buf.va, -(-max(16, len(data)) // 16) * 16).items():
                fld = lay[f]
                word = (word & ~(fld.max << fld.shift)) | (val << fld.shift)
            raw = word.to_bytes(len(raw), "little")
        return raw

    # --- constant bank 0 ---
    def driver_area(self, global_size: Optional[Sequence[int]] = None) -> bytearray:
        """Constant bank 0 below the parameters: block size, grid size (when given), windows and stack top."""
        area = bytearray(self.param_offset)
        struct.pack_into("<3I", area, NTID_OFFSET, *self.local_size)
        if global_size is not None:
            struct.pack_into("<3I", area, NCTAID_OFFSET, *global_size)
        struct.pack_into("<QQI", area, SHARED_WINDOW_OFFSET, self.device.shared_window, self.device.local_window,
                         STACK_TOP)
        return area

    def pack_args(self, *values: int, global_size: Optional[Sequence[int]] = None,
                  local_size: Optional[Sequence[int]] = None) -> bytes:
        """Constant bank 0 for one launch: the driver area and the parameters (buffer addresses and scalars in the
        cubin's order). Pass it to exec as bytes, or write it to memory and pass its address."""
        if local_size is not None and tuple(local_size) != self.local_size:
            raise ProgramLoadError(f"{self.name} was loaded for local size {self.local_size}, packed for "
                                   f"{tuple(local_size)}")
        k = self.kernel
        if len(values) != len(k.params):
            raise ProgramLoadError(f"{self.name} takes {len(k.params)} parameters, got {len(values)}")
        block = self.driver_area(global_size)
        if self.compiled is not None and hasattr(self.compiled, "pack_args"):
            params = self.compiled.pack_args(*values)
        else:
            params = self._pack(values)
        block += params
        block += bytes(max(0, self.cbank0_size - len(block)))
        return bytes(block[:self.cbank0_size])  # our compiler rounds its block up: only padding is cut

    def _pack(self, values: Sequence[int]) -> bytes:
        k = self.kernel
        out = bytearray(k.param_bank_size)
        for p, v in zip(k.params, values):
            if isinstance(v, (bytes, bytearray)):
                if len(v) != p.size:
                    raise ProgramLoadError(f"{self.name}: parameter {p.ordinal} is {p.size} bytes, got {len(v)}")
                out[p.offset:p.offset + p.size] = v
                continue
            if not -(1 << (8 * p.size - 1)) <= v < 1 << (8 * p.size):
                raise ProgramLoadError(f"{self.name}: parameter {p.ordinal}={v} does not fit {p.size} bytes")
            out[p.offset:p.offset + p.size] = (v & ((1 << (8 * p.size)) - 1)).to_bytes(p.size, "little")
        return bytes(out)

    def free(self) -> None:
        """Give back the image and constant bank buffers."""
        for buf in [getattr(self, "image", None), *getattr(self, "banks", [])]:
            if buf is not None and not buf.freed:
                self.device.free(buf)


def _bank_fields(version: str, bank: int, addr: int, size: int) -> dict[str, int]:
    if version == "V03_00":
        return {f"constant_buffer_addr_lower[{bank}]": addr & 0xFFFFFFFF,
                f"constant_buffer_addr_upper[{bank}]": addr >> 32,
                f"constant_buffer_size_shifted4[{bank}]": size >> 4, f"constant_buffer_valid[{bank}]": 1}
    return {f"constant_buffer_addr_lower_shifted6[{bank}]": (addr >> 6) & 0xFFFFFFFF,
            f"constant_buffer_addr_upper_shifted6[{bank}]": addr >> 38,
            f"constant_buffer_size_shifted4[{bank}]": size >> 4, f"constant_buffer_valid[{bank}]": 1}
