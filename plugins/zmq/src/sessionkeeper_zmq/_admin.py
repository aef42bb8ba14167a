"""The admin socket: how ``sessionkeeper list/show/stats/export/backup`` read a running node.

A node serves its replica to local tools on a Unix socket (ZeroMQ ``ipc://``), in a directory
only its user may enter: the file system is the authentication, as for PostgreSQL's or
Docker's local sockets. No key to hand out, no port to open, nothing reachable from another
machine. The CLI opens a zmq store read-only (``BackendContext.read_only``); the backend then
runs no node but an :class:`AdminClient` connected to the socket of the member its
configuration names (``node_id``), and serves the read hooks from it.

Where the socket is (:func:`admin_socket_path`): ``admin_socket`` when set (relative to the
config file); else ``DATA_DIR/admin.sock`` for a ``disc_copies`` node; else
``TMPDIR/sessionkeeper-UID/NODE-HASH.sock``, the hash taken over the cluster's identity and
the node's endpoint (two clusters on one host never share a name). The directory is created
mode 0700 and must be the user's own and closed to everyone else, or the node serves no admin
socket (and logs why).

:class:`AdminServer` is a thread of the node with its own socket, so a long listing never
delays the node's heartbeats. Listings and exports go by cursor, page by page, over snapshots
taken when the cursor opens; a few cursors at a time, each dropped after a minute unused.
The messages are in :mod:`._admin_messages`.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import attrs
import zmq

from sessionkeeper import Session, StorageError
from sessionkeeper.backend import encode_session

from . import _admin_messages as am
from ._messages import Message
from ._options import ZmqOptions, cluster_identity
from ._wire import MAX_MESSAGE, WireError, pack

if TYPE_CHECKING:
    from ._backend import ZmqBackend

__all__ = ["AdminClient", "AdminServer", "admin_socket_path", "private_directory_problem"]

log = logging.getLogger("sessionkeeper.zmq")

#: A Unix socket's path is at most this many bytes (``sun_path`` less its NUL).
MAX_PATH: Final = 107
#: The largest request a node reads from its admin socket.
_MAX_REQUEST: Final = 64 * 1024
#: Open cursors per node, and how long an unused one is kept.
_MAX_CURSORS: Final = 32
_CURSOR_IDLE_S: Final = 60.0
#: How long the client waits for the node's welcome, and for any other answer.
HELLO_TIMEOUT_S: Final = 5.0
ANSWER_TIMEOUT_S: Final = 60.0
#: How long :meth:`AdminServer.stop` waits for its thread (which then closes its socket).
STOP_WAIT_S = 5.0
#: The client waits for an answer in slices this long, so that :meth:`AdminClient.close`
#: from another thread never waits long for a request in progress.
_POLL_SLICE_MS: Final = 100

A = TypeVar("A", bound=Message)


def admin_socket_path(options: ZmqOptions, resolve: Callable[[str], Path]) -> Path:
    """Where node ``options.node_id`` serves its admin socket (``resolve`` makes a configured
    path absolute against the config file's directory)."""
    if options.admin_socket:
        return resolve(options.admin_socket)
    if options.data_dir:
        return resolve(options.data_dir) / "admin.sock"
    text = f"{cluster_identity(options)}\0{options.me.endpoint}".encode()
    digest = hashlib.blake2b(text, digest_size=6).hexdigest()
    directory = Path(tempfile.gettempdir()) / f"sessionkeeper-{os.getuid()}"
    return directory / f"{options.node_id}-{digest}.sock"


def private_directory_problem(directory: Path) -> str | None:
    """What stops ``directory`` from holding an admin socket (``None``: nothing): it must be
    a directory of this user that nobody else may enter."""
    try:
        info = directory.lstat()
    except OSError as exc:
        return f"cannot use {directory}: {exc.strerror}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{directory} is not a directory"
    if info.st_uid != os.getuid():
        return f"{directory} belongs to another user (uid {info.st_uid})"
    if info.st_mode & 0o077:
        return (
            f"{directory} is open to other users (mode {stat.S_IMODE(info.st_mode):o}; chmod 700)"
        )
    return None


class _Cursor:
    """A listing or an export being paged through: its snapshot and how far it went."""

    __slots__ = ("items", "position", "touched", "what")

    def __init__(self, what: str, items: list[Any]) -> None:
        self.what = what
        self.items = items
        self.position = 0
        self.touched = time.monotonic()


class AdminServer:
    """The admin socket of a running node, served by a thread of its own.

    :param path: the socket's path (its directory is created mode 0700 if missing).
    :param backend: the node it serves (its replica, ``stats`` and identity).
    """

    def __init__(self, path: Path, backend: ZmqBackend) -> None:
        self.path = path
        self.backend = backend
        self.requests = 0
        self.refused = 0
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None
        self._inode = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cursors: dict[int, _Cursor] = {}
        self._ids = itertools.count(1)

    def start(self) -> None:
        """Bind the socket and start serving; raises :class:`OSError` or ``zmq.ZMQError``
        (with a message naming the path) when it cannot."""
        path = self.path
        if len(os.fsencode(path)) > MAX_PATH:
            raise OSError(f"the path {path} is longer than {MAX_PATH} bytes (set admin_socket)")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        problem = private_directory_problem(path.parent)
        if problem is not None:
            raise OSError(problem)
        if _answers(path):
            raise OSError(f"another process already serves {path}")
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, _MAX_REQUEST)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.bind(f"ipc://{path}")
        os.chmod(path, 0o600)
        self._inode = path.stat().st_ino
        self._sock = sock
        self._thread = threading.Thread(
            target=self._run, name=f"sessionkeeper-zmq-admin-{path.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and remove the socket's file (if it is still ours). The thread closes
        its socket as it ends; a thread still answering a request after :data:`STOP_WAIT_S`
        is left to end by itself (closing its socket under it would abort the process)."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            self._ctx.destroy(linger=0)  # never served: this thread owns the socket
        else:
            thread.join(timeout=STOP_WAIT_S)
            if thread.is_alive():
                log.warning(
                    "the admin socket thread of node %s did not stop within %.0f s; it closes "
                    "its socket when its current request is answered",
                    self.backend.options.node_id,
                    STOP_WAIT_S,
                )
        with contextlib.suppress(OSError):
            if self._inode and self.path.stat().st_ino == self._inode:
                self.path.unlink()

    def describe(self) -> dict[str, Any]:
        """For ``stats``: where it listens, requests served and refused, cursors open."""
        return {
            "socket": str(self.path),
            "requests": self.requests,
            "refused": self.refused,
            "cursors": len(self._cursors),
        }

    # -- the thread -------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """The socket is closed (the thread ended, or never ran)."""
        return bool(self._ctx.closed)

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        try:
            while not self._stop.is_set():
                try:
                    if not sock.poll(100):
                        self._expire()
                        continue
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.ZMQError:
                    continue
                self._serve(frames)
        finally:
            self._ctx.destroy(linger=0)  # the socket's one thread closes it

    def _serve(self, frames: list[bytes]) -> None:
        if len(frames) != 3:
            self.refused += 1
            return  # not a message of this protocol: nobody to answer
        ident, kind, body = frames
        try:
            request = am.decode_admin(kind, body)
            if type(request) not in am.REQUESTS:
                raise WireError(f"{kind.decode(errors='replace')} is not an admin request")
        except WireError as exc:
            self.refused += 1
            self._send(ident, am.Failure(0, f"refused: {exc}"))
            return
        self.requests += 1
        try:
            answer = self._answer(request)
        except Exception as exc:  # a bug or a closing node: say so rather than hang the client
            log.exception("the admin socket of node %s failed", self.backend.options.node_id)
            answer = am.Failure(getattr(request, "req", 0), f"{type(exc).__name__}: {exc}")
        self._send(ident, answer)

    def _send(self, ident: bytes, message: Message) -> None:
        assert self._sock is not None
        with contextlib.suppress(zmq.ZMQError):  # the client went away
            self._sock.send_multipart(
                [ident, message.KIND, pack(message.to_wire())], flags=zmq.NOBLOCK
            )

    def _answer(self, request: Message) -> Message:
        backend = self.backend
        replica = backend.replica
        if isinstance(request, am.Hello):
            if request.version != am.PROTOCOL:
                return am.Failure(
                    request.req,
                    f"admin protocol {request.version} asked, this node speaks {am.PROTOCOL} "
                    "(use the same sessionkeeper-zmq version as the node)",
                )
            identity = cluster_identity(backend.options)
            return am.Welcome(
                request.req, am.PROTOCOL, backend.options.node_id, identity, backend.ready
            )
        if isinstance(request, am.AskStats):
            return am.Figures(request.req, backend.sessionkeeper_stats())
        if isinstance(request, am.Count):
            table = replica.table
            if request.owner is None:
                return am.Number(request.req, table.count_live(request.now))
            return am.Number(request.req, table.count_owner(request.owner, request.now))
        if isinstance(request, am.Get):
            session = replica.sessions.get(request.key)
            blob = None if session is None else encode_session(session)
            return am.Found(request.req, blob)
        if isinstance(request, am.Open):
            return self._open(request)
        assert isinstance(request, am.Next)
        cursor = self._cursors.get(request.cursor)
        if cursor is None:
            return am.Failure(request.req, f"no open cursor {request.cursor} (idle too long?)")
        return self._page(request.req, request.cursor, cursor)

    def _open(self, request: am.Open) -> Message:
        table = self.backend.replica.table
        items: list[Any]
        if request.what == "sessions":
            items = table.snapshot()
        elif request.owner is None:
            items = table.list_live(request.now)
        else:
            items = table.list_owner(request.owner, request.now)
        if len(self._cursors) >= _MAX_CURSORS:  # the oldest unused goes
            oldest = min(self._cursors, key=lambda c: self._cursors[c].touched)
            del self._cursors[oldest]
        number = next(self._ids)
        cursor = self._cursors[number] = _Cursor(request.what, items)
        return self._page(request.req, number, cursor)

    def _page(self, req: int, number: int, cursor: _Cursor) -> Message:
        start = cursor.position
        items = cursor.items
        cursor.touched = time.monotonic()
        if cursor.what == "ids":
            page = items[start : start + am.IDS_PER_PAGE]
            cursor.position += len(page)
            done = cursor.position >= len(items)
            if done:
                del self._cursors[number]
            return am.IdsPage(req, number, page, done)
        blobs: list[bytes] = []
        size = 0
        for session in items[start : start + am.SESSIONS_PER_PAGE]:
            blob = encode_session(session)
            if blobs and size + len(blob) > am.PAGE_BYTES:
                break
            blobs.append(blob)
            size += len(blob)
        cursor.position += len(blobs)
        done = cursor.position >= len(items)
        if done:
            del self._cursors[number]
        return am.SessionsPage(req, number, blobs, done)

    def _expire(self) -> None:
        limit = time.monotonic() - _CURSOR_IDLE_S
        for number, cursor in list(self._cursors.items()):
            if cursor.touched < limit:
                del self._cursors[number]


def _answers(path: Path) -> bool:
    """True when a process accepts connections on the Unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.fsencode(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


class AdminClient:
    """The CLI's side: a connection to a running node's admin socket, one request at a time.

    :param path: the node's admin socket.
    :param options: the configuration the CLI was given (which node, which cluster).
    :param backend: the backend's name, for errors.
    """

    def __init__(self, path: Path, options: ZmqOptions, backend: str) -> None:
        self.path = path
        self.options = options
        self.backend = backend
        #: One request at a time, and the socket closed by the thread that holds it.
        self._lock = threading.Lock()
        #: Set by :meth:`close`: a request waiting for its answer gives up at its next slice.
        self._closing = False
        self._req = itertools.count(1)
        self._ctx: zmq.Context[Any] | None = None
        self._sock: zmq.Socket[bytes] | None = None
        self.welcome: am.Welcome | None = None

    def _unreachable(self, why: str) -> StorageError:
        node = self.options.node_id
        return StorageError(
            self.backend,
            f"no running node reachable: {why} (ipc://{self.path}, the admin socket of node "
            f"{node!r}). Start that node (`sessionkeeper node --config FILE` with this "
            f"configuration, or the application that runs as node {node!r}) on this host; "
            "list, show, stats, export and backup read a running cluster through it",
        )

    def connect(self) -> am.Welcome:
        """Connect and greet the node; raise :class:`~sessionkeeper.StorageError` naming the
        socket and what to start when no node answers there."""
        path = self.path
        if len(os.fsencode(path)) > MAX_PATH:
            raise self._unreachable(f"the path is longer than {MAX_PATH} bytes; set admin_socket")
        if not path.exists():
            raise self._unreachable("nothing listens there (no such socket)")
        if not os.access(path, os.R_OK | os.W_OK):
            raise StorageError(
                self.backend,
                f"not allowed to use ipc://{path} (the admin socket of node "
                f"{self.options.node_id!r}): run the command as the user that runs the node",
            )
        if not _answers(path):
            raise self._unreachable("nothing listens there (the node stopped or was killed)")
        self._closing = False
        self._ctx = zmq.Context()
        sock = self._sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        sock.connect(f"ipc://{path}")
        try:
            welcome = self.ask(am.Hello(0, am.PROTOCOL), am.Welcome, HELLO_TIMEOUT_S)
        except StorageError:
            self.close()
            raise
        expected = cluster_identity(self.options)
        if welcome.node != self.options.node_id or welcome.identity != expected:
            self.close()
            raise StorageError(
                self.backend,
                f"ipc://{path} is served by node {welcome.node!r} of cluster "
                f"{welcome.identity}, not node {self.options.node_id!r} of {expected} as this "
                "configuration says (is admin_socket shared by two configurations?)",
            )
        self.welcome = welcome
        return welcome

    def __enter__(self) -> AdminClient:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the connection (any thread: a request in progress on another gives up within
        a poll slice, and the socket is closed only once it has). Idempotent."""
        self._closing = True
        with self._lock:
            if self._ctx is not None:
                self._ctx.destroy(linger=0)
                self._ctx = None
                self._sock = None

    def ask(self, request: Message, answer: type[A], timeout_s: float = ANSWER_TIMEOUT_S) -> A:
        """Send ``request`` (its ``req`` replaced by a fresh one) and return the answer of
        type ``answer``; raise :class:`~sessionkeeper.StorageError` on a failure, a timeout or
        an answer that is not what was asked."""
        with self._lock:
            sock = self._sock
            if sock is None or self._closing:
                raise StorageError(self.backend, "the admin connection is closed")
            req = next(self._req)
            request = attrs.evolve(cast(Any, request), req=req)
            sock.send_multipart([request.KIND, pack(request.to_wire())])
            deadline = time.monotonic() + timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StorageError(
                        self.backend,
                        f"node {self.options.node_id!r} did not answer within {timeout_s:.0f} s "
                        f"on ipc://{self.path}",
                    )
                if not sock.poll(min(int(left * 1000) + 1, _POLL_SLICE_MS)):
                    if self._closing:
                        raise StorageError(self.backend, "the admin connection was closed")
                    continue
                frames = sock.recv_multipart()
                if len(frames) != 2:
                    continue
                try:
                    message = am.decode_admin(frames[0], frames[1])
                except WireError as exc:
                    raise StorageError(
                        self.backend, f"node {self.options.node_id!r} sent a bad answer: {exc}"
                    ) from None
                if getattr(message, "req", None) not in (req, 0):
                    continue  # the late answer of an earlier request that timed out
                if isinstance(message, am.Failure):
                    raise StorageError(
                        self.backend, f"node {self.options.node_id!r}: {message.message}"
                    )
                if not isinstance(message, answer):
                    raise StorageError(
                        self.backend,
                        f"node {self.options.node_id!r} answered {message.KIND.decode()} to "
                        f"{request.KIND.decode()}",
                    )
                return message

    # -- what the read hooks ask ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The node's ``stats``."""
        return self.ask(am.AskStats(0), am.Figures).figures

    def count(self, now: int, owner: str | None = None) -> int:
        """Live sessions at ``now`` (``owner``'s only, if given)."""
        return self.ask(am.Count(0, now, owner), am.Number).n

    def get(self, key: str) -> Session | None:
        """The session stored under ``key`` (expired or not), or ``None``."""
        return self.ask(am.Get(0, key), am.Found).session

    def ids(self, now: int, owner: str | None = None) -> list[str]:
        """Ids live at ``now`` (``owner``'s only, if given), every page."""
        page = self.ask(am.Open(0, "ids", now, owner), am.IdsPage)
        result = list(page.ids)
        while not page.done:
            page = self.ask(am.Next(0, page.cursor), am.IdsPage)
            result.extend(page.ids)
        return result

    def sessions(self) -> Iterator[Session]:
        """Every stored session (expired included), a page at a time, from a snapshot the
        node takes on the first page."""
        page = self.ask(am.Open(0, "sessions", 0, None), am.SessionsPage)
        yield from page.sessions
        while not page.done:
            page = self.ask(am.Next(0, page.cursor), am.SessionsPage)
            yield from page.sessions
