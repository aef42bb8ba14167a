"""The admin protocol: what the CLI asks a running node over its admin socket, and the answers.

The same shape as the peers' protocol (:mod:`._messages`): one frozen attrs class per kind,
``[kind, body]`` on the wire with ``body`` the msgpack array of the wire fields, each field
checked as it is decoded. The kinds live in their own registry, :data:`ADMIN_KINDS`: a peer
cannot send an admin request to a node's peer socket, nor the admin client a peer message to
the admin socket. Every request carries ``req``, echoed by its answer (or by :class:`Failure`).

===================  ==================================================================
request              answer
===================  ==================================================================
:class:`Hello`       :class:`Welcome` (protocol version, node id, cluster identity)
:class:`AskStats`    :class:`Figures` (the node's ``stats``)
:class:`Count`       :class:`Number` (live sessions at ``now``, or one owner's)
:class:`Get`         :class:`Found` (one session, expired or not, or nothing)
:class:`Open`        :class:`IdsPage` / :class:`SessionsPage` (the first page of a cursor)
:class:`Next`        the next page of that cursor
===================  ==================================================================

Any request can be answered by :class:`Failure` (the node could not serve it: it says why).
Pages are bounded (:data:`IDS_PER_PAGE`, :data:`SESSIONS_PER_PAGE`, :data:`PAGE_BYTES`), so
no answer grows with the store; a listing or an export of a large store is many pages.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Final, Self

import attrs

from sessionkeeper import InvalidSession, Session, validate_id
from sessionkeeper.backend import CodecError, decode_session

from ._messages import Message, decode, wire
from ._wire import WireError, as_bool, as_bytes, as_int, as_list, as_str

__all__ = [
    "ADMIN_KINDS",
    "IDS_PER_PAGE",
    "PAGE_BYTES",
    "PROTOCOL",
    "SESSIONS_PER_PAGE",
    "AskStats",
    "Count",
    "Failure",
    "Figures",
    "Found",
    "Get",
    "Hello",
    "IdsPage",
    "Next",
    "Number",
    "Open",
    "SessionsPage",
    "decode_admin",
]

#: The admin protocol's version: a client and a node of different versions refuse each other.
PROTOCOL: Final = 1
#: kind -> its admin message class.
ADMIN_KINDS: Final[dict[bytes, type[Message]]] = {}
#: Ids per page of a listing.
IDS_PER_PAGE: Final = 10_000
#: Sessions per page of an export, at most (and at most :data:`PAGE_BYTES` of them).
SESSIONS_PER_PAGE: Final = 1_000
PAGE_BYTES: Final = 8 * 1024 * 1024
#: What a cursor lists: live ids (``list``) or every stored session (``iter_sessions``).
OPEN_WHAT: Final = ("ids", "sessions")
_MAX_DEPTH: Final = 8


def _count(value: object, what: str, nodes: Collection[str]) -> int:
    return as_int(value, what)


def _text(value: object, what: str, nodes: Collection[str]) -> str:
    return as_str(value, what)


def _message(value: object, what: str, nodes: Collection[str]) -> str:
    if type(value) is not str or len(value) > 2_000:
        raise WireError(f"{what} must be a string of at most 2000 characters")
    return value


def _flag(value: object, what: str, nodes: Collection[str]) -> bool:
    return as_bool(value, what)


def _owner(value: object, what: str, nodes: Collection[str]) -> str | None:
    if value is None:
        return None
    owner = as_str(value, what)
    if len(owner.encode()) > 256 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in owner):
        raise WireError(f"{what} is not a valid owner")
    return owner


def _key(value: object, what: str, nodes: Collection[str]) -> str:
    try:
        return validate_id(value)
    except InvalidSession as exc:
        raise WireError(f"{what}: {exc}") from None


def _what(value: object, what: str, nodes: Collection[str]) -> str:
    if value not in OPEN_WHAT:
        raise WireError(f"{what} must be one of {', '.join(OPEN_WHAT)}")
    return str(value)


def _plain(value: object, depth: int = 0) -> None:
    """Raise unless ``value`` is JSON-compatible (what ``stats`` returns), nested at most
    :data:`_MAX_DEPTH` deep."""
    if value is None or type(value) in (bool, int, float, str):
        return
    if depth >= _MAX_DEPTH:
        raise WireError("figures nest too deep")
    if type(value) is list:
        for item in value:
            _plain(item, depth + 1)
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise WireError("figures keys must be strings")
            _plain(item, depth + 1)
        return
    raise WireError(f"figures hold a {type(value).__name__}, which JSON cannot")


def _figures(value: object, what: str, nodes: Collection[str]) -> dict[str, Any]:
    if type(value) is not dict:
        raise WireError(f"{what} must be a map")
    _plain(value)
    return value


def _ids(value: object, what: str, nodes: Collection[str]) -> list[str]:
    ids = as_list(value, what)
    if len(ids) > IDS_PER_PAGE:
        raise WireError(f"{what} holds more than {IDS_PER_PAGE} ids")
    return [_key(item, what, nodes) for item in ids]


def _session(blob: object, what: str) -> Session:
    try:
        return decode_session(as_bytes(blob, what))
    except CodecError as exc:
        raise WireError(f"{what}: {exc}") from None


# -- requests -----------------------------------------------------------------------------------


class _Req(Message):
    """What every admin message carries first: the request's id."""

    req: int = wire(_count)


class Hello(_Req, kind=b"A.HELLO", registry=ADMIN_KINDS):
    """The client's first request: which protocol it speaks."""

    version: int = wire(_count)


class AskStats(_Req, kind=b"A.STATS", registry=ADMIN_KINDS):
    """The node's ``stats``."""


class Count(_Req, kind=b"A.COUNT", registry=ADMIN_KINDS):
    """How many sessions are live at ``now`` (the client's clock, ms), or ``owner``'s."""

    now: int = wire(_count)
    owner: str | None = wire(_owner)


class Get(_Req, kind=b"A.GET", registry=ADMIN_KINDS):
    """The session stored under ``key``, expired or not."""

    key: str = wire(_key)


class Open(_Req, kind=b"A.OPEN", registry=ADMIN_KINDS):
    """Open a cursor: ``"ids"`` live at ``now`` (of ``owner``, if given) or every stored
    ``"sessions"`` (a snapshot taken now); the answer is its first page."""

    what: str = wire(_what)
    now: int = wire(_count)
    owner: str | None = wire(_owner)


class Next(_Req, kind=b"A.NEXT", registry=ADMIN_KINDS):
    """The next page of cursor ``cursor``."""

    cursor: int = wire(_count)


# -- answers ------------------------------------------------------------------------------------


class Welcome(_Req, kind=b"A.WELCOME", registry=ADMIN_KINDS):
    """The answer to :class:`Hello`: the node's protocol version and who it is."""

    version: int = wire(_count)
    node: str = wire(_text)
    identity: str = wire(_text)
    ready: bool = wire(_flag)


class Figures(_Req, kind=b"A.FIGURES", registry=ADMIN_KINDS):
    """The node's ``stats`` (a JSON-compatible map)."""

    figures: dict[str, Any] = wire(_figures)


class Number(_Req, kind=b"A.NUMBER", registry=ADMIN_KINDS):
    """The answer to :class:`Count`."""

    n: int = wire(_count)


class Found(_Req, kind=b"A.FOUND", registry=ADMIN_KINDS):
    """The answer to :class:`Get`: the session's encoded form, or nil."""

    blob: bytes | None = wire(lambda value, what, nodes: None if value is None else value)
    #: Not on the wire: the session, decoded and checked by :meth:`decode`.
    session: Session | None = attrs.field(default=None, eq=False)

    @classmethod
    def decode(cls, body: object, nodes: Collection[str]) -> Self:
        req, blob = as_list(body, "A.FOUND", 2)
        session = None if blob is None else _session(blob, "A.FOUND session")
        return cls(as_int(req, "A.FOUND req"), blob, session)


class IdsPage(_Req, kind=b"A.IDS", registry=ADMIN_KINDS):
    """A page of ids; ``done`` on the last (the cursor is then closed)."""

    cursor: int = wire(_count)
    ids: list[str] = wire(_ids)
    done: bool = wire(_flag)


class SessionsPage(_Req, kind=b"A.SESSIONS", registry=ADMIN_KINDS):
    """A page of sessions, each in its encoded form; ``done`` on the last."""

    cursor: int = wire(_count)
    blobs: Sequence[bytes] = wire(lambda value, what, nodes: value)
    done: bool = wire(_flag)
    #: Not on the wire: the sessions, decoded and checked by :meth:`decode`.
    sessions: Sequence[Session] = attrs.field(factory=list, eq=False)

    @classmethod
    def decode(cls, body: object, nodes: Collection[str]) -> Self:
        req, cursor, blobs, done = as_list(body, "A.SESSIONS", 4)
        items = as_list(blobs, "A.SESSIONS sessions")
        if len(items) > SESSIONS_PER_PAGE:
            raise WireError(f"A.SESSIONS holds more than {SESSIONS_PER_PAGE} sessions")
        sessions = [_session(blob, "A.SESSIONS session") for blob in items]
        return cls(
            as_int(req, "A.SESSIONS req"),
            as_int(cursor, "A.SESSIONS cursor"),
            items,
            as_bool(done, "A.SESSIONS done"),
            sessions,
        )


class Failure(_Req, kind=b"A.FAILURE", registry=ADMIN_KINDS):
    """The node could not serve request ``req``: why."""

    message: str = wire(_message)


#: The requests a node serves, and the answers a client accepts.
REQUESTS: Final = frozenset((Hello, AskStats, Count, Get, Open, Next))
ANSWERS: Final = frozenset((Welcome, Figures, Number, Found, IdsPage, SessionsPage, Failure))


def decode_admin(kind: bytes, body: bytes) -> Message:
    """Check one admin message; return it or raise :class:`~._wire.WireError`."""
    return decode(kind, body, (), ADMIN_KINDS)
