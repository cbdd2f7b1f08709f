"""Base classes for generated ctypes structs: readable repr and conversion to plain dicts for reports."""
from __future__ import annotations

import ctypes
from typing import Any


def _plain(value: Any) -> Any:
    if isinstance(value, (Structure, Union)):
        return value.as_dict()
    if isinstance(value, ctypes.Array):
        return [_plain(v) for v in value]
    return value


class _Fields:
    def as_dict(self) -> dict[str, Any]:
        """Fields as a dict (nested structs and arrays converted), skipping generated padding."""
        return {f[0]: _plain(getattr(self, f[0])) for f in self._fields_ if not f[0].startswith("PADDING_")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"


class Structure(_Fields, ctypes.Structure):
    """A generated C struct."""


class Union(_Fields, ctypes.Union):
    """A generated C union."""
