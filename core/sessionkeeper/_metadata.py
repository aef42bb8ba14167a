"""Session metadata: what it may hold (JSON's types), and packing it.

Metadata is a ``dict`` with ``str`` keys whose values JSON can hold: ``None``, ``bool``, an ``int``
of at most 64 bits, a finite ``float``, ``str``, a ``list`` (or ``tuple``) or a ``dict`` of them,
nested at most :data:`MAX_METADATA_DEPTH` deep. A session keeps it packed (msgpack).

The check runs where metadata enters (a new session) and where it is read back from storage
(the codec). On the way in, a pure-Python walk checks every key and value (:func:`_check_json`);
on the way back, the packed bytes prove most metadata valid in C (:func:`proven_json`, with
msgpack refusing keys that are not str), and the walk runs only when they cannot — it is also
what names what is wrong and where.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgpack

from ._errors import InvalidSession

__all__ = [
    "EMPTY_METADATA",
    "HARD_METADATA_LIMIT",
    "MAX_METADATA_DEPTH",
    "PackedMetadata",
    "pack_metadata",
    "proven_json",
    "unpack_metadata",
]

#: How deep metadata may nest (a dict inside a list inside a dict is depth 3).
MAX_METADATA_DEPTH: Final = 32
#: An upper bound on packed metadata that no configuration can raise; the manager applies the
#: configured, smaller ``max_metadata_bytes`` at ``store``.
HARD_METADATA_LIMIT: Final = 16 * 1024 * 1024
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


class PackedMetadata(bytes):
    """Metadata already validated and packed: the only bytes :class:`Session` takes as metadata."""

    __slots__ = ()


def _describe(value: object) -> str:
    return type(value).__name__


def _is_json(value: object, depth: int) -> bool:
    """Whether ``value`` is JSON-compatible metadata, exactly the plain types only.

    The fast path of :func:`_check_json`: it builds no message and no path for each item (those
    f-strings made a decode eight times slower than the unpacking). A ``False`` here is not yet
    a verdict: subclasses of the JSON types are accepted by the full check, which also says what
    is wrong and where.
    """
    cls = value.__class__
    if cls is str or value is None or cls is bool:
        return True
    if cls is int:
        return _INT_MIN <= value <= _INT_MAX  # type: ignore[operator]
    if cls is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if depth >= MAX_METADATA_DEPTH:
        return False
    if cls is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if key.__class__ is not str or not _is_json(item, depth + 1):
                return False
        return True
    if cls is list or cls is tuple:
        for item in value:  # type: ignore[attr-defined]  # noqa: SIM110 (a loop: no generator)
            if not _is_json(item, depth + 1):
                return False
        return True
    return False


def _check_json(value: object, where: str, depth: int) -> None:
    """Raise :class:`InvalidSession` naming the first thing in ``value`` JSON cannot hold."""
    if not _is_json(value, depth):
        _explain_json(value, where, depth)


def _explain_json(value: object, where: str, depth: int) -> None:
    # bool before int (bool is an int); subclasses of the JSON types are accepted.
    if value is None or isinstance(value, str | bool):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidSession(where, f"integer {value} does not fit in 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidSession(where, f"{value!r} is not a JSON number")
        return
    if depth >= MAX_METADATA_DEPTH:
        raise InvalidSession(where, f"nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidSession(where, f"keys must be str, got {_describe(key)} key {key!r}")
            _explain_json(item, f"{where}[{key!r}]", depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _explain_json(item, f"{where}[{index}]", depth + 1)
        return
    raise InvalidSession(
        where,
        f"{_describe(value)} is not JSON-compatible "
        "(use str, int, float, bool, None, list or dict)",
    )


def pack_metadata(metadata: object) -> PackedMetadata:
    """Validate ``metadata`` (see Session) and return it packed; raise :class:`InvalidSession`."""
    if metadata is None:
        return EMPTY_METADATA
    if not isinstance(metadata, dict):
        raise InvalidSession("metadata", f"must be a dict with str keys, got {_describe(metadata)}")
    # The walk first: a packed map cannot prove its keys are str (msgpack packs any key), and
    # the walk of small metadata costs less than packing it twice or scanning it.
    _check_json(metadata, "metadata", 0)
    try:
        packed = msgpack.packb(metadata, use_bin_type=True)
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        raise InvalidSession("metadata", f"cannot be encoded: {exc}") from None
    if len(packed) > HARD_METADATA_LIMIT:
        raise InvalidSession(
            "metadata", f"encodes to {len(packed)} bytes, over the {HARD_METADATA_LIMIT} limit"
        )
    return PackedMetadata(packed)


def unpack_metadata(packed: bytes) -> dict[str, Any]:
    """Unpack metadata that :func:`pack_metadata` produced."""
    result: dict[str, Any] = msgpack.unpackb(packed, raw=False)
    return result


EMPTY_METADATA: Final = PackedMetadata(msgpack.packb({}))


#: The msgpack type bytes whose values JSON may not hold: ``0xc1`` (never used), bin (bytes: a
#: value, or a key that is not a str), ext, and float (NaN and the infinities). Any other
#: msgpack value is nil, a bool, an int of at most 64 bits, a str, an array or a map.
_NOT_JSON_TYPES: Final = bytes([0xC1, *range(0xC4, 0xCC), *range(0xD4, 0xD9)])
#: The container type bytes: fixmap, fixarray, array 16/32, map 16/32.
_CONTAINERS: Final = bytes([*range(0x80, 0xA0), *range(0xDC, 0xE0)])
#: Every other byte, deleted by the scan.
_OTHER: Final = bytes(set(range(256)) - set(_NOT_JSON_TYPES + _CONTAINERS))


def proven_json(packed: bytes) -> bool:
    """Whether the bytes of ``packed`` (a msgpack map) prove that, unpacked with
    ``strict_map_key`` (which refuses keys other than str and bytes), it is JSON-compatible
    metadata: no byte is the type of a value JSON cannot hold, and there are no more
    containers than the depth limit (so none nests deeper). Two ``bytes.translate`` in C: as
    cheap as the walk of a one-key map, a quarter of it at five keys with a list or a map.

    ``False`` proves nothing (the same bytes may sit inside a string: UTF-8 beyond ASCII;
    many small containers): the walk of :func:`_check_json` decides then.
    """
    kinds = packed.translate(None, _OTHER)
    return len(kinds) <= MAX_METADATA_DEPTH and not kinds.translate(None, _CONTAINERS)
