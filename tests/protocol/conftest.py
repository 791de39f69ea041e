"""A served ROOT shared by the protocol tests: plain-folder, git (work tree and bare), dataset and
single-name repos, with the exact bytes every revision must hold."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.hubserver import hub_server
from tests.support.repos import GitRepoBuilder, llm_repo_files, write_folder_repo


@dataclass
class HubRepos:
    root: Path
    plain: dict[str, bytes]
    dataset: dict[str, bytes]
    solo: dict[str, bytes]
    git_commits: dict[str, str] = field(default_factory=dict)  # name -> commit sha
    git_files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> files


def build_hub_root(root: Path) -> HubRepos:
    plain = llm_repo_files(seed=1)
    write_folder_repo(root / "models/org/plain", plain)

    v1 = llm_repo_files(seed=2)
    repo = GitRepoBuilder(root / "models/org/git")
    c1 = repo.commit(v1, "first version")
    repo.tag("v1.0")
    v2 = {k: v for k, v in v1.items() if k != "tokenizer.model"}
    v2["config.json"] = b'{"architectures": ["XForCausalLM"], "model_type": "x", "version": 2}\n'
    v2["extra/notes.txt"] = b"second commit\n"
    c2 = repo.commit(
        {"config.json": v2["config.json"], "extra/notes.txt": v2["extra/notes.txt"]},
        "v2",
        delete=("tokenizer.model",),
    )
    repo.branch("dev", c1)
    repo.checkout("dev")
    dev = {**v1, "dev-only.txt": b"only on dev\n", "weights/dev.safetensors": os.urandom(3000)}
    c3 = repo.commit({k: dev[k] for k in ("dev-only.txt", "weights/dev.safetensors")}, "dev work")
    repo.checkout("main")
    repo.update_ref("refs/pr/1", c3)
    repo.make_bare(root / "models/org/bare.git")

    dataset = {
        "data/train-00000-of-00002.parquet": os.urandom(20_000),
        "data/train-00001-of-00002.parquet": os.urandom(20_001),
        "data/test.jsonl": b'{"text": "hello"}\n' * 50,
        "README.md": b"---\nlicense: mit\n---\n# dataset\n",
    }
    write_folder_repo(root / "datasets/org/ds", dataset)
    solo = {"config.json": b'{"model_type": "solo"}\n', "model.safetensors": os.urandom(5000)}
    write_folder_repo(root / "models/solo", solo)
    return HubRepos(
        root=root,
        plain=plain,
        dataset=dataset,
        solo=solo,
        git_commits={"v1.0": c1, "main": c2, "dev": c3},
        git_files={c1: v1, c2: v2, c3: dev},
    )


@pytest.fixture(scope="session")
def hub_repos(tmp_path_factory: pytest.TempPathFactory) -> HubRepos:
    return build_hub_root(tmp_path_factory.mktemp("hubroot"))


@pytest.fixture(scope="session")
def hub_url(hub_repos: HubRepos) -> Iterator[str]:
    with hub_server(hub_repos.root) as url:
        yield url
