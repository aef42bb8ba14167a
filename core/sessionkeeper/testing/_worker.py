"""One worker process of the kit's multi-process races (see :mod:`._races`).

Protocol, JSON lines: the parent writes ``{"store": {...}, "job": {...}}``; the worker opens a
:class:`~sessionkeeper.SessionManager` on the store (``backend``, ``backend_opts``, optional
``base_dir``; system clock, no scheduler), answers ``{"ready": true}``, waits for the line ``go``
so that every worker starts together, does its job and writes ``{"result": ...}``. Nothing is
pickled.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from sessionkeeper import Session, SessionManager, SessionNotFound, VersionConflict

from ._races import ATTEMPTS, _add_one


def _run(manager: SessionManager, job: dict[str, Any]) -> Any:
    op = job["op"]
    if op == "update":
        for _ in range(job["count"]):
            manager.update(job["id"], _add_one, attempts=ATTEMPTS)
        return job["count"]
    if op == "take":
        try:
            return manager.take(job["id"]).to_dict()
        except SessionNotFound:
            return None
    if op == "insert":
        try:
            manager.store(Session(job["id"], 0, 0, None, {"w": job["w"]}), if_version=0)
        except VersionConflict:
            return False
        return True
    if op == "create_owner":
        made = []
        for _ in range(job["count"]):
            start = time.monotonic_ns()
            session = manager.create(timeout_ms=None, owner=job["owner"])
            made.append([start, time.monotonic_ns(), session.id])
        return made
    if op == "delete_owner":
        time.sleep(0.05)
        start = time.monotonic_ns()
        removed = manager.delete_owner(job["owner"])
        return [start, time.monotonic_ns(), removed]
    raise ValueError(f"unknown job {op!r}")


def main() -> None:
    """Read the job, open the store, wait for ``go``, run, print the result."""
    request = json.loads(sys.stdin.readline())
    store = request["store"]
    with SessionManager(
        backend=store["backend"],
        backend_opts=store.get("backend_opts") or {},
        cleanup_interval=0,
        base_dir=store.get("base_dir"),
    ) as manager:
        print(json.dumps({"ready": True}), flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("no go")
        result = _run(manager, request["job"])
    print(json.dumps({"result": result}), flush=True)


if __name__ == "__main__":
    main()
