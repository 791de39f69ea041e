"""`hubget serve`: a self-hosted hub the official clients download from."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hubget.errors import UsageError

if TYPE_CHECKING:
    from aiohttp import web

    from hubget.objectstore.s3 import S3Url
    from hubget.server.upstream import Upstream


def serve(
    root: Annotated[
        Path | None,
        typer.Argument(help="Folder with models/{owner}/{name}, datasets/..., spaces/... repos."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="Serve the repos staged under s3://bucket/root/{models,datasets}/... instead of a "
            "folder (see `hubget download --to`); files are redirects to presigned URLs."
        ),
    ] = None,
    s3_endpoint: Annotated[
        str | None, typer.Option(help="With --store: the S3 endpoint (default: AWS_ENDPOINT_URL, else AWS).")
    ] = None,
    presign_endpoint: Annotated[
        str | None,
        typer.Option(help="With --store: the endpoint clients reach the store at, if not --s3-endpoint's."),
    ] = None,
    presign_ttl: Annotated[
        int, typer.Option(min=10, max=7 * 86400, help="With --store: seconds a presigned file URL is valid.")
    ] = 900,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 8000,
    hf_cache: Annotated[
        Path | None, typer.Option(help="Also serve the repos of this Hugging Face cache folder.")
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File with one access token per line; clients must then send one as Bearer."),
    ] = None,
    page_size: Annotated[
        int, typer.Option(min=1, help="Entries per page of tree and file listings (Link: rel=next).")
    ] = 1000,
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=64, help="Processes sharing the port: sending files costs CPU, so use the cores."
        ),
    ] = 1,
    header_timeout: Annotated[
        float,
        typer.Option(
            min=0.1, help="Seconds a client has to send a request's headers; slower ones are closed."
        ),
    ] = 20.0,
    keepalive_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds an idle connection is kept open between requests.")
    ] = 75.0,
    max_connections: Annotated[
        int,
        typer.Option(
            min=1,
            help="Open connections per worker process; past it the longest-idle connection is closed, "
            "or the new one gets 503 when all are busy.",
        ),
    ] = 1024,
    upstream: Annotated[
        str | None,
        typer.Option(
            help="Pull-through mirror of this Hugging Face endpoint (huggingface.co, a mirror, another "
            "hubget serve): repos not under ROOT are fetched from it once, into ROOT/.hubget-mirror.",
        ),
    ] = None,
    upstream_modelscope: Annotated[
        str | None,
        typer.Option(
            help="Pull-through mirror of this ModelScope endpoint for the ModelScope API (clients set "
            "MODELSCOPE_ENDPOINT to this server): repos not under ROOT are fetched from it once, into "
            "ROOT/.hubget-mirror/ms.",
        ),
    ] = None,
    upstream_token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the token the mirror sends to --upstream (not to ModelScope)."),
    ] = None,
    revision_ttl: Annotated[
        float,
        typer.Option(min=0.0, help="Seconds a branch or tag -> commit answer of upstream is reused."),
    ] = 300.0,
    max_size: Annotated[
        str | None,
        typer.Option(help="Keep the mirror's blobs under this size (500G, 1.5T): least recently used go."),
    ] = None,
    upstream_connections: Annotated[
        int, typer.Option(min=1, max=64, help="Connections to upstream per file being fetched.")
    ] = 8,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS with this certificate (PEM; the chain after the server's own)."),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="With --tls-cert: its private key (PEM).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every request on stderr.")] = False,
) -> None:
    """Serve model, dataset and space repos over the Hugging Face API (and git, ModelScope).

    A repo folder is a git repository (branches, tags, commits; LFS objects from .git/lfs) or a plain
    folder (one revision, main). Point clients at it with HF_ENDPOINT=http://HOST:PORT.
    Prints "hubget serve: listening on http://HOST:PORT" once the port is open (https:// with
    --tls-cert and --tls-key).
    With --upstream, any other repo is served from that hub: fetched once (one call per file, however
    many clients want it at once, each served the bytes as they arrive) and kept. --upstream-modelscope
    does the same for the ModelScope API (MODELSCOPE_ENDPOINT=http://HOST:PORT).
    """
    from hubget.server.app import create_app, read_token_file, serve_forever
    from hubget.server.connections import ServerLimits

    store_url = _store_url(root, store)
    if store_url is None:
        if root is None:
            raise UsageError("give a ROOT folder or --store s3://bucket/root")
        if not root.is_dir():
            raise UsageError(f"{root} is not a folder")
    if hf_cache is not None and store_url is not None:
        raise UsageError("--hf-cache serves a local cache; it does not combine with --store")
    mirrored = [u for u in (upstream, upstream_modelscope) if u is not None]
    if upstream is not None and store_url is not None and max_size is not None:
        raise UsageError("--max-size applies to a mirror on a ROOT folder; a bucket keeps what it is given")
    if upstream_modelscope is not None and store_url is not None:
        raise UsageError(
            "--upstream-modelscope fills a ROOT folder; on --store s3://... only --upstream mirrors"
        )
    if hf_cache is not None and not hf_cache.is_dir():
        raise UsageError(f"--hf-cache {hf_cache} is not a folder")
    tokens = None
    if token_file is not None:
        try:
            tokens = read_token_file(token_file)
        except OSError as exc:
            raise UsageError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        if not tokens:
            raise UsageError(f"--token-file {token_file} holds no token")
    upstream_token = None
    if upstream is None and upstream_token_file is not None:
        raise UsageError("--upstream-token-file needs --upstream")
    if not mirrored and max_size is not None:
        raise UsageError("--max-size needs --upstream or --upstream-modelscope")
    max_bytes = None
    if max_size is not None:
        from hubget.api.mirror_budget import parse_size

        max_bytes = parse_size(max_size)
    for flag, url in (("--upstream", upstream), ("--upstream-modelscope", upstream_modelscope)):
        if url is not None and not url.startswith(("http://", "https://")):
            raise UsageError(f"{flag} {url!r} is not an http(s) URL")
    if upstream is not None:
        if upstream_token_file is not None:
            try:
                upstream_token = upstream_token_file.read_text().strip() or None
            except OSError as exc:
                raise UsageError(
                    f"cannot read --upstream-token-file {upstream_token_file}: {exc.strerror}"
                ) from None
            if upstream_token is None:
                raise UsageError(f"--upstream-token-file {upstream_token_file} holds no token")
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    if verbose:
        logging.getLogger("aiohttp.access").setLevel(logging.INFO)
    for noisy in ("botocore", "boto3", "urllib3"):  # their INFO lines are not about requests served
        logging.getLogger(noisy).setLevel(logging.WARNING)

    ssl_context = _ssl_context(tls_cert, tls_key)
    limits = ServerLimits(
        header_timeout=header_timeout, keepalive_timeout=keepalive_timeout, max_connections=max_connections
    )
    _raise_file_limit(max_connections)

    def announce(url: str) -> None:
        print(f"hubget serve: listening on {url}", flush=True)

    def run_worker(sock: socket.socket | None, on_bound: Callable[[str], None] | None) -> None:
        with contextlib.ExitStack() as stack:
            app = make_app(stack)

            async def main() -> None:
                task = asyncio.ensure_future(
                    serve_forever(
                        app,
                        host,
                        port,
                        on_bound,
                        access_log=verbose,
                        sock=sock,
                        limits=limits,
                        ssl_context=ssl_context,
                    )
                )
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, task.cancel)
                with contextlib.suppress(asyncio.CancelledError):
                    await task

            asyncio.run(main())

    def make_app(stack: contextlib.ExitStack) -> web.Application:
        """The application of one worker (each makes its own clients)."""
        repos = None
        mirror: Upstream | None = None
        ms_mirror = None
        app_root = root
        if store_url is not None and upstream is not None:  # the mirror on a bucket
            from hubget.api.mirror_s3 import BucketMirror

            mirror = BucketMirror(
                store_url,
                upstream,
                s3_endpoint=s3_endpoint,
                presign_endpoint=presign_endpoint,
                presign_ttl=presign_ttl,
                token=upstream_token,
                revision_ttl=revision_ttl,
                connections=upstream_connections,
            )
            if app_root is None:  # no local repos: an empty folder stands for ROOT
                app_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hubget-serve-")))
        elif store_url is not None:
            from hubget.server.s3store import S3Store

            repos = S3Store(
                store_url, endpoint=s3_endpoint, presign_endpoint=presign_endpoint, presign_ttl=presign_ttl
            )
        budget = None
        if max_bytes is not None:  # one --max-size for both hubs, kept by every worker process
            from hubget.api.mirror_budget import BlobBudget

            budget = BlobBudget(None, max_bytes, shared=workers > 1)
        if upstream is not None and store_url is None:
            from hubget.api.mirror import Mirror

            mirror = Mirror(
                root or Path("."),
                upstream,
                token=upstream_token,
                revision_ttl=revision_ttl,
                connections=upstream_connections,
                budget=budget,
            )
        if upstream_modelscope is not None:
            from hubget.api.mirror_ms import ModelScopeMirror

            ms_mirror = ModelScopeMirror(
                root or Path("."),
                upstream_modelscope,
                revision_ttl=revision_ttl,
                connections=upstream_connections,
                budget=budget,
            )
        return create_app(
            app_root or Path("."),
            hf_cache=hf_cache,
            tokens=tokens,
            page_size=page_size,
            store=repos,
            upstream=mirror,
            ms_upstream=ms_mirror,
        )

    try:
        if workers == 1:
            run_worker(None, announce)
            return
        # One listening socket, inherited by forked workers: the kernel spreads the connections.
        sock = socket.create_server((host, port), backlog=512, family=_family(host))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    children = []
    for _ in range(workers - 1):
        pid = os.fork()
        if pid == 0:
            try:
                run_worker(sock, None)
            finally:
                os._exit(0)
        children.append(pid)
    try:
        run_worker(sock, announce)
    finally:
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(OSError):
                os.waitpid(pid, 0)


def _ssl_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server's TLS context (aiohttp serves HTTPS with it), or None for plain HTTP."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise UsageError("--tls-cert and --tls-key go together: give both (or neither, for plain HTTP)")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise UsageError(f"cannot read {flag} {path}: {exc.strerror}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise UsageError(
            f"--tls-cert {cert} / --tls-key {key}: not a certificate and its key ({exc})"
        ) from None
    return context


def _store_url(root: Path | None, store: str | None) -> S3Url | None:
    """The bucket to serve from, or None for a folder ROOT."""
    from hubget.objectstore.s3 import parse_s3_url

    if store is None:
        return None
    if root is not None:
        raise UsageError("give either a ROOT folder or --store, not both")
    if not store.startswith("s3://"):
        raise UsageError(f"--store takes s3://bucket/root, not {store!r} (a folder is given as ROOT)")
    return parse_s3_url(store)


def _raise_file_limit(max_connections: int) -> None:
    """Each connection may hold a socket, an open file and a git pipe: make room for the cap under
    the soft descriptor limit (up to the hard limit), as servers do at start."""
    import resource

    wanted = 3 * max_connections + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            logging.getLogger("hubget.serve").warning(
                "open-file limit %d is low for --max-connections %d", new, max_connections
            )


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
