"""Glob filters with huggingface_hub's meaning (fnmatchcase; a pattern ending in '/' means a folder)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from fnmatch import fnmatchcase
from typing import TypeVar

T = TypeVar("T")


def _normalize(patterns: str | Iterable[str] | None) -> list[str] | None:
    if patterns is None:
        return None
    if isinstance(patterns, str):
        patterns = [patterns]
    out = []
    for p in patterns:
        p = p.replace("\\", "/")
        out.append(p + "*" if p.endswith("/") else p)
    return out


def filter_paths(
    items: Iterable[T],
    allow_patterns: str | Iterable[str] | None = None,
    ignore_patterns: str | Iterable[str] | None = None,
    key: Callable[[T], str] = str,
) -> Iterator[T]:
    allow = _normalize(allow_patterns)
    ignore = _normalize(ignore_patterns)
    for item in items:
        path = key(item)
        if allow is not None and not any(fnmatchcase(path, p) for p in allow):
            continue
        if ignore is not None and any(fnmatchcase(path, p) for p in ignore):
            continue
        yield item
