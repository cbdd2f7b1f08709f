"""AM (our AMD driver without the kernel's amdgpu): boot time per stage, cold and warm, on the emulated card.

Row set (issue 11, Bench, "boot time per stage (cold and warm)"); measured and printed, never asserted:
- Each round makes a fresh emulated gfx1100 (emu.am.gpu.install_am_gpu with every modelled block, no boot delay)
  on a private EmulatedSystem (its locks and boot notes in this process's memory, ProcessLocks), with a firmware
  set written once per run by tests.firmware.fwgen. The first AMDevice on it boots cold (no note: function reset,
  IFWI wait, every block); it is closed leaving the card warm, and a second AMDevice boots warm (reset, IFWI and
  the PSP bootloader skipped). One sample per round for each row.
- Rows per kind: "open" (the whole AMDevice constructor: PCI open, IFWI, BARs, discovery, firmware files; its
  sub-stages' medians in the note), then each boot stage as AMDevice.timings records it ("boot.<stage>": reset and
  ifwi on cold only, then nbio, gmc, ih, psp, smu, gfx, sdma as present), then the whole boot() ("boot total").
- Every row is labelled "emulated": the time is our driver's code plus the emulator's models answering it; it says
  nothing about how long a real card takes (a real PSP bootloader and SMU take milliseconds to seconds).

Not made: per-kernel submit/replay on AM next to KFD, and SDMA bandwidth: AM's queues run no packets yet, so there
is nothing honest to time; one info line says so instead of rows.

The driver's warnings during these boots (the IH's dummy-read page address above 40 bits, which an emulated machine
without VFIO always has) are held below ERROR while the bench runs: they repeat every round and say nothing new.
"""
from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tools.bench import Bench, BenchError, Context, Result, summarize

TARGET = "gfx1100"
BDF = "0000:03:00.0"
KINDS = ("cold", "warm")
BLOCK_OPTIONS = {"psp": {"handshake_delay_s": 0}}  # the emulated PSP's handshake wait is a model knob, not work
OPEN_STAGES = ("open", "ifwi", "bars", "discovery", "firmware")  # AMDevice._open's timings, in order
EMULATED_NOTE = "emulated (driver + emulator models): says nothing about a real card"
NO_QUEUES_INFO = ("AM: per-kernel submit/replay (next to KFD) and SDMA bandwidth are not measured: AM's queues run "
                  "no packets yet; no rows are made for them")


def _one_round(fw: Path, round_no: int) -> dict[str, dict[str, float]]:
    """One fresh card: a cold open + boot, close (leaving it warm), a warm open + boot, close.

    Returns {kind: {row key: seconds}}; row keys are "open", "open.<stage>", "<boot stage>" and "boot total"."""
    from drivers.am.device import AMDevice
    from drivers.lock import ProcessLocks
    from emu.am.gpu import install_am_gpu
    from emu.system import EmulatedSystem
    system = EmulatedSystem(lock_dir=ProcessLocks(f"bench am round {round_no}"))
    card = install_am_gpu(system, TARGET, BDF, firmware=fw, blocks=True, boot_delay_s=0)
    out: dict[str, dict[str, float]] = {}
    try:
        for expected in KINDS:
            t0 = time.perf_counter()
            dev = AMDevice(BDF, system, firmware_dirs=[fw], firmware_system_dirs=False)
            opened = time.perf_counter() - t0
            try:
                info = dev.boot(block_options=BLOCK_OPTIONS)
                if info["kind"] != expected:
                    # A mislabelled row would be worse than none: say why the driver chose otherwise.
                    raise BenchError(f"AM bench round {round_no}: the {expected} boot came out {info['kind']} "
                                     f"({info['reason']}); the cold/warm decision in drivers/am/device.py changed")
                row: dict[str, float] = {"open": opened}
                row.update({f"open.{s}": dev.timings[s] for s in OPEN_STAGES if s in dev.timings})
                # dev.timings keeps the unrounded seconds; info["stages"] names the stages this boot ran, in order.
                row.update({s: dev.timings[f"boot.{s}"] for s in info["stages"]})
                row["boot total"] = dev.timings["boot"]
                out[expected] = row
            finally:
                dev.close()
    finally:
        card.close()
    return out


def _boot_stages(ctx: Context) -> list[Result]:
    from tests.firmware import fwgen
    ctx.note_info(NO_QUEUES_INFO)
    rounds = ctx.rounds(10)
    quiet = logging.getLogger("drivers.am")
    level = quiet.level
    fw = Path(tempfile.mkdtemp(prefix="baregpu-bench-am-fw-"))
    rounds_data: list[dict[str, dict[str, float]]] = []
    try:
        quiet.setLevel(logging.ERROR)  # see the module docstring: the same warnings every round
        fwgen.write_set(fw, TARGET)
        _one_round(fw, 0)  # untimed: lazy imports and first-use caches would be billed to round 1's open
        for r in range(1, rounds + 1):
            rounds_data.append(_one_round(fw, r))
    finally:
        quiet.setLevel(level)
        shutil.rmtree(fw, ignore_errors=True)
    rows: list[Result] = []
    for kind in KINDS:
        keys: list[str] = []
        for data in rounds_data:  # the union, in first-seen order: a stage missing in one round still gets its row
            keys += [k for k in data[kind] if k not in keys and not k.startswith("open.")]
        for key in keys:
            samples = [data[kind][key] * 1e6 for data in rounds_data if key in data[kind]]
            name = f"AM {kind} boot, emulated {TARGET}: " + (
                "open (AMDevice())" if key == "open" else "boot() total" if key == "boot total" else f"stage {key}")
            note = EMULATED_NOTE
            if key == "open":
                parts = [f"{s} {_median_us(rounds_data, kind, f'open.{s}'):.0f}" for s in OPEN_STAGES
                         if any(f"open.{s}" in d[kind] for d in rounds_data)]
                note += "; p50 us of " + ", ".join(parts)
            r = summarize(name, samples, len(samples), note=note)
            r.extra.update(kind=kind, stage=key, emulated=True, target=TARGET)
            rows.append(r)
    return rows


def _median_us(rounds_data: list[dict[str, dict[str, float]]], kind: str, key: str) -> float:
    return statistics.median(d[kind][key] * 1e6 for d in rounds_data if key in d[kind])


BENCHES: list[Bench] = [
    Bench("am.boot", f"AM boot time per stage, cold and warm, on an emulated {TARGET} (open, each boot stage, "
          "boot total; a fresh card per round)", _boot_stages),
]
