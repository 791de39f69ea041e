"""transformers' ``from_pretrained``, with the files fetched by hubget.

    model = hubget.from_pretrained(AutoModelForCausalLM, "internlm/internlm2-chat-7b", trust_remote_code=True)
    tok = hubget.from_pretrained(AutoTokenizer, "Shanghai_AI_Laboratory/internlm2-chat-7b", source="ms")

    with hubget.patch_transformers():          # for code that calls transformers itself
        model = AutoModelForCausalLM.from_pretrained("org/name")

hubget lists the repo once, fetches only what the class reads (the small files for tokenizers,
configs and processors; those plus one copy of the weights for models) into the Hugging Face cache
(or the ModelScope cache), and hands transformers the snapshot folder. transformers then loads from
a local folder: its most used code path, which makes no hub call of its own.

How the patch hooks transformers 5, and why there: the ``from_pretrained`` classmethods are the public,
stable entry points, so they are wrapped (each Auto class carries its own copy; base classes cover
their subclasses) and given the local folder, which lets hubget choose all files of a load at once.
Files transformers fetches elsewhere (``pipeline()`` probing for processors, remote code from another
repo) all pass through ``transformers.utils.hub.cached_files``: ``cached_file`` is imported by name
into many modules, but it calls ``cached_files`` through its own module, so replacing that one
module attribute covers every such call. The huggingface_hub functions below it are not touched:
transformers imports them by name and their signatures change between releases.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from hubget.errors import AuthError, HubgetError, NetworkError, OfflineError
from hubget.integrations.transformers_fetch import (
    RepoCache,
    check_source,
    download_files,
    download_for,
    is_hub_id,
)
from hubget.transfer.jobs import ProgressSink

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
    fetcher = Fetcher(check_source(source), endpoint, max_workers, progress)
    return fetcher.load(cls.from_pretrained, cls, repo_id, model_args, kwargs, revision)


@dataclass
class Fetcher:
    """How to fetch: the source, its endpoint, parallelism, progress, and (while a patch is active)
    listings kept for reuse across the calls of one load."""

    source: str
    endpoint: str | None = None
    max_workers: int = 8
    progress: ProgressSink | None = None
    repos: RepoCache | None = field(default=None, compare=False)

    def load(
        self,
        loader: Callable[..., Any],
        cls: Any,
        repo_id: Any,
        model_args: tuple[Any, ...],
        kwargs: dict[str, Any],
        revision: str | None,
    ) -> Any:
        """Fetch what ``cls`` reads from ``repo_id``, then ``loader(local_folder, ...)``."""
        if not is_hub_id(repo_id):
            if revision is not None:
                kwargs["revision"] = revision
            return loader(repo_id, *model_args, **kwargs)
        hub = {k: kwargs.pop(k) for k in HUB_ONLY_KWARGS if k in kwargs}
        options = {k: kwargs.get(k) for k in ("subfolder", "variant", "use_safetensors", "gguf_file")}
        folder = download_for(
            cls,
            repo_id,
            options=options,
            revision=revision,
            cache_dir=hub.get("cache_dir"),
            token=hub.get("token", hub.get("use_auth_token")),
            local_files_only=bool(hub.get("local_files_only")),
            **self._settings(),
        )
        kwargs.pop("code_revision", None)  # the code was fetched at ``revision`` with everything else
        loaded = loader(str(folder), *model_args, **kwargs)
        _restore_name(loaded, str(folder), repo_id)
        return loaded

    def files(self, repo_id: str, paths: list[str], **settings: Any) -> Path:
        """Fetch exactly ``paths`` (those the repo has); return the snapshot folder."""
        return download_files(repo_id, paths, **self._settings(), **settings)

    def _settings(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "endpoint": self.endpoint,
            "max_workers": self.max_workers,
            "progress": self.progress,
            "repos": self.repos,
        }


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


_lock = threading.RLock()
_active: list[TransformersPatch] = []
_originals: dict[tuple[Any, str], Any] = {}  # (owner, attribute) -> what was there before patching


class TransformersPatch:
    """Returned by ``patch_transformers()``: active until ``close()`` or the end of a ``with`` block."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
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
    """Make transformers download through hubget: ``from_pretrained("org/name")`` of every Auto class,
    ``PreTrainedModel``, tokenizer, config, processor, image/video processor, feature extractor and
    generation config class, and every other file transformers fetches (``pipeline()``'s probes,
    remote code that ``auto_map`` takes from another repo).

    Takes effect at once; use it as a context manager to undo it at the end of the block, or call
    ``.close()`` (or ``unpatch_transformers()``). Patches nest; the innermost one's options apply.
    transformers' metadata calls (``resolve_revision``, ``model_info``) still go to ``HF_ENDPOINT``
    themselves; they fail open.
    """
    fetcher = Fetcher(check_source(source), endpoint, max_workers, progress, RepoCache())
    return TransformersPatch(fetcher)


def unpatch_transformers() -> None:
    """Undo every active ``patch_transformers()``."""
    with _lock:
        for patch in list(_active):
            patch.close()


def is_patched() -> bool:
    return bool(_active)


def _current() -> Fetcher | None:
    with _lock:
        return _active[-1].fetcher if _active else None


def _patch_targets() -> list[type]:
    import transformers
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    from hubget.integrations.transformers_fetch import file_only_bases

    seen: set[type] = set()
    out: list[type] = []
    stack: list[type] = [transformers.PreTrainedModel, _BaseAutoModelClass, *file_only_bases()]
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
    import transformers.utils.hub as tf_hub

    for cls in _patch_targets():
        descriptor = cls.__dict__["from_pretrained"]
        _originals[(cls, "from_pretrained")] = descriptor
        cls.from_pretrained = _wrap_from_pretrained(descriptor.__func__)  # type: ignore[attr-defined]
    # ``cached_file`` (imported by name all over transformers) calls the module's ``cached_files``:
    # replacing that one name covers every other file transformers fetches.
    _originals[(tf_hub, "cached_files")] = tf_hub.cached_files
    tf_hub.cached_files = _wrap_cached_files(tf_hub.cached_files)


def _uninstall() -> None:
    for (owner, attr), value in _originals.items():
        setattr(owner, attr, value)
    _originals.clear()


def _as_oserror(name: Any, exc: HubgetError) -> OSError:
    # Code written for transformers expects OSError when a repo or file cannot be had (it is what
    # transformers raises); keep hubget's message.
    return OSError(f"{name}: {exc}")


def _wrap_from_pretrained(original: Callable[..., Any]) -> classmethod:  # type: ignore[type-arg]
    @functools.wraps(original)
    def from_pretrained_via_hubget(klass: type, name: Any = None, *args: Any, **kwargs: Any) -> Any:
        fetcher = _current()
        if fetcher is None or not is_hub_id(name):
            return original(klass, name, *args, **kwargs)
        revision = kwargs.pop("revision", None)

        def loader(path: str, *a: Any, **kw: Any) -> Any:
            # The original of this very class: an override runs once, on the local folder.
            return original(klass, path, *a, **kw)

        try:
            return fetcher.load(loader, klass, name, args, kwargs, revision)
        except HubgetError as exc:
            raise _as_oserror(name, exc) from exc

    return classmethod(from_pretrained_via_hubget)


def _wrap_cached_files(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def cached_files_via_hubget(
        path_or_repo_id: Any,
        filenames: list[str],
        cache_dir: Any = None,
        force_download: bool = False,
        proxies: Any = None,
        token: Any = None,
        revision: str | None = None,
        local_files_only: bool = False,
        subfolder: str = "",
        repo_type: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        fetcher = _current()
        if fetcher is None or repo_type not in (None, "model") or not is_hub_id(str(path_or_repo_id)):
            return original(
                path_or_repo_id, filenames, cache_dir, force_download, proxies, token, revision,
                local_files_only, subfolder, repo_type, *args, **kwargs,
            )  # fmt: skip
        prefix = f"{subfolder.strip('/')}/" if subfolder else ""
        try:
            folder = fetcher.files(
                str(path_or_repo_id),
                [prefix + f for f in filenames],
                revision=revision,
                cache_dir=cache_dir,
                token=token,
                local_files_only=local_files_only,
            )
        except AuthError as exc:
            if not kwargs.get("_raise_exceptions_for_gated_repo", True):
                return None
            raise _as_oserror(path_or_repo_id, exc) from exc
        except (NetworkError, OfflineError) as exc:
            if not kwargs.get("_raise_exceptions_for_connection_errors", True):
                return None
            raise _as_oserror(path_or_repo_id, exc) from exc
        except HubgetError as exc:
            raise _as_oserror(path_or_repo_id, exc) from exc
        # transformers' own local-folder branch applies its flags to the files the repo lacks.
        flags = {k: v for k, v in kwargs.items() if k.startswith("_raise_exceptions_")}
        return original(str(folder), filenames, subfolder=subfolder, **flags)

    return cached_files_via_hubget


__all__ = [
    "Fetcher",
    "TransformersPatch",
    "download_for",
    "from_pretrained",
    "is_patched",
    "patch_transformers",
    "unpatch_transformers",
]
