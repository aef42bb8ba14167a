"""Code written inline in the docs (not included from docs/examples) is checked too.

Every fenced ``toml`` block that configures sessionkeeper must validate: the ``[sessionkeeper]``
table through the core's config converter and ``backend_opts`` through the named backend's own
options class (the backend is imported, never opened). Every fenced ``python`` block must compile,
and every name it imports from sessionkeeper's distributions must exist, so the docs cannot drift
from the API.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import tomllib
from pathlib import Path

import attrs
import pytest

from sessionkeeper import Config
from sessionkeeper._config import structure_options
from sessionkeeper._plugins import load_backend_class

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>toml|python)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)
#: Top-level packages whose imports are checked (third-party ones are not ours to check).
OURS = ("sessionkeeper",)
#: Distributions tested in nox sessions of their own (see OWN_SESSIONS in noxfile.py): their
#: pages' blocks are checked there (``nox -s mcp`` runs this file with ``-k mcp.md``).
OWN_SESSION_PACKAGES = ("sessionkeeper_mcp",)


def blocks(lang: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for number, match in enumerate(FENCE.finditer(text), start=1):
            if match["lang"] == lang:
                body = "\n".join(
                    line.removeprefix(match["indent"]) for line in match["body"].splitlines()
                )
                found.append((f"{page.name}#{number}", body))
    return found


TOML_BLOCKS = blocks("toml")
PYTHON_BLOCKS = blocks("python")


@pytest.mark.parametrize(("where", "body"), TOML_BLOCKS, ids=[w for w, _ in TOML_BLOCKS])
def test_inline_toml_validates(where: str, body: str) -> None:
    """An inline TOML example parses, and its sessionkeeper table and backend_opts validate."""
    document = tomllib.loads(body)
    table = document.get("sessionkeeper")
    if table is None:
        pytest.skip(f"{where} configures something else")  # e.g. a tool's own table
    config = Config.from_mapping(table)
    backend = load_backend_class(config.backend)
    options = structure_options(backend.options_class, config.backend_opts, source=None)
    assert type(options) is backend.options_class
    given = {
        field.name: getattr(options, field.name)
        for field in attrs.fields(backend.options_class)
        if field.name in config.backend_opts
    }
    assert set(given) == set(config.backend_opts), f"{where}: options the class dropped"


@pytest.mark.parametrize(("where", "body"), PYTHON_BLOCKS, ids=[w for w, _ in PYTHON_BLOCKS])
def test_inline_python_compiles_and_imports_exist(where: str, body: str) -> None:
    """An inline Python example compiles, and what it imports from sessionkeeper exists."""
    tree = ast.parse(body, filename=where)
    compile(tree, where, "exec")
    modules = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    for package in OWN_SESSION_PACKAGES:
        if any(m.split(".")[0] == package for m in modules) and not importlib.util.find_spec(
            package
        ):
            pytest.skip(f"{package} is not installed here; its own nox session checks {where}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(OURS):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(OURS):
                    importlib.import_module(alias.name)


def test_the_docs_have_inline_blocks_to_check() -> None:
    """The pattern finds the blocks (a test of this file's own extraction)."""
    assert TOML_BLOCKS
    assert PYTHON_BLOCKS
