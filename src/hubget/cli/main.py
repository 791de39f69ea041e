"""The `hubget` command: one typer app, one module per command (each has ``register(app)``)."""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

import typer

from hubget.errors import ExitCode, HubgetError

# Each name is a module hubget.cli.<name> with a function register(app: typer.Typer).
COMMAND_MODULES: tuple[str, ...] = ("download", "upload", "serve", "demo", "clone", "pull", "cache")

app = typer.Typer(
    name="hubget",
    help=(
        "Get pretrained model weights onto disk: from the Hugging Face Hub (or any HF_ENDPOINT "
        "mirror), ModelScope and Git-LFS remotes; many files and many connections at once, "
        "resumable, sha256-verified, into the caches huggingface_hub, transformers and modelscope "
        "read. `hubget serve` is a self-hosted hub for the official clients.\n\n"
        "Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 auth, 5 integrity, 6 network, "
        "7 disk, 130 interrupted."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from hubget.version import __version__

        print(f"hubget {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Keeps `hubget` a group of commands even while only one is registered."""


def _one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Expected failures end as one line on stderr and a documented exit code, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HubgetError as exc:
            fail(str(exc) or type(exc).__name__, exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted; run the same command again to resume", ExitCode.INTERRUPTED)

    return wrapper


def _register(argv: list[str]) -> None:
    """Import only the command being run (each pulls in its own stack: git, the server, ...);
    all of them when none is named, for the help."""
    named = next((a for a in argv if not a.startswith("-")), None)
    for name in [named] if named in COMMAND_MODULES else COMMAND_MODULES:
        importlib.import_module(f"hubget.cli.{name}").register(app)
    commands = list(app.registered_commands)
    for group in app.registered_groups:  # sub-apps (`hubget cache ...`): their commands too
        if group.typer_instance is not None:
            commands += group.typer_instance.registered_commands
    for info in commands:
        if info.callback is not None and not getattr(info.callback, "__wrapped__", None):
            info.callback = _one_line_errors(info.callback)


def fail(message: str, code: int) -> None:
    """Print one clear line on stderr and exit with ``code``."""
    print(f"hubget: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def run(argv: list[str] | None = None) -> None:
    """The console script. Usage errors are typer's (exit 2); see ``_one_line_errors`` for the rest."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:  # answered without importing a command
        from hubget.version import __version__

        print(f"hubget {__version__}")
        return
    _register(args)
    app(args=argv)
