"""Redshift case study: galaxy spectra -> zipWithIndex RDD bundle -> 1 ps + M workers (TFoS), asynchronous
staleness-aware updates; same vs different data per worker, 1-3 workers, two early-stopping criteria.

    python jobs/redshift.py --preset tiny            # minutes, on an embedded mini-cluster
    python jobs/redshift.py --preset paper           # the thesis's grid: 5K and 15K, 1-3 workers
"""
from __future__ import annotations

import logging
import re
import time

from distributed.early_stopping import CRITERIA, stable_value
from distributed.async_run import AsyncRun
from jobs.redshift_config import RedshiftConfig, model_args
from jobs.runner import Job, run_job
from rdd_io import storage

log = logging.getLogger("jobs.redshift")


def experiment_grid(cfg: RedshiftConfig) -> list[dict]:
    """Every TFoS run: the thesis's grid (staleness-aware), then the ablation on the largest set.

    Workers that stop on a criterion change the others' asynchronous dynamics, so with train.stop_on
    each criterion is a cell of its own (id suffix -c<k>); ablation cells train max_epochs."""
    mode_name = {"inverse": "staleness-aware", "constant": "async", "exponential": "staleness-exp"}
    runs = [dict(dataset=n, data_mode=mode, workers=m, mode=mode_name[cfg.train.schedule], s=cfg.train.s,
                 schedule=cfg.train.schedule, stop_on=crit, grid=True, ablation=False)
            for n in cfg.data.sizes for m in cfg.experiments.workers for mode in cfg.experiments.data_modes
            for crit in cfg.train.stop_on or [None]]
    if cfg.experiments.ablation:
        n = max(cfg.data.sizes)
        for m in cfg.experiments.ablation_workers:
            variants = [("staleness-aware", 1, "inverse"), ("async", 1, "constant"), ("sync", m, "constant")]
            if m >= 3:
                variants.append(("staleness-aware", 2, "inverse"))
            for mode, s, schedule in variants:
                runs.append(dict(dataset=n, data_mode="different", workers=m, mode=mode, s=s, schedule=schedule,
                                 stop_on=None, grid=False, ablation=True))
    for run in runs:
        run["id"] = (f"{run['dataset']}-{run['data_mode']}-M{run['workers']}-{run['mode']}-s{run['s']}"
                     + (f"-c{run['stop_on']}" if run["stop_on"] else ""))
    unique: dict[str, dict] = {}
    for run in runs:  # an ablation cell that equals a grid cell is run once, and counts for both
        kept = unique.setdefault(run["id"], run)
        kept["grid"], kept["ablation"] = kept["grid"] or run["grid"], kept["ablation"] or run["ablation"]
    return list(unique.values())


def stable_epochs(history: list[float], rule: str, max_epochs: int, stop_on: int | None = None) -> dict:
    """{criterion: epochs to stable, or '>max_epochs'}: the criterion a run stopped on, or both after the fact."""
    return {str(c): stable_value(history, *CRITERIA[c], max_epochs, rule=rule)
            for c in ([stop_on] if stop_on else CRITERIA)}


def prepare_data(job: Job) -> tuple:
    """Input shards at a URI (simulated if asked) -> the bundle RDD, cut to the largest size."""
    from rdd_io import redshift_bundle as rb
    cfg = job.cfg.data
    source_uri = cfg.input or job.out("input")
    source = cfg.source
    if source == "simulate":
        started = time.monotonic()
        names = rb.simulate_shards(job.sc, source_uri, max(cfg.sizes), cfg.shard_size, cfg.seed, snr=cfg.snr,
                                   bands=cfg.bands, z_min=cfg.z_min, z_max=cfg.z_max, n_classes=cfg.n_classes)
        log.info("simulated %d spectra in %d shards under %s (%.0fs)", max(cfg.sizes), len(names), source_uri,
                 time.monotonic() - started)
        source = "hdf5"
    # Every file is checked as it is read (bands included); a bad one fails count() naming itself.
    bundle = rb.read_bundle(job.sc, storage.to_uri(source_uri), source, cfg.n_classes, cfg.npy_spectra,
                            cfg.npy_labels, bands=cfg.bands).cache()
    total = bundle.count()
    if total < max(cfg.sizes):
        raise ValueError(f"{source_uri}: {total} samples, fewer than data.sizes asks for ({max(cfg.sizes)})")
    return bundle, total


def materialise(job: Job, bundle, run: dict) -> tuple[list[str], list[dict]]:
    from rdd_io import redshift_bundle as rb
    n, m, mode = run["dataset"], run["workers"], run["data_mode"]
    subset = bundle.filter(lambda t, n=n: t[0] < n)
    if mode == "same":
        info = rb.write_share(subset, job.out("bundles", f"{n}-all"))
        return [info["uri"]] * m, [info] * m
    base = job.out("bundles", f"{n}-different-M{m}")
    infos = [rb.write_share(share, storage.join(base, f"worker-{w}")) for w, share in
             enumerate(rb.shares(subset, m, "different"))]
    return [i["uri"] for i in infos], infos


def feed_epochs(cluster, fed, cfg: RedshiftConfig) -> list[dict]:
    """data.feed spark: feed each worker its share, one epoch after the other, until max_epochs or until
    every worker has stopped; per epoch and worker, what was fed and how fast (bench/ reads these)."""
    fed_epochs = []
    for epoch in range(1, cfg.train.max_epochs + 1):
        stats = cluster.feed_workers(fed, feed_timeout_s=cfg.train.push_timeout_s + 60)
        if all(s["skipped"] for s in stats):
            break
        fed_epochs.append({"epoch": epoch, "workers": [{k: s[k] for k in ("worker", "items", "put_s", "consumed_s")}
                                                       for s in stats if not s["skipped"]]})
    return fed_epochs


def run_distributed(job: Job, bundle, run: dict) -> dict:
    from distributed import tfos
    from distributed.async_training import ps_credentials
    from jobs.redshift_roles import role
    from rdd_io import redshift_bundle as rb
    cfg = job.cfg
    n, m, mode = run["dataset"], run["workers"], run["data_mode"]
    sizes = [rb.expected_share(n, m, mode, w)["samples"] for w in range(m)]
    share_uris, fed = None, None
    if cfg.data.feed == "tensorflow":
        share_uris, _ = materialise(job, bundle, run)
    else:
        fed = rb.feed_partitions(bundle.filter(lambda t, n=n: t[0] < n), m, mode).cache()
    spec = AsyncRun(
        model_name="redshift", model=model_args(cfg), data="redshift-share", feed=cfg.data.feed, shares=share_uris,
        share_sizes=sizes, data_uri=None, seed=cfg.train.seed, workers=run["workers"], s=run["s"],
        schedule=run["schedule"], max_epochs=cfg.train.max_epochs, batch_size=cfg.train.batch_size,
        update=cfg.train.update, stop_on=run["stop_on"], stopping_rule=cfg.train.stopping_rule,
        tf_threads=cfg.train.tf_threads, push_timeout_s=cfg.train.push_timeout_s, ps_secret=job.secret,
        weights_uri=job.out("weights", f"{run['id']}.weights.h5"), checkpoint_dir=cell_folder(job, run["id"]),
        checkpoint_every=cfg.train.checkpoint_every, resume=job.resume,
        tensorboard_uri=job.out("tensorboard", run["id"]) if cfg.train.tensorboard else None, sample_interval_s=0)
    started, started_at = time.monotonic(), time.time()
    deadline_s = cfg.train.push_timeout_s * max(1, cfg.train.max_epochs)
    feeding = []

    def feed(cluster):
        feeding.extend(feed_epochs(cluster, fed, cfg))
        # every worker hands in its result before shutdown, which would otherwise feed end markers
        cluster.await_roles({f"worker:{w}" for w in range(m)}, deadline_s)

    def ps_lost(cluster, error):
        from distributed.ps_client import ParameterServerLost
        lost = ps_lost_message(run["id"], str(error), storage.join(cell_folder(job, run["id"]), "ps.h5"))
        return ParameterServerLost(lost) if lost else None
    try:
        results = job.run_roles(role, spec, tfos.Roles(ps=1, workers=m), title=run["id"],
                                expected={f"worker:{w}": cfg.train.max_epochs for w in range(m)}, timeout_s=deadline_s,
                                while_running=feed if fed is not None else None, on_failure=ps_lost,
                                input_mode=cfg.data.feed, credentials=ps_credentials(m))
    finally:
        if fed is not None:
            fed.unpersist()
    rb.check_seen(run["id"], n, mode, {w: results[f"worker:{w}"]["seen"] for w in range(m)})
    per_worker = {}
    for w in range(run["workers"]):
        r = results[f"worker:{w}"]
        per_worker[f"worker:{w}"] = {"accuracy": r["accuracy"], "loss": r["loss"], "samples": r["samples"],
                                     "seen": r["seen"],
                                     "time": r["time"], "epochs_to_stable": stable_epochs(
                                         r["accuracy"], cfg.train.stopping_rule, cfg.train.max_epochs, run["stop_on"])}
    ps = results["ps:0"]
    lambdas = {u["tau"]: u["lambda"] for u in ps["updates"]}
    log.info("%s: %d updates applied, tau max %s, final accuracy %s", run["id"], len(ps["updates"]),
             max(lambdas, default=0), [round(w["accuracy"][-1], 3) for w in per_worker.values()])
    faults = describe_faults(ps, results, sizes, cfg.train.max_epochs, started_at)
    for fault in faults:
        log.warning("%s: %s (%s: %s) at %.1fs after %d epoch(s); samples not seen: %s", run["id"],
                    fault["message"], fault["address"] or "?", fault["cause"] or "cause unknown", fault["lost_at_s"],
                    fault["epochs_completed"], fault["samples_not_seen"])
    stops = describe_stops(results, run["workers"], run["s"], started_at)
    for stop in stops:
        log.info("%s: %s met criterion %s after %d epochs and left the ps; %d worker(s) go on, s_eff %d",
                 run["id"], stop["worker"], run["stop_on"], stop["epochs"], stop["workers_still_active"],
                 stop["s_eff_after"])
    return {**run, "cluster": f"{run['workers']} worker{'s' if run['workers'] > 1 else ''}",
            "stopping_rule": cfg.train.stopping_rule, "max_epochs": cfg.train.max_epochs, "stops": stops,
            "feed": cfg.data.feed, "feeding": feeding,
            "per_worker": per_worker, "updates": ps["updates"], "pushes_received": ps["pushes_received"],
            "faults": faults, "resumed_at_version": ps.get("resumed_at_version"),
            "wall_time_s": round(time.monotonic() - started, 2)}


def describe_faults(ps: dict, results: dict, share_sizes: list[int], max_epochs: int,
                    started_at: float) -> list[dict]:
    """One record per loss of a worker: when, after how many epochs, and what of its share went unseen.

    A lost worker that Spark's retry brought back ('rejoined') trained its remaining epochs from its
    checkpoint and handed in its result: nothing went unseen. One that never came back missed its
    whole share in each epoch it had not finished."""
    out = []
    events = ps.get("events", [])
    for i, e in enumerate(events):
        if e["event"] != "lost":
            continue
        w = e["worker"]
        back = next((b for b in events[i + 1:] if b["event"] == "rejoined" and b["worker"] == w), None)
        retrained = back is not None and f"worker:{w}" in results
        out.append({"worker": f"worker:{w}", "lost_at_s": round(e["time"] - started_at, 2), "at_version": e["version"],
                    "epochs_completed": e["epochs_reported"], "message": e["message"],
                    "address": e.get("address"), "cause": e.get("cause"),
                    "rejoined_at_epoch": back["epoch"] if back else None,
                    "samples_not_seen": "none: the share was retrained after the retry" if retrained else
                    {str(epoch): share_sizes[w] for epoch in range(e["epochs_reported"], max_epochs)}})
    return out


def describe_stops(results: dict, workers: int, s: int, started_at: float) -> list[dict]:
    """One record per worker whose criterion fired: after how many epochs it left the ps, and the ps's
    s_eff = min(s, workers still active) from then on (the ps logs the same as 's shrinks')."""
    left = sorted((r["left_at"], w) for w in range(workers) if (r := results.get(f"worker:{w}", {})).get("left_at"))
    out = []
    for k, (at, w) in enumerate(left):
        r = results[f"worker:{w}"]
        if r.get("stopped"):
            active = workers - k - 1
            out.append({"worker": f"worker:{w}", "epochs": len(r["accuracy"]), "left_at_s": round(at - started_at, 2),
                        "s_eff_after": min(s, active), "workers_still_active": active})
    return out


def ps_lost_message(run_id: str, failure: str, ps_checkpoint: str) -> str | None:
    """The job's error when workers stopped because the parameter server went away, else None."""
    sections = re.split(r"^--- (\S+) ---$", failure, flags=re.M)
    stopped = [role for role, text in zip(sections[1::2], sections[2::2]) if "ParameterServerLost" in text]
    if not stopped:
        return None
    reason = next(line.strip() for line in failure.splitlines() if "ParameterServerLost:" in line)
    try:
        from distributed import checkpoint
        found = checkpoint.load_if_present(ps_checkpoint)
    except Exception as exc:  # noqa: BLE001 -- the message must come out whatever the checkpoint's state
        found, last = None, f"the checkpoint {ps_checkpoint} cannot be read ({exc})"
    else:
        last = "no checkpoint was written before it was lost"
    if found is not None:
        last = (f"the last checkpoint is version {found[1]['version']} ({len(found[1]['updates'])} updates) "
                f"in {ps_checkpoint}; run again with --resume to continue from it")
    return (f"{run_id}: the parameter server ps:0 was lost; {', '.join(stopped)} stopped "
            f"({reason.split('ParameterServerLost: ', 1)[-1]}); {last}")


def cell_folder(job: Job, cell_id: str) -> str:
    """<output>/checkpoints/<run id>: the cell's checkpoints, pid records and, once done, result.json."""
    return job.out("checkpoints", cell_id)


def run_cell(job: Job, cell_id: str, compute, resumed: dict) -> dict:
    """compute() the cell, or with --resume take its result.json if it finished before.

    A fresh run (no --resume) first removes the cell's old checkpoints: they are another run's."""
    from distributed.cell_store import CellStore
    store = CellStore(job.out("checkpoints"), job.resume)
    result = store.finished(cell_id)
    if result is not None:
        log.info("%s finished before; its result is read from %s", cell_id, store.path(cell_id, "result.json"))
        resumed["finished_before"].append(cell_id)
        return result
    if job.resume:
        resumed["continued" if storage.exists(store.path(cell_id, "ps.h5")) else "started"].append(cell_id)
    else:
        store.clear(cell_id)
    result = compute()
    store.finish(cell_id, result)
    return result


def run_baseline(job: Job, bundle, n: int) -> dict:
    """The same CNN, same data and seed, trained in this process without Spark."""
    import numpy as np
    from distributed.tf_process import quiet_tensorflow
    from distributed.async_training import fit_sequential
    from jobs.redshift_roles import new_model
    cfg = job.cfg
    rows = bundle.filter(lambda t: t[0] < n).sortByKey().collect()
    x = np.stack([r[1][0] for r in rows]).astype(np.float32)
    y = np.array([r[1][1] for r in rows], np.int32)
    quiet_tensorflow(cfg.train.tf_threads)
    started = time.monotonic()
    model = new_model(model_args(cfg), cfg.train.seed)
    # Trained max_epochs and scored after the fact: one process's curve up to an epoch does not depend on
    # whether it goes on, so this equals stopping it on each criterion.

    def progress(done: int, history: dict) -> None:
        log.info("baseline %d: epoch %d/%d, accuracy %.3f, loss %.4f (%.0f s)", n, done, cfg.train.max_epochs,
                 history["accuracy"][-1], history["loss"][-1], time.monotonic() - started)
    history = fit_sequential(model, x, y, cfg.train.max_epochs, cfg.train.batch_size, cfg.train.seed + 1, progress)
    single = {"accuracy": history["accuracy"], "loss": history["loss"], "samples": n,
              "epochs_to_stable": stable_epochs(history["accuracy"], cfg.train.stopping_rule, cfg.train.max_epochs)}
    log.info("baseline %d: final accuracy %.3f", n, history["accuracy"][-1])
    return {"id": f"{n}-single", "cluster": "single machine", "workers": 0, "data_mode": "same", "dataset": n,
            "mode": "sequential", "s": 0, "per_worker": {"single": single}, "updates": [], "stop_on": None,
            "stopping_rule": cfg.train.stopping_rule, "max_epochs": cfg.train.max_epochs,
            "wall_time_s": round(time.monotonic() - started, 2)}


def write_outputs(job: Job, results: dict) -> list[str]:
    """Tables, HDF5, figures and report.md, built locally and uploaded to the output URI."""
    from jobs import redshift_report
    return job.publish(lambda folder: redshift_report.write_all(results, folder))


def run(job: Job) -> dict:
    cfg = job.cfg
    bundle, total = prepare_data(job)
    grid = experiment_grid(cfg)
    resumed = {"finished_before": [], "continued": [], "started": []}
    runs = [run_cell(job, f"{n}-single", lambda n=n: run_baseline(job, bundle, n), resumed)
            for n in cfg.data.sizes] if cfg.experiments.baseline else []
    for i, cell in enumerate(grid, 1):
        log.info("[%d/%d] %s", i, len(grid), cell["id"])
        runs.append(run_cell(job, cell["id"], lambda cell=cell: run_distributed(job, bundle, cell), resumed))
    results = {"runs": runs, "ablation_ids": [r["id"] for r in grid if r.get("ablation")]}
    files = write_outputs(job, results)
    return {"samples_available": total, "runs": len(runs), "outputs": files,
            "final_accuracy": {r["id"]: {w: round(v["accuracy"][-1], 4) for w, v in r["per_worker"].items()}
                               for r in runs},
            "epochs_to_stable": {r["id"]: {w: v["epochs_to_stable"] for w, v in r["per_worker"].items()}
                                 for r in runs},
            "updates": {r["id"]: {"received": r["pushes_received"], "applied": len(r["updates"]),
                                  "max_tau": max((u["tau"] for u in r["updates"]), default=0)}
                        for r in runs if r["workers"]},
            # per worker: seconds since it started training, at the end of each epoch (bench/ reads these)
            "epoch_time_s": {r["id"]: {w: v["time"] for w, v in r["per_worker"].items()}
                             for r in runs if r["workers"]},
            # per run, worker and epoch: samples trained on and a checksum of their zipWithIndex indices
            "seen": {r["id"]: {w: v.get("seen") for w, v in r["per_worker"].items()} for r in runs if r["workers"]},
            # data.feed spark: per epoch and worker, items fed, seconds to put them, seconds until consumed
            "feeding": {r["id"]: r["feeding"] for r in runs if r.get("feeding")},
            # workers whose criterion fired: they left the ps, the others went on with a smaller s_eff
            "stops": {r["id"]: r["stops"] for r in runs if r.get("stops")},
            # workers lost mid-run: when, after how many epochs, what was not seen (none once retrained)
            "faults": {r["id"]: r["faults"] for r in runs if r.get("faults")},
            **({"resume": resumed} if job.resume else {})}


if __name__ == "__main__":
    # data.feed=spark is TFoS's InputMode.SPARK, whose background roles need reused Python workers
    raise SystemExit(run_job("redshift", RedshiftConfig, run, reuse_workers=lambda cfg: cfg.data.feed == "spark"))
