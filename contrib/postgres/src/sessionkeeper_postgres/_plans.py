"""What the backend's operations send and how they read the answers, without I/O: shared by
the sync path (psycopg's ``Connection``) and the async one (``AsyncConnection``).

The parameters of each write come from :func:`write_params` and :func:`row_values`; an
operation of several statements whose later statements depend on the earlier answers is a
generator of :data:`Steps`: it yields ``(query, params, want)`` and is sent the answer
(:data:`ROWCOUNT`: the row count, :data:`ONE`: the first row or ``None``, :data:`NOTHING`:
``None``), and returns the operation's result. :func:`drive` runs one on a sync cursor; the
async path's driver does the same with ``await``. So the conditional write's re-check of a
refused version, and the rotation's read-then-insert, are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, Final

import psycopg

from sessionkeeper import Session, VersionConflict
from sessionkeeper.backend import encode_session

from ._schema import Statements, deadlines

__all__ = [
    "ALL",
    "CONDITIONAL_ATTEMPTS",
    "NOTHING",
    "ONE",
    "ROWCOUNT",
    "STORE_CHUNK",
    "Decode",
    "StoreIf",
    "Steps",
    "chunks",
    "counted_result",
    "counted_write",
    "drive",
    "quarantine_steps",
    "rotate_steps",
    "row_values",
    "storable_id",
    "write_params",
]

#: Times a conditional write is sent again when the version read after its refusal is the one
#: it expected (the row changed twice in between): then the write's outcome is re-decided.
CONDITIONAL_ATTEMPTS: Final = 3

#: What a statement's caller wants back: the row count, the first row (or ``None``), nothing,
#: every row.
ROWCOUNT: Final = 0
ONE: Final = 1
NOTHING: Final = 2
ALL: Final = 3

#: Sessions ``store_many`` writes per statement (one ``INSERT … SELECT FROM unnest``): bounds
#: the request, up to ``max_metadata_bytes`` per session.
STORE_CHUNK: Final = 1_000

Step = tuple[bytes, Any, int]
Steps = Generator[Step, Any, Any]
#: ``decode(session_id, record, last_accessed, version)``: the session of one row.
Decode = Callable[[str, object, object, object], Session]


def storable_id(session_id: object) -> bool:
    """Whether ``session_id`` could be a stored id: a ``str`` without NUL (which a PostgreSQL
    ``text`` cannot hold). The manager validates ids itself when nothing is found."""
    return type(session_id) is str and "\x00" not in session_id


def write_params(session: Session) -> dict[str, Any]:
    """The named parameters of a write of ``session`` (its own version)."""
    deadline, absolute_deadline = deadlines(session)
    return {
        "id": session.id,
        "record": encode_session(session),
        "last_accessed": session.last_accessed,
        "deadline": deadline,
        "absolute_deadline": absolute_deadline,
        "version": session.version,
        "owner": session.owner,
    }


def row_values(session: Session) -> tuple[Any, ...]:
    """``session``'s values in the column order of ``store_many``'s ``unnest`` arrays."""
    deadline, absolute_deadline = deadlines(session)
    return (
        session.id,
        encode_session(session),
        session.last_accessed,
        deadline,
        absolute_deadline,
        session.version,
        session.owner,
    )


def chunks(sessions: Sequence[Session]) -> Iterator[tuple[list[Any], ...]]:
    """The ``unnest`` arrays of ``store_many``, one tuple of columns per :data:`STORE_CHUNK`
    sessions."""
    for start in range(0, len(sessions), STORE_CHUNK):
        rows = map(row_values, sessions[start : start + STORE_CHUNK])
        columns = tuple(list(column) for column in zip(*rows, strict=True))
        if columns:
            yield columns


def drive(cursor: psycopg.Cursor[Any], steps: Steps) -> Any:
    """Run ``steps`` on a sync ``cursor``; return what the generator returns."""
    try:
        query, params, want = next(steps)
        while True:
            cursor.execute(query, params)
            if want == ROWCOUNT:
                answer: Any = cursor.rowcount
            elif want == ONE:
                answer = cursor.fetchone()
            elif want == ALL:
                answer = cursor.fetchall()
            else:
                answer = None
            query, params, want = steps.send(answer)
    except StopIteration as done:
        return done.value


def counted_write(session: Session, now: int) -> tuple[Session, dict[str, Any]]:
    """``sessionkeeper_store_if`` with ``if_version`` ``None``: the session to store (the
    record carries the caller's version + 1) and the parameters of the upsert that counts the
    version in SQL (``store_counted``); then :func:`counted_result` of the row it returns.
    Plain functions, not a :class:`StoreIf`: this is every ``store``'s path."""
    stored = session.with_version(session.version + 1)
    params = write_params(stored)
    params["now"] = now
    return stored, params


def counted_result(stored: Session, row: Any) -> Session:
    """The session the counting upsert stored: ``stored`` with the version the server counted
    (the version column, which readers take), from the ``row`` it returned."""
    version = row[0]
    return stored if version == stored.version else stored.with_version(version)


class StoreIf:
    """One conditional ``sessionkeeper_store_if`` (``if_version`` N >= 0): :meth:`steps`, then
    :meth:`outcome`.

    The record carries the version the write expects to give (``if_version`` + 1); the
    version column is set from it by the same statement that checks the stored one.
    """

    def __init__(self, statements: Statements, session: Session, if_version: int, now: int) -> None:
        self.session = session
        self.if_version = if_version
        expected = if_version + 1
        self.stored = session if session.version == expected else session.with_version(expected)
        self.query = statements.store_if_absent if if_version == 0 else statements.store_if_version
        self.params = write_params(self.stored)
        self.params["now"] = now
        self.params["expected"] = if_version
        self._live_version = statements.live_version

    def steps(self) -> Steps:
        """The conditional write; returns -1 when it was done, else the live version (0: none)
        that refused it. A refusal is re-checked: when the live version read is the one
        expected (the row changed twice in between), the write is sent again."""
        expected = self.if_version
        actual = expected
        for _ in range(CONDITIONAL_ATTEMPTS):
            if (yield self.query, self.params, ROWCOUNT) == 1:
                return -1
            row = yield self._live_version, self.params, ONE
            actual = 0 if row is None else int(row[0])
            if actual != expected:
                break
        return actual

    def outcome(self, actual: int) -> Session:
        """The stored session, or :class:`~sessionkeeper.VersionConflict` naming ``actual``."""
        if actual >= 0:
            raise VersionConflict(self.session.id, self.if_version, actual)
        return self.stored


def rotate_steps(
    statements: Statements, session_id: str, new_id: str, now: int, decode: Decode
) -> Steps:
    """The rotation, to run inside one transaction: ``DELETE … RETURNING`` the live row
    (locking it), then ``INSERT`` it under ``new_id`` with version + 1 and ``last_accessed``
    now; returns the rotated session, or ``None`` (nothing changed) when no live session has
    the id."""
    row = yield statements.rotate_remove, {"id": session_id, "now": now}, ONE
    if row is None:
        return None
    old = decode(session_id, row[0], row[1], row[2])
    rotated = old.replace(
        id=new_id, last_accessed=max(now, old.last_accessed), version=old.version + 1
    )
    yield statements.insert, write_params(rotated), NOTHING
    return rotated


def quarantine_steps(
    statements: Statements, session_id: str, record: object, last_accessed: object, problem: str
) -> Steps:
    """What keeps the bytes of a row a ``take`` removed but cannot decode, to run inside one
    transaction: the ``<table>_quarantine`` table (made if need be) gains the row and its
    ``problem``."""
    yield statements.create_quarantine, None, NOTHING
    yield statements.insert_quarantine, (session_id, record, last_accessed, problem), NOTHING
