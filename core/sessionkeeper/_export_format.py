"""The export format: its header, session and end records, their validation, and the digest.

The export format (version 2) is JSON Lines, UTF-8, optionally gzip-compressed::

    {"format": "sessionkeeper-export", "version": 2, "source_backend": "sqlitedict",
     "exported_at": 1700000000000, "include_expired": false, "sessionkeeper_version": "0.1.0"}
    {"id": "4Zq0r9xw...", "created_at": 1700000000000, "last_accessed": 1700000300000,
     "timeout_ms": 1800000, "metadata": {"user_id": "user_456"}, "version": 3,
     "owner": "user_456", "absolute_timeout_ms": 28800000}
    ...
    {"end": true, "count": 2, "digest": "5f0c...e1"}

(one JSON object per physical line; the header and the session are wrapped above only for the
page). Line 1 is the header; every following line is one session with exactly the eight fields of
:meth:`Session.to_dict <sessionkeeper.Session.to_dict>`; the last line is the end line, which
holds the number of sessions and their :class:`SessionDigest`. A file without its end line was cut
short, and the reader says so. The header may carry ``count`` when the writer knew it in advance.

Version 1 (written before sessions had a version, an owner and an absolute timeout) is still
read: its session lines have exactly the first five fields, and each reads as a session of
version 1, without an owner and without an absolute timeout; its end line's digest is checked the
way version 1 computed it. Every older version stays readable (:data:`READABLE_VERSIONS`).

Records are validated with the private cattrs converter of :mod:`._converter`, the one the
configuration uses too (the record's shape: keys and strict types), and then by
:class:`~sessionkeeper.Session` itself (the model's rules), so a bad line is reported with its line
number and what is wrong with it. The writer is :mod:`._export_writer`, the reader
:mod:`._export_reader`; the transfers built on them are in :mod:`._transfer`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any, Final

import attrs
import msgpack
from cattrs.gen import override

from ._codec import encode_session
from ._converter import converter, problems, register_class
from ._errors import InvalidSession
from ._model import Session

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "MAX_LINE_BYTES",
    "READABLE_VERSIONS",
    "ExportHeader",
    "LineError",
    "SessionDigest",
]

#: The ``format`` value of an export file's header line.
EXPORT_FORMAT: Final = "sessionkeeper-export"
#: The export format version this sessionkeeper writes.
EXPORT_VERSION: Final = 2
#: The export format versions this sessionkeeper reads.
READABLE_VERSIONS: Final = (1, 2)
#: Lines longer than this are rejected without being held in memory (metadata is at most
#: 16 MiB packed; its JSON is at most a few times larger).
MAX_LINE_BYTES: Final = 64 * 1024 * 1024

GZIP_MAGIC: Final = b"\x1f\x8b"
#: The buffer size of export files, read or written.
BUFFER: Final = 1 << 20
_MASK: Final = (1 << 128) - 1


@attrs.frozen
class LineError:
    """One line of an export file that was rejected: its number and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


# --- the digest --------------------------------------------------------------------------------


def _encode_v1(session: Session) -> bytes:
    """The record export format version 1 hashed: the session codec's version-1 record (id,
    both timestamps, idle timeout, packed metadata), which the codec no longer writes."""
    fields = (session.id, session.created_at, session.last_accessed, session.timeout_ms)
    packed: bytes = msgpack.packb((1, *fields, session._metadata), use_bin_type=True)
    return packed


#: What each export format version hashes of a session. Version 2 hashes the session codec's
#: record (:func:`~sessionkeeper.backend.encode_session`, its format 2: every field); when the codec
#: moves on, the export format version moves with it and the old record is kept here, as
#: version 1's is, so that an older file's digest can still be checked (a test pins the digest
#: of a fixed session for each version).
_DIGEST_RECORDS: Final[dict[int, Callable[[Session], bytes]]] = {1: _encode_v1, 2: encode_session}


class SessionDigest:
    """An order-independent digest of a set of sessions, and how many were added.

    Each session is hashed (BLAKE2b, 128 bits) over its msgpack record: with ``version`` 2 (the
    default) its encoded record (:func:`~sessionkeeper.backend.encode_session`: every field,
    metadata as packed); with ``version`` 1, the five fields export format version 1 had. The hashes
    are added modulo 2**128, so two stores holding the same sessions in any order have the same
    digest. Migration prints it for both sides; the export's end line carries it.
    """

    __slots__ = ("_encode", "_sum", "count")

    def __init__(self, version: int = EXPORT_VERSION) -> None:
        self._encode = _DIGEST_RECORDS[version]
        self.count = 0
        self._sum = 0

    def add(self, session: Session) -> None:
        """Count ``session`` in."""
        hashed = hashlib.blake2b(self._encode(session), digest_size=16).digest()
        self._sum = (self._sum + int.from_bytes(hashed, "big")) & _MASK
        self.count += 1

    def hexdigest(self) -> str:
        """32 hexadecimal digits."""
        return f"{self._sum:032x}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionDigest):
            return NotImplemented
        return self.count == other.count and self._sum == other._sum

    def __hash__(self) -> int:
        return hash((self.count, self._sum))

    def __repr__(self) -> str:
        return f"SessionDigest(count={self.count}, digest={self.hexdigest()!r})"


# --- the records and their converter -----------------------------------------------------------


def _format_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value != EXPORT_FORMAT:
        raise ValueError(f"is {value!r}, not {EXPORT_FORMAT!r}")


@attrs.frozen(kw_only=True)
class ExportHeader:
    """Line 1 of an export file.

    :param source_backend: the backend the sessions were read from.
    :param exported_at: when the export started, ms since the Unix epoch.
    :param include_expired: whether expired sessions were written too.
    :param sessionkeeper_version: the version that wrote the file.
    :param count: the number of sessions, when the writer knew it in advance (else ``None``;
        the end line always has it).
    :param format: always :data:`EXPORT_FORMAT`.
    :param version: the format version: :data:`EXPORT_VERSION` when written, one of
        :data:`READABLE_VERSIONS` when read.
    """

    source_backend: str
    exported_at: int
    include_expired: bool = False
    sessionkeeper_version: str | None = None
    count: int | None = None
    format: str = attrs.field(default=EXPORT_FORMAT, validator=_format_name)
    version: int = EXPORT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The header as it is written (``None`` fields left out)."""
        data: dict[str, Any] = {"format": self.format, "version": self.version}
        data.update(
            (a.name, getattr(self, a.name))
            for a in attrs.fields(ExportHeader)
            if a.name not in ("format", "version") and getattr(self, a.name) is not None
        )
        return data


@attrs.frozen(kw_only=True)
class _SessionRecordV1:
    """A session line of export format version 1: exactly these five keys."""

    id: str
    created_at: int
    last_accessed: int
    timeout_ms: int | None
    metadata: dict[str, Any]


@attrs.frozen(kw_only=True)
class _SessionRecord(_SessionRecordV1):
    """A session line of export format version 2: every key of :meth:`Session.to_dict
    <sessionkeeper.Session.to_dict>`, each present (``null`` for no owner, no limit)."""

    version: int
    owner: str | None
    absolute_timeout_ms: int | None


@attrs.frozen(kw_only=True)
class EndRecord:
    end: bool
    count: int
    digest: str


def _metadata_object(value: object, _: type) -> dict[str, Any]:
    if type(value) is not dict:
        raise TypeError(f"expected an object, got {_json_type(value)}")
    return value


# The records are structured by the one converter (:mod:`._converter`), with its strict types.
for _record in (_SessionRecordV1, _SessionRecord):
    register_class(_record, metadata=override(struct_hook=_metadata_object))
for _cls in (ExportHeader, EndRecord):
    register_class(_cls)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if type(value) in (int, float):
        return f"the number {value!r}"
    return names.get(type(value), type(value).__name__)


def structure(data: object, cls: type[Any], what: str) -> Any:
    """``cls`` from one parsed line, or ``ValueError`` naming every key that is wrong."""
    if type(data) is not dict:
        raise ValueError(f"{what} must be a JSON object, got {_json_type(data)}")
    try:
        return converter.structure(data, cls)
    except Exception as exc:  # cattrs groups every field's error
        found = problems(exc, "")
        text = "; ".join(f"{key.lstrip('.') or what}: {message}" for key, message in found)
        raise ValueError(f"{what}: {text}") from None


def session_record(session: Session) -> dict[str, Any]:
    """The session line of ``session`` (format :data:`EXPORT_VERSION`): every field, in the
    order of :meth:`Session.to_dict <sessionkeeper.Session.to_dict>`."""
    return {
        "id": session.id,
        "created_at": session.created_at,
        "last_accessed": session.last_accessed,
        "timeout_ms": session.timeout_ms,
        "metadata": session.metadata,
        "version": session.version,
        "owner": session.owner,
        "absolute_timeout_ms": session.absolute_timeout_ms,
    }


def session_from(data: object, version: int = EXPORT_VERSION) -> Session:
    """The session of one parsed session line of a file of format ``version``, or
    ``ValueError`` saying what is wrong. A version-1 line reads as a session of version 1
    without an owner or an absolute timeout."""
    if version == 1:
        old: _SessionRecordV1 = structure(data, _SessionRecordV1, "session")
        fields = (old.id, old.created_at, old.last_accessed, old.timeout_ms, old.metadata)
        extra: dict[str, Any] = {}
    else:
        record: _SessionRecord = structure(data, _SessionRecord, "session")
        fields = (
            record.id,
            record.created_at,
            record.last_accessed,
            record.timeout_ms,
            record.metadata,
        )
        extra = {
            "version": record.version,
            "owner": record.owner,
            "absolute_timeout_ms": record.absolute_timeout_ms,
        }
    try:
        return Session(*fields, **extra)
    except InvalidSession as exc:
        raise ValueError(str(exc)) from None


def header_from(data: object) -> ExportHeader:
    """The header of one parsed line 1, or ``ValueError``: not an export, another version."""
    if type(data) is dict:
        found = data.get("format")
        if found != EXPORT_FORMAT:
            shown = "no format key" if found is None else f"format {found!r}"
            raise ValueError(
                f"not a sessionkeeper export: line 1 has {shown}, expected "
                f'"format": "{EXPORT_FORMAT}"'
            )
        version = data.get("version")
        if type(version) is not int or version not in READABLE_VERSIONS:
            newer = type(version) is int and version > EXPORT_VERSION
            hint = "; upgrade sessionkeeper to read it" if newer else ""
            raise ValueError(
                f"export format version {version!r} is not supported (this sessionkeeper reads "
                f"versions {READABLE_VERSIONS[0]} to {READABLE_VERSIONS[-1]}){hint}"
            )
    header: ExportHeader = structure(data, ExportHeader, "header")
    return header


# --- lines -------------------------------------------------------------------------------------


def dumps(data: dict[str, Any]) -> bytes:
    """One line of the format: compact JSON, UTF-8, with its newline."""
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def is_stdio(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` names standard input or output (``"-"``)."""
    return os.fspath(target) == "-"
