"""``sessionkeeper.testing.wait_for``: the kit's one polling helper (the plugins' tests wait on
servers, replicas and threads through it)."""

from __future__ import annotations

import itertools
import threading

import pytest

from sessionkeeper.testing import wait_for


def test_returns_the_first_truthy_value() -> None:
    """It polls until the condition returns something truthy and returns that value."""
    polls = itertools.count(1)
    assert wait_for(lambda: next(polls) >= 3 and "ready", "the third poll", interval_s=0) == "ready"
    assert next(polls) == 4


def test_waits_for_another_thread() -> None:
    """A condition made true by another thread is seen (a real wait, on the real clock)."""
    done = threading.Event()
    threading.Timer(0.05, done.set).start()
    assert wait_for(done.is_set, "the timer", deadline_s=30) is True


def test_names_what_it_waited_for_and_the_last_error() -> None:
    """Past the deadline it fails naming what it waited for and the last error it retried."""

    def refused() -> bool:
        raise ConnectionRefusedError("port 1")

    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for the server"):
        wait_for(lambda: False, "the server", deadline_s=0.05)
    with pytest.raises(AssertionError, match=r"the server \(last error: ConnectionRefusedError"):
        wait_for(refused, "the server", 0.05, retry_on=(OSError,))


def test_an_error_it_does_not_retry_propagates_at_once() -> None:
    """An exception outside ``retry_on`` stops the wait on the first poll."""
    polls = itertools.count(1)

    def broken() -> bool:
        next(polls)
        raise KeyError("bug")

    with pytest.raises(KeyError, match="bug"):
        wait_for(broken, "anything", deadline_s=30, retry_on=(OSError,))
    assert next(polls) == 2


def test_the_last_error_is_named_even_when_later_polls_did_not_raise() -> None:
    """A server that refused, then answered "not ready": the failure still names the refusal
    (the last error seen), not nothing."""
    polls = itertools.count(1)

    def starting() -> bool:
        if next(polls) == 1:
            raise ConnectionRefusedError("port 1")
        return False

    with pytest.raises(AssertionError, match=r"last error: ConnectionRefusedError"):
        wait_for(starting, "the server", 0.05, retry_on=(OSError,))
