"""The fault-injection tools themselves: the checker flags each kind of violation, and the TCP
fault proxy passes, cuts, heals, delays and resets connections."""

from __future__ import annotations

import re
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper_zmq.chaos import ChaosCluster, History, Op, ProxyHub, check
from sessionkeeper_zmq.chaos.checker import winners_are_the_largest_versions
from sessionkeeper_zmq.testing import wait_for

NOW = 1_700_000_000_000


def dumps_of(entries: list[list[Any]], nodes: str = "abc") -> dict[str, dict[str, Any]]:
    """The same entries on every node."""
    return {n: {"entries": sorted(entries), "digest": "d", "now": NOW} for n in nodes}


def create(
    history: History,
    key: str,
    version: tuple[int, str] | None,
    outcome: str = "ok",
    ack: str | None = None,
    timeout: int | None = None,
) -> Op:
    """A recorded create of ``key``."""
    op = Op("create", version[1] if version else "a", key, NOW - 1000, w=history.new_w())
    op.end, op.outcome, op.version, op.ack, op.la, op.timeout = (
        NOW - 900,
        outcome,
        version,
        ack,
        NOW - 1000,
        timeout,
    )
    return history.add(op)


def live(op: Op, la: int | None = None) -> list[Any]:
    """The dump entry a create leaves."""
    assert op.version is not None
    return [op.key, *op.version, la or op.la, False, op.w, op.timeout]


class TestChecker:
    """Each property of the checker fails on a history that breaks it."""

    def test_a_clean_run_passes(self) -> None:
        """Acknowledged writes present, a delete as a tombstone, a read of a written value."""
        history = History()
        kept = create(history, "k1", (10, "a"))
        gone = create(history, "k2", (11, "b"))
        delete = history.add(Op("delete", "c", "k2", NOW - 800, end=NOW - 700, outcome="ok"))
        delete.version = (12, "c")
        read = history.add(Op("peek", "b", "k1", NOW - 500, end=NOW - 400, outcome="ok"))
        read.found, read.served_w, read.la = True, kept.w, kept.la
        entries = [live(kept), ["k2", 12, "c", NOW - 800, True, None, None]]
        assert gone.w != kept.w
        assert check(history, dumps_of(entries)) == []

    def test_a_lost_acknowledged_write_is_reported(self) -> None:
        """A quorum-acknowledged store whose key holds an older version at the end."""
        history = History()
        older = create(history, "k", (5, "a"))
        create(history, "k", (9, "b"))
        problems = check(history, dumps_of([live(older)]))
        assert any("is lost" in p for p in problems)

    def test_a_superseded_write_is_fine(self) -> None:
        """An acknowledged store replaced by a newer acknowledged one."""
        history = History()
        create(history, "k", (5, "a"))
        newer = create(history, "k", (9, "b"))
        assert check(history, dumps_of([live(newer)])) == []

    def test_a_resurrected_delete_is_reported(self) -> None:
        """An acknowledged delete, yet the session it deleted is live at the end."""
        history = History()
        stored = create(history, "k", (5, "a"))
        delete = history.add(Op("delete", "b", "k", NOW - 800, end=NOW - 700, outcome="ok"))
        delete.version = (7, "b")
        problems = check(history, dumps_of([live(stored)]))
        assert any("delete" in p and "lost" in p for p in problems)

    def test_a_refused_write_must_stay_invisible(self) -> None:
        """A write refused for lack of replicas found in the final state and in a read."""
        history = History()
        refused = create(history, "k", None, outcome="refused")
        read = history.add(Op("fetch", "a", "k", NOW - 500, end=NOW - 400, outcome="ok"))
        read.found, read.served_w, read.la = True, refused.w, NOW - 1000
        entries = [["k", 3, "a", NOW - 1000, False, refused.w, None]]
        problems = check(history, dumps_of(entries))
        assert any("which was refused" in p and "final" in p for p in problems)
        assert any("which was refused" in p and "fetch" in p for p in problems)

    def test_an_invented_value_is_reported(self) -> None:
        """A final value and a tombstone that no issued operation made."""
        history = History()
        entries = [
            ["k", 3, "a", NOW, False, "w999", None],
            ["t", 4, "b", NOW, True, None, None],
        ]
        problems = check(history, dumps_of(entries))
        assert any("never written" in p for p in problems)
        assert any("matches no issued delete" in p for p in problems)

    def test_serving_an_expired_session_is_reported(self) -> None:
        """A read sent 2 s after the session's deadline that still returned it: a violation
        without skew, tolerated with 4 s of allowed skew."""
        history = History()
        stored = create(history, "k", (5, "a"), timeout=1000)
        read = history.add(Op("peek", "c", "k", NOW + 2000, end=NOW + 2001, outcome="ok"))
        read.found, read.served_w, read.la, read.timeout = True, stored.w, stored.la, 1000
        dumps = dumps_of([live(stored)])
        assert any("expired" in p for p in check(history, dumps))
        assert check(history, dumps, skew_ms=4000) == []

    def test_collected_tombstones_only_excuse_old_deletes(self) -> None:
        """With ``tombstone_ttl_ms``, a store and its delete may both be gone once the
        tombstone could have been collected, not before."""
        history = History()
        create(history, "k", (5, "a"))
        delete = history.add(Op("delete", "b", "k", NOW - 800, end=NOW - 700, outcome="ok"))
        delete.version = (7, "b")
        dumps = dumps_of([])
        assert check(history, dumps, tombstone_ttl_ms=500) == []
        assert len(check(history, dumps, tombstone_ttl_ms=5_000)) == 2

    def test_diverged_nodes_are_reported(self) -> None:
        """Two nodes holding different versions of one key."""
        history = History()
        one = create(history, "k", (5, "a"), ack="local")
        two = create(history, "k", (6, "b"), ack="local")
        dumps = dumps_of([live(one)])
        dumps["c"] = {"entries": [live(two)], "digest": "e", "now": NOW}
        assert any("differ" in p for p in check(history, dumps))

    def test_local_writes_may_be_lost_unless_strict(self) -> None:
        """A lost ``local`` write is allowed (its node may have died), except with
        ``strict_local`` (no node was lost)."""
        history = History()
        create(history, "k", (5, "a"), ack="local")
        other = create(history, "x", (6, "b"))
        dumps = dumps_of([live(other)])
        assert check(history, dumps) == []
        assert any("is lost" in p for p in check(history, dumps, strict_local=True))

    def test_the_winner_must_be_the_largest_version(self) -> None:
        """With every write applied, the final version of a key is the largest written."""
        history = History()
        small = create(history, "k", (5, "b"), ack="local")
        create(history, "k", (5, "c"), ack="local")
        problems = winners_are_the_largest_versions(history, dumps_of([live(small)]), ["k"])
        assert problems
        assert "largest" in problems[0]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub() -> Iterator[ProxyHub]:
    """A proxy hub, closed at teardown."""
    proxies = ProxyHub()
    yield proxies
    proxies.close()


def roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` and read back as many bytes."""
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


def closed(sock: socket.socket) -> bool:
    """True when the peer closed or reset the connection (nothing more to read)."""
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True


class TestProxy:
    """The TCP fault proxy of one link."""

    def test_passes_bytes_both_ways(self, hub: ProxyHub, echo_port: int) -> None:
        """Without faults (and with a delay) the echo comes back whole."""
        proxy = hub.add(echo_port, "a->b")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
            assert roundtrip(sock, b"hello") == b"hello"
            proxy.set_delay(20, 10)
            assert roundtrip(sock, b"x" * 100_000) == b"x" * 100_000

    def test_cut_drops_bytes_and_heal_resets_the_connection(
        self, hub: ProxyHub, echo_port: int
    ) -> None:
        """A cut throws the bytes away (counted) while the connection stays open; healing
        closes that connection, and a new one works."""
        proxy = hub.add(echo_port, "a->b")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
            assert roundtrip(sock, b"before") == b"before"
            proxy.cut(forward=True, backward=False)
            assert proxy.faulty
            sock.sendall(b"lost in the cut")
            wait_for(lambda: proxy.bytes_dropped >= len(b"lost in the cut"), "the drop")
            proxy.heal()
            assert not proxy.faulty
            assert closed(sock)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
            assert roundtrip(sock, b"after") == b"after"

    def test_reset_closes_connections(self, hub: ProxyHub, echo_port: int) -> None:
        """``reset`` closes the live connections (a flapping link)."""
        proxy = hub.add(echo_port, "a->b")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as sock:
            assert roundtrip(sock, b"ping") == b"ping"
            wait_for(lambda: proxy.connections, "the proxy to see the connection")
            proxy.reset()
            assert closed(sock)


def test_a_wait_returns_the_first_truthy_value_or_names_what_it_waited_for(
    tmp_path: Path,
) -> None:
    """``wait_for`` polls until the condition is truthy and returns that value; past its
    deadline it fails naming what it waited for. A chaos cluster's waits (the same loop,
    polling less often) also name the folder of the node logs."""
    answers = iter([0, None, "ready"])
    assert wait_for(lambda: next(answers), "an answer", 5, interval_s=0.001) == "ready"
    with pytest.raises(AssertionError, match=r"^timed out after 0.05 s waiting for the moon$"):
        wait_for(lambda: False, "the moon", 0.05)
    with ChaosCluster(tmp_path, size=1) as cluster:
        logs = re.escape(f"(node logs in {tmp_path})")
        with pytest.raises(AssertionError, match=rf"^timed out after 0.05 s .* the moon {logs}$"):
            cluster._wait(lambda: False, "the moon", 0.05)


def test_a_wait_retries_only_the_errors_it_is_given_and_names_the_last() -> None:
    """``wait_for`` is the conformance kit's: an exception of a type in ``retry_on`` (a server
    still starting) counts as "not yet", and the failure at the deadline names the last one;
    any other exception propagates from the first poll."""
    import sessionkeeper.testing

    assert wait_for is sessionkeeper.testing.wait_for
    polls = iter([ConnectionRefusedError("starting"), 0, "up"])

    def server_up() -> Any:
        answer = next(polls)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_for(server_up, "the server", 5, interval_s=0.001, retry_on=(OSError,)) == "up"

    def refused() -> None:
        raise ConnectionRefusedError("nobody listens")

    last = re.escape("(last error: ConnectionRefusedError('nobody listens'))")
    with pytest.raises(AssertionError, match=rf"^timed out after 0.05 s waiting for it {last}$"):
        wait_for(refused, "it", 0.05, interval_s=0.001, retry_on=(OSError,))
    with pytest.raises(ConnectionRefusedError, match="nobody listens"):
        wait_for(refused, "it", 5)
