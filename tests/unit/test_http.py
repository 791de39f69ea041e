"""HttpClient: redirects and the token policy, retries with Retry-After, TLS, errors that name the host."""

from __future__ import annotations

import email.utils
import socket
import time
from pathlib import Path

import pytest

from hubget.errors import NetworkError, ProtocolError, UsageError
from hubget.transfer.http import HttpClient, parse_retry_after
from tests.support.rangeserver import Fault, RangeServer, make_self_signed


@pytest.fixture
def server():
    with RangeServer() as srv:
        yield srv


@pytest.fixture
def other():
    with RangeServer() as srv:
        yield srv


def make_client(**kw) -> tuple[HttpClient, list[float]]:
    kw.setdefault("backoff_base", 0.001)
    kw.setdefault("retry_after_cap", 5)
    client = HttpClient(**kw)
    waits: list[float] = []
    client.sleep = waits.append  # record waits instead of sleeping
    return client, waits


def test_get_sends_identity_encoding_and_user_agent(server):
    server.add("/a", b"hello")
    client, _ = make_client()
    resp = client.request("GET", server.url("/a"))
    assert resp.status == 200 and resp.data == b"hello"
    hdrs = server.requests_for("/a")[0].headers
    assert hdrs["Accept-Encoding"] == "identity"
    assert hdrs["User-Agent"].startswith("hubget/")


def test_stream_readinto_and_connection_reuse(server):
    data = bytes(range(256)) * 4096
    server.add("/big", data)
    client, _ = make_client()
    buf = bytearray(65536)
    for _ in range(3):
        resp = client.request("GET", server.url("/big"), stream=True)
        got = bytearray()
        while n := resp.readinto(buf):
            got += buf[:n]
        resp.release()
        assert bytes(got) == data
    # three requests, one pooled connection: the server saw a single client port
    ports = {r.client_port for r in server.requests_for("/big")}
    assert len(server.requests_for("/big")) == 3 and len(ports) == 1


def test_relative_redirect_same_origin_keeps_token(server):
    server.add("/blob", b"payload")
    server.fault("/resolve", Fault("redirect", status=302, location="/blob"))
    client, _ = make_client()
    resp = client.request(
        "GET",
        server.url("/resolve"),
        headers={"Authorization": "Bearer secret", "X-Custom": "c"},
        sensitive={"X-Custom"},
    )
    assert resp.status == 200 and resp.data == b"payload"
    assert resp.url == server.url("/blob")
    hdrs = server.requests_for("/blob")[0].headers
    assert hdrs["Authorization"] == "Bearer secret"
    assert hdrs["X-Custom"] == "c"


def test_cross_origin_redirect_drops_token_and_sensitive_headers(server, other):
    other.add("/blob", b"payload")
    server.fault("/resolve", Fault("redirect", status=307, location=other.url("/blob")))
    client, _ = make_client()
    resp = client.request(
        "GET",
        server.url("/resolve"),
        headers={"Authorization": "Bearer secret", "X-Custom": "c", "X-Plain": "p", "Cookie": "s=1"},
        sensitive={"x-custom"},
    )
    assert resp.data == b"payload"
    assert server.requests_for("/resolve")[0].headers["Authorization"] == "Bearer secret"
    hdrs = other.requests_for("/blob")[0].headers
    assert "Authorization" not in hdrs
    assert "X-Custom" not in hdrs
    assert "Cookie" not in hdrs
    assert hdrs["X-Plain"] == "p"


def test_token_not_restored_when_redirect_comes_back(server, other):
    # origin A -> origin B -> origin A: the token was dropped for good at the first cross hop
    server.add("/final", b"x")
    server.fault("/start", Fault("redirect", location=other.url("/hop")))
    other.fault("/hop", Fault("redirect", location=server.url("/final")))
    client, _ = make_client()
    client.request("GET", server.url("/start"), headers={"Authorization": "Bearer secret"})
    assert "Authorization" not in server.requests_for("/final")[0].headers


def test_https_to_http_and_file_redirects_refused(server):
    client, _ = make_client()
    server.fault("/file", Fault("redirect", location="file:///etc/passwd"))
    with pytest.raises(ProtocolError, match="only http and https"):
        client.request("GET", server.url("/file"))
    with pytest.raises(ProtocolError, match="only http and https"):
        client.request("GET", "ftp://127.0.0.1/x")


def test_https_to_http_downgrade_refused(tmp_path: Path, server):
    cert, key = make_self_signed(tmp_path)
    with RangeServer(certfile=cert, keyfile=key) as tls:
        tls.fault("/down", Fault("redirect", location=server.url("/x")))
        client, _ = make_client(ca_bundle=cert)
        with pytest.raises(ProtocolError, match="https to plain http"):
            client.request("GET", tls.url("/down"))
    assert server.requests_for("/x") == []


def test_redirect_loop_and_too_many(server):
    client, _ = make_client()
    server.fault("/a", Fault("redirect", location="/b", times=-1))
    server.fault("/b", Fault("redirect", location="/a", times=-1))
    with pytest.raises(ProtocolError, match="loop"):
        client.request("GET", server.url("/a"))
    for i in range(12):
        server.fault(f"/r{i}", Fault("redirect", location=f"/r{i + 1}"))
    with pytest.raises(ProtocolError, match="more than 10 redirects"):
        client.request("GET", server.url("/r0"))


def test_redirect_not_followed_when_asked(server):
    server.fault("/a", Fault("redirect", location="/b"))
    client, _ = make_client()
    resp = client.request("GET", server.url("/a"), follow_redirects=False)
    assert resp.status == 302 and resp.headers["location"] == "/b"


def test_503_storm_retried_then_served(server):
    server.add("/a", b"ok")
    server.fault("/a", Fault("status", status=503, times=3))
    client, waits = make_client(retries=5)
    resp = client.request("GET", server.url("/a"))
    assert resp.status == 200 and resp.data == b"ok"
    assert len(waits) == 3
    assert len(server.requests_for("/a")) == 4


def test_retries_are_bounded(server):
    server.add("/a", b"ok")
    server.fault("/a", Fault("status", status=503, times=-1))
    client, waits = make_client(retries=2)
    resp = client.request("GET", server.url("/a"))
    assert resp.status == 503
    assert len(server.requests_for("/a")) == 3 and len(waits) == 2


def test_429_retry_after_seconds_and_cap(server):
    server.add("/a", b"ok")
    server.fault("/a", Fault("status", status=429, headers={"Retry-After": "3"}))
    server.fault("/a", Fault("status", status=429, headers={"Retry-After": "86400"}))
    client, waits = make_client(retry_after_cap=5)
    resp = client.request("GET", server.url("/a"))
    assert resp.data == b"ok"
    assert waits == [3.0, 5.0]


def test_429_retry_after_http_date(server):
    server.add("/a", b"ok")
    when = email.utils.formatdate(time.time() + 4, usegmt=True)
    server.fault("/a", Fault("status", status=429, headers={"Retry-After": when}))
    client, waits = make_client(retry_after_cap=30)
    assert client.request("GET", server.url("/a")).data == b"ok"
    assert len(waits) == 1 and 2.0 <= waits[0] <= 4.0


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None
    past = email.utils.formatdate(time.time() - 100, usegmt=True)
    assert parse_retry_after(past) == 0.0


def test_4xx_returned_without_retry(server):
    for status in (401, 403, 404):
        server.fault("/x", Fault("status", status=status, headers={"X-Error-Code": "RepoNotFound"}))
        client, waits = make_client()
        resp = client.request("GET", server.url("/x"))
        assert resp.status == status and resp.headers["x-error-code"] == "RepoNotFound"
        assert waits == []


def test_get_json(server):
    server.add("/api", b'{"a": [1, 2]}')
    server.add("/bad", b"{not json")
    client, _ = make_client()
    data, resp = client.get_json(server.url("/api"))
    assert data == {"a": [1, 2]} and resp.status == 200
    assert server.requests_for("/api")[0].headers["Accept"] == "application/json"
    with pytest.raises(ProtocolError, match="invalid JSON"):
        client.get_json(server.url("/bad"))
    data, resp = client.get_json(server.url("/missing"))
    assert data is None and resp.status == 404


def test_refused_connection_names_host():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client, waits = make_client(retries=2)
    with pytest.raises(NetworkError, match=f"127.0.0.1:{port}"):
        client.request("GET", f"http://127.0.0.1:{port}/x")
    assert len(waits) == 2


def test_dns_failure_names_host():
    client, _ = make_client(retries=3)
    with pytest.raises(NetworkError, match=r"no-such-host\.invalid.*DNS"):
        client.request("GET", "http://no-such-host.invalid/x")


def test_self_signed_refused_unless_ca_bundle(tmp_path: Path):
    cert, key = make_self_signed(tmp_path)
    with RangeServer(certfile=cert, keyfile=key) as tls:
        tls.add("/a", b"secure")
        client, waits = make_client()
        with pytest.raises(NetworkError, match="TLS verification failed"):
            client.request("GET", tls.url("/a"))
        assert waits == []  # a bad certificate is not retried
        trusting, _ = make_client(ca_bundle=cert)
        assert trusting.request("GET", tls.url("/a")).data == b"secure"


def test_server_that_never_answers_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts (kernel backlog) but never answers
    port = listener.getsockname()[1]
    try:
        client, _ = make_client(read_timeout=0.3, retries=1)
        with pytest.raises(NetworkError, match="timed out"):
            client.request("GET", f"http://127.0.0.1:{port}/x")
    finally:
        listener.close()


def test_gzip_api_answer_decoded_with_bound(server):
    import gzip

    server.add("/gz", gzip.compress(b'{"ok": true}'), headers={"Content-Encoding": "gzip"})
    client, _ = make_client()
    data, _resp = client.get_json(server.url("/gz"))
    assert data == {"ok": True}


def test_gzip_bomb_refused(server, monkeypatch):
    import gzip

    from hubget.transfer import http

    monkeypatch.setattr(http, "MAX_BODY", 1024 * 1024)
    server.add("/bomb", gzip.compress(b"\0" * (8 * 1024 * 1024)), headers={"Content-Encoding": "gzip"})
    client, _ = make_client()
    with pytest.raises(ProtocolError, match="expands beyond"):
        client.get_json(server.url("/bomb"))


def test_dripped_api_answer_hits_the_body_deadline(server):
    """Never silent for a whole read timeout, so only the deadline on the whole answer ends it."""
    server.add("/slow.json", b'{"a": "' + b"x" * 200 + b'"}')
    server.fault("/slow.json", Fault("drip", times=-1, seconds=0.02))
    client, waits = make_client(read_timeout=1.0, body_timeout=0.5, retries=1)
    with pytest.raises(NetworkError, match="timed out"):
        client.get_json(server.url("/slow.json"))  # the drip alone would take 4 s
    assert len(waits) == 1  # retried once, like any other network failure
    assert client.body_timeout == 0.5
    assert HttpClient(read_timeout=7).body_timeout == 14  # default: twice the read timeout


def test_knobs_from_the_environment(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HUBGET_CONNECT_TIMEOUT", "3.5")
    monkeypatch.setenv("HUBGET_READ_TIMEOUT", "7")
    monkeypatch.setenv("HUBGET_RETRIES", "1")
    monkeypatch.setenv("HUBGET_RETRY_AFTER_CAP", "2")
    client = HttpClient()
    assert (client.connect_timeout, client.read_timeout, client.retries) == (3.5, 7.0, 1)
    assert client.backoff(0, retry_after=3600) == 2.0  # the cap
    assert client.body_timeout == 14.0
    # keyword arguments still win over the environment
    assert HttpClient(read_timeout=1, retries=4).retries == 4
    monkeypatch.setenv("HUBGET_RETRIES", "many")
    with pytest.raises(UsageError, match="HUBGET_RETRIES"):
        HttpClient()
    monkeypatch.setenv("HUBGET_RETRIES", "-1")
    with pytest.raises(UsageError, match="HUBGET_RETRIES"):
        HttpClient()


def test_env_retries_bound_a_503_storm(server, monkeypatch):
    monkeypatch.setenv("HUBGET_RETRIES", "1")
    server.add("/a", b"x")
    server.fault("/a", Fault("status", times=-1, status=503))
    client, waits = make_client()
    assert client.request("GET", server.url("/a")).status == 503
    assert len(server.requests_for("/a")) == 2 and len(waits) == 1


@pytest.mark.parametrize("variable", ["HUBGET_CA_BUNDLE", "REQUESTS_CA_BUNDLE"])
def test_ca_bundle_from_the_environment(tmp_path: Path, monkeypatch, variable):
    cert, key = make_self_signed(tmp_path)
    with RangeServer(certfile=cert, keyfile=key) as tls:
        tls.add("/a", b"secure")
        for name in ("HUBGET_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(NetworkError, match="certificate"):
            make_client(retries=0)[0].request("GET", tls.url("/a"))
        monkeypatch.setenv(variable, str(cert))
        if variable == "REQUESTS_CA_BUNDLE":
            monkeypatch.setenv("HUBGET_CA_BUNDLE", "")  # empty counts as unset
        assert make_client(retries=0)[0].request("GET", tls.url("/a")).data == b"secure"
        monkeypatch.setenv("HUBGET_CA_BUNDLE", str(tmp_path / "missing.pem"))
        if variable == "HUBGET_CA_BUNDLE":
            with pytest.raises(NetworkError):  # HUBGET_CA_BUNDLE wins over the others
                make_client(retries=0)[0].request("GET", tls.url("/a"))


def test_ssl_cert_file_is_trusted_beside_requests_ca_bundle(tmp_path: Path, monkeypatch):
    """A machine may point REQUESTS_CA_BUNDLE at the system bundle while a user points SSL_CERT_FILE
    (what huggingface_hub >= 1.0 reads) at their own CA: both are trusted; HUBGET_CA_BUNDLE stays alone."""
    cert, key = make_self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = make_self_signed(tmp_path / "other")
    with RangeServer(certfile=cert, keyfile=key) as tls:
        tls.add("/a", b"secure")
        monkeypatch.delenv("HUBGET_CA_BUNDLE", raising=False)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert make_client(retries=0)[0].request("GET", tls.url("/a")).data == b"secure"
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))  # unreadable: the other alone
        with pytest.raises(NetworkError, match="certificate"):
            make_client(retries=0)[0].request("GET", tls.url("/a"))
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        monkeypatch.setenv("HUBGET_CA_BUNDLE", str(other))
        with pytest.raises(NetworkError, match="certificate"):
            make_client(retries=0)[0].request("GET", tls.url("/a"))
