"""Running the real ``git``: one place for its environment, credentials and error mapping."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from hubget.errors import AuthError, HubgetError, NetworkError, NotFoundError, RepoNotFoundError

# Smudge is skipped so checkouts leave pointer files: hubget fetches the objects itself.
SKIP_SMUDGE_ENV = {"GIT_LFS_SKIP_SMUDGE": "1"}


class GitError(HubgetError):
    """A git command failed in a way hubget has no better name for."""


def require_git_lfs() -> None:
    if shutil.which("git") is None:
        raise NotFoundError("git is not installed (hubget clone runs the real git)")
    proc = subprocess.run(["git", "lfs", "version"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise NotFoundError("git-lfs is not installed; install it (e.g. apt install git-lfs) and retry")


def origin_prefix(url: str) -> str:
    """``scheme://host[:port]/``: the scope git's ``http.<url>.*`` settings are given for."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}/"


class Git:
    """``git`` run in ``cwd``, with LFS smudge skipped and optional per-origin extra headers."""

    def __init__(
        self, cwd: Path | None = None, *, extra_headers: dict[str, dict[str, str]] | None = None
    ) -> None:
        self.cwd = cwd
        # origin prefix -> headers; passed with -c so that no credential is written to disk and git
        # sends it to that origin only (http.<url>.extraHeader is matched per request URL).
        self.extra_headers = extra_headers or {}

    def _argv(self, args: Sequence[str]) -> list[str]:
        argv = ["git"]
        for prefix, headers in self.extra_headers.items():
            for name, value in headers.items():
                argv += ["-c", f"http.{prefix}.extraHeader={name}: {value}"]
        return argv + list(args)

    def run(
        self, *args: str, input: bytes | None = None, check: bool = True, quiet_stderr: bool = True
    ) -> bytes:
        env = {**os.environ, **SKIP_SMUDGE_ENV}
        proc = subprocess.run(
            self._argv(args),
            cwd=self.cwd,
            env=env,
            input=input,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if quiet_stderr else None,
        )
        if check and proc.returncode != 0:
            raise map_git_error(args, (proc.stderr or b"").decode("utf-8", "replace"))
        return proc.stdout

    def text(self, *args: str, check: bool = True) -> str:
        return self.run(*args, check=check).decode("utf-8", "surrogateescape").strip()

    def config(self, key: str, *, file: Path | None = None) -> str | None:
        args = ["config"] + (["-f", str(file)] if file else []) + ["--get", key]
        value = self.text(*args, check=False)
        return value or None

    def passthrough(self, *args: str) -> None:
        """Run with stderr on the terminal (git's own progress for the history download)."""
        env = {**os.environ, **SKIP_SMUDGE_ENV}
        proc = subprocess.run(self._argv(args), cwd=self.cwd, env=env, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise map_git_error(args, proc.stderr.decode("utf-8", "replace"))


def map_git_error(args: Sequence[str], stderr: str) -> HubgetError:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    tail = " / ".join(lines[-3:]) or "no message"
    text = f"git {args[0] if args else ''} failed: {tail}"
    low = stderr.lower()
    if "authentication failed" in low or "could not read username" in low or " 401" in low or " 403" in low:
        return AuthError(text)
    if "not found" in low and ("repository" in low or " 404" in low):
        return RepoNotFoundError(text)
    if "could not resolve host" in low or "failed to connect" in low or "connection refused" in low:
        return NetworkError(text)
    if "did not match any file" in low or "unknown revision" in low or "pathspec" in low:
        return NotFoundError(text)
    return GitError(text)
