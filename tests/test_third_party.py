"""A third-party backend, built and installed like any other distribution, plugs in by entry point
and passes the conformance kit through the ``pytest11`` plugin.

The backend is ``tests/fixtures/throwaway_backend``: a separate distribution
(``sessionkeeper-throwaway``) written only against the public API, with its own test suite that
subclasses :class:`sessionkeeper.testing.BackendConformance`.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import BackendNotFound, SessionManager, installed_backends
from sessionkeeper.testing import ManualClock

FIXTURE = Path(__file__).parent / "fixtures" / "throwaway_backend"
DIST = "sessionkeeper-throwaway"
MODULE = "sessionkeeper_throwaway"
CONFIG = '[sessionkeeper]\nbackend = "throwaway"\ncleanup_interval = 0\n'


#: The ``outside`` fixture of conftest.py (commands, pip and pytest in child processes).
Outside = Any


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, outside: Outside) -> Path:
    """The throwaway distribution built from a copy of its source and installed with pip into a
    directory of its own (not the running environment); returns that directory."""
    root = tmp_path_factory.mktemp("third-party")
    source = root / "source"
    shutil.copytree(FIXTURE, source, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    target = outside.pip_install(source, root / "site")
    assert (target / MODULE / "__init__.py").is_file()
    assert list(target.glob("sessionkeeper_throwaway-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def forget_module() -> object:
    """Drop the throwaway module from ``sys.modules`` after the test that imported it."""
    yield None
    sys.modules.pop(MODULE, None)


@pytest.mark.sessionkeeper_slow
class TestThirdPartyBackend:
    """The installed throwaway distribution, seen from outside the repository."""

    def test_conformance_kit_runs_and_passes_through_the_pytest11_plugin(
        self, installed: Path, tmp_path: Path, outside: Outside
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
        suite = outside.run_pytest(
            "tests", cwd=run_dir, site=installed, report=tmp_path / "report.xml"
        )
        kit = suite.assert_kit_passed("tests.test_conformance.TestThrowawayConformance")
        passed = Counter(suite.outcomes.values())["passed"]
        assert passed > 100, f"only {passed} tests passed:\n{suite.output}"
        assert (
            suite.outcomes[
                "tests.test_conformance.TestThrowawayFromConfig::"
                "test_config_in_the_working_directory_picks_the_backend"
            ]
            == "passed"
        )
        # The throwaway backend is neither persistent nor openable read-only: only those skip.
        skipped = sorted(name for name, outcome in kit.items() if outcome == "skipped")
        assert skipped == list(outside.NOT_PERSISTENT_SKIPS)

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
        ``BackendNotFound`` naming the backend and the file, and saying to install the
        distribution that provides it (a third party's: no distribution name made up from the
        backend's)."""
        if "throwaway" in installed_backends():
            pytest.skip("the throwaway backend is installed in this environment")
        config = tmp_path / "sessionkeeper.toml"
        config.write_text(CONFIG, encoding="utf-8")
        hint = "install the distribution that provides it"
        with pytest.raises(BackendNotFound, match=hint) as info:
            SessionManager.from_config(config)
        assert "sessionkeeper-throwaway" not in str(info.value)
        assert info.value.name == "throwaway"
        assert info.value.path == config
        assert "memory" in info.value.installed
