"""Who writes a partial file: owner ids, whether that writer is alive, private temp names, orphans.

A resumable partial file's state names its writer as ``host:pid:nonce``; a small file's private
temp name (``<base>.<token>.hubget-partial``) carries ``hosttag-pid-nonce``. A writer of this
machine is alive while its process is (a zombie is not); one of another machine (a shared
filesystem) only while its resume state is fresh. What a dead writer of this machine left is
removed (``sweep_folder``, ``sweep_orphans``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path

PARTIAL_SUFFIX = ".hubget-partial"
# A writer on another machine (shared filesystem) counts as alive while its resume state is this fresh.
REMOTE_OWNER_FRESH = 120.0

_HOST = socket.gethostname()
_HOST_TAG = hashlib.sha1(_HOST.encode()).hexdigest()[:8]
_live_owners: set[str] = set()  # owner ids of the partial files this process has open
_live_lock = threading.Lock()
# A private temp name: ``{base}.{host tag}-{pid}-{nonce}.hubget-partial``.
_PRIVATE_NAME = re.compile(r"\.(?P<tag>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]+\.hubget-partial$")


def new_owner() -> str:
    return f"{_HOST}:{os.getpid()}:{secrets.token_hex(4)}"


def mark_live(owner: str) -> None:
    """This process has the partial file of ``owner`` open."""
    with _live_lock:
        _live_owners.add(owner)


def mark_gone(owner: str) -> None:
    with _live_lock:
        _live_owners.discard(owner)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return True
    try:  # a killed child not yet reaped by its parent is a zombie: it writes nothing any more
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[:1] != [b"Z"]
    except OSError:
        return True


def owner_alive(owner: str, state_mtime: float) -> bool:
    """Whether the writer ``owner`` ("host:pid:nonce") may still be writing its partial file.

    Same machine: the process exists (and, for this process, the file is still open). Another
    machine: its pids mean nothing here, so only a recently written resume state counts.
    """
    host, _, rest = owner.partition(":")
    pid_text, _, _nonce = rest.partition(":")
    if not pid_text.isdigit():
        return False
    if host != _HOST:
        return time.time() - state_mtime < REMOTE_OWNER_FRESH
    if int(pid_text) == os.getpid():
        with _live_lock:
            return owner in _live_owners
    return _pid_alive(int(pid_text))


def private_name(partial: Path, token: str) -> Path:
    """A temp name only this writer uses, beside ``partial`` (``<base>.<token>.hubget-partial``)."""
    name = partial.name
    if name.endswith(PARTIAL_SUFFIX):
        return partial.with_name(f"{name[: -len(PARTIAL_SUFFIX)]}.{token}{PARTIAL_SUFFIX}")
    return partial.with_name(f"{name}.{token}")


def private_token() -> str:
    return f"{_HOST_TAG}-{os.getpid()}-{secrets.token_hex(4)}"


def private_owner(name: str) -> str | None:
    """The writer a private temp name (``<base>.<token>.hubget-partial``) names, as an owner id for
    ``owner_alive`` (``host:pid:private``; a host tag not this machine's names another machine);
    None for any other name."""
    found = _PRIVATE_NAME.search(name)
    if found is None:
        return None
    host = _HOST if found.group("tag") == _HOST_TAG else "another-machine"
    return f"{host}:{found.group('pid')}:private"


def _orphan(token: str) -> bool:
    """Whether a private temp name's token names a dead process of this machine."""
    host_tag, _, rest = token.partition("-")
    pid_text, _, nonce = rest.partition("-")
    if host_tag != _HOST_TAG or not pid_text.isdigit() or not nonce or "." in nonce:
        return False
    return int(pid_text) != os.getpid() and not _pid_alive(int(pid_text))


def sweep_folder(folder: Path) -> None:
    """Remove every private temp file (``<base>.<token>.hubget-partial``) in ``folder`` left by a dead
    process of this machine: one listing for all the small files of a run, which keep no resume state."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not name.endswith(PARTIAL_SUFFIX):
            continue
        token = name[: -len(PARTIAL_SUFFIX)].rpartition(".")[2]
        if _orphan(token):
            with contextlib.suppress(OSError):
                os.unlink(folder / name)


def sweep_orphans(partial: Path) -> None:
    """Remove private temp files of ``partial`` left by dead processes of this machine (SIGKILL)."""
    probe = private_name(partial, "\0")
    head, _, tail = probe.name.partition("\0")
    try:
        names = os.listdir(partial.parent)
    except OSError:
        return
    for name in names:
        if not (name.startswith(head) and name.endswith(tail)) or len(name) <= len(head) + len(tail):
            continue
        token = name[len(head) : len(name) - len(tail)] if tail else name[len(head) :]
        if _orphan(token):
            with contextlib.suppress(OSError):
                os.unlink(partial.parent / name)
