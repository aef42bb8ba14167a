"""A separate process sharing a Redis store with the tests (run as a script, not collected).

Usage::

    python redis_worker.py create URL TABLE COUNT   # prints the new ids as a JSON list
    python redis_worker.py touch URL TABLE ID...    # touches every id once, prints "ready",
                                                    # touches them until all are gone, prints
                                                    # {"touches": n, "gone": [...], "pending": []}
    python redis_worker.py show URL TABLE ID...     # prints {id: session dict or null}
    python redis_worker.py aupdate URL TABLE ID TASKS COUNT
                                    # TASKS asyncio tasks each add 1 COUNT times with update
                                    # (the native redis.asyncio path), prints the updates done

Every command uses a real :class:`~sessionkeeper.SessionManager` (``aupdate``: an
:class:`~sessionkeeper.AsyncSessionManager`) with the system clock.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from sessionkeeper import AsyncSessionManager, SessionManager, SessionNotFound

#: A touch loop gives up after this long (the test that started it has failed by then).
_GIVE_UP_S = 60.0


def _manager(url: str, table: str) -> SessionManager:
    return SessionManager(
        backend="redis",
        backend_opts={"url": url, "table_name": table},
        cleanup_interval=0,
        touch_resolution=0,
    )


async def _aupdate(url: str, table: str, session_id: str, tasks: int, count: int) -> int:
    def add_one(metadata: dict[str, Any]) -> dict[str, Any]:
        return {**metadata, "n": metadata["n"] + 1}

    async with await AsyncSessionManager.open(
        "redis", {"url": url, "table_name": table}, cleanup_interval=0
    ) as sessions:
        assert "update" in sessions.native_operations, sessions.native_operations

        async def worker() -> int:
            for _ in range(count):
                await sessions.update(session_id, add_one, attempts=10_000)
            return count

        return sum(await asyncio.gather(*(worker() for _ in range(tasks))))


def main(argv: list[str]) -> int:
    command, url, table, *rest = argv
    if command == "aupdate":
        session_id, tasks, count = rest[0], int(rest[1]), int(rest[2])
        print(json.dumps(asyncio.run(_aupdate(url, table, session_id, tasks, count))))
        return 0
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
