"""The public import layout: the user API at the root, three public submodules for the rest.

An application imports from ``sessionkeeper``; a backend author from ``sessionkeeper.backend``;
transfers and metrics have their own modules. The names that moved out of the root keep working
for a release, with a warning that names their new home. The expected layout is written out here
(not read from the package), so a name that moves or disappears by accident fails a test.
"""

from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path
from types import ModuleType

import pytest

import sessionkeeper

DOCS = Path(__file__).resolve().parents[1] / "docs"

USER_API = {
    "Session",
    "SessionManager",
    "AsyncSessionManager",
    "Config",
    "load_config",
    "find_config",
    "CONFIG_ENV",
    "generate_id",
    "validate_id",
    "installed_backends",
    "SessionKeeperError",
    "ConfigError",
    "SessionNotFound",
    "VersionConflict",
    "Unsupported",
    "StorageError",
    "ManagerClosed",
    "InvalidSession",
    "BackendNotFound",
}

SUBMODULES = {
    "sessionkeeper.backend": {
        "hookimpl",
        "BackendContext",
        "BackendPlugin",
        "Capabilities",
        "NoOptions",
        "Clock",
        "system_clock",
        "ExpiryIndex",
        "encode_session",
        "decode_session",
        "FORMAT_VERSION",
        "CodecError",
        "FieldError",
        "PluginValidationError",
        "check_store",
        "installed_plugins",
    },
    "sessionkeeper.transfer": {
        "export_sessions",
        "import_sessions",
        "migrate_sessions",
        "ExportReport",
        "ImportReport",
        "MigrationReport",
        "ExportWriter",
        "ExportReader",
        "ExportHeader",
        "LineError",
        "SessionDigest",
        "EXPORT_FORMAT",
        "EXPORT_VERSION",
        "ExportError",
        "ExportFormatError",
        "TransferAborted",
        "VerificationFailed",
    },
    "sessionkeeper.metrics": {
        "MetricsCollector",
        "MetricsServer",
        "METRIC_NAMES",
        "metrics_registry",
        "metrics_text",
        "start_metrics_server",
    },
}

#: Every name the root exported before the split and that now lives in a submodule.
MOVED = [(name, module) for module, names in SUBMODULES.items() for name in sorted(names)]

PUBLIC_MODULES = ["sessionkeeper", *SUBMODULES]


def test_root_exports_exactly_the_user_api() -> None:
    """``sessionkeeper.__all__`` is the user API and nothing else (58 names before the split)."""
    assert set(sessionkeeper.__all__) == USER_API
    assert len(sessionkeeper.__all__) == len(USER_API)


@pytest.mark.parametrize("module_name", list(SUBMODULES))
def test_submodule_exports_its_layout(module_name: str) -> None:
    """Each public submodule's ``__all__`` is the documented set, with no duplicate entry."""
    module = importlib.import_module(module_name)
    assert set(module.__all__) == SUBMODULES[module_name]
    assert len(module.__all__) == len(set(module.__all__))


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_exported_name_resolves(module_name: str) -> None:
    """Every name in a public module's ``__all__`` is an attribute of it, got without a warning,
    and the module says what it is for in a docstring."""
    module = importlib.import_module(module_name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in module.__all__:
            getattr(module, name)
    assert module.__doc__ is not None
    assert module.__doc__.strip()


def test_star_import_of_the_root_is_the_user_api_without_warnings() -> None:
    """``from sessionkeeper import *`` binds the user API and warns about nothing."""
    namespace: dict[str, object] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec("from sessionkeeper import *", namespace)
    assert set(namespace) - {"__builtins__"} == USER_API


def test_no_name_is_exported_twice() -> None:
    """No name appears in the ``__all__`` of two public modules: each has one home."""
    seen: dict[str, str] = {}
    for module_name in PUBLIC_MODULES:
        for name in importlib.import_module(module_name).__all__:
            assert name not in seen, f"{name} is exported by {seen[name]} and {module_name}"
            seen[name] = module_name


@pytest.mark.parametrize(("name", "module_name"), MOVED, ids=[name for name, _ in MOVED])
def test_moved_name_warns_with_its_new_home(name: str, module_name: str) -> None:
    """A name that moved still resolves from the root to the same object, with a
    DeprecationWarning that names the module to import it from; the warning points at the
    caller's line."""
    new_home: ModuleType = importlib.import_module(module_name)
    with pytest.warns(DeprecationWarning, match=re.escape(f"{module_name}.{name}")) as record:
        value = getattr(sessionkeeper, name)
    assert value is getattr(new_home, name)
    (warning,) = record
    message = str(warning.message)
    assert f"{module_name}.{name}" in message
    assert f"from {module_name} import {name}" in message
    assert warning.filename == __file__


def test_from_import_of_a_moved_name_warns() -> None:
    """``from sessionkeeper import hookimpl`` (the form plugins used) still works and warns."""
    namespace: dict[str, object] = {}
    with pytest.warns(DeprecationWarning, match=r"sessionkeeper\.backend\.hookimpl"):
        exec("from sessionkeeper import hookimpl", namespace)
    assert namespace["hookimpl"] is importlib.import_module("sessionkeeper.backend").hookimpl


def test_unknown_root_name_is_an_attribute_error_without_warning() -> None:
    """A name that never existed is an AttributeError naming it, not a deprecation."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no_such_name"):
            _ = sessionkeeper.no_such_name  # type: ignore[attr-defined]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_on_the_api_page(module_name: str) -> None:
    """api.md (or hooks.md, for the marker) has an autodoc entry for every exported name,
    under its public module's path."""
    pages = (DOCS / "api.md").read_text(encoding="utf-8") + (DOCS / "hooks.md").read_text(
        encoding="utf-8"
    )
    prefix = re.escape(module_name)
    documented = set(re.findall(rf"^\.\. \w+:: {prefix}\.(\w+)\s*$", pages, re.M))
    if module_name == "sessionkeeper.backend":
        # The marker's reference is on hooks.md, where it is defined.
        documented |= set(re.findall(r"^\.\. \w+:: sessionkeeper\.hookspecs\.(\w+)", pages, re.M))
    exported = set(importlib.import_module(module_name).__all__)
    assert exported - documented == set()
