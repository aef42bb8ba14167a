"""Helpers for tests of the zmq backend (and for other suites that need a cluster).

In-process clusters of real nodes on 127.0.0.1: free ports, CURVE keys, readiness waits.
:func:`wait_for` is the conformance kit's :func:`sessionkeeper.testing.wait_for` (polling every
10 ms, 30 s by default), kept under this name for the suites that import it from here.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from sessionkeeper import SessionManager
from sessionkeeper.testing import wait_for

__all__ = ["DEADLINE_S", "cluster_opts", "free_ports", "public_key", "wait_for", "wait_ready"]

#: Generous: the machine is shared with other test runs (the kit's default deadline too).
DEADLINE_S = 30.0


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on right now (bound and released)."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [s.getsockname()[1] for s in sockets]
    for sock in sockets:
        sock.close()
    return ports


def public_key(key_dir: Path, name: str) -> str:
    """The Z85 public key of ``name`` in ``key_dir``."""
    text = (key_dir / f"{name}.key").read_text()
    return text.split('public-key = "')[1].split('"')[0]


def cluster_opts(
    key_dir: Path, size: int = 3, *, curve: bool = True, **overrides: Any
) -> list[dict[str, Any]]:
    """``backend_opts`` for each node of a fresh cluster on free ports."""
    ids = "abcde"[:size]
    ports = free_ports(size)
    nodes = [
        {
            "id": node,
            "endpoint": f"tcp://127.0.0.1:{port}",
            **({"public_key": public_key(key_dir, node)} if curve else {}),
        }
        for node, port in zip(ids, ports, strict=True)
    ]
    result = []
    for node in ids:
        opts: dict[str, Any] = {
            "node_id": node,
            "nodes": nodes,
            "curve": curve,
            "ack": "all",
            "ready_timeout_ms": 0,
            "heartbeat_ms": 100,
            "suspect_after_ms": 1_000,
            "write_timeout_ms": 10_000,
            "anti_entropy_ms": 1_000,
        }
        if curve:
            opts["secret_key_file"] = str(key_dir / f"{node}.key_secret")
        opts.update(overrides)
        result.append(opts)
    return result


def wait_ready(managers: list[SessionManager]) -> None:
    """Wait until every node has caught up and sees every other as connected."""

    def settled() -> bool:
        for manager in managers:
            backend: Any = manager.backend
            if not backend.ready:
                return False
            agent = backend.agent
            if not all(peer.connected for peer in agent.peers.values()):
                return False
        return True

    wait_for(settled, "the cluster to be ready")
