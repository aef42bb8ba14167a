"""The Python API on one screen (README and quickstart).

Run it from a directory holding the sessionkeeper.toml of docs/examples.
"""

# start-usage
from sessionkeeper import SessionManager, SessionNotFound

with SessionManager.from_config("sessionkeeper.toml") as sessions:  # or SessionManager(...)
    s = sessions.create(timeout_ms=300_000, metadata={"user_id": "user_456"})
    assert sessions.fetch(s.id).metadata == {"user_id": "user_456"}  # touches
    sessions.peek(s.id)  # reads without touching
    sessions.store(s.replace(metadata={"user_id": "user_456", "cart": ["book"]}))
    print(sessions.list())  # the ids of live sessions
    assert sessions.delete(s.id) is True
    try:
        sessions.fetch(s.id)
    except SessionNotFound as exc:  # also a KeyError
        print(exc)  # no live session with id '...'
    print(sessions.cleanup_expired())  # how many expired sessions were removed
# end-usage
