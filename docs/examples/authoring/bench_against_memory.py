"""Time a backend against the memory backend, through SessionManager, in one run.

    python bench_against_memory.py mystore --opts '{"max_sessions": 1000000}'
    python bench_against_memory.py leveldb --opts '{"db_path": "bench.leveldb", "sync": false}'

Relative paths in ``--opts`` land in a scratch directory that is deleted afterwards. The ratio
column is the backend's time over the memory backend's, measured side by side, so machine speed
cancels out of it (writing-a-backend.md, "Benchmarking").
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import timeit
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from sessionkeeper import Session, SessionManager

NOW = 1_700_000_000_000


def shuffled(ids: list[str]) -> list[str]:
    """``ids`` in a random order, the same in every run (reads that hit the cache less)."""
    random.Random(42).shuffle(ids)  # noqa: S311  (an order to read in, not a secret)
    return ids


# start-bench
def per_call_us(
    operation: Callable[[Any], object], arguments: Sequence[Any], repeats: int
) -> float:
    """Median µs per call of ``operation`` mapped over ``arguments``."""
    timings = []
    for _ in range(repeats):
        seconds = timeit.timeit(lambda: deque(map(operation, arguments), 0), number=1)
        timings.append(seconds / len(arguments) * 1e6)
    return statistics.median(timings)


def bench(
    backend: str, opts: dict[str, Any], sessions: int, repeats: int, base_dir: str
) -> dict[str, float]:
    """µs per store, fetch and delete of ``sessions`` sessions, in random order."""
    stored = [
        Session(f"s{i:08}", NOW, NOW, 1_800_000, {"user_id": f"user_{i}"}) for i in range(sessions)
    ]
    ids = shuffled([s.id for s in stored])
    # A clock that stands still: fetches find nothing to touch, cleanup never runs behind.
    with SessionManager(
        backend, opts, cleanup_interval=0, clock=lambda: NOW, base_dir=base_dir
    ) as manager:
        figures = {
            "store": per_call_us(manager.store, stored, repeats),
            "fetch": per_call_us(manager.fetch, ids, repeats),
        }
        figures["delete"] = per_call_us(manager.delete, ids, 1)  # once: then they are gone
    return figures


# end-bench


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("backend", help="the entry-point name of the backend to time")
    parser.add_argument("--opts", default="{}", help="its backend_opts, as JSON")
    parser.add_argument("--sessions", type=int, default=20_000, help="sessions per run")
    parser.add_argument("--repeats", type=int, default=5, help="runs; the median is shown")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        theirs = bench(args.backend, json.loads(args.opts), args.sessions, args.repeats, scratch)
        memory_opts = {"table_name": f"bench-{uuid.uuid4().hex}"}
        ours = bench("memory", memory_opts, args.sessions, args.repeats, scratch)
    result = {
        "backend": args.backend,
        "sessions": args.sessions,
        "operations": {
            name: {"us": theirs[name], "memory_us": ours[name], "ratio": theirs[name] / ours[name]}
            for name in theirs
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'operation':<10}{args.backend + ' µs':>14}{'memory µs':>12}{'ratio':>9}")
        for name, row in result["operations"].items():
            print(f"{name:<10}{row['us']:>14.2f}{row['memory_us']:>12.2f}{row['ratio']:>8.1f}x")
    return result


if __name__ == "__main__":
    main()
