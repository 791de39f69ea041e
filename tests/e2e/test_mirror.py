"""`hubget serve ROOT --upstream URL` in front of the hub replica (tests/support/hubreplica.py: the hub and
its Xet bridge, signed expiring redirects, xetHash in trees, per-connection caps), judged by the official
huggingface_hub 2.4 (hf_xet installed, Xet not disabled) and by hubget, each in its own process.

What the mirror must do: every client gets byte-identical files; the upstream sends each LFS byte about
once and is asked about each file once (one resolve per blob, however many clients at once); a warm
round asks upstream nothing; a dead upstream leaves cached repos working by branch name; a mirror
killed mid-fill resumes the fill; a fill whose hash fails never completes an answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.hubreplica import BRIDGE, HUB, HubReplica, make_repo
from tests.support.mirrorserver import MirrorServer, finish_client, finish_client_logged, start_client
from tests.support.repos import hashes, llm_repo_files

MiB = 1024 * 1024
FILES = llm_repo_files(n_shards=2, shard_size=3 * MiB, seed=5)
FILES["model-big.safetensors"] = os.urandom(24 * MiB + 7)
CLIENTS = 6

SNAPSHOT = """
from huggingface_hub import snapshot_download
path = snapshot_download("org/llm")
emit({"files": tree_hashes(path), "commit": Path(path).name})
"""


def lfs_bytes(hub: HubReplica, repo_id: str) -> int:
    return sum(f.size for f in hub.repos[("model", repo_id)].files.values() if f.lfs)


def hub_calls(hub: HubReplica) -> int:
    return len(hub.counters.requests(HUB))


@pytest.fixture
def hub():
    with HubReplica([make_repo("org/llm", FILES)], rate_per_conn=16e6) as replica:
        yield replica


def snapshot_round(mirror: MirrorServer, tmp_path: Path, name: str, n: int = CLIENTS) -> list[dict]:
    procs = [start_client(SNAPSHOT, endpoint=mirror.url, hf_home=tmp_path / f"{name}{i}") for i in range(n)]
    return [finish_client(p) for p in procs]


def test_six_clients_at_once_through_a_cold_mirror(hub: HubReplica, tmp_path: Path):
    repo = hub.repos[("model", "org/llm")]
    assert any(f.xet_hash for f in repo.files.values())  # the upstream is Xet-backed
    with MirrorServer(tmp_path / "root", hub.hub_url) as mirror:
        results = snapshot_round(mirror, tmp_path, "cold")
        for out in results:
            assert out["files"] == hashes(FILES)
            assert out["commit"] == repo.commit
        c = hub.counters
        sent, lfs = c.bytes_sent[BRIDGE], lfs_bytes(hub, "org/llm")
        print(f"cold round: bridge sent {sent} bytes for {lfs} LFS bytes; hub calls {hub_calls(hub)}")
        assert sent <= 1.1 * lfs
        for path in FILES:
            assert c.resolves(path) == 1, path  # one resolve per blob, for all six clients
        assert c.api_calls["revision"] == 1 and c.api_calls["tree"] == 1
        assert c.api_calls["xet-read-token"] == 0
        assert hub_calls(hub) <= 3 * len(FILES)
        assert c.authorizations(BRIDGE) == []

        hub.reset()
        results = snapshot_round(mirror, tmp_path, "warm")
        assert all(out["files"] == hashes(FILES) for out in results)
        assert hub.counters.requests() == []  # a warm round asks upstream nothing


def test_answers_are_the_mirrors_own(hub: HubReplica, tmp_path: Path):
    """No xetHash, no X-Xet-* and no xet-auth Link, pagination at the mirror, bytes from the mirror
    itself (200, not a redirect), hubget serve's errors."""
    with MirrorServer(tmp_path / "root", hub.hub_url, "--page-size", "3") as mirror:
        with urllib.request.urlopen(f"{mirror.url}/api/models/org/llm/tree/main?recursive=true") as resp:
            page = json.load(resp)
            link = resp.headers["Link"]
        assert len(page) == 3 and all("xetHash" not in item for item in page)
        assert link.startswith(f"<{mirror.url}/api/models/org/llm/tree/main?")
        name = "model-big.safetensors"
        req = urllib.request.Request(f"{mirror.url}/org/llm/resolve/main/{name}", method="HEAD")
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 200
            headers = {k.lower(): v for k, v in resp.headers.items()}
        assert not [k for k in headers if k.startswith("x-xet")]
        assert "xet" not in headers.get("link", "")
        assert headers["x-linked-etag"] == f'"{hashlib.sha256(FILES[name]).hexdigest()}"'
        assert headers["x-repo-commit"] == hub.repos[("model", "org/llm")].commit
        assert int(headers["content-length"]) == len(FILES[name])
        assert hub.counters.resolves(name) == 0  # metadata comes from the listing
        req = urllib.request.Request(
            f"{mirror.url}/org/llm/resolve/main/{name}", headers={"Range": "bytes=5-9"}
        )
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 206 and resp.read() == FILES[name][5:10]
        for url, code in [
            (f"{mirror.url}/org/nope/resolve/main/config.json", "RepoNotFound"),
            (f"{mirror.url}/org/llm/resolve/main/nope.json", "EntryNotFound"),
            (f"{mirror.url}/org/llm/resolve/nobranch/config.json", "RevisionNotFound"),
        ]:
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(url)
            assert err.value.code == 404 and err.value.headers["X-Error-Code"] == code, url


def test_a_dead_upstream_leaves_cached_repos_working_by_branch(tmp_path: Path):
    """With a TTL of 0 every request asks upstream for the branch; once the replica is stopped the
    mirror answers with the last known commit, also after a restart (the metadata is on disk)."""
    hub = HubReplica([make_repo("org/llm", FILES)]).start()
    mirror = MirrorServer(tmp_path / "root", hub.hub_url, "--revision-ttl", "0").start()
    try:
        assert snapshot_round(mirror, tmp_path, "before", 1)[0]["files"] == hashes(FILES)
        hub.stop()
        out = snapshot_round(mirror, tmp_path, "after", 1)[0]
        assert out["files"] == hashes(FILES)
        assert out["commit"] == hub.repos[("model", "org/llm")].commit
        assert "last known commit" in mirror.log()
        mirror.stop()
        mirror.start()
        assert snapshot_round(mirror, tmp_path, "restarted", 1)[0]["files"] == hashes(FILES)
        with pytest.raises(urllib.error.HTTPError) as err:  # never seen: upstream's failure shows
            urllib.request.urlopen(f"{mirror.url}/api/models/org/other/revision/main")
        assert err.value.code == 502
    finally:
        mirror.stop()


def hubget_download(endpoint: str, hf_home: Path, repo_id: str) -> Path:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "HUBGET_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    proc = subprocess.run(
        [sys.executable, "-m", "hubget", "download", repo_id, "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return Path(proc.stdout.strip().splitlines()[-1])


def tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_hubget_through_a_mirror_of_a_mirror(hub: HubReplica, tmp_path: Path):
    """hubget's own client (parallel ranges) through a mirror whose upstream is another mirror: each
    file is fetched from the replica once, and the front mirror's fills come from the back one."""
    with MirrorServer(tmp_path / "back", hub.hub_url) as back:
        with MirrorServer(tmp_path / "front", back.url) as front:
            path = hubget_download(front.url, tmp_path / "hubget", "org/llm")
            assert tree(path) == hashes(FILES)
            assert hub.counters.bytes_sent[BRIDGE] <= 1.1 * lfs_bytes(hub, "org/llm")
            assert all(hub.counters.resolves(p) == 1 for p in FILES)
            hub.reset()
            out = snapshot_round(back, tmp_path, "back", 1)[0]  # the back mirror has it all
            assert out["files"] == hashes(FILES)
            assert hub.counters.requests() == []


BIG = {"config.json": b'{"model_type": "llama"}\n', "model.safetensors": os.urandom(24 * MiB + 5)}
BIG_NAME = "model.safetensors"


def blob_state(root: Path, repo_id: str, data: bytes) -> Path:
    folder = root / ".hubget-mirror" / "hub" / f"models--{repo_id.replace('/', '--')}" / "blobs"
    return folder / f"{hashlib.sha256(data).hexdigest()}.hubget-partial.json"


def done_bytes(state: Path) -> int:
    try:
        return sum(end - start for start, end in json.loads(state.read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


def start_reader(url: str, headers: dict[str, str] | None = None) -> tuple[threading.Thread, dict]:
    """A plain HTTP client reading ``url`` in a thread: what it got, when, and how it ended."""
    got: dict = {"data": b"", "first": None, "error": None, "status": None}

    def run() -> None:
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers or {}), timeout=120
            ) as resp:
                got["status"] = resp.status
                while chunk := resp.read1(256 * 1024):
                    if got["first"] is None:
                        got["first"] = time.monotonic() - t0
                    got["data"] += chunk
        except Exception as exc:  # noqa: BLE001 - the test looks at what happened
            got["error"] = exc
        got["end"] = time.monotonic() - t0
        got["ended_at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got


def test_kill_9_mid_fill_then_the_fill_resumes(tmp_path: Path):
    data = BIG[BIG_NAME]
    with HubReplica([make_repo("org/big", BIG)], rate_per_conn=4e6) as hub:
        mirror = MirrorServer(tmp_path / "root", hub.hub_url, "--upstream-connections", "2").start()
        try:
            start_reader(f"{mirror.url}/org/big/resolve/main/{BIG_NAME}")
            state = blob_state(mirror.root, "org/big", data)
            deadline = time.monotonic() + 60
            while done_bytes(state) < 6 * MiB:
                assert time.monotonic() < deadline, mirror.log()[-3000:]
                time.sleep(0.05)
            mirror.kill()
            kept = done_bytes(state)
            before = hub.counters.bytes_sent[BRIDGE]
            assert kept < len(data)
            mirror.start()
            out = finish_client(
                start_client(
                    "from huggingface_hub import hf_hub_download\n"
                    f'p = hf_hub_download("org/big", "{BIG_NAME}")\n'
                    'emit(hashlib.sha256(open(p, "rb").read()).hexdigest())\n',
                    endpoint=mirror.url,
                    hf_home=tmp_path / "client",
                )
            )
            assert out == hashlib.sha256(data).hexdigest()
            after = hub.counters.bytes_sent[BRIDGE] - before
            print(f"kill -9 with {kept} bytes kept; {after} more bytes fetched after the restart")
            assert after <= len(data) - kept + 2 * MiB  # resumed, not fetched anew
            assert not state.exists()
        finally:
            mirror.stop()


def test_a_fill_whose_hash_fails_never_completes_an_answer(tmp_path: Path):
    """The replica serves wrong bytes (same size) for the first fill: a client reading the whole file
    gets a short body, Range requests then get the whole file (200), and once the replica serves the
    right bytes again huggingface_hub gets the right file through the same mirror."""
    data = BIG[BIG_NAME]
    with HubReplica([make_repo("org/big", BIG)], rate_per_conn=4e6) as hub:
        f = hub.repos[("model", "org/big")].files[BIG_NAME]
        f.data = data[: 10 * MiB] + bytes([data[10 * MiB] ^ 1]) + data[10 * MiB + 1 :]
        with MirrorServer(tmp_path / "root", hub.hub_url) as mirror:
            thread, got = start_reader(f"{mirror.url}/org/big/resolve/main/{BIG_NAME}")
            thread.join(120)
            assert got["status"] == 200
            assert 0 < len(got["data"]) < len(data)  # a short body (http.client may or may not say so)
            assert f"fetching org/big/{BIG_NAME} failed" in mirror.log()
            f.data = data
            thread, got = start_reader(
                f"{mirror.url}/org/big/resolve/main/{BIG_NAME}", {"Range": "bytes=100-"}
            )
            thread.join(120)
            assert got["status"] == 200 and got["error"] is None and got["data"] == data
            out = finish_client(
                start_client(
                    "from huggingface_hub import hf_hub_download\n"
                    f'p = hf_hub_download("org/big", "{BIG_NAME}")\n'
                    'emit(hashlib.sha256(open(p, "rb").read()).hexdigest())\n',
                    endpoint=mirror.url,
                    hf_home=tmp_path / "client",
                )
            )
            assert out == hashlib.sha256(data).hexdigest()


def test_clients_stream_the_fill_and_a_far_range_is_fetched_directly(tmp_path: Path):
    """One slow connection upstream: a client reading the whole file gets its first bytes long before
    the fill is done; a Range far ahead is fetched for its client straight from upstream (a copy of
    that range only), and still completes only once the blob is verified."""
    data = BIG[BIG_NAME]
    with HubReplica([make_repo("org/big", BIG)], rate_per_conn=6e6) as hub:
        with MirrorServer(tmp_path / "root", hub.hub_url, "--upstream-connections", "1") as mirror:
            url = f"{mirror.url}/org/big/resolve/main/{BIG_NAME}"
            whole, got_whole = start_reader(url)
            time.sleep(0.5)
            far = 20 * MiB
            ranged, got_far = start_reader(url, {"Range": f"bytes={far}-{far + MiB - 1}"})
            whole.join(120)
            ranged.join(120)
            assert got_whole["error"] is None and got_whole["data"] == data
            assert got_far["error"] is None and got_far["status"] == 206
            assert got_far["data"] == data[far : far + MiB]
            for what, got in (("whole file", got_whole), ("far range", got_far)):
                print(f"{what}: first bytes after {got['first']:.2f} s, done after {got['end']:.2f} s")
            assert got_whole["first"] < got_whole["end"] / 3  # streamed, not sent once the fill was done
            assert got_far["first"] < got_far["end"] / 3  # not waiting for the fill to get there...
            assert got_far["ended_at"] > got_whole["ended_at"] - 1.0  # ...but for the verified blob
            direct = [
                r
                for r in hub.counters.requests(BRIDGE)
                if r.headers.get("range", "").startswith(f"bytes={far}-")
            ]
            assert direct
            assert hub.counters.bytes_sent[BRIDGE] <= len(data) + MiB + 64 * 1024


def test_huggingface_hub_caught_in_a_failed_fill_gets_the_right_file(tmp_path: Path):
    """huggingface_hub resumes a broken download with a Range request (keeping what it has): the mirror
    answers it with the whole file, so the bytes of the failed fill are dropped, not spliced."""
    data = BIG[BIG_NAME]
    with HubReplica([make_repo("org/big", BIG)], rate_per_conn=4e6) as hub:
        f = hub.repos[("model", "org/big")].files[BIG_NAME]
        f.data = data[: 3 * MiB] + bytes([data[3 * MiB] ^ 1]) + data[3 * MiB + 1 :]
        with MirrorServer(tmp_path / "root", hub.hub_url) as mirror:
            client = start_client(
                "from huggingface_hub import hf_hub_download\n"
                f'p = hf_hub_download("org/big", "{BIG_NAME}")\n'
                'emit(hashlib.sha256(open(p, "rb").read()).hexdigest())\n',
                endpoint=mirror.url,
                hf_home=tmp_path / "client",
            )
            mirror.wait_for_log(f"fetching org/big/{BIG_NAME} failed")
            f.data = data
            digest, log = finish_client_logged(client)
            assert digest == hashlib.sha256(data).hexdigest()
            assert "Trying to resume download" in log  # it was cut, and asked for the rest only


def get_json(url: str) -> object:
    with urllib.request.urlopen(url) as resp:
        return json.load(resp)


def test_branches_are_asked_again_after_the_ttl_commits_never(tmp_path: Path):
    """A push upstream shows through the mirror once the branch's TTL is over; a commit, its listing
    (read upstream page by page) and its files are asked once."""
    with HubReplica([make_repo("org/llm", FILES)], page_size=4) as hub:
        old = hub.repos[("model", "org/llm")].commit
        with MirrorServer(tmp_path / "root", hub.hub_url, "--revision-ttl", "2") as mirror:
            info = f"{mirror.url}/api/models/org/llm/revision/main"
            assert get_json(info)["sha"] == old  # type: ignore[index]
            listing = get_json(f"{mirror.url}/api/models/org/llm/tree/main?recursive=true")
            assert sorted(i["path"] for i in listing if i["type"] == "file") == sorted(FILES)  # type: ignore[index,union-attr]
            pages = hub.counters.api_calls["tree"]
            assert pages > 1
            with urllib.request.urlopen(f"{mirror.url}/org/llm/resolve/main/config.json") as resp:
                assert resp.read() == FILES["config.json"]
            pushed = dict(FILES, **{"config.json": b'{"model_type": "y"}\n'})
            hub.add_repo(make_repo("org/llm", pushed))
            new = hub.repos[("model", "org/llm")].commit
            assert get_json(info)["sha"] == old  # within the TTL
            assert hub.counters.api_calls["revision"] == 1
            time.sleep(2.2)
            assert get_json(info)["sha"] == new
            assert get_json(f"{mirror.url}/api/models/org/llm/revision/{old}")["sha"] == old  # type: ignore[index]
            with urllib.request.urlopen(f"{mirror.url}/org/llm/resolve/main/config.json") as resp:
                assert resp.read() == pushed["config.json"]
            with urllib.request.urlopen(f"{mirror.url}/org/llm/resolve/{old}/config.json") as resp:
                assert resp.read() == FILES["config.json"]  # (the replica no longer has that commit)
            assert hub.counters.api_calls["revision"] == 2
            assert hub.counters.api_calls["tree"] == 2 * pages
            assert hub.counters.resolves("config.json") == 2  # one per blob (two different blobs)


USER_TOKEN = "hf_replica_user_token"  # a valid token without access to the restricted repos
GRANTED_TOKEN = "hf_replica_granted_token"
SMALL = {k: FILES[k] for k in sorted(FILES)[:6]}
TRY_SNAPSHOT = """
from huggingface_hub import snapshot_download
try:
    path = snapshot_download(REPO)
    emit({"files": tree_hashes(path)})
except Exception as exc:
    emit({"error": type(exc).__name__})
"""


def test_gated_and_private_repos_only_for_clients_the_hub_accepts(tmp_path: Path):
    repos = [
        make_repo("org/gated", SMALL, gated=True, granted=[GRANTED_TOKEN]),
        make_repo("org/private", SMALL, private=True, granted=[GRANTED_TOKEN]),
    ]
    with HubReplica(repos, users={USER_TOKEN: "alice"}) as hub:
        with MirrorServer(tmp_path / "root", hub.hub_url) as mirror:  # the mirror has no token itself

            def run(repo_id: str, token: str | None, name: str) -> dict:
                code = TRY_SNAPSHOT.replace("REPO", repr(repo_id))
                env = {"HF_TOKEN": token} if token else {}
                return finish_client(
                    start_client(code, endpoint=mirror.url, hf_home=tmp_path / name, env=env)
                )

            for repo_id in ("org/gated", "org/private"):
                assert run(repo_id, GRANTED_TOKEN, f"{repo_id}-granted") == {"files": hashes(SMALL)}
                checks = hub.counters.resolves(repo_id=repo_id)
                # Now cached: still only for clients the hub accepts for this repo.
                wanted = "GatedRepoError" if repo_id == "org/gated" else "RepositoryNotFoundError"
                assert run(repo_id, None, f"{repo_id}-anonymous") == {"error": wanted}
                assert run(repo_id, USER_TOKEN, f"{repo_id}-other") == {"error": wanted}
                assert run(repo_id, GRANTED_TOKEN, f"{repo_id}-again") == {"files": hashes(SMALL)}
                # One upstream check per token (cached briefly), the granted token's answer reused.
                assert hub.counters.resolves(repo_id=repo_id) <= checks + 1
                assert hub.counters.bytes_sent[BRIDGE] <= 2 * lfs_bytes(hub, "org/gated")


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in\n{text}")


def test_max_size_evicts_the_least_recently_used_blob_and_metrics_tell(tmp_path: Path):
    files = {"config.json": b"{}\n", **{f"w{i}.safetensors": os.urandom(4 * MiB + i) for i in range(3)}}
    with HubReplica([make_repo("org/w", files)]) as hub:
        root = tmp_path / "root"
        with MirrorServer(root, hub.hub_url, "--max-size", "9MiB") as mirror:

            def get(path: str) -> bytes:
                with urllib.request.urlopen(f"{mirror.url}/org/w/resolve/main/{path}") as resp:
                    return resp.read()

            blobs = root / ".hubget-mirror" / "hub" / "models--org--w" / "blobs"
            names = {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
            assert get("w0.safetensors") == files["w0.safetensors"]
            assert get("w1.safetensors") == files["w1.safetensors"]
            assert get("w0.safetensors") == files["w0.safetensors"]  # w0 is now the most recent
            assert get("w2.safetensors") == files["w2.safetensors"]  # over 9 MiB: w1 goes
            kept = {p.name for p in blobs.iterdir()}
            assert names["w1.safetensors"] not in kept
            assert {names["w0.safetensors"], names["w2.safetensors"]} <= kept
            commit = hub.repos[("model", "org/w")].commit
            snapshot = blobs.parent / "snapshots" / commit
            assert not (snapshot / "w1.safetensors").is_symlink()  # its link went with it
            assert get("w1.safetensors") == files["w1.safetensors"]  # fetched again
            assert hub.counters.resolves("w1.safetensors") == 2
            with urllib.request.urlopen(f"{mirror.url}/metrics") as resp:
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = resp.read().decode()
            assert metric(text, "hubget_mirror_evictions_total") == 2
            assert metric(text, "hubget_mirror_store_bytes") <= 9 * MiB
            assert metric(text, 'hubget_mirror_fills_total{result="done"}') == 4
            assert metric(text, 'hubget_mirror_upstream_calls_total{kind="locate"}') == 4
            assert metric(text, 'hubget_mirror_upstream_calls_total{kind="revision"}') == 1
            assert metric(text, 'hubget_mirror_blob_requests_total{from="store"}') >= 1
            assert metric(text, "hubget_mirror_upstream_bytes_total") == hub.counters.bytes_sent[BRIDGE]
