"""The messages between nodes: one frozen attrs class per kind, decoded from the wire, checked.

A message travels as ``[kind, body]`` (:mod:`._wire`): ``kind`` is its class's
:attr:`~Message.KIND`, ``body`` the msgpack array of its wire fields in declaration order. Each
field is declared with :func:`wire` and the check its value must pass, so a class is the whole
schema of its kind: :meth:`Message.decode` checks a body field by field and builds the
instance, and :meth:`Message.to_wire` gives the body back. :func:`decode` picks the class by
kind (from :data:`KINDS`). The node dispatches on the class (see :mod:`._node`). Kinds of one
shape share a base class that declares its fields (:class:`_Entries`, :class:`_Keys`,
:class:`_Credit`).

Requests go DEALER -> ROUTER (the peer that sent it is known by its routing id), replies come
back ROUTER -> DEALER on the same connection:

========================  =========================================================
request                   reply
========================  =========================================================
:class:`Ping`             :class:`Pong` (liveness, stream positions, digest root)
:class:`Repl`             :class:`Ack` (cumulative, highest contiguous seq applied)
:class:`Delta`            :class:`DeltaOk` / :class:`DeltaNo` (resend from the backlog)
:class:`Sync`             :class:`Chunk`... then :class:`End` (snapshot under credit)
:class:`Credit`           more :class:`Chunk` of a snapshot
:class:`Digest`           :class:`DigestKeys` (anti-entropy: buckets, then summaries)
:class:`Pull`             :class:`Push` (the entries anti-entropy asked for)
:class:`Read`             :class:`ReadReply` (a local miss while catching up)
:class:`Push`             none: entries a peer found newer than ours
:class:`NeedSync`         none: "my backlog no longer reaches your position"
:class:`Bye`              none: a graceful leave
========================  =========================================================

Messages that carry entries (:class:`Repl`, :class:`Chunk`, :class:`Push`,
:class:`ReadReply`) hold them as sent (:data:`~._replica.Entry` tuples) and, once decoded, the
session each one carries in :attr:`sessions` (checked against its entry; not a wire field).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final, Self, cast, dataclass_transform

import attrs

from sessionkeeper import Session

from ._replica import BUCKETS, Entry
from ._wire import (
    Checked,
    Summary,
    WireError,
    as_bool,
    as_bytes,
    as_int,
    as_list,
    as_node,
    check_entries,
    check_entry,
    check_keys,
    check_seen,
    check_summaries,
    unpack,
)

__all__ = [
    "KINDS",
    "Ack",
    "Bye",
    "Chunk",
    "Credit",
    "Delta",
    "DeltaNo",
    "DeltaOk",
    "Digest",
    "DigestKeys",
    "End",
    "Message",
    "NeedSync",
    "Ping",
    "Pong",
    "Pull",
    "Push",
    "Read",
    "ReadReply",
    "Repl",
    "Sync",
    "decode",
]

#: A field's check: ``(value, what, node ids) -> the value, typed``; raises WireError.
Check = Callable[[object, str, Collection[str]], Any]
_CHECK: Final = "sessionkeeper_zmq.check"


def wire(check: Check) -> Any:
    """A wire field checked by ``check`` when decoded (declaration order is wire order)."""
    return attrs.field(metadata={_CHECK: check})


def _count(value: object, what: str, nodes: Collection[str]) -> int:
    return as_int(value, what)


def _node(value: object, what: str, nodes: Collection[str]) -> str:
    return as_node(value, what, nodes)


def _flag(value: object, what: str, nodes: Collection[str]) -> bool:
    return as_bool(value, what)


def _root(value: object, what: str, nodes: Collection[str]) -> bytes:
    return as_bytes(value, what, 16)


def _keys(value: object, what: str, nodes: Collection[str]) -> list[str]:
    return check_keys(value)


def _seen(value: object, what: str, nodes: Collection[str]) -> dict[str, tuple[int, int]]:
    return check_seen(value, nodes)


def _summaries(value: object, what: str, nodes: Collection[str]) -> list[Summary]:
    return check_summaries(value, nodes)


def _hashes(value: object, what: str, nodes: Collection[str]) -> list[int]:
    hashes = as_list(value, "bucket hashes", BUCKETS)
    for h in hashes:
        if type(h) is not int or not 0 <= h < 2**64:
            raise WireError("bucket hashes must be 64-bit unsigned ints")
    return hashes


def _entries(value: object, what: str, nodes: Collection[str]) -> list[Entry]:
    return [entry for entry, _session in check_entries(value, nodes)]


def _checked_ops(value: object, nodes: Collection[str]) -> list[tuple[int, Checked]]:
    result = []
    for op in as_list(value, "REPL ops"):
        seq, item = as_list(op, "REPL op", 2)
        result.append((as_int(seq, "REPL op seq", 1), check_entry(item, nodes)))
    return result


def _ops(value: object, what: str, nodes: Collection[str]) -> list[tuple[int, Entry]]:
    return [(seq, entry) for seq, (entry, _session) in _checked_ops(value, nodes)]


def _buckets(value: object, what: str, nodes: Collection[str]) -> list[int]:
    buckets = [as_int(x, "bucket") for x in as_list(value, "buckets")]
    if any(x >= BUCKETS for x in buckets):
        raise WireError("bucket out of range")
    return buckets


@dataclass_transform(frozen_default=True, field_specifiers=(attrs.field, wire))
class Message:
    """What every message class has: its kind, its wire fields, decoding and encoding.

    A subclass is made a frozen attrs class as it is defined; given ``kind`` (``class
    Ack(Message, kind=b"ACK")``) it is the message of that kind, registered in :data:`KINDS`
    (or in ``registry``: the admin protocol's kinds are not the peers', see
    :mod:`._admin_messages`), and its wire fields are the ones declared with :func:`wire`
    (inherited ones first). Without, it is a shape that several kinds share.
    """

    #: The first frame of the message.
    KIND: ClassVar[bytes]
    #: ``(name, check)`` of each wire field, in wire order.
    WIRE: ClassVar[tuple[tuple[str, Check], ...]]

    def __init_subclass__(
        cls,
        kind: bytes | None = None,
        registry: dict[bytes, type[Message]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        # Not slotted: attrs then patches this very class (a slotted one would be a copy).
        attrs.frozen(cls, slots=False)
        cls.WIRE = tuple(
            (field.name, field.metadata[_CHECK])
            for field in attrs.fields(cast(Any, cls))
            if _CHECK in field.metadata
        )
        if kind is not None:
            cls.KIND = kind
            (KINDS if registry is None else registry)[kind] = cls

    @classmethod
    def decode(cls, body: object, nodes: Collection[str]) -> Self:
        """Check an unpacked body field by field; raise :class:`WireError` on any fault."""
        name = cls.KIND.decode()
        values = as_list(body, name, len(cls.WIRE))
        return cls(
            *[
                check(value, f"{name} {field}", nodes)
                for (field, check), value in zip(cls.WIRE, values, strict=True)
            ]
        )

    def to_wire(self) -> list[Any]:
        """The body: the wire fields' values in order (msgpack packs tuples as arrays)."""
        return [getattr(self, field) for field, _check in self.WIRE]


#: kind -> its message class.
KINDS: Final[dict[bytes, type[Message]]] = {}


# -- shapes shared by several kinds -------------------------------------------------------------


class _Request(Message):
    """What a request carries first, and its answer too: the request's id."""

    req: int = wire(_count)


class _Entries(_Request):
    """``req`` and entries; once decoded, the session each carries in :attr:`sessions`."""

    entries: Sequence[Entry] = wire(_entries)
    #: Not on the wire: filled by :meth:`decode`, the session of each entry (checked).
    sessions: Sequence[Session | None] = attrs.field(factory=list, eq=False)

    @classmethod
    def decode(cls, body: object, nodes: Collection[str]) -> Self:
        name = cls.KIND.decode()
        req, raw = as_list(body, name, 2)
        checked = check_entries(raw, nodes)
        return cls(
            as_int(req, f"{name} req"),
            [entry for entry, _session in checked],
            [session for _entry, session in checked],
        )

    def pairs(self) -> Iterator[Checked]:
        """``(entry, session)`` of each entry received."""
        return zip(self.entries, self.sessions, strict=True)


class _Keys(_Request):
    """``req`` and the keys asked for."""

    keys: list[str] = wire(_keys)


class _Credit(_Request):
    """``req`` and how many chunks of snapshot ``req`` may be sent ahead."""

    credit: int = wire(_count)


# -- liveness -----------------------------------------------------------------------------------


class _Sender(Message):
    """Who the sender is: its node id and incarnation."""

    node: str = wire(_node)
    inc: int = wire(_count)


class _Heartbeat(_Sender):
    """Who the sender is, and how far its stream and its clock go."""

    #: The last seq of the sender's stream.
    seq: int = wire(_count)
    hlc: int = wire(_count)


class Ping(_Heartbeat, kind=b"PING"):
    """Every ``heartbeat_ms`` to every peer: who I am and how far my stream goes."""

    #: The digest of the sender's whole replica.
    root: bytes = wire(_root)
    ready: bool = wire(_flag)
    #: The sender hears another node besides the receiver (see :mod:`._isolation`).
    accompanied: bool = wire(_flag)


class Pong(_Heartbeat, kind=b"PONG"):
    """The answer to :class:`Ping`: how far the answerer holds the pinger's stream
    (``acked_inc``, ``acked``), then what a :class:`Ping` tells."""

    acked_inc: int = wire(_count)
    acked: int = wire(_count)
    root: bytes = wire(_root)
    ready: bool = wire(_flag)
    accompanied: bool = wire(_flag)


class Bye(_Sender, kind=b"BYE"):
    """A graceful leave: mark the node down now."""


# -- the replication stream ---------------------------------------------------------------------


class Repl(Message, kind=b"REPL"):
    """A batch of the sender's own operations: ``(seq, entry)`` each."""

    origin: str = wire(_node)
    inc: int = wire(_count)
    ops: Sequence[tuple[int, Entry]] = wire(_ops)
    #: Not on the wire: filled by :meth:`decode`, the session of each op's entry.
    sessions: Sequence[Session | None] = attrs.field(factory=list, eq=False)

    @classmethod
    def decode(cls, body: object, nodes: Collection[str]) -> Self:
        origin, inc, raw = as_list(body, "REPL", 3)
        checked = _checked_ops(raw, nodes)
        return cls(
            as_node(origin, "REPL origin", nodes),
            as_int(inc, "REPL inc"),
            [(seq, entry) for seq, (entry, _session) in checked],
            [session for _seq, (_entry, session) in checked],
        )


class Ack(Message, kind=b"ACK"):
    """Cumulative: the receiver holds the sender's stream ``inc`` up to ``seq``."""

    inc: int = wire(_count)
    seq: int = wire(_count)


class NeedSync(Message, kind=b"NEEDSYNC"):
    """The sender's backlog no longer reaches where the receiver (incarnation ``inc``) is."""

    inc: int = wire(_count)


# -- catch-up: delta and snapshot ---------------------------------------------------------------


class Delta(_Request, kind=b"DELTA"):
    """A restarted disc node holds the receiver's stream up to ``(inc, seq)``: resend."""

    inc: int = wire(_count)
    seq: int = wire(_count)


class DeltaOk(_Request, kind=b"DELTAOK"):
    """The backlog reaches: the resend runs up to at least ``top``."""

    top: int = wire(_count)


class DeltaNo(_Request, kind=b"DELTANO"):
    """The backlog does not reach (or another incarnation): take a snapshot."""


class Sync(_Credit, kind=b"SYNC"):
    """Send me a snapshot, ``credit`` chunks ahead."""


class Credit(_Credit, kind=b"CREDIT"):
    """``credit`` more chunks of snapshot ``req``."""


class Chunk(_Entries, kind=b"CHUNK"):
    """Entries of snapshot ``req``."""


class End(_Request, kind=b"END"):
    """The end of snapshot ``req``: ``total`` entries, and the stream positions they hold."""

    total: int = wire(_count)
    #: origin -> ``(inc, seq)``.
    seen: Mapping[str, Sequence[int]] = wire(_seen)


# -- anti-entropy and remote reads --------------------------------------------------------------


class Digest(_Request, kind=b"AE"):
    """An anti-entropy round: the sender's 256 bucket hashes."""

    hashes: list[int] = wire(_hashes)


class DigestKeys(_Request, kind=b"AEKEYS"):
    """The buckets that differ, and the summaries of the answerer's entries in them."""

    buckets: list[int] = wire(_buckets)
    summaries: list[Summary] = wire(_summaries)


class Pull(_Keys, kind=b"PULL"):
    """Send me these entries (anti-entropy)."""


class Read(_Keys, kind=b"READ"):
    """Send me these entries (a local miss while catching up)."""


class Push(_Entries, kind=b"PUSH"):
    """Entries: the answer to :class:`Pull`, or a request (newer ones the sender found)."""


class ReadReply(_Entries, kind=b"RREP"):
    """The answer to :class:`Read`."""


def decode(
    kind: bytes,
    body: bytes,
    nodes: Collection[str],
    registry: Mapping[bytes, type[Message]] = KINDS,
) -> Message:
    """Check one message of a kind in ``registry`` (the peers' by default); return it or
    raise :class:`WireError`."""
    cls = registry.get(kind)
    if cls is None:
        raise WireError(f"unknown message kind {kind[:16]!r}")
    try:
        return cls.decode(unpack(body), nodes)
    except WireError:
        raise
    except (ValueError, TypeError) as exc:  # wrong arity when unpacking a list
        raise WireError(f"malformed {kind.decode()} message: {exc}") from None
