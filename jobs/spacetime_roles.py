"""Executor side of the space-time study: one worker role per process of the largest cell.

Every role listens on the port TensorFlowOnSpark reserved for it and joins the authenticated mesh
(distributed/mesh.py); then it runs the cells in order, each with the processes 0..P-1 (rank = t P_s + s),
the others skipping it:
1. the equality check: for MGRIT iterations 1..check_iterations (once when P_t = 1), forward and
   backward on one batch from the initial weights; rank 0 gathers the logits and the gradients and
   compares them with the undecomposed network in plain TensorFlow;
2. training: one untimed warm-up step (graph tracing), then `steps` timed Adam steps, with the bytes
   this process moved per tag and the halo exchanges it made;
3. on rank 0, the same problem trained serially (same data, same initial weights), for the loss.
TensorFlow is imported inside the functions (they run on executors).
"""
from __future__ import annotations

import time

import numpy as np

from conf import from_json
from jobs.spacetime_config import SpacetimeRun

GATHER, BARRIER = "gather", "barrier"
CHECK_BATCH = 10 ** 6  # the equality check's batch: a step number training never reaches


def _blocks(cell: dict, data, step: int, s: int):
    from distributed import halo
    from rdd_io.spacetime_sim import blobs
    x, y = blobs(data.seed, step, data.batch, cell["shape"], data.blobs, data.noise)
    return halo.scatter(x, cell["grid"], s), halo.scatter(y, cell["grid"], s), x, y


def _net(run: SpacetimeRun, cell: dict, iterations: int | None = None):
    from models import spacetime as st
    m, mg = run.model, run.mgrit
    spec = st.NetSpec(m.channels, m.kernel, cell["layers"], m.t_final)
    mgrit = st.MgritSpec(mg.coarsening, mg.levels, iterations or mg.iterations, mg.fcf)
    return spec, mgrit, st.init_params(spec, m.seed)


def rel_diff(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def barrier(comm, ranks: list[int], me: int) -> None:
    """Every rank of `ranks` has arrived (a message to and from each)."""
    for peer in ranks:
        if peer != me:
            comm.send(peer, BARRIER, np.zeros(1, np.float32))
    for peer in ranks:
        if peer != me:
            comm.recv(peer, BARRIER)


def check(run: SpacetimeRun, cell: dict, comm, rank: int) -> dict:
    """Forward and gradients of the decomposed network against the undecomposed one, per MGRIT
    iteration count; the comparison on rank 0 (the others return their residuals only)."""
    from distributed import halo
    from models import spacetime as st
    p_t, p_s = cell["p_t"], cell["p_s"]
    counts = list(range(1, run.check_iterations + 1)) if p_t > 1 else [1]
    xs, ys, x, y = _blocks(cell, run.data, CHECK_BATCH, rank % p_s)
    out = {"iterations": [], "forward_rel_diff": [], "gradient_rel_diff": [], "loss_rel_diff": []}
    reference = None
    for iterations in counts:
        spec, mgrit, params = _net(run, cell, iterations)
        layout = st.Layout(tuple(cell["shape"]), tuple(cell["grid"]), p_t, rank)
        proc = st.Process(spec, mgrit, layout, comm, params)
        grads, stats, logits = proc.loss_and_grads(xs, ys, iterations, warm=False)
        out["residuals_forward"], out["residuals_adjoint"] = stats.residuals_forward, stats.residuals_adjoint
        names = sorted(grads)
        if rank != 0:
            if layout.t == p_t - 1:
                comm.send(0, GATHER, logits)
                comm.send(0, GATHER, np.array(stats.loss_sum))
            if layout.s == 0:
                for name in names:
                    comm.send(0, GATHER, grads[name])
            continue
        if reference is None:
            reference = st.reference_loss_and_grads(spec, params, x, y)
        ref_loss, ref_grads, ref_logits = reference
        last = [layout.comm_rank(s, p_t - 1) for s in range(p_s)]
        blocks, loss_sum = {}, stats.loss_sum
        for s, r in enumerate(last):
            if r == 0:
                blocks[s] = logits[..., None]
            else:
                blocks[s] = comm.recv(r, GATHER)[..., None]
                loss_sum = float(comm.recv(r, GATHER))
        full = {name: [grads[name]] for name in names}
        for t in range(1, p_t):
            theirs = ["res_b", "res_w"] + (["close_b", "close_w"] if t == p_t - 1 else [])
            for name in sorted(theirs):  # the order the owner sends in
                full.setdefault(name, []).append(comm.recv(layout.comm_rank(0, t), GATHER))
        got = {name: np.concatenate(v) if name.startswith("res_") else v[0] for name, v in full.items()}
        out["iterations"].append(iterations)
        out["forward_rel_diff"].append(rel_diff(halo.gather(blocks, cell["shape"], cell["grid"]),
                                                ref_logits[..., None]))
        out["gradient_rel_diff"].append(max(rel_diff(got[k], ref_grads[k]) for k in ref_grads))
        out["loss_rel_diff"].append(abs(loss_sum / x[..., 0].size - ref_loss) / abs(ref_loss))
    return out


def train(run: SpacetimeRun, cell: dict, comm, rank: int) -> dict:
    """`steps` timed Adam steps after one warm-up step: seconds per step, loss per step (last group),
    and this process's traffic over the timed steps."""
    from distributed import halo
    from distributed.mesh import delta
    from models import spacetime as st
    spec, mgrit, params = _net(run, cell)
    layout = st.Layout(tuple(cell["shape"]), tuple(cell["grid"]), cell["p_t"], rank)
    proc = st.Process(spec, mgrit, layout, comm, params)
    opt = st.Adam(run.model.learning_rate)
    total = run.data.batch * int(np.prod(cell["shape"]))
    step_s, losses, before, exchanges = [], [], None, {}
    barrier(comm, list(range(cell["p_s"] * cell["p_t"])), rank)
    for step in range(run.steps + 1):
        xs, ys, _, _ = _blocks(cell, run.data, step, layout.s)
        if step == 1:  # step 0 traced the graphs: not timed, not counted
            before, exchanges = comm.counters.snapshot(), dict(proc.halo_exchanges)
        started = time.perf_counter()
        grads, stats, _ = proc.loss_and_grads(xs, ys)
        proc.apply(grads, opt)
        if step:
            step_s.append(time.perf_counter() - started)
        losses.append(stats.loss_sum / total)
    made = {c: n - exchanges.get(c, 0) for c, n in proc.halo_exchanges.items()}
    voxels = halo.halo_voxels(cell["shape"], cell["grid"], layout.s, spec.r)
    analytic = sum(c * n for c, n in made.items()) * voxels * run.data.batch * 4
    return {"step_s": step_s, "loss": losses if layout.t == cell["p_t"] - 1 else None,
            "traffic": delta(comm.counters.snapshot(), before), "halo_exchanges": {str(c): n for c, n in made.items()},
            "halo_bytes_analytic": analytic, "steps_forward": stats.steps_forward,
            "steps_adjoint": stats.steps_adjoint, "residuals_forward": stats.residuals_forward,
            "residuals_adjoint": stats.residuals_adjoint}


def serial_losses(run: SpacetimeRun, cell: dict) -> list[float]:
    """The same problem on one process: same weights, data and optimizer (the loss to compare with)."""
    from distributed.mesh import LocalWorld
    from models import spacetime as st
    one = {**cell, "p_s": 1, "p_t": 1, "grid": [1, 1, 1]}
    spec, mgrit, params = _net(run, one)
    proc = st.Process(spec, mgrit, st.Layout(tuple(cell["shape"]), (1, 1, 1), 1, 0), LocalWorld(1).comm(0), params)
    opt = st.Adam(run.model.learning_rate)
    losses = []
    for step in range(run.steps + 1):
        xs, ys, _, _ = _blocks(one, run.data, step, 0)
        grads, stats, _ = proc.loss_and_grads(xs, ys)
        proc.apply(grads, opt)
        losses.append(stats.loss_sum / xs[..., 0].size)
    return losses


def run_cells(run: SpacetimeRun, comm, rank: int, progress=lambda **fields: None) -> dict:
    """Every cell this rank takes part in: {cell id: its check, training and (rank 0) serial losses}."""
    out = {}
    mine = [c for c in run.cells if rank < c["p_s"] * c["p_t"]]
    for done, cell in enumerate(mine):
        progress(what=cell["id"], done=done, total=len(mine))
        result = {"s": rank % cell["p_s"], "t": rank // cell["p_s"], "check": check(run, cell, comm, rank)}
        result.update(train(run, cell, comm, rank))
        if rank == 0 and run.serial_training and cell["processes"] > 1:
            result["serial_loss"] = serial_losses(run, cell)
        out[cell["id"]] = result
    progress(force=True, what="done", done=len(mine), total=len(mine))
    return out


def role(args: dict, ctx) -> dict:
    """One process of every cell that needs it (rank = the worker's task index); args["spec"]: the
    SpacetimeRun as JSON."""
    from distributed.mesh import Mesh
    from distributed.tf_process import quiet_tensorflow
    run = from_json(SpacetimeRun, args["spec"])
    quiet_tensorflow(run.tf_threads)
    rank, addresses = ctx.task_index, ctx.addresses("worker")
    started = time.time()
    mesh = Mesh(rank, addresses, bytes.fromhex(run.mesh_secret), timeout_s=run.mesh_timeout_s)
    try:
        cells = run_cells(run, mesh, rank, ctx.progress)
    finally:
        mesh.close()
    return {"rank": rank, "address": ctx.address, "mesh_s": round(time.time() - started, 3), "cells": cells}
