"""Benchmarks of the ``zmq`` cluster backend: 3 nodes on loopback (targets: docs/backends.md).

Run ``python tests/benchmarks/bench_zmq.py [--quick] [--json PATH] [--strict]`` (pytest never
does; ``--json DIR`` writes ``DIR/zmq.json``). Node ``a`` runs in this process (it is the node
the application uses); ``b`` and ``c`` run as subprocesses (``python -m
sessionkeeper_zmq.node``), all with CURVE on, on 127.0.0.1. Figures, each beside its floor
measured in the same run:

- local read: ``fetch`` through the SessionManager on node a, random order, against the same on
  the ``memory`` backend (target ≤ 2 µs);
- write, ``ack = local`` and ``ack = quorum``: p50 / p99 from one writer, writes/s from one writer
  and from 8 writer threads, and for quorum pipelined from one thread with 256 writes in flight
  (``store_nowait``), against a raw ZeroMQ DEALER→ROUTER round trip to an echo subprocess over
  CURVE (target quorum p50 ≤ 300 µs, ≥ 20k writes/s pipelined);
- node kill: SIGKILL of b under a quorum write loop; the longest write stall and the time until
  writes succeed again (target: continue within 2 s);
- migrate in: ``migrate_sessions`` of 20,000 sessions (4,000 with ``--quick``) from a
  sqlitedict file into node a at ``ack = quorum`` (copy and verification), beside the blocking
  one-writer quorum rate above;
- disc rejoin under load: c restarted with disc copies, then SIGKILLed while a writer keeps
  about 4,000 quorum writes/s on a; once 10,000 writes (2,000 with ``--quick``) went on
  without it, c is restarted under the same load: whether it caught up by delta from the peers'
  backlogs (``by_delta``: "moves only what changed", the target), the time to reload its log
  (spawn to first status line), to catch up (first status line to ready) and until it holds
  every write made before it was ready;
- admin socket: ``list``, ``count`` and a full ``iter_sessions`` of 10,000 sessions read
  through node b's admin socket (what ``sessionkeeper list/stats/export`` do on a running
  cluster), beside the same calls on node a in this process;
- rejoin: SIGKILL of c holding 100,000 sessions (10,000 with ``--quick``) and a restart; the time
  from the restarted process's first status line to ready, and from spawn to ready (target ≤ 5 s).
"""

from __future__ import annotations

import json
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _bench
import zmq
import zmq.auth

from sessionkeeper import Session, SessionManager
from sessionkeeper_zmq import write_key_pair
from sessionkeeper_zmq.testing import free_ports, public_key, wait_for

START = 1_700_000_000_000


class Clock:
    """An injected clock for the local-read figures."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


class Cluster:
    """Node a in this process, b and c as subprocesses."""

    def __init__(self, directory: Path, ack: str) -> None:
        self.directory = directory
        for name in "abc":
            if not (directory / f"{name}.key").exists():
                write_key_pair(directory, name)
        ports = free_ports(3)
        self.nodes = [
            {
                "id": name,
                "endpoint": f"tcp://127.0.0.1:{port}",
                "public_key": public_key(directory, name),
            }
            for name, port in zip("abc", ports, strict=True)
        ]
        self.ack = ack
        #: Per-node option changes (e.g. disc copies for c).
        self.changes: dict[str, dict[str, Any]] = {}
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.a: SessionManager | None = None

    def opts(self, name: str, **changes: Any) -> dict[str, Any]:
        return {
            "node_id": name,
            "nodes": self.nodes,
            "ack": self.ack,
            "secret_key_file": str(self.directory / f"{name}.key_secret"),
            "ready_timeout_ms": 0,
            "write_timeout_ms": 5_000,
            **self.changes.get(name, {}),
            **changes,
        }

    def spawn(self, name: str) -> subprocess.Popen[str]:
        config = self.directory / f"{name}.toml"
        lines = ["[sessionkeeper]", 'backend = "zmq"', "cleanup_interval = 0", ""]
        lines.append("[sessionkeeper.backend_opts]")
        lines += [f"{k} = {toml_value(v)}" for k, v in self.opts(name).items()]
        config.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "sessionkeeper_zmq.node", "--config", str(config)),
                *("--status-interval", "0.02"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.procs[name] = proc
        return proc

    def start(self) -> SessionManager:
        for name in "bc":
            self.spawn(name)
        self.a = SessionManager(
            backend="zmq", backend_opts=self.opts("a"), cleanup_interval=0, default_timeout=None
        )
        agent: Any = self.a.backend.agent
        wait_for(
            lambda: (
                self.a is not None
                and self.a.backend.ready
                and all(p.connected and p.ready for p in agent.peers.values())
            ),
            "the cluster",
            120,
        )
        return self.a

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        proc.wait()

    def spawn_until_ready(
        self, name: str, on_first_line: Callable[[], object] = lambda: None
    ) -> tuple[float, float, dict[str, Any]]:
        """Spawn ``name``; return (spawned, first status line, ready) times and the figures
        of its first ready status line (its output is drained from then on). ``on_first_line``
        is called when the first status line comes (the node has loaded its log)."""
        spawned = time.perf_counter()
        proc = self.spawn(name)
        assert proc.stdout is not None
        first_line = None
        for line in proc.stdout:
            stamp = time.perf_counter()
            if first_line is None:
                first_line = stamp
                on_first_line()
            figures = json.loads(line)
            if figures.get("ready"):
                threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining
                assert first_line is not None
                return first_line - spawned, stamp - first_line, figures
        raise RuntimeError(f"node {name} exited before it was ready")

    def close(self) -> None:
        if self.a is not None:
            self.a.close()
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_local_read(a: SessionManager, n: int) -> dict[str, Any]:
    """fetch on node a vs the memory backend, random order, median of 5 passes."""
    ids = [f"read-{i}" for i in range(n)]
    clock = Clock()
    memory = SessionManager(backend="memory", cleanup_interval=0, clock=clock)
    a_backend: Any = a.backend
    # last_accessed ahead of the clock: no fetch below writes a touch back (a touch is a
    # write, measured separately), however long the passes take.
    now = int(time.time() * 1000) + 10 * 86_400_000
    for sid in ids:  # fill node a's replica directly at ack=local speed
        session = Session(sid, now, now, None)
        a_backend.replica.local_store(session)
        memory.store(session)
    a_backend.agent.wake()
    agent = a_backend.agent
    wait_for(
        lambda: all(p.acked >= a_backend.replica.seq for p in agent.peers.values()), "sync", 300
    )
    order = ids[:]
    random.shuffle(order)

    def timed(fetch: Callable[[str], Session]) -> float:
        passes = []
        for _ in range(5):
            start = time.perf_counter()
            for sid in order:
                fetch(sid)
            passes.append((time.perf_counter() - start) / len(order) * 1e6)
        return statistics.median(passes)

    # a.fetch reads the system clock: give memory the same kind of clock for fairness.
    memory_sys = SessionManager(backend="memory", cleanup_interval=0)
    for sid in ids:
        memory_sys.store(Session(sid, now, now, None))
    zmq_us = timed(a.fetch)
    memory_us = timed(memory_sys.fetch)
    memory.close()
    memory_sys.close()
    return {
        "sessions": n,
        "zmq_fetch_us": round(zmq_us, 3),
        "memory_fetch_us": round(memory_us, 3),
        "ratio": round(zmq_us / memory_us, 2),
        "target_us": 2.0,
        "met": zmq_us <= 2.0,
    }


def echo_round_trip(directory: Path, count: int) -> dict[str, Any]:
    """Raw DEALER -> ROUTER round trips to an echo subprocess over CURVE (the floor)."""
    (port,) = free_ports(1)
    server_public, server_secret = zmq.auth.load_certificate(directory / "b.key_secret")
    script = (
        "import sys, zmq\n"
        "c = zmq.Context(); s = c.socket(zmq.ROUTER)\n"
        f"s.curve_secretkey = {server_secret!r}; s.curve_publickey = {server_public!r}\n"
        "s.curve_server = True\n"
        f"s.bind('tcp://127.0.0.1:{port}')\n"
        "print('up', flush=True)\n"
        "while True:\n"
        "    f = s.recv_multipart()\n"
        "    if f[1] == b'stop': break\n"
        "    s.send_multipart(f)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    public, secret = zmq.auth.load_certificate(directory / "a.key_secret")
    dealer.curve_publickey, dealer.curve_secretkey = public, secret
    dealer.curve_serverkey = server_public
    dealer.connect(f"tcp://127.0.0.1:{port}")
    payload = b"x" * 200
    for _ in range(200):
        dealer.send(payload)
        dealer.recv()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        dealer.send(payload)
        dealer.recv()
        samples.append((time.perf_counter() - start) * 1e6)
    # pipelined: keep 64 in flight
    start = time.perf_counter()
    total = count * 4
    in_flight = 0
    sent = received = 0
    while received < total:
        while in_flight < 64 and sent < total:
            dealer.send(payload)
            sent += 1
            in_flight += 1
        dealer.recv()
        received += 1
        in_flight -= 1
    pipelined = total / (time.perf_counter() - start)
    dealer.send(b"stop")
    proc.wait(10)
    context.destroy(linger=0)
    return {
        "p50_us": round(percentile(samples, 0.5), 1),
        "p99_us": round(percentile(samples, 0.99), 1),
        "round_trips_per_s_pipelined": round(pipelined),
    }


def bench_writes(a: SessionManager, ack: str, count: int, threads: int) -> dict[str, Any]:
    """p50/p99 and writes/s from one writer and from ``threads`` writers at ``ack``."""
    a_backend: Any = a.backend
    level = a_backend.options.ack
    needed = a_backend.options.acks_needed(ack)
    a_backend.set_ack(ack)
    try:
        now = int(time.time() * 1000)
        for i in range(200):
            a.store(Session(f"warm-{ack}-{i}", now, now, None))
        samples = []
        start_all = time.perf_counter()
        for i in range(count):
            session = Session(f"w-{ack}-{i}", now, now, None, {"i": i})
            start = time.perf_counter()
            a.store(session)
            samples.append((time.perf_counter() - start) * 1e6)
        single = count / (time.perf_counter() - start_all)

        per_thread = count // threads

        def writer(t: int) -> None:
            for i in range(per_thread):
                a.store(Session(f"p-{ack}-{t}-{i}", now, now, None, {"i": i}))

        start = _bench.run_together(writer, threads)
        if needed == 1:  # local: count until the peers hold it too
            agent = a_backend.agent
            wait_for(
                lambda: all(p.acked >= a_backend.replica.seq for p in agent.peers.values()),
                "replication",
                120,
            )
        pipelined = per_thread * threads / (time.perf_counter() - start)
    finally:
        a_backend.set_ack(level)
    return {
        "ack": ack,
        "p50_us": round(percentile(samples, 0.5), 1),
        "p99_us": round(percentile(samples, 0.99), 1),
        "writes_per_s_single": round(single),
        "writes_per_s_pipelined": round(pipelined),
        "writer_threads": threads,
    }


def bench_kill(cluster: Cluster, a: SessionManager) -> dict[str, Any]:
    """SIGKILL b under a quorum write loop; longest stall and time to the next success."""
    a_backend: Any = a.backend
    a_backend.set_ack("quorum")
    stop = threading.Event()
    latencies: list[tuple[float, float, bool]] = []

    def loop() -> None:
        i = 0
        now = int(time.time() * 1000)
        while not stop.is_set():
            start = time.perf_counter()
            ok = True
            try:
                a.store(Session(f"k-{i}", now, now, None))
            except Exception:
                ok = False
            latencies.append((start, time.perf_counter(), ok))
            i += 1

    worker = threading.Thread(target=loop)
    worker.start()
    time.sleep(0.5)
    killed_at = time.perf_counter()
    cluster.kill("b")
    time.sleep(2.5)
    stop.set()
    worker.join()
    after = [(s, e, ok) for s, e, ok in latencies if e >= killed_at]
    first_ok = next((e for s, e, ok in after if ok and s >= killed_at), None)
    stall = max((e - s for s, e, _ in after), default=0.0)
    failures = sum(1 for *_, ok in after if not ok)
    resumed = (first_ok - killed_at) if first_ok is not None else None
    return {
        "longest_write_ms_after_kill": round(stall * 1000, 1),
        "first_write_ok_after_kill_ms": round(resumed * 1000, 1) if resumed is not None else None,
        "failed_writes": failures,
        "reads_ok": a.count() > 0,
        "target_s": 2.0,
        "met": resumed is not None and resumed <= 2.0 and stall <= 2.0,
    }


def bench_rejoin(cluster: Cluster, a: SessionManager, n: int) -> dict[str, Any]:
    """Fill to ``n`` sessions, SIGKILL c, restart it, time until it reports ready."""
    a_backend: Any = a.backend
    now = int(time.time() * 1000)
    have = len(a_backend.replica.sessions)
    for i in range(max(0, n - have)):
        a_backend.replica.local_store(Session(f"r-{i}", now, now, None, {"user": i}))
        if i % 1000 == 0:
            a_backend.agent.wake()
    a_backend.agent.wake()
    agent = a_backend.agent
    wait_for(lambda: agent.peers["c"].acked >= a_backend.replica.seq, "c to hold everything", 300)
    cluster.kill("c")
    start_up, catch_up, figures = cluster.spawn_until_ready("c")
    stored = figures["stored"]
    return {
        "sessions": n,
        "stored_when_ready": stored,
        "catch_up_s": round(catch_up, 2),
        "spawn_to_ready_s": round(start_up + catch_up, 2),
        "target_s": 5.0,
        "met": catch_up <= 5.0 and stored >= n,
    }


class PacedWriter:
    """A thread storing on node a at about ``rate`` writes/s (quorum, up to 256 in flight,
    ``store_nowait``), until stopped: the load a rejoining node catches up under.

    A write that fails is counted by exception type and by the phase it failed in (see
    :meth:`mark`): a figure of failed writes says what they were and when."""

    def __init__(self, a: SessionManager, rate: int, prefix: str) -> None:
        self.backend: Any = a.backend
        self.rate = rate
        self.prefix = prefix
        self.written = 0
        self.failed = 0
        #: ``(phase, exception type) -> count`` of the failed writes.
        self.failures: dict[tuple[str, str], int] = {}
        #: One message of each exception type, as raised.
        self.examples: dict[str, str] = {}
        self.phase = "before the kill"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-writer", daemon=True)
        self.began = self.ended = 0.0

    def mark(self, phase: str) -> None:
        """From now on, failures count in ``phase``."""
        self.phase = phase

    def start(self) -> None:
        self.began = time.perf_counter()
        self._thread.start()

    def stop(self) -> float:
        """Stop, wait for the writes in flight; return the writes/s achieved."""
        self._stop.set()
        self._thread.join()
        return self.written / (self.ended - self.began)

    def report(self) -> dict[str, Any]:
        """The failed writes: ``{phase: {exception type: count}}`` and one message of each."""
        phases: dict[str, dict[str, int]] = {}
        for (phase, kind), count in self.failures.items():
            phases.setdefault(phase, {})[kind] = count
        return {"by_phase": phases, "examples": self.examples}

    def _failed(self, phase: str, exc: Exception) -> None:
        self.failed += 1
        kind = type(exc).__name__
        key = (phase, kind)
        self.failures[key] = self.failures.get(key, 0) + 1
        self.examples.setdefault(kind, str(exc)[:300])

    def _run(self) -> None:
        pending: deque[tuple[str, Any]] = deque()  # (phase when stored, the write)
        now = int(time.time() * 1000)
        while not self._stop.is_set():
            due = int((time.perf_counter() - self.began) * self.rate) - self.written
            if due <= 0:
                time.sleep(0.001)
                continue
            phase = self.phase
            for _ in range(min(due, 256)):
                session = Session(f"{self.prefix}-{self.written}", now, now, None, {"n": 1})
                try:
                    pending.append((phase, self.backend.store_nowait(session, "quorum")))
                except Exception as exc:
                    self._failed(phase, exc)
                self.written += 1
            while len(pending) > 256:
                self._settle(pending.popleft())
        while pending:
            self._settle(pending.popleft())
        self.ended = time.perf_counter()

    def _settle(self, item: tuple[str, Any]) -> None:
        phase, write = item
        try:
            write.wait()
        except Exception as exc:
            self._failed(phase, exc)


def bench_disc_rejoin(
    cluster: Cluster, a: SessionManager, missed: int, rate: int = 4_000
) -> dict[str, Any]:
    """c with disc copies: SIGKILLed while a writer keeps ``rate`` writes/s on a, restarted
    once ``missed`` writes went on without it, under the same load: it reloads its log and
    takes what it missed from the peers' backlogs (delta) while the stream goes on. Reported:
    whether it caught up by delta (no snapshot), the reload and catch-up times, and the time
    until it holds every write made before it was ready."""
    a_backend: Any = a.backend
    agent = a_backend.agent
    cluster.kill("c", signal.SIGTERM)
    cluster.changes["c"] = {
        "disc_copies": True,
        "data_dir": str(cluster.directory / "c-data"),
        "fsync": "group",
    }
    cluster.spawn_until_ready("c")  # the first start takes a snapshot and logs it
    wait_for(lambda: agent.peers["c"].acked >= a_backend.replica.seq, "c to hold everything", 300)
    time.sleep(1.5)  # c records its stream positions every second
    writer = PacedWriter(a, rate, "disc")
    writer.start()
    time.sleep(0.5)  # the load is on before c goes down
    cluster.kill("c")
    writer.mark("c down")
    down_from = writer.written
    wait_for(lambda: writer.written - down_from >= missed, "the writes c misses", 300)
    while_down = writer.written - down_from
    writer.mark("c reloading its log")
    start_up, catch_up, figures = cluster.spawn_until_ready(
        "c", lambda: writer.mark("c catching up")
    )
    writer.mark("c ready")
    ready_seq = a_backend.replica.seq
    ready_at = time.perf_counter()
    wait_for(lambda: agent.peers["c"].acked >= ready_seq, "c to hold what was written", 300)
    holds_after = time.perf_counter() - ready_at
    time.sleep(0.5)  # and it keeps up with the stream
    achieved = writer.stop()
    by_delta = figures.get("deltas_taken", 0) >= 1 and figures.get("syncs_taken", 0) == 0
    return {
        "writes_per_s_target": rate,
        "writes_per_s": round(achieved),
        "writes_ok_per_s": round(achieved * (1 - writer.failed / max(1, writer.written))),
        "write_failures": writer.failed,
        "write_failures_by_phase": writer.report(),
        "missed_while_down": while_down,
        "stored_when_ready": figures["stored"],
        "log_reload_s": round(start_up, 2),
        "catch_up_s": round(catch_up, 2),
        "holds_every_earlier_write_s": round(holds_after, 2),
        "deltas_taken": figures.get("deltas_taken", 0),
        "syncs_taken": figures.get("syncs_taken", 0),
        "by_delta": by_delta,
        "met": by_delta,
    }


def bench_admin(cluster: Cluster, a: SessionManager, n: int, runs: int = 5) -> dict[str, Any]:
    """What reading a running node through its admin socket costs (what ``sessionkeeper
    list/stats/export`` do), against the same read on a node in its own process: ``n``
    sessions on every node; ``list``, ``count`` and a full ``iter_sessions`` (an export's
    read) through node b's admin socket (b a separate process) beside the same call on node a.
    Medians of ``runs``; opening the read-only manager (connect and greeting) timed once."""
    a_backend: Any = a.backend
    agent = a_backend.agent
    now = int(time.time() * 1000)
    for i in range(n):
        a_backend.replica.local_store(Session(f"adm-{i}", now, now, None, {"user": i}))
        if i % 1000 == 0:
            agent.wake()
    agent.wake()
    wait_for(
        lambda: all(p.acked >= a_backend.replica.seq for p in agent.peers.values()),
        "b and c to hold the sessions",
        300,
    )

    def median(call: Callable[[], object]) -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    start = time.perf_counter()
    reader = SessionManager(backend="zmq", backend_opts=cluster.opts("b"), read_only=True)
    opened = time.perf_counter() - start
    try:
        assert len(reader.list()) == len(a.list())
        figures = {
            "sessions": len(a.list()),
            "open_ms": round(opened * 1000, 2),
        }
        for name, call_admin, call_node in (
            ("list", reader.list, a.list),
            ("count", reader.count, a.count),
            (
                "iter_sessions",
                lambda: list(reader.iter_sessions()),
                lambda: list(a.iter_sessions()),
            ),
        ):
            via_admin, on_node = median(call_admin), median(call_node)
            figures[name] = {
                "admin_ms": round(via_admin * 1000, 3),
                "node_ms": round(on_node * 1000, 3),
                "ratio": round(via_admin / on_node, 1),
            }
    finally:
        reader.close()
    return figures


def bench_nowait(a: SessionManager, ack: str, count: int, window: int = 256) -> dict[str, Any]:
    """Writes/s from one thread keeping up to ``window`` writes in flight (``store_nowait``),
    waiting on the oldest half whenever the window is full: pipelining without threads."""
    a_backend: Any = a.backend
    now = int(time.time() * 1000)
    pending: deque[Any] = deque()
    start = time.perf_counter()
    for i in range(count):
        pending.append(a_backend.store_nowait(Session(f"n-{ack}-{i}", now, now, None), ack))
        if len(pending) >= window:
            for _ in range(window // 2):
                pending.popleft().wait()
    while pending:
        pending.popleft().wait()
    return {
        "writes_per_s": round(count / (time.perf_counter() - start)),
        "in_flight": window,
    }


def bench_migrate_in(a: SessionManager, directory: Path, n: int) -> dict[str, Any]:
    """``migrate_sessions`` from a sqlitedict file of ``n`` sessions into node a at quorum:
    batches of ``store_many`` wait once each for their acknowledgements."""
    from sessionkeeper.transfer import migrate_sessions

    a_backend: Any = a.backend
    a_backend.set_ack("quorum")
    now = int(time.time() * 1000)
    opts = {"file_path": str(directory / "source.sqlite"), "auto_save": 0}
    with SessionManager(backend="sqlitedict", backend_opts=opts, cleanup_interval=0) as source:
        source.store_many(
            Session(f"m-{i}", now, now, 3_600_000, {"user": i, "role": "member"}) for i in range(n)
        )
        start = time.perf_counter()
        report = migrate_sessions(source, a)
        seconds = time.perf_counter() - start
    return {
        "sessions": n,
        "copied": report.copied,
        "verified": report.verified,
        "seconds": round(seconds, 2),
        "sessions_per_s": round(n / seconds),
    }


def save(results: dict[str, Any], path: Path) -> Path:
    """Write the figures as JSON to ``path`` (``zmq.json`` in it if a directory); return
    where they went."""
    return _bench.write_json(path, "zmq", results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _bench.arguments(__doc__, "zmq", quick_help="smaller sizes")
    args = parser.parse_args(argv)
    if args.json is not None and not (args.json.is_dir() or args.json.parent.is_dir()):
        parser.error(f"--json {args.json}: no such directory {args.json.parent}")
    reads = 20_000 if args.quick else 200_000
    writes = 1_000 if args.quick else 5_000
    rejoin = 10_000 if args.quick else 100_000
    began = time.perf_counter()
    results: dict[str, Any] = {**_bench.about(pyzmq=zmq.__version__), "quick": args.quick}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        cluster = Cluster(directory, "quorum")
        try:
            a = cluster.start()
            results["admin"] = bench_admin(cluster, a, 10_000)
            results["raw_zmq_round_trip"] = echo_round_trip(directory, writes)
            results["write_local"] = bench_writes(a, "local", writes, 8)
            results["write_quorum"] = bench_writes(a, "quorum", writes, 8)
            results["write_quorum"]["nowait"] = bench_nowait(a, "quorum", writes * 4)
            results["migrate_in"] = bench_migrate_in(a, directory, writes * 4)
            results["local_read"] = bench_local_read(a, reads)
            results["rejoin"] = bench_rejoin(cluster, a, rejoin)
            results["disc_rejoin"] = bench_disc_rejoin(cluster, a, writes * 2)
            results["node_kill"] = bench_kill(cluster, a)
        finally:
            cluster.close()
    floor = results["raw_zmq_round_trip"]
    quorum = results["write_quorum"]
    results["write_quorum"]["p50_vs_raw_round_trip"] = round(quorum["p50_us"] / floor["p50_us"], 2)
    # "Pipelined" is one thread with many writes in flight (store_nowait); the figure from
    # blocking writer threads is reported beside it.
    results["write_quorum"]["targets"] = {"p50_us": 300, "nowait.writes_per_s": 20_000}
    results["write_quorum"]["met"] = (
        quorum["p50_us"] <= 300 and quorum["nowait"]["writes_per_s"] >= 20_000
    )
    results["seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(results, indent=2))
    if args.json is not None:
        print(f"figures written to {save(results, args.json)}")
    missed = [
        name
        for name in ("local_read", "write_quorum", "node_kill", "rejoin", "disc_rejoin")
        if not results[name]["met"]
    ]
    if missed:
        print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
