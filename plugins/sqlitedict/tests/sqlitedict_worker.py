"""A process that uses a sqlitedict store, driven by the process tests (never collected by pytest).

    python sqlitedict_worker.py write FILE AUTO_SAVE START [THREADS]
                                                             store s<i> for i = START, START+1, ...
                                                             printing "ack <i>" after each returns
                                                             (and "committed <n>" every 5 stores);
                                                             with THREADS, thread t stores
                                                             i = START+t, START+t+THREADS, ...
    python sqlitedict_worker.py fill FILE AUTO_SAVE COUNT [close|exit]
                                                             store COUNT sessions, then close the
                                                             manager or just return (atexit)
    python sqlitedict_worker.py hold FILE                    own the store until stdin closes
    python sqlitedict_worker.py create FILE NOW              store the restart-test sessions
    python sqlitedict_worker.py dump FILE                    print what a new owner finds (JSON)

Every line is flushed as it is printed, so the parent knows what was acknowledged when it kills
this process.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from sessionkeeper import Session, SessionManager

#: The metadata stored with session ``i`` (checked by the tests).
PAYLOAD = "x" * 200


def metadata(i: int) -> dict[str, Any]:
    return {"i": i, "user": f"user_{i}", "payload": PAYLOAD, "nested": {"list": [i, str(i)]}}


def session(i: int, now: int) -> Session:
    return Session(f"s{i:07d}", now, now, None, metadata(i))


_said = threading.Lock()


def say(*words: object) -> None:
    with _said:  # whole lines, also from several threads
        print(*words, flush=True)


def open_manager(path: str, auto_save: int) -> SessionManager:
    return SessionManager(
        backend="sqlitedict",
        backend_opts={"file_path": path, "auto_save": auto_save},
        cleanup_interval=0,
    )


def write(path: str, auto_save: int, start: int, threads: int = 1) -> None:
    manager = open_manager(path, auto_save)
    backend = manager.backend
    say("ready", os.getpid())
    now = manager.clock()

    def run(i: int) -> None:
        while True:
            manager.store(session(i, now))
            say("ack", i)
            i += threads
            if auto_save and i % 5 == 0:
                say("committed", backend.sessionkeeper_stats()["committed_writes"])

    if threads == 1:
        run(start)  # until killed
    else:
        for t in range(threads):
            threading.Thread(target=run, args=(start + t,)).start()


def fill(path: str, auto_save: int, count: int, ending: str) -> None:
    manager = open_manager(path, auto_save)
    now = manager.clock()
    for i in range(count):
        manager.store(session(i, now))
    say("stored", count)
    if ending == "close":
        manager.close()
    # else: return with the manager open; interpreter exit must commit the buffer


def hold(path: str) -> None:
    manager = open_manager(path, 0)
    say("ready", os.getpid())
    sys.stdin.read()
    manager.close()
    say("closed")


def create(path: str, now: int) -> None:
    with open_manager(path, 60_000) as manager:
        manager.store(Session("forever", now - 5_000, now - 1_000, None, {"kind": "forever"}))
        manager.store(Session("live", now - 5_000, now - 1_000, 3_600_000, {"kind": "live"}))
        manager.store(Session("expired", now - 90_000, now - 60_000, 1_000, {"kind": "expired"}))
        for i in range(100):
            manager.store(session(i, now))
    say("created")


def dump(path: str) -> None:
    with open_manager(path, 0) as manager:
        live = sorted(manager.list())
        found = {s.id: s.to_dict() for s in manager.iter_sessions(include_expired=True)}
        removed = manager.cleanup_expired()
        after = sorted(s.id for s in manager.iter_sessions(include_expired=True))
    say(json.dumps({"live": live, "stored": found, "removed": removed, "after_cleanup": after}))


def main(argv: list[str]) -> None:
    command, path, *rest = argv
    if command == "write":
        write(path, int(rest[0]), int(rest[1]), *(int(n) for n in rest[2:3]))
    elif command == "fill":
        fill(path, int(rest[0]), int(rest[1]), rest[2] if len(rest) > 2 else "close")
    elif command == "hold":
        hold(path)
    elif command == "create":
        create(path, int(rest[0]))
    elif command == "dump":
        dump(path)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
