"""The pieces of the native Xet path on their own: chunk decoding (against xorbs hf_xet wrote and against
hand-made ones), the planner's units, the reconstruction parser, token renewal times."""

from __future__ import annotations

import os
import struct
import time

import lz4.frame
import pytest

from hubget.errors import ProtocolError
from hubget.sources.xet import XetAuth, parse_reconstruction
from hubget.transfer.xetdecode import ChunkStream, XetDataError, bg4_regroup
from hubget.transfer.xetplan import XetFetch, XetReconstruction, XetTerm, plan_units
from tests.support import xetspec as spec
from tests.support.casreplica import CasReplica, weights_like


def chunk(data: bytes, scheme: int) -> bytes:
    if scheme == spec.SCHEME_LZ4:
        payload = lz4.frame.compress(data)
    elif scheme == spec.SCHEME_BG4_LZ4:
        groups = b"".join(data[k::4] for k in range(4))
        payload = lz4.frame.compress(groups)
    else:
        payload = data
    head = bytes([0]) + len(payload).to_bytes(3, "little") + bytes([scheme]) + len(data).to_bytes(3, "little")
    return head + payload


def decode_all(body: bytes, first: int, count: int, step: int = 7777) -> list[bytes]:
    stream = ChunkStream(first, count, size=300_000)
    out = []
    pos = 0
    while pos < len(body):  # the body arrives in odd-sized pieces
        room = stream.space()
        n = min(len(room), step, len(body) - pos)
        room[:n] = body[pos : pos + n]
        stream.wrote(n)
        pos += n
        out += [bytes(d) for _, d in stream.chunks()]
    stream.finish()
    return out


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 131071, 131072])
def test_bg4_regroup_undoes_the_grouping(n):
    data = os.urandom(n)
    assert bg4_regroup(b"".join(data[k::4] for k in range(4))) == data


def test_every_scheme_decodes_in_pieces():
    parts = [
        os.urandom(70_000),
        b"abc" * 30_000,
        struct.pack("<30000f", *[i * 1e-3 for i in range(30000)]),
        b"x",
    ]
    body = b"".join(chunk(p, s) for p, s in zip(parts, [0, 1, 2, 2], strict=True))
    assert decode_all(body, 5, 4) == parts


@pytest.mark.parametrize(
    "damage",
    ["version", "scheme", "size", "short", "extra", "lz4"],
)
def test_damaged_ranges_are_refused(damage):
    good = chunk(b"abc" * 30_000, spec.SCHEME_LZ4) + chunk(os.urandom(1000), spec.SCHEME_NONE)
    body = bytearray(good)
    count = 2
    if damage == "version":
        body[0] = 1
    elif damage == "scheme":
        body[4] = 9
    elif damage == "size":
        body[5:8] = (200_000).to_bytes(3, "little")
    elif damage == "short":
        body = body[:-10]
    elif damage == "extra":
        count = 1
    elif damage == "lz4":
        body[20:40] = b"\xff" * 20
    with pytest.raises(XetDataError):
        decode_all(bytes(body), 0, count)


def test_xorbs_written_by_hf_xet_decode_to_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path))
    data = weights_like(2_000_000, seed=3) + os.urandom(500_000) + b"text " * 100_000
    with CasReplica() as cas:
        info = cas.upload({"f": data})["f"]
        out = b""
        for term in cas.files[info.xet_hash].terms:
            stored = cas.xorbs[spec.hash_to_hex(term.xorb)]
            first, last = stored.chunks[term.start], stored.chunks[term.end - 1]
            out += b"".join(
                decode_all(stored.data[first.offset : last.end], term.start, term.end - term.start)
            )
    assert out == data


H1, H2 = "a" * 64, "b" * 64


def test_plan_units_coalesces_terms_and_keeps_deduplicated_chunks():
    # File = H1[0,2) + H2[0,1) + H1[1,3): chunk 1 of H1 is used twice; one fetch of H1 feeds both.
    recon = XetReconstruction(
        0,
        [XetTerm(H1, 0, 2, 200), XetTerm(H2, 0, 1, 50), XetTerm(H1, 1, 3, 180)],
        [XetFetch(H1, 0, 3, 0, 1000, "http://t/h1"), XetFetch(H2, 0, 1, 0, 99, "http://t/h2")],
    )
    units, stop = plan_units(recon, 0, 430)
    assert stop == 430
    assert [u.fetch.xorb for u in units] == [H1, H2]
    assert [(p.file_pos, p.length) for p in units[0].placements] == [(0, 200), (250, 180)]
    assert units[1].placements[0].interval == (200, 250)


def test_plan_units_of_a_range_keeps_what_the_terms_hold():
    recon = XetReconstruction(
        30,
        [XetTerm(H1, 4, 6, 100), XetTerm(H2, 0, 1, 80)],
        [XetFetch(H1, 4, 6, 0, 9, "http://t/a"), XetFetch(H2, 0, 1, 0, 9, "http://t/b")],
    )
    units, stop = plan_units(recon, 1000, 1100)
    assert stop == 1150  # the second term ends past the range asked: its bytes are kept, not refetched
    assert [p.interval for u in units for p in u.placements] == [(1000, 1070), (1070, 1150)]
    with pytest.raises(ProtocolError):
        plan_units(recon, 1000, 1200)  # terms that fall short
    with pytest.raises(ProtocolError):
        plan_units(
            XetReconstruction(0, [XetTerm(H1, 0, 9, 10)], [XetFetch(H1, 0, 3, 0, 9, "http://t")]), 0, 10
        )


def test_reconstruction_answers_v1_and_v2():
    v2 = {
        "offset_into_first_range": 0,
        "terms": [{"hash": H1, "unpacked_length": 10, "range": {"start": 0, "end": 2}}],
        "xorbs": {
            H1: [
                {
                    "url": "https://t/x",
                    "ranges": [{"chunks": {"start": 0, "end": 2}, "bytes": {"start": 0, "end": 99}}],
                }
            ]
        },
    }
    recon = parse_reconstruction(v2, 2)
    assert recon.fetches == [XetFetch(H1, 0, 2, 0, 100, "https://t/x")]
    v1 = {
        "offset_into_first_range": 0,
        "terms": v2["terms"],
        "fetch_info": {
            H1: [{"range": {"start": 0, "end": 2}, "url": "https://t/y", "url_range": {"start": 5, "end": 9}}]
        },
    }
    assert parse_reconstruction(v1, 1).fetches == [XetFetch(H1, 0, 2, 5, 10, "https://t/y")]
    for bad in (
        {**v2, "terms": [{"hash": "zz", "unpacked_length": 1, "range": {"start": 0, "end": 1}}]},
        {**v2, "xorbs": {H1: [{"url": "file:///etc/passwd", "ranges": []}]}},
        {**v2, "offset_into_first_range": -1},
        {
            **v1,
            "fetch_info": {
                H1: [
                    {"range": {"start": 0, "end": 2}, "url": "https://t", "url_range": {"start": 9, "end": 5}}
                ]
            },
        },
    ):
        with pytest.raises(ProtocolError):
            parse_reconstruction(bad, 1 if "fetch_info" in bad else 2)


class _Answers:
    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.calls = 0

    def request(self, method, url, **kw):
        import json

        self.calls += 1
        body = {"accessToken": f"t{self.calls}", "exp": time.time() + self.lifetime, "casUrl": "http://cas"}

        class R:
            status = 200
            data = json.dumps(body).encode()

        return R()


def test_tokens_are_renewed_before_they_expire():
    answers = _Answers(lifetime=600)
    auth = XetAuth(answers, "http://hub/token", {})  # type: ignore[arg-type]
    token = auth.current()
    assert auth.current() is token and answers.calls == 1
    assert 600 - 30 - 1 <= token.refresh_at - time.time() <= 600 - 30  # 30 s early
    short = XetAuth(_Answers(lifetime=2), "http://hub/token", {})  # type: ignore[arg-type]
    t = short.current()
    assert 1.5 <= t.refresh_at - time.time() + 0.05 <= 1.7  # a fifth of a short lifetime early
    assert short.refused(t).access_token != t.access_token  # a 401: replaced at once
