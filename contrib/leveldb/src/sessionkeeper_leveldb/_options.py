"""``[sessionkeeper.backend_opts]`` of the ``leveldb`` backend."""

from __future__ import annotations

import attrs

from sessionkeeper import FieldError

__all__ = ["LevelDBOptions"]


def _path(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "must name the database directory, got an empty string")
    if "\0" in value:
        raise FieldError(attribute.name, "must not contain a NUL character")


def _table_name(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise FieldError(attribute.name, "must be a non-empty name")
    if "\0" in value:
        raise FieldError(attribute.name, "must not contain a NUL character")


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
