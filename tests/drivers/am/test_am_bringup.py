"""AMDevice.boot() on the emulated card with every modelled block attached (install_am_gpu(..., blocks=True)): the
cold/warm decision (the note next to the device lock plus the PSP's sign of life), leaving on close, a crashed and a
SIGTERMed holder (child processes), and a bring-up interrupted at a bootloader stage (emu/am/psp.py hang_at/fail_at)."""
from __future__ import annotations

import os
import signal
import sys
import textwrap

import pytest

from drivers.am.device import BLOCK_ORDER, AMBootError, AMDevice, read_boot_note
from drivers.lock import ProcessLocks
from emu.am.gpu import install_am_gpu
from emu.system import EmulatedSystem
from tests.firmware import fwgen

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from child_process import Child  # noqa: E402 - tests/ on the path, as the other child-process tests

BDF = "0000:03:00.0"
MB = 1 << 20
FAST_PSP = dict(handshake_delay_s=0, bootloader_timeout=0.3, sos_timeout=0.3, ring_timeout=0.3, cmd_timeout=1.0)
OPTS = {"psp": FAST_PSP, "smu": dict(timeout=0.5)}
STEP_TIMEOUT_S = 60.0



@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    d = tmp_path_factory.mktemp("bringup-fw-gfx1100")
    fwgen.write_set(d, "gfx1100")
    return d


class Machine:
    """One emulated machine: a lock space (a ProcessLocks, or a lock directory shared with child processes) and the
    card, re-made by `new_card()` as a machine whose card stays powered between two processes of ours."""

    def __init__(self, fw, lock_dir):
        self.fw, self.system = fw, EmulatedSystem(lock_dir=lock_dir)
        self.card = None
        self.made: list = []

    def new_card(self, target: str = "gfx1100"):
        self.card = install_am_gpu(self.system, target, BDF, boot_delay_s=0, vram_size=1024 * MB,
                                   bar0_size=1024 * MB, firmware=self.fw, blocks=True)
        self.made.append(self.card)
        return self.card

    def open(self) -> AMDevice:
        dev = AMDevice(BDF, self.system, firmware_dirs=[self.fw], firmware_system_dirs=False)
        self.made.append(dev)
        return dev

    def close(self):
        for obj in reversed(self.made):
            obj.close()


@pytest.fixture
def machine(fw, request):
    m = Machine(fw, ProcessLocks(f"test_am_bringup {request.node.name}"))
    m.new_card()
    m.blocks = [n for n, _ in BLOCK_ORDER]
    yield m
    m.close()


def test_first_boot_is_cold_and_resets(machine):
    dev = machine.open()
    flrs = machine.card.function.counts["flrs"]
    info = dev.boot(machine.blocks, block_options=OPTS)
    assert info["kind"] == "cold" and "no note" in info["reason"]
    assert info["reset"] == "function reset" and machine.card.function.counts["flrs"] == flrs + 1
    assert list(info["stages"])[:2] == ["reset", "ifwi"]
    assert [n for n, _ in dev.blocks] == machine.blocks and dev.psp is not None and dev.smu is not None
    for name, _ in BLOCK_ORDER:
        if name not in machine.blocks:
            assert info["blocks"][name] == "not asked for"
    assert dev.psp.stages and dev.psp.stages[-1] == "SOS"
    described = dev.describe()["boot"]
    assert described["kind"] == "cold" and described["state"] == "up" and "psp" in described["blocks_detail"]
    assert read_boot_note(dev.lock)["state"] == "in-use"
    dev.close()
    note = read_boot_note(dev.lock)
    assert note["state"] == "warm" and note["pid"] == os.getpid()
    assert machine.card.psp.ring is None and machine.card.psp.sos_alive  # ring destroyed, sOS kept running


def test_clean_close_then_warm_boot_skips_reset_and_bootloader(machine):
    dev = machine.open()
    cold = dev.boot(machine.blocks, block_options=OPTS)
    dev.close()
    flrs = machine.card.function.counts["flrs"]
    dev2 = machine.open()
    warm = dev2.boot(machine.blocks, block_options=OPTS)
    assert warm["kind"] == "warm" and "left the card warm-bootable" in warm["reason"]
    assert machine.card.function.counts["flrs"] == flrs  # no reset
    assert set(warm["skipped"]) >= {"reset", "ifwi", "psp bootloader"} and "reset" not in warm["stages"]
    assert dev2.psp.sos_was_alive and dev2.psp.stages == []
    assert dev2.smu.state == "running"
    assert cold["stages"]["psp"] > 0 and warm["stages"]["psp"] > 0
    assert dev2.describe()["boot"]["kind"] == "warm"
    dev2.close()


def test_leave_cold_makes_the_next_open_reset(machine):
    dev = machine.open()
    dev.boot(machine.blocks, block_options=OPTS, leave="cold")
    dev.close()
    note = read_boot_note(dev.lock)
    assert note["state"] == "cold" and "leave='cold'" in note["reason"]
    dev2 = machine.open()
    info = dev2.boot(machine.blocks, block_options=OPTS)
    assert info["kind"] == "cold" and "leave='cold'" in info["reason"] and info["reset"] == "function reset"
    dev2.close()


def test_a_reset_card_is_not_warm_booted_even_with_a_warm_note(machine):
    dev = machine.open()
    dev.boot(machine.blocks, block_options=OPTS)
    dev.close()
    machine.card.function.flr()  # someone reset it between our processes
    dev2 = machine.open()
    info = dev2.boot(machine.blocks, block_options=OPTS)
    assert info["kind"] == "cold" and "reset or power-cycled since" in info["reason"]
    dev2.close()


def test_boot_twice_and_unknown_blocks_are_refused(machine):
    dev = machine.open()
    with pytest.raises(ValueError, match="unknown IP block"):
        dev.boot(["gfx9"])
    dev.boot(["gmc"], block_options=OPTS)
    assert dev.psp is None and dev.boot_info["blocks"]["psp"] == "not asked for"
    with pytest.raises(Exception, match="already up"):
        dev.boot()
    dev.close()


@pytest.mark.parametrize("fault", [dict(hang_at="spl"), dict(fail_at="sys_drv")])
def test_an_interrupted_boot_fails_clearly_and_leaves_the_card_cold_bootable(machine, fault):
    dev = machine.open()
    for k, v in fault.items():
        setattr(machine.card.psp, k, v)
    flrs = machine.card.function.counts["flrs"]
    with pytest.raises(AMBootError, match=r"failed at stage psp .*bootloader stage (SPL|SYS_DRV)") as ei:
        dev.boot(machine.blocks, block_options=OPTS)
    assert ei.value.stage == "psp" and ei.value.cause is not None
    assert dev.gmc is None and dev.blocks == []  # the GMC that came up was left again
    assert machine.card.function.counts["flrs"] == flrs + 2  # the cold boot's reset, then the one leaving the failure
    note = read_boot_note(dev.lock)
    assert note["state"] == "cold" and "failed at stage psp" in note["reason"]
    assert dev.describe()["boot"]["failed"]["stage"] == "psp"
    dev.close()
    assert read_boot_note(dev.lock)["state"] == "cold"  # closing a failed boot does not claim a warm card
    for k in fault:
        setattr(machine.card.psp, k, None)
    dev2 = machine.open()
    info = dev2.boot(machine.blocks, block_options=OPTS)
    assert info["kind"] == "cold" and "failed at stage psp" in info["reason"]
    assert dev2.psp.stages[-1] == "SOS"
    dev2.close()


# --- other processes: a crashed holder and a SIGTERMed one (the card stays powered; the note is what crosses) ---
CHILD = textwrap.dedent("""
    import os, sys
    from drivers.am.device import BLOCK_ORDER, AMDevice
    from emu.am.gpu import install_am_gpu
    from emu.system import EmulatedSystem
    lock_dir, fw = sys.argv[1], sys.argv[2]
    system = EmulatedSystem(lock_dir=lock_dir)
    card = install_am_gpu(system, "gfx1100", "0000:03:00.0", boot_delay_s=0, vram_size=1 << 30, bar0_size=1 << 30,
                          firmware=fw, blocks=True)
    dev = AMDevice("0000:03:00.0", system, firmware_dirs=[fw], firmware_system_dirs=False)
    blocks = [n for n, _ in BLOCK_ORDER]
    info = dev.boot(blocks, block_options={"psp": {"handshake_delay_s": 0}})
    print("booted", info["kind"], flush=True)
    sys.stdin.readline()  # killed or terminated while waiting here
""")


def _child(lock_dir, fw) -> Child:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    script = f"import sys; sys.argv = ['child', {str(lock_dir)!r}, {str(fw)!r}]\n" + CHILD
    return Child(script, env, STEP_TIMEOUT_S)


@pytest.fixture
def shared(fw, tmp_path):
    m = Machine(fw, str(tmp_path / "locks"))
    yield m
    m.close()


def _card_left_up(m: Machine):
    """The same card, still powered with the sOS running, as the child's process left it."""
    card = m.new_card()
    card.psp.boot_sos()
    m.blocks = [n for n, _ in BLOCK_ORDER]
    return card


def test_a_killed_holder_makes_the_next_open_cold_boot_and_say_why(shared, fw):
    child = _child(shared.system.lock_dir, fw)
    try:
        assert child.expect("booted").split()[1] == "cold"
        pid = child.proc.pid
        child.proc.send_signal(signal.SIGKILL)
        child.finish()
    finally:
        child.close()
    card = _card_left_up(shared)
    dev = shared.open()
    info = dev.boot(shared.blocks, block_options=OPTS)
    assert info["kind"] == "cold" and f"process {pid}" in info["reason"] and "crashed or was killed" in info["reason"]
    assert info["reset"] == "function reset" and not dev.psp.sos_was_alive and card.psp.sos_alive
    dev.close()


def test_a_sigtermed_holder_leaves_the_card_warm_bootable(shared, fw):
    child = _child(shared.system.lock_dir, fw)
    try:
        child.expect("booted")
        pid = child.proc.pid
        child.proc.send_signal(signal.SIGTERM)  # drivers/lock.py: SystemExit, atexit releases the lock, close() runs
        assert child.finish() != 0
    finally:
        child.close()
    _card_left_up(shared)
    dev = shared.open()
    note = read_boot_note(dev.lock)
    assert note["state"] == "warm" and note["pid"] == pid, child.stderr()
    info = dev.boot(shared.blocks, block_options=OPTS)
    assert info["kind"] == "warm" and dev.psp.sos_was_alive
    dev.close()
