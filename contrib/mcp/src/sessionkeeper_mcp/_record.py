"""The stored form of one MCP session: what a worker needs to bring it back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import attrs

from sessionkeeper import Session

__all__ = ["RECORD_VERSION", "SessionRecord"]

#: Version of the metadata layout below; a record of another version is treated as unknown.
RECORD_VERSION: Final = 1


@attrs.frozen
class SessionRecord:
    """The metadata sessionkeeper stores for an MCP session.

    :param initialize: the ``params`` of the client's ``initialize`` request, as sent
        (``protocolVersion``, ``capabilities``, ``clientInfo``).
    :param protocol_version: the protocol version the client asked for.
    :param owner: the credential that created the session (the SDK's ``AuthorizationContext``:
        ``client_id``, ``issuer``, ``subject``), or ``None`` for an unauthenticated session.
    """

    initialize: dict[str, Any]
    protocol_version: str
    owner: dict[str, Any] | None

    def to_metadata(self) -> dict[str, Any]:
        """The JSON-compatible metadata stored in the sessionkeeper ``Session``."""
        return {
            "mcp": RECORD_VERSION,
            "initialize": self.initialize,
            "protocol_version": self.protocol_version,
            "owner": self.owner,
        }

    @classmethod
    def from_session(cls, session: Session) -> SessionRecord | None:
        """The record in ``session``'s metadata, or ``None`` if it holds no MCP session record."""
        meta = session.metadata
        if meta.get("mcp") != RECORD_VERSION:
            return None
        initialize, version, owner = (
            meta.get("initialize"),
            meta.get("protocol_version"),
            meta.get("owner"),
        )
        if not isinstance(initialize, dict) or not isinstance(version, str):
            return None
        if owner is not None and not isinstance(owner, dict):
            return None
        return cls(initialize, version, owner)

    def owned_by(self, requestor: Mapping[str, Any] | None) -> bool:
        """True when ``requestor`` (an ``AuthorizationContext`` or ``None``) created the session."""
        if requestor is None or self.owner is None:
            return requestor is None and self.owner is None
        return dict(requestor) == self.owner
