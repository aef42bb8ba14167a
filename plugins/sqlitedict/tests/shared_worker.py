"""A process on a shared-mode file, for test_sqlitedict_shared.py: ``shared_worker.py MODE PATH
[ARG]``. Every line it prints ends with ``\\n`` once what it says is done.

``write``
    a shared manager storing ``w<i>`` (owner ``writer``) one after another, ``ack <i>`` after
    each store returned, a millisecond apart, until it is killed;
``hold``
    a raw ``sqlite3`` connection that writes a row inside ``BEGIN IMMEDIATE`` and keeps that
    transaction open (SQLite's write lock held): ``held <pid>``, then it rolls back and exits
    when its stdin closes;
``sweep-stuck``
    a shared manager whose ``cleanup_expired`` stops inside the transaction of its batch number
    ``ARG`` (that batch's deletes done, not committed, the lease and the write lock held):
    ``inside <n>``, then it waits to be killed. The instrumentation wraps the batch only to
    place the kill; the sweep itself is the product's;
``sweep``
    a shared manager running ``cleanup_expired`` once: ``swept <n>``;
``open``
    a manager opened with ``shared = true`` when ``ARG`` is ``shared``, else a single owner
    (a second ``ARG``: its ``busy_timeout``): ``opened <pid> <index rebuilds>`` (or ``error
    <message>``), then it waits for its stdin to close.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from typing import Any

from sessionkeeper import Session, SessionManager, StorageError


def manager(path: str, **opts: Any) -> SessionManager:
    return SessionManager(
        backend="sqlitedict",
        backend_opts={"file_path": path, "shared": True, **opts},
        cleanup_interval=0,
    )


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def write(path: str) -> None:
    with manager(path) as sessions:
        say("ready")
        i = 0
        now = int(time.time() * 1000)
        while True:
            sessions.store(Session(f"w{i}", now, now, None, {"i": i}, owner="writer"))
            say(f"ack {i}")
            i += 1
            time.sleep(0.001)


def hold(path: str) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    connection.execute('INSERT OR REPLACE INTO "sessions" (key, value) VALUES (?, ?)', ("x", b""))
    say(f"held {os.getpid()}")
    sys.stdin.read()
    connection.execute("ROLLBACK")
    connection.close()


def sweep_stuck(path: str, stuck_at: int) -> None:
    from sessionkeeper_sqlitedict._shared import SharedStore

    original = SharedStore._sweep_batch
    batches = 0

    def batch(self: SharedStore, *args: Any) -> tuple[int, bool]:
        nonlocal batches
        result = original(self, *args)
        batches += 1
        if batches == stuck_at:
            say(f"inside {batches}")
            time.sleep(3600)  # killed here, inside the batch's transaction
        return result

    SharedStore._sweep_batch = batch  # type: ignore[method-assign]
    with manager(path) as sessions:
        sessions.cleanup_expired()


def sweep(path: str) -> None:
    with manager(path) as sessions:
        say(f"swept {sessions.cleanup_expired()}")


def open_store(path: str, mode: str, busy_timeout: int | None = None) -> None:
    opts: dict[str, Any] = {"file_path": path}
    if mode == "shared":
        opts["shared"] = True
    if busy_timeout is not None:
        opts["busy_timeout"] = busy_timeout
    try:
        sessions = SessionManager(backend="sqlitedict", backend_opts=opts, cleanup_interval=0)
    except StorageError as exc:
        say(f"error {exc}")
        return
    with sessions:
        rebuilds = sessions.stats()["backend_stats"].get("index_rebuilds", 0)
        say(f"opened {os.getpid()} {rebuilds}")
        sys.stdin.read()


def main() -> None:
    mode, path, *rest = sys.argv[1:]
    if mode == "write":
        write(path)
    elif mode == "hold":
        hold(path)
    elif mode == "sweep-stuck":
        sweep_stuck(path, int(rest[0]))
    elif mode == "sweep":
        sweep(path)
    elif mode == "open":
        open_store(path, rest[0], int(rest[1]) if len(rest) > 1 else None)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
