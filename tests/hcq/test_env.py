"""Environment variables are checked when read: a bad value names the variable, the value and what it takes."""
from __future__ import annotations

import pytest

from hcq.env import EnvError, env_flag, env_int, env_list, env_seconds


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", "-0.0", "1e999"])
def test_seconds_must_be_a_finite_number_above_zero(monkeypatch, value):
    monkeypatch.setenv("BAREGPU_X_TIMEOUT", value)
    with pytest.raises(EnvError) as e:
        env_seconds("BAREGPU_X_TIMEOUT", 5.0)
    msg = str(e.value)
    assert f"BAREGPU_X_TIMEOUT={value!r}" in msg and "greater than 0" in msg and "unset BAREGPU_X_TIMEOUT" in msg
    assert isinstance(e.value, ValueError) and e.value.name == "BAREGPU_X_TIMEOUT"


def test_seconds_default_when_unset_or_blank(monkeypatch):
    monkeypatch.delenv("BAREGPU_X_TIMEOUT", raising=False)
    assert env_seconds("BAREGPU_X_TIMEOUT", 5.0) == 5.0
    monkeypatch.setenv("BAREGPU_X_TIMEOUT", "  ")
    assert env_seconds("BAREGPU_X_TIMEOUT", None) is None
    monkeypatch.setenv("BAREGPU_X_TIMEOUT", " 0.25 ")
    assert env_seconds("BAREGPU_X_TIMEOUT", 5.0) == 0.25


@pytest.mark.parametrize("value,want", [("1", True), ("YES", True), ("on", True), ("true", True),
                                        ("0", False), ("no", False), ("Off", False), ("false", False)])
def test_flags_take_the_usual_words(monkeypatch, value, want):
    monkeypatch.setenv("BAREGPU_X_FLAG", value)
    assert env_flag("BAREGPU_X_FLAG") is want


def test_a_flag_refuses_other_words(monkeypatch):
    monkeypatch.setenv("BAREGPU_X_FLAG", "maybe")
    with pytest.raises(EnvError, match=r"BAREGPU_X_FLAG='maybe' is not valid: it takes one of 1, yes, true, on or 0"):
        env_flag("BAREGPU_X_FLAG")


@pytest.mark.parametrize("value", ["0", "x", "2.5", "65"])
def test_int_range(monkeypatch, value):
    monkeypatch.setenv("BAREGPU_X_N", value)
    with pytest.raises(EnvError, match=r"BAREGPU_X_N=.* a whole number from 1 to 64"):
        env_int("BAREGPU_X_N", 4, minimum=1, maximum=64)
    monkeypatch.setenv("BAREGPU_X_N", "64")
    assert env_int("BAREGPU_X_N", 4, minimum=1, maximum=64) == 64


def test_list_items_must_be_known_and_the_list_not_empty(monkeypatch):
    monkeypatch.setenv("BAREGPU_X_LIST", "a, b")
    assert env_list("BAREGPU_X_LIST", ("a",), ("a", "b", "c"), "letter") == ("a", "b")
    monkeypatch.setenv("BAREGPU_X_LIST", "a,zz")
    with pytest.raises(EnvError, match=r"comma-separated list of letters from a, b, c \('zz' unknown\)"):
        env_list("BAREGPU_X_LIST", ("a",), ("a", "b", "c"), "letter")
    monkeypatch.setenv("BAREGPU_X_LIST", " , ")
    with pytest.raises(EnvError, match=r"\(it is empty\)"):
        env_list("BAREGPU_X_LIST", ("a",), ("a", "b", "c"), "letter")
    monkeypatch.delenv("BAREGPU_X_LIST")
    assert env_list("BAREGPU_X_LIST", ("a",), ("a", "b", "c"), "letter") == ("a",)
