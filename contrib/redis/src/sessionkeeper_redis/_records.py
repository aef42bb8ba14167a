"""The session record as the scripts see it: msgpack's shortest integer and string forms (the
scripts compare and count versions and timestamps on their encodings)."""

from __future__ import annotations

from typing import Final

#: The record formats the scripts read (see :mod:`sessionkeeper_redis._scripts`); they write
#: the last one.
RECORD_FORMATS: Final = (1, 2)
_UINT_FORMATS: Final = ((0xFF, b"\xcc", 1), (0xFFFF, b"\xcd", 2), (0xFFFFFFFF, b"\xce", 4))


def _pack_uint(value: int) -> bytes:
    """``value`` (0 <= value < 2**64) as msgpack writes it: in its shortest form."""
    if value < 0x80:
        return bytes((value,))
    for limit, tag, size in _UINT_FORMATS:
        if value <= limit:
            return tag + value.to_bytes(size, "big")
    return b"\xcf" + value.to_bytes(8, "big")


def _unpack_uint(data: bytes) -> int:
    """The number msgpack encoded as ``data`` (an unsigned integer, as :func:`_pack_uint`
    writes it)."""
    return data[0] if len(data) == 1 else int.from_bytes(data[1:], "big")


def _pack_str(text: str) -> bytes:
    """A session id (1-256 ASCII characters) as msgpack writes a string."""
    data = text.encode()
    size = len(data)
    if size < 32:
        return bytes((0xA0 | size,)) + data
    if size < 256:
        return b"\xd9" + bytes((size,)) + data
    return b"\xda" + size.to_bytes(2, "big") + data
