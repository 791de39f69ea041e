"""`hubget serve --workers N`: several processes share the port; all serve, all stop together."""

from __future__ import annotations

import os
import time

import psutil

import hubget
from tests.support.hubserver import hub_server
from tests.support.repos import write_folder_repo


def _serving(root: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "serve" in cmd and root in cmd:
            found.append(proc)
    return found


def test_workers_share_the_port_and_stop_together(tmp_path):
    data = os.urandom(3 * 1024 * 1024)
    write_folder_repo(
        tmp_path / "root" / "models" / "org" / "m", {"w.safetensors": data, "config.json": b"{}"}
    )
    root = str(tmp_path / "root")
    with hub_server(tmp_path / "root", extra_args=["--workers", "3"]) as url:
        assert len(_serving(root)) == 3
        for i in range(4):  # several connections, spread by the kernel over the workers
            path = hubget.snapshot_download("org/m", endpoint=url, cache_dir=tmp_path / f"c{i}", token=False)
            assert open(os.path.join(path, "w.safetensors"), "rb").read() == data
    deadline = time.monotonic() + 10
    while _serving(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _serving(root) == []
