"""What `hubget cache` prints for people: rich tables on a terminal, plain columns when piped."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from hubget.progress import human_bytes


def console() -> Any:
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(highlight=False, soft_wrap=not tty, width=None if tty else 200)


def ago(ts: float) -> str:
    delta = max(0.0, time.time() - ts)
    for unit, seconds in (
        ("year", 365 * 86400),
        ("month", 30 * 86400),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
    ):
        if delta >= seconds:
            n = int(delta // seconds)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def print_json(payload: dict[str, Any]) -> None:
    print(json.dumps(payload))


class HashProgress:
    """Bytes hashed so far on stderr (a terminal only)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        self.progress = Progress(
            "verifying", BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True
        )
        self.task = self.progress.add_task("verify", total=None)
        self.progress.start()

    def __call__(self, done: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        self.progress.stop()


def print_verify(report: Any) -> None:
    from rich.table import Table

    out = console()
    bad = [c for c in report.checks if c.status != "ok"]
    if bad:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for name in ("STATUS", "CACHE", "REPO", "PATH", "WHY"):
            table.add_column(name, no_wrap=name != "WHY")
        for c in sorted(bad, key=lambda c: (c.status, c.repo_id, c.paths[0])):
            status = f"{c.status}, repaired" if c.repaired else c.status
            why = c.note or c.basis
            if c.status == "corrupt" and c.actual:
                why = f"{c.algo} {c.actual[:12]}..., expected {str(c.expected)[:12]}... ({c.basis})"
                why += f"; {c.note}" if c.note else ""
            table.add_row(status, c.cache, c.repo_id, ", ".join(c.paths[:3]), why)
        out.print(table)
    for note in report.notes:
        out.print(f"note: {note}")
    counts = {s: len(report.with_status(s)) for s in ("ok", "corrupt", "missing", "unverifiable")}
    repaired = sum(c.repaired for c in report.checks)
    states = ", ".join(f"{n} {s}" for s, n in counts.items())
    speed = f"{human_bytes(report.bytes_hashed)} hashed in {report.seconds:.2f} s"
    speed += f" ({report.mb_per_s:.0f} MB/s, {report.workers} threads)"
    fixed = f"; {repaired} repaired, {human_bytes(report.bytes_refetched)} fetched again" if repaired else ""
    out.print(f"{len(report.checks)} file(s): {states}; {speed}{fixed}")


def print_clean(report: Any, json_output: bool, what: str) -> None:
    if json_output:
        print_json(report.as_json())
        return
    out = console()
    verb = "would remove" if report.dry_run else "removed"
    kinds: dict[str, int] = {}
    for r in report.removed:
        kinds[r.kind] = kinds.get(r.kind, 0) + 1
    for r in report.removed:
        if r.kind in ("revision", "repo", "partial", "blob") and (r.kind != "blob" or r.bytes_freed):
            out.print(f"  {verb} {r.kind:9} {human_bytes(r.bytes_freed):>10}  {r.path}")
    for s in report.skipped:
        out.print(f"  kept      {s.path}: {s.reason}")
    summary = ", ".join(f"{n} {k}(s)" for k, n in sorted(kinds.items())) or "nothing"
    freed = "would free" if report.dry_run else "freed"
    out.print(
        f"{what}: {verb} {summary}; {freed} {human_bytes(report.bytes_freed)} ({report.bytes_freed} bytes)"
    )
