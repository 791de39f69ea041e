"""The façade: the one place where sources, the engine and layouts meet.

- ``pipeline``: ``fetch_snapshot``, the source -> plan -> engine -> layout run every entry point uses;
- ``targets``: which layout a download writes with (HF cache, local_dir, ModelScope cache);
- ``hf``: drop-ins for huggingface_hub's ``snapshot_download`` and ``hf_hub_download``;
- ``modelscope``: drop-ins for the modelscope SDK's downloads;
- ``auto``: several hubs at once (``source="auto"``), each file from every source with the same bytes.
"""

from __future__ import annotations

from hubget.api.hf import hf_hub_download, snapshot_download
from hubget.api.pipeline import FetchReport, FileStatus, fetch_snapshot, select_files
from hubget.api.targets import check_repo_type, hf_layout, modelscope_layout, offline_snapshot

__all__ = [
    "FetchReport",
    "FileStatus",
    "check_repo_type",
    "fetch_snapshot",
    "hf_hub_download",
    "hf_layout",
    "modelscope_layout",
    "offline_snapshot",
    "select_files",
    "snapshot_download",
]
