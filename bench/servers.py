"""The servers every peer downloads from, all on 127.0.0.1.

- `hubget serve` answers the Hugging Face and ModelScope APIs and sends file bodies (sendfile). It is the
  only origin of file bytes in every scenario, so no peer gets a faster server than another; its
  ``/proc/PID/io`` write counter (sendfile is counted there) tells how many body bytes each run fetched.
- nginx in front of it as a reverse proxy with ``limit_rate`` caps every connection, as CDNs do.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

READY_TIMEOUT = 60.0


class HubServer:
    """`hubget serve ROOT --port 0` in a subprocess."""

    def __init__(self, root: Path, log: Path) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hubget", "serve", str(root), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        self.url = self._wait_ready()

    def _wait_ready(self) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            if "listening on " in line:
                return line.split("listening on ", 1)[1].strip()
        self.stop()
        raise RuntimeError(f"hubget serve did not start; see {self.log_path}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def bytes_sent(self) -> int:
        """Bytes the server has written so far: file bodies go out with sendfile, which the kernel
        counts in ``wchar`` (JSON answers and headers go through send(), which it does not)."""
        with open(f"/proc/{self.proc.pid}/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
        raise RuntimeError("no wchar in /proc/PID/io")

    def warm(self, repo_id: str, repo_type: str) -> None:
        """List the repo through both APIs once, so the server has hashed every file (sha256 of all
        files for ModelScope, of LFS files for Hugging Face) before any timed run."""
        prefix = "datasets" if repo_type == "dataset" else "models"
        _get_json(f"{self.url}/api/{prefix}/{repo_id}/tree/main?recursive=true")
        if repo_type == "dataset":
            page = 1
            while _get_json(
                f"{self.url}/api/v1/datasets/{repo_id}/repo/tree?Revision=master&Recursive=True"
                f"&PageNumber={page}&PageSize=200"
            )["Data"]["Files"]:
                page += 1
        else:
            _get_json(f"{self.url}/api/v1/models/{repo_id}/repo/files?Revision=master&Recursive=True")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=600) as r:
        return json.loads(r.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


NGINX_CONF = """\
worker_processes 2;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    upstream hub {{
        server {upstream};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            proxy_pass http://hub;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            # Buffer in memory only (never a temp file), so the cap is on the client side alone.
            proxy_buffering on;
            proxy_max_temp_file_size 0;
            proxy_buffers 16 64k;
            proxy_read_timeout 600s;
            limit_rate {rate};
        }}
    }}
}}
"""


class CappedProxy:
    """nginx reverse proxy in front of ``upstream_url`` capping each connection at ``rate`` bytes/s."""

    def __init__(self, upstream_url: str, rate: int, prefix: Path) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "tmp").mkdir(exist_ok=True)
        self.port = free_port()
        upstream = upstream_url.split("://", 1)[1].rstrip("/")
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, upstream=upstream, port=self.port, rate=rate))
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [nginx, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._wait_ready(prefix)

    def _wait_ready(self, prefix: Path) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (
                    (prefix / "error.log").read_text(errors="replace")
                    if (prefix / "error.log").exists()
                    else ""
                )
                raise RuntimeError(f"nginx exited: {log[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("nginx did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            # SIGQUIT would wait for open connections; the benchmark is over, so stop now.
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
