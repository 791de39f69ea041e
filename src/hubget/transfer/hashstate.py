"""sha256 and sha1 whose running state can be saved and restored (``state()`` / ``restore()``).

hashlib cannot export a hash's internal state, so a stream hashed over many hours could not resume
after a crash without reading every byte again. OpenSSL's low-level ``SHA256_CTX`` / ``SHA_CTX``
are plain structs with a fixed public layout (sha.h), so through ctypes the state is 112 (sha1: 96)
bytes that go into a resume record. Speed is OpenSSL's, as hashlib's, and ctypes releases the GIL
during each update. Where libcrypto cannot be loaded (or fails the self-check against hashlib),
``resumable_available()`` is False and callers fall back to ``hashlib`` and hash from the start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
from typing import Any

_CTX_SIZE = {"sha256": 112, "sha1": 96}  # sizeof(SHA256_CTX), sizeof(SHA_CTX)
_PREFIX = {"sha256": "SHA256", "sha1": "SHA1"}


@functools.cache
def _libcrypto() -> Any:
    for name in (ctypes.util.find_library("crypto"), "libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.dylib"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            for prefix in _PREFIX.values():
                for fn in ("Init", "Update", "Final"):
                    getattr(lib, f"{prefix}_{fn}").restype = ctypes.c_int
                getattr(lib, f"{prefix}_Update").argtypes = [
                    ctypes.c_void_p,
                    ctypes.c_void_p,
                    ctypes.c_size_t,
                ]
        except AttributeError:
            continue
        return lib
    return None


class ResumableHash:
    """One running sha256 or sha1; ``state()`` is its internal state as bytes."""

    def __init__(self, algo: str, state: bytes | None = None) -> None:
        if algo not in _CTX_SIZE:
            raise ValueError(f"unknown hash algorithm {algo!r}")
        lib = _libcrypto()
        if lib is None:
            raise RuntimeError("libcrypto is not available")
        self.algo = algo
        self._lib = lib
        self._prefix = _PREFIX[algo]
        # Room beyond the struct, in case a build pads it; only the documented size is saved.
        self._ctx = ctypes.create_string_buffer(256)
        if state is None:
            getattr(lib, f"{self._prefix}_Init")(self._ctx)
        else:
            if len(state) != _CTX_SIZE[algo]:
                raise ValueError(f"a {algo} state has {_CTX_SIZE[algo]} bytes, not {len(state)}")
            ctypes.memmove(self._ctx, state, len(state))

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if not view.nbytes:
            return
        buf: Any
        if isinstance(data, bytes):
            buf = data  # ctypes passes a pointer to the bytes' own buffer
        elif view.readonly:
            buf = bytes(view)
        else:
            buf = (ctypes.c_char * view.nbytes).from_buffer(view)
        getattr(self._lib, f"{self._prefix}_Update")(self._ctx, buf, view.nbytes)

    def state(self) -> bytes:
        return self._ctx.raw[: _CTX_SIZE[self.algo]]

    def hexdigest(self) -> str:
        """The digest of what was fed so far (the running state is left as it was)."""
        copy = ctypes.create_string_buffer(256)
        ctypes.memmove(copy, self._ctx, len(copy))
        out = ctypes.create_string_buffer(32)
        getattr(self._lib, f"{self._prefix}_Final")(out, copy)
        return out.raw[: 32 if self.algo == "sha256" else 20].hex()


@functools.cache
def resumable_available() -> bool:
    """libcrypto loads and a saved-and-restored state gives hashlib's digest."""
    try:
        data = bytes(range(256)) * 300
        for algo in _CTX_SIZE:
            h = ResumableHash(algo)
            h.update(data[:1000])
            h2 = ResumableHash(algo, h.state())
            h2.update(bytearray(data[1000:]))
            if h2.hexdigest() != hashlib.new(algo, data).hexdigest():
                return False
        return True
    except (RuntimeError, OSError, ValueError, AttributeError):
        return False


class StreamHash:
    """The hashes of one stream (sha256, and optionally git's blob sha1 primed with its header),
    resumable when libcrypto allows: ``state()`` is None otherwise."""

    def __init__(self, *, size: int, git_sha1: bool, state: dict[str, str] | None = None) -> None:
        self.resumable = resumable_available()
        self._hashers: dict[str, Any] = {}
        wanted = ["sha256", *(["sha1"] if git_sha1 else [])]
        for algo in wanted:
            saved = (state or {}).get(algo)
            if self.resumable:
                self._hashers[algo] = ResumableHash(algo, bytes.fromhex(saved) if saved else None)
            else:
                self._hashers[algo] = hashlib.new(algo)
            if algo == "sha1" and not saved:
                self._hashers[algo].update(b"blob %d\0" % size)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        for h in self._hashers.values():
            h.update(data)

    def state(self) -> dict[str, str] | None:
        if not self.resumable:
            return None
        return {algo: h.state().hex() for algo, h in self._hashers.items()}

    def sha256(self) -> str:
        return str(self._hashers["sha256"].hexdigest())

    def git_sha1(self) -> str | None:
        h = self._hashers.get("sha1")
        return str(h.hexdigest()) if h is not None else None
