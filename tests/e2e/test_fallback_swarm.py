"""The engine with several sources for one file: ranges spread over all of them, a source that fails
or answers 404 is left, the file is verified whole, and it fails only when no source can serve it."""

from __future__ import annotations

import hashlib
import os

import pytest

from hubget.errors import NetworkError
from hubget.transfer.engine import Engine
from hubget.transfer.http import HttpClient
from hubget.transfer.jobs import FileJob, ProgressSink
from tests.support.rangeserver import Fault, RangeServer

KiB = 1024
MiB = 1024 * KiB
DATA = os.urandom(6 * MiB + 77)


class Messages(ProgressSink):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def engine(**kw) -> Engine:
    client = HttpClient(retries=2, backoff_base=0.01, read_timeout=5, connect_timeout=2)
    kw.setdefault("connections", 4)
    return Engine(
        client, split_threshold=1 * MiB, min_chunk=256 * KiB, max_chunk=512 * KiB, steal_min=128 * KiB, **kw
    )


def job(primary: str, mirrors: list[str], dest, data: bytes = DATA, headers=None) -> FileJob:
    return FileJob(
        primary,
        dest,
        len(data),
        hashlib.sha256(data).hexdigest(),
        headers=headers or {},
        label="w.safetensors",
        mirrors=mirrors,
    )


def test_ranges_of_one_file_come_from_every_source(tmp_path):
    with RangeServer() as a, RangeServer() as b, RangeServer() as c:
        for s in (a, b, c):
            s.add("/w", DATA)
        dest = tmp_path / "w"
        (result,) = engine().run(
            [job(a.url("/w"), [b.url("/w"), c.url("/w")], dest, headers={"Authorization": "Bearer t"})]
        )
        assert dest.read_bytes() == DATA
        assert set(result.sources) == {a.base, b.base, c.base}
        assert all(n > 0 for n in result.sources.values())
        assert sum(result.sources.values()) == len(DATA)
        # the token stays with the primary's origin
        assert all("Authorization" not in r.headers for s in (b, c) for r in s.requests_for("/w"))


def test_a_source_answering_404_is_left_and_the_others_finish(tmp_path):
    with RangeServer() as a, RangeServer() as b:
        a.add("/w", DATA)
        b.add("/w", DATA)
        b.fault("/w", Fault("status", status=404, times=-1))
        sink = Messages()
        dest = tmp_path / "w"
        (result,) = engine(progress=sink).run([job(b.url("/w"), [a.url("/w")], dest)])
        assert dest.read_bytes() == DATA
        assert result.sources == {a.base: len(DATA)}
        assert any(b.base in line and "is out" in line for line in sink.lines)


def test_a_source_dying_mid_range_continues_from_its_bytes_on_another(tmp_path):
    with RangeServer() as a, RangeServer() as b:
        a.add("/w", DATA)
        b.add("/w", DATA)
        # every answer of b resets after 100 KiB: what it delivered is kept, the rest comes from a
        b.fault("/w", Fault("reset", after=100 * KiB, times=-1))
        dest = tmp_path / "w"
        (result,) = engine().run([job(b.url("/w"), [a.url("/w")], dest)])
        assert dest.read_bytes() == DATA
        assert result.sources.get(b.base, 0) > 0  # b's bytes were used, not fetched again
        assert result.bytes_fetched == len(DATA)


def test_a_stalling_source_loses_its_ranges(tmp_path):
    with RangeServer() as a, RangeServer() as b:
        a.add("/w", DATA)
        b.add("/w", DATA)
        b.fault("/w", Fault("stall", after=64 * KiB, seconds=30, times=-1))
        dest = tmp_path / "w"
        (result,) = engine(stall_timeout=1.5).run([job(b.url("/w"), [a.url("/w")], dest)])
        assert dest.read_bytes() == DATA
        assert result.sources[a.base] > result.sources.get(b.base, 0)


def test_fails_only_when_no_source_can_serve(tmp_path):
    with RangeServer() as a, RangeServer() as b:
        for s in (a, b):
            s.add("/w", DATA)
            s.fault("/w", Fault("status", status=503, times=-1))
        dest = tmp_path / "w"
        with pytest.raises(NetworkError, match="503"):
            engine(range_retries=2).run([job(a.url("/w"), [b.url("/w")], dest)])
        assert not dest.exists()


def test_a_mirror_listing_the_right_hash_but_serving_other_bytes_cannot_spoil_the_file(tmp_path):
    from hubget.api.auto import fetch_auto
    from hubget.models import RepoRef
    from tests.support.fakehub import FakeHfRepo

    files = {"w.safetensors": DATA, "config.json": b"{}"}
    with RangeServer() as hub, RangeServer() as liar:
        FakeHfRepo(hub, "org/m", files).publish()
        lying = FakeHfRepo(liar, "org/m", files).publish()
        for offset in range(0, len(DATA), 128 * KiB):  # every range it serves carries a wrong byte
            liar.fault(lying.resolve_path("w.safetensors"), Fault("corrupt", offset=offset))
        sink = Messages()
        plan, report = fetch_auto(
            RepoRef("org/m"),
            endpoint=hub.base,
            token=False,
            mirrors=[liar.base],
            use_modelscope=False,
            cache_dir=tmp_path,
            progress=sink,
            connections=4,
            engine_options={"split_threshold": 1 * MiB, "min_chunk": 256 * KiB, "max_chunk": 512 * KiB},
        )
        blob = tmp_path / "models--org--m" / "blobs" / hashlib.sha256(DATA).hexdigest()
        assert blob.read_bytes() == DATA
        assert any("fetching the failed file(s) again from one source each" in line for line in sink.lines)
        (weights,) = [f for f in report.files if f.path == "w.safetensors"]
        assert weights.sources == {hub.base: len(DATA)}
        assert liar.requests_for(lying.resolve_path("w.safetensors"))  # the liar was asked, and caught
