"""MCP over real HTTP (issue 15): requests/s of a handle tool, 1 and 3 uvicorn workers, in one run.

Every figure is a rate of ``tools/call`` requests (protocol 2026-07-28, sessionless) that many
clients at once (``--clients``-many in flight, each on its own counter) send through the
round-robin balancer of the MCP tests (``contrib/mcp/tests/proxy_app.py``) to uvicorn worker
processes serving ``contrib/mcp/tests/handles_app.py``: ``add(handle, amount)``, whose counter
is behind a state handle (:class:`~sessionkeeper_mcp.Handles`: the ``Resolve`` dependency reads
it and checks its owner, ``update`` writes it atomically), every request authenticated.

- stores: memory and sqlitedict (one owning process: 1 worker), sqlitedict ``shared = true``
  (1 and 3 workers on one host) and redis (1 and 3 workers; a ``redis-server`` started here);
- floor, measured in every round: the stock SDK's same tool on a dict, in 1 worker behind the
  same balancer. The stock SDK in 3 workers (each its own dict: state no other worker sees) is
  shown beside it: the ceiling of this machine, balancer and load generator;
- other installs of the code: ``BENCH_MCP_COMPARE="before=/path/to/venv/bin/python"`` (several
  separated by ``;``) runs the same app code on each interpreter's install too, in the same
  rounds, and adds a row per install and workload, with a ``this checkout / <install>`` ratio.
  A store an install cannot open (shared sqlite before it existed) is left out, with a note.

Each workload is reported twice: its rate (req/s), and the CPU time its worker processes spent
per call (ms, from ``/proc``; the balancer, the clients and a redis-server are not counted),
which other load on the machine disturbs far less than a rate. Workloads alternate within each
round (the order reversed every other round); each ratio is the median of per-round ratios.
After the rounds, every counter is read back: the sum must equal the calls that succeeded (an
update lost is reported). The load average is printed. Run ``python
tests/benchmarks/bench_mcp_workers.py [--quick] [--json PATH]``.
"""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _bench
import _rounds
import attrs
import bench_mcp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "contrib" / "mcp" / "tests"))

PROTOCOL = "2026-07-28"
TOKEN = "token-bench"
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": PROTOCOL,
    "Authorization": f"Bearer {TOKEN}",
}
META = {
    "io.modelcontextprotocol/protocolVersion": PROTOCOL,
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
APP = "handles_app:create_app"
THIS = "this checkout"


@attrs.frozen
class Sizes:
    clients: int
    seconds: float  # of load per workload per round
    warmup: float  # seconds
    rounds: int


@attrs.frozen
class Store:
    """A store of the run: its config per install, and the worker counts it is measured with."""

    label: str
    backend: str
    workers: tuple[int, ...]
    opts: dict[str, Any]


@attrs.define
class Workload:
    """Workers of one install on one store (or the stock SDK), and their counters."""

    label: str
    install: str
    workers: list[Any]
    handles: list[str] = attrs.field(factory=list)
    rates: list[float] = attrs.field(factory=list)
    cpu: list[float] = attrs.field(factory=list)  # ms of the workers' CPU per call, per round
    ok: int = 0
    failed: int = 0


def _request(tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The keywords of ``http.post`` for a ``tools/call`` of ``tool``: its body and headers."""
    params = {"name": tool, "arguments": arguments, "_meta": META}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    return {"json": body, "headers": {"Mcp-Method": "tools/call", "Mcp-Name": tool}}


def _result(reply: Any) -> Any:
    """The structured result of a tool call's reply (AssertionError when it is not one)."""
    assert reply.status_code == 200, (reply.status_code, reply.text[:300])
    message = reply.json()
    assert not message["result"]["isError"], message
    return message["result"]["structuredContent"]["result"]


async def _mint(http: Any, url: str, count: int) -> list[str]:
    return [str(_result(await http.post(url, **_request("new_counter", {})))) for _ in range(count)]


def _cpu_seconds(workers: Sequence[Any]) -> float:
    """The CPU time (user + system) the worker processes have used so far."""
    total = 0
    for worker in workers:
        fields = Path(f"/proc/{worker.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


async def _burst(http: Any, url: str, workload: Workload, seconds: float) -> tuple[float, float]:
    """``add`` requests from ``len(workload.handles)`` clients at once for ``seconds`` (each
    client ends with the request it has in flight): requests/s answered, and ms of the
    workers' CPU per request."""
    cpu = _cpu_seconds(workload.workers)
    began = time.perf_counter()
    deadline = began + seconds
    requests = [_request("add", {"handle": h, "amount": 1}) for h in workload.handles]
    answered = 0

    async def client(request: dict[str, Any]) -> None:
        nonlocal answered
        while time.perf_counter() < deadline:
            reply = await http.post(url, **request)
            answered += 1
            if reply.status_code == 200 and b'"isError":false' in reply.content:
                workload.ok += 1
            else:
                workload.failed += 1

    await asyncio.gather(*(client(request) for request in requests))
    rate = answered / (time.perf_counter() - began)
    return rate, (_cpu_seconds(workload.workers) - cpu) * 1000 / answered


async def _counted(http: Any, url: str, workload: Workload) -> int:
    """The sum of the workload's counters, read back."""
    total = 0
    for handle in workload.handles:
        text = str(_result(await http.post(url, **_request("read", {"handle": handle}))))
        total += int(text.split("|")[0])
    return total


def _installs() -> dict[str, str]:
    """This checkout's interpreter, then the ``BENCH_MCP_COMPARE`` ones, by label."""
    found = {THIS: sys.executable}
    for item in filter(None, os.environ.get("BENCH_MCP_COMPARE", "").split(";")):
        label, _, python = item.partition("=")
        if not (label and Path(python).is_file()):
            raise SystemExit(f"BENCH_MCP_COMPARE: {item!r} is not label=/path/to/python")
        found[label.strip()] = python.strip()
    return found


def _config(folder: Path, store: Store, install: str) -> Path:
    from skmcp_procs import write_config

    tag = "".join(c if c.isalnum() else "_" for c in f"{store.label}_{install}")
    opts = dict(store.opts)
    if store.backend == "sqlitedict":
        opts["file_path"] = str(folder / f"{tag}.sqlite")
    else:
        opts["table_name"] = f"b{tag}"
    return write_config(folder / f"{tag}.toml", store.backend, opts, cleanup=0)


def _start(cluster: Any, store: Store, installs: dict[str, str], notes: list[str]) -> list[Any]:
    """The workloads of ``store``: per install, its workers (3 when measured with 3)."""
    workloads = []
    for install, python in installs.items():
        config = _config(cluster.log_dir, store, install)
        started: list[Any] = []
        try:
            for n in range(max(store.workers)):
                name = f"{store.label}-{install}-{n}".replace(" ", "_")
                started.append(cluster.worker(name, APP, python=python, config=config))
        except RuntimeError as exc:
            for worker in started:
                worker.stop()
            first = str(exc).strip().splitlines()[-1][:120]
            notes.append(f"{store.label}: {install} cannot serve it, not measured ({first})")
            continue
        for count in store.workers:
            label = f"{store.label}, {count} worker{'s' * (count > 1)}, {install}"
            workloads.append(Workload(label, install, started[:count]))
    return workloads


async def _rounds_of(
    cluster: Any, workloads: list[Workload], floor: Workload, sizes: Sizes, notes: list[str]
) -> None:
    """Mint each workload's counters and warm it up (one whose calls fail is left out, with a
    note), then ``sizes.rounds`` rounds of every workload in turn."""
    import httpx

    limits = httpx.Limits(max_connections=sizes.clients * 2, max_keepalive_connections=256)
    async with httpx.AsyncClient(headers=HEADERS, timeout=60, limits=limits) as http:
        url = cluster.route(*floor.workers, mode="round_robin")
        for workload in list(workloads):
            cluster.route(*workload.workers, mode="round_robin")
            workload.handles = await _mint(http, url, sizes.clients)
            await _burst(http, url, workload, sizes.warmup)
            if workload.failed:
                notes.append(
                    f"{workload.label}: {workload.failed} of {workload.failed + workload.ok} "
                    "warm-up calls failed (a tool error): not measured"
                )
                workloads.remove(workload)
        for number in range(sizes.rounds):
            order = workloads if number % 2 == 0 else list(reversed(workloads))
            for workload in order:
                cluster.route(*workload.workers, mode="round_robin")
                rate, cpu = await _burst(http, url, workload, sizes.seconds)
                workload.rates.append(rate)
                workload.cpu.append(cpu)
        for workload in workloads:
            if workload.install == "stock SDK":
                continue
            cluster.route(*workload.workers, mode="round_robin")
            counted = await _counted(http, url, workload)
            if counted != workload.ok:
                notes.append(f"LOST UPDATES: {workload.label}: {workload.ok} calls, {counted} kept")


def _figures(workloads: Sequence[Workload], floor: Workload) -> list[_bench.Figure]:
    """Each workload against the floor, then each other install's against this checkout: the
    rate (req/s) and the workers' CPU per call (ms)."""
    figures: list[_bench.Figure] = []
    stock = "stock SDK, dict, 1 worker"
    for workload in workloads:
        if workload is floor:
            continue
        failed = f", {workload.failed} calls failed" if workload.failed else ""
        for unit, values, floors in (
            ("req/s", workload.rates, floor.rates),
            ("ms CPU", workload.cpu, floor.cpu),
        ):
            timed = _rounds.Rounds(values, floors)
            note = f"{len(timed.values)} rounds{failed}"
            figures.append(_rounds.ratio_figure(workload.label, timed, stock, unit=unit, note=note))
    for workload in workloads:
        if workload.install in (THIS, "stock SDK"):
            continue
        ours = next(
            w for w in workloads if w.label == workload.label.replace(workload.install, THIS)
        )
        label = ours.label.replace(f", {THIS}", f": {THIS} / {workload.install}")
        for unit, values, floors in (
            ("req/s", ours.rates, workload.rates),
            ("ms CPU", ours.cpu, workload.cpu),
        ):
            timed = _rounds.Rounds(values, floors)
            figures.append(_rounds.ratio_figure(label, timed, workload.install, unit=unit))
    return figures


def _stores(redis_url: str | None) -> list[Store]:
    stores = [
        Store("memory", "memory", (1,), {}),
        Store("sqlitedict", "sqlitedict", (1,), {}),
        Store("sqlitedict shared", "sqlitedict", (1, 3), {"shared": True}),
    ]
    if redis_url is not None:
        stores.append(Store("redis", "redis", (1, 3), {"url": redis_url}))
    return stores


def measure(args: Any) -> _bench.Run:
    from skmcp_procs import Cluster

    sizes = (
        Sizes(clients=24, seconds=1.5, warmup=0.5, rounds=2)
        if args.quick
        else Sizes(clients=24, seconds=3.0, warmup=1.0, rounds=5)
    )
    installs = _installs()
    notes: list[str] = []
    loads = [os.getloadavg()]
    figures: list[_bench.Figure] = []
    with tempfile.TemporaryDirectory() as tmp, bench_mcp.redis_or_none(Path(tmp)) as redis_url:
        folder = Path(tmp)
        if redis_url is None:
            notes.append("redis: no redis-server found (install sessionkeeper-redis); not measured")
        cluster = Cluster(folder / "unused.toml", folder)
        try:
            stock = [
                cluster.worker(
                    f"stock-{n}", APP, config=folder / "unused.toml", SKMCP_FLAVOR="stock"
                )
                for n in range(3)
            ]
            for store in _stores(redis_url):
                floor = Workload("stock SDK, dict, 1 worker", "stock SDK", stock[:1])
                workloads = [floor]
                if 3 in store.workers:
                    label = f"stock SDK, dict, 3 workers ({store.label} rounds)"
                    workloads.append(Workload(label, "stock SDK", stock))
                started = _start(cluster, store, installs, notes)
                workloads += started
                asyncio.run(_rounds_of(cluster, workloads, floor, sizes, notes))
                figures += _figures(workloads, floor)
                for worker in {id(w): w for load in started for w in load.workers}.values():
                    worker.stop()
                loads.append(os.getloadavg())
        finally:
            cluster.close()
    notes.append(
        "load average (1 min) at the start and after each store: "
        + ", ".join(f"{load[0]:.2f}" for load in loads)
    )
    notes.append(f"installs: {installs}")
    title = (
        f"bench_mcp_workers: Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} cores; {sizes.clients} clients in flight, {sizes.seconds:g} s x "
        f"{sizes.rounds} rounds per workload"
    )
    return _bench.Run(
        figures=figures,
        sizes=sizes,
        title=title,
        about=_bench.about(installs=installs, clients=sizes.clients),
        notes=notes,
    )


def requires() -> None:
    """Import what the benchmark needs beyond the dev install (ImportError when missing)."""
    import uvicorn  # noqa: F401
    from mcp.server.mcpserver import MCPServer  # noqa: F401

    import sessionkeeper_mcp  # noqa: F401


def main() -> int:
    return _bench.main(
        __doc__,
        "mcp_workers",
        measure,
        quick_help="fewer calls and rounds (a smoke run)",
        digits={"req/s": 0, "ms CPU": 2},
        requires=requires,
        needs="mcp 2.x, uvicorn and sessionkeeper-mcp",
    )


if __name__ == "__main__":
    sys.exit(main())
