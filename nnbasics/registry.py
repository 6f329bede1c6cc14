"""Small name -> object registries (init2winit style) with helpful errors for unknown names."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


def closest(name: str, valid: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """The valid names closest to `name` (for 'did you mean' messages)."""
    return difflib.get_close_matches(str(name), list(valid), n=n, cutoff=0.4)


def unknown_name_message(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> str:
    """A message naming the unknown `name`, the closest valid names and all valid names."""
    hint = closest(name, valid)
    msg = f"unknown {kind} {name!r}"
    if hint:
        msg += f"; did you mean {', '.join(repr(h) for h in hint)}?"
    return msg + f" Valid {kind}s: {', '.join(sorted(valid))}."


class UnknownNameError(KeyError, ValueError):
    """Raised for a name that is not in a registry; str() is the full message."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A dict of named entries that fails loudly (with suggestions) on unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, obj: T | None = None, **info: Any) -> Any:
        """Register `obj` under `name`; usable as a decorator when `obj` is omitted."""

        def _add(o: T) -> T:
            if name in self._entries and self._entries[name] is not o:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = o
            self._info[name] = dict(info)
            return o

        if obj is None:
            return _add
        return _add(obj)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownNameError(unknown_name_message(self.kind, name, self.names()))
        return self._entries[name]

    def info(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._info[name]

    def check(self, name: str) -> None:
        """Raise UnknownNameError if `name` is not registered."""
        self.get(name)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __call__(self, name: str) -> Callable[[T], T]:
        return self.register(name)


_IMPORTED: set[str] = set()


def import_submodules(package: str, path: Any, skip: tuple[str, ...] = ()) -> None:
    """Import every public submodule of `package` once, so their @register decorators run
    (registries fill lazily: `import nnbasics` stays fast)."""
    if package in _IMPORTED:
        return
    _IMPORTED.add(package)
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(path):
        if not mod.name.startswith("_") and mod.name not in skip:
            importlib.import_module(f"{package}.{mod.name}")
