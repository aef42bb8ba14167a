"""Property-based tests of the merge: the replicated state is a join-semilattice."""

from __future__ import annotations

from functools import reduce

from hypothesis import given, settings
from hypothesis import strategies as st

from sessionkeeper import Session
from sessionkeeper.backend import decode_session, encode_session
from sessionkeeper_zmq import Entry, merge_entries
from sessionkeeper_zmq._replica import HLC, Replica

NODES = ("a", "b", "c")


@st.composite
def entries(draw: st.DrawFn, key: str | None = None) -> Entry:
    """One replicated entry of a few keys: a session or a tombstone.

    Everything but ``last_accessed`` is a function of the version ``(hlc, node)``, as in the
    backend, where one write makes one version; touches move ``last_accessed`` of a session.
    """
    key = key or draw(st.sampled_from(["k1", "k2", "k3"]))
    hlc = draw(st.integers(1, 6))
    node = draw(st.sampled_from(NODES))
    created = 1_000
    seed = hlc * 7 + NODES.index(node)
    timeout = (None, 50, 10_000)[seed % 3]
    if seed % 4 == 0:
        return (key, hlc, node, created + seed, None, timeout)
    la = created + draw(st.integers(0, 5))
    session = Session(key, created, la, timeout, {"v": [hlc, node]})
    return (key, hlc, node, la, encode_session(session), timeout)


def state_of(replica: Replica) -> dict[str, tuple[object, ...]]:
    """What a replica holds, key by key (version, last_accessed, data or tombstone)."""
    result = {}
    for key in list(replica.versions):
        entry = replica.entry(key)
        assert entry is not None
        result[key] = entry
    return result


def replay(ops: list[Entry]) -> Replica:
    """A fresh replica that merged ``ops`` in order."""
    replica = Replica("z", HLC(), tombstone_ttl_ms=10**12, backlog=10)
    for entry in ops:
        blob = entry[4]
        session = None
        if blob is not None:
            session = decode_session(blob)
        replica.merge(entry, session)
    return replica


class TestMergeLaws:
    """``merge_entries`` is commutative, associative and idempotent."""

    @given(entries(key="k"), entries(key="k"))
    def test_commutative(self, a: Entry, b: Entry) -> None:
        """merge(a, b) == merge(b, a)."""
        assert merge_entries(a, b) == merge_entries(b, a)

    @given(entries(key="k"), entries(key="k"), entries(key="k"))
    def test_associative(self, a: Entry, b: Entry, c: Entry) -> None:
        """merge(merge(a, b), c) == merge(a, merge(b, c))."""
        assert merge_entries(merge_entries(a, b), c) == merge_entries(a, merge_entries(b, c))

    @given(entries(key="k"))
    def test_idempotent(self, a: Entry) -> None:
        """merge(a, a) == a."""
        assert merge_entries(a, a) == a

    @given(entries(key="k"), entries(key="k"))
    def test_a_delete_beats_a_touch_of_an_older_version(self, a: Entry, b: Entry) -> None:
        """Whatever ``last_accessed`` says, the entry with the larger version wins."""
        winner = merge_entries(a, b)
        assert (winner[1], winner[2]) == max((a[1], a[2]), (b[1], b[2]))


class TestReplicaConvergence:
    """Replicas that receive the same entries in any order, with duplicates, converge."""

    @settings(max_examples=200)
    @given(st.lists(entries(), max_size=25), st.data())
    def test_any_order_with_duplicates_gives_the_same_state(
        self, ops: list[Entry], data: st.DataObject
    ) -> None:
        """Merging a shuffled copy of the operations with random duplicates leaves the same
        state and the same digest as merging them in order, and that state holds, per key,
        the fold of ``merge_entries`` over its operations."""
        shuffled = data.draw(st.permutations(ops))
        duplicates = data.draw(st.lists(st.sampled_from(ops), max_size=10)) if ops else []
        first = replay(ops)
        second = replay([*shuffled, *duplicates])
        assert state_of(first) == state_of(second)
        assert first.root() == second.root()
        for key in {entry[0] for entry in ops}:
            expected = reduce(merge_entries, [entry for entry in ops if entry[0] == key])
            assert state_of(first)[key] == expected

    @given(st.lists(entries(), max_size=20))
    def test_digest_is_the_same_after_remerging_own_state(self, ops: list[Entry]) -> None:
        """Merging a replica's own entries into it again changes nothing (idempotence on the
        whole state, digest included)."""
        replica = replay(ops)
        before = (state_of(replica), replica.root())
        again = replay(list(state_of(replica).values()))
        assert (state_of(again), again.root()) == before
