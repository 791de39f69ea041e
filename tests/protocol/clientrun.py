"""Run an official client in a fresh interpreter against a local hub, and read back what it did.

The client sees only environment variables (HF_ENDPOINT, a private HF_HOME, telemetry off), as a user's
process would; it may be another interpreter (e.g. a venv with huggingface_hub 0.26).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

PRELUDE = textwrap.dedent(
    """
    import hashlib, json, os, sys
    from pathlib import Path

    def tree_hashes(folder):
        # sha256 of every file below folder (symlinks followed), except the local_dir metadata folder.
        folder = Path(folder)
        out = {}
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).as_posix()
            if rel.startswith(".cache/") or not p.is_file():
                continue
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        return out

    def emit(obj):
        print("@@RESULT@@" + json.dumps(obj))
    """
)


def client_env(endpoint: str, hf_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(extra or {})
    return env


def run_client(
    code: str,
    *,
    endpoint: str,
    hf_home: Path,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    timeout: float = 240,
) -> Any:
    """Run ``code`` (which calls ``emit(obj)`` once) and return ``obj``; fail with the client's stderr."""
    proc = subprocess.run(
        [python, "-c", PRELUDE + textwrap.dedent(code)],
        env=client_env(endpoint, hf_home, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@") :])
    raise AssertionError(
        f"client failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
