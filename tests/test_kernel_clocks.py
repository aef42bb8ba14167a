"""The conformance kit's clocks: ManualClock moves by hand, TickingClock also on every read."""

from __future__ import annotations

import threading

import pytest

import sessionkeeper.testing
from sessionkeeper.testing import ManualClock, TickingClock


class TestTickingClock:
    def test_every_read_returns_a_later_instant(self) -> None:
        """Each read returns the current time, then moves it by ``step``; ``now`` is what the
        next read returns and ``reads`` counts the reads."""
        clock = TickingClock(start=100, step=2)
        assert (clock(), clock(), clock()) == (100, 102, 104)
        assert clock.now == 106
        assert clock.reads == 3

    def test_step_zero_is_a_manual_clock_that_counts(self) -> None:
        """At step 0 it moves only by hand, and still counts its reads; the step can change."""
        clock = TickingClock(start=5, step=0)
        assert isinstance(clock, ManualClock)
        assert (clock(), clock()) == (5, 5)
        assert clock.advance(10) == 15
        clock.step = 1
        assert (clock(), clock()) == (15, 16)
        assert clock.reads == 4

    def test_concurrent_reads_never_return_the_same_instant(self) -> None:
        """Reads from several threads each get an instant of their own."""
        clock = TickingClock(start=0)
        seen: list[int] = []
        lock = threading.Lock()

        def read() -> None:
            values = [clock() for _ in range(500)]
            with lock:
                seen.extend(values)

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(seen) == list(range(2000))
        assert clock.reads == 2000

    @pytest.mark.parametrize("step", [-1, 1.5, "1"])
    def test_bad_step_is_refused(self, step: object) -> None:
        """A step that is not a non-negative int of ms is refused, naming it."""
        with pytest.raises((TypeError, ValueError), match="step"):
            TickingClock(step=step)  # type: ignore[arg-type]

    def test_exported_like_the_manual_clock(self) -> None:
        """``sessionkeeper.testing`` exports it beside ManualClock."""
        assert "TickingClock" in sessionkeeper.testing.__all__
        assert sessionkeeper.testing.TickingClock is TickingClock

    def test_fixture(self, ticking_clock: TickingClock) -> None:
        """The kit's pytest plugin provides a ``ticking_clock`` fixture stepping 1 ms a read."""
        first = ticking_clock()
        assert ticking_clock() == first + 1
