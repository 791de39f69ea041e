"""`--source auto`: ask every configured hub at once, keep those that answer, and download each file
from every source that serves the same bytes.

The hubs: the Hugging Face endpoint (``HF_ENDPOINT`` or ``--endpoint``), the mirrors
(``HUBGET_HF_MIRRORS``), and ModelScope (``MODELSCOPE_ENDPOINT``) under the ids ``idmap`` names.
Each gets a short deadline to list the repo (``HUBGET_PROBE_TIMEOUT``), so a refused, hanging or
failing host costs seconds. The first readable Hugging Face listing (the endpoint's, else a
mirror's) is the reference: another source serves a file only when it lists the same path with the
same size and hash, and a ModelScope repo counts as the same model only when the sha256 of every
weight file matches. The engine then spreads each file's ranges over its sources by measured speed.

When no Hugging Face listing can be read, only the id mapping can name a substitute; it is used
and the user is told which repo, from where, and on what word (``Substitution``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hubget import config
from hubget.api.pipeline import FetchReport, fetch_snapshot
from hubget.api.targets import hf_layout, modelscope_layout
from hubget.errors import HubgetError, IntegrityError, NetworkError, NotFoundError, UsageError
from hubget.layouts.base import Layout
from hubget.models import RemoteFile, RepoRef, Snapshot
from hubget.sources.huggingface import HfSource
from hubget.sources.idmap import Candidate, IdMap
from hubget.sources.matching import model_match, same_bytes
from hubget.sources.modelscope import ModelScopeSource
from hubget.transfer.http import HttpClient, origin_url
from hubget.transfer.jobs import ProgressSink

HUGGINGFACE = "huggingface"
MIRROR = "mirror"
MODELSCOPE = "modelscope"


origin = origin_url  # ``scheme://host:port``, the key the engine reports bytes per source under


@dataclass
class Probe:
    """One hub asked for one repo's listing."""

    kind: str  # HUGGINGFACE, MIRROR or MODELSCOPE
    endpoint: str
    repo_id: str
    repo_type: str = "model"
    revision: str | None = None
    candidate: Candidate | None = None  # how a ModelScope id was found
    snapshot: Snapshot | None = None
    error: str | None = None
    seconds: float | None = None  # time to the full listing
    verdict: str = ""  # what was concluded about this source, for people
    used: bool = False

    @property
    def ok(self) -> bool:
        return self.snapshot is not None

    def label(self) -> str:
        return f"{self.kind} {self.endpoint} ({self.repo_id})"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "endpoint": self.endpoint,
            "origin": origin(self.endpoint),
            "repo_id": self.repo_id,
            "reachable": self.ok,
            "listing_seconds": round(self.seconds, 3) if self.seconds is not None else None,
            "error": self.error,
            "matched_by": self.candidate.how if self.candidate else None,
            "verdict": self.verdict,
            "used": self.used,
        }


@dataclass
class Substitution:
    """The Hugging Face listing could not be read; this ModelScope repo stands in, on the mapping's word."""

    requested: str
    repo_id: str
    endpoint: str
    how: str

    def sentence(self) -> str:
        return (
            f"downloading ModelScope {self.repo_id} ({self.endpoint}) in place of {self.requested}, "
            f"matched by {self.how}; not verified by hash, because no Hugging Face listing could be read"
        )


@dataclass
class AutoPlan:
    ref: RepoRef  # the repo the files are stored as (the Hugging Face one, or the substitute)
    snapshot: Snapshot  # the reference listing; each file's extra_urls are its other sources
    probes: list[Probe]
    substitution: Substitution | None = None
    notes: list[str] = field(default_factory=list)
    source: Any = None  # the Source object of the reference

    @property
    def layout_kind(self) -> str:
        return "modelscope" if self.substitution else "hf"

    def served_by(self, file: RemoteFile) -> list[str]:
        return [origin(u) for u in [file.url, *file.extra_urls]]


# -- probing ------------------------------------------------------------------------------


def _probe_client(timeout: float) -> HttpClient:
    # One quick retry for a transient 5xx; a refused or silent host fails within the deadline.
    return HttpClient(connect_timeout=min(3.0, timeout), read_timeout=timeout, retries=1, backoff_max=0.5)


def _run_probes(probes: list[Probe], make_source: Callable[[Probe], Any], timeout: float) -> None:
    """List every probe's repo in parallel; whatever has not answered by the deadline is unreachable.

    Daemon threads, not a pool: a hanging host must not hold up the end of the process either.
    """
    done = threading.Condition()
    finished: set[int] = set()

    def run(i: int, probe: Probe) -> None:
        started = time.monotonic()
        try:
            ref = RepoRef(probe.repo_id, probe.repo_type, probe.revision)  # type: ignore[arg-type]
            snapshot = make_source(probe).resolve(ref)
            probe.snapshot, probe.seconds = snapshot, time.monotonic() - started
        except HubgetError as e:
            probe.error = str(e)
        except Exception as e:  # a broken answer must not take the other sources down with it
            probe.error = f"{type(e).__name__}: {e}"
        with done:
            finished.add(i)
            done.notify_all()

    for i, probe in enumerate(probes):
        threading.Thread(target=run, args=(i, probe), name=f"hubget-probe-{i}", daemon=True).start()
    deadline = time.monotonic() + timeout
    with done:
        while len(finished) < len(probes):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            done.wait(left)
        for i, probe in enumerate(probes):
            if i not in finished:
                probe.error = f"no answer within {timeout:g} s"
                probe.snapshot = None


# -- the plan -----------------------------------------------------------------------------


def plan_auto(
    ref: RepoRef,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    mirrors: list[str] | None = None,
    modelscope_endpoint: str | None = None,
    modelscope_token: str | None = None,
    modelscope_id: str | None = None,
    mapping_file: str | Path | None = None,
    use_modelscope: bool = True,
    probe_timeout: float | None = None,
    say: Callable[[str], None] | None = None,
) -> AutoPlan:
    """Probe every source and decide which serves which file. Raises when none can serve the repo."""
    say = say or (lambda _text: None)
    timeout = probe_timeout if probe_timeout is not None else config.probe_timeout()
    hf_endpoint = (endpoint or config.hf_endpoint()).rstrip("/")
    configured = config.hf_mirrors() if mirrors is None else mirrors
    mirror_list = [m.rstrip("/") for m in configured if m.rstrip("/") != hf_endpoint]
    ms_endpoint = (modelscope_endpoint or config.ms_endpoint()).rstrip("/")
    idmap = IdMap.load(mapping_file)

    kind, rev = ref.repo_type, ref.revision
    probes = [Probe(HUGGINGFACE, hf_endpoint, ref.repo_id, kind, rev)]
    probes += [Probe(MIRROR, m.rstrip("/"), ref.repo_id, kind, rev) for m in dict.fromkeys(mirror_list)]
    ms_ok_type = ref.repo_type in ("model", "dataset")
    # A revision is a Hugging Face name; on ModelScope it may mean another state of the model.
    ms_revision_ok = ref.revision in (None, "main", "master")
    if use_modelscope and ms_ok_type and ms_revision_ok:
        for cand in idmap.modelscope_candidates(ref.repo_id, modelscope_id):
            probes.append(Probe(MODELSCOPE, ms_endpoint, cand.repo_id, kind, None, candidate=cand))
    elif modelscope_id and not ms_revision_ok:
        raise UsageError(
            f"--modelscope-id cannot be combined with the Hugging Face revision {ref.revision!r}"
        )

    client = _probe_client(timeout)

    def make_source(probe: Probe) -> Any:
        if probe.kind == HUGGINGFACE:
            return HfSource(probe.endpoint, token, client)
        if probe.kind == MIRROR:
            return HfSource(probe.endpoint, False, client)  # the HF token belongs to the HF endpoint
        return ModelScopeSource(probe.endpoint, modelscope_token, client)

    _run_probes(probes, make_source, timeout)
    for probe in probes:
        if probe.snapshot is not None:
            listed = f"listed {len(probe.snapshot.files)} file(s) in {probe.seconds or 0:.2f} s"
            say(f"source {probe.label()}: {listed}")
        else:
            say(f"source {probe.label()}: not usable ({probe.error})")

    hf_like = sorted(
        (p for p in probes if p.kind != MODELSCOPE and p.ok),
        key=lambda p: (p.kind != HUGGINGFACE, p.seconds or 0.0),
    )
    ms_probes = [p for p in probes if p.kind == MODELSCOPE]
    if hf_like:
        plan = _plan_with_reference(ref, hf_like, ms_probes, probes, say)
        plan.source = make_source(hf_like[0])
        return plan
    plan = _plan_substitute(ref, ms_probes, probes, say)
    plan.source = make_source(next(p for p in probes if p.used))
    return plan


def _plan_with_reference(
    ref: RepoRef,
    hf_like: list[Probe],
    ms_probes: list[Probe],
    probes: list[Probe],
    say: Callable[[str], None],
) -> AutoPlan:
    reference = hf_like[0]
    assert reference.snapshot is not None
    reference.used = True
    reference.verdict = "reference listing"
    notes: list[str] = []
    if reference.kind != HUGGINGFACE:
        hf = probes[0]
        notes.append(
            f"the Hugging Face endpoint {hf.endpoint} could not be read ({hf.error}); "
            f"the listing of mirror {reference.endpoint} is the reference"
        )
    others: list[Probe] = []
    for probe in hf_like[1:]:
        assert probe.snapshot is not None
        theirs = probe.snapshot.by_path()
        shared = [f for f in reference.snapshot.files if f.path in theirs]
        differ = [f.path for f in shared if not same_bytes(f, theirs[f.path])]
        if differ:
            notes.append(
                f"mirror {probe.endpoint} serves different bytes for {len(differ)} file(s) "
                f"({', '.join(differ[:3])}): not used for them"
            )
        probe.verdict = f"same bytes for {len(shared) - len(differ)} file(s)"
        probe.verdict += f"; different bytes for {len(differ)}: not used for them" if differ else ""
        others.append(probe)
    for probe in ms_probes:
        if not probe.ok:
            probe.verdict = "not found or unreachable"
            continue
        assert probe.snapshot is not None
        same, why = model_match(reference.snapshot, probe.snapshot)
        probe.verdict = why
        if same and not any(p.kind == MODELSCOPE for p in others):
            others.append(probe)
            how = probe.candidate.how if probe.candidate else "?"
            notes.append(f"ModelScope {probe.repo_id} holds the same model ({why}; id from {how})")
        elif not same:
            notes.append(f"ModelScope {probe.repo_id} is not the same model ({why}): not used")
    others.sort(key=lambda p: p.seconds or 0.0)

    files: list[RemoteFile] = []
    for f in reference.snapshot.files:
        extra: list[str] = []
        for probe in others:
            assert probe.snapshot is not None
            theirs = probe.snapshot.by_path().get(f.path)
            if theirs is not None and same_bytes(f, theirs):
                extra.append(theirs.url)
                probe.used = True
        files.append(replace(f, extra_urls=[*f.extra_urls, *extra]))
    snapshot = replace(reference.snapshot, files=files)
    for note in notes:
        say(note)
    return AutoPlan(ref, snapshot, probes, None, notes)


def _plan_substitute(
    ref: RepoRef, ms_probes: list[Probe], probes: list[Probe], say: Callable[[str], None]
) -> AutoPlan:
    failures = "; ".join(f"{p.kind} {p.endpoint}: {p.error}" for p in probes if p.kind != MODELSCOPE)
    mapped = [p for p in ms_probes if p.candidate is not None and p.candidate.from_mapping]
    chosen = next((p for p in mapped if p.ok), None)
    if chosen is None:
        tried = "; ".join(f"{p.repo_id}: {p.error}" for p in mapped) or "no mapping entry for this id"
        hint = "pass --modelscope-id (or a --mapping-file entry) to name the ModelScope repo"
        not_found = bool(mapped) and all("not found" in (p.error or "") for p in mapped)
        raise (NotFoundError if not_found else NetworkError)(
            f"no source can serve {ref.repo_id}: {failures}. ModelScope: {tried}. "
            f"A different id is used only when a mapping names it; {hint}"
        )
    assert chosen.candidate is not None and chosen.snapshot is not None
    chosen.used = True
    chosen.verdict = "substitute named by the id mapping (not verified by hash)"
    for p in ms_probes:
        if p is not chosen and p.candidate is not None and not p.candidate.from_mapping:
            p.verdict = "same-id guess: never used without a Hugging Face listing to prove it"
    sub = Substitution(ref.repo_id, chosen.repo_id, chosen.endpoint, chosen.candidate.how)
    notes = [f"no Hugging Face listing could be read ({failures})", sub.sentence()]
    for note in notes:
        say(note)
    ms_ref = RepoRef(chosen.repo_id, ref.repo_type, None)
    return AutoPlan(ms_ref, chosen.snapshot, probes, sub, notes)


def auto_layout(plan: AutoPlan, cache_dir: str | Path | None, local_dir: str | Path | None) -> Layout:
    """The layout the user asked for: the HF cache (or local_dir) for a Hugging Face reference. A
    substitute has no Hugging Face commit or etags to name HF cache entries by, so it goes to the
    ModelScope cache (or local_dir) under its own id."""
    if plan.substitution is None:
        return hf_layout(plan.ref, cache_dir, local_dir)
    return modelscope_layout(plan.ref, cache_dir, local_dir)


def sources_summary(sources: dict[str, int]) -> str:
    total = sum(sources.values()) or 1
    return ", ".join(f"{o}: {n} bytes ({100 * n / total:.0f}%)" for o, n in sorted(sources.items()))


def fetch_auto(
    ref: RepoRef,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_dir: str | Path | None = None,
    allow_patterns: str | list[str] | None = None,
    ignore_patterns: str | list[str] | None = None,
    filenames: list[str] | None = None,
    max_workers: int = 8,
    connections: int = 8,
    progress: ProgressSink | None = None,
    dry_run: bool = False,
    modelscope_id: str | None = None,
    mapping_file: str | Path | None = None,
    mirrors: list[str] | None = None,
    modelscope_endpoint: str | None = None,
    modelscope_token: str | None = None,
    probe_timeout: float | None = None,
    engine_options: dict[str, Any] | None = None,
    use_modelscope: bool = True,
) -> tuple[AutoPlan, FetchReport]:
    """Plan (``plan_auto``), then download every file from all the sources that serve it.

    A file whose bytes, gathered from several sources, fail verification is fetched again from one
    source at a time: a source that lists the right hash but serves other bytes cannot spoil it.
    """
    say = progress.message if progress is not None else None
    plan = plan_auto(
        ref,
        endpoint=endpoint,
        token=token,
        mirrors=mirrors,
        modelscope_endpoint=modelscope_endpoint,
        modelscope_token=modelscope_token,
        modelscope_id=modelscope_id,
        mapping_file=mapping_file,
        probe_timeout=probe_timeout,
        use_modelscope=use_modelscope,
        say=say,
    )
    if plan.substitution is not None and progress is None:
        # No progress display to say it on: a substitution must never pass unannounced.
        logging.getLogger("hubget").warning("hubget: %s", plan.substitution.sentence())
    layout = auto_layout(plan, cache_dir, local_dir)
    options: dict[str, Any] = {
        "allow_patterns": allow_patterns,
        "ignore_patterns": ignore_patterns,
        "filenames": filenames,
        "max_workers": max_workers,
        "connections": connections,
        "progress": progress,
        "engine_options": engine_options,
    }
    try:
        report = fetch_snapshot(
            plan.source, plan.ref, layout, snapshot=plan.snapshot, dry_run=dry_run, **options
        )
    except IntegrityError as first_error:
        report = _one_source_at_a_time(plan, layout, options, first_error, say or (lambda _t: None))
    if not dry_run and say is not None:
        totals: dict[str, int] = {}
        for status in report.files:
            for key, nbytes in status.sources.items():
                totals[key] = totals.get(key, 0) + nbytes
        if totals:
            say(f"bytes per source: {sources_summary(totals)}")
    return plan, report


def _one_source_at_a_time(
    plan: AutoPlan, layout: Layout, options: dict[str, Any], error: IntegrityError, say: Callable[[str], None]
) -> FetchReport:
    if not any(f.extra_urls for f in plan.snapshot.files):
        raise error
    rounds = max(1 + len(f.extra_urls) for f in plan.snapshot.files)
    for k in range(rounds):
        files = []
        for f in plan.snapshot.files:
            urls = [f.url, *f.extra_urls]
            url = urls[k % len(urls)]
            # Credentials belong to the reference's origin only.
            headers = f.headers if origin(url) == origin(f.url) else {}
            files.append(replace(f, url=url, extra_urls=[], headers=headers))
        single = replace(plan.snapshot, files=files)
        say(f"verification failed ({error}); fetching the failed file(s) again from one source each")
        try:
            return fetch_snapshot(plan.source, plan.ref, layout, snapshot=single, **options)
        except IntegrityError as e:
            error = e
    raise error
