"""Where a file's bytes are: one resolve per file, shared by all of its connections.

A hub's download URL usually answers with a redirect to a signed URL on a CDN (the Hugging Face
Hub's ``/resolve/`` to its Xet bridge). Following that redirect for every byte range would cost one
call to the hub's resolver per range, against a quota of a few thousand per five minutes. So the
first request of a file follows the redirects, the URL it ends at is kept, and every other range
of the file goes there directly. It is resolved anew (once, for all the file's connections) when
the CDN refuses it (403/410) or shortly before the expiry the signed URL states.
"""

from __future__ import annotations

import calendar
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

REFRESH_MARGIN = 30.0  # seconds before a signed URL's expiry at which it is resolved anew, at most...
REFRESH_FRACTION = 0.1  # ...or this fraction of its lifetime, when that is shorter


def signed_url_lifetime(url: str, now: float | None = None) -> float | None:
    """Seconds until a signed URL expires, from what it says of itself: AWS SigV4
    (``X-Amz-Date`` + ``X-Amz-Expires``) or CloudFront (``Expires``, unix time); None when it says
    nothing. When the machine's clock disagrees with the signer's (the result would be negative
    while ``X-Amz-Expires`` alone says otherwise), the stated lifetime counts from now."""
    query = parse_qs(urlsplit(url).query)
    now = time.time() if now is None else now
    ends: list[float] = []
    amz_expires = _first_number(query.get("X-Amz-Expires"))
    amz_date = (query.get("X-Amz-Date") or [""])[0]
    if amz_expires is not None and amz_date:
        try:
            signed = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
            ends.append(signed + amz_expires)
        except ValueError:
            pass
    cloudfront = _first_number(query.get("Expires"))
    if cloudfront is not None:
        ends.append(cloudfront)
    if not ends:
        return amz_expires
    left = min(ends) - now
    if left <= 0 and amz_expires is not None:
        return amz_expires  # clock skew: trust the stated lifetime, and the CDN's 403 after it
    return left


def _first_number(values: list[str] | None) -> float | None:
    try:
        return float(values[0]) if values else None
    except ValueError:
        return None


@dataclass(eq=False)
class Location:
    """The URL one resolve of a file's source ended at."""

    url: str
    redirected: bool  # False: the source's URL serves the bytes itself (each request is a resolve)
    obtained: float  # monotonic
    refresh_at: float = math.inf  # monotonic: resolve anew from here on
    served: int = 0  # bytes received from it (a refused location that served bytes had expired)
    refused: bool = False  # a connection was refused by it (403/410)

    def stale(self, now: float) -> bool:
        return now >= self.refresh_at


def location_for(url: str, final_url: str, now: float | None = None) -> Location:
    """The location a resolve of ``url`` that ended at ``final_url`` gives, with its refresh time."""
    mono = time.monotonic() if now is None else now
    loc = Location(final_url, redirected=final_url != url, obtained=mono)
    if loc.redirected:
        lifetime = signed_url_lifetime(final_url)
        if lifetime is not None:
            margin = min(REFRESH_MARGIN, REFRESH_FRACTION * max(0.0, lifetime))
            loc.refresh_at = mono + max(0.0, lifetime - margin)
    return loc


class Locations:
    """The current location of each of a file's sources, and who is resolving which.

    ``claim`` returns a usable location, or None to a caller who must now resolve (it then calls
    ``resolved``, whatever happened); callers arriving meanwhile wait for that answer.
    """

    def __init__(self, count: int) -> None:
        self._cv = threading.Condition()
        self._current: list[Location | None] = [None] * count
        self._resolving = [False] * count
        self._found = [False] * count  # a location was found before: resolving again is a refresh
        # Resolves of the source failed in a row (no answer, 5xx): then every connection resolves
        # for itself, as it would without this class, so that failures are not waited out in turn.
        self._failed = [0] * count
        self.resolves = 0  # resolves started, all sources together (refreshes included)
        self.refreshes = 0  # of which to replace a location that expired or was refused
        self.refused_fresh = 0  # fresh locations refused in a row before serving a byte

    def claim(self, index: int, give_up: Callable[[], bool]) -> Location | None:
        with self._cv:
            while True:
                loc = self._current[index]
                if loc is not None and not loc.stale(time.monotonic()):
                    return loc
                if self._failed[index]:
                    self.resolves += 1
                    return None
                if not self._resolving[index]:
                    self._resolving[index] = True
                    self.resolves += 1
                    self.refreshes += self._found[index]
                    return None
                if give_up():
                    raise InterruptedError("the file's work was cancelled")
                self._cv.wait(0.2)

    def resolved(self, index: int, loc: Location | None, *, failed: bool = False) -> None:
        """The claimer's answer: the location found, or None (``failed``: the request itself
        failed, rather than being answered with something other than the file's bytes)."""
        with self._cv:
            self._resolving[index] = False
            if loc is not None:
                self._current[index] = loc
                self._found[index] = True
                self._failed[index] = 0
            elif failed:
                self._failed[index] += 1
            self._cv.notify_all()

    def refused(self, index: int, loc: Location) -> bool:
        """The CDN refused ``loc`` (403/410): drop it so the next request resolves anew. Returns
        False when that would be pointless: two fresh locations in a row refused before serving a
        byte mean the refusal is not about expiry. Connections refused by the same location count
        once (they started on it together)."""
        with self._cv:
            if self._current[index] is loc:
                self._current[index] = None
            if loc.refused:
                return True  # another connection's refusal by it was counted already
            loc.refused = True
            if loc.served:
                self.refused_fresh = 0
                return True
            self.refused_fresh += 1
            return self.refused_fresh < 2

    def replace_source(self, index: int) -> None:
        """The source's URL itself changed (a fresh one from the job): forget where it led."""
        with self._cv:
            self._current[index] = None
