"""`hubget pull`: fetch the LFS files of an existing clone (one made with GIT_LFS_SKIP_SMUDGE=1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hubget.cli.clone import (
    ConnectionsOpt,
    ExcludeOpt,
    IncludeOpt,
    JsonOpt,
    LinkOpt,
    QuietOpt,
    TokenOpt,
    WorkersOpt,
    fetch_options,
    print_report,
)
from hubget.gitclone import LinkMode


def pull(
    directory: Annotated[Path, typer.Argument(help="A folder inside the clone (default: here).")] = Path("."),
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    max_workers: WorkersOpt = 8,
    connections: ConnectionsOpt = 8,
    token: TokenOpt = None,
    link_mode: LinkOpt = LinkMode.AUTO,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fetch the LFS files of the checked-out commit into an existing clone, stored once.

    For clones made with GIT_LFS_SKIP_SMUDGE=1 (pointer files in the work tree), or after a
    `git pull` that brought new pointers. Without --include/--exclude, git-lfs's
    lfs.fetchinclude / lfs.fetchexclude settings apply. Git history is not fetched: run
    `git pull` (with GIT_LFS_SKIP_SMUDGE=1) first for new commits.
    """
    from hubget.gitclone import pull as do_pull

    options = fetch_options(include, exclude, max_workers, connections, token, link_mode, quiet, json_output)
    report = do_pull(directory, options=options)
    print_report(report, json_output)


def register(app: typer.Typer) -> None:
    app.command("pull")(pull)
