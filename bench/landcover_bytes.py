"""Bytes crossing between processes per land-cover training step: measured over the analytic minimum.

Runs the real job (jobs/landcover.py, tiny preset, the chosen plans at the main batch size; no
batch-size sweep, single machine or data-parallel arm) on its embedded mini-cluster. Every role
samples the TCP sockets of its own process tree (distributed.metrics.Sampler, `ss -tin` counters) and the job cuts
the series per cell (metrics.json). Measured bytes per step = the sum over roles of bytes *out* in
the cell / the cell's steps: on loopback every byte one of our processes sends is received by
another, so summing the senders counts each crossing once (and every RPC request, header and
framing byte is counted too: that is the overhead the ratio prices).

Analytic minimum per step, from models.landcover for the plan at the cell's batch size:
  activations      each activation that crosses a role boundary in the forward pass
  act. gradients   its gradient, the same size, crossing back in the backward pass
  feed             the chief sends the RGB and HSI patches to the roles of the first units and the
                   labels to the role of the loss (with the softmax); the loss and the count of
                   correct predictions come back (int32 / float32 scalars)
  variable reads   every unit's variables (BN moving statistics included) read from the ps by the
                   worker that runs the unit
  variable updates the gradients of the trainable ones and the new BN moving statistics sent back
                   (the optimizer and its slots live on the ps: no further traffic)

Warm-up: a cell starts by building its variables on the ps, tracing the step and registering the
partitioned graphs on every process (graph protos, far more bytes than a step), so the steady figure
leaves out the first --skip epochs: it takes, per role, the bytes of the last sum(epoch_time_s[skip:])
seconds of the cell (cumulative counters interpolated between samples) over the steps of those
epochs. The whole-cell figure (setup included) is printed beside it; it runs a few percent low, as
a role's series ends at its last sample before the cell's end (up to one --interval of steps unseen).
Both windows have edges that fall between samples, so a single role's figure is good to a few percent;
longer cells (--epochs) tighten it. Goal: steady ratio <= 1.3. The overall figure on the last line is
the mean of the plans' steady ratios.

    PYTHONPATH=. .venv/bin/python bench/landcover_bytes.py [--quick] [--epochs 4] [--skip 1]
                                                           [--plans default,scheme4] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import job_run  # noqa: E402
GOAL = 1.3
DTYPE_BYTES = {"float32": 4, "int32": 4}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per plan cell (default 4)")
    parser.add_argument("--skip", type=int, default=1, help="warm-up epochs left out of the steady figure")
    parser.add_argument("--plans", default="default,scheme4", help="plans of conf/landcover_plans.yaml")
    parser.add_argument("--interval", type=float, default=0.25, help="sampling interval, s (default 0.25)")
    parser.add_argument("--preset", default="tiny", help="preset of conf/landcover.yaml (default tiny)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra job override")
    parser.add_argument("--keep", metavar="DIR", help="write the job's outputs here and keep them")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds the job may take (default 1800)")
    parser.add_argument("--quick", action="store_true", help="3 epochs (about 2 minutes, most of it start-up)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 3)
    if args.skip < 0 or args.epochs <= args.skip:
        parser.error("need --epochs > --skip >= 0")
    args.overrides = [f"experiments.plans=[{args.plans}]", "experiments.batch_sizes=[]",
                      "experiments.single_machine=false", "experiments.data_parallel=false",
                      f"train.epochs={args.epochs}", f"experiments.sample_interval_s={args.interval}"] + args.set
    return args


# ------------------------------------------------------------------------------ analytic (pure)
def tensor_bytes(shape, dtype: str) -> int:
    return math.prod(shape) * DTYPE_BYTES[dtype]


def minimum_terms(plan: dict, batch_size: int, model_cfg: dict) -> dict[str, dict]:
    """term -> {'bytes': per step, 'by_role': {sending role: bytes}, 'what': [names]}."""
    from models import landcover as lc
    assignment = lc.resolve_plan(plan)
    ps = plan.get("variables", "ps:0")
    terms = {name: {"bytes": 0, "by_role": {}, "what": []} for name in
             ("activations", "act. gradients", "feed", "variable reads", "variable updates")}

    def add(term: str, role: str, nbytes: int, what: str) -> None:
        terms[term]["bytes"] += nbytes
        terms[term]["by_role"][role] = terms[term]["by_role"].get(role, 0) + nbytes
        terms[term]["what"].append(what)

    for src, dst, unit, shape, dtype in lc.boundary_tensors(assignment, batch_size, model_cfg):
        add("activations", src, tensor_bytes(shape, dtype), f"{unit} {src}->{dst}")
        add("act. gradients", dst, tensor_bytes(shape, dtype), f"d{unit} {dst}->{src}")
    feeds = lc.feed_tensors(assignment, batch_size, model_cfg)
    head = assignment["softmax"]
    feeds.append((head, "chief:0", "hits", (), "int32"))  # the step also returns the correct count
    for src, dst, name, shape, dtype in feeds:
        if src != dst:
            add("feed", src, tensor_bytes(shape, dtype), f"{name} {src}->{dst}")
    for unit, nbytes in lc.variable_bytes(model_cfg).items():
        role = assignment[unit]
        if nbytes and role != ps:
            add("variable reads", ps, nbytes, unit)
            add("variable updates", role, nbytes, unit)
    return terms


# ------------------------------------------------------------------------------ measured (pure)
def cumulative_at(t_s: list[float], values: list[float], t: float) -> float:
    """A cumulative counter at time t, linear between samples; the series' origin is (0, 0)."""
    times, vals = [0.0] + list(t_s), [0.0] + list(values)
    if t <= 0:
        return 0.0
    for (t0, v0), (t1, v1) in zip(zip(times, vals), zip(times[1:], vals[1:])):
        if t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1
    return vals[-1]


def tail_bytes(series: dict[str, list], seconds: float) -> float:
    """Bytes out of one role in the last `seconds` of its (rebased) series."""
    if not series["t_s"]:
        return 0.0
    end = series["t_s"][-1]
    return series["bytes_out"][-1] - cumulative_at(series["t_s"], series["bytes_out"], end - seconds)


def measured_per_step(cell: dict, roles: dict[str, dict], skip: int) -> dict[str, dict]:
    """{'steady'|'whole': {role: bytes out per step}} for one cell of summary.json + metrics.json."""
    epochs, steps = len(cell["epoch_time_s"]), cell["steps"]
    whole = {r: (s["bytes_out"][-1] if s["bytes_out"] else 0) / steps for r, s in roles.items()}
    kept = steps * (epochs - skip) / epochs
    seconds = sum(cell["epoch_time_s"][skip:])
    steady = {r: tail_bytes(s, seconds) / kept for r, s in roles.items()}
    return {"steady": steady, "whole": whole}


# ------------------------------------------------------------------------------ run and report
def run_job(args, out: Path) -> dict:
    summary = job_run.run_job("landcover", args.preset, args.overrides, out, args.timeout)
    if any("steps" not in c for c in summary["cells"].values()):
        raise SystemExit(f"{out / 'summary.json'}: cells carry no 'steps' (jobs/landcover.py run() must write them)")
    return summary


def report_cell(cell_id: str, cell: dict, roles: dict, plans: dict, model_cfg: dict, skip: int) -> dict:
    terms = minimum_terms(plans[cell["plan"]], cell["batch_size"], model_cfg)
    minimum = sum(t["bytes"] for t in terms.values())
    per_step = measured_per_step(cell, roles, skip)
    epochs = len(cell["epoch_time_s"])
    print(f"\nplan {cell['plan']} (cell {cell_id}): batch {cell['batch_size']}, {cell['steps']} steps in "
          f"{epochs} epochs, epoch times {cell['epoch_time_s']} s")
    print("  analytic minimum per step:")
    for name, t in terms.items():
        shown = ", ".join(t["what"][:6]) + (f", ... ({len(t['what'])})" if len(t["what"]) > 6 else "")
        print(f"    {name:<17}{t['bytes']:>12,d} B   {shown}")
    print(f"    {'total':<17}{minimum:>12,d} B")
    print(f"  bytes out per step by role: measured steady (epochs {skip + 1}..{epochs}) | whole cell | minimum")
    for role in sorted(roles):
        low = sum(t["by_role"].get(role, 0) for t in terms.values())
        print(f"    {role:<9}{per_step['steady'][role]:>14,.0f} {per_step['whole'][role]:>14,.0f} {low:>12,d}")
    steady, whole = sum(per_step["steady"].values()), sum(per_step["whole"].values())
    print(f"    {'all':<9}{steady:>14,.0f} {whole:>14,.0f} {minimum:>12,d}")
    ratio = steady / minimum
    print(f"  ratio measured/minimum: steady {ratio:.3f} (goal <= {GOAL}: {'met' if ratio <= GOAL else 'not met'})"
          f", whole cell incl. setup {whole / minimum:.3f} (its window ends at the last sample: runs low)")
    return {"plan": cell["plan"], "steady": ratio, "whole": whole / minimum, "measured": steady}


def main(argv=None) -> int:
    args = parse_args(argv)
    from conf import CONF_DIR, load
    from jobs.landcover import LandcoverConfig, model_args
    from models.landcover import load_plans
    cfg = load(LandcoverConfig, CONF_DIR / "landcover.yaml", args.preset, args.overrides)
    plans, model_cfg = load_plans(CONF_DIR / cfg.experiments.plans_file), model_args(cfg)
    with tempfile.TemporaryDirectory(prefix="landcover-bytes-") as tmp:
        out = Path(args.keep).resolve() if args.keep else Path(tmp) / "out"
        out.parent.mkdir(parents=True, exist_ok=True)
        summary = run_job(args, out)
        metrics = json.loads((out / "metrics.json").read_text())
    print(f"preset {args.preset}, plans {args.plans}, {args.epochs} epochs per cell, sampled every "
          f"{args.interval} s; measured = sum over roles of TCP bytes out, minimum = models.landcover terms")
    results = [report_cell(cid, cell, metrics[cid], plans, model_cfg, args.skip)
               for cid, cell in summary["cells"].items() if cid in metrics and cell["plan"] in plans]
    if not results:
        raise SystemExit("no plan cell has per-role metrics in metrics.json")
    mean = sum(r["steady"] for r in results) / len(results)
    print("\nsteady ratio per plan: " + ", ".join(f"{r['plan']} {r['steady']:.3f}" for r in results))
    for other in results[1:]:  # beside the analytic one, a ratio measured on both sides in this run
        print(f"measured both sides: {other['plan']} / {results[0]['plan']} bytes out per step = "
              f"{other['measured'] / results[0]['measured']:.3f}")
    print(f"overall = mean of the plans' steady ratios = {mean:.3f}; goal <= {GOAL}: "
          f"{'met' if mean <= GOAL else 'not met'}")
    print(f"RATIO landcover_measured_over_analytic_min_bytes_per_step = {mean:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
