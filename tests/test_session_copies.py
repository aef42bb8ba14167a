"""Every session the core makes (the constructor's, a new version on each store, a touch, a
decoded record) is a whole, frozen :class:`~sessionkeeper.Session`: they are all filled on a
mutable twin class whose ``__class__`` is then switched, and nothing of that route may show."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest

from sessionkeeper import Session, SessionManager
from sessionkeeper.backend import decode_session, encode_session

BASE = Session("s" * 43, 10, 10, 1_000, {"user": "ada"}, owner="ada", absolute_timeout_ms=9_000)


@pytest.mark.parametrize(
    "copy",
    [
        pytest.param(lambda s: s.with_version(7), id="with_version"),
        pytest.param(lambda s: s.touched(500), id="touched"),
        pytest.param(lambda s: decode_session(encode_session(s)), id="decoded"),
        pytest.param(lambda s: Session(**s.to_dict()), id="constructor"),
        pytest.param(lambda s: s.replace(version=3), id="replace"),
    ],
)
def test_copies_are_frozen_sessions(copy: Callable[[Session], Session]) -> None:
    """Each copy is exactly a Session, refuses assignment and deletion of every field, and
    compares and hashes as the constructor's equivalent does."""
    made = copy(BASE)
    assert type(made) is Session
    for field in attrs.fields(Session):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(made, field.name, getattr(made, field.name))
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            delattr(made, field.name)
    rebuilt = Session(**made.to_dict())
    assert made == rebuilt
    assert hash(made) == hash(rebuilt)
    assert repr(made) == repr(rebuilt)


def test_a_stored_session_is_a_frozen_copy_with_the_new_version() -> None:
    """What store returns (a copy carrying the version the store gave) is a frozen Session
    with every other field of the one stored, and the caller's session is untouched."""
    with SessionManager(backend_opts={"table_name": "copies"}, cleanup_interval=0) as manager:
        now = manager.clock()
        first = manager.store(BASE.replace(created_at=now, last_accessed=now))
        again = manager.store(first)
        assert (first.version, again.version) == (1, 2)
        assert type(again) is Session
        assert again.to_dict() == {**first.to_dict(), "version": 2}
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            again.version = 3  # type: ignore[misc]
        assert manager.peek(again.id) == again
