"""The wire format between nodes: msgpack with size limits, and the checks of its fields.

Every message is two frames, ``[kind, body]`` (a ROUTER sees ``[peer, kind, body]``); ``body``
is a msgpack array. This module holds the codec (:func:`encode`, :func:`pack`, :func:`unpack`)
and the checks of the values a body carries (:func:`as_int`, :func:`check_entry`...); the
messages themselves, one class per kind, are in :mod:`._messages`. Nothing on the wire is ever
unpickled; ext types are refused; a frame that fails any check raises :class:`WireError`, and
the node drops it and counts it.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

import msgpack

from sessionkeeper import InvalidSession, Session, validate_id
from sessionkeeper.backend import CodecError, decode_session

from ._replica import Entry

__all__ = [
    "MAX_MESSAGE",
    "Checked",
    "Summary",
    "WireError",
    "as_bool",
    "as_bytes",
    "as_int",
    "as_list",
    "as_str",
    "check_entries",
    "check_entry",
    "check_keys",
    "check_seen",
    "check_summaries",
    "encode",
    "pack",
    "unpack",
]

#: A checked entry and the session it carries (``None`` for a tombstone).
Checked = tuple[Entry, Session | None]
#: ``(key, hlc, node, last_accessed)``: what anti-entropy compares of an entry.
Summary = tuple[str, int, str, int]

#: The largest message accepted (also the sockets' ``MAXMSGSIZE``).
MAX_MESSAGE: Final = 64 * 1024 * 1024
_MAX_BIN: Final = 16 * 1024 * 1024 + 4096
_MAX_ARRAY: Final = 2_000_000
_MAX_INT: Final = 2**63 - 1


class WireError(ValueError):
    """A frame that is not a valid message of the protocol."""


def _no_ext(code: int, data: bytes) -> Any:
    raise WireError(f"msgpack ext type {code} is not allowed")


_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def encode(body: Any) -> bytes:
    """Pack a message body (not thread-safe: called on the node's I/O thread)."""
    data: bytes = _packer.pack(body)
    return data


def pack(body: Any) -> bytes:
    """Pack a message body from any thread."""
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def unpack(data: bytes) -> Any:
    """Unpack a body within the limits (raises :class:`WireError`)."""
    if len(data) > MAX_MESSAGE:
        raise WireError(f"message of {len(data)} bytes is over the {MAX_MESSAGE} limit")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_no_ext,
            max_str_len=1024 * 1024,
            max_bin_len=_MAX_BIN,
            max_array_len=_MAX_ARRAY,
            max_map_len=1024,
            max_ext_len=0,
        )
    except WireError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise WireError(f"not msgpack ({type(exc).__name__}: {exc})") from None


# --- field checks --------------------------------------------------------------------------------
# Each returns the value checked (typed) or raises WireError naming ``what``.


def as_int(value: object, what: str, low: int = 0) -> int:
    """An int in ``[low, 2**63)``."""
    if type(value) is not int or not low <= value <= _MAX_INT:
        raise WireError(f"{what} must be an int >= {low}, got {value!r:.40}")
    return value


def as_str(value: object, what: str) -> str:
    """A non-empty string of at most 256 characters."""
    if type(value) is not str or not value or len(value) > 256:
        raise WireError(f"{what} must be a short string, got {value!r:.40}")
    return value


def as_list(value: object, what: str, length: int | None = None) -> list[Any]:
    """An array (of ``length`` items, when given)."""
    if type(value) is not list or (length is not None and len(value) != length):
        raise WireError(f"{what} must be an array{f' of {length}' if length else ''}")
    return value


def as_bytes(value: object, what: str, size: int | None = None) -> bytes:
    """A bin (of ``size`` bytes, when given)."""
    if type(value) is not bytes or (size is not None and len(value) != size):
        raise WireError(f"{what} must be bin{f' of {size} bytes' if size else ''}")
    return value


def as_bool(value: object, what: str) -> bool:
    """A bool (not an int)."""
    if type(value) is not bool:
        raise WireError(f"{what} must be a bool")
    return value


def as_node(value: object, what: str, nodes: Collection[str]) -> str:
    """The id of a configured node."""
    if type(value) is not str or value not in nodes:
        raise WireError(f"{what} names an unknown node {value!r:.40}")
    return value


def check_entry(raw: object, nodes: Collection[str]) -> Checked:
    """Validate one replicated entry and decode its session (``None`` for a tombstone)."""
    fields = as_list(raw, "entry", 6)
    key, hlc, node, la, blob, timeout = fields
    try:
        validate_id(key)
    except InvalidSession as exc:
        raise WireError(f"entry key: {exc}") from None
    as_int(hlc, "entry hlc")
    as_node(node, "entry version", nodes)
    as_int(la, "entry last_accessed")
    if timeout is not None:
        as_int(timeout, "entry timeout", 1)
    session: Session | None = None
    if blob is not None:
        as_bytes(blob, "entry blob")
        try:
            session = decode_session(blob)
        except CodecError as exc:
            raise WireError(f"entry session: {exc}") from None
        if session.id != key or session.last_accessed != la or session.timeout_ms != timeout:
            raise WireError(f"entry {key!r} does not match the session it carries")
    return (key, hlc, node, la, blob, timeout), session


def check_entries(value: object, nodes: Collection[str]) -> list[Checked]:
    """An array of entries, each checked and its session decoded."""
    return [check_entry(item, nodes) for item in as_list(value, "entries")]


def check_seen(value: object, nodes: Collection[str]) -> dict[str, tuple[int, int]]:
    """Stream positions: a map ``origin -> [inc, seq]`` of configured nodes."""
    if type(value) is not dict:
        raise WireError("seen must be a map")
    result: dict[str, tuple[int, int]] = {}
    for origin, position in value.items():
        as_node(origin, "seen", nodes)
        inc, seq = as_list(position, "seen position", 2)
        result[origin] = (as_int(inc, "seen inc"), as_int(seq, "seen seq"))
    return result


def check_summaries(value: object, nodes: Collection[str]) -> list[Summary]:
    """An array of :data:`Summary`."""
    result = []
    for item in as_list(value, "summaries"):
        key, hlc, node, la = as_list(item, "summary", 4)
        as_node(node, "summary", nodes)
        result.append((as_str(key, "summary key"), as_int(hlc, "hlc"), node, as_int(la, "la")))
    return result


def check_keys(value: object) -> list[str]:
    """An array of short strings."""
    return [as_str(key, "key") for key in as_list(value, "keys")]
