"""The session model: :class:`Session` and the validation of its fields.

A :class:`Session` keeps its metadata packed (msgpack bytes, validated once when the session is
built) and unpacks a fresh ``dict`` each time :attr:`Session.metadata` is read. That is what keeps a
stored session near 300 bytes and makes a stored session safe to share between threads: no caller
can mutate what the store holds.

Besides the id, the times, the idle timeout and the metadata, a session carries (issue 14):

- ``version``, kept by the store: it grows with every accepted write of the session's content, so
  a conditional write can name the version it read (a touch does not change it);
- ``owner``, the principal it belongs to (what "log out everywhere" and "list my devices" act on);
- ``absolute_timeout_ms``, a lifetime counted from ``created_at`` whatever the activity.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any, Final, final

import attrs

from ._errors import InvalidSession
from ._metadata import HARD_METADATA_LIMIT as HARD_METADATA_LIMIT
from ._metadata import MAX_METADATA_DEPTH as MAX_METADATA_DEPTH
from ._metadata import PackedMetadata as PackedMetadata
from ._metadata import _describe, unpack_metadata
from ._metadata import pack_metadata as pack_metadata

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_METADATA_DEPTH",
    "MAX_OWNER_BYTES",
    "Session",
    "check_owner",
    "generate_id",
    "validate_id",
]

MAX_ID_LENGTH: Final = 256
#: The longest owner, in bytes of UTF-8.
MAX_OWNER_BYTES: Final = 256
_MAX_TIME: Final = 2**63 - 1


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


def check_absolute_timeout(value: object) -> int | None:
    """Return ``value`` if it is a valid ``absolute_timeout_ms`` (``None`` or an int > 0)."""
    if value is None:
        return None
    if type(value) is not int:
        raise InvalidSession(
            "absolute_timeout_ms",
            f"must be a positive int or None, got {_describe(value)} {value!r}",
        )
    if not 0 < value <= _MAX_TIME:
        raise InvalidSession(
            "absolute_timeout_ms", f"must be > 0 (or None for no absolute limit), got {value}"
        )
    return value


def check_version(value: object) -> int:
    """Return ``value`` if it is a valid ``version`` (an int in 1..2**63-1), else raise."""
    if type(value) is not int:
        raise InvalidSession("version", f"must be an int >= 1, got {_describe(value)} {value!r}")
    if not 1 <= value <= _MAX_TIME:
        raise InvalidSession("version", f"must be in 1..2**63-1, got {value}")
    return value


#: The control characters (Unicode category Cc): C0, DEL and C1.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_owner(value: object) -> str | None:
    """Return ``value`` if it is a valid ``owner`` (``None``, or a non-empty str without control
    characters of at most :data:`MAX_OWNER_BYTES` bytes in UTF-8), else raise
    :class:`InvalidSession` naming the field ``owner``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidSession("owner", f"must be a str or None, got {_describe(value)}")
    if type(value) is not str:  # a subclass could redefine equality or hashing
        value = str.__str__(value)
    if not value:
        raise InvalidSession("owner", "must not be empty (use None for no owner)")
    control = _CONTROL.search(value)
    if control is not None:
        raise InvalidSession(
            "owner", f"contains the control character {control.group()!r} at {control.start()}"
        )
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidSession("owner", f"cannot be encoded as UTF-8: {exc.reason}") from None
    if size > MAX_OWNER_BYTES:
        raise InvalidSession("owner", f"is {size} bytes in UTF-8, over the {MAX_OWNER_BYTES} limit")
    return value


def generate_id() -> str:
    """A new session id: 256 bits from :mod:`secrets`, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


@final  # the manager stores exactly Session; copies are built as Session (see _Filling)
@attrs.frozen(init=False, eq=False, repr=False, slots=True, weakref_slot=False)
class Session:
    """One session. Immutable; build a changed copy with :meth:`replace`.

    :param id: 1–256 characters of visible ASCII (0x21–0x7E).
    :param created_at: milliseconds since the Unix epoch.
    :param last_accessed: milliseconds since the Unix epoch, not before ``created_at``.
    :param timeout_ms: idle time after which the session expires, or ``None`` for never.
    :param metadata: a JSON-compatible dict (str keys).
    :param version: (keyword-only) the version the store gave it, >= 1. The manager sets it on
        every accepted write; what you pass to :meth:`SessionManager.store
        <sessionkeeper.SessionManager.store>` is replaced.
    :param owner: (keyword-only) the principal the session belongs to, or ``None``: a non-empty
        str without control characters, at most 256 bytes in UTF-8.
    :param absolute_timeout_ms: (keyword-only) the lifetime counted from ``created_at`` whatever
        the activity, or ``None`` for no absolute limit.

    Invalid values raise :class:`~sessionkeeper.InvalidSession` naming the field.
    Reading :attr:`metadata` returns a fresh ``dict`` each time: changing it changes nothing stored.
    """

    id: str
    created_at: int
    last_accessed: int
    timeout_ms: int | None
    _metadata: PackedMetadata
    version: int
    owner: str | None
    absolute_timeout_ms: int | None

    def __init__(
        self,
        id: str,
        created_at: int,
        last_accessed: int,
        timeout_ms: int | None = None,
        metadata: Mapping[str, Any] | PackedMetadata | None = None,
        *,
        version: int = 1,
        owner: str | None = None,
        absolute_timeout_ms: int | None = None,
    ) -> None:
        validate_id(id)
        _check_time("created_at", created_at)
        _check_time("last_accessed", last_accessed)
        if last_accessed < created_at:
            raise InvalidSession(
                "last_accessed", f"{last_accessed} is before created_at {created_at}"
            )
        check_timeout(timeout_ms)
        if version.__class__ is not int or not 0 < version <= _MAX_TIME:  # the usual case inline
            check_version(version)
        if owner is not None:
            owner = check_owner(owner)
        if absolute_timeout_ms is not None:
            check_absolute_timeout(absolute_timeout_ms)
        packed = metadata if isinstance(metadata, PackedMetadata) else pack_metadata(metadata)
        _object_setattr(self, "__class__", _Filling)
        _fill(
            self,  # type: ignore[arg-type]
            id,
            created_at,
            last_accessed,
            timeout_ms,
            packed,
            version,
            owner,
            absolute_timeout_ms,
        )

    @staticmethod
    def _trusted(
        id: str,
        created_at: int,
        last_accessed: int,
        timeout_ms: int | None,
        metadata: PackedMetadata,
        version: int = 1,
        owner: str | None = None,
        absolute_timeout_ms: int | None = None,
    ) -> Session:
        """Build without validation, from values that were validated before (codec, touch)."""
        return _fill(
            _new(_Filling),
            id,
            created_at,
            last_accessed,
            timeout_ms,
            metadata,
            version,
            owner,
            absolute_timeout_ms,
        )

    @property
    def metadata(self) -> dict[str, Any]:
        """A fresh copy of the session's metadata."""
        return unpack_metadata(self._metadata)

    @property
    def packed_metadata(self) -> bytes:
        """The metadata as msgpack bytes (what the codec stores)."""
        return self._metadata

    @property
    def idle_expires_at(self) -> int | None:
        """The last millisecond the idle timeout allows (``last_accessed + timeout_ms``), or
        ``None`` without an idle timeout. A touch moves it later."""
        timeout = self.timeout_ms
        return None if timeout is None else self.last_accessed + timeout

    @property
    def absolute_expires_at(self) -> int | None:
        """The last millisecond the absolute timeout allows (``created_at +
        absolute_timeout_ms``), or ``None`` without one. Nothing moves it."""
        absolute = self.absolute_timeout_ms
        return None if absolute is None else self.created_at + absolute

    @property
    def expires_at(self) -> int | None:
        """The last millisecond at which the session is still live (the earlier of the idle and
        the absolute deadline), or ``None`` when it has neither."""
        timeout = self.timeout_ms
        absolute = self.absolute_timeout_ms
        if absolute is None:
            return None if timeout is None else self.last_accessed + timeout
        deadline = self.created_at + absolute
        if timeout is None:
            return deadline
        return min(deadline, self.last_accessed + timeout)

    def is_expired(self, now: int) -> bool:
        """True when ``now - last_accessed > timeout_ms`` or ``now - created_at >
        absolute_timeout_ms`` (strictly)."""
        timeout = self.timeout_ms
        if timeout is not None and now - self.last_accessed > timeout:
            return True
        absolute = self.absolute_timeout_ms
        return absolute is not None and now - self.created_at > absolute

    def touched(self, now: int) -> Session:
        """This session with ``last_accessed`` moved to ``now`` (never backwards); the version,
        like every other field, is unchanged."""
        if now <= self.last_accessed:
            return self
        return _fill(
            _new(_Filling),
            self.id,
            self.created_at,
            now,
            self.timeout_ms,
            self._metadata,
            self.version,
            self.owner,
            self.absolute_timeout_ms,
        )

    def with_version(self, version: int) -> Session:
        """This session with another ``version`` (not validated: the store computes it)."""
        return _fill(
            _new(_Filling),
            self.id,
            self.created_at,
            self.last_accessed,
            self.timeout_ms,
            self._metadata,
            version,
            self.owner,
            self.absolute_timeout_ms,
        )

    def replace(self, **changes: Any) -> Session:
        """A copy with the given fields changed, validated like the constructor."""
        values: dict[str, Any] = {
            "id": self.id,
            "created_at": self.created_at,
            "last_accessed": self.last_accessed,
            "timeout_ms": self.timeout_ms,
            "metadata": self._metadata,
            "version": self.version,
            "owner": self.owner,
            "absolute_timeout_ms": self.absolute_timeout_ms,
        }
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"Session has no field(s) {', '.join(sorted(unknown))}")
        values.update(changes)
        return Session(**values)

    def to_dict(self) -> dict[str, Any]:
        """The session as plain JSON-compatible data (the export shape);
        ``Session(**session.to_dict()) == session``."""
        return {
            "id": self.id,
            "created_at": self.created_at,
            "last_accessed": self.last_accessed,
            "timeout_ms": self.timeout_ms,
            "metadata": self.metadata,
            "version": self.version,
            "owner": self.owner,
            "absolute_timeout_ms": self.absolute_timeout_ms,
        }

    def __eq__(self, other: object) -> bool:
        if type(other) is not Session:
            return NotImplemented
        return (
            self.id == other.id
            and self.created_at == other.created_at
            and self.last_accessed == other.last_accessed
            and self.timeout_ms == other.timeout_ms
            and self.version == other.version
            and self.owner == other.owner
            and self.absolute_timeout_ms == other.absolute_timeout_ms
            and (self._metadata == other._metadata or self.metadata == other.metadata)
        )

    def __hash__(self) -> int:
        return hash((self.id, self.created_at, self.last_accessed, self.timeout_ms, self.version))

    def __repr__(self) -> str:
        return (
            f"Session(id={self.id!r}, created_at={self.created_at}, "
            f"last_accessed={self.last_accessed}, timeout_ms={self.timeout_ms}, "
            f"metadata={self.metadata!r}, version={self.version}, owner={self.owner!r}, "
            f"absolute_timeout_ms={self.absolute_timeout_ms})"
        )


_new = object.__new__


class _Filling:
    """A :class:`Session` being filled: the same slots, without the frozen ``__setattr__``.

    Every session is filled as one of these, with plain attribute stores, which CPython turns
    into direct slot writes, and then made a :class:`Session` by assigning its ``__class__``,
    which CPython allows between classes with the same slots. That is about half the cost of
    calling each slot's descriptor, and it counts: every store on an atomic backend copies the
    session with its new version. The object is never seen half-filled or mutable outside
    :func:`_fill` (and the constructor, which validates first).
    """

    __slots__ = Session.__slots__

    id: str
    created_at: int
    last_accessed: int
    timeout_ms: int | None
    _metadata: PackedMetadata
    version: int
    owner: str | None
    absolute_timeout_ms: int | None


#: ``object.__setattr__``, for the constructor: its ``self`` is a Session, whose own
#: ``__setattr__`` refuses every assignment, ``__class__`` included.
_object_setattr = object.__setattr__


def _fill(
    new: _Filling,
    id: str,
    created_at: int,
    last_accessed: int,
    timeout_ms: int | None,
    metadata: PackedMetadata,
    version: int,
    owner: str | None,
    absolute_timeout_ms: int | None,
) -> Session:
    """Fill the empty ``new`` with these (already valid) values and make it a Session."""
    new.id = id
    new.created_at = created_at
    new.last_accessed = last_accessed
    new.timeout_ms = timeout_ms
    new._metadata = metadata
    new.version = version
    new.owner = owner
    new.absolute_timeout_ms = absolute_timeout_ms
    new.__class__ = Session  # type: ignore[assignment]
    return new  # type: ignore[return-value]
