"""Which firmware images an AMD GPU needs, from the IP versions its discovery table reports.

The names are the ones amdgpu (Linux 6.12) requests: amdgpu_ucode.c amdgpu_ucode_ip_version_decode makes the
prefix ("gc_11_0_0", "psp_13_0_0", "smu_13_0_0", "sdma_6_0_0") and each IP's init_microcode adds the role
(psp_v13_0.c / psp_v14_0.c psp_init_sos_microcode + psp_init_ta_microcode; smu_v13_0.c / smu_v14_0.c
*_init_microcode; gfx_v11_0.c / gfx_v12_0.c *_init_microcode for pfp, me, rlc, mec (and the RLC-backdoor toc);
imu_v11_0.c / imu_v12_0.c; amdgpu_mes.c amdgpu_mes_init_microcode; amdgpu_sdma.c amdgpu_sdma_init_microcode).
The version tables are the families those files list in MODULE_FIRMWARE; a version outside them is refused with
UnsupportedIPError rather than guessed, since the kernel would take a different code path (or BUG()) for it.

MES and IMU firmware are named by the GC version (amdgpu_mes_init_microcode and imu_v1x_0_init_microcode decode
GC_HWIP), so a MES version in `ip_versions` is accepted and not used for names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

from firmware.images import PathLike, read, search_dirs
from firmware.ucode import FirmwareError, FirmwareImage, FirmwareSetError, parse

IPVersion = tuple[int, int, int]
IPLike = Union[str, Sequence[int]]

# Names callers may use for the blocks, to the kernel's HWIP names.
BLOCKS = {"GC": "GC", "GFX": "GC", "PSP": "MP0", "MP0": "MP0", "SMU": "MP1", "MP1": "MP1", "SMC": "MP1",
          "SDMA": "SDMA0", "SDMA0": "SDMA0", "MES": "MES", "IMU": "IMU"}

# MODULE_FIRMWARE families, by file.
PSP_VERSIONS = {  # psp_v13_0.c / psp_v14_0.c: these request <prefix>_sos.bin and <prefix>_ta.bin
    (13, 0, 0): "psp_v13_0.c", (13, 0, 6): "psp_v13_0.c", (13, 0, 7): "psp_v13_0.c", (13, 0, 10): "psp_v13_0.c",
    (13, 0, 14): "psp_v13_0.c", (14, 0, 2): "psp_v14_0.c", (14, 0, 3): "psp_v14_0.c"}
SMU_VERSIONS = {  # smu_v13_0.c / smu_v14_0.c: <prefix>.bin (v13 has a kicker variant)
    (13, 0, 0): "smu_v13_0.c", (13, 0, 7): "smu_v13_0.c", (13, 0, 10): "smu_v13_0.c",
    (14, 0, 2): "smu_v14_0.c", (14, 0, 3): "smu_v14_0.c"}
GC_VERSIONS = {  # gfx_v11_0.c / gfx_v12_0.c
    (11, 0, 0): "gfx_v11_0.c", (11, 0, 1): "gfx_v11_0.c", (11, 0, 2): "gfx_v11_0.c", (11, 0, 3): "gfx_v11_0.c",
    (11, 0, 4): "gfx_v11_0.c", (11, 5, 0): "gfx_v11_0.c", (11, 5, 1): "gfx_v11_0.c", (11, 5, 2): "gfx_v11_0.c",
    (12, 0, 0): "gfx_v12_0.c", (12, 0, 1): "gfx_v12_0.c"}
SDMA_VERSIONS = {  # sdma_v6_0.c / sdma_v7_0.c: one image for every instance (amdgpu_sdma_init_microcode duplicate)
    (6, 0, 0): "sdma_v6_0.c", (6, 0, 1): "sdma_v6_0.c", (6, 0, 2): "sdma_v6_0.c", (6, 0, 3): "sdma_v6_0.c",
    (6, 1, 0): "sdma_v6_0.c", (6, 1, 1): "sdma_v6_0.c", (6, 1, 2): "sdma_v6_0.c",
    (7, 0, 0): "sdma_v7_0.c", (7, 0, 1): "sdma_v7_0.c"}
TABLES = {"MP0": PSP_VERSIONS, "MP1": SMU_VERSIONS, "GC": GC_VERSIONS, "SDMA0": SDMA_VERSIONS}

# amdgpu_ucode.c kicker_device_list: (PCI device id, revision) pairs that take the *_kicker images.
KICKER_DEVICES = {(0x744B, 0x00)}

# IP versions of the boards this project targets, for tests, the emulator and the probe's messages only: the
# driver picks firmware from the versions it discovers. GC -> gfx target as amdkfd (kfd_device.c) maps it.
KNOWN_CHIPS: dict[str, dict[str, IPVersion]] = {
    "gfx1100": {"GC": (11, 0, 0), "MP0": (13, 0, 0), "MP1": (13, 0, 0), "SDMA0": (6, 0, 0)},   # Navi 31, RX 7900
    "gfx1101": {"GC": (11, 0, 3), "MP0": (13, 0, 10), "MP1": (13, 0, 10), "SDMA0": (6, 0, 3)},  # Navi 32, RX 7800
    "gfx1102": {"GC": (11, 0, 2), "MP0": (13, 0, 7), "MP1": (13, 0, 7), "SDMA0": (6, 0, 2)},    # Navi 33, RX 7600
    "gfx1200": {"GC": (12, 0, 0), "MP0": (14, 0, 2), "MP1": (14, 0, 2), "SDMA0": (7, 0, 0)},    # Navi 44, RX 9060
    "gfx1201": {"GC": (12, 0, 1), "MP0": (14, 0, 3), "MP1": (14, 0, 3), "SDMA0": (7, 0, 1)},    # Navi 48, RX 9070
}


class UnsupportedIPError(ValueError):
    """An IP version (or block) has no firmware table here; the message lists the versions that do."""


@dataclass(frozen=True)
class Request:
    """One image the kernel requests: `names` are tried in order and the first that loads wins (only MES on gfx11
    has a fallback); `role` names it in a FirmwareSet; `kind` is its parser (firmware.ucode.KINDS); `source` is
    the kernel function that asks for it."""
    block: str
    role: str
    names: tuple[str, ...]
    kind: str
    source: str


def ip_version(value: IPLike) -> IPVersion:
    """(major, minor, revision) from "11.0.0", "11_0_0" or a 3-sequence; ValueError naming the value otherwise."""
    parts = value.replace("_", ".").split(".") if isinstance(value, str) else list(value)
    try:
        out = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or any(p < 0 for p in out):
        raise ValueError(f"IP version {value!r} is not major.minor.revision (such as 11.0.0)")
    return out  # type: ignore[return-value]


def normalize(ip_versions: Mapping[str, IPLike]) -> dict[str, IPVersion]:
    """Block names to the kernel's (GC, MP0, MP1, SDMA0, ...) and versions to tuples."""
    out: dict[str, IPVersion] = {}
    for block, version in ip_versions.items():
        key = BLOCKS.get(block.upper())
        if key is None:
            raise UnsupportedIPError(f"unknown IP block {block!r}; the blocks with firmware are "
                                     f"{', '.join(sorted(set(BLOCKS)))}")
        out[key] = ip_version(version)
    return out


def is_kicker(pci_device: Optional[int], pci_revision: Optional[int]) -> bool:
    """Whether amdgpu takes the *_kicker images for this board (amdgpu_ucode.c amdgpu_is_kicker_fw)."""
    return (pci_device, pci_revision) in KICKER_DEVICES


def prefix(block: str, version: IPVersion) -> str:
    """amdgpu_ucode_ip_version_decode: "<ip name>_<maj>_<min>_<rev>"."""
    name = {"GC": "gc", "MP0": "psp", "MP1": "smu", "SDMA0": "sdma"}[block]
    return f"{name}_{version[0]}_{version[1]}_{version[2]}"


def _check(block: str, version: IPVersion) -> str:
    table = TABLES[block]
    if version not in table:
        known = ", ".join(".".join(map(str, v)) for v in sorted(table))
        raise UnsupportedIPError(f"{block} {'.'.join(map(str, version))} has no firmware table in baregpu (from "
                                 f"amdgpu 6.12's MODULE_FIRMWARE lists); known {block} versions: {known}")
    return table[version]


def requests(ip_versions: Mapping[str, IPLike], *, pci_device: Optional[int] = None,
             pci_revision: Optional[int] = None, uni_mes: bool = True, rlc_backdoor: bool = False) -> list[Request]:
    """The images amdgpu requests for these IP versions, in the order the AM driver loads them (PSP, SMU, GC, SDMA,
    MES). Only the blocks given are covered. `pci_device`/`pci_revision` select kicker and revision-specific
    images as amdgpu does; `uni_mes` is amdgpu's uni_mes parameter (default on, gfx12 only); `rlc_backdoor` adds
    the GC toc image used only when firmware is loaded by RLC backdoor autoload instead of the PSP."""
    ips = normalize(ip_versions)
    kicker = is_kicker(pci_device, pci_revision)
    out: list[Request] = []
    if "MP0" in ips:
        src = _check("MP0", ips["MP0"])
        p, k = prefix("MP0", ips["MP0"]), "_kicker" if kicker else ""
        out.append(Request("MP0", "sos", (f"{p}_sos{k}.bin",), "psp_sos", f"{src} psp_init_sos_microcode"))
        out.append(Request("MP0", "ta", (f"{p}_ta{k}.bin",), "psp_ta", f"{src} psp_init_ta_microcode"))
    if "MP1" in ips:
        src = _check("MP1", ips["MP1"])
        p = prefix("MP1", ips["MP1"])
        k = "_kicker" if kicker and ips["MP1"][0] == 13 else ""  # only smu_v13_0_init_microcode has kicker images
        out.append(Request("MP1", "smc", (f"{p}{k}.bin",), "smc", f"{src} {src[:-2]}_init_microcode"))
    if "GC" in ips:
        gc = ips["GC"]
        src = _check("GC", gc)
        p, gfx11 = prefix("GC", gc), gc[0] == 11
        fn = f"{src} {src[:-2]}_init_microcode"
        out.append(Request("GC", "pfp", (f"{p}_pfp.bin",), "gfx", fn))
        out.append(Request("GC", "me", (f"{p}_me.bin",), "gfx", fn))
        if gfx11 and gc == (11, 0, 0) and pci_revision == 0xCE:
            rlc = "gc_11_0_0_rlc_1.bin"  # gfx_v11_0_init_microcode: GC 11.0.0 revision 0xCE
        else:
            rlc = f"{p}_rlc{'_kicker' if kicker and gfx11 else ''}.bin"
        out.append(Request("GC", "rlc", (rlc,), "rlc", fn))
        out.append(Request("GC", "mec", (f"{p}_mec.bin",), "gfx", fn))
        if rlc_backdoor:
            out.append(Request("GC", "rlc_toc", (f"{p}_toc.bin",), "common", f"{src} {src[:-2]}_init_toc_microcode"))
        imu_src = "imu_v11_0.c" if gfx11 else "imu_v12_0.c"
        imu_k = "_kicker" if kicker and gfx11 else ""
        out.append(Request("GC", "imu", (f"{p}_imu{imu_k}.bin",), "imu", f"{imu_src} {imu_src[:-2]}_init_microcode"))
    if "SDMA0" in ips:
        src = _check("SDMA0", ips["SDMA0"])
        out.append(Request("SDMA0", "sdma", (f"{prefix('SDMA0', ips['SDMA0'])}.bin",), "sdma",
                           f"{src} amdgpu_sdma_init_microcode"))
    if "GC" in ips:
        gc, p = ips["GC"], prefix("GC", ips["GC"])
        src = "amdgpu_mes.c amdgpu_mes_init_microcode"
        if gc[0] == 11:  # the scheduler pipe's _mes_2 falls back to _mes; the KIQ pipe takes mes1
            out.append(Request("GC", "mes", (f"{p}_mes_2.bin", f"{p}_mes.bin"), "mes", src))
            out.append(Request("GC", "mes_kiq", (f"{p}_mes1.bin",), "mes", src))
        elif uni_mes:  # amdgpu_discovery_set_mes_ip_blocks: gfx12 with uni_mes=1 uses one image for both pipes
            out.append(Request("GC", "mes", (f"{p}_uni_mes.bin",), "mes", src))
        else:
            out.append(Request("GC", "mes", (f"{p}_mes.bin",), "mes", src))
            out.append(Request("GC", "mes_kiq", (f"{p}_mes1.bin",), "mes", src))
    return out


def firmware_names(ip_versions: Mapping[str, IPLike], **options) -> list[str]:
    """Every file name `requests` may read, in order (fallbacks included)."""
    return [n for r in requests(ip_versions, **options) for n in r.names]


@dataclass
class FirmwareSet:
    """The parsed images of one GPU, by role (sos, ta, smc, pfp, me, rlc, mec, imu, sdma, mes, mes_kiq, ...)."""
    images: dict[str, FirmwareImage]
    requests: list[Request] = field(default_factory=list)

    def __getitem__(self, role: str) -> FirmwareImage:
        try:
            return self.images[role]
        except KeyError:
            raise KeyError(f"no firmware for role {role!r} in this set; it has {', '.join(self.images)}") from None

    def __contains__(self, role: object) -> bool:
        return role in self.images

    def describe(self) -> list[dict]:
        """One summary per image (name, path, versions, sections), for reports."""
        return [dict(role=role, **img.describe()) for role, img in self.images.items()]


def _load_one(req: Request, dirs: list[Path], check_crc: bool) -> FirmwareImage:
    problems: list[FirmwareError] = []
    for name in req.names:
        try:
            path, data = read(name, dirs)
        except FirmwareError as e:
            problems.append(e)
            continue
        try:
            return parse(data, name=name, kind=req.kind, path=str(path), check_crc=check_crc)
        except FirmwareError as e:
            problems.append(FirmwareError(str(path), e.problem, e.hint, e.looked_in))
    found = [e for e in problems if e.looked_in is None]  # read() sets looked_in only on "not found"
    if found:  # a corrupt image says more than the fallback's absence
        raise found[0]
    if len(req.names) == 1:
        raise problems[0]
    raise FirmwareError(" or ".join(req.names), "not found (looked for each name, .zst and .xz)",
                        looked_in=[str(d) for d in dirs])


def load_set(ip_versions: Mapping[str, IPLike], dirs: Optional[Iterable[PathLike]] = None, *,
             system: bool = True, check_crc: bool = False, **options) -> FirmwareSet:
    """Find, read and validate every image these IP versions need (see `requests` for `options`).

    `dirs` come first in the search, then BAREGPU_FIRMWARE_DIR, then (when `system`) the kernel's directories.
    Every image is tried before anything is raised, so one FirmwareSetError lists each missing or corrupt image
    (a single problem raises that FirmwareError itself).
    """
    reqs = requests(ip_versions, **options)
    search = search_dirs(dirs or (), system=system)
    images: dict[str, FirmwareImage] = {}
    errors: list[FirmwareError] = []
    for req in reqs:
        try:
            images[req.role] = _load_one(req, search, check_crc)
        except FirmwareError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise FirmwareSetError(errors)
    return FirmwareSet(images, reqs)


__all__ = ["BLOCKS", "FirmwareSet", "GC_VERSIONS", "KICKER_DEVICES", "KNOWN_CHIPS", "PSP_VERSIONS", "Request",
           "SDMA_VERSIONS", "SMU_VERSIONS", "UnsupportedIPError", "firmware_names", "ip_version",
           "is_kicker", "load_set", "normalize", "prefix", "requests"]
