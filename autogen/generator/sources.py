"""What the bindings are generated from: pinned Debian packages and the modules made from their headers.

A version leaves Debian's archive when a newer one replaces it; then pick the current one
(`apt-cache policy NAME`), update version and sha256 here, run `python -m tools.autogen`, review the diff
of the generated files and commit both.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Package:
    """A Debian package pinned by exact version and the sha256 of its .deb."""
    name: str
    version: str
    arch: str
    sha256: str
    # For packages that ship a source tarball (linux-source): the tarball inside the .deb and the folders we need.
    tarball: str | None = None
    members: tuple[str, ...] = ()

    @property
    def deb(self) -> str:
        """The file name apt-get download writes (':' in a version is written as %3a)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


PACKAGES = {p.name: p for p in (
    Package("linux-source-6.12", "6.12.117-1~deb12u1", "all",
            "e849faf31ca3555757f3a8877cb01af92122f744f75d1f3102734651c4e14703",
            tarball="usr/src/linux-source-6.12.tar.xz",
            members=("include/uapi/", "drivers/gpu/drm/amd/include/", "drivers/gpu/drm/amd/amdgpu/")),
    Package("linux-libc-dev", "6.1.176-1", "amd64",
            "8bb258735b9dffbb111da778ebdd024750878e435ffd9dfcadcb6762ede6b4cf"),
    Package("libdrm-dev", "2.4.114-1+b1", "amd64",
            "073e7ac28672c7fb55141cf39ba1daa25667bd578c76dc43eb4f911b8d3a259a"),
)}

# Paths inside a package's extracted tree (linux-source: inside its tarball's top folder).
LINUX = "linux-source-6.12"
AMD_INC = "drivers/gpu/drm/amd/include"
AMDGPU = "drivers/gpu/drm/amd/amdgpu"
LIBC_INC = "usr/include"

# clang2py kinds: a alias, c class, e enum, s struct, t typedef, u union (no functions or variables: these
# headers only describe memory layouts).
TYPES = "acestu"


@dataclass(frozen=True)
class Target:
    """One generated module: its headers, the clang arguments to parse them, and what to keep."""
    module: str
    package: str
    headers: tuple[str, ...]
    doc: str
    include: tuple[tuple[str, str], ...] = ()  # (package, path) include roots, searched in order
    defines: tuple[str, ...] = ()
    types: str | None = TYPES  # None: a macro-only header, ctypeslib2 is not run on it
    type_filter: str | None = None  # regex of type names to emit (others still parse)
    macro_filter: str | None = None  # regex of macro names to keep (register headers: what drivers use)
    shim: bool = False  # force-include autogen/shim/kernel_types.h for kernel-internal headers
    extra_args: tuple[str, ...] = field(default=())

    @property
    def macro_keep(self) -> re.Pattern[str] | None:
        return re.compile(self.macro_filter) if self.macro_filter else None


# System headers (linux/types.h, asm/ioctl.h) always come from the pinned linux-libc-dev, not the host.
LIBC = (("linux-libc-dev", LIBC_INC), ("linux-libc-dev", f"{LIBC_INC}/x86_64-linux-gnu"))
UAPI = LIBC + ((LINUX, "include/uapi"),)  # libc-dev first: the raw uapi tree refuses to be used as system headers

# Registers the KFD compute path programs, plus whole blocks a driver walks (CP_HQD_* for MQDs).
GC_KEEP = (r"^(reg)?(COMPUTE_(PGM_|TMPRING_SIZE|USER_DATA_|NUM_THREAD_|START_|RESOURCE_LIMITS|DISPATCH_|"
           r"STATIC_THREAD_MGMT_SE|RESTART_|PERFCOUNT_ENABLE|MISC_RESERVED|THREAD_TRACE_ENABLE|REQ_CTRL|"
           r"DIM_|USER_ACCUM_|SHADER_CHKSUM)|SH_MEM_|GRBM_GFX_INDEX|CP_HQD_|CP_MQD_|GCR_GENERAL_CNTL|"
           r"CP_COHER_|SPI_SHADER_PGM_)")

# What the AM path (drivers/am, emu/am) adds to the GC modules: whole blocks the bring-up programs (CP, RLC, GRBM, the
# SDMA engines that live in GC on gfx11/gfx12, the GC hub GCVM/GCMC/GCUTCL2/GCVML2, the IMU, scratch and harvest
# config), less what a compute-only driver that binds queues through HQD registers never touches:
# - performance counters and the RLC's streaming/sampling profilers (RLC_SPM_ but MC_CNTL, RLC_SPP_);
# - the IMU's internal interrupt controller, timers and telemetry;
# - the graphics pipe's queue, ring and draw registers (CP_GFX_ HQD/MQD/HPD/DDID/QUEUE, CP_RB0/1, CE, DRAW, VGT,
#   APPEND, SD, STRMOUT, SAMPLE, PA, SC, DB, GE, DMA);
# - the RS64 microcontrollers' own state, which their firmware owns (LOCAL_/MIP_/MTIMECMP_/GPn/DC_APERTUREn/
#   INTERRUPT_DATA_/DM_INDEX/MIBOUND/MDBOUND of the GFX, MEC and MES cores);
# - the MES scheduler but CP_MES_CNTL (kept so a driver can halt a MES an earlier driver left running);
# - SDMA queues 2-7 (one ring per engine; QUEUE1 stays, so QUEUE1 - QUEUE0 gives the per-queue register stride);
# - GCMC_VM_MARC_ (address remapping for virtual functions).
# The graphics ME's firmware start registers (CP_GFX_RS64_ DC/INSTR_PNTR, CP_ME_, CP_PFP_) stay: gfx_v11_0.c and
# gfx_v12_0.c start (or park) the ME with them. Outside those blocks,
# the single registers amdgpu's gfx_v11_0.c, gfx_v12_0.c, gfxhub_v3_0.c, gfxhub_v12_0.c, sdma_v6_0.c, sdma_v7_0.c and
# imu_v11_0.c program for compute (golden settings, cache/pipe steering, GDS VMIDs, SQ/TA/TCP/TD control, EA/SDP).
# Only names are added: every name GC_KEEP kept keeps its value.
GC_AM_EXCLUDE = (r"(?!\w*PERF(COUNT|CNT|MON|_SEL))"
                 r"(?!(reg)?(RLC_SPM_(?!MC_CNTL)|RLC_SPP_|GFX_IMU_(PIC|TIMER\d|TELEMETRY)_|"
                 r"CP_(GFX_(HQD|MQD|HPD|DDID|QUEUE)|RB\d|CE|DRAW|VGT|APPEND|SD|STRMOUT|SAMPLE|PA|SC|DB|GE|DMA)_|"
                 r"CP_(GFX_RS64|MEC_RS64|MEC|MES)_(LOCAL_|MIP_|MTIMECMP_|GP\d|DC_APERTURE|INTERRUPT_DATA_|DM_INDEX|"
                 r"MIBOUND|MDBOUND)|CP_MES_(?!CNTL(__|_BASE_IDX$|$))|SDMA\d_QUEUE[2-7]_|GCMC_VM_MARC_))")
GC_AM_BLOCKS = (r"(reg)?(CP_|CPC_|CPF_|CPG_|RLC_|GRBM_|SDMA\d_|GCVM_|GCMC_|GCUTCL2_|GCVML2_|GCUTC_|GFX_IMU_|SCRATCH_|"
                r"COMPUTE_|GB_ADDR_CONFIG|CC_GC_|GC_USER_|CC_RB_|CGTS_(USER_)?TCC_DISABLE|GDS_(VMID|GWS_VMID|OA_VMID|"
                r"COMPUTE_MAX_WAVE_ID|PROTECTION_FAULT|VM_PROTECTION_FAULT)|SPI_COMPUTE_QUEUE_RESET|"
                r"SPI_GDBG_PER_VMID_CNTL|"
                r"SQ_CMD|SQ_IND_|SQC_CACHES|SQG_STATUS|TA_CNTL|TCP_CNTL|TCP_UTCL1_CNTL|TCP_WATCH|TD_CNTL|GL2C_CTRL|"
                r"GL2_PIPE_STEER_|GL1X?_PIPE_STEER|CH_PIPE_STEER|PA_SC_TILE_STEERING_OVERRIDE|DIDT_IND_|"
                r"(GCEA_|GC_EA_(CPWD|SE)_)(SDP_|MISC|MAM_CTRL|DRAM_PAGE_BURST|PROBE_MAP))")
GC_FILTER = f"(?:{GC_KEEP})|(?:^{GC_AM_EXCLUDE}{GC_AM_BLOCKS})"

# NBIO/NBIF: the 100k-line headers are mostly PCIe config-space mirrors (BIF_CFG_*), link training, straps of other
# functions and RAS. Kept: the PF0 and BX0 blocks the host reaches through the register BAR (MM_INDEX/MM_DATA, HDP
# flush request/done, RSMU, doorbell aperture, interrupt control, BIF_FB_EN, PCIE_INDEX2/DATA2), the BIF control
# block (BIFC_), function 0-2 of device 0 (RCC_CONFIG_MEMSIZE, doorbell aperture enable, STRAP2), the strap block,
# and the S2A doorbell routing entries (S2A_DOORBELL_ on NBIO 4.3, GDC_S2A0/1_ on NBIF 6.3.1). What nbio_v4_3.c and
# nbif_v6_3_1.c touch outside these is link power (PCIE_LC_*, LTR) through SMN, which the AM path leaves alone.
NBIO_KEEP = (r"^(reg)?(BIF_BX_PF0_|BIF_BX0_|BIFC_|RCC_DEV0_EPF[0-2]_|RCC_DEV0_0_|RCC_STRAP0_|S2A_DOORBELL_|GDC_S2A\d_|"
             r"GDC0_|DOORBELL0_CTRL_ENTRY_|REGS_ROM_OFFSET_CTRL)")

# MMHUB: the VM blocks a GMC driver programs (MMVM_ contexts, invalidation engines and L2, MMMC_VM_ apertures and FB
# location, MM_ATC_L2_, MMUTCL2_, DAGB*_CNTL_MISC2 that mmhub_v3_0.c sets), without performance counters; the rest is
# the data arbiter and power control (DAGB, PCTL) that firmware owns.
MMHUB_KEEP = r"^(?!\w*PERF(COUNT|CNT|MON|_SEL))(reg)?(MMVM_|MMMC_|MM_ATC_L2_|MMUTCL2_|DAGB\d_CNTL_MISC2)"


def _asic_reg(ip: str, name: str) -> tuple[str, str]:
    """The offset and sh_mask headers of one register set under include/asic_reg/."""
    return (f"{AMD_INC}/asic_reg/{ip}/{name}_offset.h", f"{AMD_INC}/asic_reg/{ip}/{name}_sh_mask.h")


# AM register modules: one per register header version, named after the header. The header each IP version uses is
# the one amdgpu's file for that IP includes; several IP versions share a header (the docstring lists them).
AM_REG_DOC = (" regX is a dword offset from base address number regX_BASE_IDX of the block's instance in the IP "
              "discovery table.")

TARGETS = {t.module: t for t in (
    Target("kfd", LINUX, ("include/uapi/linux/kfd_ioctl.h",),
           "KFD ioctls, their argument structs and event/exception codes (amdkfd uapi).",
           include=UAPI, defines=("__user=",)),
    Target("amdgpu_drm", "libdrm-dev", (f"{LIBC_INC}/libdrm/amdgpu_drm.h",),
           "amdgpu DRM ioctls on the render node (GEM create/mmap, context, info queries).",
           include=(("libdrm-dev", f"{LIBC_INC}/libdrm"),) + LIBC),
    Target("pm4_nvd", LINUX, (f"{AMDGPU}/nvd.h",),
           "PM4 type-3 packets for gfx10-gfx12 (navi and later): opcodes and field encoders.",
           types=None),
    Target("pm4_soc15d", LINUX, (f"{AMDGPU}/soc15d.h",),
           "PM4 type-3 packets for soc15 parts (gfx9, gfx942/MI300): opcodes and field encoders.",
           types=None),
    Target("soc21_enum", LINUX, (f"{AMD_INC}/soc21_enum.h",),
           "SOC21 (gfx11) hardware enums the command streams name: VGT event types for EVENT_WRITE and RELEASE_MEM.",
           include=LIBC, types="e", type_filter=r"^VGT_EVENT_TYPE$"),
    Target("sdma_v6", LINUX, (f"{AMDGPU}/sdma_v6_0_0_pkt_open.h",),
           "SDMA packet layouts for SDMA 6 (gfx11) and SDMA 7 (gfx12 includes the same header).",
           types=None),
    Target("gc_11_0_0", LINUX, (f"{AMD_INC}/asic_reg/gc/gc_11_0_0_offset.h", f"{AMD_INC}/asic_reg/gc/gc_11_0_0_sh_mask.h"),
           "GC 11.0.0 (gfx1100) registers and fields the compute path programs.",
           types=None, macro_filter=GC_FILTER),
    Target("gc_12_0_0", LINUX, (f"{AMD_INC}/asic_reg/gc/gc_12_0_0_offset.h", f"{AMD_INC}/asic_reg/gc/gc_12_0_0_sh_mask.h"),
           "GC 12.0.0 (gfx1201) registers and fields the compute path programs.",
           types=None, macro_filter=GC_FILTER),
    Target("amdgpu_ucode", LINUX, (f"{AMDGPU}/amdgpu_ucode.h",),
           "amdgpu firmware image headers (common header, per-IP v1/v2 headers, PSP/TA descriptors) and ucode ids.",
           include=((LINUX, AMDGPU),) + LIBC, shim=True, defines=("__printf(a,b)=",),
           type_filter=r"(firmware_header|_fw_|fw_bin_desc|gpu_info_firmware|pptable_entry|ucode_id|fw_type|"
                       r"ucode_status|firmware_load_type|psp_fw)"),
    # ip_v4's sub_revision/variant byte exists only under LITTLEENDIAN_CPU, which the kernel build defines for x86
    # (drivers/gpu/drm/amd/display/dc/os_types.h); without it the struct is a byte short of the table's layout.
    Target("discovery", LINUX, (f"{AMD_INC}/discovery.h",),
           "IP discovery table: binary header, IP dies and blocks, GC and harvest info.",
           include=LIBC, shim=True, defines=("LITTLEENDIAN_CPU=1",)),
    Target("mqd_v11", LINUX, (f"{AMD_INC}/v11_structs.h",),
           "Memory queue descriptors for gfx11 compute and SDMA queues.", include=LIBC, shim=True),
    Target("mqd_v12", LINUX, (f"{AMD_INC}/v12_structs.h",),
           "Memory queue descriptors for gfx12 compute and SDMA queues.", include=LIBC, shim=True),
    Target("pci_regs", "linux-libc-dev", (f"{LIBC_INC}/linux/pci_regs.h",),
           "PCI configuration space registers and capability layouts.", include=LIBC, types=None),
    Target("vfio", "linux-libc-dev", (f"{LIBC_INC}/linux/vfio.h",),
           "VFIO container, group and device ioctls and structs.", include=LIBC),
    # --- AM register sets (issue 11); gc_11_0_0 and gc_12_0_0 above carry GC, its hub and SDMA ---
    Target("nbio_4_3_0", LINUX, _asic_reg("nbio", "nbio_4_3_0"),
           "NBIO 4.3.0 registers (nbio_v4_3.c; NBIO 4.3.0 and 4.3.1: RX 7900 XTX, RX 7600): BIF, doorbells, HDP flush."
           + AM_REG_DOC, types=None, macro_filter=NBIO_KEEP),
    Target("nbif_6_3_1", LINUX, _asic_reg("nbif", "nbif_6_3_1"),
           "NBIF 6.3.1 registers (nbif_v6_3_1.c; RX 9070): BIF, doorbells, HDP flush." + AM_REG_DOC,
           types=None, macro_filter=NBIO_KEEP),
    # MP 13.0.x has two headers in the kernel: psp_v13_0.c includes mp_13_0_2 for every MP0 13.0.x (it alone has the
    # SPI-ROM and RAS mailboxes C2PMSG_115/116/127), soc21.c and the SMU 13.0.0 code include mp_13_0_0. The boot and
    # KM-ring mailboxes (C2PMSG_33..103) and MP1's have the same offsets in both; both are generated so that each
    # reader can use the one its kernel counterpart uses.
    Target("mp_13_0_0", LINUX, _asic_reg("mp", "mp_13_0_0"),
           "MP0 (PSP) and MP1 (SMU) 13.0.0 registers (soc21.c, smu_v13_0; MP 13.0.0 and 13.0.7): C2PMSG mailboxes."
           + AM_REG_DOC, types=None),
    Target("mp_13_0_2", LINUX, _asic_reg("mp", "mp_13_0_2"),
           "MP0 (PSP) and MP1 (SMU) 13.0.2 registers, which psp_v13_0.c uses for every MP0 13.0.x (13.0.0 and 13.0.7 "
           "included): C2PMSG mailboxes." + AM_REG_DOC, types=None),
    Target("mp_14_0_2", LINUX, _asic_reg("mp", "mp_14_0_2"),
           "MP0 (PSP, named MPASP) and MP1 (SMU) 14.0.2 registers (psp_v14_0.c, soc24.c; MP 14.0.2 and 14.0.3): "
           "C2PMSG mailboxes." + AM_REG_DOC, types=None),
    Target("osssys_6_0_0", LINUX, _asic_reg("oss", "osssys_6_0_0"),
           "OSSSYS 6.0.0 registers (ih_v6_0.c; OSSSYS 6.0.0-6.0.2): the interrupt handler's rings, doorbells, clients."
           + AM_REG_DOC, types=None),
    Target("osssys_7_0_0", LINUX, _asic_reg("oss", "osssys_7_0_0"),
           "OSSSYS 7.0.0 registers (ih_v7_0.c; OSSSYS 7.0.0): the interrupt handler's rings, doorbells and clients."
           + AM_REG_DOC, types=None),
    Target("mmhub_3_0_0", LINUX, _asic_reg("mmhub", "mmhub_3_0_0"),
           "MMHUB 3.0.0 VM registers (mmhub_v3_0.c; MMHUB 3.0.0, gmc_v11_0.c's default): contexts, invalidation, L2, "
           "apertures."
           + AM_REG_DOC, types=None, macro_filter=MMHUB_KEEP),
    Target("mmhub_3_0_2", LINUX, _asic_reg("mmhub", "mmhub_3_0_2"),
           "MMHUB 3.0.2 VM registers (mmhub_v3_0_2.c; MMHUB 3.0.2): contexts, invalidation, L2, apertures."
           + AM_REG_DOC, types=None, macro_filter=MMHUB_KEEP),
    Target("mmhub_4_1_0", LINUX, _asic_reg("mmhub", "mmhub_4_1_0"),
           "MMHUB 4.1.0 VM registers (mmhub_v4_1_0.c; MMHUB 4.1.0): contexts, invalidation, L2, apertures."
           + AM_REG_DOC, types=None, macro_filter=MMHUB_KEEP),
    Target("hdp_6_0_0", LINUX, _asic_reg("hdp", "hdp_6_0_0"),
           "HDP 6.0.0 registers (hdp_v6_0.c; HDP 6.0.0, 6.0.1, 6.1.0, 6.1.1): host data path flush, invalidate and "
           "memory power."
           + AM_REG_DOC, types=None),
    Target("hdp_7_0_0", LINUX, _asic_reg("hdp", "hdp_7_0_0"),
           "HDP 7.0.0 registers (hdp_v7_0.c; HDP 7.0.0): host data path flush, invalidate and memory power."
           + AM_REG_DOC, types=None),
    Target("athub_3_0_0", LINUX, _asic_reg("athub", "athub_3_0_0"),
           "ATHUB 3.0.0 registers (athub_v3_0.c; ATHUB 3.0.0-3.0.2): ATS and XPB routing, clock gating."
           + AM_REG_DOC, types=None),
    Target("athub_4_1_0", LINUX, _asic_reg("athub", "athub_4_1_0"),
           "ATHUB 4.1.0 registers (athub_v4_1_0.c; ATHUB 4.1.0): ATS and XPB routing, clock gating." + AM_REG_DOC,
           types=None),
    Target("smuio_13_0_6", LINUX, _asic_reg("smuio", "smuio_13_0_6"),
           "SMUIO 13.0.6 registers (gfx_v11_0.c includes them for gfx11; smuio_v13_0_6.c): golden TSC, ROM access, "
           "scratch." + AM_REG_DOC, types=None),
    Target("smuio_14_0_2", LINUX, _asic_reg("smuio", "smuio_14_0_2"),
           "SMUIO 14.0.2 registers (smuio_v14_0_2.c; SMUIO 14.0.2): golden TSC, ROM access, scratch." + AM_REG_DOC,
           types=None),
)}
