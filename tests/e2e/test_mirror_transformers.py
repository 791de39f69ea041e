"""transformers' own ``from_pretrained`` (remote code, sharded safetensors) with HF_ENDPOINT at a cold
`hubget serve --upstream` in front of the hub replica (Xet-backed files, signed bridge redirects): the
loaded model's tensors equal the original's, its remote code is the repo's, and the upstream sent each
LFS byte about once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.hubreplica import BRIDGE, HubReplica, make_repo
from tests.support.mirrorserver import MirrorServer, finish_client, start_client

pytest.importorskip("transformers")
pytest.importorskip("torch")

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED = 7
MARKER = "through-the-mirror"

LOAD = """
import torch
from transformers import AutoModelForCausalLM
from tests.support.tiny_model import build_model

model = AutoModelForCausalLM.from_pretrained("org/tiny-remote", trust_remote_code=True)
mod = sys.modules[type(model).__module__]
want = build_model(seed=SEED).state_dict()
got = model.state_dict()
emit({
    "keys": sorted(got) == sorted(want),
    "different": [k for k in want if k in got and not torch.equal(got[k], want[k])],
    "class": type(model).__name__,
    "marker": getattr(mod, "REMOTE_CODE_MARKER", None),
})
"""


def test_from_pretrained_with_remote_code_through_a_cold_mirror(tmp_path: Path):
    from tests.support.tiny_model import build_tiny_causal_lm

    staging = tmp_path / "staging"
    build_tiny_causal_lm(staging, seed=SEED, remote_code=True, sharded=True, marker=MARKER)
    files = {p.relative_to(staging).as_posix(): p.read_bytes() for p in staging.rglob("*") if p.is_file()}
    assert any(name.startswith("modeling_") for name in files)
    with HubReplica([make_repo("org/tiny-remote", files)]) as hub:
        lfs = sum(f.size for f in hub.repos[("model", "org/tiny-remote")].files.values() if f.lfs)
        with MirrorServer(tmp_path / "root", hub.hub_url) as mirror:
            for name in ("cold", "warm"):
                out = finish_client(
                    start_client(
                        LOAD.replace("SEED", str(SEED)),
                        endpoint=mirror.url,
                        hf_home=tmp_path / name,
                        env={"PYTHONPATH": str(REPO_ROOT)},
                    )
                )
                assert out == {
                    "keys": True,
                    "different": [],
                    "class": "TinyRemoteForCausalLM",
                    "marker": MARKER,
                }
                if name == "cold":
                    assert 0 < hub.counters.bytes_sent[BRIDGE] <= 1.1 * lfs
                    hub.reset()
            assert hub.counters.requests() == []  # the warm load asked upstream nothing
