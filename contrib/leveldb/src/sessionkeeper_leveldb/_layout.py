"""How one table's sessions, expiry index and owner index are laid out as LevelDB keys.

Every key of a table starts with the table's prefix, ``<table_name>`` in UTF-8 followed by a NUL
byte (table names contain no NUL, so no table's keys are a prefix of another's), then a one-byte
tag:

``<prefix>s<id>``
    the session ``id`` (ASCII), whose value is the record of
    :func:`sessionkeeper.backend.encode_session` (versioned msgpack; never pickle).
``<prefix>x<deadline><id>``
    one expiry-index entry per session that can expire, with an empty value. ``deadline`` is
    :attr:`Session.expires_at <sessionkeeper.Session.expires_at>` as 8 big-endian bytes, so
    LevelDB keeps the entries in deadline order and the sessions expired at ``now`` are exactly
    the keys below ``<prefix>x<now>``: a cleanup reads only those.
``<prefix>o<owner>\0<id>``
    one owner-index entry per session that has an :attr:`~sessionkeeper.Session.owner`, with an
    empty value. ``owner`` is UTF-8 and holds no control character (so no NUL): the entries of
    one owner are exactly the keys from ``<prefix>o<owner>\0`` to ``<prefix>o<owner>\1``, and
    listing, counting or deleting an owner's sessions reads only those.
``<prefix>v``
    the layout version of the table (:data:`LAYOUT_VERSION`, ASCII digits).

A session and its index entries are always written in one ``WriteBatch``, which LevelDB applies
atomically, so the indexes never disagree with the sessions after a crash.

Layout ``1`` (before owners existed) had no owner index; its records have no owner, so a table
of layout ``1`` is a table of layout ``2`` whose owner index is empty. Opening it to write marks
it ``2`` (a release that reads only ``1`` then refuses it with a clear error, instead of failing
on every record of the newer format); opening it read-only reads it as it is.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "LAYOUT_VERSION",
    "MAX_DEADLINE",
    "READABLE_LAYOUTS",
    "TableKeys",
]

#: The version of this key layout, stored under ``<prefix>v``.
LAYOUT_VERSION: Final = b"2"
#: The layout versions this release reads (``1``: no owner index, see the module docstring).
READABLE_LAYOUTS: Final = (b"1", b"2")
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
        "owners",
        "owners_end",
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
        #: Start and (exclusive) end of the owner index.
        self.owners = self.prefix + b"o"
        self.owners_end = self.prefix + b"p"
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

    def owner_range(self, owner: str) -> tuple[bytes, bytes]:
        """``(start, exclusive end)`` of ``owner``'s entries in the owner index; each entry is
        ``start`` followed by a session id."""
        start = self.owners + owner.encode("utf-8") + b"\0"
        return start, start[:-1] + b"\1"

    def owner_entry(self, owner: str, session_id: bytes) -> bytes:
        """The owner-index key of a session (its id as ASCII bytes) that ``owner`` holds."""
        return self.owners + owner.encode("utf-8") + b"\0" + session_id
