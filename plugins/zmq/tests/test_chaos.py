"""Fault injection: 3 node subprocesses behind TCP fault proxies, judged by the checker.

Each scenario runs a real cluster (``sessionkeeper_zmq.chaos.ChaosCluster``: CURVE on,
127.0.0.1, one proxy per directed link), drives operations through the nodes' control channels
while injecting faults, then heals everything, waits until every node holds the same entries and
runs ``check``: acknowledged writes survive or are superseded, no refused or invented value is
visible, no deleted session comes back, no expired session is served, all nodes agree.

The default run uses short phases (a few seconds each). ``SESSIONKEEPER_CHAOS_SECONDS=N`` (as
``nox -s chaos`` sets) adds the long variants: minutes of random faults in RAM and disc modes,
and 5 s pauses. Conditions are awaited with generous deadlines; nothing asserts a timing.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
import zmq.auth

from sessionkeeper_zmq import write_key_pair
from sessionkeeper_zmq.chaos import ChaosCluster, Load, check, winners_are_the_largest_versions
from sessionkeeper_zmq.chaos.harness import ops_between, wall_ms
from sessionkeeper_zmq.testing import wait_for

#: Seconds of random faults per long scenario (0: the default, short suite only).
CHAOS_SECONDS = float(os.environ.get("SESSIONKEEPER_CHAOS_SECONDS", "0") or 0)
LONG = CHAOS_SECONDS > 0
PAUSES = [1.0, 5.0] if LONG else [1.0]
#: Random faults in RAM mode by default; RAM and disc in the long run.
MODES = [False, True] if LONG else [False]
MODE_IDS = {False: "ram", True: "disc"}

ClusterFactory = Callable[..., ChaosCluster]


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Start a ChaosCluster in ``tmp_path`` (``chaos(**options)``); stopped at teardown."""
    made: list[ChaosCluster] = []

    def make(**options: Any) -> ChaosCluster:
        cluster = ChaosCluster(tmp_path, **options)
        made.append(cluster)
        return cluster.start()

    yield make
    for cluster in made:
        cluster.close()


def settle_and_check(cluster: ChaosCluster, **check_options: Any) -> dict[str, Any]:
    """Heal every fault, wait for convergence, run the checker; return the dumps."""
    cluster.heal_all()
    dumps = cluster.wait_converged()
    problems = check(cluster.history, dumps, **check_options)
    assert problems == [], "\n".join(problems[:20])
    return dumps


def acked_creates(cluster: ChaosCluster, start: int, end: int, nodes: str) -> int:
    """Creates on ``nodes`` acknowledged that ran entirely within ``[start, end]``."""
    return sum(
        1
        for op in ops_between(cluster.history, start, end)
        if op.node in nodes and op.outcome == "ok"
    )


def acked_deletes(cluster: ChaosCluster, start: int) -> int:
    """Deletes acknowledged that started at or after ``start`` and have ended."""
    return sum(
        1 for op in ops_between(cluster.history, start, wall_ms(), "delete") if op.outcome == "ok"
    )


class TestNodeLoss:
    """F1/F3/F6: SIGKILL of a node under write load; the survivors go on, it comes back."""

    @pytest.mark.parametrize("disc", [False, True], ids=["ram", "disc"])
    def test_sigkill_under_write_load(self, chaos: ClusterFactory, disc: bool) -> None:
        """c is SIGKILLed under quorum writes; a and b keep acknowledging writes; c restarts
        (RAM: empty, takes a snapshot; disc: reloads its log, then the peers resend what it
        missed from their backlogs) and every acknowledged write is on every node."""
        cluster = chaos(disc=disc)
        with Load(cluster, workers=3):
            time.sleep(1.0)
            cluster.kill("c")
            killed = wall_ms()
            time.sleep(1.5)
            wait_for(
                lambda: acked_creates(cluster, killed, wall_ms(), "ab") >= 5,
                "quorum writes on a and b after the kill",
            )
            cluster.restart("c")
            time.sleep(1.0)
        settle_and_check(cluster)
        stats = cluster.state("c")
        if disc:
            assert stats["wal"]["loaded_records"] > 0
            assert stats["deltas_taken"] >= 1
        else:
            assert stats["syncs_taken"] >= 1


class TestRejoin:
    """F3/F4: restart and rejoin while writes and deletes continue."""

    def test_restart_while_writes_and_deletes_continue(self, chaos: ClusterFactory) -> None:
        """b is killed; writes and deletes go on; b restarts under load, catches up and is
        ready; no delete made while it was down is undone, nothing acknowledged is lost."""
        cluster = chaos()
        with Load(cluster, workers=3, keys=60, mix=(0.45, 0.35, 0.2)):
            time.sleep(0.8)
            cluster.kill("b")
            down = wall_ms()
            time.sleep(1.5)
            # On a loaded machine the first writes after the kill may wait out their timeout:
            # wait (generously) for a delete acknowledged while b is down.
            wait_for(lambda: acked_deletes(cluster, down) > 0, "a delete while b is down", 120)
            cluster.restart("b")
            cluster.wait_settled()
            time.sleep(0.5)
        assert acked_deletes(cluster, down) > 0, "no delete was acknowledged while b was away"
        settle_and_check(cluster)
        assert cluster.state("b")["syncs_taken"] >= 1

    def test_fast_restart_before_suspicion(self, chaos: ClusterFactory) -> None:
        """A node killed and restarted at once (before its peers suspect it) is taken back
        (same routing id, new incarnation) and catches up."""
        cluster = chaos()
        with Load(cluster, workers=2):
            time.sleep(0.5)
            cluster.kill("a")
            cluster.restart("a")
            time.sleep(1.0)
        settle_and_check(cluster)


class TestPause:
    """F7: SIGSTOP freezes a node (ZeroMQ's I/O threads too); it resumes with stale state."""

    @pytest.mark.parametrize("pause_s", PAUSES)
    def test_sigstop_pause(self, chaos: ClusterFactory, pause_s: float) -> None:
        """While c is stopped, a and b acknowledge quorum writes; after SIGCONT, c's late
        messages do not overwrite newer data and every node converges."""
        cluster = chaos()
        with Load(cluster, workers=3):
            time.sleep(0.8)
            cluster.pause("c")
            paused = wall_ms()
            time.sleep(pause_s)
            wait_for(
                lambda: acked_creates(cluster, paused, wall_ms(), "ab") >= 3,
                "quorum writes on a and b during the pause",
            )
            cluster.resume("c")
            time.sleep(1.0)
        settle_and_check(cluster, strict_local=True)


class TestPartition:
    """F8–F10: partitions made by the link proxies."""

    def test_minority_refuses_quorum_writes_majority_goes_on(self, chaos: ClusterFactory) -> None:
        """a is cut off from b and c: a refuses quorum writes (nothing applied) once it
        notices, still takes ``local`` ones; b and c acknowledge quorum writes. After healing,
        refused writes are nowhere and a's local writes are everywhere."""
        cluster = chaos()
        with Load(cluster, workers=2, keys=40):
            time.sleep(0.5)
            cluster.partition(["a"], ["b", "c"])
            cut = wall_ms()
            counter = iter(range(10**6))
            wait_for(
                lambda: cluster.create("a", f"probe{next(counter)}").outcome == "refused",
                "a to refuse a quorum write",
            )
            local = [cluster.create("a", f"alone{i}", ack="local") for i in range(5)]
            assert all(op.outcome == "ok" for op in local)
            majority = cluster.create("b", "majority")
            assert majority.outcome == "ok"
            assert not cluster.read("a", "majority").found  # a's reads are stale meanwhile
            wait_for(
                lambda: acked_creates(cluster, cut, wall_ms(), "bc") >= 3,
                "quorum writes on b and c",
            )
        refused = [op for op in cluster.history.of("create") if op.outcome == "refused"]
        assert refused
        assert all(op.node == "a" for op in refused)
        dumps = settle_and_check(cluster, strict_local=True)
        keys = {entry[0] for entry in dumps["a"]["entries"]}
        assert {f"alone{i}" for i in range(5)} <= keys
        assert "majority" in keys

    def test_partial_partition_heals_through_the_third_node(self, chaos: ClusterFactory) -> None:
        """With only a–b cut, a write on a and a delete on b reach the other through c
        (anti-entropy) while the cut still holds."""
        cluster = chaos()
        before = cluster.create("a", "gone")
        assert before.outcome == "ok"
        cluster.cut("a", "b")
        written = cluster.create("a", "via-c")
        assert written.outcome == "ok"  # c acknowledges: still a quorum
        wait_for(lambda: cluster.read("b", "via-c").found, "a's write to reach b through c")
        wait_for(lambda: cluster.read("b", "gone").found, "b to hold 'gone'")
        assert cluster.delete("b", "gone").outcome == "ok"
        wait_for(lambda: not cluster.read("a", "gone").found, "b's delete to reach a through c")
        assert all(link.faulty for key, link in cluster.links.items() if set(key) == {"a", "b"})
        settle_and_check(cluster, strict_local=True)

    def test_one_way_cut(self, chaos: ClusterFactory) -> None:
        """F9: nothing a sends reaches b (b's messages still reach a). Writes at ``all`` on a
        cannot complete (undetermined: applied on a), quorum writes go on through c, and after
        healing every node has every write; no queue blocks anything."""
        cluster = chaos()
        cluster.cut_one_way("a", "b")
        stuck = cluster.create("a", "needs-all", ack="all")
        assert stuck.outcome in ("timeout", "refused")
        with Load(cluster, workers=2, keys=30):
            time.sleep(1.5)
        assert cluster.create("a", "quorum-ok").outcome == "ok"
        settle_and_check(cluster, strict_local=True)


class TestMessageFaults:
    """F11/F12: dropped and duplicated messages (the nodes' test-only fault hook), delays."""

    def test_dropped_duplicated_and_delayed_messages(self, chaos: ClusterFactory) -> None:
        """Every node drops 5% and duplicates 10% of what it sends, and every link delays
        with jitter: gaps are repaired (resends), duplicates are idempotent, and after the
        faults stop all nodes converge with every acknowledged write."""
        cluster = chaos()
        for name in cluster.names:
            cluster.message_faults(name, drop=0.05, duplicate=0.1)
        with Load(cluster, workers=3, keys=80):
            time.sleep(1.5)
            cluster.delay(5, 20)
            time.sleep(1.5)
        stats = [cluster.state(name) for name in cluster.names]
        assert sum(s["faults"]["dropped"] for s in stats) > 0
        assert sum(s["faults"]["duplicated"] for s in stats) > 0
        settle_and_check(cluster, strict_local=True)
        assert sum(cluster.state(name)["resends"] for name in cluster.names) > 0


class TestClockSkew:
    """F13: node clocks off by ±2 s (the nodes' clock offset, manager and hybrid clock)."""

    def test_skew_of_two_seconds_either_way(self, chaos: ClusterFactory) -> None:
        """b runs 2 s ahead and c 2 s behind: skew alarms are raised, a write on c that
        follows (causally) a write on b still wins, a node's own versions never go backwards
        when its clock is set back, and the cluster converges under load."""
        cluster = chaos(skew_ms={"b": 2000, "c": -2000})
        first = cluster.create("b", "causal")
        wait_for(lambda: cluster.read("c", "causal").found, "c to hold b's write")
        second = cluster.create("c", "causal")
        assert first.version is not None
        assert second.version is not None
        assert second.version > first.version
        before = cluster.create("a", "mono-1")
        cluster.skew("a", -2000)
        after = cluster.create("a", "mono-2")
        assert before.version is not None
        assert after.version is not None
        assert after.version > before.version
        with Load(cluster, workers=3, keys=20):
            time.sleep(2.0)
        dumps = settle_and_check(cluster, strict_local=True, skew_ms=4000)
        final = {entry[0]: entry for entry in dumps["a"]["entries"]}
        assert final["causal"][5] == second.w
        assert any(cluster.state(name)["clock_skew_alarms"] > 0 for name in cluster.names)


class TestConcurrency:
    """F14/F15: same-key writes from every node; delete racing touch."""

    def test_same_key_concurrent_writes(self, chaos: ClusterFactory) -> None:
        """Four writers store and delete five ids on every node at ``local``, also across a
        partition: every node ends with the same winner for each id, the largest version
        written."""
        cluster = chaos()
        load = Load(cluster, workers=4, keys=5, ack="local", mix=(0.8, 0.2, 0.0))
        with load:
            time.sleep(1.5)
            cluster.partition(["a"], ["b", "c"])
            time.sleep(1.0)
        dumps = settle_and_check(cluster, strict_local=True)
        assert winners_are_the_largest_versions(cluster.history, dumps, load.keys) == []

    def test_delete_racing_a_touch(self, chaos: ClusterFactory) -> None:
        """A delete on a and a touch on b of the same session, sent at once: the delete wins
        on every node (a touch never resurrects); a store made after the delete wins over it."""
        cluster = chaos()
        keys = [f"race{i}" for i in range(40)]
        for key in keys:
            assert cluster.create("a", key, timeout=600_000).outcome == "ok"
        with ThreadPoolExecutor(8) as pool:
            futures = []
            for key in keys:
                futures.append(pool.submit(cluster.delete, "a", key))
                futures.append(pool.submit(cluster.read, "b", key, "touch"))
            for future in futures:
                future.result()
        dumps = settle_and_check(cluster, strict_local=True)
        final = {entry[0]: entry for entry in dumps["a"]["entries"]}
        assert all(final[key][4] for key in keys), "a touched session survived its delete"
        for key in keys[:5]:
            assert cluster.create("c", key).outcome == "ok"
        dumps = settle_and_check(cluster, strict_local=True)
        final = {entry[0]: entry for entry in dumps["b"]["entries"]}
        assert not any(final[key][4] for key in keys[:5])


class TestExpiry:
    """F16: expiry is computed on each node; nothing expired is served or brought back."""

    def test_no_expired_session_is_served(self, chaos: ClusterFactory) -> None:
        """Sessions with a 1.5 s timeout vanish from every node; sessions b keeps touching (5 s
        timeout)
        stay live everywhere until b is killed, then expire on a and c too; cleanup and
        anti-entropy bring nothing back."""
        cluster = chaos()
        idle = [f"idle{i}" for i in range(10)]
        kept = [f"kept{i}" for i in range(10)]
        for key in idle:
            assert cluster.create("a", key, timeout=1_500).outcome == "ok"
        for key in kept:
            assert cluster.create("a", key, timeout=5_000).outcome == "ok"
        created = wall_ms()
        while wall_ms() - created < 2_500:
            for key in kept:
                assert cluster.read("b", key, "fetch").found
            time.sleep(0.2)

        def idle_gone() -> bool:
            return not any(cluster.read(n, key).found for n in cluster.names for key in idle)

        wait_for(idle_gone, "the idle sessions to expire everywhere")
        for name in cluster.names:
            assert set(kept) <= set(cluster.nodes[name].call("list")["ids"])
        cluster.kill("b")

        def kept_gone() -> bool:
            return not any(cluster.read(n, key).found for n in "ac" for key in kept)

        wait_for(kept_gone, "the sessions b touched to expire on a and c")
        for name in "ac":
            cluster.nodes[name].call("cleanup")
        settle_and_check(cluster)
        for name in cluster.names:
            ids = set(cluster.nodes[name].call("list")["ids"])
            assert not ids & (set(idle) | set(kept))


class TestLongOffline:
    """F17: a node away for longer than the tombstone horizon must not bring deletes back."""

    def test_disc_node_offline_past_the_tombstone_horizon_resyncs(
        self, chaos: ClusterFactory
    ) -> None:
        """c (disc copies) is killed holding ten sessions; five are deleted and their
        tombstones collected (3 s horizon); when c restarts, it discards its stale copy and
        resyncs, so the five deleted sessions stay deleted everywhere."""
        cluster = chaos(disc=True, tombstone_ttl_ms=3_000)
        keys = [f"old{i}" for i in range(10)]
        for key in keys:
            assert cluster.create("a", key, ack="all").outcome == "ok"
        cluster.kill("c")
        for key in keys[:5]:
            assert cluster.delete("a", key).outcome == "ok"

        def collected() -> bool:
            held = {e[0] for n in "ab" for e in cluster.nodes[n].call("dump")["entries"]}
            return not held & set(keys[:5])

        wait_for(collected, "a and b to collect the tombstones")
        cluster.restart("c")
        dumps = settle_and_check(cluster, strict_local=True, tombstone_ttl_ms=3_000)
        held = {entry[0] for entry in dumps["c"]["entries"]}
        assert held & set(keys) == set(keys[5:])
        assert cluster.state("c")["wal"]["wiped_stale"] is True

    def test_running_node_cut_off_past_the_horizon_resyncs(self, chaos: ClusterFactory) -> None:
        """c keeps running but is cut off from a and b for longer than the tombstone horizon
        (3 s) while five sessions are deleted on a and their tombstones collected; meanwhile c
        touches one of them and stores a session of its own (``ack = local``). When the
        partition heals, c forgets what it held from before, keeps its own store and resyncs:
        the deleted sessions stay deleted everywhere (the touch does not bring one back) and
        c's store reaches every node."""
        cluster = chaos(tombstone_ttl_ms=3_000)
        keys = [f"old{i}" for i in range(10)]
        for key in keys:
            assert cluster.create("a", key, ack="all").outcome == "ok"
        cluster.partition(["c"], ["a", "b"])
        wait_for(lambda: cluster.state("c")["alone_for_ms"] is not None, "c to notice")
        assert cluster.create("c", "mine", ack="local").outcome == "ok"
        for key in keys[:5]:
            assert cluster.delete("a", key).outcome == "ok"
        assert cluster.read("c", "old0", kind="touch").found

        def collected() -> bool:
            held = {e[0] for n in "ab" for e in cluster.nodes[n].call("dump")["entries"]}
            return not held & set(keys[:5])

        wait_for(collected, "a and b to collect the tombstones")
        wait_for(lambda: cluster.state("c")["stale"], "c to count itself stale")
        dumps = settle_and_check(cluster, strict_local=True, tombstone_ttl_ms=3_000)
        held = {entry[0] for entry in dumps["c"]["entries"]}
        assert held & set(keys) == set(keys[5:])
        assert "mine" in held
        assert cluster.state("c")["isolation_restarts"] == 1
        assert cluster.state("a")["isolation_restarts"] == 0

    def test_node_alone_past_the_horizon_keeps_its_copy_for_restarted_peers(
        self, chaos: ClusterFactory
    ) -> None:
        """b and c (RAM) are killed and stay down past the horizon while a serves alone. When
        they come back empty, a is the freshest view there is: it keeps its copy (it does not
        forget what it holds because of peers that are still catching up) and they sync from
        it."""
        cluster = chaos(tombstone_ttl_ms=3_000)
        keys = [f"kept{i}" for i in range(10)]
        for key in keys:
            assert cluster.create("a", key, ack="all").outcome == "ok"
        cluster.kill("b")
        cluster.kill("c")
        wait_for(lambda: cluster.state("a")["stale"], "a to count itself stale")
        cluster.restart("b")
        cluster.restart("c")
        dumps = settle_and_check(cluster, strict_local=True, tombstone_ttl_ms=3_000)
        for name in "abc":
            assert {entry[0] for entry in dumps[name]["entries"]} >= set(keys)
        assert cluster.state("a")["isolation_restarts"] == 0
        assert cluster.state("a")["stale"] is False


class TestSecurity:
    """F19: strangers and garbage are refused; the node survives."""

    def test_unauthenticated_peer_and_garbage_frames(
        self, chaos: ClusterFactory, tmp_path: Path
    ) -> None:
        """Against node a's real port: a CURVE client with an unknown key (refused at the
        handshake), raw TCP garbage, and a known key sending malformed frames (dropped). a
        keeps serving and the cluster converges."""
        cluster = chaos()
        write_key_pair(tmp_path, "x")
        endpoint = f"tcp://127.0.0.1:{cluster.ports['a']}"
        server_key = zmq.auth.load_certificate(tmp_path / "a.key")[0]
        context = zmq.Context()
        try:

            def dealer(key: str, ident: str) -> zmq.Socket[bytes]:
                sock: zmq.Socket[bytes] = context.socket(zmq.DEALER)
                public, secret = zmq.auth.load_certificate(tmp_path / f"{key}.key_secret")
                sock.curve_publickey, sock.curve_secretkey = public, secret
                sock.curve_serverkey = server_key
                sock.routing_id = ident.encode()
                sock.linger = 0
                sock.connect(endpoint)
                return sock

            stranger = dealer("x", "b")
            stranger.send_multipart([b"REPL", msgpack.packb(["b", 1, []])], flags=zmq.NOBLOCK)
            wait_for(lambda: cluster.state("a")["auth_rejected"] > 0, "the stranger's refusal")
            for payload in (b"\xff" * 64, b"GET / HTTP/1.0\r\n\r\n", random.randbytes(4096)):
                with socket.create_connection(("127.0.0.1", cluster.ports["a"])) as raw:
                    raw.sendall(payload)
            insider = dealer("b", "b")
            garbage = [
                [b"REPL", b"\xc1\xff"],
                [b"PING", msgpack.packb(["b", "x", 1, 2, b"r", True, False])],
                [b"WHAT", b""],
                [b"REPL", msgpack.packb(["b", 1, [[1, ["bad id", 1, "b", 1, None, None]]]])],
                [b"CHUNK", msgpack.packb([1, [["k", 1, "zz", 1, None, None]]])],
            ]
            for frames in garbage:
                insider.send_multipart(frames)
            wait_for(
                lambda: cluster.state("a")["dropped_frames"] >= len(garbage),
                "the garbage to be dropped",
            )
        finally:
            context.destroy(linger=0)
        stats = cluster.state("a")
        assert stats["failure"] is None
        assert stats["handler_errors"] == 0
        assert cluster.create("a", "after").outcome == "ok"
        wait_for(lambda: cluster.read("c", "after").found, "the write to reach c")
        settle_and_check(cluster, strict_local=True)


class Nemesis:
    """Random faults, one at a time, each undone before the next (so W=2 writes survive)."""

    def __init__(self, cluster: ChaosCluster, seed: int, pauses: list[float]) -> None:
        self.cluster = cluster
        self.rng = random.Random(seed)
        self.pauses = pauses
        self.log: list[str] = []

    def step(self) -> None:
        cluster, rng = self.cluster, self.rng
        victim = rng.choice(cluster.names)
        others = [n for n in cluster.names if n != victim]
        action = rng.choice(
            ["kill", "pause", "partition", "cut", "one-way", "messages", "skew", "delay", "reset"]
        )
        hold = rng.uniform(0.3, 1.5)
        self.log.append(f"{action} {victim} {hold:.1f}s")
        if action == "kill":
            cluster.kill(victim)
            time.sleep(hold)
            cluster.restart(victim)
            cluster.wait_settled()
        elif action == "pause":
            cluster.pause(victim)
            time.sleep(rng.choice(self.pauses))
            cluster.resume(victim)
        elif action == "partition":
            cluster.partition([victim], others)
            time.sleep(hold + 1)
            cluster.heal()
        elif action == "cut":
            cluster.cut(victim, rng.choice(others))
            time.sleep(hold)
            cluster.heal()
        elif action == "one-way":
            cluster.cut_one_way(victim, rng.choice(others))
            time.sleep(hold)
            cluster.heal()
        elif action == "messages":
            cluster.message_faults(victim, drop=0.1, duplicate=0.1)
            time.sleep(hold)
            cluster.message_faults(victim)
        elif action == "skew":
            cluster.skew(victim, rng.choice([-2000, 2000]))
            time.sleep(hold)
        elif action == "delay":
            cluster.delay(rng.randint(1, 30), rng.randint(0, 30))
            time.sleep(hold)
            cluster.heal()
        else:
            for link in cluster.links.values():
                link.reset()
            time.sleep(hold)


class TestRandomFaults:
    """Minutes of random faults under load (a few seconds in the default run)."""

    @pytest.mark.parametrize("disc", MODES, ids=[MODE_IDS[m] for m in MODES])
    def test_random_faults_under_load(self, chaos: ClusterFactory, disc: bool) -> None:
        """Kills, restarts, pauses, partitions, one-way cuts, message loss and duplication,
        clock skew, delays and connection resets, one after another under load; afterwards
        the checker finds nothing wrong."""
        cluster = chaos(disc=disc)
        seed = random.randrange(2**32)
        nemesis = Nemesis(cluster, seed, PAUSES)
        duration = CHAOS_SECONDS or 8.0
        with Load(cluster, workers=3, keys=150, seed=seed):
            end = time.monotonic() + duration
            while time.monotonic() < end:
                nemesis.step()
        try:
            settle_and_check(cluster, skew_ms=4000)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, faults {nemesis.log}: {exc}") from None
        assert cluster.history.outcomes().get("ok", 0) > 0
