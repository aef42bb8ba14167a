"""What a backend author needs: the hook marker, the backend contract and the shared helpers.

Applications use the package root (:mod:`sessionkeeper`); a backend plugin imports from here:
``from sessionkeeper.backend import hookimpl, BackendContext, Capabilities, ...``. The names are
defined in private modules and re-exported here so that their home can move without breaking a
plugin. The hook specification itself is :mod:`sessionkeeper.hookspecs`; the conformance kit is
:mod:`sessionkeeper.testing`.
"""

from __future__ import annotations

from ._backend import BackendContext, BackendPlugin, Capabilities, NoOptions
from ._codec import FORMAT_VERSION, decode_session, encode_session
from ._config import FieldError
from ._errors import CodecError, PluginValidationError
from ._expiry import ExpiryIndex
from ._manager import Clock, check_store, system_clock
from ._plugins import installed_plugins
from .hookspecs import hookimpl

__all__ = [
    "FORMAT_VERSION",
    "BackendContext",
    "BackendPlugin",
    "Capabilities",
    "Clock",
    "CodecError",
    "ExpiryIndex",
    "FieldError",
    "NoOptions",
    "PluginValidationError",
    "check_store",
    "decode_session",
    "encode_session",
    "hookimpl",
    "installed_plugins",
    "system_clock",
]
