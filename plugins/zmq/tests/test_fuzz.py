"""Two doors of the zmq backend, fuzzed with Hypothesis: its options (``backend_opts``) and the
frames a node receives from the network.

Options: whatever the mapping holds, loading it gives a valid :class:`ZmqOptions` whose numbers
every library they reach accepts, or a :class:`ConfigError` that names what was wrong in our
words, never a Python error leaking out of the validation (issue 12 item 13).

Frames: whatever a peer sends, the node rejects it (dropped and counted) or handles it; no
exception reaches the I/O thread's loop and the node goes on serving.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from sessionkeeper import Config, ConfigError, Session, SessionManager
from sessionkeeper.backend import encode_session
from sessionkeeper_zmq import ZmqOptions
from sessionkeeper_zmq._messages import decode
from sessionkeeper_zmq._options import BOUNDS
from sessionkeeper_zmq._wire import WireError
from sessionkeeper_zmq.testing import cluster_opts, wait_for

# -- options ---------------------------------------------------------------------------------------

#: Phrases of Python's own error messages: seen in a ConfigError, they mean that a value reached
#: code that did not expect it and the user is shown an internal failure.
LEAKS = re.compile(
    r"Error:|has no attribute|not iterable|not supported between|unhashable|has no len"
    r"|not subscriptable|object is not|positional argument|unexpected keyword|Traceback"
)

OPTION_KEYS = [
    "node_id",
    "nodes",
    "cluster_id",
    "bind",
    "disc_copies",
    "data_dir",
    "ack",
    "touch_ack",
    "write_timeout_ms",
    "curve",
    "secret_key_file",
    "heartbeat_ms",
    "suspect_after_ms",
    "anti_entropy_ms",
    "ready_timeout_ms",
    "backlog",
    "tombstone_ttl_ms",
    "max_clock_skew_ms",
    "fsync",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["a", "b", "quorum", "all", "local", "group", "tcp://127.0.0.1:7100", ""]),
)
toml_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
endpoints = st.one_of(
    st.builds("tcp://127.0.0.1:{}".format, st.integers(min_value=-5, max_value=70_000)),
    st.sampled_from(["tcp://host:7100", "ipc:///tmp/x", "tcp://:1", "http://x", "tcp://a:b"]),
    st.text(max_size=30),
)
node_tables = st.dictionaries(
    st.sampled_from(["id", "endpoint", "public_key", "colour"]),
    st.one_of(st.sampled_from(["a", "b", "c", "-x", "a" * 70]), endpoints, toml_values),
    max_size=4,
)
node_lists = st.one_of(
    toml_values,
    st.lists(st.one_of(toml_values, node_tables), max_size=3),
    st.lists(node_tables, max_size=5),
)


@st.composite
def option_mappings(draw: st.DrawFn) -> dict[str, Any]:
    """A valid one-node mapping with some keys replaced by hostile values, some dropped, and
    sometimes an unknown key."""
    data: dict[str, Any] = {
        "node_id": "a",
        "nodes": [{"id": "a", "endpoint": "tcp://127.0.0.1:7100"}],
        "curve": False,
    }
    if draw(st.booleans()):  # the most structured option, so the most ways to be wrong
        data["nodes"] = draw(node_lists)
    for key in draw(st.lists(st.sampled_from(OPTION_KEYS), max_size=5, unique=True)):
        data[key] = draw(node_lists if key == "nodes" else toml_values)
    for key in draw(st.lists(st.sampled_from(OPTION_KEYS), max_size=2)):
        data.pop(key, None)
    if draw(st.booleans()):
        data[draw(st.text(max_size=10))] = draw(toml_values)
    return data


class TestOptionsFuzz:
    """Any ``backend_opts`` mapping: valid, bounded options, or a ConfigError in our words."""

    @pytest.mark.fuzz
    @given(option_mappings())
    def test_any_mapping_gives_options_or_a_clear_config_error(self, data: dict[str, Any]) -> None:
        """Loading never raises anything but ConfigError, the error never shows a Python
        internal message, and options that load have every number within its bounds."""
        error: ConfigError | None = None
        try:
            config = Config.from_mapping({"backend": "zmq", "backend_opts": data})
        except ConfigError as exc:
            error = exc
        if error is not None:
            assert not LEAKS.search(str(error)), str(error)
            assert str(error.key).startswith("sessionkeeper.backend_opts"), str(error)
            return
        options = ZmqOptions(**config.backend_opts)
        for name, (low, high) in BOUNDS.items():
            assert low <= getattr(options, name) <= high
        assert options.write_timeout_ms / 1000 < threading.TIMEOUT_MAX
        for node in options.nodes:
            if node.endpoint.startswith("tcp://"):
                assert 1 <= int(node.endpoint.rpartition(":")[2]) <= 65_535

    @pytest.mark.parametrize(
        ("nodes", "key", "message"),
        [
            ("x", "nodes", "must be an array of tables"),
            ([{"id": "a", "endpoint": "tcp://127.0.0.1:7100"}, None], "nodes[1]", "a table"),
            (
                [{"id": "a", "endpoint": "tcp://127.0.0.1:7100"}, {"id": "b", "colour": 1}],
                "nodes[1].colour",
                "unknown key",
            ),
            (
                [{"id": "a", "endpoint": "tcp://127.0.0.1:7100"}, {"id": "b"}],
                "nodes[1].endpoint",
                "missing",
            ),
            (
                [{"id": "a", "endpoint": "tcp://127.0.0.1:7100"}, {"id": "b", "endpoint": "x"}],
                "nodes[1].endpoint",
                "tcp://HOST:PORT",
            ),
        ],
    )
    def test_a_bad_node_entry_is_named(self, nodes: Any, key: str, message: str) -> None:
        """Issue 12 item 13: ``nodes = "x"`` and every other malformed node list say which
        entry and which key is wrong (it used to leak ``AttributeError``)."""
        with pytest.raises(ConfigError, match=message) as info:
            Config.from_mapping(
                {"backend": "zmq", "backend_opts": {"node_id": "a", "nodes": nodes, "curve": False}}
            )
        assert info.value.key == f"sessionkeeper.backend_opts.{key}"
        assert not LEAKS.search(str(info.value))


# -- network frames --------------------------------------------------------------------------------

#: How many fields each message kind's body has (a hostile body is drawn around it).
ARITY = {
    b"PING": 7,
    b"PONG": 9,
    b"REPL": 3,
    b"ACK": 2,
    b"SYNC": 2,
    b"CREDIT": 2,
    b"CHUNK": 2,
    b"END": 3,
    b"AE": 2,
    b"AEKEYS": 3,
    b"PULL": 2,
    b"PUSH": 2,
    b"READ": 2,
    b"RREP": 2,
    b"NEEDSYNC": 1,
    b"DELTA": 3,
    b"DELTAOK": 2,
    b"DELTANO": 1,
    b"BYE": 2,
}
NODE_IDS = frozenset("abc")

numbers = st.one_of(
    st.sampled_from([0, 1, 2, 255, 256, 2**63 - 1, 2**63, 2**64 - 1, -1, -(2**63)]),
    st.integers(min_value=0, max_value=10**6),
)
node_names = st.sampled_from(["a", "b", "c", "z", "", "a" * 300])
session_ids = st.sampled_from(["s1", "s2", "", " ", "x" * 300])


@st.composite
def entries(draw: st.DrawFn) -> list[Any]:
    """A replicated entry, often well formed, often not."""
    key = draw(session_ids)
    la = draw(numbers)
    timeout = draw(st.none() | numbers)
    blob: Any = draw(st.none() | st.binary(max_size=40))
    if draw(st.booleans()) and key.strip() and len(key) <= 256 and la >= 0:
        valid_timeout = timeout if timeout is None or 0 < timeout < 2**62 else None
        session = Session(key, la % 2**40, la % 2**40, valid_timeout, {"k": 1})
        blob = encode_session(session)
        la, timeout = session.last_accessed, session.timeout_ms
    return [key, draw(numbers), draw(node_names), la, blob, timeout]


#: Any msgpack value (integers within its 64 bits).
packable = st.recursive(
    st.none()
    | st.booleans()
    | numbers
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

fields = st.one_of(
    numbers,
    node_names,
    session_ids,
    st.binary(min_size=16, max_size=16),
    st.binary(max_size=20),
    st.booleans(),
    st.none(),
    st.floats(),
    st.lists(entries(), max_size=3),
    st.lists(st.tuples(numbers, entries()).map(list), max_size=3),
    st.dictionaries(node_names, st.lists(numbers, min_size=1, max_size=3), max_size=3),
    st.lists(numbers, min_size=256, max_size=256),
    st.lists(st.tuples(session_ids, numbers, node_names, numbers).map(list), max_size=3),
    st.lists(numbers, max_size=4),
    st.lists(session_ids, max_size=3),
)


@st.composite
def frames(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """``(kind, body)``: a known kind with a body of about the right shape, or anything."""
    kind = draw(st.sampled_from(sorted(ARITY)) | st.binary(max_size=10))
    arity = ARITY.get(kind, 2)
    shape = draw(st.sampled_from(["fields", "bytes", "value"]))
    if shape == "fields":
        size = draw(st.integers(min_value=max(0, arity - 1), max_value=arity + 1))
        body: bytes = msgpack.packb(draw(st.lists(fields, min_size=size, max_size=size)))
    elif shape == "bytes":
        body = draw(st.binary(max_size=60))
    else:
        body = msgpack.packb(draw(packable))
    return kind, body


def rejected(kind: bytes, body: bytes) -> bool:
    """True when the frame door refuses this message."""
    try:
        decode(kind, body, NODE_IDS)
    except WireError:
        return True
    return False


class TestFrameFuzz:
    """Any frame from the network: a WireError (dropped, counted) or a handled message."""

    @pytest.mark.fuzz
    @given(frames())
    def test_decode_raises_only_wire_error(self, frame: tuple[bytes, bytes]) -> None:
        """``decode`` of any kind and body returns the checked fields or raises WireError."""
        kind, body = frame
        rejected(kind, body)

    @pytest.mark.fuzz
    @given(
        st.lists(frames(), min_size=1, max_size=4),
        st.lists(frames(), max_size=4),
        st.lists(st.lists(st.binary(max_size=8), max_size=4), max_size=2),
    )
    def test_a_live_node_survives_any_frames(
        self,
        node: FuzzedNode,
        requests: list[tuple[bytes, bytes]],
        replies: list[tuple[bytes, bytes]],
        odd: list[list[bytes]],
    ) -> None:
        """A node fed hostile requests (to its ROUTER) and hostile replies (to its DEALER), and
        messages of the wrong number of frames, drops and counts each one the frame door
        refuses; no handler fails and its I/O thread keeps serving."""
        agent = node.agent
        dropped = agent.counters["dropped_frames"]
        odd = [parts for parts in odd if parts]  # a message has at least one frame
        sent = requests + replies + [(parts[0], parts[1]) for parts in odd if len(parts) == 2]
        refused = sum(rejected(kind, body) for kind, body in sent)
        refused += sum(1 for parts in odd if len(parts) != 2)
        for kind, body in requests:
            node.dealer.send_multipart([kind, body])
        for parts in odd:
            node.dealer.send_multipart(parts)
        node.round_trip()
        for kind, body in replies:
            node.router.send_multipart([b"a", kind, body])
        node.reply_round_trip()
        assert agent.counters["handler_errors"] == 0
        assert agent.failure is None
        assert agent.counters["dropped_frames"] - dropped >= refused
        node.manager.store(Session("after-fuzz", 1, 1, None))
        assert node.manager.peek("after-fuzz").id == "after-fuzz"


class FuzzedNode:
    """Node ``a`` of a 3-node cluster (no CURVE, so frames reach the decoder), with raw
    sockets playing node ``b``: a DEALER to a's ROUTER (requests) and a ROUTER on b's endpoint
    that a's DEALER connects to (replies)."""

    def __init__(self) -> None:
        options = cluster_opts(Path("."), 3, curve=False, ack="local")
        self.manager = SessionManager(backend="zmq", backend_opts=options[0], cleanup_interval=0)
        backend: Any = self.manager.backend
        self.agent = backend.agent
        self.context: zmq.Context[Any] = zmq.Context()
        self.dealer: zmq.Socket[bytes] = self.context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.ROUTING_ID, b"b")
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.connect(options[0]["nodes"][0]["endpoint"])
        self.router: zmq.Socket[bytes] = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(options[0]["nodes"][1]["endpoint"])
        self.sentinel = 10**9
        # a pings b until it hears it: once that arrives here, a's DEALER is connected.
        wait_for(lambda: self.router.poll(100) and self.router.recv_multipart(), "a's PING")

    def round_trip(self) -> None:
        """Return once a handled everything sent through the DEALER: a READ it answers."""
        self.sentinel += 1
        self.dealer.send_multipart([b"READ", msgpack.packb([self.sentinel, ["s1"]])])

        def answered() -> bool:
            while self.dealer.poll(100):
                kind, body = self.dealer.recv_multipart()[:2]
                if kind == b"RREP" and msgpack.unpackb(body)[0] == self.sentinel:
                    return True
            return False

        wait_for(answered, "a's answer to the sentinel READ")

    def reply_round_trip(self) -> None:
        """Return once a handled everything sent to its DEALER: a PONG carrying a new seq."""
        self.sentinel += 1
        pong = ["b", 1, self.sentinel, 0, 0, 0, b"\0" * 16, False, False]
        self.router.send_multipart([b"a", b"PONG", msgpack.packb(pong)])

        def handled() -> bool:
            while self.router.poll(0):
                self.router.recv_multipart()  # a's own requests to b: not answered
            return bool(self.agent.peers["b"].seq == self.sentinel)

        wait_for(handled, "a to handle the sentinel PONG")

    def close(self) -> None:
        self.context.destroy(linger=0)
        self.manager.close()


@pytest.fixture(scope="module")
def node() -> Iterator[FuzzedNode]:
    """One live node and the sockets that feed it frames (shared by the examples)."""
    fuzzed = FuzzedNode()
    yield fuzzed
    fuzzed.close()
