"""The sqlitedict page's examples: a store on disk, then read by a script with open_sqlitedict."""

from sessionkeeper import SessionManager

with SessionManager.from_config("sqlitedict.toml") as sessions:
    kept = sessions.create(metadata={"user_id": "user_456"})

# start-open-sqlitedict
from sessionkeeper_sqlitedict import open_sqlitedict

with open_sqlitedict("data/sessions.sqlite") as store:
    for session_id, session in store.items():
        print(session_id, session.last_accessed)
# end-open-sqlitedict

with open_sqlitedict("data/sessions.sqlite") as store:
    assert dict(store.items()) == {kept.id: kept}, "the script sees what the manager stored"
