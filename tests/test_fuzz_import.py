"""Hostile input at the import-file door: ``sessionkeeper import FILE`` fed arbitrary bytes and
damaged exports (plain and gzip).

Whatever the file holds, the command must end with exit 0 (a good file) or 5 (bad input, with
one clear ``error:`` line), never a traceback, never an "unexpected" error, never exit 4 blaming
the store, and it must never lose a session that was stored before. The store is a memory table
held open by the test, which the in-process CLI shares (no disk, so each example is quick).
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from sessionkeeper import Session, SessionManager
from sessionkeeper.cli import ExitCode, cli
from sessionkeeper.transfer import EXPORT_FORMAT, EXPORT_VERSION, export_sessions

NOW = 1_700_000_000_000

#: Sessions already in the store before every import: none may be lost.
KEPT = [Session(f"kept-{i}", NOW, NOW, None, {"i": i}) for i in range(5)]


def _valid_export() -> bytes:
    """A real export of a few varied sessions (one of them with an id of the kept ones)."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "e.jsonl"
        with SessionManager(
            backend="memory", backend_opts={"table_name": f"t{uuid.uuid4().hex}"}
        ) as manager:
            sessions = [Session("kept-0", NOW, NOW, None, {"i": "replaced"})]
            for i in range(6):
                metadata = {"n": i, "f": i / 3, "s": "é漢" * i, "l": [True, None, {"k": i}]}
                timeout = None if i % 2 else 10**9
                owner = None if i % 3 else f"owner-{i}-é"
                sessions.append(
                    Session(
                        f"file-{i}",
                        NOW - i,
                        NOW,
                        timeout,
                        metadata,
                        version=1 + i * 1000,
                        owner=owner,
                        absolute_timeout_ms=None if i % 2 else 10**9 + i,
                    )
                )
            manager.store_many(sessions)  # as given: the versions too
            export_sessions(manager, path, include_expired=True)
        return path.read_bytes()


VALID = _valid_export()


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid export (plain or gzip) with a few mutations: cuts, flipped bytes, inserted
    bytes, garbage appended."""
    data = bytearray(VALID)
    gz = draw(st.booleans())
    if gz:
        data = bytearray(gzip.compress(bytes(data), mtime=0))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["cut", "flip", "insert", "append"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "cut":
            del data[at:]
        elif kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data += draw(st.binary(min_size=1, max_size=32))
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)


@st.composite
def hostile_fields(draw: st.DrawFn) -> bytes:
    """A file of the current format whose one session line has any JSON value (or nothing) for
    version, owner and absolute_timeout_ms: big and negative numbers, control characters, long
    or empty owners, wrong types."""
    line: dict[str, object] = {
        "id": "hostile",
        "created_at": NOW,
        "last_accessed": NOW,
        "timeout_ms": None,
        "metadata": {},
    }
    for key in ("version", "owner", "absolute_timeout_ms"):
        if draw(st.integers(0, 9)):  # now and then the key is missing
            line[key] = draw(json_values)
    head = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "source_backend": "x"}
    head["exported_at"] = NOW
    return "\n".join(json.dumps(item) for item in (head, line)).encode() + b"\n"


files = st.one_of(
    st.binary(max_size=512),
    st.binary(max_size=512).map(lambda raw: gzip.compress(raw, mtime=0)),
    damaged(),
    hostile_fields(),
)


@pytest.mark.fuzz
@given(content=files)
def test_import_of_any_file_is_clean(content: bytes) -> None:
    """Any file: exit 0 or 5 with a clear message, no traceback, and every session stored
    before the import still stored."""
    table = f"t{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "in.jsonl"
        path.write_bytes(content)
        config = Path(directory) / "c.toml"
        config.write_text(
            f'[sessionkeeper]\nbackend = "memory"\ncleanup_interval = 0\n\n'
            f'[sessionkeeper.backend_opts]\ntable_name = "{table}"\n',
            encoding="utf-8",
        )
        with SessionManager(backend="memory", backend_opts={"table_name": table}) as held:
            for session in KEPT:
                held.store(session)
            env = {"SESSIONKEEPER_CONFIG": "", "SESSIONKEEPER_DEBUG": ""}
            result = CliRunner().invoke(
                cli, ["import", os.fspath(path), "--config", os.fspath(config)], env=env
            )
            stored = {s.id for s in held.iter_sessions(include_expired=True)}
    assert result.exit_code in (ExitCode.OK, ExitCode.DATA), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert "error: unexpected" not in result.stderr
    if result.exit_code == ExitCode.DATA:
        assert "error: " in result.stderr
    assert {s.id for s in KEPT} <= stored
