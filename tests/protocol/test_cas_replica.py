"""The CAS replica (tests/support/casreplica.py) is faithful: the real client, hf_xet, uploads to it
(its own chunking, compression and hashes, every one re-checked by the replica from the spec) and
downloads the very same bytes back from it; huggingface_hub with Xet enabled downloads from the hub
replica plus the CAS replica without touching the HTTP bridge."""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import hf_xet
import pytest

from tests.protocol.clientrun import run_client
from tests.support import xetspec as spec
from tests.support.casreplica import CasReplica, publish, weights_like
from tests.support.hubreplica import HubReplica, make_repo


def sample_files() -> dict[str, bytes]:
    rnd = os.urandom(3_000_000)
    return {
        "weights.bin": weights_like(6_000_000, seed=1),  # BG4+LZ4 chunks
        "text.bin": b"".join(b"line %d of a text file\n" % i for i in range(150_000)),  # LZ4 chunks
        "random.bin": rnd,  # stored uncompressed
        "mixed.bin": rnd[:1_000_000] + bytes(500_000) + weights_like(1_000_000, seed=2),
        "small.bin": b"tiny",
    }


def hf_xet_download(cas: CasReplica, xet_hash: str, size: int, dest: Path) -> bytes:
    token = cas.read_token()
    session = hf_xet.XetSession(hf_xet.XetConfig().with_config({"telemetry.enabled": False}))
    with session.new_file_download_group(
        endpoint=cas.cas_url, token=token["accessToken"], token_expiry_unix_secs=token["exp"]
    ) as group:
        group.start_download_file(hf_xet.XetFileInfo(xet_hash, size), str(dest))
    return dest.read_bytes()


@pytest.mark.parametrize("v2", [True, False], ids=["v2", "v1-fallback"])
def test_hf_xet_round_trip(tmp_path: Path, v2: bool, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet-cache"))
    files = sample_files()
    with CasReplica(v2=v2) as cas:
        infos = cas.upload(files)
        # Every upload passed the replica's own checks: xorb hashes, term verification hashes and
        # file hashes recomputed from the decoded chunks agree with hf_xet's.
        assert set(cas.files) == {i.xet_hash for i in infos.values()}
        for name, info in infos.items():
            assert info.sha256 == hashlib.sha256(files[name]).hexdigest()
            assert cas.files[info.xet_hash].size == len(files[name])
            assert cas.files[info.xet_hash].sha256 == info.sha256
        schemes = {c.scheme for x in cas.xorbs.values() for c in x.chunks}
        assert schemes == {spec.SCHEME_NONE, spec.SCHEME_LZ4, spec.SCHEME_BG4_LZ4}

        cas.counters.reset()
        for name, info in infos.items():
            assert hf_xet_download(cas, info.xet_hash, info.size, tmp_path / name) == files[name], name
        requests = cas.counters.requests
        assert requests["v2-reconstruction" if v2 else "v1-reconstruction"] >= len(files)
        assert requests["xorb-range"] >= len(cas.xorbs)
        assert cas.counters.auth_seen["transfer"] == []  # signed URLs carry no CAS token
        assert cas.counters.refused_urls == {}


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_replica_answers_as_the_spec_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_XET_CACHE", str(tmp_path / "xet-cache"))
    data = weights_like(3_000_000, seed=3) + os.urandom(2_000_000)
    with CasReplica(url_expiry=2, token_lifetime=3) as cas:
        info = cas.upload({"f": data})["f"]
        auth = {"Authorization": f"Bearer {cas.read_token()['accessToken']}"}
        url = f"{cas.cas_url}/v2/reconstructions/{info.xet_hash}"
        assert _get(url)[0] == 401
        status, _, body = _get(url, auth)
        assert status == 200
        recon = json.loads(body)
        assert recon["offset_into_first_range"] == 0
        assert sum(t["unpacked_length"] for t in recon["terms"]) == len(data)
        # A Range query starts inside the first term it returns.
        status, _, body = _get(url, {**auth, "Range": "bytes=4000000-4000099"})
        part = json.loads(body)
        assert status == 200 and 0 < part["offset_into_first_range"] < part["terms"][0]["unpacked_length"]
        assert _get(url, {**auth, "Range": f"bytes={len(data)}-"})[0] == 416

        # Xorb bytes: the signed ranges, one or several (multipart/byteranges), nothing else.
        name, (fetch,) = next(iter(recon["xorbs"].items()))
        xorb = cas.xorbs[name].data
        r0 = fetch["ranges"][0]["bytes"]
        status, headers, body = _get(fetch["url"], {"Range": f"bytes={r0['start']}-{r0['end']}"})
        assert status == 206 and body == xorb[r0["start"] : r0["end"] + 1]
        sub = f"bytes={r0['start']}-{r0['start'] + 99}"
        assert _get(fetch["url"], {"Range": sub})[2] == xorb[r0["start"] : r0["start"] + 100]
        outside = f"bytes={r0['end'] + 1}-{r0['end'] + 10}"
        assert _get(fetch["url"], {"Range": outside})[0] == 403
        assert _get(fetch["url"])[0] == 403  # a Range is required
        chunks = cas.xorbs[name].chunks
        two = f"bytes=0-{chunks[0].end - 1},{chunks[2].offset}-{chunks[2].end - 1}"
        signed = cas._sign(name, [(0, chunks[0].end - 1), (chunks[2].offset, chunks[2].end - 1)])
        status, headers, body = _get(signed, {"Range": two})
        assert status == 206 and headers["Content-Type"].startswith("multipart/byteranges")
        assert xorb[: chunks[0].end] in body and xorb[chunks[2].offset : chunks[2].end] in body

        time.sleep(3.2)
        assert _get(fetch["url"], {"Range": f"bytes={r0['start']}-{r0['end']}"})[0] == 403  # expired
        assert _get(url, auth)[0] == 401  # the token expired too
        assert cas.counters.refused_urls["expired"] == 1


def test_huggingface_hub_downloads_through_xet(tmp_path: Path):
    files = {
        "config.json": b'{"model_type": "x"}\n',
        "model.safetensors": weights_like(5_000_000, seed=4),
        "tokenizer.model": os.urandom(200_000),
    }
    with HubReplica() as hub, CasReplica() as cas:
        repo = publish(hub, cas, make_repo("org/xet", files))
        assert all(f.xet_hash in cas.files for f in repo.files.values() if f.lfs)
        cas.counters.reset()
        out = run_client(
            """
            from huggingface_hub import snapshot_download
            emit(tree_hashes(snapshot_download("org/xet")))
            """,
            endpoint=hub.hub_url,
            hf_home=tmp_path / "hf_home",
            env={"HF_XET_CACHE": str(tmp_path / "client-xet")},
        )
        assert out == {p: hashlib.sha256(d).hexdigest() for p, d in files.items()}
        assert sum(hub.counters.bridge_requests.values()) == 0  # every LFS file came through Xet
        assert hub.counters.api_calls["xet-read-token"] >= 1
        assert cas.counters.requests["v2-reconstruction"] == 2 and cas.counters.requests["xorb-range"] >= 2
