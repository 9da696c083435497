"""Bytes crossing between processes per land-cover training step: measured beside the analytic count.

Runs the real job (jobs/landcover.py, tiny preset: the chosen plans at the main batch size and the
default plan at each --batch-sizes, no single machine or data-parallel arm) on its embedded
mini-cluster. Every role samples the TCP sockets of its own process tree (distributed.metrics.Sampler,
`ss -tin` counters). The chief pauses after each cell's first warm-up steps and after its last step
(jobs.landcover_roles.train_cell); measured bytes per step = the sum over roles of the bytes sent
between the two pauses (read from a sample inside each pause, where every counter is flat) over the
steps between. On loopback every byte one role sends another receives, so the senders' sum counts
each crossing once, RPC headers and framing included.

Analytic count per step (models.landcover.step_bytes, from the model and the plan, data local to the
workers): every variable read from the ps by the worker running its unit, the trainable ones'
gradients and the BN statistics written back, each activation crossing a cut forward and its gradient
backward, the batch indices to the roles that read a modality and the loss back. Goal: every cell
within 10%, and bytes per step increasing with the batch size. The last line is the largest
|measured/analytic - 1| over the cells (its denominator is analytic, as its name says); the line
above it is measured on both sides: the default plan's bytes per step at the largest batch over the smallest.

    PYTHONPATH=. .venv/bin/python bench/landcover_bytes.py [--plans default,scheme4] [--batch-sizes 10,40]
                                                           [--window 20] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import job_run  # noqa: E402
TOLERANCE = 0.10


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", default="default,scheme4", help="plans of conf/landcover_plans.yaml")
    parser.add_argument("--batch-sizes", default="10,40", help="batch sizes of the default plan (besides the main one)")
    parser.add_argument("--window", type=float, default=20, help="seconds each cell trains (whole epochs)")
    parser.add_argument("--interval", type=float, default=0.25, help="sampling interval, s (default 0.25)")
    parser.add_argument("--preset", default="tiny", help="preset of conf/landcover.yaml (default tiny)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra job override")
    parser.add_argument("--keep", metavar="DIR", help="write the job's outputs here and keep them")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds the job may take (default 1800)")
    args = parser.parse_args(argv)
    args.overrides = [f"experiments.plans=[{args.plans}]", f"experiments.batch_sizes=[{args.batch_sizes}]",
                      f"experiments.plan_window_s={args.window}", f"experiments.batch_window_s={args.window}",
                      "experiments.single_machine=false", "experiments.data_parallel=false",
                      f"experiments.sample_interval_s={args.interval}"] + args.set
    return args


def report_cell(cell_id: str, cell: dict) -> float | None:
    """Print one cell's measured and analytic bytes per step; returns measured / analytic."""
    b = cell.get("bytes_per_step") or {}
    measured, analytic = b.get("measured"), b["analytic"]
    print(f"\n{cell_id}: plan {cell['plan']}, batch {cell['batch_size']}, {cell['steps']} steps")
    for term, nbytes in analytic["terms"].items():
        print(f"    analytic {term:<16}{nbytes:>12,d} B")
    if not measured:
        print("    no steady window measured")
        return None
    print(f"  per role, bytes per step over {measured['steps']} steady steps: out measured (analytic) | "
          f"in measured (analytic)")
    for role, got in sorted(measured["per_role"].items()):
        print(f"    {role:<9}{got['bytes_out']:>12,.0f} ({analytic['out'].get(role, 0):>10,d}) | "
              f"{got['bytes_in']:>12,.0f} ({analytic['in'].get(role, 0):>10,d})")
    ratio = measured["total"] / analytic["total"]
    print(f"    {'all':<9}{measured['total']:>12,.0f} ({analytic['total']:>10,d})   measured/analytic {ratio:.3f} "
          f"({'within' if abs(ratio - 1) <= TOLERANCE else 'outside'} {TOLERANCE:.0%})"
          f"{'' if measured['exact'] else '; a counter was interpolated (no sample inside a pause)'}")
    return ratio


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="landcover-bytes-") as tmp:
        out = Path(args.keep).resolve() if args.keep else Path(tmp) / "out"
        out.parent.mkdir(parents=True, exist_ok=True)
        job_run.run_job("landcover", args.preset, args.overrides, out, args.timeout)
        summary = json.loads((out / "summary.json").read_text())
    cells = summary["cells"]
    print(f"preset {args.preset}, plans {args.plans}, batch sizes {args.batch_sizes}, {args.window:g} s per cell, "
          f"sampled every {args.interval} s")
    ratios = {cid: report_cell(cid, cell) for cid, cell in cells.items() if "bytes_per_step" in cell}
    default = sorted((c["batch_size"], c["bytes_per_step"]["measured"]["total"]) for c in cells.values()
                     if c["plan"] == "default" and (c.get("bytes_per_step") or {}).get("measured"))
    increasing = all(a[1] < b[1] for a, b in zip(default, default[1:]))
    print("\ndefault plan, measured bytes per step by batch size: "
          + ", ".join(f"{b}: {v:,.0f}" for b, v in default) + f" ({'increasing' if increasing else 'NOT increasing'})")
    if len(default) > 1:  # beside the analytic figure, one measured on both sides in this run
        print(f"measured both sides: default plan bytes per step, batch {default[-1][0]} / batch {default[0][0]} = "
              f"{default[-1][1] / default[0][1]:.3f}")
    worst = max(abs(r - 1) for r in ratios.values() if r is not None)
    print(f"status {summary.get('status')}; largest |measured/analytic - 1| = {worst:.3f} "
          f"(goal <= {TOLERANCE}: {'met' if worst <= TOLERANCE else 'not met'})")
    print(f"RATIO landcover_bytes_worst_error_vs_analytic = {worst:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
