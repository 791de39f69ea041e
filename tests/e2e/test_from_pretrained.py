"""transformers loads what hubget fetched from a local `hubget serve`: same logits, same tokens.

A tiny real causal LM (random weights, fixed seed) and its tokenizer are published in a local hub
in three shapes: plain safetensors; custom code through ``auto_map`` (trust_remote_code); both
weight formats, sharded, like internlm2-chat-7b. The server records every request with its
User-Agent, so a test can show which client fetched which file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import huggingface_hub
import pytest
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

import hubget
from hubget.integrations import transformers as hubget_tf
from tests.support.tiny_model import (
    REFERENCE_TEXT,
    REMOTE_MODEL_TYPE,
    REMOTE_MODELING_FILE,
    build_tiny_causal_lm,
    greedy_generate,
    model_logits,
    reference_generation,
    reference_input_ids,
    reference_logits,
)

OWNER = "hubget-test"
PLAIN, REMOTE, BOTH = f"{OWNER}/tiny-llm", f"{OWNER}/tiny-remote", f"{OWNER}/tiny-both"
ELSEWHERE = (
    f"{OWNER}/tiny-code-elsewhere"  # seed-0 weights; auto_map names REMOTE's code ("repo--module.Class")
)
GIT = f"{OWNER}/tiny-git"  # a git repo: tag v1 holds seed 3; main holds seed 4 and a seed-5 model in student/
SEEDS = {PLAIN: 0, REMOTE: 1, BOTH: 2, "v1": 3, "main": 4, "student": 5}
REMOTE_MARKER = "published-by-the-test-hub-7f3a"


@dataclass
class Recorded:
    method: str
    path: str  # for ModelScope file requests: the FilePath parameter
    user_agent: str


@dataclass
class Hub:
    url: str
    root: Path
    requests: list[Recorded] = field(default_factory=list)

    def repo(self, repo_id: str) -> Path:
        return self.root / "models" / repo_id

    def fetched(self, repo_id: str) -> set[str]:
        """Repo files whose bytes were requested (HF resolve GETs and ModelScope file GETs)."""
        out = set()
        for r in self.requests:
            if r.method != "GET":
                continue
            if f"/{repo_id}/resolve/" in r.path:
                out.add(r.path.split("/resolve/", 1)[1].split("/", 1)[1])
            elif r.path.startswith(f"/api/v1/models/{repo_id}/repo?"):
                out.update(parse_qs(urlsplit(r.path).query).get("FilePath", []))
        return out


@contextlib.contextmanager
def recording_hub(root: Path, tokens: list[str] | None = None) -> Iterator[Hub]:
    """`hubget serve` on ``root`` in a background thread, with a middleware that records requests."""
    from aiohttp import web

    from hubget.server.app import create_app, serve_forever

    hub = Hub("", root)

    @web.middleware
    async def record(request: web.Request, handler):  # noqa: ANN202
        hub.requests.append(Recorded(request.method, request.path_qs, request.headers.get("User-Agent", "")))
        return await handler(request)

    app = create_app(root, tokens=tokens)
    app.middlewares.append(record)
    loop = asyncio.new_event_loop()
    bound: queue.Queue[str | BaseException] = queue.Queue()
    tasks: list[asyncio.Task[None]] = []

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            tasks.append(asyncio.ensure_future(serve_forever(app, "127.0.0.1", 0, bound.put)))
            with contextlib.suppress(asyncio.CancelledError):
                await tasks[0]

        try:
            loop.run_until_complete(main())
        except BaseException as exc:
            bound.put(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="recording-hub", daemon=True)
    thread.start()
    got = bound.get(timeout=60)
    if isinstance(got, BaseException):
        raise RuntimeError(f"hubget serve did not start: {got!r}")
    hub.url = got
    try:
        yield hub
    finally:
        loop.call_soon_threadsafe(tasks[0].cancel)
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    build_tiny_causal_lm(root / "models" / PLAIN, seed=SEEDS[PLAIN])
    build_tiny_causal_lm(root / "models" / REMOTE, seed=SEEDS[REMOTE], remote_code=True, marker=REMOTE_MARKER)
    build_tiny_causal_lm(root / "models" / BOTH, seed=SEEDS[BOTH], both_formats=True, sharded=True)
    build_git_repo(root / "models" / GIT, tmp_path_factory.mktemp("git-build"))
    build_tiny_causal_lm(root / "models" / ELSEWHERE, seed=SEEDS[PLAIN])
    config_path = root / "models" / ELSEWHERE / "config.json"
    config = json.loads(config_path.read_text())
    config["model_type"] = REMOTE_MODEL_TYPE
    config["auto_map"] = {
        "AutoConfig": f"{REMOTE}--configuration_tiny.TinyRemoteConfig",
        "AutoModelForCausalLM": f"{REMOTE}--modeling_tiny.TinyRemoteForCausalLM",
    }
    config_path.write_text(json.dumps(config))
    return root


def build_git_repo(dest: Path, scratch: Path) -> None:
    from tests.support.repos import GitRepoBuilder

    def model_files(seed: int, prefix: str = "") -> dict[str, bytes]:
        folder = scratch / str(seed)
        build_tiny_causal_lm(folder, seed=seed)
        return {prefix + p.name: p.read_bytes() for p in folder.iterdir()}

    repo = GitRepoBuilder(dest)
    repo.commit(model_files(SEEDS["v1"]), "first model")
    repo.tag("v1")
    repo.commit({**model_files(SEEDS["main"]), **model_files(SEEDS["student"], "student/")}, "retrained")


@pytest.fixture(scope="module")
def references() -> dict[str, tuple[object, object]]:
    return {name: (reference_logits(seed=s), reference_generation(seed=s)) for name, s in SEEDS.items()}


@pytest.fixture(scope="module")
def modules_cache(tmp_path_factory) -> Iterator[Path]:
    """transformers copies remote code into its modules cache (a path fixed when it was imported) and
    imports it as the package ``transformers_modules``; give this module its own, fresh one."""
    import sys

    folder = tmp_path_factory.mktemp("hf-modules")
    saved = [transformers.utils.hub.HF_MODULES_CACHE, transformers.dynamic_module_utils.HF_MODULES_CACHE]

    def forget_modules() -> None:
        for name in [
            n for n in sys.modules if n == "transformers_modules" or n.startswith("transformers_modules.")
        ]:
            del sys.modules[name]

    forget_modules()
    transformers.utils.hub.HF_MODULES_CACHE = str(folder)
    transformers.dynamic_module_utils.HF_MODULES_CACHE = str(folder)
    yield folder
    forget_modules()
    transformers.utils.hub.HF_MODULES_CACHE, transformers.dynamic_module_utils.HF_MODULES_CACHE = saved


@pytest.fixture
def hub(hub_root, modules_cache, tmp_path, monkeypatch) -> Iterator[Hub]:
    with recording_hub(hub_root) as served:
        monkeypatch.setenv("HF_ENDPOINT", served.url)
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", served.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        # transformers' own metadata calls (resolve_revision, model_info) use huggingface_hub's endpoint,
        # read when it was imported, through a shared HfApi: point both at the local hub.
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", served.url)
        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
        for name in (
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "HF_TOKEN",
            "HF_HUB_OFFLINE",
            "TRANSFORMERS_OFFLINE",
        ):
            monkeypatch.delenv(name, raising=False)
        yield served
    assert not hubget_tf.is_patched()


@pytest.fixture
def no_hf_hub_downloads(monkeypatch) -> None:
    """Make transformers' own hub downloads fail loudly: whatever loads must come from hubget."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"transformers downloaded through huggingface_hub: {args} {kwargs}")

    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(transformers.utils.hub, name, refuse)


def hf_snapshot(tmp_path: Path, repo_id: str) -> Path:
    repo = tmp_path / "hf-home" / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = (repo / "refs" / "main").read_text().strip()
    return repo / "snapshots" / commit


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_model(model, repo_id: str, references) -> None:
    logits, generated = references[repo_id]
    assert torch.equal(model_logits(model), logits)
    assert torch.equal(greedy_generate(model), generated)


def assert_all_by_hubget(hub: Hub) -> None:
    assert hub.requests, "no request reached the hub"
    agents = {r.user_agent.split(" ")[0].split("/")[0] for r in hub.requests}
    assert agents == {"hubget"}, f"requests by other clients: {agents}"


# -- Hugging Face protocol ----------------------------------------------------------------------


def test_model_and_tokenizer_through_hubget_match_the_original(
    hub, tmp_path, references, no_hf_hub_downloads
):
    tokenizer = hubget.from_pretrained(AutoTokenizer, PLAIN)
    snapshot = hf_snapshot(tmp_path, PLAIN)
    # A tokenizer needs no weights: none were fetched.
    assert "model.safetensors" not in files_in(snapshot)
    assert hub.fetched(PLAIN) == {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert (
        tokenizer(REFERENCE_TEXT, return_tensors="pt")["input_ids"].tolist() == reference_input_ids().tolist()
    )
    assert tokenizer.name_or_path == PLAIN

    model = hubget.from_pretrained(AutoModelForCausalLM, PLAIN)
    assert_same_model(model, PLAIN, references)
    assert model.config._name_or_path == PLAIN
    published = hub.repo(PLAIN)
    assert sha256(snapshot / "model.safetensors") == sha256(published / "model.safetensors")
    assert (snapshot / "model.safetensors").is_symlink()  # the HF cache layout: snapshot -> blob
    assert "README.md" not in files_in(snapshot)
    assert_all_by_hubget(hub)

    config = hubget.from_pretrained(AutoConfig, PLAIN)
    assert config.hidden_size == model.config.hidden_size
    out = tokenizer.decode(greedy_generate(model)[0], skip_special_tokens=True)
    assert out.startswith(REFERENCE_TEXT)


def test_remote_code_is_fetched_by_hubget_and_imported_from_its_snapshot(hub, tmp_path, references):
    with pytest.raises(ValueError, match="trust_remote_code"):
        hubget.from_pretrained(AutoModelForCausalLM, REMOTE, trust_remote_code=False)

    model = hubget.from_pretrained(AutoModelForCausalLM, REMOTE, trust_remote_code=True)
    assert type(model).__name__ == "TinyRemoteForCausalLM"
    assert_same_model(model, REMOTE, references)

    snapshot = hf_snapshot(tmp_path, REMOTE)
    published = hub.repo(REMOTE)
    for name in ("configuration_tiny.py", REMOTE_MODELING_FILE):
        assert (snapshot / name).read_bytes() == (published / name).read_bytes()
        assert name in hub.fetched(REMOTE)
    module = inspect.getmodule(type(model))
    assert module.REMOTE_CODE_MARKER == REMOTE_MARKER
    # transformers names a local folder's code module after the folder: hubget's snapshot (the commit).
    assert module.__name__.split(".")[1] == snapshot.name
    assert (
        Path(inspect.getsourcefile(type(model))).read_bytes()
        == (snapshot / REMOTE_MODELING_FILE).read_bytes()
    )
    assert_all_by_hubget(hub)


def test_only_the_safetensors_copy_is_fetched_from_a_repo_with_both_formats(hub, tmp_path, references):
    published = hub.repo(BOTH)
    model = hubget.from_pretrained(AutoModelForCausalLM, BOTH)
    assert_same_model(model, BOTH, references)

    snapshot = hf_snapshot(tmp_path, BOTH)
    weights = {p for p in files_in(snapshot) if p.endswith((".safetensors", ".bin", ".index.json"))}
    expected = {p.name for p in published.glob("model*.safetensors*")}
    assert weights == expected and len(expected) == 4  # 3 shards + their index
    fetched = hub.fetched(BOTH)
    assert not {p for p in fetched if "pytorch_model" in p}
    blobs = {p.name for p in (snapshot.parent.parent / "blobs").iterdir()}
    assert not blobs & {sha256(p) for p in published.glob("pytorch_model*")}
    bin_bytes = sum(p.stat().st_size for p in published.glob("pytorch_model*"))
    fetched_bytes = sum((published / p).stat().st_size for p in fetched)
    all_bytes = sum(p.stat().st_size for p in published.iterdir())
    assert fetched_bytes <= all_bytes - bin_bytes


def test_use_safetensors_false_fetches_only_the_bin_copy(hub, tmp_path, references):
    model = hubget.from_pretrained(AutoModelForCausalLM, BOTH, use_safetensors=False)
    assert_same_model(model, BOTH, references)
    fetched = hub.fetched(BOTH)
    assert {p for p in fetched if p.startswith("pytorch_model")} == {
        p.name for p in hub.repo(BOTH).glob("pytorch_model*")
    }
    assert not {p for p in fetched if p.startswith("model")}


def test_patch_makes_plain_from_pretrained_calls_go_through_hubget(
    hub, tmp_path, references, no_hf_hub_downloads
):
    original = AutoModelForCausalLM.__dict__["from_pretrained"]
    with hubget.patch_transformers():
        model = AutoModelForCausalLM.from_pretrained(BOTH)
        tokenizer = AutoTokenizer.from_pretrained(BOTH)
        config = AutoConfig.from_pretrained(PLAIN)
        direct = LlamaForCausalLM.from_pretrained(PLAIN)
        remote = AutoModelForCausalLM.from_pretrained(REMOTE, trust_remote_code=True)
    assert AutoModelForCausalLM.__dict__["from_pretrained"] is original
    assert not hubget_tf.is_patched()

    assert_same_model(model, BOTH, references)
    assert_same_model(direct, PLAIN, references)
    assert tokenizer(REFERENCE_TEXT)["input_ids"] == reference_input_ids()[0].tolist()
    assert config.model_type == "llama"
    assert model.config._name_or_path == BOTH
    assert_same_model(remote, REMOTE, references)
    assert inspect.getmodule(type(remote)).__name__.split(".")[1] == hf_snapshot(tmp_path, REMOTE).name
    assert_all_by_hubget(hub)
    # The format preference applies to patched calls too.
    assert not {p for p in hub.fetched(BOTH) if "pytorch_model" in p}
    assert (hf_snapshot(tmp_path, BOTH) / "model.safetensors.index.json").is_file()

    # Outside the block transformers is itself again: its own client fetches (refused here).
    with pytest.raises(OSError) as refused:
        AutoConfig.from_pretrained(REMOTE, force_download=True)
    assert "downloaded through huggingface_hub" in str(refused.value.__context__)


def test_patch_covers_pipeline_and_its_file_probes(hub, tmp_path, references, no_hf_hub_downloads):
    with hubget.patch_transformers():
        pipe = transformers.pipeline("text-generation", model=BOTH)
    assert_same_model(pipe.model, BOTH, references)
    assert pipe.tokenizer(REFERENCE_TEXT)["input_ids"] == reference_input_ids()[0].tolist()
    assert_all_by_hubget_files(hub)
    assert not {p for p in hub.fetched(BOTH) if "pytorch_model" in p}


def test_patch_fetches_remote_code_that_lives_in_another_repo(hub, tmp_path, references, no_hf_hub_downloads):
    with hubget.patch_transformers():
        model = AutoModelForCausalLM.from_pretrained(ELSEWHERE, trust_remote_code=True)
    assert type(model).__name__ == "TinyRemoteForCausalLM"
    assert_same_model(model, PLAIN, references)
    code_snapshot = hf_snapshot(tmp_path, REMOTE)
    assert (code_snapshot / REMOTE_MODELING_FILE).read_bytes() == (
        hub.repo(REMOTE) / REMOTE_MODELING_FILE
    ).read_bytes()
    assert inspect.getmodule(type(model)).REMOTE_CODE_MARKER == REMOTE_MARKER
    # transformers names a hub repo's code module after the commit of the file it was given: hubget's.
    assert code_snapshot.name in inspect.getmodule(type(model)).__name__
    assert hub.fetched(REMOTE) == {"configuration_tiny.py", REMOTE_MODELING_FILE}
    assert_all_by_hubget_files(hub)


def assert_all_by_hubget_files(hub: Hub) -> None:
    file_requests = [r for r in hub.requests if "/resolve/" in r.path]
    assert file_requests and {r.user_agent.split("/")[0] for r in file_requests} == {"hubget"}


def test_patch_as_a_plain_call_and_a_missing_repo_is_an_oserror(hub):
    patch = hubget.patch_transformers()
    try:
        assert hubget_tf.is_patched()
        with pytest.raises(OSError, match="not found"):
            AutoConfig.from_pretrained(f"{OWNER}/no-such-model")
    finally:
        patch.close()
    assert not hubget_tf.is_patched()


def test_offline_reuses_the_cache_without_the_hub(hub, tmp_path, references, monkeypatch):
    hubget.from_pretrained(AutoModelForCausalLM, PLAIN)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    before = len(hub.requests)
    model = hubget.from_pretrained(AutoModelForCausalLM, PLAIN, local_files_only=True)
    assert_same_model(model, PLAIN, references)
    assert len(hub.requests) == before
    with pytest.raises(hubget.HubgetError, match="not in the cache"):
        hubget.from_pretrained(AutoModelForCausalLM, BOTH, local_files_only=True)


# -- ModelScope protocol --------------------------------------------------------------------------


def ms_snapshot(tmp_path: Path, repo_id: str) -> Path:
    return tmp_path / "ms-cache" / "models" / repo_id.replace("/", "--") / "snapshots" / "master"


def test_modelscope_protocol_model_tokenizer_and_remote_code(hub, tmp_path, references, no_hf_hub_downloads):
    model = hubget.from_pretrained(AutoModelForCausalLM, BOTH, source="modelscope")
    tokenizer = hubget.from_pretrained(AutoTokenizer, BOTH, source="modelscope")
    assert_same_model(model, BOTH, references)
    assert tokenizer(REFERENCE_TEXT)["input_ids"] == reference_input_ids()[0].tolist()
    snapshot = ms_snapshot(tmp_path, BOTH)
    assert not [p for p in files_in(snapshot) if "pytorch_model" in p]
    assert not {p for p in hub.fetched(BOTH) if "pytorch_model" in p}
    assert (snapshot / "model-00001-of-00003.safetensors").read_bytes() == (
        hub.repo(BOTH) / "model-00001-of-00003.safetensors"
    ).read_bytes()

    remote = hubget.from_pretrained(AutoModelForCausalLM, REMOTE, source="modelscope", trust_remote_code=True)
    assert_same_model(remote, REMOTE, references)
    assert inspect.getmodule(type(remote)).REMOTE_CODE_MARKER == REMOTE_MARKER
    assert (ms_snapshot(tmp_path, REMOTE) / REMOTE_MODELING_FILE).is_file()
    assert all(r.path.startswith("/api/v1/") for r in hub.requests)
    assert_all_by_hubget(hub)


def test_auto_source_falls_back_to_modelscope(hub, tmp_path, references, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url + "/not-a-hub")  # the repo is not on this HF endpoint
    model = hubget.from_pretrained(AutoModelForCausalLM, PLAIN, source="auto")
    assert_same_model(model, PLAIN, references)
    assert (ms_snapshot(tmp_path, PLAIN) / "model.safetensors").is_file()


# -- revision, subfolder, token -------------------------------------------------------------------


def test_revision_and_subfolder_are_honoured(hub, tmp_path, references):
    student = hubget.from_pretrained(AutoModelForCausalLM, GIT, subfolder="student")
    assert_same_model(student, "student", references)
    fetched = hub.fetched(GIT)
    assert "student/model.safetensors" in fetched and "model.safetensors" not in fetched
    tokenizer = hubget.from_pretrained(AutoTokenizer, GIT, subfolder="student")
    assert tokenizer(REFERENCE_TEXT)["input_ids"] == reference_input_ids()[0].tolist()

    old = hubget.from_pretrained(AutoModelForCausalLM, GIT, revision="v1")
    assert_same_model(old, "v1", references)
    repo_dir = tmp_path / "hf-home" / "hub" / ("models--" + GIT.replace("/", "--"))
    assert (repo_dir / "refs" / "v1").read_text() != (repo_dir / "refs" / "main").read_text()
    assert_same_model(hubget.from_pretrained(AutoModelForCausalLM, GIT), "main", references)


def test_token_is_sent_to_a_protected_hub(hub_root, modules_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with recording_hub(hub_root, tokens=["s3cret"]) as protected:
        monkeypatch.setenv("HF_ENDPOINT", protected.url)
        with pytest.raises(hubget.HubgetError, match="401|denied"):
            hubget.from_pretrained(AutoConfig, PLAIN, token=False)
        config = hubget.from_pretrained(AutoConfig, PLAIN, token="s3cret")
    assert config.model_type == "llama"
