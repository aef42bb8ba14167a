"""The fault-injection harness: a cluster of node subprocesses behind per-link fault proxies.

:class:`ChaosCluster` runs each node as ``python -m sessionkeeper_zmq.chaos.control`` on
127.0.0.1 with CURVE on. Node X's connection to node Y goes through the :class:`LinkProxy`
``links[X, Y]`` (X's config lists Y's endpoint as the proxy; Y binds its real port), so links
can be cut, one direction or both, delayed and reset without root. Processes can be SIGKILLed,
restarted with the same config, SIGSTOPped and SIGCONTed; each node's clock can be skewed and
its outgoing messages dropped or duplicated. Every operation issued through the cluster is
recorded in its :class:`History`, which :func:`~sessionkeeper_zmq.chaos.checker.check` judges
once the faults are healed and the nodes have converged.

Test tooling, long because a scenario reads end to end here: the nodes' processes, the proxies
between them and the faults they inject.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import IO, Any

import attrs

from .._backend import CLOCK_OFFSET_ENV
from .._keys import write_key_pair
from ..testing import DEADLINE_S, free_ports, public_key, wait_for
from .proxy import LinkProxy, ProxyHub

__all__ = [
    "ANSWER_S",
    "FAST_OPTIONS",
    "ChaosCluster",
    "History",
    "Load",
    "NodeProcess",
    "Op",
    "ops_between",
    "toml_value",
    "wall_ms",
]

#: How long the harness waits for one answer from a node (a paused node never answers).
ANSWER_S = 20.0


def wall_ms() -> int:
    """The test process's wall clock, in ms."""
    return time.time_ns() // 1_000_000


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal (bools, ints, floats, strings, lists, inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


@attrs.define
class Op:
    """One operation the harness issued and what came of it.

    ``outcome``: ``ok`` (acknowledged at its level), ``refused`` (not enough replicas: nothing
    written), ``timeout`` (applied on the node, undetermined elsewhere), ``lost`` (no answer:
    the node died or stayed paused; undetermined), ``error``. Reads: ``ok`` with ``found``.
    """

    kind: str
    node: str
    key: str
    start: int
    end: int = 0
    w: str | None = None
    ack: str | int | None = None
    timeout: int | None = None
    outcome: str = "pending"
    version: tuple[int, str] | None = None
    found: bool | None = None
    served_w: str | None = None
    la: int | None = None
    node_now: int | None = None
    message: str = ""

    @property
    def maybe_applied(self) -> bool:
        """A write that may have taken effect somewhere."""
        return self.outcome in ("ok", "timeout", "lost")


class History:
    """Every operation issued through a cluster, in the order they started (thread-safe)."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._lock = threading.Lock()
        self._w = itertools.count(1)

    def new_w(self) -> str:
        """A unique write id."""
        return f"w{next(self._w)}"

    def add(self, op: Op) -> Op:
        with self._lock:
            self.ops.append(op)
        return op

    def of(self, *kinds: str) -> list[Op]:
        """The operations of the given kinds."""
        with self._lock:
            return [op for op in self.ops if op.kind in kinds]

    def outcomes(self, kind: str = "create", node: str | None = None) -> dict[str, int]:
        """How many operations of ``kind`` (on ``node``) ended each way."""
        result: dict[str, int] = {}
        for op in self.of(kind):
            if node is None or op.node == node:
                result[op.outcome] = result.get(op.outcome, 0) + 1
        return result


class NodeProcess:
    """One node subprocess and its stdin/stdout control channel."""

    def __init__(self, name: str, config: Path, log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.config = config
        self.log = log
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.paused = False
        self.starts = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._up: Future[dict[str, Any]] = Future()
        self._log_handle: IO[str] | None = None
        self._reader: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<NodeProcess {self.name} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        """Running (possibly paused)."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, deadline_s: float = DEADLINE_S) -> None:
        """Spawn the process and wait until it has opened its node."""
        assert not self.alive, f"node {self.name} is already running"
        self._up = Future()
        self._log_handle = self.log.open("a")
        self._log_handle.write(f"--- start {self.starts} ---\n")
        self._log_handle.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sessionkeeper_zmq.chaos.control", "--config", str(self.config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_handle,
            text=True,
            bufsize=1,
            env=self.env,
        )
        self.starts += 1
        self.paused = False
        self._reader = threading.Thread(
            target=self._read, args=(self.proc,), name=f"chaos-{self.name}", daemon=True
        )
        self._reader.start()
        try:
            self._up.result(deadline_s)
        except FutureTimeout:
            raise AssertionError(
                f"node {self.name} did not come up within {deadline_s} s (log: {self.log})"
            ) from None

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "event" in message:
                if not self._up.done():
                    self._up.set_result(message)
                continue
            with self._lock:
                future = self._pending.pop(message.get("id"), None)
            if future is not None and not future.done():
                future.set_result(message)
        proc.stdout.close()
        lost = {"ok": False, "error": "lost", "message": f"node {self.name} went away"}
        with self._lock:
            pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_result(dict(lost))
        if not self._up.done():
            self._up.set_exception(AssertionError(f"node {self.name} exited (log: {self.log})"))

    def submit(self, op: str, **fields: Any) -> Future[dict[str, Any]]:
        """Send a request; the future's result is the answer (``error: lost`` if none comes)."""
        future: Future[dict[str, Any]] = Future()
        proc = self.proc
        if proc is None or proc.poll() is not None or proc.stdin is None:
            future.set_result({"ok": False, "error": "lost", "message": "node not running"})
            return future
        request_id = next(self._ids)
        with self._lock:
            self._pending[request_id] = future
        line = json.dumps({"id": request_id, "op": op, **fields}) + "\n"
        try:
            with self._lock:
                proc.stdin.write(line)
                proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            with self._lock:
                self._pending.pop(request_id, None)
            if not future.done():
                future.set_result({"ok": False, "error": "lost", "message": "node not running"})
        return future

    def request(self, op: str, timeout_s: float = ANSWER_S, **fields: Any) -> dict[str, Any]:
        """Send a request and wait for its answer (``error: lost`` after ``timeout_s``)."""
        try:
            return self.submit(op, **fields).result(timeout_s)
        except FutureTimeout:
            return {"ok": False, "error": "lost", "message": f"no answer in {timeout_s} s"}

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """A request that must succeed (harness bookkeeping, not a recorded operation)."""
        answer = self.request(op, **fields)
        if not answer.get("ok"):
            raise AssertionError(f"node {self.name}: {op} failed: {answer}")
        return answer

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.proc is not None:
            if self.paused:
                self.signal(signal.SIGCONT)
            self.signal(signal.SIGKILL)
            self._reap()

    def pause(self) -> None:
        """SIGSTOP: the whole process freezes, ZeroMQ's I/O threads included."""
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT."""
        self.signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        """Close stdin (the node shuts down cleanly); SIGKILL if it does not exit."""
        proc = self.proc
        if proc is None:
            return
        if self.paused:
            self.resume()
        if proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        self._reap()

    def _reap(self) -> None:
        proc = self.proc
        if proc is None:
            return
        proc.wait()
        if proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()
        if self._reader is not None:
            self._reader.join(10)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        self.paused = False


#: Options of every harness node: fast failure detection and anti-entropy for short tests.
FAST_OPTIONS: dict[str, Any] = {
    "ack": "quorum",
    "ready_timeout_ms": 0,
    "heartbeat_ms": 100,
    "suspect_after_ms": 1_000,
    "write_timeout_ms": 3_000,
    "anti_entropy_ms": 1_000,
}


class ChaosCluster:
    """``size`` node subprocesses (a, b, c, …) with a fault proxy on every directed link.

    :param directory: where keys, configs, data directories and node logs go.
    :param size: how many nodes.
    :param disc: ``disc_copies`` on every node.
    :param skew_ms: starting clock offset per node (``{"b": 2000}``).
    :param options: ``backend_opts`` overriding :data:`FAST_OPTIONS`.
    """

    def __init__(
        self,
        directory: Path,
        *,
        size: int = 3,
        disc: bool = False,
        skew_ms: dict[str, int] | None = None,
        **options: Any,
    ) -> None:
        self.directory = directory
        self.names = list("abcde"[:size])
        self.disc = disc
        self.skew_ms = dict(skew_ms or {})
        self.options = {**FAST_OPTIONS, **options}
        self.history = History()
        self.hub = ProxyHub()
        self.nodes: dict[str, NodeProcess] = {}
        self.links: dict[tuple[str, str], LinkProxy] = {}
        for name in self.names:
            if not (directory / f"{name}.key").exists():
                write_key_pair(directory, name)

    def __enter__(self) -> ChaosCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- setup ------------------------------------------------------------------------------------

    def _configure(self) -> None:
        ports = dict(zip(self.names, free_ports(len(self.names)), strict=True))
        self.ports = ports
        for source in self.names:
            for target in self.names:
                if source != target:
                    self.links[source, target] = self.hub.add(ports[target], f"{source}->{target}")
        for name in self.names:
            # Peers are reached through this node's proxies; its own entry is where it binds.
            nodes = [
                {
                    "id": other,
                    "endpoint": "tcp://127.0.0.1:"
                    + str(ports[name] if other == name else self.links[name, other].port),
                    "public_key": public_key(self.directory, other),
                }
                for other in self.names
            ]
            opts: dict[str, Any] = {
                "node_id": name,
                "nodes": nodes,
                "bind": f"tcp://127.0.0.1:{ports[name]}",
                "secret_key_file": str(self.directory / f"{name}.key_secret"),
                **self.options,
            }
            if self.disc:
                opts.update(disc_copies=True, data_dir=str(self.directory / f"data-{name}"))
            lines = ["[sessionkeeper]", 'backend = "zmq"', "cleanup_interval = 1000", ""]
            lines.append("[sessionkeeper.backend_opts]")
            lines += [f"{key} = {toml_value(value)}" for key, value in opts.items()]
            config = self.directory / f"{name}.toml"
            config.write_text("\n".join(lines) + "\n")
            env = dict(os.environ)
            env[CLOCK_OFFSET_ENV] = str(self.skew_ms.get(name, 0))
            self.nodes[name] = NodeProcess(name, config, self.directory / f"{name}.log", env)

    def start(self) -> ChaosCluster:
        """Spawn every node and wait until the cluster is settled.

        Free ports are found by binding port 0 and releasing it, so another socket (a proxy's
        outgoing connection, say) can take one before its node binds it: a node that fails to
        start with "Address already in use" is retried on fresh ports, twice at most.
        """
        for attempt in range(3):
            self._configure()
            try:
                for node in self.nodes.values():
                    node.start()
            except AssertionError:
                if attempt == 2 or not self._lost_a_port():
                    raise
                self.close()
                self.hub = ProxyHub()
                self.links.clear()
                self.nodes.clear()
                continue
            break
        self.wait_settled()
        return self

    def _lost_a_port(self) -> bool:
        """Whether a node's log shows it could not bind its port."""
        return any(
            "Address already in use" in node.log.read_text(errors="replace")
            for node in self.nodes.values()
            if node.log.exists()
        )

    def close(self) -> None:
        """Stop every node and proxy. Idempotent."""
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                if node.alive:
                    node.stop()
                else:
                    node._reap()  # an exited node still holds its pipes and its log file
        self.hub.close()

    # -- observing --------------------------------------------------------------------------------

    def up(self) -> list[str]:
        """Nodes running and not paused."""
        return [n for n, node in self.nodes.items() if node.alive and not node.paused]

    def state(self, name: str) -> dict[str, Any]:
        """The backend stats of node ``name``."""
        stats: dict[str, Any] = self.nodes[name].call("state")["stats"]
        return stats

    def wait_settled(self, names: Iterable[str] | None = None, deadline_s: float = 60) -> None:
        """Wait until the given nodes (default: all) are ready and see each other connected."""
        wanted = list(names or self.names)

        def settled() -> bool:
            for name in wanted:
                stats = self.state(name)
                if not stats["ready"]:
                    return False
                peers = stats["peers"]
                if not all(peers[other]["connected"] for other in wanted if other != name):
                    return False
            return True

        self._wait(settled, f"nodes {', '.join(wanted)} to be ready and connected", deadline_s)

    def _wait(self, condition: Callable[[], Any], what: str, deadline_s: float) -> Any:
        """:func:`~sessionkeeper_zmq.testing.wait_for`, every 0.1 s (the state of a node is
        a request to its process), the failure naming where the node logs are."""
        return wait_for(
            condition, f"{what} (node logs in {self.directory})", deadline_s, interval_s=0.1
        )

    def digests(self) -> dict[str, str]:
        """Each running node's digest."""
        return {name: self.state(name)["digest"] for name in self.up()}

    def dumps(self) -> dict[str, dict[str, Any]]:
        """Every node's ``dump``: entries, digest and clock."""
        return {name: self.nodes[name].call("dump") for name in self.names}

    def wait_converged(self, deadline_s: float = 60) -> dict[str, dict[str, Any]]:
        """Wait until every node holds the same entries; return each node's ``dump``.

        After the deadline the dumps are returned anyway: the checker then reports how the
        nodes differ.
        """
        assert sorted(self.up()) == self.names, f"not every node is up: {self.up()}"
        end = time.monotonic() + deadline_s
        while True:
            if len(set(self.digests().values())) == 1:
                dumps = self.dumps()
                if len({json.dumps(d["entries"]) for d in dumps.values()}) == 1:
                    return dumps
            if time.monotonic() > end:
                return self.dumps()
            time.sleep(0.1)

    # -- operations (recorded) --------------------------------------------------------------------

    def create(
        self, node: str, key: str, *, ack: str | int | None = None, timeout: int | None = None
    ) -> Op:
        """Store a new session ``key`` on ``node`` (a fresh write id in its metadata)."""
        op = self.history.add(
            Op("create", node, key, wall_ms(), w=self.history.new_w(), ack=ack, timeout=timeout)
        )
        answer = self.nodes[node].request("create", key=key, w=op.w, ack=ack, timeout=timeout)
        return self._finish(op, answer)

    def delete(self, node: str, key: str, *, ack: str | int | None = None) -> Op:
        """Delete ``key`` on ``node``."""
        op = self.history.add(Op("delete", node, key, wall_ms(), ack=ack))
        return self._finish(op, self.nodes[node].request("delete", key=key, ack=ack))

    def read(self, node: str, key: str, kind: str = "peek") -> Op:
        """``peek``, ``fetch`` (touches when due) or ``touch`` ``key`` on ``node``."""
        op = self.history.add(Op(kind, node, key, wall_ms()))
        return self._finish(op, self.nodes[node].request(kind, key=key))

    def _finish(self, op: Op, answer: dict[str, Any]) -> Op:
        op.end = wall_ms()
        if answer.get("ok"):
            op.outcome = "ok"
        else:
            op.outcome = answer.get("error", "error")
            op.message = answer.get("message", "")
        version = answer.get("version")
        if version:
            op.version = (version[0], version[1])
        elif op.kind == "delete" and op.outcome == "ok":
            op.outcome = "absent"
        if "found" in answer:
            op.found = answer["found"]
            if op.found:
                op.served_w, op.la, op.timeout = answer["w"], answer["la"], answer["timeout"]
        if op.kind == "create" and "la" in answer:
            op.la = answer["la"]
        op.node_now = answer.get("now")
        return op

    # -- faults -----------------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL node ``name``."""
        self.nodes[name].kill()

    def restart(self, name: str) -> None:
        """Start node ``name`` again with the same config (after :meth:`kill`)."""
        self.nodes[name].start()

    def pause(self, name: str) -> None:
        """SIGSTOP node ``name``."""
        self.nodes[name].pause()

    def resume(self, name: str) -> None:
        """SIGCONT node ``name``."""
        self.nodes[name].resume()

    def cut(self, a: str, b: str) -> None:
        """Partition ``a`` and ``b`` from each other (both connections, both directions)."""
        self.links[a, b].cut()
        self.links[b, a].cut()

    def cut_one_way(self, source: str, target: str) -> None:
        """Nothing ``source`` sends reaches ``target``; the other way still works."""
        self.links[source, target].cut(forward=True, backward=False)
        self.links[target, source].cut(forward=False, backward=True)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between nodes of different groups."""
        sides = [set(group) for group in groups]
        for a, b in itertools.combinations(self.names, 2):
            if not any(a in side and b in side for side in sides):
                self.cut(a, b)

    def delay(self, delay_ms: int, jitter_ms: int = 0) -> None:
        """Delay every link."""
        for link in self.links.values():
            link.set_delay(delay_ms, jitter_ms)

    def heal(self) -> None:
        """Lift every link fault."""
        for link in self.links.values():
            link.heal()

    def skew(self, name: str, offset_ms: int) -> None:
        """Shift node ``name``'s clock by ``offset_ms`` from now on."""
        self.nodes[name].call("skew", offset_ms=offset_ms)
        self.skew_ms[name] = offset_ms

    def message_faults(self, name: str, drop: float = 0.0, duplicate: float = 0.0) -> None:
        """Drop / duplicate node ``name``'s outgoing messages (0, 0: off)."""
        self.nodes[name].call("faults", drop=drop, duplicate=duplicate)

    def heal_all(self, deadline_s: float = 60) -> None:
        """Undo every fault: links, pauses, message faults; start dead nodes; wait settled."""
        self.heal()
        for node in self.nodes.values():
            if node.paused:
                node.resume()
        for node in self.nodes.values():
            if not node.alive:
                node.start()
        for name in self.names:
            self.message_faults(name)
        self.wait_settled(deadline_s=deadline_s)


class Load:
    """Background clients: ``workers`` threads issuing random operations on random nodes.

    Keys come from a pool of ``keys`` ids so stores overwrite and deletes hit; ``ack`` is the
    level of stores and deletes (``None``: the node's default). Start with ``with Load(...)``.
    """

    def __init__(
        self,
        cluster: ChaosCluster,
        *,
        workers: int = 3,
        keys: int = 100,
        ack: str | int | None = None,
        prefix: str = "k",
        mix: tuple[float, float, float] = (0.6, 0.15, 0.25),
        timeout: int | None = None,
        seed: int | None = None,
    ) -> None:
        self.cluster = cluster
        self.workers = workers
        self.keys = [f"{prefix}{i}" for i in range(keys)]
        self.ack = ack
        self.mix = mix
        self.timeout = timeout
        self.rng = random.Random(seed)  # noqa: S311 - test data
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def __enter__(self) -> Load:
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop issuing and wait for the operations in flight to end."""
        self._stop.set()
        for thread in self._threads:
            thread.join(ANSWER_S + 10)
        if self.errors:
            raise self.errors[0]

    def _work(self, index: int) -> None:
        rng = random.Random(self.rng.random())  # noqa: S311 - test data
        cluster = self.cluster
        create_p, delete_p, _ = self.mix
        try:
            while not self._stop.is_set():
                nodes = cluster.up()
                if not nodes:
                    time.sleep(0.05)
                    continue
                node = rng.choice(nodes)
                key = rng.choice(self.keys)
                roll = rng.random()
                if roll < create_p:
                    cluster.create(node, key, ack=self.ack, timeout=self.timeout)
                elif roll < create_p + delete_p:
                    cluster.delete(node, key, ack=self.ack)
                else:
                    cluster.read(node, key, rng.choice(("peek", "fetch")))
        except BaseException as exc:  # surfaced by stop()
            self.errors.append(exc)


def ops_between(history: History, start: int, end: int, kind: str = "create") -> Iterator[Op]:
    """Operations of ``kind`` that started at or after ``start`` and ended by ``end`` (ms)."""
    for op in history.of(kind):
        if op.start >= start and op.end and op.end <= end:
            yield op
