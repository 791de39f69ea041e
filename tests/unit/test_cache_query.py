"""`hubget cache ls --filter/--sort`: hf cache ls's syntax, plus binary units and the cache column."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubget.cache.query import compile_filter, parse_duration, parse_size, select
from hubget.cache.scan import CachedRepo, CachedRevision
from hubget.errors import UsageError

NOW = 1_800_000_000.0


def repo(
    cache: str, repo_id: str, size: int, accessed_days: float, refs: list[str], repo_type: str = "model"
):
    stamp = NOW - accessed_days * 86400
    revs = [CachedRevision("a" * 40, refs, size, 3, stamp, Path("/x"))]
    return CachedRepo(cache, repo_type, repo_id, Path("/x"), size, 3, stamp, stamp, revs)


REPOS = [
    repo("hf", "org/big", 5 * 10**9, 40, ["main"]),
    repo("hf", "org/small", 10**6, 1, []),
    repo("ms", "Owner/mid", 2 * 10**9, 10, [], "dataset"),
]


def names(entries: list) -> list[str]:
    return [f"{r.cache}:{r.repo_id}" for r, _ in entries]


def test_sizes_and_durations() -> None:
    assert (
        parse_size("1GB") == 10**9 and parse_size("1.5G") == 1_500_000_000 and parse_size("2GiB") == 2 * 2**30
    )
    assert parse_size("512") == 512 and parse_size("10 MiB") == 10 * 2**20
    assert (
        parse_duration("30d") == 30 * 86400
        and parse_duration("2w") == 14 * 86400
        and parse_duration("1mo") == 30 * 86400
    )
    for bad in ("", "GB", "1XB", "-1GB"):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_filters() -> None:
    assert names(select(REPOS, filters=["size>1GB"], now=NOW)) == ["ms:Owner/mid", "hf:org/big"]  # by type/id
    assert names(select(REPOS, filters=["size>1GB", "accessed>30d"], now=NOW)) == ["hf:org/big"]
    assert names(select(REPOS, filters=["cache=ms"], now=NOW)) == ["ms:Owner/mid"]
    assert names(select(REPOS, filters=["refs=main"], now=NOW)) == ["hf:org/big"]
    assert names(select(REPOS, filters=["type!=model"], now=NOW)) == ["ms:Owner/mid"]
    assert names(select(REPOS, filters=["name=org/*"], now=NOW)) == ["hf:org/big", "hf:org/small"]
    for bad in ("size", "size>>1", "colour=red", "refs>main"):
        with pytest.raises(UsageError):
            compile_filter(bad)


def test_sort_and_revision_rows() -> None:
    assert names(select(REPOS, sort="size", now=NOW)) == ["hf:org/big", "ms:Owner/mid", "hf:org/small"]
    assert names(select(REPOS, sort="size:asc", now=NOW)) == ["hf:org/small", "ms:Owner/mid", "hf:org/big"]
    assert names(select(REPOS, sort="accessed", now=NOW)) == ["hf:org/small", "ms:Owner/mid", "hf:org/big"]
    assert names(select(REPOS, sort="name", now=NOW)) == ["ms:Owner/mid", "hf:org/big", "hf:org/small"]
    rows = select(REPOS, revisions=True, now=NOW)
    assert all(rev is not None for _, rev in rows) and len(rows) == 3
    with pytest.raises(UsageError):
        select(REPOS, sort="colour")
