"""The disc copy: its tombstone-horizon rule (a copy last in contact with its cluster longer ago
than ``tombstone_ttl_ms`` is moved aside instead of loaded), and the stream positions it records
for delta catch-up."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgpack

from sessionkeeper import Session
from sessionkeeper_zmq import NodeSpec, ZmqOptions
from sessionkeeper_zmq._replica import HLC, Replica
from sessionkeeper_zmq._wal import Wal


def options(ttl_ms: int) -> ZmqOptions:
    """One node, disc copies, the given tombstone horizon."""
    return ZmqOptions(
        node_id="a",
        nodes=[NodeSpec(id="a", endpoint="tcp://127.0.0.1:1")],
        curve=False,
        disc_copies=True,
        data_dir="data",
        tombstone_ttl_ms=ttl_ms,
    )


def write_copy(directory: Path, ttl_ms: int, contact_ms: int) -> None:
    """A disc copy holding one session, last in contact at ``contact_ms``."""
    replica = Replica("a", HLC(), tombstone_ttl_ms=ttl_ms, backlog=10)
    wal = Wal(directory, options(ttl_ms))
    wal.load(replica)
    replica.local_store(Session("s1", 1, 1, None))
    wal.close(replica)
    (directory / "contact").write_text(f"{contact_ms}\n")


def reload(directory: Path, ttl_ms: int) -> tuple[Replica, Wal]:
    """Open the copy again, as a restarted node does."""
    replica = Replica("a", HLC(), tombstone_ttl_ms=ttl_ms, backlog=10)
    wal = Wal(directory, options(ttl_ms))
    wal.load(replica)
    wal.close()
    return replica, wal


class TestTombstoneHorizon:
    """A node away longer than the horizon must not bring back sessions deleted meanwhile."""

    def test_recent_copy_is_loaded(self, tmp_path: Path) -> None:
        """A copy in contact a moment ago loads its sessions."""
        write_copy(tmp_path, 60_000, time.time_ns() // 1_000_000 - 1_000)
        replica, wal = reload(tmp_path, 60_000)
        assert "s1" in replica.sessions
        assert wal.wiped_stale is False

    def test_stale_copy_is_moved_aside_not_loaded(self, tmp_path: Path) -> None:
        """A copy out of contact for longer than the horizon starts empty; its files are kept
        in ``stale-<ms>/`` for the operator."""
        old = time.time_ns() // 1_000_000 - 120_000
        write_copy(tmp_path, 60_000, old)
        replica, wal = reload(tmp_path, 60_000)
        assert replica.sessions == {}
        assert wal.wiped_stale is True
        assert (tmp_path / f"stale-{old}" / "snapshot.bin").exists()

    def test_a_larger_horizon_keeps_the_copy(self, tmp_path: Path) -> None:
        """After an outage of the whole cluster, a larger tombstone_ttl_ms keeps the data."""
        write_copy(tmp_path, 60_000, time.time_ns() // 1_000_000 - 120_000)
        replica, _ = reload(tmp_path, 600_000)
        assert "s1" in replica.sessions


class TestStreamPositions:
    """``data_dir/seen``: how far the copy holds each peer's stream (for delta catch-up)."""

    def test_positions_written_on_close_are_read_back(self, tmp_path: Path) -> None:
        """What the node held of each stream at close is what a restart reads."""
        replica = Replica("a", HLC(), tombstone_ttl_ms=60_000, backlog=10)
        wal = Wal(tmp_path, options(60_000))
        wal.load(replica)
        wal.seen = lambda: {"a": [5, 9]}
        wal.close(replica)
        assert Wal(tmp_path, options(60_000)).read_seen() == {"a": (5, 9)}

    def test_unreadable_positions_mean_a_snapshot(self, tmp_path: Path, caplog: Any) -> None:
        """Garbage, a wrong shape or negative numbers in ``seen`` are ignored with a warning:
        the node then catches up by snapshot, as without the file."""
        wal = Wal(tmp_path, options(60_000))
        garbage = [
            b"\xc1\xff",
            msgpack.packb({"a": [1]}),
            msgpack.packb({"a": [-1, 2]}),
            msgpack.packb({"z": [1, 2]}),  # no such node (the cluster changed)
        ]
        for blob in garbage:
            (tmp_path / "seen").write_bytes(blob)
            assert wal.read_seen() == {}
        assert "catches up by snapshot" in caplog.text
        (tmp_path / "seen").unlink()
        assert wal.read_seen() == {}
