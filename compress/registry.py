"""A small name -> factory registry whose unknown-name error lists the known names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from autocompress.errors import UserError

F = TypeVar("F", bound=Callable)


class UnknownNameError(UserError, KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


class Registry(Generic[F]):
    """Maps names to factories, with a description for listings."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, F] = {}
        self._info: dict[str, str] = {}

    def register(self, name: str, description: str = "") -> Callable[[F], F]:
        def deco(fn: F) -> F:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = fn
            doc = (fn.__doc__ or "").strip().splitlines()
            self._info[name] = description or (doc[0] if doc else "")
            return fn

        return deco

    def get(self, name: str) -> F:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(sorted(self._items))}"
            ) from None

    def describe(self, name: str) -> str:
        self.get(name)
        return self._info[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
