"""The Xet formats as hub-docs ``docs/xet/`` specifies them, written from the spec for the CAS replica
(tests/support/casreplica.py): hashes (chunk, xorb, file, term verification), the hash-to-string rule,
serialized xorbs (8-byte chunk headers; none / LZ4 frame / BG4+LZ4) and shards (header, file info,
CAS info, optional footer).

Kept apart from hubget's own decoder on purpose: the replica judges hubget, so it shares no code with it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import blake3
import lz4.frame

# hub-docs docs/xet/hashing.md
DATA_KEY = bytes(
    [102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28]
    + [157, 228, 33, 16, 155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41]
)
INTERNAL_NODE_KEY = bytes(
    [1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230]
    + [93, 221, 83, 111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63]
)
VERIFICATION_KEY = bytes(
    [127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195, 243]
    + [164, 205, 38, 213, 181, 219, 73, 230, 65, 36, 152, 127, 40, 251, 148, 195]
)
# hub-docs docs/xet/shard.md (the tag's bytes as xet-core writes them)
SHARD_HEADER_TAG = b"HFRepoMetaData\x00" + bytes(
    [85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169]
)
BOOKEND = b"\xff" * 32 + b"\x00" * 16
FLAG_VERIFICATION = 1 << 31
FLAG_METADATA_EXT = 1 << 30
SHARD_FOOTER_SIZE = 200
XORB_FOOTER_IDENT = b"XETBLOB"

SCHEME_NONE, SCHEME_LZ4, SCHEME_BG4_LZ4 = 0, 1, 2
MAX_CHUNK = 128 * 1024


class FormatError(ValueError):
    """Bytes that do not follow the spec."""


# -- hashes -----------------------------------------------------------------------------------


def hash_to_hex(h: bytes) -> str:
    """The spec's string form: each 8-byte group as a little-endian u64, in hex (docs/xet/api.md)."""
    return "".join(h[i : i + 8][::-1].hex() for i in range(0, 32, 8))


def hex_to_hash(text: str) -> bytes:
    if len(text) != 64:
        raise FormatError(f"not a 64-hex hash: {text!r}")
    raw = bytes.fromhex(text)
    return b"".join(raw[i : i + 8][::-1] for i in range(0, 32, 8))


def chunk_hash(data: bytes) -> bytes:
    return blake3.blake3(data, key=DATA_KEY).digest()


def _merge(nodes: list[tuple[bytes, int]]) -> tuple[bytes, int]:
    text = "".join(f"{hash_to_hex(h)} : {size}\n" for h, size in nodes)
    return blake3.blake3(text.encode(), key=INTERNAL_NODE_KEY).digest(), sum(s for _, s in nodes)


def _next_cut(nodes: list[tuple[bytes, int]], start: int) -> int:
    """Where the group starting at ``start`` ends: a hash whose last u64 is 0 mod 4, from the third
    node on, at most 9 nodes (xet-core's aggregated_hashes.rs, the tree the spec calls a MerkleTree)."""
    left = len(nodes) - start
    if left <= 2:
        return len(nodes)
    end = min(9, left)
    for i in range(2, end):
        last = struct.unpack_from("<Q", nodes[start + i][0], 24)[0]
        if last % 4 == 0:
            return start + i + 1
    return start + end


def merkle_root(chunks: list[tuple[bytes, int]]) -> bytes:
    if not chunks:
        return b"\0" * 32
    nodes = list(chunks)
    while len(nodes) > 1:
        merged: list[tuple[bytes, int]] = []
        i = 0
        while i < len(nodes):
            cut = _next_cut(nodes, i)
            merged.append(_merge(nodes[i:cut]))
            i = cut
        nodes = merged
    return nodes[0][0]


def xorb_hash(chunks: list[tuple[bytes, int]]) -> bytes:
    return merkle_root(chunks)


def file_hash(chunks: list[tuple[bytes, int]]) -> bytes:
    if not chunks:
        return b"\0" * 32
    return blake3.blake3(merkle_root(chunks), key=b"\0" * 32).digest()


def verification_hash(chunk_hashes: list[bytes]) -> bytes:
    return blake3.blake3(b"".join(chunk_hashes), key=VERIFICATION_KEY).digest()


# -- xorbs ------------------------------------------------------------------------------------


@dataclass
class XorbChunk:
    offset: int  # where its header starts in the serialized xorb
    end: int  # one past its compressed data
    scheme: int
    size: int  # uncompressed
    hash: bytes


def bg4_regroup(grouped: bytes) -> bytes:
    """Undo byte grouping: group k holds bytes k, k+4, k+8, ... (the first groups one longer)."""
    n = len(grouped)
    out = bytearray(n)
    pos = 0
    for k in range(4):
        count = len(range(k, n, 4))
        out[k::4] = grouped[pos : pos + count]
        pos += count
    return bytes(out)


def decode_chunk(scheme: int, payload: bytes, size: int) -> bytes:
    if scheme == SCHEME_NONE:
        data = payload
    elif scheme == SCHEME_LZ4:
        data = lz4.frame.decompress(payload)
    elif scheme == SCHEME_BG4_LZ4:
        data = bg4_regroup(lz4.frame.decompress(payload))
    else:
        raise FormatError(f"unknown compression scheme {scheme}")
    if len(data) != size:
        raise FormatError(f"chunk decodes to {len(data)} bytes, its header says {size}")
    return data


def read_chunk_header(data: bytes | memoryview, pos: int) -> tuple[int, int, int]:
    """(compressed size, scheme, uncompressed size) of the chunk header at ``pos``."""
    if len(data) - pos < 8:
        raise FormatError(f"truncated chunk header at {pos}")
    head = bytes(data[pos : pos + 8])
    if head[0] != 0:
        raise FormatError(f"chunk header version {head[0]} at {pos}")
    return (
        int.from_bytes(head[1:4], "little"),
        head[4],
        int.from_bytes(head[5:8], "little"),
    )


def parse_xorb(data: bytes) -> tuple[list[XorbChunk], list[bytes]]:
    """The chunks of a serialized xorb (up to its footer, which starts with "XETBLOB") and their
    decoded bytes; checks every header, every decoded length and each chunk's size limit."""
    chunks: list[XorbChunk] = []
    decoded: list[bytes] = []
    pos = 0
    while pos < len(data) and data[pos : pos + 7] != XORB_FOOTER_IDENT:
        csize, scheme, size = read_chunk_header(data, pos)
        end = pos + 8 + csize
        if end > len(data) or size > MAX_CHUNK:
            raise FormatError(f"chunk at {pos} overruns the xorb or exceeds {MAX_CHUNK} bytes")
        plain = decode_chunk(scheme, data[pos + 8 : end], size)
        chunks.append(XorbChunk(pos, end, scheme, size, chunk_hash(plain)))
        decoded.append(plain)
        pos = end
    if not chunks:
        raise FormatError("a xorb without chunks")
    return chunks, decoded


# -- shards -----------------------------------------------------------------------------------


@dataclass
class ShardTerm:
    xorb: bytes
    unpacked: int
    start: int
    end: int


@dataclass
class ShardFile:
    file_hash: bytes
    terms: list[ShardTerm]
    verification: list[bytes] = field(default_factory=list)
    sha256: bytes | None = None


@dataclass
class ShardXorb:
    xorb: bytes
    chunks: list[tuple[bytes, int, int]]  # (chunk hash, byte offset in the xorb, unpacked size)
    bytes_in_cas: int
    bytes_on_disk: int


@dataclass
class Shard:
    files: list[ShardFile]
    xorbs: list[ShardXorb]


def parse_shard(data: bytes) -> Shard:
    if len(data) < 48 + 96 or data[:32] != SHARD_HEADER_TAG:
        raise FormatError("not a shard (bad header tag)")
    version, footer_size = struct.unpack_from("<QQ", data, 32)
    if version != 2:
        raise FormatError(f"shard header version {version}")
    end = len(data) - footer_size
    pos = 48

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > end:
            raise FormatError("truncated shard")
        out = data[pos : pos + n]
        pos += n
        return out

    files: list[ShardFile] = []
    while True:
        head = take(48)
        if head == BOOKEND:
            break
        flags, count = struct.unpack_from("<II", head, 32)
        terms = []
        for _ in range(count):
            entry = take(48)
            _flags, unpacked, start, stop = struct.unpack_from("<IIII", entry, 32)
            terms.append(ShardTerm(entry[:32], unpacked, start, stop))
        f = ShardFile(head[:32], terms)
        if flags & FLAG_VERIFICATION:
            f.verification = [take(48)[:32] for _ in range(count)]
        if flags & FLAG_METADATA_EXT:
            f.sha256 = take(48)[:32]
        files.append(f)
    xorbs: list[ShardXorb] = []
    while True:
        head = take(48)
        if head == BOOKEND:
            break
        _flags, count, in_cas, on_disk = struct.unpack_from("<IIII", head, 32)
        chunks = []
        for _ in range(count):
            entry = take(48)
            offset, size = struct.unpack_from("<II", entry, 32)
            chunks.append((entry[:32], offset, size))
        xorbs.append(ShardXorb(head[:32], chunks, in_cas, on_disk))
    return Shard(files, xorbs)
