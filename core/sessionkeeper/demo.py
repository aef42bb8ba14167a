"""A short, readable tour of sessionkeeper: ``python -m sessionkeeper.demo`` (or ``nox -s demo``).

It writes a config file into a temporary directory, opens a :class:`~sessionkeeper.SessionManager`
from it, and shows sessions being created, fetched, touched, expiring and swept by the scheduled
cleanup, then the statistics. It waits on the real clock for about two seconds: it is a demo, not a
test (tests inject a clock and never sleep).

The tour is a list of :class:`Section` objects, :data:`SECTIONS`. A backend with something of its
own to show (a restart that keeps sessions, a node that fails) adds a section naming the backend it
needs; sections whose backend is not installed are skipped with the ``pip install`` that adds it.
A section that fails (the restarted process could not read the sessions back) says what happened,
and the demo then exits with 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import attrs
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from sessionkeeper import Session, SessionManager, SessionNotFound, installed_backends

from ._install import install_advice

__all__ = ["SECTIONS", "DemoContext", "Section", "SectionFailed", "main"]

#: The config file of the memory tour: the scheduler sweeps every 200 ms.
MEMORY_CONFIG: Final = """\
[sessionkeeper]
backend = "memory"
cleanup_interval = 200        # ms between scheduled cleanups
default_timeout = 1000        # ms of idleness before a session expires
touch_resolution = 10         # ms a fetch must move last_accessed to write it
stats = true                  # count operations (shown at the end)
"""

#: The config file of the disk tour: every write committed and fsynced before it returns.
SQLITEDICT_CONFIG: Final = """\
[sessionkeeper]
backend = "sqlitedict"
default_timeout = 1800000     # 30 minutes

[sessionkeeper.backend_opts]
file_path = "data/sessions.sqlite"
auto_save = 0                 # durable: store() returns once the change is on disk
"""

#: The exit status of the restarted process when it opened the store but some sessions were gone.
LOST_STATUS: Final = 3

#: What the restarted process runs: it opens the same config and reads the sessions back.
_RESTARTED = f"""\
import sys
from sessionkeeper import SessionManager, SessionNotFound
lost = 0
with SessionManager.from_config(sys.argv[1]) as sessions:
    for session_id in sys.argv[2:]:
        try:
            s = sessions.fetch(session_id)
        except SessionNotFound:
            lost += 1
            print(f"  fetch({{session_id[:10]}}…) -> SessionNotFound: this session was not kept")
            continue
        print(f"  fetch({{s.metadata['user']}}) -> created_at={{s.created_at}}, "
              f"metadata={{s.metadata}}")
    print(f"  live sessions: {{sessions.count()}}")
sys.exit({LOST_STATUS} if lost else 0)
"""

#: How long the tour waits at most for the scheduler to sweep (ms).
SWEEP_WAIT_MS: Final = 5_000


@attrs.frozen
class DemoContext:
    """What every section gets: where to print and a scratch directory of its own."""

    console: Console
    workdir: Path


class SectionFailed(Exception):
    """A section could not show what it set out to show; the message says what happened."""


@attrs.frozen
class Section:
    """One part of the tour.

    :param title: shown as a rule above the section.
    :param run: prints the section; gets a :class:`DemoContext`.
    :param backend: the backend the section needs, or ``None``; skipped when not installed.
    """

    title: str
    run: Callable[[DemoContext], None]
    backend: str | None = None


class _Timeline:
    """Milliseconds since the tour started, for readable timestamps."""

    def __init__(self, start: int) -> None:
        self.start = start

    def at(self, ms: int) -> str:
        return f"+{ms - self.start} ms"


def _session_table(sessions: Sequence[Session], timeline: _Timeline) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("user", "id", "timeout", "last accessed", "expires"):
        table.add_column(column)
    for session in sessions:
        expires = "never" if session.expires_at is None else timeline.at(session.expires_at)
        timeout = "none" if session.timeout_ms is None else f"{session.timeout_ms} ms"
        table.add_row(
            str(session.metadata.get("user")),
            session.id[:10] + "…",
            timeout,
            timeline.at(session.last_accessed),
            expires,
        )
    return table


def _memory_tour(ctx: DemoContext) -> None:
    console = ctx.console
    config_path = ctx.workdir / "sessionkeeper.toml"
    config_path.write_text(MEMORY_CONFIG, encoding="utf-8")
    console.print(f"Config file [bold]{config_path.name}[/] (in a temporary directory):")
    console.print(
        Syntax(MEMORY_CONFIG, "toml", theme="ansi_dark", background_color="default", word_wrap=True)
    )

    with SessionManager.from_config(config_path) as sessions:
        timeline = _Timeline(sessions.clock())
        console.print(
            f"Opened {sessions!r}; capabilities: "
            f"{', '.join(k for k, v in sessions.capabilities.as_dict().items() if v) or 'none'}"
        )

        console.rule("[bold]create")
        users = {
            "alice": sessions.create(metadata={"user": "alice", "cart": ["book"]}),
            "bob": sessions.create(metadata={"user": "bob"}),
            "carol": sessions.create(timeout_ms=None, metadata={"user": "carol", "admin": True}),
            "dave": sessions.create(metadata={"user": "dave"}),
        }
        console.print(_session_table(list(users.values()), timeline))
        console.print(f"live sessions: {sessions.count()}")

        console.rule("[bold]fetch and touch")
        alice = sessions.fetch(users["alice"].id)
        console.print(f"fetch(alice) -> metadata {alice.metadata}")
        time.sleep(0.3)
        before = sessions.peek(users["bob"].id)
        console.print(
            f"{timeline.at(sessions.clock())}: peek(bob) reads without touching: "
            f"last accessed still {timeline.at(before.last_accessed)}"
        )
        try:
            after = sessions.fetch(users["bob"].id)
        except SessionNotFound:  # only if this machine stalled for a whole timeout
            console.print("bob expired already: this machine is very busy")
        else:
            console.print(
                f"{timeline.at(sessions.clock())}: fetch(bob) is an access: last accessed slides "
                f"to {timeline.at(after.last_accessed)}, so bob now expires at "
                f"{timeline.at(after.expires_at or 0)}"
            )

        console.rule("[bold]expiry and the scheduled cleanup")
        _watch_cleanup(ctx, sessions, users, timeline)

        console.rule("[bold]delete")
        carol = users["carol"].id
        console.print(f"delete(carol) -> {sessions.delete(carol)}")
        console.print(f"delete(carol) again -> {sessions.delete(carol)} (a missing id is no error)")

        console.rule("[bold]stats")
        _print_stats(console, sessions.stats())


def _watch_cleanup(
    ctx: DemoContext,
    sessions: SessionManager,
    users: dict[str, Session],
    timeline: _Timeline,
) -> None:
    """Watch the stored sessions until the scheduler has swept alice and dave."""
    console = ctx.console
    names = {session.id: name for name, session in users.items()}
    expected = {users["alice"].id, users["dave"].id}
    reported_expired: set[str] = set()
    deadline = time.monotonic() + SWEEP_WAIT_MS / 1000
    swept: set[str] = set()
    while time.monotonic() < deadline:
        now = sessions.clock()
        stored = {s.id for s in sessions.iter_sessions(include_expired=True)}
        live = set(sessions.list())
        for session_id in sorted((stored - live) - reported_expired, key=names.__getitem__):
            reported_expired.add(session_id)
            try:
                sessions.fetch(session_id)
            except SessionNotFound:
                console.print(
                    f"{timeline.at(now)}: {names[session_id]} expired: still stored, but fetch "
                    "raises SessionNotFound already"
                )
        newly_swept = (set(names) - stored) - swept
        if newly_swept:
            swept |= newly_swept
            who = ", ".join(sorted(names[i] for i in newly_swept))
            console.print(
                f"{timeline.at(now)}: [bold green]swept by the scheduled cleanup:[/] {who} "
                f"({len(stored)} sessions still stored)"
            )
        if expected <= swept:
            break
        time.sleep(0.02)
    else:
        console.print("[red]the scheduled cleanup did not sweep within the wait[/]")
    try:
        sessions.fetch(users["alice"].id)
    except SessionNotFound as exc:
        console.print(f"fetch(alice) -> SessionNotFound: {exc}")
    for name in ("bob", "carol"):
        session_id = users[name].id
        state = "live" if session_id in set(sessions.list()) else "gone"
        console.print(f"{name} is {state}")
    console.print(
        "carol's session has no timeout (timeout_ms=None) and never expires; bob's expires "
        "later than alice's because his fetch moved it."
    )


def _print_stats(console: Console, stats: dict[str, object]) -> None:
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    counters = stats.get("counters")
    scheduler = stats.get("scheduler")
    table.add_row("backend", str(stats["backend"]))
    table.add_row("live sessions", str(stats["live_sessions"]))
    if isinstance(counters, dict):
        for key in ("created", "stored", "hits", "misses", "deleted", "expired"):
            table.add_row(key, str(counters.get(key)))
        fetch = counters.get("operations", {}).get("fetch")
        if isinstance(fetch, dict):
            table.add_row("fetch latency p50", f"{fetch['p50_us']} µs")
    if isinstance(scheduler, dict):
        table.add_row("scheduled cleanups", str(scheduler.get("runs")))
    console.print(table)
    console.print("(all of it: sessions.stats(), or `sessionkeeper stats --json`)")


def _restart_tour(ctx: DemoContext) -> None:
    console = ctx.console
    config_path = ctx.workdir / "sessionkeeper.toml"
    config_path.write_text(SQLITEDICT_CONFIG, encoding="utf-8")
    console.print(f"Config file [bold]{config_path.name}[/]:")
    console.print(
        Syntax(
            SQLITEDICT_CONFIG, "toml", theme="ansi_dark", background_color="default", word_wrap=True
        )
    )
    with SessionManager.from_config(config_path) as sessions:
        created = [sessions.create(metadata={"user": user}) for user in ("erin", "frank")]
        console.print(
            f"this process (pid {os.getpid()}) created {len(created)} sessions in "
            f"data/sessions.sqlite, then closes the store (as when it stops)"
        )
    console.print("a new process opens the same file:")
    result = restart(config_path, [s.id for s in created])
    if result.stdout.strip():
        console.print(result.stdout.rstrip(), markup=False)
    console.print(restart_outcome(result, len(created)), markup=False)


def restart(config_path: Path, ids: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a new Python process that opens ``config_path`` and fetches ``ids``."""
    return subprocess.run(
        [sys.executable, "-c", _RESTARTED, str(config_path), *ids],
        capture_output=True,
        text=True,
        check=False,
    )


def restart_outcome(result: subprocess.CompletedProcess[str], stored: int) -> str:
    """What the restarted process showed, in one sentence; raises :class:`SectionFailed` unless
    it fetched every one of the ``stored`` sessions."""
    if result.returncode == 0:
        return f"the restart logged nobody out: the new process fetched all {stored} sessions."
    if result.returncode == LOST_STATUS:
        lost = result.stdout.count("SessionNotFound")
        raise SectionFailed(f"the restart lost {lost} of the {stored} sessions stored before it")
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    why = errors[-1] if errors else "no message"
    raise SectionFailed(
        f"the new process could not read the store (exit status {result.returncode}): {why}"
    )


#: The tour, in order. Backends add their own section here.
SECTIONS: list[Section] = [
    Section("The memory backend: create, fetch, expire, sweep", _memory_tour, backend="memory"),
    Section(
        "The sqlitedict backend: a restart keeps sessions", _restart_tour, backend="sqlitedict"
    ),
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run every section whose backend is installed; return the exit status: 1 when a section
    failed, else 0."""
    console = Console(highlight=False)
    installed = installed_backends()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="sessionkeeper-demo-") as tmp:
        for index, section in enumerate(SECTIONS):
            console.rule(f"[bold blue]{section.title}", characters="═")
            if section.backend is not None and section.backend not in installed:
                console.print(
                    f"skipped: the {section.backend!r} backend is not installed; "
                    f"{install_advice(section.backend)}",
                    markup=False,
                )
                continue
            workdir = Path(tmp) / f"{index}-{section.backend or 'core'}"
            workdir.mkdir()
            try:
                section.run(DemoContext(console=console, workdir=workdir))
            except SectionFailed as exc:
                failed += 1
                console.print(Text.assemble(("failed: ", "bold red"), str(exc)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
