"""IP-D parallel efficiency of the Dom-ST job: T_S / (T_IPD x nodes used), both measured in one run.

Runs the real job (jobs/domst.py, tiny preset, modes ipd and s) on its embedded mini-cluster. Both times
are the job's role-measured training phases, summed over the approaches' own runs (summary.json's
times_s.<mode>.<approach>.phase_s: first node's start to last node's end, after TensorFlow start-up,
including reading the bundles, building, fitting and scoring the approach on every watershed).
S trains every watershed on one node; IP-D spreads them over
`--nodes` nodes (balanced by estimated cost). Goal: efficiency >= 0.7.

On a 2-core machine the nodes share the two cores (plus Spark's JVMs), so with more than 2 nodes the goal
cannot be met there: the default is 2 nodes.

    PYTHONPATH=. .venv/bin/python bench/domst_efficiency.py [--quick] [--nodes 2] [--set key=value ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL = 0.7


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2, help="IP-D nodes (default 2: one per core here)")
    parser.add_argument("--preset", default="tiny", help="config preset of conf/domst.yaml (default tiny)")
    parser.add_argument("--quick", action="store_true", help="4 watersheds, 2 epochs: about 2-3 minutes")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for the job (repeatable)")
    parser.add_argument("--keep", metavar="DIR", help="keep the job's outputs under DIR")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds the job may take (default 1800)")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be >= 1")
    args.overrides = [f"experiments.nodes={args.nodes}", "experiments.modes=[ipd, s]", "experiments.ablation=[]"]
    if args.quick:
        args.overrides += ["data.watersheds=4", "train.epochs=2"]
    args.overrides += args.set
    return args


def efficiency(times: dict) -> tuple[float, float, float, int]:
    """(efficiency, T_S, T_IPD, nodes used) from summary.json's times_s, each approach's runs summed."""
    t_s = sum(t["phase_s"] for t in times["s"].values())
    t_ipd = sum(t["phase_s"] for t in times["ipd"].values())
    nodes = max(t["nodes_used"] for t in times["ipd"].values())
    return t_s / (t_ipd * nodes), t_s, t_ipd, nodes


def run_job(args, out: Path) -> dict:
    cmd = [sys.executable, str(REPO / "jobs" / "domst.py"), "--preset", args.preset, "--output", str(out)]
    for item in args.overrides:
        cmd += ["--set", item]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    log = out.parent / "job.log"
    started = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=args.timeout)
    print(f"job: {time.monotonic() - started:.0f} s end to end (exit {proc.returncode}), log {log}")
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if proc.returncode != 0 or summary.get("status") != "ok":
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{summary_path}: the job failed ({summary.get('error', 'no summary')}); "
                         f"last lines of {log}:\n{tail}")
    return summary


def main(argv=None) -> float:
    args = parse_args(argv)
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-domst-") as tmp:
        out = Path(args.keep).resolve() / "out" if args.keep else Path(tmp) / "out"
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"domst IP-D efficiency: preset {args.preset}, overrides {args.overrides}; {cpus} CPUs")
        summary = run_job(args, out)
    ratio, t_s, t_ipd, nodes = efficiency(summary["times_s"])
    for mode in ("s", "ipd"):
        runs = summary["times_s"][mode]
        print(f"{mode:>3}: each approach's own run: "
              + ", ".join(f"{a} {t['phase_s']:.1f} s on {t['nodes_used']} node(s)" for a, t in runs.items()))
    print(f"T_S {t_s:.1f} s, T_IPD {t_ipd:.1f} s, {nodes} nodes used; speedup {t_s / t_ipd:.2f}")
    if nodes > cpus:
        print(f"note: {nodes} nodes on {cpus} CPUs share cores; the goal cannot be met on this machine")
    print(f"goal: efficiency >= {GOAL}: {'met' if ratio >= GOAL else 'not met'}")
    print(f"RATIO domst_ipd_parallel_efficiency = {ratio:.4f}")
    return ratio


if __name__ == "__main__":
    main()
