"""The C-macro translator on hand-written macros: values, functions, ioctl numbers, and honest refusals."""
from __future__ import annotations

import ctypes
import re

import pytest

from autogen.generator.macros import Macro, translate
from autogen.ioctl import _IO, _IOC, _IOR, _IOW, _IOWR, decode


def m(name: str, body: str, params: list[str] | None = None, file: str = "t.h") -> Macro:
    return Macro(name, params, body.split(), file, 1)


class struct_args(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint64), ("b", ctypes.c_uint32), ("c", ctypes.c_uint32)]


def run(local, external=(), ns=None):
    namespace = {"ctypes": ctypes, "_IO": _IO, "_IOR": _IOR, "_IOW": _IOW, "_IOWR": _IOWR, "_IOC": _IOC,
                 "struct_args": struct_args, **(ns or {})}
    return translate(local, {x.name: x for x in external}, namespace), namespace


def test_values_suffixes_casts_and_char_literals():
    tr, ns = run([m("A", "0x10UL"), m("B", "( A << 4 )"), m("C", "( ( uint32_t ) 7 )"), m("D", "'K'"),
                  m("E", "010"), m("F", '"fw.bin"')])
    assert (ns["A"], ns["B"], ns["C"], ns["D"], ns["E"], ns["F"]) == (0x10, 0x100, 7, 75, 8, "fw.bin")
    assert not tr.untranslated


def test_function_like_macros_become_functions_and_may_use_later_definitions():
    tr, ns = run([m("PKT", "( ( ( op ) & 0xFF ) << 8 | ( ( n ) & MASK ) << 16 )", ["op", "n"]), m("MASK", "0x3FFF")])
    assert ns["PKT"](0x49, 6) == (0x49 << 8) | (6 << 16)
    assert any(line.strip().startswith("def PKT(op, n):") for line in tr.lines)


def test_ioctl_numbers_are_computed_through_wrapper_macros():
    external = [m("_IOC_TYPECHECK", "( sizeof ( t ) )", ["t"], "ioctl.h")]
    tr, ns = run([m("BASE", "'K'"), m("IOWR", "_IOWR ( BASE , nr , type )", ["nr", "type"]),
                  m("IOC_X", "IOWR ( 0x02 , struct args )")], external)
    assert ns["IOC_X"] == _IOWR("K", 2, struct_args) == 0xC0104B02
    assert decode(ns["IOC_X"]) == (3, ord("K"), 2, 16)
    assert any("IOC_X = 0xc0104b02  # IOWR(0x02, struct args)" == line for line in tr.lines)


def test_external_macros_expand_like_the_preprocessor():
    external = [m("BASE_CMD", "0x40", file="drm.h"), m("CMD", "( BASE_CMD + x )", ["x"], "drm.h")]
    _, ns = run([m("MINE", "CMD ( 3 )")], external)
    assert ns["MINE"] == 0x43 and "CMD" not in ns


@pytest.mark.parametrize("body,params,why", [
    ("a ## b", ["a", "b"], "##"),
    ('"%x" , ( x )', ["x"], "comma list"),
    ("( x ) ? 1 : 0", ["x"], "'?'"),
    ("( x & 1 == 1 )", ["x"], "mixes comparisons"),
    ("do { } while ( 0 )", [], "'do'"),
    ("UNKNOWN_THING + 1", None, "UNKNOWN_THING"),
])
def test_untranslatable_macros_are_reported_not_dropped(body, params, why):
    tr, ns = run([m("BAD", body, params)])
    assert "BAD" not in ns and why in tr.untranslated["BAD"]


def test_empty_and_filtered_macros_are_counted():
    tr, ns = run([m("GUARD_H", ""), m("regKEEP", "0x1"), m("regDROP", "0x2")], ns=None)
    assert tr.empty == ["GUARD_H"] and "regKEEP" in ns
    ns2: dict = {}
    tr2 = translate([m("regKEEP", "0x1"), m("regDROP", "0x2")], {}, ns2, re.compile("KEEP"))
    assert tr2.filtered == 1 and "regDROP" not in ns2


def test_ioctl_encoding_matches_the_asm_generic_layout():
    assert _IO("K", 1) == 0x4B01
    assert _IOR(ord("d"), 0x40, 8) == 0x80086440
    assert _IOW("K", 4, 32) == 0x40204B04
    with pytest.raises(ValueError, match="does not fit"):
        _IOC(3, "K", 1, 1 << 14)
