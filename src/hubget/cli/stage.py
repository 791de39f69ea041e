"""`hubget download REPO --to s3://bucket/prefix`: the report of a staging run (``hubget.api.stage``),
also printed by `hubget upload`."""

from __future__ import annotations

import json

from hubget.api.stage import StageReport, source_for, stage_snapshot
from hubget.models import RepoRef
from hubget.objectstore.s3 import parse_s3_url
from hubget.progress import human_bytes, make_progress


def stage_command(
    ref: RepoRef,
    to: str,
    *,
    source: str,
    endpoint: str | None,
    token: str | None,
    s3_endpoint: str | None,
    files: list[str] | None,
    include: list[str] | None,
    exclude: list[str] | None,
    max_workers: int,
    connections: int,
    part_size: int,
    dry_run: bool,
    json_output: bool,
    quiet: bool,
) -> None:
    target = parse_s3_url(to)
    progress = make_progress(quiet, json_output)
    try:
        report = stage_snapshot(
            source_for(source, endpoint, token),
            ref,
            target,
            endpoint=s3_endpoint,
            allow_patterns=include,
            ignore_patterns=exclude,
            filenames=files or None,
            connections=connections,
            max_workers=max_workers,
            part_size=part_size * 1024 * 1024,
            progress=progress,
            dry_run=dry_run,
        )
    finally:
        progress.end()
    print_report(report, json_output=json_output)


def print_report(report: StageReport, *, json_output: bool) -> None:
    """The JSON report, the dry run's table, or the target's URL (the last line of stdout)."""
    dry_run = report.dry_run
    if json_output:
        print(json.dumps(report_json(report)))
    elif dry_run:
        snap = report.snapshot
        print(f"{snap.ref.repo_id} @ {snap.commit} from {snap.endpoint or snap.source} -> {report.target}")
        for f in report.files:
            print(f"  {human_bytes(f.size):>10}  {'present' if f.present else 'missing':8}  {f.path}")
        print(
            f"{len(report.files)} file(s), {human_bytes(report.total_bytes)} in all, "
            f"{human_bytes(report.missing_bytes)} to stage"
        )
    else:
        print(report.target)


def report_json(report: StageReport) -> dict[str, object]:
    snap = report.snapshot
    return {
        "target": str(report.target),
        "s3_endpoint": report.endpoint_url,
        "dry_run": report.dry_run,
        "repo_id": snap.ref.repo_id,
        "repo_type": snap.ref.repo_type,
        "commit": snap.commit,
        "source": snap.source,
        "endpoint": snap.endpoint,
        "total_bytes": report.total_bytes,
        "missing_bytes": report.missing_bytes,
        "parts_uploaded": report.parts_uploaded,
        "parts_reused": report.parts_reused,
        "seconds": round(report.seconds, 3),
        "files": [vars(f) for f in report.files],
    }
