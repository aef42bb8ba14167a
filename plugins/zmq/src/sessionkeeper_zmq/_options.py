"""``backend_opts`` of the ``zmq`` backend: the cluster description, validated as a whole."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Final

import attrs

from sessionkeeper.backend import FieldError

__all__ = ["AckLevel", "NodeSpec", "ZmqOptions", "cluster_identity", "required_acks"]

#: The symbolic acknowledgement levels (an integer is also accepted).
AckLevel = str | int
_ACK_NAMES: Final = ("local", "quorum", "all")
_NODE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENDPOINT: Final = re.compile(r"^(tcp://[^\s:]+:\d{1,5}|ipc://\S+)$")
_Z85: Final = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
#: Every node holds every session and talks to every other: a few nodes, not hundreds.
_MAX_NODES: Final = 64


def _text(field: str, value: object) -> str:
    if type(value) is not str:
        raise FieldError(field, f"must be a string, got {type(value).__name__} {value!r:.60}")
    if "\0" in value:
        raise FieldError(field, "must not contain a NUL character")
    return value


def _endpoint_problem(endpoint: str) -> str | None:
    """What is wrong with ``endpoint`` (``None``: nothing)."""
    if not _ENDPOINT.match(endpoint):
        return "must look like tcp://HOST:PORT"
    if endpoint.startswith("tcp://") and not 1 <= int(endpoint.rpartition(":")[2]) <= 65_535:
        return "has a port outside 1-65535"
    return None


@attrs.frozen(kw_only=True)
class NodeSpec:
    """One member of the cluster, as every node's configuration lists it.

    :param id: the node's name (letters, digits, ``_.-``; at most 64 characters).
    :param endpoint: where its peer socket listens, ``tcp://HOST:PORT``.
    :param public_key: its CURVE public key, 40 characters of Z85 (``sessionkeeper node keygen``
        prints it); required unless ``curve = false``.
    """

    id: str
    endpoint: str
    public_key: str = ""

    def __attrs_post_init__(self) -> None:
        if not _NODE_ID.match(_text("nodes.id", self.id)):
            raise FieldError(
                "nodes.id",
                f"node id {self.id!r} must be 1-64 letters, digits, '_', '.' or '-' "
                "and start with a letter or digit",
            )
        problem = _endpoint_problem(_text("nodes.endpoint", self.endpoint))
        if problem is not None:
            raise FieldError(
                "nodes.endpoint", f"endpoint {self.endpoint!r:.80} of node {self.id!r} {problem}"
            )
        if self.public_key and not _Z85.match(_text("nodes.public_key", self.public_key)):
            raise FieldError(
                "nodes.public_key",
                f"public_key of node {self.id!r} must be 40 characters of Z85 "
                "(as written by `sessionkeeper node keygen`)",
            )

    @classmethod
    def from_config(cls, value: object, where: str) -> NodeSpec:
        """One ``nodes`` item: a table with ``id``, ``endpoint`` and ``public_key`` (or a
        :class:`NodeSpec` already), checked with errors naming ``where`` (``nodes[2]``)."""
        if isinstance(value, NodeSpec):
            return value
        if type(value) is not dict:
            raise FieldError(
                where,
                f"must be a table {{ id = ..., endpoint = ..., public_key = ... }}, got "
                f"{type(value).__name__} {value!r:.60}",
            )
        allowed = ("id", "endpoint", "public_key")
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise FieldError(
                f"{where}.{unknown[0]}", f"unknown key (allowed: {', '.join(allowed)})"
            )
        for name in ("id", "endpoint"):
            if name not in value:
                raise FieldError(f"{where}.{name}", "required key is missing")
        for name, item in value.items():
            _text(f"{where}.{name}", item)
        try:
            return cls(**value)
        except FieldError as exc:  # "nodes.endpoint" -> "nodes[2].endpoint"
            raise FieldError(where + exc.field.removeprefix("nodes"), str(exc)) from None


#: Upper bounds of the numeric options (each far beyond any sensible setting, and within what
#: the libraries they reach accept: a thread wait at ``threading.TIMEOUT_MAX``).
_HOUR: Final = 3_600_000
BOUNDS: Final[dict[str, tuple[int, int]]] = {
    "write_timeout_ms": (1, _HOUR),
    "heartbeat_ms": (1, 60_000),
    "suspect_after_ms": (1, _HOUR),
    "anti_entropy_ms": (0, 24 * _HOUR),
    "anti_entropy_keys": (1, 10_000_000),
    "ready_timeout_ms": (0, _HOUR),
    "backlog": (1, 10_000_000),
    "tombstone_ttl_ms": (1, 10 * 365 * 24 * _HOUR),
    "max_clock_skew_ms": (1, _HOUR),
}


def _bounded(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    low, high = BOUNDS[attribute.name]
    if type(value) is not int:
        raise FieldError(attribute.name, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise FieldError(attribute.name, f"must be between {low} and {high}, got {value}")


def _node_list(value: object) -> list[NodeSpec]:
    """``nodes``: a non-empty array of node tables (see :class:`NodeSpec`)."""
    if type(value) is not list:
        raise FieldError(
            "nodes",
            "must be an array of tables { id = ..., endpoint = ..., public_key = ... }, got "
            f"{type(value).__name__} {value!r:.60}",
        )
    if len(value) > _MAX_NODES:
        raise FieldError("nodes", f"lists {len(value)} nodes; at most {_MAX_NODES} are supported")
    return [NodeSpec.from_config(item, f"nodes[{i}]") for i, item in enumerate(value)]


def _ack(field: str, value: object) -> None:
    if type(value) is int:
        if value < 1:
            raise FieldError(field, f"must be >= 1 (the writing node counts), got {value}")
        return
    if value not in _ACK_NAMES:
        raise FieldError(
            field, f'must be "local", "quorum", "all" or a number of nodes, got {value!r}'
        )


def required_acks(level: AckLevel, cluster_size: int) -> int:
    """How many nodes (the writer included) must hold a write before it is acknowledged."""
    if level == "local":
        return 1
    if level == "quorum":
        return cluster_size // 2 + 1
    if level == "all":
        return cluster_size
    assert type(level) is int
    return level


@attrs.frozen(kw_only=True)
class ZmqOptions:
    """``backend_opts`` of the ``zmq`` backend (see ``docs/zmq.md`` for the operations guide).

    :param node_id: which entry of ``nodes`` this process is.
    :param nodes: every member of the cluster (the same list on every node): ``id``,
        ``endpoint``, ``public_key``.
    :param cluster_id: a name shared by the members; a peer of another cluster is refused.
    :param bind: the endpoint to listen on, when it differs from this node's ``endpoint`` (e.g.
        ``tcp://0.0.0.0:7100`` behind NAT); default: the node's own ``endpoint``.
    :param disc_copies: keep a write-ahead log and snapshots in ``data_dir`` so a restarted node
        comes back with its data (``false``: RAM only, a restarted node resyncs from its peers).
    :param data_dir: where the write-ahead log and snapshots live (required with
        ``disc_copies``); relative to the config file.
    :param ack: how many nodes must hold a store or delete before it returns: ``"local"``,
        ``"quorum"`` (a majority of ``nodes``), ``"all"`` or a number.
    :param touch_ack: the same for the coalesced write-backs of ``fetch`` (default
        ``"local"``: replicated asynchronously).
    :param write_timeout_ms: how long a write waits for its acknowledgements.
    :param curve: authenticate and encrypt every link with CURVE (default). ``false`` needs to
        be said explicitly and logs a warning: anyone who can reach the port can then write.
    :param secret_key_file: this node's CURVE secret key file (``sessionkeeper node keygen``).
    :param heartbeat_ms: interval of the application-level ping between nodes.
    :param suspect_after_ms: a peer not heard from for this long is considered down (writes
        that need it fail fast instead of waiting).
    :param anti_entropy_ms: interval of the digest comparison with one peer (0: off).
    :param anti_entropy_keys: the most entries one anti-entropy answer summarises (whole
        digest buckets, at least one); differing buckets beyond it are compared in later
        rounds, each answer starting where the last one stopped.
    :param ready_timeout_ms: how long opening waits for the node to catch up with its peers
        before it serves anyway (0: do not wait).
    :param backlog: how many of its own recent writes a node keeps to resend to a peer that
        missed them; a peer further behind takes a snapshot.
    :param tombstone_ttl_ms: how long a delete is remembered (a node away for longer must resync).
    :param max_clock_skew_ms: a peer whose clock is further ahead than this raises an alarm.
    :param fsync: ``disc_copies`` only: ``"always"`` (each write), ``"group"`` (every few ms,
        the default) or ``"os"``.
    :param admin: serve the admin socket, through which ``sessionkeeper list``, ``show``,
        ``stats``, ``export`` and ``backup`` read this running node (default on).
    :param admin_socket: where the admin socket is (relative to the config file); default
        ``DATA_DIR/admin.sock`` with ``disc_copies``, else a file in
        ``TMPDIR/sessionkeeper-UID/``. Its directory must be closed to other users.
    """

    node_id: str
    # Typed Any for the config converter: the raw value reaches _node_list, which names what
    # is wrong with it (a string, a number, an item that is no table) instead of failing deep.
    nodes: Any = attrs.field(converter=_node_list)
    cluster_id: str = "sessionkeeper"
    bind: str | None = None
    disc_copies: bool = False
    data_dir: str | None = None
    ack: Any = "quorum"
    touch_ack: Any = "local"
    write_timeout_ms: int = attrs.field(default=2_000, validator=_bounded)
    curve: bool = True
    secret_key_file: str | None = None
    heartbeat_ms: int = attrs.field(default=500, validator=_bounded)
    suspect_after_ms: int = attrs.field(default=1_500, validator=_bounded)
    anti_entropy_ms: int = attrs.field(default=10_000, validator=_bounded)
    anti_entropy_keys: int = attrs.field(default=4_096, validator=_bounded)
    ready_timeout_ms: int = attrs.field(default=5_000, validator=_bounded)
    backlog: int = attrs.field(default=100_000, validator=_bounded)
    tombstone_ttl_ms: int = attrs.field(default=86_400_000, validator=_bounded)
    max_clock_skew_ms: int = attrs.field(default=500, validator=_bounded)
    fsync: str = "group"
    admin: bool = True
    admin_socket: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.nodes:
            raise FieldError("nodes", "must list at least one node (this one)")
        ids = [node.id for node in self.nodes]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise FieldError("nodes", f"node id(s) listed twice: {', '.join(duplicates)}")
        endpoints = [node.endpoint for node in self.nodes]
        twice = sorted({e for e in endpoints if endpoints.count(e) > 1})
        if twice:
            raise FieldError("nodes", f"endpoint(s) used by two nodes: {', '.join(twice)}")
        if self.node_id not in ids:
            raise FieldError(
                "node_id", f"{self.node_id!r} is not one of the nodes ({', '.join(ids)})"
            )
        _text("node_id", self.node_id)
        if not _text("cluster_id", self.cluster_id) or len(self.cluster_id) > 64:
            raise FieldError("cluster_id", "must be 1-64 characters")
        if self.bind is not None:
            problem = _endpoint_problem(_text("bind", self.bind))
            if problem is not None:
                raise FieldError("bind", f"{self.bind!r:.80} {problem}")
        for name in ("data_dir", "secret_key_file", "admin_socket"):
            if getattr(self, name) is not None:
                _text(name, getattr(self, name))
        _text("fsync", self.fsync)
        for name in ("ack", "touch_ack"):
            level = getattr(self, name)
            _ack(name, level)
            if type(level) is int and level > len(self.nodes):
                raise FieldError(
                    name,
                    f"{level} acknowledgements are impossible in a cluster of "
                    f"{len(self.nodes)} node(s)",
                )
        if self.disc_copies and not self.data_dir:
            raise FieldError("data_dir", "is required when disc_copies = true")
        if self.curve:
            missing = [node.id for node in self.nodes if not node.public_key]
            if missing:
                raise FieldError(
                    "nodes",
                    f"public_key missing for node(s) {', '.join(missing)} "
                    "(CURVE is on; set curve = false to run without authentication)",
                )
            keys = [node.public_key for node in self.nodes]
            shared = sorted({k for k in keys if keys.count(k) > 1})
            if shared:
                raise FieldError("nodes", "two nodes have the same public_key")
            if not self.secret_key_file:
                raise FieldError(
                    "secret_key_file", "is required when curve is on (this node's secret key)"
                )
        if self.fsync not in ("always", "group", "os"):
            raise FieldError("fsync", f'must be "always", "group" or "os", got {self.fsync!r}')

    @property
    def me(self) -> NodeSpec:
        """This node's entry in ``nodes``."""
        nodes: list[NodeSpec] = self.nodes
        return next(node for node in nodes if node.id == self.node_id)

    @property
    def peers(self) -> list[NodeSpec]:
        """Every node but this one."""
        nodes: list[NodeSpec] = self.nodes
        return [node for node in nodes if node.id != self.node_id]

    def acks_needed(self, level: AckLevel) -> int:
        """Nodes (this one included) that must hold a write at ``level``."""
        return required_acks(level, len(self.nodes))


def cluster_identity(options: ZmqOptions) -> str:
    """``zmq:<cluster_id>:<hash of the sorted (id, public_key) of every member>``."""
    members = sorted((node.id, node.public_key) for node in options.nodes)
    text = json.dumps([options.cluster_id, members], separators=(",", ":"))
    return f"zmq:{options.cluster_id}:{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"
