"""Running one download process and measuring it: wall time, CPU time (user + system, from wait4, so
threads and reaped children count), peak RSS (the larger of wait4's ru_maxrss and the polled RSS of the
whole process tree) and the body bytes the server sent meanwhile."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

POLL = 0.02


@dataclass
class Measured:
    returncode: int
    wall: float
    cpu: float
    peak_rss: int  # bytes
    bytes_fetched: int
    stdout: str
    stderr: str
    killed: bool = False


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(
    cmd: list[str],
    env: dict[str, str],
    cwd: Path,
    logs: Path,
    bytes_counter: Callable[[], int],
    *,
    kill_when: Callable[[int], bool] | None = None,
    timeout: float = 3600,
) -> Measured:
    """Run ``cmd`` to its end (or SIGKILL its process group once ``kill_when(bytes so far)`` is true)."""
    logs.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs / "stdout.txt", logs / "stderr.txt"
    before = bytes_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        popen = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, start_new_session=True)
        ps = psutil.Process(popen.pid)
        peak = 0
        killed = False
        status: int | None = None
        usage = None
        while True:
            pid, status, usage = os.wait4(popen.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _tree_rss(ps))
            if kill_when is not None and not killed and kill_when(bytes_counter() - before):
                os.killpg(popen.pid, signal.SIGKILL)
                killed = True
            if time.monotonic() - started > timeout:
                os.killpg(popen.pid, signal.SIGKILL)
                killed = True
            time.sleep(POLL)
        wall = time.monotonic() - started
        popen.returncode = os.waitstatus_to_exitcode(status)  # reaped above; keep Popen consistent
    fetched = bytes_counter() - before
    assert usage is not None
    return Measured(
        returncode=popen.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        peak_rss=max(peak, usage.ru_maxrss * 1024),
        bytes_fetched=fetched,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        killed=killed,
    )
