"""A call counter for tests that must prove some work did (or did not) happen."""

from __future__ import annotations

import pytest


class Spy:
    """Counts calls of ``owner.name`` (an instance's method, or a class's for all its instances)
    and passes them through; undone by ``monkeypatch`` at the end of the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
        self.calls = 0
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)
