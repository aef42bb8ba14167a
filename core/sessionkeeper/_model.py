"""The session model (DESIGN §2).

A :class:`Session` keeps its metadata packed (msgpack bytes, validated once when the session is
built) and unpacks a fresh ``dict`` each time :attr:`Session.metadata` is read. That is what keeps a
stored session near 270 bytes and makes a stored session safe to share between threads: no caller
can mutate what the store holds.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from typing import Any, Final

import attrs
import msgpack

from ._errors import InvalidSession

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_METADATA_DEPTH",
    "Session",
    "generate_id",
    "validate_id",
]

MAX_ID_LENGTH: Final = 256
#: How deep metadata may nest (a dict inside a list inside a dict is depth 3).
MAX_METADATA_DEPTH: Final = 32
#: An upper bound on packed metadata that no configuration can raise; the manager applies the
#: configured, smaller ``max_metadata_bytes`` at ``store``.
HARD_METADATA_LIMIT: Final = 16 * 1024 * 1024
_MAX_TIME: Final = 2**63 - 1
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


class PackedMetadata(bytes):
    """Metadata already validated and packed: the only bytes :class:`Session` takes as metadata."""

    __slots__ = ()


def _describe(value: object) -> str:
    return type(value).__name__


def _check_json(value: object, where: str, depth: int) -> None:
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
            _check_json(item, f"{where}[{key!r}]", depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]", depth + 1)
        return
    raise InvalidSession(
        where,
        f"{_describe(value)} is not JSON-compatible "
        "(use str, int, float, bool, None, list or dict)",
    )


def pack_metadata(metadata: object) -> PackedMetadata:
    """Validate ``metadata`` (DESIGN §2) and return it packed; raise :class:`InvalidSession`."""
    if metadata is None:
        return EMPTY_METADATA
    if not isinstance(metadata, dict):
        raise InvalidSession("metadata", f"must be a dict with str keys, got {_describe(metadata)}")
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


def validate_id(session_id: object) -> str:
    """Return ``session_id`` if it is a valid id (1–256 chars of 0x21–0x7E), else raise."""
    if not isinstance(session_id, str):
        raise InvalidSession("id", f"must be a str, got {_describe(session_id)}")
    if not session_id:
        raise InvalidSession("id", "must not be empty")
    if len(session_id) > MAX_ID_LENGTH:
        raise InvalidSession(
            "id", f"is {len(session_id)} characters long, over the {MAX_ID_LENGTH} limit"
        )
    if not (session_id.isascii() and session_id.isprintable()) or " " in session_id:
        bad = next(ch for ch in session_id if not "\x21" <= ch <= "\x7e")
        raise InvalidSession(
            "id",
            f"contains {bad!r}; only visible ASCII (0x21-0x7E) is allowed",
        )
    return session_id


def _check_time(name: str, value: object) -> int:
    if type(value) is not int:
        raise InvalidSession(name, f"must be an int (ms since the epoch), got {_describe(value)}")
    if not 0 <= value <= _MAX_TIME:
        raise InvalidSession(name, f"{value} is outside 0..2**63-1")
    return value


def check_timeout(value: object) -> int | None:
    """Return ``value`` if it is a valid ``timeout_ms`` (``None`` or an int > 0), else raise."""
    if value is None:
        return None
    if type(value) is not int:
        raise InvalidSession(
            "timeout_ms", f"must be a positive int or None, got {_describe(value)} {value!r}"
        )
    if not 0 < value <= _MAX_TIME:
        raise InvalidSession("timeout_ms", f"must be > 0 (or None for no expiry), got {value}")
    return value


def generate_id() -> str:
    """A new session id: 256 bits from :mod:`secrets`, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


@attrs.frozen(init=False, eq=False, repr=False, slots=True, weakref_slot=False)
class Session:
    """One session. Immutable; build a changed copy with :meth:`replace`.

    :param id: 1–256 characters of visible ASCII (0x21–0x7E).
    :param created_at: milliseconds since the Unix epoch.
    :param last_accessed: milliseconds since the Unix epoch, not before ``created_at``.
    :param timeout_ms: idle time after which the session expires, or ``None`` for never.
    :param metadata: a JSON-compatible dict (str keys).

    Invalid values raise :class:`~sessionkeeper.InvalidSession` naming the field.
    Reading :attr:`metadata` returns a fresh ``dict`` each time: changing it changes nothing stored.
    """

    id: str
    created_at: int
    last_accessed: int
    timeout_ms: int | None
    _metadata: PackedMetadata

    def __init__(
        self,
        id: str,
        created_at: int,
        last_accessed: int,
        timeout_ms: int | None = None,
        metadata: Mapping[str, Any] | PackedMetadata | None = None,
    ) -> None:
        validate_id(id)
        _check_time("created_at", created_at)
        _check_time("last_accessed", last_accessed)
        if last_accessed < created_at:
            raise InvalidSession(
                "last_accessed", f"{last_accessed} is before created_at {created_at}"
            )
        check_timeout(timeout_ms)
        packed = metadata if isinstance(metadata, PackedMetadata) else pack_metadata(metadata)
        self.__attrs_init__(id, created_at, last_accessed, timeout_ms, packed)

    @classmethod
    def _trusted(
        cls,
        id: str,
        created_at: int,
        last_accessed: int,
        timeout_ms: int | None,
        metadata: PackedMetadata,
    ) -> Session:
        """Build without validation, from values that were validated before (codec, touch)."""
        self = object.__new__(cls)
        self.__attrs_init__(id, created_at, last_accessed, timeout_ms, metadata)
        return self

    @property
    def metadata(self) -> dict[str, Any]:
        """A fresh copy of the session's metadata."""
        return unpack_metadata(self._metadata)

    @property
    def packed_metadata(self) -> bytes:
        """The metadata as msgpack bytes (what the codec stores)."""
        return self._metadata

    @property
    def expires_at(self) -> int | None:
        """The last millisecond at which the session is still live, or ``None``."""
        if self.timeout_ms is None:
            return None
        return self.last_accessed + self.timeout_ms

    def is_expired(self, now: int) -> bool:
        """True when ``now - last_accessed > timeout_ms`` (strictly)."""
        timeout = self.timeout_ms
        return timeout is not None and now - self.last_accessed > timeout

    def touched(self, now: int) -> Session:
        """This session with ``last_accessed`` moved to ``now`` (never backwards)."""
        if now <= self.last_accessed:
            return self
        return Session._trusted(self.id, self.created_at, now, self.timeout_ms, self._metadata)

    def replace(self, **changes: Any) -> Session:
        """A copy with the given fields changed, validated like the constructor."""
        values: dict[str, Any] = {
            "id": self.id,
            "created_at": self.created_at,
            "last_accessed": self.last_accessed,
            "timeout_ms": self.timeout_ms,
            "metadata": self._metadata,
        }
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"Session has no field(s) {', '.join(sorted(unknown))}")
        values.update(changes)
        return Session(**values)

    def to_dict(self) -> dict[str, Any]:
        """The session as plain JSON-compatible data (the export shape)."""
        return {
            "id": self.id,
            "created_at": self.created_at,
            "last_accessed": self.last_accessed,
            "timeout_ms": self.timeout_ms,
            "metadata": self.metadata,
        }

    def __eq__(self, other: object) -> bool:
        if type(other) is not Session:
            return NotImplemented
        return (
            self.id == other.id
            and self.created_at == other.created_at
            and self.last_accessed == other.last_accessed
            and self.timeout_ms == other.timeout_ms
            and (self._metadata == other._metadata or self.metadata == other.metadata)
        )

    def __hash__(self) -> int:
        return hash((self.id, self.created_at, self.last_accessed, self.timeout_ms))

    def __repr__(self) -> str:
        return (
            f"Session(id={self.id!r}, created_at={self.created_at}, "
            f"last_accessed={self.last_accessed}, timeout_ms={self.timeout_ms}, "
            f"metadata={self.metadata!r})"
        )
