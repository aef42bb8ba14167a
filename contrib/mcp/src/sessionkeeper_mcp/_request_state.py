"""Single-use ``requestState`` for multi-round-trip requests (protocol 2026-07-28).

A tool that needs client input (an elicitation, a sampling, the client's roots) answers with an
``InputRequiredResult`` carrying a sealed ``requestState``; the client retries with that state
and its answers. The ``mcp`` 2.x SDK seals the state (``RequestStateSecurity``: encryption,
expiry, request binding, audience, principal) but never tracks its use, so within its lifetime
one token can be replayed, on any worker that shares the keys. The spec says a server for which a
state must be consumed at most once MUST enforce that server-side.

:class:`SingleUseRequestStateCodec` wraps the codec the SDK calls
(``RequestStateSecurity(codec=...)``): when a token unseals (it is authentic), the digest of the
token is recorded in the shared store with ``store(if_version=0)`` (an insert that succeeds
exactly once across every worker and process) and kept for the token's remaining lifetime plus
``clock_skew``; a second unseal of the same token finds the record and raises the SDK's
``InvalidRequestState``, which the SDK answers with its own frozen error (``-32602`` "Invalid or
expired requestState"). The store must declare ``atomic``; the constructor refuses one that
does not (:class:`~sessionkeeper.Unsupported`).

Two things follow from the seam the SDK offers:

- the record is made when the token unseals, before the SDK checks its claims (expiry, request
  binding, audience, principal): a holder of the token who fails those checks still uses it up.
  A token expired by the worker's clock is not recorded (the SDK refuses it anyway).
- ``unseal`` is synchronous (the SDK's ``RequestStateCodec`` protocol), so the record is
  written through the store's synchronous manager on the event loop: one round trip to the store
  per retried request (≈0.1–0.3 ms on Redis over loopback, microseconds on memory).

Every worker must seal with the same keys and unseal against the same store; the audience
(``RequestStateSecurity(audience=...)``, by default the ``MCPServer``'s name) must be the same
on every worker of one service and differ between services that share keys.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from typing import Any, Final

from sessionkeeper import AsyncSessionManager, Session, SessionManager, Unsupported, VersionConflict

from ._stores import McpStores

__all__ = ["RECORD_PREFIX", "SingleUseRequestStateCodec"]

#: The id of the record of a used token: this prefix and the token's SHA-256 in hex.
RECORD_PREFIX: Final = "rs."


class SingleUseRequestStateCodec:
    """A ``RequestStateCodec`` that lets each sealed ``requestState`` be unsealed once.

    :param codec: the codec that seals and unseals, e.g. the SDK's
        ``AESGCMRequestStateCodec(keys)`` (the same keys on every worker).
    :param store: where used tokens are recorded: an :class:`~sessionkeeper_mcp.McpStores` (its
        ``state`` table) or a sessionkeeper manager, shared by every worker; its backend must
        declare ``atomic``.
    :param clock_skew: seconds added to each record's lifetime, for workers whose clocks run
        behind the one that recorded it.
    :param now: the wall clock in seconds (the SDK stamps ``exp`` with ``time.time()``).
    """

    def __init__(
        self,
        codec: Any,
        store: McpStores | AsyncSessionManager | SessionManager,
        *,
        clock_skew: float = 60.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not (
            callable(getattr(codec, "seal", None)) and callable(getattr(codec, "unseal", None))
        ):
            raise TypeError(f"codec must have seal() and unseal(), got {type(codec).__name__}")
        if isinstance(clock_skew, bool) or not (
            isinstance(clock_skew, int | float) and math.isfinite(clock_skew) and clock_skew >= 0
        ):
            raise ValueError(f"clock_skew must be a number of seconds >= 0, got {clock_skew!r}")
        manager = store.state if isinstance(store, McpStores) else store
        self.manager: SessionManager = (
            manager.sync if isinstance(manager, AsyncSessionManager) else manager
        )
        if not self.manager.capabilities.atomic:
            raise Unsupported(self.manager.backend_name)
        self.codec = codec
        self.clock_skew = float(clock_skew)
        self.now = now

    def seal(self, payload: bytes) -> str:
        """What the wrapped codec seals."""
        token: str = self.codec.seal(payload)
        return token

    def unseal(self, token: str) -> bytes:
        """The wrapped codec's unseal, once per token: a token already unsealed by any worker
        sharing the store raises the SDK's ``InvalidRequestState``."""
        from mcp.server.request_state import InvalidRequestState

        payload: bytes = self.codec.unseal(token)  # raises for what it did not mint
        left = self._lifetime_left(payload)
        if left is None:
            return payload  # malformed or expired: the SDK refuses it, nothing to record
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        now_ms = self.manager.clock()
        timeout_ms = max(1, math.ceil((left + self.clock_skew) * 1000))
        record = Session(RECORD_PREFIX + digest, now_ms, now_ms, timeout_ms, {})
        try:
            self.manager.store(record, if_version=0)
        except VersionConflict:
            raise InvalidRequestState("replayed: this requestState was already used") from None
        return payload

    def _lifetime_left(self, payload: bytes) -> float | None:
        """Seconds until the envelope's ``exp``; ``None`` when it has none or it is past."""
        try:
            claims = json.loads(payload)
            expires = claims["exp"]
        except (ValueError, KeyError, TypeError):
            return None
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            return None
        left = float(expires) - self.now()
        return left if math.isfinite(left) and left > 0 else None
