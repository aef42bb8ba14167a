"""The admin socket (issue 19): a manager opened read-only reads a running node through it.

Real nodes on 127.0.0.1, real Unix sockets in real directories; the read-only manager is what
``sessionkeeper list/show/stats/export/backup`` open.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from sessionkeeper import SessionManager, SessionNotFound, StorageError
from sessionkeeper_zmq import _admin_messages as am
from sessionkeeper_zmq._admin import AdminClient, admin_socket_path
from sessionkeeper_zmq._options import ZmqOptions
from sessionkeeper_zmq._wire import WireError, pack
from sessionkeeper_zmq.testing import cluster_opts, free_ports, wait_for


def read_only(opts: dict[str, Any], **kwargs: Any) -> SessionManager:
    """What the CLI opens on a node's configuration."""
    return SessionManager(backend="zmq", backend_opts=opts, read_only=True, **kwargs)


def socket_of(manager: SessionManager) -> Path:
    """The admin socket a running node serves."""
    admin = manager.backend.admin  # type: ignore[attr-defined]
    assert admin is not None, manager.stats()["backend_stats"].get("admin")
    return Path(admin.path)


@pytest.fixture
def cluster(make_cluster: Any) -> list[SessionManager]:
    """Three running nodes, ack = all."""
    managers: list[SessionManager] = make_cluster()
    return managers


class TestReadingARunningNode:
    """Every read the CLI makes goes to the running node and gives what the node holds."""

    def test_reads_are_the_nodes_and_writes_are_refused(
        self, cluster: list[SessionManager]
    ) -> None:
        """list, count, their owner forms, peek, iter_sessions and stats of a read-only
        manager on node b's configuration are node b's (an expired session is left out of
        list and count, and still exported with include_expired); store, delete and cleanup
        raise StorageError naming the backend and saying it is read-only."""
        a, b, _ = cluster
        alice = [a.create(owner="alice", metadata={"i": i}) for i in range(3)]
        other = a.create(timeout_ms=1)  # acknowledged by every node (ack = all)
        with read_only(b.config.backend_opts) as reader:
            wait_for(lambda: b.count() == 3, "the short session to expire")
            assert sorted(reader.list()) == sorted(b.list())
            assert reader.count() == 3
            assert sorted(reader.list(owner="alice")) == sorted(s.id for s in alice)
            assert reader.count(owner="alice") == 3
            assert reader.list(owner="nobody") == []
            assert reader.peek(alice[0].id) == b.peek(alice[0].id)
            with pytest.raises(SessionNotFound):
                reader.peek("no-such-session")
            exported = {s.id for s in reader.iter_sessions(include_expired=True)}
            assert exported == {s.id for s in alice} | {other.id}
            figures = reader.stats()["backend_stats"]
            assert figures["node_id"] == "b"
            assert figures["digest"] == b.stats()["backend_stats"]["digest"]
            assert set(figures["peers"]) == {"a", "c"}
            assert figures["via_admin_socket"] == str(socket_of(b))
            assert reader.identity() == b.identity()
            for write in (
                lambda: reader.store(alice[1].replace(metadata={"changed": True})),
                lambda: reader.delete(alice[0].id),
                reader.cleanup_expired,
            ):
                with pytest.raises(StorageError, match="read-only") as info:
                    write()
                assert info.value.backend == "zmq"
        assert b.count(owner="alice") == 3

    def test_listings_and_exports_go_page_by_page(
        self, cluster: list[SessionManager], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A listing and an export larger than a page come whole, in pages: nothing lost or
        repeated at the page boundaries, and the node keeps no cursor afterwards."""
        monkeypatch.setattr(am, "IDS_PER_PAGE", 7)
        monkeypatch.setattr(am, "SESSIONS_PER_PAGE", 5)
        a, b, _ = cluster
        created = {a.create(owner="o").id for _ in range(23)}
        wait_for(lambda: b.count() == 23, "b to hold the sessions")
        with read_only(b.config.backend_opts) as reader:
            listed = reader.list()
            assert len(listed) == 23
            assert set(listed) == created
            assert set(reader.list(owner="o")) == created
            exported = [s.id for s in reader.iter_sessions()]
            assert len(exported) == 23
            assert set(exported) == created
        assert b.stats()["backend_stats"]["admin"]["cursors"] == 0


class TestWhenNoNodeAnswers:
    """No running node: an error naming the socket and what to start, never a hang."""

    def test_a_node_not_running_is_named_with_what_to_start(self, key_dir: Path) -> None:
        """With no node running on this configuration, opening read-only raises a
        StorageError naming the socket, the node and the command that starts it."""
        (opts,) = cluster_opts(key_dir, 1)
        path = admin_socket_path(ZmqOptions(**opts), Path)
        with pytest.raises(StorageError) as info:
            read_only(opts)
        message = str(info.value)
        assert "no running node reachable" in message
        assert f"ipc://{path}" in message
        assert "node 'a'" in message
        assert "sessionkeeper node --config" in message

    def test_the_cli_exits_4_naming_the_socket(self, tmp_path: Path) -> None:
        """``sessionkeeper stats`` (and list, show, export, backup) on the configuration of a
        node that is not running exits with 4 (storage error) and names the socket."""
        from click.testing import CliRunner

        from sessionkeeper.cli import cli

        [port] = free_ports(1)
        config = tmp_path / "a.toml"
        config.write_text(
            '[sessionkeeper]\nbackend = "zmq"\n[sessionkeeper.backend_opts]\nnode_id = "a"\n'
            'curve = false\nadmin_socket = "a.sock"\n'
            f'nodes = [{{ id = "a", endpoint = "tcp://127.0.0.1:{port}" }}]\n'
        )
        for command in (["stats"], ["list"], ["show", "some-id"], ["export", "-"]):
            result = CliRunner().invoke(cli, ["--config", str(config), *command])
            assert result.exit_code == 4, (command, result.output)
            assert f"ipc://{tmp_path / 'a.sock'}" in result.output.replace("\n", "")
            assert "no running node reachable" in result.output

    def test_a_socket_left_by_a_killed_node_is_told_apart(
        self, key_dir: Path, tmp_path: Path
    ) -> None:
        """The socket file of a node killed without cleanup is still there, but nothing
        listens: the error says so at once."""
        (opts,) = cluster_opts(key_dir, 1, admin_socket=str(tmp_path / "admin.sock"))
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(tmp_path / "admin.sock"))
        stale.close()
        with pytest.raises(StorageError, match="the node stopped or was killed"):
            read_only(opts)

    def test_a_socket_of_another_cluster_is_refused(self, key_dir: Path, tmp_path: Path) -> None:
        """Two configurations pointing at one admin socket: the reader of the other cluster
        is refused, naming both, instead of reading the wrong store."""
        path = str(tmp_path / "shared.sock")
        (mine,) = cluster_opts(key_dir, 1, admin_socket=path)
        (theirs,) = cluster_opts(key_dir, 1, admin_socket=path, cluster_id="other")
        with (
            SessionManager(backend="zmq", backend_opts=mine, cleanup_interval=0),
            pytest.raises(StorageError, match="not node 'a' of zmq:other:"),
        ):
            read_only(theirs)


class TestSocketPermissions:
    """Only the node's user can reach the socket: the file system is the authentication."""

    def test_socket_is_private_to_the_nodes_user(self, cluster: list[SessionManager]) -> None:
        """The socket is mode 0600 in a directory of mode 0700 owned by the node's user."""
        path = socket_of(cluster[0])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        directory = path.parent.stat()
        assert stat.S_IMODE(directory.st_mode) & 0o077 == 0
        assert directory.st_uid == os.getuid()

    def test_a_directory_open_to_others_gets_no_socket(self, key_dir: Path, tmp_path: Path) -> None:
        """A node whose admin directory others may enter runs, serves no admin socket, and
        says why in its stats; a reader then gets the clear error."""
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o755)
        shared.chmod(0o755)
        (opts,) = cluster_opts(key_dir, 1, admin_socket=str(shared / "admin.sock"))
        with SessionManager(backend="zmq", backend_opts=opts, cleanup_interval=0) as node:
            node.create()
            admin = node.stats()["backend_stats"]["admin"]
            assert "open to other users" in admin["problem"]
            assert not (shared / "admin.sock").exists()
            with pytest.raises(StorageError, match="no running node reachable"):
                read_only(opts)

    def test_the_socket_file_goes_with_the_node(self, key_dir: Path, tmp_path: Path) -> None:
        """A node that closes removes its socket file; a node started over a file a killed
        node left serves again."""
        path = tmp_path / "admin.sock"
        (opts,) = cluster_opts(key_dir, 1, admin_socket=str(path))
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(path))
        stale.close()
        with SessionManager(backend="zmq", backend_opts=opts, cleanup_interval=0) as node:
            node.create()
            with read_only(opts) as reader:
                assert reader.count() == 1
        assert not path.exists()


class TestHostileFrames:
    """Frames that are not admin requests are refused; the node keeps serving."""

    @pytest.fixture
    def raw(self, cluster: list[SessionManager]) -> Iterator[zmq.Socket[bytes]]:
        """A raw DEALER connected to node a's admin socket."""
        ctx: zmq.Context[Any] = zmq.Context()
        sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"ipc://{socket_of(cluster[0])}")
        yield sock
        ctx.destroy(linger=0)

    def ask(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> am.Failure | None:
        sock.send_multipart(frames)
        if not sock.poll(5_000):
            return None
        kind, body = sock.recv_multipart()
        message = am.decode_admin(kind, body)
        assert isinstance(message, am.Failure | am.Welcome)
        return message if isinstance(message, am.Failure) else None

    def test_malformed_requests_are_refused_with_a_reason(
        self, cluster: list[SessionManager], raw: zmq.Socket[bytes]
    ) -> None:
        """Unknown kinds, peer messages, answers sent as requests, bodies that are not
        msgpack, wrong arities and bad fields each get a Failure naming the fault; a wrong
        protocol version is refused; the node then still answers a proper request."""
        cases = [
            [b"PING", pack([1])],
            [b"A.WELCOME", pack([1, 1, "a", "x", True])],
            [b"A.COUNT", b"\xc1"],
            [b"A.COUNT", pack([1, 2])],
            [b"A.COUNT", pack([1, -5, None])],
            [b"A.GET", pack([1, "bad id with spaces"])],
            [b"A.OPEN", pack([1, "everything", 0, None])],
            [b"A.OPEN", pack([1, "ids", 0, "bad\x00owner"])],
            [b"A.NEXT", pack([1, 999])],
            [b"A.HELLO", pack([1, am.PROTOCOL + 1])],
            [b"A.COUNT", msgpack.packb([1, 0, msgpack.ExtType(1, b"x")])],
        ]
        for frames in cases:
            failure = self.ask(raw, frames)
            assert failure is not None, frames
            assert failure.message, frames
        with AdminClient(
            socket_of(cluster[0]), ZmqOptions(**cluster[0].config.backend_opts), "zmq"
        ) as client:
            assert client.welcome is not None
            assert client.welcome.node == "a"

    @pytest.mark.fuzz
    def test_random_frames_never_stop_the_admin_socket(
        self, cluster: list[SessionManager], raw: zmq.Socket[bytes]
    ) -> None:
        """Random frames (any count, kinds of the protocol or not, random bodies) are refused
        or ignored; the node keeps serving its admin socket and its cluster."""
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st

        kinds = st.sampled_from([*am.ADMIN_KINDS, b"PING", b""]) | st.binary(max_size=12)
        frames = st.lists(st.binary(max_size=64), max_size=4) | st.tuples(
            kinds, st.binary(max_size=200)
        ).map(list)

        @settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(frames)
        def send(parts: list[bytes]) -> None:
            raw.send_multipart(parts or [b""])

        send()
        a = cluster[0]
        with read_only(a.config.backend_opts) as reader:
            assert reader.count() == a.count()
        assert a.stats()["backend_stats"]["admin"]["refused"] > 0

    @pytest.mark.fuzz
    def test_decoding_random_answers_raises_wire_errors_only(self) -> None:
        """What the client decodes from a node is checked: random kinds and bodies give a
        message or a WireError, nothing else."""
        from hypothesis import given
        from hypothesis import strategies as st

        @given(st.sampled_from(list(am.ADMIN_KINDS)), st.binary(max_size=300))
        def decode(kind: bytes, body: bytes) -> None:
            with contextlib.suppress(WireError):
                am.decode_admin(kind, body)

        decode()
