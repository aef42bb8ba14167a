"""The errors :class:`~sessionkeeper_mcp.SessionStateStore` raises, as py-key-value raises them.

A py-key-value ``AsyncKeyValue`` store reports a bad ``ttl`` with ``InvalidTTLError``, a value it
cannot serialize with ``SerializationError`` and a value over a size limit with
``ValueTooLargeError`` (all from ``key_value.aio.errors``); FastMCP catches the first two by those
types. When py-key-value is installed (FastMCP depends on it) these functions build its own
error objects; without it, they build the classes below, which carry the same names and
messages and are ``ValueError``s.
"""

from __future__ import annotations

import importlib
from typing import Any, Final

__all__ = [
    "KEY_VALUE_ERRORS",
    "InvalidTTLError",
    "SerializationError",
    "ValueTooLargeError",
    "invalid_ttl",
    "serialization_error",
    "value_too_large",
]


class _FallbackError(ValueError):
    """An error of :class:`~sessionkeeper_mcp.SessionStateStore` without py-key-value."""

    def __init__(self, message: str, extra_info: dict[str, Any] | None = None) -> None:
        extra = ";".join(f"{k}: {v}" for k, v in (extra_info or {}).items())
        self.message = f"{message}: ({extra})" if extra else message
        self.extra_info = extra_info
        super().__init__(self.message)


class InvalidTTLError(_FallbackError):
    """A ``ttl`` that is not a positive, finite number of seconds (or ``None``)."""


class SerializationError(_FallbackError):
    """A value the store cannot keep: not JSON-compatible."""


class ValueTooLargeError(_FallbackError):
    """A value over the store's size limit."""


def _errors_module() -> Any:
    try:
        return importlib.import_module("key_value.aio.errors")
    except ImportError:
        return None


_KV: Final = _errors_module()
#: True when the errors raised are py-key-value's own (``key_value.aio.errors``).
KEY_VALUE_ERRORS: Final = _KV is not None


def invalid_ttl(ttl: object, reason: str) -> Exception:
    """py-key-value's ``InvalidTTLError`` for ``ttl`` (what is wrong in ``extra_info``)."""
    if _KV is not None:
        error: Exception = _KV.InvalidTTLError(ttl=ttl, extra_info={"reason": reason})
        return error
    return InvalidTTLError("A TTL is invalid.", {"ttl": str(ttl), "reason": reason})


def serialization_error(collection: str, key: str, cause: str) -> Exception:
    """py-key-value's ``SerializationError`` for the value of ``key``."""
    message = f"Failed to serialize the value of key {key!r} (collection {collection!r}): {cause}"
    if _KV is not None:
        error: Exception = _KV.SerializationError(message)
        return error
    return SerializationError(message)


def value_too_large(size: int, max_size: int, collection: str, key: str) -> Exception:
    """py-key-value's ``ValueTooLargeError``: its message names ``size`` and ``max_size``."""
    if _KV is not None:
        error: Exception = _KV.ValueTooLargeError(
            size=size, max_size=max_size, collection=collection, key=key
        )
        return error
    return ValueTooLargeError(
        "Value size exceeds the maximum allowed size.",
        {"size": size, "max_size": max_size, "collection": collection, "key": key},
    )
