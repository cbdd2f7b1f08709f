"""MessagePack decoding for the AMDGPU code object metadata note, through the msgpack library (PyPI `msgpack`).

The library does the parsing; this wrapper fixes the options the metadata needs (strings as str, keys of any
hashable type, arrays as lists) and turns every way the library rejects bytes into one error type whose message
names what was being decoded and why it failed.
"""
from __future__ import annotations

from typing import Any

import msgpack


class MsgpackError(ValueError):
    """The bytes are not one well-formed MessagePack value; the message names what was decoded and why."""


def unpackb(data: bytes, what: str = "MessagePack data") -> Any:
    """Decode exactly one MessagePack value (trailing bytes are an error); `what` names the data in errors.
    Strings decode to str, binary to bytes, arrays to lists, ext types to msgpack.ExtType."""
    try:
        return msgpack.unpackb(bytes(data), raw=False, strict_map_key=False, use_list=True)
    except msgpack.ExtraData as e:
        raise MsgpackError(f"{what}: {len(e.extra)} trailing bytes after the first value "
                           f"({len(data) - len(e.extra)} bytes)") from None
    except msgpack.StackError:
        raise MsgpackError(f"{what}: nested too deeply for the msgpack library") from None
    except msgpack.FormatError:
        raise MsgpackError(f"{what}: a byte that starts no MessagePack format (0xc1 is never used)") from None
    except UnicodeDecodeError as e:
        raise MsgpackError(f"{what}: a string is not UTF-8 ({e.reason} at byte {e.start} of the string)") from None
    except TypeError as e:  # a map key that is an array or map cannot be a dict key
        raise MsgpackError(f"{what}: a map key is not hashable ({e})") from None
    except ValueError as e:  # truncated input and the library's other checks
        raise MsgpackError(f"{what}: {e} ({len(data)} bytes)") from None
