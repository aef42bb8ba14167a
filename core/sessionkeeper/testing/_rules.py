"""The semantics every backend shares as small pure functions the kit and the model both use."""

from __future__ import annotations

import math
from typing import Any

from .._model import Session

__all__ = [
    "VISIBLE_ASCII",
    "assert_same_json",
    "assert_same_session",
    "fetch_writes_back",
    "touch_window",
]

#: Every visible ASCII character (0x21-0x7E): the whole alphabet of session ids.
VISIBLE_ASCII = "".join(chr(code) for code in range(0x21, 0x7F))


def touch_window(touch_resolution: int, timeout_ms: int | None) -> int:
    """The largest idle time (ms) that a ``fetch`` leaves unwritten.

    A fetch writes ``last_accessed`` back only when it would move by more than
    ``touch_resolution``, and never lets it lag by more than a tenth of the session's timeout
    (as :meth:`SessionManager.fetch <sessionkeeper.SessionManager.fetch>` does).
    """
    if timeout_ms is None:
        return touch_resolution
    return min(touch_resolution, timeout_ms // 10)


def fetch_writes_back(session: Session, now: int, touch_resolution: int) -> bool:
    """True when fetching the live ``session`` at ``now`` must write ``last_accessed = now``."""
    return now - session.last_accessed > touch_window(touch_resolution, session.timeout_ms)


def assert_same_json(actual: Any, expected: Any, where: str = "metadata") -> None:
    """Assert ``actual`` equals ``expected`` exactly: same types (``1`` is not ``1.0`` nor
    ``True``), same keys, same order of list items, same sign of zero."""
    assert type(actual) is type(expected), (
        f"{where}: stored {type(expected).__name__} {expected!r}, "
        f"read back {type(actual).__name__} {actual!r}"
    )
    if isinstance(expected, dict):
        assert set(actual) == set(expected), (
            f"{where}: stored keys {sorted(expected)!r}, read back {sorted(actual)!r}"
        )
        for key, value in expected.items():
            assert_same_json(actual[key], value, f"{where}[{key!r}]")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), (
            f"{where}: stored {len(expected)} items, read back {len(actual)}"
        )
        for index, (got, want) in enumerate(zip(actual, expected, strict=True)):
            assert_same_json(got, want, f"{where}[{index}]")
    elif isinstance(expected, float):
        message = f"{where}: stored {expected!r}, read back {actual!r}"
        assert actual == expected, message
        assert math.copysign(1.0, actual) == math.copysign(1.0, expected), message
    else:
        assert actual == expected, f"{where}: stored {expected!r}, read back {actual!r}"


def assert_same_session(actual: object, expected: Session) -> None:
    """Assert ``actual`` is a :class:`Session` with every field of ``expected``, exactly."""
    assert type(actual) is Session, (
        f"expected a sessionkeeper.Session, got {type(actual).__name__} {actual!r}"
    )
    for field in (
        "id",
        "created_at",
        "last_accessed",
        "timeout_ms",
        "version",
        "owner",
        "absolute_timeout_ms",
    ):
        got, want = getattr(actual, field), getattr(expected, field)
        message = f"session {expected.id!r}: {field} stored as {want!r}, read back {got!r}"
        assert type(got) is type(want), message
        assert got == want, message
    assert_same_json(actual.metadata, expected.metadata, f"session {expected.id!r} metadata")
