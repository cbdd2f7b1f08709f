"""Environment variables, checked when read: a bad value names the variable, the value and what is allowed.

Every BAREGPU_* variable the stack reads goes through one of these readers, so `BAREGPU_SYNC_TIMEOUT=abc`
says which variable is wrong and what it takes instead of raising a bare ValueError from float().
An unset or empty variable means its default.
"""
from __future__ import annotations

import math
import os
from typing import Iterable, Optional

TRUE_WORDS = ("1", "yes", "true", "on")
FALSE_WORDS = ("0", "no", "false", "off")


class EnvError(ValueError):
    """An environment variable holds a value the stack cannot use; the message says what it takes."""

    def __init__(self, name: str, value: str, allowed: str):
        super().__init__(f"environment variable {name}={value!r} is not valid: {allowed}. "
                         f"Fix it or unset it (unset {name}) to use the default.")
        self.name, self.value, self.allowed = name, value, allowed


def raw(name: str) -> Optional[str]:
    """The variable's text with surrounding blanks removed, or None when unset or empty."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def env_seconds(name: str, default: Optional[float]) -> Optional[float]:
    """A duration in seconds that must be a finite number > 0 (a timeout of 0 would report a fake hang)."""
    text = raw(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise EnvError(name, os.environ[name], "it takes a number of seconds greater than 0, such as 30 or 0.5")
    return value


def env_flag(name: str, default: bool = False) -> bool:
    """A yes/no switch: 1/yes/true/on or 0/no/false/off (any case)."""
    text = raw(name)
    if text is None:
        return default
    if text.lower() in TRUE_WORDS:
        return True
    if text.lower() in FALSE_WORDS:
        return False
    raise EnvError(name, os.environ[name], f"it takes one of {', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)}")


def env_int(name: str, default: int, minimum: int = 0, maximum: Optional[int] = None) -> int:
    """A whole number in [minimum, maximum]."""
    text = raw(name)
    if text is None:
        return default
    try:
        value = int(text, 10)
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        span = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise EnvError(name, os.environ[name], f"it takes a whole number {span}")
    return value


def env_list(name: str, default: tuple[str, ...], allowed: Iterable[str], what: str) -> tuple[str, ...]:
    """A comma-separated list whose every item is one of `allowed`; `what` names an item (e.g. 'gfx target').

    Set but empty (only commas or blanks) is an error, not the default: somebody meant to choose.
    """
    if name not in os.environ:
        return default
    allowed = tuple(allowed)
    items = tuple(t.strip() for t in os.environ[name].split(",") if t.strip())
    unknown = [t for t in items if t not in allowed]
    if not items or unknown:
        bad = f" ({', '.join(map(repr, unknown))} unknown)" if unknown else " (it is empty)"
        raise EnvError(name, os.environ[name], f"it takes a comma-separated list of {what}s from "
                       f"{', '.join(allowed)}{bad}")
    return items


__all__ = ["EnvError", "env_flag", "env_int", "env_list", "env_seconds", "raw"]
