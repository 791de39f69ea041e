"""`hubget serve ROOT --upstream URL` for tests: the real CLI in a subprocess that a test can kill (-9) and
start again on the same ROOT, with its log (``-v``) readable; and official clients started at once.

    with MirrorServer(root, hub.hub_url) as mirror:
        procs = [start_client(code, endpoint=mirror.url, hf_home=tmp / f"c{i}") for i in range(6)]
        results = [finish_client(p) for p in procs]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from tests.protocol.clientrun import PRELUDE, client_env
from tests.support.hubserver import _wait_for_url


class MirrorServer:
    """``flag``: the option naming the upstream (``--upstream``, or ``--upstream-modelscope``)."""

    def __init__(self, root: Path, upstream: str, *args: str, flag: str = "--upstream") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.upstream = upstream
        self.flag = flag
        self.args = list(args)
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self._tmp = tempfile.TemporaryDirectory(prefix="hubget-mirror-")
        self.log_path = Path(self._tmp.name) / "stderr"
        self.starts = 0

    def start(self) -> MirrorServer:
        cmd = [sys.executable, "-m", "hubget", "serve", str(self.root), "--host", "127.0.0.1", "--port", "0"]
        cmd += [self.flag, self.upstream, "-v", *self.args]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "HUBGET_"))}
        env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        self.starts += 1
        with open(self.log_path, "ab") as stderr:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        self.url = _wait_for_url(self.proc, self.log_path)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never logged:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as a crash or the OOM killer."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def __enter__(self) -> MirrorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._tmp.cleanup()


def start_client(
    code: str, *, endpoint: str, hf_home: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """An official client in a fresh interpreter (see tests/protocol/clientrun.py), not waited for."""
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        env=client_env(endpoint, hf_home, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_client(proc: subprocess.Popen[str], timeout: float = 240) -> Any:
    return finish_client_logged(proc, timeout)[0]


def finish_client_logged(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[Any, str]:
    """What the client emitted, and its stderr (its warnings)."""
    out, err = proc.communicate(timeout=timeout)
    for line in reversed(out.splitlines()):
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@") :]), err
    raise AssertionError(f"client failed (exit {proc.returncode}):\n{out[-3000:]}\n{err[-6000:]}")
