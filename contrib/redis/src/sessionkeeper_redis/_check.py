"""``sessionkeeper check`` for the ``redis`` backend: records and indexes, checked and repaired.

The check reads every session the id index names, then ``SCAN``\\ s the table's key prefix for
session keys the index does not name, then walks the deadline index for entries of neither. Each
finding is a problem string naming the key. With ``repair``:

- a key that does not hold a decodable record of its own id is renamed to
  ``{table}:quarantine:<id>`` (kept for inspection, out of the store) and unindexed;
- an intact session missing from an index is indexed (``{table}:ids``, and ``{table}:exp`` with
  its deadline when it has a timeout); a wrong deadline is corrected;
- an index entry whose key is gone is removed.

Index entries left by sessions Redis dropped at the end of their TTL are normal until the next
``cleanup_expired``; they are counted (``expired_entries``), not reported as problems.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

from sessionkeeper import Session
from sessionkeeper.backend import CodecError, decode_session

__all__ = ["check_table", "glob_escape"]

_PAGE: Final = 500
_GLOB_SPECIAL: Final = frozenset("*?[]\\")
#: A session id as the server holds it: 1-256 visible ASCII characters.
_SESSION_ID: Final = re.compile(rb"[\x21-\x7e]{1,256}")


def _is_id(member: bytes) -> bool:
    """Whether ``member`` (bytes from the server) is a session id. Anything else is compared,
    removed and renamed as the exact bytes it is, never through a lossy decoding."""
    return _SESSION_ID.fullmatch(member) is not None


def glob_escape(text: str) -> str:
    """``text`` with the characters Redis ``MATCH`` patterns interpret escaped by a backslash."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)


class _Checker:
    def __init__(
        self, client: Any, table: str, *, repair: bool, scan_options: dict[str, Any]
    ) -> None:
        self.client = client
        self.repair = repair
        self.scan_options = scan_options
        self.prefix = f"{{{table}}}:s:"
        self.ids_key = f"{{{table}}}:ids"
        self.exp_key = f"{{{table}}}:exp"
        self.own_key = f"{{{table}}}:own"
        self.owners_prefix = f"{{{table}}}:o:".encode()
        self.quarantine_prefix = f"{{{table}}}:quarantine:"
        self.checked = 0
        self.intact = 0
        self.expired_entries = 0
        self.problems: list[str] = []
        self.quarantined: list[str] = []
        self.fixed = 0

    # -- helpers ----------------------------------------------------------------------------------

    def _pages(self, key: str) -> Iterator[list[bytes]]:
        start: bytes | str = "-"
        while True:
            page: list[bytes] = self.client.execute_command(
                "ZRANGEBYLEX", key, start, "+", "LIMIT", 0, _PAGE
            )
            if page:
                yield page
            if len(page) < _PAGE:
                return
            start = b"(" + page[-1]

    def _decode(self, key: str, session_id: str, record: bytes) -> Session | str:
        """The session, or what is wrong with the record."""
        try:
            session = decode_session(record)
        except CodecError as exc:
            return f"does not decode: {exc}"
        if session.id != session_id:
            return f"holds session {session.id!r}"
        return session

    def _quarantine(self, key: str, session_id: str) -> None:
        if not self.repair:
            return
        target = self.quarantine_prefix + session_id
        self.client.execute_command("RENAME", key, target)
        self._unindex(session_id)
        self.quarantined.append(target)

    def _unindex(self, session_id: str) -> None:
        """Remove ``session_id`` from both indexes, the owner hash and its owner's set."""
        self.client.execute_command("ZREM", self.ids_key, session_id)
        self.client.execute_command("ZREM", self.exp_key, session_id)
        owner = self.client.execute_command("HGET", self.own_key, session_id)
        if owner is not None:
            self.client.execute_command("SREM", self.owners_prefix + owner, session_id)
            self.client.execute_command("HDEL", self.own_key, session_id)

    def _check_deadline(self, key: str, session: Session) -> None:
        """The deadline index must hold ``expires_at`` (the earlier of the idle and the
        absolute deadline) exactly when the session has one."""
        score = self.client.execute_command("ZSCORE", self.exp_key, session.id)
        expected = session.expires_at
        if expected is None:
            if score is not None:
                self.problems.append(f"key {key!r}: never expires but has a deadline entry")
                if self.repair:
                    self.client.execute_command("ZREM", self.exp_key, session.id)
                    self.fixed += 1
            return
        if score is None or float(score) != float(expected):
            found = "no deadline entry" if score is None else f"deadline {float(score):.0f}"
            self.problems.append(f"key {key!r}: {found}, expected {expected}")
            if self.repair:
                self.client.execute_command("ZADD", self.exp_key, expected, session.id)
                self.fixed += 1

    # -- the three passes -------------------------------------------------------------------------

    def indexed(self) -> None:
        """Every id in the id index: its key holds its intact record, its deadline is right."""
        for raw_page in self._pages(self.ids_key):
            page = [member for member in raw_page if self._id_entry(member)]
            if not page:
                continue
            ids = [member.decode("ascii") for member in page]
            keys = [self.prefix + session_id for session_id in ids]
            records = self.client.execute_command("MGET", *keys)
            for session_id, key, record in zip(ids, keys, records, strict=True):
                if record is None:
                    self._missing(session_id, key)
                    continue
                self.checked += 1
                found = self._decode(key, session_id, record)
                if isinstance(found, str):
                    self.problems.append(f"key {key!r} {found}")
                    self._quarantine(key, session_id)
                    continue
                self.intact += 1
                self._check_deadline(key, found)

    def _id_entry(self, member: bytes) -> bool:
        """``True`` for a member of the id index that is an id; anything else is reported and,
        with ``repair``, removed from both indexes (``False``)."""
        if _is_id(member):
            return True
        self.problems.append(f"index entry {member!r} of {self.ids_key!r} is not a session id")
        if self.repair:
            self.client.execute_command("ZREM", self.ids_key, member)
            self.client.execute_command("ZREM", self.exp_key, member)
            self.fixed += 1
        return False

    def _missing(self, session_id: str, key: str) -> None:
        kind = self.client.execute_command("TYPE", key)
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind != "none":
            self.checked += 1
            self.problems.append(f"key {key!r} holds a {kind}, not a session record")
            self._quarantine(key, session_id)
            return
        if self.client.execute_command("ZSCORE", self.exp_key, session_id) is not None:
            self.expired_entries += 1  # Redis dropped it at the end of its TTL: normal
        else:
            self.problems.append(
                f"session {session_id!r} is indexed but its key {key!r} is gone (evicted, or "
                "deleted by another program)"
            )
        if self.repair:
            self._unindex(session_id)
            self.fixed += 1

    def unindexed(self) -> None:
        """Session keys under the table's prefix that the id index does not name."""
        pattern = glob_escape(self.prefix) + "*"
        skip = len(self.prefix)  # the prefix is ASCII: as many bytes as characters
        seen: set[bytes] = set()
        cursor: int | bytes = 0
        while True:
            cursor, keys = self.client.execute_command(
                "SCAN", cursor, "MATCH", pattern, "COUNT", 1_000, **self.scan_options
            )
            for raw_key in keys:
                if raw_key in seen:
                    continue
                raw_id = raw_key[skip:]
                if not _is_id(raw_id):
                    seen.add(raw_key)
                    self._not_a_session_key(raw_key, raw_id)
                    continue
                session_id = raw_id.decode("ascii")
                if self.client.execute_command("ZSCORE", self.ids_key, session_id) is not None:
                    continue
                seen.add(raw_key)
                self._orphan(raw_key.decode("ascii"), session_id)
            if int(cursor) == 0:
                return

    def _not_a_session_key(self, raw_key: bytes, raw_id: bytes) -> None:
        """A key under the session prefix whose rest is no id: another program's key."""
        self.checked += 1
        self.problems.append(f"key {raw_key!r} is not a session key: {raw_id!r} is no session id")
        if self.repair:
            target = self.quarantine_prefix.encode("ascii") + raw_id
            self.client.execute_command("RENAME", raw_key, target)
            self.quarantined.append(target.decode("ascii", "backslashreplace"))

    def _orphan(self, key: str, session_id: str) -> None:
        self.checked += 1
        kind = self.client.execute_command("TYPE", key)
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind != "string":
            self.problems.append(f"key {key!r} holds a {kind}, not a session record")
            self._quarantine(key, session_id)
            return
        record = self.client.execute_command("GET", key)
        if record is None:  # dropped since the SCAN saw it
            self.checked -= 1
            return
        found = self._decode(key, session_id, record)
        if isinstance(found, str):
            self.problems.append(f"key {key!r} {found}")
            self._quarantine(key, session_id)
            return
        self.intact += 1
        self.problems.append(f"key {key!r} holds an intact session missing from the id index")
        if self.repair:
            self.client.execute_command("ZADD", self.ids_key, 0, session_id)
            if found.expires_at is not None:
                self.client.execute_command("ZADD", self.exp_key, found.expires_at, session_id)
            self.fixed += 1

    def deadlines(self) -> None:
        """Deadline entries of ids that are in neither the id index nor the keyspace."""
        cursor: int | bytes = 0
        while True:
            cursor, entries = self.client.zscan(self.exp_key, cursor, count=1_000)
            for member, _score in entries:
                if not _is_id(member):
                    self.problems.append(
                        f"deadline entry {member!r} of {self.exp_key!r} is not a session id"
                    )
                    if self.repair:
                        self.client.execute_command("ZREM", self.exp_key, member)
                        self.fixed += 1
                    continue
                session_id = member.decode("ascii")
                if self.client.execute_command("ZSCORE", self.ids_key, session_id) is not None:
                    continue
                if self.client.execute_command("EXISTS", self.prefix + session_id):
                    continue
                self.problems.append(f"deadline entry {session_id!r} names no stored session")
                if self.repair:
                    self.client.execute_command("ZREM", self.exp_key, session_id)
                    self.fixed += 1
            if int(cursor) == 0:
                return

    def report(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "ok": not self.problems,
            "checked": self.checked,
            "intact": self.intact,
            "expired_entries": self.expired_entries,
            "problems": self.problems,
        }
        if self.repair:
            result["repaired"] = True
            result["fixed"] = self.fixed
            result["quarantined"] = self.quarantined
        return result


def check_table(
    client: Any, table: str, *, repair: bool, scan_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Check (and with ``repair``, fix) the table ``table`` through ``client``; return the
    report of :func:`~sessionkeeper.hookspecs.sessionkeeper_check`. ``scan_options`` go to
    ``SCAN`` (a Redis Cluster client needs ``target_nodes``: the node of the table's slot)."""
    checker = _Checker(client, table, repair=repair, scan_options=scan_options or {})
    checker.indexed()
    checker.unindexed()
    checker.deadlines()
    return checker.report()
