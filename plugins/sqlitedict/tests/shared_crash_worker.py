"""A writer process of ``test_shared_crash.py`` (never collected by pytest).

    python shared_crash_worker.py OPTS WRITER GENERATION SEED COUNTER...

opens the store ``OPTS`` describes (the ``backend_opts`` of a ``sqlitedict`` store, as JSON),
prints ``ready <pid>``, then, until its stdin closes, does one write after another, each chosen
at random (``SEED``):

- ``create`` a session with metadata ``{"writer": WRITER, "gen": GENERATION, "seq": S}`` (``S``
  counts this process's creates from 0) and owner ``writer-<WRITER>``: prints ``begin create S``
  before the call and ``ack create S <id>`` once it returned;
- ``update`` one of the ``COUNTER`` sessions, adding 1 to its metadata's ``n``: prints ``begin
  inc <counter>`` before and ``ack inc <counter>`` after.

Every line is flushed before the next call starts, so every complete ``ack`` line the parent
read is an acknowledged write, and a ``begin`` with no ``ack`` after it is the one write a kill
may have caught in flight. When stdin closes it finishes the write under way, closes the manager
and prints ``closed``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
from typing import Any

from sessionkeeper import SessionManager


def say(*words: object) -> None:
    print(*words, flush=True)


def increment(metadata: dict[str, Any]) -> dict[str, Any]:
    return {**metadata, "n": metadata["n"] + 1}


def main(argv: list[str]) -> None:
    opts, writer, generation, seed, *counters = argv
    rng = random.Random(int(seed))
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    manager = SessionManager(
        backend="sqlitedict", backend_opts=json.loads(opts), cleanup_interval=0
    )
    say("ready", os.getpid())
    tag = {"writer": int(writer), "gen": int(generation)}
    seq = 0
    while not stop.is_set():
        if rng.random() < 0.5:
            say("begin create", seq)
            session = manager.create(None, {**tag, "seq": seq}, owner=f"writer-{writer}")
            say("ack create", seq, session.id)
            seq += 1
        else:
            counter = rng.choice(counters)
            say("begin inc", counter)
            manager.update(counter, increment)
            say("ack inc", counter)
    manager.close()
    say("closed")


if __name__ == "__main__":
    main(sys.argv[1:])
