"""The servers every peer downloads from, all on 127.0.0.1.

- `hubget serve` answers the Hugging Face and ModelScope APIs and sends file bodies (sendfile). It is the
  only origin of file bytes in every scenario, so no peer gets a faster server than another; its
  ``/proc/PID/io`` write counter (sendfile is counted there) tells how many body bytes each run fetched.
- nginx in front of it as a reverse proxy with ``limit_rate`` caps every connection, as CDNs do.
- ``NginxOrigin``: nginx as the file server (a server we did not write): it sends every ``/resolve/`` body
  itself from the repo's folder (sendfile, ranges, HEAD), with the hub's headers (``X-Repo-Commit``, the
  hub's ``ETag``, ``X-Linked-*`` for LFS files) taken from `hubget serve`'s listing, and passes the API
  (repo info, tree) to `hubget serve`. It counts the body bytes it sent in an access log.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.data import BenchRepo

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


NGINX_HEAD = """\
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
"""

NGINX_CONF = (
    NGINX_HEAD
    + """\
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
)


class _Nginx:
    """An nginx of our own: its config and logs under ``prefix``, stopped with its process group."""

    port: int
    url: str

    def _start(self, conf: Path, prefix: Path) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
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


class CappedProxy(_Nginx):
    """nginx reverse proxy in front of ``upstream_url`` capping each connection at ``rate`` bytes/s."""

    def __init__(self, upstream_url: str, rate: int, prefix: Path) -> None:
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "tmp").mkdir(exist_ok=True)
        self.port = free_port()
        upstream = upstream_url.split("://", 1)[1].rstrip("/")
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, upstream=upstream, port=self.port, rate=rate))
        self._start(conf, prefix)


NGINX_ORIGIN_CONF = (
    NGINX_HEAD
    + """\
    tcp_nodelay on;
    keepalive_timeout 120s;
    default_type application/octet-stream;
    log_format bytes '$body_bytes_sent';
    include {prefix}/etags.conf;
    upstream hub {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
{locations}
        location / {{
            proxy_pass http://hub;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""
)

NGINX_RESOLVE = """\
        location ~ ^/{prefix}{repo_id}/resolve/[^/]+/(?<hubpath>.+)$ {{
            alias {folder}/$hubpath;
            access_log {log} bytes;
            etag off;
            add_header ETag $hub_etag always;
            add_header X-Repo-Commit {commit} always;
            add_header X-Linked-Etag $hub_linked_etag always;
            add_header X-Linked-Size $hub_linked_size always;
            add_header Cache-Control no-cache always;
        }}
"""


class NginxOrigin(_Nginx):
    """nginx serving the bodies of ``repos`` from their folders and passing everything else to ``hub``
    (a running `hubget serve` over the same folders)."""

    def __init__(self, hub: HubServer, repos: list[BenchRepo], prefix: Path) -> None:
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "tmp").mkdir(exist_ok=True)
        self.port = free_port()
        self.log_path = prefix / "bodies.log"
        self.log_path.write_text("")
        self._log_offset = 0
        self._counted = 0
        maps: dict[str, list[str]] = {"hub_etag": [], "hub_linked_etag": [], "hub_linked_size": []}
        locations = []
        for repo in repos:
            kind = "datasets" if repo.repo_type == "dataset" else "models"
            info = _get_json(f"{hub.url}/api/{kind}/{repo.repo_id}/revision/main")
            url_prefix = "datasets/" if repo.repo_type == "dataset" else ""
            for sib in info["siblings"]:
                key = _nginx_str(f"/{url_prefix}{repo.repo_id}/{sib['rfilename']}")
                lfs = sib.get("lfs")
                etag = lfs["sha256"] if lfs else sib["blobId"]
                maps["hub_etag"].append(f"    {key} {_nginx_str(chr(34) + etag + chr(34))};")
                if lfs:
                    maps["hub_linked_etag"].append(f"    {key} {_nginx_str(chr(34) + etag + chr(34))};")
                    maps["hub_linked_size"].append(f"    {key} {lfs['size']};")
            locations.append(
                NGINX_RESOLVE.format(
                    prefix=url_prefix,
                    repo_id=repo.repo_id,
                    folder=repo.folder,
                    log=self.log_path,
                    commit=info["sha"],
                )
            )
        # A file's key: its URL less "/resolve/REV" ("/datasets/o/n/resolve/REV/p" -> "/datasets/o/n/p").
        key_var = "$hub_key"
        conf_maps = [
            "map_hash_max_size 65536;",
            "map_hash_bucket_size 256;",
            'map $uri $hub_key { "~^(?<k1>/.+)/resolve/[^/]+/(?<k2>.+)$" "$k1/$k2"; default ""; }',
        ]
        for var, lines in maps.items():
            conf_maps += [f"map {key_var} ${var} {{", '    default "";', *lines, "}"]
        (prefix / "etags.conf").write_text("\n".join(conf_maps) + "\n")
        upstream = hub.url.split("://", 1)[1].rstrip("/")
        conf = prefix / "nginx.conf"
        # Workers run as "nobody" when the master is root, and could not read a private folder.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
        conf.write_text(
            user
            + NGINX_ORIGIN_CONF.format(
                prefix=prefix, upstream=upstream, port=self.port, locations="".join(locations)
            )
        )
        self._start(conf, prefix)

    def bytes_sent(self) -> int:
        """Body bytes of the ``/resolve/`` answers sent so far (nginx logs each answer when it ends)."""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._log_offset += end
        self._counted += sum(int(n) for n in data[:end].split())
        return self._counted


def _nginx_str(text: str) -> str:
    """``text`` as a quoted nginx string."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
