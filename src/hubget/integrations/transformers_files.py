"""Which files of a repo a transformers ``from_pretrained`` call reads.

Pure functions over the repo's file list (no network, no transformers import), so the choice can be
made before a byte is downloaded: a tokenizer or config needs only the small files; a model needs them
plus exactly one copy of its weights, chosen in the order transformers 5 itself tries them
(``modeling_utils._get_resolved_checkpoint_files``): an explicit ``transformers_weights`` from
config.json, then ``model.safetensors``, its sharded index, ``pytorch_model.bin``, its sharded index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from hubget.errors import ProtocolError
from hubget.paths import safe_relpath

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"
ADAPTER_SAFE_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_WEIGHTS_NAME = "adapter_model.bin"
ADAPTER_CONFIG_NAME = "adapter_config.json"
CHAT_TEMPLATES_DIR = "additional_chat_templates/"

# Files no loader of config, tokenizer, processor or code reads: weights of any framework,
# archives, data, and the media and prose a model card links to.
HEAVY_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".onnx_data", ".gguf",
    ".ggml", ".ot", ".tflite", ".pb", ".npz", ".npy", ".pkl", ".pickle", ".joblib", ".nemo", ".engine",
    ".plan", ".mlmodel", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".zip", ".arrow",
    ".parquet", ".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".mp4", ".mp3", ".wav", ".flac",
    ".pdf", ".md",
)  # fmt: skip
# Shard indexes are json but belong to one weight format: only the chosen format's index is fetched.
_WEIGHT_INDEX = re.compile(r"\.(safetensors|bin)\.index(\.[^/]+)?\.json$")


def add_variant(name: str, variant: str | None) -> str:
    """transformers' ``_add_variant``: model.safetensors -> model.fp16.safetensors."""
    if not variant:
        return name
    stem, _, ext = name.rpartition(".")
    return f"{stem}.{variant}.{ext}"


def folder_prefix(subfolder: str | None) -> str:
    sub = (subfolder or "").strip("/")
    return f"{safe_relpath(sub)}/" if sub else ""


def is_heavy(path: str) -> bool:
    name = path.lower()
    return name.endswith(HEAVY_SUFFIXES) or bool(_WEIGHT_INDEX.search(name))


def metadata_files(paths: Iterable[str], subfolder: str | None = None) -> list[str]:
    """The small files (config, tokenizer, processor, generation config, custom code, chat templates)
    of the folder a class loads from; with a ``subfolder`` also the repo's top-level small files,
    where custom code and the main config usually live."""
    base = folder_prefix(subfolder)
    chosen = []
    for path in paths:
        if is_heavy(path):
            continue
        if path.startswith(base):
            rel = path[len(base) :]
            if "/" not in rel or rel.startswith(CHAT_TEMPLATES_DIR):
                chosen.append(path)
        elif base and "/" not in path:
            chosen.append(path)
    return sorted(chosen)


@dataclass
class WeightChoice:
    """One copy of a model's weights: a single file, or an index whose shards are read from it."""

    files: list[str] = field(default_factory=list)
    index: str | None = None  # path of a shard index json, when the checkpoint is sharded


def choose_weights(
    paths: Iterable[str],
    *,
    subfolder: str | None = None,
    variant: str | None = None,
    use_safetensors: bool | None = None,
    gguf_file: str | None = None,
    explicit: str | None = None,
) -> WeightChoice:
    """The weight files transformers will open, given what the repo holds.

    Returns an empty choice when nothing matches; transformers then raises its own clear error.
    """
    present = set(paths)
    base = folder_prefix(subfolder)
    if gguf_file:
        return WeightChoice(files=[base + safe_relpath(gguf_file)])
    if explicit:
        path = base + safe_relpath(explicit)
        if path.endswith(".index.json"):
            return WeightChoice(index=path)
        return WeightChoice(files=[path])
    candidates: list[tuple[str, bool]] = []
    if use_safetensors is not False:
        candidates += [(SAFE_WEIGHTS_NAME, False), (SAFE_WEIGHTS_INDEX_NAME, True)]
    if not use_safetensors:
        candidates += [(WEIGHTS_NAME, False), (WEIGHTS_INDEX_NAME, True)]
    choice = WeightChoice()
    for name, sharded in candidates:
        path = base + add_variant(name, variant)
        if path in present:
            choice = WeightChoice(index=path) if sharded else WeightChoice(files=[path])
            break
    choice.files += adapter_weights(present, base, use_safetensors)
    return choice


def adapter_weights(present: set[str], base: str, use_safetensors: bool | None) -> list[str]:
    """A PEFT adapter repo (adapter_config.json) loads adapter_model.* on top of a base model."""
    if base + ADAPTER_CONFIG_NAME not in present:
        return []
    names = [ADAPTER_SAFE_WEIGHTS_NAME, ADAPTER_WEIGHTS_NAME]
    if use_safetensors is False:
        names.reverse()
    for name in names:
        if base + name in present:
            return [base + ADAPTER_CONFIG_NAME, base + name]
    return [base + ADAPTER_CONFIG_NAME]


def shards_from_index(index_path: str, index_text: str) -> list[str]:
    """Repo paths of the shards a ``*.index.json`` names (next to the index, as transformers reads them)."""
    try:
        weight_map = json.loads(index_text)["weight_map"]
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"{index_path}: not a shard index (no weight_map)") from exc
    folder = index_path.rpartition("/")[0]
    prefix = f"{folder}/" if folder else ""
    return [prefix + safe_relpath(str(name)) for name in names]


def unknown_class_ignores(paths: Iterable[str], use_safetensors: bool | None) -> list[str]:
    """For a class hubget knows nothing about: fetch the repo, but not pytorch ``.bin`` weights (and
    their index) in folders that also carry safetensors weights, the copy every current loader prefers."""
    if use_safetensors is False:
        return []
    paths = list(paths)
    safe_folders = {p.rpartition("/")[0] for p in paths if p.endswith(".safetensors")}
    return sorted(
        p
        for p in paths
        if p.rpartition("/")[0] in safe_folders
        and (p.endswith(".bin") or p.endswith(".bin.index.json"))
        and "pytorch_model" in p.rpartition("/")[2]
    )
