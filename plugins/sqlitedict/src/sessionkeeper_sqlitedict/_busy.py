"""Who holds SQLite's lock on a file, for the error of a wait that ran out (``SQLITE_BUSY``).

In WAL mode SQLite's locks are POSIX byte-range locks on the ``-shm`` file: byte 120 is the
write lock (a write transaction), 121 the checkpointer's, 122 recovery's, 123-127 the readers'
slots (a reader blocks nothing but a checkpoint that would overwrite its snapshot). In the
rollback-journal modes they lie on the database file itself, from byte 0x40000000. The kernel
lists every such lock with its process in ``/proc/locks``: reading it names the process that
made a wait run out, without asking SQLite.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Final

from ._lock import kernel_locks

__all__ = ["describe_holders", "is_busy"]

#: SQLite's primary result codes for "someone else holds the lock".
_BUSY_CODES: Final = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
#: WAL lock bytes in the -shm file, and what each means.
_SHM_LOCKS: Final = {
    120: "a write transaction",
    121: "a checkpoint",
    122: "the recovery of the WAL index",
}
#: The first byte of SQLite's locks on a database file in a rollback-journal mode.
_PENDING_BYTE: Final = 0x40000000


def is_busy(exc: BaseException) -> bool:
    """True when ``exc`` is SQLite's "database is locked" (``SQLITE_BUSY``/``SQLITE_LOCKED``,
    extended codes included)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def describe_holders(path: Path) -> str:
    """What holds SQLite's locks on ``path`` now, e.g. ``"process 4242 (a write
    transaction)"``; a sentence saying nothing could be seen when the lock is gone already or
    held where ``/proc/locks`` does not show it."""
    real = Path(os.path.realpath(path))
    held: list[str] = []
    shm = _identity(real.with_name(real.name + "-shm"))
    if shm is not None:
        for mode, pid, start, _end in kernel_locks(shm, "POSIX"):
            what = _SHM_LOCKS.get(int(start)) if start.isdigit() else None
            if what is not None and mode == "WRITE":
                held.append(f"process {pid} ({what})")
    database = _identity(real)
    if database is not None:
        for mode, pid, start, _end in kernel_locks(database, "POSIX"):
            if mode == "WRITE" and start.isdigit() and int(start) >= _PENDING_BYTE:
                held.append(f"process {pid} (a write lock on the database file)")
    if not held:
        return "no process holds it any more, or it is held where /proc/locks cannot show it"
    mine = os.getpid()
    shown = sorted(set(held))
    return ", ".join(
        f"{entry} (this process: another of its connections)"
        if entry.startswith(f"process {mine} ")
        else entry
        for entry in shown
    )
