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
from typing import ClassVar, Final, Generic, TypeVar

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


class _Descriptors:
    """The descriptors of a lock this process holds on one file: the database file's and the pid
    file's (both locked), and others of the database file opened meanwhile, kept until the lock
    goes (closing one would drop the POSIX locks of this process's SQLite connections)."""

    __slots__ = ("fd", "others", "pid_fd")

    def __init__(self, fd: int, pid_fd: int) -> None:
        self.fd = fd
        self.pid_fd = pid_fd
        self.others: list[int] = []

    def close(self) -> None:
        """Close every descriptor (closing drops the flock)."""
        for fd in (self.pid_fd, self.fd, *self.others):
            with contextlib.suppress(OSError):
                os.close(fd)


class _Held(_Descriptors):
    """The single-owner lock this process holds on one file, and the tables it is held for."""

    __slots__ = ("tables",)

    def __init__(self, fd: int, pid_fd: int) -> None:
        super().__init__(fd, pid_fd)
        self.tables: set[str | None] = set()

    def leave(self, table_key: str | None) -> bool:
        """Release ``table_key``; whether other tables still hold the lock."""
        self.tables.discard(table_key)
        return bool(self.tables)

    def close(self) -> None:
        """Empty the pid file (no owner left), then close every descriptor."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.pid_fd, 0)
        super().close()


class _Shared(_Descriptors):
    """The shared lock this process holds on one file, and how many stores use it."""

    __slots__ = ("users",)

    def __init__(self, fd: int, pid_fd: int) -> None:
        super().__init__(fd, pid_fd)
        self.users = 0

    def leave(self, table_key: str | None) -> bool:
        """One store fewer; whether others still use the lock."""
        self.users -= 1
        return self.users > 0


#: (st_dev, st_ino) of each file this process owns -> its lock.
_held: dict[tuple[int, int], _Held] = {}
#: (st_dev, st_ino) of each file this process shares -> its lock.
_shared: dict[tuple[int, int], _Shared] = {}
#: Guards both tables.
_held_lock = threading.Lock()


def _forget_after_fork() -> None:
    # A forked child shares the parent's open file descriptions, hence its flocks: the child must
    # not believe it owns or shares the files. Its copies of the descriptors are closed without
    # unlocking (LOCK_UN would unlock the description the parent still uses) and without emptying
    # the pid file (the pid is the parent's); the parent's locks stay (a flock is released only
    # when every descriptor of its description is closed).
    for table in (_held, _shared):
        for held in table.values():
            _Descriptors.close(held)
        table.clear()


os.register_at_fork(after_in_child=_forget_after_fork)

H = TypeVar("H", _Held, _Shared)


class _FileLock(Generic[H]):
    """What the single-owner and the shared lock share: taking the file's lock (once per process,
    joined by the other users of this process), and giving it up.

    A subclass says which ``flock`` it takes (:attr:`_FLOCK`), how it joins this process's lock
    on the file (:meth:`_holding`, :meth:`_enter`), how it records a lock it took
    (:meth:`_hold`) and how it names a refusal (:meth:`_busy`, :meth:`_pid_file_busy`); those
    taking ``identity`` run with ``_held_lock`` held.
    """

    _FLOCK: ClassVar[int]

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

    def _holdings(self) -> dict[tuple[int, int], H]:
        """The files this process holds this kind of lock on."""
        raise NotImplementedError

    def _holding(self, identity: tuple[int, int]) -> H | None:
        """This process's lock on the file, if any; refuses a file held in the other mode."""
        raise NotImplementedError

    def _enter(self, held: H, identity: tuple[int, int]) -> None:
        """Join ``held``, this process's lock on the file."""
        raise NotImplementedError

    def _hold(self, fd: int, identity: tuple[int, int]) -> None:
        """Record the lock just taken on ``fd``, with the pid file's."""
        raise NotImplementedError

    def _busy(self, identity: tuple[int, int]) -> StorageError:
        """The refusal when another process's lock on the file is in the way."""
        raise NotImplementedError

    def _pid_file_busy(self) -> StorageError:
        """The refusal when another process's lock on the pid file is in the way."""
        raise NotImplementedError

    def acquire(self) -> None:
        """Take the lock, or raise :class:`StorageError` naming the file and the holders."""
        if self._identity is not None:
            return
        for _ in range(_ATTEMPTS):
            # Already held here? Then no descriptor of the file is opened (closing one would
            # drop the POSIX locks SQLite's connections in this process hold on it).
            identity = self._stat()
            if identity is not None:
                with _held_lock:
                    held = self._holding(identity)
                    if held is not None:
                        self._enter(held, identity)
                        return
            fd, identity = self._open()
            try:
                with _held_lock:
                    held = self._holding(identity)
                    if held is not None:  # created or switched meanwhile: held here
                        held.others.append(fd)  # closed with the others, never while in use
                        fd = -1
                        self._enter(held, identity)
                        return
                    self._lock(fd, identity)
                    if self._stat() != identity:  # the path now leads to another file
                        fcntl.flock(fd, fcntl.LOCK_UN)
                        os.close(fd)
                        fd = -1
                        continue
                    self._hold(fd, identity)
                    fd = -1
                    return
            except BaseException:
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                raise
        raise self._fail(f"{self.path} kept changing to another file while being locked")

    def release(self) -> None:
        """Give the lock up: the file's lock is dropped when the last user of it in this process
        lets go (the last table of a single owner, the last store of a shared file)."""
        identity, self._identity = self._identity, None
        if identity is None:
            return
        with _held_lock:
            holdings = self._holdings()
            held = holdings.get(identity)
            if held is None:
                return  # forgotten after a fork
            if held.leave(self._table_key):
                return
            del holdings[identity]
            held.close()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

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
            fcntl.flock(fd, self._FLOCK | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in _BUSY:
                raise self._fail(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            raise self._busy(identity) from None

    def _held_by(self, pid: int | None) -> tuple[str, str]:
        """``(holder, file)``: ``process <pid>`` (or ``another process``), and the path as
        configured, followed by the real file when it is another name for it."""
        holder = f"process {pid}" if pid is not None else "another process"
        real = os.path.realpath(self.path)
        alias = "" if real == os.path.abspath(self.path) else f" (the file {real})"
        return holder, f"{self.path}{alias}"

    def _lock_pid_file(self) -> int:
        """Lock the pid file too (see the module docstring) as the database file (``LOCK_EX``
        for the owner, ``LOCK_SH`` shared); return its descriptor."""
        where = lock_path(self.path)
        try:
            fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._fail(
                f"cannot create the lock file {where}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(fd, self._FLOCK | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in _BUSY:
                raise self._fail(f"cannot lock {where}: {exc.strerror or exc}") from None
            raise self._pid_file_busy() from None
        return fd


class OwnerLock(_FileLock[_Held]):
    """The right to write table ``table`` of the SQLite file ``path`` (see the module docstring).

    ``table=None`` asks for the whole file (``check --repair`` rewrites it): refused while any
    table of it is open for writing, in this process or another.

    :param backend: the backend name for error messages.
    :param create: create the file (mode 0600) when it does not exist.
    """

    _FLOCK = fcntl.LOCK_EX

    def _holdings(self) -> dict[tuple[int, int], _Held]:
        return _held

    def _holding(self, identity: tuple[int, int]) -> _Held | None:
        held = _held.get(identity)
        if held is None and identity in _shared:
            raise self._fail(
                f"{self.path} is open in shared mode (shared = true) in this process "
                f"(pid {os.getpid()}): a single owner cannot open it for writing beside "
                "it; close those managers, or set shared = true here too"
            )
        return held

    def _enter(self, held: _Held, identity: tuple[int, int]) -> None:
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

    def _hold(self, fd: int, identity: tuple[int, int]) -> None:
        held = _held[identity] = _Held(fd, self._pid_file())
        held.tables.add(self._table_key)
        self._identity = identity

    def _busy(self, identity: tuple[int, int]) -> StorageError:
        holder = _kernel_holder(identity)
        if holder is None:
            sharers = _kernel_sharers(identity)
            if sharers:
                return self._shared_by(sharers)
        return self._locked(holder or holder_pid(self.path))

    def _shared_by(self, pids: list[int]) -> StorageError:
        return self._fail(
            f"{self.path} is open in shared mode (shared = true) by {_pids(pids)}: a single "
            "owner cannot open it for writing beside them. Stop them, or set shared = true "
            "here too (or open this store read-only to inspect it)"
        )

    def _locked(self, pid: int | None) -> StorageError:
        holder, file = self._held_by(pid)
        return self._fail(
            f"{file} is locked by {holder}, which owns it for writing (one owning "
            "process per file, whatever name or link it is opened by). Stop that process, or "
            "open this store read-only to inspect it"
        )

    def _pid_file_busy(self) -> StorageError:
        return self._locked(holder_pid(self.path))

    def _pid_file(self) -> int:
        """Lock the pid file exclusively and write this process's pid."""
        fd = self._lock_pid_file()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError:
            pass  # the pid only serves error messages
        return fd


class SharedLock(_FileLock[_Shared]):
    """The right to read and write the SQLite file ``path`` in shared mode, beside other
    processes that hold it too (``flock(LOCK_SH)``; see the module docstring).

    Refused, naming the owner's pid, while a single owner holds the file (in this process or
    another). Every table of the file is shared alike: the lock is the file's.
    """

    _FLOCK = fcntl.LOCK_SH

    def __init__(self, path: Path, table: str, *, backend: str) -> None:
        super().__init__(path, table, backend=backend, create=True)

    def _holdings(self) -> dict[tuple[int, int], _Shared]:
        return _shared

    def _holding(self, identity: tuple[int, int]) -> _Shared | None:
        if identity in _held:
            raise self._fail(
                f"{self.path} is owned for writing in this process (pid {os.getpid()}) by a "
                "single-owner manager (shared = false): close it before opening the file in "
                "shared mode, or open every manager of the file with shared = true"
            )
        return _shared.get(identity)

    def _enter(self, held: _Shared, identity: tuple[int, int]) -> None:
        held.users += 1
        self._identity = identity

    def _hold(self, fd: int, identity: tuple[int, int]) -> None:
        # The pid file is locked shared too: an older version's owner locked only that file.
        held = _shared[identity] = _Shared(fd, self._lock_pid_file())
        self._enter(held, identity)

    def _busy(self, identity: tuple[int, int]) -> StorageError:
        return self._owned(_kernel_holder(identity) or holder_pid(self.path))

    def _owned(self, pid: int | None) -> StorageError:
        holder, file = self._held_by(pid)
        return self._fail(
            f"{file} is owned by {holder} in single-owner mode (shared = false), "
            "which keeps every other writer out: stop it, or open every process's store with "
            "shared = true"
        )

    def _pid_file_busy(self) -> StorageError:
        return self._owned(holder_pid(self.path))
