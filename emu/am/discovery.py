"""The IP discovery table an emulated AMD card carries at the top of its VRAM, built as the bytes a real board holds.

amdgpu (amdgpu_discovery.c, 6.12) reads DISCOVERY_TMR_SIZE bytes at vram_size - DISCOVERY_TMR_OFFSET once the PSP's
IFWI init is done (MP0_SMN_C2PMSG_33 bit 31), checks the binary signature and a byte-sum checksum over the whole
binary, then each table's signature/id and byte-sum checksum, walks the IP discovery table's dies and IP entries (the
entry format follows the table header's version; version 4 may carry 64-bit base addresses), and reads the GC info,
harvest and VCN info tables. `build_discovery_table` builds exactly that layout (discovery.h through
autogen/discovery.py) so that Linux's reader would accept it, for the boards in BOARDS.

Sources of the board facts (each one cited where it is written down below):
- IP versions: the versions amdgpu_discovery.c's switch tables accept and the firmware names the kernel's IP files
  declare (MODULE_FIRMWARE in gfx_v11_0.c, gfx_v12_0.c, sdma_v6_0.c, sdma_v7_0.c, psp_v13_0.c, psp_v14_0.c); the GC
  version -> gfx target mapping is amdkfd's (kfd_device.c kgd2kfd_probe).
- Register bases: sienna_cichlid_ip_offset.h (6.12 ships no navi3x/navi4x offset header; soc21/soc24 keep these
  segment bases, the same values emu/amd/kfd.py uses for GC).
- GC info: shaped like each board (shader engines, arrays, CUs as emu/amd/kfd.py TARGETS); cache and depth fields are
  plausible values, not read from a real card's table.

This module never imports drivers/: the AM driver's reader (drivers/am/discovery.py) is written separately, so a
misreading on either side shows up as a test failure instead of being mirrored.
"""
from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass, field
from typing import Iterable, Optional

from autogen import discovery as d

# amdgpu_discovery.h: the table sits DISCOVERY_TMR_OFFSET below the top of VRAM and is read DISCOVERY_TMR_SIZE long.
DISCOVERY_TMR_OFFSET = 64 << 10
DISCOVERY_TMR_SIZE = 10 << 10

# amdgpu_discovery.c register numbers (dword offsets into the register BAR), fixed before any IP base is known:
MP0_SMN_C2PMSG_33 = 0x16061  # bit 31 set once IFWI init (which writes the table) has completed
RCC_CONFIG_MEMSIZE = 0xDE3  # VRAM size in MiB; the kernel computes the table's position from it
IP_DISCOVERY_VERSION = 0x16A00  # reads 4 on boards whose table is IP discovery v4 (amdgpu_discovery_init's error path)
IFWI_INIT_DONE = 1 << 31

# soc15_hw_ip.h hardware ids of the blocks the boards below carry (the kernel's hw_id_names spell them this way).
HW_ID = {
    "MP1": 1, "THM": 3, "SMUIO": 4, "CLKA": 6, "GC": 11, "UVD": 12, "VCN": 12, "DMU": 271, "MMHUB": 34, "ATHUB": 35,
    "OSSSYS": 40, "HDP": 41, "SDMA0": 42, "SDMA1": 43, "SDMA2": 68, "SDMA3": 69, "LSDMA": 91, "NBIF": 108,
    "UMC": 150, "DF": 46, "PCIE": 70, "MP0": 255,
}

# sienna_cichlid_ip_offset.h segment bases (dword offsets), INST0 unless the instance is named.
_GC = (0x00001260, 0x0000A000, 0x0001C000, 0x02402C00)
_MP = (0x00016000, 0x00DC0000, 0x00E00000, 0x00E40000, 0x0243FC00)  # MP0_BASE and MP1_BASE are the same
# NBIO has a sixth segment on these parts: nbio_4_3_0_offset.h places RCC_DEV0_EPF2_STRAP2 at BASE_IDX 5; its base is
# beige_goby_ip_offset.h's NBIO_BASE__INST0_SEG5 (sienna_cichlid's header lists only five).
_NBIO = (0x00000000, 0x00000014, 0x00000D20, 0x00010400, 0x0241B000, 0x04040000)
_MMHUB = (0x0001A000, 0x02408800)
_ATHUB = (0x00000C00, 0x02408C00)
_HDP = (0x00000F20, 0x0240A400)
_OSSSYS = (0x000010A0, 0x0240A000)
_THM = (0x00016600, 0x02400C00)
_SMUIO = (0x00016800, 0x00016A00, 0x00440000, 0x02401000)
_DCN = (0x00000012, 0x000000C0, 0x000034C0, 0x00009000, 0x02403C00)
_VCN = ((0x00007800, 0x00007E00, 0x02403000), (0x00007B00, 0x00012000, 0x02445000))


def _umc(n: int) -> tuple[tuple[int, ...], ...]:
    """UMC_BASE__INSTk: seg0 steps by 0x40000 and seg1 by 0x400 per instance (sienna_cichlid_ip_offset.h INST0-6)."""
    return tuple((0x00014000 + 0x40000 * k, 0x02425800 + 0x400 * k) for k in range(n))


@dataclass(frozen=True)
class IPBlock:
    """One hardware IP as the table lists it: a soc15 hw-id name, its version, and one base tuple per instance."""
    name: str
    version: tuple[int, int, int]
    bases: tuple[tuple[int, ...], ...]
    variant: int = 0
    sub_revision: int = 0

    @property
    def hw_id(self) -> int:
        return HW_ID[self.name]


@dataclass(frozen=True)
class Board:
    """A card the emulator can be: its gfx target, IP list, GC info (v1.x field names without the gc_ prefix), the
    table formats it uses, and the VRAM it has."""
    target: str
    product: str
    chip: str
    ips: tuple[IPBlock, ...]
    gc: dict[str, int] = field(hash=False)
    gc_version: tuple[int, int]
    ip_header_version: int
    vram_size: int

    def block(self, name: str) -> IPBlock:
        """The block called `name` (KeyError naming the board and what it has when absent)."""
        for ip in self.ips:
            if ip.name == name:
                return ip
        raise KeyError(f"{self.product} ({self.target}) has no {name} block; it has {[ip.name for ip in self.ips]}")


def _gc_fields(num_se: int, gl2c: int, gprs: int, tcps_per_sa: int) -> dict[str, int]:
    """GC info v1.x values for a gfx11/gfx12 die of `num_se` shader engines, 2 arrays each, 4 WGPs (8 CUs) per array."""
    sa_per_se, wgp_per_sa = 2, 4
    return dict(
        num_se=num_se, num_wgp0_per_sa=wgp_per_sa, num_wgp1_per_sa=0, num_rb_per_se=4, num_gl2c=gl2c, num_gprs=gprs,
        num_max_gs_thds=32, gs_table_depth=32, gsprim_buff_depth=1792, parameter_cache_depth=1024,
        double_offchip_lds_buffer=1, wave_size=32, max_waves_per_simd=16, max_scratch_slots_per_cu=32, lds_size=64,
        num_sc_per_se=sa_per_se, num_sa_per_se=sa_per_se, num_packer_per_sc=4, num_gl2a=4,
        # v1.1
        num_tcp_per_sa=tcps_per_sa, num_sdp_interface=gl2c, num_tcps=tcps_per_sa * sa_per_se * num_se,
        # v1.2
        num_tcp_per_wpg=2, tcp_l1_size=32, num_sqc_per_wgp=1, l1_instruction_cache_size_per_sqc=32,
        l1_data_cache_size_per_sqc=16, gl1c_per_sa=1, gl1c_size_per_instance=256, gl2c_per_gpu=gl2c,
        # v1.3
        tcp_size_per_cu=32, tcp_cache_line_size=128, instruction_cache_size_per_sqc=32,
        instruction_cache_line_size=64, scalar_data_cache_size_per_sqc=16, scalar_data_cache_line_size=64,
        tcc_size=gl2c * 256, tcc_cache_line_size=128,
    )


BOARDS: dict[str, Board] = {
    # RX 7900 XTX, Navi 31: GC 11.0.0 (kfd_device.c: gfx1100), PSP/SMU 13.0.0 (psp_13_0_0_sos.bin), SDMA 6.0.0 x2,
    # MMHUB/ATHUB 3.0.0 (gmc_v11_0.c default mmhub_v3_0), NBIO 4.3.0 (nbio_v4_3.c), HDP/OSSSYS 6.0.0, UMC 8.10.0
    # (umc_v8_10), DCN 3.2.0, VCN 4.0.0 x2.
    "gfx1100": Board(
        target="gfx1100", product="AMD Radeon RX 7900 XTX", chip="Navi 31",
        ips=(
            IPBlock("GC", (11, 0, 0), (_GC,)),
            IPBlock("SDMA0", (6, 0, 0), (_GC, _GC)),
            IPBlock("MMHUB", (3, 0, 0), (_MMHUB,)),
            IPBlock("ATHUB", (3, 0, 0), (_ATHUB,)),
            IPBlock("NBIF", (4, 3, 0), (_NBIO,)),
            IPBlock("MP0", (13, 0, 0), (_MP,)),
            IPBlock("MP1", (13, 0, 0), (_MP,)),
            IPBlock("THM", (13, 0, 0), (_THM,)),
            IPBlock("HDP", (6, 0, 0), (_HDP,)),
            IPBlock("OSSSYS", (6, 0, 0), (_OSSSYS,)),
            IPBlock("UMC", (8, 10, 0), _umc(12)),
            IPBlock("DMU", (3, 2, 0), (_DCN,)),
            IPBlock("VCN", (4, 0, 0), _VCN),
        ),
        gc=_gc_fields(num_se=6, gl2c=16, gprs=1536, tcps_per_sa=8), gc_version=(1, 2), ip_header_version=3,
        vram_size=24 << 30),
    # RX 7600, Navi 33: GC 11.0.2 (gfx1102), PSP/SMU 13.0.7 (psp_13_0_7_sos.bin), SDMA 6.0.2 (sdma_6_0_2.bin) x2,
    # MMHUB/ATHUB 3.0.2 (mmhub_v3_0_2.c), NBIO 4.3.1, HDP 6.0.0, OSSSYS 6.0.0, DCN 3.2.1, VCN 4.0.4.
    "gfx1102": Board(
        target="gfx1102", product="AMD Radeon RX 7600", chip="Navi 33",
        ips=(
            IPBlock("GC", (11, 0, 2), (_GC,)),
            IPBlock("SDMA0", (6, 0, 2), (_GC, _GC)),
            IPBlock("MMHUB", (3, 0, 2), (_MMHUB,)),
            IPBlock("ATHUB", (3, 0, 2), (_ATHUB,)),
            IPBlock("NBIF", (4, 3, 1), (_NBIO,)),
            IPBlock("MP0", (13, 0, 7), (_MP,)),
            IPBlock("MP1", (13, 0, 7), (_MP,)),
            IPBlock("THM", (13, 0, 7), (_THM,)),
            IPBlock("HDP", (6, 0, 0), (_HDP,)),
            IPBlock("OSSSYS", (6, 0, 0), (_OSSSYS,)),
            IPBlock("UMC", (8, 10, 0), _umc(4)),
            IPBlock("DMU", (3, 2, 1), (_DCN,)),
            IPBlock("VCN", (4, 0, 4), _VCN[:1]),
        ),
        gc=_gc_fields(num_se=2, gl2c=8, gprs=1024, tcps_per_sa=8), gc_version=(1, 2), ip_header_version=3,
        vram_size=8 << 30),
    # RX 9070, Navi 48: GC 12.0.1 (gfx1201), PSP/SMU 14.0.3 (psp_14_0_3_sos.bin), SDMA 7.0.1 (sdma_7_0_1.bin) x2,
    # MMHUB/ATHUB 4.1.0 (gmc_v12_0.c, athub_v4_1_0.c), NBIF 6.3.1 (nbif_v6_3_1.c), HDP/OSSSYS 7.0.0, SMUIO 14.0.2
    # (smuio_v14_0_2.c), DCN reported as 4.1.0 (amdgpu_discovery_set_display_ip_blocks maps it to 4.0.1), VCN 5.0.0.
    "gfx1201": Board(
        target="gfx1201", product="AMD Radeon RX 9070", chip="Navi 48",
        ips=(
            IPBlock("GC", (12, 0, 1), (_GC,)),
            IPBlock("SDMA0", (7, 0, 1), (_GC, _GC)),
            IPBlock("MMHUB", (4, 1, 0), (_MMHUB,)),
            IPBlock("ATHUB", (4, 1, 0), (_ATHUB,)),
            IPBlock("NBIF", (6, 3, 1), (_NBIO,)),
            IPBlock("MP0", (14, 0, 3), (_MP,)),
            IPBlock("MP1", (14, 0, 3), (_MP,)),
            IPBlock("THM", (14, 0, 3), (_THM,)),
            IPBlock("SMUIO", (14, 0, 2), (_SMUIO,)),
            IPBlock("HDP", (7, 0, 0), (_HDP,)),
            IPBlock("OSSSYS", (7, 0, 0), (_OSSSYS,)),
            IPBlock("UMC", (8, 14, 0), _umc(8)),
            IPBlock("DMU", (4, 1, 0), (_DCN,)),
            IPBlock("VCN", (5, 0, 0), _VCN[:1]),
        ),
        gc=_gc_fields(num_se=4, gl2c=16, gprs=1536, tcps_per_sa=8), gc_version=(1, 3), ip_header_version=4,
        vram_size=16 << 30),
}


def board(target: str) -> Board:
    """The board for a gfx target; a clear error listing the targets when it is not one of them."""
    try:
        return BOARDS[target]
    except KeyError:
        raise KeyError(f"no emulated AM board for target {target!r}; known targets: {sorted(BOARDS)}") from None


def discovery_offset(vram_size: int) -> int:
    """Where the table starts in VRAM: vram_size - DISCOVERY_TMR_OFFSET (amdgpu_discovery_read_binary_from_mem)."""
    if vram_size < DISCOVERY_TMR_OFFSET:
        raise ValueError(f"VRAM of {vram_size:#x} bytes is smaller than DISCOVERY_TMR_OFFSET "
                         f"({DISCOVERY_TMR_OFFSET:#x})")
    return vram_size - DISCOVERY_TMR_OFFSET


def byte_sum(data: bytes) -> int:
    """amdgpu_discovery_calculate_checksum: the 16-bit wrapping sum of the bytes."""
    return sum(data) & 0xFFFF


def _align(n: int, a: int = 4) -> int:
    return -(-n // a) * a


def _ip_entries(b: Board, version: int, base_addr_64: bool, harvest: frozenset[tuple[str, int]]) -> bytes:
    """The IP entries of die 0: struct ip (versions 1-2, harvest nibble) or ip_v3/ip_v4 (3-4, sub_revision and
    variant nibbles), each followed by its base addresses, 8 bytes each when the header sets base_addr_64_bit."""
    out = bytearray()
    for ip in b.ips:
        for inst, bases in enumerate(ip.bases):
            major, minor, rev = ip.version
            if version < 3:
                hdr = d.struct_ip(hw_id=ip.hw_id, number_instance=inst, num_base_address=len(bases), major=major,
                                  minor=minor, revision=rev, harvest=1 if (ip.name, inst) in harvest else 0)
            else:
                # ip_v4 lays out like ip_v3 on a little-endian CPU (discovery.h LITTLEENDIAN_CPU branch); the
                # generated struct_ip_v4 lacks that byte, so the v3 struct stands in for both.
                hdr = d.struct_ip_v3(hw_id=ip.hw_id, instance_number=inst, num_base_address=len(bases), major=major,
                                     minor=minor, revision=rev, sub_revision=ip.sub_revision, variant=ip.variant)
            out += bytes(hdr)
            out += struct.pack(f"<{len(bases)}{'Q' if base_addr_64 else 'I'}", *bases)
    return bytes(out)


def _gc_table(b: Board, version: tuple[int, int]) -> bytes:
    """gc_info_vX_Y for the board. v2.x (the gfx9 layout) expresses the same die as CUs per shader array."""
    cls = getattr(d, f"struct_gc_info_v{version[0]}_{version[1]}", None)
    if cls is None:
        raise ValueError(f"discovery.h has no gc_info v{version[0]}.{version[1]}")
    g = b.gc
    if version[0] == 2:
        values = dict(g, num_cu_per_sh=2 * (g["num_wgp0_per_sa"] + g["num_wgp1_per_sa"]),
                      num_sh_per_se=g["num_sa_per_se"], num_tccs=g["num_gl2c"], num_tcp_per_sh=g["num_tcp_per_sa"],
                      num_cu_per_sqc=2)
    else:
        values = g
    tbl = cls()
    for name, _ in cls._fields_[1:]:
        setattr(tbl, name, values[name.removeprefix("gc_")])
    tbl.header.table_id = d.GC_TABLE_ID
    tbl.header.version_major, tbl.header.version_minor = version
    tbl.header.size = ctypes.sizeof(cls)
    return bytes(tbl)


def _harvest_table(harvest: Iterable[tuple[str, int]]) -> bytes:
    """harvest_table: a header and up to 32 {hw_id, instance} entries; a zero hw_id ends the list."""
    tbl = d.struct_harvest_table()
    tbl.header.signature = d.HARVEST_TABLE_SIGNATURE
    tbl.header.version = 1
    entries = sorted(harvest)
    if len(entries) > len(tbl.list):
        raise ValueError(f"{len(entries)} harvested instances; the harvest table holds {len(tbl.list)}")
    for i, (name, inst) in enumerate(entries):
        tbl.list[i].hw_id, tbl.list[i].number_instance = HW_ID[name], inst
    return bytes(tbl)


def _vcn_table(num: int) -> bytes:
    """vcn_info_v1_0 for `num` VCN instances, no codecs fused off."""
    tbl = d.struct_vcn_info_v1_0()
    tbl.header.table_id = d.VCN_INFO_TABLE_ID
    tbl.header.version_major, tbl.header.version_minor = 1, 0
    tbl.header.size_bytes = ctypes.sizeof(tbl)
    tbl.num_of_instances = num
    for i in range(num):
        tbl.instance_info[i].instance_num = i
    return bytes(tbl)


def build_discovery_table(target: str, *, ip_header_version: Optional[int] = None, base_addr_64: bool = False,
                          harvest: Iterable[tuple[str, int]] = (),
                          gc_version: Optional[tuple[int, int]] = None) -> bytes:
    """The discovery binary `target`'s board carries (see the module docstring for the layout and its checks).

    ip_header_version (1-4) and base_addr_64 (version 4 only) pick the IP entry format; harvest lists (block name,
    instance) pairs written to the harvest table (and, for versions 1-2, to the entry's harvest nibble); gc_version
    picks the GC info layout. Defaults are the board's own."""
    b = board(target)
    version = b.ip_header_version if ip_header_version is None else ip_header_version
    if version not in (1, 2, 3, 4):
        raise ValueError(f"IP discovery header version {version} is not one discovery.h describes (1-4)")
    if base_addr_64 and version != 4:
        raise ValueError("64-bit base addresses exist only in IP discovery version 4 (ip_discovery_header)")
    harvest = frozenset(harvest)
    for name, inst in harvest:
        if inst >= len(b.block(name).bases):
            raise ValueError(f"{b.product} has no {name} instance {inst} to harvest")

    bhdr_size = ctypes.sizeof(d.struct_binary_header)
    ihdr_size = ctypes.sizeof(d.struct_ip_discovery_header)
    ip_off = _align(bhdr_size, 16)
    die_off = ip_off + ihdr_size
    entries = _ip_entries(b, version, base_addr_64, harvest)
    die = bytes(d.struct_die_header(die_id=0, num_ips=sum(len(ip.bases) for ip in b.ips))) + entries

    ihdr = d.struct_ip_discovery_header(signature=d.DISCOVERY_TABLE_SIGNATURE, version=version,
                                        size=ihdr_size + len(die), id=0, num_dies=1)
    ihdr.die_info[0].die_id, ihdr.die_info[0].die_offset = 0, die_off
    ihdr.base_addr_64_bit = 1 if base_addr_64 else 0
    ip_table = bytes(ihdr) + die

    tables = {d.IP_DISCOVERY: (ip_off, ip_table)}
    at = _align(ip_off + len(ip_table))
    for tid, blob in ((d.GC, _gc_table(b, gc_version or b.gc_version)), (d.HARVEST_INFO, _harvest_table(harvest)),
                      (d.VCN_INFO, _vcn_table(len(b.block("VCN").bases)))):
        tables[tid] = (at, blob)
        at = _align(at + len(blob))
    size = at
    if size > DISCOVERY_TMR_SIZE:
        raise ValueError(f"discovery binary of {size} bytes exceeds DISCOVERY_TMR_SIZE ({DISCOVERY_TMR_SIZE})")

    bhdr = d.struct_binary_header(binary_signature=d.BINARY_SIGNATURE, version_major=2 if version < 4 else 4,
                                  version_minor=0, binary_size=size)
    for tid, (off, blob) in tables.items():
        info = bhdr.table_list[tid]
        info.offset, info.size, info.checksum = off, len(blob), byte_sum(blob)
    out = bytearray(size)
    for off, blob in tables.values():
        out[off:off + len(blob)] = blob
    out[:bhdr_size] = bytes(bhdr)
    # amdgpu_discovery_init: the binary checksum covers every byte after the binary_checksum field, up to binary_size.
    start = d.struct_binary_header.binary_checksum.offset + d.struct_binary_header.binary_checksum.size
    bhdr.binary_checksum = byte_sum(bytes(out[start:size]))
    out[:bhdr_size] = bytes(bhdr)
    return bytes(out)


def install_discovery_table(vram: memoryview | bytearray, vram_size: int, target: str, **kw) -> int:
    """Write `target`'s table where amdgpu looks for it in `vram` (a writable view of all of VRAM); returns its
    offset."""
    off = discovery_offset(vram_size)
    blob = build_discovery_table(target, **kw)
    vram[off:off + len(blob)] = blob
    return off


def memsize_register(vram_size: int) -> int:
    """RCC_CONFIG_MEMSIZE's value for a board: VRAM in MiB (the kernel shifts it left by 20)."""
    return vram_size >> 20
