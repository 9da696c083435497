"""Space-time parallelism (Sandia slides): a residual network of 3D convolutions segmenting blobs in noise,
split in space (halo exchange, as DistDL), in depth (MGRIT over the layers, as TorchBraid) and both (DTB),
in the slides' weak scaling: a fixed problem per process as the process count doubles.

    python jobs/spacetime.py --preset tiny      # 8^3 per process, 2 layers per process, 1-4 processes
    python jobs/spacetime.py --preset paper     # 16^3 per process, 8 layers per process, 1-8 processes

One TensorFlowOnSpark run starts max(experiments.processes) worker roles; they connect pairwise over the
project's authenticated wire (distributed/mesh.py; TF's gRPC servers have no authentication) and run
every cell (mode, process count) one after another, the roles a cell does not need waiting. Per cell:
the equality check (forward and gradients against the undecomposed network, on rank 0, per MGRIT
iteration), then timed training steps with the bytes each process moved. The driver writes the tables,
the modelled extension to 2^N processes on 36-core nodes and the report (jobs/spacetime_report.py).

Weak scaling as on the slides' table (problem per process: space, layers), for P = 2^k processes:
    space      P_s = P, P_t = 1:   side^3 per process, P x layers_per_process layers
    depth      P_s = 1, P_t = P:   P x side^3 per process, layers_per_process layers
    spacetime  P_s x P_t = P, P_t = 2^ceil(k/2):   side^3 and layers_per_process per process
space and depth solve the same global problem (volume P x side^3, P x layers_per_process layers).
"""
from __future__ import annotations

import logging
import time
from jobs.runner import Job, run_job
from jobs.spacetime_config import ExperimentsConfig, SpacetimeConfig, SpacetimeRun
from jobs.spacetime_model import cell

log = logging.getLogger("jobs.spacetime")


# ---------------------------------------------------------------------------------- pure helpers
def cells(ex: ExperimentsConfig) -> list[dict]:
    """Every cell to run, in order; P = 1 is the same serial problem in every mode, run once as 'serial'."""
    out = []
    for p in sorted(ex.processes):
        if p == 1:
            out.append({**cell("space", 1, ex.side, ex.layers_per_process), "id": "serial-P1", "mode": "serial"})
            continue
        out += [cell(mode, p, ex.side, ex.layers_per_process) for mode in ex.modes]
    return out


# ------------------------------------------------------------------------------------------ run
def run_cells(job: Job, plan: list[dict]) -> dict:
    """One TFoS run of max(processes) worker roles running every cell; their results by role."""
    from distributed import tfos
    from jobs.spacetime_roles import role
    cfg = job.cfg
    spec = SpacetimeRun.of(cfg, plan, job.secret)
    roles = cfg.executors()
    return job.run_roles(role, spec, tfos.Roles(ps=0, workers=roles), title="spacetime",
                         expected={f"worker:{r}": sum(r < c["p_s"] * c["p_t"] for c in plan) for r in range(roles)},
                         unit="cells", timeout_s=cfg.train.timeout_s, input_mode="tensorflow")


def run(job: Job) -> dict:
    from jobs import spacetime_report
    cfg = job.cfg
    plan = cells(cfg.experiments)
    log.info("%d cells on %d processes: %s", len(plan), cfg.executors(), ", ".join(c["id"] for c in plan))
    started = time.time()
    results = run_cells(job, plan)
    log.info("all cells ran in %.1fs", time.time() - started)
    report = spacetime_report.collect(cfg, plan, results)
    files = job.publish(lambda folder: spacetime_report.write_all(report, folder))
    return {**spacetime_report.summary(report), "outputs": files}


if __name__ == "__main__":
    raise SystemExit(run_job("spacetime", SpacetimeConfig, run))
