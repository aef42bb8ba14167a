"""The ``backend_opts`` of the ``redis`` backend, validated when the config is loaded."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any, Final, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import attrs
from redis import connection
from redis.connection import SSLConnection

from sessionkeeper.backend import FieldError

__all__ = [
    "MAX_DB",
    "MAX_TTL_MS",
    "SSL_SETTINGS",
    "URL_SCHEMES",
    "ClusterOptions",
    "RedisOptions",
    "SentinelOptions",
    "parse_address",
]

#: Schemes accepted in ``url``: plain TCP, TLS, and a Unix socket.
URL_SCHEMES: Final = ("redis", "rediss", "unix")
#: The largest database number accepted (``url``'s path, ``db``): far above any real server's
#: ``databases`` setting, and below the 2**31 Redis refuses.
MAX_DB: Final = 1_000_000
#: What a ``rediss://`` URL's query may set: redis-py's TLS settings. Nothing else, because the
#: query overrides the backend's own options (timeouts, database, credentials) behind their
#: bounds.
SSL_SETTINGS: Final = frozenset(
    name for name in inspect.signature(SSLConnection.__init__).parameters if name.startswith("ssl_")
)
#: How redis-py reads query values (a yes/no setting reads any text but "false"/"no"/"0" as true,
#: so the backend accepts only these for it).
_QUERY_PARSERS: Final[dict[str, object]] = getattr(connection, "URL_QUERY_ARGUMENT_PARSERS", {})
_TO_BOOL: Final = getattr(connection, "to_bool", None)
_BOOLEANS: Final = frozenset({"true", "false", "yes", "no", "1", "0"})
#: Query parameters that have an option of their own, and that option's name.
_OPTION_FOR: Final = {
    "socket_timeout": "socket_timeout_ms",
    "socket_connect_timeout": "connect_timeout_ms",
    "timeout": "socket_timeout_ms",
    "username": "username",
    "password": "password",
    "db": "the URL's path (/0)",
}
#: The longest key TTL the backend sets (about 4,460 years); a session whose timeout is longer
#: gets a key without TTL and is removed by ``cleanup_expired`` alone.
MAX_TTL_MS: Final = 2**47
_HOST_PORT: Final = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(?P<port>[0-9]{1,5})")

T = TypeVar("T")
Validator = Callable[[Any, "attrs.Attribute[T]", T], None]


def parse_address(text: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:6379"`` for IPv6) as ``(host, port)``; ``ValueError`` if not."""
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        raise ValueError(f'{text!r} is not "host:port"')
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ValueError(f"{text!r}: port {port} is not between 1 and 65535")
    return match["host"].strip("[]"), port


def _addresses(what: str) -> Validator[tuple[str, ...]]:
    def check(
        _: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
    ) -> None:
        if not value:
            raise FieldError(attribute.name, f'must list at least one {what} as "host:port"')
        if len(value) > 1 and all(len(entry) == 1 for entry in value):
            raise FieldError(
                attribute.name,
                f'must be a list of "host:port" strings, e.g. ["127.0.0.1:26379"], '
                f"not one string ({''.join(value)!r})",
            )
        for index, entry in enumerate(value):
            try:
                parse_address(entry)
            except ValueError as exc:
                raise FieldError(f"{attribute.name}[{index}]", str(exc)) from None

    return check


def _non_blank(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.strip():
        raise FieldError(attribute.name, "must not be empty")


def _optional_non_blank(
    _: object, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is not None and not value:
        raise FieldError(attribute.name, "must not be empty (leave it out instead)")


def _table_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or len(value) > 128:
        raise FieldError(attribute.name, f"must be 1-128 characters, got {len(value)}")
    bad = sorted({ch for ch in value if ch in "{}" or not 0x21 <= ord(ch) <= 0x7E})
    if bad:
        raise FieldError(
            attribute.name,
            f"{value!r} contains {', '.join(repr(ch) for ch in bad)}: use visible ASCII "
            "without braces (the name becomes the Redis Cluster hash tag {table_name})",
        )


def _between(low: int, high: int, unit: str) -> Validator[int]:
    def check(_: object, attribute: attrs.Attribute[int], value: int) -> None:
        if not low <= value <= high:
            raise FieldError(attribute.name, f"must be between {low} and {high}{unit}, got {value}")

    return check


def _url(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise FieldError(attribute.name, f"is not a valid URL: {exc}") from None
    if parts.scheme not in URL_SCHEMES:
        raise FieldError(
            attribute.name,
            f"must start with redis://, rediss:// (TLS) or unix:// (a socket), got "
            f"{parts.scheme + '://' if parts.scheme else 'no scheme'}",
        )
    if parts.scheme == "unix":
        if not parts.path:
            raise FieldError(
                attribute.name, "unix:// needs the socket's path, e.g. unix:///run/redis.sock"
            )
        _url_query(attribute.name, parts.scheme, parts.query)
        return
    if port == 0:
        raise FieldError(attribute.name, "port 0 is not a server port")
    database = parts.path.strip("/")
    if database:
        # ASCII digits only: str.isdigit() also takes '²' (which redis-py then silently reads
        # as database 0) and '٣' (read as 3).
        if not (database.isascii() and database.isdigit()):
            raise FieldError(attribute.name, f"the path must be a database number, got /{database}")
        if int(database) > MAX_DB:
            raise FieldError(
                attribute.name, f"database {int(database)} is not between 0 and {MAX_DB}"
            )
    _url_query(attribute.name, parts.scheme, parts.query)
    parse: Callable[[str], dict[str, Any]] = connection.parse_url  # unannotated in redis-py
    try:
        parse(value)
    except ValueError as exc:
        raise FieldError(attribute.name, str(exc)) from None


def _url_query(name: str, scheme: str, query: str) -> None:
    """Only a ``rediss://`` URL's TLS settings (``ssl_*``), each at most once."""
    seen: set[str] = set()
    for key, text in parse_qsl(query, keep_blank_values=True):
        if key in seen:
            raise FieldError(name, f"the query sets {key!r} twice")
        seen.add(key)
        if key == "db" and scheme == "unix":  # a socket's URL has no path for it
            if not (text.isascii() and text.isdigit() and int(text) <= MAX_DB):
                raise FieldError(name, f"db={text!r} is not a database number 0-{MAX_DB}")
            continue
        if key in _OPTION_FOR:
            raise FieldError(name, f"the query may not set {key!r}: use {_OPTION_FOR[key]} instead")
        if not key.startswith("ssl_"):
            raise FieldError(
                name,
                f"the query may not set {key!r}: a rediss:// URL's query takes only TLS "
                "settings (ssl_ca_certs, ssl_certfile, ...)",
            )
        if scheme != "rediss":
            raise FieldError(name, f"{key!r} is a TLS setting: it needs a rediss:// URL")
        if key not in SSL_SETTINGS:
            raise FieldError(
                name,
                f"{key!r} is not a TLS setting redis-py knows (it knows "
                f"{', '.join(sorted(SSL_SETTINGS))})",
            )
        if _QUERY_PARSERS.get(key) is _TO_BOOL and text.lower() not in _BOOLEANS:
            raise FieldError(name, f"{key}={text!r} is not true or false")


@attrs.frozen(kw_only=True)
class SentinelOptions:
    """The ``[sessionkeeper.backend_opts.sentinel]`` table: find the primary through Sentinel.

    :param hosts: the Sentinel instances, as ``"host:port"`` strings (list them all).
    :param service_name: the monitored primary's name (``sentinel monitor <name> ...``).
    :param username: ACL user for the Sentinel instances themselves, if they require one.
    :param password: password for the Sentinel instances (``requirepass`` in sentinel.conf);
        the data nodes use the top-level ``username``/``password``.
    """

    hosts: tuple[str, ...] = attrs.field(validator=_addresses("Sentinel"))
    service_name: str = attrs.field(validator=_non_blank)
    username: str | None = attrs.field(default=None, validator=_optional_non_blank)
    password: str | None = attrs.field(default=None, repr=False, validator=_optional_non_blank)

    def addresses(self) -> list[tuple[str, int]]:
        """:attr:`hosts` as ``(host, port)`` pairs."""
        return [parse_address(entry) for entry in self.hosts]


@attrs.frozen(kw_only=True)
class ClusterOptions:
    """The ``[sessionkeeper.backend_opts.cluster]`` table: a Redis Cluster.

    :param startup_nodes: some of the cluster's nodes as ``"host:port"``; the rest is
        discovered from them.
    """

    startup_nodes: tuple[str, ...] = attrs.field(validator=_addresses("cluster node"))

    def addresses(self) -> list[tuple[str, int]]:
        """:attr:`startup_nodes` as ``(host, port)`` pairs."""
        return [parse_address(entry) for entry in self.startup_nodes]


@attrs.frozen(kw_only=True)
class RedisOptions:
    """``backend_opts`` of the ``redis`` backend. Give exactly one of ``url``, ``sentinel`` and
    ``cluster``.

    :param url: a standalone server: ``redis://host:6379/0``, ``rediss://...`` for TLS (the
        URL's query may carry redis-py's ``ssl_*`` settings), or ``unix:///path/redis.sock``.
        Credentials may be in the URL; ``username``/``password`` below override them.
    :param sentinel: a :class:`SentinelOptions` table: the primary is looked up through Sentinel
        and found again after a failover.
    :param cluster: a :class:`ClusterOptions` table: a Redis Cluster. All the keys of one table
        share the hash tag ``{table_name}``, so one table lives on one shard.
    :param table_name: the key prefix: every key of this store starts with ``{table_name}:``.
        Stores with different names are independent.
    :param username: ACL user for the data nodes (Redis 6+).
    :param password: password for the data nodes (``requirepass`` or the ACL user's).
    :param db: database number with ``sentinel`` (``url`` carries it as its path; Cluster has
        only database 0).
    :param socket_timeout_ms: how long one command may wait for its reply.
    :param connect_timeout_ms: how long opening a connection may take.
    :param retries: how many times a command is retried, with exponential backoff
        (10 ms doubling up to 1 s), after a connection error or timeout, before
        :class:`~sessionkeeper.StorageError` is raised.
    :param wait_replicas: after every write, wait until this many replicas acknowledge it (Redis
        ``WAIT``); fewer within ``wait_timeout_ms`` raises ``StorageError``. ``0`` does not wait.
    :param wait_timeout_ms: how long ``WAIT`` may block (must be > 0; Redis would read 0 as
        forever).
    :param ttl_margin_ms: how long Redis keeps a key after the session's timeout ran out, so
        that clock differences between application hosts never make Redis drop a session that
        a manager still sees as live. Expired sessions are hidden from the first millisecond by
        the manager and removed by ``cleanup_expired``; the TTL is only Redis's own backstop.
    :param functions: run the store script as a Redis 7 function (``FCALL``, its library
        loaded with ``FUNCTION LOAD`` on the first store) where the server allows it; ``False``
        always calls the script itself (``EVALSHA``) and loads nothing on the server.
    """

    url: str | None = attrs.field(default=None, repr=False, validator=_url)
    sentinel: SentinelOptions | None = None
    cluster: ClusterOptions | None = None
    table_name: str = attrs.field(default="sessions", validator=_table_name)
    username: str | None = attrs.field(default=None, validator=_optional_non_blank)
    password: str | None = attrs.field(default=None, repr=False, validator=_optional_non_blank)
    db: int | None = attrs.field(default=None)
    socket_timeout_ms: int = attrs.field(default=5_000, validator=_between(1, 3_600_000, " ms"))
    connect_timeout_ms: int = attrs.field(default=5_000, validator=_between(1, 3_600_000, " ms"))
    retries: int = attrs.field(default=3, validator=_between(0, 100, ""))
    wait_replicas: int = attrs.field(default=0, validator=_between(0, 1_000, ""))
    wait_timeout_ms: int = attrs.field(default=1_000, validator=_between(1, 3_600_000, " ms"))
    ttl_margin_ms: int = attrs.field(default=60_000, validator=_between(1, 86_400_000, " ms"))
    functions: bool = True

    def __attrs_post_init__(self) -> None:
        given = [name for name in ("url", "sentinel", "cluster") if getattr(self, name) is not None]
        if not given:
            raise FieldError(
                "url",
                "is required: give exactly one of url (one server), sentinel (a table with "
                "hosts and service_name) or cluster (a table with startup_nodes)",
            )
        if len(given) > 1:
            raise FieldError(
                given[1],
                f"give exactly one of url, sentinel and cluster, not {' and '.join(given)}",
            )
        if self.db is not None:
            if not 0 <= self.db <= MAX_DB:
                raise FieldError(
                    "db", f"must be a database number between 0 and {MAX_DB}, got {self.db}"
                )
            if self.url is not None:
                raise FieldError("db", "with url, give the database as the URL's path (/0)")
            if self.cluster is not None and self.db != 0:
                raise FieldError("db", "Redis Cluster has only database 0")

    @property
    def mode(self) -> str:
        """``"url"``, ``"sentinel"`` or ``"cluster"``."""
        if self.sentinel is not None:
            return "sentinel"
        if self.cluster is not None:
            return "cluster"
        return "url"

    def server_name(self) -> str:
        """Where the sessions are, for messages: ``host:port``, a socket, or the topology.

        Never includes credentials.
        """
        if self.sentinel is not None:
            return (
                f"redis sentinel service {self.sentinel.service_name!r} "
                f"(sentinels {', '.join(self.sentinel.hosts)})"
            )
        if self.cluster is not None:
            return f"redis cluster (startup nodes {', '.join(self.cluster.startup_nodes)})"
        parts = urlsplit(self.url or "")
        if parts.scheme == "unix":
            return f"redis at unix:{unquote(parts.path)}"
        host = parts.hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        tls = " (TLS)" if parts.scheme == "rediss" else ""
        return f"redis at {host}:{parts.port or 6379}{tls}"
