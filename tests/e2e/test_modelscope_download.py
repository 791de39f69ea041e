"""hubget downloads from a ModelScope-speaking `hubget serve`; then the official modelscope SDK, with
the server stopped and local_files_only=True, returns exactly the files hubget placed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import hubget
from hubget.api import fetch_snapshot
from hubget.api.modelscope import modelscope_file_download, modelscope_snapshot_download
from hubget.errors import IntegrityError
from hubget.models import RepoRef
from tests.support.hubserver import hub_server
from tests.support.proxy import counting_proxy
from tests.support.repos import llm_repo_files, sha256_hex, write_folder_repo

BIG = os.urandom(24 * 1024 * 1024)
ENV = {"MODELSCOPE_DOMAIN": "", "MODELSCOPE_API_TOKEN": ""}


def files_of_repo() -> dict[str, bytes]:
    files = llm_repo_files(shard_size=256 * 1024)
    files["sub dir/ü.txt"] = b"nested"
    return files


FILES = files_of_repo()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("msroot")
    write_folder_repo(root / "models" / "org" / "llm", FILES)
    write_folder_repo(root / "datasets" / "org" / "ds", {"train/a.jsonl": b"{}\n", "b.csv": b"x,y\n"})
    write_folder_repo(root / "models" / "org" / "big", {"big.bin": BIG, "config.json": b"{}"})
    return root


@pytest.fixture(scope="module")
def url(root: Path) -> Iterator[str]:
    with hub_server(root) as base:
        yield base


def read_tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def sdk_offline(code: str, cache: Path, dead_endpoint: str) -> object:
    """Run the modelscope SDK in a fresh process against a server that is no longer there."""
    env = {
        **os.environ,
        **ENV,
        "MODELSCOPE_CACHE": str(cache),
        "MODELSCOPE_ENDPOINT": dead_endpoint,
    }
    script = (
        "import json\nfrom modelscope import model_file_download, snapshot_download\n"
        "from modelscope.hub.snapshot_download import dataset_snapshot_download\n" + code
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sdk_reads_what_hubget_placed_with_the_server_stopped(root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with hub_server(root) as url:
        folder = Path(modelscope_snapshot_download("org/llm", cache_dir=cache, endpoint=url))
        one = modelscope_file_download("org/llm", "sub dir/ü.txt", cache_dir=cache, endpoint=url)
        ds = Path(modelscope_snapshot_download("org/ds", repo_type="dataset", cache_dir=cache, endpoint=url))
        local = Path(
            hubget.snapshot_download("org/llm", source="modelscope", local_dir=tmp_path / "ld", endpoint=url)
        )
    assert folder == cache / "models" / "org--llm" / "snapshots" / "master"
    assert read_tree(folder) == FILES
    assert Path(one) == folder / "sub dir" / "ü.txt"
    assert read_tree(ds) == {"train/a.jsonl": b"{}\n", "b.csv": b"x,y\n"}
    assert local == tmp_path / "ld" and read_tree(local) == FILES  # nothing of hubget's left in it

    got = sdk_offline(
        "print(json.dumps([snapshot_download('org/llm', local_files_only=True),"
        " model_file_download('org/llm', 'config.json', local_files_only=True),"
        f" snapshot_download('org/llm', local_dir={str(tmp_path / 'ld')!r}, local_files_only=True),"
        " snapshot_download('org/ds', repo_type='dataset', local_files_only=True)]))",
        cache,
        url,
    )
    assert got == [str(folder), str(folder / "config.json"), str(tmp_path / "ld"), str(ds)]

    # Nothing listens there any more: any request the SDK had made would have failed.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5).close()


def test_second_run_and_sdk_placed_files_fetch_nothing(url: str, tmp_path: Path) -> None:
    from hubget.api.modelscope import modelscope_source_and_layout

    cache = tmp_path / "cache"
    env = {**os.environ, **ENV, "MODELSCOPE_CACHE": str(cache)}
    env["MODELSCOPE_ENDPOINT"] = url
    sdk = subprocess.run(
        [
            sys.executable,
            "-c",
            "from modelscope import snapshot_download; print(snapshot_download('org/llm'))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert sdk.returncode == 0, sdk.stderr[-2000:]
    with counting_proxy(url) as proxy:
        source, layout, ref = modelscope_source_and_layout("org/llm", endpoint=proxy.url, cache_dir=cache)
        report = fetch_snapshot(source, ref, layout)
        assert all(f.present for f in report.files)  # hashed once, found right, kept
        assert sum(f.bytes_fetched for f in report.files) == 0
        listing_only = proxy.down
        assert listing_only < sum(len(d) for d in FILES.values()) / 4
    assert report.path == Path(sdk.stdout.strip().splitlines()[-1])
    assert read_tree(report.path) == FILES


def test_legacy_cache_is_reused(url: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    legacy = cache / "hub" / "models" / "org" / "llm"
    legacy.mkdir(parents=True)
    (legacy / "config.json").write_bytes(FILES["config.json"])
    folder = Path(modelscope_snapshot_download("org/llm", cache_dir=cache, endpoint=url))
    assert folder == legacy and read_tree(legacy) == FILES
    assert not (cache / "models").exists()
    got = sdk_offline("print(json.dumps(snapshot_download('org/llm', local_files_only=True)))", cache, url)
    assert got == str(legacy)


def test_sha256_mismatch_leaves_nothing_at_the_final_path(url: str, tmp_path: Path) -> None:
    from hubget.api.modelscope import modelscope_source_and_layout

    source, layout, ref = modelscope_source_and_layout("org/llm", endpoint=url, cache_dir=tmp_path)
    snap = source.resolve(ref)
    victim = "model-00001-of-00002.safetensors"
    snap.files = [replace(f, sha256="0" * 64) if f.path == victim else f for f in snap.files]
    with pytest.raises(IntegrityError):
        fetch_snapshot(source, ref, layout, snapshot=snap)
    folder = tmp_path / "models" / "org--llm" / "snapshots" / "master"
    assert not (folder / victim).exists()
    assert (folder / "config.json").read_bytes() == FILES["config.json"]  # the others completed


def test_filters_with_the_sdk_parameter_names(url: str, tmp_path: Path) -> None:
    folder = Path(
        modelscope_snapshot_download(
            "org/llm",
            cache_dir=tmp_path,
            endpoint=url,
            allow_file_pattern=["*.json", "sub dir/*"],
            ignore_file_pattern="generation_config.json",
        )
    )
    want = {
        p
        for p in FILES
        if (p.endswith(".json") or p.startswith("sub dir/")) and p != "generation_config.json"
    }
    assert set(read_tree(folder)) == want


def test_sigkill_then_rerun_with_the_cli(url: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    target = cache / "models" / "org--big" / "snapshots" / "master" / "big.bin"
    partials = cache / "models" / "org--big" / ".hubget-partial"
    args = ["download", "org/big", "--source", "modelscope", "--cache-dir", str(cache), "-q"]
    env = {**os.environ, **ENV}
    with counting_proxy(url, rate_per_conn=3 * 1024 * 1024) as proxy:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hubget",
                *args,
                "--endpoint",
                proxy.url,
                "--connections",
                "4",
                "--max-connections",  # one connection in all: at 3 MB/s the kill lands mid-file
                "1",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while proxy.down < len(BIG) // 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # let a resume-state save happen after the half-way mark
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    assert not target.exists()
    assert list(partials.glob("*.json")), "the killed run left resume state"
    assert not list(target.parent.glob("*hubget*")) if target.parent.exists() else True
    with counting_proxy(url) as proxy:
        rerun = subprocess.run(
            [sys.executable, "-m", "hubget", *args, "--endpoint", proxy.url],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert rerun.returncode == 0, rerun.stderr
        assert proxy.down < len(BIG) * 0.75, f"rerun fetched {proxy.down} of {len(BIG)} bytes"
    assert rerun.stdout.strip().splitlines()[-1] == str(target.parent)
    assert sha256_hex(target.read_bytes()) == sha256_hex(BIG)
    assert not partials.exists()


def test_unknown_repo_exit_code(url: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hubget", "download", "org/absent", "--source", "modelscope"]
        + ["--endpoint", url, "--cache-dir", str(tmp_path), "-q"],
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3, out.stderr
    assert "org/absent" in out.stderr and "Traceback" not in out.stderr


def test_offline_without_cache_is_a_clear_error(tmp_path: Path) -> None:
    from hubget.errors import OfflineError

    with pytest.raises(OfflineError):
        modelscope_snapshot_download("org/llm", cache_dir=tmp_path, local_files_only=True)
    ref = RepoRef("org/llm")
    assert ref.revision is None
