"""The sweep lease of shared mode: one cleanup at a time across every process of the file.

A sweeper claims the lease in a short ``BEGIN IMMEDIATE`` transaction by writing its row of
``sessionkeeper_meta`` (``<table>:sweep``), and renews it in the transaction of each batch it
deletes; a batch whose renewal finds the lease someone else's is rolled back and the sweep
ends. The row holds ``<boot id> <pid> <token> <deadline>``: the deadline is on the host's
monotonic clock (``CLOCK_MONOTONIC`` is one clock for every process of a host, and shared mode
is one host), which is why the boot id is there too: after a reboot, a lease of the previous
boot is void. A lease is free when it is missing, past its deadline, of another boot, or held
by a process that no longer exists (``kill(pid, 0)``): a sweeper killed mid-sweep is replaced
at once, and one stopped (``SIGSTOP``) once its lease runs out.

Every function here runs inside the caller's transaction on the caller's connection.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from functools import cache
from typing import Final

from ._shared_sql import SharedStatements

__all__ = ["Lease"]

_NS_PER_MS: Final = 1_000_000


@cache
def boot_id() -> str:
    """This boot of the host (``/proc/sys/kernel/random/boot_id``), ``"-"`` when unknown."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as source:
            return source.read().strip() or "-"
    except OSError:
        return "-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:
        return True
    return True


class Lease:
    """One claim to sweep ``sql``'s table, ``duration_ms`` long per renewal."""

    __slots__ = ("_duration_ns", "_sql", "holder")

    def __init__(self, sql: SharedStatements, duration_ms: int) -> None:
        self._sql = sql
        self._duration_ns = duration_ms * _NS_PER_MS
        #: ``<boot id> <pid> <token>``: who this claim is.
        self.holder = f"{boot_id()} {os.getpid()} {secrets.token_hex(8)}"

    def _value(self) -> str:
        return f"{self.holder} {time.monotonic_ns() + self._duration_ns}"

    def claim(self, connection: sqlite3.Connection) -> str | None:
        """Take the lease if it is free (in the caller's write transaction); return ``None``
        when taken, else who holds it (``"process 4242"``)."""
        row = connection.execute(self._sql.meta_get, (self._sql.sweep_key,)).fetchone()
        if row is not None:
            busy = self._held_by_another(row[0])
            if busy is not None:
                return busy
        connection.execute(self._sql.meta_put, (self._sql.sweep_key, self._value()))
        return None

    def _held_by_another(self, value: object) -> str | None:
        """Who holds the lease ``value`` if it is still good and not this claim's, else
        ``None``."""
        fields = value.split() if isinstance(value, str) else []
        if len(fields) != 4 or not fields[1].isdigit() or not fields[3].lstrip("-").isdigit():
            return None  # not a lease this code wrote: void
        boot, pid, token, deadline = fields[0], int(fields[1]), fields[2], int(fields[3])
        if f"{boot} {pid} {token}" == self.holder:
            return None
        if boot != boot_id() or deadline < time.monotonic_ns() or not _alive(pid):
            return None
        return f"process {pid}"

    def renew(self, connection: sqlite3.Connection) -> bool:
        """Extend the lease if it is still this claim's (in the caller's write transaction);
        ``False`` when another sweeper took it (this one ran past its deadline)."""
        row = connection.execute(self._sql.meta_get, (self._sql.sweep_key,)).fetchone()
        if row is None or not isinstance(row[0], str) or not row[0].startswith(self.holder + " "):
            return False
        connection.execute(self._sql.meta_put, (self._sql.sweep_key, self._value()))
        return True

    def release(self, connection: sqlite3.Connection) -> None:
        """Give the lease up if it is still this claim's (in the caller's write transaction)."""
        row = connection.execute(self._sql.meta_get, (self._sql.sweep_key,)).fetchone()
        if row is not None and isinstance(row[0], str) and row[0].startswith(self.holder + " "):
            connection.execute(self._sql.meta_delete, (self._sql.sweep_key,))
