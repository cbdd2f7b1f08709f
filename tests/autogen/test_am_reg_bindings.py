"""The AM register modules (issue 11): each names its header and IP version, known offsets and fields hold, every value
matches the header text, and the macro filters keep what the AM path programs and leave out what they say they do."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from autogen.generator.sources import AMD_INC, GC_KEEP, PACKAGES, TARGETS

# module -> (register folder under asic_reg/, IP version its header is for). The GC modules are shared with KFD.
AM_MODULES = {
    "gc_11_0_0": ("gc", "11.0.0"), "gc_12_0_0": ("gc", "12.0.0"),
    "nbio_4_3_0": ("nbio", "4.3.0"), "nbif_6_3_1": ("nbif", "6.3.1"),
    "mp_13_0_0": ("mp", "13.0.0"), "mp_13_0_2": ("mp", "13.0.2"), "mp_14_0_2": ("mp", "14.0.2"),
    "osssys_6_0_0": ("oss", "6.0.0"), "osssys_7_0_0": ("oss", "7.0.0"),
    "mmhub_3_0_0": ("mmhub", "3.0.0"), "mmhub_3_0_2": ("mmhub", "3.0.2"), "mmhub_4_1_0": ("mmhub", "4.1.0"),
    "hdp_6_0_0": ("hdp", "6.0.0"), "hdp_7_0_0": ("hdp", "7.0.0"),
    "athub_3_0_0": ("athub", "3.0.0"), "athub_4_1_0": ("athub", "4.1.0"),
    "smuio_13_0_6": ("smuio", "13.0.6"), "smuio_14_0_2": ("smuio", "14.0.2"),
}

# Values read from the pinned linux-source-6.12 headers (asic_reg/<folder>/<module>_{offset,sh_mask}.h). Cross-checks
# where the emulator already relies on them: emu/am/discovery.py's MP0_SMN_C2PMSG_33 (0x16061) is MP base 0x16000 +
# 0x61 and RCC_CONFIG_MEMSIZE (0xDE3) is NBIO base[2] 0xD20 + 0xC3.
KNOWN = {
    "gc_11_0_0": {"regGRBM_SOFT_RESET": 0x0DA8, "regGRBM_SOFT_RESET_BASE_IDX": 0, "regGB_ADDR_CONFIG": 0x13DE,
                  "regGCMC_VM_FB_LOCATION_BASE": 0x1678, "regGCVM_CONTEXT0_CNTL": 0x1688,
                  "regCP_MEC_DOORBELL_RANGE_LOWER": 0x1DFC, "regCP_MES_CNTL": 0x2807, "regCP_MEC_RS64_CNTL": 0x2904,
                  "regRLC_RLCS_BOOTLOAD_STATUS": 0x4E82, "regGFX_IMU_CORE_CTRL": 0x40B6,
                  "regSDMA0_QUEUE0_RB_CNTL": 0x0080, "regSDMA0_QUEUE1_RB_CNTL": 0x00D8,
                  "GRBM_SOFT_RESET__SOFT_RESET_CP_MASK": 0x1,
                  "RLC_RLCS_BOOTLOAD_STATUS__BOOTLOAD_COMPLETE_MASK": 0x80000000},
    "gc_12_0_0": {"regGRBM_SOFT_RESET": 0x0DA8, "regGCVM_CONTEXT0_CNTL": 0x1624,
                  "regGCVM_L2_PROTECTION_FAULT_STATUS_LO32": 0x15D0, "regCP_MEC_RS64_CNTL": 0x2904,
                  "regRLC_RLCS_BOOTLOAD_STATUS": 0x4E7C, "regGFX_IMU_CORE_CTRL": 0x40B6,
                  "regSDMA0_QUEUE0_RB_CNTL": 0x0080, "regSDMA1_QUEUE0_RB_CNTL": 0x0680, "regSDMA0_MCU_CNTL": 0x588E,
                  "SDMA0_QUEUE0_RB_CNTL__RB_SIZE_MASK": 0x3E},
    "nbio_4_3_0": {"regBIF_BX_PF0_MM_INDEX": 0x0, "regBIF_BX_PF0_MM_DATA": 0x1, "regBIF_BX_PF0_MM_INDEX_HI": 0x6,
                   "regBIF_BX_PF0_GPU_HDP_FLUSH_REQ": 0x106, "regBIF_BX_PF0_GPU_HDP_FLUSH_DONE": 0x107,
                   "regBIF_BX0_REMAP_HDP_MEM_FLUSH_CNTL": 0x12D, "regRCC_DEV0_EPF0_RCC_DOORBELL_APER_EN": 0xC0,
                   "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE": 0xC3, "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE_BASE_IDX": 2,
                   "S2A_DOORBELL_ENTRY_1_CTRL__S2A_DOORBELL_PORT1_AWID__SHIFT": 0x1},
    "nbif_6_3_1": {"regBIF_BX_PF0_MM_INDEX": 0x0, "regBIF_BX_PF0_GPU_HDP_FLUSH_REQ": 0x106,
                   "regBIF_BX_PF0_GPU_HDP_FLUSH_REQ_BASE_IDX": 2, "regRCC_DEV0_EPF0_RCC_CONFIG_MEMSIZE": 0xC3,
                   "regGDC_S2A0_S2A_DOORBELL_ENTRY_1_CTRL": 0x1CC, "BIF_BX_PF0_GPU_HDP_FLUSH_DONE__CP0_MASK": 0x1},
    "mp_13_0_0": {"regMP0_SMN_C2PMSG_33": 0x61, "regMP0_SMN_C2PMSG_64": 0x80, "regMP0_SMN_C2PMSG_81": 0x91,
                  "regMP1_SMN_C2PMSG_66": 0x282, "regMP1_SMN_C2PMSG_82": 0x292, "regMP1_SMN_C2PMSG_90": 0x29A,
                  "regMP1_SMN_C2PMSG_90_BASE_IDX": 0, "MP0_SMN_C2PMSG_64__CONTENT_MASK": 0xFFFFFFFF},
    "mp_13_0_2": {"regMP0_SMN_C2PMSG_33": 0x61, "regMP0_SMN_C2PMSG_64": 0x80, "regMP0_SMN_C2PMSG_115": 0xB3,
                  "regMP1_SMN_C2PMSG_90": 0x29A},
    "mp_14_0_2": {"regMPASP_SMN_C2PMSG_64": 0x80, "regMPASP_SMN_C2PMSG_81": 0x91, "regMP1_SMN_C2PMSG_66": 0x82,
                  "regMP1_SMN_C2PMSG_90": 0x9A, "regMP1_SMN_C2PMSG_90_BASE_IDX": 1},
    "osssys_6_0_0": {"regIH_RB_CNTL": 0x80, "regIH_RB_CNTL_BASE_IDX": 0, "regIH_RB_BASE": 0x81, "regIH_RB_RPTR": 0x83,
                     "regIH_RB_WPTR": 0x84, "IH_RB_CNTL__RB_SIZE__SHIFT": 1, "IH_RB_CNTL__RB_SIZE_MASK": 0x3E,
                     "IH_RB_CNTL__RB_ENABLE_MASK": 0x1},
    "osssys_7_0_0": {"regIH_RB_CNTL": 0x80, "regIH_RB_WPTR": 0x82, "regIH_RB_BASE": 0x83,
                     "IH_RB_CNTL__RB_SIZE_MASK": 0x3E},
    "mmhub_3_0_0": {"regMMVM_L2_PROTECTION_FAULT_STATUS": 0x70C, "regMMVM_CONTEXT0_CNTL": 0x740,
                    "regMMVM_CONTEXT0_CNTL_BASE_IDX": 0, "regMMVM_INVALIDATE_ENG17_REQ": 0x774,
                    "regMMMC_VM_FB_LOCATION_BASE": 0x8EC, "MMVM_CONTEXT0_CNTL__PAGE_TABLE_DEPTH_MASK": 0x6},
    "mmhub_3_0_2": {"regMMVM_CONTEXT0_CNTL": 0x6C0, "regMMVM_INVALIDATE_ENG17_REQ": 0x6F4,
                    "regMMMC_VM_FB_LOCATION_BASE": 0x86C},
    "mmhub_4_1_0": {"regMMVM_L2_PROTECTION_FAULT_STATUS_LO32": 0x4F0, "regMMMC_VM_FB_LOCATION_BASE": 0x554,
                    "regMMVM_CONTEXT0_CNTL": 0x564, "regMMVM_INVALIDATE_ENG17_REQ": 0x598},
    "hdp_6_0_0": {"regHDP_MEM_POWER_CTRL": 0xD4, "HDP_MEM_POWER_CTRL__ATOMIC_MEM_POWER_CTRL_EN_MASK": 0x1},
    "hdp_7_0_0": {"regHDP_MEM_POWER_CTRL": 0xD4},
    "athub_3_0_0": {"regATHUB_MISC_CNTL": 0x75, "regATHUB_MISC_CNTL_BASE_IDX": 0,
                    "ATHUB_MISC_CNTL__CG_ENABLE_MASK": 0x40},
    "athub_4_1_0": {"regATHUB_MISC_CNTL": 0x80},
    "smuio_13_0_6": {"regGOLDEN_TSC_COUNT_UPPER": 0x2D, "regGOLDEN_TSC_COUNT_UPPER_BASE_IDX": 1,
                     "regGOLDEN_TSC_COUNT_LOWER": 0x2E},
    "smuio_14_0_2": {"regGOLDEN_TSC_COUNT_UPPER": 0x2D, "regGOLDEN_TSC_COUNT_UPPER_BASE_IDX": 1,
                     "regGOLDEN_TSC_COUNT_LOWER": 0x2E},
}

# What each filtered module must keep (the AM path programs it) and must leave out (the filter's rule says so).
KEPT = {
    "gc_11_0_0": ["regCP_HQD_ACTIVE", "regCP_MQD_BASE_ADDR", "regCOMPUTE_PGM_LO", "regSH_MEM_CONFIG",  # KFD's
                  "regCP_ME_CNTL", "regCP_PFP_PRGRM_CNTR_START", "regCP_MEC_RS64_PRGRM_CNTR_START",
                  "regCP_GFX_RS64_DC_BASE0_LO", "regCP_INT_CNTL", "regCP_RB_WPTR_POLL_CNTL", "regRLC_SAFE_MODE",
                  "regRLC_SPM_MC_CNTL", "regRLC_CGCG_CGLS_CTRL", "regGRBM_GFX_CNTL", "regGCVM_CONTEXT15_CNTL",
                  "regGCVM_INVALIDATE_ENG17_ACK", "regGCVM_L2_PROTECTION_FAULT_ADDR_LO32", "regGCMC_VM_AGP_BASE",
                  "regSDMA1_QUEUE1_RB_BASE", "regSDMA0_F32_CNTL", "regSDMA0_UTCL1_PAGE",
                  "regGFX_IMU_RLC_BOOTLOADER_ADDR_HI",
                  "regSPI_COMPUTE_QUEUE_RESET", "regTCP_CNTL", "regSCRATCH_REG7", "regCC_GC_SA_UNIT_DISABLE",
                  "regGDS_VMID0_BASE", "regGL2_PIPE_STEER_0", "CP_MES_CNTL__MES_HALT_MASK", "regCP_MES_CNTL_BASE_IDX"],
    "gc_12_0_0": ["regCP_HQD_ACTIVE", "regCOMPUTE_PGM_LO", "regSDMA0_MCU_CNTL", "regSDMA1_QUEUE1_RB_CNTL",
                  "regGCVM_L2_PROTECTION_FAULT_STATUS_LO32", "regGFX_IMU_CORE_CTRL", "regRLC_RLCS_BOOTLOAD_STATUS",
                  "regGC_EA_SE_SDP_CREDITS"],
    "nbio_4_3_0": ["regBIF_BX_PF0_RSMU_INDEX", "regBIF_BX0_BIF_DOORBELL_INT_CNTL", "regBIF_BX0_PCIE_INDEX2",
                   "regRCC_DEV0_EPF2_STRAP2", "regBIFC_MISC_CTRL0", "regS2A_DOORBELL_ENTRY_0_CTRL",
                   "regRCC_STRAP0_RCC_DEV0_EPF0_STRAP0"],
    "nbif_6_3_1": ["regBIF_BX_PF0_RSMU_DATA", "regGDC_S2A0_S2A_DOORBELL_ENTRY_0_CTRL", "regRCC_DEV0_EPF2_STRAP2"],
    "mmhub_3_0_0": ["regMMVM_INVALIDATE_ENG17_SEM", "regMMVM_L2_BANK_SELECT_RESERVED_CID2", "regMM_ATC_L2_MISC_CG",
                    "regMMMC_VM_SYSTEM_APERTURE_DEFAULT_ADDR_LSB", "regDAGB0_CNTL_MISC2"],
    "mmhub_4_1_0": ["regMMVM_CONTEXT15_PAGE_TABLE_BASE_ADDR_HI32", "regMMMC_VM_AGP_TOP"],
}
LEFT_OUT = {
    "gc_11_0_0": ["regDB_DEPTH_CONTROL", "regCP_RB0_BASE", "regCP_GFX_HQD_BASE", "regCP_MES_PRGRM_CNTR_START",
                  "regCP_MES_GP3_LO", "regSDMA0_QUEUE2_RB_CNTL", "regRLC_SPM_PERFMON_CNTL", "regCP_PERFMON_CNTL",
                  "regGCMC_VM_MARC_BASE_LO_0", "regGRBM_PERFCOUNTER0_SELECT", "regCP_GFX_RS64_GP0_LO0"],
    "gc_12_0_0": ["regCP_RB0_BASE", "regSDMA1_QUEUE7_RB_CNTL", "regCB_HW_CONTROL_1",
                  "regSDMA0_PERFCNT_PERFCOUNTER0_CFG"],
    "nbio_4_3_0": ["regBIF_CFG_DEV0_EPF0_DEVICE_CNTL2", "regPCIE_LC_CNTL"],
    "nbif_6_3_1": ["regBIF_CFG_DEV0_EPF0_DEVICE_CNTL2"],
    "mmhub_3_0_0": ["regDAGB0_RDCLI0", "regMMMC_VM_MX_L1_PERFCOUNTER0_CFG"],
}


def _mod(name: str):
    return importlib.import_module(f"autogen.{name}")


def _constants(mod) -> dict[str, int]:
    return {k: v for k, v in vars(mod).items() if isinstance(v, int) and not k.startswith("_")}


@pytest.mark.parametrize("module", sorted(AM_MODULES))
def test_module_names_its_header_and_ip_version(module):
    folder, version = AM_MODULES[module]
    mod = _mod(module)
    text = Path(mod.__file__).read_text()
    t = TARGETS[module]
    stem = t.headers[0].rsplit("/", 1)[1].removesuffix("_offset.h")
    assert stem == module, "a register module is named after its header"
    base = f"{AMD_INC}/asic_reg/{folder}/{module}"
    assert t.headers == (f"{base}_offset.h", f"{base}_sh_mask.h")
    for h in t.headers:
        assert f"# Header: {h}" in text
    pkg = PACKAGES[t.package]
    assert f"# Package: {pkg.name} {pkg.version} ({pkg.arch}), .deb sha256 {pkg.sha256}" in text
    assert version in mod.__doc__, f"{module}'s docstring must say the IP version ({version})"
    assert t.types is None, "register headers are macro-only"
    counts = re.search(r"^# Macros: (\d+) translated, \d+ defined without a value, (\d+) not translated", text, re.M)
    assert counts and int(counts.group(2)) == 0, "every register and field macro must translate"


@pytest.mark.parametrize("module", sorted(KNOWN))
def test_known_offsets_and_fields(module):
    mod = _mod(module)
    wrong = {n: (getattr(mod, n, None), v) for n, v in KNOWN[module].items() if getattr(mod, n, None) != v}
    assert not wrong, f"{module}: (ours, header) {wrong}"


@pytest.mark.parametrize("module", sorted(set(KEPT) | set(LEFT_OUT)))
def test_filters_keep_what_the_am_path_programs(module):
    mod = _mod(module)
    assert [n for n in KEPT.get(module, []) if not hasattr(mod, n)] == []
    assert [n for n in LEFT_OUT.get(module, []) if hasattr(mod, n)] == []


# --- against the header text itself (needs the pinned sources) ---

def _header_defines(module: str) -> dict[str, int]:
    """Every object-like #define of the module's headers whose value is an integer literal."""
    from autogen.generator.fetch import ensure
    root = ensure(TARGETS[module].package)
    out = {}
    for h in TARGETS[module].headers:
        for name, value in re.findall(r"^#define\s+(\w+)\s+((?:0[xX])?[0-9a-fA-F]+)[uUlL]*\s*$", (root / h).read_text(),
                                      re.M):
            out[name] = int(value, 16) if value.lower().startswith("0x") else int(value, 10)
    return out


def _sources_missing() -> str | None:
    from autogen.generator import fetch
    pkg = PACKAGES[TARGETS["gc_11_0_0"].package]
    return None if fetch.is_fetched(pkg) else f"{pkg.name} not fetched: run python -m tools.autogen --fetch"


needs_sources = pytest.mark.skipif(_sources_missing() is not None, reason=str(_sources_missing()))


@needs_sources
@pytest.mark.parametrize("module", sorted(AM_MODULES))
def test_every_value_matches_the_header_text(module):
    header = _header_defines(module)
    ours = _constants(_mod(module))
    for table in (KNOWN, KEPT, LEFT_OUT):  # so that a misspelt name cannot pass the tests above
        assert set(table.get(module, ())) <= set(header), sorted(set(table.get(module, ())) - set(header))
    missing = sorted(set(ours) - set(header))
    assert not missing, f"{module} defines names its headers do not: {missing[:10]}"
    wrong = {n: (v, header[n]) for n, v in ours.items() if header[n] != v}
    assert not wrong, f"{module}: (ours, header) {dict(list(wrong.items())[:10])}"
    filt = TARGETS[module].macro_keep
    expected = {n for n in header if filt is None or filt.search(n)}
    differ = sorted(expected ^ set(ours))
    assert not differ, f"{module}: the filter's names and the module's differ: {differ[:10]}"


@needs_sources
@pytest.mark.parametrize("module", ["gc_11_0_0", "gc_12_0_0"])
def test_gc_keeps_every_name_the_kfd_filter_kept(module):
    keep = re.compile(GC_KEEP)
    header, mod = _header_defines(module), _mod(module)
    lost = [n for n in header if keep.search(n) and getattr(mod, n, None) != header[n]]
    assert not lost, f"{module}: the widened filter lost or changed KFD names: {lost[:10]}"
