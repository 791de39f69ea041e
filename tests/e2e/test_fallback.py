"""`hubget download --source auto` against three local hubs (`hubget serve`): one as the Hugging Face
endpoint, one as a mirror, one speaking ModelScope with another id for the same model
(``internlm/foo`` is ``Shanghai_AI_Laboratory/foo`` there). The HF endpoint refuses, hangs or
answers 503; a mirror serves other bytes under the same name; a source dies mid-file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hubget.api.auto import fetch_auto
from hubget.models import RepoRef
from hubget.transfer.jobs import ProgressSink
from tests.support.hubserver import _wait_for_url, hub_server
from tests.support.proxy import counting_proxy
from tests.support.repos import llm_repo_files, write_folder_repo

KiB = 1024
MiB = 1024 * KiB
HF_ID = "internlm/foo"
MS_ID = "Shanghai_AI_Laboratory/foo"
BIG = "big.safetensors"
FILES = {**llm_repo_files(n_shards=2, shard_size=64 * KiB, seed=8), BIG: os.urandom(3 * MiB + 11)}
SHARD = "model-00001-of-00002.safetensors"
OTHER_WEIGHTS = {**FILES, SHARD: os.urandom(len(FILES[SHARD]))}  # same names and sizes, other bytes
# ModelScope copies usually carry their own README and a configuration.json
MS_FILES = {
    **FILES,
    "README.md": b"# foo on ModelScope\n",
    "configuration.json": b'{"framework": "pytorch"}\n',
}
BASE_ENV = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_TOKEN": "",
    "MODELSCOPE_API_TOKEN": "",
    "MODELSCOPE_DOMAIN": "",
    "HUBGET_PROBE_TIMEOUT": "2",
    "HUBGET_HF_MIRRORS": "",
    "HUBGET_ID_MAP": "",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def hubs(tmp_path_factory) -> Iterator[dict[str, str]]:
    hf = tmp_path_factory.mktemp("hf")
    write_folder_repo(hf / "models" / HF_ID, FILES)
    write_folder_repo(hf / "models" / "acme" / "bar", FILES)
    good = tmp_path_factory.mktemp("mirror")
    write_folder_repo(good / "models" / HF_ID, FILES)
    bad = tmp_path_factory.mktemp("badmirror")
    write_folder_repo(bad / "models" / HF_ID, OTHER_WEIGHTS)
    ms = tmp_path_factory.mktemp("ms")
    write_folder_repo(ms / "models" / MS_ID, MS_FILES)
    write_folder_repo(ms / "models" / "unmapped" / "baz", MS_FILES)
    write_folder_repo(ms / "models" / "MSorg" / "bar", OTHER_WEIGHTS)
    with hub_server(hf) as hf_url, hub_server(good) as good_url, hub_server(bad) as bad_url:
        with hub_server(ms) as ms_url:
            yield {"hf": hf_url, "mirror": good_url, "bad": bad_url, "ms": ms_url}


@contextlib.contextmanager
def refusing() -> Iterator[str]:
    """A port nothing listens on: connections are refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def hanging() -> Iterator[str]:
    """A socket that listens but never accepts: the TCP connect succeeds, no answer ever comes."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
    finally:
        s.close()


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def failing_5xx() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


FAULTS = {"refused": refusing, "hanging": hanging, "503": failing_5xx}


def run_auto(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        **BASE_ENV,
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "MODELSCOPE_CACHE": str(tmp_path / "ms-cache"),
        **env,
    }
    # The timeout bounds a hang only; it is not a speed check.
    return subprocess.run(
        [sys.executable, "-m", "hubget", "download", *args, "--source", "auto", "--json"],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )


def report_of(result: subprocess.CompletedProcess[str]) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def origin(url: str) -> str:
    return url.rstrip("/")


def probe(report: dict, kind: str, repo_id: str | None = None) -> dict:
    return next(
        p for p in report["sources"] if p["kind"] == kind and (repo_id is None or p["repo_id"] == repo_id)
    )


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_hf_endpoint_down_the_mirror_and_modelscope_serve_everything(hubs, tmp_path, fault):
    with FAULTS[fault]() as dead:
        result = run_auto(
            [HF_ID],
            {"HF_ENDPOINT": dead, "HUBGET_HF_MIRRORS": hubs["mirror"], "MODELSCOPE_ENDPOINT": hubs["ms"]},
            tmp_path,
        )
    report = report_of(result)
    path = Path(report["path"])
    assert path == tmp_path / "hf-cache" / "models--internlm--foo" / "snapshots" / report["commit"]
    for name, data in FILES.items():
        assert (path / name).read_bytes() == data, name
    assert not probe(report, "huggingface")["reachable"]
    assert probe(report, "mirror")["used"] and probe(report, "modelscope", MS_ID)["used"]
    allowed = {origin(hubs["mirror"]), origin(hubs["ms"])}
    by_path = {f["path"]: f for f in report["files"]}
    for name in FILES:
        assert set(by_path[name]["sources"]) <= allowed, name
        assert sum(by_path[name]["sources"].values()) == len(FILES[name])
    # the same weight bytes come from either hub; files only the HF listing hashes by git sha1 from the mirror
    assert by_path[BIG]["served_by"] == [origin(hubs["mirror"]), origin(hubs["ms"])]
    assert by_path["config.json"]["served_by"] == [origin(hubs["mirror"])]
    assert f"Hugging Face endpoint {dead} could not be read" in result.stderr


def test_dry_run_lists_the_sources_of_each_file_and_skips_a_mirror_with_other_bytes(hubs, tmp_path):
    env = {
        "HF_ENDPOINT": hubs["hf"],
        "HUBGET_HF_MIRRORS": f"{hubs['bad']},{hubs['mirror']}",
        "MODELSCOPE_ENDPOINT": hubs["ms"],
    }
    plan = report_of(run_auto([HF_ID, "--dry-run"], env, tmp_path))
    served = {f["path"]: f["served_by"] for f in plan["files"]}
    hf, good, bad, ms = (origin(hubs[k]) for k in ("hf", "mirror", "bad", "ms"))
    assert served[SHARD][0] == hf and set(served[SHARD]) == {hf, good, ms}  # the bad mirror's shard differs
    assert set(served[BIG]) == {hf, good, bad, ms}
    assert set(served["config.json"]) == {hf, good, bad}  # ModelScope gives only a sha256: nothing to compare
    assert "README.md" not in {p for p, s in served.items() if ms in s}  # ModelScope's README is another file
    assert any(bad in n and SHARD in n and "different bytes" in n for n in plan["notes"])
    assert not (tmp_path / "hf-cache").exists() or not list((tmp_path / "hf-cache").rglob("blobs/*"))

    report = report_of(run_auto([HF_ID], env, tmp_path))
    path = Path(report["path"])
    for name, data in FILES.items():
        assert (path / name).read_bytes() == data, name
    shard = next(f for f in report["files"] if f["path"] == SHARD)
    assert bad not in shard["sources"]


def test_a_modelscope_repo_with_other_weights_is_not_taken_for_the_same_model(hubs, tmp_path):
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"acme/bar": "MSorg/bar"}))
    env = {"HF_ENDPOINT": hubs["hf"], "MODELSCOPE_ENDPOINT": hubs["ms"]}
    plan = report_of(run_auto(["acme/bar", "--dry-run", "--mapping-file", str(mapping)], env, tmp_path))
    ms = origin(hubs["ms"])
    assert all(ms not in f["served_by"] for f in plan["files"])
    candidate = probe(plan, "modelscope", "MSorg/bar")
    assert candidate["reachable"] and not candidate["used"]
    assert SHARD in candidate["verdict"] and str(mapping) in candidate["matched_by"]
    assert any("MSorg/bar is not the same model" in n for n in plan["notes"])


def test_hf_blocked_the_mapping_names_the_substitute_and_says_so(hubs, tmp_path):
    with refusing() as dead:
        result = run_auto([HF_ID], {"HF_ENDPOINT": dead, "MODELSCOPE_ENDPOINT": hubs["ms"]}, tmp_path)
    report = report_of(result)
    sub = report["substitute"]
    assert sub["requested"] == HF_ID and sub["repo_id"] == MS_ID
    assert "organisation rename internlm -> Shanghai_AI_Laboratory" in sub["how"]
    said = f"downloading ModelScope {MS_ID} ({hubs['ms']}) in place of {HF_ID}"
    assert said in result.stderr and "not verified by hash" in result.stderr
    # stored under the substitute's own id, in the ModelScope cache: no HF commit to name HF entries by
    path = Path(report["path"])
    assert path.is_relative_to(tmp_path / "ms-cache")
    for name, data in MS_FILES.items():
        assert (path / name).read_bytes() == data, name
    assert not (tmp_path / "hf-cache" / "models--internlm--foo").exists()


def test_hf_blocked_a_same_id_guess_is_never_used_but_an_explicit_id_is(hubs, tmp_path):
    env = {"MODELSCOPE_ENDPOINT": hubs["ms"]}
    with refusing() as dead:
        refused = run_auto(["unmapped/baz"], {**env, "HF_ENDPOINT": dead}, tmp_path)
        assert refused.returncode == 6, refused.stderr
        assert "--modelscope-id" in refused.stderr and "no source can serve unmapped/baz" in refused.stderr
        assert not (tmp_path / "ms-cache").exists()

        result = run_auto(
            ["unmapped/baz", "--modelscope-id", "unmapped/baz", "--quiet"],
            {**env, "HF_ENDPOINT": dead},
            tmp_path,
        )
    report = report_of(result)
    assert report["substitute"]["how"] == "given with --modelscope-id"
    assert "in place of unmapped/baz" in result.stderr  # said even with --quiet
    assert (Path(report["path"]) / BIG).read_bytes() == FILES[BIG]


class _Bytes(ProgressSink):
    def __init__(self) -> None:
        self.total = 0
        self.lock = threading.Lock()
        self.lines: list[str] = []

    def advance(self, label: str, nbytes: int) -> None:
        with self.lock:
            self.total += nbytes

    def message(self, text: str) -> None:
        self.lines.append(text)


@contextlib.contextmanager
def killable_hub(root: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    cmd = [sys.executable, "-m", "hubget", "serve", str(root), "--host", "127.0.0.1", "--port", "0"]
    stderr = root.parent / f"{root.name}.stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        yield _wait_for_url(proc, stderr), proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_source_killed_mid_file_still_ends_in_a_verified_file(hubs, tmp_path):
    root = tmp_path / "hf-root"
    write_folder_repo(root / "models" / HF_ID, FILES)
    rate = 256 * KiB  # per connection, so the download is still running when the hub dies
    with killable_hub(root) as (hf_url, proc), counting_proxy(hf_url, rate_per_conn=rate) as hf_proxy:
        with counting_proxy(hubs["ms"], rate_per_conn=rate) as ms_proxy:
            sink = _Bytes()

            def kill_when_started() -> None:
                deadline = time.monotonic() + 60
                while sink.total < 512 * KiB and time.monotonic() < deadline:
                    time.sleep(0.02)
                proc.kill()

            threading.Thread(target=kill_when_started, daemon=True).start()
            plan, report = fetch_auto(
                RepoRef(HF_ID),
                endpoint=hf_proxy.url,
                token=False,
                cache_dir=tmp_path / "cache",
                allow_patterns=[BIG],
                mirrors=[],
                modelscope_endpoint=ms_proxy.url,
                probe_timeout=10,
                progress=sink,
                connections=4,
                engine_options={
                    "split_threshold": 1 * MiB,
                    "min_chunk": 256 * KiB,
                    "max_chunk": 512 * KiB,
                    "steal_min": 64 * KiB,
                    "stall_timeout": 5,
                },
            )
    assert proc.poll() is not None  # the hub really died during the download
    blob = tmp_path / "cache" / "models--internlm--foo" / "blobs" / sha(FILES[BIG])
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == sha(FILES[BIG])
    (status,) = report.files
    assert status.sources.get(ms_proxy.url, 0) > 0 and status.sources.get(hf_proxy.url, 0) > 0
    assert status.bytes_fetched == len(FILES[BIG])  # nothing fetched twice: the dead hub's bytes were kept
    assert any(hf_proxy.url in line and "failed" in line for line in sink.lines)
