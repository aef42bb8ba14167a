"""``disc_copies``: a write-ahead log with a CRC per record, plus a snapshot.

Files in ``data_dir``:

- ``snapshot.bin``: every entry at the last compaction, written to a temporary file, fsynced and
  renamed into place (so it is always whole);
- ``wal.bin``: every entry applied since, appended.

Both are sequences of records ``[length: u32][crc32: u32][msgpack entry]``. Loading reads the
snapshot then the log, merging each entry (the merge is idempotent and order-independent, so a
record present in both is harmless), and truncates the log at the first torn or corrupted record.
Opening compacts (writes a fresh snapshot and empties the log); so does closing.

fsync policy: ``always`` syncs each record before the write returns; ``group`` syncs every
5 ms from a background thread (at most that much is lost on a power cut; a process crash loses
nothing the OS has); ``os`` leaves it to the OS.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgpack

from ._options import ZmqOptions
from ._replica import Entry, Replica
from ._wire import WireError, check_entry

__all__ = ["Wal"]

log = logging.getLogger("sessionkeeper.zmq")

_HEADER: Final = struct.Struct(">II")
_MAX_RECORD: Final = 32 * 1024 * 1024
_GROUP_S: Final = 0.005


def _frame(entry: Entry) -> bytes:
    payload: bytes = msgpack.packb(list(entry), use_bin_type=True)
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _records(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """``(offset, payload)`` of each intact record; ``payload`` None marks where damage starts."""
    with path.open("rb") as handle:
        offset = 0
        while True:
            header = handle.read(_HEADER.size)
            if not header:
                return
            if len(header) < _HEADER.size:
                yield offset, None
                return
            length, crc = _HEADER.unpack(header)
            if length > _MAX_RECORD:
                yield offset, None
                return
            payload = handle.read(length)
            if len(payload) < length or zlib.crc32(payload) != crc:
                yield offset, None
                return
            yield offset, payload
            offset += _HEADER.size + length


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
        self.appended = 0
        self._lock = threading.Lock()

    def _load_file(self, path: Path, replica: Replica) -> int | None:
        """Merge every intact record; return the offset of damage, if any."""
        if not path.exists():
            return None
        for offset, payload in _records(path):
            if payload is None:
                return offset
            try:
                raw = msgpack.unpackb(payload, raw=False, strict_map_key=True)
                entry, session = check_entry(raw, self.nodes)
            except (WireError, ValueError, msgpack.ExtraData) as exc:
                log.warning(
                    "%s: record at %d is invalid (%s); ignoring the rest", path, offset, exc
                )
                return offset
            replica.hlc.update(entry[1])
            replica.merge(entry, session)
            self.loaded += 1
        return None

    def load(self, replica: Replica) -> None:
        """Read the snapshot and the log into ``replica``, then compact and start logging."""
        damage = self._load_file(self.snapshot_path, replica)
        if damage is not None:
            log.error("%s is damaged at byte %d; kept what came before", self.snapshot_path, damage)
        damage = self._load_file(self.log_path, replica)
        if damage is not None:
            size = self.log_path.stat().st_size
            self.truncated = size - damage
            log.warning(
                "%s: truncating a torn or corrupted tail of %d bytes", self.log_path, self.truncated
            )
            with self.log_path.open("r+b") as handle:
                handle.truncate(damage)
        self._compact(replica)
        self._handle = self.log_path.open("ab", buffering=0)
        replica.on_apply = self.append
        if self.options.fsync == "group":
            self._flusher = threading.Thread(
                target=self._group_sync, name="sessionkeeper-zmq-wal", daemon=True
            )
            self._flusher.start()

    def _compact(self, replica: Replica) -> None:
        temporary = self.snapshot_path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            for key in list(replica.versions):
                entry = replica.entry(key)
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
        while not self._stop.wait(_GROUP_S):
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
            "fsync": self.options.fsync,
        }
