"""`hubget download`: a repo (or some of its files) into the cache or a local folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hubget.api import FetchReport, check_repo_type, fetch_snapshot, hf_layout, offline_snapshot
from hubget.cli.progress import human_bytes, make_progress
from hubget.errors import UsageError
from hubget.models import RepoRef


def download(
    repo_id: Annotated[str, typer.Argument(help="Repository id, e.g. internlm/internlm2-chat-7b.")],
    files: Annotated[
        list[str] | None, typer.Argument(help="Only these files (repo paths). Default: the whole repo.")
    ] = None,
    repo_type: Annotated[str, typer.Option(help="model, dataset or space.")] = "model",
    revision: Annotated[
        str | None, typer.Option(help="Branch, tag or commit. Default: main (master on ModelScope).")
    ] = None,
    source: Annotated[str, typer.Option(help="Where to download from: hf or modelscope.")] = "hf",
    endpoint: Annotated[
        str | None, typer.Option(help="The chosen source's URL (default: HF_ENDPOINT / MODELSCOPE_ENDPOINT).")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder (default: HF_HUB_CACHE / MODELSCOPE_CACHE).")
    ] = None,
    local_dir: Annotated[
        Path | None, typer.Option(help="Put the files in this plain folder instead of the cache.")
    ] = None,
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Only files matching this glob (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Skip files matching this glob (repeatable).")
    ] = None,
    max_workers: Annotated[int, typer.Option(min=1, max=256, help="Files downloaded at once.")] = 8,
    connections: Annotated[int, typer.Option(min=1, max=64, help="Connections per large file.")] = 8,
    token: Annotated[
        str | None, typer.Option(help="Access token (default: HF_TOKEN or the saved token).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List files, sizes and what is present; download nothing.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON report on stdout.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress display (the path is still printed).")
    ] = False,
) -> None:
    """Download a repo from the Hugging Face Hub (or a mirror) or ModelScope, verified.

    Prints the local folder as the last line of stdout. Examples:

      hubget download internlm/internlm2-chat-7b --local-dir ./internlm2-chat-7b

      hubget download gpt2 config.json --revision main

      hubget download org/data --repo-type dataset --include "*.parquet"

      hubget download Shanghai_AI_Laboratory/internlm2-chat-7b --source modelscope
    """
    ref = RepoRef(repo_id, check_repo_type(repo_type), revision)  # type: ignore[arg-type]
    progress = make_progress(quiet, json_output)
    if source in ("hf", "huggingface"):
        from hubget import config
        from hubget.sources.huggingface import HfSource

        if config.hf_offline() and not dry_run:
            _print_result(offline_snapshot(ref, cache_dir, local_dir), None, json_output)
            return
        src = HfSource(endpoint, token)
        layout = hf_layout(ref, cache_dir, local_dir)
    elif source == "modelscope":
        from hubget.modelscope_api import modelscope_source_and_layout

        src, layout, ref = modelscope_source_and_layout(
            repo_id,
            repo_type=repo_type,
            revision=revision,
            endpoint=endpoint,
            token=token,
            cache_dir=cache_dir,
            local_dir=local_dir,
        )
    else:
        raise UsageError(f"--source must be hf or modelscope, not {source!r}")
    try:
        report = fetch_snapshot(
            src,
            ref,
            layout,
            allow_patterns=include,
            ignore_patterns=exclude,
            filenames=files or None,
            max_workers=max_workers,
            connections=connections,
            progress=progress,
            dry_run=dry_run,
        )
    finally:
        progress.end()
    if dry_run:
        _print_plan(report, json_output)
    else:
        _print_result(report.path, report, json_output)


def _report_json(report: FetchReport) -> dict[str, object]:
    return {
        "repo_id": report.snapshot.ref.repo_id,
        "repo_type": report.snapshot.ref.repo_type,
        "commit": report.snapshot.commit,
        "source": report.snapshot.source,
        "endpoint": report.snapshot.endpoint,
        "total_bytes": report.total_bytes,
        "missing_bytes": report.missing_bytes,
        "files": [
            {
                "path": f.path,
                "size": f.size,
                "present": f.present,
                "bytes_fetched": f.bytes_fetched,
                "sources": f.sources,
            }
            for f in report.files
        ],
    }


def _print_plan(report: FetchReport, json_output: bool) -> None:
    if json_output:
        print(json.dumps({"dry_run": True, **_report_json(report)}))
        return
    snap = report.snapshot
    print(f"{snap.ref.repo_id} @ {snap.commit} from {snap.endpoint or snap.source}")
    for f in report.files:
        state = "present" if f.present else "missing"
        print(f"  {human_bytes(f.size):>10}  {state:8}  {f.path}")
    print(
        f"{len(report.files)} file(s), {human_bytes(report.total_bytes)} in all, "
        f"{human_bytes(report.missing_bytes)} to download"
    )


def _print_result(path: Path, report: FetchReport | None, json_output: bool) -> None:
    if json_output:
        payload: dict[str, object] = {"path": str(path)}
        if report is not None:
            payload.update(_report_json(report))
        print(json.dumps(payload))
    else:
        print(path)


def register(app: typer.Typer) -> None:
    app.command("download")(download)
