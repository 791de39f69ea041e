"""`hubget cache`: see, verify, repair, prune and share the Hugging Face and ModelScope caches."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hubget.cli.cache_output import HashProgress, ago, console, print_clean, print_json, print_verify
from hubget.errors import IntegrityError
from hubget.progress import human_bytes

cache_app = typer.Typer(
    name="cache",
    help=(
        "See, verify, repair, prune and share what the Hugging Face cache (HF_HUB_CACHE / HF_HOME) and "
        "the ModelScope cache (MODELSCOPE_CACHE) hold.\n\n"
        "Examples:\n\n"
        "  hubget cache ls --filter 'size>1GB' --sort size\n\n"
        "  hubget cache verify --repair\n\n"
        "  hubget cache rm internlm/internlm2-chat-7b --revision v1.0 --dry-run\n\n"
        "  hubget cache prune\n\n"
        "  hubget cache export internlm/internlm2-chat-7b ./internlm2-chat-7b\n\n"
        "  hubget cache import ./my-model org/my-model --offline\n\n"
        "  hubget cache dedup ~/models"
    ),
    no_args_is_help=True,
    add_completion=False,
)

HfDir = Annotated[
    Path | None, typer.Option("--hf-cache-dir", help="Hugging Face cache (default: HF_HUB_CACHE).")
]
MsDir = Annotated[
    Path | None, typer.Option("--ms-cache-dir", help="ModelScope cache (default: MODELSCOPE_CACHE).")
]
Which = Annotated[str, typer.Option("--cache", help="hf, ms or all.")]
RepoType = Annotated[str | None, typer.Option(help="model, dataset or space (default: any).")]
Json = Annotated[bool, typer.Option("--json", help="Print a JSON report on stdout.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Say what would change; change nothing.")]


@cache_app.command("ls")
def ls(
    revisions: Annotated[bool, typer.Option("--revisions", help="One row per revision.")] = False,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            help="Keep rows matching (repeatable): size>1GB, accessed>30d, modified<2h, refs=main, "
            "type=dataset, cache=ms, name='org/*'.",
        ),
    ] = None,
    sort: Annotated[
        str | None, typer.Option(help="size, name, accessed or modified, with an optional :asc / :desc.")
    ] = None,
    cache: Which = "all",
    hf_cache_dir: HfDir = None,
    ms_cache_dir: MsDir = None,
    json_output: Json = False,
) -> None:
    """List the repos of both caches: size on disk, files, last access, refs (and revisions).

    Sizes of the Hugging Face cache are huggingface_hub's (scan_cache_dir()): a blob shared by
    several revisions counts once. Examples:

      hubget cache ls

      hubget cache ls --revisions --filter 'refs=main'

      hubget cache ls --filter 'size>1GB' --filter 'accessed>30d' --sort size

      hubget cache ls --cache ms --json
    """
    from hubget.cache import query, scan

    result = scan(hf_cache_dir=hf_cache_dir, ms_cache_dir=ms_cache_dir, caches=cache)
    rows = query.select(result.repos, revisions=revisions, filters=filters or (), sort=sort)
    if json_output:
        payload = result.as_json()
        shown = {id(repo) for repo, _ in rows}
        payload["repos"] = [r.as_json() for r in result.repos if id(r) in shown]
        if revisions:
            payload["rows"] = [
                {"cache_id": repo.cache_id, "cache": repo.cache, **rev.as_json()} for repo, rev in rows if rev
            ]
        print_json(payload)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in (
        "CACHE",
        "REPO",
        *(["REVISION"] if revisions else []),
        "SIZE",
        "FILES",
        "ACCESSED",
        "MODIFIED",
        "REFS",
    ):
        table.add_column(
            name, justify="right" if name in ("SIZE", "FILES") else "left", no_wrap=name != "REFS"
        )
    for repo, rev in rows:
        entry = rev or repo
        refs = " ".join(rev.refs if rev else repo.refs) or (
            "(detached)" if rev and repo.cache == "hf" else ""
        )
        cells = [repo.cache, repo.cache_id, *([rev.name if rev else ""] if revisions else [])]
        cells += [human_bytes(entry.size_on_disk), str(entry.nb_files), ago(repo.last_accessed)]
        cells += [ago(entry.last_modified), refs + (" [!]" if repo.problems else "")]
        table.add_row(*cells)
    out = console()
    out.print(table)
    where = ", ".join(str(d) for d in (result.hf_cache_dir, result.ms_cache_dir) if d)
    out.print(
        f"{len({id(r) for r, _ in rows})} repo(s), {human_bytes(result.size_on_disk)} "
        f"({human_bytes(result.disk_usage)} on disk once shared files count once) in {where}; "
        f"scanned in {result.seconds:.2f} s"
    )
    if result.partial_files:
        size = sum(p.size for p in result.partial_files)
        n = len(result.partial_files)
        out.print(f"{n} unfinished download file(s), {human_bytes(size)} ('hubget cache prune')")
    if any(r.problems for r, _ in rows):
        out.print("[!]: huggingface_hub would call this repo corrupted; see --json 'problems'")


@cache_app.command("verify")
def verify(
    repo: Annotated[str | None, typer.Argument(help="Only this repo (default: every cached repo).")] = None,
    revision: Annotated[str | None, typer.Option(help="Only this revision (a ref, a commit).")] = None,
    repo_type: RepoType = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Fetch again (verified) only what is corrupt or missing.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(min=1, max=256, help="Hashing threads (default: cores).")
    ] = None,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Never ask a hub (ModelScope files without a record stay unchecked)."),
    ] = False,
    endpoint: Annotated[
        str | None, typer.Option(help="Hugging Face endpoint for --repair (HF_ENDPOINT).")
    ] = None,
    ms_endpoint: Annotated[
        str | None, typer.Option(help="ModelScope endpoint (MODELSCOPE_ENDPOINT): listings, --repair.")
    ] = None,
    token: Annotated[str | None, typer.Option(help="Access token for --repair.")] = None,
    cache: Which = "all",
    hf_cache_dir: HfDir = None,
    ms_cache_dir: MsDir = None,
    json_output: Json = False,
) -> None:
    """Hash every cached file against the hash it is known by; exit 5 when one is wrong and not repaired.

    Hugging Face blobs are named by their sha256 (LFS files) or git blob sha1; ModelScope's cache
    records no hash, so its files are checked against hubget's own records or, when it answers, the
    hub's listing. Files are hashed in parallel. Examples:

      hubget cache verify

      hubget cache verify internlm/internlm2-chat-7b --revision main

      hubget cache verify --repair
    """
    from hubget.cache import verify as run_verify

    progress = None if json_output or not sys.stderr.isatty() else HashProgress()
    try:
        report = run_verify(
            repo,
            revision=revision,
            repo_type=repo_type,
            caches=cache,
            repair=repair,
            workers=workers,
            offline=offline or None,
            hf_cache_dir=hf_cache_dir,
            ms_cache_dir=ms_cache_dir,
            endpoint=endpoint,
            ms_endpoint=ms_endpoint,
            token=token,
            on_progress=progress,
        )
    finally:
        if progress is not None:
            progress.close()
    if json_output:
        print_json(report.as_json())
    else:
        print_verify(report)
    if report.unrepaired:
        hint = "" if repair else "; run again with --repair to fetch them again"
        raise IntegrityError(f"{len(report.unrepaired)} file(s) corrupt or missing and not repaired{hint}")


@cache_app.command("rm")
def rm(
    repo: Annotated[str, typer.Argument(help="Repo id, e.g. internlm/internlm2-chat-7b.")],
    revision: Annotated[
        str | None, typer.Option(help="Only this revision: a ref, a commit, a ModelScope revision folder.")
    ] = None,
    repo_type: RepoType = None,
    cache: Annotated[str, typer.Option("--cache", help="hf or ms, when both caches hold the repo.")] = "all",
    dry_run: DryRun = False,
    hf_cache_dir: HfDir = None,
    ms_cache_dir: MsDir = None,
    json_output: Json = False,
) -> None:
    """Remove a repo (or one revision) and the blobs nothing else links to; prints the bytes freed.

    Files a running download holds the lock of are kept. Examples:

      hubget cache rm internlm/internlm2-chat-7b

      hubget cache rm org/model --revision refs/pr/1 --dry-run

      hubget cache rm Shanghai_AI_Laboratory/internlm2-chat-7b --cache ms
    """
    from hubget.cache import rm as run_rm

    report = run_rm(
        repo,
        revision=revision,
        repo_type=repo_type,
        cache=cache,
        dry_run=dry_run,
        hf_cache_dir=hf_cache_dir,
        ms_cache_dir=ms_cache_dir,
    )
    print_clean(report, json_output, f"{repo}" + (f"@{revision}" if revision else ""))


@cache_app.command("prune")
def prune(
    dry_run: DryRun = False,
    min_age: Annotated[
        float,
        typer.Option(help="Seconds: detached snapshots and lock files younger than this are kept."),
    ] = 600.0,
    cache: Which = "all",
    hf_cache_dir: HfDir = None,
    ms_cache_dir: MsDir = None,
    json_output: Json = False,
) -> None:
    """Remove detached revisions, orphan blobs, unfinished downloads nobody runs, and stale locks.

    Temp files: huggingface_hub's *.incomplete, modelscope's *.incomplete / *.parallel_tmp,
    hubget's *.hubget-partial* (a paused hubget download then starts over). Nothing a running
    download holds the lock of is touched. Examples:

      hubget cache prune --dry-run

      hubget cache prune --cache hf
    """
    from hubget.cache import prune as run_prune

    report = run_prune(
        dry_run=dry_run, caches=cache, min_age=min_age, hf_cache_dir=hf_cache_dir, ms_cache_dir=ms_cache_dir
    )
    print_clean(report, json_output, "prune")


@cache_app.command("export")
def export(
    repo: Annotated[str, typer.Argument(help="A repo of the Hugging Face cache.")],
    folder: Annotated[Path, typer.Argument(help="The plain folder to write.")],
    revision: Annotated[str | None, typer.Option(help="A ref or commit (default: main).")] = None,
    repo_type: Annotated[str, typer.Option(help="model, dataset or space.")] = "model",
    copy: Annotated[
        bool, typer.Option("--copy", help="Give each file its own bytes (reflink, else a copy).")
    ] = False,
    hf_cache_dir: HfDir = None,
    json_output: Json = False,
) -> None:
    """Write a cached snapshot as a plain folder of reflinks or hard links to its blobs (--copy: copies).

    The folder gets huggingface_hub's local_dir metadata, so both tools take it as downloaded.
    Hard-linked files are read-only (they are the cache's blobs). Examples:

      hubget cache export internlm/internlm2-chat-7b ./internlm2-chat-7b

      hubget cache export org/model /mnt/other-disk/model --copy
    """
    from hubget.cache import export as run_export

    report = run_export(
        repo, folder, revision=revision, repo_type=repo_type, copy=copy, hf_cache_dir=hf_cache_dir
    )
    if json_output:
        print_json(report.as_json())
        return
    methods = {m: sum(1 for f in report.files if f.method == m) for m in ("reflink", "hardlink", "copy")}
    how = ", ".join(f"{n} {m}" for m, n in methods.items() if n)
    print(f"{len(report.files)} file(s) of {repo}@{report.commit[:12]} in {report.folder} ({how})")
    print(report.folder)


@cache_app.command("import")
def import_(
    folder: Annotated[Path, typer.Argument(help="A folder holding the repo's files.")],
    repo: Annotated[str, typer.Argument(help="The repo id it holds, e.g. org/model.")],
    revision: Annotated[str | None, typer.Option(help="The revision it holds (default: main).")] = None,
    repo_type: Annotated[str, typer.Option(help="model, dataset or space.")] = "model",
    offline: Annotated[
        bool, typer.Option("--offline", help="Do not check the files against the hub: trust them.")
    ] = False,
    copy: Annotated[bool, typer.Option("--copy", help="Copy the bytes instead of linking them.")] = False,
    endpoint: Annotated[str | None, typer.Option(help="Hugging Face endpoint (HF_ENDPOINT).")] = None,
    token: Annotated[str | None, typer.Option(help="Access token.")] = None,
    hf_cache_dir: HfDir = None,
    json_output: Json = False,
) -> None:
    """Make a folder (copied by hand, git clone, hfd, local_dir) a snapshot of the Hugging Face cache.

    Each file is hashed once and checked against the hub's listing, or trusted with --offline
    (then the commit comes from the folder, else is made up, and refs/main names it). Blobs are
    reflinks or hard links of the folder's files where the filesystem allows. Examples:

      hubget cache import ./internlm2-chat-7b internlm/internlm2-chat-7b

      hubget cache import ./my-finetune me/my-finetune --offline
    """
    from hubget.cache import import_folder

    report = import_folder(
        folder,
        repo,
        revision=revision,
        repo_type=repo_type,
        offline=offline,
        copy=copy,
        endpoint=endpoint,
        token=token,
        hf_cache_dir=hf_cache_dir,
    )
    for warning in report.warnings:
        print(f"hubget: warning: {warning}", file=sys.stderr)
    if json_output:
        print_json(report.as_json())
        return
    checked = "checked against the hub" if report.checked_against_hub else "NOT checked (--offline)"
    print(f"{len(report.files)} file(s) imported as {repo}@{report.commit} ({checked}); refs/{report.ref}")
    print(report.snapshot)


@cache_app.command("dedup")
def dedup(
    folders: Annotated[list[Path] | None, typer.Argument(help="Extra folders to share files with.")] = None,
    dry_run: DryRun = False,
    min_size: Annotated[str, typer.Option(help="Only files at least this big (e.g. 1MB, 0).")] = "1MiB",
    mode: Annotated[str, typer.Option(help="auto (reflink, else hard link), reflink or hardlink.")] = "auto",
    cache: Which = "all",
    hf_cache_dir: HfDir = None,
    ms_cache_dir: MsDir = None,
    json_output: Json = False,
) -> None:
    """Store identical files (same sha256) of both caches and the given folders once.

    Only files no tool writes into in place are linked (cache blobs, finished ModelScope files);
    hard-linked files are made read-only. Examples:

      hubget cache dedup --dry-run

      hubget cache dedup ~/models ~/checkpoints
    """
    from hubget.cache import dedup as run_dedup
    from hubget.cache.query import parse_size
    from hubget.errors import UsageError

    if mode not in ("auto", "reflink", "hardlink"):
        raise UsageError(f"--mode must be auto, reflink or hardlink, not {mode!r}")
    report = run_dedup(
        folders or [],
        dry_run=dry_run,
        caches=cache,
        min_size=parse_size(min_size),
        mode=mode,
        hf_cache_dir=hf_cache_dir,
        ms_cache_dir=ms_cache_dir,
    )
    if json_output:
        print_json(report.as_json())
        return
    out = console()
    for group in report.groups:
        out.print(f"  {human_bytes(group.size):>10}  {group.kept}  <- {len(group.linked)} file(s)")
    for path, reason in report.skipped:
        out.print(f"  kept      {path}: {reason}")
    verb = "would save" if dry_run else "saved"
    saved = f"{verb} {human_bytes(report.bytes_saved)} ({report.bytes_saved} bytes)"
    hashed = f"{human_bytes(report.bytes_hashed)} hashed in {report.seconds:.2f} s"
    out.print(f"{report.files_linked} file(s) in {len(report.groups)} group(s); {saved}; {hashed}")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
