"""Fetching for transformers: list a repo once, download the files a class reads, return the folder.

Files go where the source's official client keeps them (the Hugging Face cache, or the ModelScope
cache), so later runs of transformers, huggingface_hub or modelscope find them.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hubget import config
from hubget.errors import HubgetError, NetworkError, NotFoundError, UsageError
from hubget.integrations.transformers_files import (
    choose_weights,
    folder_prefix,
    metadata_files,
    shards_from_index,
    unknown_class_ignores,
)
from hubget.models import RepoRef, Snapshot
from hubget.transfer.jobs import ProgressSink

T = TypeVar("T")
SOURCES = ("hf", "modelscope", "auto")
_SOURCE_ALIASES = {
    "hf": "hf",
    "huggingface": "hf",
    "modelscope": "modelscope",
    "ms": "modelscope",
    "auto": "auto",
}
# What a hub id looks like ("name" or "org/name"); anything else is left to transformers.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9_.\-]+)?$")
LISTING_TTL_SECONDS = 60.0


def check_source(source: str) -> str:
    try:
        return _SOURCE_ALIASES[source]
    except (KeyError, TypeError):
        raise UsageError(f"source must be one of {', '.join(SOURCES)}, not {source!r}") from None


def is_hub_id(name: Any) -> bool:
    """True when transformers would look ``name`` up on the hub rather than on disk."""
    if not isinstance(name, str) or os.path.exists(name):
        return False
    return bool(_HUB_ID.match(name)) and ".." not in name and "--" not in name and len(name) <= 200


# -- what a class reads ------------------------------------------------------------------------


def class_kind(cls: Any) -> str:
    """ "model" (reads weights), "files" (config, tokenizer, processor: small files only) or "unknown"."""
    try:
        from transformers import PreTrainedModel
        from transformers.models.auto.auto_factory import _BaseAutoModelClass
    except ImportError:  # transformers missing or reshaped: fall back to the whole repo
        return "unknown"
    if isinstance(cls, type):
        if issubclass(cls, (PreTrainedModel, _BaseAutoModelClass)):
            return "model"
        if any(issubclass(cls, base) for base in file_only_bases()):
            return "files"
    return "unknown"


def file_only_bases() -> list[type]:
    """Base and Auto classes of everything that loads without weights (imported from where they are
    defined: the top-level names can be placeholders when an optional dependency is missing)."""
    import importlib

    where = {
        "transformers.configuration_utils": ("PreTrainedConfig", "PretrainedConfig"),
        "transformers.tokenization_utils_base": ("PreTrainedTokenizerBase",),
        "transformers.processing_utils": ("ProcessorMixin",),
        "transformers.image_processing_base": ("ImageProcessingMixin",),
        "transformers.feature_extraction_utils": ("FeatureExtractionMixin",),
        "transformers.video_processing_utils": ("BaseVideoProcessor",),
        "transformers.generation.configuration_utils": ("GenerationConfig",),
        "transformers.models.auto.configuration_auto": ("AutoConfig",),
        "transformers.models.auto.tokenization_auto": ("AutoTokenizer",),
        "transformers.models.auto.processing_auto": ("AutoProcessor",),
        "transformers.models.auto.image_processing_auto": ("AutoImageProcessor",),
        "transformers.models.auto.feature_extraction_auto": ("AutoFeatureExtractor",),
        "transformers.models.auto.video_processing_auto": ("AutoVideoProcessor",),
    }
    out: list[type] = []
    for module_name, names in where.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        out += [c for c in (getattr(module, n, None) for n in names) if isinstance(c, type)]
    return out


# -- one repo on one source ----------------------------------------------------------------------


@dataclass
class Repo:
    """A repo on one source, with the cache layout its official client reads; listed once."""

    source: Any
    layout: Any
    ref: RepoRef
    max_workers: int
    progress: ProgressSink | None
    _snapshot: Snapshot | None = None

    def snapshot(self) -> Snapshot:
        if self._snapshot is None:
            self._snapshot = self.source.resolve(self.ref)
        return self._snapshot

    def paths(self) -> list[str]:
        return [f.path for f in self.snapshot().files]

    def fetch(self, paths: list[str]) -> Path:
        from hubget.api import fetch_snapshot
        from hubget.progress import make_progress

        report = fetch_snapshot(
            self.source,
            self.ref,
            self.layout,
            filenames=sorted(set(paths)),
            snapshot=self.snapshot(),
            max_workers=self.max_workers,
            # A display lives for one run: each fetch gets a fresh default one.
            progress=self.progress if self.progress is not None else make_progress(quiet=False),
        )
        return Path(report.path)


@dataclass(frozen=True)
class Where:
    """Everything that names one repo listing: the same ``Where`` may reuse a cached listing."""

    source: str  # "hf" or "modelscope"
    repo_id: str
    revision: str | None
    endpoint: str | None
    cache_dir: str | None
    token: str | bool | None


def open_repo(where: Where, *, max_workers: int, progress: ProgressSink | None) -> Repo:
    ref = RepoRef(where.repo_id, "model", where.revision)
    if where.source == "modelscope":
        from hubget.layouts.ms_cache import MsCacheLayout
        from hubget.sources.modelscope import ModelScopeSource, check_repo_id

        check_repo_id(where.repo_id)
        token = where.token if isinstance(where.token, str) else ("" if where.token is False else None)
        ms = ModelScopeSource(where.endpoint, token)
        return Repo(ms, MsCacheLayout(ref, where.cache_dir), ref, max_workers, progress)
    from hubget.layouts.hf_cache import HfCacheLayout
    from hubget.sources.huggingface import HfSource

    hf = HfSource(where.endpoint, where.token)
    return Repo(hf, HfCacheLayout(ref, where.cache_dir), ref, max_workers, progress)


class RepoCache:
    """Listings kept for a short while, so the many lookups one ``pipeline()`` or model load makes
    list a repo once instead of once per file."""

    def __init__(self, ttl: float = LISTING_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._items: dict[Where, tuple[float, Repo]] = {}

    def get(self, where: Where, make: Callable[[], Repo]) -> Repo:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(where)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        repo = make()
        repo.snapshot()  # list outside the lock; a racing duplicate listing is harmless
        with self._lock:
            self._items[where] = (now, repo)
        return repo


def offline_folder(where: Where) -> Path:
    ref = RepoRef(where.repo_id, "model", where.revision)
    if where.source == "modelscope":
        from hubget.layouts.ms_cache import cached_folder

        return cached_folder(ref, where.cache_dir)
    from hubget.api import offline_snapshot

    return offline_snapshot(ref, where.cache_dir, None)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def fetch_for_class(repo: Repo, kind: str, options: dict[str, Any]) -> Path:
    """Download into the cache what a class of ``kind`` reads; return the snapshot folder.

    Small files first (config.json may name the weights file), then one copy of the weights: a single
    file, or an index and then the shards it lists.
    """
    paths = repo.paths()
    subfolder = options.get("subfolder")
    if kind == "unknown":
        skip = set(unknown_class_ignores(paths, options.get("use_safetensors")))
        return repo.fetch([p for p in paths if p not in skip])
    root = repo.fetch(metadata_files(paths, subfolder))
    if kind != "model":
        return root
    model_config = _read_json(root / folder_prefix(subfolder) / "config.json")
    explicit = model_config.get("transformers_weights") if isinstance(model_config, dict) else None
    choice = choose_weights(
        paths,
        subfolder=subfolder,
        variant=options.get("variant"),
        use_safetensors=options.get("use_safetensors"),
        gguf_file=options.get("gguf_file"),
        explicit=explicit if isinstance(explicit, str) else None,
    )
    weights = list(choice.files)
    if choice.index:
        root = repo.fetch([choice.index])
        weights += shards_from_index(choice.index, (root / choice.index).read_text(encoding="utf-8"))
    if weights:
        present = set(paths)
        root = repo.fetch([w for w in weights if w in present])  # a missing one: transformers says which
    return root


def fetch_files(repo: Repo, paths: list[str]) -> Path:
    """Download those of ``paths`` the repo has (the others stay missing); return the snapshot folder."""
    present = set(repo.paths())
    return repo.fetch([p for p in paths if p in present])


def with_fallback(source: str, attempt: Callable[[str], T]) -> T:
    """Run ``attempt(source)``; for "auto", the Hugging Face hub first, then ModelScope when the repo is
    not there or the hub cannot be reached."""
    source = check_source(source)
    if source != "auto":
        return attempt(source)
    errors: list[HubgetError] = []
    for name in ("hf", "modelscope"):
        try:
            return attempt(name)
        except (NotFoundError, NetworkError, UsageError) as exc:
            errors.append(exc)
    first = errors[0]
    raise type(first)(f"{first}; on ModelScope: {errors[-1]}") from first


def on_repo(
    action: Callable[[Repo], Path],
    repo_id: str,
    *,
    source: str = "hf",
    revision: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | Path | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    max_workers: int = 8,
    progress: ProgressSink | None = None,
    repos: RepoCache | None = None,
) -> Path:
    """``action(repo)`` on the source(s) ``source`` names; offline, the cached snapshot folder instead.
    With "auto", ``endpoint`` is not used (each source takes its own from the environment)."""
    auto = check_source(source) == "auto"

    def attempt(name: str) -> Path:
        where = Where(name, repo_id, revision, None if auto else endpoint, _str(cache_dir), token)
        if local_files_only or config.hf_offline():
            return offline_folder(where)

        def make() -> Repo:
            return open_repo(where, max_workers=max_workers, progress=progress)

        return action(repos.get(where, make) if repos is not None else make())

    return with_fallback(source, attempt)


def download_for(cls: Any, repo_id: str, *, options: dict[str, Any] | None = None, **settings: Any) -> Path:
    """Fetch what ``cls.from_pretrained`` reads from ``repo_id``; return the local snapshot folder.

    ``options`` are the ``from_pretrained`` keyword arguments that decide the files (``subfolder``,
    ``variant``, ``use_safetensors``, ``gguf_file``); ``settings`` are those of ``on_repo``.
    """
    kind = class_kind(cls)
    return on_repo(lambda repo: fetch_for_class(repo, kind, options or {}), repo_id, **settings)


def download_files(repo_id: str, paths: list[str], **settings: Any) -> Path:
    """Fetch those of ``paths`` that ``repo_id`` has; return the local snapshot folder."""
    return on_repo(lambda repo: fetch_files(repo, paths), repo_id, **settings)


def _str(path: str | Path | None) -> str | None:
    return None if path is None else str(path)
