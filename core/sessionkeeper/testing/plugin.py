"""The pytest plugin of the conformance kit (entry point ``pytest11``: ``sessionkeeper``).

pytest loads it wherever sessionkeeper is installed. It

- turns on assert rewriting for the kit's modules *before* importing any of them, so that a
  failing conformance test in a backend's own suite shows the values it compared;
- registers the markers ``sessionkeeper_conformance`` (every kit test) and ``sessionkeeper_slow``
  (tests that build, install or run subprocesses), so ``--strict-markers`` accepts them;
- provides the ``manual_clock`` and ``ticking_clock`` fixtures.

Deselect the kit's tests with ``-m "not sessionkeeper_conformance"`` and slow tests with
``-m "not sessionkeeper_slow"``. With ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set, load it with
``-p sessionkeeper``.
"""

from __future__ import annotations

import pytest

from . import KIT_MODULES

# Name the modules, not the package: the package itself is already imported (this module lives in
# it), and asking to rewrite an imported module is a warning, an error under filterwarnings=error.
pytest.register_assert_rewrite(*KIT_MODULES)

from ._clock import ManualClock, TickingClock  # noqa: E402  (after register_assert_rewrite, on purpose)

__all__ = ["manual_clock", "pytest_configure", "ticking_clock"]

MARKERS = {
    "sessionkeeper_conformance": "a test of the sessionkeeper backend conformance kit",
    "sessionkeeper_slow": (
        "a slow sessionkeeper test (builds, installs or runs a subprocess); "
        'deselect with -m "not sessionkeeper_slow"'
    ),
}


def pytest_configure(config: pytest.Config) -> None:
    """Register the kit's markers."""
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")


@pytest.fixture
def manual_clock() -> ManualClock:
    """A :class:`~sessionkeeper.testing.ManualClock` at its default start, for a manager's
    ``clock``: it moves only when the test calls ``advance`` or ``set``."""
    return ManualClock()


@pytest.fixture
def ticking_clock() -> TickingClock:
    """A :class:`~sessionkeeper.testing.TickingClock` at the default start that moves 1 ms after
    every read: what a manager reads twice in one operation it reads at two instants."""
    return TickingClock()
