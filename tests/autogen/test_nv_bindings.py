"""NVIDIA bindings generated from autogen/include/nv: provenance, layouts and values agree with gcc on the same
headers, facts agree with the upstream files they cite, every fact cites a file, and --check passes."""
from __future__ import annotations

import ctypes
import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autogen.generator.nv_sources import NV_INC, NV_TARGETS, REL_DIR, pinned_versions

ROOT = Path(__file__).resolve().parents[2]


def tools_ready() -> str | None:
    """Why generation cannot run here, or None when it can (only linux-libc-dev is needed, for linux/ioctl.h)."""
    from autogen.generator import fetch
    from autogen.generator.sources import PACKAGES
    if not fetch.is_fetched(PACKAGES["linux-libc-dev"]):
        return "pinned linux-libc-dev not fetched: run python -m tools.autogen --fetch"
    for tool in ("clang", "ctypeslib"):
        if importlib.util.find_spec(tool) is None:
            return f"autogen tools not installed ({tool}): pip install -e '.[autogen]'"
    return None


needs_tools = pytest.mark.skipif(tools_ready() is not None, reason=str(tools_ready()))
needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")


@pytest.mark.parametrize("module", sorted(NV_TARGETS))
def test_module_names_pinned_versions_and_header_hashes(module):
    from autogen.generator.fetch import sha256_of
    mod = importlib.import_module(f"autogen.{module}")
    text = Path(mod.__file__).read_text()
    pins = pinned_versions()
    assert re.fullmatch(r"\d+\.\d+(\.\d+)? [0-9a-f]{40}", pins["open-gpu-kernel-modules"])
    assert re.fullmatch(r"[0-9a-f]{40}", pins["open-gpu-doc"])
    assert f"open-gpu-kernel-modules {pins['open-gpu-kernel-modules']}, open-gpu-doc {pins['open-gpu-doc']}" in text
    for p in NV_TARGETS[module].paths():
        assert f"# Header: {REL_DIR}/{p.name} sha256 {sha256_of(p)}" in text, f"{p.name} changed: regenerate"
    counts = re.search(r"^# Macros: (\d+) translated, (\d+) defined without a value, (\d+) not translated", text, re.M)
    assert counts and int(counts.group(3)) == 0, "every fact in our headers must translate"
    assert mod.__doc__ == NV_TARGETS[module].doc


def test_every_fact_names_its_source_file():
    """Each #define and each struct in our headers carries a comment naming an upstream file (a *.h path)."""
    cites = re.compile(r"/\*.*\b[\w./-]+\.h\b")
    for h in sorted(NV_INC.glob("*.h")):
        lines = h.read_text().splitlines()
        for i, ln in enumerate(lines):
            where = f"{h.name}:{i + 1}: {ln}"
            if ln.startswith("#define "):
                name = ln.split()[1]
                if name.startswith("BAREGPU_NV_") or name.startswith("NV_IOC_"):
                    continue  # include guards; NV_IOC_* are our encodings (their rule is cited in rm.h)
                if name.endswith("_WIDTH"):
                    assert lines[i - 1].split()[1].split("(")[0] == name[:-6] + "_SHIFT", where
                    continue
                assert cites.search(ln), where
            elif ln.startswith("typedef struct"):
                above = lines[max(0, i - 3):i]  # the comment that opens the struct may span a few lines
                assert cites.search(ln) or any(re.search(r"[\w./-]+\.h\b", a) for a in above), where


# --- agreement with gcc on our headers ---

def _c_program(module: str) -> tuple[str, list[tuple[str, int]]]:
    mod = importlib.import_module(f"autogen.{module}")
    headers = NV_TARGETS[module].paths()
    lines = ["int printf(const char *, ...);"] + [f'#include "{h}"' for h in headers]
    lines += ["#define offsetof(T, m) __builtin_offsetof(T, m)", "int main(void) {"]
    expected: list[tuple[str, int]] = []
    structs = sorted(n[len("struct_"):] for n, v in vars(mod).items()
                     if n.startswith("struct_") and isinstance(v, type) and issubclass(v, ctypes.Structure))
    for s in structs:
        cls = getattr(mod, f"struct_{s}")
        lines.append(f'printf("%llu\\n", (unsigned long long)sizeof(struct {s}));')
        expected.append((f"sizeof(struct {s})", ctypes.sizeof(cls)))
        for f in (f[0] for f in cls._fields_ if not f[0].startswith("PADDING_")):
            lines.append(f'printf("%llu\\n", (unsigned long long)offsetof(struct {s}, {f}));')
            expected.append((f"offsetof(struct {s}, {f})", getattr(cls, f).offset))
    # Every object-like macro value the module defines (ioctl numbers, class ids, methods, QMD bit positions).
    for h in headers:
        for name in re.findall(r"^#define (\w+) ", h.read_text(), re.M):
            value = getattr(mod, name, None)
            if isinstance(value, int) and not name.startswith("BAREGPU_"):
                lines.append(f'printf("%llu\\n", (unsigned long long)({name}));')
                expected.append((name, value & (2**64 - 1)))
    lines += ["return 0;", "}"]
    return "\n".join(lines), expected


@needs_tools
@needs_gcc
def test_layouts_and_values_match_gcc(tmp_path):
    from autogen.generator.emit import clang_args
    for module in sorted(NV_TARGETS):
        src, exp = _c_program(module)
        (tmp_path / f"{module}.c").write_text(src)
        args = [a for a in clang_args(NV_TARGETS[module].target()) if not a.startswith("--target")]
        exe = tmp_path / module
        build = subprocess.run(["gcc", "-w", *args, "-o", str(exe), str(tmp_path / f"{module}.c")],
                               capture_output=True, text=True, timeout=120)
        assert build.returncode == 0, build.stderr[-3000:]
        got = [int(x) for x in subprocess.run([str(exe)], capture_output=True, text=True, timeout=60,
                                              check=True).stdout.split()]
        assert len(got) == len(exp) > 10
        mismatches = [(what, ours, theirs) for (what, ours), theirs in zip(exp, got) if ours != theirs]
        assert not mismatches, (module, mismatches[:20])


# --- facts against the values in the upstream files (numbers read from the files named in the headers) ---

def test_ioctl_numbers():
    from autogen import nv_rm, nv_uvm
    from autogen.ioctl import decode
    # kernel-open/nvidia/nv.c decodes the escape from _IOC_NR and the size from _IOC_SIZE.
    assert nv_rm.NV_IOC_RM_ALLOC == 0xC030462B and nv_rm.NV_IOC_RM_CONTROL == 0xC020462A
    assert nv_rm.NV_IOC_RM_FREE == 0xC0104629 and nv_rm.NV_IOC_RM_MAP_MEMORY == 0xC038464E
    assert nv_rm.NV_IOC_RM_ALLOC_MEMORY == 0xC0384627 and nv_rm.NV_IOC_REGISTER_FD == 0xC00446C9
    assert decode(nv_rm.NV_IOC_ALLOC_OS_EVENT) == (3, ord("F"), 206, 16)
    assert (nv_rm.NV_ESC_CARD_INFO, nv_rm.NV_ESC_ATTACH_GPUS_TO_FD, nv_rm.NV_ESC_RM_ALLOC) == (200, 212, 0x2B)
    assert (nv_uvm.UVM_INITIALIZE, nv_uvm.UVM_REGISTER_GPU, nv_uvm.UVM_REGISTER_GPU_VASPACE) == (0x30000001, 37, 25)
    assert (nv_uvm.UVM_CREATE_EXTERNAL_RANGE, nv_uvm.UVM_MAP_EXTERNAL_ALLOCATION, nv_uvm.UVM_FREE) == (73, 33, 34)
    assert nv_uvm.UVM_MM_INITIALIZE == 75 and nv_uvm.UVM_MAX_GPUS == 256


def test_struct_sizes():
    """Sizes gcc gives for the upstream headers themselves (x86-64, open-gpu-kernel-modules at the pinned tag)."""
    from autogen import nv_rm, nv_uvm
    sizes = {nv_rm.NVOS21_PARAMETERS: 32, nv_rm.NVOS64_PARAMETERS: 48, nv_rm.NVOS54_PARAMETERS: 32,
             nv_rm.NVOS00_PARAMETERS: 16, nv_rm.NVOS33_PARAMETERS: 48, nv_rm.NVOS02_PARAMETERS: 48,
             nv_rm.nv_ioctl_card_info_t: 72, nv_rm.NV_MEMORY_ALLOCATION_PARAMS: 128,
             nv_rm.NV_CHANNELGPFIFO_ALLOCATION_PARAMETERS: 368, nv_rm.NV0080_ALLOC_PARAMETERS: 56,
             nv_rm.nv_ioctl_nvos33_parameters_with_fd: 56, nv_rm.NV_VASPACE_ALLOCATION_PARAMETERS: 56,
             nv_rm.nv_ioctl_rm_api_version_t: 72, nv_uvm.UVM_INITIALIZE_PARAMS: 16,
             nv_uvm.UVM_REGISTER_GPU_PARAMS: 40, nv_uvm.UVM_MAP_EXTERNAL_ALLOCATION_PARAMS: 9264,
             nv_rm.NV0000_CTRL_GPU_GET_PROBED_IDS_PARAMS: 384, nv_rm.NV0080_CTRL_GPU_GET_CLASSLIST_V2_PARAMS: 804,
             nv_rm.NV2080_CTRL_FB_GET_INFO_V2_PARAMS: 1028, nv_rm.NVA06C_CTRL_GPFIFO_SCHEDULE_PARAMS: 3}
    got = {cls.__name__: ctypes.sizeof(cls) for cls in sizes}
    assert got == {cls.__name__: n for cls, n in sizes.items()}
    assert nv_rm.NV_CHANNELGPFIFO_ALLOCATION_PARAMETERS.userdOffset.offset == 64
    assert nv_rm.NV_CHANNELGPFIFO_ALLOCATION_PARAMETERS.instanceMem.offset == 144
    assert nv_uvm.UVM_MAP_EXTERNAL_ALLOCATION_PARAMS.gpuAttributesCount.offset == 9240
    # Facts that changed from 570 to 580 (the pin moved to 580.126.20):
    assert nv_rm.NV_VASPACE_ALLOCATION_PARAMETERS.pasid.offset == 48  # nvos.h: pasid appended after vaBase
    assert nv_rm.NV0000_CTRL_GPU_GET_PROBED_IDS_PARAMS.gpuFlags.offset == 256  # ctrl0000gpu.h: gpuFlags[] appended
    assert nv_rm.NV0080_CTRL_GPU_CLASSLIST_MAX_SIZE == 200  # ctrl0080gpu.h (was 100)
    assert nv_rm.NV2080_CTRL_FB_INFO_MAX_LIST_SIZE == 0x80  # ctrl2080fb.h (was 0x39)
    assert nv_rm.NVA06C_CTRL_GPFIFO_SCHEDULE_PARAMS.bSkipEnable.offset == 2  # ctrla06fgpfifo.h: bSkipEnable appended
    assert nv_rm.NV2080_NOTIFIERS_MAXCOUNT == 198  # cl2080_notification.h: NV2080_NOTIFIERS_GPU_RC_RESET is 197
    assert not hasattr(nv_rm, "NV2080_CTRL_MC_ARCH_INFO_IMPLEMENTATION_GB204")  # ctrl2080mc.h: removed upstream


def test_class_ids_methods_and_qmd_fields():
    from autogen import nv_classes as c
    from autogen import nv_qmd as q
    assert (c.NV01_ROOT_CLIENT, c.NV01_DEVICE_0, c.NV20_SUBDEVICE_0) == (0x41, 0x80, 0x2080)
    assert c.TURING_USERMODE_A == 0xC461
    assert (c.FERMI_VASPACE_A, c.KEPLER_CHANNEL_GROUP_A, c.HOPPER_CHANNEL_GPFIFO_A, c.HOPPER_COMPUTE_A,
            c.HOPPER_DMA_COPY_A) == (0x90F1, 0xA06C, 0xC86F, 0xCBC0, 0xC8B5)
    # clc56f.h / clc86f.h host methods
    assert (c.NVC56F_SEM_ADDR_LO, c.NVC56F_SEM_PAYLOAD_HI, c.NVC56F_SEM_EXECUTE, c.NVC56F_NON_STALL_INTERRUPT) == \
        (0x5C, 0x68, 0x6C, 0x20)
    assert c.NVC86F_SEM_EXECUTE == 0x6C and c.NVC56F_SEM_EXECUTE_OPERATION_RELEASE == 1
    assert (c.NVC56F_SEM_EXECUTE_PAYLOAD_SIZE_SHIFT, c.NVC56F_SEM_EXECUTE_RELEASE_TIMESTAMP_SHIFT) == (24, 25)
    assert (c.NVC56F_GP_ENTRY1_LENGTH_SHIFT, c.NVC56F_GP_ENTRY1_LENGTH_WIDTH) == (10, 21)
    # clc6c0.h / clcbc0.h compute, clc6b5.h / clc8b5.h copy
    assert (c.NVC6C0_SEND_PCAS_A, c.NVC6C0_SEND_SIGNALING_PCAS2_B, c.NVC6C0_SET_SHADER_LOCAL_MEMORY_A) == \
        (0x2B4, 0x2C0, 0x790)
    assert c.NVCBC0_SEND_PCAS_A == 0x2B4 and c.NVCBC0_SET_INLINE_QMD_ADDRESS_A == 0x318
    assert (c.NVC6B5_OFFSET_IN_UPPER, c.NVC6B5_LINE_LENGTH_IN, c.NVC6B5_LAUNCH_DMA) == (0x400, 0x418, 0x300)
    assert c.NVC8B5_LAUNCH_DMA == 0x300 and c.NVC6B5_SET_SEMAPHORE_A == 0x240
    assert ctypes.sizeof(c.AmpereAControlGPFifo) == 0x200 and c.AmpereAControlGPFifo.GPPut.offset == 0x8C
    assert c.NVC361_NOTIFY_CHANNEL_PENDING == 0x90
    # clc6c0qmd.h: PROGRAM_ADDRESS_LOWER MW(1567:1536); CONSTANT_BUFFER_ADDR_LOWER(i) MW((1055+i*64):(1024+i*64))
    assert q.NVC6C0_QMDV03_00_PROGRAM_ADDRESS_LOWER_SHIFT == 1536
    assert q.NVC6C0_QMDV03_00_PROGRAM_ADDRESS_LOWER_WIDTH == 32
    assert q.NVC6C0_QMDV03_00_CONSTANT_BUFFER_ADDR_LOWER_SHIFT(2) == 1024 + 128
    assert q.NVC6C0_QMDV03_00_CONSTANT_BUFFER_ADDR_LOWER_WIDTH == 32
    assert (q.NVC6C0_QMDV03_00_QMD_MAJOR_VERSION_SHIFT, q.NVC6C0_QMDV03_00_QMD_MAJOR_VERSION_WIDTH) == (580, 4)


@needs_tools
def test_check_passes_on_committed_nv_files():
    proc = subprocess.run([sys.executable, "-m", "tools.autogen", "--check", *sorted(NV_TARGETS)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{len(NV_TARGETS)} of {len(NV_TARGETS)} NVIDIA modules (autogen/include/nv) match" in proc.stderr
