"""The ``leveldb`` backend plugin: sessions in a LevelDB database, through plyvel.

The sample third-party plugin, kept in one module on purpose (beside its key layout, handles and
options): a backend author reads the whole of a working backend, every hook, in one file.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, NoReturn

from sessionkeeper import Session, SessionKeeperError, StorageError, VersionConflict, validate_id
from sessionkeeper.backend import (
    BackendContext,
    Capabilities,
    CodecError,
    decode_session,
    encode_session,
    hookimpl,
)

from ._handles import DB, Handle, Reader, WriteBatch, acquire, release
from ._layout import LAYOUT_VERSION, READABLE_LAYOUTS, TableKeys
from ._options import LevelDBOptions

__all__ = ["BATCH", "LevelDBBackend"]

log = logging.getLogger("sessionkeeper_leveldb")

#: Index entries a cleanup handles per batch (one lock hold, one write), and records
#: ``iter_sessions`` reads per iterator.
BATCH = 1_000


class _Closed:
    """Stands in for the database while the backend is not open: every use is an error."""

    def __getattr__(self, name: str) -> NoReturn:
        raise RuntimeError("the database is not open")


class LevelDBBackend:
    """Sessions in a LevelDB database (see the package README for the key layout).

    One process at a time may open a database; within it, backends naming the same ``db_path``
    share one handle. Reads take no lock. Every write is one atomic ``WriteBatch`` holding the
    session and its index entries (``store_many``: every session of the batch and their
    entries). Every write holds the database's lock from the read that decides it to the
    batch's write, so writes are atomic with each other.

    ``atomic``: the conditional store, ``take``, ``rotate`` and ``delete_owner`` each read and
    write under that lock, and the lock is the only way in: LevelDB lets one process open the
    database, and the managers of that process share one handle and one lock. So they are
    linearizable per session across every thread, which is every user of the store.

    :param options: the validated ``backend_opts``.
    :param context: where relative paths are resolved, and whether the store is read-only.
    """

    options_class: ClassVar[type[LevelDBOptions]] = LevelDBOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=True,
        shared=False,
        replicated=False,
        blocking=True,
        read_only_open=False,
        atomic=True,
    )

    def __init__(self, options: LevelDBOptions, context: BackendContext) -> None:
        self.options = options
        self.context = context
        self.path = context.resolve(options.db_path).resolve()
        self.keys = TableKeys(options.table_name)
        self._name = context.name
        self._sync = options.sync
        self._writable = not context.read_only
        self._handle: Handle | None = None
        self._lock = threading.Lock()  # replaced by the database's own lock on open
        self._db: DB = _Closed()  # raises until opened
        self._damaged_skipped = 0
        self._entries_read = 0

    def __repr__(self) -> str:
        state = "open" if self._handle is not None else "closed"
        return f"<LevelDBBackend {str(self.path)!r} table={self.options.table_name!r} {state}>"

    @property
    def db(self) -> DB:
        """The open ``plyvel.DB`` (shared with the other tables of the database in this process).

        For tests and tools that need to reach the raw records; writing through it bypasses the
        expiry index.
        """
        if self._handle is None:
            raise StorageError(self._name, f"{self._where()}: the backend is not open")
        return self._handle.db

    # -- errors -----------------------------------------------------------------------------------

    def _where(self, key: bytes | None = None) -> str:
        where = f"LevelDB database {self.path}, table {self.options.table_name!r}"
        return where if key is None else f"{where}, key {key!r}"

    def _failure(self, operation: str, exc: Exception, key: bytes | None = None) -> StorageError:
        """A storage failure, naming the database, the table, the key and the cause."""
        if isinstance(exc, RuntimeError) and ("not open" in str(exc) or "closed" in str(exc)):
            cause = "the database is closed"
        else:
            args = [
                a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in exc.args
            ]
            cause = f"{type(exc).__name__}: {'; '.join(args)}"
        return StorageError(self._name, f"{operation} failed in {self._where(key)}: {cause}")

    def _decode(self, key: bytes, record: bytes, session_id: str | None = None) -> Session:
        """The session in ``record``; a record that does not decode is a ``StorageError``."""
        try:
            session = decode_session(record)
        except CodecError as exc:
            raise StorageError(self._name, f"damaged record in {self._where(key)}: {exc}") from exc
        if session_id is not None and session.id != session_id:
            raise StorageError(
                self._name,
                f"damaged record in {self._where(key)}: it holds session {session.id!r}",
            )
        return session

    def _refuse(self, operation: str) -> NoReturn:
        raise StorageError(
            self._name, f"cannot {operation} in {self._where()}: it was opened read-only"
        )

    def _get(self, key: bytes, operation: str) -> bytes | None:
        """The record under ``key`` or ``None``; a failed read is a ``StorageError``."""
        try:
            return self._db.get(key)
        except Exception as exc:
            raise self._failure(operation, exc, key) from exc

    def _write_key(self, session_id: str, refusal: str) -> tuple[bytes, bytes]:
        """``(raw id, key)`` of ``session_id`` for a write; refused (``refusal``) when read-only.

        The caller takes the lock and reads (:meth:`_get`): a context manager doing all three
        would add about 1 us to every touch and delete.
        """
        if not self._writable:
            self._refuse(refusal)
        raw_id = session_id.encode("ascii")
        return raw_id, self.keys.sessions + raw_id

    def _indexed(self, key: bytes, record: bytes | None) -> Session | None:
        """The stored session as the indexes know it (its deadline and owner), or ``None`` when
        there is none or its record is damaged. A damaged record's index entries are unknown:
        the write that replaces or deletes it leaves them, a cleanup drops a stale expiry entry,
        and owner listings check every entry against its record."""
        if record is None:
            return None
        try:
            session = decode_session(record)
        except CodecError:
            log.warning("replacing or deleting a damaged record in %s", self._where(key))
            return None
        return session if session.id == self.keys.session_id(key) else None

    # -- lifecycle --------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_open(self) -> None:
        """Open the database (shared within the process), check the table's layout version."""
        if self._handle is not None:
            return
        handle = acquire(self.path, create=self._writable, backend=self._name)
        try:
            version = handle.db.get(self.keys.version)
            if version is not None and version not in READABLE_LAYOUTS:
                raise StorageError(
                    self._name,
                    f"{self._where()} has key layout version {version!r}; this "
                    f"sessionkeeper-leveldb reads versions "
                    f"{', '.join(repr(v) for v in READABLE_LAYOUTS)}",
                )
            if version != LAYOUT_VERSION and self._writable:
                # A new table, or one of layout 1: its records have no owner, so it is already
                # a table of this layout with an empty owner index (see _layout).
                handle.db.put(self.keys.version, LAYOUT_VERSION, sync=self._sync)
        except BaseException as exc:
            release(handle)
            if isinstance(exc, Exception) and not isinstance(exc, SessionKeeperError):
                raise self._failure("open", exc) from exc
            raise
        self._handle = handle
        self._db = handle.db
        self._lock = handle.lock

    @hookimpl
    def sessionkeeper_close(self) -> None:
        """Release the database; the last backend using it in this process closes it."""
        handle = self._handle
        if handle is None:
            return
        self._handle = None
        self._db = _Closed()
        release(handle)

    @hookimpl
    def sessionkeeper_identity(self) -> str | None:
        """``leveldb:dev=<device>,ino=<inode>,table=<table_name>``: the database directory as
        the file system names it, whatever path reached it (a symlink, a bind mount, ``..``),
        and the table within it."""
        handle = self._handle
        if handle is None:
            raise StorageError(self._name, f"{self._where()}: the backend is not open")
        device, inode = handle.file_id
        return f"leveldb:dev={device},ino={inode},table={self.options.table_name}"

    # -- reads ------------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        """One ``get`` and a decode; no lock (LevelDB reads are thread-safe)."""
        try:
            key = self.keys.sessions + session_id.encode("ascii")
        except (AttributeError, UnicodeEncodeError):  # not an id: raise InvalidSession
            validate_id(session_id)
            raise
        record = self._get(key, "fetch")
        if record is None:
            return None
        return self._decode(key, record, session_id)

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        """The ids in the session range, less the expired ones the index finds, read from one
        snapshot (no record is decoded but those of expired sessions)."""
        skip = len(self.keys.sessions)
        with self._stored_keys(now, "list") as (stored, expired):
            return [
                session_id
                for session_id in (key[skip:].decode("ascii") for key in stored)
                if session_id not in expired
            ]

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        """Keys in the session range (no decoding) less the expired sessions, from one snapshot."""
        with self._stored_keys(now, "count") as (stored, expired):
            return sum(1 for _ in stored) - len(expired)

    @contextlib.contextmanager
    def _stored_keys(self, now: int, operation: str) -> Iterator[tuple[Iterator[bytes], set[str]]]:
        """The keys of the session range and the ids expired at ``now``, both read from one
        snapshot (closed on leaving); a failure is a ``StorageError`` naming ``operation``."""
        keys = self.keys
        try:
            snapshot = self._db.snapshot()
            try:
                expired = self._expired(snapshot, now)
                with snapshot.iterator(
                    start=keys.sessions, stop=keys.sessions_end, include_value=False
                ) as stored:
                    yield stored, expired
            finally:
                snapshot.close()
        except SessionKeeperError:
            raise
        except Exception as exc:
            raise self._failure(operation, exc) from exc

    def _expired(self, reader: Reader, now: int) -> set[str]:
        """Ids of the sessions expired at ``now``: the index entries below ``now`` whose session
        is stored with that deadline (cost: the number expired). A damaged record is not
        known to be expired, so it is left in (and reading it reports the damage)."""
        keys = self.keys
        expired: set[str] = set()
        with reader.iterator(
            start=keys.index, stop=keys.expired_below(now), include_value=False
        ) as entries:
            for entry in entries:
                deadline, raw_id = keys.parse_entry(entry)
                record = reader.get(keys.sessions + raw_id)
                if record is None:
                    continue
                try:
                    if decode_session(record).expires_at == deadline:
                        expired.add(raw_id.decode("ascii"))
                except CodecError:
                    continue
        return expired

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterator[Session]:
        """Every stored session, expired ones included, read ``BATCH`` records per iterator."""

        def generate() -> Iterator[Session]:
            start, include_start = self.keys.sessions, True
            while True:
                try:
                    with self._db.iterator(
                        start=start, stop=self.keys.sessions_end, include_start=include_start
                    ) as records:
                        batch: list[tuple[bytes, bytes]] = []
                        for item in records:
                            batch.append(item)
                            if len(batch) == BATCH:
                                break
                except Exception as exc:
                    raise self._failure("iter_sessions", exc) from exc
                for key, record in batch:
                    yield self._decode(key, record, self.keys.session_id(key))
                if len(batch) < BATCH:
                    return
                start, include_start = batch[-1][0], False

        return generate()

    # -- the owner index --------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_list_owner(self, owner: str, now: int) -> list[str]:
        """The ids of ``owner``'s sessions live at ``now``, from one snapshot: the owner's range
        of the owner index and one record per entry (cost: what the owner holds)."""
        return self._owned(owner, now, "list_owner")

    @hookimpl
    def sessionkeeper_count_owner(self, owner: str, now: int) -> int:
        """How many of ``owner``'s sessions are live at ``now`` (cost: what the owner holds)."""
        return len(self._owned(owner, now, "count_owner"))

    def _owned(self, owner: str, now: int, operation: str) -> list[str]:
        """The ids the owner index files under ``owner`` whose record is live at ``now`` and
        still names ``owner``, read from one snapshot. A damaged record is listed (it is not
        known to be expired or another's, as in ``list``): reading it reports the damage."""
        keys = self.keys
        start, stop = keys.owner_range(owner)
        skip = len(start)
        owned: list[str] = []
        try:
            snapshot = self._db.snapshot()
            try:
                with snapshot.iterator(start=start, stop=stop, include_value=False) as entries:
                    for entry in entries:
                        raw_id = entry[skip:]
                        record = snapshot.get(keys.sessions + raw_id)
                        if record is None:
                            continue
                        try:
                            session = decode_session(record)
                        except CodecError:
                            owned.append(raw_id.decode("ascii"))
                            continue
                        if session.owner == owner and not session.is_expired(now):
                            owned.append(session.id)
            finally:
                snapshot.close()
        except SessionKeeperError:
            raise
        except Exception as exc:
            raise self._failure(operation, exc) from exc
        return owned

    # -- writes -----------------------------------------------------------------------------------
    #
    # Every write holds the lock from its first read to its batch's write. _stage and _unstage
    # add to a batch what storing or removing one session writes: the record and both index
    # entries, moved from where the session it replaces had them.

    def _stage(
        self, batch: WriteBatch, session: Session, record: bytes, previous: Session | None
    ) -> None:
        """Add to ``batch`` what storing ``session`` (encoded: ``record``) over ``previous``
        (the stored session as :meth:`_indexed` read it) writes: the record, its expiry entry
        at ``session.expires_at`` and its owner entry, each moved only when it changed."""
        keys = self.keys
        raw_id = session.id.encode("ascii")
        batch.put(keys.sessions + raw_id, record)
        old = None if previous is None else previous.expires_at
        deadline = session.expires_at
        if old != deadline:  # else the entry is in place already
            if old is not None:
                batch.delete(keys.entry(old, raw_id))
            if deadline is not None:
                batch.put(keys.entry(deadline, raw_id), b"")
        old_owner = None if previous is None else previous.owner
        owner = session.owner
        if old_owner != owner:
            if old_owner is not None:
                batch.delete(keys.owner_entry(old_owner, raw_id))
            if owner is not None:
                batch.put(keys.owner_entry(owner, raw_id), b"")

    def _unstage(self, batch: WriteBatch, raw_id: bytes, stored: Session | None) -> None:
        """Add to ``batch`` the removal of the record under ``raw_id`` and of the index entries
        of ``stored``, the session it holds (``None``: damaged, entries unknown)."""
        keys = self.keys
        batch.delete(keys.sessions + raw_id)
        if stored is None:
            return
        deadline = stored.expires_at
        if deadline is not None:
            batch.delete(keys.entry(deadline, raw_id))
        if stored.owner is not None:
            batch.delete(keys.owner_entry(stored.owner, raw_id))

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Write the session exactly as given (its version included) and its index entries in
        one batch, moving the entries of the session it replaces."""
        _, key = self._write_key(session.id, "store")
        record = encode_session(session)
        db = self._db
        with self._lock:
            previous = self._indexed(key, self._get(key, "store"))
            try:
                batch = db.write_batch(sync=self._sync)
                self._stage(batch, session, record, previous)
                batch.write()
            except Exception as exc:
                raise self._failure("store", exc, key) from exc

    @hookimpl
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> int:
        """Write every session (exactly as given) and its index entries in one batch (one lock
        hold, one write: all or none), moving the entries of the sessions they replace."""
        if not self._writable:
            self._refuse("store")
        records = [encode_session(session) for session in sessions]
        keys, db, stage, indexed = self.keys, self._db, self._stage, self._indexed
        with self._lock:
            try:
                batch = db.write_batch(sync=self._sync)
                for session, record in zip(sessions, records, strict=True):
                    key = keys.session(session.id)
                    stage(batch, session, record, indexed(key, self._get(key, "store_many")))
                batch.write()
            except SessionKeeperError:
                raise
            except Exception as exc:
                raise self._failure("store_many", exc) from exc
        return len(sessions)

    @hookimpl
    def sessionkeeper_store_if(self, session: Session, if_version: int | None, now: int) -> Session:
        """Store ``session`` with the next version if the live stored version is ``if_version``
        (any, when ``None``; ``0``: none live), in one batch under the lock; return it as
        stored. Otherwise raise :class:`~sessionkeeper.VersionConflict` and write nothing.

        A damaged stored record has no version: an unconditional store repairs it, as
        ``store`` does; a conditional one is a ``StorageError`` naming the key.
        """
        _, key = self._write_key(session.id, "store")
        db = self._db
        with self._lock:
            record = self._get(key, "store_if")
            if record is None:
                previous = None
            elif if_version is None:
                previous = self._indexed(key, record)
            else:
                previous = self._decode(key, record, session.id)
            current = 0  # the live stored version: an expired session counts as absent
            if previous is not None and not previous.is_expired(now):
                current = previous.version
            if if_version is not None and current != if_version:
                raise VersionConflict(session.id, if_version, current)
            if session.version != current + 1:
                session = session.with_version(current + 1)
            try:
                batch = db.write_batch(sync=self._sync)
                self._stage(batch, session, encode_session(session), previous)
                batch.write()
            except Exception as exc:
                raise self._failure("store_if", exc, key) from exc
            return session

    @hookimpl
    def sessionkeeper_take(self, session_id: str, now: int) -> Session | None:
        """Remove the session and its index entries in one batch under the lock, and return it
        if it was live at ``now`` (an expired one is removed, and ``None`` returned). A damaged
        record is a ``StorageError`` and stays: no caller gets it."""
        raw_id, key = self._write_key(session_id, "take a session")
        db = self._db
        with self._lock:
            record = self._get(key, "take")
            if record is None:
                return None
            stored = self._decode(key, record, session_id)
            try:
                batch = db.write_batch(sync=self._sync)
                self._unstage(batch, raw_id, stored)
                batch.write()
            except Exception as exc:
                raise self._failure("take", exc, key) from exc
        return None if stored.is_expired(now) else stored

    @hookimpl
    def sessionkeeper_rotate(self, session_id: str, new_id: str, now: int) -> Session | None:
        """Move the session live at ``now`` to ``new_id`` (version + 1, ``last_accessed`` =
        ``now``, every other field kept) in one batch under the lock: the old record and its
        entries go, the new ones come, together. ``None`` when none is live (an expired session
        is left to cleanup); a damaged record is a ``StorageError``."""
        raw_id, key = self._write_key(session_id, "rotate a session")
        new_raw_id, new_key = self._write_key(new_id, "rotate a session")
        db = self._db
        with self._lock:
            record = self._get(key, "rotate")
            if record is None:
                return None
            stored = self._decode(key, record, session_id)
            if stored.is_expired(now):
                return None
            rotated = stored.replace(
                id=new_id,
                last_accessed=max(now, stored.last_accessed),
                version=stored.version + 1,
            )
            # new_id is fresh (the manager draws 256 bits); were it stored, it is replaced whole.
            replaced = None
            if new_raw_id != raw_id:
                replaced = self._indexed(new_key, self._get(new_key, "rotate"))
            try:
                batch = db.write_batch(sync=self._sync)
                self._unstage(batch, raw_id, stored)
                self._stage(batch, rotated, encode_session(rotated), replaced)
                batch.write()
            except Exception as exc:
                raise self._failure("rotate", exc, key) from exc
            return rotated

    @hookimpl
    def sessionkeeper_delete_owner(self, owner: str) -> int:
        """Delete every session the owner index files under ``owner``, expired ones included,
        in one batch under the lock (all or none); return how many. Reads only the owner's
        range and one record per entry. An entry whose record names another owner (left by a
        damaged record that was replaced) is dropped alone; a damaged record filed under
        ``owner`` is deleted: logging out everywhere must not leave one behind."""
        if not self._writable:
            self._refuse("delete an owner's sessions")
        keys, db = self.keys, self._db
        start, stop = keys.owner_range(owner)
        skip = len(start)
        removed = 0
        with self._lock:
            try:
                batch = db.write_batch(sync=self._sync)
                with db.iterator(start=start, stop=stop, include_value=False) as entries:
                    for entry in entries:
                        raw_id = entry[skip:]
                        key = keys.sessions + raw_id
                        record = db.get(key)
                        stored = self._indexed(key, record)
                        # Else a stale entry: nothing of this owner's is stored under the id.
                        if record is not None and (stored is None or stored.owner == owner):
                            self._unstage(batch, raw_id, stored)
                            removed += 1
                        batch.delete(entry)
                batch.write()
            except SessionKeeperError:
                raise
            except Exception as exc:
                raise self._failure("delete_owner", exc) from exc
        return removed

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Move ``last_accessed`` forward (never back) and the expiry entry with it, atomically.
        The version and the owner (so the owner entry) are unchanged."""
        raw_id, key = self._write_key(session_id, "touch a session")
        keys, db = self.keys, self._db
        with self._lock:
            record = self._get(key, "touch")
            if record is None:
                return None
            session = self._decode(key, record, session_id)
            if last_accessed <= session.last_accessed:
                return session
            touched = session.touched(last_accessed)
            try:
                batch = db.write_batch(sync=self._sync)
                batch.put(key, encode_session(touched))
                old, new = session.expires_at, touched.expires_at
                if old != new and old is not None and new is not None:
                    batch.delete(keys.entry(old, raw_id))
                    batch.put(keys.entry(new, raw_id), b"")
                batch.write()
            except Exception as exc:
                raise self._failure("touch", exc, key) from exc
            return touched

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Remove the session and its index entries in one batch."""
        raw_id, key = self._write_key(session_id, "delete a session")
        db = self._db
        with self._lock:
            record = self._get(key, "delete")
            if record is None:
                return False
            try:
                batch = db.write_batch(sync=self._sync)
                self._unstage(batch, raw_id, self._indexed(key, record))
                batch.write()
            except Exception as exc:
                raise self._failure("delete", exc, key) from exc
            return True

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        """Delete the sessions expired at ``now`` (and their owner entries), reading only the
        index entries below ``now``, ``BATCH`` entries per lock hold and write."""
        if not self._writable:
            self._refuse("clean up expired sessions")
        removed = 0
        start, include_start = self.keys.index, True
        while True:
            with self._lock:
                try:
                    done, removed_now, last = self._cleanup_batch(now, start, include_start)
                except SessionKeeperError:
                    raise
                except Exception as exc:
                    raise self._failure("cleanup", exc) from exc
            removed += removed_now
            if done or last is None:
                return removed
            start, include_start = last, False

    def _cleanup_batch(
        self, now: int, start: bytes, include_start: bool
    ) -> tuple[bool, int, bytes | None]:
        """One batch of a cleanup: ``(range exhausted, sessions removed, last entry read)``."""
        keys, db = self.keys, self._db
        batch = db.write_batch(sync=self._sync)
        removed = seen = 0
        last: bytes | None = None
        with db.iterator(
            start=start,
            stop=keys.expired_below(now),
            include_start=include_start,
            include_value=False,
        ) as entries:
            for entry in entries:
                seen += 1
                last = entry
                deadline, raw_id = keys.parse_entry(entry)
                key = keys.sessions + raw_id
                record = db.get(key)
                if record is None:  # a stale entry: nothing stored under this id
                    batch.delete(entry)
                else:
                    try:
                        stored = decode_session(record)
                    except CodecError as exc:  # leave it for fetch to report
                        self._damaged_skipped += 1
                        log.warning(
                            "cleanup skipped a damaged record in %s: %s", self._where(key), exc
                        )
                    else:
                        batch.delete(entry)
                        # Else a stale entry: the session's real one is elsewhere.
                        if stored.expires_at == deadline:
                            batch.delete(key)
                            if stored.owner is not None:
                                batch.delete(keys.owner_entry(stored.owner, raw_id))
                            removed += 1
                if seen == BATCH:
                    break
        batch.write()
        self._entries_read += seen
        return seen < BATCH, removed, last

    # -- figures ----------------------------------------------------------------------------------

    @hookimpl
    def sessionkeeper_stats(self) -> dict[str, Any]:
        """``db_path``, ``table_name``, ``sync``, ``approximate_bytes`` (LevelDB's estimate of
        the table's size on disk), and what this backend's cleanups did:
        ``cleanup_entries_read`` (index entries, the measure of their cost) and
        ``damaged_records_skipped``."""
        try:
            size = int(self._db.approximate_size(self.keys.prefix, self.keys.table_end))
        except Exception:
            size = None
        return {
            "db_path": str(self.path),
            "table_name": self.options.table_name,
            "sync": self._sync,
            "approximate_bytes": size,
            "cleanup_entries_read": self._entries_read,
            "damaged_records_skipped": self._damaged_skipped,
        }
