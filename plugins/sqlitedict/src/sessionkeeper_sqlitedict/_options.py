"""The ``backend_opts`` of the ``sqlitedict`` backend, validated when the config is loaded."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final, TypeVar

import attrs

from sessionkeeper.backend import FieldError

__all__ = [
    "JOURNAL_MODES",
    "MAX_AUTO_SAVE",
    "MAX_MMAP_SIZE",
    "MAX_SWEEP_LEASE",
    "SYNCHRONOUS_LEVELS",
    "SqliteDictOptions",
]

#: Journal modes that keep the file consistent through a crash (``MEMORY`` and ``OFF`` do not).
JOURNAL_MODES: Final = ("WAL", "DELETE", "TRUNCATE", "PERSIST")
#: ``PRAGMA synchronous`` levels offered (``OFF``, which sqlitedict itself uses, is not).
SYNCHRONOUS_LEVELS: Final = ("FULL", "EXTRA", "NORMAL")
#: The longest ``auto_save`` interval accepted: one day.
MAX_AUTO_SAVE: Final = 86_400_000
#: The longest ``busy_timeout`` accepted: ten minutes.
MAX_BUSY_TIMEOUT: Final = 600_000
#: The longest ``sweep_lease`` accepted: one hour.
MAX_SWEEP_LEASE: Final = 3_600_000
#: The largest ``mmap_size`` accepted: SQLite's own default ceiling (``SQLITE_MAX_MMAP_SIZE``).
MAX_MMAP_SIZE: Final = 0x7FFF0000
#: Shared mode's default ``mmap_size``: 256 MiB.
DEFAULT_MMAP_SIZE: Final = 256 * 1024 * 1024
_TABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

T = TypeVar("T")
Validator = Callable[[Any, "attrs.Attribute[T]", T], None]


def _file_path(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "must name the SQLite file, got an empty string")
    if "\x00" in value:
        raise FieldError(attribute.name, "must not contain a NUL character")
    # Caught here, where it is plain from the text; a path naming an existing directory is
    # named as one when the store is opened.
    if value.endswith("/") or value.rsplit("/", 1)[-1] in (".", ".."):
        example = f"{value.rstrip('/')}/sessions.sqlite"
        raise FieldError(
            attribute.name,
            f"{value!r} names a directory: it must name the SQLite file, e.g. {example!r}",
        )


def _table_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _TABLE_NAME.fullmatch(value):
        raise FieldError(
            attribute.name,
            f"{value!r} is not a plain SQL name: use 1-64 letters, digits and underscores, "
            "not starting with a digit",
        )
    if value.lower().startswith("sqlite_"):
        raise FieldError(attribute.name, f"{value!r}: names starting with sqlite_ are SQLite's own")


def _one_of(choices: tuple[str, ...]) -> Validator[str]:
    def check(_: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value.upper() not in choices:
            raise FieldError(
                attribute.name, f"must be one of {', '.join(choices)} (any case), got {value!r}"
            )

    return check


def _between(low: int, high: int, unit: str) -> Validator[int]:
    def check(_: object, attribute: attrs.Attribute[int], value: int) -> None:
        if not low <= value <= high:
            raise FieldError(
                attribute.name, f"must be between {low} and {high} {unit}, got {value}"
            )

    return check


def _shared_journal(
    instance: SqliteDictOptions, attribute: attrs.Attribute[str], value: str
) -> None:
    # Validators run once every field is set, so ``shared`` is known here.
    if instance.shared and value.upper() != "WAL":
        raise FieldError(
            attribute.name,
            f"must be WAL with shared = true (several processes read while one writes only in "
            f"WAL mode), got {value!r}",
        )


def _default_synchronous(instance: SqliteDictOptions) -> str:
    """``FULL`` for the single owner, ``NORMAL`` in shared mode (see the class docstring)."""
    return "NORMAL" if instance.shared else "FULL"


@attrs.frozen(kw_only=True)
class SqliteDictOptions:
    """``backend_opts`` of the ``sqlitedict`` backend (names from the Erlang original).

    :param file_path: the SQLite file; a relative path is resolved against the config file's
        directory. Missing parent directories are created (mode 0700) and a new file is created
        with mode 0600.
    :param table_name: the table holding the sessions; one file can hold several tables (each
        one its own store). A plain SQL name: letters, digits and underscores.
    :param auto_save: milliseconds between commits of buffered writes (*interval mode*); ``0``
        selects *durable mode*, where ``store``, ``touch`` and ``delete`` return only once the
        change is committed (and, with ``synchronous = "FULL"``, fsynced). Not used in shared
        mode, where every write is a transaction committed before it returns.
    :param journal_mode: SQLite's journal mode: ``WAL`` (the default, lets the CLI read beside
        the running owner), ``DELETE``, ``TRUNCATE`` or ``PERSIST``.
    :param synchronous: SQLite's ``synchronous`` level: ``FULL`` (every commit is fsynced),
        ``EXTRA``, or ``NORMAL`` (in WAL mode a commit survives a crash of the process but not a
        power loss; roughly ten times cheaper). The default is ``FULL`` for the single owner and
        ``NORMAL`` in shared mode, where every ``fetch`` that slides ``last_accessed`` is a
        commit too.
    :param busy_timeout: milliseconds a commit waits for SQLite's own lock (held briefly by a
        reader's checkpoint or by another table of the same file; in shared mode by another
        process's transaction) before failing.
    :param shared: *shared mode*: any number of processes of one host open the file for
        reading and writing, every read a ``SELECT`` and every write a transaction (WAL only).
        ``False`` (the default): one owning process per file, with the copy in memory.
    :param sweep_lease: shared mode: milliseconds a process's claim to sweep expired sessions
        lasts without being renewed (each batch renews it); a sweeper killed mid-sweep is
        replaced at once when its process is gone, else once the claim runs out.
    :param mmap_size: shared mode: bytes of the file each connection reads through a memory
        map (SQLite's ``PRAGMA mmap_size``; default 256 MiB, at most ``0x7FFF0000``). A read
        then costs no system call, and the pages stay valid when another process commits
        (the operating system's page cache is shared, SQLite's own cache is not). ``0`` reads
        with system calls, for a file on storage that may fail under the reader: an I/O error
        on a mapped page stops the process with ``SIGBUS`` instead of raising an error.
    """

    file_path: str = attrs.field(validator=[attrs.validators.instance_of(str), _file_path])
    table_name: str = attrs.field(
        default="sessions", validator=[attrs.validators.instance_of(str), _table_name]
    )
    auto_save: int = attrs.field(default=60_000, validator=_between(0, MAX_AUTO_SAVE, "ms"))
    shared: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    journal_mode: str = attrs.field(
        default="WAL", validator=[_one_of(JOURNAL_MODES), _shared_journal]
    )
    synchronous: str = attrs.field(
        default=attrs.Factory(_default_synchronous, takes_self=True),
        validator=_one_of(SYNCHRONOUS_LEVELS),
    )
    busy_timeout: int = attrs.field(default=5_000, validator=_between(0, MAX_BUSY_TIMEOUT, "ms"))
    sweep_lease: int = attrs.field(default=30_000, validator=_between(10, MAX_SWEEP_LEASE, "ms"))
    mmap_size: int = attrs.field(
        default=DEFAULT_MMAP_SIZE, validator=_between(0, MAX_MMAP_SIZE, "bytes")
    )

    @property
    def durable(self) -> bool:
        """True in durable mode (``auto_save = 0``)."""
        return self.auto_save == 0
