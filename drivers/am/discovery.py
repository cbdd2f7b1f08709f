"""Read an AMD GPU's IP discovery table from VRAM: which IP blocks the card has, their versions, instances, register
bases and harvest state, and the GC layout. Everything the AM driver chooses later (register sets, firmware images,
the gfx target) follows from what this reads; a table of known PCI IDs is for the probe's messages only.

The layout and the checks are amdgpu's (drivers/gpu/drm/amd/amdgpu/amdgpu_discovery.c, Linux 6.12) over discovery.h
(autogen/discovery.py): the binary sits at vram_size - DISCOVERY_TMR_OFFSET and is read DISCOVERY_TMR_SIZE long
(amdgpu_discovery_read_binary_from_mem); amdgpu_discovery_init checks the binary signature, the binary checksum (the
16-bit byte sum of everything after binary_checksum up to binary_size) and each present table's signature or id and
byte-sum checksum; amdgpu_discovery_reg_base_init walks the dies and IP entries; amdgpu_discovery_get_gfx_info reads
GC info v1.x/v2.x; amdgpu_discovery_read_from_harvest_table reads the harvest list. Where the kernel trusts the
table (offsets, counts, header versions) this reader refuses instead, naming the field, because a misread table here
would send register writes to the wrong block of a real card.
"""
from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

from autogen import discovery as d
from hcq.errors import HCQError

# amdgpu_discovery.h
DISCOVERY_TMR_OFFSET = 64 << 10
DISCOVERY_TMR_SIZE = 10 << 10

# amdgpu_discovery.c: registers at fixed dword offsets, readable before any IP base is known.
MP0_SMN_C2PMSG_33 = 0x16061  # bit 31: IFWI init (which writes the table) has completed
RCC_CONFIG_MEMSIZE = 0xDE3  # VRAM size in MiB
IFWI_INIT_DONE = 1 << 31
IFWI_WAIT_S = 2.0  # amdgpu_discovery_read_binary_from_mem polls up to 2000 x 1 ms

# amdgpu.h: entries with instance_number >= HWIP_MAX_INSTANCE or hw_id >= HW_ID_MAX are skipped
# (amdgpu_discovery_validate_ip), not refused.
HWIP_MAX_INSTANCE = 44
HW_ID_MAX = 300

# soc15_hw_ip.h hardware ids, spelled as amdgpu_discovery.c's hw_id_names (hw id 12 is UVD_HWID == VCN_HWID; we
# call it VCN, as every part this driver targets has VCN).
HW_ID_NAMES: dict[int, str] = {
    1: "MP1", 2: "MP2", 3: "THM", 4: "SMUIO", 5: "FUSE", 6: "CLKA", 10: "PWR", 11: "GC", 12: "VCN", 13: "AUDIO_AZ",
    14: "ACP", 15: "DCI", 271: "DMU", 16: "DCO", 272: "DIO", 17: "XDMA", 18: "DCEAZ", 274: "DAZ", 19: "SDPMUX",
    20: "NTB", 21: "VPE", 24: "IOHC", 28: "L2IMU", 32: "VCE", 34: "MMHUB", 35: "ATHUB", 36: "DBGU_NBIO", 37: "DFX",
    38: "DBGU0", 39: "DBGU1", 40: "OSSSYS", 41: "HDP", 42: "SDMA0", 43: "SDMA1", 44: "ISP", 45: "DBGU_IO", 46: "DF",
    47: "CLKB", 48: "FCH", 49: "DFX_DAP", 50: "L1IMU_PCIE", 51: "L1IMU_NBIF", 52: "L1IMU_IOAGR", 53: "L1IMU3",
    54: "L1IMU4", 55: "L1IMU5", 56: "L1IMU6", 57: "L1IMU7", 58: "L1IMU8", 59: "L1IMU9", 60: "L1IMU10", 61: "L1IMU11",
    62: "L1IMU12", 63: "L1IMU13", 64: "L1IMU14", 65: "L1IMU15", 66: "WAFLC", 67: "FCH_USB_PD", 68: "SDMA2",
    69: "SDMA3", 70: "PCIE", 80: "PCS", 89: "DDCL", 90: "SST", 91: "LSDMA", 100: "IOAGR", 108: "NBIF", 124: "IOAPIC",
    128: "SYSTEMHUB", 144: "NTBCCP", 150: "UMC", 168: "SATA", 170: "USB", 176: "CCXSEC", 200: "XGMI", 216: "XGBE",
    255: "MP0",
}
_NAME_TO_ID = {name: hw for hw, name in HW_ID_NAMES.items()}
# amdgpu_discovery.c hw_id_map: the kernel's block names that differ from the hw-id names.
_NAME_TO_ID.update({"UVD": 12, "NBIO": 108, "DCE": 271, "CLK": 6})

# amdkfd kfd_device.c kgd2kfd_probe: GC IP version -> gfx_target_version (major*10000 + minor*100 + stepping).
_GFX_TARGET_VERSION: dict[tuple[int, int, int], int] = {
    (9, 0, 1): 90000, (9, 1, 0): 90002, (9, 2, 2): 90002, (9, 2, 1): 90004, (9, 3, 0): 90012, (9, 4, 0): 90006,
    (9, 4, 1): 90008, (9, 4, 2): 90010, (9, 4, 4): 90402,
    (10, 1, 10): 100100, (10, 1, 2): 100101, (10, 1, 1): 100102, (10, 1, 3): 100103, (10, 1, 4): 100103,
    (10, 3, 0): 100300, (10, 3, 2): 100301, (10, 3, 4): 100302, (10, 3, 1): 100303, (10, 3, 5): 100304,
    (10, 3, 3): 100305, (10, 3, 6): 100306, (10, 3, 7): 100306,
    (11, 0, 0): 110000, (11, 0, 1): 110003, (11, 0, 4): 110003, (11, 0, 2): 110002,
    (11, 0, 3): 110001,  # kfd_device.c: "Compiler version is 11.0.1 while HW version is 11.0.3"
    (11, 5, 0): 110500, (11, 5, 1): 110501, (11, 5, 2): 110502,
    (12, 0, 0): 120000, (12, 0, 1): 120001,
}

IPRef = Union[str, int]


class DiscoveryError(HCQError):
    """The discovery table is missing, corrupt or not one this reader understands; the message names the field."""


def hw_id_of(ip: IPRef) -> int:
    """The soc15 hardware id for a block name ("GC", "SDMA0", "NBIO", ...) or an id passed through."""
    if isinstance(ip, int):
        return ip
    try:
        return _NAME_TO_ID[ip.upper()]
    except KeyError:
        raise DiscoveryError(f"unknown IP block name {ip!r}; names are soc15_hw_ip.h's without _HWID, "
                             f"e.g. GC, SDMA0, MMHUB, NBIF (or NBIO), MP0, MP1, OSSSYS, HDP") from None


def hw_id_name(hw_id: int) -> str:
    """The block name for a hardware id, or HWID<n> for one soc15_hw_ip.h does not name."""
    return HW_ID_NAMES.get(hw_id, f"HWID{hw_id}")


def discovery_offset(vram_size: int) -> int:
    """Where amdgpu reads the table: vram_size - DISCOVERY_TMR_OFFSET (amdgpu_discovery_read_binary_from_mem)."""
    if vram_size < DISCOVERY_TMR_OFFSET + DISCOVERY_TMR_SIZE:
        raise DiscoveryError(f"VRAM size {vram_size:#x} is too small to hold the discovery table at "
                             f"vram_size - {DISCOVERY_TMR_OFFSET:#x}; check RCC_CONFIG_MEMSIZE (a reading of 0 or "
                             f"0xffffffff means the card is not answering)")
    return vram_size - DISCOVERY_TMR_OFFSET


def vram_size_from_memsize(memsize: int) -> int:
    """VRAM bytes from RCC_CONFIG_MEMSIZE (MiB; amdgpu_discovery_read_binary_from_mem). Refuses 0 (the kernel then
    looks for the table in system memory, through ACPI, which a card without a driver cannot offer) and 0xffffffff
    (the card is gone from the bus or not powered)."""
    if memsize == 0xFFFFFFFF:
        raise DiscoveryError("RCC_CONFIG_MEMSIZE reads 0xffffffff: the GPU does not answer MMIO (removed, powered off "
                             "or in reset); rescan the bus or power-cycle the card")
    if memsize == 0:
        raise DiscoveryError("RCC_CONFIG_MEMSIZE reads 0: the card reports no VRAM, so its discovery table is not in "
                             "VRAM (APUs keep it in system memory via ACPI, which AM does not support)")
    return memsize << 20


def ifwi_ready(c2pmsg_33: int) -> bool:
    """Whether MP0_SMN_C2PMSG_33 says IFWI init has completed, so the table in VRAM is valid."""
    return c2pmsg_33 != 0xFFFFFFFF and bool(c2pmsg_33 & IFWI_INIT_DONE)


@dataclass(frozen=True)
class IPInstance:
    """One IP entry of the table: block, die, instance, version, the kernel's view of its bases (dword offsets,
    `bases`) and what the table holds (`raw_bases`: 64-bit values in a v4 table with base_addr_64_bit)."""
    hw_id: int
    name: str
    die: int
    instance: int
    major: int
    minor: int
    revision: int
    variant: int
    sub_revision: int
    harvest: int  # the entry's harvest nibble (table versions 1-2 only; 0 otherwise)
    bases: tuple[int, ...]
    raw_bases: tuple[int, ...]
    vcn_config: int = 0  # VCN only: revision bits 7:6 (0b10 encode disabled, 0b01 decode disabled)

    @property
    def version(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.revision)


@dataclass(frozen=True)
class GCInfo:
    """The GC info table (amdgpu_discovery_get_gfx_info's reading): shader engines, arrays, CUs and wave limits,
    plus every field of the table under its discovery.h name (`fields`)."""
    version: tuple[int, int]
    num_se: int
    num_sh_per_se: int
    num_cu_per_sh: int
    num_rb_per_se: int
    num_tccs: int
    num_gprs: int
    max_gs_threads: int
    wave_size: int
    max_waves_per_simd: int
    max_scratch_slots_per_cu: int
    lds_size: int
    num_sc_per_sh: int
    num_packer_per_sc: int
    fields: dict[str, int] = field(hash=False, compare=False)

    @property
    def max_cus(self) -> int:
        """CUs the die is laid out for (before harvesting, which the GC registers report)."""
        return self.num_se * self.num_sh_per_se * self.num_cu_per_sh


@dataclass(frozen=True)
class Discovery:
    """What a card's discovery table says. Look blocks up by name or hw id: `version("GC")`, `base("GC", 0, 1)`,
    `instances("SDMA0")`; `gfx_target()` is the LLVM processor name the GC version means."""
    vram_size: int
    offset: int
    binary_version: tuple[int, int]
    ip_version: int
    base_addr_64: bool
    ips: tuple[IPInstance, ...]
    gc: Optional[GCInfo]
    harvested: frozenset[tuple[int, int]]  # (hw_id, instance) from the harvest table
    vcn_fuses: tuple[int, ...] = ()
    skipped: tuple[str, ...] = ()  # entries the kernel would skip (amdgpu_discovery_validate_ip), said in words

    def blocks(self, ip: IPRef) -> list[IPInstance]:
        """Every entry of a block, in instance order."""
        hw = hw_id_of(ip)
        return sorted((e for e in self.ips if e.hw_id == hw), key=lambda e: (e.instance, e.die))

    def has(self, ip: IPRef) -> bool:
        return bool(self.blocks(ip))

    def instances(self, ip: IPRef) -> int:
        """How many instances of the block the table lists (harvested ones included)."""
        return len(self.blocks(ip))

    def block(self, ip: IPRef, instance: int = 0) -> IPInstance:
        """The entry for one instance; a DiscoveryError naming what the table has when it is absent."""
        entries = self.blocks(ip)
        for e in entries:
            if e.instance == instance:
                return e
        name = hw_id_name(hw_id_of(ip))
        if not entries:
            raise DiscoveryError(f"the discovery table lists no {name} block; it lists "
                                 f"{sorted({e.name for e in self.ips})}")
        raise DiscoveryError(f"the discovery table lists {name} instances {[e.instance for e in entries]}, "
                             f"not instance {instance}")

    def version(self, ip: IPRef, instance: int = 0) -> tuple[int, int, int]:
        """(major, minor, revision) of a block, as amdgpu_ip_version reads it."""
        return self.block(ip, instance).version

    def base(self, ip: IPRef, instance: int = 0, segment: int = 0) -> int:
        """A register segment base (dword offset) as the kernel stores it in reg_offset."""
        e = self.block(ip, instance)
        if not 0 <= segment < len(e.bases):
            raise DiscoveryError(f"{e.name} instance {instance} has {len(e.bases)} base segments in the discovery "
                                 f"table, not segment {segment}")
        return e.bases[segment]

    def is_harvested(self, ip: IPRef, instance: int = 0) -> bool:
        """Whether the harvest table (or, in version 1-2 tables, the entry's harvest nibble) disables the instance."""
        hw = hw_id_of(ip)
        if (hw, instance) in self.harvested:
            return True
        return any(e.harvest for e in self.blocks(hw) if e.instance == instance)

    def active_instances(self, ip: IPRef) -> list[int]:
        """Instance numbers of a block that are not harvested."""
        return [e.instance for e in self.blocks(ip) if not self.is_harvested(ip, e.instance)]

    def gfx_target(self, rev_id: int = 1, apu: bool = False) -> str:
        """The LLVM processor name for the GC version: GC 11.0.0 is gfx1100, 12.0.1 gfx1201 (kfd_device.c).
        GC 9.4.3 depends on the chip revision (rev_id >= 1: gfx942) and, before it, on APU vs dGPU."""
        v = self.version("GC")
        if v == (9, 4, 3):
            gtv = 90402 if rev_id >= 1 else 90400 if apu else 90401
        elif v in _GFX_TARGET_VERSION:
            gtv = _GFX_TARGET_VERSION[v]
        else:
            raise DiscoveryError(f"GC {v[0]}.{v[1]}.{v[2]} has no gfx target in amdkfd's table (kfd_device.c); "
                                 f"this card is newer or older than what this driver knows")
        return f"gfx{gtv // 10000}{(gtv // 100) % 100:x}{gtv % 100:x}"

    def as_dict(self) -> dict:
        """A plain summary for reports and `--json`."""
        return dict(
            offset=self.offset, binary_version=list(self.binary_version), ip_version=self.ip_version,
            ips=[dict(name=e.name, hw_id=e.hw_id, die=e.die, instance=e.instance, version=".".join(map(str, e.version)),
                      harvested=self.is_harvested(e.hw_id, e.instance), bases=[hex(b) for b in e.bases])
                 for e in self.ips],
            gc=None if self.gc is None else dict(version=list(self.gc.version), **self.gc.fields),
            skipped=list(self.skipped))


# --- parsing -------------------------------------------------------------------------------------------------------

def _checksum(data: bytes) -> int:
    """amdgpu_discovery_calculate_checksum: the 16-bit wrapping sum of the bytes."""
    return sum(data) & 0xFFFF


class _Blob:
    """The binary as read, with reads bounded by binary_size that fail naming the field."""

    def __init__(self, data: bytes, size: int):
        self.data, self.size = data, size

    def take(self, off: int, n: int, what: str) -> bytes:
        if off < 0 or n < 0 or off + n > self.size:
            raise DiscoveryError(f"discovery {what} at byte {off:#x} (+{n}) lies outside the binary "
                                 f"(binary_size {self.size:#x}); the table is corrupt")
        return self.data[off:off + n]

    def struct(self, cls, off: int, what: str):
        return cls.from_buffer_copy(self.take(off, ctypes.sizeof(cls), what))


def _table(blob: _Blob, bhdr, tid: int, name: str, hdr_cls, sig_field: str, expect: int,
           size_of: Callable[[object], int]) -> Optional[int]:
    """Check one table of table_list the way amdgpu_discovery_init does; return its offset, or None when absent."""
    info = bhdr.table_list[tid]
    if info.offset == 0:
        return None
    hdr = blob.struct(hdr_cls, info.offset, f"{name} table header (table_list[{tid}].offset)")
    got = getattr(hdr, sig_field)
    if got != expect:
        raise DiscoveryError(f"discovery {name} table at {info.offset:#x} has {sig_field} {got:#x}, expected "
                             f"{expect:#x}: table_list[{tid}].offset is wrong or the table is corrupt")
    size = size_of(hdr)
    body = blob.take(info.offset, size, f"{name} table ({size} bytes)")
    if _checksum(body) != info.checksum:
        raise DiscoveryError(f"discovery {name} table checksum {_checksum(body):#06x} does not match "
                             f"table_list[{tid}].checksum {info.checksum:#06x}: the table is corrupt")
    return info.offset


def _parse_ips(blob: _Blob, off: int) -> tuple[int, bool, list[IPInstance], list[str]]:
    ihdr = blob.struct(d.struct_ip_discovery_header, off, "IP discovery header")
    version = ihdr.version
    if version not in (1, 2, 3, 4):
        raise DiscoveryError(f"IP discovery header version {version} is not one discovery.h describes (1-4); "
                             f"this reader cannot lay out its IP entries")
    base64 = bool(ihdr.base_addr_64_bit)
    if base64 and version != 4:
        raise DiscoveryError(f"IP discovery header version {version} sets base_addr_64_bit, which only version 4 "
                             f"defines; the table is corrupt")
    if not 1 <= ihdr.num_dies <= len(ihdr.die_info):
        raise DiscoveryError(f"IP discovery num_dies is {ihdr.num_dies}; it must be 1-{len(ihdr.die_info)}")
    end = off + ihdr.size
    ip_blob = _Blob(blob.data, min(end, blob.size))
    hdr_size = ctypes.sizeof(d.struct_ip_v3)  # ip, ip_v3 and ip_v4 (little-endian) entry headers are all 8 bytes
    entries: list[IPInstance] = []
    skipped: list[str] = []
    for i in range(ihdr.num_dies):
        die_off = ihdr.die_info[i].die_offset
        dhdr = ip_blob.struct(d.struct_die_header, die_off, f"die {i} header (die_info[{i}].die_offset)")
        if dhdr.die_id != i:  # amdgpu_discovery_reg_base_init: "invalid die id"
            raise DiscoveryError(f"die header at {die_off:#x} has die_id {dhdr.die_id}, expected {i}")
        at = die_off + ctypes.sizeof(d.struct_die_header)
        for j in range(dhdr.num_ips):
            what = f"die {i} IP entry {j}"
            raw = ip_blob.take(at, hdr_size, what)
            hw_id, inst, nbase, major, minor, rev, nib = struct.unpack("<HBBBBBB", raw)
            width = 8 if base64 else 4
            values = struct.unpack(f"<{nbase}{'Q' if base64 else 'I'}",
                                   ip_blob.take(at + hdr_size, nbase * width, f"{what} base addresses"))
            at += hdr_size + nbase * width
            if inst >= HWIP_MAX_INSTANCE or hw_id >= HW_ID_MAX:
                skipped.append(f"die {i} entry {j}: hw_id {hw_id} instance {inst} is out of range "
                               f"(hw_id < {HW_ID_MAX}, instance < {HWIP_MAX_INSTANCE}); skipped as amdgpu does")
                continue
            # 64-bit bases: the kernel keeps the low 32 bits with bits 31:30 cleared (the bases are dword offsets).
            bases = tuple((v & 0xFFFFFFFF) & 0x3FFFFFFF for v in values) if base64 else values
            vcn_config = 0
            if hw_id == 12:  # VCN: revision bits 7:6 carry the en/decode capability (amdgpu_discovery_reg_base_init)
                vcn_config, rev = rev & 0xC0, rev & 0x3F
            if version < 3:  # struct ip: low nibble harvest, no variant/sub-revision
                variant, subrev, harvest = 0, 0, nib & 0xF
            else:  # ip_v3/ip_v4: sub_revision in the low nibble, variant in the high one
                variant, subrev, harvest = nib >> 4, nib & 0xF, 0
            entries.append(IPInstance(hw_id, hw_id_name(hw_id), i, inst, major, minor, rev, variant, subrev, harvest,
                                      tuple(bases), tuple(values), vcn_config))
    return version, base64, entries, skipped


_GC_LAYOUTS = {1: (d.struct_gc_info_v1_0, d.struct_gc_info_v1_1, d.struct_gc_info_v1_2, d.struct_gc_info_v1_3),
               2: (d.struct_gc_info_v2_0, d.struct_gc_info_v2_1)}


def _parse_gc(blob: _Blob, off: int) -> GCInfo:
    hdr = blob.struct(d.struct_gpu_info_header, off, "GC info header")
    major, minor = hdr.version_major, hdr.version_minor
    if major not in _GC_LAYOUTS:  # amdgpu_discovery_get_gfx_info: "Unhandled GC info table"
        raise DiscoveryError(f"GC info table version {major}.{minor} is not one discovery.h describes (1.x, 2.x)")
    layouts = _GC_LAYOUTS[major]
    # the kernel reads v1 fields by minor >= 1/2/3 and v2.1 fields only when minor == 1
    cls = layouts[min(minor, len(layouts) - 1)] if major == 1 else layouts[1 if minor == 1 else 0]
    if hdr.size < ctypes.sizeof(cls):
        raise DiscoveryError(f"GC info v{major}.{minor} header.size is {hdr.size}, smaller than the "
                             f"{ctypes.sizeof(cls)} bytes that version holds")
    g = blob.struct(cls, off, f"GC info v{major}.{minor}")
    f = {name: getattr(g, name) for name, _ in cls._fields_[1:]}
    if major == 1:
        sh, cu, tccs = f["gc_num_sa_per_se"], 2 * (f["gc_num_wgp0_per_sa"] + f["gc_num_wgp1_per_sa"]), f["gc_num_gl2c"]
    else:
        sh, cu, tccs = f["gc_num_sh_per_se"], f["gc_num_cu_per_sh"], f["gc_num_tccs"]
    if sh == 0:
        raise DiscoveryError(f"GC info v{major}.{minor} reports 0 shader arrays per SE (the kernel divides by it)")
    return GCInfo(
        version=(major, minor), num_se=f["gc_num_se"], num_sh_per_se=sh, num_cu_per_sh=cu,
        num_rb_per_se=f["gc_num_rb_per_se"], num_tccs=tccs, num_gprs=f["gc_num_gprs"],
        max_gs_threads=f["gc_num_max_gs_thds"], wave_size=f["gc_wave_size"],
        max_waves_per_simd=f["gc_max_waves_per_simd"], max_scratch_slots_per_cu=f["gc_max_scratch_slots_per_cu"],
        lds_size=f["gc_lds_size"], num_sc_per_sh=f["gc_num_sc_per_se"] // sh,
        num_packer_per_sc=f["gc_num_packer_per_sc"], fields=f)


def _parse_harvest(blob: _Blob, off: int) -> frozenset[tuple[int, int]]:
    tbl = blob.struct(d.struct_harvest_table, off, "harvest table")
    out = set()
    for e in tbl.list:  # amdgpu_discovery_read_from_harvest_table: a zero hw_id ends the list
        if e.hw_id == 0:
            break
        out.add((e.hw_id, e.number_instance))
    return frozenset(out)


def _parse_vcn(blob: _Blob, off: int) -> tuple[int, ...]:
    tbl = blob.struct(d.struct_vcn_info_v1_0, off, "VCN info table")
    if tbl.header.version_major != 1:  # amdgpu_discovery_get_vcn_info: "Unhandled VCN info table"
        raise DiscoveryError(f"VCN info table version {tbl.header.version_major}.{tbl.header.version_minor} is not "
                             f"1.x, the only one discovery.h describes")
    n = min(tbl.num_of_instances, d.VCN_INFO_TABLE_MAX_NUM_INSTANCES)
    return tuple(tbl.instance_info[i].fuse_data.all_bits for i in range(n))


def parse_discovery(data: bytes, vram_size: int = 0, offset: int = 0) -> Discovery:
    """Parse and check a discovery binary already read (at least binary_size bytes)."""
    hsize = ctypes.sizeof(d.struct_binary_header)
    if len(data) < hsize:
        raise DiscoveryError(f"discovery read returned {len(data)} bytes, fewer than the {hsize}-byte binary header")
    bhdr = d.struct_binary_header.from_buffer_copy(data[:hsize])
    if bhdr.binary_signature != d.BINARY_SIGNATURE:
        hint = (" (all ones: the card is not answering; check it is powered and the BAR mapped)"
                if bhdr.binary_signature == 0xFFFFFFFF else
                " (zero: IFWI has not written the table yet, or the VRAM size/offset is wrong)"
                if bhdr.binary_signature == 0 else "")
        raise DiscoveryError(f"discovery binary_signature at VRAM {offset:#x} is {bhdr.binary_signature:#010x}, "
                             f"expected {d.BINARY_SIGNATURE:#010x}{hint}")
    size = bhdr.binary_size
    if not hsize <= size <= min(len(data), DISCOVERY_TMR_SIZE):
        raise DiscoveryError(f"discovery binary_size {size} is out of range: it must cover the {hsize}-byte header "
                             f"and fit the {min(len(data), DISCOVERY_TMR_SIZE)} bytes read (DISCOVERY_TMR_SIZE)")
    start = d.struct_binary_header.binary_checksum.offset + d.struct_binary_header.binary_checksum.size
    if _checksum(data[start:size]) != bhdr.binary_checksum:
        raise DiscoveryError(f"discovery binary_checksum is {bhdr.binary_checksum:#06x} but the bytes sum to "
                             f"{_checksum(data[start:size]):#06x}: the table is corrupt (or was read through a "
                             f"window that does not reach VRAM)")
    blob = _Blob(bytes(data), size)

    ip_off = _table(blob, bhdr, d.IP_DISCOVERY, "IP discovery", d.struct_ip_discovery_header, "signature",
                    d.DISCOVERY_TABLE_SIGNATURE, lambda h: h.size)
    if ip_off is None:
        raise DiscoveryError("discovery table_list[IP_DISCOVERY].offset is 0: the binary has no IP discovery table")
    gc_off = _table(blob, bhdr, d.GC, "GC info", d.struct_gpu_info_header, "table_id", d.GC_TABLE_ID,
                    lambda h: h.size)
    hv_off = _table(blob, bhdr, d.HARVEST_INFO, "harvest", d.struct_harvest_info_header, "signature",
                    d.HARVEST_TABLE_SIGNATURE, lambda h: ctypes.sizeof(d.struct_harvest_table))
    vcn_off = _table(blob, bhdr, d.VCN_INFO, "VCN info", d.struct_vcn_info_header, "table_id", d.VCN_INFO_TABLE_ID,
                     lambda h: h.size_bytes)

    version, base64, ips, skipped = _parse_ips(blob, ip_off)
    return Discovery(
        vram_size=vram_size, offset=offset, binary_version=(bhdr.version_major, bhdr.version_minor),
        ip_version=version, base_addr_64=base64, ips=tuple(ips),
        gc=None if gc_off is None else _parse_gc(blob, gc_off),
        harvested=frozenset() if hv_off is None else _parse_harvest(blob, hv_off),
        vcn_fuses=() if vcn_off is None else _parse_vcn(blob, vcn_off), skipped=tuple(skipped))


def read_discovery(read: Callable[[int, int], bytes], vram_size: int) -> Discovery:
    """Read and check the discovery table of a card with `vram_size` bytes of VRAM.

    `read(offset, size)` returns `size` bytes of VRAM at `offset` (a BAR0 mapping's read, or an MM_INDEX/MM_DATA
    reader when BAR0 does not reach the top of VRAM). It is called once, for DISCOVERY_TMR_SIZE bytes."""
    offset = discovery_offset(vram_size)
    data = bytes(read(offset, DISCOVERY_TMR_SIZE))
    if len(data) != DISCOVERY_TMR_SIZE:
        raise DiscoveryError(f"reading the discovery table at VRAM {offset:#x} returned {len(data)} bytes, "
                             f"not {DISCOVERY_TMR_SIZE}")
    return parse_discovery(data, vram_size, offset)

