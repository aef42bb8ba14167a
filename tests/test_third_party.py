"""A third-party backend, built and installed like any other distribution, plugs in by entry point
and passes the conformance kit through the ``pytest11`` plugin.

The backend is ``tests/fixtures/throwaway_backend``: a separate distribution
(``sessionkeeper-throwaway``) written only against the public API, with its own test suite that
subclasses :class:`sessionkeeper.testing.BackendConformance`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from sessionkeeper import BackendNotFound, SessionManager, installed_backends
from sessionkeeper.testing import BackendConformance, ManualClock

FIXTURE = Path(__file__).parent / "fixtures" / "throwaway_backend"
DIST = "sessionkeeper-throwaway"
MODULE = "sessionkeeper_throwaway"
#: Generous limit on a subprocess, so a hang fails the test instead of blocking the run.
SUBPROCESS_TIMEOUT_S = 900
CONFIG = '[sessionkeeper]\nbackend = "throwaway"\ncleanup_interval = 0\n'


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process, without settings of the outer test run."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "PYTEST_ADDOPTS",
            "PYTEST_PLUGINS",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
            "SESSIONKEEPER_CONFIG",
            "PYTHONPATH",
        }
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def _run(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The throwaway distribution built from a copy of its source and installed with pip into a
    directory of its own (not the running environment); returns that directory."""
    root = tmp_path_factory.mktemp("third-party")
    source = root / "source"
    shutil.copytree(FIXTURE, source, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    target = root / "site"
    result = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        cwd=root,
        env=_clean_env(),
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"
    assert (target / MODULE / "__init__.py").is_file()
    assert list(target.glob("sessionkeeper_throwaway-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def forget_module() -> object:
    """Drop the throwaway module from ``sys.modules`` after the test that imported it."""
    yield None
    sys.modules.pop(MODULE, None)


def _kit_test_names() -> set[str]:
    return {name for name in dir(BackendConformance) if name.startswith("test_")}


def _junit_outcomes(path: Path) -> dict[str, str]:
    """``classname::name`` -> ``passed``, ``failed``, ``error`` or ``skipped``."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        key = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in {"failure", "error", "skipped"}:
                outcome = "failed" if child.tag == "failure" else child.tag
        outcomes[key] = outcome
    return outcomes


@pytest.mark.sessionkeeper_slow
class TestThirdPartyBackend:
    """The installed throwaway distribution, seen from outside the repository."""

    def test_conformance_kit_runs_and_passes_through_the_pytest11_plugin(
        self, installed: Path, tmp_path: Path
    ) -> None:
        """pytest, run in a directory whose ``sessionkeeper.toml`` picks the throwaway backend,
        loads the kit's plugin by entry point and passes every kit test on that backend."""
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        (run_dir / "sessionkeeper.toml").write_text(CONFIG, encoding="utf-8")
        shutil.copy(FIXTURE / "pyproject.toml", run_dir / "pyproject.toml")
        shutil.copytree(
            FIXTURE / "tests", run_dir / "tests", ignore=shutil.ignore_patterns("__pycache__")
        )
        report = tmp_path / "report.xml"
        result = _run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                f"--junitxml={report}",
                "tests",
            ],
            cwd=run_dir,
            env=_clean_env(PYTHONPATH=str(installed)),
        )
        output = f"{result.stdout}\n{result.stderr}"
        assert result.returncode == 0, f"the throwaway backend's suite failed:\n{output}"
        assert re.search(r"^plugins: .*\bsessionkeeper-\d", result.stdout, re.MULTILINE), output

        outcomes = _junit_outcomes(report)
        counts = Counter(outcomes.values())
        assert counts["failed"] == counts["error"] == 0, output
        kit_cases = {
            key.partition("::")[2].partition("[")[0]: outcome
            for key, outcome in outcomes.items()
            if key.startswith("tests.test_conformance.TestThrowawayConformance::")
        }
        missing = _kit_test_names() - set(kit_cases)
        assert not missing, f"kit tests that did not run: {sorted(missing)}"
        assert counts["passed"] > 100, f"only {counts['passed']} tests passed:\n{output}"
        assert (
            outcomes[
                "tests.test_conformance.TestThrowawayFromConfig::"
                "test_config_in_the_working_directory_picks_the_backend"
            ]
            == "passed"
        )
        # The throwaway backend is neither persistent nor openable read-only: only those skip.
        skipped = sorted(name for name, outcome in kit_cases.items() if outcome == "skipped")
        assert skipped == [
            "test_deletes_and_cleanups_survive_reopen",
            "test_expired_sessions_stay_expired_after_reopen",
            "test_read_only_open_reads_and_refuses_writes",
            "test_sessions_survive_close_and_reopen",
        ]

    def test_config_loads_the_backend_by_name(
        self,
        installed: Path,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        forget_module: object,
    ) -> None:
        """``SessionManager.from_config`` opens the backend a config file names, imported from
        the installed distribution through its ``sessionkeeper.backends`` entry point."""
        monkeypatch.syspath_prepend(str(installed))
        config = tmp_path / "sessionkeeper.toml"
        config.write_text(CONFIG, encoding="utf-8")
        entry_point = installed_backends()["throwaway"]
        assert entry_point.dist is not None
        assert entry_point.dist.name == DIST
        clock = ManualClock()
        with SessionManager.from_config(config, clock=clock) as manager:
            assert manager.backend_name == "throwaway"
            assert type(manager.backend).__module__ == MODULE
            session = manager.create(timeout_ms=5_000, metadata={"user_id": "user_456"})
            assert manager.fetch(session.id).metadata == {"user_id": "user_456"}
            clock.advance(5_001)
            assert manager.cleanup_expired() == 1
        module_file = Path(sys.modules[MODULE].__file__ or "")
        assert module_file.is_relative_to(installed)


class TestThirdPartyBackendMissing:
    """A config that names a backend whose distribution is not installed."""

    def test_missing_distribution_is_named_with_the_install_hint(self, tmp_path: Path) -> None:
        """Without the throwaway distribution on the path, ``from_config`` raises
        ``BackendNotFound`` naming the backend, the file and the ``pip install`` that adds it."""
        if "throwaway" in installed_backends():
            pytest.skip("the throwaway backend is installed in this environment")
        config = tmp_path / "sessionkeeper.toml"
        config.write_text(CONFIG, encoding="utf-8")
        with pytest.raises(BackendNotFound, match="pip install sessionkeeper-throwaway") as info:
            SessionManager.from_config(config)
        assert info.value.name == "throwaway"
        assert info.value.path == config
        assert "memory" in info.value.installed
