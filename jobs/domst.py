"""Dom-ST case study: a region's precipitation, distance to water and outlet discharge -> one bundle per
watershed -> Singlehead, Singlehead(+P) and Dom-ST trained per watershed, the watersheds spread over the
nodes at once (IP-D) and one after another on one node (S); NSE per watershed, S vs IP-D times.

    python jobs/domst.py --preset tiny      # a few minutes, on an embedded mini-cluster
    python jobs/domst.py --preset paper     # 23 watersheds, 6 years, the full models
    python jobs/domst.py --preset tiny --resume   # continue an interrupted run in the same --output

Each finished (watershed, approach) leaves its scores, and the one in training a checkpoint every
train.checkpoint_every epochs, under <output>/checkpoints/<mode>/ (layout: jobs/domst_resume.py); --resume
keeps the finished ones and continues the current one from its epoch. A node whose process dies fails the
run at once with a message naming the node and the watershed it was training (jobs/resume.py).
"""
from __future__ import annotations

import logging
import time

from jobs.domst_config import DomstConfig, DomstRun, ModelConfig
from jobs.resume import role_lost
from jobs.runner import Job, run_job
from rdd_io import storage

log = logging.getLogger("jobs.domst")
# ---------------------------------------------------------------------------------- pure helpers
def estimated_cost(pixels: int, model: ModelConfig, lookback: int) -> float:
    """Multiply-adds per sample of one watershed's three models (conv over its pixels + the LSTMs and
    dense layers every watershed pays): what a node spends on it, up to a constant."""
    def conv(channels: int) -> float:
        length, sizes, total = lookback, [channels] + model.filters, 0.0
        for a, b in zip(sizes, sizes[1:]):
            length -= model.kernel_size - 1
            total += length * model.kernel_size * a * b
        return total
    length = lookback - len(model.filters) * (model.kernel_size - 1)
    width, lstm = model.filters[-1], 0.0
    for u in model.lstm_units:
        lstm, width = lstm + length * 4 * u * (width + u), u
    return 3 * (conv(pixels) + lstm)


def assign(costs: dict[str, float], nodes: int, how: str = "balanced") -> list[list[str]]:
    """Watershed ids per node. balanced: largest cost first, each to the node with the least total so
    far (ties: the lower node); round_robin: in id order, node i gets ids i, i+nodes, ..."""
    if nodes < 1:
        raise ValueError(f"assign: nodes={nodes} must be >= 1")
    plan: list[list[str]] = [[] for _ in range(nodes)]
    if how == "round_robin":
        for i, wid in enumerate(sorted(costs)):
            plan[i % nodes].append(wid)
        return plan
    if how != "balanced":
        raise ValueError(f"assign: unknown assignment {how!r}")
    load = [0.0] * nodes
    for wid in sorted(costs, key=lambda w: (-costs[w], w)):
        node = min(range(nodes), key=lambda n: (load[n], n))
        plan[node].append(wid)
        load[node] += costs[wid]
    return plan


def run_times(results: dict) -> dict:
    """Role-measured times of one run: the training phase (first node's start to last node's end: the
    total training time of all its watersheds), the busiest node's seconds inside train_one, and the
    slowest node's start-up (Python worker to first watershed)."""
    nodes = [r for r in results.values() if r["watersheds"]]
    busy = max(sum(s["train_s"] for w in r["watersheds"] for s in w["scores"]) for r in nodes)
    return {"phase_s": max(r["t_end"] for r in nodes) - min(r["t_start"] for r in nodes),
            "busiest_node_s": busy, "nodes_used": len(nodes),
            "startup_s": max(r["startup_s"] for r in results.values())}


# ------------------------------------------------------------------------------------------ data
def input_files(job: Job) -> str:
    """The input folder URI; a synthetic region is simulated and written there in real formats when asked."""
    cfg = job.cfg.data
    uri = storage.to_uri(cfg.input or job.out("input"))
    if cfg.source == "simulate":
        from rdd_io.domst_sim import simulate_region, write_region
        started = time.monotonic()
        region = simulate_region(seed=cfg.seed, years=cfg.years, n_watersheds=cfg.watersheds,
                                 start_year=cfg.start_year)
        write_region(uri, region)
        log.info("simulated %d watersheds over %d years under %s (%.0fs)", cfg.watersheds, cfg.years, uri,
                 time.monotonic() - started)
    return uri


def build_watersheds(job: Job, uri: str) -> list[dict]:
    """The watershed bundles under <output>/watersheds/ (rdd_io.domst_bundle); each watershed's facts."""
    from rdd_io.domst_bundle import build_bundles
    return build_bundles(job.sc, uri, job.out("watersheds"))


# ------------------------------------------------------------------------------------- training
def run_mode(job: Job, mode: str, sheds: list[dict], approaches: list[str], label: str) -> dict:
    """One TFoS run of `approaches`: `nodes` workers (IP-D) or one (S), each training its watersheds one
    at a time; no ps is needed. `label` names the run's TensorBoard folder (<mode>_<label>)."""
    from distributed import tfos
    from jobs.domst_roles import role
    cfg = job.cfg
    nodes = min(cfg.executors(), len(sheds)) if mode == "ipd" else 1
    costs = {s["id"]: estimated_cost(s["pixels"], cfg.model, cfg.data.lookback) for s in sheds}
    plan = assign(costs, nodes, cfg.experiments.assignment)
    spec = DomstRun(model=cfg.model, train=cfg.train, placement=cfg.placement, approaches=list(approaches),
                    assignment=plan, bundles=job.out("watersheds"), lookback=cfg.data.lookback,
                    train_frac=cfg.data.train_frac, val_frac=cfg.data.val_frac,
                    index={s["id"]: i for i, s in enumerate(sheds)},
                    tensorboard_uri=job.out("tensorboard", f"{mode}_{label}") if cfg.train.tensorboard else None,
                    checkpoints=job.out("checkpoints", mode), resume=job.resume)
    log.info("%s %s: %d node(s), watersheds per node %s", mode, label, nodes, plan)
    t0 = time.time()
    up = []  # when every node has registered and its role started: driver_s counts from there
    results = job.run_roles(role, spec, tfos.Roles(ps=0, workers=nodes), title=f"{mode} {label}",
                            expected={f"worker:{k}": len(w) * len(approaches) for k, w in enumerate(plan)},
                            unit="models", timeout_s=cfg.train.timeout_s, on_failure=role_lost(f"{mode}: "),
                            while_running=lambda cluster: up.append(time.time()), input_mode="tensorflow")
    t_up = up[0]
    t_end = time.time()
    for node, wids in enumerate(plan):  # each node trained exactly the watersheds it was given
        got = [w["watershed"] for w in results[f"worker:{node}"]["watersheds"]]
        if got != wids:
            raise RuntimeError(f"{mode} {label}: worker {node} trained {got}, was assigned {wids}")
    times = run_times(results)
    times.update(nodes=nodes, driver_s=round(t_end - t_up, 2), driver_total_s=round(t_end - t0, 2))
    log.info("%s %s: training phase %.1fs (driver: %.1fs after the roles were up)", mode, label, times["phase_s"],
             times["driver_s"])
    return {"mode": mode, "label": label, "approaches": list(approaches), "plan": plan, "times": times,
            "nodes": results}


def run_all(job: Job, sheds: list[dict]) -> list[dict]:
    """Table 1 the paper's way: each approach in its own S run and its own IP-D run; then the ablation's
    variants together in one run of the primary mode (IP-D when it is asked for), for their NSE only."""
    ex = job.cfg.experiments
    primary = "ipd" if "ipd" in ex.modes else ex.modes[0]
    runs = []
    for mode in sorted(ex.modes, key=lambda m: m != primary):  # one mode's runs together: fewer executor changes
        runs += [run_mode(job, mode, sheds, [a], a) for a in ex.approaches]
        if mode == primary and ex.ablation:
            runs.append(run_mode(job, mode, sheds, ex.ablation, "ablation"))
    return runs


def pixcon_correlations(uri: str, sheds: list[dict], scores: dict) -> dict:
    """Per watershed, the learned Pix-Con weights against the runoff coefficients the simulator planted
    (truth.npz; read here only, for the report): over the watershed, inside each distance group (what K
    heads leave identifiable), and the weights against distance to water. Empty without a truth file."""
    import io

    import numpy as np

    from models.domst import partition
    from models.domst_metrics import correlation, within_groups
    from rdd_io.domst_read import read_distance, read_watersheds
    from rdd_io.domst_sim import TRUTH_FILE, WATERSHEDS_FILE
    truth_uri = storage.join(uri, TRUTH_FILE)
    if not storage.exists(truth_uri):
        return {}
    coef = np.load(io.BytesIO(storage.read_bytes(truth_uri)))["runoff_coef"].reshape(-1)
    meta = read_watersheds(storage.read_bytes(storage.join(uri, WATERSHEDS_FILE)), WATERSHEDS_FILE)
    dist = read_distance(storage.read_bytes(storage.join(uri, meta["distance_file"])), meta["distance_file"])[2]
    dist = dist.reshape(-1)
    pixels = {s["id"]: s["pixels"] for s in meta["watersheds"]}
    out = {}
    for shed in sheds:
        learned = scores.get(shed["id"], {}).get("domst", {}).get("pixcon")
        p = pixels[shed["id"]]
        try:
            found = correlation(coef[p], learned) if learned else None
        except ValueError:  # fewer than 3 pixels, or constant weights: undefined
            found = None
        if found:
            d = dist[p]
            found["spearman_within_groups"] = within_groups(coef[p], learned, partition(d, shed.get("k_groups") or 1))
            found["spearman_vs_distance"] = correlation(d, learned)["spearman"] if np.ptp(d) > 0 else None
            found["planted_vs_distance"] = correlation(d, coef[p])["spearman"] if np.ptp(d) > 0 else None
        out[shed["id"]] = found
    return out


def run(job: Job) -> dict:
    from jobs import domst_report
    cfg = job.cfg
    uri = input_files(job)
    sheds = build_watersheds(job, uri)
    log.info("%d watersheds, %d missing discharge days in all", len(sheds), sum(s["n_missing"] for s in sheds))
    if not job.resume:  # a new run: checkpoints of an earlier run in this output are not ours to continue
        storage.remove_tree(job.out("checkpoints"))
    runs = run_all(job, sheds)
    results = domst_report.collect(sheds, runs, list(cfg.experiments.approaches), list(cfg.experiments.ablation))
    results["pixcon"] = pixcon_correlations(uri, results["watersheds"], results["scores"])
    results["pixcon_design"] = {"head_input": cfg.model.head_input, "partition": cfg.model.partition,
                                "pixel_weights": cfg.model.pixel_weights}
    files = job.publish(lambda folder: domst_report.write_all(results, folder))
    return {**domst_report.summary(results), "outputs": files}


if __name__ == "__main__":
    raise SystemExit(run_job("domst", DomstConfig, run))
