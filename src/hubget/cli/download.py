"""`hubget download`: a repo (or some of its files) into the cache or a local folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hubget.api import FetchReport, check_repo_type, fetch_snapshot, hf_layout, offline_snapshot
from hubget.errors import UsageError
from hubget.models import RepoRef
from hubget.progress import human_bytes, make_progress
from hubget.transfer.jobs import ProgressSink


def download(
    repo_id: Annotated[str, typer.Argument(help="Repository id, e.g. internlm/internlm2-chat-7b.")],
    files: Annotated[
        list[str] | None, typer.Argument(help="Only these files (repo paths). Default: the whole repo.")
    ] = None,
    repo_type: Annotated[str, typer.Option(help="model, dataset or space.")] = "model",
    revision: Annotated[
        str | None, typer.Option(help="Branch, tag or commit. Default: main (master on ModelScope).")
    ] = None,
    source: Annotated[
        str,
        typer.Option(
            help="Where to download from: hf, modelscope, or auto (the HF endpoint, HUBGET_HF_MIRRORS and "
            "ModelScope at once; each file from every source serving the same bytes)."
        ),
    ] = "hf",
    modelscope_id: Annotated[
        str | None, typer.Option(help="With --source auto: the repo's id on ModelScope, when it differs.")
    ] = None,
    mapping_file: Annotated[
        Path | None,
        typer.Option(
            help='With --source auto: JSON {"hf_org/name": "ms_owner/name"} (default: HUBGET_ID_MAP).'
        ),
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="The chosen source's URL (default: HF_ENDPOINT / MODELSCOPE_ENDPOINT).")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder (default: HF_HUB_CACHE / MODELSCOPE_CACHE).")
    ] = None,
    local_dir: Annotated[
        Path | None, typer.Option(help="Put the files in this plain folder instead of the cache.")
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            help="Stage the files into a bucket instead: s3://bucket/prefix (each file becomes "
            "prefix/<path>, plus prefix/.hubget/manifest.json). AWS configuration from the environment."
        ),
    ] = None,
    s3_endpoint: Annotated[
        str | None, typer.Option(help="With --to: the S3 endpoint (default: AWS_ENDPOINT_URL, else AWS).")
    ] = None,
    part_size: Annotated[
        int,
        typer.Option(min=5, max=5120, help="With --to: multipart part size in MiB (grows for huge files)."),
    ] = 8,
    include: Annotated[
        list[str] | None, typer.Option("--include", help="Only files matching this glob (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Skip files matching this glob (repeatable).")
    ] = None,
    max_workers: Annotated[int, typer.Option(min=1, max=256, help="Files downloaded at once.")] = 8,
    connections: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Connections per large file to start with "
            "(more while each one is slow and the run has some to spare).",
        ),
    ] = 8,
    max_connections: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=512,
            envvar="HUBGET_MAX_CONNECTIONS",
            help="Connections of the whole run, all files together (default: 64, or workers x "
            "connections when fewer). Files get more ranges while connections are slow and some are free.",
        ),
    ] = None,
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
    if to is not None or s3_endpoint is not None:
        from hubget.cli.stage import stage_command

        if to is None:
            raise UsageError("--s3-endpoint applies to --to s3://...")
        if local_dir is not None or cache_dir is not None or source == "auto":
            raise UsageError("--to takes no --local-dir, --cache-dir or --source auto")
        stage_command(
            ref,
            to,
            source=source,
            endpoint=endpoint,
            token=token,
            s3_endpoint=s3_endpoint,
            files=files,
            include=include,
            exclude=exclude,
            max_workers=max_workers,
            connections=max_connections or connections,
            part_size=part_size,
            dry_run=dry_run,
            json_output=json_output,
            quiet=quiet,
        )
        return
    progress = make_progress(quiet, json_output)
    engine_options = {"max_connections": max_connections} if max_connections else None
    if source == "auto":
        _download_auto(
            ref,
            files=files,
            endpoint=endpoint,
            token=token,
            cache_dir=cache_dir,
            local_dir=local_dir,
            include=include,
            exclude=exclude,
            max_workers=max_workers,
            connections=connections,
            dry_run=dry_run,
            json_output=json_output,
            progress=progress,
            quiet=quiet,
            modelscope_id=modelscope_id,
            mapping_file=mapping_file,
            engine_options=engine_options,
        )
        return
    if modelscope_id or mapping_file:
        raise UsageError("--modelscope-id and --mapping-file apply to --source auto")
    if source in ("hf", "huggingface"):
        from hubget import config
        from hubget.sources.huggingface import HfSource

        if config.hf_offline() and not dry_run:
            _print_result(offline_snapshot(ref, cache_dir, local_dir), None, json_output)
            return
        src = HfSource(endpoint, token)
        layout = hf_layout(ref, cache_dir, local_dir)
    elif source == "modelscope":
        from hubget.api.modelscope import modelscope_source_and_layout

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
        raise UsageError(f"--source must be hf, modelscope or auto, not {source!r}")
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
            engine_options=engine_options,
        )
    finally:
        progress.end()
    if dry_run:
        _print_plan(report, json_output)
    else:
        _print_result(report.path, report, json_output)


def _download_auto(
    ref: RepoRef, *, dry_run: bool, json_output: bool, progress: ProgressSink, **kw: Any
) -> None:
    from hubget import config
    from hubget.api.auto import fetch_auto

    if config.hf_offline() and not dry_run:
        _print_result(offline_snapshot(ref, kw["cache_dir"], kw["local_dir"]), None, json_output)
        return
    try:
        plan, report = fetch_auto(
            ref,
            endpoint=kw["endpoint"],
            token=kw["token"],
            cache_dir=kw["cache_dir"],
            local_dir=kw["local_dir"],
            allow_patterns=kw["include"],
            ignore_patterns=kw["exclude"],
            filenames=kw["files"] or None,
            max_workers=kw["max_workers"],
            connections=kw["connections"],
            progress=progress,
            dry_run=dry_run,
            modelscope_id=kw["modelscope_id"],
            mapping_file=kw["mapping_file"],
            engine_options=kw["engine_options"],
        )
    finally:
        progress.end()
    if plan.substitution is not None and kw["quiet"]:
        print(f"hubget: {plan.substitution.sentence()}", file=sys.stderr)  # --quiet never hides this
    extra: dict[str, object] = {
        "sources": [p.as_json() for p in plan.probes],
        "substitute": None if plan.substitution is None else vars(plan.substitution),
        "notes": plan.notes,
    }
    if dry_run:
        _print_plan(report, json_output, extra)
    else:
        _print_result(report.path, report, json_output, extra)


def _served_by(report: FetchReport) -> dict[str, list[str]]:
    """Per file, the origins that serve it (the first one is the listing's own)."""
    from hubget.transfer.http import origin_url as origin

    return {f.path: [origin(u) for u in [f.url, *f.extra_urls]] for f in report.snapshot.files}


def _report_json(report: FetchReport) -> dict[str, object]:
    served = _served_by(report)
    listed = report.snapshot.by_path()
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
                "served_by": served.get(f.path, []),
                "xet_hash": listed[f.path].xet_hash if f.path in listed else None,
            }
            for f in report.files
        ],
        "xet": vars(report.xet) if report.xet is not None else None,
    }


def _print_plan(report: FetchReport, json_output: bool, extra: dict[str, object] | None = None) -> None:
    if json_output:
        print(json.dumps({"dry_run": True, **_report_json(report), **(extra or {})}))
        return
    snap = report.snapshot
    print(f"{snap.ref.repo_id} @ {snap.commit} from {snap.endpoint or snap.source}")
    if extra and extra.get("substitute"):
        print(f"  substitute: {extra['notes'][-1]}")  # type: ignore[index]
    served = _served_by(report)
    several = any(len(v) > 1 for v in served.values())
    listed = snap.by_path()
    xet = {f.path for f in report.files if f.path in listed and listed[f.path].xet_hash}
    for f in report.files:
        state = "present" if f.present else "missing"
        where = f"  <- {', '.join(served.get(f.path, []))}" if several or extra else ""
        mark = "xet" if f.path in xet else ""
        print(f"  {human_bytes(f.size):>10}  {state:8}  {mark:3}  {f.path}{where}")
    print(
        f"{len(report.files)} file(s), {human_bytes(report.total_bytes)} in all, "
        f"{human_bytes(report.missing_bytes)} to download"
    )
    if xet:
        from hubget import config

        how = (
            "over the hub's HTTP bridge (Xet switched off)"
            if config.xet_disabled()
            else "from the Xet CAS (the HTTP bridge when Xet is unavailable)"
        )
        print(f"{len(xet)} file(s) Xet-backed (xet): fetched {how}, verified by sha256 like any other")


def _print_result(
    path: Path, report: FetchReport | None, json_output: bool, extra: dict[str, object] | None = None
) -> None:
    if json_output:
        payload: dict[str, object] = {"path": str(path)}
        if report is not None:
            payload.update(_report_json(report))
        payload.update(extra or {})
        print(json.dumps(payload))
    else:
        print(path)


def register(app: typer.Typer) -> None:
    app.command("download")(download)
