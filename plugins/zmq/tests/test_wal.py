"""The disc copy: its tombstone-horizon rule (a copy last in contact with its cluster longer ago
than ``tombstone_ttl_ms`` is moved aside instead of loaded), and the stream positions it records
for delta catch-up."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

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


def record_offsets(path: Path) -> list[tuple[int, int]]:
    """``(offset, length)`` of each record of an intact snapshot or log file."""
    data = path.read_bytes()
    offsets = []
    position = 0
    while position < len(data):
        length = struct.unpack_from(">I", data, position)[0]
        offsets.append((position, length))
        position += 8 + length
    assert position == len(data)
    return offsets


def flip(path: Path, offset: int) -> None:
    """Invert the bits of one byte of ``path``."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def session_ids(path: Path) -> list[str]:
    """The session id of each record of an intact file, in file order."""
    data = path.read_bytes()
    return [
        msgpack.unpackb(data[offset + 8 : offset + 8 + length])[0]
        for offset, length in record_offsets(path)
    ]


#: Where to hit a record: its length field, its CRC, or a byte of its payload.
PLACES = {"length": 3, "crc": 5, "payload": 20}


class TestDamagedRecords:
    """Issue 12 item 5: one damaged record costs that record only, never the ones after it, and
    the damaged file is kept aside, never overwritten."""

    def write(self, directory: Path, count: int) -> Replica:
        """A snapshot of ``count`` sessions (closed cleanly: compacted)."""
        replica = Replica("a", HLC(), tombstone_ttl_ms=60_000, backlog=10)
        wal = Wal(directory, options(60_000))
        wal.load(replica)
        for i in range(count):
            replica.local_store(Session(f"s{i:02}", 1, 1, None, {"i": i}))
        wal.close(replica)
        return replica

    @pytest.mark.parametrize("place", sorted(PLACES))
    def test_snapshot_record_is_skipped_and_file_kept(
        self, tmp_path: Path, place: str, caplog: Any
    ) -> None:
        """A flipped byte in one snapshot record (its length, CRC or payload) loses that
        record only; every later one loads, the damaged snapshot is moved to
        ``damaged-<ms>/`` byte for byte, and the damage is logged and counted."""
        self.write(tmp_path, 20)
        snapshot = tmp_path / "snapshot.bin"
        ids = session_ids(snapshot)
        offset, _ = record_offsets(snapshot)[7]
        flip(snapshot, offset + PLACES[place])
        damaged = snapshot.read_bytes()
        replica, wal = reload(tmp_path, 60_000)
        assert sorted(replica.sessions) == sorted(ids[:7] + ids[8:])
        assert wal.damaged_records == 1
        [kept] = wal.quarantined
        assert Path(kept).parent.name.startswith("damaged-")
        assert Path(kept).read_bytes() == damaged
        assert "damaged record" in caplog.text
        assert wal.describe()["quarantined_files"] == [kept]
        # The fresh snapshot holds what survived; a second damage is kept beside the first.
        assert sorted(session_ids(snapshot)) == sorted(ids[:7] + ids[8:])
        flip(snapshot, record_offsets(snapshot)[0][0] + 20)
        replica, wal = reload(tmp_path, 60_000)
        assert len(replica.sessions) == 18
        assert len(list(tmp_path.glob("damaged-*/snapshot.bin"))) == 2

    def test_several_damaged_stretches_are_each_skipped(self, tmp_path: Path) -> None:
        """Damage in three places, including a length that points past the end of the
        file, loses exactly the three records hit."""
        self.write(tmp_path, 30)
        snapshot = tmp_path / "snapshot.bin"
        ids = session_ids(snapshot)
        offsets = record_offsets(snapshot)
        data = bytearray(snapshot.read_bytes())
        data[offsets[3][0]] = 0x7F  # length of record 3: far past the end
        data[offsets[10][0] + 30] ^= 0x01
        data[offsets[29][0] + 2] ^= 0x40  # the last record's length
        snapshot.write_bytes(bytes(data))
        replica, wal = reload(tmp_path, 60_000)
        lost = {ids[3], ids[10], ids[29]}
        assert set(replica.sessions) == set(ids) - lost
        assert wal.damaged_records == 3

    def test_damage_in_the_middle_of_the_log_keeps_the_rest(self, tmp_path: Path) -> None:
        """A damaged record in the middle of the log (not a torn tail) is skipped, the
        records after it load, and the log is kept aside instead of truncated."""
        replica = Replica("a", HLC(), tombstone_ttl_ms=60_000, backlog=10)
        wal = Wal(tmp_path, options(60_000))
        wal.load(replica)
        for i in range(10):
            replica.local_store(Session(f"s{i}", 1, 1, None))
        wal.close()  # a crash: no compaction, the log holds the ten records
        log_path = tmp_path / "wal.bin"
        flip(log_path, record_offsets(log_path)[4][0] + 20)
        replica, wal = reload(tmp_path, 60_000)
        assert sorted(replica.sessions) == sorted(f"s{i}" for i in range(10) if i != 4)
        assert (wal.damaged_records, wal.truncated) == (1, 0)
        assert [Path(p).name for p in wal.quarantined] == ["wal.bin"]

    def test_torn_tail_of_the_log_is_not_damage(self, tmp_path: Path) -> None:
        """Half a record at the end of the log (a write torn by a crash) is cut off as
        before; nothing is reported damaged or kept aside."""
        replica = Replica("a", HLC(), tombstone_ttl_ms=60_000, backlog=10)
        wal = Wal(tmp_path, options(60_000))
        wal.load(replica)
        for i in range(3):
            replica.local_store(Session(f"s{i}", 1, 1, None))
        wal.close()
        log_path = tmp_path / "wal.bin"
        whole = log_path.read_bytes()
        log_path.write_bytes(whole[: record_offsets(log_path)[2][0] + 11])
        replica, wal = reload(tmp_path, 60_000)
        assert sorted(replica.sessions) == ["s0", "s1"]
        assert (wal.damaged_records, wal.quarantined) == (0, [])
        assert wal.truncated == 11
