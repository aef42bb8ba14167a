"""The ``redis`` backend plugin: sessions in Redis (standalone, Sentinel or Cluster)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Iterator, Sequence
from typing import Any, ClassVar, Final, NoReturn, TypeVar

import attrs
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from sessionkeeper import Session, StorageError, VersionConflict
from sessionkeeper.backend import (
    FORMAT_VERSION,
    BackendContext,
    Capabilities,
    CodecError,
    decode_session,
    encode_session,
    hookimpl,
)

from . import _scripts
from ._check import check_table
from ._deadline import Watchdog
from ._drivers import REDIS_ERRORS, Batch, Call, Command, Steps, Writes, arun, load_scripts, run
from ._options import MAX_TTL_MS, RedisOptions

__all__ = ["RedisBackend"]

T = TypeVar("T")

#: The record formats the scripts read (see :mod:`sessionkeeper_redis._scripts`); they write
#: the last one.
RECORD_FORMATS: Final = (1, 2)

#: Ids read per round trip by ``list``, ``iter_sessions`` and ``cleanup_expired``.
PAGE_SIZE: Final = 500
#: Sessions of one owner ``delete_owner`` removes per script call (per round trip): bounds how
#: long one call holds the server.
OWNER_PAGE: Final = 1000
#: Sessions ``store_many`` sends per round trip (followed by one ``WAIT`` with
#: ``wait_replicas``): bounds the request buffered on the client, up to ``max_metadata_bytes``
#: per session.
STORE_CHUNK: Final = 500
_UINT_FORMATS: Final = ((0xFF, b"\xcc", 1), (0xFFFF, b"\xcd", 2), (0xFFFFFFFF, b"\xce", 4))


def _pack_uint(value: int) -> bytes:
    """``value`` (0 <= value < 2**64) as msgpack writes it: in its shortest form."""
    if value < 0x80:
        return bytes((value,))
    for limit, tag, size in _UINT_FORMATS:
        if value <= limit:
            return tag + value.to_bytes(size, "big")
    return b"\xcf" + value.to_bytes(8, "big")


def _unpack_uint(data: bytes) -> int:
    """The number msgpack encoded as ``data`` (an unsigned integer, as :func:`_pack_uint`
    writes it)."""
    return data[0] if len(data) == 1 else int.from_bytes(data[1:], "big")


def _pack_str(text: str) -> bytes:
    """A session id (1-256 ASCII characters) as msgpack writes a string."""
    data = text.encode()
    size = len(data)
    if size < 32:
        return bytes((0xA0 | size,)) + data
    if size < 256:
        return b"\xd9" + bytes((size,)) + data
    return b"\xda" + size.to_bytes(2, "big") + data


def _tail_length(session: Session) -> int:
    """How many bytes end the record of ``session`` after its version: the encoded owner and
    absolute timeout (msgpack's shortest forms, as :func:`sessionkeeper.backend.encode_session`
    writes them)."""
    owner = session.owner
    if owner is None:
        length = 1
    else:
        size = len(owner.encode())
        length = size + (1 if size < 32 else 2 if size < 256 else 3)
    absolute = session.absolute_timeout_ms
    if absolute is None:
        return length + 1
    return length + len(_pack_uint(absolute))


def split_record(session: Session) -> tuple[bytes, bytes]:
    """The record of ``session`` cut around its version: ``(head, tail)`` such that
    ``head + <version encoded> + tail`` is the record of the session with that version. The
    conditional-store script puts in the version it decides on the server."""
    record = encode_session(session)
    end = len(record) - _tail_length(session)
    return record[: end - len(_pack_uint(session.version))], record[end:]


#: The bytes of a session id (visible ASCII), and the newline that joins a page of them.
_ID_BYTES_AND_NEWLINE: Final = bytes(range(0x21, 0x7F)) + b"\n"
#: A session id as the server holds it: 1-256 visible ASCII characters.
_SESSION_ID: Final = re.compile(rb"[\x21-\x7e]{1,256}")


#: The most connections one backend's ``redis.asyncio`` client opens to a standalone server: one
#: per task awaiting a command at the same moment, kept for the next ones (redis.asyncio's own
#: default, 100, makes the 101st concurrent task fail). A pool that makes tasks wait for a free
#: connection instead costs a fifth of a round trip on every command (its lock and timer).
ASYNC_MAX_CONNECTIONS: Final = 2**16


def _async_from_url(url: str, **options: Any) -> Any:
    """A ``redis.asyncio`` client of ``url`` whose pool grows to :data:`ASYNC_MAX_CONNECTIONS`."""
    return redis.asyncio.Redis.from_url(url, max_connections=ASYNC_MAX_CONNECTIONS, **options)


@attrs.frozen
class _Flavour:
    """The client classes of one I/O path of redis-py: sync, or ``redis.asyncio``."""

    from_url: Any
    cluster: Any
    node: Any
    sentinel: Any
    retry: Any


_SYNC: Final = _Flavour(redis.Redis.from_url, RedisCluster, ClusterNode, Sentinel, Retry)
_ASYNC: Final = _Flavour(
    _async_from_url,
    redis.asyncio.cluster.RedisCluster,
    redis.asyncio.cluster.ClusterNode,
    redis.asyncio.sentinel.Sentinel,
    redis.asyncio.retry.Retry,
)
#: How a script says that a record it read is damaged (the rest of the message says how).
_DAMAGED: Final = "DAMAGED session record: "


class RedisBackend:
    """Sessions in Redis, shared by every process and host that names the same table.

    One string key per session holds the core codec's record, and Lua scripts make every write
    atomic: ``touch`` never recreates a deleted session and never moves ``last_accessed`` back,
    whatever other workers do at the same moment. Each key has a TTL derived from the session's
    timeout, so Redis drops sessions nobody cleans up; two sorted sets index the table by id and
    by deadline, so ``count`` and ``cleanup_expired`` cost what expired, not what is stored.
    See :mod:`sessionkeeper_redis._scripts` for the key layout.

    Nothing is read or connected in the constructor: the connection is made (and checked with
    a ``PING``) by :meth:`sessionkeeper_open`.
    """

    options_class: ClassVar[type[RedisOptions]] = RedisOptions
    capabilities: ClassVar[Capabilities] = Capabilities(
        persistent=True,
        shared=True,
        replicated=False,
        blocking=True,
        read_only_open=True,
        atomic=True,
    )

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
        self._client: Any = None
        self._sentinel: Any = None
        #: The redis.asyncio client of the async hooks, its Sentinel, and the loop it is bound to.
        self._aclient: Any = None
        self._asentinel: Any = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._watchdog: Watchdog | None = None
        self._writes = Writes(
            wait=options.wait_replicas,
            timeout_ms=options.wait_timeout_ms,
            cluster=options.cluster is not None,
            unacknowledged=self._unacknowledged,
        )
        self._counter_lock = threading.Lock()
        self._removed = 0
        self._dropped_by_redis = 0

    def __repr__(self) -> str:
        state = "open" if self._client is not None else "closed"
        return f"<RedisBackend table={self.options.table_name!r} on {self.server} {state}>"

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
        detail = str(exc) or type(exc).__name__
        return StorageError(
            self.context.name,
            f"{operation} failed on {self.server} (table {self.options.table_name!r}): "
            f"{type(exc).__name__}: {detail}",
        )

    def _damaged(self, key: str, problem: str) -> StorageError:
        return StorageError(
            self.context.name,
            f"the session record at key {key!r} of table {self.options.table_name!r} on "
            f"{self.server} is damaged: {problem}",
        )

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

    def _refuse(self, operation: str) -> NoReturn:
        reason = "it was opened read-only" if self._client is not None else "it is not open"
        raise StorageError(
            self.context.name,
            f"cannot {operation} in table {self.options.table_name!r} on {self.server}: {reason}",
        )

    def _writer(self, operation: str) -> Any:
        client = self._client
        if client is None or self.context.read_only:
            self._refuse(operation)
        return client

    def _reader(self, operation: str) -> Any:
        client = self._client
        if client is None:
            self._refuse(operation)
        return client

    # -- lifecycle --------------------------------------------------------------------------------

    def _connect(self, flavour: _Flavour = _SYNC) -> Any:
        """A new client of the configured server (sync, or ``redis.asyncio`` for ``_ASYNC``);
        ``StorageError`` naming the server when it cannot be made (nothing is left open then)."""
        try:
            return self._new_client(flavour)
        except REDIS_ERRORS as exc:
            if flavour is _SYNC:
                self._close_sentinels()
            raise StorageError(
                self.context.name, f"cannot connect to {self.server}: {type(exc).__name__}: {exc}"
            ) from exc

    def _new_client(self, flavour: _Flavour) -> Any:
        options = self.options
        common: dict[str, Any] = {
            # The asyncio client has no socket timeout: the driver's Watchdog bounds each round
            # trip at a fraction of the cost (see _deadline).
            "socket_timeout": options.socket_timeout_ms / 1000 if flavour is _SYNC else None,
            "socket_connect_timeout": options.connect_timeout_ms / 1000,
            "retry": flavour.retry(ExponentialBackoff(cap=1.0, base=0.01), options.retries),
        }
        if options.username is not None:
            common["username"] = options.username
        if options.password is not None:
            common["password"] = options.password
        if options.cluster is not None:
            nodes = [flavour.node(host, port) for host, port in options.cluster.addresses()]
            return flavour.cluster(startup_nodes=nodes, **common)
        # redis-py 5 retries only the errors listed here; later versions add them anyway.
        common["retry_on_error"] = [redis.ConnectionError, redis.TimeoutError]
        if options.sentinel is not None:
            sentinel_options = options.sentinel
            sentinel_kwargs: dict[str, Any] = {
                key: common[key] for key in ("socket_connect_timeout", "retry", "retry_on_error")
            }
            # Asking a Sentinel for the primary is bounded by the socket timeout on both paths.
            sentinel_kwargs["socket_timeout"] = options.socket_timeout_ms / 1000
            if sentinel_options.username is not None:
                sentinel_kwargs["username"] = sentinel_options.username
            if sentinel_options.password is not None:
                sentinel_kwargs["password"] = sentinel_options.password
            sentinel = flavour.sentinel(
                sentinel_options.addresses(), sentinel_kwargs=sentinel_kwargs, **common
            )
            if flavour is _SYNC:
                self._sentinel = sentinel
            else:
                self._asentinel = sentinel
            return sentinel.master_for(sentinel_options.service_name, db=options.db or 0, **common)
        return flavour.from_url(options.url or "", **common)

    @hookimpl
    def sessionkeeper_open(self) -> None:
        """Connect, check the server answers (``PING``) and load the scripts."""
        if self._client is not None:
            return
        if RECORD_FORMATS[-1] != FORMAT_VERSION:
            raise StorageError(
                self.context.name,
                f"this sessionkeeper-redis reads and writes records of formats up to "
                f"{RECORD_FORMATS[-1]}, but the installed sessionkeeper writes format "
                f"{FORMAT_VERSION}: install the sessionkeeper-redis of that sessionkeeper",
            )
        client = self._connect()
        try:
            client.ping()
            if not self.context.read_only:
                load_scripts(client)
        except REDIS_ERRORS as exc:
            self._close_client(client)
            raise StorageError(
                self.context.name, f"cannot open {self.server}: {type(exc).__name__}: {exc}"
            ) from exc
        self._client = client

    @hookimpl
    def sessionkeeper_close(self) -> None:
        """Close every connection of the sync client. Idempotent. (The async client is closed
        by :meth:`sessionkeeper_async_close`, on its loop; one left open is dropped.)"""
        client, self._client = self._client, None
        self._aclient = self._asentinel = self._aloop = None
        self._stop_watchdog()
        if client is not None:
            self._close_client(client)

    def _close_client(self, client: Any) -> None:
        try:
            client.close()
            pool = getattr(client, "connection_pool", None)
            if pool is not None:
                pool.disconnect()
        finally:
            self._close_sentinels()

    def _close_sentinels(self) -> None:
        sentinel, self._sentinel = self._sentinel, None
        if sentinel is not None:
            for node in sentinel.sentinels:
                node.close()

    # -- driving the steps ------------------------------------------------------------------------

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

    async def _arun(self, operation: str, write: bool, steps: Steps[T]) -> T:
        """Run ``steps`` on this backend's ``redis.asyncio`` client (see :meth:`_async_client`)."""
        client = self._async_client(operation, write)
        watchdog = self._watchdog
        assert watchdog is not None
        return await arun(client, self._writes, steps, watchdog)

    def _async_client(self, operation: str, write: bool) -> Any:
        """The ``redis.asyncio`` client of the running event loop: made on the first async call
        (no connection until its first command), one per backend, so one per manager. A loop
        that replaced the one it was made on (the old loop closed) gets a new one. The open,
        read-only and closed states are the sync client's: the manager opened and closes both."""
        (self._writer if write else self._reader)(operation)
        loop = asyncio.get_running_loop()
        client = self._aclient
        if client is None or self._aloop is not loop:
            client = self._aclient = self._connect(_ASYNC)
            self._aloop = loop
            self._stop_watchdog()
            self._watchdog = Watchdog(loop, self.options.socket_timeout_ms)
        return client

    def _stop_watchdog(self) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.close()

    @hookimpl
    def sessionkeeper_async_close(self) -> Awaitable[None] | None:
        """Close the ``redis.asyncio`` client (and its Sentinel connections), on its loop."""
        client, self._aclient = self._aclient, None
        sentinel, self._asentinel = self._asentinel, None
        loop, self._aloop = self._aloop, None
        self._stop_watchdog()
        if client is None or loop is not asyncio.get_running_loop():
            return None  # never made, or made on a loop that is gone: nothing to await here
        return _aclose(client, sentinel)

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
        head, tail = split_record(session)
        deadline, ttl = self._expiry(session)
        owner = session.owner
        args = (
            session.id,
            head,
            tail,
            deadline,
            ttl,
            "" if owner is None else owner,
            self._owners,
            now,
            "" if if_version is None else _pack_uint(if_version),
        )
        keys = (key, self._ids_key, self._exp_key, self._own_key)
        try:
            done, version = yield Call(_scripts.STORE_IF, keys, args, write=True)
        except REDIS_ERRORS as exc:
            raise self._script_failed("store", key, exc) from exc
        version = _unpack_uint(version)
        if not done:
            assert if_version is not None
            raise VersionConflict(session.id, if_version, version)
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

    # -- the hooks: each runs its steps on the sync client, its async twin on redis.asyncio -------

    @hookimpl
    def sessionkeeper_fetch(self, session_id: str) -> Session | None:
        """The stored session (expired or not), or ``None``: one ``GET``."""
        return run(self._reader("fetch"), self._writes, self._fetch(session_id))

    @hookimpl
    def sessionkeeper_async_fetch(self, session_id: str) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_fetch` on ``redis.asyncio``."""
        return self._arun("fetch", False, self._fetch(session_id))

    @hookimpl
    def sessionkeeper_store(self, session: Session) -> None:
        """Insert or replace ``session`` (record, TTL and index entries in one script)."""
        run(self._writer("store"), self._writes, self._store(session))

    @hookimpl
    def sessionkeeper_async_store(self, session: Session) -> Awaitable[None]:
        """:meth:`sessionkeeper_store` on ``redis.asyncio``."""
        return self._arun("store", True, self._store(session))

    @hookimpl
    def sessionkeeper_store_many(self, sessions: Sequence[Session]) -> int:
        """Insert or replace each session with the store script, as :meth:`sessionkeeper_store`
        does, pipelined: one round trip (and one ``WAIT``) per ``STORE_CHUNK`` sessions."""
        return run(self._writer("store"), self._writes, self._store_many(sessions))

    @hookimpl
    def sessionkeeper_async_store_many(self, sessions: Sequence[Session]) -> Awaitable[int]:
        """:meth:`sessionkeeper_store_many` on ``redis.asyncio``."""
        return self._arun("store", True, self._store_many(sessions))

    @hookimpl
    def sessionkeeper_touch(self, session_id: str, last_accessed: int) -> Session | None:
        """Move ``last_accessed`` forward (never back) and refresh the TTL, atomically; ``None``
        when the session is gone (it is never recreated)."""
        client = self._writer("touch a session")
        return run(client, self._writes, self._touch(session_id, last_accessed))

    @hookimpl
    def sessionkeeper_async_touch(
        self, session_id: str, last_accessed: int
    ) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_touch` on ``redis.asyncio``."""
        return self._arun("touch a session", True, self._touch(session_id, last_accessed))

    @hookimpl
    def sessionkeeper_delete(self, session_id: str) -> bool:
        """Remove the session and its index entries; ``False`` when there was none."""
        return run(self._writer("delete a session"), self._writes, self._delete(session_id))

    @hookimpl
    def sessionkeeper_async_delete(self, session_id: str) -> Awaitable[bool]:
        """:meth:`sessionkeeper_delete` on ``redis.asyncio``."""
        return self._arun("delete a session", True, self._delete(session_id))

    # -- atomic operations and owners (issue 14) ------------------------------------------------

    @hookimpl
    def sessionkeeper_store_if(self, session: Session, if_version: int | None, now: int) -> Session:
        """Store ``session`` if the live stored version is ``if_version`` (``None``: whatever
        it is), with that version + 1; return it as stored. One script: the check and the write
        are one step on the server, so concurrent writers of one id are serialised there."""
        steps = self._store_if(session, if_version, now)
        return run(self._writer("store"), self._writes, steps)

    @hookimpl
    def sessionkeeper_async_store_if(
        self, session: Session, if_version: int | None, now: int
    ) -> Awaitable[Session]:
        """:meth:`sessionkeeper_store_if` on ``redis.asyncio``."""
        return self._arun("store", True, self._store_if(session, if_version, now))

    @hookimpl
    def sessionkeeper_take(self, session_id: str, now: int) -> Session | None:
        """Remove the session and return it if it was live at ``now``: one script, so of
        concurrent takes (and deletes, rotations) of one id at most one gets it."""
        return run(self._writer("take a session"), self._writes, self._take(session_id, now))

    @hookimpl
    def sessionkeeper_async_take(self, session_id: str, now: int) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_take` on ``redis.asyncio``."""
        return self._arun("take a session", True, self._take(session_id, now))

    @hookimpl
    def sessionkeeper_rotate(self, session_id: str, new_id: str, now: int) -> Session | None:
        """Move the live session to ``new_id`` (version + 1, ``last_accessed`` now) and remove
        the old id, in one script: no reader sees both ids, nor neither."""
        steps = self._rotate(session_id, new_id, now)
        return run(self._writer("rotate a session"), self._writes, steps)

    @hookimpl
    def sessionkeeper_async_rotate(
        self, session_id: str, new_id: str, now: int
    ) -> Awaitable[Session | None]:
        """:meth:`sessionkeeper_rotate` on ``redis.asyncio``."""
        return self._arun("rotate a session", True, self._rotate(session_id, new_id, now))

    @hookimpl
    def sessionkeeper_list_owner(self, owner: str, now: int) -> list[str]:
        """The ids of ``owner``'s sessions live at ``now``: the owner's set, each id judged by
        its deadline entry, in one script (cost: what the owner holds)."""
        return run(self._reader("list sessions"), self._writes, self._list_owner(owner, now))

    @hookimpl
    def sessionkeeper_async_list_owner(self, owner: str, now: int) -> Awaitable[list[str]]:
        """:meth:`sessionkeeper_list_owner` on ``redis.asyncio``."""
        return self._arun("list sessions", False, self._list_owner(owner, now))

    @hookimpl
    def sessionkeeper_count_owner(self, owner: str, now: int) -> int:
        """How many of ``owner``'s sessions are live at ``now`` (cost: what the owner holds)."""
        return run(self._reader("count sessions"), self._writes, self._count_owner(owner, now))

    @hookimpl
    def sessionkeeper_async_count_owner(self, owner: str, now: int) -> Awaitable[int]:
        """:meth:`sessionkeeper_count_owner` on ``redis.asyncio``."""
        return self._arun("count sessions", False, self._count_owner(owner, now))

    @hookimpl
    def sessionkeeper_delete_owner(self, owner: str) -> int:
        """Delete every session of ``owner``, expired ones included; return how many.

        A script takes up to ``OWNER_PAGE`` ids out of the owner's set and deletes their
        sessions, each whole; the calls repeat until one finds less than a page. A session of
        ``owner`` stored before this call began is in the set, so it is deleted; one stored
        after the last call is kept.
        """
        client = self._writer("delete an owner's sessions")
        return run(client, self._writes, self._delete_owner(owner))

    @hookimpl
    def sessionkeeper_async_delete_owner(self, owner: str) -> Awaitable[int]:
        """:meth:`sessionkeeper_delete_owner` on ``redis.asyncio``."""
        return self._arun("delete an owner's sessions", True, self._delete_owner(owner))

    @hookimpl
    def sessionkeeper_list(self, now: int) -> list[str]:
        """The ids live at ``now``, read from the id index a page per round trip."""
        return run(self._reader("list sessions"), self._writes, self._list(now))

    @hookimpl
    def sessionkeeper_async_list(self, now: int) -> Awaitable[list[str]]:
        """:meth:`sessionkeeper_list` on ``redis.asyncio``."""
        return self._arun("list sessions", False, self._list(now))

    @hookimpl
    def sessionkeeper_count(self, now: int) -> int:
        """Sessions stored less those past their deadline at ``now``: two index lookups."""
        return run(self._reader("count sessions"), self._writes, self._count(now))

    @hookimpl
    def sessionkeeper_async_count(self, now: int) -> Awaitable[int]:
        """:meth:`sessionkeeper_count` on ``redis.asyncio``."""
        return self._arun("count sessions", False, self._count(now))

    @hookimpl
    def sessionkeeper_cleanup_expired(self, now: int) -> int:
        """Remove the sessions whose deadline is before ``now``; return how many (see
        :meth:`_cleanup_expired`)."""
        client = self._writer("clean up expired sessions")
        return run(client, self._writes, self._cleanup_expired(now))

    @hookimpl
    def sessionkeeper_async_cleanup_expired(self, now: int) -> Awaitable[int]:
        """:meth:`sessionkeeper_cleanup_expired` on ``redis.asyncio``."""
        return self._arun("clean up expired sessions", True, self._cleanup_expired(now))

    @hookimpl
    def sessionkeeper_iter_sessions(self) -> Iterator[Session]:
        """Every stored session, expired ones included, in id order, a page per round trip."""
        client = self._reader("read sessions")

        def generate() -> Iterator[Session]:
            start: bytes | str = "-"
            while True:
                try:
                    page = client.execute_command(
                        "ZRANGEBYLEX", self._ids_key, start, "+", "LIMIT", 0, PAGE_SIZE
                    )
                    if not page:
                        return
                    ids = self._ids(self._ids_key, page)
                    keys = [self._prefix + session_id for session_id in ids]
                    records = client.execute_command("MGET", *keys)
                except REDIS_ERRORS as exc:
                    raise self._failed("iter_sessions", exc) from exc
                for key, record in zip(keys, records, strict=True):
                    if record is not None:  # deleted or dropped by Redis since it was listed
                        yield self._decode(key, record)
                if len(page) < PAGE_SIZE:
                    return
                start = b"(" + page[-1]

        return generate()

    @hookimpl
    def sessionkeeper_identity(self) -> str | None:
        """``redis:run_id=<run id>,db=<n>,table=<table_name>``, as the server names itself.

        The run id is the one of the server that holds the table's keys (``INFO server``): the
        server named by ``url``, the primary Sentinel found, or on a Cluster the primary serving
        the table's slot. So ``redis://127.0.0.1:6379/0``, ``redis://localhost:6379``, a
        Sentinel config and a Cluster config that reach one server and table say the same, and
        two servers never do. A run id lasts as long as the server process: the identity names
        the store while it runs (what ``migrate`` compares), not across a restart.
        """
        client = self._reader("tell which store it is")
        try:
            if self.options.cluster is not None:
                node = client.get_node_from_key(self._ids_key)
                info = client.info("server", target_nodes=node)
                db = 0
            else:
                info = client.info("server")
                db = int(client.connection_pool.connection_kwargs.get("db") or 0)
        except REDIS_ERRORS as exc:
            raise self._failed("identity", exc) from exc
        run_id = info.get("run_id") if isinstance(info, dict) else None
        if run_id is None or run_id == "":
            return None
        if isinstance(run_id, int):  # redis-py parsed a run id of 40 decimal digits as a number
            run_id = str(run_id).zfill(40)
        return f"redis:run_id={run_id},db={db},table={self.options.table_name}"

    @hookimpl
    def sessionkeeper_stats(self) -> dict[str, Any]:
        """``server``, ``mode``, ``table_name``, ``stored`` (expired included), ``expiring``
        (sessions with a timeout), ``wait_replicas``, and what cleanups removed:
        ``cleanup_removed`` (deleted by this backend) and ``cleanup_dropped_by_redis`` (already
        dropped by Redis's TTL; only their index entries were left)."""
        client = self._reader("read statistics")
        try:
            pipe = client.pipeline(transaction=False)
            pipe.execute_command("ZCARD", self._ids_key)
            pipe.execute_command("ZCARD", self._exp_key)
            stored, expiring = pipe.execute()
            pipe.reset()
        except REDIS_ERRORS as exc:
            raise self._failed("stats", exc) from exc
        return {
            "server": self.server,
            "mode": self.options.mode,
            "table_name": self.options.table_name,
            "stored": int(stored),
            "expiring": int(expiring),
            "wait_replicas": self.options.wait_replicas,
            "cleanup_removed": self._removed,
            "cleanup_dropped_by_redis": self._dropped_by_redis,
        }

    @hookimpl
    def sessionkeeper_check(self, repair: bool) -> dict[str, Any]:
        """``sessionkeeper check``: every record decodes under its own id and both indexes
        agree with the keys; with ``repair``, damaged records are renamed to
        ``{table_name}:quarantine:<id>`` and the indexes are fixed (see
        :mod:`sessionkeeper_redis._check`). Connects for the check alone."""
        client = self._connect()
        try:
            client.ping()
            scan_options: dict[str, Any] = {}
            if self.options.cluster is not None:
                scan_options["target_nodes"] = client.get_node_from_key(self._ids_key)
            report = check_table(
                client, self.options.table_name, repair=repair, scan_options=scan_options
            )
        except REDIS_ERRORS as exc:
            raise self._failed("check", exc) from exc
        finally:
            self._close_client(client)
        report["server"] = self.server
        report["table_name"] = self.options.table_name
        return report


async def _aclose(client: Any, sentinel: Any) -> None:
    """Close a ``redis.asyncio`` client, its pool and its Sentinel connections."""
    try:
        await client.aclose()
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            await pool.disconnect()
    finally:
        if sentinel is not None:
            for node in sentinel.sentinels:
                await node.aclose()
