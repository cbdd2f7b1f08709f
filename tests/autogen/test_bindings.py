"""Generated bindings: they import, carry their provenance, and agree with gcc on layouts and ioctl numbers."""
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

from autogen.generator.sources import PACKAGES, TARGETS

ROOT = Path(__file__).resolve().parents[2]


def sources_ready() -> str | None:
    """Why the pinned-source tests cannot run here, or None when they can."""
    from autogen.generator import fetch
    missing = [p.name for p in PACKAGES.values() if not fetch.is_fetched(p)]
    if missing:
        return f"pinned autogen sources not fetched ({', '.join(missing)}): run python -m tools.autogen --fetch"
    for tool in ("clang", "ctypeslib"):
        if importlib.util.find_spec(tool) is None:
            return f"autogen tools not installed ({tool}): pip install -e '.[autogen]'"
    return None


needs_sources = pytest.mark.skipif(sources_ready() is not None, reason=str(sources_ready()))


@pytest.mark.parametrize("module", sorted(TARGETS))
def test_module_imports_and_names_its_pinned_source(module):
    mod = importlib.import_module(f"autogen.{module}")
    text = Path(mod.__file__).read_text()
    t, pkg = TARGETS[module], PACKAGES[TARGETS[module].package]
    assert f"# Package: {pkg.name} {pkg.version} ({pkg.arch}), .deb sha256 {pkg.sha256}" in text
    for h in t.headers:
        assert f"# Header: {h}" in text
    assert re.search(r"^# Generator: baregpu autogen \d+, ctypeslib2 [\d.]+, libclang 18\.1\.1$", text, re.M)
    counts = re.search(r"^# Macros: (\d+) translated, (\d+) defined without a value, (\d+) not translated", text, re.M)
    assert counts, "the header must account for every macro"
    # Every macro the header says was not translated is listed by name, and none of them is defined.
    listed = re.findall(r"^#   (\w+): ", text, re.M)
    assert len(listed) == int(counts.group(3))
    for name in listed:
        assert not hasattr(mod, name), f"{name} is listed as untranslated but defined"
    assert mod.__doc__ == t.doc


def test_translated_functions_and_constants_are_usable():
    from autogen import gc_11_0_0, kfd, pm4_nvd, sdma_v6
    assert pm4_nvd.PACKET3(pm4_nvd.PACKET3_RELEASE_MEM, 6) == (3 << 30) | (0x49 << 8) | (6 << 16)
    assert sdma_v6.SDMA_OP_COPY == 1 and sdma_v6.SDMA_PKT_COPY_LINEAR_HEADER_OP(1) == 1
    assert gc_11_0_0.COMPUTE_PGM_RSRC1__VGPRS_MASK == 0x3F
    assert ctypes.sizeof(kfd.struct_kfd_ioctl_create_queue_args) == 96
    # Register headers keep only what the filter names, so nothing unrelated (e.g. DB_ depth registers) leaks in.
    assert not any(n.startswith("regDB_") for n in vars(gc_11_0_0))


# --- agreement with gcc on the same pinned headers ---

STRUCTS = {
    "kfd": ["kfd_ioctl_create_queue_args", "kfd_ioctl_alloc_memory_of_gpu_args", "kfd_ioctl_wait_events_args",
            "kfd_ioctl_get_process_apertures_new_args", "kfd_hsa_memory_exception_data", "kfd_event_data",
            "kfd_ioctl_create_event_args", "kfd_process_device_apertures"],
    "amdgpu_drm": ["drm_amdgpu_gem_create_in", "drm_amdgpu_info", "drm_amdgpu_info_device", "drm_amdgpu_cs_chunk"],
    "mqd_v11": ["v11_compute_mqd", "v11_sdma_mqd"],
    "mqd_v12": ["v12_compute_mqd", "v12_sdma_mqd"],
    "discovery": ["binary_header", "ip_discovery_header", "gc_info_v2_0", "ip_v4", "die_info"],
    "amdgpu_ucode": ["common_firmware_header", "gfx_firmware_header_v2_0", "psp_firmware_header_v2_0",
                     "rlc_firmware_header_v2_4", "psp_fw_bin_desc", "mes_firmware_header_v1_0"],
    "vfio": ["vfio_region_info", "vfio_iommu_type1_dma_map", "vfio_device_info", "vfio_group_status"],
}
VALUES = {
    "kfd": ["AMDKFD_IOC_CREATE_QUEUE", "AMDKFD_IOC_ALLOC_MEMORY_OF_GPU", "AMDKFD_IOC_WAIT_EVENTS",
            "AMDKFD_IOC_GET_VERSION", "AMDKFD_IOC_RUNTIME_ENABLE", "KFD_EC_MASK_QUEUE"],
    "amdgpu_drm": ["DRM_IOCTL_AMDGPU_GEM_CREATE", "DRM_IOCTL_AMDGPU_INFO", "DRM_IOCTL_AMDGPU_GEM_MMAP"],
    "vfio": ["VFIO_GROUP_GET_STATUS", "VFIO_DEVICE_GET_REGION_INFO", "VFIO_IOMMU_MAP_DMA", "VFIO_SET_IOMMU"],
    "pm4_nvd": ["PACKET3(PACKET3_RELEASE_MEM, 6)", "PACKET3_SET_SH_REG_START",
                "PACKET3_RELEASE_MEM_EVENT_INDEX(5)", "PACKET3_ACQUIRE_MEM_GCR_CNTL_GL2_WB(1)"],
    "gc_11_0_0": ["regCOMPUTE_PGM_LO", "COMPUTE_PGM_RSRC2__USER_SGPR__SHIFT", "COMPUTE_PGM_RSRC2__USER_SGPR_MASK"],
    "gc_12_0_0": ["regCOMPUTE_DISPATCH_INITIATOR", "COMPUTE_PGM_RSRC1__VGPRS_MASK"],
    "sdma_v6": ["SDMA_PKT_COPY_LINEAR_HEADER_OP(1)", "SDMA_PKT_FENCE_HEADER_op_shift", "SDMA_PKT_COPY_LINEAR_DST_ADDR_HI_DST_ADDR_63_32(0xdeadbeef)"],
    "pci_regs": ["PCI_BASE_ADDRESS_MEM_MASK", "PCI_EXT_CAP_ID(0x12345678)", "PCI_COMMAND_MASTER"],
}


def _c_fields(cls) -> list[str]:
    """Named, byte-addressable fields (offsetof cannot take bitfields; anonymous members have no C name)."""
    anonymous = set(getattr(cls, "_anonymous_", ()))
    return [f[0] for f in cls._fields_ if len(f) == 2 and not f[0].startswith("PADDING_") and f[0] not in anonymous]


def _c_program(module: str) -> tuple[str, list[tuple[str, int]]]:
    """A C program printing sizes, offsets and values, and the values our bindings give for the same lines."""
    mod = importlib.import_module(f"autogen.{module}")
    t = TARGETS[module]
    from autogen.generator.emit import header_paths
    lines = ["int printf(const char *, ...);"] + [f'#include "{h}"' for h in header_paths(t)]
    lines.append("#define offsetof(T, m) __builtin_offsetof(T, m)")  # -nostdinc: no <stddef.h>
    lines.append("int main(void) {")
    expected: list[tuple[str, int]] = []
    for s in STRUCTS.get(module, []):
        kind = "union" if hasattr(mod, f"union_{s}") else "struct"
        cls = getattr(mod, f"{kind}_{s}")
        lines.append(f'printf("%llu\\n", (unsigned long long)sizeof({kind} {s}));')
        expected.append((f"sizeof({kind} {s})", ctypes.sizeof(cls)))
        for f in _c_fields(cls):
            lines.append(f'printf("%llu\\n", (unsigned long long)offsetof({kind} {s}, {f}));')
            expected.append((f"offsetof({kind} {s}, {f})", getattr(cls, f).offset))
    for v in VALUES.get(module, []):
        lines.append(f'printf("%llu\\n", (unsigned long long)({v}));')
        expected.append((v, eval(v, vars(mod)) & (2**64 - 1)))  # C prints the 64-bit pattern
    lines += ["return 0;", "}"]
    return "\n".join(lines), expected


@needs_sources
@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
@pytest.mark.parametrize("module", sorted(set(STRUCTS) | set(VALUES)))
def test_layouts_and_values_match_gcc(module, tmp_path):
    from autogen.generator.emit import clang_args
    src, expected = _c_program(module)
    (tmp_path / "probe.c").write_text(src)
    args = [a for a in clang_args(TARGETS[module]) if not a.startswith("--target")]
    build = subprocess.run(["gcc", "-w", *args, "-o", str(tmp_path / "probe"), str(tmp_path / "probe.c")],
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-3000:]
    out = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True, timeout=60, check=True)
    got = [int(x) for x in out.stdout.split()]
    assert len(got) == len(expected)
    # A C int expression like PACKET3(...) sign-extends when printed as 64 bits; packets are 32-bit words.
    mismatches = [(what, ours, theirs) for (what, ours), theirs in zip(expected, got)
                  if ours != theirs and not (ours < 2**32 and theirs >= 2**63 and theirs & 0xFFFFFFFF == ours)]
    assert not mismatches, mismatches


@needs_sources
def test_check_passes_on_committed_files():
    proc = subprocess.run([sys.executable, "-m", "tools.autogen", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert f"{len(TARGETS)} of {len(TARGETS)} modules match" in proc.stderr
