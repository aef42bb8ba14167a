"""The export format and the three transfers built on it: export, import and migrate.

The export format (version 1) is JSON Lines, UTF-8, optionally gzip-compressed::

    {"format": "sessionkeeper-export", "version": 1, "source_backend": "sqlitedict",
     "exported_at": 1700000000000, "include_expired": false, "sessionkeeper_version": "0.1.0"}
    {"id": "4Zq0r9xw...", "created_at": 1700000000000, "last_accessed": 1700000300000,
     "timeout_ms": 1800000, "metadata": {"user_id": "user_456"}}
    ...
    {"end": true, "count": 2, "digest": "5f0c...e1"}

(one JSON object per physical line; the header is wrapped above only for the page). Line 1 is the
header; every following line is one session with exactly the five fields of
:meth:`Session.to_dict <sessionkeeper.Session.to_dict>`; the last line is the end line, which
holds the number of sessions and their :class:`SessionDigest`. A file without its end line was cut
short, and the reader says so. The header may carry ``count`` when the writer knew it in advance.

Everything here streams: a writer holds one line at a time, a reader one line at a time, and a
migration one session at a time, so memory stays flat whatever the number of sessions. Records
are validated with a private cattrs converter (the record's shape: keys and types) and then by
:class:`~sessionkeeper.Session` itself (the model's rules), so a bad line is reported with its
line number and what is wrong with it.

Export and migration read with :meth:`SessionManager.iter_sessions
<sessionkeeper.SessionManager.iter_sessions>`, which never touches a session (the Erlang
original's export recipe used ``fetch``, which extended every session's life).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import tempfile
import zlib
from array import array
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Final, Literal, cast

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ._closing import Closing
from ._codec import encode_session
from ._config import _problems, _strict_bool, _strict_int, _strict_str
from ._errors import InvalidSession, SessionKeeperError, SessionNotFound
from ._manager import SessionManager
from ._model import MAX_METADATA_DEPTH, Session

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ExportError",
    "ExportFormatError",
    "ExportHeader",
    "ExportReader",
    "ExportReport",
    "ExportTargetError",
    "ExportWriter",
    "ImportReport",
    "LineError",
    "MigrationReport",
    "Progress",
    "SameStoreError",
    "SessionDigest",
    "TransferAborted",
    "VerificationFailed",
    "export_sessions",
    "import_sessions",
    "migrate_sessions",
]

#: The ``format`` value of an export file's header line.
EXPORT_FORMAT: Final = "sessionkeeper-export"
#: The export format version this sessionkeeper writes and reads.
EXPORT_VERSION: Final = 1
#: Lines longer than this are rejected without being held in memory (metadata is at most
#: 16 MiB packed; its JSON is at most a few times larger).
MAX_LINE_BYTES: Final = 64 * 1024 * 1024
#: Progress callbacks are called every this many sessions (and at the end of each phase).
PROGRESS_EVERY: Final = 1000
#: Sessions written per ``store_many`` by import and migrate.
STORE_BATCH: Final = 500
#: How many rejected lines or sessions a report keeps (the count is always exact).
KEEP_PROBLEMS: Final = 100

_GZIP_MAGIC: Final = b"\x1f\x8b"
#: Compressed bytes given to zlib at a time when reading a gzip file.
_PIECE: Final = 16 * 1024
#: How much of an existing file is read to recognise an export header.
_HEAD: Final = 64 * 1024
_BUFFER: Final = 1 << 20
_MASK: Final = (1 << 128) - 1

#: ``progress(phase, done, total)``: ``phase`` is ``"export"``, ``"copy"``, ``"verify"`` or
#: ``"delete"`` (``done`` counts sessions) or ``"import"`` (``done`` counts bytes of the file);
#: ``total`` is ``None`` when unknown.
Progress = Callable[[str, int, int | None], None]


# --- errors ------------------------------------------------------------------------------------


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


@attrs.frozen
class LineError:
    """One line of an export file that was rejected: its number and why."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


# --- the digest --------------------------------------------------------------------------------


class SessionDigest:
    """An order-independent digest of a set of sessions, and how many were added.

    Each session is hashed (BLAKE2b, 128 bits) over its encoded record
    (:func:`~sessionkeeper.encode_session`: id, both timestamps, timeout and metadata), and the
    hashes are added modulo 2**128, so two stores holding the same sessions in any order have
    the same digest. Migration prints it for both sides; the export's end line carries it.
    """

    __slots__ = ("_sum", "count")

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0

    def add(self, session: Session) -> None:
        """Count ``session`` in."""
        hashed = hashlib.blake2b(encode_session(session), digest_size=16).digest()
        self._sum = (self._sum + int.from_bytes(hashed, "big")) & _MASK
        self.count += 1

    def hexdigest(self) -> str:
        """32 hexadecimal digits."""
        return f"{self._sum:032x}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionDigest):
            return NotImplemented
        return self.count == other.count and self._sum == other._sum

    def __hash__(self) -> int:
        return hash((self.count, self._sum))

    def __repr__(self) -> str:
        return f"SessionDigest(count={self.count}, digest={self.hexdigest()!r})"


# --- the records and their converter -----------------------------------------------------------


def _format_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value != EXPORT_FORMAT:
        raise ValueError(f"is {value!r}, not {EXPORT_FORMAT!r}")


@attrs.frozen(kw_only=True)
class ExportHeader:
    """Line 1 of an export file.

    :param source_backend: the backend the sessions were read from.
    :param exported_at: when the export started, ms since the Unix epoch.
    :param include_expired: whether expired sessions were written too.
    :param sessionkeeper_version: the version that wrote the file.
    :param count: the number of sessions, when the writer knew it in advance (else ``None``;
        the end line always has it).
    :param format: always :data:`EXPORT_FORMAT`.
    :param version: the format version, :data:`EXPORT_VERSION`.
    """

    source_backend: str
    exported_at: int
    include_expired: bool = False
    sessionkeeper_version: str | None = None
    count: int | None = None
    format: str = attrs.field(default=EXPORT_FORMAT, validator=_format_name)
    version: int = EXPORT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The header as it is written (``None`` fields left out)."""
        data: dict[str, Any] = {"format": self.format, "version": self.version}
        data.update(
            (a.name, getattr(self, a.name))
            for a in attrs.fields(ExportHeader)
            if a.name not in ("format", "version") and getattr(self, a.name) is not None
        )
        return data


@attrs.frozen(kw_only=True)
class _SessionRecord:
    id: str
    created_at: int
    last_accessed: int
    timeout_ms: int | None
    metadata: dict[str, Any]


@attrs.frozen(kw_only=True)
class _EndRecord:
    end: bool
    count: int
    digest: str


def _metadata_object(value: object, _: type) -> dict[str, Any]:
    if type(value) is not dict:
        raise TypeError(f"expected an object, got {_json_type(value)}")
    return value


def _optional_int(value: object, _: type) -> int | None:
    return None if value is None else _strict_int(value, int)


def _optional_str(value: object, _: type) -> str | None:
    return None if value is None else _strict_str(value, str)


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(int, _strict_int)
_converter.register_structure_hook(bool, _strict_bool)
_converter.register_structure_hook(str, _strict_str)
_converter.register_structure_hook(int | None, _optional_int)
_converter.register_structure_hook(str | None, _optional_str)
_converter.register_structure_hook(
    _SessionRecord,
    make_dict_structure_fn(
        _SessionRecord,
        _converter,
        _cattrs_forbid_extra_keys=True,
        metadata=override(struct_hook=_metadata_object),
    ),
)
for _cls in (ExportHeader, _EndRecord):
    _converter.register_structure_hook(
        _cls, make_dict_structure_fn(_cls, _converter, _cattrs_forbid_extra_keys=True)
    )


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if type(value) in (int, float):
        return f"the number {value!r}"
    return names.get(type(value), type(value).__name__)


def _structure(data: object, cls: type[Any], what: str) -> Any:
    """``cls`` from one parsed line, or ``ValueError`` naming every key that is wrong."""
    if type(data) is not dict:
        raise ValueError(f"{what} must be a JSON object, got {_json_type(data)}")
    try:
        return _converter.structure(data, cls)
    except Exception as exc:  # cattrs groups every field's error
        problems = _problems(exc, "")
        text = "; ".join(f"{key.lstrip('.') or what}: {message}" for key, message in problems)
        raise ValueError(f"{what}: {text}") from None


def _session_from(data: object) -> Session:
    record: _SessionRecord = _structure(data, _SessionRecord, "session")
    try:
        return Session(
            record.id, record.created_at, record.last_accessed, record.timeout_ms, record.metadata
        )
    except InvalidSession as exc:
        raise ValueError(str(exc)) from None


def _header_from(data: object) -> ExportHeader:
    if type(data) is dict:
        found = data.get("format")
        if found != EXPORT_FORMAT:
            shown = "no format key" if found is None else f"format {found!r}"
            raise ValueError(
                f"not a sessionkeeper export: line 1 has {shown}, expected "
                f'"format": "{EXPORT_FORMAT}"'
            )
        version = data.get("version")
        if version != EXPORT_VERSION or type(version) is not int:
            newer = type(version) is int and version > EXPORT_VERSION
            hint = "; upgrade sessionkeeper to read it" if newer else ""
            raise ValueError(
                f"export format version {version!r} is not supported (this sessionkeeper reads "
                f"version {EXPORT_VERSION}){hint}"
            )
    header: ExportHeader = _structure(data, ExportHeader, "header")
    return header


# --- writing -----------------------------------------------------------------------------------


def _dumps(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _is_stdio(target: str | os.PathLike[str]) -> bool:
    return os.fspath(target) == "-"


def _gzipped(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


_KINDS: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _holds_export(path: Path) -> bool:
    """Whether the regular file ``path`` starts with an export header (plain or gzip), even of
    another format version or cut short: a file an earlier export or backup wrote."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD)
        if head[:2] == _GZIP_MAGIC:
            head = zlib.decompressobj(31).decompress(head, _HEAD)
        first = json.loads(head.split(b"\n", 1)[0])
    except (OSError, ValueError, RecursionError, zlib.error):
        return False
    return type(first) is dict and first.get("format") == EXPORT_FORMAT


def _check_target(path: Path) -> None:
    """Refuse to write over anything but a regular file holding an export (or nothing).

    The writer renames a new file over ``path``: that would silently replace a FIFO, a device
    node or a symbolic link (not write through it), and destroy a file that is not an export
    (the store's own database, a config file) given by mistake. Raises
    :class:`ExportTargetError`; a new path or an earlier export passes.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ExportTargetError(f"cannot write {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        raise ExportTargetError(
            f"{path} is a symbolic link: refusing to replace it (name the file it points to, "
            "or remove the link first)"
        )
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
        hint = (
            "; to write into a pipe or device on purpose, export to '-' (standard output) and "
            "redirect it"
            if not stat.S_ISDIR(info.st_mode)
            else ""
        )
        raise ExportTargetError(f"{path} is {kind}: refusing to replace it{hint}")
    if info.st_size and not _holds_export(path):
        raise ExportTargetError(
            f"{path} exists and is not a sessionkeeper export: refusing to replace it (remove "
            "it first, or choose another name)"
        )


class ExportWriter(Closing):
    """Writes an export file line by line, in constant memory.

    ``target`` is a path (gzip-compressed when it ends in ``.gz``) or ``"-"`` for standard output.
    A file is written under a temporary name beside it, created with mode 0600 (session ids are
    credentials), and renamed into place by :meth:`close` after the end line is written and
    synced: a reader never sees a half-written export under the final name. ``target`` must be a
    new path or a regular file holding an earlier export: a FIFO, a device, a symbolic link, a
    directory or any other file raises :class:`ExportTargetError` and is left as it is (write
    to ``"-"`` and redirect to feed a pipe). Leaving the ``with``
    block with an exception (or calling :meth:`abort`) removes the temporary file.
    """

    def __init__(self, target: str | os.PathLike[str], header: ExportHeader) -> None:
        self.header = header
        self.digest = SessionDigest()
        self._temp: Path | None = None
        self._raw: IO[bytes] | None = None
        if _is_stdio(target):
            self.path: Path | None = None
            self._out: IO[bytes] = sys.stdout.buffer
        else:
            self.path = Path(target)
            _check_target(self.path)
            directory = self.path.parent
            try:
                fd, temp = tempfile.mkstemp(
                    prefix=f".{self.path.name}.", suffix=".partial", dir=directory
                )
            except OSError as exc:
                raise ExportError(f"cannot write {self.path}: {exc.strerror or exc}") from None
            self._temp = Path(temp)
            raw = os.fdopen(fd, "wb", buffering=_BUFFER)
            self._raw = raw
            self._out = (
                cast(
                    IO[bytes],
                    gzip.GzipFile(filename=self.path.name, mode="wb", fileobj=raw, compresslevel=6),
                )
                if _gzipped(self.path)
                else raw
            )
        self._closed = False
        self._out.write(_dumps(header.to_dict()))

    @property
    def count(self) -> int:
        """Sessions written so far."""
        return self.digest.count

    def write(self, session: Session) -> None:
        """Append one session."""
        self._out.write(_dumps(session.to_dict()))
        self.digest.add(session)

    def close(self) -> None:
        """Write the end line, flush, sync and move the file into place. Idempotent."""
        if self._closed:
            return
        end = {"end": True, "count": self.digest.count, "digest": self.digest.hexdigest()}
        self._out.write(_dumps(end))
        if self._raw is None:
            self._out.flush()
            self._closed = True
            return
        assert self._temp is not None
        assert self.path is not None
        try:
            if self._out is not self._raw:
                self._out.close()  # the gzip trailer; leaves the raw file open
            self._raw.flush()
            os.fsync(self._raw.fileno())
            self._raw.close()
            _check_target(self.path)  # again: something may have appeared there meanwhile
            os.replace(self._temp, self.path)
        except BaseException:  # no space left, a FIFO put there meanwhile: no file, no temp
            self.abort()
            raise
        self._temp = None
        self._closed = True
        with contextlib.suppress(OSError):  # make the rename itself durable
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def abort(self) -> None:
        """Give up: remove the temporary file (standard output cannot be taken back)."""
        if self._closed:
            return
        self._closed = True
        if self._raw is not None:
            with contextlib.suppress(Exception):
                if self._out is not self._raw:
                    self._out.close()
            with contextlib.suppress(Exception):
                self._raw.close()
        if self._temp is not None:
            with contextlib.suppress(OSError):
                self._temp.unlink()
            self._temp = None
        else:
            with contextlib.suppress(Exception):
                self._out.flush()

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:  # the block ended without an exception
            self.close()
        else:
            self.abort()


# --- reading -----------------------------------------------------------------------------------


class _InputProblem(Exception):
    """The input file cannot be read further; the lines before the problem were intact."""


class _Gunzip:
    """A gzip stream read line by line that keeps every byte decompressed before a problem.

    :class:`gzip.GzipFile` raises on a truncated or damaged stream and loses the data it had
    decompressed into its buffers, so the intact lines before the damage could not be imported.
    Here the data is decompressed chunk by chunk (at most :data:`_BUFFER` bytes of output at a
    time, so a small file cannot expand into a large amount of memory), every complete line is
    handed out, and the problem (the data ends early, it is corrupt, or garbage follows the last
    gzip member) is raised as :class:`_InputProblem` only after them, naming the byte offset in
    the file. Like ``gzip``, it reads concatenated members and ignores zero padding after them.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._zlib = zlib.decompressobj(31)  # 31: a gzip header and trailer
        self._pending = b""  # compressed bytes not yet fed to the decompressor
        self._buffer = bytearray()
        self._consumed = 0  # compressed bytes of the file taken so far
        self._in_member = False
        self._problem: str | None = None
        self._eof = False

    def _fill(self) -> None:
        """Decompress more into the buffer, or set ``_eof`` / ``_problem``."""
        while not self._eof and self._problem is None:
            if not self._pending:
                self._pending = self._raw.read(_BUFFER)
                if not self._pending:
                    if self._in_member:
                        self._problem = (
                            f"the compressed data ends early (at byte {self._consumed} of the "
                            "file): the file was truncated"
                        )
                    self._eof = True
                    return
            if not self._in_member:  # between members: another member, padding or garbage
                stripped = self._pending.lstrip(b"\0")
                self._consumed += len(self._pending) - len(stripped)
                self._pending = stripped
                if not stripped:
                    continue
                if not _GZIP_MAGIC.startswith(stripped[:2]) or (
                    len(stripped) == 1 and not self._more_is_magic()
                ):
                    self._problem = (
                        f"garbage after the end of the compressed data (at byte "
                        f"{self._consumed} of the file)"
                    )
                    return
                self._zlib = zlib.decompressobj(31)
                self._in_member = True
            # Small pieces: zlib raises without the output of the piece that failed, so what
            # a damaged stream loses is at most the lines of one piece before the damage.
            piece, rest = self._pending[:_PIECE], self._pending[_PIECE:]
            saved = self._zlib.copy()
            try:
                data = self._zlib.decompress(piece, _BUFFER)
            except zlib.error as exc:
                salvaged, at = _salvage(saved, piece)
                self._buffer += salvaged
                self._problem = (
                    f"the compressed data is corrupt (at byte {self._consumed + at} of the file: "
                    f"{exc})"
                )
                return
            if self._zlib.eof:
                left = self._zlib.unused_data
                self._in_member = False
            else:
                left = self._zlib.unconsumed_tail
            self._consumed += len(piece) - len(left)
            self._pending = left + rest
            if data:
                self._buffer += data
                return

    def _more_is_magic(self) -> bool:
        """With one byte pending: read one more to see whether a new member starts."""
        self._pending += self._raw.read(1)
        return self._pending[:2] == _GZIP_MAGIC

    def readline(self, limit: int) -> bytes:
        """The next line (with its newline), at most ``limit`` bytes; ``b""`` at the end.

        Raises :class:`_InputProblem` where the stream is damaged, after the data before it."""
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0 and end < limit:
                return self._take(end + 1)
            if len(self._buffer) >= limit:
                return self._take(limit)
            if self._eof or self._problem is not None:
                if self._buffer:
                    return self._take(len(self._buffer))
                if self._problem is not None:
                    raise _InputProblem(self._problem)
                return b""
            start = len(self._buffer)
            self._fill()

    def _take(self, count: int) -> bytes:
        line = bytes(self._buffer[:count])
        del self._buffer[:count]
        return line

    def close(self) -> None:
        """Nothing to release (the raw file is closed by its owner)."""


def _salvage(stream: Any, piece: bytes) -> tuple[bytes, int]:
    """What ``stream`` decompresses from ``piece`` before the byte it fails on, and where that
    is: the piece fed 64 bytes at a time (only on the way to reporting a damaged file)."""
    out = bytearray()
    for start in range(0, len(piece), 64):
        try:
            out += stream.decompress(piece[start : start + 64])
        except zlib.error:
            return bytes(out), start
    return bytes(out), len(piece)


def _open_input(source: str | os.PathLike[str]) -> tuple[Any, IO[bytes] | None, str]:
    """``(stream, raw file or None, name)``; gzip is recognised by its magic bytes."""
    if _is_stdio(source):
        stdin: IO[bytes] = sys.stdin.buffer
        if not hasattr(stdin, "peek"):  # e.g. a BytesIO standing in for stdin
            stdin = cast(IO[bytes], io.BufferedReader(cast(Any, stdin)))
        head = cast(io.BufferedReader, stdin).peek(2)[:2]
        if head == _GZIP_MAGIC:
            return _Gunzip(stdin), None, "-"
        return stdin, None, "-"
    path = Path(source)
    try:
        raw = io.BufferedReader(io.FileIO(path, "rb"), _BUFFER)
    except OSError as exc:
        raise ExportFormatError(f"cannot read: {exc.strerror or exc}", source=str(path)) from None
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        return _Gunzip(raw), raw, str(path)
    return raw, raw, str(path)


class ExportReader(Closing):
    """Reads an export file line by line, validating each line, in constant memory.

    ``source`` is a path (gzip-compressed or not: recognised by its content) or ``"-"`` for
    standard input. Opening reads and checks the header (:attr:`header`) and raises
    :class:`ExportFormatError` when the file is not an export this version can read. Iterating
    yields ``(line_number, Session | LineError)`` for each session line; a bad line does not stop
    the iteration. Afterwards :meth:`end_problem` says whether the file was complete: its end
    line present, and its count and digest matching what was read.
    """

    def __init__(self, source: str | os.PathLike[str]) -> None:
        self._stream, self._raw, self.name = _open_input(source)
        self._owns = self._raw is not None or self._stream is not sys.stdin.buffer
        self.line = 0
        self.end: _EndRecord | None = None
        self.digest = SessionDigest()
        self.rejected = 0
        #: Why the file could not be read to its end (damaged compression, garbage after it, an
        #: I/O error), or ``None``; :meth:`end_problem` reports it first.
        self.stream_problem: str | None = None
        self._size = os.fstat(self._raw.fileno()).st_size if self._raw is not None else None
        try:
            first = self._next_line(drain=False)
            if first is None:
                problem = self.stream_problem or "the file is empty"
                raise ExportFormatError(f"{problem}: not a sessionkeeper export", source=self.name)
            number, text, complete = first
            try:
                parsed = self._parse(text, complete)
            except ValueError as exc:
                problem = f"{self.stream_problem} ({exc})" if self.stream_problem else str(exc)
                raise ExportFormatError(
                    f"not a sessionkeeper export: {problem}", source=self.name, line=number
                ) from None
            try:
                self.header = _header_from(parsed)
            except ValueError as exc:
                raise ExportFormatError(str(exc), source=self.name, line=number) from None
        except _LineTooLong as exc:
            self.close()
            raise ExportFormatError(
                f"longer than {MAX_LINE_BYTES} bytes: not a sessionkeeper export",
                source=self.name,
                line=exc.line,
            ) from None
        except BaseException:
            self.close()
            raise

    @property
    def size(self) -> int | None:
        """The size of the file in bytes (as stored, compressed or not); ``None`` for stdin."""
        return self._size

    @property
    def position(self) -> int:
        """How many bytes of the file (as stored) have been read so far."""
        if self._raw is None:
            return 0
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def _read(self) -> bytes:
        """The next physical line; ``b""`` at the end of the data *or* where the file cannot be
        read further (then :attr:`stream_problem` says why, and the lines before it stand, as
        the lines before the cut of a truncated plain file do)."""
        if self.stream_problem is not None:
            return b""
        try:
            data: bytes = self._stream.readline(MAX_LINE_BYTES + 1)
            return data
        except _InputProblem as exc:
            problem = str(exc)
        except OSError as exc:
            problem = f"cannot read: {exc.strerror or exc}"
        self.stream_problem = f"after line {self.line}, {problem}"
        return b""

    def _next_line(self, *, drain: bool = True) -> tuple[int, bytes, bool] | None:
        """``(number, bytes, ended_with_newline)`` of the next non-blank line, or ``None``.

        A line longer than :data:`MAX_LINE_BYTES` raises :class:`_LineTooLong`, after reading
        past it when ``drain`` (to go on with the next line). The header is not drained: an
        endless input without a newline (``/dev/zero``) would never end."""
        while True:
            data = self._read()
            if not data:
                return None
            self.line += 1
            if len(data) > MAX_LINE_BYTES and not data.endswith(b"\n"):
                while drain and (more := self._read()) and not more.endswith(b"\n"):
                    pass
                raise _LineTooLong(self.line)
            if data.strip():
                return self.line, data, data.endswith(b"\n")

    @staticmethod
    def _parse(data: bytes, complete: bool) -> object:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        try:
            return json.loads(text)
        except RecursionError:  # json recurses once per level: "[" * 100_000 exhausts the stack
            raise ValueError(
                f"nested too deeply (metadata may nest at most {MAX_METADATA_DEPTH} levels)"
            ) from None
        except json.JSONDecodeError as exc:
            if not complete:
                raise ValueError(
                    "the last line is cut off (no newline, not valid JSON): the file was truncated"
                ) from None
            raise ValueError(f"not valid JSON: {exc.msg} at column {exc.colno}") from None

    def __iter__(self) -> Iterator[tuple[int, Session | LineError]]:
        while True:
            try:
                found = self._next_line()
            except _LineTooLong as exc:
                self.rejected += 1
                yield exc.line, LineError(exc.line, f"longer than {MAX_LINE_BYTES} bytes")
                continue
            if found is None:
                return
            number, data, complete = found
            try:
                parsed = self._parse(data, complete)
                if self.end is not None:
                    raise ValueError("data after the end line")
                if type(parsed) is dict and "end" in parsed:
                    self.end = _structure(parsed, _EndRecord, "end line")
                    continue
                session = _session_from(parsed)
            except ValueError as exc:
                self.rejected += 1
                yield number, LineError(number, str(exc))
                continue
            self.digest.add(session)
            yield number, session

    def end_problem(self) -> str | None:
        """After iterating: why the file is incomplete or altered, or ``None`` when it is whole."""
        if self.stream_problem is not None:
            return self.stream_problem
        if self.end is None:
            return (
                f"the file ends at line {self.line} without its end line: it was truncated "
                "(or is still being written)"
            )
        if self.rejected:
            return None  # the count and digest cannot match; the bad lines say why
        if self.end.count != self.digest.count:
            return (
                f"the end line says {self.end.count} sessions, the file holds "
                f"{self.digest.count}: lines were removed or added"
            )
        if self.end.digest != self.digest.hexdigest():
            return (
                f"the sessions' digest {self.digest.hexdigest()} differs from the end line's "
                f"{self.end.digest}: the file was changed after it was written"
            )
        return None

    def close(self) -> None:
        """Close the file (standard input is left open)."""
        if self._owns:
            with contextlib.suppress(Exception):
                self._stream.close()
            if self._raw is not None and self._raw is not self._stream:
                with contextlib.suppress(Exception):
                    self._raw.close()


class _LineTooLong(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


# --- reports -----------------------------------------------------------------------------------


def _capped(problems: list[Any], item: Any) -> None:
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


# --- the transfers -----------------------------------------------------------------------------


def _raw_fetch(manager: SessionManager, session_id: str) -> Session | None:
    """The stored session ``session_id``, expired or not, without touching it (or ``None``)."""
    try:
        return manager.peek(session_id, include_expired=True)
    except SessionNotFound:
        return None


class _StoreFailed(SessionKeeperError):
    """The store failed writing the session labelled ``label`` (a line number, an id)."""

    def __init__(self, label: Any, error: SessionKeeperError) -> None:
        super().__init__(str(error))
        self.label = label
        self.error = error


def _same(a: Session, b: Session) -> bool:
    """Whether two sessions are the same record, byte for byte as encoded (what
    :class:`SessionDigest` hashes). ``Session.__eq__`` compares metadata decoded, where ``10``
    equals ``10.0``, ``1`` equals ``True`` and key order does not count: deciding "unchanged" on
    it left such a session unwritten while the digests differed, forever."""
    # Equal fields and byte-equal packed metadata is exactly equal encoded records, without
    # encoding either (the copy's per-session cost).
    return a == b and a._metadata == b._metadata


class _Fingerprints:
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


class _Writer:
    """Stores sessions into ``target`` in batches of :data:`STORE_BATCH` (``store_many``),
    counting each by its kind once it is stored.

    A batch that fails is stored again one by one (storing a session twice is harmless), so
    that the counts stay exact: a session the target refuses (``InvalidSession``, e.g. over its
    ``max_metadata_bytes``) is passed to ``reject`` with its label, and any other failure
    raises :class:`_StoreFailed` naming the session it happened on. ``stored`` (optional) hears
    every session once it is stored.
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
                self.target.store(item[0])
            except InvalidSession as exc:
                self.reject(item[2], exc)
            except SessionKeeperError as exc:
                raise _StoreFailed(item[2], exc) from exc
            else:
                self._count([item])

    def _count(self, stored: list[tuple[Session, _Kind, Any]]) -> None:
        for session, kind, _ in stored:
            self.counts[kind] += 1
            if self.stored is not None:
                self.stored(session)


def _selected(manager: SessionManager, now: int, include_expired: bool) -> Iterator[Session]:
    """The sessions a transfer takes: every stored one, or those live at ``now``."""
    for session in manager.iter_sessions(include_expired=True):
        if include_expired or not session.is_expired(now):
            yield session


def _estimate(manager: SessionManager, progress: Progress | None) -> int | None:
    """The live count, for a progress bar's total (an extra read: only when shown)."""
    if progress is None:
        return None
    return manager.count()


def export_sessions(
    manager: SessionManager,
    target: str | os.PathLike[str],
    *,
    include_expired: bool = False,
    progress: Progress | None = None,
) -> ExportReport:
    """Write every live session of ``manager`` (with ``include_expired``, every stored one) to
    ``target`` in the export format, without touching any.

    ``target`` is a path (``.gz``: gzip-compressed) or ``"-"`` for standard output. The file
    appears under its name only once complete (see :class:`ExportWriter`). Returns the count and
    the digest written on the end line. A read failure of the store raises
    :class:`~sessionkeeper.StorageError` and leaves no file behind.
    """
    from . import __version__

    now = manager.clock()
    header = ExportHeader(
        source_backend=manager.backend_name,
        exported_at=now,
        include_expired=include_expired,
        sessionkeeper_version=__version__,
    )
    total = _estimate(manager, progress)
    report = ExportReport(
        path=os.fspath(target),
        backend=manager.backend_name,
        include_expired=include_expired,
        exported_at=now,
    )
    try:
        with ExportWriter(target, header) as writer:
            for session in _selected(manager, now, include_expired):
                writer.write(session)
                if progress is not None and writer.count % PROGRESS_EVERY == 0:
                    progress("export", writer.count, total)
    except OSError as exc:  # the file system: no space left, an I/O error, a closed pipe
        if isinstance(exc, BrokenPipeError):
            raise
        raise ExportError(
            f"cannot write {os.fspath(target)}: {exc.strerror or exc}", report=report
        ) from None
    if progress is not None:
        progress("export", writer.count, writer.count)
    report.count = writer.count
    report.digest = writer.digest.hexdigest()
    return report


def validate_export(source: str | os.PathLike[str]) -> ExportHeader:
    """Read the whole file and raise :class:`ExportFormatError` at its first problem."""
    with ExportReader(source) as reader:
        for number, item in reader:
            if isinstance(item, LineError):
                raise ExportFormatError(item.message, source=reader.name, line=number)
        problem = reader.end_problem()
        if problem is not None:
            raise ExportFormatError(problem, source=reader.name)
        return reader.header


@contextlib.contextmanager
def _spooled(source: str | os.PathLike[str]) -> Iterator[str | os.PathLike[str]]:
    """Standard input copied to a private temporary file (so it can be read twice)."""
    if not _is_stdio(source):
        yield source
        return
    with tempfile.NamedTemporaryFile(prefix="sessionkeeper-import-", suffix=".jsonl") as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool, _BUFFER)
        spool.flush()
        yield spool.name


def import_sessions(
    manager: SessionManager,
    source: str | os.PathLike[str],
    *,
    strict: bool = False,
    existing: Literal["replace", "skip"] = "replace",
    include_expired: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Store the sessions of an export file into ``manager``'s store.

    Every line is validated. A bad line is counted, kept in :attr:`ImportReport.errors` with its
    line number and skipped; the good lines are imported. With ``strict`` the whole file is
    validated first and the first problem raises :class:`ExportFormatError` before anything is
    written. A session already stored exactly so is left alone (``unchanged``); one stored with
    different content is replaced (``existing="replace"``, the default) or kept
    (``existing="skip"``). Sessions expired at the time of the import are skipped unless
    ``include_expired``.

    Raises :class:`ExportFormatError` when the file is not an export this version can read
    (header, truncated compression), and :class:`TransferAborted` (whose ``report`` counts what
    was written) when the store fails part-way. Check :attr:`ImportReport.ok` afterwards.
    """
    if existing not in ("replace", "skip"):
        raise ValueError(f'existing must be "replace" or "skip", got {existing!r}')
    with _spooled(source) if strict else contextlib.nullcontext(source) as readable:
        if strict:
            validate_export(readable)
        with ExportReader(readable) as reader:
            report = ImportReport(
                path=os.fspath(source),
                backend=manager.backend_name,
                source_backend=reader.header.source_backend,
            )
            _import_lines(manager, reader, report, existing, include_expired, progress)
    return report


def _import_lines(
    manager: SessionManager,
    reader: ExportReader,
    report: ImportReport,
    existing: str,
    include_expired: bool,
    progress: Progress | None,
) -> None:
    now = manager.clock()
    size = reader.size

    def reject(number: int, exc: InvalidSession) -> None:  # e.g. over max_metadata_bytes
        report.rejected += 1
        _capped(report.errors, LineError(number, str(exc)))

    # The ids this file put in the store (or found there exactly so): a later line for one of
    # them is a duplicate, and the last line wins.
    placed = _Fingerprints()
    writer = _Writer(manager, reject, lambda session: placed.add(session.id.encode()))
    same_duplicates = 0
    try:
        for number, item in reader:
            if isinstance(item, LineError):
                report.rejected += 1
                _capped(report.errors, item)
                continue
            report.read += 1
            if progress is not None and report.read % PROGRESS_EVERY == 0:
                progress("import", reader.position, size)
            if not include_expired and item.is_expired(now):
                report.skipped_expired += 1
                continue
            try:
                if writer.pending(item.id):
                    writer.flush()  # an earlier line's copy, to compare with what is stored
                stored = _raw_fetch(manager, item.id)
            except _StoreFailed:
                raise
            except SessionKeeperError as exc:
                raise _StoreFailed(number, exc) from exc
            key = item.id.encode()
            if stored is not None and _same(stored, item):
                if key in placed:
                    same_duplicates += 1
                else:
                    report.unchanged += 1
                    placed.add(key)
            elif key in placed:
                writer.add(item, "duplicate", number)
            elif stored is not None and existing == "skip":
                report.skipped_existing += 1
            else:
                writer.add(item, "new" if stored is None else "replace", number)
        writer.flush()
    except _StoreFailed as failure:
        raise TransferAborted(
            f"line {failure.label}: the {manager.backend_name} store failed after "
            f"{writer.counts['new'] + writer.counts['replace']} sessions were written: "
            f"{failure.error}",
            report=report,
        ) from failure.error
    finally:
        report.imported, report.replaced = writer.counts["new"], writer.counts["replace"]
        report.duplicates = same_duplicates + writer.counts["duplicate"]
    report.digest = reader.digest.hexdigest()
    report.end_problem = reader.end_problem()
    if progress is not None:
        progress("import", size or reader.position, size or reader.position)


def migrate_sessions(
    source: SessionManager,
    target: SessionManager,
    *,
    include_expired: bool = False,
    delete_source: bool = False,
    progress: Progress | None = None,
) -> MigrationReport:
    """Copy every live session (with ``include_expired``, every stored one) from ``source`` to
    ``target``, verify the copy, and with ``delete_source`` remove what was verified.

    Nothing is touched: timestamps, timeouts and metadata arrive exactly as stored. Which
    sessions are taken is decided against one instant (the source's clock at the start), so a
    session that expires during a long migration is still copied and verified.

    *Not onto itself*: when both managers report the same
    :meth:`~sessionkeeper.SessionManager.identity` (one store reached through two spellings of
    its path or URL), :class:`SameStoreError` is raised before anything is read or written.

    *Resumable*: a session already in the target exactly so (byte for byte as encoded) is not
    written again, so running the migration again after an interruption continues where it
    stopped, and never duplicates (ids are keys) nor loses a session.

    *Verified*: the source is read again and every session looked up in the target; both sides'
    counts and :class:`SessionDigest` are in the report, and :attr:`MigrationReport.verified` is
    true only when they match exactly. A session written in the source during the migration
    makes the verification fail; running the migration again copies it.

    ``delete_source`` deletes from the source, after a verified copy only, each session this
    run copied that the target holds exactly so (the source must be open for writing). A session
    this run found already in the target is deleted only when both stores report identities
    (and so are proven distinct); otherwise it is kept and counted in
    :attr:`MigrationReport.kept`, as is a session written to the source after the copy: a store
    that cannot say what it is can never be emptied by a migration onto itself. Raises
    :class:`TransferAborted` (with the report so far) when a store fails part-way.
    """
    now = source.clock()
    report = MigrationReport(
        source_backend=source.backend_name,
        target_backend=target.backend_name,
        now=now,
        include_expired=include_expired,
    )
    moved = _Moved() if delete_source else None
    try:
        report.source_identity = source.identity()
        report.target_identity = target.identity()
        if report.source_identity is not None and report.source_identity == report.target_identity:
            raise SameStoreError(
                f"the source and the target are the same store ({report.source_identity}): "
                "migrating it onto itself copies nothing, and deleting the source would delete "
                "every session",
                report=report,
            )
        _copy(source, target, report, progress, moved)
        _verify(source, target, report, progress)
        if moved is not None and report.verified:
            distinct = report.source_identity is not None and report.target_identity is not None
            _delete_verified(source, target, report, progress, moved, distinct)
    except ExportError:
        raise
    except SessionKeeperError as exc:
        raise TransferAborted(
            f"the migration stopped after {report.copied + report.replaced} sessions were "
            f"written: {exc}",
            report=report,
        ) from exc
    return report


@attrs.define
class _Moved:
    """What one migration run did with each session, by the fingerprint of its encoded record:
    ``copied`` it wrote to the target, ``found`` already there exactly so. Only these may be
    deleted from the source (kept only with ``delete_source``: 24 to 48 bytes a session)."""

    copied: _Fingerprints = attrs.field(factory=_Fingerprints)
    found: _Fingerprints = attrs.field(factory=_Fingerprints)


def _copy(
    source: SessionManager,
    target: SessionManager,
    report: MigrationReport,
    progress: Progress | None,
    moved: _Moved | None,
) -> None:
    total = _estimate(source, progress)
    done = 0

    def reject(session_id: str, exc: InvalidSession) -> None:
        report.rejected += 1
        _capped(report.errors, f"session {session_id!r}: {exc}")

    def stored(session: Session) -> None:
        if moved is not None:
            moved.copied.add(encode_session(session))

    writer = _Writer(target, reject, stored)
    try:
        for session in _selected(source, report.now, report.include_expired):
            found = _raw_fetch(target, session.id)
            if found is not None and _same(found, session):
                report.unchanged += 1
                if moved is not None:
                    moved.found.add(encode_session(session))
            else:
                writer.add(session, "new" if found is None else "replace", session.id)
            done += 1
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress("copy", done, max(total or 0, done))
        writer.flush()
    finally:
        report.copied, report.replaced = writer.counts["new"], writer.counts["replace"]
    if progress is not None:
        progress("copy", done, done)


def _verify(
    source: SessionManager,
    target: SessionManager,
    report: MigrationReport,
    progress: Progress | None,
) -> None:
    total = report.read
    source_digest, target_digest = SessionDigest(), SessionDigest()
    for session in _selected(source, report.now, report.include_expired):
        source_digest.add(session)
        stored = _raw_fetch(target, session.id)
        if stored is None:
            report.missing += 1
        else:
            target_digest.add(stored)
            if not _same(stored, session):
                report.differing += 1
        if progress is not None and source_digest.count % PROGRESS_EVERY == 0:
            progress("verify", source_digest.count, max(total, source_digest.count))
    if progress is not None:
        progress("verify", source_digest.count, source_digest.count)
    report.source_count, report.source_digest = source_digest.count, source_digest.hexdigest()
    report.target_count, report.target_digest = target_digest.count, target_digest.hexdigest()
    report.verified = (
        report.missing == 0 and report.differing == 0 and source_digest == target_digest
    )


def _delete_verified(
    source: SessionManager,
    target: SessionManager,
    report: MigrationReport,
    progress: Progress | None,
    moved: _Moved,
    distinct: bool,
) -> None:
    """Delete from the source what this run copied (and, when the stores are ``distinct``,
    what it found already copied), each only if the target still holds it exactly so."""
    total = report.source_count
    seen = 0
    for session in _selected(source, report.now, report.include_expired):
        seen += 1
        key = encode_session(session)
        if key in moved.copied or (distinct and key in moved.found):
            stored = _raw_fetch(target, session.id)
            if stored is not None and _same(stored, session) and source.delete(session.id):
                report.deleted += 1
        else:
            report.kept += 1
        if progress is not None and seen % PROGRESS_EVERY == 0:
            progress("delete", seen, max(total, seen))
    if progress is not None:
        progress("delete", seen, seen)
