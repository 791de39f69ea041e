"""A Xet file as the engine downloads it: reconstruction terms, the xorb ranges that hold them, and the
units of work (one xorb byte range each) that put every term's bytes at its offset in the file.

Plain data (``sources/xet.py`` produces a ``XetReconstruction`` from the CAS's answer) and one pure
function, ``plan_units``. A term is a run of chunks of one xorb; the file is its terms' decoded bytes
in order. A fetch is a byte range of a xorb (whole chunks) at a signed URL; the CAS merges the chunk
ranges of several terms of the same xorb into one fetch, so one unit may feed terms at distant places
of the file (deduplicated content), and a chunk may be used twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hubget.errors import ProtocolError


@dataclass(frozen=True)
class XetTerm:
    xorb: str  # 64-hex xorb hash
    chunk_start: int
    chunk_end: int  # exclusive
    length: int  # decoded bytes (the reconstruction's unpacked_length)


@dataclass(frozen=True)
class XetFetch:
    xorb: str
    chunk_start: int
    chunk_end: int  # exclusive
    byte_start: int
    byte_end: int  # exclusive (the CAS's "bytes"/"url_range" end is inclusive)
    url: str  # signed; authorises this byte range (a multi-range URL: each of its ranges)


@dataclass
class XetReconstruction:
    """What the CAS answered for file bytes ``[start, ...)``: the first term starts ``offset`` bytes
    before ``start`` (a term is whole chunks; a range may begin inside one)."""

    offset: int
    terms: list[XetTerm]
    fetches: list[XetFetch]


@dataclass
class Placement:
    """Where one term's decoded bytes go: from file offset ``file_pos`` on, only ``[lo, hi)`` kept."""

    chunk_start: int
    chunk_end: int
    length: int
    file_pos: int
    lo: int
    hi: int

    @property
    def interval(self) -> tuple[int, int]:
        return max(self.file_pos, self.lo), min(self.file_pos + self.length, self.hi)


@dataclass(eq=False)
class XetUnit:
    """One request: a xorb byte range, decoded chunk by chunk into the placements of its terms."""

    batch: int
    fetch: XetFetch
    placements: list[Placement] = field(default_factory=list)
    attempts: int = 0
    not_before: float = 0.0
    url_generation: int = 0  # the batch's URL generation its URL comes from (see XetEngine)
    local: list[tuple[str, int, int]] | None = None  # its chunks already on disk (file, offset, size)

    @property
    def key(self) -> tuple[str, int, int, int, int]:
        f = self.fetch
        return f.xorb, f.chunk_start, f.chunk_end, f.byte_start, f.byte_end

    @property
    def first_byte(self) -> int:
        return min(p.interval[0] for p in self.placements)

    @property
    def output_bytes(self) -> int:
        return sum(max(0, p.interval[1] - p.interval[0]) for p in self.placements)


def plan_units(recon: XetReconstruction, start: int, end: int, batch: int = 0) -> tuple[list[XetUnit], int]:
    """The units that write what ``recon`` (the answer for file bytes ``[start, end)``) holds from
    ``start`` on, earliest file bytes first, and the file offset where its terms end.

    The terms end at ``end`` or after it (a term is whole chunks; a CAS may also answer whole terms):
    every byte they hold is kept, so the next request starts where they end and nothing is fetched
    twice. Raises ProtocolError when the answer cannot be the one asked for: terms that fall short
    of ``end``, a term no fetch covers, an impossible range."""
    if recon.offset < 0 or (recon.terms and recon.offset >= recon.terms[0].length):
        raise ProtocolError(f"Xet reconstruction: offset {recon.offset} outside its first term")
    by_xorb: dict[str, list[XetFetch]] = {}
    for f in recon.fetches:
        if not (0 <= f.chunk_start < f.chunk_end and 0 <= f.byte_start < f.byte_end):
            raise ProtocolError(f"Xet reconstruction: bad fetch range {f}")
        by_xorb.setdefault(f.xorb, []).append(f)
    for term in recon.terms:
        if not (0 <= term.chunk_start < term.chunk_end and term.length > 0):
            raise ProtocolError(f"Xet reconstruction: bad term {term}")
    stop = start - recon.offset + sum(t.length for t in recon.terms)
    if stop < end:
        raise ProtocolError(f"Xet reconstruction: its terms end at byte {stop}, {end} were asked")
    units: dict[XetFetch, XetUnit] = {}
    pos = start - recon.offset
    for term in recon.terms:
        placement = Placement(term.chunk_start, term.chunk_end, term.length, pos, start, stop)
        pos += term.length
        fetch = next(
            (
                f
                for f in by_xorb.get(term.xorb, ())
                if f.chunk_start <= term.chunk_start and term.chunk_end <= f.chunk_end
            ),
            None,
        )
        if fetch is None:
            raise ProtocolError(f"Xet reconstruction: no fetch holds chunks of term {term}")
        units.setdefault(fetch, XetUnit(batch, fetch)).placements.append(placement)
    return sorted(units.values(), key=lambda u: u.first_byte), stop
