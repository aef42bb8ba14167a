"""Load test: N clients, three workers behind a round-robin proxy, one worker restarted midway.

Runs the same load twice, against workers serving the stock SDK and against workers with
sessionkeeper-mcp on a shared Redis store, and prints the share of requests that succeed::

    python contrib/mcp/tests/loadtest.py --clients 20 --calls 20

Needs ``redis-server`` and ``sessionkeeper-redis``. Not collected by pytest (a benchmark-style
script: it reports, it does not assert).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections import Counter
from pathlib import Path

import httpx
from skmcp_procs import Cluster, _wait_listening, free_port, write_config

PROTOCOL = "2025-11-25"
HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": PROTOCOL,
}


async def one_client(http: httpx.AsyncClient, url: str, calls: int, tally: Counter[str]) -> None:
    """Open a session, then call a tool ``calls`` times; count each request's outcome."""
    init = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                   "clientInfo": {"name": "load", "version": "1"}},
    }  # fmt: skip
    response = await http.post(url, json=init, headers=HEADERS)
    tally[
        "initialize ok" if response.status_code == 200 else f"initialize {response.status_code}"
    ] += 1
    if response.status_code != 200:
        return
    session = {**HEADERS, "Mcp-Session-Id": response.headers["mcp-session-id"]}
    await http.post(
        url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
    )
    for n in range(calls):
        body = {"jsonrpc": "2.0", "id": n + 2, "method": "tools/call",
                "params": {"name": "whoami", "arguments": {}}}  # fmt: skip
        try:
            reply = await http.post(url, json=body, headers=session)
            ok = reply.status_code == 200 and '"result"' in reply.text
            label = "call ok" if ok else f"call {reply.status_code}"
            if reply.status_code == 502:
                label += " " + str(reply.json().get("proxy_error", ""))[:40]
            tally[label] += 1
        except httpx.HTTPError as exc:
            tally[f"call {type(exc).__name__}"] += 1


async def load(url: str, clients: int, calls: int, restart: threading.Event) -> Counter[str]:
    """Run the clients; set ``restart`` when half the calls are done."""
    tally: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=30) as http:

        async def watch() -> None:
            while sum(v for k, v in tally.items() if k.startswith("call ")) < clients * calls // 2:
                await asyncio.sleep(0.01)
            restart.set()

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(one_client(http, url, calls, tally) for _ in range(clients)))
        watcher.cancel()
    return tally


def run_flavor(
    flavor: str, config: Path, folder: Path, clients: int, calls: int, json_response: bool
) -> Counter[str]:
    """Three workers of ``flavor`` behind the round-robin proxy; B restarts midway."""
    cluster = Cluster(config, folder)
    try:
        json_flag = "1" if json_response else "0"
        workers = [
            cluster.worker(name, SKMCP_FLAVOR=flavor, SKMCP_JSON=json_flag) for name in "ABC"
        ]
        url = cluster.route(*workers, mode="round_robin")
        restart = threading.Event()

        def restarter() -> None:
            restart.wait()
            workers[1].restart()

        thread = threading.Thread(target=restarter, daemon=True)
        thread.start()
        tally = asyncio.run(load(url, clients, calls, restart))
        restart.set()
        thread.join()
        return tally
    finally:
        cluster.close()


def main() -> None:
    """Run both flavors and print the outcome table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="JSON responses instead of SSE")
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: apt-get install -y redis-server")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = free_port()
        redis = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            _wait_listening(port, redis, "redis-server", folder / "none.log")
            config = write_config(
                folder / "shared.toml",
                "redis",
                {"url": f"redis://127.0.0.1:{port}/0", "table_name": "l" + uuid.uuid4().hex[:8]},
            )
            total = args.clients * args.calls
            mode = "JSON" if args.json else "SSE"
            print(
                f"{args.clients} clients x {args.calls} calls ({mode} responses), "
                "3 workers round-robin, B restarted midway"
            )
            for flavor, label in (("stock", "stock SDK"), ("app", "sessionkeeper-mcp")):
                tally = run_flavor(flavor, config, folder, args.clients, args.calls, args.json)
                share = 100 * tally["call ok"] / total
                print(
                    f"{label:>18}: {tally['call ok']}/{total} tool calls succeeded ({share:.1f} %)"
                )
                print(f"{'':>18}  {dict(sorted(tally.items()))}")
        finally:
            redis.terminate()
            redis.wait()


if __name__ == "__main__":
    main()
