"""A cost model of one training step of the space-time parallel network, to extend the measured weak
scaling to 2^N processes on machines like the slides' (36 cores per node). Modelled, not measured.

Per process and step, the model counts what the code does (distributed/mgrit.py, models/spacetime.py):
- layer evaluations on the critical path: serial propagation costs n forward + n adjoint steps; MGRIT
  costs `iterations` V-cycles per solve (relaxations and restriction on every level but the coarsest,
  whose serial solve runs through the P_t processes one after another), plus n parameter-gradient
  evaluations either way;
- halo exchanges: one per layer evaluation (forward or adjoint) plus one per layer to re-pad the states
  the adjoint linearises at, each moving `halo_voxels` x channels x batch floats in at most 6 messages;
- MGRIT messages: one state per C-relaxation and per coarsest solve; one all-to-all gradient sum over
  the space group.
Time = evaluations x t_eval(voxels) + messages x latency + bytes / bandwidth, where t_eval(v) = a + b v
is fitted to the measured cells (`fit_eval_time`) and the latency and bandwidth are assumptions. Our MGRIT
keeps at least one coarse point per process on every level, so the coarsest serial sweep grows with P_t.
"""
from __future__ import annotations

import math

import numpy as np

from distributed import halo

FLOAT_BYTES = 4
MODES = ("space", "depth", "spacetime")


def split_spacetime(processes: int) -> tuple[int, int]:
    """(P_s, P_t) of a space x depth run on 2^k processes: P_t = 2^ceil(k/2), P_s = P / P_t."""
    k = int(math.log2(processes))
    p_t = 2 ** math.ceil(k / 2)
    return processes // p_t, p_t


def cell(mode: str, processes: int, side: int, layers_per_process: int) -> dict:
    """One weak-scaling cell: its process grid and global problem (see jobs/spacetime.py's docstring)."""
    if mode == "space":
        p_s, p_t = processes, 1
    elif mode == "depth":
        p_s, p_t = 1, processes
    elif mode == "spacetime":
        p_s, p_t = split_spacetime(processes)
    else:
        raise ValueError(f"unknown mode {mode!r}; one of {MODES}")
    grid = halo.grid_for(p_s)
    volume_blocks = halo.grid_for(processes) if mode != "spacetime" else grid  # space and depth: P x side^3
    shape = [side * g for g in volume_blocks]
    layers = layers_per_process * (processes if mode != "spacetime" else p_t)
    return {"id": f"{mode}-P{processes}", "mode": mode, "processes": processes, "p_s": p_s, "p_t": p_t,
            "grid": list(grid), "shape": shape, "layers": layers,
            "voxels_per_process": int(math.prod(shape)) // p_s, "layers_per_process": layers // p_t}


def cycle_evaluations(n: int, c: int, levels: int, fcf: bool) -> tuple[int, int]:
    """(layer evaluations of one V-cycle on a process with n fine steps, of which on the coarsest level)."""
    if levels == 1:
        return n, n
    f = n - n // c
    here = f + (n // c + f if fcf else 0) + 2 * (n // c) + f
    below, coarsest = cycle_evaluations(n // c, c, levels - 1, fcf)
    return here + below, coarsest


def step_counts(cell: dict, mgrit: dict, channels: int, kernel: int, batch: int) -> dict:
    """What one training step costs one process of `cell` (the busiest: an interior block)."""
    n, p_t, p_s = cell["layers_per_process"], cell["p_t"], cell["p_s"]
    levels = mgrit["levels"] if p_t > 1 else 1
    iterations = mgrit["iterations"] if levels > 1 else 1
    per_cycle, coarsest = cycle_evaluations(n, mgrit["coarsening"], levels, mgrit["fcf"])
    # the coarsest solve waits for the processes before it: P_t - 1 more coarsest sweeps in sequence
    critical = 2 * iterations * (per_cycle + (p_t - 1) * coarsest) + n
    evaluations = 2 * iterations * per_cycle
    r = (kernel - 1) // 2
    voxels = max(halo.halo_voxels(cell["shape"], cell["grid"], s, r) for s in range(p_s))
    exchanges = evaluations + n
    state_bytes = cell["voxels_per_process"] * channels * batch * FLOAT_BYTES
    c_relax = (levels - 1) * int(mgrit["fcf"]) + 1  # MGRIT sends per V-cycle: C-relaxations, coarsest solve
    params = n * (kernel ** 3 * channels * channels + channels) + kernel ** 3 * channels + 2 * channels + 2
    return {"evaluations_critical": critical, "halo_exchanges": exchanges,
            "halo_messages": exchanges * sum(2 for g in cell["grid"] if g > 1),
            "halo_bytes": exchanges * voxels * channels * batch * FLOAT_BYTES,
            "mgrit_messages": 2 * iterations * c_relax if p_t > 1 else 0,
            "mgrit_bytes": 2 * iterations * c_relax * state_bytes if p_t > 1 else 0,
            "reduce_messages": p_s - 1, "reduce_bytes": (p_s - 1) * params * 8}


def fit_eval_time(rows: list[tuple[float, float, float]]) -> tuple[float, float]:
    """(a, b) of t_eval(v) = a + b v from measured (seconds per step, evaluations, voxels) per cell, least
    squares; b >= 0 (one size alone gives b = 0)."""
    A = np.array([[e, e * v] for _, e, v in rows], float)
    y = np.array([t for t, _, _ in rows], float)
    if len({v for _, _, v in rows}) < 2:
        return float(np.sum(y * A[:, 0]) / np.sum(A[:, 0] ** 2)), 0.0
    (a, b), *_ = np.linalg.lstsq(A, y, rcond=None)
    if b < 0:
        return float(np.sum(y * A[:, 0]) / np.sum(A[:, 0] ** 2)), 0.0
    return float(a), float(b)


def step_time(counts: dict, voxels: int, a: float, b: float, latency_s: float, bandwidth_Bps: float) -> dict:
    compute = counts["evaluations_critical"] * (a + b * voxels)
    messages = counts["halo_messages"] + counts["mgrit_messages"] + counts["reduce_messages"]
    volume = counts["halo_bytes"] + counts["mgrit_bytes"] + counts["reduce_bytes"]
    comm = messages * latency_s + volume / bandwidth_Bps
    return {"compute_s": compute, "comm_s": comm, "step_s": compute + comm}


def modelled_rows(modes: list[str], exponents: range, side: int, layers_per_process: int, mgrit: dict,
                  channels: int, kernel: int, batch: int, a: float, b: float, latency_s: float,
                  bandwidth_Bps: float, cores_per_node: int) -> list[dict]:
    """The weak-scaling table extended to 2^k processes, one row per k: modelled seconds and bytes per
    step per process for each mode."""
    rows = []
    for k in exponents:
        p = 2 ** k
        row = {"processes": p, "nodes": math.ceil(p / cores_per_node)}
        for mode in modes:
            c = cell(mode, p, side, layers_per_process)
            counts = step_counts(c, mgrit, channels, kernel, batch)
            t = step_time(counts, c["voxels_per_process"], a, b, latency_s, bandwidth_Bps)
            row[f"{mode}_step_s"] = t["step_s"]
            row[f"{mode}_bytes"] = counts["halo_bytes"] + counts["mgrit_bytes"] + counts["reduce_bytes"]
        rows.append(row)
    return rows
