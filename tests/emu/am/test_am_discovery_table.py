"""The emulated card's IP discovery table, checked the way amdgpu_discovery.c (6.12) checks and walks it, with this
test's own walk over discovery.h's layout (never the AM driver's reader)."""
from __future__ import annotations

import ctypes
import struct

import pytest

from autogen import discovery as d
from emu.am.discovery import (BOARDS, DISCOVERY_TMR_OFFSET, DISCOVERY_TMR_SIZE, HW_ID, board, build_discovery_table,
                              discovery_offset, install_discovery_table, memsize_register)

TARGETS = sorted(BOARDS)


def _sum16(b: bytes) -> int:
    return sum(b) & 0xFFFF


def _kernel_checks(blob: bytes) -> d.struct_binary_header:
    """amdgpu_discovery_init's checks: binary signature and checksum, then each present table's id and checksum."""
    bh = d.struct_binary_header.from_buffer_copy(blob)
    assert bh.binary_signature == d.BINARY_SIGNATURE
    assert bh.binary_size == len(blob) <= DISCOVERY_TMR_SIZE
    assert _sum16(blob[10:bh.binary_size]) == bh.binary_checksum  # bytes after the binary_checksum field
    ip = bh.table_list[d.IP_DISCOVERY]
    ih = d.struct_ip_discovery_header.from_buffer_copy(blob, ip.offset)
    assert ih.signature == d.DISCOVERY_TABLE_SIGNATURE
    assert _sum16(blob[ip.offset:ip.offset + ih.size]) == ip.checksum
    gc = bh.table_list[d.GC]
    gh = d.struct_gpu_info_header.from_buffer_copy(blob, gc.offset)
    assert gh.table_id == d.GC_TABLE_ID
    assert _sum16(blob[gc.offset:gc.offset + gh.size]) == gc.checksum
    hv = bh.table_list[d.HARVEST_INFO]
    assert d.struct_harvest_info_header.from_buffer_copy(blob, hv.offset).signature == d.HARVEST_TABLE_SIGNATURE
    assert _sum16(blob[hv.offset:hv.offset + ctypes.sizeof(d.struct_harvest_table)]) == hv.checksum
    vc = bh.table_list[d.VCN_INFO]
    vh = d.struct_vcn_info_header.from_buffer_copy(blob, vc.offset)
    assert vh.table_id == d.VCN_INFO_TABLE_ID
    assert _sum16(blob[vc.offset:vc.offset + vh.size_bytes]) == vc.checksum
    return bh


def _walk(blob: bytes) -> list[tuple[int, int, tuple[int, int, int], tuple[int, ...], int]]:
    """amdgpu_discovery_reg_base_init's walk: (hw_id, instance, version, bases, low nibble) per entry."""
    bh = d.struct_binary_header.from_buffer_copy(blob)
    off = bh.table_list[d.IP_DISCOVERY].offset
    ih = d.struct_ip_discovery_header.from_buffer_copy(blob, off)
    out = []
    for i in range(ih.num_dies):
        die = ih.die_info[i].die_offset
        dh = d.struct_die_header.from_buffer_copy(blob, die)
        assert dh.die_id == i
        at = die + 4
        for _ in range(dh.num_ips):
            hw, inst, n, ma, mi, rev, nib = struct.unpack_from("<HBBBBBB", blob, at)
            fmt = "Q" if ih.base_addr_64_bit else "I"
            bases = struct.unpack_from(f"<{n}{fmt}", blob, at + 8)
            out.append((hw, inst, (ma, mi, rev), bases, nib & 0xF))
            at += 8 + n * struct.calcsize(fmt)
        assert at <= off + ih.size  # every entry lies inside the checksummed IP table
    return out


@pytest.mark.parametrize("target", TARGETS)
def test_table_passes_the_kernels_checks(target):
    _kernel_checks(build_discovery_table(target))


@pytest.mark.parametrize("target", TARGETS)
def test_walk_lists_every_block_instance_and_base(target):
    b = board(target)
    got = {(hw, inst): (ver, bases) for hw, inst, ver, bases, _ in _walk(build_discovery_table(target))}
    want = {(ip.hw_id, inst): (ip.version, bases) for ip in b.ips for inst, bases in enumerate(ip.bases)}
    assert got == want
    assert got[(HW_ID["GC"], 0)][0][0] == int(target[3:5])  # gfx11xx boards carry GC 11, gfx12xx GC 12


@pytest.mark.parametrize("version,base64", [(1, False), (2, False), (3, False), (4, False), (4, True)])
def test_entry_formats_follow_the_header_version(version, base64):
    blob = build_discovery_table("gfx1100", ip_header_version=version, base_addr_64=base64, harvest=[("SDMA0", 1)])
    _kernel_checks(blob)
    ih = d.struct_ip_discovery_header.from_buffer_copy(blob, d.struct_binary_header.from_buffer_copy(blob)
                                                      .table_list[d.IP_DISCOVERY].offset)
    assert (ih.version, ih.base_addr_64_bit) == (version, int(base64))
    entries = _walk(blob)
    sdma1 = [e for e in entries if e[0] == HW_ID["SDMA0"] and e[1] == 1][0]
    assert sdma1[4] == (1 if version < 3 else 0)  # the v1/v2 harvest nibble; v3+ uses the harvest table only
    assert sdma1[3] == board("gfx1100").block("SDMA0").bases[1]


def test_harvest_table_lists_harvested_instances():
    blob = build_discovery_table("gfx1100", harvest=[("VCN", 1), ("SDMA0", 1)])
    off = d.struct_binary_header.from_buffer_copy(blob).table_list[d.HARVEST_INFO].offset
    tbl = d.struct_harvest_table.from_buffer_copy(blob, off)
    listed = {(e.hw_id, e.number_instance) for e in tbl.list if e.hw_id}
    assert listed == {(HW_ID["VCN"], 1), (HW_ID["SDMA0"], 1)}
    assert tbl.list[2].hw_id == 0  # the list ends at the first zero hw_id


@pytest.mark.parametrize("gc_version", [(1, 0), (1, 1), (1, 2), (1, 3), (2, 0), (2, 1)])
def test_gc_info_layouts(gc_version):
    blob = build_discovery_table("gfx1201", gc_version=gc_version)
    _kernel_checks(blob)
    off = d.struct_binary_header.from_buffer_copy(blob).table_list[d.GC].offset
    cls = getattr(d, f"struct_gc_info_v{gc_version[0]}_{gc_version[1]}")
    g = cls.from_buffer_copy(blob, off)
    assert (g.header.version_major, g.header.version_minor, g.header.size) == (*gc_version, ctypes.sizeof(cls))
    assert g.gc_num_se == 4 and g.gc_wave_size == 32
    cus = 2 * (g.gc_num_wgp0_per_sa + g.gc_num_wgp1_per_sa) if gc_version[0] == 1 else g.gc_num_cu_per_sh
    assert cus == 8  # RX 9070 XT layout: 4 SEs x 2 arrays x 8 CUs


@pytest.mark.parametrize("target", TARGETS)
def test_installed_at_the_top_of_vram_minus_the_tmr_offset(target):
    vram_size = 1 << 20  # small stand-in VRAM; the position rule is the same for 24 GiB
    vram = bytearray(vram_size)
    off = install_discovery_table(vram, vram_size, target)
    assert off == discovery_offset(vram_size) == vram_size - DISCOVERY_TMR_OFFSET
    blob = build_discovery_table(target)
    assert bytes(vram[off:off + len(blob)]) == blob
    assert memsize_register(board(target).vram_size) << 20 == board(target).vram_size


def test_builder_refuses_what_discovery_h_cannot_express():
    with pytest.raises(ValueError, match="version 5"):
        build_discovery_table("gfx1100", ip_header_version=5)
    with pytest.raises(ValueError, match="only in IP discovery version 4"):
        build_discovery_table("gfx1100", ip_header_version=3, base_addr_64=True)
    with pytest.raises(ValueError, match="no SDMA0 instance 2"):
        build_discovery_table("gfx1100", harvest=[("SDMA0", 2)])
    with pytest.raises(ValueError, match="gc_info v3.0"):
        build_discovery_table("gfx1100", gc_version=(3, 0))
    with pytest.raises(KeyError, match="known targets"):
        build_discovery_table("gfx9999")
    with pytest.raises(ValueError, match="smaller than DISCOVERY_TMR_OFFSET"):
        discovery_offset(4096)
