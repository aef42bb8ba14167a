"""One protocol, two drivers: the backend's operations as generators of Redis calls, run by a
sync driver (redis-py's client) or an async one (``redis.asyncio``, issue 15).

Every operation of :class:`~sessionkeeper_redis.RedisBackend` is written once, as a generator
(its *steps*) that yields the calls it needs (:class:`Command`, :class:`Call`, :class:`Batch`)
and receives each result, or has the client's exception thrown in at the ``yield`` (so it maps
errors to :class:`~sessionkeeper.StorageError` itself, the same on both paths); its return
value is the hook's result. The keys, the Lua scripts of :mod:`sessionkeeper_redis._scripts`,
the encoding and the error mapping are therefore shared; only :func:`run` and :func:`arun`
differ, by an ``await``. Both reload the scripts once when the server lost them (a restart, a
``SCRIPT FLUSH``), and follow a write by ``WAIT`` in the same round trip when
``wait_replicas`` asks for it.

A script with a function twin (the store script, :class:`~sessionkeeper_redis._scripts.Script`)
is called with ``FCALL`` where the server has Redis 7 functions, its library loaded on the
first call and again whenever the server lost it; a server without them (Redis 6.2, a user not
allowed ``FCALL`` or ``FUNCTION LOAD``), a Cluster (a library would have to be loaded on every
primary) and a write followed by ``WAIT`` take ``EVALSHA`` of the same code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator, Sequence
from typing import Any, Final, TypeVar

import attrs
from redis.exceptions import (
    NoPermissionError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from . import _scripts
from ._deadline import Watchdog
from ._scripts import Script

__all__ = [
    "REDIS_ERRORS",
    "Batch",
    "Call",
    "Command",
    "Functions",
    "Steps",
    "Writes",
    "arun",
    "run",
]

T = TypeVar("T")

log = logging.getLogger("sessionkeeper.redis")

#: What redis-py raises, sync or asyncio: its own errors, cluster errors (not RedisErrors) and
#: socket errors.
REDIS_ERRORS: Final = (RedisError, RedisClusterException, OSError)


@attrs.frozen
class Command:
    """One plain command: ``client.execute_command(*args)``."""

    args: tuple[Any, ...]


@attrs.frozen
class Call:
    """One script call (``EVALSHA``). A ``write`` is followed by ``WAIT`` when the backend's
    ``wait_replicas`` asks for it; its result is the script's."""

    script: Script
    keys: Sequence[str | bytes]
    args: Sequence[Any]
    write: bool = False


@attrs.frozen
class Batch:
    """Several calls of one writing script in one pipeline (one round trip, one ``WAIT``); its
    result is the list of the scripts' results."""

    script: Script
    calls: Sequence[tuple[Sequence[str], Sequence[Any]]]


#: The steps of one operation: yields calls, receives their results, returns the hook's result.
Steps = Generator[Command | Call | Batch, Any, T]


@attrs.define
class Functions:
    """Whether the server runs scripts' function twins (``FCALL``): ``None`` until the first
    call tells, then ``True`` (a library loaded) or ``False`` (``EVALSHA`` from then on). One
    per backend, shared by its sync and asyncio clients (they reach the same server)."""

    usable: bool | None = None

    @property
    def on(self) -> bool:
        """Whether to try ``FCALL`` (known to work, or not known yet)."""
        return self.usable is not False


@attrs.frozen
class Writes:
    """How writes are acknowledged: ``wait`` replicas (0: the primary alone) within
    ``timeout_ms``; ``cluster``: ``WAIT`` must be sent to the node of the table's slot.
    ``functions``: whether scripts run as functions there (never on a cluster)."""

    wait: int
    timeout_ms: int
    cluster: bool
    unacknowledged: Any  # (writes, acknowledged) -> the StorageError to raise
    functions: Functions = attrs.field(factory=Functions)


def run(client: Any, writes: Writes, steps: Steps[T]) -> T:
    """Run ``steps`` on redis-py's sync ``client``."""
    try:
        call = next(steps)
        while True:
            try:
                result = _perform(client, writes, call)
            except REDIS_ERRORS as exc:
                call = steps.throw(exc)
            else:
                call = steps.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


async def arun(client: Any, writes: Writes, steps: Steps[T], watchdog: Watchdog) -> T:
    """Run ``steps`` on a ``redis.asyncio`` ``client``: :func:`run`, awaited, each round trip
    bounded by ``watchdog`` (the client itself has no ``socket_timeout``: see
    :mod:`sessionkeeper_redis._deadline`)."""
    task: Any = asyncio.current_task()
    try:
        call = next(steps)
        while True:
            key = watchdog.enter(task)
            try:
                result = await _aperform(client, writes, call)
            except asyncio.CancelledError:
                late = watchdog.expired(key, task)
                if late is None:
                    raise
                call = steps.throw(late)
            except REDIS_ERRORS as exc:
                call = steps.throw(exc)
            else:
                call = steps.send(result)
            finally:
                watchdog.leave(key)
    except StopIteration as stop:
        value: T = stop.value
        return value


def load_scripts(client: Any) -> None:
    """``SCRIPT LOAD`` every script (sync client)."""
    for script in _scripts.SCRIPTS:
        client.script_load(script.source)


async def aload_scripts(client: Any) -> None:
    """``SCRIPT LOAD`` every script (asyncio client)."""
    for script in _scripts.SCRIPTS:
        await client.script_load(script.source)


def _fcall(call: Call) -> tuple[Any, ...]:
    """The ``FCALL`` command of ``call``'s function twin."""
    return ("FCALL", call.script.function, len(call.keys), *call.keys, *call.args)


#: What :func:`_as_function` returns when the call must run as a script (``EVALSHA``).
_SCRIPT: Final = object()


def _lost(functions: Functions, exc: ResponseError) -> bool:
    """After ``FCALL`` raised ``exc``: True when the server has no such function (it lost the
    library: load it and call again); False when it cannot run functions for us (no ``FCALL``
    command, or the user may not call it: scripts from then on). Any other error is the
    function's own, and propagates."""
    text = str(exc)
    if isinstance(exc, NoPermissionError) or text.lower().startswith("unknown command"):
        functions.usable = False
        return False
    if text == "Function not found":
        return True
    raise exc


def _as_function(call: Call, functions: Functions) -> Generator[tuple[Any, ...], Any, Any]:
    """``call`` as a Redis 7 function: yields each command to send (``FCALL``, and ``FUNCTION
    LOAD`` when the library is missing); the driver sends back its reply or throws its
    ``ResponseError`` in. Returns ``FCALL``'s reply, or :data:`_SCRIPT` when the call must run
    as a script: the server cannot run functions for us (from then on), or could not load the
    library (from then on too, with a warning naming why: a library the server refuses would
    cost every store two more round trips)."""
    fcall = _fcall(call)
    try:
        return (yield fcall)
    except ResponseError as exc:
        if not _lost(functions, exc):
            return _SCRIPT
    try:
        yield ("FUNCTION", "LOAD", call.script.library)
    except ResponseError as exc:
        if "already exists" not in str(exc):
            functions.usable = False
            if not isinstance(exc, NoPermissionError):
                log.warning(
                    "redis: FUNCTION LOAD of %s failed (%s); the store script runs by EVALSHA "
                    "from now on",
                    call.script.function,
                    exc,
                )
            return _SCRIPT
    functions.usable = True
    try:
        return (yield fcall)
    except ResponseError as exc:
        _lost(functions, exc)  # lost again at once (a FUNCTION FLUSH between): a script this time
        return _SCRIPT


def _run_function(client: Any, call: Call, functions: Functions) -> Any:
    """:func:`_as_function` on the sync client (driven as :func:`run` drives steps)."""
    steps = _as_function(call, functions)
    try:
        command = next(steps)
        while True:
            try:
                reply = client.execute_command(*command)
            except ResponseError as exc:
                command = steps.throw(exc)
            else:
                command = steps.send(reply)
    except StopIteration as stop:
        return stop.value


async def _arun_function(client: Any, call: Call, functions: Functions) -> Any:
    """:func:`_as_function` on the asyncio client."""
    steps = _as_function(call, functions)
    try:
        command = next(steps)
        while True:
            try:
                reply = await client.execute_command(*command)
            except ResponseError as exc:
                command = steps.throw(exc)
            else:
                command = steps.send(reply)
    except StopIteration as stop:
        return stop.value


def _perform(client: Any, writes: Writes, call: Command | Call | Batch) -> Any:
    if isinstance(call, Command):
        return client.execute_command(*call.args)
    if type(call) is Call and not (call.write and writes.wait):
        if call.script.function is not None and writes.functions.on:
            reply = _run_function(client, call, writes.functions)
            if reply is not _SCRIPT:
                return reply
        try:
            return client.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        except NoScriptError:
            load_scripts(client)
            return client.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
    script, calls = _pipelined(call)
    for attempt in (0, 1):
        pipe = client.pipeline(transaction=False)
        _queue(pipe, client, writes, script, calls)
        try:
            results: list[Any] = pipe.execute()
        except NoScriptError:
            if attempt:
                raise
            load_scripts(client)
            continue
        finally:
            pipe.reset()
        return _acknowledged(writes, call, calls, results)
    raise AssertionError("unreachable")  # pragma: no cover


async def _aperform(client: Any, writes: Writes, call: Command | Call | Batch) -> Any:
    if isinstance(call, Command):
        return await client.execute_command(*call.args)
    if type(call) is Call and not (call.write and writes.wait):
        if call.script.function is not None and writes.functions.on:
            reply = await _arun_function(client, call, writes.functions)
            if reply is not _SCRIPT:
                return reply
        try:
            return await client.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        except NoScriptError:
            await aload_scripts(client)
            return await client.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
    script, calls = _pipelined(call)
    if writes.wait and writes.cluster:
        # WAIT is sent to the node of the table's slot, which a new asyncio cluster client
        # learns on its first command: make sure it knows the slots (at once once it does).
        await client.initialize()
    for attempt in (0, 1):
        pipe = client.pipeline(transaction=False)
        _queue(pipe, client, writes, script, calls)
        try:
            results: list[Any] = await pipe.execute()
        except NoScriptError:
            if attempt:
                raise
            await aload_scripts(client)
            continue
        finally:
            await pipe.reset()
        return _acknowledged(writes, call, calls, results)
    raise AssertionError("unreachable")  # pragma: no cover


def _pipelined(call: Call | Batch) -> tuple[Script, Sequence[tuple[Sequence[Any], Sequence[Any]]]]:
    if type(call) is Call:
        return call.script, ((call.keys, call.args),)
    assert type(call) is Batch
    return call.script, call.calls


def _queue(
    pipe: Any,
    client: Any,
    writes: Writes,
    script: Script,
    calls: Sequence[tuple[Sequence[Any], Sequence[Any]]],
) -> None:
    """Queue one ``EVALSHA`` per call and, with ``wait_replicas``, ``WAIT`` on the connection
    that wrote (the node of the table's slot on a cluster)."""
    for keys, args in calls:
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    if writes.wait:
        target: dict[str, Any] = {}
        if writes.cluster:
            target["target_nodes"] = client.get_node_from_key(calls[0][0][0])
        pipe.execute_command("WAIT", writes.wait, writes.timeout_ms, **target)


def _acknowledged(
    writes: Writes, call: Call | Batch, calls: Sequence[Any], results: list[Any]
) -> Any:
    """The pipeline's results without ``WAIT``'s, which must count ``wait`` replicas; a
    :class:`Call`'s own result, a :class:`Batch`'s list."""
    if writes.wait:
        acknowledged = results.pop()
        if int(acknowledged) < writes.wait:
            raise writes.unacknowledged(len(calls), acknowledged)
    return results[0] if type(call) is Call else results
