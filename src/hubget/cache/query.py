"""``--filter`` and ``--sort`` of ``hubget cache ls``, in huggingface_hub's ``hf cache ls`` syntax.

Filters: ``size>1GB``, ``accessed>30d`` (last read more than 30 days ago), ``modified<2h``,
``refs=main``, ``type=dataset``, ``cache=ms``, ``name=org/*`` (a glob). Sizes take decimal units
(``k``/``KB``, ``M``/``MB``, ``G``/``GB``, ``T``/``TB``) and binary ones (``KiB``, ``MiB``, ``GiB``,
``TiB``); durations ``s``, ``m``, ``h``, ``d``, ``w``, ``mo``, ``y``. Sort keys: ``size``,
``name``, ``accessed``, ``modified``, each with an optional ``:asc`` / ``:desc``.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable, Iterable

from hubget.cache.scan import CachedRepo, CachedRevision
from hubget.errors import UsageError

Entry = tuple[CachedRepo, CachedRevision | None]
Predicate = Callable[[CachedRepo, CachedRevision | None, float], bool]

_FILTER = re.compile(r"(?P<key>[a-zA-Z_]+)\s*(?P<op>==|!=|>=|<=|>|<|=)\s*(?P<value>.+)")
_NUMBER_UNIT = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[a-zA-Z]*)")
BYTE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "p": 10**15,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
TIME_UNITS = {
    "": 1,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "mo": 30 * 86400,
    "y": 365 * 86400,
}
SORT_DEFAULT_ORDER = {"size": "desc", "accessed": "desc", "modified": "desc", "name": "asc"}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "=": lambda a, b: a == b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


def parse_size(text: str) -> int:
    return int(_with_unit(text, BYTE_UNITS, "size"))


def parse_duration(text: str) -> float:
    return _with_unit(text, TIME_UNITS, "duration")


def _with_unit(text: str, units: dict[str, int], what: str) -> float:
    match = _NUMBER_UNIT.fullmatch(text.strip())
    if not match or match.group("unit").lower() not in units:
        raise UsageError(
            f"not a {what}: {text!r} (e.g. {'1.5GB or 500MiB' if what == 'size' else '30d or 12h'})"
        )
    return float(match.group("number")) * units[match.group("unit").lower()]


def compile_filter(expr: str) -> Predicate:
    match = _FILTER.fullmatch(expr.strip())
    if not match:
        raise UsageError(f"not a filter: {expr!r} (e.g. 'size>1GB', 'accessed>30d', 'refs=main', 'cache=ms')")
    key, op, value = match.group("key").lower(), match.group("op"), match.group("value").strip()
    compare = _COMPARE[op]
    if key == "size":
        limit = parse_size(value)
        return lambda repo, rev, _now: compare((rev or repo).size_on_disk, limit)
    if key in ("accessed", "modified"):
        seconds = parse_duration(value)

        def age(repo: CachedRepo, rev: CachedRevision | None, now: float) -> bool:
            stamp = repo.last_accessed if key == "accessed" else (rev or repo).last_modified
            return compare(now - stamp, seconds)

        return age
    if op not in ("=", "==", "!="):
        raise UsageError(f"{key} filters take = or !=, not {op!r}")
    negate = op == "!="
    if key == "refs":
        return lambda repo, rev, _now: (value in (rev.refs if rev else repo.refs)) != negate
    if key == "type":
        return lambda repo, rev, _now: (repo.repo_type == value.lower()) != negate
    if key == "cache":
        return lambda repo, rev, _now: (repo.cache == value.lower()) != negate
    if key == "name":
        return lambda repo, rev, _now: fnmatch.fnmatchcase(repo.repo_id, value) != negate
    raise UsageError(f"unknown filter key {key!r} (size, accessed, modified, refs, type, cache, name)")


def compile_sort(expr: str) -> tuple[Callable[[Entry], tuple[object, ...]], bool]:
    key, _, order = expr.strip().lower().partition(":")
    if key not in SORT_DEFAULT_ORDER or order not in ("", "asc", "desc"):
        raise UsageError(f"cannot sort by {expr!r} (size, name, accessed or modified; optional :asc / :desc)")
    reverse = (order or SORT_DEFAULT_ORDER[key]) == "desc"

    def sort_key(entry: Entry) -> tuple[object, ...]:
        repo, rev = entry
        if key == "name":
            return (repo.cache_id.lower(), repo.cache)
        if key == "size":
            return ((rev or repo).size_on_disk,)
        if key == "accessed":
            return (repo.last_accessed,)
        return ((rev or repo).last_modified,)

    return sort_key, reverse


def select(
    repos: Iterable[CachedRepo],
    *,
    revisions: bool = False,
    filters: Iterable[str] = (),
    sort: str | None = None,
    now: float | None = None,
) -> list[Entry]:
    """The rows of ``hubget cache ls``: one per repo (or per revision), filtered and sorted."""
    predicates = [compile_filter(f) for f in filters]
    now = time.time() if now is None else now
    entries: list[Entry] = []
    for repo in repos:
        rows: list[Entry] = [(repo, rev) for rev in repo.revisions] if revisions else [(repo, None)]
        entries.extend(e for e in rows if all(p(e[0], e[1], now) for p in predicates))
    entries.sort(key=lambda e: (e[0].cache_id.lower(), e[0].cache, e[1].name if e[1] else ""))
    if sort:
        key, reverse = compile_sort(sort)
        entries.sort(key=key, reverse=reverse)
    return entries
