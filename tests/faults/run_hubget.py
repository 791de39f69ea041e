"""Run the hubget CLI with test knobs applied first (used by the fault tests as a subprocess).

HUBGET_FAULT_KNOBS: JSON ``{"http": {...}, "engine": {...}}`` of HttpClient and Engine keyword
defaults that have no environment variable (short backoff, small range chunks), so that every
client and engine the CLI builds splits even small files into ranges and waits little between
tries. Timeouts and retries come from the environment (HUBGET_READ_TIMEOUT, ... see hubget.config).
HUBGET_FAULT_NO_FLOCK=1: make ``fcntl.flock`` a no-op, as on a network filesystem whose locks do
not work across machines; every process then "holds" every lock at once.
"""

from __future__ import annotations

import json
import os
import sys


def apply_knobs() -> None:
    if os.environ.get("HUBGET_FAULT_NO_FLOCK") == "1":
        import fcntl

        fcntl.flock = lambda fd, op: None  # type: ignore[assignment]
    knobs = json.loads(os.environ.get("HUBGET_FAULT_KNOBS") or "{}")
    from hubget.transfer.engine import Engine
    from hubget.transfer.http import HttpClient

    for cls, key in ((HttpClient, "http"), (Engine, "engine")):
        set_defaults(cls, knobs.get(key) or {})


def set_defaults(cls: type, values: dict[str, object]) -> None:
    """Change the keyword-only defaults of ``cls.__init__`` (every instance built afterwards)."""
    defaults = cls.__init__.__kwdefaults__  # type: ignore[misc]
    assert defaults is not None
    unknown = set(values) - set(defaults)
    if unknown:
        raise SystemExit(f"unknown {cls.__name__} knobs: {sorted(unknown)}")
    defaults.update(values)


if __name__ == "__main__":
    apply_knobs()
    from hubget.cli.main import run

    run(sys.argv[1:])
