"""The exception hierarchy: one base class, narrow subclasses that carry what went wrong."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "BackendNotFound",
    "CodecError",
    "ConfigError",
    "InvalidSession",
    "ManagerClosed",
    "PluginValidationError",
    "SessionKeeperError",
    "SessionNotFound",
    "StorageError",
]


class SessionKeeperError(Exception):
    """Base class of every exception sessionkeeper raises on purpose."""


class InvalidSession(SessionKeeperError, ValueError):
    """A session, an id, a timeout or metadata that breaks the session model (DESIGN §2).

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
    """The configured backend is not installed, or its plugin failed to import."""

    def __init__(
        self,
        name: str,
        installed: Sequence[str],
        *,
        reason: str | None = None,
        path: Path | None = None,
    ) -> None:
        listing = ", ".join(sorted(installed)) or "none"
        what = reason or f"backend {name!r} is not installed"
        message = (
            f"{what}; installed backends: {listing}; to add it: pip install {install_hint(name)}"
        )
        super().__init__(message, path=path, key="sessionkeeper.backend")
        self.name = name
        self.installed = tuple(sorted(installed))


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


class ManagerClosed(SessionKeeperError):
    """The manager was closed; open a new one."""


def install_hint(backend: str) -> str:
    """The distribution that provides ``backend``, by the convention ``sessionkeeper-<name>``."""
    return f"sessionkeeper-{backend}"
