"""Bench helpers that run as processes of their own (``python -m bench.X``): started with this
checkout on ``PYTHONPATH``, talking JSON lines over stdin/stdout, stderr into a log file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def start_module(
    module: str, args: list[str], log: IO[bytes], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """``python -m module args`` in a session of its own, stdin and stdout piped, stderr to ``log``."""
    root = cwd or REPO_ROOT
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p),
    }
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=root,
        env=env,
        start_new_session=True,
    )


def read_json_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any] | None:
    """The next JSON line ``proc`` prints, or None if it exits or says nothing within ``timeout``."""
    out = proc.stdout
    assert out is not None
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline:
        line = out.readline()
        if line or proc.poll() is not None:
            break
    if not line:
        return None
    data = json.loads(line)
    assert isinstance(data, dict)
    return data


def compile_hubget() -> None:
    """Byte-compile hubget as pip does when it installs a wheel, so that no timed run compiles it.

    An editable install (this checkout) under ``PYTHONDONTWRITEBYTECODE=1`` would otherwise compile
    every hubget module in every run (about 0.1 s per process here), which the peers, installed
    from wheels, never pay.
    """
    import compileall

    import hubget

    compileall.compile_dir(str(Path(hubget.__file__).parent), quiet=1)
