"""What a Redis backend does with one table, apart from connections: its keys, the steps of
each operation (generators of Redis calls, run by the sync or the async driver of
:mod:`sessionkeeper_redis._drivers`), decoding what they read, and the errors they raise."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any, Final

from sessionkeeper import Session, StorageError, VersionConflict
from sessionkeeper.backend import BackendContext, CodecError, decode_session, encode_session

from . import _scripts
from ._drivers import REDIS_ERRORS, Batch, Call, Command, Functions, Steps, Writes
from ._options import MAX_TTL_MS, RedisOptions
from ._records import _pack_str, _pack_uint, _unpack_uint

#: Ids read per round trip by ``list``, ``iter_sessions`` and ``cleanup_expired``.
PAGE_SIZE: Final = 500
#: Sessions of one owner ``delete_owner`` removes per script call (per round trip): bounds how
#: long one call holds the server.
OWNER_PAGE: Final = 1000
#: Sessions ``store_many`` sends per round trip (followed by one ``WAIT`` with
#: ``wait_replicas``): bounds the request buffered on the client, up to ``max_metadata_bytes``
#: per session.
STORE_CHUNK: Final = 500


#: The bytes of a session id (visible ASCII), and the newline that joins a page of them.
_ID_BYTES_AND_NEWLINE: Final = bytes(range(0x21, 0x7F)) + b"\n"
#: A session id as the server holds it: 1-256 visible ASCII characters.
_SESSION_ID: Final = re.compile(rb"[\x21-\x7e]{1,256}")
#: How a script says that a record it read is damaged (the rest of the message says how).
_DAMAGED: Final = "DAMAGED session record: "


class RedisOperations:
    """The table-level half of :class:`~sessionkeeper_redis.RedisBackend`: keys, the steps of
    every operation, decoding and error wording. It holds no connection: the backend runs the
    steps on its sync or its ``redis.asyncio`` client."""

    def __init__(self, options: RedisOptions, context: BackendContext) -> None:
        self.options = options
        self.context = context
        self.server = options.server_name()
        table = options.table_name
        self._prefix = f"{{{table}}}:s:"
        self._ids_key = f"{{{table}}}:ids"
        self._exp_key = f"{{{table}}}:exp"
        self._own_key = f"{{{table}}}:own"
        self._owners = f"{{{table}}}:o:"
        self._margin = str(options.ttl_margin_ms)
        self._max_ttl = str(MAX_TTL_MS)
        self._writes = Writes(
            wait=options.wait_replicas,
            timeout_ms=options.wait_timeout_ms,
            cluster=options.cluster is not None,
            unacknowledged=self._unacknowledged,
            functions=Functions(
                usable=None if options.functions and options.cluster is None else False
            ),
        )
        self._counter_lock = threading.Lock()
        self._removed = 0
        self._dropped_by_redis = 0

    # -- keys -------------------------------------------------------------------------------------

    def session_key(self, session_id: str) -> str:
        """The Redis key holding the record of ``session_id``: ``{table_name}:s:<id>``."""
        return self._prefix + session_id

    @property
    def index_keys(self) -> tuple[str, str]:
        """The keys of the id index and of the deadline index of this table."""
        return self._ids_key, self._exp_key

    @property
    def owner_hash_key(self) -> str:
        """The key of the hash naming the owner of each owned session: ``{table_name}:own``."""
        return self._own_key

    def owner_key(self, owner: str) -> str:
        """The key of the set of ``owner``'s session ids: ``{table_name}:o:<owner>``."""
        return self._owners + owner

    # -- errors -----------------------------------------------------------------------------------

    def _failed(self, operation: str, exc: BaseException) -> StorageError:
        where = f"{self.server} (table {self.options.table_name!r})"
        return StorageError.failed(self.context.name, operation, where, exc)

    def _damaged(self, key: str, problem: str) -> StorageError:
        record = f"at key {key!r} of table {self.options.table_name!r} on {self.server}"
        return StorageError.damaged(self.context.name, record, problem)

    def _read_failed(self, operation: str, key: str, exc: BaseException) -> StorageError:
        """A failed read of ``key``: a key of another type is damage, the rest a failure."""
        if str(exc).startswith("WRONGTYPE"):
            return self._damaged(
                key, "it is not a string: something other than sessionkeeper wrote it"
            )
        return self._failed(operation, exc)

    def _script_failed(self, operation: str, key: str, exc: BaseException) -> StorageError:
        """A failed script that read the record at ``key``: a damaged record (the script
        says so) or a key of another type is damage, the rest a failure."""
        text = str(exc)
        if text.startswith("VERSION "):
            return StorageError(
                self.context.name,
                f"cannot {operation} session at key {key!r} of table "
                f"{self.options.table_name!r}: {text.removeprefix('VERSION ')} "
                f"({2**63 - 1}), it cannot grow",
            )
        if _DAMAGED in text:
            return self._damaged(key, text.partition(_DAMAGED)[2])
        if "WRONGTYPE" in text:
            return self._damaged(
                key, "it is not a string: something other than sessionkeeper wrote it"
            )
        return self._failed(operation, exc)

    def _unacknowledged(self, writes: int, acknowledged: object) -> StorageError:
        """``WAIT`` saw too few replicas acknowledge the last ``writes`` writes."""
        what, they, them = (
            ("the write is", "it", "it")
            if writes == 1
            else (f"{writes} writes are", "they", "them")
        )
        return StorageError(
            self.context.name,
            f"{what} on the primary of {self.server} but only {acknowledged} of the "
            f"{self.options.wait_replicas} replicas required (wait_replicas) acknowledged {them} "
            f"within {self.options.wait_timeout_ms} ms; {they} may be lost if the primary fails "
            "now",
        )

    # -- decoding ---------------------------------------------------------------------------------

    def _decode(self, key: str, record: object) -> Session:
        if not isinstance(record, bytes):
            raise self._damaged(key, f"it holds {type(record).__name__}, not bytes")
        try:
            session = decode_session(record)
        except CodecError as exc:
            raise self._damaged(key, str(exc)) from None
        if key != self._prefix + session.id:
            raise self._damaged(key, f"it holds session {session.id!r}")
        return session

    def _ids(self, index: str, page: Sequence[bytes]) -> list[str]:
        """The members of a page of ``index`` as session ids. A member that is not an id
        (another program wrote it) is a ``StorageError`` naming the index and the member,
        never a ``UnicodeDecodeError`` or an id no session can have."""
        if not page:
            return []
        # The whole page at once, in C: ids hold no newline, so joined by newlines, every byte
        # is visible ASCII or one of the len(page) - 1 newlines, and no line is empty.
        joined = b"\n".join(page)
        if (
            joined
            and not joined.translate(None, _ID_BYTES_AND_NEWLINE)
            and joined.count(b"\n") == len(page) - 1
            and not joined.startswith(b"\n")
            and not joined.endswith(b"\n")
            and b"\n\n" not in joined
            and max(map(len, page)) <= 256
        ):
            return joined.decode("ascii").split("\n")
        bad = next(member for member in page if _SESSION_ID.fullmatch(member) is None)
        raise StorageError(
            self.context.name,
            f"the index {index!r} of table {self.options.table_name!r} on {self.server} holds "
            f"{bad[:300]!r}, which is not a session id: something other than sessionkeeper "
            "wrote it (sessionkeeper check --repair removes it)",
        )

    # -- the steps of each operation (shared by both drivers, see _drivers) -------------------

    def _fetch(self, session_id: str) -> Steps[Session | None]:
        try:
            key = self._prefix + session_id
        except TypeError:  # not a str: no such session (the manager says why the id is bad)
            return None
        try:
            record = yield Command(("GET", key))
        except REDIS_ERRORS as exc:
            raise self._read_failed("fetch", key, exc) from exc
        if record is None:
            return None
        return self._decode(key, record)

    def _store(self, session: Session) -> Steps[None]:
        keys, args = self._store_call(session)
        try:
            yield Call(_scripts.STORE, keys, args, write=True)
        except REDIS_ERRORS as exc:
            raise self._failed("store", exc) from exc

    def _store_many(self, sessions: Sequence[Session]) -> Steps[int]:
        call = self._store_call
        try:
            for start in range(0, len(sessions), STORE_CHUNK):
                chunk = [call(session) for session in sessions[start : start + STORE_CHUNK]]
                yield Batch(_scripts.STORE, chunk)
        except REDIS_ERRORS as exc:
            raise self._failed("store_many", exc) from exc
        return len(sessions)

    def _store_call(self, session: Session) -> tuple[tuple[str, str, str, str], tuple[Any, ...]]:
        """The keys and arguments of the store script that stores ``session``."""
        deadline, ttl = self._expiry(session)
        keys = (self._prefix + session.id, self._ids_key, self._exp_key, self._own_key)
        owner = session.owner
        return keys, (
            session.id,
            encode_session(session),
            deadline,
            ttl,
            "" if owner is None else owner,
            self._owners,
        )

    def _expiry(self, session: Session) -> tuple[str, str]:
        """The deadline score and the TTL (ms) of ``session``, each ``''`` for none: the
        deadline is ``expires_at`` (the earlier of the idle and the absolute deadline), the TTL
        what is left of it after ``last_accessed``, plus ``ttl_margin_ms``."""
        # Session.expires_at, inline for the common case (no absolute timeout).
        timeout = session.timeout_ms
        if session.absolute_timeout_ms is None:
            if timeout is None:
                return "", ""
            expires_at = session.last_accessed + timeout
        else:
            expires = session.expires_at
            assert expires is not None
            expires_at = expires
        ttl_ms = max(expires_at - session.last_accessed, 0) + self.options.ttl_margin_ms
        return str(expires_at), str(ttl_ms) if ttl_ms <= MAX_TTL_MS else ""

    def _touch(self, session_id: str, last_accessed: int) -> Steps[Session | None]:
        key = self._prefix + session_id
        encoded = _pack_uint(last_accessed)
        args = (session_id, encoded, str(last_accessed), self._margin, self._max_ttl)
        try:
            record = yield Call(_scripts.TOUCH, (key, self._exp_key), args, write=True)
        except REDIS_ERRORS as exc:
            raise self._script_failed("touch", key, exc) from exc
        if record is None:
            return None
        return self._decode(key, record)

    def _delete(self, session_id: str) -> Steps[bool]:
        key = self._prefix + session_id
        keys = (key, self._ids_key, self._exp_key, self._own_key)
        try:
            removed = yield Call(_scripts.DELETE, keys, (session_id, self._owners), write=True)
        except REDIS_ERRORS as exc:
            raise self._failed("delete", exc) from exc
        return bool(removed)

    def _store_if(self, session: Session, if_version: int | None, now: int) -> Steps[Session]:
        key = self._prefix + session.id
        condition = b"" if if_version is None else _pack_uint(if_version)
        args = (encode_session(session), now, condition, self._margin)
        try:
            stored = yield Call(_scripts.STORE_IF, (key,), args, write=True)
        except REDIS_ERRORS as exc:
            raise self._script_failed("store", key, exc) from exc
        if type(stored) is not bytes:  # {0, the live version}: a conflict, nothing written
            assert if_version is not None
            raise VersionConflict(session.id, if_version, _unpack_uint(stored[1]))
        version = _unpack_uint(stored)
        return session if session.version == version else session.with_version(version)

    def _take(self, session_id: str, now: int) -> Steps[Session | None]:
        key = self._prefix + session_id
        keys = (key, self._ids_key, self._exp_key, self._own_key)
        try:
            record = yield Call(_scripts.TAKE, keys, (session_id, self._owners, now), write=True)
        except REDIS_ERRORS as exc:
            raise self._script_failed("take", key, exc) from exc
        if record is None:
            return None
        return self._decode(key, record)

    def _rotate(self, session_id: str, new_id: str, now: int) -> Steps[Session | None]:
        key = self._prefix + session_id
        new_key = self._prefix + new_id
        keys = (key, new_key, self._ids_key, self._exp_key, self._own_key)
        args = (
            session_id,
            new_id,
            _pack_str(new_id),
            self._owners,
            now,
            _pack_uint(now),
            self._margin,
            self._max_ttl,
        )
        try:
            record = yield Call(_scripts.ROTATE, keys, args, write=True)
        except REDIS_ERRORS as exc:
            raise self._script_failed("rotate", key, exc) from exc
        if record is None:
            return None
        return self._decode(new_key, record)

    def _list_owner(self, owner: str, now: int) -> Steps[list[str]]:
        key = self._owners + owner
        try:
            page = yield Call(_scripts.OWNER_LIVE, (key, self._exp_key), (now, 0))
        except REDIS_ERRORS as exc:
            raise self._failed("list", exc) from exc
        return self._ids(key, page)

    def _count_owner(self, owner: str, now: int) -> Steps[int]:
        key = self._owners + owner
        try:
            return int((yield Call(_scripts.OWNER_LIVE, (key, self._exp_key), (now, 1))))
        except REDIS_ERRORS as exc:
            raise self._failed("count", exc) from exc

    def _delete_owner(self, owner: str) -> Steps[int]:
        keys = (self._owners + owner, self._ids_key, self._exp_key, self._own_key)
        args = (owner, self._prefix, OWNER_PAGE)
        removed = 0
        try:
            while True:
                deleted, taken = yield Call(_scripts.DELETE_OWNER, keys, args, write=True)
                removed += int(deleted)
                if int(taken) < OWNER_PAGE:
                    return removed
        except REDIS_ERRORS as exc:
            raise self._failed("delete_owner", exc) from exc

    def _list(self, now: int) -> Steps[list[str]]:
        live: list[str] = []
        start: str | bytes = "-"
        keys = (self._ids_key, self._exp_key)
        try:
            while True:
                last, page = yield Call(_scripts.LIST_PAGE, keys, (start, PAGE_SIZE, now))
                live.extend(self._ids(self._ids_key, page))
                if last is None:
                    return live
                start = b"(" + last
        except REDIS_ERRORS as exc:
            raise self._failed("list", exc) from exc

    def _count(self, now: int) -> Steps[int]:
        try:
            return int((yield Call(_scripts.COUNT, (self._ids_key, self._exp_key), (now,))))
        except REDIS_ERRORS as exc:
            raise self._failed("count", exc) from exc

    def _cleanup_expired(self, now: int) -> Steps[int]:
        """Reads only the expired entries of the deadline index, a page at a time. Sessions
        Redis already dropped through their TTL are counted too (their index entries are
        removed)."""
        removed = dropped = 0
        bound = f"({now}"
        # Members as the server holds them (bytes): an entry another program wrote that is no
        # id expires like the others, instead of stopping every cleanup.
        prefix = self._prefix.encode("ascii")
        try:
            while True:
                page = yield Command(
                    ("ZRANGEBYSCORE", self._exp_key, "-inf", bound, "LIMIT", 0, PAGE_SIZE)
                )
                if not page:
                    break
                keys = [
                    self._ids_key,
                    self._exp_key,
                    self._own_key,
                    *(prefix + member for member in page),
                ]
                done = yield Call(_scripts.EXPIRE_PAGE, keys, (now, self._owners, *page), True)
                removed += int(done[0])
                dropped += int(done[1])
                if len(page) < PAGE_SIZE or not (done[0] or done[1]):
                    break
        except REDIS_ERRORS as exc:
            raise self._failed("cleanup_expired", exc) from exc
        finally:
            with self._counter_lock:
                self._removed += removed
                self._dropped_by_redis += dropped
        return removed + dropped
