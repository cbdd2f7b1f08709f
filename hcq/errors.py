"""Errors the HCQ core raises; drivers subclass these so callers can catch one family."""
from __future__ import annotations


class HCQError(Exception):
    """Base of every error the HCQ layer raises."""


class OutOfMemoryError(HCQError, MemoryError):
    """An allocation did not fit; the message names the heap, the request and what is free."""


class InvalidHandleError(HCQError):
    """A freed or unknown handle (buffer, address, signal) was used; nothing was changed."""


class DeviceClosedError(HCQError):
    """The device was closed; its memory, signals and queues are gone. Open it again to use it."""
