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
           types=None, macro_filter=GC_KEEP),
    Target("gc_12_0_0", LINUX, (f"{AMD_INC}/asic_reg/gc/gc_12_0_0_offset.h", f"{AMD_INC}/asic_reg/gc/gc_12_0_0_sh_mask.h"),
           "GC 12.0.0 (gfx1201) registers and fields the compute path programs.",
           types=None, macro_filter=GC_KEEP),
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
)}
