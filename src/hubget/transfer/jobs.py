"""What the Engine is asked to do and what it reports. The Engine knows nothing of hubs or caches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class FileJob:
    """Download ``url`` into ``dest`` (a final path), verified.

    The engine writes to a temp file beside ``dest`` (``dest`` + ``.hubget-partial``, plus a small
    ``.hubget-partial.json`` resume state), checks size and hash, then atomically renames it
    onto ``dest``. ``dest`` never holds unverified bytes.
    ``hash_algo`` is "sha256" or "git-sha1" (git blob id); ``expected_hash`` may be None only when
    the hub gave no hash at all (then only the size is checked).
    ``refresh`` is called with the job when a URL stops working (expired signature, 403 on a
    signed CDN URL): it returns a fresh (url, headers) or None.
    """

    url: str
    dest: Path
    size: int | None
    expected_hash: str | None
    hash_algo: str = "sha256"
    headers: dict[str, str] = field(default_factory=dict)
    label: str = ""  # what progress shows: the repo path
    mirrors: list[str] = field(default_factory=list)  # more URLs serving the same bytes
    refresh: Callable[[FileJob], tuple[str, dict[str, str]] | None] | None = None
    # Where the temp file and its resume state live (same filesystem as dest). Default: beside
    # dest as dest + ".hubget-partial"; local_dir mode keeps them under .cache/huggingface/.
    partial: Path | None = None
    # The server's rate-limit bucket that requests to ``url`` itself count against (the Hugging Face
    # Hub's "resolvers"); a location it redirects to counts against none.
    rate_bucket: str | None = None
    # Called by the engine's finisher thread once the verified bytes are at ``dest`` (e.g. a cache's
    # links to them, made while other files still download); an exception fails the file.
    on_placed: Callable[[], None] | None = None

    @property
    def partial_path(self) -> Path:
        return self.partial or self.dest.with_name(self.dest.name + ".hubget-partial")


@dataclass
class FileResult:
    job: FileJob
    path: Path
    bytes_fetched: int  # bytes received over the network in this run
    resumed_from: int  # bytes that were already on disk from an earlier run
    sources: dict[str, int] = field(default_factory=dict)  # origin -> bytes fetched from it


class ProgressSink:
    """Receives progress events; the default does nothing. Called from worker threads."""

    def begin(self, total_files: int, total_bytes: int | None) -> None:
        pass

    def file_started(self, label: str, size: int | None, already: int) -> None:
        pass

    def advance(self, label: str, nbytes: int) -> None:
        pass

    def file_done(self, label: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def end(self) -> None:
        pass
