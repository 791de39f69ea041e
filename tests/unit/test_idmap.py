"""Hugging Face -> ModelScope id candidates: explicit id, user file, built-in table, same id."""

from __future__ import annotations

import json

import pytest

from hubget.errors import UsageError
from hubget.models import RemoteFile, RepoRef, Snapshot
from hubget.sources.idmap import BUILTIN_ORG, BUILTIN_PAIR, EXPLICIT, SAME_ID, USER_FILE, IdMap
from hubget.sources.matching import model_match, same_bytes


def ids(cands) -> list[tuple[str, str]]:
    return [(c.repo_id, c.kind) for c in cands]


def test_builtin_pair_then_org_rename_then_same_id():
    cands = IdMap().modelscope_candidates("internlm/internlm2-chat-7b")
    assert ids(cands) == [
        ("Shanghai_AI_Laboratory/internlm2-chat-7b", BUILTIN_PAIR),
        ("internlm/internlm2-chat-7b", SAME_ID),
    ]
    assert cands[0].from_mapping and not cands[1].from_mapping


def test_org_rename_applies_to_models_not_in_the_table():
    cands = IdMap().modelscope_candidates("THUDM/some-new-model")
    assert ids(cands) == [("ZhipuAI/some-new-model", BUILTIN_ORG), ("THUDM/some-new-model", SAME_ID)]
    assert "THUDM -> ZhipuAI" in cands[0].how


def test_model_pair_wins_over_its_organisation_rule():
    # Llama 2 lives under modelscope/, not under the LLM-Research owner of later Llama models.
    first = IdMap().modelscope_candidates("meta-llama/Llama-2-7b-hf")[0]
    assert (first.repo_id, first.kind) == ("modelscope/Llama-2-7b-ms", BUILTIN_PAIR)


def test_lookup_ignores_case_of_the_hf_id():
    assert IdMap().modelscope_candidates("INTERNLM/internlm2-chat-7b")[0].repo_id == (
        "Shanghai_AI_Laboratory/internlm2-chat-7b"
    )


def test_unknown_org_has_only_the_same_id_guess():
    assert ids(IdMap().modelscope_candidates("someone/model")) == [("someone/model", SAME_ID)]


def test_explicit_id_and_user_file_come_first(tmp_path, monkeypatch):
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"acme/foo": "AcmeCN/foo-ms", "acme/*": "AcmeOrg/*"}))
    cands = IdMap.load(mapping).modelscope_candidates("acme/foo", "X/explicit")
    assert ids(cands) == [
        ("X/explicit", EXPLICIT),
        ("AcmeCN/foo-ms", USER_FILE),
        ("AcmeOrg/foo", USER_FILE),
        ("acme/foo", SAME_ID),
    ]
    assert str(mapping) in cands[1].how
    monkeypatch.setenv("HUBGET_ID_MAP", str(mapping))
    assert IdMap.load().modelscope_candidates("acme/bar")[0].repo_id == "AcmeOrg/bar"


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"a/b": "../evil"}', "not a repo id"),
        ('{"a/b": 3}', "not a repo id"),
        ('{"acme/*": "owner/name"}', "owner/\\*"),
    ],
)
def test_bad_mapping_files_are_usage_errors(tmp_path, content, message):
    path = tmp_path / "map.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        IdMap.load(path)


def test_missing_mapping_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        IdMap.load(tmp_path / "absent.json")


def _snap(*files: RemoteFile) -> Snapshot:
    return Snapshot(RepoRef("o/n"), "c", list(files), "test")


def test_same_bytes_needs_equal_size_and_an_equal_hash_of_one_kind():
    a = RemoteFile("w", 10, "u", sha256="a" * 64)
    assert same_bytes(a, RemoteFile("w", 10, "v", sha256="A" * 64))
    assert not same_bytes(a, RemoteFile("w", 11, "v", sha256="a" * 64))
    assert not same_bytes(a, RemoteFile("w", 10, "v", sha256="b" * 64))
    # a git sha1 on one side and a sha256 on the other prove nothing
    assert not same_bytes(
        RemoteFile("c", 3, "u", git_sha1="1" * 40), RemoteFile("c", 3, "v", sha256="a" * 64)
    )


def test_model_match_requires_every_weight_file():
    w1 = RemoteFile("a.safetensors", 10, "u", sha256="1" * 64)
    w2 = RemoteFile("b.safetensors", 10, "u", sha256="2" * 64)
    cfg = RemoteFile("config.json", 2, "u", git_sha1="3" * 40)
    ref = _snap(w1, w2, cfg)
    ok, why = model_match(ref, _snap(w1, w2, RemoteFile("config.json", 5, "v", sha256="4" * 64)))
    assert ok and "2 weight file" in why
    ok, why = model_match(ref, _snap(w1))
    assert not ok and "lacks 1" in why
    ok, why = model_match(ref, _snap(w1, RemoteFile("b.safetensors", 10, "v", sha256="9" * 64)))
    assert not ok and "b.safetensors" in why
    ok, why = model_match(_snap(cfg), _snap(cfg))
    assert not ok and "nothing to compare" in why
