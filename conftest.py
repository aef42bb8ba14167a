"""Repository-wide pytest set-up: Hypothesis budgets and the ``fuzz`` marker.

Every property-based test runs in the default suite on a bounded budget (the ``default``
profile). ``nox -s fuzz`` selects the tests marked ``fuzz`` (those that throw hostile input at a
door: config files, CLI arguments, import files, disk rows, cluster frames) and runs them on the
``fuzz`` profile's much larger budget. ``HYPOTHESIS_PROFILE`` picks the profile.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz",
    max_examples=5_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fuzz: throws Hypothesis-generated hostile input at one door of the product"
    )
