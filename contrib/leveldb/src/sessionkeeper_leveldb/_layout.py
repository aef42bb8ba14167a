"""How one table's sessions and expiry index are laid out as LevelDB keys.

Every key of a table starts with the table's prefix, ``<table_name>`` in UTF-8 followed by a NUL
byte (table names contain no NUL, so no table's keys are a prefix of another's), then a one-byte
tag:

``<prefix>s<id>``
    the session ``id`` (ASCII), whose value is the record of
    :func:`sessionkeeper.encode_session` (versioned msgpack; never pickle).
``<prefix>x<deadline><id>``
    one expiry-index entry per session that can expire, with an empty value. ``deadline`` is
    :attr:`Session.expires_at <sessionkeeper.Session.expires_at>` as 8 big-endian bytes, so
    LevelDB keeps the entries in deadline order and the sessions expired at ``now`` are exactly
    the keys below ``<prefix>x<now>``: a cleanup reads only those.
``<prefix>v``
    the layout version of the table (:data:`LAYOUT_VERSION`, ASCII digits).

A session and its index entry are always written in one ``WriteBatch``, which LevelDB applies
atomically, so the index never disagrees with the sessions after a crash.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "LAYOUT_VERSION",
    "MAX_DEADLINE",
    "TableKeys",
]

#: The version of this key layout, stored under ``<prefix>v``.
LAYOUT_VERSION: Final = b"1"
#: The largest deadline 8 bytes hold (times are below 2**63 and so are timeouts).
MAX_DEADLINE: Final = 2**64 - 1
_DEADLINE_BYTES: Final = 8


class TableKeys:
    """The keys of one table (see the module docstring).

    :param table_name: the table's name; it must not contain a NUL character.
    """

    __slots__ = (
        "index",
        "index_end",
        "prefix",
        "sessions",
        "sessions_end",
        "table_end",
        "version",
    )

    def __init__(self, table_name: str) -> None:
        if "\0" in table_name:
            raise ValueError("a table name must not contain a NUL character")
        self.prefix = table_name.encode("utf-8") + b"\0"
        #: Start and (exclusive) end of the session range.
        self.sessions = self.prefix + b"s"
        self.sessions_end = self.prefix + b"t"
        #: Start and (exclusive) end of the expiry index.
        self.index = self.prefix + b"x"
        self.index_end = self.prefix + b"y"
        self.version = self.prefix + b"v"
        #: Exclusive end of every key of the table.
        self.table_end = table_name.encode("utf-8") + b"\1"

    def session(self, session_id: str) -> bytes:
        """The key of session ``session_id``."""
        return self.sessions + session_id.encode("ascii")

    def session_id(self, key: bytes) -> str:
        """The session id in a key of the session range."""
        return key[len(self.sessions) :].decode("ascii")

    def entry(self, deadline: int, session_id: bytes) -> bytes:
        """The index key of a session (its id as ASCII bytes) expiring after ``deadline``."""
        return (
            self.index + min(deadline, MAX_DEADLINE).to_bytes(_DEADLINE_BYTES, "big") + session_id
        )

    def expired_below(self, now: int) -> bytes:
        """The exclusive end of the index entries whose deadline is before ``now``."""
        return self.index + max(0, min(now, MAX_DEADLINE)).to_bytes(_DEADLINE_BYTES, "big")

    def parse_entry(self, key: bytes) -> tuple[int, bytes]:
        """``(deadline, session id as ASCII bytes)`` of an index key."""
        start = len(self.index)
        deadline = int.from_bytes(key[start : start + _DEADLINE_BYTES], "big")
        return deadline, key[start + _DEADLINE_BYTES :]
