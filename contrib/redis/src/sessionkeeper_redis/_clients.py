"""Making the redis-py clients of a backend: standalone (``url``), Sentinel or Cluster, on the
sync path or on ``redis.asyncio``, from one set of options; and closing an asyncio one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import attrs
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from ._options import RedisOptions

#: The most connections one backend's ``redis.asyncio`` client opens to a standalone server: one
#: per task awaiting a command at the same moment, kept for the next ones (redis.asyncio's own
#: default, 100, makes the 101st concurrent task fail). A pool that makes tasks wait for a free
#: connection instead costs a fifth of a round trip on every command (its lock and timer).
ASYNC_MAX_CONNECTIONS: Final = 2**16


def _async_from_url(url: str, **options: Any) -> Any:
    """A ``redis.asyncio`` client of ``url`` whose pool grows to :data:`ASYNC_MAX_CONNECTIONS`."""
    return redis.asyncio.Redis.from_url(url, max_connections=ASYNC_MAX_CONNECTIONS, **options)


@attrs.frozen
class Flavour:
    """The client classes of one I/O path of redis-py: sync, or ``redis.asyncio``."""

    from_url: Any
    cluster: Any
    node: Any
    sentinel: Any
    retry: Any


SYNC: Final = Flavour(redis.Redis.from_url, RedisCluster, ClusterNode, Sentinel, Retry)
ASYNC: Final = Flavour(
    _async_from_url,
    redis.asyncio.cluster.RedisCluster,
    redis.asyncio.cluster.ClusterNode,
    redis.asyncio.sentinel.Sentinel,
    redis.asyncio.retry.Retry,
)


def new_client(
    options: RedisOptions, flavour: Flavour, keep_sentinel: Callable[[Any], None]
) -> Any:
    """A new client of the server ``options`` name, of ``flavour`` (``SYNC`` or ``ASYNC``).
    The Sentinel a Sentinel config asks for the primary goes to ``keep_sentinel`` as soon as it
    is made (before the client), so its connections can be closed even if the client fails."""
    common: dict[str, Any] = {
        # The asyncio client has no socket timeout: the driver's Watchdog bounds each round
        # trip at a fraction of the cost (see _deadline).
        "socket_timeout": options.socket_timeout_ms / 1000 if flavour is SYNC else None,
        "socket_connect_timeout": options.connect_timeout_ms / 1000,
        "retry": flavour.retry(ExponentialBackoff(cap=1.0, base=0.01), options.retries),
    }
    if options.username is not None:
        common["username"] = options.username
    if options.password is not None:
        common["password"] = options.password
    if options.cluster is not None:
        nodes = [flavour.node(host, port) for host, port in options.cluster.addresses()]
        return flavour.cluster(startup_nodes=nodes, **common)
    # redis-py 5 retries only the errors listed here; later versions add them anyway.
    common["retry_on_error"] = [redis.ConnectionError, redis.TimeoutError]
    if options.sentinel is not None:
        sentinel_options = options.sentinel
        sentinel_kwargs: dict[str, Any] = {
            key: common[key] for key in ("socket_connect_timeout", "retry", "retry_on_error")
        }
        # Asking a Sentinel for the primary is bounded by the socket timeout on both paths.
        sentinel_kwargs["socket_timeout"] = options.socket_timeout_ms / 1000
        if sentinel_options.username is not None:
            sentinel_kwargs["username"] = sentinel_options.username
        if sentinel_options.password is not None:
            sentinel_kwargs["password"] = sentinel_options.password
        sentinel = flavour.sentinel(
            sentinel_options.addresses(), sentinel_kwargs=sentinel_kwargs, **common
        )
        keep_sentinel(sentinel)
        return sentinel.master_for(sentinel_options.service_name, db=options.db or 0, **common)
    return flavour.from_url(options.url or "", **common)


async def aclose(client: Any, sentinel: Any) -> None:
    """Close a ``redis.asyncio`` client, its pool and its Sentinel connections."""
    try:
        await client.aclose()
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            await pool.disconnect()
    finally:
        if sentinel is not None:
            for node in sentinel.sentinels:
                await node.aclose()
