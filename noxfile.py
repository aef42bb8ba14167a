"""Development sessions for sessionkeeper.

``nox`` (no arguments) runs everything CI gates on: ``tests``, ``plugin``, ``mcp``, ``lint``,
``typing`` and ``docs``. The others run on demand: ``nox -s demo`` shows the product, ``nox -s
bench`` runs the benchmarks, ``nox -s chaos`` and ``nox -s fuzz`` the long fault-injection and fuzz
runs.

Sessions stay thin: what they install comes from the helpers below and the
``[dependency-groups]`` of the root ``pyproject.toml``. Packages are installed from their folders
as wheels (not editable), because entry points, which is how backends are found, exist only in
installed metadata.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"  # nox.project.dependency_groups
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
PYTHON = ["3.11"]
#: Where plugin distributions live; each folder holding a ``pyproject.toml`` is one.
PLUGIN_PARENTS = ("plugins", "contrib")
#: Installed beside the ``test`` group: tests pip-install throwaway plugin distributions into
#: folders of their own, and a venv made by uv has no pip.
TEST_TOOLS = ("pip",)
#: What ``nox -s demo`` installs besides the core (a backend's demo section needs it here).
DEMO_PLUGINS = ("plugins/memory", "plugins/sqlitedict")


#: Folders tested by sessions of their own rather than by ``tests`` and ``plugin``: the MCP
#: integration runs against each pinned SDK release (``nox -s mcp``).
OWN_SESSIONS = ("contrib/mcp",)
#: The mcp SDK releases contrib/mcp supports; CI runs its tests against each.
MCP_SDKS = ("1.30.0", "2.3.0")


def plugin_folders(*, all_folders: bool = False) -> list[str]:
    """Every plugin distribution's folder, relative to the root (``plugins/memory`` …).

    Folders in :data:`OWN_SESSIONS` are left out unless ``all_folders``.
    """
    found = (
        path.parent.relative_to(ROOT).as_posix()
        for parent in PLUGIN_PARENTS
        for path in (ROOT / parent).glob("*/pyproject.toml")
    )
    return sorted(f for f in found if all_folders or f not in OWN_SESSIONS)


def install(
    session: nox.Session, *local: str, groups: tuple[str, ...] = (), extra: tuple[str, ...] = ()
) -> None:
    """Install the core, the given local distributions and dependency groups in one resolve."""
    requirements = nox.project.dependency_groups(PYPROJECT, *groups) if groups else ()
    session.install(".", *local, *requirements, *extra)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the whole test suite against the core and every plugin, all installed together.

    contrib/mcp is left out: ``mcp`` runs it against each supported SDK release.
    """
    install(session, *plugin_folders(), groups=("test",), extra=TEST_TOOLS)
    ignored = [f"--ignore={folder}" for folder in OWN_SESSIONS]
    session.run("pytest", *ignored, *session.posargs)


@nox.session(python=PYTHON)
@nox.parametrize("folder", plugin_folders(), ids=[Path(f).name for f in plugin_folders()])
def plugin(session: nox.Session, folder: str) -> None:
    """Run one plugin's own tests with only the core and that plugin installed."""
    install(session, folder, groups=("test",), extra=TEST_TOOLS)
    session.run("pytest", f"{folder}/tests", *session.posargs)


@nox.session(python=PYTHON)
@nox.parametrize("sdk", MCP_SDKS, ids=[f"mcp{v}" for v in MCP_SDKS])
def mcp(session: nox.Session, sdk: str) -> None:
    """Run contrib/mcp's tests against one pinned mcp SDK release.

    Its multi-worker tests share sessions through a real redis-server.
    """
    folder = "contrib/mcp[fastmcp]" if sdk.startswith("2.") else "contrib/mcp"
    install(
        session,
        "plugins/memory",
        "plugins/sqlitedict",
        "contrib/redis",
        folder,
        groups=("test",),
        extra=(*TEST_TOOLS, f"mcp=={sdk}", "uvicorn>=0.30", "httpx>=0.27"),
    )
    session.run("pytest", "contrib/mcp/tests", *session.posargs)
    # The inline examples of docs/mcp.md need sessionkeeper_mcp, installed only here.
    session.run("pytest", "tests/test_docs_blocks.py", "-k", "mcp.md")


@nox.session(python=PYTHON, default=False)
def chaos(session: nox.Session) -> None:
    """Run the zmq cluster's fault-injection scenarios, their long variants included.

    Minutes of random faults in RAM and disc modes, and 5 s pauses (SESSIONKEEPER_CHAOS_SECONDS,
    default 180, is the length of each random-fault run; posargs go to pytest).
    """
    install(session, "plugins/memory", "plugins/zmq", groups=("test",), extra=TEST_TOOLS)
    seconds = os.environ.get("SESSIONKEEPER_CHAOS_SECONDS", "180")
    session.run(
        "pytest",
        "plugins/zmq/tests/test_chaos.py",
        *session.posargs,
        env={"SESSIONKEEPER_CHAOS_SECONDS": seconds},
    )


@nox.session(python=PYTHON, default=False)
def fuzz(session: nox.Session) -> None:
    """Run the fuzz tests (marked fuzz: hostile input at every door) on a long budget.

    The default ``tests`` run gives them a bounded Hypothesis budget (posargs go to pytest).
    """
    install(session, *plugin_folders(), groups=("test",), extra=TEST_TOOLS)
    ignored = [f"--ignore={folder}" for folder in OWN_SESSIONS]
    session.run(
        "pytest", "-m", "fuzz", *ignored, *session.posargs, env={"HYPOTHESIS_PROFILE": "fuzz"}
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff (configured in pyproject.toml)."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", *session.posargs)
    session.run("ruff", "format", "--check", *session.posargs)


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """Type-check the packages and this noxfile with strict mypy (configured in pyproject.toml)."""
    # Every folder, contrib/mcp with FastMCP too: mypy checks all of their sources.
    install(
        session,
        *plugin_folders(all_folders=True),
        groups=("typing",),
        extra=("fastmcp>=4.2,<4.3",),
    )
    session.run("mypy", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the Sphinx site, failing on any warning (autodoc imports the installed packages)."""
    install(session, *plugin_folders(), groups=("docs",))
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html",
        *session.posargs,
    )  # fmt: skip


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Run every benchmark script in tests/benchmarks (posargs go to each script)."""
    install(session, *plugin_folders())
    scripts = sorted((ROOT / "tests" / "benchmarks").glob("bench_*.py"))
    if not scripts:
        session.error("no tests/benchmarks/bench_*.py script found")
    for script in scripts:
        session.run("python", str(script.relative_to(ROOT)), *session.posargs)


@nox.session(python=PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """Show sessionkeeper at work: the demo on the memory and sqlitedict backends."""
    install(session, *DEMO_PLUGINS)
    session.run("python", "-m", "sessionkeeper.demo", *session.posargs)
