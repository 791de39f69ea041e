"""The scenarios: which repo, which peers, through which server."""

from __future__ import annotations

from dataclasses import dataclass

ALL_HF = ("hubget", "huggingface_hub", "hf_transfer", "aria2c")
ALL_MS = ("hubget-ms", "modelscope", "modelscope-parallel")


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    repo: str  # a bench.data.GENERATORS key
    peers: tuple[str, ...]
    capped: bool = False  # every connection through nginx limit_rate
    resume: bool = False  # kill at half the bytes, then run again to the end


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("large", "one large file", "large-file", ALL_HF + ALL_MS),
        Scenario("sharded", "7B-chat-shaped repo, safetensors + bin", "chat-7b-scaled", ALL_HF + ALL_MS),
        Scenario("small-files", "dataset of many small files", "small-files", ALL_HF + ALL_MS),
        Scenario(
            "capped",
            "chat repo (smaller shards), capped connections",
            "chat-7b-capped",
            ALL_HF + ALL_MS,
            capped=True,
        ),
        Scenario("git", "git clone of the smaller-shard chat repo", "chat-7b-git", ("hubget-clone", "git")),
        Scenario(
            "resume",
            "large file, killed at 50% then run again",
            "large-file",
            ("hubget", "huggingface_hub"),
            resume=True,
        ),
    )
}
