"""Prometheus metrics of a manager, with ``prometheus-client`` (the ``metrics`` extra).

:func:`start_metrics_server` serves a manager's metrics over HTTP, :func:`metrics_text` renders
them once, and :class:`MetricsCollector` plugs them into a registry the application already
serves. The names are defined in a private module and re-exported here.

Importing this module without ``prometheus-client`` installed raises an :class:`ImportError`
whose message gives the command that adds it: ``pip install 'sessionkeeper[metrics]'``.
"""

from __future__ import annotations

from ._metrics import (
    METRIC_NAMES,
    MetricsCollector,
    MetricsServer,
    MetricsUnavailable,
    metrics_registry,
    metrics_text,
    require_prometheus,
    start_metrics_server,
)

try:
    require_prometheus()
except MetricsUnavailable as exc:
    raise ImportError(str(exc), name=__name__) from exc

__all__ = [
    "METRIC_NAMES",
    "MetricsCollector",
    "MetricsServer",
    "metrics_registry",
    "metrics_text",
    "start_metrics_server",
]
