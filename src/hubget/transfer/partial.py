"""Resume state beside a partial file: which byte ranges are on disk, for which expected file.

The state names the expected hash, algorithm and size; a partial file is reused only when all
three match the job, so bytes of an older version of a file never end up in a newer one.
Written atomically (temp file + rename), so a killed process leaves either the old or the new state.
"""

from __future__ import annotations

import contextlib
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

from hubget.atomicfile import atomic_write
from hubget.transfer.ranges import IntervalSet

STATE_VERSION = 1


@dataclass
class PartialState:
    expected_hash: str
    hash_algo: str
    size: int
    done: IntervalSet = field(default_factory=IntervalSet)
    # Who writes the partial file ("host:pid:nonce"), so a second process never takes over or
    # deletes a live writer's file when file locks do not work (see FileTask.open).
    owner: str = ""

    def matches(self, expected_hash: str | None, hash_algo: str, size: int | None) -> bool:
        return (
            expected_hash is not None
            and self.expected_hash == expected_hash
            and self.hash_algo == hash_algo
            and self.size == size
        )


def state_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".json")


def load_state(path: Path) -> PartialState | None:
    """The saved state, or None when absent or unreadable (then the partial is not trusted)."""
    try:
        raw = json.loads(path.read_text())
        if raw.get("version") != STATE_VERSION:
            return None
        size = int(raw["size"])
        done = IntervalSet()
        for start, end in raw["done"]:
            start, end = int(start), int(end)
            if not 0 <= start <= end <= size:
                return None
            done.add(start, end)
        owner = raw.get("owner", "")
        owner = owner if isinstance(owner, str) else ""
        return PartialState(str(raw["expected_hash"]), str(raw["hash_algo"]), size, done, owner)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_state(path: Path, state: PartialState, *, durable: bool = True) -> None:
    """Write ``state`` atomically; ``durable`` also fsyncs it (not needed for a record naming no bytes)."""
    payload = {
        "version": STATE_VERSION,
        "expected_hash": state.expected_hash,
        "hash_algo": state.hash_algo,
        "size": state.size,
        "done": [list(iv) for iv in state.done.as_list()],
        "owner": state.owner,
    }
    atomic_write(path, json.dumps(payload).encode(), durable=durable)


def discard(partial: Path) -> None:
    """Remove a partial file and its state (after an integrity failure or a changed file)."""
    state = state_path(partial)
    for p in (partial, state, *state.parent.glob(f".{glob.escape(state.name)}.*.tmp")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
