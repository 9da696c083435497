"""Executor side of the Dom-ST study: a watershed's samples, and the worker role.

The driver writes one bundle per watershed under <output>/watersheds/ (rdd_io/domst_bundle.py); each
worker reads the ones assigned to it
(InputMode.TENSORFLOW) and trains every approach on each, one after another. A worker splits its CPU
into logical devices before TensorFlow starts (or uses the node's GPUs), so Dom-ST's heads and its
temporal block each sit on their own device. TensorFlow is imported inside the functions, on executors.
"""
from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from conf import from_json
from distributed.cell_store import CellStore
from jobs.domst_config import DomstRun, PlacementConfig, TrainConfig
from rdd_io.domst_bundle import read_bundle

# approach -> (model, changes to the model config): the paper's three, then the ablation's variants
APPROACHES = {
    "singlehead": ("domst-singlehead", {}),
    "singlehead_p": ("domst-singlehead-p", {}),
    "domst": ("domst", {}),
    "singlehead_p_wide": ("domst-singlehead-p", {"widen_to": "domst"}),   # Dom-ST's parameter count
    "singlehead_p_means": ("domst-singlehead-p", {"target_input": "group_means"}),  # +P as Dom-ST takes it
    "domst_projection": ("domst", {"target_input": "projection"}),        # +P as Singlehead(+P) takes it
    "domst_uniform": ("domst", {"pixcon": False}),                        # no Pix-Con: every weight 1
    "domst_k1": ("domst", {"k_groups": 1}),                               # one head
}


class Unscorable(ValueError):
    """A watershed whose training or test period cannot be scored (too few observed days, no variance)."""


def model_config(approach: str, model_cfg: dict) -> tuple[str, dict]:
    """(registered model name, its config) of an approach on one watershed."""
    from models.domst import count_params, widened_filters
    name, changes = APPROACHES[approach]
    cfg = {**model_cfg, **changes}
    target = cfg.pop("widen_to", None)
    if target:
        cfg["filters"] = widened_filters(cfg, count_params(APPROACHES[target][0], model_cfg), name)
    return name, cfg
def prepare_samples(bundle: dict, lookback: int, train_frac: float, val_frac: float) -> dict:
    """Windows split by time into train/val/test, scaled with train-period statistics only.

    Precipitation is divided by its train-period standard deviation; discharge is standardised.
    Train and validation keep the samples whose target day was observed; test keeps all (NSE drops
    the missing pairs)."""
    from rdd_io.domst_read import split_by_time, windows
    wid = bundle["watershed"]
    X, P_t, y, mask = windows(bundle["precip"], bundle["discharge"], lookback, bundle["valid"])
    parts = dict(zip(("train", "val", "test"), split_by_time(len(y), train_frac, val_frac)))
    tr = parts["train"]
    x_sd = float(bundle["precip"][:tr.stop + lookback].std())
    y_obs = y[tr][mask[tr]]
    if y_obs.size < 2 or x_sd == 0 or float(y_obs.std()) == 0:
        raise Unscorable(f"watershed {wid}: the training period has {y_obs.size} observed discharge days, "
                         f"discharge sd {float(y_obs.std()) if y_obs.size else 0:g}, precipitation sd {x_sd:g}: "
                         f"too little signal to train on")
    te = parts["test"]
    y_test = y[te][mask[te]]
    if y_test.size < 2 or float(y_test.std()) == 0:
        raise Unscorable(f"watershed {wid}: the test period has {y_test.size} observed discharge days"
                         + (f", all {y_test[0]:g} m3/s" if y_test.size else "") + ": NSE is undefined there")
    y_mean, y_sd = float(y_obs.mean()), float(y_obs.std())
    out = {"x_scale": x_sd, "y_mean": y_mean, "y_sd": y_sd, "n_samples": int(len(y))}
    for part, sl in parts.items():
        keep = np.arange(sl.start, sl.stop)
        if part != "test":
            keep = keep[mask[keep]]
        out[part] = {"x": np.ascontiguousarray(X[keep], np.float32) / x_sd,
                     "p": np.ascontiguousarray(P_t[keep], np.float32) / x_sd,
                     "y": ((y[keep] - y_mean) / y_sd).astype(np.float32), "y_raw": y[keep]}
    return out


def node_devices(tf, placement: PlacementConfig, k_groups: int) -> tuple[int, int, list[str]]:
    """(GPUs used, CPU logical devices, device names) of this process. Splits the CPU into
    cpu_devices (default k_groups + 1) logical devices unless GPUs are used; must run before
    TensorFlow initialises. A reused Spark Python worker already split it in an earlier run of the
    job: its devices are used when there are enough of them."""
    from models.domst import split_cpu
    gpus = len(tf.config.list_physical_devices("GPU")) if placement.use_gpus else 0
    if gpus:
        return gpus, 1, [d.name for d in tf.config.list_logical_devices("GPU")]
    want = placement.cpu_devices or k_groups + 1
    try:
        names = split_cpu(want)
    except RuntimeError:
        names = [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(names) < want:
            raise
    return 0, len(names), names


def _device(variable) -> str:
    """The device of a Keras variable's backing tf.Variable."""
    backing = getattr(variable, "_value", None)
    return str((backing if backing is not None else variable.value).device)


def placed_devices(model) -> dict:
    """Where Dom-ST's head and temporal variables actually live."""
    return {"heads": [_device(convs[0].kernel) for convs in model.heads],
            "temporal": _device(model.lstms[0].cell.kernel), "output": _device(model.out.kernel)}


def train_one(approach: str, model_cfg: dict, samples: dict, train: TrainConfig, seed: int, place=None,
              on_epoch=None, saved: str | None = None, resume: bool = False) -> dict:
    """Build, fit (early stopping on validation loss, best weights kept) and score one approach.

    `on_epoch(epochs_done, logs)`, if given, hears of each epoch's end (Keras's logs: loss, val_loss).
    `saved`: a checkpoint URI written every train.checkpoint_every epochs; with `resume`, training
    continues from the checkpoint found there (jobs/domst_resume.py)."""
    import keras

    from jobs import domst_resume
    from models import domst, registry
    from models.domst_metrics import nse, peak_flow_error
    started = time.monotonic()
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    name, cfg = model_config(approach, model_cfg)
    model = registry.build(name, cfg, place if name == "domst" else None)  # the baselines are one unit
    inputs = {part: domst.model_inputs(name, samples[part]["x"], samples[part]["p"])
              for part in ("train", "val", "test")}
    state, best = (domst_resume.restore(saved, model) if saved and resume else None) or (None, None)
    first, before_s = (state["epoch"], state.get("train_s", 0.0)) if state else (0, 0.0)
    stop = domst_resume.EarlyStopping(train.patience, state, best)
    callbacks = [stop]
    if name == "domst" and model.pixcon.membership is not None and cfg.get("partition") == "dynamic":
        # after `stop` took this epoch's snapshot (its val_loss came from these groups), before the checkpoint
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: model.pixcon.repartition()))
    if saved:  # after `stop`, so the checkpoint holds this epoch's early-stopping decision
        callbacks.append(domst_resume.Checkpointer(saved, train.checkpoint_every, stop,
                                                   lambda: before_s + time.monotonic() - started))
    if on_epoch:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(e + 1, logs or {})))
    if state and (state["stopped"] or first >= train.epochs):  # it had finished fitting: only score it
        if best:
            model.set_weights(best)
    else:
        batches, steps = domst_resume.epoch_batches(inputs["train"], samples["train"]["y"], train.batch_size,
                                                    seed, first, train.epochs)
        model.fit(batches, steps_per_epoch=steps, epochs=train.epochs, initial_epoch=first,
                  validation_data=(inputs["val"], samples["val"]["y"]), shuffle=False, verbose=0,
                  callbacks=callbacks)
    pred = model.predict(inputs["test"], batch_size=1024, verbose=0)[:, 0] * samples["y_sd"] + samples["y_mean"]
    obs = samples["test"]["y_raw"]
    val_loss = stop.val_loss
    out = {"approach": approach, "nse": nse(pred, obs), "peak_flow_error": peak_flow_error(pred, obs),
           "epochs": len(val_loss), "best_epoch": int(np.argmin(val_loss)) + 1, "val_loss": val_loss,
           "train_s": round(before_s + time.monotonic() - started, 3), "resumed_from_epoch": first,
           "params": int(sum(int(np.prod(v.shape)) for v in model.trainable_weights))}
    if name == "domst":
        out["pixcon"] = [float(v) for v in domst.pixcon_weights(model)]
        out["devices"] = placed_devices(model)
    return out


class ModelProgress:
    """A worker's progress over its models (watershed x approach), for the driver's display, and its
    TensorBoard scalars per epoch (<tensorboard_uri>/worker_<i>/, tags <watershed>/<approach>/loss, ...)."""

    def __init__(self, run: DomstRun, ctx, models: int):
        from distributed.reporter import RoleReporter
        self.report, self.epochs, self.total, self.done = RoleReporter(ctx, run.tensorboard_uri), run.train.epochs, \
            models, 0

    def epoch(self, watershed: str, approach: str, epoch: int, logs: dict) -> None:
        values = {k: float(logs[k]) for k in ("loss", "val_loss") if k in logs}
        self.report.progress(force=True, what=f"{watershed} {approach}", epoch=epoch, epochs=self.epochs,
                             done=self.done, total=self.total, **{k: round(v, 4) for k, v in values.items()})
        self.report.scalars(epoch, {f"{watershed}/{approach}/{k}": v for k, v in values.items()})

    def model_done(self, watershed: str, score: dict) -> None:
        self.done += 1
        nse = score["nse"] if isinstance(score["nse"], float) and np.isfinite(score["nse"]) else None
        self.report.progress(force=True, what=f"{watershed} {score['approach']}", epoch=score["epochs"],
                             epochs=self.epochs, done=self.done, total=self.total, nse=nse)
        self.report.scalars(score["epochs"], {f"{watershed}/{score['approach']}/nse": nse})

    def close(self) -> None:
        self.report.close()


def in_progress(run: DomstRun, node: int) -> tuple[str, str]:
    """(watershed, approach) a node was training: its first without a finished result."""
    store = CellStore(run.checkpoints, run.resume)
    todo = [(w, a) for w in run.assignment[node] for a in run.approaches if not store.is_finished(w, f"{a}.json")]
    return todo[0] if todo else (run.assignment[node][-1], run.approaches[-1])


def role(args: dict, ctx) -> dict:
    """A worker: every approach on each watershed assigned to it, one watershed after another;
    args["spec"]: the DomstRun as JSON."""
    role_started = time.time()
    from distributed import pidfile
    from jobs.resume import RoleLost, attempt
    from rdd_io import storage
    run = from_json(DomstRun, args["spec"])
    name, tries = f"worker:{ctx.task_index}", attempt()
    if tries:  # Spark started this node's task again: its first process died mid-watershed
        wid, approach = in_progress(run, ctx.task_index)
        raise RoleLost(f"{name} (node {ctx.task_index}, watersheds {', '.join(run.assignment[ctx.task_index])}) "
                       f"was lost while training watershed {wid} ({approach}): its process died (Spark started it "
                       f"again, attempt {tries + 1}); continue with --resume")
    pidfile.write(storage.join(run.checkpoints, "pids"), name)
    from distributed.tf_process import quiet_tensorflow
    tf = quiet_tensorflow(run.train.tf_threads)  # thread settings and the CPU split come before any op
    n_gpus, n_cpus, device_names = node_devices(tf, run.placement, run.model.k_groups)
    from models.domst import device_map, make_place
    mine = run.assignment[ctx.task_index]
    t_start = time.time()
    watersheds = []
    progress = ModelProgress(run, ctx, len(mine) * len(run.approaches))
    store = CellStore(run.checkpoints, run.resume)  # per watershed: <approach>.h5 training, <approach>.json done
    for wid in mine:
        (path, data), = storage.read_parts(run.bundles, f"{wid}.", ".h5")
        bundle = read_bundle(data, path)
        try:
            samples = prepare_samples(bundle, run.lookback, run.train_frac, run.val_frac)
        except Unscorable as exc:  # reported in the results; the node goes on with its next watershed
            watersheds.append({"watershed": wid, "pixels": int(bundle["precip"].shape[1]), "unscored": str(exc),
                               "n_missing": bundle["n_missing"], "scores": []})
            progress.done += len(run.approaches)
            continue
        k = min(run.model.k_groups, bundle["precip"].shape[1])
        model_cfg = {**asdict(run.model), "k_groups": k, "lookback": run.lookback,
                     "pixels": int(bundle["precip"].shape[1]), "distance": bundle["distance_km"].tolist()}
        place = make_place(device_map({"k_groups": k}, n_gpus, n_cpus))
        seed = run.train.seed + run.index[wid]  # the same seed for a watershed in every mode
        scores = []
        for a in run.approaches:
            finished = store.finished(wid, f"{a}.json")  # finished before the run was interrupted
            if finished is not None:
                scores.append(finished)
            else:
                scores.append(train_one(a, model_cfg, samples, run.train, seed, place,
                                        lambda epoch, logs, a=a: progress.epoch(wid, a, epoch, logs),
                                        saved=store.path(wid, f"{a}.h5"), resume=run.resume))
                store.finish(wid, scores[-1], f"{a}.json")
            progress.model_done(wid, scores[-1])
        watersheds.append({"watershed": wid, "k_groups": k, "pixels": model_cfg["pixels"],
                           "samples": {p: int(len(samples[p]["y"])) for p in ("train", "val", "test")},
                           "n_missing": bundle["n_missing"], "scores": scores})
    progress.close()
    return {"node": ctx.task_index, "watersheds": watersheds, "t_start": t_start, "t_end": time.time(),
            "startup_s": round(t_start - role_started, 3), "devices": device_names,
            "gpus": n_gpus, "executor_id": ctx.executor_id}
