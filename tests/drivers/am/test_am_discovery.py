"""The AM driver's IP discovery reader: round trips through the emulated boards' tables, a table hand-built here from
discovery.h's layout (so reader and builder are not only checked against each other), and a refusal, naming the
field, for every check the reader makes."""
from __future__ import annotations

import struct

import pytest

from autogen import discovery as d
from drivers.am.discovery import (DISCOVERY_TMR_OFFSET, DISCOVERY_TMR_SIZE, Discovery, DiscoveryError,
                                  ifwi_ready, parse_discovery, read_discovery, vram_size_from_memsize)
from emu.am.discovery import BOARDS, board, build_discovery_table, install_discovery_table

VRAM = 1 << 20  # a small stand-in VRAM: the table's position rule is the same for 24 GiB


def _read_from(vram: bytearray, calls: list | None = None):
    def read(off: int, n: int) -> bytes:
        if calls is not None:
            calls.append((off, n))
        return bytes(vram[off:off + n])
    return read


def _load(target: str, **kw) -> Discovery:
    vram = bytearray(VRAM)
    install_discovery_table(vram, VRAM, target, **kw)
    return read_discovery(_read_from(vram), VRAM)


# --- round trips through the emulated boards -----------------------------------------------------------------------

@pytest.mark.parametrize("target", sorted(BOARDS))
def test_round_trip_each_board(target):
    b = board(target)
    calls: list = []
    vram = bytearray(VRAM)
    install_discovery_table(vram, VRAM, target)
    disc = read_discovery(_read_from(vram, calls), VRAM)
    assert calls == [(VRAM - DISCOVERY_TMR_OFFSET, DISCOVERY_TMR_SIZE)]  # one read, where amdgpu reads
    assert disc.gfx_target() == target
    for ip in b.ips:
        assert disc.instances(ip.name) == len(ip.bases)
        for inst, bases in enumerate(ip.bases):
            assert disc.version(ip.name, inst) == ip.version
            assert disc.block(ip.hw_id, inst).bases == bases
            for seg, base in enumerate(bases):
                assert disc.base(ip.name, inst, seg) == base
            assert not disc.is_harvested(ip.name, inst)
    g = b.gc
    assert disc.gc.version == b.gc_version
    assert (disc.gc.num_se, disc.gc.num_sh_per_se, disc.gc.num_cu_per_sh) == (
        g["num_se"], g["num_sa_per_se"], 2 * (g["num_wgp0_per_sa"] + g["num_wgp1_per_sa"]))
    assert disc.gc.wave_size == 32 and disc.gc.lds_size == g["lds_size"]
    assert disc.vcn_fuses == (0,) * len(b.block("VCN").bases)
    assert disc.skipped == ()
    assert disc.as_dict()["ips"][0]["name"] == b.ips[0].name


def test_kernel_block_aliases_resolve():
    disc = _load("gfx1100")
    assert disc.version("NBIO") == disc.version("NBIF") == disc.version(108) == (4, 3, 0)
    assert disc.version("UVD") == disc.version("vcn") == (4, 0, 0)
    assert disc.version("DCE") == (3, 2, 0)


@pytest.mark.parametrize("version,base64", [(1, False), (2, False), (3, False), (4, False), (4, True)])
def test_every_entry_format(version, base64):
    disc = _load("gfx1201", ip_header_version=version, base_addr_64=base64)
    assert (disc.ip_version, disc.base_addr_64) == (version, base64)
    assert disc.version("GC") == (12, 0, 1) and disc.base("MP0", 0, 4) == 0x0243FC00


@pytest.mark.parametrize("gc_version", [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1)])
def test_every_gc_info_version(gc_version):
    disc = _load("gfx1100", gc_version=gc_version)
    assert disc.gc.version == gc_version
    assert disc.gc.max_cus == 96  # RX 7900 XTX: 6 SEs x 2 arrays x 8 CUs
    assert ("gc_num_tcps" in disc.gc.fields) == (gc_version in ((1, 1), (1, 2), (1, 3)))


def test_harvest_from_table_and_from_v1_nibble():
    disc = _load("gfx1100", harvest=[("VCN", 1), ("SDMA0", 1)])
    assert disc.is_harvested("VCN", 1) and disc.is_harvested("SDMA0", 1) and not disc.is_harvested("VCN", 0)
    assert disc.active_instances("SDMA0") == [0] and disc.instances("SDMA0") == 2
    disc = _load("gfx1100", ip_header_version=1, harvest=[("SDMA0", 1)])
    assert disc.block("SDMA0", 1).harvest == 1 and disc.is_harvested("SDMA0", 1)


# --- a table hand-built from discovery.h, not through emu's builder ------------------------------------------------

def _sum16(b: bytes) -> int:
    return sum(b) & 0xFFFF


def _hand_built() -> bytes:
    """A two-die GC 9.4.3 (MI300-shaped) table in discovery.h's layout: binary_header (60 bytes), an
    ip_discovery_header v4 with base_addr_64_bit (80 bytes), die headers with ip_v4 entries and 64-bit bases,
    gc_info v2.1, a harvest table. Packed by hand with struct so the emulator's builder plays no part."""
    def ip_v4(hw_id, inst, ver, bases, subrev=0, variant=0):
        return struct.pack("<HBBBBBB", hw_id, inst, len(bases), *ver, subrev | variant << 4) + \
            struct.pack(f"<{len(bases)}Q", *bases)

    die0 = [ip_v4(11, 0, (9, 4, 3), [0x1_0000_1260, 0xC000_A000]),  # high bits and bits 31:30 the kernel drops
            ip_v4(42, 0, (4, 4, 2), [0x1260, 0xA000], subrev=2, variant=1),
            ip_v4(12, 0, (4, 0, 3 | 0x80), [0x7800]),  # VCN: revision bit 7 = encode disabled
            ip_v4(300, 0, (1, 0, 0), [0x1])]  # hw_id >= HW_ID_MAX: the kernel skips it
    die1 = [ip_v4(11, 1, (9, 4, 3), [0x2_0000_1260, 0x0000_A000])]
    ip_off = 64
    die0_off = ip_off + 80
    die0_blob = struct.pack("<HH", 0, len(die0)) + b"".join(die0)
    die1_off = die0_off + len(die0_blob)
    die1_blob = struct.pack("<HH", 1, len(die1)) + b"".join(die1)
    ip_size = 80 + len(die0_blob) + len(die1_blob)
    die_info = struct.pack("<HH", 0, die0_off) + struct.pack("<HH", 1, die1_off) + bytes(4 * 14)
    ihdr = struct.pack("<IHHIH", d.DISCOVERY_TABLE_SIGNATURE, 4, ip_size, 0, 2) + die_info + bytes([1, 0])
    ip_table = ihdr + die0_blob + die1_blob

    # gc_info_v2_1: header, then num_se, cu_per_sh, sh_per_se, rb_per_se, tccs, gprs, max_gs_thds, gs_table_depth,
    # gsprim_buff_depth, parameter_cache_depth, double_offchip_lds_buffer, wave_size, max_waves_per_simd,
    # max_scratch_slots_per_cu, lds_size, sc_per_se, packer_per_sc, then the seven v2.1 fields.
    gc_vals = [4, 10, 1, 4, 16, 512, 32, 32, 1792, 1024, 1, 64, 8, 32, 64, 4, 4] + [10, 16, 8, 2, 64, 16, 4096]
    gc_table = struct.pack("<IHHI", d.GC_TABLE_ID, 2, 1, 12 + 4 * len(gc_vals)) + struct.pack(f"<{len(gc_vals)}I",
                                                                                              *gc_vals)
    harvest = struct.pack("<II", d.HARVEST_TABLE_SIGNATURE, 1) + struct.pack("<HBB", 11, 1, 0) + bytes(4 * 31)

    gc_off = ip_off + len(ip_table)
    hv_off = gc_off + len(gc_table)
    size = hv_off + len(harvest)
    tables = [(ip_off, ip_table), (gc_off, gc_table), (hv_off, harvest)] + [(0, b"")] * 3
    table_list = b"".join(struct.pack("<HHHH", off, _sum16(blob), len(blob), 0) for off, blob in tables)
    body = bytearray(size)
    body[ip_off:ip_off + len(ip_table)] = ip_table
    body[gc_off:gc_off + len(gc_table)] = gc_table
    body[hv_off:hv_off + len(harvest)] = harvest
    body[12:60] = table_list
    body[0:8] = struct.pack("<IHH", d.BINARY_SIGNATURE, 4, 0)
    body[10:12] = struct.pack("<H", size)
    body[8:10] = struct.pack("<H", _sum16(bytes(body[10:size])))
    return bytes(body)


def test_hand_built_table_from_discovery_h():
    blob = _hand_built()
    vram = bytearray(VRAM)
    at = VRAM - DISCOVERY_TMR_OFFSET
    vram[at:at + len(blob)] = blob
    disc = read_discovery(_read_from(vram), VRAM)
    assert disc.binary_version == (4, 0) and disc.ip_version == 4 and disc.base_addr_64
    assert [(e.name, e.die, e.instance) for e in disc.blocks("GC")] == [("GC", 0, 0), ("GC", 1, 1)]
    assert disc.version("GC", 1) == (9, 4, 3)
    assert disc.base("GC", 0, 0) == 0x1260 and disc.base("GC", 0, 1) == 0xA000  # low 32 bits, bits 31:30 cleared
    assert disc.block("GC", 0).raw_bases == (0x1_0000_1260, 0xC000_A000)
    assert disc.base("GC", 1, 0) == 0x1260
    sdma = disc.block("SDMA0")
    assert (sdma.version, sdma.sub_revision, sdma.variant) == ((4, 4, 2), 2, 1)
    vcn = disc.block("VCN")
    assert vcn.version == (4, 0, 3) and vcn.vcn_config == 0x80
    assert len(disc.skipped) == 1 and "hw_id 300" in disc.skipped[0]
    assert disc.is_harvested("GC", 1) and disc.active_instances("GC") == [0]
    assert disc.gc.version == (2, 1) and disc.gc.num_cu_per_sh == 10 and disc.gc.max_cus == 40
    assert disc.gc.fields["gc_tcc_size"] == 4096 and disc.gc.num_sc_per_sh == 4
    assert disc.vcn_fuses == ()
    assert disc.gfx_target() == "gfx942" and disc.gfx_target(rev_id=0) == "gfx941"


# --- refusals --------------------------------------------------------------------------------------------------------

def _refix(blob: bytearray, tables: bool = True) -> bytes:
    """Recompute every table checksum (unless `tables` is False) and the binary checksum by discovery.h's rules, so
    a test reaches the check behind them."""
    size = struct.unpack_from("<H", blob, 10)[0]
    sizes = {d.IP_DISCOVERY: lambda o: struct.unpack_from("<H", blob, o + 6)[0],
             d.GC: lambda o: struct.unpack_from("<I", blob, o + 8)[0],
             d.HARVEST_INFO: lambda o: 136,
             d.VCN_INFO: lambda o: struct.unpack_from("<I", blob, o + 8)[0]}
    for tid, size_of in sizes.items() if tables else ():
        off = struct.unpack_from("<H", blob, 12 + 8 * tid)[0]
        if off and off + 12 <= size:
            n = min(size_of(off), size - off)
            struct.pack_into("<H", blob, 12 + 8 * tid + 2, _sum16(bytes(blob[off:off + n])))
    struct.pack_into("<H", blob, 8, _sum16(bytes(blob[10:size])))
    return bytes(blob)


def _table_off(blob: bytes, tid: int) -> int:
    return struct.unpack_from("<H", blob, 12 + 8 * tid)[0]


def _corrupt(edit, refix: str, target: str = "gfx1100", **kw) -> bytes:
    """The board's table with `edit` applied, then checksums recomputed: "all", "binary" (the binary checksum only,
    so a table checksum stays wrong) or "none"."""
    blob = bytearray(build_discovery_table(target, **kw))
    edit(blob)
    return bytes(blob) if refix == "none" else _refix(blob, tables=refix == "all")


def _put(fmt: str, where, value):
    """An edit writing `value` at an offset (an int, or a function of the blob for table-relative positions)."""
    def edit(blob: bytearray):
        struct.pack_into(fmt, blob, where(blob) if callable(where) else where, value)
    return edit


def _ip(rel: int):
    return lambda b: _table_off(b, d.IP_DISCOVERY) + rel


def _die0(b) -> int:
    return struct.unpack_from("<H", b, _table_off(b, d.IP_DISCOVERY) + 16)[0]


CASES = {
    "binary signature": (_put("<I", 0, 0x12345678), "none", "binary_signature"),
    "binary signature all ones": (_put("<I", 0, 0xFFFFFFFF), "none", "card is not answering"),
    "binary signature zero": (_put("<I", 0, 0), "none", "IFWI has not written"),
    "binary checksum": (_put("<B", 200, 0x5A), "none", "binary_checksum"),
    "binary_size too large": (_put("<H", 10, DISCOVERY_TMR_SIZE + 4), "none", "binary_size"),
    "binary_size too small": (_put("<H", 10, 20), "none", "binary_size"),
    "no IP discovery table": (_put("<H", 12, 0), "all", r"table_list\[IP_DISCOVERY\].offset is 0"),
    "IP table offset out of range": (_put("<H", 12, 0xFFF0), "all", "outside the binary"),
    "IP table signature": (_put("<I", _ip(0), 0x11111111), "all", "IP discovery table .* signature"),
    "IP table checksum": (_put("<B", _ip(100), 0x77), "binary", "IP discovery table checksum"),
    "IP table size past the binary": (_put("<H", _ip(6), 0x3000), "all", "IP discovery table .*outside the binary"),
    "IP header version": (_put("<H", _ip(4), 7), "all", "IP discovery header version 7"),
    "64-bit bases in a v3 header": (_put("<B", _ip(78), 1), "all", "sets base_addr_64_bit"),
    "no dies": (_put("<H", _ip(12), 0), "all", "num_dies is 0"),
    "too many dies": (_put("<H", _ip(12), 17), "all", "num_dies is 17"),
    "die offset out of range": (_put("<H", _ip(16), 0x2000), "all", "die 0 header"),
    "die id": (_put("<H", _die0, 3), "all", "die_id 3, expected 0"),
    "entries overrun the table": (_put("<H", lambda b: _die0(b) + 2, 200), "all", "IP entry"),
    "bases overrun the table": (_put("<B", lambda b: _die0(b) + 4 + 3, 250), "all", "base addresses"),
    "GC table id": (_put("<I", lambda b: _table_off(b, d.GC), 0x1234), "all", "GC info table .*table_id"),
    "GC table checksum": (_put("<B", lambda b: _table_off(b, d.GC) + 20, 0x33), "binary", "GC info table checksum"),
    "GC info major version": (_put("<H", lambda b: _table_off(b, d.GC) + 4, 3), "all", "GC info table version 3"),
    "GC info size too small": (_put("<I", lambda b: _table_off(b, d.GC) + 8, 40), "all", "smaller than"),
    "GC info zero arrays per SE": (_put("<I", lambda b: _table_off(b, d.GC) + 12 + 16 * 4, 0), "all",
                                   "0 shader arrays"),
    "harvest signature": (_put("<I", lambda b: _table_off(b, d.HARVEST_INFO), 0), "all", "harvest table .*signature"),
    "harvest checksum": (_put("<B", lambda b: _table_off(b, d.HARVEST_INFO) + 12, 9), "binary",
                         "harvest table checksum"),
    "VCN table id": (_put("<I", lambda b: _table_off(b, d.VCN_INFO), 7), "all", "VCN info table .*table_id"),
    "VCN checksum": (_put("<B", lambda b: _table_off(b, d.VCN_INFO) + 16, 9), "binary", "VCN info table checksum"),
    "VCN table version": (_put("<H", lambda b: _table_off(b, d.VCN_INFO) + 4, 2), "all", "VCN info table version 2"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refuses_corrupt_table(case):
    edit, refix, message = CASES[case]
    blob = _corrupt(edit, refix)
    with pytest.raises(DiscoveryError, match=message):
        parse_discovery(blob)


def test_refix_leaves_a_good_table_unchanged():
    """The checksum fixer the corruption cases use recomputes what the builder wrote, so each case differs from the
    good table only in its edit (and the checksums that edit moves)."""
    good = build_discovery_table("gfx1100")
    parse_discovery(_refix(bytearray(good)))  # refixing a good table changes nothing
    assert _refix(bytearray(good)) == good


def test_refuses_short_read_and_small_vram():
    with pytest.raises(DiscoveryError, match="returned 100 bytes"):
        read_discovery(lambda off, n: bytes(100), VRAM)
    with pytest.raises(DiscoveryError, match="too small"):
        read_discovery(lambda off, n: bytes(n), 32 << 10)
    with pytest.raises(DiscoveryError, match="fewer than the 60-byte"):
        parse_discovery(bytes(10))


def test_empty_vram_names_the_likely_cause():
    with pytest.raises(DiscoveryError, match="IFWI has not written"):
        read_discovery(lambda off, n: bytes(n), VRAM)


def test_memsize_and_ifwi_readiness():
    assert vram_size_from_memsize(24 << 10) == 24 << 30
    with pytest.raises(DiscoveryError, match="0xffffffff"):
        vram_size_from_memsize(0xFFFFFFFF)
    with pytest.raises(DiscoveryError, match="reads 0"):
        vram_size_from_memsize(0)
    assert ifwi_ready(0x80000000) and not ifwi_ready(0) and not ifwi_ready(0xFFFFFFFF)


def test_lookup_errors_name_what_the_table_has():
    disc = _load("gfx1102")
    with pytest.raises(DiscoveryError, match="lists no SMUIO block"):
        disc.version("SMUIO")
    with pytest.raises(DiscoveryError, match=r"instances \[0, 1\], not instance 2"):
        disc.base("SDMA0", 2)
    with pytest.raises(DiscoveryError, match="4 base segments"):
        disc.base("GC", 0, 4)
    with pytest.raises(DiscoveryError, match="unknown IP block name 'GFX'"):
        disc.version("GFX")


def test_unknown_gc_version_has_no_gfx_target():
    blob = bytearray(build_discovery_table("gfx1100"))
    gc_entry = next(e for e in parse_discovery(bytes(blob)).ips if e.name == "GC")
    assert gc_entry.version == (11, 0, 0)
    # find the GC entry (hw_id 11, 4 bases) and make it GC 13.0.0
    die = _die0(blob)
    struct.pack_into("<B", blob, die + 4 + 4, 13)
    disc = parse_discovery(_refix(blob))
    with pytest.raises(DiscoveryError, match="GC 13.0.0 has no gfx target"):
        disc.gfx_target()
