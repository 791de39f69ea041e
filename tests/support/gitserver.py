"""An independent git + Git LFS server on 127.0.0.1 for interop tests.

Git smart HTTP is git's own ``git http-backend`` (CGI, run per request by a small WSGI wrapper);
LFS is ``giftless`` (PyPI) with its local storage. Repos point at giftless through ``lfs.url`` in
a committed ``.lfsconfig``, as many self-hosted setups do, and are filled with a real ``git push``
whose git-lfs pre-push hook uploads the objects to giftless.

The LFS side counts the bytes it sends per object and can be throttled, so tests can kill a
client mid-object and check what a second run fetches again.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


# ---------------------------------------------------------------- isolated git configuration


def git_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment where git reads only ``home``'s config (no system or user config leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "HF_TOKEN"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        GIT_CONFIG_GLOBAL=str(home / ".gitconfig"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_TERMINAL_PROMPT="0",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    env.update(extra)
    return env


def setup_git_home(home: Path) -> dict[str, str]:
    """Create an isolated HOME with identity, ``main`` as default branch and git-lfs's filters."""
    home.mkdir(parents=True, exist_ok=True)
    env = git_env(home)
    for key, value in (
        ("user.name", "Hubget Test"),
        ("user.email", "test@example.invalid"),
        ("init.defaultBranch", "main"),
        ("lfs.locksverify", "false"),  # giftless has no locking API
        ("advice.detachedHead", "false"),
    ):
        git(["config", "--global", key, value], env=env)
    git(["lfs", "install", "--skip-repo"], env=env)
    return env


def git(args: list[str], *, env: dict[str, str], cwd: Path | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


# ---------------------------------------------------------------- git http-backend as WSGI


def git_http_backend_app(project_root: Path, home: Path) -> WSGIApp:
    """Run ``git http-backend`` once per request, as a web server runs a CGI script."""

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        body = _read_body(environ)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
            "GIT_PROJECT_ROOT": str(project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
            "REQUEST_METHOD": environ["REQUEST_METHOD"],
            "PATH_INFO": environ.get("PATH_INFO", ""),
            "QUERY_STRING": environ.get("QUERY_STRING", ""),
            "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": environ.get("REMOTE_ADDR", "127.0.0.1"),
            "REMOTE_USER": "tester",  # http-backend allows receive-pack only to a known user
        }
        for name in ("HTTP_CONTENT_ENCODING", "HTTP_GIT_PROTOCOL"):
            if name in environ:
                env[name] = environ[name]
        proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True)
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status = "200 OK"
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name.strip(), value.strip()))
        if proc.returncode != 0 and not head:
            status, payload = "500 Internal Server Error", proc.stderr
        headers.append(("Content-Length", str(len(payload))))
        start_response(status, headers)
        return [payload]

    return app


def _read_body(environ: Environ) -> bytes:
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):  # chunked request: the server ends the stream
        return stream.read()
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return stream.read(length) if length > 0 else b""


# ---------------------------------------------------------------- LFS byte accounting and throttle


@dataclass
class LfsTraffic:
    """Bytes giftless sent per object, and an optional throttle applied while sending them."""

    bytes_sent: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    batch_calls: int = 0
    throttle_bytes_per_s: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.bytes_sent.clear()
            self.requests.clear()
            self.batch_calls = 0


def traffic_middleware(inner: WSGIApp, traffic: LfsTraffic) -> WSGIApp:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.endswith("/objects/batch"):
            with traffic.lock:
                traffic.batch_calls += 1
        if environ["REQUEST_METHOD"] != "GET" or "/objects/storage/" not in path:
            return inner(environ, start_response)
        oid = path.rsplit("/", 1)[-1]
        with traffic.lock:
            traffic.requests[oid] += 1
        return _counted(inner(environ, start_response), oid, traffic)

    return app


def _counted(body: Iterable[bytes], oid: str, traffic: LfsTraffic) -> Iterator[bytes]:
    try:
        for chunk in body:
            rate = traffic.throttle_bytes_per_s
            # Small pieces so a throttled transfer is spread evenly and a kill lands mid-object.
            for start in range(0, len(chunk), 4096):
                piece = chunk[start : start + 4096]
                if rate:
                    time.sleep(len(piece) / rate)
                with traffic.lock:
                    traffic.bytes_sent[oid] += len(piece)
                yield piece
    finally:
        close = getattr(body, "close", None)
        if close:
            close()


# ---------------------------------------------------------------- the server


@dataclass
class PushedRepo:
    name: str  # "org/name"
    url: str  # what `git clone` takes
    lfs_url: str
    commit: str
    workdir: Path  # the pusher's work tree (real content)
    lfs_files: dict[str, bytes]
    files: dict[str, bytes]


class GitLfsServer:
    """``git http-backend`` on one port, giftless on another; use as a context manager."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.project_root = root / "git"
        self.lfs_storage = root / "lfs-storage"
        self.home = root / "server-home"
        self.pusher_home = root / "pusher-home"
        self.traffic = LfsTraffic()
        self._servers: list[tuple[BaseWSGIServer, threading.Thread]] = []
        self.git_port = 0
        self.lfs_port = 0

    def __enter__(self) -> GitLfsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.project_root.mkdir(parents=True, exist_ok=True)
        self.lfs_storage.mkdir(parents=True, exist_ok=True)
        setup_git_home(self.home)
        self.pusher_env = setup_git_home(self.pusher_home)
        git_server = self._serve(git_http_backend_app(self.project_root, self.home))
        self.git_port = git_server.server_port
        lfs_server = self._serve(traffic_middleware(self._giftless_app(), self.traffic))
        self.lfs_port = lfs_server.server_port

    def stop(self) -> None:
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        self._servers.clear()

    def _serve(self, app: WSGIApp) -> BaseWSGIServer:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self._servers.append((server, thread))
        return server

    def _giftless_app(self) -> WSGIApp:
        from giftless.app import init_app

        config = {
            "LEGACY_ENDPOINTS": False,
            "AUTH_PROVIDERS": ["giftless.auth.allow_anon:read_write"],
            "TRANSFER_ADAPTERS": {
                "basic": {
                    "factory": "giftless.transfer.basic_streaming:factory",
                    "options": {
                        "storage_class": "giftless.storage.local_storage:LocalStorage",
                        "storage_options": {"path": str(self.lfs_storage)},
                        "action_lifetime": 900,
                    },
                }
            },
        }
        return init_app(additional_config=config).wsgi_app

    def git_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.git_port}/{name}.git"

    def lfs_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.lfs_port}/{name}.git/info/lfs"

    def create_repo(
        self,
        name: str,
        files: dict[str, bytes],
        *,
        lfs_patterns: tuple[str, ...] = ("*.bin", "*.safetensors"),
        lfs_config: bool = True,
    ) -> PushedRepo:
        """Push a new repo holding ``files``; paths matching ``lfs_patterns`` go through LFS."""
        bare = self.project_root / f"{name}.git"
        bare.parent.mkdir(parents=True, exist_ok=True)
        git(["init", "--bare", "-q", str(bare)], env=self.pusher_env)
        git(["config", "http.receivepack", "true"], env=self.pusher_env, cwd=bare)
        # giftless's local storage races creating this folder when git-lfs uploads in parallel.
        (self.lfs_storage / name).mkdir(parents=True, exist_ok=True)
        work = self.root / "push" / name
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        env = self.pusher_env
        git(["init", "-q"], env=env, cwd=work)
        git(["lfs", "install", "--local"], env=env, cwd=work)
        git(["lfs", "track", *lfs_patterns], env=env, cwd=work)
        if lfs_config:
            git(["config", "-f", ".lfsconfig", "lfs.url", self.lfs_url(name)], env=env, cwd=work)
        git(["remote", "add", "origin", self.git_url(name)], env=env, cwd=work)
        return self.commit_and_push(name, work, files)

    def commit_and_push(
        self, name: str, work: Path, files: dict[str, bytes], message: str = "add files"
    ) -> PushedRepo:
        env = self.pusher_env
        for rel, data in files.items():
            path = work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        git(["add", "-A"], env=env, cwd=work)
        git(["commit", "-q", "-m", message], env=env, cwd=work)
        git(["push", "-q", "origin", "HEAD:refs/heads/main"], env=env, cwd=work)
        commit = git(["rev-parse", "HEAD"], env=env, cwd=work).strip()
        lfs_names = set(git(["lfs", "ls-files", "-n"], env=env, cwd=work).splitlines())
        all_files = {
            p.relative_to(work).as_posix(): p.read_bytes()
            for p in sorted(work.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(work).parts
        }
        return PushedRepo(
            name=name,
            url=self.git_url(name),
            lfs_url=self.lfs_url(name),
            commit=commit,
            workdir=work,
            lfs_files={k: v for k, v in all_files.items() if k in lfs_names},
            files=all_files,
        )


# -- helpers shared by the clone tests ---------------------------------------------------------


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def hubget(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `hubget` CLI."""
    return subprocess.run(
        [sys.executable, "-m", "hubget", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180
    )


def tree(root: Path) -> dict[str, bytes]:
    """Every work-tree file (outside .git) by its path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def du(path: Path) -> int:
    out = subprocess.run(
        ["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[0])


def assert_git_clean(path: Path, env: dict[str, str]) -> None:
    assert git(["status", "--porcelain"], env=env, cwd=path) == ""
    fsck = subprocess.run(["git", "lfs", "fsck"], cwd=path, env=env, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert "fsck OK" in fsck.stdout
