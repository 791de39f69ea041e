"""`hubget cache` as a command: registered through COMMAND_MODULES, help with examples, a table for
people, JSON with --json, and errors as one line with the documented exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.hfcache import commit_id, write_hf_revision, write_ms_revision


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MODELSCOPE"))}
    env.update(HF_HUB_CACHE=str(tmp_path / "hf"), MODELSCOPE_CACHE=str(tmp_path / "ms"), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "hubget", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_help_lists_the_subcommands_with_examples(tmp_path: Path) -> None:
    top = run(tmp_path, "--help")
    assert top.returncode == 0 and "cache" in top.stdout
    group = run(tmp_path, "cache", "--help")
    for name in ("ls", "verify", "rm", "prune", "export", "import", "dedup"):
        assert name in group.stdout
    for name in ("ls", "verify", "rm", "prune", "export", "import", "dedup"):
        sub = run(tmp_path, "cache", name, "--help")
        assert sub.returncode == 0 and "hubget cache " + name in sub.stdout, name


def test_table_json_and_one_line_errors(tmp_path: Path) -> None:
    write_hf_revision(
        tmp_path / "hf", "org/a", commit_id(1), {"model.safetensors": b"w" * 5000}, refs=("main",)
    )
    write_ms_revision(tmp_path / "ms", "owner/b", {"model.bin": b"m" * 3000})
    table = run(tmp_path, "cache", "ls")
    assert table.returncode == 0
    rows = table.stdout.splitlines()
    assert rows[0].split()[:3] == ["CACHE", "REPO", "SIZE"]
    assert any(r.split()[:2] == ["hf", "model/org/a"] for r in rows)
    assert any(r.split()[:2] == ["ms", "model/owner/b"] for r in rows)
    listed = json.loads(run(tmp_path, "cache", "ls", "--json", "--filter", "cache=ms").stdout)
    assert [r["repo_id"] for r in listed["repos"]] == ["owner/b"]
    bad = run(tmp_path, "cache", "ls", "--filter", "colour=red")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "hubget: error: unknown filter key 'colour' (size, accessed, modified, refs, type, cache, name)"
    ]
    missing = run(tmp_path, "cache", "rm", "org/none")
    assert missing.returncode == 3 and len(missing.stderr.strip().splitlines()) == 1
    freed = run(tmp_path, "cache", "rm", "org/a", "--dry-run")
    assert freed.returncode == 0 and "would free 5.0 kB (5040 bytes)" in freed.stdout
