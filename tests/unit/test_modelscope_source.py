"""ModelScopeSource against `hubget serve`'s ModelScope routes (and a scripted hub for odd answers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from hubget.errors import (
    AuthError,
    EntryNotFoundError,
    ProtocolError,
    RepoNotFoundError,
    RevisionNotFoundError,
    UsageError,
)
from hubget.models import RepoRef
from hubget.sources.modelscope import ModelScopeSource
from hubget.transfer.http import HttpClient
from tests.support.hubserver import hub_server_thread
from tests.support.rangeserver import RangeServer
from tests.support.repos import GitRepoBuilder, sha256_hex, write_folder_repo

FILES = {
    "config.json": b'{"a": 1}',
    "weights/model.safetensors": b"\x00" * 4096 + b"weights",
    "a dir/odd name+%.txt": "ünïcode".encode(),
    "deep/er/x.bin": b"x" * 100,
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("msroot")
    write_folder_repo(root / "models" / "org" / "plain", FILES)
    write_folder_repo(
        root / "datasets" / "org" / "many",
        {f"data/part-{i:04d}.txt": f"row {i}".encode() for i in range(205)},
    )
    repo = GitRepoBuilder(root / "models" / "org" / "git")
    repo.commit({"w.safetensors": b"v1" * 1000, "README.md": b"one"}, "first")
    repo.tag("v1.0")
    repo.commit({"w.safetensors": b"v2" * 1000, "README.md": b"two"}, "second")
    with hub_server_thread(root) as url:
        yield url, root


def test_resolve_lists_every_file_with_size_sha256_and_sdk_url(hub: tuple[str, Path]) -> None:
    url, _ = hub
    snap = ModelScopeSource(url, token=None).resolve(RepoRef("org/plain"))
    assert snap.commit == "master" and snap.source == "modelscope"
    got = {f.path: f for f in snap.files}
    assert set(got) == set(FILES)
    for path, data in FILES.items():
        assert got[path].size == len(data)
        assert got[path].sha256 == sha256_hex(data)
    odd = got["a dir/odd name+%.txt"]
    assert (
        odd.url == f"{url}/api/v1/models/org/plain/repo?Revision=master&FilePath=a+dir%2Fodd+name%2B%25.txt"
    )
    assert parse_qs(urlsplit(odd.url).query)["FilePath"] == ["a dir/odd name+%.txt"]
    assert odd.headers == {}  # no token: nothing to send


def test_token_goes_as_bearer_and_cookie(hub: tuple[str, Path]) -> None:
    url, _ = hub
    snap = ModelScopeSource(url, token="s3cret").resolve(RepoRef("org/plain"))
    assert snap.files[0].headers == {"Authorization": "Bearer s3cret", "Cookie": "m_session_id=s3cret"}


def test_dataset_listing_is_paged(hub: tuple[str, Path]) -> None:
    url, _ = hub
    snap = ModelScopeSource(url).resolve(RepoRef("org/many", "dataset"))
    assert len(snap.files) == 205  # pages of 200: a full one and a short one
    assert snap.files[7].url.startswith(
        f"{url}/api/v1/datasets/org/many/repo?Revision=master&FilePath=data%2F"
    )
    assert snap.files[7].sha256 == sha256_hex(b"row 7")


def test_revisions_tags_and_master_alias(hub: tuple[str, Path]) -> None:
    url, _ = hub
    source = ModelScopeSource(url)
    branches, tags = source.list_revisions(RepoRef("org/git"))
    assert "master" in branches and tags == ["v1.0"]
    head = {f.path: f for f in source.resolve(RepoRef("org/git")).files}
    old = {f.path: f for f in source.resolve(RepoRef("org/git", revision="v1.0")).files}
    assert head["w.safetensors"].sha256 == sha256_hex(b"v2" * 1000)
    assert old["w.safetensors"].sha256 == sha256_hex(b"v1" * 1000)
    assert "Revision=v1.0&" in old["README.md"].url


def test_file_info(hub: tuple[str, Path]) -> None:
    url, _ = hub
    source = ModelScopeSource(url)
    info = source.file_info(RepoRef("org/plain"), "deep/er/x.bin")
    assert (info.size, info.sha256) == (100, sha256_hex(b"x" * 100))
    assert source.file_info(RepoRef("org/plain"), "config.json").size == len(FILES["config.json"])
    with pytest.raises(EntryNotFoundError):
        source.file_info(RepoRef("org/plain"), "deep/er/missing.bin")
    with pytest.raises(EntryNotFoundError):
        source.file_info(RepoRef("org/plain"), "nowhere/x.bin")


def test_not_found_errors_say_what_is_missing(hub: tuple[str, Path]) -> None:
    url, _ = hub
    source = ModelScopeSource(url)
    with pytest.raises(RepoNotFoundError):
        source.resolve(RepoRef("org/absent"))
    with pytest.raises(RevisionNotFoundError, match="v9"):
        source.resolve(RepoRef("org/git", revision="v9"))
    with pytest.raises(UsageError):
        source.resolve(RepoRef("no-owner"))
    with pytest.raises(UsageError):
        source.resolve(RepoRef("org/x", "space"))


def test_private_hub_needs_the_token(tmp_path: Path) -> None:
    write_folder_repo(tmp_path / "models" / "org" / "p", {"a.txt": b"a"})
    with hub_server_thread(tmp_path, tokens=["tok"]) as url:
        with pytest.raises(AuthError):
            ModelScopeSource(url, token=None).resolve(RepoRef("org/p"))
        with pytest.raises(AuthError):
            ModelScopeSource(url, token="wrong").resolve(RepoRef("org/p"))
        assert [f.path for f in ModelScopeSource(url, token="tok").resolve(RepoRef("org/p")).files] == [
            "a.txt"
        ]


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch, hub: tuple[str, Path]) -> None:
    url, _ = hub
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "envtok")
    monkeypatch.setenv("MODELSCOPE_DOMAIN", url.removeprefix("http://"))
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", url)
    source = ModelScopeSource()
    assert source.endpoint == url and source.headers()["Authorization"] == "Bearer envtok"


@contextlib.contextmanager
def capped_server(root: Path, cap: int) -> Iterator[tuple[str, list[str]]]:
    """hubget serve with a small listing cap, recording the query of every listing request."""
    from aiohttp import web

    from hubget.server.app import create_app, serve_forever
    from hubget.server.ms_routes import LISTING_CAP_KEY

    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler):  # noqa: ANN202
        if request.path.endswith("/repo/files"):
            seen.append(request.query_string)
        return await handler(request)

    app = create_app(root)
    app.middlewares.append(record)
    app[LISTING_CAP_KEY] = cap
    loop = asyncio.new_event_loop()
    bound: queue.Queue[str] = queue.Queue()
    task = loop.create_task(serve_forever(app, "127.0.0.1", 0, bound.put))
    thread = threading.Thread(target=lambda: loop.run_until_complete(asyncio.wait([task])), daemon=True)
    thread.start()
    try:
        yield bound.get(timeout=30), seen
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=10)


def test_listing_at_the_cap_is_walked_per_folder(tmp_path: Path) -> None:
    files = {
        f"d{d}/sub{s}/f{i}.txt": f"{d}{s}{i}".encode() for d in range(3) for s in range(2) for i in range(3)
    }
    files.update({"top.txt": b"top", "d0/direct.txt": b"direct"})
    write_folder_repo(tmp_path / "models" / "org" / "big", files)
    with capped_server(tmp_path, cap=8) as (url, seen):
        source = ModelScopeSource(url)
        source.listing_cap = 8
        snap = source.resolve(RepoRef("org/big"))
    assert sorted(f.path for f in snap.files) == sorted(files)
    assert all(f.sha256 == sha256_hex(files[f.path]) for f in snap.files)
    assert any("Root=d0" in q and "Recursive=False" in q for q in seen)  # walked like the SDK


def scripted(server: RangeServer, listing: object, status: int = 200) -> str:
    server.add("/api/v1/models/o/n/repo/files", json.dumps(listing).encode())
    return server.base


def test_failure_inside_a_200_envelope_is_an_error() -> None:
    with RangeServer() as server:
        scripted(server, {"Code": 10010205001, "Success": False, "Message": "boom", "Data": None})
        with pytest.raises(ProtocolError, match="boom"):
            ModelScopeSource(server.base, client=HttpClient(retries=0)).resolve(RepoRef("o/n"))


@pytest.mark.parametrize(
    "entry",
    [
        {"Path": "../escape", "Type": "blob", "Size": 1, "Sha256": "0" * 64},
        {"Path": "/abs", "Type": "blob", "Size": 1, "Sha256": "0" * 64},
        {"Path": "ok", "Type": "blob", "Size": 1, "Sha256": "not-a-hash"},
        {"Path": "ok", "Type": "blob", "Size": -5, "Sha256": "0" * 64},
    ],
)
def test_hostile_listing_entries_are_refused(entry: dict[str, object]) -> None:
    from hubget.errors import HubgetError

    with RangeServer() as server:
        scripted(server, {"Code": 200, "Success": True, "Data": {"Files": [entry]}})
        with pytest.raises(HubgetError):
            ModelScopeSource(server.base).resolve(RepoRef("o/n"))


def test_token_never_follows_a_redirect_to_another_origin(tmp_path: Path) -> None:
    """The file URL redirects to a storage host: the bytes arrive, the token (header and cookie) stays."""
    from hubget.api import fetch_snapshot
    from hubget.layouts.ms_cache import MsCacheLayout
    from tests.support.rangeserver import Fault

    data = b"weights" * 1000
    with RangeServer() as hub, RangeServer() as storage:
        entry = {"Path": "w.bin", "Type": "blob", "Size": len(data), "Sha256": sha256_hex(data)}
        scripted(hub, {"Code": 200, "Success": True, "Data": {"Files": [entry]}})
        hub.add("/api/v1/models/o/n/repo", b"")
        hub.fault(
            "/api/v1/models/o/n/repo", Fault("redirect", times=-1, status=302, location=storage.url("/obj"))
        )
        storage.add("/obj", data)
        report = fetch_snapshot(
            ModelScopeSource(hub.base, token="s3cret"),
            RepoRef("o/n"),
            MsCacheLayout(RepoRef("o/n"), tmp_path),
        )
        assert (report.path / "w.bin").read_bytes() == data
        asked = [r for r in hub.requests if r.path.startswith("/api/v1/models/o/n/repo?")]
        assert asked and all(r.headers.get("Authorization") == "Bearer s3cret" for r in asked)
        assert all("m_session_id=s3cret" in r.headers.get("Cookie", "") for r in asked)
        fetched = storage.requests_for("/obj")
        assert fetched
        for r in fetched:
            names = {k.lower() for k in r.headers}
            assert "authorization" not in names and "cookie" not in names
            assert "s3cret" not in json.dumps(r.headers)
