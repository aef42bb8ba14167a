"""The checker: judges a :class:`~sessionkeeper_zmq.chaos.harness.History` against the state the
nodes converged to once the faults were healed.

:func:`check` returns a list of violations (empty: the run was correct):

1. **Convergence**: every node holds exactly the same entries (tombstones, versions and
   ``last_accessed`` included).
2. **Acknowledged writes survive**: a store or delete acknowledged by at least ``min_acks``
   nodes (``ack`` ≥ 2; with ``strict_local`` every acknowledged write, for runs that lose no
   node) is in the final state, or superseded by a larger version; a deleted session does not
   come back unless stored again with a larger version.
3. **Nothing invented**: every final entry, and every session a read returned, is a write the
   history issued and that may have taken effect (acknowledged, timed out or unanswered): a
   write refused for lack of replicas is never visible; no read returns a write that started
   after the read ended; a tombstone has the version of an issued delete.
4. **No expired session is served**: no read returned a session whose ``last_accessed`` plus
   timeout was already past when the read was sent, by more than the clock skew allowed.

Dumps are what ``control``'s ``dump`` returns: ``{"entries": [[key, hlc, node, la, tomb, w,
timeout], ...], "digest": ..., "now": ...}`` per node.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from .._options import required_acks
from .harness import History, Op

__all__ = ["check", "final_state", "winners_are_the_largest_versions"]

#: Slack for scheduling between a client's clock reading and the node's.
GRACE_MS = 250

FinalEntry = tuple[int, str, int, bool, str | None, int | None]


def final_state(dumps: dict[str, dict[str, Any]]) -> dict[str, FinalEntry]:
    """key -> ``(hlc, node, la, tomb, w, timeout)`` from the first node's dump."""
    first = dumps[sorted(dumps)[0]]
    return {
        key: (hlc, node, la, tomb, w, timeout)
        for key, hlc, node, la, tomb, w, timeout in first["entries"]
    }


def _convergence(dumps: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    names = sorted(dumps)
    reference = {entry[0]: entry for entry in dumps[names[0]]["entries"]}
    for name in names[1:]:
        other = {entry[0]: entry for entry in dumps[name]["entries"]}
        differing = sorted(
            k for k in reference.keys() | other.keys() if reference.get(k) != other.get(k)
        )
        if differing:
            sample = [(k, reference.get(k), other.get(k)) for k in differing[:5]]
            problems.append(
                f"nodes {names[0]} and {name} differ on {len(differing)} key(s), e.g. {sample}"
            )
    return problems


def check(
    history: History,
    dumps: dict[str, dict[str, Any]],
    *,
    cluster_size: int = 3,
    default_ack: str | int = "quorum",
    min_acks: int = 2,
    strict_local: bool = False,
    skew_ms: int = 0,
    tombstone_ttl_ms: int | None = None,
) -> list[str]:
    """Every violation of the properties above (see the module docstring).

    :param cluster_size: for the number of acknowledgements an ``ack`` level means.
    :param default_ack: the level of operations issued without one.
    :param min_acks: acknowledged writes needing at least this many nodes must survive.
    :param strict_local: every acknowledged write must survive (no node was lost).
    :param skew_ms: the largest clock offset of any node (expiry may be that late).
    :param tombstone_ttl_ms: the nodes' ``tombstone_ttl_ms`` when the run outlasts it: a
        delete's tombstone may then be collected (its key has no entry at all).
    """
    problems = _convergence(dumps)
    final = final_state(dumps)
    now = min(dump["now"] for dump in dumps.values())
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        by_key[op.key].append(op)
    creates_by_w = {op.w: op for op in history.ops if op.kind == "create"}

    for key in sorted(by_key.keys() | final.keys()):
        ops = by_key.get(key, [])
        entry = final.get(key)
        expiring = any(op.timeout is not None for op in ops if op.kind == "create")
        # 2. acknowledged writes survive (or are superseded)
        for op in ops:
            if op.kind not in ("create", "delete") or op.outcome != "ok" or op.version is None:
                continue
            needed = required_acks(op.ack if op.ack is not None else default_ack, cluster_size)
            if needed < min_acks and not strict_local:
                continue
            what = f"{op.kind} {op.w or ''} of {key} on {op.node} (ack={op.ack}, {op.version})"
            if entry is None:
                # Deleted (by this op or a later one) and the tombstone collected since.
                collected = tombstone_ttl_ms is not None and any(
                    later.kind == "delete"
                    and later.maybe_applied
                    and (later.version is None or later.version >= op.version)
                    and now > later.start + tombstone_ttl_ms - skew_ms
                    for later in ops
                )
                if not expiring and not collected:
                    problems.append(f"acknowledged {what} is lost: no entry at all")
                continue
            version = (entry[0], entry[1])
            if version < op.version:
                problems.append(f"acknowledged {what} is lost: final version {version} is older")
            elif version == op.version:
                if op.kind == "create" and (entry[3] or entry[4] != op.w):
                    problems.append(f"acknowledged {what} has the wrong final value {entry}")
                if op.kind == "delete" and not entry[3]:
                    problems.append(f"acknowledged {what}: the session came back {entry}")
        # 3. nothing invented
        if entry is not None:
            hlc, node, la, tomb, w, _timeout = entry
            if tomb:
                if not any(
                    op.kind == "delete"
                    and op.maybe_applied
                    and (op.version == (hlc, node) or (op.version is None and op.node == node))
                    for op in ops
                ):
                    problems.append(f"tombstone of {key} {(hlc, node)} matches no issued delete")
            else:
                source = creates_by_w.get(w)
                if source is None or source.key != key:
                    problems.append(f"final value of {key} ({w}) was never written")
                elif not source.maybe_applied:
                    problems.append(
                        f"final value of {key} is write {w}, which was {source.outcome}"
                    )
                elif source.version is not None and source.version != (hlc, node):
                    problems.append(
                        f"final value of {key} is write {w} with version {(hlc, node)}, "
                        f"issued as {source.version}"
                    )
                elif source.la is not None and la < source.la:
                    problems.append(f"final last_accessed of {key} went back before its store")
        # 3/4. what reads returned
        for op in ops:
            if op.kind not in ("peek", "fetch", "touch") or not op.found:
                continue
            source = creates_by_w.get(op.served_w)
            if source is None or source.key != key:
                problems.append(f"{op.kind} of {key} on {op.node} returned unwritten {op.served_w}")
                continue
            if not source.maybe_applied:
                problems.append(
                    f"{op.kind} of {key} on {op.node} returned write {op.served_w}, "
                    f"which was {source.outcome}"
                )
            if op.end and source.start > op.end:
                problems.append(
                    f"{op.kind} of {key} on {op.node} returned write {op.served_w} before it "
                    "was issued"
                )
            if op.timeout is not None and op.la is not None:
                late = op.start - (op.la + op.timeout)
                if late > skew_ms + GRACE_MS:
                    problems.append(
                        f"{op.kind} of {key} on {op.node} served a session expired {late} ms "
                        "before the read was sent"
                    )
    return problems


def winners_are_the_largest_versions(
    history: History, dumps: dict[str, dict[str, Any]], keys: Iterable[str]
) -> list[str]:
    """For runs where every write was acknowledged: each key's final version is the largest
    version any store or delete of it was given (the same winner on every node)."""
    final = final_state(dumps)
    problems = []
    for key in keys:
        versions = [
            op.version
            for op in history.ops
            if op.key == key and op.kind in ("create", "delete") and op.version is not None
        ]
        if not versions:
            continue
        entry = final.get(key)
        if entry is None or (entry[0], entry[1]) != max(versions):
            problems.append(f"{key}: final {entry} is not the largest version {max(versions)}")
    return problems
