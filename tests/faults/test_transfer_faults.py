"""Faults of the file server while bytes flow: hubget either ends with verified files or fails with
one clear line, keeps nothing unverified at a final path, and a rerun converges.

The repo's weights file is served by a scripted raw-socket server; each test scripts what the
next requests of that file get (one step per request, then correct answers).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

import hubget
from hubget.errors import HubgetError, IntegrityError, NetworkError
from tests.faults import faultserver as fs
from tests.faults.faultserver import FaultServer
from tests.faults.harness import (
    assert_cache_verified,
    assert_clean_failure,
    assert_files,
    assert_ok,
    cli_args,
    final_files,
    partials,
    run_cli,
)
from tests.support.fakehub import FakeHfRepo
from tests.support.rangeserver import wait_until

REPO = "org/faulty"
WEIGHTS = os.urandom(1536 * 1024 + 13)  # above the size from which partial files are kept for resume
FILES = {"config.json": b'{"model_type": "llama"}\n', "model.safetensors": WEIGHTS}
W = "model.safetensors"
pytestmark = pytest.mark.timeout(30)  # a correct run takes a few seconds; a hang fails


def publish(hub: FaultServer, files: dict[str, bytes] = FILES, **kw: object) -> FakeHfRepo:
    return FakeHfRepo(hub, REPO, files, **kw).publish()  # type: ignore[arg-type]


def download(hub: FaultServer, cache: Path) -> Path:
    return Path(hubget.snapshot_download(REPO, endpoint=hub.base, cache_dir=cache, token=False))


def weights_requests(hub: FaultServer, repo: FakeHfRepo) -> int:
    return len(hub.requests_for(repo.resolve_path(W)))


def assert_no_overwrite(cache: Path, size: int = len(WEIGHTS)) -> None:
    """Nothing written beyond a file's size: temp files are never larger than announced."""
    for p in partials(cache):
        assert p.stat().st_size <= size, f"{p} grew to {p.stat().st_size} bytes"


# -- transient faults: the same run recovers ---------------------------------------------------

TRANSIENT = {
    "reset_mid_body": lambda: [fs.reset_after(50_000)],
    "close_before_content_length": lambda: [fs.close_after(50_000)],
    "chunked_cut_short": lambda: [fs.chunked_cut(50_000)],
    "range_answered_with_200": lambda: [fs.ignore_range()] * 3,
    "206_wrong_start": lambda: [fs.wrong_start(1)],
    "206_wrong_total": lambda: [fs.wrong_total(1)],
    "body_longer_than_announced": lambda: [fs.longer(4096)] * 3,
    "endless_body": lambda: [fs.endless(limit=8 << 20)],
    "absurd_content_length": lambda: [fs.absurd_length()],
    "gzip_on_a_file": lambda: [fs.gzip_bomb()],
    "503_then_ok": lambda: [fs.status(503)] * 2,
    "429_retry_after_seconds": lambda: [fs.status(429, {"Retry-After": "1"})],
    "429_retry_after_huge": lambda: [fs.status(429, {"Retry-After": "86400"})],
    "429_retry_after_http_date": lambda: [fs.status(429, {"Retry-After": fs.http_date(1)})],
    "stall_then_ok": lambda: [fs.stall_after(10_000)],
}


# Faults that are only faults for a ranged request: a whole-file GET may be answered this way.
WHOLE_FILE_ANSWERS = {"range_answered_with_200", "endless_body"}


@pytest.mark.parametrize("fault", sorted(TRANSIENT))
def test_transient_fault_recovered_in_the_same_run(hub, tmp_path, fast, fault):
    repo = publish(hub)
    hub.script(repo.resolve_path(W), *TRANSIENT[fault]())
    path = download(hub, tmp_path)
    assert_files(path, FILES)
    assert_cache_verified(tmp_path)
    assert not partials(tmp_path)
    reqs = hub.requests_for(repo.resolve_path(W))
    if fault in WHOLE_FILE_ANSWERS and "range" not in reqs[0].headers:
        return  # asked for the whole file, a 200 with the whole file (then junk) is a right answer
    assert len(reqs) >= 2  # the fault was served, then a retry


@pytest.mark.parametrize("step", [fs.wrong_start(7), fs.wrong_total(5)], ids=["wrong_start", "wrong_total"])
def test_bad_206_every_time_falls_back_to_one_stream(hub, tmp_path, fast, step):
    """A server whose ranges cannot be trusted: after a few bad answers, one plain stream."""
    repo = publish(hub)
    hub.always(repo.resolve_path(W), step)
    assert_files(download(hub, tmp_path), FILES)
    assert_cache_verified(tmp_path)
    reqs = hub.requests_for(repo.resolve_path(W))
    assert "range" in reqs[0].headers
    assert any("range" not in r.headers for r in reqs[1:])  # gave up on ranges


def test_range_ignored_every_time_falls_back_to_one_stream(hub, tmp_path, fast):
    repo = publish(hub)
    hub.always(repo.resolve_path(W), fs.ignore_range())
    assert_files(download(hub, tmp_path), FILES)
    assert_cache_verified(tmp_path)


def test_429_waits_are_honoured_and_capped(hub, tmp_path, fast, monkeypatch):
    """The waits asked by Retry-After (seconds, a huge number, an HTTP date) are what hubget
    waits, capped by ``retry_after_cap`` (1 s in these tests)."""
    from hubget.transfer.http import HttpClient

    waits: list[float] = []
    real = HttpClient.backoff

    def spy(self: HttpClient, attempt: int, retry_after: float | None = None) -> float:
        wait = real(self, attempt, retry_after)
        if retry_after is not None:
            waits.append(wait)
        return wait

    monkeypatch.setattr(HttpClient, "backoff", spy)
    repo = publish(hub)
    hub.script(
        repo.resolve_path(W),
        fs.status(429, {"Retry-After": "0"}),
        fs.status(429, {"Retry-After": "86400"}),
    )
    hub.script(f"/api/models/{REPO}/revision/main", fs.status(429, {"Retry-After": fs.http_date(30)}))
    assert_files(download(hub, tmp_path), FILES)
    assert sorted(waits) == [0.0, 1.0, 1.0]


# -- persistent faults: a clear failure, nothing unverified, the rerun converges ----------------

PERSISTENT = {
    # name: (step, exit code, words in the message)
    "reset_every_time": (fs.reset_after(20_000), 6, ["connection"]),
    "503_storm": (fs.status(503), 6, ["503"]),
    "wrong_bytes": (fs.corrupt(123_456), 5, ["sha256", "mismatch"]),
    "absurd_content_length_always": (fs.absurd_length(), 6, [W]),
    "gzip_bomb_always": (fs.gzip_bomb(), 6, ["gzip"]),
    "drip": (fs.drip(0.05, 100), 6, ["stalling"]),
    "never_answers": (fs.never_answer(), 6, ["timed out"]),
}


@pytest.mark.parametrize("fault", sorted(PERSISTENT))
def test_persistent_fault_fails_clearly_then_rerun_converges(hub, tmp_path, fault):
    repo = publish(hub)
    step, code, words = PERSISTENT[fault]
    hub.always(repo.resolve_path(W), step)
    result = run_cli(cli_args(REPO, hub.base, tmp_path))
    assert_clean_failure(result, code, *words)
    assert_cache_verified(tmp_path)
    assert all(p.name != repo.etags[W] for p in final_files(tmp_path)), "weights at the final path"
    assert_no_overwrite(tmp_path)
    # bounded retries: at most (client retries + 1) x (range retries + 1) per segment, ~6 segments
    assert weights_requests(hub, repo) <= 6 * 3 * 4 * 2

    hub.scripts.clear()
    path = assert_ok(run_cli(cli_args(REPO, hub.base, tmp_path)))
    assert_files(path, FILES)
    assert_cache_verified(tmp_path)
    assert not partials(tmp_path)


def test_endless_body_is_cut_at_the_announced_size(hub, tmp_path, fast):
    repo = publish(hub)
    hub.always(repo.resolve_path(W), fs.endless(limit=1 << 40))
    try:
        assert_files(download(hub, tmp_path), FILES)
    except NetworkError:
        pass  # refusing the answer is fine too; what matters is below
    assert_no_overwrite(tmp_path)
    assert_cache_verified(tmp_path)
    # it hung up on every endless answer: the server's senders all stop (their sends fail)
    assert wait_until(lambda: hub.endless_senders() == 0, 10), hub.endless_senders()


# -- resume across runs ------------------------------------------------------------------------


def _leave_a_partial(hub: FaultServer, repo: FakeHfRepo, cache: Path) -> None:
    """A first run that dies with part of the weights on disk (the server resets every answer)."""
    hub.always(repo.resolve_path(W), fs.reset_after(20_000))
    with pytest.raises(HubgetError):
        download(hub, cache)
    hub.scripts.clear()
    assert partials(cache), "the failed run kept its partial file for resume"


def test_resume_fetches_only_the_missing_bytes(hub, tmp_path, fast):
    repo = publish(hub)
    _leave_a_partial(hub, repo, tmp_path)
    before = hub.bytes_sent
    assert_files(download(hub, tmp_path), FILES)
    assert hub.bytes_sent - before < len(WEIGHTS)  # resumed, not started over
    ranges = [r.headers.get("range", "") for r in hub.requests_for(repo.resolve_path(W))[-3:]]
    assert any(r and not r.startswith("bytes=0-") for r in ranges)
    assert_cache_verified(tmp_path)


def test_416_on_resume_then_converges(hub, tmp_path, fast):
    repo = publish(hub)
    _leave_a_partial(hub, repo, tmp_path)
    hub.script(repo.resolve_path(W), *[fs.status(416, {"Content-Range": f"bytes */{len(WEIGHTS)}"})] * 20)
    try:
        download(hub, tmp_path)
    except HubgetError as e:
        assert "416" in str(e)
    assert_cache_verified(tmp_path)
    assert_no_overwrite(tmp_path)
    hub.scripts.clear()
    assert_files(download(hub, tmp_path), FILES)
    assert_cache_verified(tmp_path)


def test_file_changed_between_runs_is_downloaded_anew(hub, tmp_path, fast):
    """local_dir keeps one temp file per path: the partial of the old version must not leak into
    the new one (its resume state names the old hash)."""
    repo = publish(hub)
    hub.always(repo.resolve_path(W), fs.reset_after(20_000))
    with pytest.raises(HubgetError):
        hubget.snapshot_download(REPO, endpoint=hub.base, local_dir=tmp_path / "out", token=False)
    hub.scripts.clear()
    new = os.urandom(len(WEIGHTS))  # same size, other bytes, new etag, new commit
    FakeHfRepo(hub, REPO, {**FILES, W: new}, commit="f" * 40).publish()  # type: ignore[arg-type]
    out = hubget.snapshot_download(REPO, endpoint=hub.base, local_dir=tmp_path / "out", token=False)
    assert hashlib.sha256((Path(out) / W).read_bytes()).hexdigest() == hashlib.sha256(new).hexdigest()


def test_wrong_bytes_then_fixed_server_converges(hub, tmp_path, fast):
    repo = publish(hub)
    hub.always(repo.resolve_path(W), fs.corrupt(5))
    with pytest.raises(IntegrityError):
        download(hub, tmp_path)
    assert not (tmp_path / f"models--org--faulty/blobs/{repo.etags[W]}").exists()
    assert not partials(tmp_path), "data known to be bad is not kept for resume"
    hub.scripts.clear()
    assert_files(download(hub, tmp_path), FILES)
