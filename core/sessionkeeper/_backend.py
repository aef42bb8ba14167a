"""The typed contract of a backend plugin class (what the entry point names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs

__all__ = ["BackendContext", "BackendPlugin", "Capabilities", "NoOptions"]


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a backend can do; the conformance kit and the CLI read it.

    :param persistent: sessions survive a restart of the process that stored them.
    :param shared: several processes see the same sessions (not only the one that opened it).
    :param replicated: sessions are copied to several machines and survive the loss of one.
    :param blocking: operations may block on I/O; the async manager runs them in a worker
        thread, except those whose hooks the backend declares inline
        (:func:`~sessionkeeper.hookspecs.sessionkeeper_inline_hooks`). ``False``: every hook
        is inline, every operation runs on the event loop.
    :param read_only_open: the backend honours :attr:`BackendContext.read_only`, so the CLI can
        inspect a store while its owning process runs.
    :param atomic: the backend implements the atomic hooks (``sessionkeeper_store_if``,
        ``sessionkeeper_take``, ``sessionkeeper_rotate``, ``sessionkeeper_delete_owner``) and the
        owner hooks, linearizable per session id across every thread and process that uses the
        store. Without it the manager raises :class:`~sessionkeeper.Unsupported` for ``update``,
        ``take``, ``rotate``, ``store(if_version=...)`` and ``delete_owner``.
    """

    persistent: bool = False
    shared: bool = False
    replicated: bool = False
    blocking: bool = True
    read_only_open: bool = False
    atomic: bool = False

    def as_dict(self) -> dict[str, bool]:
        """The flags as a plain dict."""
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class BackendContext:
    """What the manager tells a backend besides its own options.

    :param name: the entry-point name the backend was configured under.
    :param base_dir: the directory relative paths in ``backend_opts`` are resolved against (the
        config file's directory, or the working directory without a file).
    :param read_only: open for inspection only; stores must not be written.
    """

    name: str
    base_dir: Path = attrs.field(factory=Path.cwd)
    read_only: bool = False

    def resolve(self, path: str | Path) -> Path:
        """``path`` made absolute against :attr:`base_dir` (``~`` expanded)."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


@attrs.frozen
class NoOptions:
    """The options class of a backend that takes no ``backend_opts``."""


@runtime_checkable
class BackendPlugin(Protocol):
    """What an entry point in ``sessionkeeper.backends`` must name: a class that

    - has ``options_class``, an attrs class that validates ``backend_opts`` (unknown keys are
      rejected; use :class:`NoOptions` when there are none),
    - has ``capabilities``, a :class:`Capabilities`,
    - is built as ``cls(options, context)`` and implements every hook in
      :data:`~sessionkeeper.hookspecs.REQUIRED_HOOKS` with :data:`~sessionkeeper.backend.hookimpl`.
    """

    options_class: ClassVar[type[Any]]
    capabilities: ClassVar[Capabilities]

    def __init__(self, options: Any, context: BackendContext) -> None: ...
