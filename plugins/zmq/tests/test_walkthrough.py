"""The operations walkthrough of docs/zmq.md, run as written (issue 19).

Each block of the walkthrough is tagged in the page (``<!-- walkthrough: NAME -->`` before its
fence); this test runs the ``sh`` blocks' lines with bash, writes the ``toml`` and ``python``
blocks to the files the page names, and starts the long-running commands (the nodes, the
application) as real processes. It swaps only the example ports and public keys for free ports
and the keys its ``keygen`` step wrote. Then it checks what the page says each step shows.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper import SessionManager, installed_backends
from sessionkeeper_zmq.testing import free_ports, public_key, wait_for

PAGE = Path(__file__).resolve().parents[3] / "docs" / "zmq.md"
SECTION = "## Operations walkthrough"
TAGGED = re.compile(
    r"<!-- walkthrough: (?P<name>[^>]+?) -->\n```(?P<lang>\w+)\n(?P<body>.*?)^```", re.M | re.S
)
FENCE = re.compile(r"^```(?P<lang>\w+)\n", re.M)
#: Every block the walkthrough tags, in order, with its language: what this test runs.
STEPS = {
    "keys": "sh",
    "a.toml": "toml",
    "b.toml": "toml",
    "app.toml": "toml",
    "start": "sh",
    "app.py": "python",
    "run app": "sh",
    "stats": "sh",
    "kill c": "sh",
    "restart c": "sh",
    "check c": "sh",
    "backup": "sh",
    "restored.toml": "toml",
    "restore": "sh",
}
#: Each member's port in the page's endpoints.
PAGE_PORTS = {"a": 7101, "b": 7102, "c": 7103, "app": 7104}


def section() -> str:
    text = PAGE.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end >= 0 else len(text)]


def steps() -> dict[str, str]:
    """The tagged blocks of the walkthrough: name -> body."""
    found: dict[str, str] = {}
    for match in TAGGED.finditer(section()):
        assert match["name"] not in found, f"two blocks named {match['name']!r}"
        assert STEPS.get(match["name"]) == match["lang"], match["name"]
        found[match["name"]] = match["body"]
    return found


def lines(body: str) -> list[str]:
    return [line for line in body.splitlines() if line.strip()]


def test_every_block_of_the_walkthrough_is_run() -> None:
    """The walkthrough's runnable blocks are exactly the steps this test runs, in order;
    only ``text`` blocks (sample output) are left untagged."""
    assert list(steps()) == list(STEPS)
    fences = [m["lang"] for m in FENCE.finditer(section())]
    assert len([lang for lang in fences if lang != "text"]) == len(STEPS)


class Walk:
    """The walkthrough's directory, its environment and the processes it started."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.blocks = steps()
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
        self.env.pop("SESSIONKEEPER_CONFIG", None)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = dict(zip(PAGE_PORTS, free_ports(len(PAGE_PORTS)), strict=True))

    def sh(self, line: str, **env: str) -> str:
        """Run one line of a ``sh`` block with bash; its stdout (it must succeed)."""
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=self.work,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def run_block(self, name: str, **env: str) -> list[str]:
        return [self.sh(line, **env) for line in lines(self.blocks[name])]

    def spawn(self, name: str, line: str) -> subprocess.Popen[bytes]:
        """Start a long-running command of the page as a process of its own."""
        log = (self.work / f"{name}.log").open("ab")
        process = subprocess.Popen(
            shlex.split(line), cwd=self.work, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def wait_ready(self, node: str, times: int = 1) -> None:
        wait_for(
            lambda: (
                self.log(node).count(f"node {node} ready") >= times
                or self.processes[node].poll() is not None
            ),
            f"node {node} to be ready",
        )
        assert self.processes[node].poll() is None, self.log(node)

    def config(self, name: str, text: str) -> None:
        """Write a config of the page with free ports and the generated keys."""
        for member, port in PAGE_PORTS.items():
            text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{self.ports[member]}")
            text = re.sub(
                rf'(\{{ id = "{member}", .*public_key = ")[^"]*(")',
                lambda m, member=member: m[1] + public_key(self.work / "keys", member) + m[2],
                text,
            )
        (self.work / name).write_text(text)

    def reader(self, member: str) -> SessionManager:
        """What ``sessionkeeper stats/list`` open on a member's config (its admin socket)."""
        return SessionManager.from_config(self.work / f"{member}.toml", read_only=True)

    def stats(self, member: str) -> dict[str, Any]:
        with self.reader(member) as reader:
            return reader.stats()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def changed(base: str, block: str, drop: tuple[str, ...] = ()) -> str:
    """``base`` with the lines of ``block`` replacing the lines of the same keys."""
    text = base
    for line in lines(block):
        key = line.split("=", 1)[0].strip()
        text = re.sub(rf"^{re.escape(key)} = .*$", line, text, count=1, flags=re.M)
    for key in drop:
        text = re.sub(rf"^{re.escape(key)} = .*\n", "", text, flags=re.M)
    return text


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    work = tmp_path / "w"
    work.mkdir()
    walking = Walk(work)
    try:
        yield walking
    finally:
        walking.stop()


@pytest.mark.sessionkeeper_slow
@pytest.mark.skipif(
    "sqlitedict" not in installed_backends(),
    reason="the walkthrough restores its backup into sqlitedict: needs sessionkeeper-sqlitedict "
    "(nox runs it in the tests session, where every backend is installed)",
)
def test_the_operations_walkthrough(walk: Walk) -> None:
    """Three nodes and an application process: ``stats``, ``list`` on the live cluster; node
    c SIGKILLed under the application's writes and restarted, catching up by delta (no
    snapshot); a live backup restored into a sqlitedict store, every session equal to the
    cluster's; after the application stops, every node holds all it created."""
    blocks = walk.blocks
    # 1-2. keys and configuration.
    walk.run_block("keys")
    walk.config("a.toml", blocks["a.toml"])
    a_toml = (walk.work / "a.toml").read_text()
    b_lines = blocks["b.toml"]
    (walk.work / "b.toml").write_text(changed(a_toml, b_lines))
    (walk.work / "c.toml").write_text(
        changed(a_toml, b_lines.replace('"b"', '"c"').replace("/b", "/c"))
    )
    (walk.work / "app.toml").write_text(
        changed(a_toml, blocks["app.toml"], drop=("disc_copies", "data_dir"))
    )
    # 3. the nodes.
    start = lines(blocks["start"])
    for node, line in zip("abc", start, strict=True):
        assert line.endswith(f"{node}.toml")
        walk.spawn(node, line)
    for node in "abc":
        walk.wait_ready(node)
    # 4. the application, writing until stopped.
    (walk.work / "app.py").write_text(blocks["app.py"])
    [run_app] = lines(blocks["run app"])
    app = walk.spawn("app", run_app)
    wait_for(lambda: walk.stats("a")["live_sessions"] > 300, "the application to write")
    # 5. stats and list on the live cluster.
    table, listing, as_json = walk.run_block("stats")
    assert "peers.c.alive" in table
    assert "digest" in table
    assert len(listing.strip().splitlines()) >= 1
    figures = json.loads(as_json)["backend_stats"]
    assert figures["ready"]
    assert figures["admin"]["socket"].endswith("data/a/admin.sock")
    assert {name: (p["alive"], p["connected"]) for name, p in figures["peers"].items()} == {
        "b": (True, True),
        "c": (True, True),
        "app": (True, True),
    }
    # 6. c killed under load; the others go on; c restarted catches up by delta.
    walk.run_block("kill c", NODE_C_PID=str(walk.processes["c"].pid))
    assert walk.processes["c"].wait(timeout=30) == -signal.SIGKILL
    wait_for(lambda: not walk.stats("a")["backend_stats"]["peers"]["c"]["alive"], "c suspected")
    written = walk.stats("a")["live_sessions"]
    wait_for(lambda: walk.stats("a")["live_sessions"] > written + 1_000, "writes while c is down")
    [restart] = lines(blocks["restart c"])
    assert restart == start[2]
    walk.spawn("c", restart)
    walk.wait_ready("c", times=2)
    [check] = walk.run_block("check c")
    rejoined = json.loads(check)["backend_stats"]
    assert rejoined["ready"]
    assert rejoined["node_id"] == "c"
    assert (rejoined["deltas_taken"], rejoined["syncs_taken"]) == (1, 0), rejoined
    assert walk.stats("a")["backend_stats"]["deltas_served"] >= 1
    # 7. a live backup (the application still writes), restored into sqlitedict.
    assert app.poll() is None
    walk.run_block("backup")
    [backup] = list((walk.work / "backups").glob("sessionkeeper-*.jsonl.gz"))
    (walk.work / "restored.toml").write_text(blocks["restored.toml"])
    *_, restored_json = walk.run_block("restore")
    restored_ids = set(json.loads(restored_json)["ids"])
    with gzip.open(backup, "rt") as handle:
        backed_up = {json.loads(line)["id"] for line in handle if '"id"' in line}
    assert restored_ids == backed_up
    assert len(backed_up) >= written
    # 8. the application stops; every node holds what it created, the digests agree.
    app.send_signal(signal.SIGTERM)
    assert app.wait(timeout=60) == 0, walk.log("app")
    created = int(re.findall(r"created (\d+) sessions", walk.log("app"))[-1])

    def agreed() -> bool:
        views = [walk.stats(node) for node in "abc"]
        counts = {view["live_sessions"] for view in views}
        return counts == {created} and len({v["backend_stats"]["digest"] for v in views}) == 1

    wait_for(agreed, "every node to hold every session")
    with (
        walk.reader("c") as cluster,
        SessionManager.from_config(walk.work / "restored.toml", read_only=True) as restored,
    ):
        on_c = {s.id: s for s in cluster.iter_sessions()}
        assert all(on_c[s.id] == s for s in restored.iter_sessions())
        assert len(on_c) == created
    for process in walk.processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for node in "abc":
        assert walk.processes[node].wait(timeout=30) == 0, walk.log(node)
