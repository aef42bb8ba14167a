"""``sessionkeeper new-backend NAME [DIR]``: generate the skeleton of a backend plugin.

The skeleton is a complete distribution, ``sessionkeeper-NAME``: a ``pyproject.toml`` that
declares the entry point, a ``src/sessionkeeper_NAME`` package holding a working backend (sessions
in a ``dict`` of encoded records, with an expiry index), a ``tests/`` folder that runs the
conformance kit, and a README. It passes the kit as generated. The template files live in
``sessionkeeper/_template`` (``*.tmpl``, so that no tool takes them for modules); placeholders
are ``{{key}}`` for the keys of :meth:`BackendNames.placeholders`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path
from typing import Final

import attrs
import click
from rich.text import Text

from .. import __version__
from ._render import error_console, output_console

__all__ = [
    "EXIT_WRITE_FAILED",
    "TEMPLATE",
    "BackendNames",
    "TargetNotEmpty",
    "core_requirement",
    "new_backend",
    "planned_files",
    "render_backend",
]

#: Exit status when the files cannot be written (``ExitCode.STORAGE`` of :mod:`sessionkeeper.cli`).
EXIT_WRITE_FAILED: Final = 4

#: Template file (under ``sessionkeeper/_template``) -> path in the new project; ``{module}`` is
#: replaced by the module name.
TEMPLATE: Final = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "gitignore.tmpl": ".gitignore",
    "src/__init__.py.tmpl": "src/{module}/__init__.py",
    "src/_backend.py.tmpl": "src/{module}/_backend.py",
    "src/py.typed": "src/{module}/py.typed",
    "tests/test_conformance.py.tmpl": "tests/test_conformance.py",
    "tests/test_backend.py.tmpl": "tests/test_backend.py",
}

_NAME: Final = re.compile(r"[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*")
_MAX_NAME: Final = 40
_PLACEHOLDER: Final = re.compile(r"\{\{(\w+)\}\}")


@attrs.frozen
class BackendNames:
    """The names a backend goes by, all derived from its entry-point name.

    :param name: the entry-point name, what ``backend = "..."`` selects: lowercase letters and
        digits, words joined by ``-`` or ``_``, starting with a letter (``mystore``, ``s3-cache``).
    """

    name: str

    @classmethod
    def parse(cls, name: str) -> BackendNames:
        """Validate ``name``; raise :class:`ValueError` saying what is wrong."""
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a backend name: use lowercase letters and digits, words "
                "joined by '-' or '_', starting with a letter (e.g. mystore, s3-cache)"
            )
        if len(name) > _MAX_NAME:
            raise ValueError(f"{name!r} is {len(name)} characters long, over {_MAX_NAME}")
        return cls(name)

    @property
    def distribution(self) -> str:
        """The distribution: ``sessionkeeper-<name>`` (what the missing-backend error suggests)."""
        return "sessionkeeper-" + self.name.replace("_", "-")

    @property
    def module(self) -> str:
        """The import package: ``sessionkeeper_<name>``."""
        return "sessionkeeper_" + self.name.replace("-", "_")

    @property
    def class_prefix(self) -> str:
        """The prefix of the class names: ``s3-cache`` gives ``S3Cache`` (``S3CacheBackend``)."""
        return "".join(word.capitalize() for word in re.split(r"[-_]", self.name))

    def placeholders(self) -> dict[str, str]:
        """The values of the template's placeholders."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "module": self.module,
            "class_prefix": self.class_prefix,
            "core_requirement": core_requirement(),
        }


def core_requirement() -> str:
    """The requirement on the core that every plugin distribution declares: exactly the
    running version (``sessionkeeper==0.1.0``), as the plugins of this repository pin it. Before
    1.0 the hook contract may change in any release, so a plugin names the core it was tested
    with; a plugin released in step with the core (all of this repository's) gets the same
    version, so they install together from a checkout."""
    return f"sessionkeeper=={__version__}"


class TargetNotEmpty(ValueError):
    """The directory to generate into is not empty (or is not a directory), and no ``force``."""


def _render(text: str, values: Mapping[str, str], template: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        key = match[1]
        if key not in values:
            raise KeyError(f"template {template} uses an unknown placeholder {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER.sub(substitute, text)


def planned_files(names: BackendNames) -> dict[Path, str]:
    """Relative path in the new project -> its rendered text."""
    root = resources.files("sessionkeeper").joinpath("_template")
    values = names.placeholders()
    files: dict[Path, str] = {}
    for template, target in TEMPLATE.items():
        text = root.joinpath(template).read_text(encoding="utf-8")
        files[Path(target.format(module=names.module))] = _render(text, values, template)
    return files


def render_backend(names: BackendNames, directory: Path, *, force: bool = False) -> list[Path]:
    """Write the skeleton of backend ``names`` into ``directory``; return the files written.

    Raises :class:`TargetNotEmpty` for a ``directory`` that is a file, or that exists and is not
    empty unless ``force`` (which overwrites the skeleton's files and leaves every other file
    alone), and :class:`OSError` when a file cannot be written.
    """
    if directory.is_file():
        raise TargetNotEmpty(f"{directory} is a file, not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise TargetNotEmpty(f"{directory} exists and is not empty")
    files = planned_files(names)
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _installed_backend(name: str) -> str | None:
    """The distribution that already provides a backend called ``name``, if one does."""
    for entry_point in entry_points(group="sessionkeeper.backends"):
        if entry_point.name == name:
            return entry_point.dist.name if entry_point.dist is not None else "?"
    return None


def _check_name(ctx: click.Context, param: click.Parameter, value: str) -> BackendNames:
    try:
        return BackendNames.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@click.command(
    "new-backend",
    epilog="""\b
Examples:
  sessionkeeper new-backend mystore
  sessionkeeper new-backend s3-cache plugins/s3-cache
  sessionkeeper new-backend mystore --force      # regenerate over an existing skeleton
""",
)
@click.argument("names", metavar="NAME", callback=_check_name)
@click.argument(
    "directory",
    metavar="[DIR]",
    required=False,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option(
    "--force",
    is_flag=True,
    help="Write into DIR even if it is not empty, overwriting the skeleton's files.",
)
def new_backend(names: BackendNames, directory: Path | None, force: bool) -> None:
    """Generate the skeleton of a backend plugin named NAME.

    Writes a distribution, sessionkeeper-NAME, into DIR (default: ./sessionkeeper-NAME):
    pyproject.toml with the sessionkeeper.backends entry point, the package
    src/sessionkeeper_NAME with a working backend (sessions in a dict, with an expiry
    index), tests/ running the conformance kit, and a README. Install it (pip install -e
    DIR) and run pytest in DIR: it passes as generated. NAME is the entry-point name that
    backend = "NAME" selects: lowercase letters and digits, words joined by - or _. Exits
    with 2 for a bad NAME or a DIR that is not empty (without --force), with 4 when a file
    cannot be written.
    """
    target = directory if directory is not None else Path(names.distribution)
    try:
        written = render_backend(names, target, force=force)
    except TargetNotEmpty as exc:
        raise click.UsageError(
            f"{exc}; choose another DIR, or pass --force to write the skeleton into it"
        ) from None
    except OSError as exc:
        error_console().print(
            Text.assemble(
                ("error: ", "bold red"), f"cannot write the skeleton into {target}: {exc}"
            )
        )
        raise click.exceptions.Exit(EXIT_WRITE_FAILED) from None
    existing = _installed_backend(names.name)
    if existing is not None:
        error_console().print(
            Text.assemble(
                ("warning: ", "bold yellow"),
                f"a backend named {names.name!r} is already installed (from {existing}); two "
                "distributions with one entry-point name conflict, so pick another NAME unless "
                "this skeleton replaces that one",
            )
        )
    console = output_console()
    console.print(
        Text(
            f"Created {names.distribution} in {target}: backend {names.name!r}, "
            f"package {names.module}, class {names.class_prefix}Backend."
        )
    )
    for path in written:
        console.print(Text(f"  {path.relative_to(target).as_posix()}"))
    console.print(
        Text(
            f"Next: cd {target} && python -m pip install -e . pytest hypothesis && python -m pytest"
        )
    )
