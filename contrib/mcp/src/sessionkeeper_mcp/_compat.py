"""The one place that knows which ``mcp`` SDK is installed and how its private parts look.

The integration subclasses :class:`mcp.server.streamable_http_manager.StreamableHTTPSessionManager`
and uses private helpers of it (``_admit_session``'s transport arguments,
``_serve_opening_request``, ``_discard_session``, ``_server_instances``, ``_session_owners``).
Those exist, with the same meaning, in the SDK releases listed in :data:`SUPPORTED_SDK`; any other
release is refused at import time with an :class:`UnsupportedSDK` error naming them.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

__all__ = [
    "SDK_GENERATION",
    "SDK_VERSION",
    "SKIP_VERSION_CHECK_ENV",
    "SUPPORTED_SDK",
    "UnsupportedSDK",
    "check_sdk",
    "dump_message",
    "load_message",
]

#: The ``mcp`` releases this integration is built and tested against: (major, minor) lines.
SUPPORTED_LINES: Final = ((1, 30), (2, 3))
#: The same, as a pip requirement (what ``pyproject.toml`` pins).
SUPPORTED_SDK: Final = "mcp 1.30.x or 2.3.x (pip install 'mcp>=1.30,<2.4,!=2.0.*,!=2.1.*,!=2.2.*')"
#: Set to any non-empty value to run on an ``mcp`` release outside :data:`SUPPORTED_SDK` (the
#: structural check of the private parts still runs); for trying a new SDK release, not for
#: production.
SKIP_VERSION_CHECK_ENV: Final = "SESSIONKEEPER_MCP_SKIP_VERSION_CHECK"

# The private members of StreamableHTTPSessionManager the integration relies on.
_MANAGER_MEMBERS: Final = (
    "_handle_stateful_request",
    "_admit_session",
    "_serve_opening_request",
    "_discard_session",
)
_MANAGER_ATTRIBUTES: Final = ("_server_instances", "_session_owners", "_task_group")


class UnsupportedSDK(ImportError):
    """The installed ``mcp`` SDK is not one this integration supports.

    :param found: the installed version (or ``None`` when ``mcp`` is not installed).
    :param reason: what is wrong with it.
    """

    def __init__(self, found: str | None, reason: str) -> None:
        self.found = found
        self.reason = reason
        installed = f"mcp {found}" if found is not None else "no mcp SDK"
        super().__init__(f"sessionkeeper-mcp supports {SUPPORTED_SDK}; found {installed}: {reason}")


def _installed_version() -> str | None:
    try:
        return version("mcp")
    except PackageNotFoundError:
        return None


def _line(text: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def check_sdk(found: str | None = None, *, skip_version_check: bool | None = None) -> str:
    """Check that the installed ``mcp`` release is supported; return its version.

    :param found: the version to check (default: the installed one).
    :param skip_version_check: accept any version whose private parts look right (default:
        :data:`SKIP_VERSION_CHECK_ENV` is set).
    :raises UnsupportedSDK: naming :data:`SUPPORTED_SDK` and what is wrong.
    """
    found = _installed_version() if found is None else found
    if found is None:
        raise UnsupportedSDK(None, "install the mcp package")
    if skip_version_check is None:
        skip_version_check = bool(os.environ.get(SKIP_VERSION_CHECK_ENV))
    if not skip_version_check and _line(found) not in SUPPORTED_LINES:
        raise UnsupportedSDK(
            found,
            "the integration uses private parts of the SDK's session manager that differ between "
            f"releases (set {SKIP_VERSION_CHECK_ENV}=1 to try it anyway)",
        )
    try:
        from mcp.server import streamable_http_manager
    except ImportError as exc:
        raise UnsupportedSDK(
            found, f"cannot import mcp.server.streamable_http_manager: {exc}"
        ) from exc
    cls = streamable_http_manager.StreamableHTTPSessionManager
    missing = [name for name in _MANAGER_MEMBERS if not callable(getattr(cls, name, None))]
    if missing:
        raise UnsupportedSDK(found, f"StreamableHTTPSessionManager has no {', '.join(missing)}")
    return found


SDK_VERSION: Final = check_sdk()
#: 1 for the ``mcp`` 1.x line, 2 for 2.x.
SDK_GENERATION: Final = int(SDK_VERSION.split(".", 1)[0])


def _message_loader() -> Callable[[Any], Any]:
    validate: Callable[[Any], Any]
    if SDK_GENERATION >= 2:
        # imported by name: the 1.x line has no mcp_types, and type-checks without it
        adapter: Any = importlib.import_module("mcp_types").jsonrpc_message_adapter
        validate = adapter.validate_python
        return validate
    from mcp import types

    model: Any = types.JSONRPCMessage  # a RootModel on the 1.x line
    validate = model.model_validate
    return validate


_load: Final = _message_loader()


def dump_message(message: Any) -> dict[str, Any]:
    """A JSON-RPC message object of the installed SDK as a JSON-compatible dict."""
    dumped: dict[str, Any] = message.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return dumped


def load_message(data: dict[str, Any]) -> Any:
    """The installed SDK's ``JSONRPCMessage`` for a dict made by :func:`dump_message`."""
    return _load(data)


def check_manager_attributes(manager: object) -> None:
    """Raise :class:`UnsupportedSDK` when a constructed manager lacks the private state we use."""
    missing = [name for name in _MANAGER_ATTRIBUTES if not hasattr(manager, name)]
    if missing:
        raise UnsupportedSDK(
            SDK_VERSION, f"StreamableHTTPSessionManager instances have no {', '.join(missing)}"
        )
