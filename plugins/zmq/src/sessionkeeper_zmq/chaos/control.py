"""A cluster node driven by its parent over stdin/stdout: the subprocess side of the harness.

``python -m sessionkeeper_zmq.chaos.control --config FILE`` opens a :class:`SessionManager`
over a ``backend = "zmq"`` config (so the node is a real process with its own ZeroMQ sockets),
prints ``{"event": "up", ...}``, then reads one JSON request per line from stdin and answers
each with one JSON line on stdout carrying the same ``id``. Requests run on a thread pool, so a
quorum write that waits for acknowledgements does not hold up the others. End of stdin (the
parent went away) or SIGTERM closes the node cleanly.

Requests (``{"id": N, "op": ..., ...}``):

- ``create``: ``key``, ``w`` (a unique write id, kept in the metadata), ``timeout``, ``ack``:
  store a new session stamped with this node's clock; answers ``version`` and ``la``, or
  ``error`` = ``refused`` (nothing written), ``timeout`` (undetermined; ``version`` given) or
  ``error``.
- ``delete``: ``key``, ``ack``: answers ``version`` (``null``: there was no session).
- ``fetch`` / ``peek`` / ``touch``: ``key``: answers ``found`` and the session (``w``, ``la``,
  ``timeout``) and ``now`` (the node's clock).
- ``list``: live ids and ``now``; ``cleanup``: ``purged``.
- ``dump``: every entry, tombstones included, ``[key, hlc, node, la, tomb, w, timeout]``,
  with the digest and ``now``; ``state``: the backend's stats.
- ``faults``: ``drop``, ``duplicate``, ``seed`` (all 0: off): message faults
  (:class:`~sessionkeeper_zmq._node.MessageFaults`).
- ``skew``: ``offset_ms``: shift this node's clock (manager and hybrid clock) from now on.

The starting clock offset is read from ``SESSIONKEEPER_ZMQ_CLOCK_OFFSET_MS`` (the backend's
hybrid clock reads the same variable).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

from sessionkeeper import Session, SessionManager, SessionNotFound, StorageError
from sessionkeeper.backend import decode_session, system_clock

from .._backend import CLOCK_OFFSET_ENV, NotEnoughReplicas, WriteTimeout, ZmqBackend
from .._transport import MessageFaults

__all__ = ["main"]


class _Node:
    def __init__(self, config: Path) -> None:
        self.offset = int(os.environ.get(CLOCK_OFFSET_ENV, "0") or 0)
        self.manager = SessionManager.from_config(config, clock=self.clock)
        backend: Any = self.manager.backend
        self.backend: ZmqBackend = backend
        self._out = threading.Lock()

    def clock(self) -> int:
        return system_clock() + self.offset

    def emit(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self._out:
            sys.stdout.write(line)
            sys.stdout.flush()

    @staticmethod
    def _session(session: Session) -> dict[str, Any]:
        return {
            "w": session.metadata.get("w"),
            "la": session.last_accessed,
            "timeout": session.timeout_ms,
        }

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        manager, backend = self.manager, self.backend
        key: str = request.get("key", "")
        try:
            if op == "create":
                now = self.clock()
                session = Session(key, now, now, request.get("timeout"), {"w": request["w"]})
                version = backend.store_with_ack(session, request.get("ack"))
                return {"ok": True, "version": list(version), "la": now}
            if op == "delete":
                found = backend.delete_with_ack(key, request.get("ack"))
                return {"ok": True, "version": list(found) if found else None}
            if op in ("fetch", "peek", "touch"):
                reader = getattr(manager, op)
                try:
                    got = reader(key)
                except SessionNotFound:
                    return {"ok": True, "found": False, "now": self.clock()}
                return {"ok": True, "found": True, **self._session(got), "now": self.clock()}
            if op == "list":
                return {"ok": True, "ids": manager.list(), "now": self.clock()}
            if op == "cleanup":
                return {"ok": True, "purged": manager.cleanup_expired()}
            if op == "dump":
                return {"ok": True, **self.dump()}
            if op == "state":
                return {"ok": True, "stats": manager.stats()["backend_stats"]}
            if op == "faults":
                drop, duplicate = request.get("drop", 0.0), request.get("duplicate", 0.0)
                agent = backend.agent
                assert agent is not None
                agent.faults = (
                    MessageFaults(drop, duplicate, request.get("seed"))
                    if drop or duplicate
                    else None
                )
                return {"ok": True}
            if op == "skew":
                self.offset = int(request["offset_ms"])
                backend.replica.hlc.offset_ms = self.offset
                return {"ok": True}
            return {"ok": False, "error": "error", "message": f"unknown op {op!r}"}
        except NotEnoughReplicas as exc:
            return {"ok": False, "error": "refused", "message": str(exc)}
        except WriteTimeout as exc:
            return {
                "ok": False,
                "error": "timeout",
                "message": str(exc),
                "version": list(exc.version),
            }
        except StorageError as exc:
            return {"ok": False, "error": "error", "message": str(exc)}

    def dump(self) -> dict[str, Any]:
        replica = self.backend.replica
        entries = []
        with replica.lock:
            for key in replica.versions:
                entry = replica.entry(key)
                assert entry is not None
                key, hlc, node, la, blob, timeout = entry
                w = None if blob is None else decode_session(blob).metadata.get("w")
                entries.append([key, hlc, node, la, blob is None, w, timeout])
            digest = replica.root().hex()
        entries.sort()
        return {"entries": entries, "digest": digest, "now": self.clock()}

    def serve(self, request: dict[str, Any]) -> None:
        try:
            answer = self.handle(request)
        except Exception as exc:  # report, never die: the harness checks the answers
            answer = {"ok": False, "error": "error", "message": f"{type(exc).__name__}: {exc}"}
        answer["id"] = request.get("id")
        self.emit(answer)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one controlled node until stdin closes or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    node = _Node(args.config)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    node.emit(
        {"event": "up", "node": node.backend.options.node_id, "pid": os.getpid()},
    )
    pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="control")

    def read() -> None:
        for line in sys.stdin:
            if line.strip():
                pool.submit(node.serve, json.loads(line))
        stop.set()

    threading.Thread(target=read, name="control-reader", daemon=True).start()
    stop.wait()
    node.manager.close()
    pool.shutdown(wait=False, cancel_futures=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
