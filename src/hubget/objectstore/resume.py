"""The resume record of one multipart upload: ``PREFIX/.hubget/uploads/<id>.json`` in the bucket.

It is written right after CreateMultipartUpload and then, at most once a second, as the in-order
hash advances: the upload id, the part size, how many leading parts are hashed (all of them uploaded:
a part is hashed only after its upload), and the hash state after them (``transfer.hashstate``). A
rerun asks ListParts which parts the store holds, skips the hashed ones entirely, fetches the rest
from the hub (to hash them) and uploads only those the store lacks. Kept in the bucket, not on the
machine, so a rerun from another machine resumes as well.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from hubget.objectstore.manifest import UPLOADS_DIR
from hubget.objectstore.s3 import S3Bucket

FORMAT = 1


@dataclass
class UploadRecord:
    key: str
    upload_id: str
    size: int
    part_size: int
    sha256: str | None  # the hash the file must have (as the hub says), to refuse a record of other bytes
    git_sha1: str | None
    hashed: int = 0  # leading parts hashed (and uploaded)
    hash_state: dict[str, str] | None = None
    created: float = field(default_factory=time.time)

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, **asdict(self)}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> UploadRecord | None:
        try:
            body: dict[str, Any] = json.loads(data)
            if body.pop("format", None) != FORMAT:
                return None
            return cls(**body)
        except (ValueError, TypeError):
            return None

    def describes(self, key: str, size: int, sha256: str | None, git_sha1: str | None) -> bool:
        return (self.key, self.size, self.sha256, self.git_sha1) == (key, size, sha256, git_sha1)


def record_key(state_prefix: str, key: str) -> str:
    name = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return (
        f"{state_prefix.rstrip('/')}/{UPLOADS_DIR}/{name}.json"
        if state_prefix
        else f"{UPLOADS_DIR}/{name}.json"
    )


def load_record(bucket: S3Bucket, state_prefix: str, key: str) -> UploadRecord | None:
    got = bucket.get_bytes(record_key(state_prefix, key))
    return UploadRecord.from_json(got[0]) if got else None


def save_record(bucket: S3Bucket, state_prefix: str, record: UploadRecord) -> None:
    bucket.put_bytes(record_key(state_prefix, record.key), record.to_json())


def drop_record(bucket: S3Bucket, state_prefix: str, key: str) -> None:
    bucket.delete(record_key(state_prefix, key))
