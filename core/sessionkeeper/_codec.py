"""The one codec every backend shares: versioned msgpack, validated on decode.

A record is the msgpack array ``[2, id, created_at, last_accessed, timeout_ms, metadata, version,
owner, absolute_timeout_ms]`` where ``2`` is the format version and ``metadata`` is a msgpack
``bin`` holding the packed metadata map. Decoding checks the version, every field's type and range,
and the metadata's JSON-compatibility; anything else raises
:class:`~sessionkeeper.backend.CodecError`.
Nothing is ever unpickled.

Every older format stays readable: a version-1 record ``[1, id, created_at, last_accessed,
timeout_ms, metadata]`` (written before issue 14) decodes as a session of version 1, without an
owner and without an absolute timeout.
"""

from __future__ import annotations

import threading
from typing import Final

import msgpack

from ._errors import CodecError, InvalidSession
from ._metadata import HARD_METADATA_LIMIT, PackedMetadata, _check_json, proven_json
from ._model import (
    MAX_ID_LENGTH,
    MAX_OWNER_BYTES,
    Session,
    check_absolute_timeout,
    check_owner,
    check_timeout,
    check_version,
    validate_id,
)

__all__ = ["FORMAT_VERSION", "decode_session", "encode_session"]

#: The record format version written by :func:`encode_session`.
FORMAT_VERSION: Final = 2
#: Fields of a record, by format version (the version itself included).
_FIELDS: Final = {1: 6, 2: 9}
_MAX_RECORD: Final = HARD_METADATA_LIMIT + MAX_ID_LENGTH + MAX_OWNER_BYTES + 96

_local = threading.local()


def _packer() -> msgpack.Packer:
    packer: msgpack.Packer | None = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    return packer


def encode_session(session: Session) -> bytes:
    """Encode ``session`` as a versioned msgpack record (≈ 0.5 µs)."""
    try:
        record: bytes = _packer().pack(
            (
                FORMAT_VERSION,
                session.id,
                session.created_at,
                session.last_accessed,
                session.timeout_ms,
                session._metadata,
                session.version,
                session.owner,
                session.absolute_timeout_ms,
            )
        )
    except AttributeError:
        raise TypeError(f"expected a Session, got {type(session).__name__}") from None
    return record


def _int_field(record: tuple[object, ...], index: int, name: str) -> int:
    value = record[index]
    if type(value) is not int or not 0 <= value < 2**63:
        raise CodecError(f"field {name} is {value!r}, not a timestamp")
    return value


def decode_session(data: bytes) -> Session:
    """Decode and validate a record written by :func:`encode_session`.

    Raises :class:`~sessionkeeper.backend.CodecError` saying what is wrong: not msgpack, a foreign
    or newer format version, a missing field, a value of the wrong type, invalid metadata.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    if len(data) > _MAX_RECORD:
        raise CodecError(f"record of {len(data)} bytes is over the {_MAX_RECORD} limit")
    try:
        record = msgpack.unpackb(
            data, raw=False, use_list=False, strict_map_key=True, max_bin_len=HARD_METADATA_LIMIT
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise CodecError(f"not a msgpack record ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, tuple) or not record:
        raise CodecError(f"expected a msgpack array record, got {type(record).__name__}")
    form = record[0]
    fields = _FIELDS.get(form) if type(form) is int else None
    if fields is None:
        raise CodecError(
            f"unsupported record format version {form!r} "
            f"(this sessionkeeper reads versions 1 to {FORMAT_VERSION})"
        )
    if len(record) != fields:
        raise CodecError(f"version {form} record has {len(record)} fields, expected {fields}")
    session_id, timeout, blob = record[1], record[4], record[5]
    created_at = _int_field(record, 2, "created_at")
    last_accessed = _int_field(record, 3, "last_accessed")
    if form == 1:
        version, owner, absolute = 1, None, None
    else:
        version, owner, absolute = record[6], record[7], record[8]
    try:
        validate_id(session_id)
        check_timeout(timeout)
        if version.__class__ is not int or not 0 < version < 2**63:  # the common case, inline
            check_version(version)
        if owner is not None:
            if owner.__class__ is not str:
                raise CodecError(f"field owner is {type(owner).__name__}, expected a string")
            check_owner(owner)
        if absolute is not None:
            check_absolute_timeout(absolute)
    except InvalidSession as exc:
        raise CodecError(str(exc)) from None
    if last_accessed < created_at:
        raise CodecError(f"last_accessed {last_accessed} is before created_at {created_at}")
    if type(blob) is not bytes:
        raise CodecError(f"metadata field is {type(blob).__name__}, expected msgpack bin")
    try:
        metadata = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    except Exception as exc:
        raise CodecError(f"metadata is not msgpack ({type(exc).__name__}: {exc})") from None
    if type(metadata) is not dict:
        raise CodecError(f"metadata is a {type(metadata).__name__}, expected a map")
    if not proven_json(blob):
        try:
            _check_json(metadata, "metadata", 0)
        except InvalidSession as exc:
            raise CodecError(str(exc)) from None
    return Session._trusted(
        session_id,
        created_at,
        last_accessed,
        timeout,
        PackedMetadata(blob),
        version,
        owner,
        absolute,
    )
