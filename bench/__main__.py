"""``python -m bench``: run the scenarios, write ``benchmarks.md``, ``benchmarks.png`` and
``benchmarks.json`` into ``--out``."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from bench.data import SCALES
from bench.machine import describe
from bench.peers import PEERS
from bench.procs import compile_hubget
from bench.report import chart, markdown
from bench.runner import Bench, RunRecord, load_records, save_records
from bench.scenarios import SCENARIOS

SMOKE_PEERS = ["hubget", "huggingface_hub", "aria2c", "aria2c-hfd"]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="full",
        help="small (CI smoke, a few MB), medium, full (2 GB file, 4 GB repo)",
    )
    p.add_argument("--repeat", type=int, default=3, help="repetitions of every peer (default 3)")
    p.add_argument(
        "--scenarios", type=_csv, default=None, help=f"comma-separated, default all: {','.join(SCENARIOS)}"
    )
    p.add_argument(
        "--peers",
        type=_csv,
        default=None,
        help=f"comma-separated, of {','.join(PEERS)}; default all (small: {','.join(SMOKE_PEERS)})",
    )
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="where the report files go")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path("/tmp/hubget-bench"),
        help="generated repos (kept) and scratch downloads (removed after each run)",
    )
    p.add_argument("--note", default="", help="a sentence printed above the tables (conditions of the run)")
    p.add_argument(
        "--append",
        action="store_true",
        help="add to the runs already in --out/benchmarks.json (e.g. one scenario at a time)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=None,
        help="the raw results JSON (default: --out/benchmarks.json)",
    )
    p.add_argument(
        "--analysis",
        type=Path,
        default=None,
        help="a markdown file (findings, profiles) inserted into the report after the targets",
    )
    p.add_argument("--report-only", action="store_true", help="redraw the report from --out/benchmarks.json")
    args = p.parse_args(argv)
    for name in args.scenarios or []:
        if name not in SCENARIOS:
            p.error(f"unknown scenario {name!r}")
    for name in args.peers or []:
        if name not in PEERS:
            p.error(f"unknown peer {name!r}")
    return args


def write_report(out: Path, records: list[RunRecord], meta: dict[str, object]) -> None:
    png = out / "benchmarks.png"
    title = f"hubget and peers, same local server ({meta.get('scale')} scale, {meta.get('repeat')} rep.)"
    chart(records, png, title)
    (out / "benchmarks.md").write_text(markdown(records, meta, png.name))


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    args = parse(argv)
    compile_hubget()
    json_path = args.results or args.out / "benchmarks.json"
    if args.report_only:
        meta, records = load_records(json_path)
        if args.analysis is not None:
            meta["analysis"] = args.analysis.read_text()
        if args.note:
            meta["note"] = args.note
        meta["results_file"] = str(json_path)
        write_report(args.out, records, meta)
        print(args.out / "benchmarks.md")
        return 0
    scenarios = args.scenarios or list(SCENARIOS)
    peers = args.peers or (SMOKE_PEERS if args.scale == "small" else None)
    if args.scale == "small" and args.scenarios is None:
        scenarios = [s for s in scenarios if s != "resume"]  # too small to stop at half
    meta: dict[str, object] = {
        "scale": args.scale,
        "repeat": args.repeat,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": describe(),
        "note": args.note,
        "analysis": args.analysis.read_text() if args.analysis else "",
    }
    records: list[RunRecord] = []
    if args.append and json_path.is_file():
        old_meta, records = load_records(json_path)
        if old_meta.get("scale") != args.scale:
            raise SystemExit(f"--append: {json_path} holds a {old_meta.get('scale')} run, not {args.scale}")
        reps = {int(r) for r in str(old_meta.get("repeat")).split("/")}
        meta["repeat"] = "/".join(str(r) for r in sorted(reps | {args.repeat}))
        meta["note"] = " ".join(str(n) for n in (old_meta.get("note"), args.note) if n)
        meta["date"] = str(old_meta.get("date", "")).split(" to ")[0] + " to " + str(meta["date"])

    def keep(rec: RunRecord) -> None:
        records.append(rec)
        save_records(json_path, records, meta)  # partial results survive an interrupted run

    bench = Bench(
        scale=args.scale,
        data_dir=args.data_dir,
        repeat=args.repeat,
        peers=peers,
        on_record=keep,
        previous=list(records),
        log=lambda m: print(m, flush=True),
    )
    print(
        f"bench: scale {args.scale}, scenarios {','.join(scenarios)}, {args.repeat} repetition(s)", flush=True
    )
    bench.run(scenarios)
    write_report(args.out, records, meta)
    print(args.out / "benchmarks.md")
    # A peer's failure is a result; hubget's is a bug.
    return 1 if any(not r.ok and r.peer.startswith("hubget") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
