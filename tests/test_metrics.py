"""Prometheus metrics of a manager: the collector, the text format and the HTTP endpoint.

Every test parses what it gets with ``prometheus_client``'s own parser, so the exposition is
checked as Prometheus would read it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from sessionkeeper import Session, SessionManager, SessionNotFound
from sessionkeeper.metrics import (
    METRIC_NAMES,
    MetricsCollector,
    metrics_registry,
    metrics_text,
    start_metrics_server,
)
from sessionkeeper.testing import ManualClock


def samples(text: str) -> dict[str, list[Sample]]:
    """Samples of the exposition ``text`` by sample name (``..._total``, ``..._count`` …)."""
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def value(text: str, name: str, **labels: str) -> float:
    matches = [s.value for s in samples(text)[name] if labels.items() <= s.labels.items()]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


@pytest.fixture
def stats_manager(clock: ManualClock) -> Iterator[SessionManager]:
    """A memory manager with the stats plugin on and a manual clock."""
    with SessionManager(
        backend_opts={"table_name": f"m{uuid.uuid4().hex}"},
        stats=True,
        cleanup_interval=0,
        clock=clock,
    ) as manager:
        yield manager


class TestCollector:
    def test_counters_follow_the_operations(
        self, stats_manager: SessionManager, clock: ManualClock
    ) -> None:
        """Created, stored, hits, misses, deleted and expired counters and the live count match
        what the manager did; expirations are counted when a cleanup removes them."""
        kept = [stats_manager.create(timeout_ms=1_000) for _ in range(3)]
        stats_manager.fetch(kept[0].id)
        with pytest.raises(SessionNotFound):
            stats_manager.fetch("unknown")
        stats_manager.delete(kept[1].id)
        stats_manager.store(Session("forever", clock(), clock(), None))
        clock.advance(1_001)
        assert stats_manager.cleanup_expired() == 2
        text = metrics_text(stats_manager)
        assert value(text, "sessionkeeper_sessions_created_total") == 3
        assert value(text, "sessionkeeper_sessions_stored_total") == 4
        assert value(text, "sessionkeeper_fetch_hits_total") == 1
        assert value(text, "sessionkeeper_fetch_misses_total") == 1
        assert value(text, "sessionkeeper_sessions_deleted_total") == 1
        assert value(text, "sessionkeeper_sessions_expired_total") == 2
        assert value(text, "sessionkeeper_live_sessions") == 1
        assert value(text, "sessionkeeper_up") == 1

    def test_latency_summary_per_operation(self, stats_manager: SessionManager) -> None:
        """Each operation has a summary: count, sum, p50 and p99, its max and its errors."""
        for _ in range(5):
            stats_manager.create()
        text = metrics_text(stats_manager)
        name = "sessionkeeper_operation_duration_seconds"
        assert value(text, f"{name}_count", operation="store") == 5
        assert value(text, f"{name}_sum", operation="store") > 0
        p50 = value(text, name, operation="store", quantile="0.5")
        p99 = value(text, name, operation="store", quantile="0.99")
        assert 0 < p50 <= p99
        # The summary agrees with itself (whatever the machine's speed): the largest call is at
        # least half the upper bound of the p99 bucket.
        largest = value(text, "sessionkeeper_operation_duration_max_seconds", operation="store")
        assert largest >= p99 * 0.5
        assert value(text, "sessionkeeper_operation_errors_total", operation="store") == 0

    def test_every_exported_name_is_listed(self, stats_manager: SessionManager) -> None:
        """Every metric family in a full scrape is named in METRIC_NAMES (the documented list)."""
        stats_manager.create()
        with SessionManager(stats=True, cleanup_interval=60_000) as scheduled:
            text = metrics_text(stats_manager) + metrics_text(scheduled)
        families = {f.name for f in text_string_to_metric_families(text)}
        documented = {n.removesuffix("_total") for n in METRIC_NAMES}
        assert families == documented

    def test_without_stats_only_gauges(self, manager: SessionManager) -> None:
        """Without ``stats = true`` there are no counters, but the live count is exported."""
        manager.create()
        found = samples(metrics_text(manager))
        assert found["sessionkeeper_live_sessions"][0].value == 1
        assert not [n for n in found if n.endswith("_total")]

    def test_closed_manager_is_down_not_an_error(self) -> None:
        """A closed manager scrapes as ``sessionkeeper_up 0`` rather than failing the scrape."""
        manager = SessionManager(cleanup_interval=0)
        manager.close()
        found = samples(metrics_text(manager))
        assert found["sessionkeeper_up"][0].value == 0
        assert "sessionkeeper_live_sessions" not in found

    def test_extra_labels(self, manager: SessionManager) -> None:
        """Constant labels given to the collector are on every sample, beside ``backend``."""
        registry = CollectorRegistry()
        registry.register(MetricsCollector(manager, {"table": "main"}))
        assert registry.get_sample_value(
            "sessionkeeper_live_sessions", {"backend": "memory", "table": "main"}
        ) == (0.0)
        own = metrics_registry(manager)
        assert own.get_sample_value("sessionkeeper_up", {"backend": "memory"}) == 1.0


class TestServer:
    def test_serves_metrics_over_http(self, stats_manager: SessionManager) -> None:
        """start_metrics_server serves /metrics on loopback; close() stops it."""
        stats_manager.create()
        with start_metrics_server(stats_manager, 0) as server:
            assert server.address.startswith("127.0.0.1:")
            with urllib.request.urlopen(server.url, timeout=10) as response:
                text = response.read().decode()
            assert value(text, "sessionkeeper_sessions_created_total") == 1
        with pytest.raises(urllib.error.URLError, match="refused"):
            urllib.request.urlopen(server.url, timeout=2)


# --- without prometheus-client (the ``metrics`` extra not installed) ---------------------------

#: Run first in a child interpreter: a meta-path finder that refuses ``prometheus_client``, as
#: an environment without the extra would (the package stays on disk; nothing of ours is
#: replaced).
NO_PROMETHEUS = """
import sys

class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "prometheus_client":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Refuse())
"""


def without_prometheus(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``prometheus_client`` cannot be imported."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", NO_PROMETHEUS + textwrap.dedent(code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class TestWithoutTheExtra:
    def test_the_refusing_finder_refuses(self, tmp_path: Path) -> None:
        """The child really has no prometheus_client (so the tests below test something)."""
        result = without_prometheus("import prometheus_client", tmp_path)
        assert result.returncode == 1
        assert "No module named 'prometheus_client'" in result.stderr

    def test_the_core_imports_and_works(self, tmp_path: Path) -> None:
        """The package, its other public modules, the CLI and a manager work without it, and
        none of them imports it."""
        result = without_prometheus(
            """
            import sys
            import sessionkeeper, sessionkeeper.backend, sessionkeeper.transfer
            import sessionkeeper.cli, sessionkeeper.testing
            with sessionkeeper.SessionManager(cleanup_interval=0) as manager:
                session = manager.create(metadata={"user": "ada"})
                assert manager.fetch(session.id).metadata == {"user": "ada"}
            assert "prometheus_client" not in sys.modules
            print("core ok")
            """,
            tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "core ok\n"

    def test_the_metrics_module_names_the_extra(self, tmp_path: Path) -> None:
        """``import sessionkeeper.metrics`` fails with an ImportError that gives the pip
        command, not a bare "No module named"."""
        result = without_prometheus(
            """
            try:
                import sessionkeeper.metrics
            except ImportError as exc:
                print(type(exc).__name__, isinstance(exc, ImportError), exc, sep="|")
            """,
            tmp_path,
        )
        assert result.returncode == 0, result.stderr
        name, is_import_error, message = result.stdout.strip().split("|")
        assert (name, is_import_error) == ("ImportError", "True")
        assert "prometheus-client, which is not installed" in message
        assert "pip install 'sessionkeeper[metrics]'" in message
        assert "from a checkout of the repository: pip install './[metrics]'" in message

    def test_the_functions_name_the_extra(self, tmp_path: Path) -> None:
        """Each way of starting metrics from the private module (as the CLI does) raises the
        same error before touching the manager."""
        result = without_prometheus(
            """
            from sessionkeeper import ConfigError, SessionManager
            from sessionkeeper._metrics import (
                MetricsCollector, metrics_registry, metrics_text, start_metrics_server,
            )
            with SessionManager(cleanup_interval=0) as manager:
                calls = {
                    "collect": lambda: list(MetricsCollector(manager).collect()),
                    "metrics_registry": lambda: metrics_registry(manager),
                    "metrics_text": lambda: metrics_text(manager),
                    "start_metrics_server": lambda: start_metrics_server(manager, 0),
                }
                for name, call in calls.items():
                    try:
                        call()
                    except ConfigError as exc:
                        print(name, "pip install 'sessionkeeper[metrics]'" in str(exc))
            """,
            tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\n") == [
            "collect True",
            "metrics_registry True",
            "metrics_text True",
            "start_metrics_server True",
            "",
        ]

    def test_the_cli_names_the_extra(self, tmp_path: Path) -> None:
        """``sessionkeeper stats --format prometheus`` exits with the configuration error code
        and one line giving the pip command (no traceback); ``stats`` without it works."""
        from sessionkeeper.cli import ExitCode

        main = "from sessionkeeper.cli import main; main({args!r})"
        failed = without_prometheus(main.format(args=["stats", "--format", "prometheus"]), tmp_path)
        assert failed.returncode == ExitCode.CONFIG, failed.stderr
        assert "pip install 'sessionkeeper[metrics]'" in failed.stderr
        assert "Traceback" not in failed.stderr
        assert failed.stdout == ""
        table = without_prometheus(main.format(args=["stats", "--json"]), tmp_path)
        assert table.returncode == 0, table.stderr
        assert '"live_sessions": 0' in table.stdout
