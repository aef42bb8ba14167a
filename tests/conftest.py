"""Fixtures shared by the cross-package tests."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

from sessionkeeper import SessionManager
from sessionkeeper.testing import BackendConformance, ManualClock
from sessionkeeper.testing._kit_atomic import ATOMIC_ONLY

_tables = itertools.count()
FIXTURES = Path(__file__).parent / "fixtures"

#: Builds a real installed distribution (a dist-info folder on sys.path) with entry points.
MakeDist = Callable[..., Path]


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeDist:
    """Write modules and a ``.dist-info`` with entry points into a folder put on ``sys.path``.

    ``importlib.metadata`` then finds the entry points exactly as it finds pip-installed ones.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def make(
        name: str,
        modules: dict[str, str],
        entry_points: dict[str, dict[str, str]],
        version: str = "0.1.0",
    ) -> Path:
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        lines = []
        for group, eps in entry_points.items():
            lines.append(f"[{group}]")
            lines.extend(f"{ep} = {target}" for ep, target in eps.items())
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        return site

    return make


@pytest.fixture
def stub_backend(monkeypatch: pytest.MonkeyPatch) -> str:
    """Make ``sk_stub_backend`` importable and return that module name.

    Its ``StubBackend`` is a complete backend that keeps nothing (every hook succeeds and finds
    nothing), for the modules a test installs with ``make_dist`` to subclass and break in one place.
    """
    monkeypatch.syspath_prepend(os.fspath(FIXTURES / "stub_backend"))
    return "sk_stub_backend"


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A CLI runner in an empty working directory, with no config named by the environment and
    no terminal width set."""
    monkeypatch.delenv("SESSIONKEEPER_CONFIG", raising=False)
    monkeypatch.delenv("SESSIONKEEPER_DEBUG", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return CliRunner()


@pytest.fixture
def clock() -> ManualClock:
    """A clock the test moves by hand."""
    return ManualClock()


@pytest.fixture
def table_name() -> str:
    """A memory table name no other test uses."""
    return f"test-{next(_tables)}"


@pytest.fixture
def manager(clock: ManualClock, table_name: str) -> Iterator[SessionManager]:
    """A memory-backed manager on a manual clock, scheduler off."""
    with SessionManager(
        backend="memory",
        backend_opts={"table_name": table_name},
        clock=clock,
        cleanup_interval=0,
    ) as sessions:
        yield sessions


# --- child processes, as run from outside the test run ------------------------------------------


@attrs.frozen
class SuiteRun:
    """A test suite run by pytest in a child process: its output and every test's outcome."""

    process: subprocess.CompletedProcess[str]
    #: ``classname::name`` (as the JUnit report gives them) -> ``passed``, ``failed``, ``error``
    #: or ``skipped``.
    outcomes: dict[str, str]

    @property
    def output(self) -> str:
        """What the run printed, stdout then stderr."""
        return f"{self.process.stdout}\n{self.process.stderr}"

    def assert_kit_passed(self, test_class: str) -> dict[str, str]:
        """Check that the run passed with the kit loaded through its ``pytest11`` plugin and every
        kit test ran in ``test_class`` (a JUnit classname such as
        ``tests.test_conformance.TestMyConformance``); return the kit tests' outcomes by test name,
        without parameters."""
        tail = self.output[-6000:]
        assert self.process.returncode == 0, tail
        assert re.search(r"^plugins: .*\bsessionkeeper-\d", self.process.stdout, re.M), tail
        counts = Counter(self.outcomes.values())
        assert counts["failed"] == counts["error"] == 0, tail
        kit = {
            key.partition("::")[2].partition("[")[0]: outcome
            for key, outcome in self.outcomes.items()
            if key.startswith(f"{test_class}::")
        }
        kit_tests = {name for name in dir(BackendConformance) if name.startswith("test_")}
        assert kit_tests <= set(kit), f"kit tests that did not run: {sorted(kit_tests - set(kit))}"
        return kit


class Outside:
    """What someone outside this test run runs (an operator, the author of a backend outside this
    repository), each in a child process whose environment carries none of the outer run's
    settings: any command, pip installing a distribution (not editable, into a folder of its own)
    and pytest running a suite."""

    #: Generous limit on a child process, so that a hang fails the test instead of the run.
    timeout_s = 900
    #: The kit tests that skip on a backend neither persistent nor openable read-only, nor
    #: atomic (the atomic ones are the kit's ``ATOMIC_ONLY``).
    NOT_PERSISTENT_SKIPS = tuple(
        sorted(
            (
                "test_deletes_and_cleanups_survive_reopen",
                "test_expired_sessions_stay_expired_after_reopen",
                "test_read_only_open_reads_and_refuses_writes",
                "test_sessions_survive_close_and_reopen",
                *ATOMIC_ONLY,
            )
        )
    )
    #: Settings of the outer run left out of a child's environment, besides every
    #: ``SESSIONKEEPER_*`` variable.
    _OUTER_SETTINGS = frozenset(
        {"PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "PYTHONPATH"}
    )

    def run(self, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``args`` in ``cwd`` with ``env`` added to the clean environment (which sets a
        terminal width of 200 columns)."""
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in self._OUTER_SETTINGS and not key.startswith("SESSIONKEEPER_")
        }
        environment.update({"PIP_DISABLE_PIP_VERSION_CHECK": "1", "COLUMNS": "200"}, **env)
        return subprocess.run(
            list(args),
            cwd=cwd,
            env=environment,
            capture_output=True,
            text=True,
            timeout=self.timeout_s,
            check=False,
        )

    def pip_install(self, source: Path, target: Path) -> Path:
        """Build the project in ``source`` and install it with pip into ``target``, offline and
        without dependencies (the running environment has them); return ``target``."""
        result = self.run(
            sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
            "--no-index", "--target", os.fspath(target), os.fspath(source),
            cwd=source.parent,
        )  # fmt: skip
        assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
        return target

    def run_pytest(self, *args: str, cwd: Path, site: Path, report: Path) -> SuiteRun:
        """Run pytest with ``args`` in ``cwd``, importing from ``site`` (where ``pip_install``
        put the distribution), with its JUnit report written to ``report``."""
        result = self.run(
            sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={report}",
            *args,
            cwd=cwd, PYTHONPATH=os.fspath(site),
        )  # fmt: skip
        outcomes: dict[str, str] = {}
        if report.is_file():
            for case in ET.parse(report).getroot().iter("testcase"):
                outcome = "passed"
                for child in case:
                    if child.tag in {"failure", "error", "skipped"}:
                        outcome = "failed" if child.tag == "failure" else child.tag
                outcomes[f"{case.get('classname')}::{case.get('name')}"] = outcome
        return SuiteRun(result, outcomes)


@pytest.fixture(scope="session")
def outside() -> Outside:
    """Run commands, pip and pytest in child processes as someone outside this test run would
    (see :class:`Outside`)."""
    return Outside()
