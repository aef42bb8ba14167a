"""The one cattrs converter: the configuration and the export format are structured through it.

Both read untrusted data (a TOML file, the lines of an export) into frozen attrs classes, and
both want the same strictness: types checked as they are (``"5"`` is not an integer, ``1`` is
not a boolean), unknown keys refused, and every problem reported with its dotted key rather
than the first one only. So there is one :data:`converter`, with the strict hooks of the simple
types registered here; :mod:`._config` registers the configuration's classes on it and
:mod:`._export_format` the export records. :func:`problems` turns what cattrs raises (nested
exception groups) into ``(dotted key, message)`` pairs for the errors each of them raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn

__all__ = [
    "FieldError",
    "converter",
    "problems",
    "register_class",
    "strict_bool",
    "strict_int",
    "strict_str",
    "type_name",
]


class FieldError(ValueError):
    """Raised by options-class validators: names the field so the error names the key.

    Backends may raise it from their own attrs validators too.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def type_name(value: object) -> str:
    """The name of ``value``'s type, for messages (``int``, ``str``)."""
    return type(value).__name__


def strict_int(value: object, _: type) -> int:
    """An integer, and only an integer (not a bool, a float or a numeric string)."""
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type_name(value)} {value!r}")
    return value


def strict_bool(value: object, _: type) -> bool:
    """``True`` or ``False`` (not 0, 1 or "true")."""
    if type(value) is not bool:
        raise TypeError(f"expected true or false, got {type_name(value)} {value!r}")
    return value


def strict_str(value: object, _: type) -> str:
    """A string, and only a string."""
    if type(value) is not str:
        raise TypeError(f"expected a string, got {type_name(value)} {value!r}")
    return value


def _strict_float(value: object, _: type) -> float:
    if type(value) not in (int, float):
        raise TypeError(f"expected a number, got {type_name(value)} {value!r}")
    return float(value)  # type: ignore[arg-type]


def _strict_path(value: object, _: type) -> Path:
    return Path(strict_str(value, str))


def _optional_int(value: object, _: type) -> int | None:
    return None if value is None else strict_int(value, int)


def _optional_str(value: object, _: type) -> str | None:
    return None if value is None else strict_str(value, str)


#: The converter. Unknown keys are errors everywhere; a class with hooks of its own for some
#: fields is registered with :func:`register_class`.
converter = cattrs.Converter(forbid_extra_keys=True)
converter.register_structure_hook(int, strict_int)
converter.register_structure_hook(bool, strict_bool)
converter.register_structure_hook(str, strict_str)
converter.register_structure_hook(float, _strict_float)
converter.register_structure_hook(Path, _strict_path)
converter.register_structure_hook(int | None, _optional_int)
converter.register_structure_hook(str | None, _optional_str)


def register_class(cls: type[Any], **overrides: Any) -> None:
    """Structure ``cls`` with its fields' ``overrides`` (:func:`cattrs.gen.override`), refusing
    unknown keys."""
    converter.register_structure_hook(
        cls,
        make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=True, **overrides),
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


def problems(exc: BaseException, prefix: str) -> list[tuple[str, str]]:
    """``(dotted key, message)`` for every leaf error cattrs collected in ``exc``; keys start
    with ``prefix``."""
    if not isinstance(exc, cattrs.BaseValidationError):
        return [(prefix, f"{type(exc).__name__}: {exc}")]
    found: list[tuple[str, str]] = []
    for line in cattrs.transform_error(exc, path=prefix, format_exception=_format):
        text, _, where = line.rpartition(" @ ")
        for part in text.split("|"):
            key, sep, message = part.partition("\0")
            found.append((f"{where}.{key}", message) if sep else (where, part))
    return found
