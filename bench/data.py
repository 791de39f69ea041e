"""The repos the benchmark downloads, generated once per size and reused (with a manifest of sha256s).

Three shapes, each a plain folder under ``ROOT/{models,datasets}/bench/NAME`` that `hubget serve` serves:
- ``large-file``: one big ``.safetensors`` file, the case where ranges in parallel decide;
- ``chat-7b-scaled``: a 7B chat model scaled down: sharded safetensors *and* .bin (as many chat repos
  ship both), their index files, tokenizer and config files, custom modelling code;
- ``chat-7b-capped``: the same shape with smaller shards, for the scenario with capped connections;
- ``small-files``: a dataset of thousands of small files, where per-file latency decides;
- ``realhub``: a model as the Hub stores it today (a few 48-96 MB safetensors shards, a tokenizer of
  20-30 MB, text files), served by the hub replica (bench/replica.py) rather than `hubget serve`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 1024 * 1024
BLOCK = 4 * MB
OWNER = "bench"


@dataclass(frozen=True)
class Sizes:
    """How big each repo is at one scale."""

    large_file: int
    shards: int
    shard_bytes: int
    small_files: int
    small_max: int  # bytes; small files are 1 KiB .. small_max, skewed to the small end
    cap_per_conn: int  # bytes/s per connection in the capped scenario
    capped_shard_bytes: int  # the capped scenario's copy of the chat repo has smaller shards


SCALES: dict[str, Sizes] = {
    # CI smoke: a few MB in all, seconds per run.
    "small": Sizes(
        large_file=16 * MB,
        shards=2,
        shard_bytes=3 * MB,
        small_files=60,
        small_max=16 * 1024,
        cap_per_conn=8 * MB,
        capped_shard_bytes=3 * MB,
    ),
    "medium": Sizes(
        large_file=512 * MB,
        shards=8,
        shard_bytes=64 * MB,
        small_files=2000,
        small_max=64 * 1024,
        cap_per_conn=5 * MB,
        capped_shard_bytes=32 * MB,
    ),
    "full": Sizes(
        large_file=2048 * MB,
        shards=8,
        shard_bytes=256 * MB,
        small_files=2000,
        small_max=64 * 1024,
        # Low enough that the cap, not this 2-core machine's CPU, limits a client with 8 connections.
        cap_per_conn=5 * MB,
        capped_shard_bytes=64 * MB,
    ),
}


@dataclass(frozen=True)
class RealHubSizes:
    """The ``realhub`` repo at one scale: shards and the larger side files, in bytes."""

    shards: tuple[int, ...]
    tokenizer_json: int  # LFS (and so Xet) by size on the Hub when above 10 MB
    vision_tower: int
    tokenizer_model: int
    vocab_json: int  # regular files, sent by the hub itself (gzipped to clients accepting it)
    merges_txt: int


REALHUB_SCALES: dict[str, RealHubSizes] = {
    "small": RealHubSizes((3 * MB, 3 * MB, 2 * MB, 2 * MB), 1 * MB, 1 * MB, 256 * 1024, 64 * 1024, 32 * 1024),
    "medium": RealHubSizes(
        (48 * MB, 44 * MB, 36 * MB, 28 * MB), 11 * MB, 14 * MB, 2 * MB, 1 * MB, 512 * 1024
    ),
    # Like a 1.5B-parameter model in bf16 cut into 4 shards, with a Gemma-sized tokenizer.json.
    "full": RealHubSizes(
        (96 * MB, 88 * MB, 72 * MB, 56 * MB), 22 * MB, 28 * MB, 4 * MB, int(2.7 * MB), int(1.6 * MB)
    ),
}


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BenchRepo:
    """A generated repo: where it is served from and what each file must hash to."""

    repo_id: str
    repo_type: str  # "model" or "dataset"
    folder: Path
    files: tuple[RepoFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _random_file(path: Path, size: int, header: bytes = b"") -> str:
    """Write ``header`` then random bytes up to ``size``; return the sha256 (computed while writing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(header)
    with open(path, "wb") as f:
        f.write(header)
        remaining = size - len(header)
        while remaining > 0:
            chunk = os.urandom(min(BLOCK, remaining))
            digest.update(chunk)
            f.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def _text_file(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _safetensors_header(tensor: str, size: int) -> bytes:
    """The header of a valid safetensors file holding one uint8 tensor of the remaining bytes."""
    body = json.dumps({tensor: {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}).encode()
    # The real tensor length depends on the header length: solve once, pad to 8 bytes.
    for _ in range(3):
        n = size - 8 - len(body)
        body = json.dumps({tensor: {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
        body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body


def _large_file(folder: Path, sizes: Sizes) -> dict[str, str]:
    name = "model.safetensors"
    return {
        name: _random_file(folder / name, sizes.large_file, _safetensors_header("weight", sizes.large_file))
    }


def _chat_model(folder: Path, sizes: Sizes, shard_bytes: int | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    shard_bytes = shard_bytes or sizes.shard_bytes
    n = sizes.shards
    st_map: dict[str, str] = {}
    bin_map: dict[str, str] = {}
    for i in range(1, n + 1):
        tensor = f"model.layers.{i - 1}.weight"
        st = f"model-{i:05d}-of-{n:05d}.safetensors"
        pt = f"pytorch_model-{i:05d}-of-{n:05d}.bin"
        out[st] = _random_file(folder / st, shard_bytes, _safetensors_header(tensor, shard_bytes))
        out[pt] = _random_file(folder / pt, shard_bytes)
        st_map[tensor] = st
        bin_map[tensor] = pt
    total = n * shard_bytes
    for name, weight_map in (
        ("model.safetensors.index.json", st_map),
        ("pytorch_model.bin.index.json", bin_map),
    ):
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        out[name] = _text_file(folder / name, json.dumps(index, indent=2))
    config = {
        "architectures": ["BenchChatForCausalLM"],
        "auto_map": {"AutoModelForCausalLM": "modeling_benchchat.BenchChatForCausalLM"},
        "model_type": "benchchat",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "torch_dtype": "bfloat16",
    }
    out["config.json"] = _text_file(folder / "config.json", json.dumps(config, indent=2))
    out["generation_config.json"] = _text_file(folder / "generation_config.json", '{"max_new_tokens": 512}\n')
    out["tokenizer_config.json"] = _text_file(
        folder / "tokenizer_config.json", '{"model_max_length": 32768, "chat_template": "{{ messages }}"}\n'
    )
    out["special_tokens_map.json"] = _text_file(folder / "special_tokens_map.json", '{"eos_token": "</s>"}\n')
    out["tokenizer.model"] = _random_file(folder / "tokenizer.model", 1 * MB)
    out["tokenizer.json"] = _text_file(folder / "tokenizer.json", json.dumps({"vocab": list(range(20000))}))
    code = "# custom modelling code, loaded with trust_remote_code\n" * 200
    out["modeling_benchchat.py"] = _text_file(folder / "modeling_benchchat.py", code)
    out["configuration_benchchat.py"] = _text_file(folder / "configuration_benchchat.py", code[:2000])
    out["README.md"] = _text_file(folder / "README.md", "# bench chat model\nScaled-down 7B chat layout.\n")
    return out


def _chat_model_capped(folder: Path, sizes: Sizes) -> dict[str, str]:
    return _chat_model(folder, sizes, sizes.capped_shard_bytes)


def _small_files(folder: Path, sizes: Sizes) -> dict[str, str]:
    rng = random.Random(7)
    out: dict[str, str] = {}
    for i in range(sizes.small_files):
        # Sizes from 1 KiB up, skewed to the small end (most dataset shards of this kind are small).
        size = int(1024 + (sizes.small_max - 1024) * rng.random() ** 2)
        split = ("train", "validation", "test")[i % 3]
        ext = ("parquet", "json")[i % 2]
        path = f"data/{split}/part-{i // 200:02d}/{i:05d}.{ext}"
        out[path] = _random_file(folder / path, size)
    out["README.md"] = _text_file(folder / "README.md", "# bench dataset\nMany small files.\n")
    return out


def _text_lines(
    path: Path,
    size: int,
    line: Callable[[random.Random, int], str],
    rng: random.Random,
    head: bytes,
    tail: bytes,
) -> str:
    """``head``, generated whole lines, spaces, ``tail``: exactly ``size`` bytes of text that gzip shrinks
    as it shrinks real vocabularies. Written as generated (little memory); returns the sha256."""
    digest = hashlib.sha256()
    room = size - len(head) - len(tail)
    with open(path, "wb") as f:

        def put(data: bytes) -> None:
            digest.update(data)
            f.write(data)

        put(head)
        i = 0
        while True:
            piece = line(rng, i).encode()
            if len(piece) > room:
                break
            put(piece)
            room -= len(piece)
            i += 1
        put(b" " * room + tail)
    return digest.hexdigest()


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz\u0120") for _ in range(rng.randint(2, 9)))


def _realhub_model(folder: Path, sizes: RealHubSizes) -> dict[str, str]:
    """A repo shaped like the models people download today: 4 safetensors shards and their index,
    a large tokenizer.json and a vision tower (both Xet-backed on the Hub: above 10 MB), the
    tokenizer model, vocab and merges (regular files), configs, README and .gitattributes."""
    rng = random.Random(12)
    out: dict[str, str] = {}
    n = len(sizes.shards)
    weight_map: dict[str, str] = {}
    for i, size in enumerate(sizes.shards, 1):
        name = f"model-{i:05d}-of-{n:05d}.safetensors"
        tensor = f"model.layers.{i - 1}.weight"
        out[name] = _random_file(folder / name, size, _safetensors_header(tensor, size))
        weight_map[tensor] = name
    weight_map["vision_tower.weight"] = "vision_tower.safetensors"
    out["vision_tower.safetensors"] = _random_file(
        folder / "vision_tower.safetensors",
        sizes.vision_tower,
        _safetensors_header("vision_tower.weight", sizes.vision_tower),
    )
    index = {"metadata": {"total_size": sum(sizes.shards)}, "weight_map": weight_map}
    out["model.safetensors.index.json"] = _text_file(
        folder / "model.safetensors.index.json", json.dumps(index, indent=2)
    )
    out["tokenizer.json"] = _text_lines(
        folder / "tokenizer.json",
        sizes.tokenizer_json,
        lambda r, i: f'"{_word(r)}{i}": {i}, ',
        rng,
        b'{"model": {"vocab": {',
        b'"<eos>": 0}}}',
    )
    out["tokenizer.model"] = _random_file(folder / "tokenizer.model", sizes.tokenizer_model)
    out["vocab.json"] = _text_lines(
        folder / "vocab.json",
        sizes.vocab_json,
        lambda r, i: f'"{_word(r)}{i}": {i},\n',
        rng,
        b"{",
        b'"<eos>": 0}',
    )
    out["merges.txt"] = _text_lines(
        folder / "merges.txt", sizes.merges_txt, lambda r, i: f"{_word(r)} {_word(r)}\n", rng, b"", b""
    )
    config = {
        "architectures": ["BenchVLForConditionalGeneration"],
        "model_type": "benchvl",
        "hidden_size": 1536,
        "num_hidden_layers": 28,
        "torch_dtype": "bfloat16",
    }
    out["config.json"] = _text_file(folder / "config.json", json.dumps(config, indent=2))
    out["generation_config.json"] = _text_file(folder / "generation_config.json", '{"max_new_tokens": 512}\n')
    out["tokenizer_config.json"] = _text_file(
        folder / "tokenizer_config.json", '{"model_max_length": 32768, "chat_template": "{{ messages }}"}\n'
    )
    out["special_tokens_map.json"] = _text_file(
        folder / "special_tokens_map.json", '{"eos_token": "<eos>"}\n'
    )
    out["README.md"] = _text_file(folder / "README.md", "# bench model\nShaped like a Hub model of 2026.\n")
    out[".gitattributes"] = _text_file(
        folder / ".gitattributes",
        "".join(f"*.{e} filter=lfs diff=lfs merge=lfs -text\n" for e in ("safetensors", "bin", "model")),
    )
    return out


GENERATORS: dict[str, tuple[str, Callable[[Path, Any], dict[str, str]]]] = {
    "large-file": ("model", _large_file),
    "chat-7b-scaled": ("model", _chat_model),
    "chat-7b-capped": ("model", _chat_model_capped),
    "small-files": ("dataset", _small_files),
    "realhub": ("model", _realhub_model),
}
# Repos sized by their own table rather than by SCALES (so adding one leaves the others' manifests valid).
OWN_SIZES: dict[str, dict[str, Any]] = {"realhub": REALHUB_SCALES}


GIT_REPO = "chat-7b-git"
GIT_SOURCE = "chat-7b-capped"
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.model")
# git-lfs's filters given through the environment (git >= 2.31), so no global git config is touched.
GIT_LFS_ENV = {
    "GIT_CONFIG_COUNT": "4",
    "GIT_CONFIG_KEY_0": "filter.lfs.process",
    "GIT_CONFIG_VALUE_0": "git-lfs filter-process",
    "GIT_CONFIG_KEY_1": "filter.lfs.smudge",
    "GIT_CONFIG_VALUE_1": "git-lfs smudge -- %f",
    "GIT_CONFIG_KEY_2": "filter.lfs.clean",
    "GIT_CONFIG_VALUE_2": "git-lfs clean -- %f",
    "GIT_CONFIG_KEY_3": "filter.lfs.required",
    "GIT_CONFIG_VALUE_3": "true",
    "GIT_TERMINAL_PROMPT": "0",
}


def ensure_git_repo(root: Path, scale: str) -> BenchRepo:
    """A git work tree with the LFS objects in ``.git/lfs/objects``, holding the files of the capped
    scenario's repo: what `git clone` (with git-lfs) and `hubget clone` fetch from `hubget serve`."""
    source = ensure_repo(root, GIT_SOURCE, scale)
    folder = root / "models" / OWNER / GIT_REPO
    stamp = folder / ".git" / "bench-manifest.json"
    files = {f.path: {"size": f.size, "sha256": f.sha256} for f in source.files}
    if stamp.is_file() and json.loads(stamp.read_text()) == files:
        return _repo(GIT_REPO, "model", folder, files)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = {**os.environ, **GIT_LFS_ENV}

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
            cwd=folder,
            env=env,
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    for f in source.files:
        (folder / f.path).parent.mkdir(parents=True, exist_ok=True)
        os.link(source.folder / f.path, folder / f.path)  # git-lfs copies them into .git/lfs/objects
    (folder / ".gitattributes").write_text(
        "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
    )
    git("add", "-A")
    git("commit", "-q", "-m", "weights")
    stamp.write_text(json.dumps(files))
    return _repo(GIT_REPO, "model", folder, files)


def ensure_repo(root: Path, name: str, scale: str) -> BenchRepo:
    """The repo ``name`` at ``scale`` under ``root``, generated unless its manifest says it is there."""
    if name == GIT_REPO:
        return ensure_git_repo(root, scale)
    repo_type, generate = GENERATORS[name]
    sizes = OWN_SIZES[name][scale] if name in OWN_SIZES else SCALES[scale]
    folder = root / ("models" if repo_type == "model" else "datasets") / OWNER / name
    manifest = root / ".manifests" / f"{name}.json"
    wanted = json.loads(json.dumps({"scale": scale, "sizes": sizes.__dict__}))  # tuples as JSON gives them
    if manifest.is_file():
        saved = json.loads(manifest.read_text())
        if saved.get("key") == wanted and all((folder / p).is_file() for p in saved["files"]):
            return _repo(name, repo_type, folder, saved["files"])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    hashes = generate(folder, sizes)
    files = {p: {"size": (folder / p).stat().st_size, "sha256": h} for p, h in hashes.items()}
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"key": wanted, "files": files}, indent=1))
    return _repo(name, repo_type, folder, files)


def _repo(name: str, repo_type: str, folder: Path, files: dict[str, dict[str, object]]) -> BenchRepo:
    entries = tuple(
        RepoFile(path, int(meta["size"]), str(meta["sha256"]))  # type: ignore[call-overload]
        for path, meta in sorted(files.items())
    )
    return BenchRepo(f"{OWNER}/{name}", repo_type, folder, entries)
