"""The README's first command: `hubget demo` works offline end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_downloads_verifies_and_huggingface_hub_reads_it(tmp_path):
    env = {**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hubget",
            "demo",
            "--size-mb",
            "8",
            "--shards",
            "2",
            "--workdir",
            str(tmp_path),
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "finds it offline: yes" in result.stdout
    snapshot = Path(result.stdout.strip().splitlines()[-1])
    assert snapshot.is_dir() and snapshot.parent.name == "snapshots"
    source = tmp_path / "hub" / "models" / "demo-org" / "demo-chat-7b"
    for original in source.rglob("*"):
        if original.is_file():
            assert (snapshot / original.relative_to(source)).read_bytes() == original.read_bytes()
