"""Hostile input at the model door: ids, metadata and timeouts into ``create``, ``Session(...)``
and ``store``.

Whatever the input, the answer is success (and the session reads back exactly as given) or
:class:`~sessionkeeper.InvalidSession` naming the field; never another exception, and never a
change to what was stored before.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sessionkeeper import InvalidSession, Session, SessionManager
from sessionkeeper.testing import ManualClock

pytestmark = pytest.mark.fuzz

NOW = 1_700_000_000_000
_tables = itertools.count()

#: Ids: the valid alphabet, anything at all, and the edges of the length limit.
hostile_ids = (
    st.text(alphabet=[chr(c) for c in range(0x21, 0x7F)], min_size=1, max_size=260)
    | st.text(max_size=20)
    | st.sampled_from(["", " ", "a" * 256, "a" * 257, "\x00", "caf\u00e9"])
    | st.integers()
    | st.none()
    | st.binary(max_size=5)
)
#: Timeouts: in range, at and past the 64-bit edge, and of the wrong type.
hostile_timeouts = (
    st.none()
    | st.integers()
    | st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, 2**64, 10**30])
    | st.floats()
    | st.booleans()
    | st.text(max_size=5)
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1])
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=5)
    | st.builds(object)
    | st.just({1, 2})
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children)
        | st.dictionaries(st.text(max_size=5) | st.integers() | st.none(), children, max_size=3)
    ),
    max_leaves=15,
)


def _deep(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth):
        value = {"d": value}
    return {"deep": value}


#: Metadata: any mapping or other object, plus nesting around and far past the depth limit.
hostile_metadata = (
    st.dictionaries(st.text(max_size=8), _values, max_size=4)
    | _values
    | st.integers(min_value=28, max_value=5_000).map(_deep)
)


@pytest.fixture(scope="module")
def sessions() -> Iterator[SessionManager]:
    """One memory manager for every example, holding a sentinel session that must survive."""
    with SessionManager(
        backend_opts={"table_name": f"fuzz-model-{next(_tables)}"},
        clock=ManualClock(NOW),
        cleanup_interval=0,
        max_metadata_bytes=4096,
    ) as manager:
        manager.store(Session("sentinel", NOW, NOW, None, {"keep": "me"}))
        yield manager


def assert_sentinel_kept(manager: SessionManager) -> None:
    assert manager.peek("sentinel").metadata == {"keep": "me"}


@given(timeout=hostile_timeouts, metadata=hostile_metadata)
def test_create_succeeds_or_names_the_field(
    sessions: SessionManager, timeout: Any, metadata: Any
) -> None:
    """create() with any timeout and metadata stores a session that reads back exactly, or
    raises InvalidSession naming timeout_ms or metadata."""
    try:
        created = sessions.create(timeout_ms=timeout, metadata=metadata)
    except InvalidSession as exc:
        error: InvalidSession | None = exc
    else:
        error = None
        assert sessions.peek(created.id) == created
        assert created.timeout_ms == timeout
        assert sessions.delete(created.id)
    if error is not None:
        assert error.field.split("[")[0] in {"timeout_ms", "metadata"}, error
        assert error.field in str(error)
    assert_sentinel_kept(sessions)


@given(
    session_id=hostile_ids,
    created=st.integers() | st.sampled_from([0, 2**63 - 1, 2**63]),
    idle=st.integers(min_value=-5, max_value=2**63),
    timeout=hostile_timeouts,
    metadata=hostile_metadata,
)
def test_session_and_store_succeed_or_name_the_field(
    sessions: SessionManager,
    session_id: Any,
    created: Any,
    idle: int,
    timeout: Any,
    metadata: Any,
) -> None:
    """Session(...) with any fields, then store(): the session reads back exactly (expired or
    not), or InvalidSession names the field; the sentinel is never touched."""
    if session_id == "sentinel":
        return
    try:
        session = Session(session_id, created, created + idle, timeout, metadata)
        sessions.store(session)
    except InvalidSession as exc:
        error: InvalidSession | None = exc
    else:
        error = None
        assert sessions.peek(session.id, include_expired=True) == session
        assert sessions.delete(session.id)
    if error is not None:
        assert error.field.split("[")[0] in {
            "id",
            "created_at",
            "last_accessed",
            "timeout_ms",
            "metadata",
        }, error
    assert_sentinel_kept(sessions)


class _Text(str):
    """A subclass of a JSON type: the full check accepts it, the fast path leaves it to it."""


@given(
    metadata=hostile_metadata
    | st.dictionaries(st.builds(_Text, st.text(max_size=3)), _values, max_size=2)
    | st.integers(min_value=30, max_value=34).map(_deep)
)
@example(metadata={"a": [1.5, float("nan")]})
@example(metadata={"a": {"b": float("-inf")}})
@example(metadata={"a": 2**64})
@example(metadata={"a": -(2**63) - 1})
@example(metadata={"a": {1: "int key"}})
@example(metadata={"a": b"bytes"})
@example(metadata={"a": {1, 2}})
@example(metadata=_deep(31))
@example(metadata=_deep(32))
def test_the_fast_json_check_never_accepts_what_the_full_check_refuses(metadata: object) -> None:
    """``_is_json`` (the decode and pack fast path) accepts only metadata that the full check
    ``_explain_json`` accepts too, so skipping the full check on a ``True`` can let nothing
    through; on plain JSON types the two agree both ways."""
    from sessionkeeper._metadata import _explain_json, _is_json

    try:
        _explain_json(metadata, "metadata", 0)
    except InvalidSession:
        accepted = False
    else:
        accepted = True
    if _is_json(metadata, 0):
        assert accepted
    elif accepted:
        # Only a subclass of a JSON type sends valid metadata down the slow path.
        assert "_Text" in repr(type(metadata)) or "_Text" in _type_names(metadata)


def _type_names(value: object) -> str:
    if isinstance(value, dict):
        return " ".join(type(k).__name__ + _type_names(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return " ".join(_type_names(v) for v in value)
    return type(value).__name__
