"""The interrupt handler (IH), driver side: the IH ring in system memory, its write-pointer writeback, polling and
decoding interrupt vectors (IVs), and VM fault decoding.

The order and values are amdgpu's (linux 6.12): ih_v6_0.c (OSSSYS 6.0, gfx11) and ih_v7_0.c (OSSSYS 7.0, gfx12)
`irq_init` / `enable_ring` / `toggle_ring_interrupts` / `get_wptr` / `set_rptr` / `irq_disable`; amdgpu_ih.c
`amdgpu_ih_ring_init` (ring size rounded to a power of two, the wptr/rptr shadows in 8 bytes after the ring),
`amdgpu_ih_process` (bounded passes, write RPTR, re-read WPTR) and `amdgpu_ih_decode_iv_helper` (the 32-byte IV);
gmc_v11_0.c / gmc_v12_0.c `process_interrupt` (the VM fault IV: address from src_data, read/write, retry, hub by
client; the hub's L2_PROTECTION_FAULT_STATUS read and its CNTL bit 0 pulsed) and the hubs' client-ID tables
(gfxhub_v3_0.c, gfxhub_v12_0.c, mmhub_v3_0.c, mmhub_v3_0_2.c, mmhub_v4_1_0.c).

Decisions that differ from amdgpu (one process owns the card; it polls, it takes no MSI):
- One ring (ring 0). amdgpu adds ring 1 on dGPUs for retry faults (redirecting GFX UTCL2 faults there) and a
  software ring; the AM path programs no-retry faults (see drivers/am/gmc.py), so every IV lands on ring 0 and the
  ring-1 redirect (IH_RING1_CLIENT_CFG_*) is not programmed. Ring 1's RB_USED_INT_THRESHOLD is still written as
  force_update_wptr_for_self_int does.
- No doorbell: RPTR is written through IH_RB_RPTR (ih_v6_0_set_rptr's non-doorbell path), IH_DOORBELL_RPTR.ENABLE 0,
  and RPTR_REARM 0 (amdgpu sets it to msi_enabled).
- Where the ring lives. amdgpu loading firmware through the PSP puts the ring in GTT (a GPU virtual address in VMID
  0, IH_RB_CNTL.MC_SPACE 4); only when the driver loads firmware itself does it use the bus address (MC_SPACE 2)
  and set IH_CHICKEN.MC_SPACE_GPA_ENABLE. Here: when the device has a GMC (`dev.gmc`), the ring's DMA pages are
  mapped into the process VM at `ring_va` (PTE_SYSTEM | PTE_SNOOPED, as system pages are mapped in gmc.py) and the
  IH is given that VA with MC_SPACE 4, MC_VMID 0 — the GMC translates it like any system page. Without a GMC (or
  with `address="bus"`) the bus address is used with MC_SPACE 2 and MC_SPACE_GPA_ENABLE, as the direct-load path.
- Lost interrupts are never silent: an overflow is handled as ih_v6_0_get_wptr does (restart at WPTR + 32, pulse
  WPTR_OVERFLOW_CLEAR) and reported in the poll result (`IHPoll.overflows`) and counted in `IH.overflows`.
"""
from __future__ import annotations

import collections
import ctypes
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

from drivers.am.regs import Reg, RegisterError
from drivers.pci.interface import DMABuffer
from hcq.device import DeviceFault
from hcq.errors import HCQError

log = logging.getLogger(__name__)

IH_RING_SIZE = 256 * 1024  # amdgpu_ih.h IH_RING_SIZE (ih_v7_0_sw_init passes 256 * 1024 too)
IV_SIZE = 32  # amdgpu_ih_decode_iv_helper: 8 dwords per IV, "wptr/rptr are in bytes"
MAX_RING_SIZE = 256 * 1024  # IH_RB_WPTR.OFFSET is bits 17:2 (osssys_6_0_0 / 7_0_0 sh_mask): byte offsets < 256 KiB
MIN_RING_SIZE = 2 * IV_SIZE
IVS_PER_PASS = 32  # amdgpu_ih.h AMDGPU_IH_MAX_NUM_IVS: entries per pass before RPTR is written back
MC_SPACE_BUS, MC_SPACE_VM = 2, 4  # ih_v6_0_rb_cntl: MC_SPACE = use_bus_addr ? 2 : 4
SELF_IV_TIMEOUT = 8  # ih_v6_0_irq_init: force_update_wptr_for_self_int(adev, 0, 8, true)
MSI_STORM_DELAY = 3  # ih_v6_0_irq_init: IH_MSI_STORM_CTRL.DELAY 3
DEFAULT_RING_VA = 0xFFFF_0000_0000  # where the ring is mapped in the process VM: the top of the 48-bit space
PAGE = 4096
DISABLE_SETTLE_S = 0.001  # ih_v6_0_irq_disable: mdelay(1) "Wait and acknowledge irq" before the ring is freed

# soc15_ih_clientid.h enum soc21_ih_clientid (used by GFX11 and GFX12 alike)
SOC21_CLIENTS = {0x00: "IH", 0x02: "ATHUB", 0x03: "BIF", 0x04: "DCN", 0x05: "ISP", 0x06: "MP3", 0x07: "RLC",
                 0x0a: "GFX", 0x0b: "IMU", 0x0e: "VCN1", 0x0f: "THM", 0x10: "VCN", 0x11: "VPE1", 0x12: "VMC",
                 0x14: "GRBM_CP", 0x16: "ROM_SMUIO", 0x17: "DF", 0x18: "VPE", 0x19: "PWR", 0x1a: "LSDMA",
                 0x1e: "MP0", 0x1f: "MP1"}
CLIENT_VMC, CLIENT_GFX = 0x12, 0x0a  # SOC21_IH_CLIENTID_VMC / _GFX
SRC_VM_FAULT = 0  # irqsrcs_vmc_1_0.h VMC_1_0__SRCID__VM_FAULT (client VMC) and UTCL2_1_0__SRCID__FAULT (client GFX)
FAULT_SOURCES = {(CLIENT_VMC, SRC_VM_FAULT), (CLIENT_GFX, SRC_VM_FAULT)}  # gmc_v11_0_sw_init amdgpu_irq_add_id

# UTCL2 client IDs of the L2_PROTECTION_FAULT_STATUS.CID field, per hub version.
GFXHUB_CLIENTS = {  # gfxhub_v3_0.c / gfxhub_v12_0.c gfxhub_client_ids[], by GC major version
    11: ("CB/DB", "Reserved", "GE1", "GE2", "CPF", "CPC", "CPG", "RLC", "TCP", "SQC (inst)", "SQC (data)", "SQG",
         "Reserved", "SDMA0", "SDMA1", "GCR", "SDMA2", "SDMA3"),
    12: ("CB", "DB", "GE1", "GE2", "CPF", "CPC", "CPG", "RLC", "TCP", "SQC (inst)", "SQC (data)", "SQG/PC/SC",
         "Reserved", "SDMA0", "SDMA1", "GCR", "Reserved", "Reserved", "WGS", "DSM", "PA"),
}
_MM_V3 = {  # mmhub_v3_0.c mmhub_client_ids_v3_0_0 (mmhub_v3_0_2.c's table is the same): {(cid, rw): name}
    **{(c, 0): n for c, n in ((0, "VMC"), (4, "DCEDMC"), (5, "DCEVGA"), (6, "MP0"), (7, "MP1"), (8, "MPIO"),
                              (16, "HDP"), (17, "LSDMA"), (18, "JPEG"), (19, "VCNU0"), (21, "VSCH"), (22, "VCNU1"),
                              (23, "VCN1"), (52, "VCN0"))},
    **{(c, 1): n for c, n in ((2, "DBGUNBIO"), (3, "DCEDWB"), (4, "DCEDMC"), (5, "DCEVGA"), (6, "MP0"), (7, "MP1"),
                              (8, "MPIO"), (10, "DBGU0"), (11, "DBGU1"), (12, "DBGU2"), (13, "DBGU3"), (14, "XDP"),
                              (15, "OSSSYS"), (16, "HDP"), (17, "LSDMA"), (18, "JPEG"), (19, "VCNU0"), (20, "VCN0"),
                              (21, "VSCH"), (22, "VCNU1"), (23, "VCN1"))},
}
_MM_V4_1 = {  # mmhub_v4_1_0.c mmhub_client_ids_v4_1_0
    **{(c, 0): n for c, n in ((0, "VMC"), (4, "DCEDMC"), (6, "MP0"), (7, "MP1"), (8, "MPIO"), (16, "LSDMA"),
                              (17, "JPEG"), (19, "VCNU"), (22, "VSCH"), (23, "HDP"), (55, "VCNRD"))},
    **{(c, 1): n for c, n in ((3, "DCEDWB"), (4, "DCEDMC"), (6, "MP0"), (7, "MP1"), (8, "MPIO"), (10, "DBGU0"),
                              (11, "DBGU1"), (12, "DBGUNBIO"), (14, "XDP"), (15, "OSSSYS"), (16, "LSDMA"),
                              (17, "JPEG"), (18, "VCNWR"), (19, "VCNU"), (22, "VSCH"), (23, "HDP"))},
}
MMHUB_CLIENTS = {(3, 0, 0): _MM_V3, (3, 0, 1): _MM_V3, (3, 0, 2): _MM_V3, (4, 1, 0): _MM_V4_1}


class IHError(HCQError):
    """The interrupt ring could not be set up or read; the message names the ring, register or address and what to
    do."""


@dataclass(frozen=True)
class IVEntry:
    """One decoded interrupt vector (amdgpu_iv_entry as amdgpu_ih_decode_iv_helper fills it), plus `offset`, the
    ring byte offset it was read from, and `raw`, its 8 dwords."""
    client_id: int
    src_id: int
    ring_id: int
    vmid: int
    vmid_src: int
    timestamp: int
    timestamp_src: int
    pasid: int
    node_id: int
    src_data: tuple[int, int, int, int]
    offset: int = 0
    raw: tuple[int, ...] = ()

    @property
    def client(self) -> str:
        """The IH client's name (soc21_ih_clientid), or its number in hex."""
        return SOC21_CLIENTS.get(self.client_id, f"client {self.client_id:#x}")

    @property
    def is_vm_fault(self) -> bool:
        """A VM (page) fault: VMC source 0 (MMHUB) or GFX source 0 (UTCL2, GFXHUB), as gmc_v11_0 registers them."""
        return (self.client_id, self.src_id) in FAULT_SOURCES

    def __str__(self) -> str:
        return (f"IV {self.client} src {self.src_id} ring {self.ring_id} vmid {self.vmid} pasid {self.pasid} "
                f"data [{', '.join(f'{d:#x}' for d in self.src_data)}]")


def decode_iv(dw: "list[int] | tuple[int, ...]", offset: int = 0) -> IVEntry:
    """Decode 8 little-endian dwords of one IV (amdgpu_ih_decode_iv_helper's field layout)."""
    if len(dw) != 8:
        raise IHError(f"an IV is 8 dwords (32 bytes); got {len(dw)}")
    return IVEntry(client_id=dw[0] & 0xFF, src_id=(dw[0] >> 8) & 0xFF, ring_id=(dw[0] >> 16) & 0xFF,
                   vmid=(dw[0] >> 24) & 0xF, vmid_src=dw[0] >> 31,
                   timestamp=dw[1] | ((dw[2] & 0xFFFF) << 32), timestamp_src=dw[2] >> 31,
                   pasid=dw[3] & 0xFFFF, node_id=(dw[3] >> 16) & 0xFF,
                   src_data=(dw[4], dw[5], dw[6], dw[7]), offset=offset, raw=tuple(dw))


@dataclass(frozen=True)
class VMFault:
    """A GPU page fault decoded from its IV (gmc_v11_0_process_interrupt) and the hub's fault status.

    `address` is the faulting page's VA (src_data[0] << 12 | (src_data[1] & 0xf) << 44); `hub` "gfxhub" or "mmhub"
    (chosen by client as the kernel reads the hub's registers: VMC -> MMHUB, else GFXHUB); `engine` the UTCL2 client
    that faulted (from the status CID and RW, by the hub's client table) or "unknown"; `owner` what the device says
    owns the address (`dev.owner_of`) or "unknown". `status` is L2_PROTECTION_FAULT_STATUS as read (None when the
    register could not be read), with its fields decoded in `status_fields`."""
    address: int
    hub: str
    engine: str
    owner: str
    write: bool
    retry: bool
    vmid: int
    pasid: int
    client_id: int
    src_id: int
    ring_id: int
    timestamp: int
    status: Optional[int] = None
    status_fields: dict[str, int] = field(default_factory=dict)
    iv: Optional[IVEntry] = None

    @property
    def client(self) -> str:
        return SOC21_CLIENTS.get(self.client_id, f"client {self.client_id:#x}")

    def __str__(self) -> str:
        how = "write" if self.write else "read"
        st = ""
        if self.status is not None:
            st = f"; {self.hub} L2 fault status {self.status:#010x} (" + \
                 ", ".join(f"{k} {v:#x}" for k, v in self.status_fields.items()) + ")"
        return (f"GPU page fault: {how} of VA {self.address:#x} by {self.engine} through the {self.hub} "
                f"(IH client {self.client}, src {self.src_id}, ring {self.ring_id}, vmid {self.vmid}, pasid "
                f"{self.pasid}{', retry' if self.retry else ''}); owner: {self.owner}{st}")

    def device_fault(self) -> DeviceFault:
        """The fault as an hcq DeviceFault (kind "page fault", address, the rest in details)."""
        return DeviceFault("page fault", str(self), address=self.address,
                           details=dict(hub=self.hub, engine=self.engine, owner=self.owner, write=self.write,
                                        retry=self.retry, vmid=self.vmid, pasid=self.pasid, client=self.client,
                                        src_id=self.src_id, status=self.status, **self.status_fields))


@dataclass(frozen=True)
class IHOverflow:
    """The ring overflowed: the IH wrote over entries not yet read. `wptr` (the register value, overflow bit
    cleared), `rptr` where reading was, `restart` where it resumes (wptr + 32, the oldest entry not overwritten)."""
    wptr: int
    rptr: int
    restart: int

    def __str__(self) -> str:
        return (f"IH ring overflow (WPTR {self.wptr:#x}, RPTR {self.rptr:#x}): the ring filled before it was read, so "
                f"interrupt vectors were overwritten and are lost (possibly page faults); reading resumes at "
                f"{self.restart:#x}. Poll more often or give IH a larger ring_size")


@dataclass
class IHPoll:
    """What one poll() found: the decoded `entries` in ring order, the VM `faults` among them, and `overflows`
    (each one means interrupts were lost). Iterating it yields the entries."""
    entries: list[IVEntry] = field(default_factory=list)
    faults: list[VMFault] = field(default_factory=list)
    overflows: list[IHOverflow] = field(default_factory=list)

    @property
    def lost(self) -> bool:
        """True when interrupts were lost to an overflow during this poll."""
        return bool(self.overflows)

    def __iter__(self) -> Iterator[IVEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


Handler = Callable[[IVEntry], None]


class IH:
    """The interrupt handler of one AM device: ring 0 in system memory, polled (see the module docstring).

    `init(dev)` allocates the ring (`ring_size` bytes, a power of two up to 256 KiB; amdgpu's 256 KiB by default)
    plus the wptr/rptr shadows, makes it reachable by the IH (`address`: "vm" maps it at `ring_va` through dev.gmc,
    "bus" gives the bus address; default "vm" when the device has a GMC) and enables it (ih_v6_0_irq_init).
    `poll()` returns an IHPoll; `add_handler(client_id, src_id, fn)` calls fn for matching entries (as
    amdgpu_irq_add_id); `on_fault` (constructor) is called with each VMFault. `faults` keeps the last
    `fault_history` faults; `overflows` counts overflow events. `suspend()` / `resume()` disable and re-enable the
    ring keeping its memory; `fini()` disables it and frees it.
    """

    def __init__(self, *, ring_size: int = IH_RING_SIZE, address: Optional[str] = None,
                 ring_va: int = DEFAULT_RING_VA, on_fault: Optional[Callable[[VMFault], None]] = None,
                 fault_history: int = 256):
        if ring_size & (ring_size - 1) or not MIN_RING_SIZE <= ring_size <= MAX_RING_SIZE:
            raise IHError(f"IH ring size {ring_size:#x} must be a power of two from {MIN_RING_SIZE} bytes to "
                          f"{MAX_RING_SIZE >> 10} KiB (IH_RB_WPTR.OFFSET holds byte offsets below 256 KiB)")
        if address not in (None, "vm", "bus"):
            raise IHError(f"IH address mode {address!r} is not 'vm' (through the GMC) or 'bus' (bus address)")
        if ring_va % PAGE:
            raise IHError(f"IH ring VA {ring_va:#x} must be 4 KiB aligned")
        self.ring_size, self.ptr_mask = ring_size, ring_size - 1  # amdgpu_ih_ring_init
        self._address_pref, self.ring_va = address, ring_va
        self.warnings: list[str] = []  # what bring-up had to leave out, said in words
        self.on_fault = on_fault
        self.dev: Any = None
        self.address_mode = ""
        self.buf: Optional[DMABuffer] = None
        self.gpu_addr = 0  # what IH_RB_BASE holds (VA or bus address)
        self.wptr_addr = 0  # what IH_RB_WPTR_ADDR holds
        self.rptr = 0
        self.enabled = False
        self.overflows = 0
        self.entries_seen = 0
        self.faults: collections.deque[VMFault] = collections.deque(maxlen=fault_history)
        self._handlers: dict[tuple[int, int], list[Handler]] = {}
        self._mapped = False
        self._gen = 0

    # --- registers ---
    def _reg(self, name: str) -> Reg:
        return self.dev.regs.reg("OSSSYS", name)

    def _read(self, name: str) -> int:
        return self.dev.regs.read(self._reg(name))

    def _write(self, name: str, value: int) -> None:
        self.dev.regs.write(self._reg(name), value)

    def _set(self, name: str, value: int, **fields: int) -> int:
        return self._reg(name).encode(value, **fields)

    # --- life cycle ---
    def init(self, dev: Any) -> "IH":
        """Allocate the ring, make it reachable, program and enable it (ih_v6_0_sw_init + ih_v6_0_hw_init)."""
        self.dev = dev
        try:
            self._gen = dev.discovery.version("OSSSYS")[0]
        except Exception as e:  # discovery names what is missing
            raise IHError(f"{dev.bdf}: the IP discovery table gives no OSSSYS (IH) block: {e}") from e
        if self._gen not in (6, 7):
            raise IHError(f"{dev.bdf}: OSSSYS {self._gen}.x is not supported (ih_v6_0 for gfx11, ih_v7_0 for gfx12)")
        gmc = getattr(dev, "gmc", None)
        self.address_mode = self._address_pref or ("vm" if gmc is not None else "bus")
        if self.address_mode == "vm" and gmc is None:
            raise IHError(f"{dev.bdf}: IH address mode 'vm' needs the device's GMC (dev.gmc) initialised first; "
                          f"init the GMC before the IH (amdgpu's order: GMC, then IH), or pass address='bus'")
        # amdgpu_ih_ring_init: the ring plus 8 bytes (wptr shadow, rptr shadow); here a whole page more
        self.buf = dev.pci.dma_alloc(self.ring_size + PAGE)
        try:
            ctypes.memset(self.buf.host_addr, 0, self.ring_size + 8)
            if self.address_mode == "vm":
                self._map_ring(gmc)
                self.gpu_addr = self.ring_va
            else:
                self.gpu_addr = self._contiguous_bus()
            self.wptr_addr = self.gpu_addr + self.ring_size
            self.hw_init()
        except BaseException:
            self._release()
            raise
        return self

    def _contiguous_bus(self) -> int:
        assert self.buf is not None
        ps, pages = self.buf.page_size, self.buf.bus_pages
        need = (self.ring_size + 8 + ps - 1) // ps
        for i in range(1, need):
            if pages[i] != pages[0] + i * ps:
                raise IHError(f"{self.dev.bdf}: the IH ring's DMA pages are not contiguous on the bus (page {i} at "
                              f"{pages[i]:#x}, expected {pages[0] + i * ps:#x}); the IH needs one contiguous range "
                              f"in bus-address mode. Use address='vm' (map it through the GMC) or an IOMMU backend")
        return pages[0]

    def _map_ring(self, gmc: Any) -> None:
        """Map the ring's pages at ring_va as system memory (PTE_SYSTEM | PTE_SNOOPED, readable and writable), one
        map per run of bus-contiguous pages."""
        from drivers.am.gmc import PTE_READABLE, PTE_SNOOPED, PTE_SYSTEM, PTE_WRITEABLE
        assert self.buf is not None
        flags = PTE_SYSTEM | PTE_SNOOPED | PTE_READABLE | PTE_WRITEABLE
        ps, pages = self.buf.page_size, self.buf.bus_pages
        n = (self.ring_size + PAGE) // ps
        start = 0
        try:
            for i in range(1, n + 1):
                if i == n or pages[i] != pages[start] + (i - start) * ps:
                    gmc.map(self.ring_va + start * ps, pages[start], (i - start) * ps, flags, flush=False)
                    start = i
        except BaseException:
            if start:  # undo the runs already mapped, then report the map error
                gmc.unmap(self.ring_va, start * ps)
            raise
        self._mapped = True
        gmc.flush_tlb()

    def hw_init(self) -> None:
        """ih_v6_0_irq_init / ih_v7_0_irq_init for ring 0 (called by init and resume)."""
        self._toggle(False)
        nbio = getattr(self.dev, "nbio", None)
        if nbio is not None and hasattr(nbio, "ih_control"):
            # adev->nbio.funcs->ih_control: the interrupt dummy-read page (amdgpu's adev->dummy_page_addr, a system
            # page it maps for DMA), no-snoop off
            if self._dummy is None:
                self._dummy = self.dev.pci.dma_alloc(PAGE)
            addr = self._dummy.bus_address(0)
            if addr >> 40:  # INTERRUPT_CNTL2 holds addr >> 8 in 32 bits: a bus address past 2^40 cannot be given
                msg = (f"{self.dev.bdf}: the IH's dummy-read page is at bus address {addr:#x}, past the 40 bits "
                       "INTERRUPT_CNTL2 holds; left unset (through VFIO the bus addresses are ours and low)")
                self.warnings.append(msg)
                log.warning("%s", msg)
            else:
                nbio.ih_control(addr)
        if self.address_mode == "bus":  # ih_v6_0_irq_init: direct load with use_bus_addr sets MC_SPACE_GPA_ENABLE
            self._write("IH_CHICKEN", self._set("IH_CHICKEN", self._read("IH_CHICKEN"), MC_SPACE_GPA_ENABLE=1))
        self._enable_ring()
        self._write("IH_STORM_CLIENT_LIST_CNTL", self._set("IH_STORM_CLIENT_LIST_CNTL",
                                                           self._read("IH_STORM_CLIENT_LIST_CNTL"),
                                                           CLIENT18_IS_STORM_CLIENT=1))
        self._write("IH_INT_FLOOD_CNTL", self._set("IH_INT_FLOOD_CNTL", self._read("IH_INT_FLOOD_CNTL"),
                                                   FLOOD_CNTL_ENABLE=1))
        self._write("IH_MSI_STORM_CTRL", self._set("IH_MSI_STORM_CTRL", self._read("IH_MSI_STORM_CTRL"),
                                                   DELAY=MSI_STORM_DELAY))
        self._toggle(True)
        self._self_int(True)

    def _rb_cntl(self, value: int) -> int:
        """ih_v6_0_rb_cntl: MC_SPACE, overflow clear + enable, RB_SIZE, WPTR writeback, snoop, VMID 0."""
        rb_bufsz = (self.ring_size // 4).bit_length() - 1  # order_base_2(ring_size / 4), a power of two here
        return self._set("IH_RB_CNTL", value, MC_SPACE=MC_SPACE_VM if self.address_mode == "vm" else MC_SPACE_BUS,
                         WPTR_OVERFLOW_CLEAR=1, WPTR_OVERFLOW_ENABLE=1, RB_SIZE=rb_bufsz, WPTR_WRITEBACK_ENABLE=1,
                         MC_SNOOP=1, MC_RO=0, MC_VMID=0)

    def _enable_ring(self) -> None:
        """ih_v6_0_enable_ring for ring 0: base [39:8] and [47:40], RB_CNTL, wptr writeback address, pointers, no
        doorbell."""
        self._write("IH_RB_BASE", (self.gpu_addr >> 8) & 0xFFFFFFFF)
        self._write("IH_RB_BASE_HI", (self.gpu_addr >> 40) & 0xFF)
        cntl = self._rb_cntl(self._read("IH_RB_CNTL"))
        cntl = self._set("IH_RB_CNTL", cntl, RPTR_REARM=0)  # amdgpu: !!adev->irq.msi_enabled; we poll, no MSI
        self._write("IH_RB_CNTL", cntl)
        self._write("IH_RB_WPTR_ADDR_LO", self.wptr_addr & 0xFFFFFFFF)
        self._write("IH_RB_WPTR_ADDR_HI", (self.wptr_addr >> 32) & 0xFFFF)
        self._write("IH_RB_WPTR", 0)
        self._write("IH_RB_RPTR", 0)
        self._write("IH_DOORBELL_RPTR", self._set("IH_DOORBELL_RPTR", 0, ENABLE=0))  # ih_v6_0_doorbell_rptr

    def _toggle(self, enable: bool) -> None:
        """ih_v6_0_toggle_ring_interrupts / ih_v7_0 for ring 0."""
        tmp = self._set("IH_RB_CNTL", self._read("IH_RB_CNTL"), RB_ENABLE=int(enable))
        if enable and self._gen == 6:  # ih_v6_0 only: make CLEAR_OVERFLOW go 0 -> 1 -> 0 before enabling
            tmp = self._set("IH_RB_CNTL", tmp, WPTR_OVERFLOW_CLEAR=0)
            self._write("IH_RB_CNTL", tmp)
            tmp = self._set("IH_RB_CNTL", tmp, WPTR_OVERFLOW_CLEAR=1)
            self._write("IH_RB_CNTL", tmp)
            tmp = self._set("IH_RB_CNTL", tmp, WPTR_OVERFLOW_CLEAR=0)
        tmp = self._set("IH_RB_CNTL", tmp, ENABLE_INTR=int(enable))  # "enable_intr field is only valid in ring0"
        self._write("IH_RB_CNTL", tmp)
        if enable:
            self.enabled = True
        else:
            self._write("IH_RB_RPTR", 0)
            self._write("IH_RB_WPTR", 0)
            self.enabled = False
            self.rptr = 0

    def _self_int(self, enable: bool) -> None:
        """force_update_wptr_for_self_int(adev, 0, 8, enable): ring 1's threshold, then IH_CNTL2."""
        cntl2 = self._set("IH_CNTL2", self._read("IH_CNTL2"), SELF_IV_FORCE_WPTR_UPDATE_TIMEOUT=SELF_IV_TIMEOUT,
                          SELF_IV_FORCE_WPTR_UPDATE_ENABLE=int(enable))
        ring1 = self._set("IH_RB_CNTL_RING1", self._read("IH_RB_CNTL_RING1"), RB_USED_INT_THRESHOLD=0)
        self._write("IH_RB_CNTL_RING1", ring1)
        self._write("IH_CNTL2", cntl2)

    def hw_fini(self) -> None:
        """ih_v6_0_irq_disable: self-interrupt off, ring off (pointers to 0), then let in-flight writes land."""
        if self.dev is None or not self.enabled:
            return
        self._self_int(False)
        self._toggle(False)
        time.sleep(DISABLE_SETTLE_S)  # ih_v6_0_irq_disable: mdelay(1) before anything frees the ring

    def suspend(self) -> None:
        """ih_v6_0_suspend: hw_fini; the ring memory and mapping stay."""
        self.hw_fini()

    def resume(self) -> None:
        """ih_v6_0_resume: hw_init again on the same ring (RPTR and WPTR start at 0)."""
        if self.buf is None:
            raise IHError("IH.resume: the IH was never initialised (call init(dev))")
        ctypes.memset(self.buf.host_addr + self.ring_size, 0, 8)  # the wptr shadow restarts with the ring
        self.hw_init()

    def fini(self) -> None:
        """Disable the ring, unmap it from the VM and free its memory (ih_v6_0_hw_fini + amdgpu_ih_ring_fini)."""
        if self.dev is None:
            return
        try:
            self.hw_fini()
        finally:
            self._release()

    _dummy = None  # the dummy-read page NBIO's ih_control points the IH at

    def _release(self) -> None:
        if self._dummy is not None:
            dummy, self._dummy = self._dummy, None
            self.dev.pci.dma_free(dummy)
        if self._mapped:
            self._mapped = False
            self.dev.gmc.unmap(self.ring_va, self.ring_size + PAGE)
        if self.buf is not None:
            buf, self.buf = self.buf, None
            self.dev.pci.dma_free(buf)

    # --- handlers ---
    def add_handler(self, client_id: int, src_id: int, fn: Handler) -> None:
        """Call fn(entry) for every IV from (client_id, src_id) (amdgpu_irq_add_id)."""
        self._handlers.setdefault((client_id, src_id), []).append(fn)

    # --- polling ---
    def _wb_wptr(self) -> int:
        assert self.buf is not None
        return ctypes.c_uint32.from_address(self.buf.host_addr + self.ring_size).value

    def get_wptr(self, result: Optional[IHPoll] = None) -> int:
        """ih_v6_0_get_wptr: the writeback WPTR; on an overflow re-read the register, restart at WPTR + 32, pulse
        WPTR_OVERFLOW_CLEAR, and record the loss (in `result` when given, in the log and `overflows` always)."""
        wptr = self._wb_wptr()
        reg = self._reg("IH_RB_WPTR")
        if not reg.get(wptr, "RB_OVERFLOW"):
            return wptr & self.ptr_mask
        wptr = self.dev.regs.read(reg)
        if not reg.get(wptr, "RB_OVERFLOW"):
            return wptr & self.ptr_mask
        wptr = reg.encode(wptr, RB_OVERFLOW=0)
        restart = (wptr + IV_SIZE) & self.ptr_mask  # "start parsing from the last not overwritten vector"
        ev = IHOverflow(wptr & self.ptr_mask, self.rptr, restart)
        log.warning("%s: %s", self.dev.bdf, ev)
        self.overflows += 1
        if result is not None:
            result.overflows.append(ev)
        self.rptr = restart
        cntl = self._read("IH_RB_CNTL")
        if self._reg("IH_RB_CNTL").get(cntl, "WPTR_OVERFLOW_CLEAR"):
            # ih_v7_0 leaves CLEAR at 1 after init, so its 1-then-0 would have no rising edge; ih_v6_0's toggle
            # shows the clear takes the 0 -> 1 switch: drop it to 0 first (harmless where the level counts)
            cntl = self._set("IH_RB_CNTL", cntl, WPTR_OVERFLOW_CLEAR=0)
            self._write("IH_RB_CNTL", cntl)
        cntl = self._set("IH_RB_CNTL", cntl, WPTR_OVERFLOW_CLEAR=1)
        self._write("IH_RB_CNTL", cntl)
        self._write("IH_RB_CNTL", self._set("IH_RB_CNTL", cntl, WPTR_OVERFLOW_CLEAR=0))  # so new ones are seen
        return wptr & self.ptr_mask

    def _read_iv(self, offset: int) -> IVEntry:
        assert self.buf is not None
        raw = (ctypes.c_uint32 * 8).from_address(self.buf.host_addr + offset)
        return decode_iv(list(raw), offset)

    def poll(self, max_entries: Optional[int] = None) -> IHPoll:
        """Read every IV the IH has written since the last poll (amdgpu_ih_process): decode, dispatch to handlers,
        decode VM faults, write RPTR back after each pass of 32 and re-read WPTR until they meet. At most
        `max_entries` (default: one ring's worth) are read, so an interrupt storm cannot hold the caller forever."""
        out = IHPoll()
        if not self.enabled:
            return out
        limit = self.ring_size // IV_SIZE if max_entries is None else max_entries
        wptr = self.get_wptr(out)
        while self.rptr != wptr and len(out.entries) < limit:
            count = 0
            while self.rptr != wptr and count < IVS_PER_PASS and len(out.entries) < limit:
                entry = self._read_iv(self.rptr)
                self.rptr = (self.rptr + IV_SIZE) & self.ptr_mask
                count += 1
                out.entries.append(entry)
            self._write("IH_RB_RPTR", self.rptr)  # ih_v6_0_set_rptr without a doorbell
            wptr = self.get_wptr(out)  # "make sure wptr hasn't changed while processing"
        self.entries_seen += len(out.entries)
        for entry in out.entries:
            self._dispatch(entry, out)
        return out

    def _dispatch(self, entry: IVEntry, out: IHPoll) -> None:
        if entry.is_vm_fault:
            fault = self.decode_fault(entry)
            out.faults.append(fault)
            self.faults.append(fault)
            log.error("%s: %s", self.dev.bdf, fault)
            if self.on_fault is not None:
                self.on_fault(fault)
        for fn in self._handlers.get((entry.client_id, entry.src_id), ()):
            fn(entry)

    # --- VM faults ---
    def decode_fault(self, entry: IVEntry) -> VMFault:
        """gmc_v11_0_process_interrupt / gmc_v12_0: the address, write and retry bits from src_data, the hub by
        client, the hub's L2 fault status read (a dummy read first on the GFXHUB) and its CNTL bit 0 set, the engine
        named from the status CID, the owner from the device."""
        addr = (entry.src_data[0] << 12) | ((entry.src_data[1] & 0xF) << 44)
        retry = bool(entry.src_data[1] & 0x80)
        write = bool(entry.src_data[1] & 0x20)
        mm = entry.client_id == CLIENT_VMC
        hub, block, prefix = ("mmhub", "MMHUB", "MM") if mm else ("gfxhub", "GC", "GC")
        status: Optional[int] = None
        fields: dict[str, int] = {}
        engine = "unknown"
        try:
            st_reg = self._fault_status_reg(block, prefix)
            if entry.vmid_src == 0:  # AMDGPU_GFXHUB(0): dummy read for the fast GRBM interface
                self.dev.regs.read(st_reg)
            status = self.dev.regs.read(st_reg)
            cntl = self.dev.regs.reg(block, f"{prefix}VM_L2_PROTECTION_FAULT_CNTL")
            self.dev.regs.write(cntl, self.dev.regs.read(cntl) | 1)  # WREG32_P(vm_l2_pro_fault_cntl, 1, ~1)
            for f in ("CID", "MORE_FAULTS", "WALKER_ERROR", "PERMISSION_FAULTS", "MAPPING_ERROR", "RW"):
                fields[f.lower()] = st_reg.get(status, f)
            engine = self._engine(mm, fields["cid"], fields["rw"])
        except RegisterError as e:
            log.warning("%s: the %s fault status could not be read: %s", self.dev.bdf, hub, e)
        return VMFault(address=addr, hub=hub, engine=engine, owner=self._owner(addr), write=write, retry=retry,
                       vmid=entry.vmid, pasid=entry.pasid, client_id=entry.client_id, src_id=entry.src_id,
                       ring_id=entry.ring_id, timestamp=entry.timestamp, status=status, status_fields=fields,
                       iv=entry)

    def _fault_status_reg(self, block: str, prefix: str) -> Reg:
        """L2_PROTECTION_FAULT_STATUS, or its _LO32 half where the hub splits it (gfxhub_v12_0, mmhub_v4_1_0)."""
        name = f"{prefix}VM_L2_PROTECTION_FAULT_STATUS"
        if hasattr(self.dev.regs.module(block), f"reg{name}_LO32"):
            name += "_LO32"
        return self.dev.regs.reg(block, name)

    def _engine(self, mm: bool, cid: int, rw: int) -> str:
        """The UTCL2 client named by the hub's client table (print_l2_protection_fault_status), else "unknown"."""
        if mm:
            version = tuple(self.dev.discovery.version("MMHUB"))
            name = MMHUB_CLIENTS.get(version[:3], {}).get((cid, rw))
        else:
            table = GFXHUB_CLIENTS.get(self.dev.discovery.version("GC")[0], ())
            name = table[cid] if cid < len(table) else None
        return f"{name} (CID {cid:#x})" if name else f"unknown (CID {cid:#x})"

    def _owner(self, addr: int) -> str:
        owner_of = getattr(self.dev, "owner_of", None)
        if owner_of is None:
            return "unknown"
        try:
            owner = owner_of(addr)
        except Exception as e:  # a broken lookup must not hide the fault itself
            return f"unknown (owner_of failed: {e})"
        if owner is None:
            return "unknown (no buffer of this device holds the address)"
        va = getattr(owner, "va", None)
        return f"{owner!r}" + (f" at offset {addr - va:#x}" if isinstance(va, int) else "")


__all__ = ["CLIENT_GFX", "CLIENT_VMC", "IH", "IHError", "IHOverflow", "IHPoll", "IH_RING_SIZE", "IVEntry",
           "SOC21_CLIENTS", "VMFault", "decode_iv"]
