"""One open LevelDB database per directory and process, shared by every backend that uses it.

LevelDB lets one process at a time open a database: it holds an OS lock on the ``LOCK`` file in
the database directory for as long as the database is open, and the kernel drops that lock when
the process exits, however it exits. That lock does not guard a process against itself (POSIX
record locks never conflict within one process, and LevelDB's own table of locked files is keyed
by the path's spelling), so within the process, managers that reach the same directory (one per
table, or several on one table) share one handle, reference-counted here, and one lock that
serialises their read-modify-write operations. Handles are keyed by the directory's device and
inode, not by its path: a second spelling (a bind mount, a symlink the resolution missed) is the
same database, never a second owner of it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import plyvel  # type: ignore[import-untyped]  # plyvel ships no type information

from sessionkeeper import StorageError

__all__ = ["DB", "FileId", "Handle", "Snapshot", "WriteBatch", "acquire", "open_paths", "release"]


class WriteBatch(Protocol):
    """The part of ``plyvel.WriteBatch`` the backend uses."""

    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def write(self) -> None: ...


class Reader(Protocol):
    """What a ``plyvel.DB`` and a ``plyvel.Snapshot`` both offer."""

    def get(self, key: bytes) -> bytes | None: ...
    def iterator(self, **options: Any) -> Any: ...


class Snapshot(Reader, Protocol):
    """A ``plyvel.Snapshot``: a consistent view of the database at one instant."""

    def close(self) -> None: ...


class DB(Reader, Protocol):
    """The part of ``plyvel.DB`` the backend uses."""

    def put(self, key: bytes, value: bytes, *, sync: bool = ...) -> None: ...
    def write_batch(self, *, sync: bool = ...) -> WriteBatch: ...
    def snapshot(self) -> Snapshot: ...
    def approximate_size(self, start: bytes, stop: bytes) -> int: ...
    def close(self) -> None: ...


#: What names a directory whatever path reaches it: its device and inode numbers.
FileId = tuple[int, int]


class Handle:
    """An open database, the lock for its writers and how many backends use it.

    :param path: the path it was opened through (the first backend's).
    :param file_id: the directory's ``(device, inode)``: the key of the handle.
    """

    __slots__ = ("db", "file_id", "lock", "path", "users")

    def __init__(self, path: Path, file_id: FileId, db: DB) -> None:
        self.path = path
        self.file_id = file_id
        self.db = db
        self.lock = threading.Lock()
        self.users = 0


_handles: dict[FileId, Handle] = {}
_handles_lock = threading.Lock()


def _forget_after_fork() -> None:
    # A forked child does not hold the parent's LevelDB lock (POSIX record locks belong to a
    # process) and must not use the parent's handles: it opens the database afresh, and fails
    # with the "already open by another process" error while the parent has it open.
    _handles.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def acquire(path: Path, *, create: bool, backend: str) -> Handle:
    """The handle of the database at ``path`` (absolute), opened if this process has not yet.

    ``create`` makes the directory and an empty database when there is none (owner-only
    permissions); without it a missing database is an error. Raises
    :class:`~sessionkeeper.StorageError` naming the path when the database cannot be opened, in
    particular when another process has it open.
    """
    with _handles_lock:
        _prepare(path, create=create, backend=backend)
        file_id = _file_id(path, backend)
        handle = _handles.get(file_id)
        if handle is None:
            db = _open(path, create=create, backend=backend)
            handle = _handles[file_id] = Handle(path, file_id, db)
        handle.users += 1
        return handle


def release(handle: Handle) -> None:
    """Drop one user of ``handle``; the last one closes the database."""
    with _handles_lock:
        handle.users -= 1
        if handle.users > 0:
            return
        if _handles.get(handle.file_id) is handle:
            del _handles[handle.file_id]
        with handle.lock:  # let a write in progress in another thread finish first
            handle.db.close()


def _prepare(path: Path, *, create: bool, backend: str) -> None:
    """Create the directory (``create``), or check that it holds a database."""
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                backend, f"cannot create the LevelDB database directory {path}: {_reason(exc)}"
            ) from exc
    elif not (path / "CURRENT").is_file():
        raise StorageError(
            backend,
            f"no LevelDB database at {path} (opened read-only, so it is not created)",
        )


def _file_id(path: Path, backend: str) -> FileId:
    """The directory's ``(device, inode)``."""
    try:
        found = path.stat()
    except OSError as exc:
        raise StorageError(
            backend, f"cannot open the LevelDB database {path}: {_reason(exc)}"
        ) from exc
    return found.st_dev, found.st_ino


def _open(path: Path, *, create: bool, backend: str) -> DB:
    try:
        # A bloom filter (10 bits a key) spares a disk read to most gets of a missing key.
        db: DB = plyvel.DB(str(path), create_if_missing=create, bloom_filter_bits=10)
    except plyvel.IOError as exc:
        message = _reason(exc)
        if "LOCK" in message and (
            "already held" in message or "temporarily unavailable" in message
        ):
            raise StorageError(
                backend,
                f"cannot open the LevelDB database {path}: it is already open by another "
                f"process (LevelDB holds {path / 'LOCK'}; one process at a time may open a "
                "database, so stop the process that owns it first)",
            ) from exc
        raise StorageError(backend, f"cannot open the LevelDB database {path}: {message}") from exc
    except plyvel.CorruptionError as exc:
        raise StorageError(
            backend,
            f"cannot open the LevelDB database {path}: it is corrupted ({_reason(exc)}); "
            "plyvel.repair_db() can salvage it",
        ) from exc
    except plyvel.Error as exc:
        raise StorageError(
            backend, f"cannot open the LevelDB database {path}: {_reason(exc)}"
        ) from exc
    return db


def _reason(exc: BaseException) -> str:
    """The text of an exception; plyvel's messages are bytes."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, plyvel.Error):
        return str(exc.strerror)
    parts = [a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in exc.args]
    return "; ".join(parts) or type(exc).__name__


def open_paths() -> Iterator[Path]:
    """The databases this process has open, each by the path it was opened through (for tests
    and diagnostics)."""
    with _handles_lock:
        return iter([handle.path for handle in _handles.values()])
