"""The processes test_sqlitedict_processes.py and test_sqlitedict_shared.py start: a worker script
in a process of its own, its stdout read line by line on a queue (``sqlitedict_worker.py``,
``shared_worker.py``), and the ``sessionkeeper`` command line. Imported through the folder that
conftest.py puts on ``sys.path``."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

#: Longest wait for a line from a worker before the test calls it hung (not a timing assertion).
HANG_S = 120.0


class WorkerProcess:
    """``python script *args`` running, each complete line of its stdout put on :attr:`lines`
    (``None`` once its stdout closed); stdin is a pipe when ``stdin`` is true."""

    def __init__(self, script: Path, *args: object, stdin: bool) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(script), *map(str, args)],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.process.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            if line.endswith("\n"):  # a line cut short by a kill was never acknowledged
                self.lines.put(line.strip())
        self.lines.put(None)

    def next_line(self) -> str | None:
        """The next complete line, or ``None`` once the worker's stdout closed; a worker silent
        for :data:`HANG_S` is killed and the test fails."""
        try:
            return self.lines.get(timeout=HANG_S)
        except queue.Empty:
            self.kill()
            pytest.fail(f"the worker printed nothing for {HANG_S:.0f} s (hung?)")

    def next_expected(self, word: str) -> str:
        """The next line, which must start with ``word``: else the worker is killed and an
        AssertionError shows what came and the worker's stderr."""
        line = self.next_line()
        if line is None or not line.startswith(word):
            self.kill()
            raise AssertionError(f"expected {word!r}, got {line!r}; stderr: {self.stderr()}")
        return line

    def kill(self) -> None:
        """SIGKILL the worker (if it still runs) and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(HANG_S)

    def stderr(self) -> str:
        """What the worker wrote to stderr (once it ended)."""
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def close(self) -> None:
        """Kill the worker, wait for its reader and close its pipes."""
        self.kill()
        self._reader.join(HANG_S)
        for stream in (self.process.stdout, self.process.stderr, self.process.stdin):
            if stream is not None:
                stream.close()


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m sessionkeeper --config CONFIG ARGS`` run to its end, its output captured
    (the group's ``--config``, so that ARGS may end with ``-- ID``)."""
    return subprocess.run(
        [sys.executable, "-m", "sessionkeeper", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )
