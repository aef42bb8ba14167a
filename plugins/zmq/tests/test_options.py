"""Options validation, key files, the node command and the disc copy."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sessionkeeper import ConfigError, Session, SessionManager
from sessionkeeper.testing import ManualClock
from sessionkeeper_zmq._cli import node
from sessionkeeper_zmq.testing import cluster_opts, free_ports, wait_for


def opts(key_dir: Path, **changes: Any) -> dict[str, Any]:
    """Valid options of node a of a 3-node cluster, with ``changes``."""
    return {**cluster_opts(key_dir, 3)[0], **changes}


def open_with(options: dict[str, Any], **kwargs: Any) -> SessionManager:
    return SessionManager(backend="zmq", backend_opts=options, cleanup_interval=0, **kwargs)


class TestOptions:
    """An inconsistent cluster description is refused with an error naming the key."""

    @pytest.mark.parametrize(
        ("change", "key", "message"),
        [
            ({"node_id": "z"}, "node_id", "not one of the nodes"),
            ({"ack": "most"}, "ack", "must be"),
            ({"ack": 4}, "ack", "impossible in a cluster of 3"),
            ({"ack": 0}, "ack", ">= 1"),
            ({"write_timeout_ms": 0}, "write_timeout_ms", "between 1 and"),
            ({"nodes": "x"}, "nodes", "must be an array of tables"),
            ({"nodes": [1]}, "nodes[0]", "must be a table"),
            ({"nodes": {"id": "a"}}, "nodes", "must be an array of tables"),
            ({"heartbeat_ms": 10**30}, "heartbeat_ms", "between 1 and 60000"),
            ({"write_timeout_ms": 99999999999999}, "write_timeout_ms", "between 1 and"),
            ({"backlog": 10**20}, "backlog", "between 1 and"),
            ({"anti_entropy_ms": -1}, "anti_entropy_ms", "between 0 and"),
            ({"bind": "tcp://0.0.0.0:70000"}, "bind", "port outside 1-65535"),
            ({"data_dir": "d\0"}, "data_dir", "NUL"),
            ({"secret_key_file": None}, "secret_key_file", "required when curve is on"),
            ({"disc_copies": True}, "data_dir", "required when disc_copies"),
            ({"fsync": "never"}, "fsync", "always"),
            ({"colour": "blue"}, "colour", "unknown key"),
        ],
    )
    def test_bad_option_names_the_key(
        self, key_dir: Path, change: dict[str, Any], key: str, message: str
    ) -> None:
        """Each bad value raises a ConfigError whose key is the option."""
        with pytest.raises(ConfigError, match=message) as info:
            open_with(opts(key_dir, **change))
        assert info.value.key == f"sessionkeeper.backend_opts.{key}"

    def test_duplicate_ids_and_endpoints_are_refused(self, key_dir: Path) -> None:
        """Two nodes with one id, or one endpoint, are refused naming what is duplicated."""
        base = opts(key_dir)
        nodes = base["nodes"]
        twice_id = [nodes[0], {**nodes[1], "id": "a"}, nodes[2]]
        with pytest.raises(ConfigError, match="listed twice: a"):
            open_with({**base, "nodes": twice_id})
        twice_endpoint = [nodes[0], {**nodes[1], "endpoint": nodes[0]["endpoint"]}, nodes[2]]
        with pytest.raises(ConfigError, match="used by two nodes"):
            open_with({**base, "nodes": twice_endpoint})

    def test_missing_public_key_and_bad_endpoint_are_refused(self, key_dir: Path) -> None:
        """With CURVE on every node needs a public key; endpoints must be tcp://HOST:PORT."""
        base = opts(key_dir)
        nodes = base["nodes"]
        with pytest.raises(ConfigError, match="public_key missing for node"):
            open_with({**base, "nodes": [nodes[0], {**nodes[1], "public_key": ""}, nodes[2]]})
        with pytest.raises(ConfigError, match="tcp://HOST:PORT"):
            open_with({**base, "nodes": [{**nodes[0], "endpoint": "http://x"}, *nodes[1:]]})

    def test_secret_key_of_another_node_is_refused(self, key_dir: Path) -> None:
        """A secret key file whose public key is not this node's is refused at open."""
        with pytest.raises(ConfigError, match="not the public_key configured for node 'a'"):
            open_with(opts(key_dir, secret_key_file=str(key_dir / "b.key_secret")))

    def test_public_key_file_as_secret_is_refused(self, key_dir: Path) -> None:
        """Pointing secret_key_file at a public key file is a clear error."""
        with pytest.raises(ConfigError, match="no secret-key"):
            open_with(opts(key_dir, secret_key_file=str(key_dir / "a.key")))


class TestKeygen:
    """``sessionkeeper node keygen`` writes a key pair, the secret one private."""

    def test_keygen_writes_a_private_secret_and_prints_the_public_key(self, tmp_path: Path) -> None:
        """The secret file is mode 0600, the public key printed is the one in the file, and a
        second run refuses to overwrite."""
        runner = CliRunner()
        result = runner.invoke(node, ["keygen", "--dir", str(tmp_path), "--name", "n1"])
        assert result.exit_code == 0, result.output
        secret = tmp_path / "n1.key_secret"
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
        public = (tmp_path / "n1.key").read_text().split('public-key = "')[1].split('"')[0]
        assert f'public_key = "{public}"' in result.output
        again = runner.invoke(node, ["keygen", "--dir", str(tmp_path), "--name", "n1"])
        assert again.exit_code != 0
        assert "exists" in again.output

    def test_node_command_refuses_another_backend(self, tmp_path: Path) -> None:
        """``node --config`` on a config for another backend exits with a usage error."""
        config = tmp_path / "s.toml"
        config.write_text('[sessionkeeper]\nbackend = "memory"\n')
        result = CliRunner().invoke(node, ["--config", str(config)])
        assert result.exit_code == 2
        assert "node" in result.output


class TestDiscCopies:
    """``disc_copies``: a node restarts with its data; a torn log tail is cut off."""

    def test_single_node_restarts_with_its_sessions(self, key_dir: Path, tmp_path: Path) -> None:
        """Stores, a touch and a delete survive close and reopen of a one-node cluster."""
        clock = ManualClock()
        options = {
            **cluster_opts(key_dir, 1)[0],
            "disc_copies": True,
            "data_dir": str(tmp_path / "data"),
            "fsync": "always",
        }
        with open_with(options, clock=clock) as first:
            kept = first.create(metadata={"k": 1})
            gone = first.create()
            first.delete(gone.id)
            clock.advance(5_000)
            touched = first.fetch(kept.id)
        with open_with(options, clock=clock) as second:
            assert second.peek(kept.id) == touched
            assert second.list() == [kept.id]

    def test_torn_tail_is_truncated(self, key_dir: Path, tmp_path: Path) -> None:
        """Garbage appended to the log (a torn write) is cut off at open; every whole record
        is kept."""
        clock = ManualClock()
        options = {
            **cluster_opts(key_dir, 1)[0],
            "disc_copies": True,
            "data_dir": str(tmp_path / "data"),
        }
        with open_with(options, clock=clock) as first:
            first.store(Session("s1", clock.now, clock.now, None, {"a": 1}))
            wal = first.backend.wal
            first.store(Session("s2", clock.now, clock.now, None, {"a": 2}))
            log_path = wal.log_path
            # Simulate a crash: stop logging without compacting, then tear the tail.
            wal.close()
        with log_path.open("ab") as handle:
            handle.write(b"\x00\x00\x01\x00garbage")
        with open_with(options, clock=clock) as second:
            assert sorted(second.list()) == ["s1", "s2"]
            assert second.stats()["backend_stats"]["wal"]["truncated_bytes"] == 11


def node_config(path: Path, port: int, **extra: str) -> Path:
    """A one-node zmq config file on ``port``; ``extra`` adds raw TOML values."""
    lines = [
        "[sessionkeeper]",
        'backend = "zmq"',
        "[sessionkeeper.backend_opts]",
        'node_id = "a"',
        f'nodes = [{{ id = "a", endpoint = "tcp://127.0.0.1:{port}" }}]',
        "curve = false",
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


class TestNodeCommand:
    """``sessionkeeper node``: the documented exit codes and a visible start (issue 19)."""

    def test_configuration_errors_exit_3(self, tmp_path: Path) -> None:
        """A bad option, a missing config file and a missing key file exit with 3
        (configuration error); the missing key file is named as such."""
        [port] = free_ports(1)
        runner = CliRunner()
        bad = node_config(tmp_path / "bad.toml", port, heartbeat_ms="10000000")
        result = runner.invoke(node, ["--config", str(bad)])
        assert result.exit_code == 3, result.output
        assert "heartbeat_ms" in result.output
        result = runner.invoke(node, ["--config", str(tmp_path / "nowhere.toml")])
        assert result.exit_code == 3, result.output
        assert "not found" in result.output
        missing = tmp_path / "keys" / "a.key_secret"
        keyed = tmp_path / "keyed.toml"
        keyed.write_text(
            '[sessionkeeper]\nbackend = "zmq"\n[sessionkeeper.backend_opts]\nnode_id = "a"\n'
            f'secret_key_file = "{missing}"\n'
            f'nodes = [{{ id = "a", endpoint = "tcp://127.0.0.1:{port}", '
            'public_key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7" }]\n'
        )
        result = runner.invoke(node, ["--config", str(keyed)])
        assert result.exit_code == 3, result.output
        assert f"no such file: {missing}" in result.output

    def test_a_port_in_use_exits_4(self, tmp_path: Path) -> None:
        """A node that cannot listen (its port is taken) exits with 4 (storage error)."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            config = node_config(tmp_path / "a.toml", taken.getsockname()[1])
            result = CliRunner().invoke(node, ["--config", str(config)])
        assert result.exit_code == 4, result.output
        assert "cannot listen" in result.output

    def test_node_says_it_is_opening_then_running_and_stops_cleanly(self, tmp_path: Path) -> None:
        """A real node process prints a status line before opening (so the time to ready is
        visible), then that it runs and is ready, and exits 0 on SIGTERM."""
        [port] = free_ports(1)
        config = node_config(tmp_path / "a.toml", port)
        process = subprocess.Popen(
            [sys.executable, "-m", "sessionkeeper_zmq.node", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: list[str] = []
        assert process.stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)  # type: ignore[arg-type]
        reader.start()
        try:
            wait_for(lambda: any("ready" in line for line in lines[1:]), "the node to be ready")
            opening = next(i for i, line in enumerate(lines) if "opening" in line)
            running = next(i for i, line in enumerate(lines) if "running" in line)
            assert opening < running
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
            reader.join(timeout=30)
            assert "stopped" in lines[-1]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            reader.join(timeout=30)
            process.stderr.close()
