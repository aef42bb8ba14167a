"""``[sessionkeeper.backend_opts]`` of the ``leveldb`` backend."""

from __future__ import annotations

from typing import Final

import attrs

from sessionkeeper.backend import FieldError

__all__ = ["LevelDBOptions"]


#: The longest table name, in bytes of UTF-8: it prefixes every key of the table.
MAX_TABLE_BYTES: Final = 1024


def _utf8(attribute: attrs.Attribute[str], value: str) -> bytes:
    """``value`` in UTF-8; a lone surrogate (possible from Python, never from TOML) names the
    option instead of failing when the store opens."""
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FieldError(
            attribute.name,
            f"{value!r} cannot be written as UTF-8 ({exc.reason}), which LevelDB needs",
        ) from None


def _path(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "must name the database directory, got an empty string")
    if "\0" in value:
        raise FieldError(attribute.name, "must not contain a NUL character")
    _utf8(attribute, value)


def _table_name(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise FieldError(attribute.name, "must be a non-empty name")
    if "\0" in value:
        raise FieldError(attribute.name, "must not contain a NUL character")
    size = len(_utf8(attribute, value))
    if size > MAX_TABLE_BYTES:
        raise FieldError(
            attribute.name, f"must be at most {MAX_TABLE_BYTES} bytes in UTF-8, got {size}"
        )


@attrs.frozen(kw_only=True)
class LevelDBOptions:
    """``backend_opts`` of the ``leveldb`` backend.

    :param db_path: the LevelDB database (a directory). A relative path is resolved against the
        config file's directory (or the working directory when there is no file). Created, with
        its parents, when missing.
    :param table_name: the table within the database: a key prefix, so several tables (several
        applications' sessions) can share one database.
    :param sync: ``True`` (the default): every write is flushed to disk (``fsync``) before it is
        acknowledged, so an acknowledged write survives a power loss. ``False``: writes reach the
        operating system before they are acknowledged; they survive the process being killed
        but not a machine crash, and cost about a hundred times less.
    """

    db_path: str = attrs.field(validator=[attrs.validators.instance_of(str), _path])
    table_name: str = attrs.field(
        default="sessions", validator=[attrs.validators.instance_of(str), _table_name]
    )
    sync: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
