"""Prometheus metrics of a manager, with ``prometheus-client``.

:func:`start_metrics_server` serves a manager's metrics over HTTP, :func:`metrics_text` renders
them once, and :class:`MetricsCollector` plugs them into a registry the application already
serves. The names are defined in a private module and re-exported here.
"""

from __future__ import annotations

from ._metrics import (
    METRIC_NAMES,
    MetricsCollector,
    MetricsServer,
    metrics_registry,
    metrics_text,
    start_metrics_server,
)

__all__ = [
    "METRIC_NAMES",
    "MetricsCollector",
    "MetricsServer",
    "metrics_registry",
    "metrics_text",
    "start_metrics_server",
]
