"""The TOML configuration: lookup, validation with cattrs, errors that name the file and the key.

The configuration is structured through the one private converter (:mod:`._converter`), on
which this module registers :class:`Config`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
from cattrs.gen import override

from ._converter import FieldError, converter, register_class, strict_int, strict_str
from ._converter import problems as _problems
from ._converter import type_name as _type_name
from ._errors import ConfigError
from ._model import HARD_METADATA_LIMIT

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "MAX_CONFIG_DEPTH",
    "MAX_DURATION_MS",
    "Config",
    "FieldError",
    "find_config",
    "load_config",
]

#: Environment variable naming the config file when ``--config`` is not given.
CONFIG_ENV: Final = "SESSIONKEEPER_CONFIG"
#: The file looked for in the working directory when neither ``--config`` nor the env var is set.
DEFAULT_CONFIG_NAME: Final = "sessionkeeper.toml"
_TABLE: Final = "sessionkeeper"
_INFINITY: Final = "infinity"
#: The largest duration any key of the core table accepts (``cleanup_interval``,
#: ``touch_resolution``, ``default_timeout``): ten years of 365 days, in ms. Longer is a mistake
#: (and a number the scheduler's timer or a backend's 64-bit column cannot hold);
#: ``default_timeout = "infinity"`` is how sessions never expire.
MAX_DURATION_MS: Final = 10 * 365 * 24 * 3600 * 1000
#: How deep tables and arrays may nest inside ``backend_opts`` (and anywhere in the file, where
#: the TOML parser's own recursion gives up far later).
MAX_CONFIG_DEPTH: Final = 32

T = TypeVar("T")


def _bound_text(minimum: int, maximum: int) -> str:
    if maximum == MAX_DURATION_MS:
        return f"between {minimum} and {maximum} ms (ten years)"
    return f"between {minimum} and {maximum}"


def _check_bounds(value: int, minimum: int, maximum: int) -> None:
    """Raise ``ValueError`` unless ``minimum <= value <= maximum``."""
    if not minimum <= value <= maximum:
        raise ValueError(f"must be {_bound_text(minimum, maximum)}, got {value}")


def _between(minimum: int, maximum: int) -> Any:
    """An attrs validator (for a Config built directly in code) naming the field."""

    def check(_: object, attribute: attrs.Attribute[int], value: int) -> None:
        try:
            _check_bounds(value, minimum, maximum)
        except ValueError as exc:
            raise FieldError(attribute.name, str(exc)) from None

    return check


def _timeout_bounds(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and not 0 < value <= MAX_DURATION_MS:
        raise FieldError(attribute.name, _TIMEOUT_EXPECTED)


_TIMEOUT_EXPECTED: Final = (
    f"must be between 1 and {MAX_DURATION_MS} ms (ten years), "
    f'or "{_INFINITY}" for sessions that never expire'
)


def _backend_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, _BACKEND_EXPECTED)


_BACKEND_EXPECTED: Final = 'must name an installed backend (e.g. "memory")'


@attrs.frozen(kw_only=True)
class Config:
    """Validated settings of one :class:`~sessionkeeper.SessionManager`.

    :param backend: entry-point name in ``sessionkeeper.backends``.
    :param cleanup_interval: ms between scheduled cleanups; ``0`` turns the scheduler off.
    :param touch_resolution: a fetch writes ``last_accessed`` back only when it would move by more
        than this many ms (and never by more than a tenth of the session's timeout).
    :param default_timeout: ``timeout_ms`` of sessions created without one; ``None`` (TOML:
        ``"infinity"``) means they never expire.
    :param max_metadata_bytes: the largest encoded metadata ``store`` accepts.
    :param stats: load the built-in stats wrapper plugin (counters and latencies in ``stats()``;
        costs about a microsecond per operation).
    :param backend_opts: options for the backend, validated by the backend's options class.
    :param source: the file these settings were read from (``None`` when built in code).
    """

    backend: str = attrs.field(default="memory", validator=_backend_name)
    cleanup_interval: int = attrs.field(default=60_000, validator=_between(0, MAX_DURATION_MS))
    touch_resolution: int = attrs.field(default=1_000, validator=_between(0, MAX_DURATION_MS))
    default_timeout: int | None = attrs.field(default=1_800_000, validator=_timeout_bounds)
    max_metadata_bytes: int = attrs.field(
        default=65_536, validator=_between(1, HARD_METADATA_LIMIT)
    )
    stats: bool = False
    backend_opts: dict[str, Any] = attrs.field(factory=dict)
    source: Path | None = attrs.field(default=None, eq=False)

    @property
    def base_dir(self) -> Path:
        """Where relative ``backend_opts`` paths are resolved: the file's directory, or the cwd."""
        return self.source.parent if self.source is not None else Path.cwd()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: Path | None = None) -> Config:
        """Validate the contents of a ``[sessionkeeper]`` table (or keyword arguments).

        ``backend_opts`` are validated too, by the backend's own options class, when that
        backend is installed (it is imported, never opened); a backend that is not installed is
        reported when a manager opens it. One :class:`~sessionkeeper.ConfigError` names every
        key at fault.
        """
        data = dict(data)
        problems: list[tuple[str, str]] = []
        config: Config | None = None
        try:
            config = converter.structure(data, cls)
        except Exception as exc:  # cattrs wraps validator and hook errors in (nested) groups
            problems.extend(_problems(exc, _TABLE) or [(_TABLE, str(exc))])
        problems.extend(_backend_option_problems(data))
        if problems or config is None:
            raise _config_error(problems, source)
        return attrs.evolve(config, source=source)


# --- the configuration's hooks on the converter -----------------------------------------------


def _timeout(value: object, _: type) -> int | None:
    if value is None or value == _INFINITY:
        return None
    if type(value) is not int:
        raise TypeError(f'expected milliseconds (an integer) or "{_INFINITY}", got {value!r}')
    if not 0 < value <= MAX_DURATION_MS:
        raise ValueError(f"{_TIMEOUT_EXPECTED}, got {value}")
    return value


def _bounded_int(minimum: int, maximum: int) -> Any:
    """A struct hook: an integer within bounds (checked here so that cattrs collects every
    key at fault, not only the first validator that fails)."""

    def hook(value: object, _: type) -> int:
        number = strict_int(value, int)
        _check_bounds(number, minimum, maximum)
        return number

    return hook


def _backend_hook(value: object, _: type) -> str:
    name = strict_str(value, str)
    if not name.strip():
        raise ValueError(_BACKEND_EXPECTED)
    return name


def _options_table(value: object, _: type) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a table, got {_type_name(value)} {value!r}")
    where = _too_deep(value, 0)
    if where is not None:
        raise ValueError(f"nested deeper than {MAX_CONFIG_DEPTH} levels (at {where})")
    return value


def _too_deep(value: object, depth: int) -> str | None:
    """The dotted path at which ``value`` nests deeper than :data:`MAX_CONFIG_DEPTH`, or None.

    Iterative, so that no depth of input can exhaust the interpreter's stack."""
    stack: list[tuple[object, int, str]] = [(value, depth, "")]
    while stack:
        item, level, where = stack.pop()
        if not isinstance(item, dict | list):
            continue
        if level >= MAX_CONFIG_DEPTH:
            return where or "the top"
        children = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in children:
            stack.append((child, level + 1, f"{where}.{key}" if where else str(key)))
    return None


register_class(
    Config,
    backend=override(struct_hook=_backend_hook),
    cleanup_interval=override(struct_hook=_bounded_int(0, MAX_DURATION_MS)),
    touch_resolution=override(struct_hook=_bounded_int(0, MAX_DURATION_MS)),
    max_metadata_bytes=override(struct_hook=_bounded_int(1, HARD_METADATA_LIMIT)),
    default_timeout=override(struct_hook=_timeout),
    backend_opts=override(struct_hook=_options_table),
    source=override(omit=True),
)


def _config_error(problems: list[tuple[str, str]], source: Path | None) -> ConfigError:
    """One error naming every ``(key, message)`` problem; ``key`` is the first one's."""
    text = "; ".join(f"{key}: {message}" for key, message in problems)
    return ConfigError(
        f"invalid configuration: {text}", path=source, key=problems[0][0] if problems else None
    )


def _option_problems(
    data: Mapping[str, Any], cls: type[Any], prefix: str
) -> tuple[Any, list[tuple[str, str]]]:
    """Structure ``cls`` from ``data``: ``(result, [])`` or ``(None, every problem)``."""
    try:
        return converter.structure(dict(data), cls), []
    except RecursionError:
        return None, [(prefix, f"nested deeper than {MAX_CONFIG_DEPTH} levels")]
    except Exception as exc:  # cattrs wraps validator and hook errors in (nested) groups
        return None, _problems(exc, prefix) or [(prefix, str(exc))]


def _backend_option_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the configured backend's options class says of ``backend_opts``, when the backend
    is installed and imports (imported, never opened); nothing otherwise: a missing or broken
    backend is reported, with its install hint, when a manager opens it."""
    from ._errors import SessionKeeperError
    from ._plugins import installed_backends, load_backend_class

    backend = data.get("backend", "memory")
    options = data.get("backend_opts", {})
    if type(backend) is not str or not isinstance(options, dict) or _too_deep(options, 0):
        return []  # the core table's own check names these
    try:
        if backend not in installed_backends():
            return []
        backend_cls = load_backend_class(backend)
    except SessionKeeperError:
        return []
    _, problems = _option_problems(options, backend_cls.options_class, f"{_TABLE}.backend_opts")
    return problems


def structure(data: Mapping[str, Any], cls: type[T], *, source: Path | None, prefix: str) -> T:
    """Build ``cls`` from ``data`` with the strict converter; raise one :class:`ConfigError`.

    The message lists every problem as ``key: what was expected``; keys are dotted from
    ``prefix`` (``sessionkeeper.backend_opts.file_path``).
    """
    result, problems = _option_problems(data, cls, prefix)
    if problems:
        raise _config_error(problems, source)
    return result  # type: ignore[no-any-return]


def _no_file_note() -> str:
    return (
        f"no config file was found (none was named, ${CONFIG_ENV} is not set, and there is no "
        f"{DEFAULT_CONFIG_NAME} in {Path.cwd()}), so the default settings apply"
    )


def find_config(
    path: str | os.PathLike[str] | None = None, *, named_by: str = "the path given"
) -> Path | None:
    """The config file: ``path``, else ``$SESSIONKEEPER_CONFIG``, else ``./sessionkeeper.toml``.

    Returns ``None`` when none is given and the default file does not exist (use the defaults).
    An explicitly named file that does not exist is an error whose message says what named it:
    ``named_by`` (the CLI passes ``"--config"``), or the environment variable.
    """
    if path is not None:
        candidate, origin = Path(path), named_by
    elif os.environ.get(CONFIG_ENV):
        candidate, origin = Path(os.environ[CONFIG_ENV]), f"${CONFIG_ENV}"
    else:
        default = Path(DEFAULT_CONFIG_NAME)
        return default.resolve() if default.is_file() else None
    if not candidate.is_file():
        what = (
            "is a directory, not a config file" if candidate.is_dir() else "config file not found"
        )
        raise ConfigError(f"{what} (named by {origin})", path=candidate.absolute())
    return candidate.resolve()


def load_config(
    path: str | os.PathLike[str] | None = None, *, named_by: str = "the path given"
) -> Config:
    """Find, read and validate the configuration (lookup order: ``path``, else
    ``$SESSIONKEEPER_CONFIG``, else ``./sessionkeeper.toml``, else the defaults).

    Returns the validated :class:`Config`, ``backend_opts`` included (checked by the backend's
    own options class when it is installed), without opening anything. Raises
    :class:`~sessionkeeper.ConfigError` naming the file and every key at fault for malformed or
    too deeply nested TOML, a missing ``[sessionkeeper]`` table, unknown keys, wrong types and
    values out of bounds. ``named_by`` says, in the error for a missing file, what named
    ``path`` (``"--config"`` in the CLI). With no file at all, the defaults apply, and a default
    backend that is not installed raises :class:`~sessionkeeper.BackendNotFound` saying so.
    """
    source = find_config(path, named_by=named_by)
    if source is None:
        config = Config()
        from ._plugins import installed_backends, load_backend_class

        if config.backend not in installed_backends():
            load_backend_class(config.backend, note=_no_file_note())
        return config
    try:
        with source.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=source) from None
    except RecursionError:
        raise ConfigError(
            "not valid TOML for sessionkeeper: arrays or tables nested too deeply", path=source
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not valid TOML: not UTF-8 text (byte {exc.start}: {exc.reason})", path=source
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=source) from None
    table = document.get(_TABLE)
    if table is None:
        raise ConfigError(
            f'no [{_TABLE}] table (expected e.g. [{_TABLE}] backend = "memory")', path=source
        )
    if not isinstance(table, dict):
        raise ConfigError(f"{_TABLE} must be a table", path=source, key=_TABLE)
    return Config.from_mapping(table, source=source)


def structure_options(
    options_class: type[T], options: Mapping[str, Any], *, source: Path | None
) -> T:
    """Validate ``backend_opts`` with the backend's own attrs options class."""
    return structure(dict(options), options_class, source=source, prefix=f"{_TABLE}.backend_opts")
