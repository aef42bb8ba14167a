"""The session record as the scripts see it: msgpack's shortest integer and string forms, and a
record cut around its version (the conditional-store script puts in the version it decides)."""

from __future__ import annotations

from typing import Final

from sessionkeeper import Session
from sessionkeeper.backend import encode_session

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


def _tail_length(session: Session) -> int:
    """How many bytes end the record of ``session`` after its version: the encoded owner and
    absolute timeout (msgpack's shortest forms, as :func:`sessionkeeper.backend.encode_session`
    writes them)."""
    owner = session.owner
    if owner is None:
        length = 1
    else:
        size = len(owner.encode())
        length = size + (1 if size < 32 else 2 if size < 256 else 3)
    absolute = session.absolute_timeout_ms
    if absolute is None:
        return length + 1
    return length + len(_pack_uint(absolute))


def split_record(session: Session) -> tuple[bytes, bytes]:
    """The record of ``session`` cut around its version: ``(head, tail)`` such that
    ``head + <version encoded> + tail`` is the record of the session with that version. The
    conditional-store script puts in the version it decides on the server."""
    record = encode_session(session)
    end = len(record) - _tail_length(session)
    return record[: end - len(_pack_uint(session.version))], record[end:]
