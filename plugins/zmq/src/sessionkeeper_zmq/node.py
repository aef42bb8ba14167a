"""``python -m sessionkeeper_zmq.node --config FILE``: run one cluster node in the foreground."""

from __future__ import annotations

from ._cli import node

if __name__ == "__main__":
    node(prog_name="python -m sessionkeeper_zmq.node")
