"""The ``backend_opts`` of the ``postgres`` backend, validated when the config is loaded.

Secrets never leave this module in clear: ``dsn`` and ``password`` are left out of ``repr``, and
:meth:`PostgresOptions.server_name` (what messages and ``stats`` show) is built from the host,
port and database alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Final, TypeVar

import attrs
import psycopg
from psycopg.conninfo import conninfo_to_dict

from sessionkeeper.backend import FieldError

__all__ = [
    "IDENTIFIER_MAX",
    "SYNCHRONOUS_COMMIT",
    "PostgresOptions",
]

#: The values of PostgreSQL's ``synchronous_commit`` the backend accepts (see docs/postgres.md
#: for what each can lose).
SYNCHRONOUS_COMMIT: Final = ("on", "off", "local", "remote_write", "remote_apply")
#: The longest ``table_name`` or ``schema``: PostgreSQL names hold 63 bytes, and the backend
#: derives index and table names from the table's (``<table>_deadline_idx``,
#: ``<table>_quarantine``).
IDENTIFIER_MAX: Final = 48
_IDENTIFIER: Final = re.compile(r"[a-z_][a-z0-9_]*")

T = TypeVar("T")
Validator = Callable[[Any, "attrs.Attribute[T]", T], None]


def _identifier(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not 1 <= len(value) <= IDENTIFIER_MAX:
        raise FieldError(attribute.name, f"must be 1-{IDENTIFIER_MAX} characters, got {value!r}")
    if not _IDENTIFIER.fullmatch(value) or value.startswith("pg_"):
        raise FieldError(
            attribute.name,
            f"{value!r} is not a plain PostgreSQL name: use lowercase letters, digits and "
            "underscores, starting with a letter or underscore (and not pg_), so that the name "
            "is the same quoted or not",
        )


def _between(low: int, high: int, unit: str) -> Validator[int]:
    def check(_: object, attribute: attrs.Attribute[int], value: int) -> None:
        if not low <= value <= high:
            raise FieldError(attribute.name, f"must be between {low} and {high}{unit}, got {value}")

    return check


def _optional_text(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    if not value:
        raise FieldError(attribute.name, "must not be empty (leave it out instead)")
    if "\x00" in value:
        raise FieldError(attribute.name, "must not contain NUL characters")


def _port(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and not 0 < value < 65536:
        raise FieldError(attribute.name, f"must be between 1 and 65535, got {value}")


def _dsn(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    if "\x00" in value:
        raise FieldError(attribute.name, "must not contain NUL characters")
    try:
        parts = conninfo_to_dict(value)
    except psycopg.Error as exc:
        secret = "password" in value.lower() or "@" in value
        detail = "details withheld: it may hold a password" if secret else str(exc)
        raise FieldError(
            attribute.name,
            "is not a libpq connection string (host=... dbname=...) or a postgresql:// URI "
            f"({detail})",
        ) from None
    port = str(parts.get("port") or "")
    if port and "," not in port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise FieldError(attribute.name, f"port {port!r} is not between 1 and 65535")


@attrs.frozen(kw_only=True)
class PostgresOptions:
    """``backend_opts`` of the ``postgres`` backend.

    Where to connect: ``dsn`` (a libpq connection string or ``postgresql://`` URI, which may
    carry any libpq setting: ``sslmode``, ``sslrootcert``, ``target_session_attrs``, several
    hosts…), the discrete ``host``/``port``/``dbname``/``user``/``password``, or both (a
    discrete value overrides the DSN's). What neither gives comes from libpq's environment
    (``PGHOST``, ``PGPASSWORD``, ``~/.pgpass``…).

    :param dsn: the connection string; never shown in messages (it may hold a password).
    :param host: a host name, an address, or a Unix socket directory (``/run/postgresql``).
    :param port: the server's port.
    :param dbname: the database.
    :param user: the role to connect as.
    :param password: its password; never logged, shown or put in ``stats``.
    :param schema: the schema of the table; default: the connection's ``current_schema()``
        (the first existing schema of the role's ``search_path``, usually ``public``).
    :param table_name: the table holding the sessions: lowercase letters, digits and
        underscores. Stores with different names are independent.
    :param pool_min_size: connections kept open in the pool.
    :param pool_max_size: the most connections the pool opens (one per concurrent operation).
    :param connect_timeout_ms: how long opening a connection may take, and how long an
        operation waits for a pooled connection before it fails with ``StorageError``.
    :param statement_timeout_ms: PostgreSQL's ``statement_timeout`` for every statement;
        ``0`` means none.
    :param synchronous_commit: PostgreSQL's ``synchronous_commit`` for the backend's writes:
        ``on`` (default: acknowledged means flushed to the primary's disk, and to a synchronous
        standby's if any are configured), ``remote_apply``, ``remote_write``, ``local`` or
        ``off`` — docs/postgres.md says what each can lose.
    """

    dsn: str | None = attrs.field(default=None, repr=False, validator=_dsn)
    host: str | None = attrs.field(default=None, validator=_optional_text)
    port: int | None = attrs.field(default=None, validator=_port)
    dbname: str | None = attrs.field(default=None, validator=_optional_text)
    user: str | None = attrs.field(default=None, validator=_optional_text)
    password: str | None = attrs.field(default=None, repr=False, validator=_optional_text)
    schema: str | None = attrs.field(default=None, validator=_identifier)
    table_name: str = attrs.field(default="sessions", validator=_identifier)
    pool_min_size: int = attrs.field(default=1, validator=_between(0, 100, ""))
    pool_max_size: int = attrs.field(default=10, validator=_between(1, 1_000, ""))
    connect_timeout_ms: int = attrs.field(default=5_000, validator=_between(100, 600_000, " ms"))
    statement_timeout_ms: int = attrs.field(
        default=30_000, validator=_between(0, 86_400_000, " ms")
    )
    synchronous_commit: str = attrs.field(default="on")

    def __attrs_post_init__(self) -> None:
        if self.synchronous_commit not in SYNCHRONOUS_COMMIT:
            raise FieldError(
                "synchronous_commit",
                f"must be one of {', '.join(SYNCHRONOUS_COMMIT)}, got {self.synchronous_commit!r}",
            )
        if self.pool_min_size > self.pool_max_size:
            raise FieldError(
                "pool_min_size",
                f"{self.pool_min_size} is more than pool_max_size ({self.pool_max_size})",
            )

    def conninfo(self) -> str:
        """The DSN as given (``""`` for libpq's defaults); it may hold a password."""
        return self.dsn or ""

    def connect_kwargs(self) -> dict[str, Any]:
        """The libpq parameters given outside the DSN, plus ``connect_timeout`` (whole seconds,
        at least 2, as libpq reads it)."""
        given = {
            "host": self.host,
            "port": None if self.port is None else str(self.port),
            "dbname": self.dbname,
            "user": self.user,
            "password": self.password,
        }
        kwargs: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
        kwargs["connect_timeout"] = max(2, math.ceil(self.connect_timeout_ms / 1000))
        return kwargs

    def server_name(self) -> str:
        """Where the sessions are, for messages: ``postgres at host:port/dbname``.

        Never includes credentials.
        """
        parts: dict[str, Any] = conninfo_to_dict(self.dsn) if self.dsn else {}
        for key in ("host", "port", "dbname"):
            value = getattr(self, key)
            if value is not None:
                parts[key] = str(value)
        host = str(parts.get("host") or parts.get("hostaddr") or "the default host")
        port = parts.get("port")
        where = host if host.startswith("/") or port is None else f"{host}:{port}"
        if host.startswith("/") and port is not None:
            where = f"{host} (socket, port {port})"
        dbname = parts.get("dbname")
        database = f", database {dbname!r}" if dbname else ""
        return f"postgres at {where}{database}"
