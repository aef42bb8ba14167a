"""What export, import and migrate share: their reports, the progress callback, and the pieces
that store and compare sessions (:class:`BatchWriter`, :func:`same`, :class:`Fingerprints`).

The operations themselves are in :mod:`._transfer`.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterator
from typing import Any, Final, Literal

import attrs

from ._errors import InvalidSession, SessionKeeperError, SessionNotFound
from ._export_format import LineError
from ._manager import SessionManager
from ._model import Session

__all__ = [
    "KEEP_PROBLEMS",
    "PROGRESS_EVERY",
    "STORE_BATCH",
    "BatchWriter",
    "ExportReport",
    "Fingerprints",
    "ImportReport",
    "MigrationReport",
    "Progress",
    "StoreFailed",
    "capped",
    "estimate",
    "raw_fetch",
    "same",
    "selected",
]

#: Progress callbacks are called every this many sessions (and at the end of each phase).
PROGRESS_EVERY: Final = 1000
#: Sessions written per ``store_many`` by import and migrate.
STORE_BATCH: Final = 500
#: How many rejected lines or sessions a report keeps (the count is always exact).
KEEP_PROBLEMS: Final = 100

#: ``progress(phase, done, total)``: ``phase`` is ``"export"``, ``"copy"``, ``"verify"`` or
#: ``"delete"`` (``done`` counts sessions) or ``"import"`` (``done`` counts bytes of the file);
#: ``total`` is ``None`` when unknown.
Progress = Callable[[str, int, int | None], None]


# --- reports -----------------------------------------------------------------------------------


def capped(problems: list[Any], item: Any) -> None:
    """Keep ``item`` in ``problems`` while fewer than :data:`KEEP_PROBLEMS` are kept."""
    if len(problems) < KEEP_PROBLEMS:
        problems.append(item)


@attrs.define
class ExportReport:
    """What :func:`export_sessions` wrote."""

    path: str
    backend: str
    count: int = 0
    digest: str = ""
    include_expired: bool = False
    exported_at: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible."""
        return attrs.asdict(self)


@attrs.define
class ImportReport:
    """What :func:`import_sessions` did with each line of the file.

    ``imported`` sessions were new to the store; ``replaced`` ones replaced a different session
    with the same id; ``unchanged`` ones were already stored exactly so, byte for byte as encoded
    (nothing written); ``skipped_existing`` ones were left alone under ``existing="skip"``;
    ``skipped_expired`` ones had expired; ``duplicates`` are lines for an id that an earlier line
    of the same file already stored: the last such line wins (it replaces the earlier line's
    session, or matches it), and it is counted here only, so ``imported`` + ``replaced`` +
    ``unchanged`` is the number of distinct sessions the file put in the store. ``rejected``
    lines failed validation; ``errors`` keeps the first 100 of them.
    ``end_problem`` says why the file was incomplete or altered (``None`` when it was whole).
    """

    path: str
    backend: str
    source_backend: str = ""
    read: int = 0
    imported: int = 0
    replaced: int = 0
    unchanged: int = 0
    skipped_existing: int = 0
    skipped_expired: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[LineError] = attrs.field(factory=list)
    end_problem: str | None = None
    digest: str = ""

    @property
    def written(self) -> int:
        """Distinct sessions written to the store (a duplicate line's write not counted
        again)."""
        return self.imported + self.replaced

    @property
    def ok(self) -> bool:
        """No line rejected and the file complete."""
        return not self.rejected and self.end_problem is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible."""
        data = attrs.asdict(self, filter=lambda a, _: a.name != "errors")
        data["errors"] = [{"line": e.line, "message": e.message} for e in self.errors]
        data["written"] = self.written
        data["ok"] = self.ok
        return data


@attrs.define
class MigrationReport:
    """What :func:`migrate_sessions` copied and what its verification found.

    The copy writes ``copied`` sessions new to the target and ``replaced`` ones that differed
    there; ``unchanged`` ones were already in the target exactly so (what a resumed migration
    skips). ``rejected`` sessions were refused by the target (``errors`` keeps the first 100).
    The verification reads the source again and looks each session up in the target:
    ``source_count``/``source_digest`` and ``target_count``/``target_digest`` are the counts and
    :class:`SessionDigest` of both sides, ``missing`` and ``differing`` what did not match.
    ``verified`` is true when both sides match exactly. ``deleted`` counts the sessions removed
    from the source (``delete_source``, only after a verified copy); ``kept`` those left there
    although the delete pass saw them: this run did not copy them (found in the target already
    while the stores could not be proven distinct, or written to the source after the copy).
    ``source_identity`` and ``target_identity`` are the stores'
    :meth:`~sessionkeeper.SessionManager.identity` (``None``: the backend cannot tell).
    """

    source_backend: str
    target_backend: str
    now: int
    include_expired: bool = False
    copied: int = 0
    replaced: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[str] = attrs.field(factory=list)
    source_count: int = 0
    source_digest: str = ""
    target_count: int = 0
    target_digest: str = ""
    missing: int = 0
    differing: int = 0
    verified: bool = False
    deleted: int = 0
    kept: int = 0
    source_identity: str | None = None
    target_identity: str | None = None

    @property
    def read(self) -> int:
        """Sessions the copy read from the source."""
        return self.copied + self.replaced + self.unchanged + self.rejected

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible."""
        data = attrs.asdict(self)
        data["read"] = self.read
        return data


# --- storing and comparing ---------------------------------------------------------------------


def raw_fetch(manager: SessionManager, session_id: str) -> Session | None:
    """The stored session ``session_id``, expired or not, without touching it (or ``None``)."""
    try:
        return manager.peek(session_id, include_expired=True)
    except SessionNotFound:
        return None


class StoreFailed(SessionKeeperError):
    """The store failed writing the session labelled ``label`` (a line number, an id)."""

    def __init__(self, label: Any, error: SessionKeeperError) -> None:
        super().__init__(str(error))
        self.label = label
        self.error = error


def same(a: Session, b: Session) -> bool:
    """Whether two sessions are the same record, byte for byte as encoded (what
    :class:`SessionDigest` hashes): every field equal, the version, the owner and the absolute
    timeout included (versions are data: a copy that lost one is not the same session), and the
    metadata equal as packed. ``Session.__eq__`` compares metadata decoded, where ``10`` equals
    ``10.0``, ``1`` equals ``True`` and key order does not count: deciding "unchanged" on it left
    such a session unwritten while the digests differed, forever."""
    # Equal fields (Session.__eq__ compares every one) and byte-equal packed metadata is
    # exactly equal encoded records, without encoding either (the copy's per-session cost).
    return a == b and a._metadata == b._metadata


class Fingerprints:
    """A set of byte strings kept as 128-bit BLAKE2b fingerprints in an open-addressing table of
    two ``array("Q")``: 24 to 48 bytes a member, where a Python ``set`` of the same fingerprints
    costs about 80 (and of the ids themselves more). What import remembers per id to count
    duplicate lines, and migrate per session it may delete; a false match needs a 128-bit
    collision."""

    __slots__ = ("_count", "_high", "_low", "_mask")

    def __init__(self, slots: int = 1024) -> None:
        self._high = array("Q", bytes(8 * slots))
        self._low = array("Q", bytes(8 * slots))
        self._mask = slots - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @staticmethod
    def _split(data: bytes) -> tuple[int, int]:
        digest = hashlib.blake2b(data, digest_size=16).digest()
        high, low = int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")
        return high, low or 1  # a zero low half marks an empty slot

    def _slot(self, high: int, low: int) -> int:
        """The slot holding the fingerprint, or the empty slot where it would go."""
        lows, highs, mask = self._low, self._high, self._mask
        slot = high & mask
        while True:
            found = lows[slot]
            if found == 0 or (found == low and highs[slot] == high):
                return slot
            slot = (slot + 1) & mask

    def add(self, data: bytes) -> None:
        """Put ``data`` in."""
        high, low = self._split(data)
        slot = self._slot(high, low)
        if self._low[slot]:
            return
        self._high[slot], self._low[slot] = high, low
        self._count += 1
        if 3 * self._count > 2 * (self._mask + 1):
            self._grow()

    def __contains__(self, data: object) -> bool:
        if not isinstance(data, bytes):
            return False
        high, low = self._split(data)
        return self._low[self._slot(high, low)] != 0

    def _grow(self) -> None:
        entries = [(h, lo) for h, lo in zip(self._high, self._low, strict=True) if lo]
        slots = 2 * (self._mask + 1)
        self._high = array("Q", bytes(8 * slots))
        self._low = array("Q", bytes(8 * slots))
        self._mask = slots - 1
        for high, low in entries:
            slot = self._slot(high, low)
            self._high[slot], self._low[slot] = high, low


#: How a queued session is counted once stored: new to the target, replacing a different
#: session there, or a later line of an import file for an id an earlier line stored.
_Kind = Literal["new", "replace", "duplicate"]


class BatchWriter:
    """Stores sessions into ``target`` in batches of :data:`STORE_BATCH` (``store_many``),
    counting each by its kind once it is stored.

    Sessions are written exactly as given, their versions included (``store_many`` writes
    what it is handed; ``store`` would give each a new version). A batch that fails is stored
    again one by one (storing a session twice is harmless), so that the counts stay exact: a
    session the target refuses (``InvalidSession``, e.g. over its ``max_metadata_bytes``) is
    passed to ``reject`` with its label, and any other failure raises :class:`StoreFailed`
    naming the session it happened on. ``stored`` (optional) hears every session once it is
    stored.
    """

    def __init__(
        self,
        target: SessionManager,
        reject: Callable[[Any, InvalidSession], None],
        stored: Callable[[Session], None] | None = None,
    ) -> None:
        self.target = target
        self.reject = reject
        self.stored = stored
        self.counts: dict[_Kind, int] = {"new": 0, "replace": 0, "duplicate": 0}
        self._batch: dict[str, tuple[Session, _Kind, Any]] = {}

    @property
    def written(self) -> int:
        """Sessions stored so far."""
        return sum(self.counts.values())

    def pending(self, session_id: str) -> bool:
        """Whether a session with this id is queued but not yet stored."""
        return session_id in self._batch

    def add(self, session: Session, kind: _Kind, label: Any) -> None:
        """Queue ``session``, to be counted as ``kind``."""
        if session.id in self._batch:
            self.flush()  # its first copy must be stored (and counted) before it is replaced
        self._batch[session.id] = (session, kind, label)
        if len(self._batch) >= STORE_BATCH:
            self.flush()

    def flush(self) -> None:
        """Store what is queued."""
        batch = list(self._batch.values())
        if not batch:
            return
        self._batch.clear()
        try:
            self.target.store_many([session for session, _, _ in batch])
        except SessionKeeperError:
            pass
        else:
            self._count(batch)
            return
        for item in batch:
            try:
                self.target.store_many([item[0]])
            except InvalidSession as exc:
                self.reject(item[2], exc)
            except SessionKeeperError as exc:
                raise StoreFailed(item[2], exc) from exc
            else:
                self._count([item])

    def _count(self, stored: list[tuple[Session, _Kind, Any]]) -> None:
        for session, kind, _ in stored:
            self.counts[kind] += 1
            if self.stored is not None:
                self.stored(session)


def selected(manager: SessionManager, now: int, include_expired: bool) -> Iterator[Session]:
    """The sessions a transfer takes: every stored one, or those live at ``now``."""
    for session in manager.iter_sessions(include_expired=True):
        if include_expired or not session.is_expired(now):
            yield session


def estimate(manager: SessionManager, progress: Progress | None) -> int | None:
    """The live count, for a progress bar's total (an extra read: only when shown)."""
    if progress is None:
        return None
    return manager.count()
