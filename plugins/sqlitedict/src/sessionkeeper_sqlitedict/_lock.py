"""One owning process per *real* file: an OS lock on the SQLite file itself.

The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on the database file, opened by whatever name
the configuration used. A lock belongs to the file (its inode), not to a name, so a second
writer reaching the file through a symlink, a hard link or another spelling of the path meets
the owner's lock. The kernel drops it when the owner exits, however it exits (``SIGKILL``
included), so a crashed owner never leaves a stale lock behind. On Linux, ``flock`` locks and
the POSIX byte-range locks SQLite takes on the same file are independent of each other.

Beside it, ``<real file>.lock`` holds the owner's pid, for the next writer's error message
(the kernel's ``/proc/locks`` is asked first, as it also knows the owner through a hard link),
and is locked too, so that a process of an earlier version, which locked only that file, and
this one still exclude each other. The lock file is never deleted.

Within one process the lock is shared, reference-counted per table: several managers may own
different tables of one file, but one table has one writer, as across processes. Table names
are compared as SQLite compares them, ignoring ASCII case.

Opening the file follows the configured path, but never trusts it: the path must lead to a
regular file (a FIFO would block the open, a directory is named as one), and once locked the
path must still lead to the locked file, else the lock is taken again.

Shared mode (:class:`SharedLock`) takes ``LOCK_SH`` on the same two files instead: any number of
shared processes hold it together, and a single owner and shared processes refuse each other,
each error naming the other mode and, from ``/proc/locks``, the other processes' pids. Within
one process the shared lock is one descriptor per file, counted per store, and a file this
process owns (or shares) is never opened a second time just to be refused: closing any
descriptor of a file drops every POSIX lock the process's SQLite connections hold on it.
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

from ._sql import mode_problem

__all__ = ["LOCK_SUFFIX", "OwnerLock", "SharedLock", "holder_pid", "lock_path"]

#: Appended to the SQLite file's name to name its lock file.
LOCK_SUFFIX: Final = ".lock"
#: Times the lock is taken again when the path was switched to another file meanwhile.
_ATTEMPTS: Final = 5
_BUSY: Final = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


def lock_path(path: Path) -> Path:
    """The lock file beside the SQLite file ``path`` (symlinks resolved: the real file's)."""
    real = Path(os.path.realpath(path))
    return real.with_name(real.name + LOCK_SUFFIX)


def holder_pid(path: Path) -> int | None:
    """The pid written in ``path``'s lock file (the last owner's), or ``None``."""
    try:
        text = lock_path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def kernel_locks(identity: tuple[int, int], kind: str) -> list[tuple[str, int, str, str]]:
    """The locks of kind ``kind`` (``FLOCK``, ``POSIX``) on the file ``identity``, from
    ``/proc/locks``: ``(READ|WRITE, pid, start, end)`` each, pids unknown (OFD locks) left out."""
    device, inode = identity
    want = f"{os.major(device):02x}:{os.minor(device):02x}:{inode}"
    found: list[tuple[str, int, str, str]] = []
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            for line in table:
                # "1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF"
                # (a lock someone waits for is listed again as "1: -> FLOCK ...")
                fields = line.split()
                if (
                    fields[1:3] == [kind, "ADVISORY"]
                    and fields[5:6] == [want]
                    and fields[4].isdigit()
                    and int(fields[4]) > 0
                    and len(fields) >= 8
                ):
                    found.append((fields[3], int(fields[4]), fields[6], fields[7]))
    except OSError:
        pass
    return found


def _kernel_holder(identity: tuple[int, int]) -> int | None:
    """The pid holding a ``flock`` write lock on the file ``identity`` (``/proc/locks``)."""
    for mode, pid, _, _ in kernel_locks(identity, "FLOCK"):
        if mode == "WRITE":
            return pid
    return None


def _kernel_sharers(identity: tuple[int, int]) -> list[int]:
    """The pids holding a ``flock`` read lock on the file ``identity``: shared-mode users."""
    return sorted({pid for mode, pid, _, _ in kernel_locks(identity, "FLOCK") if mode == "READ"})


def _pids(pids: list[int]) -> str:
    shown = ", ".join(map(str, pids[:8]))
    more = f" and {len(pids) - 8} more" if len(pids) > 8 else ""
    return f"process{'es' if len(pids) > 1 else ''} {shown}{more}"


class _Held:
    """The lock one process holds on one file, and the tables it is held for."""

    __slots__ = ("fd", "others", "pid_fd", "tables")

    def __init__(self, fd: int, pid_fd: int) -> None:
        self.fd = fd  # the database file's, locked
        self.pid_fd = pid_fd  # the pid file's, locked
        #: Other descriptors of the database file opened meanwhile, closed with ``fd``.
        self.others: list[int] = []
        self.tables: set[str | None] = set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.pid_fd, 0)
        for fd in (self.pid_fd, self.fd, *self.others):
            with contextlib.suppress(OSError):
                os.close(fd)  # closing drops the flock


#: (st_dev, st_ino) of each file this process owns -> its lock.
_held: dict[tuple[int, int], _Held] = {}
_held_lock = threading.Lock()


def _forget_after_fork() -> None:
    # A forked child shares the parent's open file description, hence its flock: the child must
    # not believe it owns the file. Its copies of the descriptors are closed; the parent's lock
    # stays (flock is released only when every descriptor of the description is closed).
    for held in _held.values():
        for fd in (held.pid_fd, held.fd, *held.others):
            with contextlib.suppress(OSError):
                os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


class OwnerLock:
    """The right to write table ``table`` of the SQLite file ``path`` (see the module docstring).

    ``table=None`` asks for the whole file (``check --repair`` rewrites it): refused while any
    table of it is open for writing, in this process or another.

    :param backend: the backend name for error messages.
    :param create: create the file (mode 0600) when it does not exist.
    """

    def __init__(
        self, path: Path, table: str | None, *, backend: str, create: bool = False
    ) -> None:
        self.path = path
        self.table = table
        self.backend = backend
        self.create = create
        self._table_key = None if table is None else table.lower()
        self._identity: tuple[int, int] | None = None

    @property
    def acquired(self) -> bool:
        """True between a successful :meth:`acquire` and :meth:`release`."""
        return self._identity is not None

    @property
    def identity(self) -> tuple[int, int] | None:
        """``(st_dev, st_ino)`` of the locked file while the lock is held, else ``None``."""
        return self._identity

    def _fail(self, message: str) -> StorageError:
        return StorageError(self.backend, message)

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StorageError` naming the file and the holder's pid."""
        if self._identity is not None:
            return
        for _ in range(_ATTEMPTS):
            # Already owned here? Then no descriptor of the file is opened (closing one would
            # drop the POSIX locks SQLite's connections in this process hold on it).
            identity = self._stat()
            with _held_lock:
                if identity is not None and identity in _held:
                    self._share(_held[identity], identity)
                    return
                if identity is not None and identity in _shared:
                    raise self._fail(
                        f"{self.path} is open in shared mode (shared = true) in this process "
                        f"(pid {os.getpid()}): a single owner cannot open it for writing beside "
                        "it; close those managers, or set shared = true here too"
                    )
            fd, identity = self._open()
            try:
                with _held_lock:
                    if identity in _held:  # created or switched meanwhile: owned here
                        held = _held[identity]
                        held.others.append(fd)  # closed with the others, never while in use
                        fd = -1
                        self._share(held, identity)
                        return
                    self._lock(fd, identity)
                    if self._stat() != identity:  # the path now leads to another file
                        fcntl.flock(fd, fcntl.LOCK_UN)
                        os.close(fd)
                        continue
                    held = _held[identity] = _Held(fd, self._pid_file())
                    fd = -1
                    held.tables.add(self._table_key)
                    self._identity = identity
                    return
            except BaseException:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                raise
        raise self._fail(f"{self.path} kept changing to another file while being locked")

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _share(self, held: _Held, identity: tuple[int, int]) -> None:
        """Join this process's lock on the file (called with ``_held_lock`` held)."""
        if self._table_key is None or None in held.tables:
            raise self._fail(
                f"{self.path} is open for writing in this process (pid {os.getpid()}); "
                "close its managers first"
            )
        if self._table_key in held.tables:
            raise self._fail(
                f"{self.path}: table {self.table!r} is already open for writing in this "
                f"process (pid {os.getpid()}) by another manager; close that manager first, "
                "or open this one read-only"
            )
        held.tables.add(self._table_key)
        self._identity = identity

    def _open(self) -> tuple[int, tuple[int, int]]:
        """A descriptor of the file (created if asked), which must be a regular file."""
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_CREAT if self.create else 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except IsADirectoryError:
            raise self._fail(
                f"{self.path} is a directory, not a SQLite file: file_path must name a file"
            ) from None
        except FileNotFoundError:
            raise self._fail(f"{self.path} does not exist") from None
        except OSError as exc:
            verb = "create or open" if self.create else "open"
            raise self._fail(
                f"cannot {verb} {self.path} for writing: {exc.strerror or exc}"
            ) from None
        st = os.fstat(fd)
        problem = mode_problem(self.path, st.st_mode)
        if problem is not None:
            os.close(fd)
            raise self._fail(problem)
        return fd, (st.st_dev, st.st_ino)

    def _lock(self, fd: int, identity: tuple[int, int]) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in _BUSY:
                raise self._fail(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            holder = _kernel_holder(identity)
            if holder is None:
                sharers = _kernel_sharers(identity)
                if sharers:
                    raise self._shared_by(sharers) from None
            raise self._locked(holder or holder_pid(self.path)) from None

    def _shared_by(self, pids: list[int]) -> StorageError:
        return self._fail(
            f"{self.path} is open in shared mode (shared = true) by {_pids(pids)}: a single "
            "owner cannot open it for writing beside them. Stop them, or set shared = true "
            "here too (or open this store read-only to inspect it)"
        )

    def _locked(self, pid: int | None) -> StorageError:
        holder = f"process {pid}" if pid is not None else "another process"
        real = os.path.realpath(self.path)
        alias = "" if real == os.path.abspath(self.path) else f" (the file {real})"
        return self._fail(
            f"{self.path}{alias} is locked by {holder}, which owns it for writing (one owning "
            "process per file, whatever name or link it is opened by). Stop that process, or "
            "open this store read-only to inspect it"
        )

    def _lock_pid_file(self, operation: int) -> int:
        """Lock the pid file too (see the module docstring) with ``operation`` (``LOCK_EX``
        for the owner, ``LOCK_SH`` shared); return its descriptor."""
        where = lock_path(self.path)
        try:
            fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._fail(
                f"cannot create the lock file {where}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _BUSY:
                raise self._fail(f"cannot lock {where}: {exc.strerror or exc}") from None
            raise self._pid_file_busy() from None
        return fd

    def _pid_file_busy(self) -> StorageError:
        return self._locked(holder_pid(self.path))

    def _pid_file(self) -> int:
        """Lock the pid file exclusively and write this process's pid."""
        fd = self._lock_pid_file(fcntl.LOCK_EX)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError:
            pass  # the pid only serves error messages
        return fd

    def release(self) -> None:
        """Give the lock up (the file's lock is dropped when its last table is released)."""
        identity, self._identity = self._identity, None
        if identity is None:
            return
        with _held_lock:
            held = _held.get(identity)
            if held is None:
                return  # forgotten after a fork
            held.tables.discard(self._table_key)
            if held.tables:
                return
            del _held[identity]
            held.close()


class _Shared:
    """The shared lock this process holds on one file: its descriptors and how many stores
    use it."""

    __slots__ = ("fd", "others", "pid_fd", "users")

    def __init__(self, fd: int, pid_fd: int) -> None:
        self.fd = fd
        self.pid_fd = pid_fd
        #: Other descriptors of the file opened meanwhile, closed with ``fd``.
        self.others: list[int] = []
        self.users = 0

    def close(self) -> None:
        for fd in (self.pid_fd, self.fd, *self.others):
            with contextlib.suppress(OSError):
                os.close(fd)  # closing drops the flock


#: (st_dev, st_ino) of each file this process shares -> its lock.
_shared: dict[tuple[int, int], _Shared] = {}


def _forget_shared_after_fork() -> None:
    # The child's copies of the descriptors are closed without unlocking: LOCK_UN would unlock
    # the open file description the parent still uses. The parent's lock stays.
    for held in _shared.values():
        held.close()
    _shared.clear()


os.register_at_fork(after_in_child=_forget_shared_after_fork)


class SharedLock(OwnerLock):
    """The right to read and write the SQLite file ``path`` in shared mode, beside other
    processes that hold it too (``flock(LOCK_SH)``; see the module docstring).

    Refused, naming the owner's pid, while a single owner holds the file (in this process or
    another). Every table of the file is shared alike: the lock is the file's.
    """

    def __init__(self, path: Path, table: str, *, backend: str) -> None:
        super().__init__(path, table, backend=backend, create=True)

    def acquire(self) -> None:
        """Take the shared lock, or raise :class:`StorageError` naming the single owner."""
        if self._identity is not None:
            return
        for _ in range(_ATTEMPTS):
            identity = self._stat()
            with _held_lock:
                if identity is not None and self._joined(identity):
                    return
            fd, identity = self._open()
            try:
                with _held_lock:
                    if self._joined(identity):  # created or switched meanwhile: shared here
                        _shared[identity].others.append(fd)  # closed with the others
                        fd = -1
                        return
                    self._lock_shared(fd, identity)
                    if self._stat() != identity:  # the path now leads to another file
                        fcntl.flock(fd, fcntl.LOCK_UN)
                        os.close(fd)
                        fd = -1
                        continue
                    # The pid file is locked shared too: an older version's owner locked only
                    # that file.
                    held = _shared[identity] = _Shared(fd, self._lock_pid_file(fcntl.LOCK_SH))
                    fd = -1
                    held.users += 1
                    self._identity = identity
                    return
            except BaseException:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                raise
        raise self._fail(f"{self.path} kept changing to another file while being locked")

    def _joined(self, identity: tuple[int, int]) -> bool:
        """Join this process's shared lock on the file, if it holds one (``_held_lock`` held);
        refuse when this process owns the file."""
        if identity in _held:
            raise self._fail(
                f"{self.path} is owned for writing in this process (pid {os.getpid()}) by a "
                "single-owner manager (shared = false): close it before opening the file in "
                "shared mode, or open every manager of the file with shared = true"
            )
        held = _shared.get(identity)
        if held is None:
            return False
        held.users += 1
        self._identity = identity
        return True

    def _lock_shared(self, fd: int, identity: tuple[int, int]) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in _BUSY:
                raise self._fail(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            raise self._owned(_kernel_holder(identity) or holder_pid(self.path)) from None

    def _owned(self, pid: int | None) -> StorageError:
        holder = f"process {pid}" if pid is not None else "another process"
        real = os.path.realpath(self.path)
        alias = "" if real == os.path.abspath(self.path) else f" (the file {real})"
        return self._fail(
            f"{self.path}{alias} is owned by {holder} in single-owner mode (shared = false), "
            "which keeps every other writer out: stop it, or open every process's store with "
            "shared = true"
        )

    def _pid_file_busy(self) -> StorageError:
        return self._owned(holder_pid(self.path))

    def release(self) -> None:
        """Give the lock up (dropped when the last store of the file in this process closes)."""
        identity, self._identity = self._identity, None
        if identity is None:
            return
        with _held_lock:
            held = _shared.get(identity)
            if held is None:
                return  # forgotten after a fork
            held.users -= 1
            if held.users > 0:
                return
            del _shared[identity]
            held.close()
