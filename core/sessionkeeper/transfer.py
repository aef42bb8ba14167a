"""Export, import and migration of sessions, and the export format they read and write.

The functions behind ``sessionkeeper export``, ``import``, ``migrate`` and ``backup``, usable from
an application: :func:`export_sessions` writes a store's sessions to a JSON-lines file,
:func:`import_sessions` reads one back into a store, :func:`migrate_sessions` copies one open
store into another. :class:`ExportWriter` and :class:`ExportReader` write and read the format
directly. The names are defined in private modules and re-exported here.
"""

from __future__ import annotations

from ._errors import ExportError, ExportFormatError, TransferAborted, VerificationFailed
from ._export_format import EXPORT_FORMAT, EXPORT_VERSION, ExportHeader, LineError, SessionDigest
from ._export_reader import ExportReader
from ._export_writer import ExportWriter
from ._transfer import export_sessions, import_sessions, migrate_sessions
from ._transfer_common import ExportReport, ImportReport, MigrationReport

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ExportError",
    "ExportFormatError",
    "ExportHeader",
    "ExportReader",
    "ExportReport",
    "ExportWriter",
    "ImportReport",
    "LineError",
    "MigrationReport",
    "SessionDigest",
    "TransferAborted",
    "VerificationFailed",
    "export_sessions",
    "import_sessions",
    "migrate_sessions",
]
