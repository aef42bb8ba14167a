"""A wrapper plugin: sees every store and delete, whatever the backend (hooks reference)."""

# start-wrapper
from collections.abc import Generator

from sessionkeeper import Session, SessionManager
from sessionkeeper.backend import hookimpl


class AuditLog:
    """Records who stored and deleted what; one instance per manager."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    @hookimpl(wrapper=True)
    def sessionkeeper_store(self, session: Session) -> Generator[None, None, None]:
        result = yield  # the backend stores here; an exception it raises comes out of the yield
        self.events.append(("store", session.id))
        return result

    @hookimpl(wrapper=True)
    def sessionkeeper_delete(self, session_id: str) -> Generator[None, bool, bool]:
        removed = yield
        if removed:
            self.events.append(("delete", session_id))
        return removed


audit = AuditLog()
with SessionManager(backend="memory", plugins=[audit]) as sessions:
    s = sessions.create()
    sessions.delete(s.id)
    sessions.delete(s.id)  # nothing to delete: not recorded
assert audit.events == [("store", s.id), ("delete", s.id)]
# end-wrapper
