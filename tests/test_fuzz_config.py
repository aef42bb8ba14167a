"""Hostile input at the config door: arbitrary TOML documents into :func:`load_config` and
arbitrary mappings into :meth:`Config.from_mapping`.

Whatever the input, the answer is a valid :class:`~sessionkeeper.Config` (every number within
its documented bounds, and its ``backend_opts`` accepted by the backend's options class when the
backend is installed) or a :class:`~sessionkeeper.ConfigError` whose message names the key at
fault; never another exception (``RecursionError``, ``OverflowError``, a cattrs group, a
``TypeError`` from deep inside).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionkeeper import Config, ConfigError, load_config
from sessionkeeper._config import MAX_DURATION_MS, structure_options
from sessionkeeper._model import HARD_METADATA_LIMIT
from sessionkeeper._plugins import installed_backends, load_backend_class

pytestmark = pytest.mark.fuzz

KEYS = (
    "backend",
    "cleanup_interval",
    "touch_resolution",
    "default_timeout",
    "max_metadata_bytes",
    "stats",
    "backend_opts",
)
#: Backend names worth drawing: installed ones (options are checked), near misses, and junk.
BACKENDS = st.sampled_from(["memory", "sqlitedict", "reddis", "", " ", "nosuch"]) | st.text(
    max_size=12
)
#: Numbers around every bound the config has, and far past them.
EDGES = [0, 1, -1, MAX_DURATION_MS, MAX_DURATION_MS + 1, HARD_METADATA_LIMIT, 2**63, 10**20]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(EDGES)
    | st.floats()
    | st.text(max_size=20)
    | st.just("infinity")
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
option_tables = st.dictionaries(
    st.sampled_from(["table_name", "file_path", "auto_save", "shared"]) | st.text(max_size=10),
    values,
    max_size=4,
)
numbers = st.integers() | st.sampled_from(EDGES)
#: Tables whose values have the right types, so that bounds (not types) decide.
plausible_tables = st.fixed_dictionaries(
    {},
    optional={
        "backend": st.sampled_from(["memory", "memory", "nosuch"]),
        "cleanup_interval": numbers,
        "touch_resolution": numbers,
        "default_timeout": numbers | st.just("infinity"),
        "max_metadata_bytes": numbers,
        "stats": st.booleans(),
        "backend_opts": st.dictionaries(
            st.sampled_from(["table_name", "tabel"]), st.text(max_size=5) | numbers, max_size=2
        ),
    },
)
tables = (
    plausible_tables
    | st.fixed_dictionaries(
        {},
        optional={
            "backend": BACKENDS | values,
            "cleanup_interval": values,
            "touch_resolution": values,
            "default_timeout": values,
            "max_metadata_bytes": values,
            "stats": values,
            "backend_opts": option_tables | values,
        },
    )
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), values, max_size=6)
)


def outcome(run: Callable[[], Config]) -> Config | ConfigError:
    """What ``run()`` gives: a Config, or the ConfigError it raised. Any other exception
    propagates and fails the test."""
    try:
        return run()
    except ConfigError as exc:
        return exc


def check_outcome(result: Config | ConfigError, *, path: Path | None = None) -> None:
    """A ConfigError names a key of the ``sessionkeeper`` table (or the whole file), and the
    file when there is one; a Config is within every bound, its options accepted."""
    if isinstance(result, ConfigError):
        message = str(result)
        if result.key is not None:
            assert result.key in message
            assert result.key.split(".")[0] == "sessionkeeper"
        else:
            assert path is not None, message  # only a file as a whole can be at fault
        if path is not None:
            assert result.path == path.resolve()
            assert message.startswith(f"{path.resolve()}: ")
        return
    assert isinstance(result, Config)
    assert 0 <= result.cleanup_interval <= MAX_DURATION_MS
    assert 0 <= result.touch_resolution <= MAX_DURATION_MS
    assert result.default_timeout is None or 0 < result.default_timeout <= MAX_DURATION_MS
    assert 1 <= result.max_metadata_bytes <= HARD_METADATA_LIMIT
    assert type(result.stats) is bool
    if result.backend in installed_backends():
        backend = load_backend_class(result.backend)
        options = structure_options(backend.options_class, result.backend_opts, source=None)
        assert type(options) is backend.options_class


@given(tables)
def test_arbitrary_mappings_give_a_config_or_a_named_config_error(table: dict[str, Any]) -> None:
    """Config.from_mapping of any mapping of TOML-like values: a Config within bounds, or a
    ConfigError naming the key."""
    check_outcome(outcome(lambda: Config.from_mapping(table)))


def toml_value(value: Any) -> str:
    """``value`` as a TOML inline value (strings and keys through JSON escapes)."""
    if value is None:
        return '"infinity"'  # TOML has no null; the one string a key gives meaning to
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(table: dict[str, Any]) -> str:
    return "[sessionkeeper]\n" + "".join(
        f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in table.items()
    )


#: Text made of TOML's own punctuation, to reach the parser's error paths and its recursion.
toml_noise = st.text(alphabet="[]{}=\"'.,#\n\\ abc0123456789-+:_", max_size=200)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        tables.map(toml_document),
        toml_noise,
        toml_noise.map(lambda noise: "[sessionkeeper]\n" + noise),
        st.integers(min_value=1, max_value=5000).map(
            lambda depth: "[sessionkeeper]\nbackend_opts = " + "[" * depth + "]" * depth
        ),
        st.integers(min_value=1, max_value=200_000).map(
            lambda depth: "[sessionkeeper]\nx = " + "{a=" * depth + "1" + "}" * depth
        ),
        st.binary(max_size=100).map(lambda data: data.decode("latin-1")),
    )
)
def test_arbitrary_toml_documents_give_a_config_or_a_config_error(document: str) -> None:
    """load_config of any document: a valid Config, or a ConfigError naming the file (and the
    key, when one key is at fault); never RecursionError or another exception."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "sessionkeeper.toml"
        path.write_text(document, encoding="utf-8", errors="surrogatepass")
        check_outcome(outcome(lambda: load_config(path)), path=path)
