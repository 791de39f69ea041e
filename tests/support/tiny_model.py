"""A tiny, real transformers causal LM (random weights from a fixed seed) written as a plain repo folder.

``build_tiny_causal_lm`` produces what a hub repo of a real LLM holds, at a few hundred KB:
config.json, generation_config.json, tokenizer files, model.safetensors (or shards + index) and,
with ``both_formats``, the same weights as pytorch_model.bin (or shards + index) as internlm2-chat-7b
ships them. With ``remote_code`` the config names a custom configuration and modeling module through
``auto_map``, so loading needs ``trust_remote_code=True``.

Everything is built offline: the tokenizer is a word-level ``tokenizers`` model, no hub access.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

VOCAB_WORDS = (
    "the a an of to in and is was it that on for with as at by from this be are or not but had his her "
    "they we you he she model weights hub download cache fast file byte token layer head attention "
    "loss train test run data one two three four five six seven eight nine ten hello world"
).split()
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
REFERENCE_TEXT = "hello world the model weights are in the cache"

# Names of the custom code files of the remote-code variant (like internlm2's).
REMOTE_CONFIG_FILE = "configuration_tiny.py"
REMOTE_MODELING_FILE = "modeling_tiny.py"
REMOTE_MODEL_TYPE = "tiny_remote"

_CONFIGURATION_SOURCE = '''\
"""Configuration of TinyRemote, a custom architecture loaded with trust_remote_code=True."""

from transformers import LlamaConfig


class TinyRemoteConfig(LlamaConfig):
    model_type = "{model_type}"
'''

_MODELING_SOURCE = '''\
"""TinyRemote: a causal LM whose code ships with the checkpoint (auto_map), like internlm2's."""

from transformers import LlamaForCausalLM, LlamaModel

from .configuration_tiny import TinyRemoteConfig

# Read by tests to tell which copy of this file transformers imported.
REMOTE_CODE_MARKER = "{marker}"


class TinyRemoteModel(LlamaModel):
    config_class = TinyRemoteConfig


class TinyRemoteForCausalLM(LlamaForCausalLM):
    config_class = TinyRemoteConfig
'''


def tiny_config_kwargs() -> dict[str, Any]:
    """Shape of the model: about 100k float32 parameters (~400 KB)."""
    return {
        "vocab_size": len(SPECIAL_TOKENS) + len(VOCAB_WORDS),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 3,
    }


def build_tokenizer() -> Any:
    """A word-level fast tokenizer with a fixed vocabulary, built without any download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + tuple(VOCAB_WORDS))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )


def build_model(*, seed: int = 0) -> Any:
    """The tiny Llama-architecture model with weights drawn from ``seed`` (in eval mode)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**tiny_config_kwargs())
    model = LlamaForCausalLM(config)
    # Normal init leaves norms at 1 and some tensors at 0; randomise all so every byte matters.
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model.eval()


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _split_state_dict(state: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    names = sorted(state)
    size = -(-len(names) // parts)
    return [{n: state[n] for n in names[i : i + size]} for i in range(0, len(names), size)]


def _write_weights(dest: Path, state: dict[str, Any], *, sharded: bool, both_formats: bool) -> None:
    import torch
    from safetensors.torch import save_file

    # Contiguous, unshared copies: safetensors refuses shared storage, and both formats get equal bytes.
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    total_size = sum(t.numel() * t.element_size() for t in state.values())
    formats = [("model", ".safetensors")] + ([("pytorch_model", ".bin")] if both_formats else [])
    for stem, ext in formats:
        shards = _split_state_dict(state, 3) if sharded else [state]
        weight_map: dict[str, str] = {}
        for i, shard in enumerate(shards, start=1):
            name = f"{stem}-{i:05d}-of-{len(shards):05d}{ext}" if sharded else f"{stem}{ext}"
            if ext == ".safetensors":
                save_file(shard, str(dest / name), metadata={"format": "pt"})
            else:
                torch.save(shard, dest / name)
            weight_map.update(dict.fromkeys(shard, name))
        if sharded:
            index = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
            _write_json(dest / f"{stem}{ext}.index.json", index)


def _write_remote_code(dest: Path, marker: str) -> None:
    (dest / REMOTE_CONFIG_FILE).write_text(_CONFIGURATION_SOURCE.format(model_type=REMOTE_MODEL_TYPE))
    (dest / REMOTE_MODELING_FILE).write_text(_MODELING_SOURCE.format(marker=marker))
    config = json.loads((dest / "config.json").read_text())
    config["model_type"] = REMOTE_MODEL_TYPE
    config["architectures"] = ["TinyRemoteForCausalLM"]
    config["auto_map"] = {
        "AutoConfig": "configuration_tiny.TinyRemoteConfig",
        "AutoModel": "modeling_tiny.TinyRemoteModel",
        "AutoModelForCausalLM": "modeling_tiny.TinyRemoteForCausalLM",
    }
    _write_json(dest / "config.json", config)


def build_tiny_causal_lm(
    dest: Path,
    *,
    seed: int = 0,
    remote_code: bool = False,
    both_formats: bool = False,
    sharded: bool = False,
    marker: str | None = None,
) -> None:
    """Write the tiny model, its tokenizer and generation config into the folder ``dest``.

    ``marker`` (remote-code variant only) is embedded in modeling_tiny.py as ``REMOTE_CODE_MARKER``;
    it defaults to a string derived from ``seed``.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model = build_model(seed=seed)
    model.config.save_pretrained(dest)
    model.generation_config.save_pretrained(dest)
    build_tokenizer().save_pretrained(dest)
    _write_weights(dest, model.state_dict(), sharded=sharded, both_formats=both_formats)
    if remote_code:
        _write_remote_code(dest, marker if marker is not None else f"tiny-remote-seed-{seed}")
    (dest / "README.md").write_text(
        textwrap.dedent(f"""\
            # tiny causal LM (seed {seed})

            Random weights, for tests only.
            """)
    )


def reference_input_ids() -> Any:
    """The fixed input (batch of one) the reference logits are computed on."""
    import torch

    ids = build_tokenizer()(REFERENCE_TEXT, return_tensors="pt")["input_ids"]
    return ids.to(torch.long)


def reference_logits(*, seed: int = 0) -> Any:
    """Logits of the original in-memory model (same ``seed``) on ``reference_input_ids()``."""
    import torch

    model = build_model(seed=seed)
    with torch.no_grad():
        return model(reference_input_ids()).logits


def reference_generation(*, seed: int = 0, max_new_tokens: int = 8) -> Any:
    """Greedy tokens the original model generates after ``reference_input_ids()``."""
    return greedy_generate(build_model(seed=seed), max_new_tokens=max_new_tokens)


def greedy_generate(model: Any, *, max_new_tokens: int = 8) -> Any:
    """Deterministic ``generate`` on the reference input (no sampling), as both sides must call it."""
    import torch

    ids = reference_input_ids()
    with torch.no_grad():
        return model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
        )


def model_logits(model: Any) -> Any:
    """Logits of a loaded model on the reference input."""
    import torch

    with torch.no_grad():
        return model(reference_input_ids()).logits
