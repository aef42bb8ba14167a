"""The races of the atomicity tests, as plain functions the kit (and its own meta-tests) run.

Each function starts its workers together (a barrier for threads; a "go" line for processes),
lets them race on one store, and then checks the outcome against what a linearizable store must
give: an exact counter, exactly one winner, no resurrection. A failure is an ``AssertionError``
saying what was lost or duplicated. Processes are real child interpreters
(``python -m sessionkeeper.testing._worker``) that open the store from a JSON description
(:meth:`BackendConformance.shared_store_config
<sessionkeeper.testing.BackendConformance.shared_store_config>`): nothing is pickled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sessionkeeper import (
    Session,
    SessionManager,
    SessionNotFound,
    VersionConflict,
)

__all__ = [
    "race_delete_owner_with_creates",
    "race_inserts_if_absent",
    "race_rotate_with_fetches",
    "race_takes",
    "race_updates",
    "run_processes",
    "run_threads",
]

#: Longest a worker may take before the race is called hung (not a timing assertion).
HANG_S = 300.0
#: ``update``'s attempts in the races: enough that a correct backend never runs out.
ATTEMPTS = 10_000


def run_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(index)`` in ``count`` threads started together; return their results in
    index order, or re-raise the first failure."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    failures: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(HANG_S)
            results[index] = work(index)
        except BaseException as exc:  # collected and re-raised in the caller's thread
            failures.append(exc)

    threads = [
        threading.Thread(target=run, args=(index,), name=f"race-{index}") for index in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_S)
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert not hung, f"threads {hung} did not finish: the backend deadlocked or hung"
    if failures:
        raise failures[0]
    return results


def run_processes(store: Mapping[str, Any], jobs: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Run each job in its own child interpreter on the store ``store`` describes (``backend``,
    ``backend_opts`` and optionally ``base_dir``, JSON), all released at once; return each
    job's result (JSON) in order. A child that fails makes this raise, with its stderr."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "sessionkeeper.testing._worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for _ in jobs
    ]
    try:
        for child, job in zip(children, jobs, strict=True):
            assert child.stdin is not None
            child.stdin.write(json.dumps({"store": dict(store), "job": dict(job)}) + "\n")
            child.stdin.flush()
        for child in children:  # every child has opened the store
            assert child.stdout is not None
            line = child.stdout.readline()
            if json.loads(line or "{}").get("ready") is not True:
                _, error = child.communicate(timeout=HANG_S)
                raise AssertionError(f"a worker process did not start: {line!r}\n{error}")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = []
        for child in children:
            output, error = child.communicate(timeout=HANG_S)
            if child.returncode != 0:
                raise AssertionError(f"a worker process failed ({child.returncode}):\n{error}")
            results.append(json.loads(output)["result"])
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


# --- the races -----------------------------------------------------------------------------------


def race_updates(
    manager: SessionManager,
    workers: int,
    per_worker: int,
    *,
    store: Mapping[str, Any] | None = None,
) -> None:
    """``workers`` workers each ``update`` one session ``per_worker`` times adding 1 to a
    counter: exactly ``workers * per_worker`` must be added, and the version grow by as much.
    Threads sharing ``manager``, or processes on ``store`` when it is given."""
    created = manager.create(timeout_ms=None, metadata={"n": 0})
    if store is None:

        def work(_: int) -> int:
            for _ in range(per_worker):
                manager.update(created.id, _add_one, attempts=ATTEMPTS)
            return per_worker

        done = run_threads(workers, work)
    else:
        job = {"op": "update", "id": created.id, "count": per_worker}
        done = run_processes(store, [job] * workers)
    assert done == [per_worker] * workers, f"workers reported {done}"
    final = manager.peek(created.id)
    expected = workers * per_worker
    assert final.metadata == {"n": expected}, (
        f"{workers} workers x {per_worker} updates adding 1 left n={final.metadata.get('n')}, "
        f"not {expected}: updates were lost or applied twice"
    )
    assert final.version == created.version + expected, (
        f"version {final.version} after {expected} updates of version {created.version}"
    )


def _add_one(metadata: dict[str, Any]) -> dict[str, Any]:
    return {**metadata, "n": metadata["n"] + 1}


def race_takes(
    manager: SessionManager,
    workers: int,
    rounds: int,
    *,
    store: Mapping[str, Any] | None = None,
) -> None:
    """Each round, ``workers`` workers ``take`` one session at once: exactly one gets it (equal
    to what was stored), every other gets ``SessionNotFound``, and it is gone afterwards."""
    for round_ in range(rounds):
        stored = manager.store(
            Session(f"take-{round_}", 0, 0, None, {"round": round_}, owner="taker")
        )
        if store is None:

            def work(_: int, session_id: str = stored.id) -> dict[str, Any] | None:
                try:
                    return manager.take(session_id).to_dict()
                except SessionNotFound:
                    return None

            outcomes = run_threads(workers, work)
        else:
            outcomes = run_processes(store, [{"op": "take", "id": stored.id}] * workers)
        winners = [outcome for outcome in outcomes if outcome is not None]
        assert len(winners) == 1, (
            f"round {round_}: {len(winners)} of {workers} concurrent takes got the session "
            "(exactly one must)"
        )
        assert winners[0] == stored.to_dict(), f"the taken session {winners[0]} is not {stored}"
        assert manager.list(owner="taker") == [], "a taken session is still listed"
        try:
            manager.peek(stored.id)
        except SessionNotFound:
            continue
        raise AssertionError(f"round {round_}: the taken session is still stored")


def race_inserts_if_absent(
    manager: SessionManager,
    workers: int,
    rounds: int,
    *,
    store: Mapping[str, Any] | None = None,
) -> None:
    """Each round, ``workers`` workers ``store(..., if_version=0)`` one new id at once, each
    with its own metadata: exactly one succeeds (version 1), the others get
    ``VersionConflict(expected=0, actual=1)``, and the stored session is the winner's."""
    for round_ in range(rounds):
        session_id = f"insert-{round_}"
        if store is None:

            def work(index: int, session_id: str = session_id) -> bool:
                try:
                    manager.store(Session(session_id, 0, 0, None, {"w": index}), if_version=0)
                except VersionConflict as conflict:
                    named = (conflict.session_id, conflict.expected, conflict.actual)
                    if named != (session_id, 0, 1):
                        raise AssertionError(f"the conflict names {named}") from conflict
                    return False
                return True

            outcomes = run_threads(workers, work)
        else:
            jobs = [{"op": "insert", "id": session_id, "w": index} for index in range(workers)]
            outcomes = run_processes(store, jobs)
        winners = [index for index, won in enumerate(outcomes) if won]
        assert len(winners) == 1, (
            f"round {round_}: {len(winners)} of {workers} concurrent inserts-if-absent of one "
            "id succeeded (exactly one must)"
        )
        stored = manager.peek(session_id)
        assert stored.version == 1, f"an inserted session has version {stored.version}"
        assert stored.metadata == {"w": winners[0]}, (
            f"stored {stored.metadata}, but worker {winners[0]} won"
        )


def race_rotate_with_fetches(
    manager: SessionManager, advance: Callable[[int], object], readers: int, rounds: int
) -> None:
    """Each round, one thread ``rotate``s a session while ``readers`` threads keep fetching
    the old id (the clock moving, so fetches write ``last_accessed`` back) and counting the
    owner's sessions: the count is always 1 (never both ids live, nor neither), once the
    rotation returned the old id is gone for good, and no fetch brought it back."""
    resolution = manager.config.touch_resolution
    for round_ in range(rounds):
        owner = f"r{round_}"
        original = manager.store(
            Session(f"rotate-{round_}", 0, 0, None, {"round": round_}, owner=owner)
        )
        rotated: list[Session] = []
        done = threading.Event()

        def work(
            index: int,
            old: str = original.id,
            owner: str = owner,
            rotated: list[Session] = rotated,
            done: threading.Event = done,
        ) -> None:
            if index == readers:
                time.sleep(0.0002)
                rotated.append(manager.rotate(old))
                done.set()
                return
            for _ in range(200):
                finished = done.is_set()
                advance(resolution + 1)
                live = manager.count(owner=owner)
                assert live == 1, f"{live} ids of the rotating session were live at once"
                try:
                    manager.fetch(old)
                except SessionNotFound:
                    continue
                assert not finished, "the old id was fetched after rotate() returned"

        run_threads(readers + 1, work)
        (new,) = rotated
        assert new.id != original.id
        assert (new.version, new.metadata, new.owner) == (
            original.version + 1,
            original.metadata,
            original.owner,
        ), f"rotate changed the session: {new} from {original}"
        try:
            manager.peek(original.id)
        except SessionNotFound:
            pass
        else:
            raise AssertionError(f"round {round_}: the old id is live after the rotation")
        assert manager.peek(new.id).id == new.id
        assert manager.list(owner=owner) == [new.id], "not exactly the new id is listed"
        manager.delete(new.id)


def race_delete_owner_with_creates(
    manager: SessionManager,
    creators: int,
    per_creator: int,
    *,
    store: Mapping[str, Any] | None = None,
) -> None:
    """``creators`` workers ``create(owner=...)`` sessions while one worker calls
    ``delete_owner`` once: every session whose create returned before ``delete_owner`` began is
    gone, every one whose create began after it returned is live, and the other owner's
    session is untouched. Instants are ``time.monotonic_ns()`` (one clock for every process of
    the host)."""
    owner = "everywhere"
    bystander = manager.create(timeout_ms=None, owner="bystander")
    if store is None:

        def work(index: int) -> Any:
            if index == creators:
                time.sleep(0.002)
                start = time.monotonic_ns()
                removed = manager.delete_owner(owner)
                return [start, time.monotonic_ns(), removed]
            made = []
            for _ in range(per_creator):
                start = time.monotonic_ns()
                session = manager.create(timeout_ms=None, owner=owner)
                made.append([start, time.monotonic_ns(), session.id])
            return made

        outcomes = run_threads(creators + 1, work)
    else:
        jobs: list[dict[str, Any]] = [
            {"op": "create_owner", "owner": owner, "count": per_creator}
        ] * creators
        outcomes = run_processes(store, [*jobs, {"op": "delete_owner", "owner": owner}])
    delete_start, delete_end, removed = outcomes[creators]
    created = [entry for made in outcomes[:creators] for entry in made]
    live = set(manager.list(owner=owner))
    before = [sid for start, end, sid in created if end < delete_start]
    after = [sid for start, end, sid in created if start > delete_end]
    survivors = [sid for sid in before if sid in live]
    assert not survivors, f"{len(survivors)} sessions created before delete_owner began survived it"
    lost = [sid for sid in after if sid not in live]
    assert not lost, f"{len(lost)} sessions created after delete_owner returned were deleted"
    assert removed >= len(before), f"delete_owner reported {removed}, deleted {len(before)}"
    assert manager.list(owner="bystander") == [bystander.id], "another owner's session changed"
