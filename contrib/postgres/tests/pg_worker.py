"""A separate process sharing a PostgreSQL table with the tests (run as a script, not collected).

Usage (every command waits until the file GO exists, so that processes start together)::

    python pg_worker.py sweep DSN TABLE GO NOW          # cleanup_expired at clock NOW; prints
                                                        # {"removed": n}
    python pg_worker.py write DSN TABLE GO PREFIX COUNT # stores PREFIX-0.. PREFIX-(COUNT-1),
                                                        # fetches each, deletes every third;
                                                        # prints {"kept": [...]}
    python pg_worker.py touch DSN TABLE GO ID...        # touches the ids until all are gone;
                                                        # prints {"touches": n, "pending": [...]}

Every command uses a real :class:`~sessionkeeper.SessionManager`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sessionkeeper import SessionManager, SessionNotFound

#: A loop gives up after this long (the test that started it has failed by then).
_GIVE_UP_S = 60.0


def _wait_for(go: Path) -> None:
    end = time.monotonic() + _GIVE_UP_S
    while not go.exists():
        if time.monotonic() > end:
            raise SystemExit(f"{go} never appeared")
        time.sleep(0.01)


def main(argv: list[str]) -> int:
    command, dsn, table, go, *rest = argv
    clock_now = int(rest[0]) if command == "sweep" else None
    kwargs: dict[str, object] = {"cleanup_interval": 0, "touch_resolution": 0}
    if clock_now is not None:
        kwargs["clock"] = lambda: clock_now
    with SessionManager(
        backend="postgres", backend_opts={"dsn": dsn, "table_name": table}, **kwargs
    ) as sessions:
        _wait_for(Path(go))
        if command == "sweep":
            print(json.dumps({"removed": sessions.cleanup_expired()}))
        elif command == "write":
            prefix, count = rest[0], int(rest[1])
            kept = []
            for n in range(count):
                session = sessions.create(timeout_ms=600_000, metadata={"by": prefix, "n": n})
                sessions.delete(session.id)  # a generated id, then our own
                sid = f"{prefix}-{n}"
                sessions.store(session.replace(id=sid))
                assert sessions.fetch(sid).metadata == {"by": prefix, "n": n}
                if n % 3 == 0:
                    assert sessions.delete(sid) is True
                else:
                    kept.append(sid)
            print(json.dumps({"kept": kept}))
        elif command == "touch":
            pending, touches = set(rest), 0
            end = time.monotonic() + _GIVE_UP_S
            while pending and time.monotonic() < end:
                for session_id in sorted(pending):
                    try:
                        sessions.touch(session_id)
                        touches += 1
                    except SessionNotFound:
                        pending.discard(session_id)
            print(json.dumps({"touches": touches, "pending": sorted(pending)}))
        else:
            print(f"unknown command {command!r}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
