"""Staging's in-memory ranges follow a signed URL that keeps expiring, part after part."""

from __future__ import annotations

import os
import time

from hubget.transfer.http import HttpClient
from hubget.transfer.rangeget import RangeReader
from tests.support.hubreplica import HubReplica, make_repo

MiB = 1024 * 1024


def test_each_expiry_of_the_signed_url_is_resolved_again() -> None:
    # The replica's URLs stop working 1.5 s after the second they are dated at while they say 2 s,
    # so a reader that refreshes shortly before the stated expiry is still refused (403) when it
    # asks between the two. Each part after the first asks there: refused, resolved again, read.
    # A location that served bytes and then was refused had expired, however often that happens.
    data = os.urandom(3 * MiB)
    with HubReplica([make_repo("org/x", {"w.safetensors": data})], url_expiry=1.5) as hub:
        repo = hub.repos[("model", "org/x")]
        url = f"{hub.hub_url}/org/x/resolve/{repo.commit}/w.safetensors"
        reader = RangeReader(HttpClient(retries=0), url, size=len(data), label="w.safetensors")
        parts = []
        for start in range(0, len(data), MiB):
            if start:
                time.sleep(max(0.0, hub.latest_expiry() + 0.1 - time.time()))
            buf = bytearray(MiB)
            reader.read_into(start, memoryview(buf))
            parts.append(bytes(buf))
        assert b"".join(parts) == data
        assert hub.counters.resolves("w.safetensors") == 3
        assert hub.counters.expired_answers() == 2
