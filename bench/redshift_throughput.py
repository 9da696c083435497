"""Training samples per second: one redshift worker through Spark + TFoS + the parameter server vs Keras
in one process, same model, data and batch size.

Distributed side: the real job (jobs/redshift.py, tiny preset, one worker, same data, no ablation) on its
embedded mini-cluster. The worker records, after each epoch, the seconds since it started training
(summary.json's epoch_time_s), so start-up (Spark, TF import, reservation, the ps building its model) is
left out; its epochs include the pull, the push and the metrics report of epoch-mode updates.
In-process side: jobs.redshift_roles.fit_sequential on the share the worker read (the job's
bundles/<n>-all), the same model config, seed and TensorFlow thread count, run here after the job.
Both sides skip their first epoch(s) (graph tracing, allocator warm-up). Goal: ratio >= 0.8.

    PYTHONPATH=. .venv/bin/python bench/redshift_throughput.py [--quick] [--epochs 20] [--skip 1]
                                                               [--set data.sizes=[3000] ...] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from bench import job_run  # noqa: E402
GOAL = 0.8
JOB_SETTINGS = ["experiments.workers=[1]", "experiments.data_modes=[same]", "experiments.ablation=false",
                "experiments.baseline=true", "train.stop_on=[]"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=20, help="epochs on each side (default 20)")
    parser.add_argument("--skip", type=int, default=1, help="warm-up epochs left out on each side (default 1)")
    parser.add_argument("--preset", default="tiny", help="config preset of conf/redshift.yaml (default tiny)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for the job and the in-process side (repeatable)")
    parser.add_argument("--keep", metavar="DIR", help="write the job's outputs here and keep them "
                                                      "(default: a temporary folder, removed)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds the job may take (default 1800)")
    parser.add_argument("--master", help="a running cluster's master URL (default: the job's embedded one)")
    parser.add_argument("--quick", action="store_true", help="6 epochs: about 2 minutes, most of it start-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = min(args.epochs, 6)
    if args.skip < 0 or args.epochs <= args.skip:
        parser.error("need --epochs > --skip >= 0")
    args.overrides = JOB_SETTINGS + [f"train.max_epochs={args.epochs}"] + args.set
    return args


def steady_rate(samples: int, times: list[float], skip: int) -> tuple[float, float]:
    """(samples/s, seconds) over epochs skip+1..end, from cumulative end-of-epoch times."""
    start = times[skip - 1] if skip else 0.0
    seconds = times[-1] - start
    return samples * (len(times) - skip) / seconds, seconds


def run_job(args, out: Path) -> dict:
    summary = job_run.run_job("redshift", args.preset, args.overrides, out, args.timeout, args.master)
    return summary


def distributed_side(summary: dict, out: Path) -> tuple[str, list[float], dict]:
    """The one-worker run's id, its end-of-epoch times, and the HDF5 attributes of every run."""
    import h5py
    times = summary.get("epoch_time_s")
    if not times:
        raise SystemExit(f"{out / 'summary.json'}: no epoch_time_s; this job version does not record epoch times")
    if len(times) != 1:
        raise SystemExit(f"{out / 'summary.json'}: expected one distributed run, got {sorted(times)}")
    (run_id, workers), = times.items()
    with h5py.File(out / "redshift.h5", "r") as h5:
        attrs = {k: dict(h5[k].attrs) for k in h5}
        attrs[run_id]["samples"] = int(h5[run_id]["workers/worker_0"].attrs["samples"])
    return run_id, workers["worker:0"], attrs


def timed_fit(preset: str, overrides: list[str], share_uri: str, epochs: int, skip: int,
              warmed_up=lambda: None) -> tuple[float, float, int]:
    """fit_sequential on one share with the job's model config, seed and TensorFlow thread count:
    (samples/s after the `skip` warm-up epochs, seconds, samples). `warmed_up()` is called between
    the warm-up and the timed epochs (a barrier, when several of these run at once)."""
    from conf import load
    from jobs.redshift_config import RedshiftConfig, model_args
    from distributed.tf_process import quiet_tensorflow
    from distributed.async_training import fit_sequential
    from jobs.redshift_roles import new_model
    from rdd_io.redshift_bundle import load_share
    cfg = load(RedshiftConfig, REPO / "conf" / "redshift.yaml", preset, overrides)
    share = load_share(share_uri)
    x, y = share["spectra"], share["label"]
    quiet_tensorflow(cfg.train.tf_threads)  # the worker's thread count
    model = new_model(model_args(cfg), cfg.train.seed)
    bs, seed = cfg.train.batch_size, cfg.train.seed + 1
    if skip:
        fit_sequential(model, x, y, skip, bs, seed)
    warmed_up()
    started = time.monotonic()
    fit_sequential(model, x, y, epochs - skip, bs, seed + 1)
    seconds = time.monotonic() - started
    return len(x) * (epochs - skip) / seconds, seconds, len(x)


def in_process_side(args, share_uri: str, epochs: int) -> tuple[float, float, int]:
    """fit_sequential on the worker's share: (samples/s after the warm-up epochs, seconds, samples)."""
    return timed_fit(args.preset, args.overrides, share_uri, epochs, args.skip)


def main(argv=None) -> float:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-redshift-") as tmp:
        out = Path(args.keep).resolve() / "out" if args.keep else Path(tmp) / "out"
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"redshift throughput: preset {args.preset}, {args.epochs} epochs, skipping {args.skip}; "
              f"overrides {args.overrides}; {os.cpu_count()} CPUs")
        summary = run_job(args, out)
        run_id, times, attrs = distributed_side(summary, out)
        n = attrs[run_id]["samples"]
        dist_rate, dist_s = steady_rate(n, times, args.skip)
        print(f"distributed ({run_id}): {n} samples per epoch, end-of-epoch times {times} s")
        share = out / "bundles" / f"{attrs[run_id]['dataset']}-all"
        local_rate, local_s, local_n = in_process_side(args, share.as_uri(), len(times))
        if local_n != n:
            raise SystemExit(f"{share}: {local_n} samples, the worker read {n}")
    single = next((a for a in attrs.values() if a.get("mode") == "sequential"), None)
    print(f"distributed: {dist_rate:9.1f} samples/s ({len(times) - args.skip} epochs in {dist_s:.2f} s)")
    print(f"in-process:  {local_rate:9.1f} samples/s ({len(times) - args.skip} epochs in {local_s:.2f} s)")
    if single is not None:  # context only: these include model build and warm-up on both sides
        whole = len(times) * n
        print(f"context, all epochs incl. warm-up: worker {whole / times[-1]:.1f} samples/s, the job's own "
              f"baseline {whole / float(single['wall_time_s']):.1f} samples/s (incl. model build)")
    ratio = dist_rate / local_rate
    print(f"goal: ratio >= {GOAL}: {'met' if ratio >= GOAL else 'not met'}")
    print(f"RATIO redshift_worker_vs_in_process_samples_per_s = {ratio:.4f}")
    return ratio


if __name__ == "__main__":
    main()
