"""``disc_copies``: a write-ahead log with a CRC per record, plus a snapshot.

Files in ``data_dir``:

- ``snapshot.bin``: every entry at the last compaction, written to a temporary file, fsynced and
  renamed into place (so it is always whole);
- ``wal.bin``: every entry applied since, appended;
- ``contact``: the wall-clock time (ms) this node last knew it was in touch with its cluster
  (a peer alive, or no peers at all), rewritten every second or so while it is;
- ``seen``: how far this node holds each peer's stream of writes (``origin -> [incarnation,
  seq]``, msgpack), rewritten every second or so after the log is synced, and on close: a
  restarted node asks its peers to resend from there (delta catch-up) instead of taking a
  snapshot. Older than the log is harmless (what is resent merges idempotently).

A node that comes back after more than ``tombstone_ttl_ms`` out of contact does not load its
disc copy (it syncs from its peers like a RAM node): its peers have collected the tombstones of
deletes it never saw, so its stale copies of those sessions would otherwise come back to life on
every node. The old files are moved to ``stale-<ms>/`` in ``data_dir``, not deleted: after an
outage of the *whole* cluster longer than the horizon (nobody collected anything meanwhile),
restart the nodes with a larger ``tombstone_ttl_ms`` to keep their data.

Both are sequences of records ``[length: u32][crc32: u32][msgpack entry]``. Loading reads the
snapshot then the log, merging each entry (the merge is idempotent and order-independent, so a
record present in both is harmless). Opening compacts (writes a fresh snapshot and empties the
log); so does closing.

Damage (a flipped byte, a bad sector) never costs more than the records it hit:

- a record whose CRC or entry is bad is skipped and loading goes on with the next one: at the
  offset its length gives when a valid record (or the end of the file) is there, otherwise (the
  length itself is damaged) at the next offset where a whole record with a valid CRC is followed
  by another valid record or the end of the file (resynchronisation; a CRC is no MAC, so this
  trusts the disk the way every log-structured store does);
- a file with a damaged record is moved, untouched, to ``damaged-<ms>/`` in ``data_dir`` (never
  overwritten) before the compaction writes the fresh snapshot, and the damage is logged as an
  error and counted in ``stats`` (``wal.damaged_records``, ``wal.quarantined_files``);
- the sessions the skipped records held come back from the peers: the anti-entropy round that
  ends every catch-up compares digests with every live peer and pulls what is missing;
- a damaged tail of the log with nothing valid after it is a write torn by a crash: it is cut
  off (``wal.truncated_bytes``), as expected after a SIGKILL, and not treated as damage.

fsync policy: ``always`` syncs each record before the write returns; ``group`` syncs every
5 ms from a background thread (at most that much is lost on a power cut; a process crash loses
nothing the OS has); ``os`` leaves it to the OS.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import attrs
import msgpack

from ._options import ZmqOptions
from ._replica import Entry, Replica
from ._wire import WireError, check_entry, check_seen

__all__ = ["Wal"]

log = logging.getLogger("sessionkeeper.zmq")

_HEADER: Final = struct.Struct(">II")
_MAX_RECORD: Final = 32 * 1024 * 1024
_GROUP_S: Final = 0.005
_CONTACT_S: Final = 1.0
#: The first byte of every record's payload (a msgpack array of 6 items).
_ENTRY_START: Final = b"\x96"


def _frame(entry: Entry) -> bytes:
    payload: bytes = msgpack.packb(list(entry), use_bin_type=True)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _valid_at(data: bytes, offset: int) -> int | None:
    """The end of the whole record with a matching CRC at ``offset``, or None."""
    end = offset + _HEADER.size
    if end > len(data):
        return None
    length: int
    crc: int
    length, crc = _HEADER.unpack_from(data, offset)
    if length > _MAX_RECORD or end + length > len(data):
        return None
    if zlib.crc32(memoryview(data)[end : end + length]) != crc:
        return None
    return end + length


def _chained(data: bytes, offset: int) -> int | None:
    """Like :func:`_valid_at`, and followed by another valid record or the end of the file
    (what a resynchronisation point must be: one lucky CRC match is not enough)."""
    end = _valid_at(data, offset)
    if end is None or (end != len(data) and _valid_at(data, end) is None):
        return None
    return end


def _resync(data: bytes, damaged: int) -> int:
    """Where loading goes on after a damaged record at ``damaged``: the end of the file when
    nothing valid follows."""
    size = len(data)
    length: int | None = None
    if damaged + _HEADER.size <= size:
        length = _HEADER.unpack_from(data, damaged)[0]
    if length is not None and length <= _MAX_RECORD:
        after = damaged + _HEADER.size + length
        if after == size or (after < size and _valid_at(data, after) is not None):
            return after  # only the payload (or the CRC) was hit: its length is right
    # The length is damaged too: every entry is a msgpack array of 6 (0x96), so only offsets
    # 8 bytes before such a byte are candidates.
    search = damaged + 1 + _HEADER.size
    while True:
        found = data.find(_ENTRY_START, search)
        if found < 0:
            return size
        if _chained(data, found - _HEADER.size) is not None:
            return found - _HEADER.size
        search = found + 1


def _records(data: bytes) -> Iterator[tuple[int, memoryview | None, int]]:
    """``(offset, payload, size)`` of each whole record with a matching CRC, and
    ``(offset, None, size)`` of each damaged stretch skipped (see the module docstring)."""
    view = memoryview(data)
    offset = 0
    size = len(data)
    while offset < size:
        end = _valid_at(data, offset)
        if end is not None:
            yield offset, view[offset + _HEADER.size : end], end - offset
            offset = end
            continue
        after = _resync(data, offset)
        yield offset, None, after - offset
        offset = after


@attrs.define
class _Damage:
    """What loading one file found wrong with it."""

    records: int = 0
    bytes: int = 0
    #: Where a damaged stretch reaching the end of the file starts (a torn tail in the log).
    tail: int | None = None


class Wal:
    """The disc copy of one node's replica."""

    def __init__(self, directory: Path, options: ZmqOptions) -> None:
        self.directory = directory
        self.options = options
        self.nodes = frozenset(node.id for node in options.nodes)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.log_path = directory / "wal.bin"
        self.snapshot_path = directory / "snapshot.bin"
        self._handle: Any = None
        self._dirty = False
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self.loaded = 0
        self.truncated = 0
        self.contact_path = directory / "contact"
        self.seen_path = directory / "seen"
        #: Set by the backend: the node's positions in its peers' streams (see ``seen``).
        self.seen: Callable[[], dict[str, list[int]]] | None = None
        #: Set by the backend: True while this node is in touch with its cluster.
        self.in_contact: Callable[[], bool] = lambda: False
        #: Wall clock, ms (the replica's hybrid clock's physical source).
        self.wall: Callable[[], int] = lambda: time.time_ns() // 1_000_000
        self.last_contact: int | None = None
        self.wiped_stale = False
        self.appended = 0
        #: Damaged records skipped while loading, their bytes, and where the files went.
        self.damaged_records = 0
        self.damaged_bytes = 0
        self.quarantined: list[str] = []
        self._lock = threading.Lock()

    def _load_file(self, path: Path, replica: Replica) -> _Damage:
        """Merge every intact record of ``path``, skipping damaged ones (see the module
        docstring); return what was damaged."""
        damage = _Damage()
        if not path.exists():
            return damage
        data = path.read_bytes()
        for offset, payload, size in _records(data):
            if payload is not None:
                try:
                    raw = msgpack.unpackb(payload, raw=False, strict_map_key=True)
                    entry, session = check_entry(raw, self.nodes)
                except (WireError, ValueError, msgpack.ExtraData) as exc:
                    log.error("%s: record at byte %d is invalid (%s); skipped", path, offset, exc)
                else:
                    replica.hlc.update(entry[1])
                    replica.merge(entry, session)
                    self.loaded += 1
                    continue
            damage.records += 1
            damage.bytes += size
            damage.tail = offset if offset + size == len(data) else None
        return damage

    def _quarantine(self, path: Path, damage: _Damage) -> None:
        """Move a damaged ``path`` to a new ``damaged-<ms>[-n]/`` directory (never over
        anything), count it and say so loudly."""
        stamp = self.wall()
        for attempt in range(1000):
            aside = self.directory / (f"damaged-{stamp}" + (f"-{attempt}" if attempt else ""))
            try:
                aside.mkdir(mode=0o700)
            except FileExistsError:
                continue
            break
        else:  # pragma: no cover - a thousand damaged files in one millisecond
            raise OSError(f"{self.directory}: no free damaged-{stamp}-N directory")
        target = aside / path.name
        os.replace(path, target)
        self.damaged_records += damage.records
        self.damaged_bytes += damage.bytes
        self.quarantined.append(str(target))
        log.error(
            "%s: %d damaged record(s) (%d bytes) skipped; every other record was loaded. The "
            "damaged file is kept as %s; the sessions it lost come back from the peers by "
            "anti-entropy (a single node has no peer to heal them)",
            path,
            damage.records,
            damage.bytes,
            target,
        )

    def _read_contact(self) -> int | None:
        try:
            return int(self.contact_path.read_text().strip())
        except (OSError, ValueError):
            pass
        paths = (self.snapshot_path, self.log_path)
        stamps = [p.stat().st_mtime_ns // 1_000_000 for p in paths if p.exists()]
        return max(stamps) if stamps else None

    def write_contact(self) -> None:
        """Record that this node is in touch with its cluster now."""
        now = self.wall()
        temporary = self.contact_path.with_suffix(".tmp")
        temporary.write_text(f"{now}\n")
        os.replace(temporary, self.contact_path)
        self.last_contact = now

    def read_seen(self) -> dict[str, tuple[int, int]]:
        """The positions recorded in ``seen`` (empty when there is none or it is unreadable)."""
        try:
            raw = msgpack.unpackb(self.seen_path.read_bytes(), raw=False, strict_map_key=True)
            return check_seen(raw, self.nodes)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, msgpack.ExtraData) as exc:
            log.warning(
                "%s is unreadable (%s); the node catches up by snapshot", self.seen_path, exc
            )
            return {}

    def _record_seen(self) -> None:
        """Write ``seen``: the positions taken first, then the log synced, so that the file
        never claims an op the log may not hold after a crash."""
        provider = self.seen
        if provider is None:
            return
        positions = provider()
        handle = self._handle
        if handle is not None:
            os.fsync(handle.fileno())
        temporary = self.seen_path.with_suffix(".tmp")
        temporary.write_bytes(msgpack.packb(positions))
        os.replace(temporary, self.seen_path)

    def _discard_if_stale(self) -> None:
        last = self._read_contact()
        if last is None:
            return
        away = self.wall() - last
        if away <= self.options.tombstone_ttl_ms:
            return
        log.warning(
            "%s: this node was out of contact with its cluster for %d s, longer than "
            "tombstone_ttl_ms (%d s): its disc copy is moved to stale-%d/ and it resyncs from "
            "the peers",
            self.directory,
            away // 1000,
            self.options.tombstone_ttl_ms // 1000,
            last,
        )
        self._set_aside(last)

    def _set_aside(self, stamp: int) -> Path:
        aside = self.directory / f"stale-{stamp}"
        aside.mkdir(exist_ok=True, mode=0o700)
        for path in (self.snapshot_path, self.log_path, self.contact_path, self.seen_path):
            if path.exists():
                os.replace(path, aside / path.name)
        self.wiped_stale = True
        return aside

    def restart(self, since_ms: int) -> None:
        """Move the files aside (``stale-<since_ms>/``) and start an empty log.

        For a running node cut off past the tombstone horizon, with the replica's lock held:
        the caller then restarts the replica, whose kept entries go to the new log.
        """
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()
        self._set_aside(since_ms)
        self._compact(None)
        self._handle = self.log_path.open("ab", buffering=0)

    def load(self, replica: Replica) -> None:
        """Read the snapshot and the log into ``replica`` (unless they are older than the
        tombstone horizon: then discard them), compact and start logging."""
        self.wall = replica.hlc.wall
        self._discard_if_stale()
        damage = self._load_file(self.snapshot_path, replica)
        if damage.records:  # written whole and renamed into place: any damage is real damage
            self._quarantine(self.snapshot_path, damage)
        damage = self._load_file(self.log_path, replica)
        if damage.tail is not None and damage.records == 1:
            # Only a tail with nothing valid after it: a write torn by a crash.
            size = self.log_path.stat().st_size
            self.truncated = size - damage.tail
            log.warning(
                "%s: truncating a torn or corrupted tail of %d bytes", self.log_path, self.truncated
            )
            with self.log_path.open("r+b") as handle:
                handle.truncate(damage.tail)
        elif damage.records:
            self._quarantine(self.log_path, damage)
        self._compact(replica)
        self._handle = self.log_path.open("ab", buffering=0)
        replica.on_apply = self.append
        self._flusher = threading.Thread(
            target=self._group_sync, name="sessionkeeper-zmq-wal", daemon=True
        )
        self._flusher.start()

    def _compact(self, replica: Replica | None) -> None:
        """Write ``replica`` (``None``: nothing) as the snapshot and empty the log."""
        keys = list(replica.versions) if replica is not None else []
        entries = map(replica.entry, keys) if replica is not None else iter(())
        temporary = self.snapshot_path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            for entry in entries:
                if entry is not None:
                    handle.write(_frame(entry))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.snapshot_path)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fsync(fd)
        os.close(fd)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def append(self, entry: Entry) -> None:
        """Log one applied entry (called under the replica's lock)."""
        handle = self._handle
        if handle is None:
            return
        handle.write(_frame(entry))
        self.appended += 1
        if self.options.fsync == "always":
            os.fsync(handle.fileno())
        else:
            self._dirty = True

    def _group_sync(self) -> None:
        # Also keeps the contact time fresh while the node is in touch with its cluster.
        contact_every = min(_CONTACT_S, self.options.tombstone_ttl_ms / 4000)
        next_contact = 0.0
        while not self._stop.wait(_GROUP_S):
            now = time.monotonic()
            if now >= next_contact:
                next_contact = now + contact_every
                try:
                    if self.in_contact():
                        self.write_contact()
                    self._record_seen()
                except (OSError, ValueError) as exc:
                    log.warning("%s: cannot record the contact time: %s", self.directory, exc)
            if self.options.fsync != "group":
                continue
            if self._dirty:
                self._dirty = False
                handle = self._handle
                if handle is not None:
                    try:
                        os.fsync(handle.fileno())
                    except (OSError, ValueError):
                        return

    def close(self, replica: Replica | None = None) -> None:
        """Stop logging; with ``replica``, compact first."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=2)
        if self._handle is not None:
            try:
                self._record_seen()
            except OSError as exc:
                log.warning("%s: cannot record the stream positions: %s", self.directory, exc)
        handle, self._handle = self._handle, None
        if handle is not None:
            os.fsync(handle.fileno())
            handle.close()
            if replica is not None:
                self._compact(replica)

    def describe(self) -> dict[str, Any]:
        """Figures for ``stats``."""
        return {
            "directory": str(self.directory),
            "loaded_records": self.loaded,
            "appended_records": self.appended,
            "truncated_bytes": self.truncated,
            "damaged_records": self.damaged_records,
            "damaged_bytes": self.damaged_bytes,
            "quarantined_files": list(self.quarantined),
            "wiped_stale": self.wiped_stale,
            "last_contact_ms": self.last_contact,
            "fsync": self.options.fsync,
        }
