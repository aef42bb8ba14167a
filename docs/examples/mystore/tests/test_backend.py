"""What is particular to the mystore backend: how it is found, and its options."""

from __future__ import annotations

import pytest
from sessionkeeper import ConfigError, SessionManager, StorageError, installed_backends

from sessionkeeper_mystore import MystoreBackend


class TestDiscovery:
    def test_the_entry_point_names_the_backend_class(self) -> None:
        """``mystore`` in the group sessionkeeper.backends loads the backend class, from the
        installed distribution sessionkeeper-mystore."""
        entry_point = installed_backends()["mystore"]
        assert entry_point.load() is MystoreBackend
        assert entry_point.dist is not None
        assert entry_point.dist.name == "sessionkeeper-mystore"

    def test_a_manager_opens_it_by_name(self) -> None:
        """``SessionManager(backend="mystore")`` stores and fetches sessions."""
        with SessionManager(backend="mystore", cleanup_interval=0) as sessions:
            session = sessions.create(metadata={"user_id": "user_456"})
            assert sessions.fetch(session.id).metadata == {"user_id": "user_456"}
            assert sessions.backend_name == "mystore"


class TestOptions:
    def test_an_invalid_option_names_its_key(self) -> None:
        """``max_sessions = 0`` is a ConfigError naming sessionkeeper.backend_opts.max_sessions."""
        with pytest.raises(ConfigError, match="must be > 0") as info:
            SessionManager(backend="mystore", backend_opts={"max_sessions": 0})
        assert info.value.key == "sessionkeeper.backend_opts.max_sessions"

    def test_a_full_store_refuses_new_sessions(self) -> None:
        """Beyond ``max_sessions`` a store raises StorageError naming the backend; replacing a
        stored session is still allowed."""
        with SessionManager(
            backend="mystore", backend_opts={"max_sessions": 1}, cleanup_interval=0
        ) as sessions:
            first = sessions.create()
            with pytest.raises(StorageError, match="full") as info:
                sessions.create()
            assert info.value.backend == "mystore"
            sessions.store(first)
