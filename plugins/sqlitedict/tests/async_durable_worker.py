"""A process storing durably through AsyncSessionManager from many tasks, driven by
test_sqlitedict_async_durable.py (never collected by pytest).

    python async_durable_worker.py FILE START TASKS
        task t stores s<i> for i = START+t, START+t+TASKS, ... until killed, printing
        "ack <i>" once each store returned

It prints "ready <pid>" once the manager is open. Each line is flushed as it is printed, so the
parent knows what was acknowledged when it kills this process. The sessions are those of
sqlitedict_worker.py (same ids, same metadata), so the process tests' checks apply.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from sessionkeeper import AsyncSessionManager, Session


def metadata(i: int) -> dict[str, Any]:
    return {"i": i, "user": f"user_{i}", "payload": "x" * 200, "nested": {"list": [i, str(i)]}}


async def write(path: str, start: int, tasks: int) -> None:
    sessions = await AsyncSessionManager.open(
        "sqlitedict", {"file_path": path, "auto_save": 0}, cleanup_interval=0
    )
    print("ready", os.getpid(), flush=True)
    now = sessions.sync.clock()

    async def run(i: int) -> None:
        while True:
            await sessions.store(Session(f"s{i:07d}", now, now, None, metadata(i)))
            print("ack", i, flush=True)
            i += tasks

    await asyncio.gather(*(run(start + t) for t in range(tasks)))


if __name__ == "__main__":
    asyncio.run(write(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
