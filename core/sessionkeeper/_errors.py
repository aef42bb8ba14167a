"""The exception hierarchy: one base class, narrow subclasses that carry what went wrong."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "KNOWN_BACKENDS",
    "BackendNotFound",
    "CodecError",
    "ConfigError",
    "ExportError",
    "ExportFormatError",
    "ExportTargetError",
    "InvalidSession",
    "ManagerClosed",
    "PluginValidationError",
    "SameStoreError",
    "SessionKeeperError",
    "SessionNotFound",
    "StorageError",
    "TransferAborted",
    "Unsupported",
    "VerificationFailed",
    "VersionConflict",
]


class SessionKeeperError(Exception):
    """Base class of every exception sessionkeeper raises on purpose."""


class InvalidSession(SessionKeeperError, ValueError):
    """A session, an id, a timeout or metadata that breaks the session model (what
    :class:`~sessionkeeper.Session` accepts).

    :attr:`field` names the offending field (``"id"``, ``"metadata['a'][0]"`` …).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"invalid session {field}: {message}")
        self.field = field


class SessionNotFound(SessionKeeperError, KeyError):
    """No live session has this id (it never existed, was deleted, or has expired).

    It is also a :class:`KeyError`, so ``except KeyError`` works as for a mapping.
    """

    def __init__(self, session_id: object) -> None:
        super().__init__(session_id)
        self.session_id = session_id

    def __str__(self) -> str:
        return f"no live session with id {self.session_id!r}"


class CodecError(SessionKeeperError, ValueError):
    """Bytes that are not a valid encoded session (foreign, truncated, corrupted or too new)."""


class ConfigError(SessionKeeperError):
    """A configuration that cannot be used; the message names the file and the key.

    :attr:`path` is the config file (``None`` for keyword arguments) and :attr:`key` the dotted
    key that is wrong (``None`` when the whole file is at fault).
    """

    def __init__(self, message: str, *, path: Path | None = None, key: str | None = None) -> None:
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}{message}")
        self.path = path
        self.key = key


class BackendNotFound(ConfigError):
    """The configured backend is not installed, or its plugin failed to import.

    The message names the backend, says "did you mean …?" for a near name among the installed
    and the project's own backends, lists the installed ones, and gives the ``pip install`` that
    adds it, only for a backend of the project (:data:`KNOWN_BACKENDS`), never a distribution name
    made up from the input. ``note`` adds why this backend was asked for (e.g. that no config
    file was found and the defaults apply); ``distribution`` names the installed distribution
    of a backend that failed to import.
    """

    def __init__(
        self,
        name: str,
        installed: Sequence[str],
        *,
        reason: str | None = None,
        path: Path | None = None,
        note: str | None = None,
        distribution: str | None = None,
    ) -> None:
        listing = ", ".join(sorted(installed)) or "none"
        suggestion = did_you_mean(name, installed)
        what = reason or f"backend {name!r} is not installed"
        parts = [f"{what} (did you mean {suggestion!r}?)" if suggestion is not None else what]
        if note:
            parts.append(note)
        parts.append(f"installed backends: {listing}")
        if distribution is not None:
            parts.append(f"it comes from the installed distribution {distribution}")
        hint = install_hint(name)
        if hint is not None:
            parts.append(f"to {'reinstall' if distribution else 'add'} it: {hint}")
        elif suggestion is not None and suggestion not in installed:
            parts.append(f"to add {suggestion!r}: {install_hint(suggestion)}")
        elif suggestion is None and distribution is None:
            parts.append(
                f"{name!r} is not one of sessionkeeper's own backends "
                f"({', '.join(KNOWN_BACKENDS)}): install the distribution that provides it "
                '(it declares an entry point in group "sessionkeeper.backends")'
            )
        super().__init__("; ".join(parts), path=path, key="sessionkeeper.backend")
        self.name = name
        self.installed = tuple(sorted(installed))
        self.suggestion = suggestion


class PluginValidationError(SessionKeeperError):
    """A plugin that does not satisfy the backend contract; :attr:`plugin` names it."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plugin {plugin!r}: {message}")
        self.plugin = plugin


class StorageError(SessionKeeperError):
    """The backend could not do what was asked; nothing stored before was lost.

    :attr:`backend` names the backend; the message says what failed and why.
    """

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend} backend: {message}")
        self.backend = backend

    @classmethod
    def failed(cls, backend: str, operation: str, where: str, exc: BaseException) -> StorageError:
        """The error of ``operation`` failing on ``where`` (a server, a table) with ``exc``:
        ``<operation> failed on <where>: <type>: <text>`` (the type's name again when the
        exception has no text)."""
        detail = str(exc).strip() or type(exc).__name__
        return cls(backend, f"{operation} failed on {where}: {type(exc).__name__}: {detail}")

    @classmethod
    def damaged(cls, backend: str, record: str, problem: str) -> StorageError:
        """The error of a stored record that is not a session: ``the session record <record>
        is damaged: <problem>`` (``record`` says where it is, e.g. ``at key 'x' on host``)."""
        return cls(backend, f"the session record {record} is damaged: {problem}")


class ManagerClosed(SessionKeeperError):
    """The manager was closed; open a new one."""


# --- transfers (export, import, migrate, backup) -----------------------------------------------


class ExportError(SessionKeeperError):
    """A transfer that did not complete; :attr:`report` says how far it got (or ``None``)."""

    def __init__(self, message: str, *, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class ExportFormatError(ExportError, ValueError):
    """An export file that cannot be read: not an export, a newer version, a bad or truncated
    line. :attr:`line` is the 1-based line number (``None`` for the file as a whole) and
    :attr:`source` the file (``"-"`` for standard input)."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        report: object | None = None,
    ) -> None:
        where = source or ""
        if line is not None:
            where = f"{where}:{line}" if where else f"line {line}"
        super().__init__(f"{where}: {message}" if where else message, report=report)
        self.source = source
        self.line = line


class TransferAborted(ExportError):
    """The target (or the source) failed part-way; :attr:`report` counts what was written."""


class VerificationFailed(ExportError):
    """A migration's verification found sessions missing or different in the target."""


class SameStoreError(ExportError, ValueError):
    """A migration whose source and target are one store (equal
    :meth:`~sessionkeeper.SessionManager.identity`), refused before anything is read or written.
    """


class ExportTargetError(ExportError, ValueError):
    """An export target that is not a new path nor a regular file holding an export (a FIFO, a
    device, a symbolic link, a directory, another program's file): refused, never replaced."""


#: The project's own backends: entry-point name -> (distribution, folder in a source checkout).
#: Only these are ever suggested for ``pip install``: a name built from user input could point
#: at a package anyone may register.
KNOWN_BACKENDS: Final[Mapping[str, tuple[str, str]]] = {
    "memory": ("sessionkeeper-memory", "plugins/memory"),
    "sqlitedict": ("sessionkeeper-sqlitedict", "plugins/sqlitedict"),
    "zmq": ("sessionkeeper-zmq", "plugins/zmq"),
    "leveldb": ("sessionkeeper-leveldb", "contrib/leveldb"),
    "redis": ("sessionkeeper-redis", "contrib/redis"),
    "postgres": ("sessionkeeper-postgres", "contrib/postgres"),
}


def install_hint(backend: str) -> str | None:
    """The ``pip install`` that adds ``backend``, if it is one of the project's own
    (:data:`KNOWN_BACKENDS`); ``None`` for any other name: never a distribution name made up
    from the input.

    No sessionkeeper distribution is on the package index yet, so the form that works today
    comes first (the plugin's folder, from the root of a checkout) and the index form is
    marked "once published"."""
    known = KNOWN_BACKENDS.get(backend)
    if known is None:
        return None
    distribution, folder = known
    return (
        f"pip install ./{folder} from the root of a sessionkeeper checkout "
        f"(once published: pip install {distribution})"
    )


def did_you_mean(name: str, installed: Sequence[str]) -> str | None:
    """The installed or known backend name nearest to ``name``, when one is near (a typo);
    ``None`` when ``name`` is itself one of them or nothing is near."""
    candidates = sorted(set(installed) | set(KNOWN_BACKENDS))
    if name in candidates:
        return None
    folded = {candidate.lower(): candidate for candidate in candidates}
    if name.lower() in folded:
        return folded[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(folded), n=1, cutoff=0.6)
    return folded[close[0]] if close else None


# --- concurrent state (issue 14) ------------------------------------------------------------------


class VersionConflict(SessionKeeperError):
    """A conditional write found another version than the one it named.

    :attr:`session_id` is the session, :attr:`expected` the version the write named (``0``:
    "only if no live session has this id") and :attr:`actual` the version of the live session
    stored when the write was refused (``0`` when there was none). Nothing was written.
    :meth:`SessionManager.update <sessionkeeper.SessionManager.update>` raises it after its
    last attempt.
    """

    def __init__(self, session_id: str, expected: int, actual: int) -> None:
        stored = f"stored version is {actual}" if actual else "no live session is stored"
        super().__init__(
            f"version conflict on session {session_id!r}: expected version {expected}, {stored}"
        )
        self.session_id = session_id
        self.expected = expected
        self.actual = actual


#: What the ``atomic`` capability stands for, as the messages name it.
ATOMIC_OPERATIONS: Final = "update, take, rotate, conditional store, delete_owner"
#: The project's own backends that declare ``atomic`` (zmq's replicas are last-writer-wins).
ATOMIC_BACKENDS: Final = ("memory", "sqlitedict", "leveldb", "redis", "postgres")


class Unsupported(SessionKeeperError):
    """The configured backend cannot do this operation correctly, so it is not attempted.

    :attr:`backend` names the backend, :attr:`capability` the capability it lacks (``"atomic"``)
    and :attr:`backends` the project's backends that have it. Nothing was written: the manager
    never turns a conditional operation into an unconditional one.
    """

    def __init__(
        self, backend: str, capability: str = "atomic", backends: Sequence[str] = ATOMIC_BACKENDS
    ) -> None:
        what = ATOMIC_OPERATIONS if capability == "atomic" else capability
        others = ", ".join(name for name in backends if name != backend) or "none"
        super().__init__(
            f"the {backend} backend does not support {capability} operations ({what}); "
            f"backends that do: {others}"
        )
        self.backend = backend
        self.capability = capability
        self.backends = tuple(backends)
