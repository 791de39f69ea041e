"""Progress display: rich bars on a terminal, a plain line log otherwise, nothing when quiet."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from hubget.transfer.jobs import ProgressSink

if TYPE_CHECKING:  # rich is imported when a terminal shows bars, not by every command that starts
    from rich.console import Console
    from rich.progress import TaskID

MAX_FILE_BARS = 6


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class RichProgress(ProgressSink):
    """Total bytes, speed and ETA, plus a bar for each of the few most recent active files."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.lock = threading.Lock()
        self.total: TaskID | None = None
        self.files: dict[str, TaskID] = {}

    def begin(self, total_files: int, total_bytes: int | None) -> None:
        self.progress.start()
        self.total = self.progress.add_task(f"{total_files} file(s)", total=total_bytes)

    def file_started(self, label: str, size: int | None, already: int) -> None:
        with self.lock:
            if self.total is not None and already:
                self.progress.advance(self.total, already)
            if len(self.files) < MAX_FILE_BARS:
                name = label if len(label) <= 40 else "…" + label[-39:]
                self.files[label] = self.progress.add_task(name, total=size, completed=already)

    def advance(self, label: str, nbytes: int) -> None:
        if self.total is not None:
            self.progress.advance(self.total, nbytes)
        task = self.files.get(label)
        if task is not None:
            self.progress.advance(task, nbytes)

    def file_done(self, label: str) -> None:
        with self.lock:
            task = self.files.pop(label, None)
            if task is not None:
                self.progress.remove_task(task)

    def message(self, text: str) -> None:
        self.progress.console.print(text)

    def end(self) -> None:
        self.progress.stop()


class LineProgress(ProgressSink):
    """For logs and pipes: a line per finished file and a summary line every few seconds."""

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.interval = interval
        self.lock = threading.Lock()
        self.print_lock = threading.Lock()
        self.done_bytes = 0
        self.total_bytes: int | None = None
        self.sizes: dict[str, int | None] = {}
        self.started = time.monotonic()
        self.last = self.started

    def _print(self, text: str) -> None:
        # One write per line under a lock: worker threads must not interleave their lines.
        with self.print_lock:
            self.stream.write(f"hubget: {text}\n")
            self.stream.flush()

    def begin(self, total_files: int, total_bytes: int | None) -> None:
        self.total_bytes = total_bytes
        self._print(f"downloading {total_files} file(s), {human_bytes(total_bytes)}")

    def file_started(self, label: str, size: int | None, already: int) -> None:
        with self.lock:
            self.sizes[label] = size
            self.done_bytes += already
        if already:
            self._print(f"resuming {label} at {human_bytes(already)} of {human_bytes(size)}")

    def advance(self, label: str, nbytes: int) -> None:
        with self.lock:
            self.done_bytes += nbytes
            now = time.monotonic()
            if now - self.last < self.interval:
                return
            self.last = now
            speed = self.done_bytes / max(now - self.started, 1e-6)
        self._print(
            f"{human_bytes(self.done_bytes)} of {human_bytes(self.total_bytes)} at {human_bytes(speed)}/s"
        )

    def file_done(self, label: str) -> None:
        self._print(f"done {label} ({human_bytes(self.sizes.get(label))})")

    def message(self, text: str) -> None:
        self._print(text)


def make_progress(quiet: bool, json_output: bool = False) -> ProgressSink:
    from hubget import config

    if quiet or config.progress_disabled():
        return ProgressSink()
    if sys.stderr.isatty() and not json_output:
        return RichProgress()
    return LineProgress()
