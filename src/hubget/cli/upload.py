"""`hubget upload DIR s3://bucket/prefix`: publish a local folder or git repo (``hubget.api.upload``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hubget.api import check_repo_type
from hubget.progress import make_progress


def upload(
    directory: Annotated[Path, typer.Argument(help="A plain folder, or a git repo (from `hubget clone`).")],
    to: Annotated[str, typer.Argument(help="s3://bucket/prefix: each file becomes prefix/<path>.")],
    repo_id: Annotated[
        str | None,
        typer.Option(help="The repo id in the manifest (default: from .../{models,datasets}/OWNER/NAME)."),
    ] = None,
    repo_type: Annotated[
        str | None, typer.Option(help="model, dataset or space (default: from the prefix, else model).")
    ] = None,
    plain: Annotated[
        bool, typer.Option("--plain", help="Upload a git work tree's files as they are, not HEAD's commit.")
    ] = False,
    s3_endpoint: Annotated[
        str | None, typer.Option(help="The S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS).")
    ] = None,
    max_workers: Annotated[int, typer.Option(help="Files uploaded at once.")] = 8,
    connections: Annotated[int, typer.Option(help="Parts in flight, all files together.")] = 8,
    part_size: Annotated[int, typer.Option(help="Multipart part size in MiB (at least 5).")] = 8,
    dry_run: Annotated[bool, typer.Option(help="Only say which files the bucket lacks.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON report on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Publish a folder or a git repo into a bucket, for `hubget serve --store` and S3 readers.

    A git repo gives the files of HEAD's commit (LFS files from .git/lfs/objects) and its commit id;
    a plain folder its files, with a commit id derived from their content. Files are verified while
    they are uploaded; a rerun uploads only what changed. Example:

      hubget upload ./my-finetune s3://models/hub/models/lab/my-finetune
    """
    from hubget.api.upload import upload as do_upload
    from hubget.cli.stage import print_report

    kind = check_repo_type(repo_type) if repo_type is not None else None
    progress = make_progress(quiet, json_output)
    try:
        report = do_upload(
            directory,
            to,
            repo_id=repo_id,
            repo_type=kind,  # type: ignore[arg-type]
            endpoint=s3_endpoint,
            plain=plain,
            connections=connections,
            max_workers=max_workers,
            part_size=part_size * 1024 * 1024,
            progress=progress,
            dry_run=dry_run,
        )
    finally:
        progress.end()
    print_report(report, json_output=json_output)


def register(app: typer.Typer) -> None:
    app.command("upload")(upload)
