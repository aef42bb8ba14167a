"""Shared mode under SIGKILL: four writer processes on one file, killed at random, restarted.

The writers are ``shared_crash_worker.py`` processes, run with this interpreter on one file with
``shared = true``. Each creates sessions tagged with its (writer, generation, sequence number)
and adds 1 to counters all of them share (``update``), printing ``begin …`` before each write
and ``ack …`` once it returned, so the parent knows every acknowledged write and the one write,
at most, that a kill caught in flight. ``SESSIONKEEPER_CRASH_KILLS`` sets how many kills
(default 20); ``SESSIONKEEPER_CRASH_SEED`` fixes the victims and the kill points.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import IO, Any

import attrs
import pytest

from sessionkeeper import Session, SessionManager

WORKER = Path(__file__).with_name("shared_crash_worker.py")
KILLS = int(os.environ.get("SESSIONKEEPER_CRASH_KILLS", "20"))
SEED = int(os.environ.get("SESSIONKEEPER_CRASH_SEED", str(random.randrange(2**32))))
WRITERS = 4
COUNTERS = tuple(f"counter-{k}" for k in range(3))
#: Share of kills that land on any writer, wherever it is, opening the file included; the
#: others land on a writer that has acknowledged a write since it started, a random moment
#: (0-50 ms) later.
ANYWHERE = 0.15
#: Longest wait for a worker's next line before the test calls it hung (not a timing assertion).
HANG_S = 60.0

pytestmark = pytest.mark.sessionkeeper_slow

#: A write: ("create", writer, generation, seq) or ("inc", counter).
Write = tuple[Any, ...]


def shared_opts(path: Path) -> dict[str, Any]:
    return {"file_path": str(path), "shared": True}


class Writer:
    """One running ``shared_crash_worker.py``; its complete stdout lines are collected."""

    def __init__(self, opts: dict[str, Any], writer: int, generation: int, log: Path) -> None:
        self.writer, self.generation = writer, generation
        self.log = log
        seed = SEED + 1000 * writer + generation
        arguments = [json.dumps(opts), str(writer), str(generation), str(seed), *COUNTERS]
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER), *arguments],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.lines: list[list[str]] = []
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.endswith("\n"):  # a line cut short by the kill was never printed whole
                self.lines.append(line.split())
        stream.close()

    def said(self, word: str) -> bool:
        """Whether a line starting with ``word`` came."""
        return any(words[0] == word for words in self.lines)

    def check_running(self) -> None:
        """Fail if it ended on its own (only the test ends a writer)."""
        if self.process.poll() is not None:
            self._reader.join(HANG_S)
            pytest.fail(f"{self} ended on its own: {self.ending()}")

    def wait_for(self, word: str) -> None:
        """Wait until a line starting with ``word`` came; fail if the worker ended or hung."""
        deadline = time.monotonic() + HANG_S
        while not self.said(word):
            self.check_running()
            if time.monotonic() > deadline:
                pytest.fail(f"{self}: no {word!r} line in {HANG_S:.0f} s (hung?)")
            time.sleep(0.005)

    def kill(self) -> None:
        """SIGKILL it; fail if it had already ended on its own (an error, not our kill)."""
        self.check_running()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(HANG_S)
        self._reader.join(HANG_S)
        assert self.process.stdin is not None
        self.process.stdin.close()

    def stop(self) -> None:
        """Close its stdin: it finishes the write under way, closes the manager and exits 0."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(HANG_S)
        self._reader.join(HANG_S)
        assert code == 0, f"{self} failed to close: {self.ending()}"
        assert self.lines[-1] == ["closed"], f"{self} did not say closed: {self.ending()}"

    def ending(self) -> str:
        """How it ended: exit code, last lines, stderr."""
        code, last = self.process.returncode, self.lines[-2:]
        return f"exit {code}, last lines {last}, stderr:\n{self.log.read_text()}"

    def __str__(self) -> str:
        return f"writer {self.writer} generation {self.generation} (seed {SEED})"


def writing(writers: list[Writer]) -> list[Writer]:
    """The writers that acknowledged a write since they started, once there is one (waiting
    for a restarted writer to get going is what makes the test slow on a loaded machine)."""
    deadline = time.monotonic() + HANG_S
    while True:
        for writer in writers:
            writer.check_running()
        acked = [writer for writer in writers if writer.said("ack")]
        if acked:
            return acked
        if time.monotonic() > deadline:
            pytest.fail(f"no writer acknowledged a write in {HANG_S:.0f} s (hung?)")
        time.sleep(0.005)


@attrs.define
class Ledger:
    """What the writers said: acknowledged writes, and those a kill caught in flight."""

    created: dict[tuple[int, int, int], str] = attrs.Factory(dict)  # (w, gen, seq) -> id
    maybe_created: set[tuple[int, int, int]] = attrs.Factory(set)
    increments: Counter[str] = attrs.Factory(Counter)
    maybe_increments: Counter[str] = attrs.Factory(Counter)

    def record(self, writer: Writer, *, killed: bool) -> None:
        """Read ``writer``'s lines; a ``begin`` left without its ``ack`` is in flight (only
        a killed writer may leave one)."""
        pending: list[str] | None = None
        for words in writer.lines:
            if words[0] == "begin":
                assert pending is None, f"{writer}: two begins in a row: {pending}, {words}"
                pending = words
            elif words[0] == "ack":
                assert pending is not None, f"{writer}: an ack with no begin: {words}"
                assert words[1:3] == pending[1:3], f"{writer}: {words} acknowledges {pending}"
                if words[1] == "create":
                    self.created[(writer.writer, writer.generation, int(words[2]))] = words[3]
                else:
                    self.increments[words[2]] += 1
                pending = None
        if pending is None:
            return
        assert killed, f"{writer} stopped cleanly with a write unfinished: {pending}"
        if pending[1] == "create":
            self.maybe_created.add((writer.writer, writer.generation, int(pending[2])))
        else:
            self.maybe_increments[pending[2]] += 1


def check_store(path: Path, ledger: Ledger) -> None:
    """The file reopens; it holds every acknowledged create and nothing that was never
    attempted; each counter lies between its acknowledged increments and those plus the ones
    in flight; the owner index agrees with the sessions."""
    with SessionManager(backend="sqlitedict", backend_opts=shared_opts(path)) as manager:
        stored: dict[str, Session] = {s.id: s for s in manager.iter_sessions(include_expired=True)}
        by_owner = {w: set(manager.list(owner=f"writer-{w}")) for w in range(WRITERS)}
    tagged = {
        (s.metadata["writer"], s.metadata["gen"], s.metadata["seq"]): s
        for s in stored.values()
        if "writer" in s.metadata
    }
    lost = sorted(
        key for key, sid in ledger.created.items() if key not in tagged or tagged[key].id != sid
    )
    assert not lost, f"acknowledged creates lost: {lost[:10]} (seed {SEED})"
    attempted = ledger.created.keys() | ledger.maybe_created
    phantoms = sorted(tagged.keys() - attempted)
    assert not phantoms, f"sessions nobody created: {phantoms[:10]} (seed {SEED})"
    assert len(stored) == len(tagged) + len(COUNTERS), sorted(stored)[:10]
    for counter in COUNTERS:
        low = ledger.increments[counter]
        high = low + ledger.maybe_increments[counter]
        value = stored[counter].metadata["n"]
        assert low <= value <= high, (
            f"{counter} = {value}: {low} increments acknowledged, "
            f"{high - low} in flight at a kill (seed {SEED})"
        )
        assert stored[counter].version == value + 1, (counter, stored[counter].version, value)
    for w in range(WRITERS):
        expected = {s.id for key, s in tagged.items() if key[0] == w}
        assert by_owner[w] == expected, f"owner index of writer-{w} (seed {SEED})"
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


class TestSharedWritersKilled:
    def test_random_kills_lose_no_acknowledged_write_and_counters_are_exact(
        self, tmp_path: Path
    ) -> None:
        """Four writers on one file in shared mode, SIGKILLed at random points (opening the
        file, inside a create or an update, between two) and restarted, KILLS times: every
        restart opens the file; every acknowledged create is stored, with its id, owner and
        metadata; no session appears that no writer tried to create; every counter holds
        exactly its acknowledged increments, plus at most the increments a kill caught in
        flight (one that was not acknowledged may or may not have committed, never half);
        ``PRAGMA integrity_check`` is ok."""
        path = tmp_path / "shared.sqlite"
        opts = shared_opts(path)
        with SessionManager(backend="sqlitedict", backend_opts=opts, cleanup_interval=0) as setup:
            now = setup.clock()
            for counter in COUNTERS:
                setup.store(Session(counter, now, now, None, {"n": 0}))
        rng = random.Random(SEED)
        ledger = Ledger()
        generations = [0] * WRITERS

        def start(w: int) -> Writer:
            return Writer(opts, w, generations[w], tmp_path / f"w{w}-{generations[w]}.log")

        writers = [start(w) for w in range(WRITERS)]
        try:
            for _ in range(KILLS):
                if rng.random() < ANYWHERE:
                    victim = rng.choice(writers)
                else:
                    victim = rng.choice(writing(writers))
                    time.sleep(rng.uniform(0, 0.05))
                victim.kill()
                ledger.record(victim, killed=True)
                w = victim.writer
                generations[w] += 1
                writers[w] = start(w)
            for writer in writers:
                writer.wait_for("ack")  # each last generation opened the file and wrote
            for writer in writers:
                writer.stop()
                ledger.record(writer, killed=False)
        finally:
            for writer in writers:
                if writer.process.poll() is None:
                    writer.process.kill()
                    writer.process.wait(HANG_S)
        assert ledger.created, "no create was acknowledged"
        assert sum(ledger.increments.values()), "no increment was acknowledged"
        check_store(path, ledger)
        print(  # shown with -s: what the run did
            f"seed {SEED}: {KILLS} kills, {sum(generations) + WRITERS} writer processes, "
            f"{len(ledger.created)} creates and {sum(ledger.increments.values())} increments "
            f"acknowledged, {len(ledger.maybe_created)} creates and "
            f"{sum(ledger.maybe_increments.values())} increments in flight at a kill"
        )
