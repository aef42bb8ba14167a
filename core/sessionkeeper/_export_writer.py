"""Writing an export file: :class:`ExportWriter`, and the checks that keep it from replacing
what is not an export (a FIFO, a device, a symbolic link, another program's file).

The format itself is :mod:`._export_format`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import stat
import sys
import tempfile
import zlib
from pathlib import Path
from typing import IO, Final, cast

from ._closing import Closing
from ._errors import ExportError, ExportTargetError
from ._export_format import (
    BUFFER,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    GZIP_MAGIC,
    ExportHeader,
    SessionDigest,
    dumps,
    is_stdio,
    session_record,
)
from ._model import Session

__all__ = ["ExportWriter", "check_target"]

#: How much of an existing file is read to recognise an export header.
_HEAD: Final = 64 * 1024


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
        if head[:2] == GZIP_MAGIC:
            head = zlib.decompressobj(31).decompress(head, _HEAD)
        first = json.loads(head.split(b"\n", 1)[0])
    except (OSError, ValueError, RecursionError, zlib.error):
        return False
    return type(first) is dict and first.get("format") == EXPORT_FORMAT


def check_target(path: Path) -> None:
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
        if header.version != EXPORT_VERSION:
            raise ValueError(
                f"this sessionkeeper writes export format version {EXPORT_VERSION}, "
                f"not {header.version!r}"
            )
        self.header = header
        self.digest = SessionDigest()
        self._temp: Path | None = None
        self._raw: IO[bytes] | None = None
        if is_stdio(target):
            self.path: Path | None = None
            self._out: IO[bytes] = sys.stdout.buffer
        else:
            self.path = Path(target)
            check_target(self.path)
            directory = self.path.parent
            try:
                fd, temp = tempfile.mkstemp(
                    prefix=f".{self.path.name}.", suffix=".partial", dir=directory
                )
            except OSError as exc:
                raise ExportError(f"cannot write {self.path}: {exc.strerror or exc}") from None
            self._temp = Path(temp)
            raw = os.fdopen(fd, "wb", buffering=BUFFER)
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
        self._out.write(dumps(header.to_dict()))

    @property
    def count(self) -> int:
        """Sessions written so far."""
        return self.digest.count

    def write(self, session: Session) -> None:
        """Append one session."""
        self._out.write(dumps(session_record(session)))
        self.digest.add(session)

    def close(self) -> None:
        """Write the end line, flush, sync and move the file into place. Idempotent."""
        if self._closed:
            return
        end = {"end": True, "count": self.digest.count, "digest": self.digest.hexdigest()}
        self._out.write(dumps(end))
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
            check_target(self.path)  # again: something may have appeared there meanwhile
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
