"""The operators' command line: ``sessionkeeper`` (also ``python -m sessionkeeper``).

The package assembles the group of :mod:`._group` from one module per family of commands:
``_backends``, ``_sessions`` (list, show, delete, cleanup), ``_maintenance`` (stats, check),
``_ops`` (the transfers) and ``_new_backend``; they share ``_common`` and ``_render``.

Commands: ``backends``, ``list``, ``show ID``, ``delete ID``, ``cleanup``, ``stats``,
``check [--repair]``, and the transfers of :mod:`sessionkeeper.cli._ops`: ``export FILE``,
``import FILE``, ``migrate --to OTHER.toml`` and ``backup DIR``.

Every command that opens a store takes ``--config PATH`` (else ``$SESSIONKEEPER_CONFIG``, else
``./sessionkeeper.toml``, else the in-memory backend) and ``--json`` (machine-readable output on
stdout, nothing else on stdout), after its name or before it (``sessionkeeper --config X list``:
the group hands them down; the command's own wins). ``list``, ``show``, ``stats``, ``export``,
``backup`` and ``migrate`` (without ``--delete-source``) open the store read-only, so they can run
beside the process that owns it; ``delete``, ``cleanup`` and ``import`` open it for writing;
``check`` reads the store without opening a manager, and ``check --repair`` needs the owner
stopped. Errors
are one clear message on stderr, never a traceback (set ``SESSIONKEEPER_DEBUG=1`` to get one).

Exit codes:

===  ===================================================================================
 0   success
 1   session not found (``show`` or ``delete`` of an unknown or expired id)
 2   usage error: a bad option or argument, including an invalid session id (click's)
 3   configuration error: bad config file, unknown backend, invalid plugin
     (:class:`~sessionkeeper.ConfigError`, :class:`~sessionkeeper.BackendNotFound`,
     :class:`~sessionkeeper.backend.PluginValidationError`)
 4   storage error (:class:`~sessionkeeper.StorageError`) or any other sessionkeeper error,
     and ``check`` finding problems it did not repair
 5   bad input data: a file ``import`` cannot use, or lines of it that were rejected
     (:class:`~sessionkeeper.transfer.ExportFormatError`)
 6   ``migrate``'s verification found the target different from the source
     (:class:`~sessionkeeper.transfer.VerificationFailed`)
 7   a conditional write found another version than it named; nothing was written
     (:class:`~sessionkeeper.VersionConflict`)
===  ===================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

from ._backends import backends
from ._common import DEBUG_ENV, ExitCode, exit_code_for
from ._group import COMMAND_GROUP, cli
from ._maintenance import check, stats
from ._new_backend import new_backend
from ._ops import backup, export_command, import_command, migrate
from ._sessions import cleanup, delete, list_command, show

__all__ = ["COMMAND_GROUP", "DEBUG_ENV", "ExitCode", "cli", "exit_code_for", "main"]

for _command in (
    backends,
    list_command,
    show,
    delete,
    cleanup,
    stats,
    check,
    new_backend,
    export_command,
    import_command,
    migrate,
    backup,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI (the ``sessionkeeper`` console script) and exit with its status."""
    cli.main(args=list(argv) if argv is not None else None)
