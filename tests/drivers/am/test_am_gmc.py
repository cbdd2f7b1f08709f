"""The AM GMC driver (drivers/am/gmc.py): hub programming against a fake register file, the page tables checked by an
independent walk written here from the bit layout (amdgpu_vm.h, gmc_v11_0.c / gmc_v12_0.c PTE/PDE formats), map/unmap
churn, errors, and — when emu/am/gmc.py is in the tree — the same tables walked by the emulated hubs."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from drivers.am.discovery import parse_discovery
from drivers.am.gmc import (GMC, MTYPE_UC, PTE_EXECUTABLE, PTE_READABLE, PTE_SNOOPED, PTE_SYSTEM, PTE_WRITEABLE,
                            GMCError)
from drivers.am.regs import RegisterFile
from drivers.pci.interface import BarMapping, DMABuffer
from emu.am.discovery import build_discovery_table

MB, GB = 1 << 20, 1 << 30
FB_BASE = 0x8000 << 24  # MMMC_VM_FB_LOCATION_BASE as a Navi3x VBIOS posts it (in 16 MiB units)
VA0 = 1 << 40  # churn window, far from the system aperture

# --- the bit layout, written here independently of drivers/am/gmc.py (amdgpu_vm.h, gmc_v1{1,2}_0.c comments) ---
VALID, SYSTEM, SNOOPED, EXE, READ, WRITE = 1, 2, 4, 16, 32, 64
ADDR = ((1 << 48) - 1) & ~0xFFF  # 47:12
GEN = {"gfx1100": dict(P=1 << 54, mtype_shift=48, mtype_bits=3, reserved=(0x1F << 59) | (3 << 57) | (1 << 54)),
       "gfx1201": dict(P=1 << 63, mtype_shift=54, mtype_bits=2, reserved=(0xF << 59) | (0xF << 48))}
SHIFTS = (39, 30, 21, 12)  # VA bits each level indexes from: PDB2, PDB1, PDB0, PTB


def hw_walk(vram: bytearray, base_reg: int, va: int, target: str):
    """Walk a 4-level VM from the PAGE_TABLE_BASE_ADDR value: (phys, entry, level, page_bytes) or None."""
    g = GEN[target]
    assert base_reg & VALID, "the page-table base must be a valid PDE (amdgpu_gmc_pd_addr)"
    table = base_reg & ADDR
    for level, shift in enumerate(SHIFTS):
        idx = (va >> shift) & 511
        e = int.from_bytes(vram[table + idx * 8:table + idx * 8 + 8], "little")
        if not e & VALID:
            return None
        leaf = level == 3 or bool(e & g["P"])
        if not leaf:
            assert e == (e & ADDR) | VALID, f"directory entry {e:#x} at level {level} carries more than address|VALID"
            table = e & ADDR
            continue
        page = 1 << shift
        assert e & ADDR & (page - 1) == 0, f"huge entry {e:#x} is not aligned to its {page:#x}-byte page"
        if level == 3:
            assert not e & g["reserved"], f"PTE {e:#x} sets reserved bits"
        return (e & ADDR) + (va & (page - 1)), e, level, page
    return None


def frag_of(e: int) -> int:
    return (e >> 7) & 0x1F


def mtype_of(e: int, target: str) -> int:
    g = GEN[target]
    return (e >> g["mtype_shift"]) & ((1 << g["mtype_bits"]) - 1)


def leaves(vram: bytearray, base_reg: int, target: str):
    """Every valid leaf entry reachable from the root: (va, entry, level, page_bytes)."""
    g = GEN[target]

    def rec(table: int, level: int, va: int):
        for idx in range(512):
            e = int.from_bytes(vram[table + idx * 8:table + idx * 8 + 8], "little")
            if not e & VALID:
                continue
            eva = va | (idx << SHIFTS[level])
            if level == 3 or e & g["P"]:
                yield eva, e, level, 1 << SHIFTS[level]
            else:
                yield from rec(e & ADDR, level + 1, eva)
    yield from rec(base_reg & ADDR, 0, 0)


# --- a fake device: registers in a dict, VRAM in a bytearray behind a BAR0-like mapping ---
class FakeBar(BarMapping):
    def __init__(self, size: int):
        self.index, self.size = 0, size
        self.mem = bytearray(size)

    def read32(self, offset):
        return int.from_bytes(self.mem[offset:offset + 4], "little")

    def write32(self, offset, value):
        self.mem[offset:offset + 4] = value.to_bytes(4, "little")

    def read(self, offset, size):
        return bytes(self.mem[offset:offset + size])

    def write(self, offset, data):
        assert offset + len(data) <= self.size
        self.mem[offset:offset + len(data)] = data


class FakeMMIO(BarMapping):
    """Registers by byte offset; invalidation engines answer (SEM reads 1, REQ sets ACK) unless `hang`."""

    def __init__(self):
        self.index, self.size = 5, 1 << 24
        self.values: dict[int, int] = {}
        self.log: list[tuple[str, int, int]] = []
        self.req: set[int] = set()
        self.ack: dict[int, int] = {}  # REQ address -> ACK address
        self.sem: set[int] = set()
        self.hang = False

    def read32(self, offset):
        v = 1 if offset in self.sem else self.values.get(offset, 0)
        self.log.append(("r", offset, v))
        return v

    def write32(self, offset, value):
        self.log.append(("w", offset, value))
        self.values[offset] = value
        if offset in self.ack and not self.hang:
            self.values[self.ack[offset]] = value & 0xFFFF  # PER_VMID_INVALIDATE_REQ -> ACK

    def read(self, offset, size):
        raise AssertionError("no block reads of registers")

    def write(self, offset, data):
        raise AssertionError("no block writes of registers")


class FakePCI:
    def __init__(self):
        self.freed = []

    def dma_alloc(self, size):
        return DMABuffer(host_addr=0, size=size, bus_pages=[0x1234_5000], page_size=4096)

    def dma_free(self, buf):
        self.freed.append(buf)


def fake_dev(target: str, vram_size: int = 24 * GB, bar0: int = 64 * MB):
    disc = parse_discovery(build_discovery_table(target))
    mmio = FakeMMIO()
    regs = RegisterFile(mmio, disc, bdf="fake")
    for hub, block in (("MM", "MMHUB"), ("GC", "GC")):
        mmio.ack[regs.reg(block, f"{hub}VM_INVALIDATE_ENG17_REQ").address] = \
            regs.reg(block, f"{hub}VM_INVALIDATE_ENG17_ACK").address
    mmio.sem.add(regs.reg("MMHUB", "MMVM_INVALIDATE_ENG17_SEM").address)
    mmio.values[regs.reg("MMHUB", "MMMC_VM_FB_LOCATION_BASE").address] = FB_BASE >> 24
    return SimpleNamespace(bdf="fake", target=target, regs=regs, mmio=mmio, vram=FakeBar(bar0), vram_size=vram_size,
                           discovery=disc, pci=FakePCI())


def base_of(dev, hub: str = "GC", vmid: int = 0) -> int:
    block = "MMHUB" if hub == "MM" else "GC"
    r = lambda n: dev.mmio.values.get(dev.regs.reg(block, f"{hub}VM_CONTEXT{vmid}_PAGE_TABLE_BASE_ADDR_{n}").address, 0)
    return r("HI32") << 32 | r("LO32")


@pytest.fixture(params=["gfx1100", "gfx1201"])
def gmc(request):
    dev = fake_dev(request.param)
    g = GMC()
    g.init(dev)
    g.gfxhub_enable()
    return g


def reg_value(dev, block: str, name: str) -> int:
    return dev.mmio.values.get(dev.regs.reg(block, name).address, 0)


# --- hub programming ---
@pytest.mark.parametrize("target", ["gfx1100", "gfx1201"])
def test_init_programs_hubs_like_amdgpu(target):
    dev = fake_dev(target)
    g = GMC()
    g.init(dev)
    assert g.fb_start == FB_BASE and g.fb_end == FB_BASE + dev.vram_size - 1
    mm = lambda n: reg_value(dev, "MMHUB", "MM" + n)  # noqa: E731
    field = lambda block, name, value, f: dev.regs.reg(block, name).get(value, f)  # noqa: E731
    assert mm("MC_VM_SYSTEM_APERTURE_LOW_ADDR") == FB_BASE >> 18
    assert mm("MC_VM_SYSTEM_APERTURE_HIGH_ADDR") == (FB_BASE + dev.vram_size - 1) >> 18
    assert mm("MC_VM_AGP_BOT") == 0xFFFFFF and mm("MC_VM_AGP_TOP") == 0  # amdgpu_gmc_set_agp_default: AGP off
    assert mm("VM_L2_PROTECTION_FAULT_DEFAULT_ADDR_LO32") == 0x1234_5000 >> 12  # the dummy system page
    assert mm("MC_VM_SYSTEM_APERTURE_DEFAULT_ADDR_LSB") == g.scratch >> 12
    tlb = mm("MC_VM_MX_L1_TLB_CNTL")
    for f, want in (("ENABLE_L1_TLB", 1), ("SYSTEM_ACCESS_MODE", 3), ("ENABLE_ADVANCED_DRIVER_MODEL", 1),
                    ("MTYPE", 3)):
        assert field("MMHUB", "MMMC_VM_MX_L1_TLB_CNTL", tlb, f) == want, f
    l2 = mm("VM_L2_CNTL")
    assert field("MMHUB", "MMVM_L2_CNTL", l2, "ENABLE_L2_CACHE") == 1
    assert field("MMHUB", "MMVM_L2_CNTL", l2, "ENABLE_L2_FRAGMENT_PROCESSING") == 0
    assert field("MMHUB", "MMVM_L2_CNTL3", mm("VM_L2_CNTL3"), "BANK_SELECT") == 9
    assert field("MMHUB", "MMVM_L2_CNTL3", mm("VM_L2_CNTL3"), "L2_CACHE_BIGK_FRAGMENT_SIZE") == 6
    for vmid in range(16):
        cntl = mm(f"VM_CONTEXT{vmid}_CNTL")
        name = f"MMVM_CONTEXT{vmid}_CNTL"
        assert field("MMHUB", name, cntl, "ENABLE_CONTEXT") == 1
        assert field("MMHUB", name, cntl, "PAGE_TABLE_DEPTH") == 3
        assert field("MMHUB", name, cntl, "PAGE_TABLE_BLOCK_SIZE") == 0
        assert field("MMHUB", name, cntl, "RETRY_PERMISSION_OR_INVALID_PAGE_FAULT") == 0
        assert field("MMHUB", name, cntl, "VALID_PROTECTION_FAULT_ENABLE_INTERRUPT") == 1
        assert base_of(dev, "MM", vmid) == g.root.offset | 1
        assert mm(f"VM_CONTEXT{vmid}_PAGE_TABLE_END_ADDR_LO32") == 0xFFFFFFFF
        assert mm(f"VM_CONTEXT{vmid}_PAGE_TABLE_END_ADDR_HI32") == 0xF  # max_pfn - 1 = 2^36 - 1
    for eng in range(18):
        assert mm(f"VM_INVALIDATE_ENG{eng}_ADDR_RANGE_LO32") == 0xFFFFFFFF
        assert mm(f"VM_INVALIDATE_ENG{eng}_ADDR_RANGE_HI32") == 0x1F
    # GC untouched until the GFX block enables its hub; then the same programming plus CP_DEBUG
    assert base_of(dev, "GC") == 0 and not g.hub_enabled["GC"]
    g.gfxhub_enable()
    assert base_of(dev, "GC") == g.root.offset | 1
    assert dev.regs.reg("GC", "CP_DEBUG").get(reg_value(dev, "GC", "CP_DEBUG"), "CPG_UTCL1_ERROR_HALT_DISABLE") == 1


def test_flush_handshake_order(gmc):
    dev = gmc.dev
    dev.mmio.log.clear()
    gmc.flush_tlb()
    a = lambda block, name: dev.regs.reg(block, name).address  # noqa: E731
    ops = [(op, off) for op, off, _ in dev.mmio.log]
    # GC: REQ then ACK polled; MM: SEM acquired, REQ, ACK, SEM released, then the private invalidation
    gc_req = ops.index(("w", a("GC", "GCVM_INVALIDATE_ENG17_REQ")))
    mm_sem = ops.index(("r", a("MMHUB", "MMVM_INVALIDATE_ENG17_SEM")))
    assert ops[gc_req + 1] == ("r", a("GC", "GCVM_INVALIDATE_ENG17_ACK"))
    assert ops[mm_sem + 1] == ("w", a("MMHUB", "MMVM_INVALIDATE_ENG17_REQ"))
    assert ops[mm_sem + 2] == ("r", a("MMHUB", "MMVM_INVALIDATE_ENG17_ACK"))
    assert ops[mm_sem + 3] == ("w", a("MMHUB", "MMVM_INVALIDATE_ENG17_SEM"))
    cid2 = a("MMHUB", "MMVM_L2_BANK_SELECT_RESERVED_CID2")
    assert ops[mm_sem + 4:mm_sem + 7] == [("r", cid2), ("w", cid2), ("r", cid2)]
    assert dev.mmio.values[cid2] & (1 << 25)
    req = dev.mmio.values[a("GC", "GCVM_INVALIDATE_ENG17_REQ")]
    r = dev.regs.reg("GC", "GCVM_INVALIDATE_ENG17_REQ")
    assert r.get(req, "PER_VMID_INVALIDATE_REQ") == 1 and r.get(req, "INVALIDATE_L1_PTES") == 1
    assert all(r.get(req, f) == 1 for f in ("INVALIDATE_L2_PTES", "INVALIDATE_L2_PDE0", "INVALIDATE_L2_PDE1",
                                            "INVALIDATE_L2_PDE2"))


def test_flush_timeout_is_bounded_and_named(gmc):
    gmc.dev.mmio.hang = True
    gmc.dev.mmio.values[gmc.dev.regs.reg("GC", "GCVM_INVALIDATE_ENG17_ACK").address] = 0
    gmc.tlb_timeout = 0.02
    with pytest.raises(GMCError, match="VMID 0.*GCVM_INVALIDATE_ENG17_ACK.*20 ms"):
        gmc.flush_tlb()


def test_fini_disables_contexts(gmc):
    gmc.fini()
    for vmid in range(16):
        assert reg_value(gmc.dev, "MMHUB", f"MMVM_CONTEXT{vmid}_CNTL") == 0
        assert reg_value(gmc.dev, "GC", f"GCVM_CONTEXT{vmid}_CNTL") == 0
    assert gmc.dev.pci.freed


# --- entries ---
def test_entry_layouts(gmc):
    t = gmc.dev.target
    g = GEN[t]
    base = base_of(gmc.dev)
    mem = gmc.dev.vram.mem
    # 4 KiB VRAM page, uncached
    gmc.map(VA0, 0x5000, 4096, PTE_READABLE | PTE_WRITEABLE, mtype=MTYPE_UC)
    phys, e, level, page = hw_walk(mem, base, VA0 + 0x123, t)
    assert (phys, level, page, frag_of(e)) == (0x5123, 3, 4096, 0)
    assert e & 0x7F == VALID | READ | WRITE and mtype_of(e, t) == 3 and not e & g["P"]
    # 64 KiB aligned on both sides: one fragment of 16 pages, each PTE its own address
    gmc.map(VA0 + 0x10000, 0x40000, 0x10000, PTE_READABLE)
    for k in range(16):
        phys, e, level, _ = hw_walk(mem, base, VA0 + 0x10000 + k * 4096, t)
        assert phys == 0x40000 + k * 4096 and frag_of(e) == 4 and level == 3
    # 2 MiB aligned: a PDE0-as-PTE huge page with the generation's P bit
    gmc.map(VA0 + 2 * MB, 4 * MB, 4 * MB, PTE_READABLE | PTE_EXECUTABLE)
    phys, e, level, page = hw_walk(mem, base, VA0 + 3 * MB + 5, t)
    assert (phys, level, page) == (5 * MB + 5, 2, 2 * MB) and e & g["P"] and frag_of(e) == 9
    # system memory, snooped, scattered rule: fragments=False keeps 4 KiB entries
    bus = 0xABC_0000_0000
    gmc.map(VA0 + 64 * MB, bus, 0x10000, PTE_SYSTEM | PTE_SNOOPED | PTE_READABLE, fragments=False)
    phys, e, level, _ = hw_walk(mem, base, VA0 + 64 * MB + 0x3008, t)
    assert phys == bus + 0x3008 and e & SYSTEM and e & SNOOPED and frag_of(e) == 0 and level == 3
    # gmc.walk agrees
    w = gmc.walk(VA0 + 3 * MB + 5)
    assert w["phys"] == 5 * MB + 5 and w["level"] == "PDB0" and w["page_size"] == 2 * MB


def test_one_gib_page(gmc):
    t = gmc.dev.target
    gmc.map(2 * GB * 512, 2 * GB, 2 * GB)
    for off in (0, 12345 * 4096, GB + 7, 2 * GB - 1):
        phys, e, level, page = hw_walk(gmc.dev.vram.mem, base_of(gmc.dev), 2 * GB * 512 + off, t)
        assert phys == 2 * GB + off and level == 1 and page == GB
    gmc.unmap(2 * GB * 512 + GB, GB)  # half of it: the other 1 GiB entry stays
    assert hw_walk(gmc.dev.vram.mem, base_of(gmc.dev), 2 * GB * 512 + GB, t) is None
    assert hw_walk(gmc.dev.vram.mem, base_of(gmc.dev), 2 * GB * 512 + 5, t)[0] == 2 * GB + 5


def test_partial_unmap_splits_huge_and_fragments(gmc):
    t, mem = gmc.dev.target, gmc.dev.vram.mem
    gmc.map(VA0, 0, 2 * MB)
    gmc.unmap(VA0 + 0x10000, 0x1000)  # a hole in the middle of the 2 MiB page
    assert hw_walk(mem, base_of(gmc.dev), VA0 + 0x10000, t) is None
    for va in (VA0, VA0 + 0xF000, VA0 + 0x11000, VA0 + 2 * MB - 4096):
        phys, e, level, _ = hw_walk(mem, base_of(gmc.dev), va, t)
        assert phys == va - VA0 and level == 3
        block = 1 << frag_of(e)  # no fragment may cover the hole
        start = (va - VA0) >> 12 & ~(block - 1)
        assert not start <= 0x10 < start + block
    gmc.unmap(VA0, 0x10000)
    gmc.unmap(VA0 + 0x11000, 2 * MB - 0x11000, flush=False)
    assert gmc.pool.used == 2 + 3  # root + scratch now, three emptied tables wait for the next flush
    gmc.flush_tlb()
    assert gmc.pool.used == 2 and not any(mem[gmc.root.offset:gmc.root.offset + 4096])


def test_errors(gmc):
    gmc.map(VA0, 0, 0x4000)
    with pytest.raises(GMCError, match="multiples of 4 KiB"):
        gmc.map(VA0 + 0x10000, 0, 0x1800)
    with pytest.raises(GMCError, match="overlaps the mapping of 0x4000 bytes at VA 0x10000000000"):
        gmc.map(VA0 + 0x3000, 0x100000, 0x2000)
    with pytest.raises(GMCError, match="system aperture"):
        gmc.map(FB_BASE + 0x1000, 0, 0x1000)
    with pytest.raises(GMCError, match="ends past VRAM"):
        gmc.map(VA0 + MB, gmc.vram_size - 0x1000, 0x2000)
    with pytest.raises(GMCError, match="48-bit VA"):
        gmc.map((1 << 48) - 0x1000, 0, 0x2000)
    with pytest.raises(GMCError, match="flags"):
        gmc.map(VA0 + MB, 0, 0x1000, 1 << 54)
    with pytest.raises(GMCError, match="not mapped"):
        gmc.unmap(VA0 + 0x2000, 0x4000)
    gmc.unmap(VA0, 0x4000)
    with pytest.raises(GMCError, match="not mapped"):
        gmc.unmap(VA0, 0x1000)


def test_pool_exhaustion_names_the_pool():
    dev = fake_dev("gfx1100")
    g = GMC(table_pool=(16 * MB, 6 * 4096))  # root, scratch and 4 table pages
    g.init(dev)
    g.map(VA0, 0, 4096)  # PDB1, PDB0, PTB
    with pytest.raises(GMCError, match="page-table pool is full: 6 pages"):
        g.map(VA0 + GB, 0, 4096)


# --- churn against the independent walk ---
def check_against_model(gmc, model: dict[int, tuple[int, int, int]]):
    """Every leaf agrees with the model (page VA -> (phys, flags, mtype)), every model page is reached, and every
    fragment block is fully mapped, contiguous and of one kind."""
    t, mem, base = gmc.dev.target, gmc.dev.vram.mem, base_of(gmc.dev)
    seen = 0
    for va, e, level, page in leaves(mem, base, t):
        phys = e & ADDR
        attrs = (e & (SYSTEM | SNOOPED | EXE | READ | WRITE), mtype_of(e, t))
        for k in range(0, page, 4096):
            m = model.get(va + k)
            assert m is not None, f"VA {va + k:#x} is mapped in the tables but not in the model"
            assert (m[0], m[1], m[2]) == (phys + k, *attrs), f"VA {va + k:#x}: tables {phys + k:#x} {attrs}, model {m}"
            seen += 1
        block = max(page, 4096 << frag_of(e))
        bva = va & ~(block - 1)
        delta = phys - va
        # the physical side of the block is aligned too: a huge entry must be (its low address bits come from the
        # VA), and GMC promises it for fragments so the TLB's one entry per fragment is right on any reading
        assert (bva + delta) % block == 0, f"entry for VA {va:#x}: block {block:#x} at phys {bva + delta:#x} unaligned"
        for k in range(0, block, 4096):
            m = model.get(bva + k)
            assert m is not None and m[0] - (bva + k) == delta and m[1:] == attrs, \
                f"fragment {frag_of(e)} of the entry for VA {va:#x} covers VA {bva + k:#x}, which is not its run"
    assert seen == len(model), f"{len(model) - seen} model pages are missing from the tables"


@pytest.mark.parametrize("seed", [1, 2])
def test_map_unmap_churn(gmc, seed):
    rng = random.Random(seed)
    model: dict[int, tuple[int, int, int]] = {}
    live: list[tuple[int, int]] = []
    window = 256 * MB
    for step in range(120):
        if live and (rng.random() < 0.4 or len(live) > 24):
            va, size = live.pop(rng.randrange(len(live)))
            if rng.random() < 0.3 and size > 0x2000:  # partial unmap: a piece of it
                cut = rng.randrange(1, size // 4096) * 4096
                left = rng.random() < 0.5
                s, n = (va, cut) if left else (va + cut, size - cut)
                gmc.unmap(s, n)
                for p in range(s, s + n, 4096):
                    del model[p]
                live.append((va + cut, size - cut) if left else (va, cut))
            else:
                gmc.unmap(va, size)
                for p in range(va, va + size, 4096):
                    del model[p]
        else:
            align = rng.choice([4096, 0x10000, 2 * MB])
            size = rng.choice([rng.randrange(1, 40) * 4096, rng.randrange(1, 9) * 0x10000,
                               rng.randrange(1, 4) * 2 * MB + rng.choice([0, 0x10000, 4096])])
            va = VA0 + rng.randrange(0, (window - size) // align) * align
            if any(p in model for p in range(va, va + size, 4096)):
                continue
            system = rng.random() < 0.3
            phys = rng.randrange(1, 1 << 20) * align if system else rng.randrange(0, (8 * GB - size) // align) * align
            flags = rng.choice([READ | WRITE | EXE, READ, READ | WRITE]) | ((SYSTEM | SNOOPED) if system else 0)
            mtype = rng.choice([0, 3])
            gmc.map(va, phys, size, flags, mtype=mtype, fragments=not (system and rng.random() < 0.5))
            for k in range(0, size, 4096):
                model[va + k] = (phys + k, flags, mtype)
            live.append((va, size))
        if step % 10 == 9:
            check_against_model(gmc, model)
    check_against_model(gmc, model)
    for va, size in live:
        gmc.unmap(va, size)
    assert gmc.pool.used == 2 and not gmc.mappings()
    assert not any(gmc.dev.vram.mem[gmc.root.offset:gmc.root.offset + 4096])
    assert gmc.flushes > 0


# --- against the emulated hubs ---
@pytest.fixture
def emu_card(tmp_path):
    import emu.am.gmc as emu_gmc
    from drivers.am.device import AMDevice
    from drivers.lock import ProcessLocks
    from emu.am.gfx import attach_gfx
    from emu.am.gpu import install_am_gpu
    from emu.pci import install_vfio
    from emu.system import EmulatedSystem
    from tests.firmware import fwgen
    made: list = []

    def make(target):
        fw = tmp_path / target
        fw.mkdir()
        fwgen.write_set(fw, target)
        system = EmulatedSystem(lock_dir=ProcessLocks("test_am_gmc"))
        install_vfio(system)
        card = install_am_gpu(system, target, "0000:03:00.0", driver="vfio-pci", iommu_group=9, boot_delay_s=0,
                              vram_size=1024 * MB, bar0_size=256 * MB)
        made.append(card)
        emu_gmc.attach_gmc(card)
        attach_gfx(card)  # the GFX model owns CP_DEBUG, which the GFX hub's enable writes
        dev = AMDevice("0000:03:00.0", system, firmware_dirs=[fw], firmware_system_dirs=False)
        made.append(dev)
        return card, dev, emu_gmc
    yield make
    for obj in reversed(made):
        obj.close()


@pytest.mark.parametrize("target", ["gfx1100", "gfx1201"])
def test_emulated_hubs_walk_our_tables(emu_card, target):
    card, dev, emu_gmc = emu_card(target)
    g = GMC()
    g.init(dev)
    g.gfxhub_enable()
    rng = random.Random(7)
    model: dict[int, tuple[str, int]] = {}
    live = []
    for i in range(30):
        size = rng.choice([4096 * rng.randrange(1, 20), 0x10000 * rng.randrange(1, 5), 2 * MB])
        va = VA0 + i * 8 * MB + rng.choice([0, 0x10000, 4096 * rng.randrange(0, 16)])
        system = i % 4 == 3
        phys = (0x1000_0000 + i * 0x100000) if system else rng.randrange(64, 512) * 0x10000
        g.map(va, phys, size, READ | WRITE | ((SYSTEM | SNOOPED) if system else 0))
        live.append((va, size))
        for k in range(0, size, 4096):
            model[va + k] = ("system" if system else "vram", phys + k)
    for va, want in model.items():
        for hub in ("gfx", "mm"):
            assert card.gmc.walk(0, va + 8, hub=hub) == (want[0], want[1] + 8), (hex(va), hub)
    # the system aperture still reaches VRAM physically in VMID 0
    assert card.gmc.walk(0, g.mc_address(0x1000)) == ("vram", 0x1000)
    # unmap with the flush: the emulated TLB drops the old translations, so the next access faults
    va, size = live[0]
    g.unmap(va, size)
    with pytest.raises(emu_gmc.VMFault):
        card.gmc.walk(0, va)
    # partial unmap of a huge page: the survivors still translate, the hole faults
    g.map(VA0 + 512 * MB, 0, 2 * MB)
    card.gmc.walk(0, VA0 + 512 * MB + 0x20000)  # warm the TLB with the 2 MiB leaf
    g.unmap(VA0 + 512 * MB + 0x20000, 0x1000)
    with pytest.raises(emu_gmc.VMFault):
        card.gmc.walk(0, VA0 + 512 * MB + 0x20000)
    assert card.gmc.walk(0, VA0 + 512 * MB + 0x21000) == ("vram", 0x21000)
    g.fini()
