"""What the benchmark scripts share: the injected clock, the figures, the report and the flags.

Not a benchmark itself (``nox -s bench`` runs only ``bench_*.py``). The scripts run as ``python
tests/benchmarks/bench_<backend>.py``, which puts this folder on ``sys.path``, so they
``import _bench``. A script keeps what is its own — its sizes, its measurements and their
targets, the backend and version details of its header line — and hands the rest to this module:

- :class:`Clock`, the integer-ms clock the managers are given, which only the benchmark moves;
- :func:`paired`, the alternating median timing of an operation beside its floor, and
  :func:`run_together`, work started at once on several threads;
- :class:`Figure` (and :class:`NotedFigure`, with a note column), one row of the report, and
  :func:`figure`, which builds a row from its absolute and ratio targets;
- :func:`arguments`, the flags every script takes (``--quick``, ``--json PATH``, ``--strict``);
- :func:`run`, the ``main`` of a script that reports a table: it times the script's ``measure``,
  prints :func:`report`, writes the JSON (:func:`write_json`) and returns :func:`exit_code`;
  :func:`main`, the whole ``main`` of such a script: what it needs installed, its flags, then
  :func:`run`;
- :func:`about`, what the JSON says of the run (versions, machine, load), and
  :func:`platform_line`, the Python and machine part of a report's title;
- for the scripts that time a backend through a manager: :func:`manager_settings` (no scheduler,
  the injected clock, :data:`TIMEOUT`, :data:`TOUCH_RESOLUTION`), :func:`touch_due` (a setup
  after which every fetch writes a touch back), the concurrent-state figures measured alike on
  every backend, :func:`time_update`, :func:`time_store_if` and :func:`time_owner_lists`, and
  the cleanup sweeps, :func:`time_cleanups` and :func:`cleanup_figure`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import threading
import time
import timeit
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from sessionkeeper import __version__

if TYPE_CHECKING:
    from sessionkeeper import SessionManager

#: The clock's starting point, in ms since the epoch (November 2023).
START = 1_700_000_000_000


class Clock:
    """An injected clock: integer ms that only the benchmark moves."""

    __slots__ = ("now",)

    def __init__(self, start: int = START) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now


# --- timing ------------------------------------------------------------------------------------


def paired(
    function: Callable[..., object],
    floor: Callable[..., object],
    *arguments: Sequence[Any],
    floor_arguments: tuple[Sequence[Any], ...] | None = None,
    repeats: int,
    setup: Callable[[], object] | None = None,
) -> tuple[float, float]:
    """Median µs per call of ``function`` and of ``floor``, each mapped over ``arguments``.

    ``floor`` is mapped over ``floor_arguments`` instead when given (as many calls). The two are
    timed alternately, repeat by repeat, so that a burst of load on the machine weighs on both
    alike. ``setup`` runs before each timing of ``function``. GC is off while timing
    (``timeit``'s default).
    """
    count = len(arguments[0])
    floor_args = arguments if floor_arguments is None else floor_arguments
    assert len(floor_args[0]) == count
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        if setup is not None:
            setup()
        for results, callable_, args in (
            (timings[0], function, arguments),
            (timings[1], floor, floor_args),
        ):

            def run(callable_: Callable[..., object] = callable_, args: Any = args) -> None:
                deque(map(callable_, *args), 0)

            results.append(timeit.Timer(run).timeit(number=1) / count * 1e6)
    return statistics.median(timings[0]), statistics.median(timings[1])


def run_together(work: Callable[[int], object], threads: int) -> float:
    """Run ``work(0)`` … ``work(threads - 1)``, each on a thread of its own, all released at
    once past a barrier; return once the last is joined, with the :func:`time.perf_counter` of
    the release (the caller stops its clock where it sees fit)."""
    barrier = threading.Barrier(threads + 1)

    def run(number: int) -> None:
        barrier.wait()
        work(number)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    released = time.perf_counter()
    for worker in workers:
        worker.join()
    return released


# --- a backend through a manager ---------------------------------------------------------------

#: The sessions' idle timeout: the default, 30 minutes.
TIMEOUT = 1_800_000
#: The managers' touch resolution: a fetch writes a touch back once the clock moved further.
TOUCH_RESOLUTION = 1_000
#: Sessions of the one owner that ``list(owner=)`` finds.
OWNED = 10


def manager_settings(clock: Clock) -> dict[str, Any]:
    """The keywords of every benchmarked manager besides its backend: no cleanup running behind
    the measurements, the injected ``clock`` (so the benchmark decides when a fetch writes a
    touch back), :data:`TIMEOUT` and :data:`TOUCH_RESOLUTION`."""
    return {
        "cleanup_interval": 0,
        "touch_resolution": TOUCH_RESOLUTION,
        "default_timeout": TIMEOUT,
        "clock": clock,
    }


def touch_due(clock: Clock) -> Callable[[], None]:
    """A ``setup`` for :func:`paired`: it moves ``clock`` on by more than
    :data:`TOUCH_RESOLUTION`, so that every fetch of the next repeat writes a touch back."""

    def later() -> None:
        clock.now += TOUCH_RESOLUTION + 1

    return later


def time_cleanups(
    sessions: SessionManager, clock: Clock, *, start: int, expired: int, repeats: int
) -> list[float]:
    """ms of each of ``repeats`` ``cleanup_expired()`` sweeps, the clock set to
    ``start + expired × k`` before the k-th (from 1); each must remove exactly ``expired``
    sessions (the script stored them so). A collection runs before each, outside its timing."""
    timings = []
    for attempt in range(repeats):
        clock.now = start + expired * (attempt + 1)
        gc.collect()
        began = time.perf_counter()
        removed = sessions.cleanup_expired()
        timings.append((time.perf_counter() - began) * 1e3)
        assert removed == expired, f"cleanup removed {removed}, expected {expired}"
    return timings


def cleanup_figure(
    expired: int,
    among: int,
    timings: Sequence[float],
    floors: Sequence[float],
    floor_name: str,
    *,
    limit_ms: float | None = None,
) -> Figure:
    """The row of the cleanup of ``expired`` sessions among ``among``: the median ms of the
    sweeps (``timings``) beside that of the floor's (``floors``), held to ``<= limit_ms`` when
    given, else to less than the floor (the sweep reads only the expired part)."""
    value, floor = statistics.median(timings), statistics.median(floors)
    if limit_ms is None:
        target, passed = "O(expired): < floor", value < floor
    else:
        target, passed = f"<= {limit_ms:g} ms", value <= limit_ms
    return Figure(
        f"cleanup of {expired:,} expired among {among:,}",
        value,
        "ms",
        floor,
        floor_name,
        target,
        passed,
    )


def bump(metadata: dict[str, Any]) -> dict[str, Any]:
    """The change every update benchmark makes: the counter ``n`` up by one."""
    metadata["n"] += 1
    return metadata


def time_update(sessions: SessionManager, ids: Sequence[str], repeats: int) -> tuple[float, float]:
    """Median µs of ``update(id, bump)`` and of the ``fetch`` + ``store`` doing the same change
    (what update replaces, not atomic), over ``ids`` whose metadata hold ``n = 0``; checks
    afterwards that no update was lost."""
    fetch, store = sessions.fetch, sessions.store

    def update(session_id: str) -> None:
        sessions.update(session_id, bump)

    def fetch_store(session_id: str) -> None:
        session = fetch(session_id)
        store(session.replace(metadata=bump(session.metadata)))

    timed = paired(update, fetch_store, ids, repeats=repeats)
    # Each id is bumped once per repeat by each of the two.
    assert sessions.peek(ids[0]).metadata["n"] == 2 * repeats, "an update was lost"
    return timed


def time_store_if(
    sessions: SessionManager, ids: Sequence[str], repeats: int
) -> tuple[float, float]:
    """Median µs of ``store(if_version=)`` and of a plain ``store``, on disjoint halves of
    ``ids`` (a plain store bumps the version the conditional one names)."""
    store = sessions.store
    half = len(ids) // 2
    conditional = [sessions.peek(sid) for sid in ids[:half]]
    plain = [sessions.peek(sid) for sid in ids[half : 2 * half]]

    def store_if(position: int) -> None:
        session = conditional[position]
        conditional[position] = store(session, if_version=session.version)

    def store_plain(position: int) -> None:
        plain[position] = store(plain[position])

    timed = paired(store_if, store_plain, range(half), repeats=repeats)
    assert conditional[0].version == plain[0].version, "versions drifted apart"
    return timed


def time_owner_lists(
    large: SessionManager, small: SessionManager, owner: str, repeats: int
) -> tuple[float, float]:
    """Median µs of ``list(owner=owner)`` on ``large`` and on ``small``, timed alternately (so
    that load from elsewhere weighs on both alike), each checked first to find the
    :data:`OWNED` sessions."""
    timers = []
    for sessions in (large, small):
        assert len(sessions.list(owner=owner)) == OWNED
        timers.append(timeit.Timer(lambda sessions=sessions: sessions.list(owner=owner)))
    calls = 2_000
    timings: tuple[list[float], list[float]] = ([], [])
    for _ in range(3 * repeats):
        for timer, results in zip(timers, timings, strict=True):
            results.append(timer.timeit(number=calls) / calls * 1e6)
    return statistics.median(timings[0]), statistics.median(timings[1])


# --- figures -----------------------------------------------------------------------------------


@attrs.frozen
class Figure:
    """One row of the report."""

    operation: str
    value: float | None  # None: not measured (e.g. an optional library not installed)
    unit: str  # "us" per operation, "ms" or "s" per call or sweep, "B" per session
    floor: float | None
    floor_name: str
    target: str  # human-readable
    passed: bool | None  # None: no target

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.floor:
            return None
        return self.value / self.floor


@attrs.frozen
class NotedFigure(Figure):
    """A row with a note; a report of such rows has a ``note`` column (and so has the JSON)."""

    note: str = ""


def figure(
    operation: str,
    value: float,
    floor: float,
    floor_name: str,
    *,
    unit: str = "us",
    absolute: float | None = None,
    ratio: float | None = None,
    stretch: float | None = None,
) -> Figure:
    """A row checked against ``value <= absolute`` and ``value <= ratio × floor`` (both when
    both are given; no target when neither is); ``stretch`` is only shown beside ``ratio``."""
    parts, passed = [], None
    if absolute is not None:
        parts.append(f"<= {absolute:g} {unit}")
        passed = value <= absolute
    if ratio is not None:
        parts.append(f"<= {ratio:g}x floor" + (f" (stretch {stretch:g}x)" if stretch else ""))
        passed = bool(passed is not False and value <= ratio * floor)
    return Figure(operation, value, unit, floor, floor_name, ", ".join(parts) or "-", passed)


def report(title: str, figures: Sequence[Figure], digits: Mapping[str, int]) -> str:
    """The aligned table under ``title``; ``digits`` gives the decimals of each unit."""
    notes = any(isinstance(f, NotedFigure) for f in figures)
    header: tuple[str, ...] = ("operation", "value", "floor", "ratio", "target", "result")
    if notes:
        header += ("note",)
    rows = []
    for f in figures:
        places = digits[f.unit]
        value = "n/a" if f.value is None else f"{f.value:.{places}f} {f.unit}"
        floor = f"{f.floor:.{places}f} {f.unit} ({f.floor_name})" if f.floor else "-"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        result = {True: "pass", False: "MISS", None: "-"}[f.passed]
        row: tuple[str, ...] = (f.operation, value, floor, ratio, f.target, result)
        if notes:
            row += (f.note if isinstance(f, NotedFigure) else "",)
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        title,
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


# --- what ran where ----------------------------------------------------------------------------


def about(**details: Any) -> dict[str, Any]:
    """What the JSON says of the run beside the figures: sessionkeeper's version, ``details``
    (the backend's and its libraries' versions, the script's settings, in the order given), then
    the machine: Python's version, the architecture, the CPUs and the load average over 1, 5 and
    15 minutes at the call (a script calls it once it has measured)."""
    return {
        "sessionkeeper": __version__,
        **details,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def platform_line(*details: str) -> str:
    """``Python <version>[, <detail>...] on <machine>``: the part of a report's title that says
    where it ran (``details``: e.g. the SQLite library's version)."""
    return ", ".join((f"Python {platform.python_version()}", *details)) + (
        f" on {platform.machine()}"
    )


# --- the command line --------------------------------------------------------------------------


def arguments(
    doc: str | None,
    benchmark: str,
    *,
    quick_help: str,
    strict_help: str = "exit 1 when a target is missed",
) -> argparse.ArgumentParser:
    """A parser of the flags every script takes (a script may add its own):

    ``--quick``, ``--json PATH`` (a directory gets ``<benchmark>.json``) and ``--strict``.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n")[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help=f"also write the figures as JSON (a directory gets {benchmark}.json)",
    )
    parser.add_argument("--strict", action="store_true", help=strict_help)
    return parser


def write_json(path: Path, benchmark: str, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` (to ``<benchmark>.json`` in it if a directory)."""
    if path.is_dir():
        path = path / f"{benchmark}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def exit_code(strict: bool, passed: Iterable[bool | None]) -> int:
    """1 under ``--strict`` when a target was missed (``False``; ``None`` has no target)."""
    return 1 if strict and any(p is False for p in passed) else 0


@attrs.frozen
class Run:
    """What a script's ``measure`` hands back to :func:`run`."""

    figures: Sequence[Figure]
    sizes: attrs.AttrsInstance
    #: The report's first line: versions, platform and sizes (``run`` appends the duration).
    title: str
    #: The JSON's fields between ``benchmark`` and ``sizes``: versions and platform.
    about: Mapping[str, Any]
    #: Lines printed after the table.
    notes: Sequence[str] = ()


def run(
    args: argparse.Namespace,
    benchmark: str,
    measure: Callable[[argparse.Namespace], Run],
    *,
    digits: Mapping[str, int],
) -> int:
    """A script's ``main`` after parsing: measure, print the report, write the JSON.

    The duration in the title and the JSON covers all of ``measure``. The exit code is
    :func:`exit_code`'s.
    """
    began = time.perf_counter()
    result = measure(args)
    seconds = time.perf_counter() - began
    print(report(f"{result.title}; {seconds:.0f} s", result.figures, digits))
    for line in result.notes:
        print(line)
    if args.json is not None:
        payload = {
            "benchmark": benchmark,
            **result.about,
            "sizes": attrs.asdict(result.sizes),
            "seconds": round(seconds, 1),
            "figures": [{**attrs.asdict(f), "ratio": f.ratio} for f in result.figures],
        }
        path = write_json(args.json, benchmark, payload)
        print(f"figures written to {path}")
    return exit_code(args.strict, (f.passed for f in result.figures))


def main(
    doc: str | None,
    benchmark: str,
    measure: Callable[[argparse.Namespace], Run],
    *,
    quick_help: str,
    digits: Mapping[str, int],
    argv: Sequence[str] | None = None,
    flags: Callable[[argparse.ArgumentParser], object] | None = None,
    requires: Callable[[], object] | None = None,
    needs: str = "",
) -> int:
    """A script's whole ``main``: ``bench_<benchmark>.py`` with ``doc``, its module docstring.

    First ``requires()`` (when given) imports what the script needs beyond the dev install;
    on an :class:`ImportError` it prints ``bench_<benchmark>: needs <needs>; not run`` and
    returns 0 (``nox -s bench`` goes on). Then the flags of :func:`arguments` (``quick_help``),
    plus the script's own added by ``flags(parser)``, parsed from ``argv`` (the command line
    when ``None``), and :func:`run` with ``measure`` and ``digits``.
    """
    if requires is not None:
        try:
            requires()
        except ImportError:
            print(f"bench_{benchmark}: needs {needs}; not run")
            return 0
    parser = arguments(doc, benchmark, quick_help=quick_help)
    if flags is not None:
        flags(parser)
    return run(parser.parse_args(argv), benchmark, measure, digits=digits)
