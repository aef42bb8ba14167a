"""docs/architecture.md stays true to the tree: every module it names exists, and it names every
core module (issue 13: "with the tree as it now is").

The page names a module by its repository path (```core/sessionkeeper/_manager.py```) or, after
the package folder it belongs to (```plugins/memory/src/sessionkeeper_memory/```), by its file
name alone (```_table.py```). :func:`named_paths` reads the page the same way: a full path to a
module, or a folder that is a Python package, makes its package the current one, and a bare file
name is a module of the current package. A folder that is not a package (``_template/``) and
non-module files (``pyproject.toml``) are checked to exist but change nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"
CORE = ROOT / "core" / "sessionkeeper"
#: First segments of the repository paths the page may name.
ROOTS = {"core", "plugins", "contrib", "tests", "docs"}
CODE = re.compile(r"`([^`\n]+)`")
BARE_MODULE = re.compile(r"[\w.]+\.py")


def named_paths(text: str, root: Path = ROOT) -> tuple[set[Path], list[str]]:
    """The repository paths ``text`` names (resolved as the module docstring says), and the
    problems: a named path that does not exist, a bare module name with no package before it."""
    named: set[Path] = set()
    problems: list[str] = []
    package: Path | None = None
    for match in CODE.finditer(text):
        token = match[1].strip()
        line = text.count("\n", 0, match.start()) + 1
        if any(mark in token for mark in "*<{ "):
            continue  # a pattern (plugins/<name>/, _cli_*.py) or a command line, not a path
        if "/" in token and token.split("/", 1)[0] in ROOTS:
            path = root / token.rstrip("/")
            if not path.exists():
                problems.append(f"line {line}: {token} does not exist")
                continue
            named.add(path)
            if path.suffix == ".py":
                package = path.parent
            elif path.is_dir() and (path / "__init__.py").is_file():
                package = path
        elif BARE_MODULE.fullmatch(token):
            if package is None:
                problems.append(f"line {line}: {token} is named before any package folder")
                continue
            path = package / token
            if not path.is_file():
                problems.append(
                    f"line {line}: {token} (in {package.relative_to(root)}) does not exist"
                )
                continue
            named.add(path)
    return named, problems


def core_modules(core: Path = CORE) -> set[Path]:
    """The core package's own modules: ``core/sessionkeeper/*.py`` but ``__init__``/``__main__``."""
    return {path for path in core.glob("*.py") if not path.name.startswith("__")}


class TestArchitecturePage:
    def test_every_named_module_exists(self) -> None:
        """Every module path and package folder the page names is in the repository, and every
        bare module name belongs to a package folder named before it."""
        _, problems = named_paths(PAGE.read_text(encoding="utf-8"))
        assert problems == []

    def test_every_core_module_is_named(self) -> None:
        """Every module of core/sessionkeeper/ is named on the page, so a module added to the
        core (or a split of one) cannot go unmapped."""
        named, _ = named_paths(PAGE.read_text(encoding="utf-8"))
        missing = sorted(p.name for p in core_modules() - named)
        assert missing == []

    def test_every_backend_package_is_named(self) -> None:
        """Every plugin package under plugins/ and contrib/ has its folder named on the page."""
        named, _ = named_paths(PAGE.read_text(encoding="utf-8"))
        packages = {
            path.parent
            for pattern in ("plugins/*/src/*/__init__.py", "contrib/*/src/*/__init__.py")
            for path in ROOT.glob(pattern)
        }
        assert packages
        assert sorted(p.relative_to(ROOT).as_posix() for p in packages - named) == []


class TestTheCheckItself:
    def test_reports_a_missing_module_and_a_bare_name_without_package(self) -> None:
        """The reader flags a path that does not exist, a bare name before any package, and a
        bare name its package does not hold, and resolves bare names against the last package."""
        text = (
            "`_early.py` then `core/sessionkeeper/` with `_manager.py` and `_gone.py`;\n"
            "`core/sessionkeeper/_nosuch.py`, `plugins/<name>/`, `_cli_*.py`,\n"
            "`core/sessionkeeper/_template/` then `_codec.py`; `python -m x.py`.\n"
        )
        named, problems = named_paths(text)
        assert problems == [
            "line 1: _early.py is named before any package folder",
            "line 1: _gone.py (in core/sessionkeeper) does not exist",
            "line 2: core/sessionkeeper/_nosuch.py does not exist",
        ]
        assert CORE / "_manager.py" in named
        assert CORE / "_codec.py" in named  # _template/ is not a package: context unchanged

    def test_a_core_module_left_out_is_reported(self, tmp_path: Path) -> None:
        """A core package with a module the page does not name shows up as missing."""
        core = tmp_path / "core" / "sessionkeeper"
        core.mkdir(parents=True)
        for name in ("__init__.py", "_named.py", "_new.py"):
            (core / name).write_text("", encoding="utf-8")
        named, problems = named_paths("`core/sessionkeeper/_named.py`", root=tmp_path)
        assert problems == []
        assert sorted(p.name for p in core_modules(core) - named) == ["_new.py"]
