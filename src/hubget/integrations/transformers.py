"""transformers' ``from_pretrained``, with the files fetched by hubget.

    model = hubget.from_pretrained(AutoModelForCausalLM, "internlm/internlm2-chat-7b", trust_remote_code=True)
    tok = hubget.from_pretrained(AutoTokenizer, "Shanghai_AI_Laboratory/internlm2-chat-7b", source="ms")

    with hubget.patch_transformers():          # for code that calls transformers itself
        model = AutoModelForCausalLM.from_pretrained("org/name")

hubget lists the repo once, fetches only what the class reads (the small files for tokenizers,
configs and processors; those plus one copy of the weights for models) into the Hugging Face cache
(or the ModelScope cache), and hands transformers the snapshot folder. transformers then loads from
a local folder: its most used code path, which makes no hub call of its own.

Why the patch wraps ``from_pretrained`` instead of transformers' hub functions: transformers 5 reaches
the hub through several functions (``cached_file(s)`` -> ``hf_hub_download`` / ``snapshot_download``,
``has_file``, ``resolve_revision``, the safetensors auto-conversion), each imported by name into many
modules and changed from release to release; replacing them would need to track every import site.
The ``from_pretrained`` classmethods are the public, stable entry points, and once they are given a
local folder nothing further reaches the hub.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

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

SOURCES = ("hf", "modelscope", "auto")
_SOURCE_ALIASES = {
    "hf": "hf",
    "huggingface": "hf",
    "modelscope": "modelscope",
    "ms": "modelscope",
    "auto": "auto",
}
# Keyword arguments that only matter for fetching: hubget consumes them, transformers gets a local folder.
HUB_ONLY_KWARGS = (
    "cache_dir",
    "token",
    "use_auth_token",
    "local_files_only",
    "force_download",
    "resume_download",
    "proxies",
    "user_agent",
    "mirror",
    "_commit_hash",
)
# What a hub id looks like ("name" or "org/name"); anything else is left to transformers.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9_.\-]+)?$")


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
        if any(issubclass(cls, base) for base in _file_only_bases()):
            return "files"
    return "unknown"


def _file_only_bases() -> list[type]:
    import transformers

    names = (
        "PreTrainedConfig",
        "PretrainedConfig",
        "PreTrainedTokenizerBase",
        "ProcessorMixin",
        "ImageProcessingMixin",
        "FeatureExtractionMixin",
        "GenerationConfig",
        "AutoConfig",
        "AutoTokenizer",
        "AutoProcessor",
        "AutoImageProcessor",
        "AutoFeatureExtractor",
        "AutoVideoProcessor",
    )
    return [c for c in (getattr(transformers, n, None) for n in names) if isinstance(c, type)]


# -- one hub, one repo -------------------------------------------------------------------------


@dataclass
class _Repo:
    """A repo on one source with the cache layout its official client reads."""

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
        from hubget.cli.progress import make_progress

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


def _open_repo(
    source: str,
    repo_id: str,
    revision: str | None,
    *,
    endpoint: str | None,
    cache_dir: str | Path | None,
    token: str | bool | None,
    max_workers: int,
    progress: ProgressSink | None,
) -> _Repo:
    ref = RepoRef(repo_id, "model", revision)
    if source == "modelscope":
        from hubget.layouts.ms_cache import MsCacheLayout
        from hubget.sources.modelscope import ModelScopeSource, check_repo_id

        check_repo_id(repo_id)
        ms_token = token if isinstance(token, str) else ("" if token is False else None)
        src: Any = ModelScopeSource(endpoint, ms_token)
        return _Repo(src, MsCacheLayout(ref, cache_dir), ref, max_workers, progress)
    from hubget.layouts.hf_cache import HfCacheLayout
    from hubget.sources.huggingface import HfSource

    return _Repo(HfSource(endpoint, token), HfCacheLayout(ref, cache_dir), ref, max_workers, progress)


def _offline_folder(source: str, repo_id: str, revision: str | None, cache_dir: str | Path | None) -> Path:
    ref = RepoRef(repo_id, "model", revision)
    if source == "modelscope":
        from hubget.layouts.ms_cache import cached_folder

        return cached_folder(ref, cache_dir)
    from hubget.api import offline_snapshot

    return offline_snapshot(ref, cache_dir, None)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def fetch_for_class(repo: _Repo, kind: str, options: dict[str, Any]) -> Path:
    """Download into the cache what a class of ``kind`` reads; return the snapshot folder."""
    paths = repo.paths()
    subfolder = options.get("subfolder")
    if kind == "unknown":
        skip = set(unknown_class_ignores(paths, options.get("use_safetensors")))
        return repo.fetch([p for p in paths if p not in skip])
    root = repo.fetch(metadata_files(paths, subfolder))
    if kind != "model":
        return root
    base = folder_prefix(subfolder)
    model_config = _read_json(root / base / "config.json")
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


def download_for(
    cls: Any,
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
    **options: Any,
) -> Path:
    """Fetch what ``cls.from_pretrained`` reads from ``repo_id``; return the local snapshot folder.

    ``options`` are the ``from_pretrained`` keyword arguments that decide the files: ``subfolder``,
    ``variant``, ``use_safetensors``, ``gguf_file``.
    """
    source = _check_source(source)
    offline = local_files_only or config.hf_offline()
    order = ["hf", "modelscope"] if source == "auto" else [source]
    errors: list[HubgetError] = []
    for name in order:
        try:
            if offline:
                return _offline_folder(name, repo_id, revision, cache_dir)
            repo = _open_repo(
                name,
                repo_id,
                revision,
                endpoint=endpoint if source != "auto" else None,
                cache_dir=cache_dir,
                token=token,
                max_workers=max_workers,
                progress=progress,
            )
            return fetch_for_class(repo, class_kind(cls), options)
        except (NotFoundError, NetworkError, UsageError) as exc:
            # "auto": a repo missing on (or a hub unreachable from) the first source is tried on the next.
            errors.append(exc)
            if source != "auto":
                raise
    first = errors[0]
    raise type(first)(f"{first}; on ModelScope: {errors[-1]}") from first


def _check_source(source: str) -> str:
    try:
        return _SOURCE_ALIASES[source]
    except (KeyError, TypeError):
        raise UsageError(f"source must be one of {', '.join(SOURCES)}, not {source!r}") from None


def is_hub_id(name: Any) -> bool:
    """True when transformers would look ``name`` up on the hub rather than on disk."""
    if not isinstance(name, str) or os.path.exists(name):
        return False
    return bool(_HUB_ID.match(name)) and ".." not in name and "--" not in name and len(name) <= 200


# -- the public entry point ----------------------------------------------------------------------


def from_pretrained(
    cls: Any,
    repo_id: str,
    *model_args: Any,
    source: str = "hf",
    revision: str | None = None,
    endpoint: str | None = None,
    max_workers: int = 8,
    progress: ProgressSink | None = None,
    **kwargs: Any,
) -> Any:
    """``cls.from_pretrained(repo_id, ...)`` with the files downloaded by hubget.

    ``source`` is "hf" (``HF_ENDPOINT``), "modelscope" (``MODELSCOPE_ENDPOINT``) or "auto" (the
    Hugging Face hub, then ModelScope when the repo is not there or the hub cannot be reached).
    ``cache_dir``, ``token``, ``local_files_only``, ``subfolder``, ``variant``, ``use_safetensors`` and
    ``gguf_file`` have their transformers meaning; every other argument goes to ``cls.from_pretrained``.
    A local folder is passed through unchanged. ``progress`` receives download progress; by default
    a bar on a terminal, a line log otherwise, nothing with ``HF_HUB_DISABLE_PROGRESS_BARS=1``
    (pass ``hubget.transfer.jobs.ProgressSink()`` for silence).
    """
    loader = cls.from_pretrained
    return _load(loader, cls, repo_id, model_args, kwargs, source, revision, endpoint, max_workers, progress)


def _load(
    loader: Callable[..., Any],
    cls: Any,
    repo_id: Any,
    model_args: tuple[Any, ...],
    kwargs: dict[str, Any],
    source: str,
    revision: str | None,
    endpoint: str | None,
    max_workers: int,
    progress: ProgressSink | None,
) -> Any:
    if not is_hub_id(repo_id):
        if revision is not None:
            kwargs["revision"] = revision
        return loader(repo_id, *model_args, **kwargs)
    hub = {k: kwargs.pop(k) for k in HUB_ONLY_KWARGS if k in kwargs}
    token = hub.get("token", hub.get("use_auth_token"))
    options = {k: kwargs.get(k) for k in ("subfolder", "variant", "use_safetensors", "gguf_file")}
    folder = download_for(
        cls,
        repo_id,
        source=source,
        revision=revision,
        endpoint=endpoint,
        cache_dir=hub.get("cache_dir"),
        token=token,
        local_files_only=bool(hub.get("local_files_only")),
        max_workers=max_workers,
        progress=progress,
        **options,
    )
    kwargs.pop("code_revision", None)  # the code was fetched at ``revision`` with everything else
    loaded = loader(str(folder), *model_args, **kwargs)
    _restore_name(loaded, str(folder), repo_id)
    return loaded


def _restore_name(obj: Any, folder: str, repo_id: str) -> None:
    """transformers records the path it loaded from; record the repo id instead, as a plain
    ``from_pretrained("org/name")`` does, so model cards and ``push_to_hub`` defaults stay right."""
    targets = [obj, getattr(obj, "config", None), getattr(obj, "generation_config", None)]
    for target in targets:
        for attr in ("name_or_path", "_name_or_path"):
            try:
                if getattr(target, attr, None) == folder:
                    setattr(target, attr, repo_id)
            except (AttributeError, TypeError, ValueError):
                continue


# -- patch_transformers --------------------------------------------------------------------------


@dataclass(frozen=True)
class _PatchOptions:
    source: str
    endpoint: str | None
    max_workers: int
    progress: ProgressSink | None


_lock = threading.RLock()
_active: list[TransformersPatch] = []
_originals: dict[type, Any] = {}  # class -> its own ``from_pretrained`` descriptor before patching


class TransformersPatch:
    """Returned by ``patch_transformers()``: active until ``close()`` or the end of a ``with`` block."""

    def __init__(self, options: _PatchOptions) -> None:
        self.options = options
        self.closed = False
        with _lock:
            if not _active:
                _install()
            _active.append(self)

    def close(self) -> None:
        with _lock:
            if self.closed:
                return
            self.closed = True
            _active.remove(self)
            if not _active:
                _uninstall()

    def __enter__(self) -> TransformersPatch:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def patch_transformers(
    *,
    source: str = "hf",
    endpoint: str | None = None,
    max_workers: int = 8,
    progress: ProgressSink | None = None,
) -> TransformersPatch:
    """Make every ``from_pretrained("org/name")`` of transformers download through hubget.

    Takes effect at once; use it as a context manager to undo it at the end of the block, or call
    ``.close()`` (or ``unpatch_transformers()``) on the returned object. Patches nest.
    Covers the Auto classes, every ``PreTrainedModel``, tokenizer, config, processor, image processor,
    feature extractor and generation config class. Not covered: remote code that ``auto_map`` takes
    from another repo ("org/other--modeling.Class"), which transformers fetches itself.
    """
    return TransformersPatch(_PatchOptions(_check_source(source), endpoint, max_workers, progress))


def unpatch_transformers() -> None:
    """Undo every active ``patch_transformers()``."""
    with _lock:
        for patch in list(_active):
            patch.close()


def is_patched() -> bool:
    return bool(_active)


def _patch_targets() -> list[type]:
    import transformers
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    bases = [transformers.PreTrainedModel, _BaseAutoModelClass, *_file_only_bases()]
    seen: set[type] = set()
    out: list[type] = []
    stack = list(bases)
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        # Each Auto class carries its own copy of the method; subclasses that override it need their own
        # wrapper too, the rest inherit their base's.
        if isinstance(cls.__dict__.get("from_pretrained"), classmethod):
            out.append(cls)
    return out


def _install() -> None:
    for cls in _patch_targets():
        descriptor = cls.__dict__["from_pretrained"]
        _originals[cls] = descriptor
        cls.from_pretrained = _wrap(descriptor.__func__)  # type: ignore[attr-defined]


def _uninstall() -> None:
    for cls, descriptor in _originals.items():
        cls.from_pretrained = descriptor  # type: ignore[attr-defined]
    _originals.clear()


def _wrap(original: Callable[..., Any]) -> classmethod:  # type: ignore[type-arg]
    @functools.wraps(original)
    def from_pretrained_via_hubget(
        klass: type, pretrained_model_name_or_path: Any = None, *args: Any, **kwargs: Any
    ) -> Any:
        with _lock:
            options = _active[-1].options if _active else None
        if options is None or not is_hub_id(pretrained_model_name_or_path):
            return original(klass, pretrained_model_name_or_path, *args, **kwargs)
        revision = kwargs.pop("revision", None)

        def loader(path: str, *a: Any, **kw: Any) -> Any:
            # The original of this very class: an override runs once, on the local folder.
            return original(klass, path, *a, **kw)

        try:
            return _load(
                loader,
                klass,
                pretrained_model_name_or_path,
                args,
                kwargs,
                options.source,
                revision,
                options.endpoint,
                options.max_workers,
                options.progress,
            )
        except HubgetError as exc:
            # Code written for transformers expects OSError from from_pretrained when a repo or file
            # cannot be had (it is what transformers raises); keep hubget's message.
            raise OSError(f"{pretrained_model_name_or_path}: {exc}") from exc

    return classmethod(from_pretrained_via_hubget)


__all__ = [
    "TransformersPatch",
    "download_for",
    "from_pretrained",
    "is_patched",
    "patch_transformers",
    "unpatch_transformers",
]
