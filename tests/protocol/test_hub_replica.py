"""The hub replica (tests/support/hubreplica.py) is faithful: the official clients, judged as users run
them (a subprocess, HF_ENDPOINT = the replica, Xet disabled), get byte-identical files from it, and
their requests show how they treat the real hub's signed URLs, pagination, gates and rate limits.

What huggingface_hub 2.4 does here, as these tests pin it down:
- every file costs two /resolve/ calls: a HEAD (metadata), then a GET of the same /resolve/ URL,
  which it follows to the bridge (for a Xet-backed file the HEAD's signed Location is not used);
- it never sends Authorization to the bridge (httpx drops it on the cross-origin redirect);
- on a 429 it sleeps the RateLimit header's ``t`` + 1 s and retries, at most 5 times per call (a
  file's first HEAD is retried once at once before that); with
  quota 3 per 2 s it finishes a 6-file repo after about 16 429s, but it gives up on an 18-file repo
  (one call gets 6 429s in a row; LocalEntryNotFoundError);
- a signed URL is only checked when a request starts, so a short expiry does not hurt it; after a
  broken connection it restarts through /resolve/ (fresh URL) for a Xet-backed file, but for a
  plain-LFS file it retries the HEAD's signed URL and fails with the bridge's 403 once that expired.
huggingface_hub 0.26.5 lists files from the repo info, HEADs every file and fetches LFS files from the
HEAD's Location directly (one /resolve/ call for those).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.protocol.clientrun import run_client
from tests.support.hubreplica import BRIDGE, HUB, HubReplica, RateLimits, make_repo
from tests.support.repos import hashes, llm_repo_files

NO_XET = {"HF_HUB_DISABLE_XET": "1"}
FILES = llm_repo_files(n_shards=3, shard_size=256 * 1024, seed=7)
SMALL = {k: FILES[k] for k in sorted(FILES)[:6]}  # 6 files, 2 of them LFS
USER_TOKEN = "hf_replica_user_token"
GRANTED_TOKEN = "hf_replica_granted_token"


@pytest.fixture
def hub():
    repos = [
        make_repo("org/llm", FILES),
        make_repo("org/small", SMALL),
        make_repo("org/gated", SMALL, gated=True, granted=[GRANTED_TOKEN]),
        make_repo(
            "org/ds", {"data/train.jsonl": b'{"x": 1}\n' * 100, "README.md": b"# ds\n"}, repo_type="dataset"
        ),
    ]
    with HubReplica(repos, users={USER_TOKEN: "alice"}) as replica:
        yield replica


def client(hub: HubReplica, tmp_path: Path, code: str, **env: str):
    return run_client(code, endpoint=hub.hub_url, hf_home=tmp_path / "hf_home", env={**NO_XET, **env})


def test_snapshot_download_into_the_cache_is_byte_identical(hub: HubReplica, tmp_path: Path):
    hub.rtt = 0.03  # before every answer's headers, on both origins
    out = client(
        hub,
        tmp_path,
        """
        from huggingface_hub import snapshot_download
        path = snapshot_download("org/llm")
        cache = Path(os.environ["HF_HOME"]) / "hub" / "models--org--llm"
        emit({"files": tree_hashes(path), "ref": (cache / "refs" / "main").read_text(),
              "blobs": {p.relative_to(path).as_posix(): os.path.basename(os.path.realpath(p))
                        for p in Path(path).rglob("*") if p.is_file()}})
        """,
    )
    repo = hub.repos[("model", "org/llm")]
    assert out["files"] == hashes(FILES)
    assert out["ref"] == repo.commit
    assert out["blobs"] == {p: f.etag for p, f in repo.files.items()}  # sha256 for LFS, git sha1 else
    c = hub.counters
    # HEAD then GET of /resolve/ for every file; only LFS files reach the bridge, once each.
    assert c.resolver_methods == {"HEAD": len(FILES), "GET": len(FILES)}
    assert all(c.resolves(p) == 2 for p in FILES)
    lfs = [p for p, f in repo.files.items() if f.lfs]
    assert len(lfs) >= 6 and all(c.bridge_hits(p) == 1 for p in lfs)
    assert c.api_calls == {"revision": 1, "tree": 1}
    assert c.authorizations(HUB) == [] and c.authorizations(BRIDGE) == []
    # The hub gzips text files for a client accepting gzip (chunked, no Content-Length): it decodes them.
    gzipped = [r for r in c.requests(HUB) if r.reply_headers.get("content-encoding") == "gzip"]
    assert any(r.file and r.file[1] == "config.json" for r in gzipped)


def test_local_dir_and_hf_hub_download(hub: HubReplica, tmp_path: Path):
    shard = "model-00002-of-00003.safetensors"
    out = client(
        hub,
        tmp_path,
        f"""
        from huggingface_hub import hf_hub_download, snapshot_download
        local = snapshot_download("org/llm", local_dir={str(tmp_path / "ld")!r})
        one = hf_hub_download("org/llm", {shard!r})
        text = hf_hub_download("org/llm", "config.json")
        ds = hf_hub_download("org/ds", "data/train.jsonl", repo_type="dataset")
        emit({{"local": tree_hashes(local), "one": [hashlib.sha256(Path(one).read_bytes()).hexdigest(),
               os.path.basename(os.path.realpath(one))],
               "text": hashlib.sha256(Path(text).read_bytes()).hexdigest(),
               "ds": hashlib.sha256(Path(ds).read_bytes()).hexdigest(),
               "meta": (Path(local) / ".cache/huggingface/download/{shard}.metadata").read_text().split()}})
        """,
    )
    expected = hashes(FILES)
    repo = hub.repos[("model", "org/llm")]
    assert out["local"] == expected
    assert out["one"] == [expected[shard], expected[shard]]  # blob named by the X-Linked-Etag
    assert out["text"] == expected["config.json"]
    assert out["ds"] == hashlib.sha256(b'{"x": 1}\n' * 100).hexdigest()
    assert out["meta"][:2] == [repo.commit, expected[shard]]


def test_tree_pagination_over_several_pages(hub: HubReplica, tmp_path: Path):
    hub.page_size = 4
    repo = hub.repos[("model", "org/llm")]
    entries = repo.tree("", recursive=True)
    assert entries is not None and len(entries) > 3 * 4
    out = client(
        hub,
        tmp_path,
        """
        from huggingface_hub import HfApi, snapshot_download
        entries = list(HfApi().list_repo_tree("org/llm", recursive=True))
        files = sorted(e.path for e in entries if hasattr(e, "lfs"))
        xet = {e.path: e.xet_hash for e in entries if getattr(e, "xet_hash", None)}
        path = snapshot_download("org/llm")
        emit({"files": files, "dirs": sorted(e.path for e in entries if not hasattr(e, "lfs")),
              "xet": xet, "hashes": tree_hashes(path)})
        """,
    )
    assert out["files"] == sorted(FILES)
    assert out["dirs"] == repo.directories()
    assert out["xet"] == {p: f.xet_hash for p, f in repo.files.items() if f.xet_hash}
    assert out["hashes"] == hashes(FILES)
    pages = -(-len(entries) // 4)
    assert hub.counters.api_calls["tree"] == 2 * pages  # list_repo_tree, then snapshot_download's own


def test_gated_repo_needs_a_granted_token(hub: HubReplica, tmp_path: Path):
    code = """
        from huggingface_hub import snapshot_download
        try:
            emit({"files": tree_hashes(snapshot_download("org/gated"))})
        except Exception as exc:
            emit({"error": [c.__name__ for c in type(exc).__mro__], "text": str(exc)})
        """
    anonymous = client(hub, tmp_path / "a", code)
    not_granted = client(hub, tmp_path / "b", code, HF_TOKEN=USER_TOKEN)
    granted = client(hub, tmp_path / "c", code, HF_TOKEN=GRANTED_TOKEN)
    assert "GatedRepoError" in anonymous["error"] and "org/gated" in anonymous["text"]
    assert "401" in anonymous["text"]
    assert "GatedRepoError" in not_granted["error"] and "403" in not_granted["text"]
    assert granted["files"] == hashes(SMALL)
    gated = [r for r in hub.counters.requests(HUB) if r.reply_headers.get("x-error-code") == "GatedRepo"]
    assert gated and all(r.status in (401, 403) and "/resolve/" in r.target for r in gated)


def test_tight_resolver_quota_client_waits_and_finishes(hub: HubReplica, tmp_path: Path, record_property):
    """Quota 3 per 2 s window, only RateLimit headers (no Retry-After): huggingface_hub sleeps t+1."""
    hub.limits = RateLimits.tight("resolvers", quota=3, window=2)
    out = client(
        hub,
        tmp_path,
        """
        from huggingface_hub import snapshot_download
        emit({"files": tree_hashes(snapshot_download("org/small"))})
        """,
    )
    assert out["files"] == hashes(SMALL)
    c = hub.counters
    too_many = c.too_many("resolvers")
    record_property("huggingface_hub_429s", too_many)
    print(f"huggingface_hub 2.4: {too_many} 429s for {len(SMALL)} files (quota 3 per 2 s)")
    assert too_many > 0 and c.too_many() == too_many  # the api bucket was never exhausted
    assert c.resolves() == 2 * len(SMALL) + too_many
    limited = [r for r in c.requests(HUB) if r.status == 429]
    assert all("retry-after" not in r.reply_headers for r in limited)
    assert all(r.reply_headers["ratelimit"].startswith('"resolvers";r=0;t=') for r in limited)
    # After a 429 a call waits t + 1 s, except a file's first HEAD: its 429 makes hf_hub_download
    # retry the HEAD at once (now "with retries"), and only that retry waits.
    immediate = 0
    for r in limited:
        t = int(r.reply_headers["ratelimit"].rsplit("=", 1)[1])
        later = [x for x in c.requests(HUB) if x.target == r.target and x.started > r.started]
        if not later or later[0].method != r.method:
            continue
        first_head = r.method == "HEAD" and not any(
            x.status == 429 and x.target == r.target and x.started < r.started for x in limited
        )
        waited = later[0].started - r.ended
        if first_head:
            immediate += 1
            assert waited < 1.0
        else:
            assert waited >= t + 1 - 0.1
    assert immediate > 0


def test_bridge_never_receives_authorization(hub: HubReplica, tmp_path: Path):
    out = client(
        hub,
        tmp_path,
        """
        from huggingface_hub import snapshot_download
        emit({"files": tree_hashes(snapshot_download("org/small"))})
        """,
        HF_TOKEN=USER_TOKEN,
    )
    assert out["files"] == hashes(SMALL)
    c = hub.counters
    assert c.bridge_hits() >= 2
    assert c.authorizations(BRIDGE) == []
    assert set(c.authorizations(HUB)) == {f"Bearer {USER_TOKEN}"}
    assert len(c.authorizations(HUB)) == len(c.requests(HUB))


def test_short_url_expiry(tmp_path: Path):
    """Signed URLs living 1 s, a file taking 3 s at 1 MB/s per connection: a transfer that started in
    time completes. After a cut connection huggingface_hub restarts the file: through /resolve/ for a
    Xet-backed file (works), with the HEAD's expired signed URL for a plain-LFS one (403, fails)."""
    blob = os.urandom(3 * 1024 * 1024)
    files = {"config.json": b"{}", "model.safetensors": blob}
    code = """
        from huggingface_hub import hf_hub_download
        try:
            p = hf_hub_download("org/x", "model.safetensors")
            emit({"sha": hashlib.sha256(Path(p).read_bytes()).hexdigest()})
        except Exception as exc:
            emit({"error": type(exc).__name__, "text": str(exc)[:400]})
        """
    sha = hashlib.sha256(blob).hexdigest()
    results = {}
    for xet in (True, False):
        with HubReplica([make_repo("org/x", files, xet=xet)], url_expiry=1, rate_per_conn=1_000_000) as hub:
            whole = client(hub, tmp_path / f"whole-{xet}", code)
            assert whole == {"sha": sha}
            assert hub.counters.bridge_span("model.safetensors") > 2.5  # outlived its URL
            assert hub.counters.expired_answers() == 0
            assert hub.counters.resolves("model.safetensors") == (2 if xet else 1)
            hub.reset()
            hub.cut_next("model.safetensors", after=2 * 1024 * 1024)  # then it sleeps 1 s
            results[xet] = (client(hub, tmp_path / f"cut-{xet}", code), hub.counters)
    cut_xet, counters = results[True]
    assert cut_xet == {"sha": sha}
    assert counters.resolves("model.safetensors") == 3 and counters.expired_answers() == 0
    cut_lfs, counters = results[False]
    assert cut_lfs["error"] == "HfHubHTTPError" and "403" in cut_lfs["text"]
    assert counters.resolves("model.safetensors") == 1 and counters.expired_answers() == 1


def test_errors_and_renamed_repo(hub: HubReplica, tmp_path: Path):
    hub.rename("org/old-name", "org/small")
    out = client(
        hub,
        tmp_path,
        """
        from huggingface_hub import hf_hub_download, snapshot_download
        res = {}
        for name, call in [
            ("repo", lambda: snapshot_download("org/missing")),
            ("revision", lambda: snapshot_download("org/small", revision="no-such-branch")),
            ("entry", lambda: hf_hub_download("org/small", "no/such/file.bin")),
            ("dataset_as_model", lambda: snapshot_download("org/ds")),
        ]:
            try:
                call()
                res[name] = None
            except Exception as exc:
                res[name] = [c.__name__ for c in type(exc).__mro__]
        res["renamed"] = tree_hashes(snapshot_download("org/old-name"))
        readme = hf_hub_download("org/old-name", "README.md")
        res["renamed_file"] = hashlib.sha256(Path(readme).read_bytes()).hexdigest()
        emit(res)
        """,
    )
    assert "RepositoryNotFoundError" in out["repo"]
    assert "RevisionNotFoundError" in out["revision"]
    assert "EntryNotFoundError" in out["entry"] or "RemoteEntryNotFoundError" in out["entry"]
    assert "RepositoryNotFoundError" in out["dataset_as_model"]
    assert out["renamed"] == hashes(SMALL)
    if "README.md" in SMALL:
        assert out["renamed_file"] == hashes(SMALL)["README.md"]
    assert any(r.status == 307 for r in hub.counters.requests(HUB))


def test_huggingface_hub_026_gets_identical_files(hub: HubReplica, tmp_path: Path):
    python = os.environ.get("HUBGET_TEST_HF026_PYTHON")
    if not python:
        pytest.skip("HUBGET_TEST_HF026_PYTHON is not set (a venv with huggingface_hub==0.26.5)")
    out = run_client(
        f"""
        import huggingface_hub
        from huggingface_hub import snapshot_download
        cache = snapshot_download("org/llm")
        local = snapshot_download("org/llm", local_dir={str(tmp_path / "ld")!r})
        version = huggingface_hub.__version__
        emit({{"version": version, "cache": tree_hashes(cache), "local": tree_hashes(local)}})
        """,
        endpoint=hub.hub_url,
        hf_home=tmp_path / "hf_home",
        python=python,
        env=NO_XET,
    )
    assert out["version"] == "0.26.5"
    assert out["cache"] == hashes(FILES) and out["local"] == hashes(FILES)
    c = hub.counters
    assert c.authorizations(BRIDGE) == []
    # 0.26 lists files from the repo info's siblings and follows the HEAD's signed Location itself.
    assert c.api_calls["tree"] == 0
    lfs = [p for p, f in hub.repos[("model", "org/llm")].files.items() if f.lfs]
    # It downloads once (local_dir copies from the cache), GETs /resolve/ only for regular files: the
    # LFS files come straight from the HEAD's Location; both calls HEAD every file.
    assert all(c.bridge_hits(p) == 1 for p in lfs)
    assert c.resolver_methods == {"HEAD": 2 * len(FILES), "GET": len(FILES) - len(lfs)}


def _http(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request, no redirect following; header names in lower case."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request(method, target, headers={"Accept-Encoding": "identity", **(headers or {})})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_the_replica_answers_as_documented(hub: HubReplica):
    """The replica's own contract, for whoever changes it: signed URLs, Range, quirks, rate limits."""
    data = FILES["model-00001-of-00003.safetensors"]
    resolve = f"{hub.hub_url}/org/llm/resolve/main/model-00001-of-00003.safetensors"
    status, head, _ = _http(resolve, "HEAD")
    assert status == 302 and head["x-linked-size"] == str(len(data))
    assert head["x-linked-etag"] == f'"{hashlib.sha256(data).hexdigest()}"' and len(head["x-xet-hash"]) == 64
    assert 'rel="xet-auth"' in head["link"] and head["ratelimit"].startswith('"resolvers";r=')
    location = head["location"]
    assert location.startswith(f"{hub.bridge_url}/xet-bridge-us/") and "X-Amz-Signature=" in location
    status, got, body = _http(location, headers={"Range": "bytes=100-199"})
    assert (status, got["content-range"], body) == (206, f"bytes 100-199/{len(data)}", data[100:200])
    assert got["etag"] == head["x-linked-etag"]
    assert (
        _http(location, headers={"Range": f"bytes={len(data)}-"})[1]["content-range"]
        == f"bytes */{len(data)}"
    )
    tampered = location.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    status, _, body = _http(tampered)
    assert status == 403 and b"<Code>AccessDenied</Code>" in body
    hub.gzip_range_quirk = True
    status, _, body = _http(location, headers={"Range": "bytes=100-199", "Accept-Encoding": "gzip"})
    assert status == 200 and body == data
    hub.url_expiry = 0.2
    short = _http(resolve, "HEAD")[1]["location"]
    time.sleep(1.3)  # dated at the next whole second, then 0.2 s
    status, _, body = _http(short)
    assert status == 403 and b"Request has expired" in body
    assert hub.counters.expirations("model-00001-of-00003.safetensors") == 1
    status, got, body = _http(f"{hub.hub_url}/org/llm/resolve/main/config.json")
    assert (status, got["etag"], body) == (
        200,
        f'"{hub.repos[("model", "org/llm")].files["config.json"].oid}"',
        FILES["config.json"],
    )
    hub.limits = RateLimits.tight("resolvers", quota=1, window=60)
    hub.retry_after = True
    assert _http(resolve, "HEAD")[1]["ratelimit"] == '"resolvers";r=0;t=60'
    status, got, _ = _http(resolve, "HEAD")
    assert status == 429 and got["ratelimit"] == '"resolvers";r=0;t=60' and got["retry-after"] == "60"
    assert got["ratelimit-policy"] == '"fixed window";"resolvers";q=1;w=60'
    assert _http(f"{hub.hub_url}/api/models/org/llm/revision/main")[0] == 200  # other buckets unaffected
    assert hub.counters.too_many("resolvers") == 1 and hub.counters.authorizations(BRIDGE) == []
