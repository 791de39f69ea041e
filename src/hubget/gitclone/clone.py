"""``hubget clone`` and ``hubget pull``: git history by the real git, LFS objects by hubget."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

from hubget.errors import HubgetError, NotFoundError, UsageError
from hubget.gitclone.gitcmd import Git, origin_prefix, require_git_lfs
from hubget.gitclone.lfsfetch import FetchOptions, FetchReport, auth_headers_for, describe_remote, fetch_lfs
from hubget.gitclone.pointers import split_patterns


def default_directory(url: str) -> str:
    """The folder name git would pick: the last path segment without ``.git``."""
    path = urlsplit(url).path if "://" in url else url.rsplit(":", 1)[-1]
    name = path.rstrip("/").rsplit("/", 1)[-1]
    name = name[:-4] if name.endswith(".git") else name
    if not name or name in (".", ".."):
        raise UsageError(f"cannot derive a folder name from {url!r}; give one")
    return name


def clone(
    url: str,
    dest: Path | str | None = None,
    *,
    revision: str | None = None,
    options: FetchOptions | None = None,
) -> FetchReport:
    """Clone ``url`` into ``dest`` and fetch its LFS files (stored once: object and work tree share bytes).

    Running it again on the same ``dest`` after an interruption finishes the job: the git step is
    skipped when ``dest`` already is a clone of ``url``, and objects already fetched are kept.
    """
    require_git_lfs()
    options = options or FetchOptions()
    target = Path(dest if dest is not None else default_directory(url)).absolute()
    git_auth = _git_auth(url, options.token)
    if _is_clone_of(target, url):
        if revision:
            _checkout(Git(target, extra_headers=git_auth), revision)
    else:
        _fresh_clone(url, target, revision, git_auth)
    _prepare_repo(Git(target), options)
    return fetch_lfs(target, options)


def pull(directory: Path | str = ".", *, options: FetchOptions | None = None) -> FetchReport:
    """Fetch and place the LFS files of an existing clone (e.g. one made with GIT_LFS_SKIP_SMUDGE=1)."""
    require_git_lfs()
    options = options or FetchOptions()
    start = Path(directory).absolute()
    if not start.is_dir():
        raise NotFoundError(f"{start}: no such folder")
    top = Git(start).text("rev-parse", "--show-toplevel", check=False)
    if not top:
        raise NotFoundError(f"{start} is not inside a git work tree")
    git = Git(Path(top))
    if not options.include and not options.exclude:
        options.include = split_patterns([git.config("lfs.fetchinclude") or ""])
        options.exclude = split_patterns([git.config("lfs.fetchexclude") or ""])
    _ensure_lfs_filters(git)
    return fetch_lfs(Path(top), options)


def _git_auth(url: str, token: str | None) -> dict[str, dict[str, str]]:
    """Headers for git's own requests, scoped to the remote's origin; userinfo in the URL is left to git."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.username is not None:
        return {}
    headers = auth_headers_for(url, token)
    return {origin_prefix(url): headers} if headers else {}


def _is_clone_of(target: Path, url: str) -> bool:
    if not (target / ".git").exists():
        return False
    git = Git(target)
    if not git.text("rev-parse", "--verify", "-q", "HEAD", check=False):
        raise HubgetError(f"{target} holds an unfinished git clone; remove it and run again")
    remotes = {git.config(f"remote.{r}.url") for r in git.text("remote").split()}
    if url not in remotes:
        have = ", ".join(sorted(describe_remote(r) for r in remotes if r)) or "no remote"
        raise UsageError(f"{target} is a clone of {have}, not of {describe_remote(url)}")
    return True


def _fresh_clone(url: str, target: Path, revision: str | None, git_auth: dict[str, dict[str, str]]) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"destination {target} already exists and is not an empty folder")
    # Cloned beside the target and renamed at the end, so an interrupted git step leaves nothing
    # that looks like a finished clone; the next run starts that step over.
    staging = target.with_name(f".{target.name}.hubget-clone")
    if staging.exists():
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    git = Git(staging.parent, extra_headers=git_auth)
    args = ["clone", "--no-checkout", url, str(staging)] if revision else ["clone", url, str(staging)]
    try:
        git.passthrough(*args)
        if revision:
            _checkout(Git(staging, extra_headers=git_auth), revision)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        target.rmdir()
    staging.rename(target)


def _checkout(git: Git, revision: str) -> None:
    # A branch name known only on the remote becomes a local tracking branch (git's DWIM);
    # a tag or a commit gives a detached HEAD, as `git clone --branch` / `git checkout` do.
    git.run("checkout", "-q", revision)


def _prepare_repo(git: Git, options: FetchOptions) -> None:
    _ensure_lfs_filters(git)
    # Remembered like `git lfs clone --include/--exclude`, so a later `git lfs pull` (or
    # `hubget pull`) keeps to the same selection.
    if options.include:
        git.run("config", "lfs.fetchinclude", ",".join(options.include))
    if options.exclude:
        git.run("config", "lfs.fetchexclude", ",".join(options.exclude))


def _ensure_lfs_filters(git: Git) -> None:
    """Without git-lfs's filters in some config, git would see every placed file as modified."""
    if not git.config("filter.lfs.process") and not git.config("filter.lfs.clean"):
        git.run("lfs", "install", "--local")
