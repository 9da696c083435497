"""The asynchronous data-parallel roles: one staleness-aware parameter server and M workers.

The redshift study and land cover's data-parallel comparison both run them (the run spec:
distributed/async_run.py AsyncRun). A study gives two hooks (jobs/redshift_roles.py): the model to build
from a seed, and how a worker loads its share when Spark does not feed it.

The ps builds the model from the run's seed, serves its weights with the staleness-aware rule
(distributed/param_server.py) on the port TFoS reserved for it, and returns the update log. A worker
reads its share, then per epoch (or per batch) pulls (weights, version), trains locally, and pushes
dW = W_read - W_local with the version it read. TensorFlow is imported here, on the executors only.

Checkpoints (when checkpoint_dir is set): the ps writes ps.h5 (weights, version counter,
update log, epochs reported per worker) every checkpoint_every applied updates and when it
stops cleanly; each worker writes worker-<i>.epoch-<e>.h5 at each epoch end, before its report,
with what only it holds (Keras optimizer state, the dropout seed generators' state, epoch,
history). Shuffling is derived from (seed, epoch), so a resumed worker needs no other RNG state.

The two kinds of checkpoint are written by different processes, so a failure can fall between
them (a NameNode lost after the worker's write and before the ps's). A resumed worker therefore
takes the checkpoint of the epoch where its reports in ps.h5 end, not its newest one: no update
is applied twice or lost. The ps deletes a worker's checkpoints older than that epoch once its own
checkpoint has moved past them. Each role records its pid in pids/.

A worker's process dies: the ps sees the connection drop, counts the worker as lost and lets the
others go on (s_eff shrinks). Spark then retries the task (spark.task.maxFailures, 4 by default),
and TensorFlowOnSpark 2.2.5 re-runs the node function for the same executor id: it finds that
node's reservation already on the server, registers nothing, and starts this worker role again with
the same task index. We keep that retry rather than disable it: the retried worker loads its
checkpoint, joins the ps again (which takes a lost worker back) and trains the epochs it had not
finished on its own share, so the lost share is trained after all and the job can say exactly that.
A worker whose process lives but whose connection the ps dropped (a host cut off the network, then
back) does the same in its own process: it connects again and rejoins from its checkpoint.
"""
from __future__ import annotations

import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distributed.async_run import AsyncRun
from distributed.early_stopping import CRITERIA, EarlyStopper
from distributed.epochs import epoch_rng
from distributed.tf_process import quiet_tensorflow
from rdd_io.redshift_bundle import seen

log = logging.getLogger(__name__)


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


class FedShare:
    """data.feed spark: each epoch's share as TensorFlowOnSpark fed it (InputMode.SPARK), in blocks
    ending with a marker (rdd_io.redshift_bundle.feed_partitions)."""

    def __init__(self, ctx):
        self.ctx, self.feed, self.epochs = ctx, ctx.data_feed(), 0

    def _next(self):
        items = self.feed.next_batch(1)
        return items[0] if items else None

    def epoch(self) -> tuple:
        from rdd_io.redshift_bundle import collect_epoch
        got = collect_epoch(self._next)
        if got is None:
            raise RuntimeError(f"{self.ctx.name}: the feed ended after {self.epochs} epochs")
        self.epochs += 1
        return got

    def terminate(self) -> None:
        self.feed.terminate()


def _sampling(run: AsyncRun, name: str):
    """Sample this role's process tree when the run asks for it (the land-cover comparison)."""
    if not run.sample_interval_s:
        return None, None
    from distributed.metrics import Sampler
    return Sampler.for_self(name, run.sample_interval_s).start(), time.time()


def _sampled(sampler, origin) -> dict:
    return {} if sampler is None else {"series": sampler.stop(), "origin": origin, "meta": sampler.meta}


def fit_sequential(model, x, y, epochs: int, batch_size: int, seed: int, on_epoch=None) -> dict:
    """The single-machine baseline: the same loop, no parameter server. on_epoch(epochs done, history so
    far) after each epoch: progress for a baseline that trains for many minutes."""
    history = {"accuracy": [], "loss": []}
    for epoch in range(epochs):
        acc, loss = train_epoch(model, x, y, batch_size, epoch_rng(seed, epoch))
        history["accuracy"].append(acc)
        history["loss"].append(loss)
        if on_epoch:
            on_epoch(epoch + 1, history)
    return history


def _save_weights(model, uri: str) -> None:
    from rdd_io import storage
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "final.weights.h5"
        model.save_weights(path)
        storage.write_bytes(uri, path.read_bytes())


def seed_state(model) -> list:
    """Variables of the model that are not weights: the dropout layers' seed-generator states."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def save_worker_checkpoint(uri: str, model, state: dict) -> None:
    """What only the worker holds (optimizer moments, dropout RNG, epoch, history), atomically."""
    from distributed import checkpoint
    checkpoint.save(uri, {"optimizer": checkpoint.optimizer_arrays(model.optimizer),
                          "seeds": [np.asarray(v.numpy()) for v in seed_state(model)]}, state)


def restore_worker(uri: str, model) -> dict | None:
    """Load worker-<i>.epoch-<e>.h5 into `model` (optimizer and seed state); its JSON state, or None if absent."""
    from distributed import checkpoint
    found = checkpoint.load_if_present(uri)
    if found is None:
        return None
    arrays, state = found
    checkpoint.restore_optimizer(model.optimizer, model.trainable_variables, arrays["optimizer"], uri)
    seeds = seed_state(model)
    if len(seeds) != len(arrays["seeds"]):
        raise checkpoint.CheckpointError(f"{uri}: {len(arrays['seeds'])} seed states, the model has {len(seeds)}")
    for var, value in zip(seeds, arrays["seeds"]):
        var.assign(value)
    return state


def resume_worker(run: AsyncRun, worker: int, joined: dict | None, steps: int, model) -> dict | None:
    """Load into `model` the checkpoint this worker resumes from; its JSON state, or None when the
    worker starts from scratch.

    `joined` is the ps's view (None: the ps saw this worker leave, so its last checkpoint, which must
    say it was done). A worker writes its epoch's checkpoint before it pushes the epoch's update, so
    with per-epoch updates the checkpoint of epoch `updates_applied` exists and resumes exactly. With
    per-batch updates (`steps` per epoch) the ps may hold part of an epoch: the worker resumes at the
    start of that epoch and those pushes are applied again."""
    from distributed.checkpoint import CheckpointError
    found = worker_checkpoints(run, worker) if run.checkpoint_dir else {}
    if joined is None:
        if not found:
            raise CheckpointError(f"worker {worker} already left the parameter server and has no checkpoint "
                                  f"in {run.checkpoint_dir}")
        state = restore_worker(found[max(found)], model)
        if not state["done"]:
            raise CheckpointError(f"{found[max(found)]}: worker {worker} already left the parameter server "
                                  f"but this, its last checkpoint, is not of a finished worker")
        return state
    applied = joined["updates_applied"]
    if not run.checkpoint_dir:
        if applied:
            log.warning("worker %d: the ps has applied %d of its updates and there are no checkpoints; "
                        "its share is trained again from epoch 0", worker, applied)
        return None
    epochs = applied  # one update per epoch
    if steps > 1:  # the newest checkpoint at or before the epoch the ps is in
        epochs = max((e for e in found if e <= applied // steps), default=0)
        if applied > epochs * steps:
            log.warning("worker %d resumes at epoch %d: %d of its per-batch updates after that epoch's "
                        "checkpoint are applied again", worker, epochs, applied - epochs * steps)
    if not epochs:
        return None
    if epochs not in found:
        raise CheckpointError(f"{worker_checkpoint_uri(run, worker, epochs)}: missing, yet the parameter "
                              f"server has applied worker {worker}'s updates up to epoch {epochs} (found "
                              f"epochs {sorted(found) or 'none'})")
    return restore_worker(found[epochs], model)


def save_ps_checkpoint(run: AsyncRun, server, final: bool = False) -> int:
    """ps.h5: the server's weights and state (version, update log, progress), then the workers'
    checkpoints it has made unreachable go; returns its version."""
    from distributed import checkpoint
    weights, state = server.checkpoint()
    checkpoint.save(_checkpoint_uri(run, "ps.h5"), {"weights": weights}, {**state, "final": final})
    prune_worker_checkpoints(run, state["epochs_reported"])
    return state["version"]


def worker_checkpoint_uri(run: AsyncRun, worker: int, epoch: int) -> str:
    return _checkpoint_uri(run, f"worker-{worker}.epoch-{epoch}.h5")


def worker_checkpoints(run: AsyncRun, worker: int) -> dict[int, str]:
    """This worker's checkpoints in checkpoint_dir, by the epoch each resumes at."""
    from rdd_io import storage
    found = (re.fullmatch(rf".*/worker-{worker}\.epoch-(\d+)\.h5", uri)
             for uri in storage.glob(run.checkpoint_dir, f"worker-{worker}.epoch-*.h5"))
    return {int(m.group(1)): m.group(0) for m in found if m}


def prune_worker_checkpoints(run: AsyncRun, reported: list[int]) -> None:
    """Delete each worker's checkpoints of epochs before `reported` (ps.h5's reports): a resume can no
    longer reach them."""
    from rdd_io import storage
    for worker, first in enumerate(reported):
        for epoch, uri in worker_checkpoints(run, worker).items():
            if epoch < first:
                storage.remove_file(uri)


def _record_pid(run: AsyncRun, role: str) -> None:
    if run.checkpoint_dir:
        from distributed import pidfile
        from rdd_io import storage
        pidfile.write(storage.join(run.checkpoint_dir, "pids"), role)


def _checkpoint_uri(run: AsyncRun, name: str) -> str | None:
    from rdd_io import storage
    return storage.join(run.checkpoint_dir, name) if run.checkpoint_dir else None


def ps_credentials(workers: int) -> dict[str, str]:
    """For tfos.run(credentials=...): each worker's credential, and for the ps alone the key that
    checks them, so no role can act as another worker (all of them hold the connection secret)."""
    import secrets
    from distributed.param_server import worker_credential
    key = secrets.token_bytes(32)
    return {"ps:0": key.hex(), **{f"worker:{w}": worker_credential(key, w) for w in range(workers)}}


def own_credential(ctx) -> str:
    """The credential tfos.run delivered to this role alone (see ps_credentials)."""
    if not ctx.credential:
        raise RuntimeError(f"{ctx.name} received no credential: start the roles with "
                           f"tfos.run(credentials=ps_credentials(workers))")
    return ctx.credential


RECONNECT_TIMEOUT_S = 5.0  # one attempt to reach the ps again, after a connection was lost


def connect_ps(address, run: AsyncRun, worker: int, wait_s: float = 300, credential: str | None = None,
               lost: ConnectionError | None = None):
    """A connection to the ps. The first one: the ps listens only once its model is built, so refused
    connections are retried for up to wait_s. After `lost` (a connection broke): a refused one means the
    ps's process is gone and `lost` is raised at once; one that does not answer (a cut not over yet) is
    tried again for up to the run's push timeout; once connected, it waits as long as the ps's cut
    detection takes, so the ps has surely dropped the old connection and holds nothing of it."""
    from distributed.ps_connections import cut_detection_s
    from distributed.ps_client import PSClient
    deadline = time.monotonic() + (run.push_timeout_s if lost else wait_s)
    while True:
        try:
            client = PSClient(address, bytes.fromhex(run.ps_secret), worker=worker,
                              timeout_s=run.push_timeout_s + 30, name="ps:0", credential=credential,
                              connect_timeout_s=RECONNECT_TIMEOUT_S if lost else None)
            break
        except ConnectionError as exc:
            refused = isinstance(exc.__cause__, ConnectionRefusedError)
            if lost and (refused or time.monotonic() > deadline):
                raise lost from exc
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0 if lost else 0.5)
    if lost:
        time.sleep(cut_detection_s())
    return client


def ps_role(run: AsyncRun, ctx, new_model: Callable[[int], Any]) -> dict:
    """The parameter server; `new_model(seed)` builds the run's model (the initial weights)."""
    from distributed import checkpoint
    from distributed.param_server import ParameterServer
    _record_pid(run, "ps:0")
    quiet_tensorflow(run.tf_threads)
    sampler, origin = _sampling(run, "ps:0")
    model = new_model(run.seed)
    host, port = ctx.address.rsplit(":", 1)
    server = ParameterServer(model.get_weights(), bytes.fromhex(run.ps_secret), num_workers=run.workers,
                             s=run.s, schedule=run.schedule, host=host, port=int(port),
                             push_timeout_s=run.push_timeout_s,
                             worker_key=bytes.fromhex(own_credential(ctx)))
    ps_uri, restored = _checkpoint_uri(run, "ps.h5"), None
    if ps_uri and run.resume:
        found = checkpoint.load_if_present(ps_uri)
        if found is not None:
            server.restore(found[0]["weights"], found[1])
            restored = server.version
            log.info("parameter server resumed from %s at version %d", ps_uri, restored)
    server.start()
    every = run.checkpoint_every
    version = saved = server.version
    pruned = None
    try:
        while not server.wait_until_done(0) and not ctx.should_stop():
            version = server.wait_for_update(version, timeout=1.0)
            if ps_uri and every and version - saved >= every:
                saved = save_ps_checkpoint(run, server)
            elif ps_uri and not every:  # no ps.h5 until the end: prune by the reports received
                reported = server.epochs_reported()
                if reported != pruned:
                    pruned = reported
                    prune_worker_checkpoints(run, pruned)
        snap = server.snapshot()
    finally:
        server.stop()
    if ps_uri:  # a clean stop: the last state, whatever the interval
        save_ps_checkpoint(run, server, final=True)
    if run.weights_uri:
        model.set_weights(snap["weights"])
        _save_weights(model, run.weights_uri)
    return {"version": snap["version"], "updates": snap["updates"], "pushes_received": snap["pushes_received"],
            "pushes_withdrawn": snap["pushes_withdrawn"], "pushes_refused": snap["pushes_refused"],
            "events": snap["events"],
            "lost_workers": snap["lost_workers"], "resumed_at_version": restored, **_sampled(sampler, origin)}


class WorkerProgress:
    """A worker's progress for the driver's display (rate-limited within an epoch, always at its end)
    and its TensorBoard scalars per epoch: accuracy, loss, staleness, updates per second."""

    def __init__(self, run: AsyncRun, ctx, samples: int):
        from distributed.reporter import RoleReporter
        self.report, self.epochs = RoleReporter(ctx, run.tensorboard_uri), run.max_epochs
        self.steps = -(-samples // run.batch_size) if run.update == "batch" else None
        self.started, self.pushes, self.step = time.monotonic(), 0, 0
        self.taus: list[int] = []  # staleness of this epoch's pushes
        self.record: dict = {"epoch": 0, "epochs": self.epochs, "done": 0}

    def ups(self) -> float:
        return round(self.pushes / max(time.monotonic() - self.started, 1e-9), 3)

    def pushed(self, tau: int | None) -> None:
        self.pushes, self.step = self.pushes + 1, self.step + 1
        self.taus += [] if tau is None else [tau]
        if self.steps:  # per-batch updates: show the steps of the running epoch
            self.record.update(step=self.step, steps=self.steps, ups=self.ups(), tau=tau)
            self.report.progress(**self.record)

    def epoch_end(self, epoch: int, accuracy: float, loss: float) -> None:
        ups, staleness = self.ups(), (float(np.mean(self.taus)) if self.taus else None)
        self.record = {"epoch": epoch, "epochs": self.epochs, "done": epoch, "accuracy": round(accuracy, 4),
                       "loss": round(loss, 4), "ups": ups, "tau": self.taus[-1] if self.taus else None}
        self.report.progress(force=True, **self.record)
        self.report.scalars(epoch, {"accuracy": accuracy, "loss": loss, "staleness": staleness, "updates_per_s": ups})
        self.taus, self.step = [], 0

    def close(self, epochs_done: int) -> None:
        if epochs_done < self.epochs:  # stopped early: the overall bar counts what was done
            self.report.progress(force=True, **{**self.record, "total": epochs_done})
        self.report.close()


MAX_REJOINS = 3  # connections to the ps a worker may lose and win back in one run


def worker_role(run: AsyncRun, ctx, new_model: Callable[[int], Any], load_data: Callable[[], tuple]) -> dict:
    """A worker; `new_model(seed)` builds the model, `load_data()` gives (x, y, zipWithIndex indices) of its
    share when the run does not feed it through Spark.

    A connection to the ps that breaks while the ps lives (its host or this one was cut off, and the ps
    dropped this worker) is made again (connect_ps after `lost`) and the worker rejoins from its checkpoint, as a
    retried task would (at most MAX_REJOINS times; with checkpoints and a share it reads itself, since a
    Spark feed cannot be read again). Where the ps refuses the new connection it is gone: the loss is
    raised."""
    from distributed.ps_client import ParameterServerLost
    _record_pid(run, f"worker:{ctx.task_index}")
    quiet_tensorflow(run.tf_threads)
    sampler, origin = _sampling(run, f"worker:{ctx.task_index}")
    fed = FedShare(ctx) if run.feed == "spark" else None
    share = (None, None, None) if fed else load_data()
    seed = run.seed + 1 + ctx.task_index  # workers differ in shuffling and dropout, as on a cluster
    model = new_model(seed)
    host, port = ctx.addresses("ps")[0].rsplit(":", 1)
    address, lost, rejoins = (host, int(port)), None, 0
    while True:
        with connect_ps(address, run, ctx.task_index, credential=own_credential(ctx), lost=lost) as ps:
            try:
                history, resumes, stopped = _train_share(run, ctx, ps, model, fed, share, seed)
                break
            except ParameterServerLost as exc:
                if fed or not run.checkpoint_dir or rejoins >= MAX_REJOINS:
                    raise
                lost, rejoins = exc, rejoins + 1
                log.warning("worker %d: %s; connecting again to rejoin from its checkpoint", ctx.task_index, exc)
    samples = history["seen"][-1]["samples"] if history["seen"] else 0
    return {"samples": samples, **history, "resumed_at_epochs": resumes, "stopped": stopped, "left_at": time.time(),
            **_sampled(sampler, origin)}


def _train_share(run: AsyncRun, ctx, ps, model, fed, share: tuple, seed: int) -> tuple[dict, list, bool]:
    """Join the ps, resume from this worker's checkpoint if the ps holds its reports, train the epochs
    left and leave: (history, epochs resumed at, whether the criterion stopped it)."""
    from distributed.param_server import ParameterServerError
    x, y, index = share
    stopper = EarlyStopper(*CRITERIA[run.stop_on], rule=run.stopping_rule) if run.stop_on else None
    # seen: per epoch, how many samples this worker trained on and a checksum of their indices
    history = {"accuracy": [], "loss": [], "time": [], "seen": []}
    # A retried task (Spark's retry after this worker's process died), a rejoin or a resumed run goes
    # on from this worker's checkpoint of the epoch where its reports to the ps end.
    try:
        joined = ps.join(None if run.checkpoint_dir else 0)
    except ParameterServerError:  # this ps saw it leave: the task was retried after it had finished
        joined = None
    samples = run.share_sizes[ctx.task_index] if fed else len(y)
    steps = -(-samples // run.batch_size) if run.update == "batch" else 1  # pushes per epoch
    saved = resume_worker(run, ctx.task_index, joined, steps, model)
    first_epoch, resumes, finished = 0, [], False
    if saved is not None:
        history, first_epoch, finished = {"seen": [], **saved["history"]}, saved["epoch"], saved["done"]
        resumes = saved["resumes"] + [first_epoch]
        for acc in history["accuracy"] if stopper else []:  # its state is a function of the accuracies seen
            stopper.update(acc)
        log.info("worker %d resumes at epoch %d", ctx.task_index, first_epoch)
    # A worker that had finished before the run stopped only joins and leaves (the resumed ps expects it).
    last_epoch = first_epoch if finished else run.max_epochs
    started = time.monotonic() - (history["time"][-1] if history["time"] else 0.0)
    progress = WorkerProgress(run, ctx, samples)
    if fed and finished:  # TFoS skips this worker's partitions from now on
        fed.terminate()
    elif fed:  # the feed starts at epoch 0: what a resumed worker trained before is read and passed over
        for _ in range(first_epoch):
            fed.epoch()

    def exchange(train, before_push=None):
        """pull -> train locally -> push dW = W_read - W_local with the version read."""
        weights, version = ps.pull()
        model.set_weights(weights)
        out = train()
        if before_push:
            before_push(out)
        ps.push([w0 - w1 for w0, w1 in zip(weights, model.get_weights())], version)
        progress.pushed(ps.last_tau)
        return out

    def epoch_end(epoch: int, result: tuple[float, float]) -> bool:
        """Record the epoch; its checkpoint is durable before its (last) update is sent, so the ps
        never holds an update whose worker state could be lost. Whether the criterion stops it."""
        acc, loss = result
        history["accuracy"].append(acc)
        history["loss"].append(loss)
        history["time"].append(round(time.monotonic() - started, 3))
        stop = bool(stopper and stopper.update(acc))
        if run.checkpoint_dir:
            save_worker_checkpoint(worker_checkpoint_uri(run, ctx.task_index, epoch + 1), model, {
                "epoch": epoch + 1, "done": stop or epoch + 1 == run.max_epochs,
                "history": history, "resumes": resumes})
        return stop

    try:
        for epoch in range(first_epoch, last_epoch):
            if fed:
                x, y, index = fed.epoch()
            history["seen"].append(seen(index))
            rng = epoch_rng(seed, epoch)  # seed is this worker's (run seed + 1 + task index)
            if run.update == "batch":  # (its checkpoint then comes after the epoch's last push)
                acc, loss = train_epoch(model, x, y, run.batch_size, rng, step=exchange)
                stop = epoch_end(epoch, (acc, loss))
            else:
                ended = []
                acc, loss = exchange(lambda: train_epoch(model, x, y, run.batch_size, rng),
                                     before_push=lambda out: ended.append(epoch_end(epoch, out)))
                stop = ended[0]
            ps.report(epoch, {"accuracy": acc, "loss": loss})
            progress.epoch_end(epoch + 1, acc, loss)
            if stop:
                if fed:  # TFoS skips the partitions still to come for this worker
                    fed.terminate()
                break
    except BaseException:
        try:  # also on error: the ps stops counting on this worker, so no one waits for it
            ps.leave()
        except ConnectionError:  # the ps itself is what was lost: keep the error that says so
            pass
        raise
    else:
        ps.leave()
    finally:
        progress.close(len(history["accuracy"]))
    return history, resumes, bool(stopper and stopper.stopped)
