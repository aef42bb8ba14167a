"""The ``node`` command: run one cluster node in the foreground, or write a CURVE key pair.

The core CLI offers it as ``sessionkeeper node`` through this package's entry point in group
``sessionkeeper.commands``; ``python -m sessionkeeper_zmq.node`` runs it too::

    sessionkeeper node keygen --dir keys --name a
    sessionkeeper node --config node-a.toml
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import click

__all__ = ["node"]


@click.group(invoke_without_command=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help='The node\'s sessionkeeper.toml (backend = "zmq").',
)
@click.option(
    "--status-interval",
    type=float,
    default=0.0,
    show_default=True,
    help="Print the node's stats as one JSON line every this many seconds (0: never).",
)
@click.pass_context
def node(ctx: click.Context, config_path: Path | None, status_interval: float) -> None:
    """Run one zmq cluster node in the foreground until SIGTERM or Ctrl-C.

    Exit status: 0 after a clean stop, 2 usage error, 3 configuration error (a missing or
    wrong key file included), 4 storage error (the port is taken, the data directory cannot be
    written), as every ``sessionkeeper`` command.
    """
    if ctx.invoked_subcommand is not None:
        return
    from sessionkeeper import SessionKeeperError, SessionManager, load_config
    from sessionkeeper.cli import exit_code_for

    try:
        config = load_config(config_path, named_by="--config")
        if config.backend != "zmq":
            raise click.UsageError(
                f"{config.source or 'the configuration'} uses backend {config.backend!r}; "
                "`node` runs zmq cluster nodes"
            )
        node_id = config.backend_opts.get("node_id")
        # Before opening, which loads the disc copy and catches up: its time is visible.
        click.echo(f"node {node_id} opening (loading, then catching up with its peers)", err=True)
        started = time.monotonic()
        manager = SessionManager.from_settings(config)
    except SessionKeeperError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(int(exit_code_for(exc)))  # 3 configuration, 4 storage (see `sessionkeeper`)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backend = manager.backend
    opened = time.monotonic() - started
    click.echo(
        f"node {node_id} running (ready: {backend.ready}, opened in {opened:.1f} s)", err=True
    )
    # Announced also when opening returned ready: one line to wait for, whatever the timing.
    announced = False
    next_status = time.monotonic() + status_interval

    def pause() -> float:
        if not announced:
            return 0.0 if backend.ready else 0.1
        return min(status_interval or 3600, 3600)

    try:
        while not stop.wait(pause()):
            if not announced and backend.ready:
                announced = True
                took = time.monotonic() - started
                click.echo(
                    f"node {node_id} ready ({took:.1f} s after it started opening)", err=True
                )
            if status_interval and time.monotonic() >= next_status:
                next_status = time.monotonic() + status_interval
                click.echo(json.dumps(manager.stats()["backend_stats"]), err=False)
    finally:
        manager.close()
        click.echo(f"node {node_id} stopped", err=True)


@node.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where to write NAME.key and NAME.key_secret.",
)
@click.option("--name", required=True, help="The node id (file names and key metadata).")
@click.option("--force", is_flag=True, help="Replace existing key files.")
def keygen(directory: Path, name: str, force: bool) -> None:
    """Write a CURVE key pair: NAME.key (public) and NAME.key_secret (mode 0600)."""
    from ._keys import write_key_pair

    try:
        public_path, secret_path, public = write_key_pair(directory, name, overwrite=force)
    except FileExistsError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"secret key: {secret_path}  (point secret_key_file at it; keep it private)")
    click.echo(f"public key: {public_path}")
    click.echo(f'{{ id = "{name}", endpoint = "tcp://HOST:PORT", public_key = "{public}" }}')
