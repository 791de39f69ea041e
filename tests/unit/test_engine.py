"""Engine: parallel ranges into one partial file, resume across runs, verification, faults."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import threading
from pathlib import Path

import pytest

from hubget.errors import (
    AuthError,
    DiskError,
    IntegrityError,
    NetworkError,
    NotFoundError,
    ProtocolError,
    UsageError,
)
from hubget.hashing import git_blob_sha1
from hubget.transfer import filetask
from hubget.transfer.engine import Engine
from hubget.transfer.http import HttpClient
from hubget.transfer.jobs import FileJob, ProgressSink
from tests.support.rangeserver import Fault, RangeServer

KiB, MiB = 1024, 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob(size: int, seed: int = 1) -> bytes:
    # cheap, non-repeating content: a wrong offset always changes the hash
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d-%d" % (seed, counter)).digest() * 64
        counter += 1
    return bytes(out[:size])


def small_engine(**kw) -> Engine:
    """An engine scaled down so tests exercise ranges, stealing and retries with small files."""
    client = kw.pop("client", None) or HttpClient(
        retries=2, backoff_base=0.01, retry_after_cap=2, read_timeout=5
    )
    kw.setdefault("connections", 4)
    kw.setdefault("split_threshold", 1 * MiB)
    kw.setdefault("min_chunk", 256 * KiB)
    kw.setdefault("max_chunk", 1 * MiB)
    kw.setdefault("steal_min", 64 * KiB)
    kw.setdefault("buffer_size", 64 * KiB)
    kw.setdefault("stall_timeout", 5)
    return Engine(client, **kw)


def job(server: RangeServer, path: str, data: bytes, dest: Path, **kw) -> FileJob:
    return FileJob(server.url(path), dest, len(data), sha(data), label=path.lstrip("/"), **kw)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if "hubget-partial" in p.name)


@pytest.fixture
def server():
    with RangeServer() as srv:
        yield srv


class Recorder(ProgressSink):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.advanced: dict[str, int] = {}
        self.started: list[tuple[str, int | None, int]] = []
        self.done: list[str] = []

    def file_started(self, label, size, already):
        self.started.append((label, size, already))

    def advance(self, label, nbytes):
        with self.lock:
            self.advanced[label] = self.advanced.get(label, 0) + nbytes

    def file_done(self, label):
        self.done.append(label)


def test_large_file_in_parallel_ranges(server, tmp_path):
    data = blob(50 * MiB)
    server.add("/big", data)
    sink = Recorder()
    engine = small_engine(
        connections=6, progress=sink, min_chunk=4 * MiB, max_chunk=4 * MiB, buffer_size=1 * MiB
    )
    (result,) = engine.run([job(server, "/big", data, tmp_path / "sub" / "big.bin")])
    assert (tmp_path / "sub" / "big.bin").read_bytes() == data
    assert result.bytes_fetched == len(data) and result.resumed_from == 0
    # Work stealing drops connections whose tail went to another worker; what the server had
    # already pushed into those sockets is lost, but no byte is fetched and written twice.
    assert server.bytes_sent["/big"] >= len(data)
    reqs = server.requests_for("/big")
    assert len(reqs) >= 13 and all(r.headers["Range"].startswith("bytes=") for r in reqs)
    assert len({r.client_port for r in reqs}) < len(reqs)  # connections are reused across ranges
    assert leftovers(tmp_path) == []
    assert sink.advanced == {"big": len(data)} and sink.done == ["big"]
    assert result.sources == {server.base: len(data)}


def test_connections_reused_without_stealing(server, tmp_path):
    data = blob(8 * MiB)
    server.add("/big", data)
    small_engine(connections=3, steal_min=len(data)).run([job(server, "/big", data, tmp_path / "big")])
    reqs = server.requests_for("/big")
    assert len(reqs) > 3 and len({r.client_port for r in reqs}) <= 3
    assert server.bytes_sent["/big"] == len(data)


def test_many_files_sha256_and_git_sha1(server, tmp_path):
    jobs = []
    for i in range(12):
        data = blob(1000 * i + 1, seed=i)
        server.add(f"/f{i}", data)
        if i % 2:
            jobs.append(
                FileJob(server.url(f"/f{i}"), tmp_path / f"f{i}", len(data), git_blob_sha1(data), "git-sha1")
            )
        else:
            jobs.append(job(server, f"/f{i}", data, tmp_path / f"f{i}"))
    results = small_engine(max_workers=4).run(jobs)
    assert [r.path for r in results] == [j.dest for j in jobs]
    for i in range(12):
        assert (tmp_path / f"f{i}").read_bytes() == blob(1000 * i + 1, seed=i)
        assert "Range" not in server.requests_for(f"/f{i}")[0].headers  # small files: one plain GET


def test_zero_size_file_needs_no_request(server, tmp_path):
    (result,) = small_engine().run([FileJob(server.url("/empty"), tmp_path / "e", 0, sha(b""))])
    assert (tmp_path / "e").read_bytes() == b"" and result.bytes_fetched == 0
    assert server.requests == []


def test_unknown_size_single_stream(server, tmp_path):
    data = blob(3 * MiB)
    server.add("/u", data)
    small_engine().run([FileJob(server.url("/u"), tmp_path / "u", None, sha(data))])
    assert (tmp_path / "u").read_bytes() == data


def resume_state(dest: Path) -> dict:
    return json.loads(dest.with_name(dest.name + ".hubget-partial.json").read_text())


def test_resume_fetches_only_missing_bytes(server, tmp_path):
    """A first run dies part-way (every range stalls); the second run fetches only the gaps."""
    data = blob(8 * MiB)
    server.add("/big", data)
    dest = tmp_path / "big"
    server.fault("/big", Fault("stall", times=-1, after=300 * KiB, seconds=30))
    first = small_engine(save_interval=0.05, stall_timeout=30)
    worker = threading.Thread(
        target=lambda: _run_quietly(first, [job(server, "/big", data, dest)]), daemon=True
    )
    worker.start()
    assert _wait(lambda: _saved_bytes(dest) >= 4 * 300 * KiB)
    # Simulate a crash: the first run is abandoned mid-flight, with only its saved state on disk.
    state = resume_state(dest)
    saved = sum(e - s for s, e in state["done"])
    partial_copy = dest.with_name("big.hubget-partial").read_bytes()
    first._cancelled = True
    server.clear_faults()
    server.stopping.set()  # wakes the stalled handlers
    worker.join(10)
    server.stopping.clear()
    dest.with_name("big.hubget-partial").write_bytes(partial_copy)
    dest.with_name("big.hubget-partial.json").write_text(json.dumps(state))
    sent_before = server.bytes_sent["/big"]

    (result,) = small_engine(steal_min=len(data)).run([job(server, "/big", data, dest)])
    assert dest.read_bytes() == data
    assert result.resumed_from == saved and saved > 0
    assert result.bytes_fetched == len(data) - saved
    assert server.bytes_sent["/big"] - sent_before == len(data) - saved
    assert leftovers(tmp_path) == []


def _run_quietly(engine: Engine, jobs: list[FileJob]) -> None:
    try:
        engine.run(jobs)
    except Exception:
        pass


def _saved_bytes(dest: Path) -> int:
    try:
        return sum(e - s for s, e in resume_state(dest)["done"])
    except (OSError, ValueError):
        return 0


def _wait(pred, timeout: float = 20) -> bool:
    from tests.support.rangeserver import wait_until

    return wait_until(pred, timeout)


def test_resume_state_for_other_file_is_discarded(server, tmp_path):
    data = blob(2 * MiB)
    server.add("/f", data)
    dest = tmp_path / "f"
    partial = dest.with_name("f.hubget-partial")
    partial.write_bytes(b"\xff" * len(data))  # bytes of some other version of the file
    state = {
        "version": 1,
        "expected_hash": "0" * 64,
        "hash_algo": "sha256",
        "size": len(data),
        "done": [[0, len(data)]],
    }
    dest.with_name("f.hubget-partial.json").write_text(json.dumps(state))
    (result,) = small_engine(steal_min=len(data)).run([job(server, "/f", data, dest)])
    assert dest.read_bytes() == data and result.resumed_from == 0
    assert server.bytes_sent["/f"] == len(data)


def test_resume_after_sigkill_of_a_real_process(server, tmp_path):
    """A separate process is SIGKILLed mid-download; the rerun fetches only what was not saved."""
    import subprocess
    import sys
    import time

    data = blob(6 * MiB)
    server.add("/big", data)
    dest = tmp_path / "big"
    server.fault("/big", Fault("stall", times=-1, after=256 * KiB, seconds=60))
    child = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from pathlib import Path
from tests.unit.test_engine import small_engine
from hubget.transfer.jobs import FileJob
small_engine(save_interval=0.05, stall_timeout=60).run(
    [FileJob({server.url("/big")!r}, Path({str(dest)!r}), {len(data)}, {sha(data)!r})])
"""
    proc = subprocess.Popen([sys.executable, "-c", child])
    try:
        assert _wait(lambda: _saved_bytes(dest) >= 4 * 256 * KiB)
        time.sleep(0.2)  # let it settle on a state: no more bytes can arrive while the ranges stall
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = _saved_bytes(dest)
    server.clear_faults()
    sent_before = server.bytes_sent["/big"]
    (result,) = small_engine(steal_min=len(data)).run([job(server, "/big", data, dest)])
    assert dest.read_bytes() == data
    assert result.resumed_from == saved > 0
    assert server.bytes_sent["/big"] - sent_before == len(data) - saved


def test_corrupt_byte_is_integrity_error_and_nothing_at_dest(server, tmp_path):
    data = blob(3 * MiB)
    server.add("/c", data)
    server.fault("/c", Fault("corrupt", offset=2 * MiB + 17))
    dest = tmp_path / "c"
    with pytest.raises(IntegrityError, match="c: sha256 mismatch"):
        small_engine().run([job(server, "/c", data, dest)])
    assert not dest.exists()
    assert leftovers(tmp_path) == []  # a rerun starts clean


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    data = blob(4 * MiB)
    server.add("/r", data)
    server.fault("/r", Fault("ignore_range", times=-1, ranged_only=True))
    (result,) = small_engine().run([job(server, "/r", data, tmp_path / "r")])
    assert (tmp_path / "r").read_bytes() == data
    assert result.path == tmp_path / "r"


def test_wrong_206_retried_then_single_stream(server, tmp_path):
    data = blob(3 * MiB)
    server.add("/w", data)
    server.fault("/w", Fault("wrong_start", times=1, shift=5))
    small_engine().run([job(server, "/w", data, tmp_path / "w")])
    assert (tmp_path / "w").read_bytes() == data
    server.fault("/w", Fault("wrong_total", times=-1, ranged_only=True))
    before = len(server.requests_for("/w"))
    small_engine().run([job(server, "/w", data, tmp_path / "w2")])
    assert (tmp_path / "w2").read_bytes() == data
    # fell back to one plain stream
    assert any("Range" not in r.headers for r in server.requests_for("/w")[before:])


def test_connection_reset_mid_body_is_retried(server, tmp_path):
    data = blob(3 * MiB)
    server.add("/x", data)
    server.fault("/x", Fault("reset", times=3, after=100 * KiB))
    server.fault("/x", Fault("close", times=2, after=10 * KiB))
    small_engine().run([job(server, "/x", data, tmp_path / "x")])
    assert (tmp_path / "x").read_bytes() == data


def test_stall_and_drip_connections_are_replaced(server, tmp_path):
    data = blob(2 * MiB)
    server.add("/s", data)
    server.fault("/s", Fault("stall", times=1, after=50 * KiB, seconds=30))
    server.fault("/s", Fault("drip", times=1, seconds=0.02))
    small_engine(stall_timeout=0.5, min_speed=4096).run([job(server, "/s", data, tmp_path / "s")])
    assert (tmp_path / "s").read_bytes() == data


def test_retry_after_is_honoured(server, tmp_path):
    data = blob(100 * KiB)
    server.add("/t", data)
    server.fault("/t", Fault("status", status=429, headers={"Retry-After": "1"}))
    client = HttpClient(retries=3, backoff_base=0.01)
    waits: list[float] = []
    client.sleep = waits.append
    small_engine(client=client).run([job(server, "/t", data, tmp_path / "t")])
    assert waits == [1.0]
    assert (tmp_path / "t").read_bytes() == data


def test_encoded_body_is_refused_then_retried(server, tmp_path):
    data = blob(100 * KiB)
    server.add("/g", data)
    server.fault("/g", Fault("encoding", times=1))
    small_engine().run([job(server, "/g", data, tmp_path / "g")])
    assert (tmp_path / "g").read_bytes() == data
    server.fault("/g", Fault("encoding", times=-1))
    with pytest.raises(ProtocolError, match="gzip-encoded"):
        small_engine(range_retries=1).run([job(server, "/g", data, tmp_path / "g2")])
    assert not (tmp_path / "g2").exists()


def test_endless_body_never_written_past_size(server, tmp_path):
    size = 1 * MiB
    server.add("/e", b"unused")
    server.fault("/e", Fault("endless", times=-1))
    zeros = b"\0" * size
    small_engine().run([FileJob(server.url("/e"), tmp_path / "e", size, sha(zeros))])
    assert (tmp_path / "e").stat().st_size == size


def test_token_dropped_on_cross_origin_redirect_kept_on_same_origin(server, tmp_path):
    data = blob(2 * MiB)
    with RangeServer() as cdn:
        cdn.add("/blob", data)
        server.add("/local-blob", data)
        server.fault("/cross", Fault("redirect", times=-1, location=cdn.url("/blob")))
        server.fault("/same", Fault("redirect", times=-1, location="/local-blob"))
        auth = {"Authorization": "Bearer hf_secret"}
        small_engine().run(
            [
                FileJob(server.url("/cross"), tmp_path / "a", len(data), sha(data), headers=auth),
                FileJob(server.url("/same"), tmp_path / "b", len(data), sha(data), headers=auth),
            ]
        )
        assert (tmp_path / "a").read_bytes() == data and (tmp_path / "b").read_bytes() == data
        assert cdn.requests_for("/blob") and all(
            "Authorization" not in r.headers for r in cdn.requests_for("/blob")
        )
        assert all(
            r.headers.get("Authorization") == "Bearer hf_secret" for r in server.requests_for("/local-blob")
        )


def test_https_to_http_redirect_refused(tmp_path, server):
    from tests.support.rangeserver import make_self_signed

    cert, key = make_self_signed(tmp_path)
    with RangeServer(certfile=cert, keyfile=key) as tls:
        tls.fault("/f", Fault("redirect", times=-1, location=server.url("/f")))
        server.add("/f", b"x" * 10)
        engine = small_engine(client=HttpClient(ca_bundle=cert, retries=0))
        with pytest.raises(ProtocolError, match="f: refusing redirect from https to plain http"):
            engine.run([FileJob(tls.url("/f"), tmp_path / "f", 10, sha(b"x" * 10), label="f")])
    assert server.requests_for("/f") == [] and not (tmp_path / "f").exists()


def test_disk_full_is_disk_error_and_partial_kept(server, tmp_path, monkeypatch):
    data = blob(4 * MiB)
    server.add("/d", data)
    real_pwrite = os.pwrite
    calls = {"n": 0, "written": 0}

    def failing_pwrite(fd, buf, offset):
        calls["n"] += 1
        if calls["n"] > 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_pwrite(fd, buf, offset)
        calls["written"] += n
        return n

    monkeypatch.setattr(filetask.os, "pwrite", failing_pwrite)
    dest = tmp_path / "d"
    with pytest.raises(DiskError, match="No space left on device"):
        small_engine(connections=1).run([job(server, "/d", data, dest)])
    assert not dest.exists()
    assert dest.with_name("d.hubget-partial").exists()
    saved = _saved_bytes(dest)
    assert saved == calls["written"] > 0  # what was written is recorded, ready for a resume
    monkeypatch.undo()
    (result,) = small_engine().run([job(server, "/d", data, dest)])
    assert dest.read_bytes() == data and result.resumed_from == saved


def test_free_space_checked_up_front(server, tmp_path):
    with pytest.raises(DiskError, match="not enough free space"):
        small_engine().run([FileJob(server.url("/huge"), tmp_path / "h", 10**17, "0" * 64)])
    assert server.requests == []


def test_expired_url_is_refreshed_once(server, tmp_path):
    data = blob(2 * MiB)
    server.add("/fresh", data)
    server.fault("/old", Fault("status", status=403, times=-1))
    calls = []

    def refresh(j: FileJob):
        calls.append(j.url)
        return server.url("/fresh"), {"X-Signed": "1"}

    j = FileJob(server.url("/old"), tmp_path / "r", len(data), sha(data), refresh=refresh)
    small_engine().run([j])
    assert (tmp_path / "r").read_bytes() == data and len(calls) == 1
    # without a refresh hook, 403 is an auth failure with no retry storm
    with pytest.raises(AuthError, match="403"):
        small_engine().run([FileJob(server.url("/old"), tmp_path / "r2", len(data), sha(data))])


def test_other_files_finish_when_one_fails(server, tmp_path):
    good = blob(3 * MiB)
    server.add("/good", good)
    jobs = [
        FileJob(server.url("/missing"), tmp_path / "m", 10, sha(b"0" * 10), label="weights/missing.bin"),
        job(server, "/good", good, tmp_path / "good"),
    ]
    with pytest.raises(NotFoundError, match="weights/missing.bin"):
        small_engine().run(jobs)
    assert (tmp_path / "good").read_bytes() == good
    assert not (tmp_path / "m").exists()


def test_mirror_used_when_primary_fails(server, tmp_path):
    data = blob(2 * MiB)
    server.fault("/p", Fault("status", status=503, times=-1))
    with RangeServer() as mirror:
        mirror.add("/m", data)
        j = FileJob(
            server.url("/p"),
            tmp_path / "f",
            len(data),
            sha(data),
            headers={"Authorization": "Bearer t"},
            mirrors=[mirror.url("/m")],
        )
        (result,) = small_engine(client=HttpClient(retries=0, backoff_base=0.01)).run([j])
        assert (tmp_path / "f").read_bytes() == data
        assert result.sources == {mirror.base: len(data)}
        assert all("Authorization" not in r.headers for r in mirror.requests_for("/m"))


def test_keyboard_interrupt_persists_state_and_reraises(server, tmp_path):
    data = blob(4 * MiB)
    server.add("/k", data)
    server.fault("/k", Fault("stall", times=-1, after=128 * KiB, seconds=60))
    dest = tmp_path / "k"
    sink = Recorder()
    # Four connections and no more (no widening while stalled), so exactly 4 x 128 KiB get written.
    engine = small_engine(save_interval=3600, stall_timeout=60, progress=sink, max_connections=4)

    def interrupt_when_writing():
        if _wait(lambda: sum(sink.advanced.values()) >= 4 * 128 * KiB):
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_writing, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        engine.run([job(server, "/k", data, dest)])
    assert not dest.exists()
    # saved on the way out (the periodic saver never ran): every byte written is recorded
    assert _saved_bytes(dest) == sum(sink.advanced.values()) == 4 * 128 * KiB
    server.clear_faults()
    (result,) = small_engine().run([job(server, "/k", data, dest)])
    assert dest.read_bytes() == data and result.resumed_from == 4 * 128 * KiB


def test_stall_knobs_from_the_environment(monkeypatch):
    monkeypatch.setenv("HUBGET_STALL_TIMEOUT", "4")
    monkeypatch.setenv("HUBGET_MIN_SPEED", "2048")
    engine = Engine()
    assert (engine.stall_timeout, engine.min_speed) == (4.0, 2048)
    assert engine.client.read_timeout == 4.0  # the engine's own client: silence means a stall
    assert Engine(stall_timeout=9, min_speed=0).stall_timeout == 9  # keywords win
    monkeypatch.setenv("HUBGET_MIN_SPEED", "fast")
    with pytest.raises(UsageError, match="HUBGET_MIN_SPEED"):
        Engine()


def test_env_min_speed_fails_a_dripping_server(server, tmp_path, monkeypatch):
    """HUBGET_STALL_TIMEOUT / HUBGET_MIN_SPEED reach an engine built with defaults."""
    monkeypatch.setenv("HUBGET_STALL_TIMEOUT", "0.5")
    monkeypatch.setenv("HUBGET_MIN_SPEED", str(64 * KiB))
    data = blob(200 * KiB)
    server.add("/slow", data)
    server.fault("/slow", Fault("drip", times=-1, seconds=0.002))
    client = HttpClient(retries=0, backoff_base=0.01)
    with pytest.raises(NetworkError, match="stalling"):
        Engine(client, range_retries=1).run([job(server, "/slow", data, tmp_path / "slow")])
    assert not (tmp_path / "slow").exists()


def test_503_storm_costs_a_bounded_number_of_requests_per_range(server, tmp_path):
    """Retries do not nest: engine attempts x client retries stays <= 8 per range with the defaults."""
    data = blob(2 * MiB)
    server.add("/storm", data)
    server.fault("/storm", Fault("status", times=-1, status=503))
    client = HttpClient(retries=5, backoff_base=0.001, backoff_max=0.01)
    client.sleep = lambda s: None
    engine = small_engine(client=client)
    with pytest.raises(NetworkError, match="503"):
        engine.run([job(server, "/storm", data, tmp_path / "storm")])
    ranges = {r.headers.get("Range") or r.headers.get("range") for r in server.requests_for("/storm")}
    assert len(ranges) >= 2  # it was cut into ranges
    per_range = len(server.requests_for("/storm")) / len(ranges)
    assert per_range <= 8, per_range
    assert not (tmp_path / "storm").exists()


def test_ranged_bodies_are_spliced_into_the_partial(server, tmp_path, monkeypatch):
    """Plain HTTP, ranged file: the bytes go socket -> pipe -> file (os.splice), in order."""
    data = blob(6 * MiB)
    server.add("/sp", data)
    calls = {"n": 0}
    real = os.splice

    def counting(*args, **kw):
        calls["n"] += 1
        return real(*args, **kw)

    monkeypatch.setattr(os, "splice", counting)
    small_engine(buffer_size=256 * KiB).run([job(server, "/sp", data, tmp_path / "sp")])
    assert (tmp_path / "sp").read_bytes() == data
    assert calls["n"] > 0


def test_a_filesystem_without_splice_gets_the_bytes_written(server, tmp_path, monkeypatch):
    data = blob(6 * MiB)
    server.add("/ns", data)
    real = os.splice

    def no_splice_to_files(src, dst, count, offset_src=None, offset_dst=None, flags=0):
        if offset_dst is not None:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(src, dst, count, offset_src, offset_dst, flags)

    monkeypatch.setattr(os, "splice", no_splice_to_files)
    small_engine(buffer_size=256 * KiB).run([job(server, "/ns", data, tmp_path / "ns")])
    assert (tmp_path / "ns").read_bytes() == data
