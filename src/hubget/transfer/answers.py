"""What a file server's answer to a byte-range GET must look like, checked the same way wherever
bytes are fetched (the engine's connections, the in-memory ranges of staging)."""

from __future__ import annotations

import re

from hubget.errors import AuthError, EntryNotFoundError, GatedRepoError, HubgetError, ProtocolError
from hubget.transfer.http import Response, host_of

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")


def refusal(label: str, resp: Response) -> HubgetError | None:
    """The error a 401/403/404 stands for (hubs say why in X-Error-Code / X-Error-Message; the
    Hugging Face Hub's GatedRepo), or None for any other status."""
    status, host = resp.status, host_of(resp.url)
    if status in (401, 403):
        why = resp.headers.get("X-Error-Message") or "not authorised"
        if resp.headers.get("X-Error-Code") == "GatedRepo":
            return GatedRepoError(f"{label}: gated repo (HTTP {status} from {host}): {why}")
        return AuthError(f"{label}: HTTP {status} from {host} ({why})")
    if status == 404:
        return EntryNotFoundError(f"{label}: HTTP 404 from {host} (not found)")
    return None


def check_identity(label: str, resp: Response) -> None:
    """Bytes are hashed as they come off the wire: an encoded body (identity was asked) is refused."""
    encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise ProtocolError(
            f"{label}: {host_of(resp.url)} sent a {encoding}-encoded body, identity was asked"
        )


def content_range(resp: Response) -> tuple[int, int, str] | None:
    """(first, last, total) of a 206's ``Content-Range`` (total may be "*"), or None if malformed."""
    match = _CONTENT_RANGE.match(resp.headers.get("Content-Range") or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), match.group(3)
