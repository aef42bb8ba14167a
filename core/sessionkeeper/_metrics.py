"""Prometheus metrics of a :class:`~sessionkeeper.SessionManager`, with ``prometheus-client``.

:class:`MetricsCollector` is a custom collector: at each scrape it reads
:meth:`SessionManager.stats <sessionkeeper.SessionManager.stats>` once and turns it into metric
families, so nothing is counted twice and nothing is added to the hot path. The operation
counters and latency summaries come from the built-in stats wrapper plugin, which the
configuration turns on with ``stats = true``; without it only the live count, the scheduler's
figures and ``sessionkeeper_up`` are exported.

``prometheus-client`` is the optional extra ``metrics``: the core installs and imports without
it. It is imported when :mod:`sessionkeeper.metrics` is (which then raises an
:class:`ImportError` without it), or when a collector first collects or a server starts
(``sessionkeeper stats --format prometheus`` goes through here without the public module), which
raise :class:`MetricsUnavailable` without it. Both messages give the ``pip install`` to run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from ._closing import Closing
from ._errors import ConfigError, SessionKeeperError
from ._manager import SessionManager

if TYPE_CHECKING:
    import threading
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "INSTALL_METRICS",
    "INSTALL_METRICS_FROM_CHECKOUT",
    "METRIC_NAMES",
    "MetricsCollector",
    "MetricsServer",
    "MetricsUnavailable",
    "metrics_registry",
    "metrics_text",
    "require_prometheus",
    "start_metrics_server",
]

_NS: Final = "sessionkeeper"

#: What installs the metrics' dependency: the extra once sessionkeeper is on the package index;
#: until then, from a checkout's root, the same extra of the folder.
INSTALL_METRICS: Final = "pip install 'sessionkeeper[metrics]'"
INSTALL_METRICS_FROM_CHECKOUT: Final = "pip install './[metrics]'"


class MetricsUnavailable(ConfigError):
    """``prometheus-client`` is not installed, so there are no metrics; the message says how to
    add it. A :class:`~sessionkeeper.ConfigError`: the command line reports it as a
    configuration problem, as it does a backend that is not installed. (Importing
    :mod:`sessionkeeper.metrics` raises an :class:`ImportError` with the same message.)"""


def require_prometheus() -> None:
    """Import ``prometheus_client``, or raise :class:`MetricsUnavailable` naming the extra."""
    try:
        import prometheus_client  # noqa: F401 - imported to find out whether it is there
    except ImportError as exc:
        raise MetricsUnavailable(
            f"the metrics need prometheus-client, which is not installed ({exc}); "
            f"install it with: {INSTALL_METRICS} (from a checkout of the repository: "
            f"{INSTALL_METRICS_FROM_CHECKOUT})"
        ) from exc


#: Counters of the stats plugin (``stats()["counters"]``) -> (metric name without ``_total``,
#: help text).
_COUNTERS: Final = {
    "hits": ("fetch_hits", "Fetches that found a live session."),
    "misses": ("fetch_misses", "Fetches that found no live session (unknown or expired id)."),
    "created": ("sessions_created", "Sessions created."),
    "stored": ("sessions_stored", "Sessions stored (created, imported or replaced)."),
    "deleted": ("sessions_deleted", "Sessions deleted that existed."),
    "expired": ("sessions_expired", "Expired sessions removed by cleanups."),
}

#: Every metric name the collector can export (counters with their ``_total`` suffix).
METRIC_NAMES: Final = (
    f"{_NS}_up",
    f"{_NS}_info",
    f"{_NS}_live_sessions",
    *(f"{_NS}_{name}_total" for name, _ in _COUNTERS.values()),
    f"{_NS}_operation_duration_seconds",
    f"{_NS}_operation_duration_max_seconds",
    f"{_NS}_operation_errors_total",
    f"{_NS}_cleanup_runs_total",
    f"{_NS}_cleanup_failures_total",
)


class MetricsCollector:
    """A ``prometheus_client`` collector over one manager.

    Register it in a registry (``CollectorRegistry().register(MetricsCollector(manager))``), or
    use :func:`metrics_text` or :func:`start_metrics_server`, which do. Every sample carries the
    label ``backend`` plus the ``labels`` given here (e.g. ``{"table": "sessions"}`` when an
    application runs several managers).

    :param manager: the manager to describe; a closed manager or a failing backend gives
        ``sessionkeeper_up 0`` and no other sample, never a failed scrape.
    :param labels: extra constant labels.
    """

    def __init__(self, manager: SessionManager, labels: Mapping[str, str] | None = None) -> None:
        self.manager = manager
        self.labels = {"backend": manager.backend_name, **(labels or {})}

    def describe(self) -> list[Metric]:
        """Nothing up front: the families depend on what ``stats()`` holds at the scrape."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The metric families of one scrape."""
        require_prometheus()
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        from . import __version__

        names = list(self.labels)
        values = [self.labels[name] for name in names]
        try:
            figures = self.manager.stats()
        except SessionKeeperError:
            figures = None
        up = GaugeMetricFamily(
            f"{_NS}_up", "1 when the store answered the scrape, else 0.", labels=names
        )
        up.add_metric(values, 0 if figures is None else 1)
        yield up
        info = InfoMetricFamily(_NS, "The sessionkeeper version and backend.", labels=names)
        info.add_metric(values, {"version": __version__})
        yield info
        if figures is None:
            return
        live = GaugeMetricFamily(
            f"{_NS}_live_sessions", "Sessions live now (stored and not expired).", labels=names
        )
        live.add_metric(values, figures["live_sessions"])
        yield live
        counters: dict[str, Any] | None = figures.get("counters")
        if counters is not None:
            yield from self._counters(counters, names, values)
            yield from self._operations(counters.get("operations", {}), names, values)
        scheduler = figures.get("scheduler")
        if scheduler is not None:
            for key, help_text in (
                ("runs", "Scheduled cleanups run."),
                ("failures", "Scheduled cleanups that failed."),
            ):
                family = CounterMetricFamily(f"{_NS}_cleanup_{key}", help_text, labels=names)
                family.add_metric(values, scheduler[key])
                yield family

    def _counters(
        self, counters: Mapping[str, Any], names: list[str], values: list[str]
    ) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        for key, (name, help_text) in _COUNTERS.items():
            family = CounterMetricFamily(f"{_NS}_{name}", help_text, labels=names)
            family.add_metric(values, counters.get(key, 0))
            yield family

    def _operations(
        self, operations: Mapping[str, Mapping[str, Any]], names: list[str], values: list[str]
    ) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        op_names = [*names, "operation"]
        duration = SummaryMetricFamily(
            f"{_NS}_operation_duration_seconds",
            "Latency of backend operations (quantiles are approximate: within 19 %).",
            labels=op_names,
        )
        longest = GaugeMetricFamily(
            f"{_NS}_operation_duration_max_seconds",
            "The longest backend operation of each kind so far.",
            labels=op_names,
        )
        errors = CounterMetricFamily(
            f"{_NS}_operation_errors", "Backend operations that raised.", labels=op_names
        )
        for operation, summary in sorted(operations.items()):
            labels = [*values, operation]
            calls = int(summary["calls"])
            total_s = float(summary["mean_us"]) * calls / 1e6
            duration.add_metric(labels, calls, total_s)
            for quantile, key in (("0.5", "p50_us"), ("0.99", "p99_us")):
                duration.add_sample(
                    duration.name,
                    {**dict(zip(op_names, labels, strict=True)), "quantile": quantile},
                    float(summary[key]) / 1e6,
                )
            longest.add_metric(labels, float(summary["max_us"]) / 1e6)
            errors.add_metric(labels, int(summary["errors"]))
        yield duration
        yield longest
        yield errors


def metrics_registry(
    manager: SessionManager, labels: Mapping[str, str] | None = None
) -> CollectorRegistry:
    """A fresh ``prometheus_client`` registry holding a :class:`MetricsCollector` of ``manager``
    (and nothing else: no process or platform collectors)."""
    require_prometheus()
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(manager, labels))
    return registry


def metrics_text(manager: SessionManager, labels: Mapping[str, str] | None = None) -> str:
    """``manager``'s metrics in the Prometheus text exposition format (what
    ``sessionkeeper stats --format prometheus`` prints)."""
    require_prometheus()
    from prometheus_client import generate_latest

    return generate_latest(metrics_registry(manager, labels)).decode("utf-8")


class MetricsServer(Closing):
    """A running metrics endpoint (from :func:`start_metrics_server`); :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        """The port it listens on (useful after asking for port 0)."""
        return int(self._server.server_port)

    @property
    def address(self) -> str:
        """``host:port`` it listens on."""
        host = self._server.server_address[0]
        text = host.decode() if isinstance(host, bytes) else str(host)
        return f"[{text}]:{self.port}" if ":" in text else f"{text}:{self.port}"

    @property
    def url(self) -> str:
        """The URL to scrape."""
        return f"http://{self.address}/metrics"

    def close(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(
    manager: SessionManager,
    port: int,
    addr: str = "127.0.0.1",
    *,
    labels: Mapping[str, str] | None = None,
) -> MetricsServer:
    """Serve ``manager``'s metrics over HTTP (``GET /metrics``) from a daemon thread.

    Listens on loopback by default: give ``addr="0.0.0.0"`` (or an interface's address) for a
    Prometheus server on another machine. ``port=0`` picks a free port (see
    :attr:`MetricsServer.port`). Each scrape calls ``manager.stats()`` once.
    """
    require_prometheus()
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr, registry=metrics_registry(manager, labels))
    return MetricsServer(server, thread)
