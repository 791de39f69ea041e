"""Rate limits as the hub states them: the IETF RateLimit headers parsed, pauses shared by every
request to the same bucket of the same origin, spacing when little is left, the client's budget."""

from __future__ import annotations

import time

import pytest

from hubget.transfer.http import HttpClient
from hubget.transfer.ratelimit import ANY, Quota, RateLimiter, parse_policy, parse_ratelimit
from tests.support.rangeserver import Fault, RangeServer

HUB = "https://huggingface.co"


@pytest.fixture
def server():
    with RangeServer() as srv:
        yield srv


def test_parse_ratelimit_and_policy() -> None:
    assert parse_ratelimit('"resolvers";r=0;t=42') == [Quota("resolvers", 0, 42.0)]
    assert parse_ratelimit('"api";r=499;t=300, "resolvers";r=12;t=7') == [
        Quota("api", 499, 300.0),
        Quota("resolvers", 12, 7.0),
    ]
    assert parse_ratelimit("r=3;t=1") == [Quota(ANY, 3, 1.0)]
    assert parse_ratelimit(None) == [] and parse_ratelimit("garbage") == []
    assert parse_policy('"fixed window";"resolvers";q=3000;w=300') == {"resolvers": (3000, 300.0)}


def _observe(
    lim: RateLimiter, status: int, headers: dict[str, str], bucket: str | None = "resolvers"
) -> float | None:
    return lim.observe(
        HUB, bucket, status, headers, host="huggingface.co", anonymous=True, fallback=lambda: 7.0
    )


def test_a_429_pauses_the_bucket_for_every_caller_and_is_said_once() -> None:
    lim = RateLimiter()
    said: list[str] = []
    lim.add_listener(said.append)
    pause = _observe(lim, 429, {"RateLimit": '"resolvers";r=0;t=20'})
    assert pause is not None and 20 <= pause <= 21
    # every other request to that bucket waits as long; other buckets and origins do not
    assert 19 <= lim.delay(HUB, "resolvers") <= 21
    assert lim.delay(HUB, "api") == 0 and lim.delay("https://cas-bridge.xethub.hf.co", None) == 0
    _observe(lim, 429, {"RateLimit": '"resolvers";r=0;t=20'})  # a second worker hit the same wall
    assert len(said) == 1 and "rate limited" in said[0] and "(resolvers)" in said[0] and "token" in said[0]


def test_a_429_without_ratelimit_uses_the_clients_own_wait() -> None:
    lim = RateLimiter()
    pause = _observe(lim, 429, {}, bucket=None)
    assert pause == 7.0 and 6.5 <= lim.delay(HUB, None) <= 7.0


def test_nothing_left_closes_the_bucket_before_a_429() -> None:
    lim = RateLimiter()
    assert _observe(lim, 200, {"RateLimit": '"resolvers";r=0;t=5'}) is None
    assert 4.5 <= lim.delay(HUB, "resolvers") <= 6


def test_little_left_spreads_the_rest_over_the_window() -> None:
    lim = RateLimiter()
    _observe(
        lim,
        200,
        {"RateLimit": '"resolvers";r=3;t=8', "RateLimit-Policy": '"fixed window";"resolvers";q=3000;w=300'},
    )
    delays = [lim.delay(HUB, "resolvers") for _ in range(4)]
    # 3 calls left, 8 s to go: one every 2 s
    assert delays[0] <= 0.01 and all(
        abs(b - a - 2.0) < 0.05 for a, b in zip(delays, delays[1:], strict=False)
    )
    lim2 = RateLimiter()
    _observe(lim2, 200, {"RateLimit": '"resolvers";r=2900;t=8'})
    assert [lim2.delay(HUB, "resolvers") for _ in range(3)] == [0.0, 0.0, 0.0]


def test_client_waits_out_429s_without_counting_retries(server) -> None:
    server.add("/r", b"ok")
    for _ in range(8):  # more 429s than retries
        server.fault("/r", Fault("status", status=429, headers={"RateLimit": '"resolvers";r=0;t=0'}))
    waits: list[float] = []
    client = HttpClient(retries=2, limiter=RateLimiter(), rate_limit_wait=60)
    client.sleep = waits.append
    resp = client.request("GET", server.url("/r"), bucket="resolvers")
    assert resp.status == 200 and resp.data == b"ok"
    assert len(server.requests_for("/r")) == 9 and len(waits) == 8


def test_client_gives_up_when_the_budget_is_spent(server) -> None:
    server.add("/r", b"ok")
    server.fault("/r", Fault("status", status=429, times=-1, headers={"RateLimit": '"resolvers";r=0;t=30'}))
    client = HttpClient(retries=2, limiter=RateLimiter(), rate_limit_wait=100)
    slept: list[float] = []
    client.sleep = slept.append
    started = time.monotonic()
    resp = client.request("GET", server.url("/r"), bucket="resolvers")
    assert resp.status == 429
    assert 60 <= sum(slept) <= 100 and time.monotonic() - started < 5  # the waits were the fake sleep's
