"""A writer process for test_durability.py: stores, touches and deletes sessions in a loop in
sync mode and prints each operation on stdout after it returned (its acknowledgement), until it
is killed. Before a delete it also prints ``deleting ID``: the parent then knows that the session
may be gone although the delete was not acknowledged.

Usage: ``python writer.py DB_PATH RUN`` (sessions get ids ``r<RUN>-<i>``).
"""

from __future__ import annotations

import itertools
import sys

from sessionkeeper import Session, SessionManager

START = 1_700_000_000_000


def main() -> None:
    db_path, run = sys.argv[1], int(sys.argv[2])
    ticks = itertools.count(START)

    def clock() -> int:
        return next(ticks)

    with SessionManager(
        backend="leveldb",
        backend_opts={"db_path": db_path, "sync": True},
        cleanup_interval=0,
        clock=clock,
    ) as sessions:
        print("ready", flush=True)
        for i in itertools.count():
            sid = f"r{run}-{i}"
            now = clock()
            timeout = None if i % 4 == 0 else 86_400_000 + i
            sessions.store(Session(sid, now, now, timeout, {"run": run, "i": i}))
            print(f"stored {sid} {now}", flush=True)
            if i % 3 == 2:
                touched = sessions.touch(f"r{run}-{i - 1}")
                print(f"touched {touched.id} {touched.last_accessed}", flush=True)
            if i % 5 == 4:
                doomed = f"r{run}-{i - 2}"
                print(f"deleting {doomed}", flush=True)  # an intent, not an acknowledgement
                sessions.delete(doomed)
                print(f"deleted {doomed}", flush=True)


if __name__ == "__main__":
    main()
