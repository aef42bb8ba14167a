"""A separate process sharing a Redis store with the tests (run as a script, not collected).

Usage::

    python redis_worker.py create URL TABLE COUNT   # prints the new ids as a JSON list
    python redis_worker.py touch URL TABLE ID...    # touches every id once, prints "ready",
                                                    # touches them until all are gone, prints
                                                    # {"touches": n, "gone": [...], "pending": []}
    python redis_worker.py show URL TABLE ID...     # prints {id: session dict or null}

Every command uses a real :class:`~sessionkeeper.SessionManager` with the system clock.
"""

from __future__ import annotations

import json
import sys
import time

from sessionkeeper import SessionManager, SessionNotFound

#: A touch loop gives up after this long (the test that started it has failed by then).
_GIVE_UP_S = 60.0


def _manager(url: str, table: str) -> SessionManager:
    return SessionManager(
        backend="redis",
        backend_opts={"url": url, "table_name": table},
        cleanup_interval=0,
        touch_resolution=0,
    )


def main(argv: list[str]) -> int:
    command, url, table, *rest = argv
    with _manager(url, table) as sessions:
        if command == "create":
            created = [
                sessions.create(timeout_ms=600_000, metadata={"by": "worker", "n": n}).id
                for n in range(int(rest[0]))
            ]
            print(json.dumps(created))
        elif command == "touch":
            pending, gone, touches = set(rest), [], 0
            for session_id in rest:  # every session exists when the test starts us
                sessions.touch(session_id)
                touches += 1
            print("ready", flush=True)  # the test deletes once every worker said so
            end = time.monotonic() + _GIVE_UP_S
            while pending and time.monotonic() < end:
                for session_id in sorted(pending):
                    try:
                        sessions.touch(session_id)
                        touches += 1
                    except SessionNotFound:
                        pending.discard(session_id)
                        gone.append(session_id)
            print(json.dumps({"touches": touches, "gone": gone, "pending": sorted(pending)}))
        elif command == "show":
            found = {}
            for session_id in rest:
                try:
                    found[session_id] = sessions.peek(session_id).to_dict()
                except SessionNotFound:
                    found[session_id] = None
            print(json.dumps(found))
        else:
            print(f"unknown command {command!r}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
