"""The typed messages between nodes and the agent's dispatch tables.

The wire layout is a contract between nodes of different versions in one cluster (a rolling
restart runs old and new side by side), so it is pinned here literally; every kind survives
encoding and decoding; every kind has a handler on the side it arrives on, and a kind that
arrives on the wrong side is refused as a bad frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from sessionkeeper import Session
from sessionkeeper.backend import encode_session
from sessionkeeper_zmq import _messages as msg
from sessionkeeper_zmq._catchup import Phase
from sessionkeeper_zmq._node import SERVES, Agent
from sessionkeeper_zmq._replica import Entry
from sessionkeeper_zmq._transport import Peer
from sessionkeeper_zmq._wire import WireError

NODES = frozenset("abc")

#: kind -> the names of its body's fields, in wire order (protocol: never reorder).
LAYOUT = {
    b"PING": ["node", "inc", "seq", "hlc", "root", "ready", "accompanied"],
    b"PONG": ["node", "inc", "seq", "hlc", "acked_inc", "acked", "root", "ready", "accompanied"],
    b"BYE": ["node", "inc"],
    b"REPL": ["origin", "inc", "ops"],
    b"ACK": ["inc", "seq"],
    b"NEEDSYNC": ["inc"],
    b"DELTA": ["req", "inc", "seq"],
    b"DELTAOK": ["req", "top"],
    b"DELTANO": ["req"],
    b"SYNC": ["req", "credit"],
    b"CREDIT": ["req", "credit"],
    b"CHUNK": ["req", "entries"],
    b"END": ["req", "total", "seen"],
    b"AE": ["req", "hashes"],
    b"AEKEYS": ["req", "buckets", "summaries"],
    b"PULL": ["req", "keys"],
    b"READ": ["req", "keys"],
    b"PUSH": ["req", "entries"],
    b"RREP": ["req", "entries"],
}


def live_entry(key: str) -> tuple[Entry, Session]:
    """An entry carrying a session, and that session."""
    session = Session(key, 1_000, 2_000, 60_000, {"user": key})
    return (key, 7 << 16, "b", 2_000, encode_session(session), 60_000), session


TOMB: Entry = ("gone", 9 << 16, "c", 3_000, None, None)


def examples() -> Iterator[msg.Message]:
    """One valid message of every kind."""
    entry, _ = live_entry("s1")
    root = bytes(range(16))
    yield msg.Ping("a", 5, 10, 11 << 16, root, True, False)
    yield msg.Pong("b", 6, 12, 13 << 16, 5, 10, root, False, True)
    yield msg.Bye("c", 7)
    yield msg.Repl("a", 5, [(1, entry), (2, TOMB)])
    yield msg.Ack(5, 2)
    yield msg.NeedSync(5)
    yield msg.Delta(1, 5, 3)
    yield msg.DeltaOk(1, 9)
    yield msg.DeltaNo(1)
    yield msg.Sync(2, 4)
    yield msg.Credit(2, 1)
    yield msg.Chunk(2, [entry, TOMB])
    yield msg.End(2, 2, {"a": (5, 2), "b": (6, 0)})
    yield msg.Digest(3, list(range(256)))
    yield msg.DigestKeys(3, [0, 255], [("s1", 7 << 16, "b", 2_000)])
    yield msg.Pull(4, ["s1", "gone"])
    yield msg.Read(5, ["s1"])
    yield msg.Push(4, [entry])
    yield msg.ReadReply(5, [TOMB])


def through_the_wire(message: msg.Message) -> msg.Message:
    """``message`` encoded as a node sends it and decoded as a node receives it."""
    body = msgpack.packb(message.to_wire(), use_bin_type=True)
    return msg.decode(message.KIND, body, NODES)


class TestLayout:
    """What each kind puts on the wire."""

    def test_every_kind_has_its_pinned_layout(self) -> None:
        """The registered kinds, and the order of each one's fields, are the protocol's."""
        assert {kind: [name for name, _ in cls.WIRE] for kind, cls in msg.KINDS.items()} == LAYOUT

    def test_examples_cover_every_kind(self) -> None:
        """The examples below hold one message of each kind (so the round trip covers all)."""
        assert sorted(m.KIND for m in examples()) == sorted(LAYOUT)

    @pytest.mark.parametrize("message", list(examples()), ids=lambda m: m.KIND.decode())
    def test_a_message_survives_the_wire(self, message: msg.Message) -> None:
        """Decoding what a node encodes gives back the same message, of the same class."""
        assert through_the_wire(message) == message

    def test_received_entries_carry_their_decoded_sessions(self) -> None:
        """A message of entries hands each entry with the session its blob holds (``None``
        for a tombstone), checked against the entry: what the replica merges."""
        entry, session = live_entry("s1")
        chunk = through_the_wire(msg.Chunk(2, [entry, TOMB]))
        assert isinstance(chunk, msg.Chunk)
        assert list(chunk.pairs()) == [(entry, session), (TOMB, None)]
        repl = through_the_wire(msg.Repl("a", 5, [(1, entry), (2, TOMB)]))
        assert isinstance(repl, msg.Repl)
        assert list(repl.sessions) == [session, None]

    @pytest.mark.parametrize(
        ("kind", "body", "words"),
        [
            (b"PING", ["z", 1, 1, 1, bytes(16), True, True], "PING node names an unknown node"),
            (b"PING", ["a", 1, 1, 1, bytes(15), True, True], "PING root must be bin of 16"),
            (b"ACK", [1], "ACK must be an array of 2"),
            (b"DELTA", [1, -1, 2], "DELTA inc must be an int >= 0"),
            (b"READ", [1, [""]], "key must be a short string"),
            (b"AEKEYS", [1, [256], []], "bucket out of range"),
            (b"NOPE", [], "unknown message kind"),
        ],
    )
    def test_a_bad_body_is_refused_with_what_is_wrong(
        self, kind: bytes, body: list[Any], words: str
    ) -> None:
        """A body that fails a field's check raises WireError naming the message and field."""
        with pytest.raises(WireError, match=words):
            msg.decode(kind, msgpack.packb(body, use_bin_type=True), NODES)


@pytest.fixture
def agent(bare_agent: Agent) -> Agent:
    """An agent of node a (not started: no socket bound or connected)."""
    return bare_agent


@pytest.fixture
def peer(agent: Agent) -> Iterator[Peer]:
    """Peer b of the agent, its DEALER never connected (nothing is sent in these tests)."""
    dealer: zmq.Socket[bytes] = agent.transport.ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    yield Peer(agent.options.peers[0], dealer, 0.0)
    dealer.close()


class TestDispatch:
    """Which handler takes each kind, on which socket."""

    def test_every_kind_is_handled_on_some_side(self, agent: Agent) -> None:
        """Each kind has a handler as a request (ROUTER), as a reply (DEALER), or both
        (PUSH: an answer to PULL, or entries a peer found newer)."""
        requests, replies = set(agent._requests), set(agent._replies)
        assert requests | replies == set(msg.KINDS.values())
        assert requests & replies == {msg.Push}
        assert set(SERVES) <= requests

    @pytest.mark.parametrize("message", [msg.Ack(1, 1), msg.Chunk(1, []), msg.DeltaOk(1, 1)])
    def test_a_reply_sent_as_a_request_is_refused(self, agent: Agent, message: msg.Message) -> None:
        """A reply kind arriving on the ROUTER is a bad frame (WireError: dropped, counted)."""
        with pytest.raises(WireError, match="is not a request"):
            agent._on_request(peer, message)

    @pytest.mark.parametrize(
        "message", [msg.Ping("b", 1, 0, 0, bytes(16), True, True), msg.Sync(1, 1)]
    )
    def test_a_request_sent_as_a_reply_is_refused(self, agent: Agent, message: msg.Message) -> None:
        """A request kind arriving on a DEALER is a bad frame."""
        with pytest.raises(WireError, match="is not a reply"):
            agent._on_reply(peer, message)

    def test_a_stale_node_serves_nothing(self, agent: Agent, peer: Peer) -> None:
        """While isolated past the horizon, requests answered from what the node holds are
        ignored (no snapshot job starts); the stream and liveness are still handled."""
        agent.isolation.stale = True
        agent._on_request(peer, msg.Sync(1, 4))
        assert agent.source.jobs == {}
        agent.isolation.stale = False
        agent._on_request(peer, msg.Sync(1, 4))
        assert list(agent.source.jobs) == [(b"b", 1)]

    def test_the_phase_shows_as_its_name(self, agent: Agent) -> None:
        """``stats`` shows the catch-up phase as the words it always used."""
        assert agent.describe()["phase"] == "sync"
        agent.catchup.phase = Phase.DELTA
        assert agent.describe()["phase"] == "delta"
        assert [phase.value for phase in Phase] == ["delta", "sync", "ae", "ready"]
