"""Where ``tests/benchmarks/bench_zmq.py`` writes its figures (issue 15): ``--json DIR`` used to
crash with IsADirectoryError after minutes of measuring. The measurements themselves are never
run by pytest (``nox -s bench`` runs them)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "tests" / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The benchmark script as a module (its folder on ``sys.path``, as when it runs)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("bench_zmq")


def test_json_dir_gets_zmq_json(bench: ModuleType, tmp_path: Path) -> None:
    """``--json DIR`` writes the figures to ``DIR/zmq.json``, like every other benchmark."""
    figures = {"disc_rejoin": {"by_delta": True}}
    written = bench.save(figures, tmp_path)
    assert written == tmp_path / "zmq.json"
    assert json.loads(written.read_text()) == figures


def test_json_file_is_written_where_named(bench: ModuleType, tmp_path: Path) -> None:
    """``--json FILE`` writes that file."""
    target = tmp_path / "figures.json"
    assert bench.save({"a": 1}, target) == target
    assert json.loads(target.read_text()) == {"a": 1}


def test_a_json_path_in_no_directory_is_refused_before_measuring(
    bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``--json`` path whose directory does not exist is a usage error at once (exit 2),
    not a crash after the measurements."""
    missing = tmp_path / "no-such-dir" / "zmq.json"
    with pytest.raises(SystemExit) as info:
        bench.main(["--json", str(missing)])
    assert info.value.code == 2
    assert "no such directory" in capsys.readouterr().err
