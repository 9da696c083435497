"""Run a case-study job the way a user does (its own embedded mini-cluster, or a running cluster's
master), for benchmarks that measure a real run; returns its summary.json or stops with the job's error
and the tail of its log."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_job(case: str, preset: str, overrides: list[str], out: Path, timeout: float,
            master: str | None = None) -> dict:
    cmd = [sys.executable, str(REPO / "jobs" / f"{case}.py"), "--preset", preset, "--output", str(out)]
    if master:
        cmd += ["--master", master]
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    log = out.parent / "job.log"
    started = time.monotonic()
    with open(log, "wb") as fh:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
    print(f"job: {time.monotonic() - started:.0f} s end to end (exit {proc.returncode}), log {log}")
    path = out / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    if proc.returncode != 0 or summary.get("status") != "ok":
        raise SystemExit(f"{path}: the job failed ({summary.get('error', 'no summary')}); last lines of "
                         f"{log}:\n{log.read_text(errors='replace')[-3000:]}")
    return summary


def add_job_options(parser, case: str, preset: str = "tiny") -> None:
    """--preset, --set, --keep and --timeout of a bench that runs one job."""
    parser.add_argument("--preset", default=preset, help=f"config preset of conf/{case}.yaml (default {preset})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    parser.add_argument("--keep", metavar="DIR", help="keep the job's outputs here (default: a temporary folder)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds the job may take (default 1800)")
