"""Run `hubget serve` for a test: in a subprocess (the real CLI) or in a thread (same process).

    with hub_server(root) as url:              # subprocess: python -m hubget serve ROOT --port 0
        ...
    with hub_server_thread(root, page_size=2) as url:
        ...
Both yield the base URL ``http://127.0.0.1:PORT`` and stop the server on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

LISTENING = "hubget serve: listening on "
START_TIMEOUT = 60.0


@contextlib.contextmanager
def hub_server(
    root: Path,
    *,
    hf_cache: Path | None = None,
    tokens: list[str] | None = None,
    page_size: int | None = None,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Start ``python -m hubget serve ROOT --host 127.0.0.1 --port 0`` and yield its base URL."""
    with tempfile.TemporaryDirectory(prefix="hubget-serve-") as tmp:
        cmd = [sys.executable, "-m", "hubget", "serve", str(root), "--host", "127.0.0.1", "--port", "0"]
        if hf_cache is not None:
            cmd += ["--hf-cache", str(hf_cache)]
        if tokens:
            token_file = Path(tmp) / "tokens"
            token_file.write_text("".join(f"{t}\n" for t in tokens))
            cmd += ["--token-file", str(token_file)]
        if page_size is not None:
            cmd += ["--page-size", str(page_size)]
        cmd += extra_args or []
        stderr_path = Path(tmp) / "stderr"
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, **(env or {})}
            )
        try:
            url = _wait_for_url(proc, stderr_path)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def _wait_for_url(proc: subprocess.Popen[str], stderr_path: Path) -> str:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            raise RuntimeError(f"hubget serve did not start: {stderr_path.read_text()}") from None
        if line is None:
            proc.wait()
            raise RuntimeError(f"hubget serve exited with {proc.returncode}: {stderr_path.read_text()}")
        if line.startswith(LISTENING):
            return line[len(LISTENING) :].strip()


@contextlib.contextmanager
def hub_server_thread(
    root: Path,
    *,
    hf_cache: Path | None = None,
    tokens: list[str] | None = None,
    page_size: int | None = None,
) -> Iterator[str]:
    """The same server on an event loop in a background thread of this process."""
    from hubget.server.app import DEFAULT_PAGE_SIZE, create_app, serve_forever

    app = create_app(root, hf_cache=hf_cache, tokens=tokens, page_size=page_size or DEFAULT_PAGE_SIZE)
    loop = asyncio.new_event_loop()
    bound: queue.Queue[str | BaseException] = queue.Queue()
    task_box: list[asyncio.Task[None]] = []

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def main() -> None:
            task = asyncio.ensure_future(serve_forever(app, "127.0.0.1", 0, bound.put))
            task_box.append(task)
            with contextlib.suppress(asyncio.CancelledError):
                await task

        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to the waiting test instead of dying silently
            bound.put(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="hubget-serve", daemon=True)
    thread.start()
    got = bound.get(timeout=START_TIMEOUT)
    if isinstance(got, BaseException):
        raise RuntimeError(f"hubget serve did not start: {got!r}")
    try:
        yield got
    finally:
        loop.call_soon_threadsafe(task_box[0].cancel)
        thread.join(timeout=10)
