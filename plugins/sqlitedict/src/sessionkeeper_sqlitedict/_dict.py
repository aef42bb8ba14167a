"""A ``sqlitedict.SqliteDict`` over a session file, for scripts: the store as a read-only dict.

sqlitedict runs each dict's SQLite connection in a worker thread. When that thread fails to
start (a locked file, say), plain ``SqliteDict.close()`` waits forever for an answer the dead
thread will never send — sqlitedict's known hang on close. :class:`SessionDict` closes without
waiting when its worker is gone, and :func:`open_sqlitedict` reports a failed start at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlitedict import SqliteDict, SqliteMultithread  # type: ignore[import-untyped]

from sessionkeeper import Session, StorageError
from sessionkeeper.backend import decode_session

from ._sql import file_problem

__all__ = ["SessionDict", "open_sqlitedict"]


def _refuse_encode(_: Session) -> bytes:
    raise RuntimeError("open_sqlitedict() opens session files read-only")


class _Worker(SqliteMultithread):  # type: ignore[misc]
    """sqlitedict's worker thread, ending quietly when it cannot connect.

    The error is kept (``exception``) and raised by the next call, as sqlitedict does; it just
    does not also escape the thread as an unhandled exception.
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception:
            if self.exception is None:  # pragma: no cover - sqlitedict records it first
                raise


class SessionDict(SqliteDict):  # type: ignore[misc]
    """A ``SqliteDict`` whose ``close`` never hangs (see the module docstring)."""

    def _new_conn(self) -> _Worker:
        return _Worker(
            self.filename,
            autocommit=self.autocommit,
            journal_mode=self.journal_mode,
            outer_stack=self._outer_stack,
        )

    def close(self, do_log: bool = True, force: bool = False) -> None:
        """Close; without waiting for the worker thread when it is no longer running."""
        worker = getattr(self, "conn", None)
        if worker is not None and not worker.is_alive():
            force = True
        super().close(do_log=do_log, force=force)


def open_sqlitedict(path: str | os.PathLike[str], table_name: str = "sessions") -> Any:
    """Open table ``table_name`` of the session file ``path`` as a read-only ``SqliteDict``.

    Values are decoded with :func:`sessionkeeper.backend.decode_session` (never with pickle), so
    ``d[session_id]`` is a :class:`~sessionkeeper.Session` and ``d.items()`` yields
    ``(id, Session)`` pairs; a row that does not decode raises
    :class:`~sessionkeeper.backend.CodecError`. It sees what the owning process has committed.
    Writes are refused: a store is written through a :class:`~sessionkeeper.SessionManager` only,
    which holds the file's owner lock. Use it in a ``with`` block, or call ``close()``.

    Raises :class:`FileNotFoundError` for a missing file, and
    :class:`~sessionkeeper.StorageError` for a path that is not a regular file (a directory,
    a FIFO) or when sqlitedict cannot open it (a missing table, a locked or damaged file).
    """
    file = Path(path)
    problem = file_problem(file)
    if problem is not None:
        if not file.exists():
            raise FileNotFoundError(problem)
        raise StorageError("sqlitedict", problem)  # a directory, a FIFO (would block), ...
    try:
        view = SessionDict(
            os.fspath(file),
            tablename=table_name,
            flag="r",
            journal_mode="WAL",  # the store's own mode: sqlitedict's default would switch it
            encode=_refuse_encode,
            decode=decode_session,
            outer_stack=False,
        )
    except Exception as exc:  # RuntimeError is sqlitedict's word for a missing table
        raise StorageError(
            "sqlitedict", f"{file}: sqlitedict cannot open it: {type(exc).__name__}: {exc}"
        ) from None
    try:
        # Waits until the worker thread has connected; raises what stopped it.
        view.conn.check_raise_error()
    except Exception as exc:
        view.close(force=True)
        raise StorageError(
            "sqlitedict", f"{file}: sqlitedict cannot open it: {type(exc).__name__}: {exc}"
        ) from exc
    return view
