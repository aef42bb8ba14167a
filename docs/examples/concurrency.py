"""The examples of docs/concurrency.md: run top to bottom, every claim checked by an assert."""

import contextlib
import threading

from sessionkeeper import SessionManager, SessionNotFound, Unsupported, VersionConflict

sessions = SessionManager(backend="memory", cleanup_interval=0)

# start-lost-update
# Two workers each read the session, add 1 to a counter and store it back. Both read n == 0
# before either writes: the second store replaces the first, and one increment is lost.
session = sessions.create(metadata={"n": 0})
first = sessions.fetch(session.id)  # worker A reads
second = sessions.fetch(session.id)  # worker B reads
sessions.store(first.replace(metadata={"n": first.metadata["n"] + 1}))  # A writes n = 1
sessions.store(second.replace(metadata={"n": second.metadata["n"] + 1}))  # B writes n = 1
assert sessions.peek(session.id).metadata == {"n": 1}  # two increments, n is 1
# end-lost-update

# start-conditional
# A conditional store names the version it read: B's write is refused, nothing is written.
read = sessions.fetch(session.id)
sessions.store(read.replace(metadata={"n": 2}), if_version=read.version)  # ok: version + 1
try:
    sessions.store(read.replace(metadata={"n": 99}), if_version=read.version)  # stale read
except VersionConflict as conflict:
    refused = conflict  # names the id, the version read and the version stored
assert (refused.expected, refused.actual) == (read.version, read.version + 1)
assert sessions.peek(session.id).metadata == {"n": 2}

# if_version=0: only if no live session has this id (an insert that never overwrites).
token = sessions.peek(session.id).replace(id="invite-7f3a", metadata={"uses": 0})
sessions.store(token, if_version=0)
try:
    sessions.store(token, if_version=0)
except VersionConflict as conflict:
    refused = conflict
assert refused.actual == 1  # it exists now, at version 1
# end-conditional

# start-update
# update() is the read-modify-write above, done right: fn gets a copy of the metadata and
# returns the new one; on a conflict update reads again and calls fn again.
counter = sessions.create(metadata={"n": 0})


def add_one(metadata: dict) -> dict:
    return {**metadata, "n": metadata["n"] + 1}


workers = [
    threading.Thread(target=lambda: [sessions.update(counter.id, add_one) for _ in range(100)])
    for _ in range(4)
]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
final = sessions.peek(counter.id)
assert final.metadata == {"n": 400}  # 4 workers x 100 updates: none lost
assert final.version == counter.version + 400
# end-update

# start-take
# take(): a single-use token is redeemed at most once, whoever asks at the same time.
request_state = sessions.create(metadata={"step": "confirm-payment"})
winners = []


def redeem() -> None:
    with contextlib.suppress(SessionNotFound):  # not found: someone else redeemed it
        winners.append(sessions.take(request_state.id))


racers = [threading.Thread(target=redeem) for _ in range(8)]
for racer in racers:
    racer.start()
for racer in racers:
    racer.join()
assert len(winners) == 1
# end-take

# start-owners
# Owners, rotation and the absolute timeout.
login = sessions.create(owner="user_456", absolute_timeout_ms=8 * 3600_000)
phone = sessions.create(owner="user_456")
rotated = sessions.rotate(login.id)  # after login: a new id, the old one is gone at once
assert rotated.owner == "user_456"
assert sorted(sessions.list(owner="user_456")) == sorted([rotated.id, phone.id])
assert sessions.count(owner="user_456") == 2
assert sessions.delete_owner("user_456") == 2  # log out everywhere
assert sessions.count(owner="user_456") == 0
# end-owners

# start-unsupported
# Code that needs the atomic operations can check the backend's capability up front...
assert sessions.capabilities.atomic  # memory: yes; zmq: no

# ...or let the operation refuse: on a backend without ``atomic`` it raises Unsupported, which
# names the backend and those that can, and writes nothing. This is its message:
message = str(Unsupported("zmq"))
assert message == (
    "the zmq backend does not support atomic operations (update, take, rotate, "
    "conditional store, delete_owner); backends that do: memory, sqlitedict, leveldb, redis, "
    "postgres"
)
# end-unsupported

sessions.close()
print("ok")
