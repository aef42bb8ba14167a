"""The wire format between nodes: msgpack bodies with size limits and a schema check each.

Every message is two frames, ``[kind, body]`` (a ROUTER sees ``[peer, kind, body]``): ``kind``
is one of :data:`KINDS`, ``body`` a msgpack array whose shape :func:`decode` checks. Nothing on
the wire is ever unpickled; ext types are refused; a frame that fails any check raises
:class:`WireError`, and the node drops it and counts it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Final

import msgpack

from sessionkeeper import CodecError, InvalidSession, Session, decode_session, validate_id

from ._replica import BUCKETS, Entry

__all__ = ["KINDS", "MAX_MESSAGE", "WireError", "check_entry", "decode", "encode"]

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


def _unpack(data: bytes) -> Any:
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


def _int(value: object, what: str, low: int = 0) -> int:
    if type(value) is not int or not low <= value <= _MAX_INT:
        raise WireError(f"{what} must be an int >= {low}, got {value!r:.40}")
    return value


def _str(value: object, what: str) -> str:
    if type(value) is not str or not value or len(value) > 256:
        raise WireError(f"{what} must be a short string, got {value!r:.40}")
    return value


def _list(value: object, what: str, length: int | None = None) -> list[Any]:
    if type(value) is not list or (length is not None and len(value) != length):
        raise WireError(f"{what} must be an array{f' of {length}' if length else ''}")
    return value


def _bytes(value: object, what: str, size: int | None = None) -> bytes:
    if type(value) is not bytes or (size is not None and len(value) != size):
        raise WireError(f"{what} must be bin{f' of {size} bytes' if size else ''}")
    return value


def _bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise WireError(f"{what} must be a bool")
    return value


def check_entry(raw: object, nodes: Collection[str]) -> tuple[Entry, Session | None]:
    """Validate one replicated entry and decode its session (``None`` for a tombstone)."""
    fields = _list(raw, "entry", 6)
    key, hlc, node, la, blob, timeout = fields
    try:
        validate_id(key)
    except InvalidSession as exc:
        raise WireError(f"entry key: {exc}") from None
    _int(hlc, "entry hlc")
    if node not in nodes:
        raise WireError(f"entry version names unknown node {node!r:.40}")
    _int(la, "entry last_accessed")
    if timeout is not None:
        _int(timeout, "entry timeout", 1)
    session: Session | None = None
    if blob is not None:
        _bytes(blob, "entry blob")
        try:
            session = decode_session(blob)
        except CodecError as exc:
            raise WireError(f"entry session: {exc}") from None
        if session.id != key or session.last_accessed != la or session.timeout_ms != timeout:
            raise WireError(f"entry {key!r} does not match the session it carries")
    return (key, hlc, node, la, blob, timeout), session


def _entries(value: object, nodes: Collection[str]) -> list[tuple[Entry, Session | None]]:
    return [check_entry(item, nodes) for item in _list(value, "entries")]


def _seen(value: object, nodes: Collection[str]) -> dict[str, tuple[int, int]]:
    if type(value) is not dict:
        raise WireError("seen must be a map")
    result: dict[str, tuple[int, int]] = {}
    for origin, position in value.items():
        if origin not in nodes:
            raise WireError(f"seen names unknown node {origin!r:.40}")
        inc, seq = _list(position, "seen position", 2)
        result[origin] = (_int(inc, "seen inc"), _int(seq, "seen seq"))
    return result


def _summaries(value: object, nodes: Collection[str]) -> list[tuple[str, int, str, int]]:
    result = []
    for item in _list(value, "summaries"):
        key, hlc, node, la = _list(item, "summary", 4)
        if node not in nodes:
            raise WireError("summary names an unknown node")
        result.append((_str(key, "summary key"), _int(hlc, "hlc"), node, _int(la, "la")))
    return result


def _keys(value: object) -> list[str]:
    return [_str(key, "key") for key in _list(value, "keys")]


# --- messages ------------------------------------------------------------------------------------
# Each checker takes the unpacked body and the configured node ids and returns the checked
# fields (entries decoded). Requests go DEALER -> ROUTER, replies ROUTER -> DEALER.


def _ping(b: Any, nodes: Collection[str]) -> Any:
    node, inc, seq, hlc, root, ready, accompanied = _list(b, "PING", 7)
    if node not in nodes:
        raise WireError("PING from an unknown node")
    return (
        node,
        _int(inc, "inc"),
        _int(seq, "seq"),
        _int(hlc, "hlc"),
        _bytes(root, "root", 16),
        _bool(ready, "ready"),
        _bool(accompanied, "accompanied"),
    )


def _pong(b: Any, nodes: Collection[str]) -> Any:
    node, inc, seq, hlc, acked_inc, acked, root, ready, accompanied = _list(b, "PONG", 9)
    if node not in nodes:
        raise WireError("PONG from an unknown node")
    return (
        node,
        _int(inc, "inc"),
        _int(seq, "seq"),
        _int(hlc, "hlc"),
        _int(acked_inc, "acked inc"),
        _int(acked, "acked"),
        _bytes(root, "root", 16),
        _bool(ready, "ready"),
        _bool(accompanied, "accompanied"),
    )


def _repl(b: Any, nodes: Collection[str]) -> Any:
    origin, inc, ops = _list(b, "REPL", 3)
    if origin not in nodes:
        raise WireError("REPL from an unknown node")
    checked = []
    for op in _list(ops, "ops"):
        seq, entry = _list(op, "op", 2)
        checked.append((_int(seq, "op seq", 1), *check_entry(entry, nodes)))
    return origin, _int(inc, "inc"), checked


def _ack(b: Any, nodes: Collection[str]) -> Any:
    inc, seq = _list(b, "ACK", 2)
    return _int(inc, "inc"), _int(seq, "seq")


def _sync(b: Any, nodes: Collection[str]) -> Any:
    req, credit = _list(b, "SYNC", 2)
    return _int(req, "req"), _int(credit, "credit")


def _chunk(b: Any, nodes: Collection[str]) -> Any:
    req, entries = _list(b, "CHUNK", 2)
    return _int(req, "req"), _entries(entries, nodes)


def _end(b: Any, nodes: Collection[str]) -> Any:
    req, total, seen = _list(b, "END", 3)
    return _int(req, "req"), _int(total, "total"), _seen(seen, nodes)


def _digest(b: Any, nodes: Collection[str]) -> Any:
    req, hashes = _list(b, "AE", 2)
    hashes = _list(hashes, "bucket hashes", BUCKETS)
    for h in hashes:
        if type(h) is not int or not 0 <= h < 2**64:
            raise WireError("bucket hashes must be 64-bit unsigned ints")
    return _int(req, "req"), hashes


def _aekeys(b: Any, nodes: Collection[str]) -> Any:
    req, buckets, summaries = _list(b, "AEKEYS", 3)
    checked_buckets = [_int(x, "bucket") for x in _list(buckets, "buckets")]
    if any(x >= BUCKETS for x in checked_buckets):
        raise WireError("bucket out of range")
    return _int(req, "req"), checked_buckets, _summaries(summaries, nodes)


def _pull(b: Any, nodes: Collection[str]) -> Any:
    req, keys = _list(b, "PULL", 2)
    return _int(req, "req"), _keys(keys)


def _push(b: Any, nodes: Collection[str]) -> Any:
    req, entries = _list(b, "PUSH", 2)
    return _int(req, "req"), _entries(entries, nodes)


def _delta(b: Any, nodes: Collection[str]) -> Any:
    req, inc, seq = _list(b, "DELTA", 3)
    return _int(req, "req"), _int(inc, "inc"), _int(seq, "seq")


def _deltaok(b: Any, nodes: Collection[str]) -> Any:
    req, top = _list(b, "DELTAOK", 2)
    return _int(req, "req"), _int(top, "top")


def _deltano(b: Any, nodes: Collection[str]) -> Any:
    (req,) = _list(b, "DELTANO", 1)
    return _int(req, "req")


def _needsync(b: Any, nodes: Collection[str]) -> Any:
    (inc,) = _list(b, "NEEDSYNC", 1)
    return _int(inc, "inc")


def _bye(b: Any, nodes: Collection[str]) -> Any:
    node, inc = _list(b, "BYE", 2)
    if node not in nodes:
        raise WireError("BYE from an unknown node")
    return node, _int(inc, "inc")


#: kind -> checker of its body.
KINDS: Final[dict[bytes, Callable[[Any, Collection[str]], Any]]] = {
    b"PING": _ping,
    b"PONG": _pong,
    b"REPL": _repl,
    b"ACK": _ack,
    b"SYNC": _sync,
    b"CREDIT": _sync,
    b"CHUNK": _chunk,
    b"END": _end,
    b"AE": _digest,
    b"AEKEYS": _aekeys,
    b"PULL": _pull,
    b"PUSH": _push,
    b"READ": _pull,
    b"RREP": _push,
    b"NEEDSYNC": _needsync,
    b"DELTA": _delta,
    b"DELTAOK": _deltaok,
    b"DELTANO": _deltano,
    b"BYE": _bye,
}


def decode(kind: bytes, body: bytes, nodes: Collection[str]) -> Any:
    """Check one message; return its fields or raise :class:`WireError`."""
    checker = KINDS.get(kind)
    if checker is None:
        raise WireError(f"unknown message kind {kind[:16]!r}")
    try:
        return checker(_unpack(body), nodes)
    except WireError:
        raise
    except (ValueError, TypeError) as exc:  # wrong arity when unpacking a list
        raise WireError(f"malformed {kind.decode()} message: {exc}") from None
