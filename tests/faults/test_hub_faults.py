"""Faults of the hub and the path to it: errors that must not be retried, expired signed URLs,
redirects (credentials, downgrades, schemes, loops), DNS, silent and slow servers, TLS."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
from pathlib import Path

import pytest

from hubget.transfer.engine import Engine
from hubget.transfer.jobs import FileJob
from tests.faults import faultserver as fs
from tests.faults.faultserver import FaultServer
from tests.faults.harness import (
    assert_cache_verified,
    assert_clean_failure,
    assert_files,
    assert_ok,
    cli_args,
    final_files,
    run_cli,
)
from tests.support.fakehub import FakeHfRepo
from tests.support.rangeserver import RangeServer, make_self_signed

pytestmark = pytest.mark.timeout(90)

REPO = "org/hubfaults"
WEIGHTS = os.urandom(300 * 1024 + 7)
FILES = {"config.json": b'{"a": 1}\n', "model.safetensors": WEIGHTS}
W = "model.safetensors"
TOKEN = "hf_reliability_secret_token"
INFO = f"/api/models/{REPO}/revision/main"


def publish(server: FaultServer | RangeServer) -> FakeHfRepo:
    return FakeHfRepo(server, REPO, FILES).publish()  # type: ignore[arg-type]


def cli(endpoint: str, cache: Path, env: dict[str, str] | None = None, timeout: float = 60):
    return run_cli(cli_args(REPO, endpoint, cache), env=env, timeout=timeout)


# -- 401 / 403 / 404: no retry, a message that says what is wrong -----------------------------


@pytest.mark.parametrize(
    ("status", "headers", "code", "words"),
    [
        (401, {}, 4, ["denied", "HTTP 401", "token"]),
        (403, {"X-Error-Code": "GatedRepo"}, 4, ["gated"]),
        (403, {}, 4, ["denied", "HTTP 403"]),
        (404, {"X-Error-Code": "RepoNotFound"}, 3, ["not found"]),
        (404, {}, 3, ["not found"]),
    ],
)
def test_hub_refusals_are_not_retried(hub, tmp_path, status, headers, code, words):
    publish(hub)
    hub.always(INFO, fs.status(status, headers))
    assert_clean_failure(cli(hub.base, tmp_path), code, *words)
    assert len(hub.requests_for(INFO)) == 1
    assert not final_files(tmp_path)


@pytest.mark.parametrize(
    ("status", "code", "words"),
    [(401, 4, ["401", W]), (403, 4, ["403", W]), (404, 3, ["404", "not found", W])],
)
def test_file_refusals_are_not_retried(hub, tmp_path, status, code, words):
    repo = publish(hub)
    hub.always(repo.resolve_path(W), fs.status(status))
    assert_clean_failure(cli(hub.base, tmp_path), code, *words)
    # segments already under way may each ask once; none is asked twice
    asked = [r.headers.get("range") for r in hub.requests_for(repo.resolve_path(W))]
    assert len(asked) == len(set(asked)) <= 8
    assert_cache_verified(tmp_path)
    assert all(p.name != repo.etags[W] for p in final_files(tmp_path))


def test_503_storm_on_the_api_is_bounded(hub, tmp_path):
    publish(hub)
    hub.always(INFO, fs.status(503, {"Retry-After": "1"}))
    assert_clean_failure(cli(hub.base, tmp_path), 6, "503")
    assert 1 < len(hub.requests_for(INFO)) <= 3  # retries=2 in these tests


def test_429_on_the_api_then_served(hub, tmp_path):
    publish(hub)
    hub.script(INFO, fs.status(429, {"Retry-After": fs.http_date(1)}), fs.status(429, {"Retry-After": "1"}))
    assert_files(assert_ok(cli(hub.base, tmp_path)), FILES)


# -- signed CDN URLs ---------------------------------------------------------------------------


def _signed_cdn(hub: FaultServer, cdn: FaultServer, repo: FakeHfRepo) -> None:
    """The hub redirects the weights to the CDN with a new signature each time it is asked."""
    cdn.add("/cdn/w", WEIGHTS)
    counter = itertools.count(1)
    hub.always(repo.resolve_path(W), fs.redirect(lambda req: cdn.url(f"/cdn/w?sig={next(counter)}")))


def test_expired_signed_url_gets_a_fresh_one_from_the_hub(hub, cdn, tmp_path):
    repo = publish(hub)
    _signed_cdn(hub, cdn, repo)
    expired = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    cdn.script("/cdn/w", fs.status(403, {"Content-Type": "application/xml"}, expired))
    path = assert_ok(cli(hub.base, tmp_path, env={"HF_TOKEN": TOKEN}))
    assert_files(path, FILES)
    # Asked the hub once more after the refusal, and only then: every range of the file went to the
    # one fresh signed URL (one resolve per file, not one per range).
    assert len(hub.requests_for(repo.resolve_path(W))) == 2
    sigs = [r.query for r in cdn.requests_for("/cdn/w")]
    assert sigs[0] == "sig=1" and set(sigs[1:]) == {"sig=2"} and len(sigs) >= 2


def test_token_never_reaches_the_cdn(hub, cdn, tmp_path):
    repo = publish(hub)
    _signed_cdn(hub, cdn, repo)
    assert_files(assert_ok(cli(hub.base, tmp_path, env={"HF_TOKEN": TOKEN})), FILES)
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests)
    assert cdn.requests
    for r in cdn.requests:
        assert TOKEN not in repr(r.headers)
        assert "authorization" not in r.headers and "cookie" not in r.headers


def test_engine_drops_credential_headers_on_a_cross_origin_hop(hub, cdn, tmp_path):
    cdn.add("/blob", WEIGHTS)
    hub.always("/resolve/w", fs.redirect(cdn.url("/blob")))
    secret = {
        "Authorization": f"Bearer {TOKEN}",
        "Cookie": f"session={TOKEN}",
        "Proxy-Authorization": f"Basic {TOKEN}",
        "X-Trace": "kept",
    }
    import hashlib

    job = FileJob(
        hub.url("/resolve/w"),
        tmp_path / "w",
        len(WEIGHTS),
        hashlib.sha256(WEIGHTS).hexdigest(),
        headers=secret,
    )
    Engine().run([job])
    assert (tmp_path / "w").read_bytes() == WEIGHTS
    assert hub.requests_for("/resolve/w")[0].headers["authorization"] == f"Bearer {TOKEN}"
    for r in cdn.requests:
        assert TOKEN not in repr(r.headers)
        assert r.headers.get("x-trace") == "kept"


# -- redirects that must be refused ------------------------------------------------------------


def test_redirect_to_file_scheme_is_refused(hub, tmp_path):
    repo = publish(hub)
    victim = tmp_path / "victim"
    victim.write_bytes(WEIGHTS)  # same bytes: a client following file:// would even "verify" it
    hub.always(repo.resolve_path(W), fs.redirect(victim.as_uri()))
    assert_clean_failure(cli(hub.base, tmp_path / "cache"), 6, "file://", "http")
    assert all(p.name != repo.etags[W] for p in final_files(tmp_path / "cache"))


def test_redirect_loop_is_refused_and_bounded(hub, tmp_path):
    repo = publish(hub)
    hub.always(repo.resolve_path(W), fs.redirect("/loop/a"))
    hub.always("/loop/a", fs.redirect("/loop/b"))
    hub.always("/loop/b", fs.redirect("/loop/a"))
    assert_clean_failure(cli(hub.base, tmp_path), 6, "redirect")
    assert len(hub.requests_for("/loop/a")) <= 30


def test_endless_redirect_chain_is_refused(hub, tmp_path):
    repo = publish(hub)
    hub.always(repo.resolve_path(W), fs.redirect("/hop/1"))
    for i in range(1, 60):
        hub.always(f"/hop/{i}", fs.redirect(f"/hop/{i + 1}"))
    assert_clean_failure(cli(hub.base, tmp_path), 6, "redirect")
    assert len(hub.requests_for("/hop/59")) == 0  # gave up after a bounded number of hops


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_self_signed(tmp_path_factory.mktemp("tls"))


def test_self_signed_certificate_refused_unless_trusted(tls_files, tmp_path):
    cert, key = tls_files
    with RangeServer(certfile=cert, keyfile=key) as tls:
        publish(tls)
        result = cli(tls.base, tmp_path, env={"SSL_CERT_FILE": "/nonexistent"})
        assert_clean_failure(result, 6, "certificate")
        assert not final_files(tmp_path)
        path = assert_ok(cli(tls.base, tmp_path, env={"SSL_CERT_FILE": cert}))
        assert_files(path, FILES)


def test_https_to_http_redirect_refused(tls_files, cdn, tmp_path):
    cert, key = tls_files
    cdn.add("/cdn/w", WEIGHTS)
    with RangeServer(certfile=cert, keyfile=key) as tls:
        repo = publish(tls)
        repo.redirect(W, cdn.url("/cdn/w"))
        result = cli(tls.base, tmp_path, env={"SSL_CERT_FILE": cert, "HF_TOKEN": TOKEN})
        assert_clean_failure(result, 6, "https", "http")
    assert cdn.requests == []  # not even one plain-text request


# -- unreachable, silent and slow servers ------------------------------------------------------


def test_dns_failure_of_the_hub(tmp_path):
    assert_clean_failure(cli("http://hub.hubget-test.invalid", tmp_path), 6, "hub.hubget-test.invalid")


def test_dns_failure_of_the_cdn(hub, tmp_path):
    repo = publish(hub)
    hub.always(repo.resolve_path(W), fs.redirect("http://cdn.hubget-test.invalid/w"))
    assert_clean_failure(cli(hub.base, tmp_path), 6, "cdn.hubget-test.invalid")
    assert all(p.name != repo.etags[W] for p in final_files(tmp_path))


def test_listener_that_never_accepts_times_out(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # the kernel completes the handshake; nobody ever reads
    try:
        port = listener.getsockname()[1]
        assert_clean_failure(cli(f"http://127.0.0.1:{port}", tmp_path, timeout=45), 6, "timed out")
    finally:
        listener.close()


def test_api_that_never_answers_times_out(hub, tmp_path):
    publish(hub)
    hub.always(INFO, fs.never_answer())
    assert_clean_failure(cli(hub.base, tmp_path, timeout=45), 6, "timed out")
    assert len(hub.requests_for(INFO)) <= 3


def test_api_that_drips_is_bounded(hub, tmp_path):
    """A repo-info answer sent a few bytes at a time: never silent long enough for a read timeout,
    so only a deadline on the whole answer ends it."""
    publish(hub)
    hub.add(INFO, hub.blobs[INFO].data + b" " * 1000)  # JSON may end with blanks
    hub.always(INFO, fs.drip(0.2, 2))  # over 100 s for the whole answer
    try:
        result = cli(hub.base, tmp_path, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("a dripping repo-info answer held hubget for over 30 s")
    assert_clean_failure(result, 6)
