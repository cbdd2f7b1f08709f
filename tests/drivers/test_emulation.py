"""BAREGPU_EMULATE, the one switch between real and emulated hardware: what each value selects, and how a bad
value is refused (by name, with what it takes)."""
from __future__ import annotations

import pytest

from drivers.emulation import VENDORS, emulated_vendors, system_for
from drivers.system import LinuxSystem
from hcq.env import EnvError


@pytest.mark.parametrize("value, vendors", [
    ("", set()), ("  ", set()), ("0", set()), ("off", set()), ("No", set()),
    ("1", set(VENDORS)), ("all", set(VENDORS)), ("TRUE", set(VENDORS)), ("on", set(VENDORS)),
    ("amd", {"amd"}), (" AMD , nv ", {"amd", "nv"}), ("amd,,nv,", {"amd", "nv"}),
])
def test_what_each_value_selects(monkeypatch, value, vendors):
    assert emulated_vendors(value) == vendors
    monkeypatch.setenv("BAREGPU_EMULATE", value)
    assert emulated_vendors() == vendors


def test_unset_selects_nothing(monkeypatch):
    monkeypatch.delenv("BAREGPU_EMULATE", raising=False)
    assert emulated_vendors() == set()
    assert isinstance(system_for("amd"), LinuxSystem)


@pytest.mark.parametrize("value, why", [("bogus", "('bogus' unknown)"), ("amd,intel", "('intel' unknown)"),
                                        ("1,amd", "('1' unknown)"), (",", "(it names no vendor)")])
def test_a_bad_value_names_the_variable_the_value_and_what_it_takes(monkeypatch, value, why):
    monkeypatch.setenv("BAREGPU_EMULATE", value)
    with pytest.raises(EnvError) as exc:
        emulated_vendors()
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError) and exc.value.name == "BAREGPU_EMULATE" and exc.value.value == value
    assert msg.startswith(f"environment variable BAREGPU_EMULATE={value!r} is not valid: it takes 1, yes, true")
    assert "a comma-separated list of vendors from amd, nv, qcom, usb" in msg and why in msg
    with pytest.raises(EnvError):
        system_for("amd")  # every driver opening a device meets the same refusal
