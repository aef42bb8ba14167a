"""sessionkeeper-zmq: the ``zmq`` cluster backend of sessionkeeper.

Every process configured with ``backend = "zmq"`` is a node that holds every session; reads are
local, writes replicate to the peers over ZeroMQ (CURVE-authenticated) and return once the
configured number of nodes hold them::

    [sessionkeeper]
    backend = "zmq"

    [sessionkeeper.backend_opts]
    node_id = "a"
    secret_key_file = "keys/a.key_secret"
    ack = "quorum"
    nodes = [
        { id = "a", endpoint = "tcp://10.0.0.1:7100", public_key = "..." },
        { id = "b", endpoint = "tcp://10.0.0.2:7100", public_key = "..." },
        { id = "c", endpoint = "tcp://10.0.0.3:7100", public_key = "..." },
    ]

See ``docs/zmq.md`` for the operations guide.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._backend import (
    CLOCK_OFFSET_ENV,
    NotEnoughReplicas,
    PendingWrite,
    Version,
    WriteTimeout,
    ZmqBackend,
)
from ._keys import write_key_pair
from ._options import NodeSpec, ZmqOptions, required_acks
from ._replica import Entry, merge_entries

__all__ = [
    "CLOCK_OFFSET_ENV",
    "Entry",
    "NodeSpec",
    "NotEnoughReplicas",
    "PendingWrite",
    "Version",
    "WriteTimeout",
    "ZmqBackend",
    "ZmqOptions",
    "__version__",
    "merge_entries",
    "required_acks",
    "write_key_pair",
]

try:
    __version__ = version("sessionkeeper-zmq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
