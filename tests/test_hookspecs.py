"""The hook specification itself: naming, documentation, and that every hook is exercised."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from sessionkeeper import hookspecs

HOOKS = sorted(name for name in vars(hookspecs) if name.startswith("sessionkeeper_"))
ROOT = Path(__file__).resolve().parent.parent


class TestHookSpecification:
    def test_every_hook_is_prefixed_and_marked(self) -> None:
        """Each hook is a sessionkeeper_* function carrying the sessionkeeper hookspec marker."""
        assert len(HOOKS) >= 10
        for name in HOOKS:
            function = getattr(hookspecs, name)
            assert inspect.isfunction(function)
            assert hasattr(function, "sessionkeeper_spec"), f"{name} is not a hookspec"

    @pytest.mark.parametrize("name", HOOKS)
    def test_every_hook_documents_its_contract(self, name: str) -> None:
        """Each docstring has a purpose line, a :param: per argument and where it is called."""
        function = getattr(hookspecs, name)
        doc = inspect.getdoc(function) or ""
        assert doc.splitlines()[0].endswith((".", "*")), f"{name}: no one-line purpose"
        for argument in inspect.signature(function).parameters:
            assert f":param {argument}:" in doc, f"{name}: {argument} undocumented"
        assert "Where it is called" in doc, f"{name}: no 'where it is called' paragraph"

    @pytest.mark.parametrize("name", HOOKS)
    def test_every_hook_says_which_implementations_are_called(self, name: str) -> None:
        """A hook that answers (firstresult, with a result) says pluggy stops at the first
        non-None result; one that returns nothing says every implementation is called, and never
        claims to stop early (issue 13: sessionkeeper_store is firstresult but returns None)."""
        function = getattr(hookspecs, name)
        doc = " ".join((inspect.getdoc(function) or "").split())
        firstresult = function.sessionkeeper_spec["firstresult"]
        answers = inspect.signature(function).return_annotation != "None"
        assert ("Stops at first non-None result" in doc) == (firstresult and answers), name
        if not answers:
            assert "implementation is called" in doc, name
        if firstresult:
            assert ":ref:`firstresult`" in doc, name

    def test_required_hooks_exist(self) -> None:
        """REQUIRED_HOOKS names only hooks of the specification."""
        assert set(hookspecs.REQUIRED_HOOKS) <= set(HOOKS)

    @pytest.mark.parametrize("name", HOOKS)
    def test_every_hook_has_a_test(self, name: str) -> None:
        """Every hook is named in at least one test outside this file (datasette's meta-test)."""
        sources = [
            path
            for pattern in (
                "tests/test_*.py",
                "plugins/*/tests/test_*.py",
                "core/sessionkeeper/testing/*.py",
            )
            for path in ROOT.glob(pattern)
            if path.name != Path(__file__).name
        ]
        assert any(name in path.read_text() for path in sources), f"no test mentions {name}"
