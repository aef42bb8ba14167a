"""StorageError's constructors for backend authors: one wording for every backend's failures."""

from __future__ import annotations

import pytest

from sessionkeeper import SessionKeeperError, StorageError


@pytest.mark.parametrize(
    ("exc", "tail"),
    [
        (ConnectionError("Connection refused\n"), "ConnectionError: Connection refused"),
        (TimeoutError(), "TimeoutError: TimeoutError"),
    ],
)
def test_failed_names_the_operation_the_place_and_the_cause(exc: BaseException, tail: str) -> None:
    """``StorageError.failed`` says which operation failed where, and the exception's type and
    text (stripped; the type again when there is no text); it names the backend."""
    error = StorageError.failed("redis", "store", "redis://h:6379/0 (table 'sessions')", exc)
    assert isinstance(error, SessionKeeperError)
    assert error.backend == "redis"
    assert (
        str(error) == f"redis backend: store failed on redis://h:6379/0 (table 'sessions'): {tail}"
    )


def test_damaged_says_where_the_record_is_and_what_is_wrong() -> None:
    """``StorageError.damaged`` says which record is damaged, where, and how."""
    error = StorageError.damaged("postgres", "with id 'a' in table t on db", "not msgpack")
    assert error.backend == "postgres"
    assert str(error) == (
        "postgres backend: the session record with id 'a' in table t on db is damaged: not msgpack"
    )
