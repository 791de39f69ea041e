"""Xorb bytes to file bytes: the chunk format of hub-docs ``docs/xet/xorb.md``, decoded as it arrives.

A xorb range is a run of chunks, each an 8-byte header (version 0, compressed size: 3 bytes LE, scheme,
uncompressed size: 3 bytes LE) and its data: stored as is (0), an LZ4 frame (1), or an LZ4 frame of
the chunk with its bytes grouped by position mod 4 (2, "BG4", for tensors). Anything else, a size
past the 128 KiB limit, a frame that does not decode to the size its header gives, bytes left over or
missing: ``XetDataError``, and the range is fetched again.
"""

from __future__ import annotations

from collections.abc import Iterator

from hubget.errors import ProtocolError

HEADER = 8
MAX_CHUNK = 128 * 1024  # a chunk's decoded size never exceeds this
MAX_STORED = MAX_CHUNK + 4096  # an LZ4 frame of it, with the frame's overhead
SCHEME_NONE, SCHEME_LZ4, SCHEME_BG4_LZ4 = 0, 1, 2
BUFFER = 1024 * 1024

try:  # the optional dependency (``pip install hubget[xet]``); without it Xet files take the bridge
    import lz4.frame as _lz4
except ImportError:  # pragma: no cover - depends on the installation
    _lz4 = None


class XetDataError(ProtocolError):
    """Xorb bytes that are not what the format or the reconstruction says (corrupt in transit)."""


def available() -> bool:
    """Whether every chunk scheme can be decoded here."""
    return _lz4 is not None


def bg4_regroup(grouped: bytes | memoryview) -> bytearray:
    """Undo byte grouping: group k holds bytes k, k+4, k+8, ... (the first ``n % 4`` groups one
    longer). Extended-slice assignment runs in C: about 1 GB/s here, in 128 KiB pieces."""
    n = len(grouped)
    out = bytearray(n)
    pos = 0
    for k in range(4):
        count = (n - k + 3) // 4
        out[k::4] = grouped[pos : pos + count]
        pos += count
    return out


def _lz4_frame(payload: memoryview) -> bytes:
    assert _lz4 is not None
    try:
        return _lz4.decompress(payload)
    except RuntimeError as e:  # python-lz4 reports a corrupt frame as a RuntimeError
        raise XetDataError(f"corrupt LZ4 frame: {e}") from e


def decode_chunk(scheme: int, payload: memoryview, size: int) -> bytes | bytearray | memoryview:
    """The decoded bytes of one chunk (``payload`` itself when stored as is)."""
    if scheme == SCHEME_NONE:
        data: bytes | bytearray | memoryview = payload
    elif scheme == SCHEME_LZ4:
        data = _lz4_frame(payload)
    elif scheme == SCHEME_BG4_LZ4:
        data = bg4_regroup(_lz4_frame(payload))
    else:
        raise XetDataError(f"unknown chunk compression scheme {scheme}")
    if len(data) != size:
        raise XetDataError(f"a chunk decoded to {len(data)} bytes, its header says {size}")
    return data


class ChunkStream:
    """Cuts the body of one xorb range into decoded chunks as its bytes arrive.

    The caller reads into ``space()``, reports ``wrote(n)``, and takes the chunks now complete from
    ``chunks()`` (each decoded view is valid until the next ``space()``); ``finish()`` at the end of
    the body checks that exactly the announced chunks came.
    """

    def __init__(self, first_chunk: int, chunk_count: int, size: int = BUFFER) -> None:
        self.next_chunk = first_chunk
        self.end_chunk = first_chunk + chunk_count
        self.buf = bytearray(max(size, 2 * (HEADER + MAX_STORED)))
        self.view = memoryview(self.buf)
        self.start = 0  # first byte not consumed
        self.filled = 0  # bytes of buf holding data

    def space(self) -> memoryview:
        """Free room at the end of the buffer (consumed bytes are moved out first when needed)."""
        if len(self.buf) - self.filled < HEADER + MAX_STORED:
            rest = self.filled - self.start
            self.buf[:rest] = self.buf[self.start : self.filled]
            self.start, self.filled = 0, rest
        return self.view[self.filled :]

    def wrote(self, n: int) -> None:
        self.filled += n

    def chunks(self) -> Iterator[tuple[int, bytes | bytearray | memoryview]]:
        """(chunk index, decoded bytes) of every chunk complete in the buffer."""
        while self.filled - self.start >= HEADER:
            head = self.view[self.start : self.start + HEADER]
            if head[0] != 0:
                raise XetDataError(f"chunk {self.next_chunk}: header version {head[0]}")
            stored = head[1] | head[2] << 8 | head[3] << 16
            size = head[5] | head[6] << 8 | head[7] << 16
            if stored > MAX_STORED or size > MAX_CHUNK or size == 0:
                raise XetDataError(f"chunk {self.next_chunk}: impossible sizes {stored}/{size}")
            if self.next_chunk >= self.end_chunk:
                raise XetDataError(f"more bytes than the {self.end_chunk} chunks announced")
            if self.filled - self.start < HEADER + stored:
                return
            payload = self.view[self.start + HEADER : self.start + HEADER + stored]
            data = decode_chunk(head[4], payload, size)
            self.start += HEADER + stored
            index = self.next_chunk
            self.next_chunk += 1
            yield index, data

    def finish(self) -> None:
        if self.filled != self.start or self.next_chunk != self.end_chunk:
            raise XetDataError(
                f"the range ended after chunk {self.next_chunk} of {self.end_chunk} "
                f"({self.filled - self.start} bytes left over)"
            )
