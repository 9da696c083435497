"""Land-cover case study: RGB + hyperspectral patches -> multimodal 3D CNN split across worker processes
(model parallelism) under several placement plans, each measured per process (traffic, CPU, wait,
memory); the default plan beside the same model on a single machine.

    python jobs/landcover.py --preset tiny     # minutes, on an embedded mini-cluster
    python jobs/landcover.py --preset paper    # 8,000 and 2,500 patches, 10 epochs, 5 plans, 3 batch sizes
    python jobs/landcover.py --preset tiny --resume   # continue an interrupted run in the same --output

Checkpoints of the model-parallel run, under <output>/checkpoints/ (a new run without --resume clears them):

    pids/<job>-<index>.pid    each role's process (distributed.pidfile), written when the role starts
    <cell id>/chief.h5        every train.checkpoint_every epochs, written by the chief (distributed.checkpoint):
                              variables/  every unit's variables in models.landcover.UNITS order (weights,
                                          BN statistics, dropout seed states), read back from the ps
                              optimizer/  the optimizer's variables (iteration, Adam moments)
                              state       {"epoch": epochs done, "history": loss, accuracy, epoch times so far}
    <cell id>/result.json     the finished cell, as the chief reports it
    <n>-data-parallel-.../    the data-parallel comparison: the redshift study's ps.h5 and worker-<i>.epoch-<e>.h5
                              (distributed/async_training.py), every train.checkpoint_every epochs

Each epoch's order comes from (train.seed, epoch), so a resumed cell replays the same batches. --resume
keeps the finished cells and continues the unfinished one from its checkpoint. A role whose process dies
fails the run at once with a message naming the role and what it held (jobs/resume.py).
"""
from __future__ import annotations

import io
import json
import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from distributed.async_run import AsyncRun
from jobs.landcover_config import ROLES, LandcoverConfig, LandcoverRun
from jobs.resume import role_lost
from jobs.runner import Job, run_job
from rdd_io import storage

log = logging.getLogger("jobs.landcover")


def model_args(cfg: LandcoverConfig) -> dict:
    return {**asdict(cfg.model), "hsi_bands": len(cfg.data.bands), "n_classes": 20, "seed": cfg.train.seed}


def experiment_cells(cfg: LandcoverConfig, data_uris: dict[int, str]) -> list[dict]:
    """(c) every plan at the main batch size, (b) the default plan per batch size for one wall-clock
    window, (d) the default plan on the other data sets; each once (the default plan's cell is also
    (a), the curve beside the single machine)."""
    n, ex = max(cfg.data.sizes), cfg.experiments
    base = dict(dataset=n, data_uri=data_uris[n], epochs=cfg.train.epochs, batch_size=cfg.train.batch_size,
                window_s=ex.plan_window_s, warmup_steps=ex.warmup_steps, test_uri=data_uris.get("test"))
    cells = [dict(base, plan=p) for p in ["default"] + [p for p in ex.plans if p != "default"]]
    cells += [dict(base, plan="default", batch_size=b, epochs=1, window_s=ex.batch_window_s)
              for b in ex.batch_sizes if b != cfg.train.batch_size or ex.batch_window_s != ex.plan_window_s]
    cells += [dict(base, dataset=m, data_uri=data_uris[m], plan="default") for m in cfg.data.sizes if m != n]
    unique: dict[str, dict] = {}
    for cell in cells:
        window = f"-w{cell['window_s']:g}" if cell["window_s"] else ""
        cell["id"] = f"{cell['dataset']}-{cell['plan']}-b{cell['batch_size']}-e{cell['epochs']}{window}"
        unique.setdefault(cell["id"], cell)
    return list(unique.values())


# ---------------------------------------------------------------------------------- preprocessing
def _scene_files(job: Job) -> str:
    """The scene folder URI; a synthetic scene is generated and uploaded there when asked."""
    cfg = job.cfg.data
    uri = cfg.input or job.out("scene")
    if cfg.source == "simulate":
        from rdd_io.landcover_scene import write_scene
        with tempfile.TemporaryDirectory() as tmp:
            write_scene(tmp, seed=cfg.scene_seed, gt_shape=(cfg.scene_size, cfg.scene_size),
                        bands=cfg.hsi_bands_in, test_fraction=cfg.test_fraction)
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file():
                    storage.write_bytes(storage.join(uri, str(path.relative_to(tmp))), path.read_bytes())
    return storage.to_uri(uri)


def read_scene(job: Job, uri: str):
    """(RGB, HSI, GT, HSI file name). The contest's folder as downloaded (data.source dfc2018): its products
    found by their names and placed by their georeferencing (rdd_io.landcover_dfc2018). The simulated
    scene: Spark reads every product in parallel (tiles, HSI, GT) and decodes them on the executors."""
    from rdd_io import landcover_read as lr
    cfg = job.cfg.data
    bands_in = cfg.hsi_bands_in
    if cfg.source == "dfc2018":
        from rdd_io.landcover_dfc2018 import read_folder
        return read_folder(uri, bands_in)
    tiles = dict(job.sc.binaryFiles(storage.join(uri, "rgb", "*.tif"))
                 .map(lambda kv: (kv[0], lr.read_rgb_tile(kv[1], kv[0]))).collect())
    if not tiles:
        raise FileNotFoundError(f"{storage.join(uri, 'rgb')}: no RGB tiles (tile_r<row>_c<col>.tif)")
    rgb = lr.merge_named_tiles(tiles)
    (hsi_name, hsi), = job.sc.binaryFiles(storage.join(uri, "hsi.tif")).map(
        lambda kv: (kv[0], lr.read_hsi(kv[1], kv[0], expected_bands=bands_in))).collect()
    (gt_name, gt), = job.sc.binaryFiles(storage.join(uri, "gt.tif")).map(
        lambda kv: (kv[0], lr.read_gt(kv[1], kv[0]))).collect()
    return rgb, hsi, gt, hsi_name


def prepare_patches(job: Job) -> tuple[dict, dict]:
    """Merge, resize to the GT grid, keep the configured bands, split off the held-out test region, cut
    patches per class, write shards: ({set size or "test": URI}, sampling reports)."""
    from rdd_io import landcover_patches as lp
    cfg = job.cfg.data
    uri = _scene_files(job)
    rgb, hsi, gt, hsi_name = read_scene(job, uri)
    images = job.sc.broadcast(lp.on_gt_grid(rgb, hsi, gt.shape, cfg.bands, cfg.hsi_bands_in, hsi_name))
    sets, reports = lp.draw_sets(gt, cfg.sizes, cfg.test_fraction, cfg.test_per_class, cfg.seed, cfg.patch,
                                 name="gt.tif")  # no centre in two sets, none near the held-out region
    report = reports[str(cfg.sizes[0])]
    if report.get("with_replacement"):
        log.warning("%s patches: sampled with replacement for %s", "+".join(map(str, cfg.sizes)),
                    ", ".join(f"{r['name']} ({r['available']} of {r['requested']})"
                              for r in report["with_replacement"]))
    uris = {}
    patch = cfg.patch

    def cut(chunk):
        shard, c, y = chunk
        return lp.shard_files(lp.patch_arrays(images.value[0], images.value[1], c, y, patch), shard)

    for n, centres in sets.items():
        labels = lp.labels_at(gt, centres)
        chunks = [(i // cfg.shard_size, centres[i:i + cfg.shard_size], labels[i:i + cfg.shard_size])
                  for i in range(0, len(centres), cfg.shard_size)]
        target = job.out("patches", str(n))
        storage.remove_tree(target)
        for files in job.sc.parallelize(chunks, len(chunks)).map(cut).toLocalIterator():
            for name, payload in files.items():  # the shard, and each modality's raw file for its worker
                storage.write_bytes(storage.join(target, name), payload)
        uris[n] = target
        log.info("%d %s patches written under %s", len(centres), "held-out test" if n == "test" else "training", target)
    return uris, reports


def baseline(data_uris: dict, n: int) -> dict:
    """The nearest-signature rule on the held-out test patches: each centre pixel's 11-band spectrum gets the
    class of the nearest mean spectrum of the n-patch training set (no learning beyond class means)."""
    import numpy as np

    from models.landcover import nearest_signature
    from rdd_io.landcover_patches import read_patch_set
    train, test = read_patch_set(data_uris[n]), read_patch_set(data_uris["test"])
    c = train["hsi"].shape[1] // 2
    predicted = nearest_signature(train["hsi"][:, c, c, :], train["label"], test["hsi"][:, c, c, :])
    return {"nearest_signature_test_accuracy": float(np.mean(predicted == test["label"])),
            "test_samples": int(len(test["label"]))}


# ------------------------------------------------------------------------------------- training
def run_model_parallel(job: Job, cells: list[dict]) -> dict:
    from distributed import tfos
    from jobs.landcover_roles import role
    cfg = job.cfg
    spec = LandcoverRun.of(cfg, model_args(cfg), cells, job.out("checkpoints"),
                           job.out("tensorboard") if cfg.train.tensorboard else None, job.resume)
    if not job.resume:  # a new run: checkpoints of an earlier run in this output are not ours to continue
        storage.remove_tree(job.out("checkpoints"))
    return job.run_roles(role, spec, tfos.Roles(ps=1, chief=True, workers=3), title="model parallel",
                         expected={"chief:0": sum(c["epochs"] for c in cells)}, timeout_s=cfg.train.timeout_s,
                         on_failure=role_lost(), input_mode="tensorflow", tf_servers=True)


def run_data_parallel(job: Job, n: int, data_uri: str) -> tuple[dict, dict]:
    """(d): the same model, data parallel on 3 workers with the redshift study's staleness-aware ps
    (every third patch per worker, per-epoch updates); each role samples itself for the whole run."""
    from distributed import tfos
    from distributed.async_training import ps_credentials
    from jobs.redshift_roles import role
    cfg = job.cfg
    workers = 3
    cell_id = f"{n}-data-parallel-b{cfg.train.batch_size}-e{cfg.train.epochs}"
    # The redshift study's ps and worker checkpoints (ps.h5 every few updates, worker-<i>.epoch-<e>.h5 per epoch):
    # checkpoint_every counts epochs here, and with per-epoch updates each epoch is one update per worker.
    spec = AsyncRun(
        model_name="landcover", model=model_args(cfg), data="landcover-patches", feed="tensorflow", shares=None,
        share_sizes=None, data_uri=data_uri, seed=cfg.train.seed, workers=workers, s=1, schedule="inverse",
        max_epochs=cfg.train.epochs, batch_size=cfg.train.batch_size, update="epoch", stop_on=None,
        stopping_rule="keras3", tf_threads=cfg.train.tf_threads, push_timeout_s=cfg.train.timeout_s,
        ps_secret=job.secret, weights_uri=None, checkpoint_dir=job.out("checkpoints", cell_id),
        checkpoint_every=cfg.train.checkpoint_every * workers, resume=job.resume,
        tensorboard_uri=job.out("tensorboard", cell_id) if cfg.train.tensorboard else None,
        sample_interval_s=cfg.experiments.sample_interval_s)
    t0 = time.time()
    results = job.run_roles(role, spec, tfos.Roles(ps=1, workers=workers), title=cell_id,
                            expected={f"worker:{w}": cfg.train.epochs for w in range(workers)},
                            timeout_s=cfg.train.timeout_s, input_mode="tensorflow", credentials=ps_credentials(workers))
    t1 = time.time()
    w0 = results["worker:0"]
    cell = {"id": cell_id, "plan": "data parallel",
            "batch_size": cfg.train.batch_size, "epochs": cfg.train.epochs, "dataset": n,
            "loss": w0["loss"], "accuracy": w0["accuracy"],
            "epoch_time_s": [b - a for a, b in zip([0.0] + w0["time"][:-1], w0["time"])],
            "steps": sum(-(-r["samples"] // cfg.train.batch_size) for k, r in results.items() if k != "ps:0")
            * cfg.train.epochs, "first_step_loss": None, "t_start": t0, "t_end": t1}
    return cell, {name: slice_series(r, t0, t1) for name, r in results.items()}


def run_single_machine(job: Job, data_uri: str, test_uri: str | None) -> dict:
    """The same units and training loop in this process, no placement (the thesis's single machine)."""
    from jobs.landcover_roles import train_cell
    from distributed.tf_process import quiet_tensorflow
    cfg = job.cfg
    tf = quiet_tensorflow(cfg.train.tf_threads)
    cell = {"id": "single", "plan": "single machine", "batch_size": cfg.train.batch_size,
            "epochs": cfg.train.epochs, "dataset": max(cfg.data.sizes), "test_uri": test_uri}
    t0 = time.time()
    out = train_cell(tf, model_args(cfg), cell, data_uri, cfg.train.seed)
    return {**cell, **out, "t_start": t0, "t_end": time.time()}


def slice_series(result: dict, t0: float, t1: float) -> dict[str, list]:
    """The part of a role's sampled series inside [t0, t1] (wall clock), rebased so that time and the
    cumulative byte counters start at the window (the sample before it is the origin)."""
    (series,) = result["series"].values()
    keep = [i for i, t in enumerate(series["t_s"]) if t0 <= result["origin"] + t <= t1]
    out = {col: [values[i] for i in keep] for col, values in series.items()}
    if keep:
        before = keep[0] - 1
        t_prev = series["t_s"][before] if before >= 0 else 0.0
        out["t_s"] = [round(t - t_prev, 3) for t in out["t_s"]]
        for col in ("bytes_in", "bytes_out"):
            base = series[col][before] if before >= 0 else 0
            out[col] = [v - base for v in out[col]]
    return out


def steady_bytes(results: dict, cell: dict) -> dict | None:
    """Measured bytes per step of a cell's steady window (from the pause after its warm-up steps to the
    pause after its last step; jobs.landcover_roles.train_cell): per role in and out, and the total
    (the sum of what every role sent: on loopback each byte one role sends another receives).
    `exact`: every counter was read from a sample inside its pause."""
    from distributed.metrics import counter_at
    steady = cell.get("steady")
    if not steady or steady["steps"] < 1:
        return None
    per_role, exact = {}, True
    for role in ROLES:
        result = results[role]
        (series,) = result["series"].values()
        times = [result["origin"] + t for t in series["t_s"]]
        per_role[role] = {}
        for col in ("bytes_in", "bytes_out"):
            (a, ok_a), (b, ok_b) = (counter_at(times, series[col], steady[k]) for k in ("from", "to"))
            per_role[role][col] = (b - a) / steady["steps"]
            exact = exact and ok_a and ok_b
    return {"steps": steady["steps"], "total": sum(r["bytes_out"] for r in per_role.values()),
            "per_role": per_role, "exact": exact}


def bytes_per_step(results: dict, cells: list[dict], plans: dict, model: dict) -> None:
    """Each model-parallel cell gets "bytes_per_step": measured (steady_bytes) beside the analytic count
    (models.landcover.step_bytes) for its plan and batch size."""
    from models.landcover import step_bytes
    for cell in cells:
        measured = steady_bytes(results, cell)
        analytic = step_bytes(plans[cell["plan"]], cell["batch_size"], model)
        cell["bytes_per_step"] = {"measured": measured, "analytic": analytic,
                                  "ratio": measured["total"] / analytic["total"] if measured else None}


def per_cell_metrics(results: dict) -> dict[str, dict[str, dict[str, list]]]:
    return {cell["id"]: {role: slice_series(results[role], cell["t_start"], cell["t_end"]) for role in ROLES}
            for cell in results["chief:0"]["cells"]}


def write_outputs(job: Job, cells: list[dict], metrics: dict, host_cores: dict[str, int], held_out: dict) -> list[str]:
    from jobs import landcover_report
    cfg = job.cfg
    return job.publish(lambda folder: landcover_report.write_all(
        cells, metrics, folder, cfg.train.batch_size, max(cfg.data.sizes), host_cores, held_out,
        machine_cores=job.hosts.cores if job.hosts is not None else None))


def run(job: Job) -> dict:
    cfg = job.cfg
    data_uris, sampling = prepare_patches(job)
    held_out = baseline(data_uris, max(cfg.data.sizes))
    log.info("held-out test region: %d patches; nearest-signature baseline accuracy %.3f", held_out["test_samples"],
             held_out["nearest_signature_test_accuracy"])
    cells = experiment_cells(cfg, data_uris)
    log.info("model-parallel cells: %s", ", ".join(c["id"] for c in cells))
    results = run_model_parallel(job, cells)
    trained = results["chief:0"]["cells"]
    bytes_per_step(results, trained, cfg.placement, model_args(cfg))
    metrics = per_cell_metrics(results)
    if job.hosts is not None:  # a mini-cluster with hosts: each plan's figures per host, beside the per-role ones
        from jobs import landcover_hosts
        landcover_hosts.attach(trained, job.hosts, results["chief:0"].get("addresses") or {})
    if cfg.experiments.data_parallel:
        for n in cfg.data.sizes:
            cell, series = run_data_parallel(job, n, data_uris[n])
            trained.append(cell)
            metrics[cell["id"]] = series
    if cfg.experiments.single_machine:
        trained.append(run_single_machine(job, data_uris[max(cfg.data.sizes)], data_uris["test"]))
    host_cores = {role: results[role]["meta"].get("host_cores") for role in ROLES}
    files = write_outputs(job, trained, metrics, host_cores, held_out)
    checks = {c["id"]: c["hosts_check"] for c in trained if c.get("hosts_check")}
    buf = io.StringIO()
    json.dump(metrics, buf)
    storage.write_text(job.out("metrics.json"), buf.getvalue())
    return {"sampling": sampling, "outputs": files + ["metrics.json"], "held_out": held_out,
            "cells": {c["id"]: {"plan": c["plan"], "batch_size": c["batch_size"], "loss": c["loss"],
                                "accuracy": c["accuracy"], "epoch_time_s": c["epoch_time_s"],
                                "first_step_loss": c["first_step_loss"], "steps": c["steps"],
                                **{k: c[k] for k in ("test_loss", "test_accuracy") if k in c},
                                **({"bytes_per_step": c["bytes_per_step"]} if "bytes_per_step" in c else {}),
                                **({"hosts": c["hosts"]} if "hosts" in c else {})}
                      for c in trained},
            **({"hosts_check": checks} if checks else {}),
            "bytes_out": {cid: {role: (s["bytes_out"][-1] if s["bytes_out"] else 0) for role, s in m.items()}
                          for cid, m in metrics.items()}}


if __name__ == "__main__":
    raise SystemExit(run_job("landcover", LandcoverConfig, run))
