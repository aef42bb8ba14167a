"""A writer process for test_durability.py that runs the atomic operations (issue 14) in a loop
in sync mode, until it is killed: ``update`` of a counter, ``create`` with an owner, ``rotate``,
``take`` and ``delete_owner``. It prints each operation on stdout after it returned (its
acknowledgement), and before each removal an intent line (``rotating``, ``taking``,
``deleting-owner``): the parent then knows which sessions may be gone although the removal was
not acknowledged.

Usage: ``python atomic_writer.py DB_PATH``.
"""

from __future__ import annotations

import contextlib
import itertools
import sys

from sessionkeeper import Session, SessionManager, VersionConflict

START = 1_700_000_000_000
OWNERS = ("o0", "o1", "o2")


def main() -> None:
    ticks = itertools.count(START)

    def clock() -> int:
        return next(ticks)

    with SessionManager(
        backend="leveldb",
        backend_opts={"db_path": sys.argv[1], "sync": True},
        cleanup_interval=0,
        clock=clock,
    ) as sessions:
        now = clock()
        with contextlib.suppress(VersionConflict):  # else an earlier run created it
            sessions.store(Session("counter", now, now, None, {"n": 0}), if_version=0)
        print("ready", flush=True)
        mine: dict[str, str] = {}  # id -> owner of the sessions this run created and kept
        for i in itertools.count():
            updated = sessions.update("counter", lambda md: {"n": md["n"] + 1})
            print(f"updated {updated.metadata['n']}", flush=True)
            owner = OWNERS[i % len(OWNERS)]
            created = sessions.create(timeout_ms=None, owner=owner)
            mine[created.id] = owner
            print(f"created {created.id} {owner}", flush=True)
            if i % 3 == 2:
                old = next(iter(mine))
                print(f"rotating {old}", flush=True)
                rotated = sessions.rotate(old)
                mine[rotated.id] = mine.pop(old)
                print(f"rotated {old} {rotated.id} {rotated.owner}", flush=True)
            if i % 4 == 3:
                last = next(reversed(mine))
                print(f"taking {last}", flush=True)
                sessions.take(last)
                del mine[last]
                print(f"took {last}", flush=True)
            if i % 10 == 9:
                doomed = OWNERS[(i // 10) % len(OWNERS)]
                print(f"deleting-owner {doomed}", flush=True)
                removed = sessions.delete_owner(doomed)
                mine = {sid: o for sid, o in mine.items() if o != doomed}
                print(f"deleted-owner {doomed} {removed}", flush=True)


if __name__ == "__main__":
    main()
