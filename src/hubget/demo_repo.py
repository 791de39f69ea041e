"""A generated repo shaped like a real LLM checkpoint, for `hubget demo` and benchmarks:
sharded safetensors with an index, config, tokenizer files and custom modelling code."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import BinaryIO

BLOCK = 1024 * 1024


def _append_random(f: BinaryIO, size: int) -> None:
    remaining = size
    while remaining:
        n = min(BLOCK, remaining)
        f.write(os.urandom(n))
        remaining -= n


def _write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        _append_random(f, size)


def _safetensors_shard(path: Path, name: str, size: int) -> None:
    """A valid safetensors file holding one uint8 tensor of ``size`` bytes."""
    header = json.dumps({name: {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        _append_random(f, size)


def make_llm_like_repo(folder: Path, *, shards: int = 4, shard_bytes: int = 16 * BLOCK) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for i in range(1, shards + 1):
        name = f"model-{i:05d}-of-{shards:05d}.safetensors"
        tensor = f"model.layers.{i - 1}.weight"
        _safetensors_shard(folder / name, tensor, shard_bytes)
        weight_map[tensor] = name
    index = {"metadata": {"total_size": shards * shard_bytes}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config = {
        "architectures": ["DemoForCausalLM"],
        "auto_map": {"AutoModelForCausalLM": "modeling_demo.DemoForCausalLM"},
        "model_type": "demo",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text('{"max_new_tokens": 32}\n')
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 4096}\n')
    _write_random(folder / "tokenizer.model", 512 * 1024)
    (folder / "modeling_demo.py").write_text("# custom modelling code, loaded with trust_remote_code\n")
    (folder / "README.md").write_text("# demo\nA generated repo shaped like a sharded chat model.\n")
    return folder
