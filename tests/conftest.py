"""Fixtures shared by the cross-package tests."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sessionkeeper import SessionManager
from sessionkeeper.testing import ManualClock

_tables = itertools.count()

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
