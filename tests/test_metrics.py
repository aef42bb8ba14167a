"""Prometheus metrics of a manager: the collector, the text format and the HTTP endpoint.

Every test parses what it gets with ``prometheus_client``'s own parser, so the exposition is
checked as Prometheus would read it.
"""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

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
