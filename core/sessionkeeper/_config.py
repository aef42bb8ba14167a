"""The TOML configuration: lookup, validation with cattrs, errors that name the file and the key.

All (de)serialisation of configuration goes through the private converter built here.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ._errors import ConfigError
from ._model import HARD_METADATA_LIMIT

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
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

T = TypeVar("T")


class FieldError(ValueError):
    """Raised by options-class validators: names the field so the error names the key.

    Backends may raise it from their own attrs validators too.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _at_least(minimum: int, maximum: int | None = None) -> Any:
    def check(_: object, attribute: attrs.Attribute[int], value: int) -> None:
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise FieldError(attribute.name, f"must be {bound}, got {value}")

    return check


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value <= 0:
        raise FieldError(
            attribute.name, f'must be > 0 ms, or "{_INFINITY}" for sessions that never expire'
        )


def _backend_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, 'must name an installed backend (e.g. "memory")')


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
    cleanup_interval: int = attrs.field(default=60_000, validator=_at_least(0))
    touch_resolution: int = attrs.field(default=1_000, validator=_at_least(0))
    default_timeout: int | None = attrs.field(default=1_800_000, validator=_positive_or_none)
    max_metadata_bytes: int = attrs.field(
        default=65_536, validator=_at_least(1, HARD_METADATA_LIMIT)
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
        """Validate the contents of a ``[sessionkeeper]`` table (or keyword arguments)."""
        config = structure(dict(data), cls, source=source, prefix=_TABLE)
        return attrs.evolve(config, source=source)


# --- the private converter -------------------------------------------------------------------

_converter = cattrs.Converter(forbid_extra_keys=True)


def _type_name(value: object) -> str:
    return type(value).__name__


def _strict_int(value: object, _: type) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {_type_name(value)} {value!r}")
    return value


def _strict_bool(value: object, _: type) -> bool:
    if type(value) is not bool:
        raise TypeError(f"expected true or false, got {_type_name(value)} {value!r}")
    return value


def _strict_str(value: object, _: type) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a string, got {_type_name(value)} {value!r}")
    return value


def _strict_float(value: object, _: type) -> float:
    if type(value) not in (int, float):
        raise TypeError(f"expected a number, got {_type_name(value)} {value!r}")
    return float(value)  # type: ignore[arg-type]


def _strict_path(value: object, _: type) -> Path:
    return Path(_strict_str(value, str))


def _timeout(value: object, _: type) -> int | None:
    if value is None or value == _INFINITY:
        return None
    if type(value) is not int:
        raise TypeError(f'expected milliseconds (an integer) or "{_INFINITY}", got {value!r}')
    return value


def _options_table(value: object, _: type) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a table, got {_type_name(value)} {value!r}")
    return value


_converter.register_structure_hook(int, _strict_int)
_converter.register_structure_hook(bool, _strict_bool)
_converter.register_structure_hook(str, _strict_str)
_converter.register_structure_hook(float, _strict_float)
_converter.register_structure_hook(Path, _strict_path)
_converter.register_structure_hook(
    int | None, lambda v, _: None if v is None else _strict_int(v, int)
)
_converter.register_structure_hook(
    Config,
    make_dict_structure_fn(
        Config,
        _converter,
        _cattrs_forbid_extra_keys=True,
        default_timeout=override(struct_hook=_timeout),
        backend_opts=override(struct_hook=_options_table),
        source=override(omit=True),
    ),
)


def _format(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        allowed = ""
        if exc.cl is not None and attrs.has(exc.cl):
            names = [a.name for a in attrs.fields(exc.cl) if a.init and a.name != "source"]
            allowed = f" (allowed: {', '.join(names) or 'none'})"
        return "|".join(f"{key}\0unknown key{allowed}" for key in sorted(exc.extra_fields))
    if isinstance(exc, FieldError):
        return f"{exc.field}\0{exc}"
    if isinstance(exc, KeyError):
        return "required key is missing"
    if isinstance(exc, TypeError | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _problems(exc: BaseException, prefix: str) -> list[tuple[str, str]]:
    """``(dotted key, message)`` for every leaf error cattrs collected."""
    if not isinstance(exc, cattrs.BaseValidationError):
        return [(prefix, f"{type(exc).__name__}: {exc}")]
    found: list[tuple[str, str]] = []
    for line in cattrs.transform_error(exc, path=prefix, format_exception=_format):
        text, _, where = line.rpartition(" @ ")
        for part in text.split("|"):
            key, sep, message = part.partition("\0")
            found.append((f"{where}.{key}", message) if sep else (where, part))
    return found


def structure(data: Mapping[str, Any], cls: type[T], *, source: Path | None, prefix: str) -> T:
    """Build ``cls`` from ``data`` with the strict converter; raise one :class:`ConfigError`.

    The message lists every problem as ``key: what was expected``; keys are dotted from
    ``prefix`` (``sessionkeeper.backend_opts.file_path``).
    """
    try:
        return _converter.structure(data, cls)
    except Exception as exc:  # cattrs wraps validator and hook errors in (nested) groups
        problems = _problems(exc, prefix) or [(prefix, str(exc))]
        text = "; ".join(f"{key}: {message}" for key, message in problems)
        raise ConfigError(
            f"invalid configuration: {text}", path=source, key=problems[0][0]
        ) from None


def find_config(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file: ``path``, else ``$SESSIONKEEPER_CONFIG``, else ``./sessionkeeper.toml``.

    Returns ``None`` when none is given and the default file does not exist (use the defaults).
    An explicitly named file that does not exist is an error.
    """
    if path is not None:
        candidate, origin = Path(path), "--config"
    elif os.environ.get(CONFIG_ENV):
        candidate, origin = Path(os.environ[CONFIG_ENV]), f"${CONFIG_ENV}"
    else:
        default = Path(DEFAULT_CONFIG_NAME)
        return default.resolve() if default.is_file() else None
    if not candidate.is_file():
        raise ConfigError(f"config file not found (named by {origin})", path=candidate)
    return candidate.resolve()


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Find, read and validate the configuration (DESIGN §4 lookup order).

    Raises :class:`~sessionkeeper.ConfigError` naming the file and the key for malformed TOML, a
    missing ``[sessionkeeper]`` table, unknown keys and wrong types.
    """
    source = find_config(path)
    if source is None:
        return Config()
    try:
        with source.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=source) from None
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
