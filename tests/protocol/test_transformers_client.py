"""transformers' own from_pretrained, pointed at `hubget serve` with HF_ENDPOINT, loads the tiny model
(and its remote code) with outputs identical to the model that was saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.protocol.clientrun import run_client
from tests.support.hubserver import hub_server
from tests.support.repos import GitRepoBuilder

pytest.importorskip("transformers")
pytest.importorskip("torch")

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_hub(tmp_path_factory: pytest.TempPathFactory):
    from tests.support.tiny_model import build_tiny_causal_lm

    root = tmp_path_factory.mktemp("tinyhub")
    build_tiny_causal_lm(root / "models/org/tiny", seed=3, sharded=True, both_formats=True)
    # The remote-code variant is served from git + git-lfs, the other from a plain folder.
    staging = tmp_path_factory.mktemp("staging")
    build_tiny_causal_lm(staging, seed=4, remote_code=True, marker="served-by-hubget")
    repo = GitRepoBuilder(root / "models/org/tiny-remote")
    repo.commit(
        {p.relative_to(staging).as_posix(): p.read_bytes() for p in staging.rglob("*") if p.is_file()}
    )
    with hub_server(root) as url:
        yield url


def test_from_pretrained_through_hf_endpoint(tiny_hub: str, tmp_path: Path):
    out = run_client(
        """
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from tests.support.tiny_model import model_logits, reference_logits, REFERENCE_TEXT

        model = AutoModelForCausalLM.from_pretrained("org/tiny")
        tok = AutoTokenizer.from_pretrained("org/tiny")
        remote = AutoModelForCausalLM.from_pretrained("org/tiny-remote", trust_remote_code=True)
        mod = sys.modules[type(remote).__module__]
        emit({
            "same": bool(torch.equal(model_logits(model), reference_logits(seed=3))),
            "same_remote": bool(torch.equal(model_logits(remote), reference_logits(seed=4))),
            "remote_class": type(remote).__name__,
            "marker": getattr(mod, "REMOTE_CODE_MARKER", None),
            "tokens": tok(REFERENCE_TEXT)["input_ids"],
        })
        """,
        endpoint=tiny_hub,
        hf_home=tmp_path / "hf",
        env={"PYTHONPATH": str(REPO_ROOT)},
    )
    assert out["same"] is True
    assert out["same_remote"] is True
    assert out["marker"] == "served-by-hubget"
    assert out["remote_class"] != "LlamaForCausalLM"
    assert len(out["tokens"]) >= 5
