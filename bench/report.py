"""Turning run records into the published figures: a markdown table per scenario (medians of the
repetitions, ratios to hubget), the targets checked, and a PNG chart."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.peers import BASELINE, PEERS
from bench.runner import RunRecord
from bench.scenarios import SCENARIOS

MB = 1e6  # tables speak decimal MB/s, as download tools display


@dataclass
class Summary:
    scenario: str
    peer: str
    runs: int
    ok: int
    wall: float
    cpu: float
    peak_rss: float  # the largest of the repetitions: a limit is about the worst case
    fetched: float
    total: int
    killed_at: float = 0.0
    disk: float = 0.0
    errors: tuple[str, ...] = ()
    loads: tuple[float, ...] = ()  # 1-minute load average at the start and end of every run

    @property
    def mbps(self) -> float:
        return self.total / self.wall / MB if self.wall else 0.0


def summarize(records: Iterable[RunRecord]) -> dict[str, dict[str, Summary]]:
    """Medians over the successful repetitions of each (scenario, peer)."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.scenario, r.peer), []).append(r)
    out: dict[str, dict[str, Summary]] = {}
    for (scenario, peer), runs in groups.items():
        good = [r for r in runs if r.ok]
        use = good or runs
        errors = tuple(sorted({r.error or "; ".join(r.problems) for r in runs if not r.ok}))
        out.setdefault(scenario, {})[peer] = Summary(
            scenario=scenario,
            peer=peer,
            runs=len(runs),
            ok=len(good),
            wall=statistics.median(r.wall for r in use) if good else 0.0,
            cpu=statistics.median(r.cpu for r in use),
            peak_rss=max(r.peak_rss for r in use),
            fetched=statistics.median(r.bytes_fetched for r in use),
            total=runs[0].total_bytes,
            killed_at=statistics.median(r.killed_at_bytes for r in use),
            disk=statistics.median(getattr(r, "disk_bytes", 0) for r in use),
            errors=errors,
            loads=tuple(x for r in runs for x in (r.loadavg, r.loadavg_end) if x),
        )
    return out


def speedup(sums: dict[str, Summary], peer: str) -> float | None:
    """How many times faster hubget (speaking the peer's protocol) finished than ``peer``."""
    base = sums.get(BASELINE[PEERS[peer].protocol]) or sums.get("hubget")
    me = sums.get(peer)
    if base is None or me is None or not base.ok or not me.ok or not base.wall:
        return None
    return me.wall / base.wall


def _num(x: float) -> str:
    """Few digits, but never a small value rounded to 0."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def _fmt_ratio(x: float | None, peer: str = "") -> str:
    if peer in BASELINE.values():
        return "baseline"
    return f"{x:.2f}x" if x is not None else "-"


def _order(peers: Iterable[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(PEERS)}
    return sorted(peers, key=lambda p: rank.get(p, 99))


def scenario_table(name: str, sums: dict[str, Summary]) -> list[str]:
    sc = SCENARIOS[name]
    total = next(iter(sums.values())).total
    files = {s.peer: s for s in sums.values()}
    lines = [f"### {name}: {sc.title} ({_num(total / MB)} MB)", ""]
    if sc.resume:
        lines += [
            "| peer | ok/runs | fetched before the kill (MB) | fetched by the rerun (MB) | rerun time (s) "
            "| rerun CPU (s) | peak RSS (MB) | hubget speed-up |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for peer in _order(files):
            s = files[peer]
            lines.append(
                f"| {PEERS[peer].label} | {s.ok}/{s.runs} | {s.killed_at / MB:,.0f} | {s.fetched / MB:,.0f} "
                f"| {s.wall:.2f} | {s.cpu:.2f} | {s.peak_rss / MB:.0f} "
                f"| {_fmt_ratio(speedup(sums, peer), peer)} |"
            )
    elif name == "git":
        lines += [
            "| peer | ok/runs | wall (s) | MB/s | CPU (s) | peak RSS (MB) | fetched (MB) | on disk (MB) "
            "| hubget speed-up |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for peer in _order(files):
            s = files[peer]
            wall = f"{s.wall:.2f}" if s.ok else "failed"
            lines.append(
                f"| {PEERS[peer].label} | {s.ok}/{s.runs} | {wall} | {_num(s.mbps)} | {s.cpu:.2f} "
                f"| {s.peak_rss / MB:.0f} | {_num(s.fetched / MB)} | {_num(s.disk / MB)} "
                f"| {_fmt_ratio(speedup(sums, peer), peer)} |"
            )
    else:
        lines += [
            "| peer | ok/runs | wall (s) | MB/s | CPU (s) | peak RSS (MB) | fetched (MB) | hubget speed-up |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for peer in _order(files):
            s = files[peer]
            wall = f"{s.wall:.2f}" if s.ok else "failed"
            lines.append(
                f"| {PEERS[peer].label} | {s.ok}/{s.runs} | {wall} | {_num(s.mbps)} | {s.cpu:.2f} "
                f"| {s.peak_rss / MB:.0f} | {_num(s.fetched / MB)} "
                f"| {_fmt_ratio(speedup(sums, peer), peer)} |"
            )
    if sums_loads := [x for s in sums.values() for x in s.loads]:
        lines += [
            "",
            f"Load average (1 min) at the start and end of these runs: median "
            f"{statistics.median(sums_loads):.1f}, range {min(sums_loads):.1f} to {max(sums_loads):.1f}.",
        ]
    failures = [(p, e) for p in _order(files) for e in files[p].errors if e]
    if failures:
        lines.append("")
        lines += [f"- {PEERS[p].label} failed: `{e}`" for p, e in failures]
    lines.append("")
    return lines


def _median(values: Iterable[float]) -> float:
    vals = list(values)
    return statistics.median(vals) if vals else 0.0


def replica_table(name: str, records: Iterable[RunRecord]) -> list[str]:
    """What the hub replica counted for each peer: medians per run, 429s summed over all runs."""
    runs: dict[str, list[RunRecord]] = {}
    for r in records:
        if r.scenario == name and r.hub:
            runs.setdefault(r.peer, []).append(r)
    if not runs:
        return []
    lines = [
        f"What the replica counted ({name}; medians per run, 429s over all runs):",
        "",
        "| peer | resolver calls | per file (max) | 429s api / resolvers | hub requests "
        "| bridge requests | bridge connections (peak at once) | hub connections (peak) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for peer in _order(runs):
        rs = runs[peer]
        files = rs[0].files or 1
        resolves = _median(sum(r.hub["resolves"].values()) for r in rs)
        worst = max(max(r.hub["resolves"].values(), default=0) for r in rs)
        api = sum(int(r.hub["too_many"].get("api", 0)) for r in rs)
        resolvers = sum(int(r.hub["too_many"].get("resolvers", 0)) for r in rs)

        def med(key: str, origin: str, rs: list[RunRecord] = rs) -> str:
            x = _median(float(r.hub[key][origin]) for r in rs)
            return f"{x:.0f}" if x == int(x) else f"{x:.1f}"

        lines.append(
            f"| {PEERS[peer].label} | {resolves:.0f} ({resolves / files:.2f} per file) | {worst} "
            f"| {api} / {resolvers} | {med('requests', 'hub')} | {med('requests', 'bridge')} "
            f"| {med('connections', 'bridge')} ({med('max_connections', 'bridge')}) "
            f"| {med('connections', 'hub')} ({med('max_connections', 'hub')}) |"
        )
    lines.append("")
    return lines


@dataclass
class Target:
    text: str
    goal: float
    value: float | None
    unit: str = "x"

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value < self.goal if self.unit == "MB" else self.value >= self.goal


def targets(all_sums: dict[str, dict[str, Summary]]) -> list[Target]:
    def ratio(scenario: str, peer: str) -> float | None:
        return speedup(all_sums[scenario], peer) if scenario in all_sums else None

    out = [
        Target(
            "hubget vs hf_transfer, large file (hubget verifies sha256)", 1.0, ratio("large", "hf_transfer")
        ),
        Target("hubget vs huggingface_hub, every connection capped", 5.0, ratio("capped", "huggingface_hub")),
        Target(
            "hubget vs huggingface_hub, small-files dataset", 2.0, ratio("small-files", "huggingface_hub")
        ),
    ]
    # Issue 17: many small files from `hubget serve`, from nginx, and from nginx 50 ms away.
    for scenario in ("small-files", "small-files-nginx"):
        if scenario != "small-files":
            out.append(
                Target(f"hubget vs huggingface_hub, {scenario}", 2.0, ratio(scenario, "huggingface_hub"))
            )
        out.append(Target(f"hubget vs aria2c, {scenario}", 1.0, ratio(scenario, "aria2c")))
    out.append(
        Target("hubget vs huggingface_hub, small-files-rtt", 4.0, ratio("small-files-rtt", "huggingface_hub"))
    )
    out = [t for t in out if t.value is not None or "small-files-" not in t.text]
    for scenario in ("large", "sharded", "small-files", "capped"):
        out.append(Target(f"hubget vs modelscope defaults, {scenario}", 2.0, ratio(scenario, "modelscope")))
    if "realhub" in all_sums:  # issue 12: against a replica of huggingface.co
        out.append(
            Target(
                "hubget vs huggingface_hub, replica of the real hub", 4.0, ratio("realhub", "huggingface_hub")
            )
        )
        out.append(
            Target(
                "hubget vs hf_transfer (huggingface_hub 0.26), replica of the real hub",
                1.5,
                ratio("realhub", "hf_transfer-0.26"),
            )
        )
    rss = [s.peak_rss / MB for sums in all_sums.values() for p, s in sums.items() if p.startswith("hubget")]
    out.append(Target("hubget peak RSS, any scenario", 200.0, max(rss) if rss else None, unit="MB"))
    return out


SERVER_NOTES = {  # said above the tables when a scenario of that server is in the report
    "replica": "The realhub scenario is served by a replica of huggingface.co instead (bench/replica.py: "
    "hub -> 302 -> Xet bridge, signed URLs, rate limits, every connection capped, a round-trip "
    "time added), which also counts what each peer asked of it.",
    "nginx": "In the scenarios served by nginx, nginx sends every file body itself (the API goes to "
    "`hubget serve` behind it); a round-trip time is added there by a delaying TCP proxy in "
    "front of it (bench/delay.py).",
}


def markdown(records: list[RunRecord], meta: dict[str, object], chart: str | None) -> str:
    all_sums = summarize(records)
    machine = meta.get("machine", {})
    assert isinstance(machine, dict)
    lines = ["# Benchmarks", ""]
    lines += [
        "hubget and its peers download the same generated repos from the same local server "
        "(`hubget serve` on 127.0.0.1, the only origin of file bytes for every peer; nginx `limit_rate` in "
        "front of it for the capped scenario). Each peer runs in its own process, into a fresh cache; the "
        "order of the peers rotates every repetition so background load hits all of them alike. Every "
        "file every peer wrote is checked against its sha256 afterwards. Figures are medians of the "
        "repetitions (peak RSS: the largest). *hubget speed-up* is the peer's wall time divided by "
        "hubget's (hubget `--source modelscope` for the modelscope rows): above 1x hubget is faster.",
        "",
        *(
            line
            for kind, note in SERVER_NOTES.items()
            if any(SCENARIOS[n].server == kind for n in all_sums if n in SCENARIOS)
            for line in (note, "")
        ),
        "Reproduce: `python -m bench --scale full --repeat 3 --out docs` (`--help` for scenarios and peers).",
        "",
    ]
    if meta.get("results_file"):
        lines += [f"Raw results of every run: `{meta['results_file']}`.", ""]
    if chart:
        lines += [f"![benchmark chart]({chart})", ""]
    lines += [
        f"Run: scale `{meta.get('scale')}`, {meta.get('repeat')} repetition(s), {meta.get('date')}.",
        "",
    ]
    if meta.get("note"):
        lines += [str(meta["note"]), ""]
    lines += ["## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    for t in targets(all_sums):
        goal = f"< {t.goal:.0f} MB" if t.unit == "MB" else f">= {t.goal:.1f}x"
        value = "-" if t.value is None else (f"{t.value:.0f} MB" if t.unit == "MB" else f"{t.value:.2f}x")
        met = {True: "yes", False: "**no**", None: "-"}[t.met]
        lines.append(f"| {t.text} | {goal} | {value} | {met} |")
    if meta.get("analysis"):
        lines += ["", str(meta["analysis"]).strip()]
    lines += ["", "## Results", ""]
    for name in SCENARIOS:
        if name in all_sums:
            lines += scenario_table(name, all_sums[name])
            if SCENARIOS[name].server == "replica":
                lines += replica_table(name, records)
    loads = [r.loadavg for r in records if r.loadavg]
    if loads:
        lines += [
            f"Load average (1 min) when the runs started: median {statistics.median(loads):.1f}, "
            f"range {min(loads):.1f} to {max(loads):.1f}, on {os_cpus(machine)} cores.",
            "",
        ]
    lines += ["## Peers", "", "| peer | how it is run |", "|---|---|"]
    seen = {r.peer for r in records}
    lines += [f"| {PEERS[p].label} | {PEERS[p].describe} |" for p in _order(seen)]
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine.items()]
    lines.append("")
    return "\n".join(lines)


def os_cpus(machine: dict[str, str]) -> str:
    return str(machine.get("cpu", "?")).split(" x ")[0]


def chart(records: list[RunRecord], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_sums = summarize(records)
    panels = [n for n in SCENARIOS if n in all_sums and not SCENARIOS[n].resume]
    has_resume = "resume" in all_sums
    count = len(panels) + (1 if has_resume else 0) + 1
    cols = 2 if count > 1 else 1
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 2.9 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    colour = {p: "#d1495b" for p in PEERS if p.startswith("hubget")}

    def bars(ax, labels: list[str], values: list[float], peers: list[str], unit: str, xlabel: str) -> None:  # type: ignore[no-untyped-def]
        y = range(len(labels))
        ax.barh(list(y), values, color=[colour.get(p, "#5b7aa8") for p in peers])
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        top = max(values) if values else 1
        for i, v in enumerate(values):
            ax.text(v + top * 0.01, i, _num(v) + unit, va="center", fontsize=7)
        ax.set_xlim(0, top * 1.22 if top else 1)

    i = 0
    for name in panels:
        sums = all_sums[name]
        peers = _order(sums)
        labels = [PEERS[p].label + ("" if sums[p].ok else " (failed)") for p in peers]
        total = next(iter(sums.values())).total
        if name == "small-files":  # latency-bound: files per second says more than MB/s
            files = next(r.files for r in records if r.scenario == name)
            rates = [files / sums[p].wall if sums[p].wall else 0.0 for p in peers]
            bars(flat[i], labels, rates, peers, "", f"files/s (median, {files:,} files), higher is better")
        else:
            bars(flat[i], labels, [sums[p].mbps for p in peers], peers, "", "MB/s (median), higher is better")
        flat[i].set_title(f"{name}: {SCENARIOS[name].title}, {total / MB:,.0f} MB", fontsize=9)
        i += 1
    if has_resume:
        sums = all_sums["resume"]
        peers = _order(sums)
        bars(
            flat[i],
            [PEERS[p].label for p in peers],
            [sums[p].fetched / MB for p in peers],
            peers,
            " MB",
            "MB fetched again after a kill at 50%, lower is better",
        )
        flat[i].set_title("resume: bytes the rerun fetched", fontsize=9)
        i += 1
    rss: dict[str, float] = {}
    for sums in all_sums.values():
        for p, s in sums.items():
            rss[p] = max(rss.get(p, 0.0), s.peak_rss / MB)
    peers = _order(rss)
    bars(
        flat[i],
        [PEERS[p].label for p in peers],
        [rss[p] for p in peers],
        peers,
        " MB",
        "peak RSS over all scenarios (MB), lower is better",
    )
    flat[i].set_title("memory", fontsize=9)
    for ax in flat[i + 1 :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
