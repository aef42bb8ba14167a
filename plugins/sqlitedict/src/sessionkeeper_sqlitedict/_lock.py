"""One owning process per file: an OS lock on a sidecar ``<file>.lock`` that holds the owner's pid.

The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<file>.lock``. The kernel drops it when the
owner exits, however it exits (``SIGKILL`` included), so a crashed owner never leaves a stale lock
behind; the pid written into the file only serves the error message of the next writer. The lock
file is never deleted: deleting it would let two processes lock two different inodes.

Within one process the lock is shared, reference-counted per table: several managers may own
different tables of one file, but one table has one writer, as across processes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Final

from sessionkeeper import StorageError

__all__ = ["LOCK_SUFFIX", "OwnerLock", "holder_pid", "lock_path"]

#: Appended to the SQLite file's name to name its lock file.
LOCK_SUFFIX: Final = ".lock"


def lock_path(path: Path) -> Path:
    """The sidecar lock file of the SQLite file ``path``."""
    return path.with_name(path.name + LOCK_SUFFIX)


def holder_pid(path: Path) -> int | None:
    """The pid written in ``path``'s lock file (the last owner's), or ``None``."""
    try:
        text = lock_path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class _Held:
    """The lock one process holds on one file, and the tables it is held for."""

    __slots__ = ("fd", "tables")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.tables: set[str | None] = set()


_held: dict[str, _Held] = {}
_held_lock = threading.Lock()


def _forget_after_fork() -> None:
    # A forked child shares the parent's open file description, hence its flock: the child must
    # not believe it owns the file. Its copies of the descriptors are closed; the parent's lock
    # stays (flock is released only when every descriptor of the description is closed).
    for held in _held.values():
        with contextlib.suppress(OSError):
            os.close(held.fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


class OwnerLock:
    """The right to write table ``table`` of the SQLite file ``path`` (see the module docstring).

    ``table=None`` asks for the whole file (``check --repair`` rewrites it): refused while any
    table of it is open for writing, in this process or another.

    :param backend: the backend name for error messages.
    """

    def __init__(self, path: Path, table: str | None, *, backend: str) -> None:
        self.path = path
        self.table = table
        self.backend = backend
        self._key = os.path.realpath(path)
        self._acquired = False

    @property
    def acquired(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release`."""
        return self._acquired

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StorageError` naming the file and the holder's pid."""
        if self._acquired:
            return
        with _held_lock:
            held = _held.get(self._key)
            if held is not None:
                if self.table is None or None in held.tables:
                    raise StorageError(
                        self.backend,
                        f"{self.path} is open for writing in this process (pid {os.getpid()}); "
                        "close its managers first",
                    )
                if self.table in held.tables:
                    raise StorageError(
                        self.backend,
                        f"{self.path}: table {self.table!r} is already open for writing in this "
                        f"process (pid {os.getpid()}) by another manager; close that manager "
                        "first, or open this one read-only",
                    )
                held.tables.add(self.table)
                self._acquired = True
                return
            fd = self._lock_file()
            held = _held[self._key] = _Held(fd)
            held.tables.add(self.table)
            self._acquired = True

    def _lock_file(self) -> int:
        where = lock_path(self.path)
        try:
            fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageError(
                self.backend, f"cannot create the lock file {where}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise StorageError(
                    self.backend, f"cannot lock {where}: {exc.strerror or exc}"
                ) from None
            pid = holder_pid(self.path)
            holder = f"process {pid}" if pid is not None else "another process"
            raise StorageError(
                self.backend,
                f"{self.path} is locked by {holder}, which owns it for writing (one owning "
                f"process per file; lock file {where}). Stop that process, or open this store "
                "read-only to inspect it",
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError:
            pass  # the pid only serves error messages
        return fd

    def release(self) -> None:
        """Give the lock up (the file's lock is dropped when its last table is released)."""
        if not self._acquired:
            return
        self._acquired = False
        with _held_lock:
            held = _held.get(self._key)
            if held is None:
                return  # forgotten after a fork
            held.tables.discard(self.table)
            if held.tables:
                return
            del _held[self._key]
            with contextlib.suppress(OSError):
                os.ftruncate(held.fd, 0)
            try:
                fcntl.flock(held.fd, fcntl.LOCK_UN)
            finally:
                os.close(held.fd)
