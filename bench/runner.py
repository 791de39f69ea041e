"""Running the scenarios: servers up, repos generated, each peer run in turn (order rotated every
repetition so background load hits all peers alike), its files verified, its folder removed."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.data import SCALES, BenchRepo, ensure_repo
from bench.delay import DelayServer
from bench.measure import Measured, run_measured
from bench.peers import PEERS, REPO_ROOT
from bench.replica import ReplicaServer
from bench.scenarios import SCENARIOS, Scenario
from bench.servers import CappedProxy, HubServer, NginxOrigin
from bench.verify import verify_tree


@dataclass
class RunRecord:
    scenario: str
    peer: str
    rep: int
    order: int
    total_bytes: int
    files: int
    ok: bool
    returncode: int
    wall: float
    cpu: float
    peak_rss: int
    bytes_fetched: int
    verified: int = 0
    problems: list[str] = field(default_factory=list)
    error: str = ""
    # resume scenario only: the first (killed) run
    killed_at_bytes: int = 0
    killed_after: float = 0.0
    disk_bytes: int = 0  # space the result takes (hard links and shared blocks counted once)
    loadavg: float = 0.0  # 1-minute load average when the run started: the machine is shared
    loadavg_end: float = 0.0  # ... and when it ended
    # replica scenarios: what the hub replica counted during this run (bench.replica.snapshot)
    hub: dict[str, Any] = field(default_factory=dict)


Origin = HubServer | ReplicaServer | NginxOrigin  # what serves the bytes; each counts them (``bytes_sent()``)


def child_env(work: Path, endpoint: str) -> dict[str, str]:
    """A clean environment per run: fresh HF home, no token, no progress bars, no telemetry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "MODELSCOPE"))}
    env.update(
        HF_HOME=str(work / "hf-home"),
        HF_ENDPOINT=endpoint,
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        MODELSCOPE_CACHE=str(work / "ms-cache"),
        MODELSCOPE_ENDPOINT=endpoint,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
    )
    return env


def _rotate(peers: list[str], rep: int) -> list[str]:
    k = rep % len(peers) if peers else 0
    return peers[k:] + peers[:k]


class Bench:
    def __init__(
        self,
        *,
        scale: str,
        data_dir: Path,
        repeat: int,
        peers: list[str] | None,
        log: Callable[[str], None] = print,
        on_record: Callable[[RunRecord], None] | None = None,
        previous: list[RunRecord] | None = None,
    ) -> None:
        self.scale = scale
        self.sizes = SCALES[scale]
        self.root = data_dir / scale / "root"
        self.work = data_dir / scale / "runs"
        self.repeat = repeat
        self.only_peers = peers
        self.log = log
        self.on_record = on_record
        self.records: list[RunRecord] = []
        # Runs appended to earlier ones continue their repetition count (and so the peer rotation).
        self.first_rep: dict[str, int] = {}
        for r in previous or []:
            self.first_rep[r.scenario] = max(self.first_rep.get(r.scenario, 0), r.rep + 1)

    def peers_for(self, scenario: Scenario) -> list[str]:
        names = [p for p in scenario.peers if self.only_peers is None or p in self.only_peers]
        return [p for p in names if PEERS[p].available()]

    def run(self, scenario_names: list[str]) -> list[RunRecord]:
        self.root.mkdir(parents=True, exist_ok=True)
        repos: dict[str, BenchRepo] = {}
        for name in scenario_names:
            sc = SCENARIOS[name]
            if sc.repo not in repos:
                repo = repos[sc.repo] = ensure_repo(self.root, sc.repo, self.scale)
                self.log(f"repo {repo.repo_id}: {len(repo.files)} files, {repo.total_bytes / 1e6:,.1f} MB")
        served = [n for n in scenario_names if SCENARIOS[n].server in ("serve", "nginx")]
        server = HubServer(self.root, self.root.parent / "server.log") if served else None
        try:
            for repo_name in {SCENARIOS[n].repo for n in served}:
                assert server is not None
                server.warm(repos[repo_name].repo_id, repos[repo_name].repo_type)
            for name in scenario_names:
                sc = SCENARIOS[name]
                if sc.server == "replica":
                    self._replica_scenario(sc, repos[sc.repo])
                else:
                    assert server is not None
                    self._scenario(sc, repos[sc.repo], server)
        finally:
            if server is not None:
                server.stop()
        return self.records

    def _repetitions(self, sc: Scenario, repo: BenchRepo, endpoint: str, origin: Origin) -> None:
        peers = self.peers_for(sc)
        first = self.first_rep.get(sc.name, 0)
        for rep in range(first, first + self.repeat):
            for order, peer in enumerate(_rotate(peers, rep)):
                rec = self._one(sc, repo, peer, rep, order, endpoint, origin)
                self.records.append(rec)
                if self.on_record is not None:
                    self.on_record(rec)

    def _scenario(self, sc: Scenario, repo: BenchRepo, server: HubServer) -> None:
        proxy = delay = None
        origin: Origin = server
        self.work.mkdir(parents=True, exist_ok=True)
        try:
            if sc.server == "nginx":
                origin = proxy = NginxOrigin(server, [repo], self.work / f"nginx-{sc.name}")
            elif sc.capped:
                proxy = CappedProxy(server.url, self.sizes.cap_per_conn, self.work / "nginx")
            endpoint = proxy.url if proxy is not None else server.url
            if sc.rtt[1] > 0:
                delay = DelayServer(endpoint, sc.rtt, self.work / f"delay-{sc.name}.log")
                endpoint = delay.url
            self._repetitions(sc, repo, endpoint, origin)
        finally:
            for s in (delay, proxy):
                if s is not None:
                    s.stop()

    def _replica_scenario(self, sc: Scenario, repo: BenchRepo) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        replica = ReplicaServer(
            repo.folder,
            repo.repo_id,
            self.work / f"replica-{sc.name}.log",
            rate_per_conn=sc.rate_per_conn,
            rtt=sc.rtt,
        )
        try:
            self._repetitions(sc, repo, replica.hub_url, replica)
        finally:
            replica.stop()

    def _one(
        self, sc: Scenario, repo: BenchRepo, peer: str, rep: int, order: int, endpoint: str, origin: Origin
    ) -> RunRecord:
        work = self.work / sc.name / f"{peer}-{rep}"
        shutil.rmtree(work, ignore_errors=True)
        dest = work / "dest"
        dest.mkdir(parents=True)
        inv = PEERS[peer].build(endpoint, repo, dest)
        env = {**child_env(work, endpoint), **inv.env}
        rec = RunRecord(sc.name, peer, rep, order, repo.total_bytes, len(repo.files), False, 0, 0, 0, 0, 0)
        replica = origin if isinstance(origin, ReplicaServer) else None
        if replica is not None:
            replica.reset()  # a fresh client: counters and rate-limit windows start again
        rec.loadavg = os.getloadavg()[0]
        try:
            if sc.resume:
                half = repo.total_bytes // 2
                started = time.monotonic()
                first = run_measured(
                    inv.cmd,
                    env,
                    REPO_ROOT,
                    work / "logs-killed",
                    origin.bytes_sent,
                    kill_when=lambda b: b >= half,
                )
                rec.killed_at_bytes = first.bytes_fetched
                rec.killed_after = time.monotonic() - started
                if not first.killed:
                    rec.error = "finished before it could be killed at 50%"
            m = run_measured(inv.cmd, env, REPO_ROOT, work / "logs", origin.bytes_sent)
            rec.loadavg_end = os.getloadavg()[0]
            if replica is not None:
                rec.hub = replica.counters()
            self._fill(rec, m)
            if m.returncode == 0:
                verdict = verify_tree(inv.files_root(m.stdout, dest), repo)
                rec.verified = verdict.ok
                rec.disk_bytes = disk_usage(dest)
                rec.problems = verdict.problems[:5]
                rec.ok = verdict.all_ok and not rec.error
            else:
                rec.error = rec.error or (m.stderr.strip().splitlines() or ["(no stderr)"])[-1][:300]
        except Exception as exc:  # a broken peer is a result to report, not a reason to stop the bench
            rec.error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            shutil.rmtree(work, ignore_errors=True)  # the aria2 input file lives in there too
        self.log(_line(rec))
        return rec

    @staticmethod
    def _fill(rec: RunRecord, m: Measured) -> None:
        rec.returncode = m.returncode
        rec.wall = m.wall
        rec.cpu = m.cpu
        rec.peak_rss = m.peak_rss
        rec.bytes_fetched = m.bytes_fetched


def disk_usage(folder: Path) -> int:
    """Allocated bytes under ``folder``, each inode once (like ``du``)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _line(r: RunRecord) -> str:
    mbps = r.total_bytes / r.wall / 1e6 if r.wall else 0
    status = "ok" if r.ok else f"FAIL {r.error or '; '.join(r.problems)}"
    extra = f" killed@{r.killed_at_bytes / 1e6:.0f}MB" if r.killed_at_bytes else ""
    if r.hub:
        h = r.hub
        extra += (
            f" resolves {sum(h['resolves'].values())} 429s {sum(h['too_many'].values())}"
            f" bridge conns {h['connections']['bridge']} (peak {h['max_connections']['bridge']})"
        )
    return (
        f"  {r.scenario:12} {r.peer:20} rep{r.rep} {r.wall:7.2f}s {mbps:8.1f} MB/s cpu {r.cpu:6.2f}s "
        f"rss {r.peak_rss / 1e6:6.1f}MB fetched {r.bytes_fetched / 1e6:8.1f}MB{extra} "
        f"load {r.loadavg:.1f}-{r.loadavg_end:.1f} {status}"
    )


def save_records(path: Path, records: list[RunRecord], meta: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in records]}, indent=1))
    os.replace(tmp, path)


def load_records(path: Path) -> tuple[dict[str, object], list[RunRecord]]:
    data = json.loads(path.read_text())
    return data["meta"], [RunRecord(**r) for r in data["runs"]]
