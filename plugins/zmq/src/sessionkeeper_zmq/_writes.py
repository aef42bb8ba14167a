"""What a write on a node returns or raises beyond the hook contract: its version, a write in
flight (:class:`PendingWrite`), and the two ways an acknowledged write fails
(:class:`NotEnoughReplicas`: refused, nothing written; :class:`WriteTimeout`: undetermined)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sessionkeeper import StorageError

from ._options import AckLevel
from ._replication import Waiter

if TYPE_CHECKING:
    from ._backend import ZmqBackend

__all__ = ["NotEnoughReplicas", "PendingWrite", "Version", "WriteTimeout"]

#: The version of a store or delete: ``(hybrid-clock stamp, node id)``; larger wins.
Version = tuple[int, str]


class NotEnoughReplicas(StorageError):
    """A write refused before it was applied: too few nodes are reachable for its ``ack``.

    Nothing was written anywhere; retrying later is safe.
    """


class WriteTimeout(StorageError):
    """A write applied on this node whose acknowledgements did not all arrive in time.

    Its outcome is undetermined: it may or may not become visible on the other nodes.
    :attr:`version` is the version it was applied with here.
    """

    def __init__(self, backend: str, message: str, version: Version) -> None:
        super().__init__(backend, message)
        self.version = version


class PendingWrite:
    """A store applied on this node whose acknowledgements may still be on their way
    (:meth:`ZmqBackend.store_nowait`): many can be in flight from one thread."""

    __slots__ = ("_backend", "_deadline", "_level", "_waiter", "version")

    def __init__(
        self, backend: ZmqBackend, version: Version, waiter: Waiter | None, level: AckLevel
    ) -> None:
        self._backend = backend
        self._waiter = waiter
        self._level = level
        self._deadline = time.monotonic() + backend._timeout_s
        #: The version the store was applied with.
        self.version = version

    def done(self) -> bool:
        """True once enough nodes hold the write (or it cannot wait any more)."""
        return self._waiter is None or self._waiter.event.is_set()

    def wait(self) -> Version:
        """Block until enough nodes hold the write; return its version.

        Raises :class:`WriteTimeout` when they did not within ``write_timeout_ms`` of the
        store.
        """
        waiter = self._waiter
        if waiter is None:
            return self.version
        waiter.event.wait(max(0.0, self._deadline - time.monotonic()))
        got = len(waiter.acks) + 1
        if got < waiter.needed:
            backend = self._backend
            raise WriteTimeout(
                backend.context.name,
                f"store timed out: held by {got} of the {waiter.needed} nodes "
                f"ack={self._level!r} needs after {backend.options.write_timeout_ms} ms; it is "
                f"applied on node {backend.options.node_id} and may or may not become visible "
                "on the others",
                self.version,
            )
        return self.version
