"""A small MessagePack decoder: enough for the AMDGPU code object metadata note (maps, arrays, strings, ints,
floats, bools, nil, binary). Formats are those of the MessagePack specification (github.com/msgpack/msgpack,
spec.md); all multi-byte values are big-endian."""
from __future__ import annotations

import struct
from typing import Any


class MsgpackError(ValueError):
    """The bytes are not well-formed MessagePack; the message gives the offset."""


# Fixed-width numbers: first byte -> struct format of the value (float32/64, uint8..64, int8..64)
_FIXED = {0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i",
          0xD3: ">q"}
# Length-prefixed formats: first byte -> (struct format of the length, kind)
_SIZED = {0xC4: (">B", "bin"), 0xC5: (">H", "bin"), 0xC6: (">I", "bin"), 0xD9: (">B", "str"), 0xDA: (">H", "str"),
          0xDB: (">I", "str"), 0xDC: (">H", "array"), 0xDD: (">I", "array"), 0xDE: (">H", "map"), 0xDF: (">I", "map"),
          0xC7: (">B", "ext"), 0xC8: (">H", "ext"), 0xC9: (">I", "ext")}
_FIXEXT = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = memoryview(data), 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MsgpackError(f"truncated: need {n} bytes at offset {self.pos}, have {len(self.data) - self.pos}")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def value(self, depth: int = 0) -> Any:
        if depth > 64:
            raise MsgpackError(f"nesting deeper than 64 at offset {self.pos}")
        at = self.pos
        b = self.take(1)[0]
        if b <= 0x7F:
            return b
        if b >= 0xE0:
            return b - 0x100
        if 0x80 <= b <= 0x8F:
            return self.map(b & 0x0F, depth)
        if 0x90 <= b <= 0x9F:
            return [self.value(depth + 1) for _ in range(b & 0x0F)]
        if 0xA0 <= b <= 0xBF:
            return self.text(b & 0x1F)
        if b == 0xC0:
            return None
        if b in (0xC2, 0xC3):
            return b == 0xC3
        if b in _FIXED:
            return self.unpack(_FIXED[b])
        if b in _FIXEXT:
            return ("ext", self.unpack(">b"), self.take(_FIXEXT[b]))
        if b in _SIZED:
            fmt, kind = _SIZED[b]
            n = self.unpack(fmt)
            if kind == "bin":
                return self.take(n)
            if kind == "str":
                return self.text(n)
            if kind == "array":
                return [self.value(depth + 1) for _ in range(n)]
            if kind == "map":
                return self.map(n, depth)
            return ("ext", self.unpack(">b"), self.take(n))
        raise MsgpackError(f"byte {b:#04x} at offset {at} is not a MessagePack format (0xc1 is never used)")

    def text(self, n: int) -> str:
        at = self.pos
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as e:
            raise MsgpackError(f"string at offset {at} is not UTF-8: {e}") from e

    def map(self, n: int, depth: int) -> dict:
        out = {}
        for _ in range(n):
            key = self.value(depth + 1)
            if isinstance(key, (list, dict)):
                raise MsgpackError(f"unhashable map key before offset {self.pos}")
            out[key] = self.value(depth + 1)
        return out


def unpackb(data: bytes) -> Any:
    """Decode exactly one MessagePack value; trailing bytes are an error. Ext types decode to ('ext', type, bytes)."""
    r = _Reader(data)
    v = r.value()
    if r.pos != len(data):
        raise MsgpackError(f"{len(data) - r.pos} trailing bytes after the value at offset {r.pos}")
    return v
