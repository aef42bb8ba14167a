"""Reading an export file: :class:`ExportReader`, line by line in constant memory, plain or
gzip-compressed, and the gzip reader that keeps the intact lines before damage.

The format itself is :mod:`._export_format`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Final, cast

from ._closing import Closing
from ._errors import ExportFormatError
from ._export_format import (
    BUFFER,
    GZIP_MAGIC,
    MAX_LINE_BYTES,
    EndRecord,
    ExportHeader,
    LineError,
    SessionDigest,
    header_from,
    is_stdio,
    session_from,
    structure,
)
from ._model import MAX_METADATA_DEPTH, Session

__all__ = ["ExportReader", "validate_export"]

#: Compressed bytes given to zlib at a time when reading a gzip file.
_PIECE: Final = 16 * 1024


class _InputProblem(Exception):
    """The input file cannot be read further; the lines before the problem were intact."""


class _Gunzip:
    """A gzip stream read line by line that keeps every byte decompressed before a problem.

    :class:`gzip.GzipFile` raises on a truncated or damaged stream and loses the data it had
    decompressed into its buffers, so the intact lines before the damage could not be imported.
    Here the data is decompressed chunk by chunk (at most :data:`BUFFER` bytes of output at a
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
                self._pending = self._raw.read(BUFFER)
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
                if not GZIP_MAGIC.startswith(stripped[:2]) or (
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
                data = self._zlib.decompress(piece, BUFFER)
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
        return self._pending[:2] == GZIP_MAGIC

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
    if is_stdio(source):
        stdin: IO[bytes] = sys.stdin.buffer
        if not hasattr(stdin, "peek"):  # e.g. a BytesIO standing in for stdin
            stdin = cast(IO[bytes], io.BufferedReader(cast(Any, stdin)))
        head = cast(io.BufferedReader, stdin).peek(2)[:2]
        if head == GZIP_MAGIC:
            return _Gunzip(stdin), None, "-"
        return stdin, None, "-"
    path = Path(source)
    try:
        raw = io.BufferedReader(io.FileIO(path, "rb"), BUFFER)
    except OSError as exc:
        raise ExportFormatError(f"cannot read: {exc.strerror or exc}", source=str(path)) from None
    if raw.peek(2)[:2] == GZIP_MAGIC:
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
        self.end: EndRecord | None = None
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
                self.header = header_from(parsed)
                #: The digest of the sessions read, computed as the file's version did.
                self.digest = SessionDigest(self.header.version)
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
                    self.end = structure(parsed, EndRecord, "end line")
                    continue
                session = session_from(parsed, self.header.version)
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
