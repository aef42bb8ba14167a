"""Options of a backend that keeps its sessions in a file (writing-a-backend.md, "Options").

Run it: it checks what the guide says about relative paths and ``FieldError``.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from sessionkeeper.backend import BackendContext, FieldError


# start-file-options
def _not_blank(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        # FieldError names the option in the ConfigError the user sees:
        # "sessionkeeper.backend_opts.file_path: must name a file, got an empty string".
        raise FieldError(attribute.name, "must name a file, got an empty string")


@attrs.frozen(kw_only=True)
class FileOptions:
    """The ``[sessionkeeper.backend_opts]`` of a backend that keeps sessions in one file.

    :param file_path: the file; a relative path is relative to the config file's directory.
    :param sync: flush every write to disk before acknowledging it.
    """

    file_path: str = attrs.field(validator=[attrs.validators.instance_of(str), _not_blank])
    sync: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))


class FileBackend:
    options_class = FileOptions

    def __init__(self, options: FileOptions, context: BackendContext) -> None:
        # Resolve against the config file's directory, never the working directory.
        self.path = context.resolve(options.file_path)
        self.sync = options.sync
        self.read_only = context.read_only  # then open without creating, and refuse writes


# end-file-options


def main() -> None:
    context = BackendContext(name="file", base_dir=Path("/srv/app"))
    backend = FileBackend(FileOptions(file_path="data/sessions.db"), context)
    assert backend.path == Path("/srv/app/data/sessions.db")
    absolute = FileBackend(FileOptions(file_path="/var/lib/app/s.db"), context)
    assert absolute.path == Path("/var/lib/app/s.db")
    rejected: str | None = None
    try:
        FileOptions(file_path="  ")
    except FieldError as exc:
        rejected = exc.field
    assert rejected == "file_path", "a blank file_path was accepted"
    print("ok")


if __name__ == "__main__":
    main()
