"""`hubget clone`: git clone with the LFS files fetched by hubget and stored once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hubget.gitclone import FetchOptions, FetchReport, LinkMode
from hubget.gitclone.pointers import split_patterns
from hubget.progress import human_bytes, make_progress

IncludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--include", "-I", help="Fetch only LFS files matching this pattern (repeatable, or comma-separated)."
    ),
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option("--exclude", "-X", help="Leave LFS files matching this pattern as pointers (repeatable)."),
]
WorkersOpt = Annotated[int, typer.Option(min=1, max=256, help="LFS objects downloaded at once.")]
ConnectionsOpt = Annotated[int, typer.Option(min=1, max=64, help="Connections per large object.")]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        help="Token sent as 'Authorization: Bearer' to the remote's origin (default: HF_TOKEN on HF)."
    ),
]
LinkOpt = Annotated[
    LinkMode,
    typer.Option(
        "--link-mode",
        help="How work-tree files share bytes with .git/lfs/objects: auto (reflink, else hard link, "
        "else copy), reflink, hardlink or copy. Hard-linked files are made read-only: replace "
        "them instead of editing in place, or use --link-mode copy.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON report on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]


def clone(
    url: Annotated[str, typer.Argument(help="Git remote, e.g. https://huggingface.co/org/model.")],
    directory: Annotated[
        Path | None, typer.Argument(help="Folder to clone into (default: from the URL).")
    ] = None,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit to check out.")] = None,
    include: IncludeOpt = None,
    exclude: ExcludeOpt = None,
    max_workers: WorkersOpt = 8,
    connections: ConnectionsOpt = 8,
    token: TokenOpt = None,
    link_mode: LinkOpt = LinkMode.AUTO,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Clone a git repo with LFS files (Hugging Face, ModelScope, GitHub, Gitea, hubget serve...).

    The git history comes from the real git; LFS files are fetched by hubget (many objects and
    connections at once, resumable, sha256-verified) and each is stored once: the work-tree file
    and .git/lfs/objects share their bytes. `git status`, `git lfs fsck`, `git pull` and
    `git lfs pull` keep working. Run the same command again to finish an interrupted clone.
    """
    from hubget.gitclone import clone as do_clone

    options = fetch_options(include, exclude, max_workers, connections, token, link_mode, quiet, json_output)
    report = do_clone(url, directory, revision=revision, options=options)
    print_report(report, json_output)


def print_report(report: FetchReport, json_output: bool) -> None:
    if json_output:
        data = {
            "path": str(report.repo),
            "lfs_files": report.lfs_files,
            "selected": report.selected,
            "objects_fetched": report.objects_fetched,
            "bytes_fetched": report.bytes_fetched,
            "bytes_resumed": report.bytes_resumed,
            "placed": report.placed,
            "already_present": report.already_present,
            "skipped_modified": report.skipped_modified,
        }
        print(json.dumps(data, indent=2))
        return
    placed = ", ".join(f"{n} by {how}" for how, n in sorted(report.placed.items())) or "none"
    fetched = f"{report.objects_fetched} objects ({human_bytes(report.bytes_fetched)})"
    typer.echo(
        f"{report.selected} of {report.lfs_files} LFS files selected; fetched {fetched}; "
        f"placed {placed}; {report.already_present} already present",
        err=True,
    )
    for path in report.skipped_modified:
        typer.echo(f"left alone (changed in the work tree): {path}", err=True)
    print(report.repo)


def fetch_options(
    include: list[str] | None,
    exclude: list[str] | None,
    max_workers: int,
    connections: int,
    token: str | None,
    link_mode: LinkMode,
    quiet: bool,
    json_output: bool,
) -> FetchOptions:
    return FetchOptions(
        include=split_patterns(include),
        exclude=split_patterns(exclude),
        token=token,
        max_workers=max_workers,
        connections=connections,
        link_mode=link_mode,
        progress=make_progress(quiet, json_output),
    )


def register(app: typer.Typer) -> None:
    app.command("clone")(clone)
