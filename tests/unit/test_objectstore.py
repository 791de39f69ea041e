"""The pieces of staging into a bucket that need no store: resumable hashes, s3:// URLs, manifests,
part sizes, resume records."""

from __future__ import annotations

import hashlib
import os

import pytest

from hubget.errors import ProtocolError, UnsafePathError, UsageError
from hubget.objectstore.manifest import Manifest, ManifestFile, lfs_pointer_sha1
from hubget.objectstore.resume import UploadRecord, record_key
from hubget.objectstore.s3 import S3Url, is_s3_url, parse_s3_url
from hubget.objectstore.upload import MAX_PARTS, MiB, part_size_for
from hubget.transfer.hashstate import ResumableHash, StreamHash, resumable_available
from tests.support.repos import git_blob_sha1


def test_libcrypto_state_round_trips_here():
    # The machines the project runs on have libcrypto; without it staging still works (hashing from 0).
    assert resumable_available()


@pytest.mark.parametrize("algo", ["sha256", "sha1"])
def test_a_saved_state_goes_on_as_hashlib_would(algo: str):
    data = os.urandom(3 * 1024 * 1024 + 17)
    cut = [0, 1, 63, 64, 65, 1000, 1024 * 1024, len(data)]
    for a, b in zip(cut, cut[1:], strict=False):
        h = ResumableHash(algo)
        h.update(data[:a])
        resumed = ResumableHash(algo, h.state())
        resumed.update(bytearray(data[a:b]))
        resumed.update(memoryview(data)[b:])
        assert resumed.hexdigest() == hashlib.new(algo, data).hexdigest()
    with pytest.raises(ValueError):
        ResumableHash(algo, b"short")


def test_stream_hash_gives_sha256_and_git_blob_sha1_across_a_restart():
    data = os.urandom(200_000)
    first = StreamHash(size=len(data), git_sha1=True)
    first.update(data[:70_000])
    state = first.state()
    assert state is not None and set(state) == {"sha256", "sha1"}
    second = StreamHash(size=len(data), git_sha1=True, state=state)
    second.update(data[70_000:])
    assert second.sha256() == hashlib.sha256(data).hexdigest()
    assert second.git_sha1() == git_blob_sha1(data)
    assert StreamHash(size=1, git_sha1=False).git_sha1() is None


def test_s3_urls():
    assert parse_s3_url("s3://bucket/a/b/") == S3Url("bucket", "a/b")
    assert parse_s3_url("s3://bucket") == S3Url("bucket", "")
    url = parse_s3_url("s3://b/root")
    assert url.key("models/org/x", "w.bin") == "root/models/org/x/w.bin"
    assert url.child("models", "org", "x") == S3Url("b", "root/models/org/x")
    assert str(url.child("m")) == "s3://b/root/m" and str(S3Url("b")) == "s3://b"
    assert S3Url("b").key("x") == "x"
    assert is_s3_url("s3://b/x") and not is_s3_url("/data/x") and not is_s3_url(None)
    for bad in ("s3:///x", "http://b/x", "s3://b/a/../c", "s3://b/a//c", "s3://b/x?y=1"):
        with pytest.raises(UsageError):
            parse_s3_url(bad)


def test_part_sizes_stay_under_the_part_limit():
    assert part_size_for(10 * MiB, 16 * MiB) == 16 * MiB
    big = 700 * 1024 * MiB
    size = part_size_for(big, 16 * MiB)
    assert size % MiB == 0 and -(-big // size) <= MAX_PARTS and size < 80 * MiB


def test_manifest_round_trip_and_checks():
    m = Manifest("org/x", "model", "a" * 40, ["main"], "http://hub")
    sha = hashlib.sha256(b"w").hexdigest()
    m.files["w.bin"] = ManifestFile("w.bin", 1, sha, lfs_pointer_sha1(sha, 1), True)
    m.files["c.json"] = ManifestFile("c.json", 2, sha, git_blob_sha1(b"{}"), False)
    again = Manifest.from_json(m.to_json())
    assert again.files == m.files and (again.commit, again.revisions) == (m.commit, ["main"])
    with pytest.raises(ProtocolError):
        Manifest.from_json(b"not json")
    with pytest.raises(ProtocolError):
        Manifest.from_json(m.to_json().replace(b'"format": 1', b'"format": 9'))
    with pytest.raises(UnsafePathError):
        Manifest.from_json(m.to_json().replace(b'"w.bin"', b'"../w.bin"'))


def test_lfs_pointer_sha1_is_the_hubs_oid():
    data = b"x" * 100
    sha = hashlib.sha256(data).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize 100\n".encode()
    assert lfs_pointer_sha1(sha, 100) == git_blob_sha1(pointer)


def test_resume_records():
    rec = UploadRecord("p/k", "id-1", 100, 5 * MiB, "s" * 64, None, hashed=2, hash_state={"sha256": "00"})
    back = UploadRecord.from_json(rec.to_json())
    assert back == rec
    assert back is not None and back.describes("p/k", 100, "s" * 64, None)
    assert not back.describes("p/k", 101, "s" * 64, None)
    assert UploadRecord.from_json(b"{}") is None and UploadRecord.from_json(b"junk") is None
    assert record_key("root/m", "root/m/a.bin").startswith("root/m/.hubget/uploads/")
    assert record_key("root/m", "root/m/a.bin") != record_key("root/m", "root/m/b.bin")
