"""hubget: get pretrained model weights onto disk, fast, resumable and verified.

import hubget
path = hubget.snapshot_download("internlm/internlm2-chat-7b", local_dir="./internlm2-chat-7b")
path = hubget.snapshot_download("Shanghai_AI_Laboratory/internlm2-chat-7b", source="modelscope")
model = hubget.from_pretrained(AutoModelForCausalLM, "internlm/internlm2-chat-7b", trust_remote_code=True)
"""

from __future__ import annotations

from typing import Any

from hubget.api import fetch_snapshot, hf_hub_download, snapshot_download
from hubget.errors import HubgetError
from hubget.version import __version__ as __version__

# Imported on first use: they pull in transformers, the ModelScope protocol or git.
_LAZY = {
    "from_pretrained": "hubget.integrations.transformers",
    "patch_transformers": "hubget.integrations.transformers",
    "unpatch_transformers": "hubget.integrations.transformers",
    "clone": "hubget.gitclone",
    "pull": "hubget.gitclone",
    "modelscope_snapshot_download": "hubget.api.modelscope",
    "modelscope_file_download": "hubget.api.modelscope",
    "upload": "hubget.api.upload",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hubget' has no attribute {name!r}")


__all__ = [
    "HubgetError",
    "fetch_snapshot",
    "hf_hub_download",
    "snapshot_download",
    *_LAZY,
]
