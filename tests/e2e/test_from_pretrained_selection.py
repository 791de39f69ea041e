"""Which files a from_pretrained call makes hubget fetch, decided from the repo listing alone.

The listings are those of real repos' shapes (internlm2-chat-7b ships both weight formats, sharded);
transformers' own local-folder loader is the reference for the order of preference.
"""

from __future__ import annotations

import json

import pytest

from hubget.errors import ProtocolError, UnsafePathError
from hubget.integrations.transformers_fetch import class_kind, is_hub_id
from hubget.integrations.transformers_files import (
    choose_weights,
    metadata_files,
    shards_from_index,
    unknown_class_ignores,
)

INTERNLM2_LIKE = [
    ".gitattributes",
    "README.md",
    "config.json",
    "configuration_internlm2.py",
    "generation_config.json",
    "modeling_internlm2.py",
    "tokenization_internlm2.py",
    "tokenization_internlm2_fast.py",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "model-00001-of-00008.safetensors",
    "model-00002-of-00008.safetensors",
    "model.safetensors.index.json",
    "pytorch_model-00001-of-00008.bin",
    "pytorch_model-00002-of-00008.bin",
    "pytorch_model.bin.index.json",
    "assets/logo.png",
    "original/params.json",
]


def test_metadata_files_are_the_small_loader_files_only():
    chosen = metadata_files(INTERNLM2_LIKE)
    assert chosen == sorted(
        [
            ".gitattributes",
            "config.json",
            "configuration_internlm2.py",
            "generation_config.json",
            "modeling_internlm2.py",
            "tokenization_internlm2.py",
            "tokenization_internlm2_fast.py",
            "tokenizer.model",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ]
    )


def test_metadata_files_of_a_subfolder_keep_top_level_code_and_chat_templates():
    paths = [
        "config.json",
        "modeling_x.py",
        "tokenizer/tokenizer.json",
        "tokenizer/additional_chat_templates/tool.jinja",
        "tokenizer/deeper/other.json",
        "text_encoder/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]
    assert metadata_files(paths, "tokenizer") == [
        "config.json",
        "modeling_x.py",
        "tokenizer/additional_chat_templates/tool.jinja",
        "tokenizer/tokenizer.json",
    ]


@pytest.mark.parametrize(
    ("use_safetensors", "index"),
    [(None, "model.safetensors.index.json"), (True, "model.safetensors.index.json"),
     (False, "pytorch_model.bin.index.json")],
)  # fmt: skip
def test_one_weight_format_is_chosen_from_a_repo_with_both(use_safetensors, index):
    choice = choose_weights(INTERNLM2_LIKE, use_safetensors=use_safetensors)
    assert choice.index == index
    assert choice.files == []


def test_single_file_beats_the_index_and_bin_is_the_fallback():
    both = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
    assert choose_weights(both).files == ["model.safetensors"]
    assert choose_weights(["pytorch_model.bin", "config.json"]).files == ["pytorch_model.bin"]
    assert choose_weights(["pytorch_model.bin"], use_safetensors=True).files == []
    assert choose_weights(["config.json"]).files == [] and choose_weights(["config.json"]).index is None


def test_variant_subfolder_gguf_and_explicit_weights():
    paths = ["unet/model.fp16.safetensors", "unet/model.safetensors"]
    assert choose_weights(paths, subfolder="unet", variant="fp16").files == ["unet/model.fp16.safetensors"]
    assert choose_weights(paths, subfolder="unet/").files == ["unet/model.safetensors"]
    assert choose_weights(["q4.gguf", "model.safetensors"], gguf_file="q4.gguf").files == ["q4.gguf"]
    assert choose_weights(
        ["w/custom.safetensors.index.json"], explicit="w/custom.safetensors.index.json"
    ).index
    with pytest.raises(UnsafePathError):
        choose_weights(paths, explicit="../../etc/passwd")


def test_adapter_repo_gets_its_adapter_weights():
    paths = ["adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"]
    assert choose_weights(paths).files == ["adapter_config.json", "adapter_model.safetensors"]
    assert choose_weights(paths, use_safetensors=False).files == ["adapter_config.json", "adapter_model.bin"]


def test_shards_come_from_the_index_and_stay_inside_the_repo():
    index = {"weight_map": {"a": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors"}}
    assert shards_from_index("sub/model.safetensors.index.json", json.dumps(index)) == [
        "sub/model-00001-of-00002.safetensors",
        "sub/model-00002-of-00002.safetensors",
    ]
    with pytest.raises(UnsafePathError):
        shards_from_index("model.safetensors.index.json", json.dumps({"weight_map": {"a": "../../x"}}))
    with pytest.raises(ProtocolError):
        shards_from_index("model.safetensors.index.json", "[1, 2]")


def test_unknown_classes_skip_only_duplicate_bin_weights():
    ignores = unknown_class_ignores(INTERNLM2_LIKE + ["training_args.bin", "old/pytorch_model.bin"], None)
    assert ignores == ["pytorch_model-00001-of-00008.bin", "pytorch_model-00002-of-00008.bin",
                       "pytorch_model.bin.index.json"]  # fmt: skip
    assert unknown_class_ignores(INTERNLM2_LIKE, False) == []


def test_class_kinds_and_hub_ids(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    assert class_kind(AutoModelForCausalLM) == "model"
    assert class_kind(LlamaForCausalLM) == "model"
    assert class_kind(AutoTokenizer) == "files"
    assert class_kind(AutoConfig) == "files"
    assert class_kind(dict) == "unknown"
    assert is_hub_id("org/name") and is_hub_id("gpt2") and is_hub_id("Org/na.me-1_x")
    assert not is_hub_id(str(tmp_path)) and not is_hub_id("org/../x") and not is_hub_id("https://x/y")
    assert not is_hub_id("a/b/c") and not is_hub_id(tmp_path)
