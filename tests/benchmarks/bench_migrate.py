"""Benchmark of ``migrate``: 1,000,000 sessions from sqlitedict to leveldb, memory kept flat.

Run ``python tests/benchmarks/bench_migrate.py [--quick] [--json PATH] [--strict]`` (``nox -s
bench`` runs it; pytest never does). It

1. writes a sqlitedict file of N sessions (1,000,000; ``--quick``: 100,000) straight in the
   documented table format (``key TEXT PRIMARY KEY, value BLOB`` holding
   :func:`sessionkeeper.backend.encode_session` records), in batches, so building it costs
   no memory;
2. runs :func:`sessionkeeper.transfer.migrate_sessions` from that file (opened read-only, as
   ``sessionkeeper migrate`` opens it) into a new LevelDB database (``sync = false``;
   ``--target memory`` for the memory backend) in a child process, which samples its own resident
   memory (``VmRSS``) when
   10 %, 50 % and 100 % of the sessions are copied and after the verification, and reads its peak
   (``VmHWM``) at the end;
3. reports the rates of the phases (the count for the progress bar's total, the copy, the
   verification) and the memory figures.

The target "memory stays flat" is checked as: resident memory at 100 % copied is at most 32 MB
above the figure at 10 %, and the peak at most 64 MB above the figure before the copy (the
figures are absolute, so a growth of a few hundred bytes per session would show as hundreds of
MB). A ``memory`` target keeps every session by design and is reported without that check.
``--strict`` exits 1 when a check fails or the verification does not pass.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench

from sessionkeeper import Session, SessionManager
from sessionkeeper.backend import encode_session
from sessionkeeper.transfer import migrate_sessions

DAY = 86_400_000
FULL = 1_000_000
QUICK = 100_000
BATCH = 10_000
#: Allowed growth of resident memory between 10 % and 100 % copied, and for the peak.
FLAT_MB = 32
PEAK_MB = 64


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (or its peak with ``VmHWM``) in MB, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def build_source(path: Path, count: int) -> None:
    """A sqlitedict file of ``count`` live sessions, written with sqlite3 in batches."""
    now = time.time_ns() // 1_000_000
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute('CREATE TABLE "sessions" (key TEXT PRIMARY KEY, value BLOB)')
        for start in range(0, count, BATCH):
            rows = []
            for i in range(start, min(start + BATCH, count)):
                session = Session(
                    f"sess-{i:09d}-{'x' * 24}",
                    now - 60_000,
                    now - (i % 60_000),
                    DAY,
                    {"user_id": f"user_{i}", "roles": ["reader"], "n": i},
                )
                rows.append((session.id, encode_session(session)))
            connection.executemany('INSERT INTO "sessions" VALUES (?, ?)', rows)
            connection.commit()
    connection.close()


def write_configs(directory: Path, target: str) -> tuple[Path, Path]:
    source = directory / "source.toml"
    source.write_text(
        '[sessionkeeper]\nbackend = "sqlitedict"\ncleanup_interval = 0\n\n'
        '[sessionkeeper.backend_opts]\nfile_path = "source.sqlite"\n'
    )
    destination = directory / "target.toml"
    if target == "leveldb":
        opts = 'db_path = "target.ldb"\nsync = false\n'
    else:
        opts = 'table_name = "migrated"\n'
    destination.write_text(
        f'[sessionkeeper]\nbackend = "{target}"\ncleanup_interval = 0\n\n'
        f"[sessionkeeper.backend_opts]\n{opts}"
    )
    return source, destination


def child(source: Path, target: Path, count: int) -> dict[str, Any]:
    """Run the migration in this (fresh) process and measure it."""
    memory: dict[str, float] = {}
    times: dict[str, float] = {}
    marks = {round(count * f): f"{int(f * 100)}%" for f in (0.1, 0.5, 1.0)}

    def progress(phase: str, done: int, total: int | None) -> None:
        now = time.perf_counter()
        times.setdefault(f"{phase}_first", now)
        times[f"{phase}_last"] = now
        if phase == "copy":
            for at, label in marks.items():
                if done >= at and label not in memory:
                    memory[label] = rss_mb()

    with (
        SessionManager.from_config(source, read_only=True) as src,
        SessionManager.from_config(target) as dst,
    ):
        memory["before"] = rss_mb()
        began = time.perf_counter()
        report = migrate_sessions(src, dst, progress=progress)
        ended = time.perf_counter()
        memory["after verify"] = rss_mb()
    memory["peak"] = rss_mb("VmHWM")
    count_s = times["copy_first"] - began  # the live count for the progress bar's total
    copy_s = times["verify_first"] - times["copy_first"]
    verify_s = ended - times["verify_first"]
    return {
        "sessions": count,
        "verified": report.verified,
        "copied": report.copied,
        "source_count": report.source_count,
        "target_count": report.target_count,
        "digest": report.source_digest,
        "seconds": {
            "count": round(count_s, 2),
            "copy": round(copy_s, 2),
            "verify": round(verify_s, 2),
            "total": round(ended - began, 2),
        },
        "rate_per_s": {
            "copy": round(count / copy_s) if copy_s else None,
            "verify": round(count / verify_s) if verify_s else None,
            "overall": round(count / (ended - began)),
        },
        "rss_mb": {key: round(value, 1) for key, value in memory.items()},
    }


def checks(result: dict[str, Any], target: str) -> list[tuple[str, bool | None]]:
    rss = result["rss_mb"]
    flat = rss["100%"] - rss["10%"] <= FLAT_MB if target != "memory" else None
    peak = rss["peak"] - rss["before"] <= PEAK_MB if target != "memory" else None
    return [
        (
            "verification passed",
            result["verified"] and result["target_count"] == result["sessions"],
        ),
        (f"RSS at 100% <= RSS at 10% + {FLAT_MB} MB", flat),
        (f"peak RSS <= RSS before the copy + {PEAK_MB} MB", peak),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = _bench.arguments(
        __doc__,
        "migrate",
        quick_help=f"{QUICK:,} sessions instead",
        strict_help="exit 1 when a check fails",
    )
    parser.add_argument("--sessions", type=int, default=None, help="override the count")
    parser.add_argument("--target", choices=["leveldb", "memory"], default="leveldb")
    parser.add_argument(
        "--child", nargs=3, metavar=("SOURCE", "TARGET", "N"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        source, target, count = args.child
        print(json.dumps(child(Path(source), Path(target), int(count))))
        return 0

    count = args.sessions or (QUICK if args.quick else FULL)
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as scratch:
        directory = Path(scratch)
        began = time.perf_counter()
        build_source(directory / "source.sqlite", count)
        built = time.perf_counter() - began
        source, target = write_configs(directory, args.target)
        print(f"built a sqlitedict file of {count:,} sessions in {built:.1f} s; migrating ...")
        completed = subprocess.run(
            [sys.executable, __file__, "--child", str(source), str(target), str(count)],
            cwd=directory,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            print(completed.stderr, file=sys.stderr)
            return 1
        result = json.loads(completed.stdout.splitlines()[-1])
    result.update(benchmark="migrate", source="sqlitedict", target=args.target, **_bench.about())
    outcome = checks(result, args.target)
    result["checks"] = {name: passed for name, passed in outcome}

    rss, rate, secs = result["rss_mb"], result["rate_per_s"], result["seconds"]
    print(f"\nmigrate {count:,} sessions: sqlitedict (read-only) -> {args.target}")
    print(f"  count for the progress bar  {secs['count']:>7.2f} s")
    print(f"  copy                        {secs['copy']:>7.2f} s  {rate['copy']:>9,} sessions/s")
    print(
        f"  verify                      {secs['verify']:>7.2f} s  {rate['verify']:>9,} sessions/s"
    )
    print(
        f"  total                       {secs['total']:>7.2f} s  {rate['overall']:>9,} sessions/s"
    )
    print("  resident memory (MB):  " + "  ".join(f"{k} {v:.1f}" for k, v in rss.items()))
    for name, passed in outcome:
        verdict = "-" if passed is None else ("ok" if passed else "MISSED")
        print(f"  {verdict:6} {name}")
    if args.json is not None:
        _bench.write_json(args.json, "migrate", result)
    return _bench.exit_code(args.strict, (passed for _, passed in outcome))


if __name__ == "__main__":
    sys.exit(main())
