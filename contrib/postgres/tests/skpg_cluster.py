"""A throwaway PostgreSQL cluster on a loopback port, for the tests and the benchmark.

Plain Python (no pytest), so ``tests/benchmarks/bench_postgres.py`` uses it too. The binaries
come from the machine (``pg_ctl``/``initdb``/``postgres`` on ``PATH`` or under
``/usr/lib/postgresql/<version>/bin``), else from the ``pgserver`` wheel, which carries a
PostgreSQL build (found with ``importlib.util.find_spec``, never imported).

PostgreSQL refuses to run as root. Run as root (as CI does), the cluster's directory is made in
the system temporary directory (which every user can traverse), handed to an unprivileged user
(``postgres`` when it exists, else ``nobody``), and ``initdb`` and ``postgres`` run as that user
through :class:`subprocess.Popen`'s ``user``/``group``: nothing is chmod-ed outside the cluster's
own directory and no user is created.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

import psycopg

__all__ = ["INSTALL_HINT", "PostgresCluster", "free_port", "postgres_bin_dir"]

INSTALL_HINT = (
    "PostgreSQL server binaries not found: apt-get install -y postgresql "
    "(or pip install pgserver, whose wheel carries them)"
)
#: How long a cluster may take to start or stop (a deadline, not a timing assertion).
DEADLINE_S = 60.0
_BINARIES = ("initdb", "postgres")


class ClusterError(RuntimeError):
    """The cluster could not be made, started or stopped; the message says why."""


def _has_binaries(directory: Path) -> bool:
    return all((directory / name).is_file() for name in _BINARIES)


def postgres_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``postgres``; :class:`ClusterError` if none."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        directory = Path(on_path).resolve().parent
        if _has_binaries(directory):
            return directory
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    for directory in reversed(installed):
        if _has_binaries(directory):
            return directory
    spec = find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        directory = Path(spec.origin).parent / "pginstall" / "bin"
        if _has_binaries(directory):
            return directory
    raise ClusterError(INSTALL_HINT)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The user to run PostgreSQL as when we are root, else ``None`` (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ClusterError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PostgresCluster:
    """One PostgreSQL cluster in its own temporary directory, listening on 127.0.0.1 and on a
    Unix socket in that directory; superuser ``postgres``, ``trust`` authentication.

    :param settings: extra ``-c name=value`` server settings.
    """

    def __init__(self, settings: Sequence[str] = ()) -> None:
        self.bin_dir = postgres_bin_dir()
        self.user = _unprivileged_user()
        self.directory = Path(tempfile.mkdtemp(prefix="skpg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.settings = list(settings)
        self.process: subprocess.Popen[bytes] | None = None
        if self.user is not None:
            os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        self._run_initdb()

    # -- addresses ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """``127.0.0.1``."""
        return "127.0.0.1"

    @property
    def socket_dir(self) -> str:
        """The directory of the server's Unix socket."""
        return str(self.directory)

    def dsn(self, dbname: str = "postgres", *, host: str | None = None) -> str:
        """A libpq URI of this cluster (TCP on 127.0.0.1 unless ``host`` says otherwise)."""
        return f"postgresql://postgres@{host or self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **kwargs: object) -> psycopg.Connection[tuple]:  # type: ignore[type-arg]
        """A raw autocommit psycopg connection (the caller closes it)."""
        return psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=5, **kwargs)  # type: ignore[arg-type]

    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        """Run ``query`` with ``params`` on a connection of its own; the rows it returns (none
        for a statement without a result)."""
        with self.connect() as conn:
            cursor = conn.execute(query, params or None)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    # -- processes ------------------------------------------------------------------------------

    def _popen(self, command: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        if self.user is not None:
            kwargs.update(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        return subprocess.Popen(command, env=env, cwd=self.directory, **kwargs)  # type: ignore[call-overload,no-any-return]

    def _run_initdb(self) -> None:
        command = [
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync",
        ]  # fmt: skip
        process = self._popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output, _ = process.communicate(timeout=DEADLINE_S)
        if process.returncode != 0:
            raise ClusterError(f"initdb failed ({process.returncode}): {output.decode()[-2000:]}")

    @property
    def log(self) -> Path:
        """The server's log (its stderr)."""
        return self.directory / "postgres.log"

    def start(self) -> PostgresCluster:
        """Start ``postgres`` and wait until it accepts connections."""
        assert self.process is None, "already running"
        command = [
            str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.directory}",
            "-c", "max_connections=200", "-c", "shared_buffers=64MB",
            *(arg for setting in self.settings for arg in ("-c", setting)),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = self._popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + DEADLINE_S
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                output = self.log.read_text(errors="replace")[-2000:]
                raise ClusterError(f"postgres exited: {output}")
            try:
                with self.connect() as conn:
                    conn.execute("SELECT 1")
                return self
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.05)
        raise ClusterError(f"postgres did not accept connections within {DEADLINE_S} s: {last}")

    def stop(self, *, immediate: bool = False) -> None:
        """Stop the server: a fast shutdown (SIGINT), or with ``immediate`` a crash-like stop
        (SIGQUIT: no checkpoint, WAL replayed at the next start)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT if immediate else signal.SIGINT)
        try:
            process.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(DEADLINE_S)

    def restart(self, *, immediate: bool = False) -> None:
        """Stop and start again on the same port and data."""
        self.stop(immediate=immediate)
        self.start()

    def destroy(self) -> None:
        """Stop the server (immediately: its data is thrown away) and remove its directory."""
        self.stop(immediate=True)
        shutil.rmtree(self.directory, ignore_errors=True)
