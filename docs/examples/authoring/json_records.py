"""Records as JSON documents, for a storage that wants them (writing-a-backend.md, "Records").

``Session.to_dict()`` gives plain JSON-compatible data; ``Session(**data)`` is its inverse, and
it validates every field. Run it: it checks the round trip and that damage is a StorageError.
"""

from __future__ import annotations

import json

from sessionkeeper import Session, StorageError


# start-json-records
def encode(session: Session) -> str:
    """The session as one JSON document."""
    return json.dumps(session.to_dict())


def decode(backend: str, session_id: str, document: str) -> Session:
    """The session a JSON document holds; a document that is not one is damage, reported as a
    StorageError (never as "not found")."""
    try:
        data = json.loads(document)
        return Session(**data)  # the inverse of to_dict(): every field validated
    except (ValueError, TypeError) as exc:  # InvalidSession is a ValueError
        raise StorageError(backend, f"damaged record for session {session_id!r}: {exc}") from exc


# end-json-records

if __name__ == "__main__":
    session = Session("s1", 1_700_000_000_000, 1_700_000_000_500, 60_000, {"cart": ["book"]})
    assert decode("mystore", "s1", encode(session)) == session
    for damaged in ('{"id": "s1"}', '{"id": "s1", "created_at": "x"}', "[1, 2]", "{not json"):
        try:
            decode("mystore", "s1", damaged)
        except StorageError as exc:
            message = str(exc)
        else:
            raise AssertionError(f"{damaged!r} decoded")
        assert "damaged record for session 's1'" in message, message
    print("ok")
