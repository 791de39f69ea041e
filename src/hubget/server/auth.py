"""The tokens clients present, and whose they are."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable

from aiohttp import web

from hubget.server.keys import TOKENS_KEY


def request_token(request: web.Request) -> str | None:
    """The token a client presents: ``Bearer``, the password of ``Basic`` (git), or ModelScope's cookie."""
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return request.cookies.get("m_session_id") or None


def token_allowed(token: str | None, tokens: Iterable[str]) -> bool:
    if token is None:
        return False
    ok = False
    for candidate in tokens:
        # Compare with every token in constant time so timing does not reveal a prefix.
        ok |= hmac.compare_digest(token.encode(), candidate.encode())
    return ok


def upstream_token(request: web.Request) -> str | None:
    """The client's own token for a mirror's upstream hub (gated and private repos need it). When
    the server checks tokens of its own (--token-file), the client's token is one of those: it is
    never sent upstream."""
    return None if request.app[TOKENS_KEY] else request_token(request)
