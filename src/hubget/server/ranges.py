"""HTTP Range and conditional-request rules of RFC 9110 (§13, §14), as plain functions.

``plan_ranges`` turns the request headers and the representation's size and ETag into what to send:
the whole body (200), one part (206), several parts (206 multipart/byteranges), or 416.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_RANGES = 32  # more parts than this is not a real download client: send the whole body instead
_SPEC = re.compile(r"^(\d*)-(\d*)$")
_ETAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')


@dataclass(frozen=True)
class RangePlan:
    status: int  # 200, 206 or 416
    parts: list[tuple[int, int]] = field(default_factory=list)  # (start, end inclusive) for 206

    @property
    def multipart(self) -> bool:
        return self.status == 206 and len(self.parts) > 1


def parse_range(header: str, size: int) -> list[tuple[int, int]] | None:
    """Satisfiable (start, end-inclusive) ranges; ``[]`` if none is satisfiable (416);
    None when the header is to be ignored (unknown unit, bad syntax, too many ranges)."""
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    out: list[tuple[int, int]] = []
    raw_specs = [s.strip() for s in specs.split(",")]
    if not raw_specs or len(raw_specs) > MAX_RANGES:
        return None
    for spec in raw_specs:
        m = _SPEC.match(spec)
        if not m or (not m.group(1) and not m.group(2)):
            return None
        first, last = m.group(1), m.group(2)
        if first:
            start = int(first)
            end = int(last) if last else size - 1
            if last and end < start:
                return None  # syntactically invalid: the whole header is ignored
            if start >= size:
                continue  # unsatisfiable
            out.append((start, min(end, size - 1)))
        else:
            suffix = int(last)
            if suffix == 0 or size == 0:
                continue
            out.append((max(0, size - suffix), size - 1))
    return out


def coalesce(parts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge overlapping or adjacent ranges (RFC 9110 §14.6 allows it; it defeats range amplification)."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(parts):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def etag_list(header: str) -> list[tuple[bool, str]] | None:
    """[(weak, quoted-etag)] of an If-Match / If-None-Match / If-Range value; None if not a list of ETags."""
    out = []
    pos = 0
    header = header.strip()
    while pos < len(header):
        m = _ETAG.match(header, pos)
        if not m:
            return None
        out.append((bool(m.group(1)), m.group(2)))
        pos = m.end()
    return out


def if_none_match(header: str, etag: str) -> bool:
    """True if the If-None-Match condition holds as "matches" (weak comparison): answer 304."""
    if header.strip() == "*":
        return True
    tags = etag_list(header) or []
    return any(tag == etag for _, tag in tags)


def if_range_allows(header: str, etag: str) -> bool:
    """If-Range: the Range applies only when a strong ETag equals ours. A date is never a match here
    because this server sends no Last-Modified (dates are weak validators for content-addressed files)."""
    tags = etag_list(header)
    if not tags or len(tags) != 1:
        return False
    weak, tag = tags[0]
    return not weak and tag == etag


def plan_ranges(
    *, method: str, range_header: str | None, if_range: str | None, size: int, etag: str
) -> RangePlan:
    if method != "GET" or range_header is None:
        return RangePlan(200)  # Range is defined for GET only (HEAD answers the 200 headers)
    if if_range is not None and not if_range_allows(if_range, etag):
        return RangePlan(200)
    parts = parse_range(range_header, size)
    if parts is None:
        return RangePlan(200)
    if not parts:
        return RangePlan(416)
    parts = coalesce(parts)
    return RangePlan(206, parts)
