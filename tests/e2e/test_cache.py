"""`hubget cache` end to end: the official clients (huggingface_hub, modelscope, transformers) are the
judges of what the caches hold after rm, prune, verify --repair, import, export and dedup; the hub
(`hubget serve` in this process, counting requests) says which file bodies were fetched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.countinghub import CountingHub, counting_hub
from tests.support.heldlock import HeldLock
from tests.support.repos import GitRepoBuilder, llm_repo_files, write_folder_repo
from tests.support.tiny_model import build_tiny_causal_lm, reference_logits

LLM = llm_repo_files(n_shards=2, shard_size=256 * 1024, seed=7)
ENV = {"HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
OLD = time.time() - 7200  # older than prune's default min age


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hub")
    write_folder_repo(root / "models/org/llm", LLM)
    build_tiny_causal_lm(root / "models/org/tiny")
    git = GitRepoBuilder(root / "models/org/git")
    v1 = {"config.json": b'{"v": 1}\n', "model.safetensors": os.urandom(70_000)}
    c1 = git.commit(v1, "v1")
    git.tag("v1.0")
    v2 = {**v1, "config.json": b'{"v": 2}\n'}
    c2 = git.commit({"config.json": v2["config.json"]}, "v2")
    git.branch("dev", c1)
    git.checkout("dev")
    dev = {**v1, "dev.bin": os.urandom(30_000)}
    c3 = git.commit({"dev.bin": dev["dev.bin"]}, "dev")
    git.checkout("main")
    attributes = {".gitattributes": (root / "models/org/git/.gitattributes").read_bytes()}
    with counting_hub(root) as server:
        server.root = root  # type: ignore[attr-defined]
        server.git = {c: {**attributes, **files} for c, files in ((c1, v1), (c2, v2), (c3, dev))}  # type: ignore[attr-defined]
        server.commits = {"v1.0": c1, "main": c2, "dev": c3}  # type: ignore[attr-defined]
        yield server


def folder_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(folder).parts
    }


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hashes(files: dict[str, bytes]) -> dict[str, str]:
    return {k: sha(v) for k, v in sorted(files.items())}


def env_for(tmp: Path, hub: CountingHub, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "MODELSCOPE"))}
    env.update(ENV)
    env.update(
        HF_HOME=str(tmp / "hf-home"),
        HF_HUB_CACHE=str(tmp / "hf"),
        MODELSCOPE_CACHE=str(tmp / "ms"),
        HF_ENDPOINT=hub.url,
        MODELSCOPE_ENDPOINT=hub.url,
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=os.getcwd(),
    )
    env.update(extra)
    return env


def hubget(env: dict[str, str], *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "hubget", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if check is not None:
        assert proc.returncode == check, (
            f"hubget {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def hubget_json(env: dict[str, str], *args: str, check: int | None = 0) -> dict:
    proc = hubget(env, *args, "--json", check=check)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def python(env: dict[str, str], code: str, **extra: str) -> object:
    """Run ``code`` in a fresh interpreter (it prints one JSON line last) and return that value."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**env, **extra},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


MS_SDK_DOWNLOAD = (
    "import json, os; from modelscope import snapshot_download as d; print(json.dumps(d(os.environ['REPO'])))"
)
HF_OFFLINE_LOAD = """
    import hashlib, json
    from pathlib import Path
    from huggingface_hub import scan_cache_dir, snapshot_download
    out = {}
    info = scan_cache_dir()
    for repo in info.repos:
        for rev in repo.revisions:
            path = Path(snapshot_download(repo.repo_id, repo_type=repo.repo_type, revision=rev.commit_hash,
                                          local_files_only=True))
            out[f"{repo.repo_id}@{rev.commit_hash}"] = {
                p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(path.rglob("*")) if p.is_file()}
    summary = {
        "size_on_disk": info.size_on_disk,
        "warnings": [str(w) for w in info.warnings],
        "repos": {f"{r.repo_type}/{r.repo_id}": [r.size_on_disk, r.nb_files,
                  {v.commit_hash: [sorted(v.refs), v.size_on_disk, v.nb_files] for v in r.revisions}]
                  for r in info.repos},
    }
    print(json.dumps({"trees": out, "scan": summary}))
"""


def ls_as_scan(env: dict[str, str]) -> dict:
    """`hubget cache ls --json` (HF cache), shaped like the HF_OFFLINE_LOAD summary."""
    report = hubget_json(env, "cache", "ls", "--cache", "hf")
    return {
        "size_on_disk": report["hf_size_on_disk"],
        "warnings": [],
        "repos": {
            f"{r['repo_type']}/{r['repo_id']}": [
                r["size_on_disk"],
                r["nb_files"],
                {v["revision"]: [v["refs"], v["size_on_disk"], v["nb_files"]] for v in r["revisions"]},
            ]
            for r in report["repos"]
        },
    }


def test_rm_and_prune_leave_caches_the_official_clients_still_load(hub: CountingHub, tmp_path: Path) -> None:
    env = env_for(tmp_path, hub)
    c1, c2, c3 = (hub.commits[k] for k in ("v1.0", "main", "dev"))  # type: ignore[attr-defined]
    hubget(env, "download", "org/llm", "-q")
    hubget(env, "download", "org/tiny", "-q")
    hubget(env, "download", "org/git", "-q")
    hubget(env, "download", "org/git", "--revision", "v1.0", "-q")
    hubget(env, "download", "org/git", "--revision", c3, "-q")  # by commit: no ref names it (detached)
    hubget(env, "download", "org/llm", "--source", "modelscope", "-q")
    python(env, MS_SDK_DOWNLOAD, REPO="org/tiny")
    hf, ms = tmp_path / "hf", tmp_path / "ms"
    llm = hf / "models--org--llm"
    # Leftovers of interrupted downloads and of a crashed one, plus one download still running.
    stale_incomplete = llm / "blobs" / ("a" * 64 + ".incomplete")
    stale_incomplete.write_bytes(b"x" * 1000)
    stale_partial = llm / "blobs" / ("b" * 64 + ".hubget-partial")
    stale_partial.write_bytes(b"y" * 2000)
    orphan = llm / "blobs" / ("c" * 64)
    orphan.write_bytes(b"z" * 3000)
    stale_lock = hf / ".locks" / "models--org--llm" / ("d" * 64 + ".lock")
    stale_lock.parent.mkdir(parents=True, exist_ok=True)
    stale_lock.touch()
    os.utime(stale_lock, (OLD, OLD))
    running = llm / "blobs" / ("e" * 64 + ".incomplete")
    running.write_bytes(b"w" * 500)
    held = HeldLock(hf / ".locks" / "models--org--llm" / ("e" * 64 + ".lock"))
    ms_stale = ms / "models" / "org--tiny" / "snapshots" / "master" / "model.safetensors.incomplete"
    ms_stale.write_bytes(b"v" * 700)
    snapshot_c3 = hf / "models--org--git" / "snapshots" / c3
    for p in [snapshot_c3, *snapshot_c3.rglob("*")]:
        os.utime(p, (OLD, OLD), follow_symlinks=False)
    try:
        dry = hubget_json(env, "cache", "prune", "--dry-run")
        assert stale_incomplete.exists() and orphan.exists() and snapshot_c3.is_dir()
        removed = hubget_json(env, "cache", "prune")
        assert removed["bytes_freed"] == dry["bytes_freed"] > 30_000 + 1000 + 2000 + 3000
        gone = {Path(r["path"]) for r in removed["removed"]}
        assert {stale_incomplete, stale_partial, orphan, stale_lock, ms_stale, snapshot_c3} <= gone
        assert running.exists() and str(running) in {s["path"] for s in removed["skipped"]}
        assert not snapshot_c3.exists() and not (hf / "models--org--git" / "refs" / c3).exists()
        assert (hf / "models--org--git" / "snapshots" / c1).is_dir()
        rm = hubget_json(env, "cache", "rm", "org/tiny", "--cache", "hf")
        tiny_bytes = sum(p.stat().st_size for p in (hub.root / "models/org/tiny").iterdir())  # type: ignore[attr-defined]
        assert rm["bytes_freed"] == tiny_bytes + 40  # the blobs and refs/main
        assert not (hf / "models--org--tiny").exists()
        rm = hubget_json(env, "cache", "rm", "org/git", "--revision", "v1.0")
        assert not (hf / "models--org--git" / "refs" / "v1.0").exists()
        assert not (hf / "models--org--git" / "snapshots" / c1).exists()
        v1_only = hub.git[c1]["config.json"]  # type: ignore[attr-defined]  # the weights are main's too
        assert rm["bytes_freed"] == 40 + len(v1_only)  # refs/v1.0 and one blob
        assert {r["kind"] for r in rm["removed"]} == {"ref", "revision", "blob"}
        hubget(env, "cache", "rm", "org/llm", check=2)  # in both caches: which one?
        hubget_json(env, "cache", "rm", "org/llm", "--cache", "ms")
        assert not (ms / "models" / "org--llm").exists()
    finally:
        held.release()
    assert running.exists()
    loaded = python(env, HF_OFFLINE_LOAD, HF_HUB_OFFLINE="1")
    assert loaded["trees"] == {  # type: ignore[index]
        f"org/llm@{_commit_of(hf, 'org/llm')}": hashes(LLM),
        f"org/git@{c2}": hashes(hub.git[c2]),  # type: ignore[attr-defined]
    }
    assert loaded["scan"] == ls_as_scan(env)  # type: ignore[index]
    ms_tree = python(
        env,
        """
        import hashlib, json
        from pathlib import Path
        from modelscope import snapshot_download
        p = Path(snapshot_download('org/tiny', local_files_only=True))
        print(json.dumps({q.relative_to(p).as_posix(): hashlib.sha256(q.read_bytes()).hexdigest()
                          for q in sorted(p.rglob('*')) if q.is_file()}))
        """,
    )
    assert ms_tree == hashes(folder_files(hub.root / "models/org/tiny"))  # type: ignore[attr-defined]


def _commit_of(hf: Path, repo: str) -> str:
    return (hf / f"models--{repo.replace('/', '--')}" / "refs" / "main").read_text()


def test_verify_finds_a_flipped_byte_and_repair_refetches_only_that_blob(
    hub: CountingHub, tmp_path: Path
) -> None:
    env = env_for(tmp_path, hub)
    hubget(env, "download", "org/llm", "-q")
    snapshot = tmp_path / "hf" / "models--org--llm" / "snapshots" / _commit_of(tmp_path / "hf", "org/llm")
    flipped = "pytorch_model-00001-of-00002.bin"
    blob = (snapshot / flipped).resolve()
    data = bytearray(blob.read_bytes())
    data[1234] ^= 0x01
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    lost = (snapshot / "tokenizer.json").resolve()  # a git-sha1 blob, deleted
    lost.unlink()
    assert hubget_json(env, "cache", "verify", "--cache", "ms")["files"] == 0
    proc = hubget(env, "cache", "verify", check=5)
    assert proc.stderr.strip().splitlines() == [
        "hubget: error: 2 file(s) corrupt or missing and not repaired; run again with --repair to fetch them "
        "again"
    ]
    report = hubget_json(env, "cache", "verify", check=5)
    bad = {c["paths"][0]: c for c in report["checks"]}
    assert bad[flipped]["status"] == "corrupt" and bad[flipped]["expected"] == sha(LLM[flipped])
    assert bad["tokenizer.json"]["status"] == "missing"
    assert report["ok"] == len(LLM) - 2 and report["mb_per_s"] > 0
    hub.clear()
    report = hubget_json(env, "cache", "verify", "--repair")
    assert sorted(hub.bodies()) == ["org/llm:pytorch_model-00001-of-00002.bin", "org/llm:tokenizer.json"]
    assert report["repaired"] == 2 and report["unrepaired"] == 0
    assert report["bytes_refetched"] == len(LLM[flipped]) + len(LLM["tokenizer.json"])
    assert (snapshot / flipped).read_bytes() == LLM[flipped]
    assert (snapshot / "tokenizer.json").read_bytes() == LLM["tokenizer.json"]
    assert not list(blob.parent.glob("*.hubget-corrupt"))
    assert hubget_json(env, "cache", "verify")["ok"] == len(LLM)


def test_verify_modelscope_files_by_hubget_records_or_the_hub_listing(
    hub: CountingHub, tmp_path: Path
) -> None:
    env = env_for(tmp_path, hub)
    hubget(env, "download", "org/llm", "--source", "modelscope", "-q")
    python(env, MS_SDK_DOWNLOAD, REPO="org/tiny")
    target = (
        tmp_path / "ms" / "models" / "org--llm" / "snapshots" / "master" / "model-00002-of-00002.safetensors"
    )
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # bit rot: same size, same mtime
    offline = hubget_json(env, "cache", "verify", "--offline", check=5)
    by_path = {(c["repo_id"], c["paths"][0]): c for c in offline["checks"]}
    corrupt = by_path[("org/llm", "model-00002-of-00002.safetensors")]
    assert corrupt["status"] == "corrupt" and corrupt["basis"] == "hubget record"
    tiny = [c for c in offline["checks"] if c["repo_id"] == "org/tiny"]
    assert tiny and all(c["status"] == "unverifiable" for c in tiny)  # the SDK records no hash
    assert any("records no hash" in n for n in offline["notes"])
    online = hubget_json(env, "cache", "verify", "org/tiny", "--cache", "ms")
    assert online["ok"] == len(folder_files(hub.root / "models/org/tiny")) and online["unverifiable"] == 0  # type: ignore[attr-defined]
    assert any("checked against the hub's listing" in n for n in online["notes"])
    hub.clear()
    repaired = hubget_json(env, "cache", "verify", "org/llm", "--cache", "ms", "--repair")
    assert repaired["repaired"] == 1 and hub.bodies() == ["org/llm:model-00002-of-00002.safetensors"]
    assert target.read_bytes() == LLM["model-00002-of-00002.safetensors"]


def test_import_a_folder_then_huggingface_hub_and_transformers_load_it_offline(
    hub: CountingHub, tmp_path: Path
) -> None:
    env = env_for(tmp_path, hub)
    folder = tmp_path / "by-hand"
    shutil.copytree(hub.root / "models/org/tiny", folder)  # type: ignore[attr-defined]
    expected = folder_files(folder)
    hub.clear()
    report = hubget_json(env, "cache", "import", str(folder), "org/tiny")
    assert hub.bodies() == []
    served_commit = python(
        env,
        f"import json, urllib.request; print(json.dumps(json.load(urllib.request.urlopen("
        f"'{hub.url}/api/models/org/tiny/revision/main'))['sha']))",
    )
    assert report["commit"] == served_commit and report["checked_against_hub"] is True
    snapshot = Path(report["snapshot"])
    for rel in expected:
        blob = (snapshot / rel).resolve()
        assert blob.parent.name == "blobs"
        method = next(f["method"] for f in report["files"] if f["path"] == rel)
        assert method == "reflink" or blob.stat().st_ino == (folder / rel).stat().st_ino, (rel, method)
    _assert_loads_offline(env, snapshot, expected, tmp_path)

    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    (changed / "config.json").chmod(0o644)
    (changed / "config.json").write_text('{"edited": true}\n')
    other = tmp_path / "other-cache"
    proc = hubget(env, "cache", "import", str(changed), "org/tiny", "--hf-cache-dir", str(other), check=5)
    assert "config.json" in proc.stderr and "nothing imported" in proc.stderr
    assert not (other / "models--org--tiny").exists()


def test_offline_import_makes_up_a_deterministic_commit(hub: CountingHub, tmp_path: Path) -> None:
    env = env_for(
        tmp_path, hub, HF_ENDPOINT="http://127.0.0.1:9", HUBGET_RETRIES="0"
    )  # nothing listens there
    folder = tmp_path / "mine"
    shutil.copytree(hub.root / "models/org/tiny", folder)  # type: ignore[attr-defined]
    refused = hubget(env, "cache", "import", str(folder), "me/tiny", check=6)
    assert "pass --offline" in refused.stderr and not (tmp_path / "hf" / "models--me--tiny").exists()
    first = hubget(env, "cache", "import", str(folder), "me/tiny", "--offline", "--json")
    assert "hubget: warning: --offline" in first.stderr and "made up" in first.stderr
    report = json.loads(first.stdout.strip().splitlines()[-1])
    again = hubget_json(
        env, "cache", "import", str(folder), "me/tiny", "--offline", "--hf-cache-dir", str(tmp_path / "y")
    )
    assert report["commit"] == again["commit"] and len(report["commit"]) == 40
    assert (tmp_path / "hf" / "models--me--tiny" / "refs" / "main").read_text() == report["commit"]
    _assert_loads_offline(env, Path(report["snapshot"]), folder_files(folder), tmp_path, repo="me/tiny")


def _assert_loads_offline(
    env: dict[str, str], snapshot: Path, expected: dict[str, bytes], tmp_path: Path, repo: str = "org/tiny"
) -> None:
    found = python(
        env,
        f"""
        import hashlib, json
        from pathlib import Path
        from huggingface_hub import snapshot_download
        p = Path(snapshot_download({repo!r}, local_files_only=True))
        print(json.dumps([str(p), {{q.relative_to(p).as_posix(): hashlib.sha256(q.read_bytes()).hexdigest()
                                    for q in sorted(p.rglob('*')) if q.is_file()}}]))
        """,
        HF_HUB_OFFLINE="1",
    )
    assert found == [str(snapshot), hashes(expected)]
    logits = tmp_path / "logits.pt"
    python(
        env,
        f"""
        import json, torch, transformers as t
        from tests.support.tiny_model import model_logits
        m = t.AutoModelForCausalLM.from_pretrained({repo!r})
        tok = t.AutoTokenizer.from_pretrained({repo!r})
        torch.save(model_logits(m), {str(logits)!r}); print(json.dumps(len(tok)))
        """,
        HF_HUB_OFFLINE="1",
    )
    import torch

    assert torch.equal(torch.load(logits), reference_logits())


def test_export_shares_the_blobs_and_huggingface_hub_downloads_nothing(
    hub: CountingHub, tmp_path: Path
) -> None:
    env = env_for(tmp_path, hub)
    hubget(env, "download", "org/llm", "-q")
    dest = tmp_path / "exported"
    report = hubget_json(env, "cache", "export", "org/llm", str(dest))
    assert report["bytes_copied"] == 0 and report["bytes_linked"] == sum(len(v) for v in LLM.values())
    snapshot = tmp_path / "hf" / "models--org--llm" / "snapshots" / report["commit"]
    for f in report["files"]:
        blob = (snapshot / f["path"]).resolve()
        assert f["method"] == "reflink" or (dest / f["path"]).stat().st_ino == blob.stat().st_ino
        meta = (
            (dest / ".cache" / "huggingface" / "download" / f"{f['path']}.metadata").read_text().splitlines()
        )
        assert meta[:2] == [report["commit"], blob.name]
    assert folder_files(dest) == LLM
    hub.clear()
    tree = python(
        env,
        f"""
        import hashlib, json
        from pathlib import Path
        from huggingface_hub import snapshot_download
        p = Path(snapshot_download('org/llm', local_dir={str(dest)!r}))
        print(json.dumps({{q.relative_to(p).as_posix(): hashlib.sha256(q.read_bytes()).hexdigest()
                           for q in sorted(p.rglob('*')) if q.is_file() and '.cache' not in q.parts}}))
        """,
    )
    assert hub.bodies() == []
    assert hub.requests, "huggingface_hub did ask the hub (listing, HEADs)"
    assert tree == hashes(LLM)
    blob = (snapshot / "model-00001-of-00002.safetensors").resolve()
    assert (dest / "model-00001-of-00002.safetensors").stat().st_ino == blob.stat().st_ino


def unique_inode_bytes(*folders: Path) -> int:
    seen: dict[tuple[int, int], int] = {}
    for folder in folders:
        for p in folder.rglob("*"):
            st = p.lstat()
            if p.is_file() and not p.is_symlink():
                seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


def test_dedup_across_the_hf_and_modelscope_caches_halves_the_bytes(hub: CountingHub, tmp_path: Path) -> None:
    env = env_for(tmp_path, hub)
    hubget(env, "download", "org/llm", "-q")
    hubget(env, "download", "org/llm", "--source", "modelscope", "-q")
    weights = (
        tmp_path / "hf" / "models--org--llm" / "blobs",
        tmp_path / "ms" / "models" / "org--llm" / "snapshots",
    )
    before = unique_inode_bytes(*weights)
    assert before == 2 * sum(len(v) for v in LLM.values())
    dry = hubget_json(env, "cache", "dedup", "--dry-run", "--min-size", "0")
    assert unique_inode_bytes(*weights) == before
    done = hubget_json(env, "cache", "dedup", "--min-size", "0")
    assert done["bytes_saved"] == dry["bytes_saved"] == before // 2
    assert done["files_linked"] == len(LLM) and not done["skipped"]
    if all(m == "hardlink" for g in done["groups"] for m in g["methods"]):
        assert unique_inode_bytes(*weights) == before // 2
    assert hubget_json(env, "cache", "dedup", "--min-size", "0")["files_linked"] == 0  # nothing left to share
    verified = hubget_json(env, "cache", "verify", "--offline")
    assert verified["ok"] == 2 * len(LLM) and verified["unverifiable"] == 0  # MS records follow the links
    loaded = python(env, HF_OFFLINE_LOAD, HF_HUB_OFFLINE="1")
    assert loaded["trees"] == {f"org/llm@{_commit_of(tmp_path / 'hf', 'org/llm')}": hashes(LLM)}  # type: ignore[index]
    ms_tree = python(
        env,
        """
        import hashlib, json
        from pathlib import Path
        from modelscope import snapshot_download
        p = Path(snapshot_download('org/llm', local_files_only=True))
        print(json.dumps({q.relative_to(p).as_posix(): hashlib.sha256(q.read_bytes()).hexdigest()
                          for q in sorted(p.rglob('*')) if q.is_file()}))
        """,
    )
    assert ms_tree == hashes(LLM)
