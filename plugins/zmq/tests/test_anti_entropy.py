"""Anti-entropy bounded per answer: the bucket index beside the replica, answers of at most
``anti_entropy_keys`` entries taking turns over the differing buckets, and convergence of a
real two-node cluster through many such rounds.

The replica is the real one; the cluster is two real nodes on 127.0.0.1. Entries are merged
into one node's replica directly (as a peer's message would merge them, with no replication
stream behind them): only anti-entropy can carry them to the other node.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sessionkeeper import Session
from sessionkeeper.backend import encode_session
from sessionkeeper_zmq._replica import BUCKETS, HLC, Entry, Replica, entry_bucket
from sessionkeeper_zmq.testing import wait_for

#: Wall-clock ms: a tombstone counts from the later of the session's time and its HLC stamp.
NOW = int(time.time() * 1000)


def replica() -> Replica:
    return Replica("a", HLC(), tombstone_ttl_ms=1_000, backlog=10)


def by_bucket(keys: Any) -> dict[int, set[str]]:
    grouped: dict[int, set[str]] = defaultdict(set)
    for key in keys:
        grouped[entry_bucket(key)].add(key)
    return grouped


def index_of(held: Replica) -> dict[int, set[str]]:
    return {bucket: keys for bucket, keys in enumerate(held.buckets) if keys}


def session(key: str, la: int = NOW, timeout: int | None = 60_000) -> Session:
    return Session(key, NOW, la, timeout, {"k": key})


operations = st.lists(
    st.tuples(
        st.sampled_from(["store", "store-short", "delete", "touch", "cleanup", "clear"]),
        st.integers(0, 5),
    ),
    max_size=60,
)


@given(operations)
@example([("store", 1), ("delete", 1), ("cleanup", 0), ("store-short", 2), ("cleanup", 0)])
@settings(deadline=None)
def test_the_bucket_index_holds_exactly_the_keys_of_each_bucket(ops: list[Any]) -> None:
    """Whatever mix of stores, deletes (tombstones), touches, expiry sweeps (of sessions and of
    due tombstones) and wipes a replica goes through, each bucket of the index holds exactly
    the keys (tombstones included) that the replica holds in that bucket."""
    held = replica()
    now = NOW
    for op, n in ops:
        key = f"s{n}"
        if op == "store":
            held.local_store(session(key))
        elif op == "store-short":
            held.local_store(session(key, timeout=10))
        elif op == "delete":
            held.local_delete(key)
        elif op == "touch":
            held.local_touch(key, now + 1)
        elif op == "cleanup":
            now += 70_000  # past every session's timeout and every tombstone's horizon
            held.cleanup(now)
        else:
            held.clear()
        assert index_of(held) == by_bucket(held.versions)


def test_an_answer_summarises_whole_buckets_in_turn_within_the_budget() -> None:
    """With a budget, the summaries cover whole buckets, in the order asked, as many as fit
    (the first one always, however large); without one, every bucket asked. Each summary is
    the entry's version and ``last_accessed``, tombstones included."""
    held = replica()
    for i in range(3_000):
        held.local_store(session(f"k{i}"))
    held.local_delete("k7")
    grouped = by_bucket(held.versions)
    order = [*range(100, BUCKETS), *range(100)]
    covered, summaries = held.summaries(order, 200)
    assert covered == order[: len(covered)]
    assert sum(len(grouped[b]) for b in covered) <= 200
    assert sum(len(grouped[b]) for b in order[: len(covered) + 1]) > 200
    assert {key for key, *_ in summaries} == set().union(*(grouped[b] for b in covered))
    for key, hlc, node, la in summaries:
        assert (hlc, node) == held.versions[key]
        assert la == (held.tombs[key][0] if key in held.tombs else NOW)
    assert held.summaries(order, 1)[0] == [100]
    everything, summaries = held.summaries(range(BUCKETS))
    assert everything == list(range(BUCKETS))
    assert len(summaries) == 3_000


@pytest.mark.sessionkeeper_slow
def test_a_cluster_converges_through_many_bounded_answers(make_cluster: Any) -> None:
    """2,000 sessions only node b holds reach node a through anti-entropy answers of at most
    50 entries each: the buckets beyond each answer are deferred to later rounds (counted),
    and the two replicas end equal."""
    a, b = make_cluster(size=2, anti_entropy_ms=50, anti_entropy_keys=50)
    held: Replica = b.backend.replica
    for i in range(2_000):
        alone = session(f"only-b-{i}")
        entry: Entry = (alone.id, held.hlc.now(), "b", NOW, encode_session(alone), 60_000)
        assert held.merge(entry, alone)
    replicas = [a.backend.replica, held]
    wait_for(
        lambda: replicas[0].root() == replicas[1].root(),
        "node a to hold what only b held",
        deadline_s=120,
    )
    assert all(f"only-b-{i}" in replicas[0].sessions for i in range(2_000))
    deferred = sum(m.backend.agent.counters["ae_buckets_deferred"] for m in (a, b))
    assert deferred > 0
