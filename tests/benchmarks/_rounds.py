"""Rounds: an operation and its floor timed alternately, reported as the median of the ratios.

Not a benchmark itself (``nox -s bench`` runs only ``bench_*.py``). On a loaded machine the
median of each side (``_bench.paired``) can come from different moments of the run; the ratio
of one round compares two timings taken back to back, and the median of those ratios is what a
row is held to. :func:`rounds` times sync calls (one :func:`_bench.paired` per round, the
side going first alternating by round when asked), :func:`arounds` awaited ones, and
:func:`ratio_figure` makes the row: the value and floor columns show the medians of each side,
the ratio column (and the target) the median ratio. :func:`blocks` times single calls in turn
(durable commits, whose cost moves from one moment to the next) with a ratio per block.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import _bench
import attrs


@attrs.frozen
class Rounds:
    """The timings of each round: ``values[i]`` and ``floors[i]`` were taken back to back."""

    values: Sequence[float]
    floors: Sequence[float]

    @property
    def value(self) -> float:
        return statistics.median(self.values)

    @property
    def floor(self) -> float:
        return statistics.median(self.floors)

    @property
    def ratios(self) -> list[float]:
        """Each round's value / floor: the two sides of one round met the same load."""
        return [v / f for v, f in zip(self.values, self.floors, strict=True)]

    @property
    def ratio(self) -> float:
        """The median of the rounds' ratios."""
        return statistics.median(self.ratios)


@attrs.frozen
class RatioFigure(_bench.NotedFigure):
    """A row whose ratio is the median of per-round ratios (not the ratio of the medians)."""

    median_ratio: float = 0.0

    @property
    def ratio(self) -> float | None:
        return self.median_ratio


def rounds(
    function: Callable[..., object],
    floor: Callable[..., object],
    *arguments: Sequence[Any],
    floor_arguments: tuple[Sequence[Any], ...] | None = None,
    repeats: int,
    setup: Callable[[], object] | None = None,
    alternate: bool = False,
) -> Rounds:
    """``repeats`` rounds of :func:`_bench.paired`, one repeat each: ``setup()``, then
    ``function`` mapped over ``arguments`` and ``floor`` over ``floor_arguments`` (the same
    when not given), right after one another, ``function`` first.

    With ``alternate``, ``floor`` goes first in every other round: the first side of a round
    meets what the previous writes left behind (a server's WAL writer, hint bits,
    checkpoints), so neither side always pays for it.
    """
    floor_args = arguments if floor_arguments is None else floor_arguments
    values: list[float] = []
    floors: list[float] = []
    for number in range(repeats):
        if alternate and number % 2:
            floor_us, value = _bench.paired(
                floor, function, *floor_args, floor_arguments=arguments, repeats=1, setup=setup
            )
        else:
            value, floor_us = _bench.paired(
                function, floor, *arguments, floor_arguments=floor_args, repeats=1, setup=setup
            )
        values.append(value)
        floors.append(floor_us)
    return Rounds(values, floors)


@attrs.frozen
class Blocks(Rounds):
    """Single calls of an operation and of its floor in turn (``values[i]`` and ``floors[i]``
    back to back), whose ratios are those of each block's medians."""

    block_ratios: Sequence[float]

    @property
    def ratios(self) -> list[float]:
        """Each block's median value / median floor."""
        return list(self.block_ratios)


def blocks(
    function: Callable[[Any], object],
    floor: Callable[[Any], object],
    items: Sequence[Any],
    floor_items: Sequence[Any],
    *,
    block: int,
) -> Blocks:
    """``function(items[i])`` and right after it ``floor(floor_items[i])``, for each ``i``,
    every call timed on its own; a block is ``block`` consecutive ``i`` and its ratio is the
    median of its ``function`` calls over that of its ``floor`` calls. For operations whose
    cost moves from one moment to the next (an fsynced commit): both sides of a block meet the
    same disk."""
    values: list[float] = []
    floors: list[float] = []
    ratios: list[float] = []
    for start in range(0, len(items), block):
        ours: list[float] = []
        theirs: list[float] = []
        end = start + block
        for item, floor_item in zip(items[start:end], floor_items[start:end], strict=True):
            began = time.perf_counter()
            function(item)
            middle = time.perf_counter()
            floor(floor_item)
            ended = time.perf_counter()
            ours.append((middle - began) * 1e6)
            theirs.append((ended - middle) * 1e6)
        values += ours
        floors += theirs
        ratios.append(statistics.median(ours) / statistics.median(theirs))
    return Blocks(values, floors, ratios)


async def arounds(
    function: Callable[[Any], Awaitable[object]],
    floor: Callable[[Any], Awaitable[object]],
    items: Sequence[Any],
    *,
    repeats: int,
) -> Rounds:
    """µs per awaited call of ``function`` and of ``floor`` over ``items``, alternately, in
    ``repeats`` rounds (which of the two goes first alternates too)."""

    async def timed(call: Callable[[Any], Awaitable[object]]) -> float:
        began = time.perf_counter()
        for item in items:
            await call(item)
        return (time.perf_counter() - began) / len(items) * 1e6

    values: list[float] = []
    floors: list[float] = []
    for round_ in range(repeats):
        if round_ % 2:
            floors.append(await timed(floor))
            values.append(await timed(function))
        else:
            values.append(await timed(function))
            floors.append(await timed(floor))
    return Rounds(values, floors)


def ratio_figure(
    operation: str,
    timed: Rounds,
    floor_name: str,
    *,
    ratio: float | None = None,
    at_least: bool = False,
    unit: str = "us",
    note: str = "",
) -> RatioFigure:
    """The row of ``timed``, held to ``median ratio <= ratio`` (``>=`` with ``at_least``, for
    rates such as pairs/s); no target without ``ratio``."""
    passed: bool | None = None
    target = "-"
    if ratio is not None:
        passed = timed.ratio >= ratio if at_least else timed.ratio <= ratio
        target = f"{'>=' if at_least else '<='} {ratio:g}x floor (median ratio)"
    return RatioFigure(
        operation,
        timed.value,
        unit,
        timed.floor,
        floor_name,
        target,
        passed,
        note=note or f"{len(timed.values)} rounds",
        median_ratio=timed.ratio,
    )
