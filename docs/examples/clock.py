"""Expiry without sleeping: inject a clock (quickstart, "Testing code that uses sessions")."""

# start-clock
from sessionkeeper import SessionManager, SessionNotFound
from sessionkeeper.testing import ManualClock

clock = ManualClock()  # integer ms; moves only when told to
with SessionManager(clock=clock, cleanup_interval=0) as sessions:
    s = sessions.create(timeout_ms=1_000)
    clock.advance(1_000)
    sessions.peek(s.id)  # live: a session expires when idle for *more* than timeout_ms
    clock.advance(1)
    try:
        sessions.peek(s.id)
    except SessionNotFound:
        print("expired")
    assert sessions.cleanup_expired() == 1
# end-clock
