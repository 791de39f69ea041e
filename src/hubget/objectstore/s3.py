"""The S3 API as hubget uses it: one bucket, the calls the stager and the server make, typed errors.

Built on boto3 (see docs/s3.md for why): it reads the standard AWS configuration (``AWS_ENDPOINT_URL``
and ``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_PROFILE`` and the shared config files). A store that is not AWS (an endpoint was given, or
configured) is addressed path-style (``http://host/bucket/key``), which local stores need; AWS
itself virtual-hosted. ``HUBGET_S3_ADDRESSING=path|virtual`` overrides the choice. Presigned URLs
are SigV4 (``X-Amz-Date`` + ``X-Amz-Expires``), which clients can read an expiry from.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hubget.errors import AuthError, EntryNotFoundError, HubgetError, NetworkError, UsageError

DEFAULT_REGION = "us-east-1"  # what SigV4 signs with when nothing configures a region (local stores)
_AUTH_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "403"}
)
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_CONFLICT_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


@dataclass(frozen=True)
class S3Url:
    """``s3://bucket/prefix``: a bucket and a key prefix without leading or trailing slash."""

    bucket: str
    prefix: str = ""

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def child(self, *parts: str) -> S3Url:
        return S3Url(self.bucket, self.key(*parts))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def is_s3_url(text: str | os.PathLike[str] | None) -> bool:
    return isinstance(text, str) and text.startswith("s3://")


def parse_s3_url(text: str) -> S3Url:
    parts = urlsplit(text)
    if parts.scheme != "s3" or not parts.netloc:
        raise UsageError(f"not an s3://bucket/prefix URL: {text!r}")
    if parts.query or parts.fragment:
        raise UsageError(f"an s3:// URL takes no query or fragment: {text!r}")
    prefix = parts.path.strip("/")
    if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
        raise UsageError(f"empty, '.' or '..' segment in {text!r}")
    return S3Url(parts.netloc, prefix)


class S3Error(HubgetError):
    """An S3 call failed (its code is in ``code``)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class NoSuchUpload(S3Error):
    """The multipart upload is gone (completed, aborted, or expired by a lifecycle rule)."""


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise UsageError("s3:// needs boto3: pip install 'hubget[s3]'") from None
    return boto3


class S3Bucket:
    """One bucket, thread-safe (boto3 clients are). Every method raises hubget errors, never botocore's."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        max_connections: int = 32,
        presign_endpoint: str | None = None,
    ) -> None:
        boto3 = _boto3()
        from botocore.config import Config

        self.bucket = bucket
        try:
            session = boto3.session.Session(profile_name=profile)
        except Exception as exc:  # botocore.exceptions.ProfileNotFound and friends
            raise UsageError(f"AWS configuration: {exc}") from None
        region = region or session.region_name or DEFAULT_REGION

        def client(endpoint_url: str | None, style: str) -> Any:
            config = Config(
                signature_version="s3v4",
                # Bodies are not hashed again for the signature (hubget has just hashed them, and the
                # CRC32 checksum botocore sends lets the store check them): on plain-http endpoints
                # botocore would otherwise sha256 every part a second time.
                s3={"addressing_style": style, "payload_signing_enabled": False},
                max_pool_connections=max_connections,
                retries={"mode": "standard", "max_attempts": 5},
                connect_timeout=10,
                read_timeout=120,
            )
            return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)

        style = os.environ.get("HUBGET_S3_ADDRESSING", "").strip().lower()
        if style not in ("path", "virtual"):
            probe = client(endpoint, "auto")  # resolves AWS_ENDPOINT_URL(_S3) and profile endpoints
            host = urlsplit(probe.meta.endpoint_url).hostname or ""
            style = (
                "virtual" if host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn") else "path"
            )
        self._client = client(endpoint, style)
        self._presigner = client(presign_endpoint, style) if presign_endpoint else self._client
        self.endpoint_url: str = self._client.meta.endpoint_url

    # -- objects ------------------------------------------------------------------------------
    def get_bytes(self, key: str, *, if_none_match: str | None = None) -> tuple[bytes, str] | None:
        """The object's bytes and ETag; None when it does not exist. With ``if_none_match`` (an ETag),
        ``(b"", etag)`` when it has not changed."""
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if if_none_match:
            kw["IfNoneMatch"] = if_none_match
        try:
            resp = self._call("get_object", **kw)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                return None
            if exc.code in ("304", "NotModified") and if_none_match:
                return b"", if_none_match
            raise
        with resp["Body"] as body:
            return body.read(), resp.get("ETag", "")

    def put_bytes(
        self, key: str, data: bytes | bytearray | memoryview, *, metadata: dict[str, str] | None = None
    ) -> str:
        resp = self._call(
            "put_object", Bucket=self.bucket, Key=key, Body=_Body(data), Metadata=metadata or {}
        )
        return str(resp.get("ETag", ""))

    def put_if(self, key: str, data: bytes, *, absent: bool = False, etag: str | None = None) -> str | None:
        """A conditional PutObject: only if no object is at ``key`` (``absent``, If-None-Match: *) or
        only if it still has ``etag`` (If-Match). Its new ETag, or None when the condition failed
        (another writer was first)."""
        kw: dict[str, Any] = {"IfNoneMatch": "*"} if absent else {"IfMatch": etag or ""}
        try:
            resp = self._call("put_object", Bucket=self.bucket, Key=key, Body=_Body(data), **kw)
        except S3Error as exc:
            # 412 the condition failed; 409 a concurrent conditional write won; 404 (If-Match) it is gone
            if exc.code in _CONFLICT_CODES or exc.code in _MISSING_CODES:
                return None
            raise
        return str(resp.get("ETag", ""))

    def head(self, key: str) -> dict[str, Any] | None:
        """``{"size", "etag", "metadata"}``, or None when there is no such object."""
        try:
            resp = self._call("head_object", Bucket=self.bucket, Key=key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES:
                return None
            raise
        return {
            "size": resp["ContentLength"],
            "etag": resp.get("ETag", ""),
            "metadata": resp.get("Metadata", {}),
        }

    def delete(self, key: str) -> None:
        self._call("delete_object", Bucket=self.bucket, Key=key)

    def list_sizes(self, prefix: str) -> dict[str, int]:
        """Every key under ``prefix`` (a folder: ``prefix/``) with its size."""
        out: dict[str, int] = {}
        for page in self._pages("list_objects_v2", "Contents", Prefix=prefix):
            out[page["Key"]] = page["Size"]
        return out

    def list_folders(self, prefix: str) -> list[str]:
        """The names of the "folders" right below ``prefix/`` (common prefixes with delimiter /)."""
        base = prefix.rstrip("/") + "/" if prefix else ""
        names = []
        for item in self._pages("list_objects_v2", "CommonPrefixes", Prefix=base, Delimiter="/"):
            names.append(item["Prefix"][len(base) :].rstrip("/"))
        return names

    def presign_get(self, key: str, expires: int) -> str:
        try:
            return str(
                self._presigner.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires
                )
            )
        except Exception as exc:  # botocore.exceptions.NoCredentialsError and friends
            raise _translate(exc, "presign") from None

    # -- multipart ----------------------------------------------------------------------------
    def create_upload(self, key: str, metadata: dict[str, str]) -> str:
        resp = self._call("create_multipart_upload", Bucket=self.bucket, Key=key, Metadata=metadata)
        return str(resp["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes | bytearray | memoryview) -> str:
        resp = self._call(
            "upload_part",
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=_Body(data),
        )
        return str(resp["ETag"])

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]]:
        """``part number -> (size, etag)`` of an upload; NoSuchUpload when it is gone."""
        out: dict[int, tuple[int, str]] = {}
        kw: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id}
        while True:
            resp = self._call("list_parts", **kw)
            for p in resp.get("Parts", []):
                out[int(p["PartNumber"])] = (int(p["Size"]), str(p["ETag"]))
            if not resp.get("IsTruncated"):
                return out
            kw["PartNumberMarker"] = resp["NextPartNumberMarker"]

    def complete_upload(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]
        self._call(
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
        )

    def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            self._call("abort_multipart_upload", Bucket=self.bucket, Key=key, UploadId=upload_id)
        except NoSuchUpload:
            pass

    def list_uploads(self, prefix: str) -> dict[str, list[tuple[str, float]]]:
        """Unfinished multipart uploads under ``prefix``: key -> [(upload id, started)], newest last."""
        out: dict[str, list[tuple[str, float]]] = {}
        kw: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            resp = self._call("list_multipart_uploads", **kw)
            for u in resp.get("Uploads", []):
                out.setdefault(u["Key"], []).append((u["UploadId"], u["Initiated"].timestamp()))
            if not resp.get("IsTruncated"):
                break
            kw["KeyMarker"] = resp.get("NextKeyMarker", "")
            kw["UploadIdMarker"] = resp.get("NextUploadIdMarker", "")
        for uploads in out.values():
            uploads.sort(key=lambda u: u[1])
        return out

    # -- plumbing -----------------------------------------------------------------------------
    def _pages(self, op: str, field: str, **kw: Any) -> Iterator[dict[str, Any]]:
        try:
            for page in self._client.get_paginator(op).paginate(Bucket=self.bucket, **kw):
                yield from page.get(field, [])
        except Exception as exc:
            raise _translate(exc, f"{op} s3://{self.bucket}/{kw.get('Prefix', '')}") from None

    def _call(self, op: str, **kw: Any) -> Any:
        try:
            return getattr(self._client, op)(**kw)
        except Exception as exc:
            raise _translate(exc, f"{op} s3://{self.bucket}/{kw.get('Key', kw.get('Prefix', ''))}") from None


class _Body(io.RawIOBase):
    """A read-only, seekable file over a buffer, so that a part goes out without a copy of it
    (``bytes(bytearray)`` or ``BytesIO`` would double the memory of every part in flight)."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), len(self._view) - self._pos)
        buf[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._view)


def _translate(exc: Exception, what: str) -> HubgetError:
    """botocore's exceptions as hubget's: auth, not found, network, or S3Error with the code."""
    from botocore import exceptions as bce

    if isinstance(exc, bce.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = f"{what}: {code or status} {err.get('Message', '')}".strip()
        if code == "NoSuchUpload":
            return NoSuchUpload(message, code)
        if code == "NoSuchBucket":
            return EntryNotFoundError(message)
        if code in _AUTH_CODES or status == 403:
            return AuthError(message)
        if status == 304:
            return S3Error(message, "304")
        return S3Error(message, code or str(status))
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return AuthError(
            f"{what}: no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)"
        )
    if isinstance(exc, bce.EndpointConnectionError | bce.ConnectionError | bce.ReadTimeoutError):
        return NetworkError(f"{what}: {exc}")
    if isinstance(exc, HubgetError):
        return exc
    return S3Error(f"{what}: {type(exc).__name__}: {exc}")
