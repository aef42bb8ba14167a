"""``Closing``: the context-manager half of every object here that has a ``close()``."""

from __future__ import annotations

from typing import Self

__all__ = ["Closing"]


class Closing:
    """Mixin: ``with obj:`` gives ``obj`` and calls ``obj.close()`` on the way out, whether or
    not the block raised (a subclass that must tell the two apart overrides ``__exit__``)."""

    __slots__ = ()

    def close(self) -> None:
        """Release what the object holds; subclasses define it."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
