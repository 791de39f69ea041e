"""Repos for tests: plain folders and real git repositories (with git-lfs), and an LLM-shaped file set.

files = llm_repo_files()                        # dict path -> bytes
write_folder_repo(root / "models/org/plain", files)
repo = GitRepoBuilder(root / "models/org/git")  # git + git lfs, branch main
c1 = repo.commit(files, "first")
repo.tag("v1.0"); repo.branch("dev"); ...
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

LFS_PATTERNS: tuple[str, ...] = ("*.safetensors", "*.bin", "*.model", "*.pt", "*.gguf")
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hashes(files: dict[str, bytes]) -> dict[str, str]:
    """path -> sha256 of every file, as the clients' downloads are compared (``tree_hashes``)."""
    return {path: sha256_hex(data) for path, data in sorted(files.items())}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_files(dest: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def write_folder_repo(dest: Path, files: dict[str, bytes]) -> Path:
    """A plain folder repo (served as revision main)."""
    dest.mkdir(parents=True, exist_ok=True)
    write_files(dest, files)
    return dest


def gitattributes(patterns: tuple[str, ...] = LFS_PATTERNS) -> bytes:
    return "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in patterns).encode()


class GitRepoBuilder:
    """A git work tree with git-lfs tracking ``lfs_patterns``, built with the real git and git-lfs."""

    def __init__(
        self, dest: Path, *, lfs_patterns: tuple[str, ...] = LFS_PATTERNS, branch: str = "main"
    ) -> None:
        self.path = dest
        self._clock = 1_700_000_000
        dest.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", branch)
        self.git("lfs", "install", "--local")
        if lfs_patterns:
            (dest / ".gitattributes").write_bytes(gitattributes(lfs_patterns))

    def env(self) -> dict[str, str]:
        # Fixed dates make commit ids reproducible within a test run; HOME is isolated from the user's config.
        date = f"@{self._clock} +0000"
        return {**os.environ, **_GIT_ENV, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}

    def git(self, *args: str) -> str:
        proc = subprocess.run(
            ["git", "-C", str(self.path), *args], env=self.env(), capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout.strip()

    def commit(
        self, files: dict[str, bytes], message: str = "update", *, delete: tuple[str, ...] = ()
    ) -> str:
        """Write (and delete) files, commit everything; returns the commit sha."""
        write_files(self.path, files)
        for rel in delete:
            (self.path / rel).unlink()
        self._clock += 60
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def branch(self, name: str, start: str = "HEAD") -> None:
        self.git("branch", name, start)

    def checkout(self, name: str) -> None:
        self.git("checkout", "-q", name)

    def tag(self, name: str, target: str = "HEAD", *, annotated: bool = False) -> None:
        if annotated:
            self.git("tag", "-a", "-m", name, name, target)
        else:
            self.git("tag", name, target)

    def update_ref(self, ref: str, target: str = "HEAD") -> None:
        """E.g. ``refs/pr/1``, as the hub keeps pull requests."""
        self.git("update-ref", ref, target)

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def lfs_object(self, oid: str) -> Path:
        return self.path / ".git" / "lfs" / "objects" / oid[0:2] / oid[2:4] / oid

    def make_bare(self, dest: Path) -> Path:
        """A bare clone (all branches and tags) with the LFS objects copied into ``dest/lfs/objects``."""
        subprocess.run(
            ["git", "clone", "-q", "--bare", str(self.path), str(dest)], env=self.env(), check=True
        )
        src_objects = self.path / ".git" / "lfs" / "objects"
        if src_objects.is_dir():
            shutil.copytree(src_objects, dest / "lfs" / "objects")
        return dest


def safetensors_bytes(
    tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict[str, str] | None = None
) -> bytes:
    """A valid safetensors file: {name: (dtype, shape, raw bytes)}."""
    header: dict[str, object] = {}
    offset = 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(raw for _, _, raw in tensors.values())


def llm_repo_files(*, n_shards: int = 2, shard_size: int = 64 * 1024, seed: int = 0) -> dict[str, bytes]:
    """Files shaped like a real LLM repo: sharded safetensors and pytorch_model-*.bin with their index
    jsons, config, tokenizer files, custom modeling code, a README and a nested folder. The .bin shards
    are random bytes (only their transfer matters); the safetensors shards are valid safetensors."""
    rng = random.Random(seed)
    floats_per_tensor = max(1, shard_size // 8)  # two float32 tensors per shard
    files: dict[str, bytes] = {}
    st_map: dict[str, str] = {}
    bin_map: dict[str, str] = {}
    st_total = 0
    for i in range(1, n_shards + 1):
        st_name = f"model-{i:05d}-of-{n_shards:05d}.safetensors"
        bin_name = f"pytorch_model-{i:05d}-of-{n_shards:05d}.bin"
        tensors = {}
        for kind in ("q_proj", "k_proj"):
            tname = f"model.layers.{i - 1}.self_attn.{kind}.weight"
            tensors[tname] = ("F32", [floats_per_tensor], rng.randbytes(floats_per_tensor * 4))
            st_map[tname] = st_name
            bin_map[tname] = bin_name
            st_total += floats_per_tensor * 4
        files[st_name] = safetensors_bytes(tensors, {"format": "pt"})
        files[bin_name] = rng.randbytes(shard_size + i)
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {"total_size": st_total}, "weight_map": st_map}, indent=2
    ).encode()
    files["pytorch_model.bin.index.json"] = json.dumps(
        {"metadata": {"total_size": st_total}, "weight_map": bin_map}, indent=2
    ).encode()
    files["config.json"] = json.dumps(
        {
            "architectures": ["XForCausalLM"],
            "model_type": "x",
            "auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"},
            "num_hidden_layers": n_shards,
            "torch_dtype": "float32",
        },
        indent=2,
    ).encode()
    files["generation_config.json"] = b'{"do_sample": false, "max_new_tokens": 16}\n'
    files["tokenizer.json"] = json.dumps(
        {"version": "1.0", "model": {"type": "BPE", "vocab": {f"t{n}": n for n in range(200)}, "merges": []}}
    ).encode()
    files["tokenizer_config.json"] = b'{"bos_token": "<s>", "eos_token": "</s>", "model_max_length": 2048}\n'
    files["special_tokens_map.json"] = b'{"bos_token": "<s>", "eos_token": "</s>"}\n'
    files["tokenizer.model"] = rng.randbytes(4096)
    files["modeling_x.py"] = (
        b'"""Custom modeling code (trust_remote_code)."""\n\nclass XForCausalLM:\n    pass\n'
    )
    files["README.md"] = "# x\n\nAn LLM-shaped test repo. Unicode: \u00e9\u00e8\u4e2d\n".encode()
    files["original/params.json"] = b'{"dim": 64, "n_layers": 2}\n'
    files[".gitattributes"] = gitattributes()
    return files
