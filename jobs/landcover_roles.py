"""Executor side of the land-cover study: TF servers (ps, workers) and the chief that drives them.

ps:0 and worker:0..2 each run a tf.distribute.Server on the port TFoS reserved for them and stay up
until the chief has reported. The chief connects to the cluster, builds the model's units with their
variables on /job:ps, and trains each experiment cell with the cell's placement plan: every unit runs
under the device of its role. Every role samples its own process (bytes in/out, CPU, wait, memory)
for the whole run and returns the series with a wall-clock origin, so the driver can cut it per cell.
"""
from __future__ import annotations

import time

import numpy as np

from conf import from_json
from distributed import netns, pidfile
from distributed.cell_store import CellStore
from distributed.epochs import epoch_order
from distributed.tf_process import quiet_tensorflow
from jobs.landcover_config import LandcoverRun
from jobs.resume import PeerWatch, RoleLost, attempt, error_line, unreachable_roles
from rdd_io import storage
from rdd_io.landcover_patches import read_patch_set, volumes

CHECKPOINT_FILE = "chief.h5"  # per cell, in its folder of the CellStore <output>/checkpoints/


def _sampler(role: str, interval_s: float):
    from distributed.metrics import Sampler
    return Sampler.for_self(role, interval_s).start(), time.time()


def server_role(run: LandcoverRun, ctx) -> dict:
    tf = quiet_tensorflow(run.tf_threads)
    name = f"{ctx.job_name}:{ctx.task_index}"
    sampler, origin = _sampler(name, run.sample_interval_s)
    server = tf.distribute.Server(tf.train.ClusterSpec(ctx.tf_cluster_spec), job_name=ctx.job_name,
                                  task_index=ctx.task_index, protocol="grpc", start=True)
    finished = ctx.wait_for_roles(["chief:0"], timeout_s=run.timeout_s)
    del server  # the process ends with the role; TF servers cannot be stopped in place
    return {"series": sampler.stop(), "origin": origin, "meta": sampler.meta, "chief_finished": finished}


def load_patches(uri: str) -> dict[str, np.ndarray]:
    """A patch set read from outside the run's private network (storage is on the machine's network)."""
    with netns.outside():
        return read_patch_set(uri)


def device_data(tf, data, model_cfg: dict, place=None) -> dict:
    """The patch set as variables, each beside the unit that reads it (models.landcover.DATA_UNITS)
    under `place`. `data` is a patch-set URI: each modality's raw shards (rdd_io.landcover_patches
    .modality_parts) are read and decoded by the process that holds the variable, so no patch crosses
    the network (the thesis's workers kept their data locally); or arrays already in this process.
    TensorFlow has no HDFS file system: a patch set on HDFS is read here, by the chief, and each
    variable is created on its worker from that copy, once per cell, before the measured steps."""
    from models.landcover import DATA_UNITS, _no_place, resolve
    from rdd_io.landcover_patches import MODALITY_DTYPES, modality_parts
    place, p = place or _no_place, resolve(model_cfg)
    shapes = {"rgb": (-1, p["patch"], p["patch"], p["rgb_bands"], 1),
              "hsi": (-1, p["patch"], p["patch"], p["hsi_bands"], 1), "label": (-1,)}
    if not isinstance(data, dict) and not storage.is_local(data):
        data = load_patches(data)
    if isinstance(data, dict):
        rgb, hsi, labels = volumes(data)
        arrays = {"rgb": rgb, "hsi": hsi, "label": labels}
    out = {}
    for key, unit in DATA_UNITS.items():
        with place(unit):
            if isinstance(data, dict):
                value = tf.constant(arrays[key])
            else:
                parts = [tf.io.decode_raw(tf.io.read_file(uri), MODALITY_DTYPES[key])
                         for uri in modality_parts(data, key)]
                value = tf.reshape(tf.concat(parts, 0), shapes[key])
                if key == "rgb":
                    value = value / 255.0
            out[key] = tf.Variable(value, trainable=False, name=f"data_{key}")
    return out


def quiet_mark(gap_s: float, sampler=None) -> list[float]:
    """Wall times [start, middle, end] of a pause without a step: every role's byte counters are flat
    there, so a sample anywhere in the pause reads them at the middle exactly. Each half lasts gap_s / 2 and, under
    load (samplers slowed down), until this process's own sampler has taken a sample in it, so that the
    other roles' samplers, alike, most likely have too."""
    def half():
        start, taken = time.monotonic(), sampler.samples() if sampler else 0
        while time.monotonic() - start < gap_s / 2 or (sampler and sampler.samples() == taken
                                                       and time.monotonic() - start < 10 * gap_s):
            time.sleep(0.05)
    start = time.time()
    half()
    mark = time.time()
    half()
    return [start, mark, time.time()]


def train_cell(tf, model_cfg: dict, cell: dict, data, seed: int, place=None, report=None,
               checkpoint: dict | None = None, gap_s: float = 0.0, sampler=None) -> dict:
    """Train one experiment cell from the seed's initial weights; per-epoch loss, accuracy, time.

    `data`: a patch-set URI or arrays (device_data). The cell trains cell["epochs"] epochs, and more
    whole epochs until cell["window_s"] seconds have passed (when given). `report(record, epoch_end)`,
    if given, hears of every step and of every epoch's end. `checkpoint` {"uri", "every", "resume"}:
    save the cell's state to `uri` every `every` epochs and, with `resume`, start from the state found
    there (the result says from which epoch). With `gap_s` > 0 the cell pauses (quiet_mark) after
    cell["warmup_steps"] steps and after its last step; "steady" in the result gives the two pauses
    ([start, middle, end] wall times) and the steps between them (pauses are left out of epoch times)."""
    import keras

    from models import landcover, registry
    keras.utils.set_random_seed(seed)
    scope = place("variables") if place else tf.device(None)
    units = registry.build("landcover-units", model_cfg, place)
    with scope:
        optimizer = landcover.make_optimizer(model_cfg)
    batches = device_data(tf, data, model_cfg, place)
    with scope:
        step = landcover.indexed_step_fn(units, optimizer, batches, place)
    n = int(batches["label"].shape[0])
    history = {"loss": [], "accuracy": [], "epoch_time_s": [], "steps": 0, "first_step_loss": None}
    first = 0
    if checkpoint and checkpoint["resume"]:
        history, first = restore_cell(checkpoint["uri"], units, optimizer) or (history, 0)
    first_loss = history.pop("first_step_loss")
    bs = cell["batch_size"]
    steps = -(-n // bs)
    warmup, steady = cell.get("warmup_steps", 0), {}
    started_cell = time.monotonic()
    epoch = first
    while epoch < cell["epochs"] or time.monotonic() - started_cell < cell.get("window_s", 0):
        started, losses, correct, paused = time.monotonic(), [], 0, 0.0
        order = epoch_order(seed, epoch, n)
        for start in range(0, n, bs):
            idx = np.sort(order[start:start + bs]).astype(np.int32)
            loss, hits = step(tf.constant(idx))
            losses.append(float(loss) * len(idx))
            correct += int(hits)
            first_loss = float(loss) if first_loss is None else first_loss
            history["steps"] += 1
            if gap_s and history["steps"] == warmup:
                paused = time.monotonic()
                steady = {"from": quiet_mark(gap_s, sampler), "steps_before": history["steps"]}
                paused = time.monotonic() - paused
            if report:
                report({"epoch": epoch, "epochs": cell["epochs"], "step": start // bs + 1, "steps": steps}, False)
        history["loss"].append(sum(losses) / n)
        history["accuracy"].append(correct / n)
        history["epoch_time_s"].append(round(time.monotonic() - started - paused, 3))
        epoch += 1
        if report:
            report({"epoch": epoch, "epochs": max(cell["epochs"], epoch), "loss": history["loss"][-1],  # unrounded
                    "accuracy": history["accuracy"][-1],
                    "epoch_time_s": history["epoch_time_s"][-1]},  # for TensorBoard
                   True)
        every = checkpoint["every"] if checkpoint else 0
        if every and epoch % every == 0 and epoch < cell["epochs"]:  # the last one is the result
            save_cell(checkpoint["uri"], units, optimizer, epoch, {**history, "first_step_loss": first_loss})
    if steady:
        steady.update(to=quiet_mark(gap_s, sampler), steps=history["steps"] - steady.pop("steps_before"))
    test = {}
    if cell.get("test_uri"):  # population BN statistics first (models.landcover.recalibrate_bn), then the test
        landcover.recalibrate_bn(units, batches, bs, place)
        test = evaluate(tf, units, cell["test_uri"], model_cfg, place, bs)
    return {**history, "first_step_loss": first_loss, "resumed_from_epoch": first, "steady": steady or None,
            **test}


def evaluate(tf, units: dict, data, model_cfg: dict, place, batch_size: int) -> dict:
    """Loss and accuracy of the trained units on a patch set (the held-out test region), read where
    each modality is used, as in training."""
    from models import landcover
    test = device_data(tf, data, model_cfg, place)
    run = landcover.indexed_eval_fn(units, test, place)
    n, loss, hits = int(test["label"].shape[0]), 0.0, 0
    for start in range(0, n, batch_size):
        batch_loss, batch_hits = run(tf.constant(np.arange(start, min(start + batch_size, n), dtype=np.int32)))
        loss, hits = loss + float(batch_loss), hits + int(batch_hits)
    return {"test_loss": loss / n, "test_accuracy": hits / n, "test_samples": n}


# ---------------------------------------------------------------------------- checkpoints, faults
def save_cell(uri: str, units: dict, optimizer, epochs_done: int, history: dict) -> None:
    """The chief's checkpoint of a cell (layout: jobs/landcover.py's docstring)."""
    from distributed import checkpoint
    from models import landcover
    arrays = {"variables": [v.numpy() for v in landcover.unit_variables(units)],
              "optimizer": checkpoint.optimizer_arrays(optimizer)}
    with netns.outside():
        checkpoint.save(uri, arrays, {"epoch": epochs_done, "history": history})


def restore_cell(uri: str, units: dict, optimizer) -> tuple[dict, int] | None:
    """Put a cell's checkpoint back into freshly built units and optimizer: (history, epochs done),
    or None when the cell has no checkpoint yet."""
    from distributed import checkpoint
    from models import landcover
    with netns.outside():
        found = checkpoint.load_if_present(uri)
    if found is None:
        return None
    arrays, state = found
    checkpoint.assign_variables(landcover.unit_variables(units), arrays["variables"], uri)
    trainable = [v for name in landcover.UNITS for v in units[name].trainable_variables]
    checkpoint.restore_optimizer(optimizer, trainable, arrays["optimizer"], uri)
    return state["history"], int(state["epoch"])


class CellProgress:
    """The chief's progress in one cell, for the driver's display (steps rate-limited, epoch ends
    always) and for TensorBoard (<tensorboard_uri>/<cell id>/chief_0/: loss, accuracy, epoch time)."""

    def __init__(self, ctx, tensorboard_uri: str | None, cell: dict, done_before: int):
        from distributed.reporter import RoleReporter
        from rdd_io import storage
        self.cell, self.done_before = cell, done_before
        self.last: dict = {}
        self.report = RoleReporter(ctx, tensorboard_uri and storage.join(tensorboard_uri, cell["id"]), netns.outside)

    def __call__(self, record: dict, epoch_end: bool) -> None:
        if epoch_end:
            self.last = {k: record[k] for k in ("loss", "accuracy")}
            self.report.scalars(record["epoch"], {k: record[k] for k in ("loss", "accuracy", "epoch_time_s")})
        done = self.done_before + min(record["epoch"], self.cell["epochs"])  # a window may add epochs
        self.report.progress(force=epoch_end, what=self.cell["id"], done=done,
                             **{**self.last, **{k: v for k, v in record.items() if k != "epoch_time_s"}})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.report.close()


def chief_role(run: LandcoverRun, ctx) -> dict:
    tf = quiet_tensorflow(run.tf_threads)
    from models import landcover
    sampler, origin = _sampler("chief:0", run.sample_interval_s)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(ctx.tf_cluster_spec), task_type="chief", task_id=0, rpc_layer="grpc")
    tf.config.experimental_connect_to_cluster(resolver, job_name="chief", make_master_device_default=False)
    plans = run.plans
    cells = []
    done = 0  # epochs of all cells, for the driver's overall bar
    store = CellStore(run.checkpoints, run.resume)
    addresses = {f"{job}:{i}": address.rsplit(":", 1)[0] for job, listed in ctx.cluster_spec.items()
                 for i, address in enumerate(listed)}  # each role's host (for the figures per host)
    current = {"cell": run.cells[0]}
    watch = _watch_servers(ctx, plans, addresses, current)
    try:
        for cell in run.cells:
            current["cell"] = cell
            with netns.outside():
                finished = store.finished(cell["id"])
            if finished:  # finished before the run was interrupted
                cells.append(finished)
                done += cell["epochs"]
                continue
            t0 = time.time()
            saved = {"uri": store.path(cell["id"], CHECKPOINT_FILE),
                     "every": run.checkpoint_every, "resume": run.resume}
            with CellProgress(ctx, run.tensorboard_uri, cell, done) as report:
                try:
                    out = train_cell(tf, run.model, cell, cell["data_uri"], run.seed,
                                     landcover.make_place(plans[cell["plan"]]), report, saved, run.gap_s, sampler)
                except tf.errors.OpError as exc:  # a TF server gone fails the step at once (gRPC UNAVAILABLE)
                    lost = unreachable_roles(ctx.tf_cluster_spec, skip="chief:0")
                    if not lost:
                        raise
                    line = error_line(getattr(exc, "message", None) or str(exc))
                    raise RoleLost("; ".join(f"{describe_role(r, cell['plan'], plans[cell['plan']])} was lost during "
                                             f"cell {cell['id']} ({type(exc).__name__}: {line}); "
                                             f"continue with --resume" for r in lost)) from None
            done += cell["epochs"]
            cells.append({**cell, **out, "t_start": t0, "t_end": time.time()})
            with netns.outside():
                store.finish(cell["id"], cells[-1])
    finally:
        watch.stop()
    return {"cells": cells, "series": sampler.stop(), "origin": origin, "meta": sampler.meta, "addresses": addresses}


def _watch_servers(ctx, plans: dict, addresses: dict[str, str], current: dict) -> PeerWatch:
    """The chief's watch of the TF servers (jobs/resume.py): a server whose host goes silent fails the run
    at once, naming the role, its host (`addresses`) and its units in the cell `current["cell"]`."""
    def host_silent(role: str, address: str, waited_s: float) -> None:
        cell = current["cell"]
        ctx.fail(RoleLost(f"{describe_role(role, cell['plan'], plans[cell['plan']])} was lost during cell "
                          f"{cell['id']}: its host {addresses[role]} stopped answering (no answer for "
                          f"{waited_s:.0f} s); continue with --resume"))
    servers = {f"{job}:{i}": address for job, listed in ctx.tf_cluster_spec.items()
               for i, address in enumerate(listed) if f"{job}:{i}" != "chief:0"}
    with netns.outside():  # the watch's thread enters the TF network itself and reports from outside it
        return PeerWatch(servers, host_silent, ctx.private_network).start()


def describe_role(role: str, plan_name: str, plan: dict) -> str:
    """'worker:1 (the TF server holding units hsi_* under plan default)', for messages about a lost role."""
    if role.startswith("chief"):
        return f"{role} (the process driving the training)"
    units = ", ".join(map(str, plan.get(role, [])))
    holds = f"units {units}" if units else "no units"
    if role == plan.get("variables", "ps:0"):
        holds = "the variables and the optimizer state" + (f", and units {units}" if units else "")
    return f"{role} (the TF server holding {holds} under plan {plan_name})"


def current_cell(run: LandcoverRun) -> dict:
    """The first cell without a result: the one being trained when a role was lost."""
    store = CellStore(run.checkpoints, run.resume)
    return next((c for c in run.cells if not store.is_finished(c["id"])), run.cells[-1])


def role(args: dict, ctx) -> dict:
    """args["spec"]: the LandcoverRun as JSON."""
    run = from_json(LandcoverRun, args["spec"])
    name = f"{ctx.job_name}:{ctx.task_index}"
    tries = attempt()
    if tries:  # Spark started this role again: its first process died, and the TF cluster with it
        cell = current_cell(run)
        raise RoleLost(f"{describe_role(name, cell['plan'], run.plans[cell['plan']])} was lost during cell "
                       f"{cell['id']}: its process died (Spark started it again, attempt {tries + 1}); "
                       f"continue with --resume")
    pidfile.write(storage.join(run.checkpoints, "pids"), name)
    with ctx.private_network():  # TensorFlow's servers have no authentication: none but the run's roles reach them
        return chief_role(run, ctx) if ctx.job_name == "chief" else server_role(run, ctx)
