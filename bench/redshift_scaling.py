"""Data-parallel efficiency of the redshift job: M workers through Spark + TFoS + the parameter server vs
M Keras processes training alone at the same time, for M = 1, 2, 3, the same work per worker.

Distributed side: the real job (jobs/redshift.py, tiny preset, data mode 'same': every worker trains on
the same share, so a worker's work does not change with M) runs one grid cell per M in one job on its
embedded mini-cluster. Each worker records the seconds since it started training at the end of every
epoch (summary.json's epoch_time_s); its rate is its samples over its epochs after the first --skip, and
the cell's aggregate is the sum over its workers.
Alone side: for each M, M processes each run jobs.redshift_roles.fit_sequential on that share (same model
config, seed, batch size and TensorFlow threads, bench/redshift_throughput.timed_fit), all starting their
timed epochs together after their warm-up; the aggregate is the sum of their rates.
Efficiency(M) = distributed aggregate / alone aggregate. Goal: >= 0.85 at 3 workers; the one-worker
efficiency is redshift_throughput.py's ratio, measured here beside the others (keep >= 0.9).

    PYTHONPATH=. .venv/bin/python bench/redshift_scaling.py [--quick] [--workers 1,2,3] [--epochs 6]
                                                            [--skip 1] [--set key=value ...] [--keep DIR]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
from pathlib import Path

from bench import job_run
from bench.redshift_throughput import steady_rate, timed_fit

GOAL, ONE_WORKER_GOAL = 0.85, 0.9
CTX = mp.get_context("spawn")  # fresh interpreters: one TensorFlow each, as the job's workers have


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2,3", help="comma-separated worker counts (default 1,2,3)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per worker (default 6)")
    parser.add_argument("--skip", type=int, default=1, help="warm-up epochs left out on each side (default 1)")
    job_run.add_job_options(parser, "redshift")
    parser.add_argument("--master", help="a running cluster's master URL (default: the job's embedded one)")
    parser.add_argument("--quick", action="store_true", help="1 and 2 workers, 4 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.epochs = "1,2", min(args.epochs, 4)
    try:
        args.counts = sorted({int(c) for c in args.workers.split(",")})
    except ValueError:
        parser.error(f"--workers must be comma-separated integers, got {args.workers!r}")
    if min(args.counts) < 1 or args.skip < 0 or args.epochs <= args.skip:
        parser.error("need worker counts >= 1 and --epochs > --skip >= 0")
    args.overrides = [f"experiments.workers={args.counts}".replace(" ", ""), "experiments.data_modes=[same]",
                      "experiments.ablation=false", "experiments.baseline=false", "train.stop_on=[]",
                      f"train.max_epochs={args.epochs}"] + args.set
    return args


def aggregate_rate(samples: list[int], times: list[list[float]], skip: int) -> float:
    """Sum over workers of each one's samples/s after its warm-up epochs."""
    return sum(steady_rate(n, t, skip)[0] for n, t in zip(samples, times))


def distributed_cells(summary: dict, out: Path, skip: int) -> dict[int, dict]:
    """Per worker count: the run id, its share's URI, samples per worker and aggregate samples/s."""
    import h5py
    cells = {}
    with h5py.File(out / "redshift.h5", "r") as h5:
        for run_id, per_worker in summary.get("epoch_time_s", {}).items():
            workers = sorted(per_worker)
            samples = [int(h5[run_id][f"workers/{w.replace(':', '_')}"].attrs["samples"]) for w in workers]
            share = out / "bundles" / f"{h5[run_id].attrs['dataset']}-all"
            cells[len(workers)] = {"run": run_id, "share": share.as_uri(), "samples": samples,
                                   "rate": aggregate_rate(samples, [per_worker[w] for w in workers], skip)}
    return cells


def _alone(preset, overrides, share_uri, epochs, skip, barrier, results) -> None:
    results.put(timed_fit(preset, overrides, share_uri, epochs, skip, warmed_up=lambda: barrier.wait(600)))


def alone_rate(args, share_uri: str, m: int) -> tuple[float, list[float]]:
    """M Keras processes on the share at once: (aggregate samples/s, each one's)."""
    barrier, results = CTX.Barrier(m), CTX.Queue()
    procs = [CTX.Process(target=_alone, args=(args.preset, args.overrides, share_uri, args.epochs, args.skip,
                                              barrier, results), daemon=True) for _ in range(m)]
    for p in procs:
        p.start()
    try:
        rates = [results.get(timeout=args.timeout)[0] for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.terminate()
    if any(p.exitcode != 0 for p in procs):
        raise SystemExit(f"an in-process training failed (exit codes {[p.exitcode for p in procs]})")
    return sum(rates), rates


def main(argv=None) -> float:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-redshift-scaling-") as tmp:
        out = Path(args.keep).resolve() / "out" if args.keep else Path(tmp) / "out"
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"redshift scaling: preset {args.preset}, workers {args.counts}, {args.epochs} epochs, skipping "
              f"{args.skip}; overrides {args.overrides}; {os.cpu_count()} CPUs")
        summary = job_run.run_job("redshift", args.preset, args.overrides, out, args.timeout, args.master)
        cells = distributed_cells(summary, out, args.skip)
        if sorted(cells) != args.counts:
            raise SystemExit(f"{out / 'summary.json'}: runs for {sorted(cells)} workers, expected {args.counts}")
        efficiency = {}
        for m in args.counts:
            cell = cells[m]
            alone, each = alone_rate(args, cell["share"], m)
            efficiency[m] = cell["rate"] / alone
            print(f"{m} worker(s) ({cell['run']}, {cell['samples'][0]} samples each): distributed "
                  f"{cell['rate']:8.1f} samples/s, {m} alone at once {alone:8.1f} samples/s "
                  f"({', '.join(f'{r:.1f}' for r in each)}); efficiency {efficiency[m]:.3f}")
    if 1 in efficiency:
        print(f"one worker vs one process alone: {efficiency[1]:.3f} (goal >= {ONE_WORKER_GOAL}: "
              f"{'met' if efficiency[1] >= ONE_WORKER_GOAL else 'not met'})")
    top = args.counts[-1]
    print(f"goal: efficiency >= {GOAL} at 3 workers" + (f": {'met' if efficiency[3] >= GOAL else 'not met'}"
                                                        if 3 in efficiency else " (not measured)"))
    print(f"RATIO redshift_data_parallel_efficiency_{top}_workers = {efficiency[top]:.4f}")
    return efficiency[top]


if __name__ == "__main__":
    main()
