"""Signed URLs say when they expire; a file's location is resolved once and anew before that."""

from __future__ import annotations

import calendar
import math
import threading
import time

from hubget.transfer.locations import Location, Locations, location_for, signed_url_lifetime

BRIDGE = "https://cas-bridge.xethub.hf.co/xet-bridge-us/abc/def"


def amz(signed_at: float, expires: int) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(signed_at))
    query = f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={stamp}&X-Amz-Expires={expires}"
    return f"{BRIDGE}?{query}&X-Amz-Signature=f"


def test_lifetime_from_sigv4_and_cloudfront() -> None:
    now = float(calendar.timegm(time.gmtime()))
    assert abs(signed_url_lifetime(amz(now - 600, 3600), now) - 3000) < 1
    assert signed_url_lifetime(f"{BRIDGE}?Expires={int(now) + 90}&Signature=x&Key-Pair-Id=K", now) == 90
    # both: the earlier wins
    both = amz(now, 3600) + f"&Expires={int(now) + 60}"
    assert signed_url_lifetime(both, now) == 60
    assert signed_url_lifetime(f"{BRIDGE}?sig=1", now) is None
    # the machine's clock is a day ahead of the signer's: the stated lifetime counts from now
    assert signed_url_lifetime(amz(now - 86400, 3600), now) == 3600


def test_location_refreshes_shortly_before_expiry() -> None:
    now = time.time()
    loc = location_for("https://huggingface.co/o/m/resolve/c/w", amz(now, 3600), now=100.0)
    assert loc.redirected and 100 + 3560 <= loc.refresh_at <= 100 + 3571  # 30 s early
    short = location_for("https://huggingface.co/o/m/resolve/c/w", amz(now, 10), now=100.0)
    assert 107.9 <= short.refresh_at <= 109.1  # a tenth of a short lifetime early (date in whole seconds)
    direct = location_for("http://127.0.0.1:1/o/m/resolve/c/w", "http://127.0.0.1:1/o/m/resolve/c/w")
    assert not direct.redirected and direct.refresh_at == math.inf


def test_one_resolve_for_all_connections_of_a_file() -> None:
    locs = Locations(1)
    assert locs.claim(0, lambda: False) is None  # the first caller resolves
    got: list[Location | None] = []
    waiters = [threading.Thread(target=lambda: got.append(locs.claim(0, lambda: False))) for _ in range(5)]
    for t in waiters:
        t.start()
    time.sleep(0.1)
    assert got == []  # they wait for the answer instead of resolving themselves
    loc = Location("https://cdn/x", True, time.monotonic())
    locs.resolved(0, loc)
    for t in waiters:
        t.join(2)
    assert got == [loc] * 5 and locs.resolves == 1


def test_refused_location_is_resolved_anew_but_not_forever() -> None:
    locs = Locations(1)
    locs.claim(0, lambda: False)
    old = Location("https://cdn/x?sig=1", True, time.monotonic(), served=1000)
    locs.resolved(0, old)
    assert locs.refused(0, old)  # it served bytes: an expiry, resolve again
    assert locs.claim(0, lambda: False) is None and locs.refreshes == 1
    fresh = Location("https://cdn/x?sig=2", True, time.monotonic())
    locs.resolved(0, fresh)
    assert locs.refused(0, fresh)  # a fresh one refused at once: one more try
    locs.claim(0, lambda: False)
    fresher = Location("https://cdn/x?sig=3", True, time.monotonic())
    locs.resolved(0, fresher)
    assert not locs.refused(0, fresher)  # twice in a row: not about expiry


def test_waiting_gives_up_when_the_work_is_cancelled() -> None:
    locs = Locations(1)
    locs.claim(0, lambda: False)
    cancelled = threading.Event()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            locs.claim(0, cancelled.is_set)
        except InterruptedError as e:
            errors.append(e)

    t = threading.Thread(target=wait)
    t.start()
    cancelled.set()
    t.join(2)
    assert not t.is_alive() and len(errors) == 1


def test_connections_refused_together_by_one_location_count_once() -> None:
    # Two connections started on the same signed URL and both were refused as it expired: that is
    # one refused location, not "a fresh one refused twice in a row".
    locs = Locations(1)
    locs.claim(0, lambda: False)
    shared = Location("https://cdn/x?sig=1", True, time.monotonic())
    locs.resolved(0, shared)
    assert locs.refused(0, shared) and locs.refused(0, shared)
    assert locs.claim(0, lambda: False) is None  # resolved anew
    fresh = Location("https://cdn/x?sig=2", True, time.monotonic())
    locs.resolved(0, fresh)
    assert not locs.refused(0, fresh)  # a second location refused before any byte: the status stands
