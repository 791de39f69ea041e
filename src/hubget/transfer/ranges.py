"""Sets of byte ranges: what of a file is on disk, what is missing, how far the prefix reaches."""

from __future__ import annotations

from bisect import bisect_left


class IntervalSet:
    """Disjoint half-open ``[start, end)`` intervals, kept sorted and merged. Not thread-safe."""

    def __init__(self, intervals: list[tuple[int, int]] | None = None) -> None:
        self._iv: list[tuple[int, int]] = []
        for start, end in intervals or []:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        iv = self._iv
        # first interval whose end reaches start (touching intervals merge)
        i = bisect_left(iv, (start, start))
        if i > 0 and iv[i - 1][1] >= start:
            i -= 1
        j = i
        while j < len(iv) and iv[j][0] <= end:
            start = min(start, iv[j][0])
            end = max(end, iv[j][1])
            j += 1
        iv[i:j] = [(start, end)]

    def prefix_end(self) -> int:
        """End of the contiguous range starting at byte 0 (0 if byte 0 is missing)."""
        return self._iv[0][1] if self._iv and self._iv[0][0] == 0 else 0

    def total(self) -> int:
        return sum(e - s for s, e in self._iv)

    def covers(self, start: int, end: int) -> bool:
        return any(s <= start and end <= e for s, e in self._iv)

    def missing(self, size: int) -> list[tuple[int, int]]:
        """The gaps of ``[0, size)`` not in the set."""
        gaps: list[tuple[int, int]] = []
        pos = 0
        for s, e in self._iv:
            if s >= size:
                break
            if s > pos:
                gaps.append((pos, s))
            pos = max(pos, e)
        if pos < size:
            gaps.append((pos, size))
        return gaps

    def clipped(self, size: int) -> IntervalSet:
        return IntervalSet([(s, min(e, size)) for s, e in self._iv if s < size])

    def as_list(self) -> list[tuple[int, int]]:
        return list(self._iv)

    def clear(self) -> None:
        self._iv.clear()

    def __len__(self) -> int:
        return len(self._iv)
