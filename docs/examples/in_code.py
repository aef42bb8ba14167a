"""Settings as keyword arguments instead of a file (quickstart)."""

# start-in-code
from sessionkeeper import SessionManager

with SessionManager(
    backend="memory",
    cleanup_interval=10_000,  # sweep every 10 s
    default_timeout=None,  # sessions never expire unless created with a timeout
    stats=True,
) as sessions:
    s = sessions.create(metadata={"user_id": "user_456"})
    assert s.timeout_ms is None
    print(sessions.stats()["counters"]["created"])  # 1
# end-in-code
