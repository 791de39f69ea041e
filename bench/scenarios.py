"""The scenarios: which repo, which peers, through which server."""

from __future__ import annotations

from dataclasses import dataclass

ALL_HF = ("hubget", "huggingface_hub", "hf_transfer", "aria2c")
ALL_MS = ("hubget-ms", "modelscope", "modelscope-parallel")
SMALL_RTT_PEERS = ("hubget", "huggingface_hub", "aria2c")
REALHUB_PEERS = ("hubget", "huggingface_hub", "hf_transfer-0.26", "aria2c-hfd")


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    repo: str  # a bench.data.GENERATORS key
    peers: tuple[str, ...]
    capped: bool = False  # every connection through nginx limit_rate
    resume: bool = False  # kill at half the bytes, then run again to the end
    # "serve": `hubget serve` (nginx in front when capped); "nginx": nginx sends the file bodies itself
    # (bench.servers.NginxOrigin), `hubget serve` behind it answers the API; "replica": the hub replica
    # (bench/replica.py), hub -> 302 -> Xet bridge, every connection capped at ``rate_per_conn``.
    server: str = "serve"
    rate_per_conn: int = 0  # bytes/s, replica only
    # Seconds, drawn per connection: the replica adds them itself; for "serve" and "nginx" a delaying
    # TCP proxy (bench/delay.py) in front of the server does, with 2 more for the handshakes.
    rtt: tuple[float, float] = (0.0, 0.0)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("large", "one large file", "large-file", ALL_HF + ALL_MS),
        Scenario("sharded", "7B-chat-shaped repo, safetensors + bin", "chat-7b-scaled", ALL_HF + ALL_MS),
        Scenario("small-files", "dataset of many small files", "small-files", ALL_HF + ALL_MS),
        Scenario(
            "small-files-nginx",
            "dataset of many small files, bodies sent by nginx",
            "small-files",
            ALL_HF,
            server="nginx",
        ),
        Scenario(
            "small-files-rtt",
            "dataset of many small files, bodies sent by nginx, RTT 50 ms",
            "small-files",
            SMALL_RTT_PEERS,
            server="nginx",
            rtt=(0.050, 0.050),
        ),
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
        Scenario(
            "realhub",
            "replica of the real hub: 302 to the Xet bridge, 8 MB/s per connection, RTT 20-50 ms",
            "realhub",
            REALHUB_PEERS,
            server="replica",
            # CloudFront edges of the Xet bridge cap a connection at about 8.7 MB/s (README).
            rate_per_conn=8_000_000,
            rtt=(0.020, 0.050),
        ),
    )
}
