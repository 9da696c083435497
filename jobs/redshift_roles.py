"""Executor side of the asynchronous data-parallel runs: the parameter-server role and the worker role.

Written for the redshift study; the land-cover study reuses them for its data-parallel comparison
(args["model_name"] picks the registered model, args["data"] how a worker finds its samples).

The ps builds the model from the run's seed, serves its weights with the staleness-aware rule
(distributed/param_server.py) on the port TFoS reserved for it, and returns the update log. A worker
reads its share, then per epoch (or per batch) pulls (weights, version), trains locally, and pushes
dW = W_read - W_local with the version it read. TensorFlow is imported here, on the executors only.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from distributed.early_stopping import CRITERIA, EarlyStopper


def quiet_tensorflow(threads: int):
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    try:  # fails if TF already ran an op in this process; the setting then stays as it was
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass
    return tf


def new_model(model_cfg: dict, seed: int, name: str = "redshift"):
    """The same initial weights wherever it is built with the same seed."""
    import keras
    from models import registry
    keras.utils.set_random_seed(seed)
    return registry.build(name, model_cfg)


def train_epoch(model, x, y, batch_size: int, rng: np.random.Generator, step=None) -> tuple[float, float]:
    """One pass over (x, y) in shuffled batches; `step(batch_fn)` wraps each batch for per-batch updates.
    x is one array or a list of arrays (a model with several inputs).

    Returns the epoch's training accuracy and loss, averaged over samples as Keras reports them."""
    order = rng.permutation(len(y))
    correct = loss_sum = 0.0
    for start in range(0, len(y), batch_size):
        idx = np.sort(order[start:start + batch_size])
        xb = [a[idx] for a in x] if isinstance(x, list) else x[idx]
        train = lambda: model.train_on_batch(xb, y[idx], return_dict=True)  # noqa: E731
        out = step(train) if step else train()
        correct += float(out["accuracy"]) * len(idx)
        loss_sum += float(out["loss"]) * len(idx)
    return correct / len(y), loss_sum / len(y)


def worker_data(args: dict, task_index: int) -> tuple:
    """(x, y, share facts) of one worker: its redshift share, or every M-th land-cover patch."""
    if args.get("data", "redshift-share") == "landcover-patches":
        from jobs.landcover_roles import load_patches, volumes
        rgb, hsi, y = volumes(load_patches(args["data_uri"]))
        index = np.arange(len(y))[task_index::args["workers"]]
        return [rgb[index], hsi[index]], y[index], index
    from rdd_io.redshift_bundle import load_share
    share = load_share(args["shares"][task_index])
    return share["spectra"], share["label"], share["index"]


def _sampling(args: dict, name: str):
    """Sample this role's process tree when the run asks for it (the land-cover comparison)."""
    if not args.get("sample_interval_s"):
        return None, None
    from distributed.metrics import Sampler
    return Sampler.for_self(name, args["sample_interval_s"]).start(), time.time()


def _sampled(sampler, origin) -> dict:
    return {} if sampler is None else {"series": sampler.stop(), "origin": origin, "meta": sampler.meta}


def fit_sequential(model, x, y, epochs: int, batch_size: int, seed: int, stop_on: int | None = None) -> dict:
    """The single-machine baseline: the same loop, no parameter server."""
    rng = np.random.default_rng(seed)
    stopper = EarlyStopper(*CRITERIA[stop_on]) if stop_on else None
    history = {"accuracy": [], "loss": []}
    for _ in range(epochs):
        acc, loss = train_epoch(model, x, y, batch_size, rng)
        history["accuracy"].append(acc)
        history["loss"].append(loss)
        if stopper and stopper.update(acc):
            break
    return history


def _save_weights(model, uri: str) -> None:
    from rdd_io import storage
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "final.weights.h5"
        model.save_weights(path)
        storage.write_bytes(uri, path.read_bytes())


def connect_ps(address, args: dict, worker: int, wait_s: float = 300):
    """The ps listens only once its model is built: retry refused connections for up to wait_s."""
    from distributed.ps_client import PSClient
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return PSClient(address, bytes.fromhex(args["ps_secret"]), worker=worker,
                            timeout_s=args["push_timeout_s"] + 30)
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def ps_role(args: dict, ctx) -> dict:
    from distributed.param_server import ParameterServer
    quiet_tensorflow(args["tf_threads"])
    sampler, origin = _sampling(args, "ps:0")
    model = new_model(args["model"], args["seed"], args.get("model_name", "redshift"))
    host, port = ctx.address.rsplit(":", 1)
    server = ParameterServer(model.get_weights(), bytes.fromhex(args["ps_secret"]), num_workers=args["workers"],
                             s=args["s"], schedule=args["schedule"], host=host, port=int(port),
                             push_timeout_s=args["push_timeout_s"])
    server.start()
    try:
        while not server.wait_until_done(1.0):
            if ctx.should_stop():
                break
        snap = server.snapshot()
    finally:
        server.stop()
    if args.get("weights_uri"):
        model.set_weights(snap["weights"])
        _save_weights(model, args["weights_uri"])
    return {"version": snap["version"], "updates": snap["updates"], "pushes_received": snap["pushes_received"],
            "pushes_withdrawn": snap["pushes_withdrawn"], **_sampled(sampler, origin)}


class WorkerProgress:
    """A worker's progress for the driver's display (rate-limited within an epoch, always at its end)
    and its TensorBoard scalars per epoch: accuracy, loss, staleness, updates per second."""

    def __init__(self, args: dict, ctx, samples: int):
        from jobs.tb_events import open_writer
        self.ctx, self.epochs = ctx, args["max_epochs"]
        self.steps = -(-samples // args["batch_size"]) if args["update"] == "batch" else None
        self.started, self.pushes, self.step = time.monotonic(), 0, 0
        self.taus: list[int] = []  # staleness of this epoch's pushes
        self.record: dict = {"epoch": 0, "epochs": self.epochs, "done": 0}
        self.writer = open_writer(args.get("tensorboard_uri"), ctx.name)

    def ups(self) -> float:
        return round(self.pushes / max(time.monotonic() - self.started, 1e-9), 3)

    def pushed(self, tau: int | None) -> None:
        self.pushes, self.step = self.pushes + 1, self.step + 1
        self.taus += [] if tau is None else [tau]
        if self.steps:  # per-batch updates: show the steps of the running epoch
            self.record.update(step=self.step, steps=self.steps, ups=self.ups(), tau=tau)
            self.ctx.progress(**self.record)

    def epoch_end(self, epoch: int, accuracy: float, loss: float) -> None:
        ups, staleness = self.ups(), (float(np.mean(self.taus)) if self.taus else None)
        self.record = {"epoch": epoch, "epochs": self.epochs, "done": epoch, "accuracy": round(accuracy, 4),
                       "loss": round(loss, 4), "ups": ups, "tau": self.taus[-1] if self.taus else None}
        self.ctx.progress(force=True, **self.record)
        if self.writer:
            self.writer.scalars(epoch, {"accuracy": accuracy, "loss": loss, "staleness": staleness,
                                        "updates_per_s": ups})
        self.taus, self.step = [], 0

    def close(self, epochs_done: int) -> None:
        if epochs_done < self.epochs:  # stopped early: the overall bar counts what was done
            self.ctx.progress(force=True, **{**self.record, "total": epochs_done})
        if self.writer:
            self.writer.close()


def worker_role(args: dict, ctx) -> dict:
    quiet_tensorflow(args["tf_threads"])
    sampler, origin = _sampling(args, f"worker:{ctx.task_index}")
    x, y, index = worker_data(args, ctx.task_index)
    seed = args["seed"] + 1 + ctx.task_index  # workers differ in shuffling and dropout, as on a cluster
    model = new_model(args["model"], seed, args.get("model_name", "redshift"))
    rng = np.random.default_rng(seed)
    stopper = EarlyStopper(*CRITERIA[args["stop_on"]]) if args["stop_on"] else None
    host, port = ctx.addresses("ps")[0].rsplit(":", 1)
    history = {"accuracy": [], "loss": [], "time": []}
    started = time.monotonic()
    progress = WorkerProgress(args, ctx, len(y))
    with connect_ps((host, int(port)), args, ctx.task_index) as ps:

        def exchange(train):
            """pull -> train locally -> push dW = W_read - W_local with the version read."""
            weights, version = ps.pull()
            model.set_weights(weights)
            out = train()
            ps.push([w0 - w1 for w0, w1 in zip(weights, model.get_weights())], version)
            progress.pushed(ps.last_tau)
            return out

        try:
            for epoch in range(args["max_epochs"]):
                if args["update"] == "batch":
                    acc, loss = train_epoch(model, x, y, args["batch_size"], rng, step=exchange)
                else:
                    acc, loss = exchange(lambda: train_epoch(model, x, y, args["batch_size"], rng))
                ps.report(epoch, {"accuracy": acc, "loss": loss})
                history["accuracy"].append(acc)
                history["loss"].append(loss)
                history["time"].append(round(time.monotonic() - started, 3))
                progress.epoch_end(epoch + 1, acc, loss)
                if stopper and stopper.update(acc):
                    break
        finally:
            ps.leave()  # also on error: the ps stops counting on this worker, so no one waits for it
            progress.close(len(history["accuracy"]))
    return {"samples": int(len(y)), "index_sum": int(index.sum()), "index_min": int(index.min()),
            "index_max": int(index.max()), **history, **_sampled(sampler, origin)}


def role(args: dict, ctx) -> dict:
    return ps_role(args, ctx) if ctx.job_name == "ps" else worker_role(args, ctx)
