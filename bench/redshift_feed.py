"""Spark feeding rate vs the model's consumption rate (headroom) in data.feed=spark, one real run.

The real job (jobs/redshift.py, tiny preset unless --preset, data.feed=spark, same data, workers train
max_epochs) on its embedded mini-cluster. Per epoch and worker:
- feeding rate: samples TFoS put into the worker's queue / the seconds the Spark task took to put them
  (reading the cached bundle partition, pickling the blocks into the worker's TFoS manager); the driver
  records it in summary.json's `feeding`;
- consumption rate: samples of the worker's share / the seconds its epoch took (pull, training, push),
  from the worker's end-of-epoch times (summary.json's `epoch_time_s`).
Both sides leave out their first `--skip` epochs (warm-up). Headroom = median feeding rate / median
consumption rate over the worker-epochs; goal >= 5 (the feed keeps up with the model with room to spare).
Both sides run at the same time on the same machine, so they compete for its cores.

    PYTHONPATH=. .venv/bin/python bench/redshift_feed.py [--quick] [--epochs 6] [--workers 2]
                                                         [--set data.bands=1800 ...] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from bench import job_run

GOAL = 5.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6, help="epochs (default 6)")
    parser.add_argument("--workers", type=int, default=2, help="workers (default 2)")
    parser.add_argument("--skip", type=int, default=1, help="warm-up epochs left out (default 1)")
    job_run.add_job_options(parser, "redshift")
    parser.add_argument("--quick", action="store_true", help="3 epochs, 1 worker: mostly start-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.workers = min(args.epochs, 3), 1
    if args.skip < 0 or args.epochs <= args.skip:
        parser.error("need --epochs > --skip >= 0")
    args.overrides = ["data.feed=spark", "train.stop_on=[]", f"train.max_epochs={args.epochs}",
                      f"experiments.workers=[{args.workers}]", "experiments.data_modes=[same]",
                      "experiments.ablation=false", "experiments.baseline=false"] + args.set
    return args


def headroom(summary: dict, skip: int) -> dict:
    """Rates per worker-epoch after the warm-up: {run, feed, consume (samples/s lists), ratio}."""
    (run_id, feeding), = summary["feeding"].items()
    times = summary["epoch_time_s"][run_id]
    seen = summary["seen"][run_id]
    feed, consume = [], []
    for epoch in feeding:
        if epoch["epoch"] <= skip:
            continue
        for w in epoch["workers"]:
            key = f"worker:{w['worker']}"
            samples = seen[key][epoch["epoch"] - 1]["samples"]
            ends = times[key]
            took = ends[epoch["epoch"] - 1] - (ends[epoch["epoch"] - 2] if epoch["epoch"] > 1 else 0.0)
            feed.append(samples / max(w["put_s"], 1e-9))
            consume.append(samples / max(took, 1e-9))
    if not feed:
        raise ValueError(f"{run_id}: no epoch after the first {skip} was fed")
    return {"run": run_id, "feed": feed, "consume": consume,
            "ratio": statistics.median(feed) / statistics.median(consume)}


def main(argv=None) -> float:
    args = parse_args(argv)
    print(f"redshift feed: preset {args.preset}, {args.workers} worker(s), {args.epochs} epochs, skipping "
          f"{args.skip}; overrides {args.overrides}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench-redshift-feed-") as tmp:
        out = Path(args.keep).resolve() / "out" if args.keep else Path(tmp) / "out"
        out.parent.mkdir(parents=True, exist_ok=True)
        summary = job_run.run_job("redshift", args.preset, args.overrides, out, args.timeout)
    h = headroom(summary, args.skip)
    print(f"{h['run']}: {len(h['feed'])} worker-epochs after the warm-up")
    print(f"feeding:     median {statistics.median(h['feed']):10.1f} samples/s (min {min(h['feed']):.1f})")
    print(f"consumption: median {statistics.median(h['consume']):10.1f} samples/s (max {max(h['consume']):.1f})")
    print(f"goal: headroom >= {GOAL}: {'met' if h['ratio'] >= GOAL else 'not met'}")
    print(f"RATIO redshift_spark_feed_over_consumption_samples_per_s = {h['ratio']:.4f}")
    return h["ratio"]


if __name__ == "__main__":
    main()
