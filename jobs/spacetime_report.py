"""Driver side of the space-time study: the roles' results -> tables, the modelled extension, figures and
report.md beside the slides' qualitative result (REFERENCE_NUMBERS.md: no numbers are given there)."""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict

from jobs import spacetime_model as sm
from jobs.output_files import markdown_table, pyplot, save_png, write_csv, write_text

LABELS = {"serial": "one process", "space": "space only (DistDL)", "depth": "depth only (TorchBraid)",
          "spacetime": "space x depth (DTB)"}
SLIDES = {"space": "16^3, 2^N x 8 layers", "depth": "2^N x 16^3, 8 layers", "spacetime": "16^3, 8 layers",
          "finding": "DTB keeps its time per step as the processes double while DistDL alone and TorchBraid alone "
                     "slow down; from a 128^3 volume with 128 layers DTB is up to two orders of magnitude faster "
                     "(slides 8-9; 2.1 GHz Broadwell E5-2695 v4, 36 cores and 128 GB per node)"}
EQUAL_REL = 1e-5  # the decomposed network equals the undecomposed one within this relative difference
TIMED_TAGS = ("halo", "mgrit-f", "mgrit-a", "reduce")


def _per_rank(results: dict, cell_id: str) -> list[dict]:
    return [r["cells"][cell_id] for r in sorted(results.values(), key=lambda r: r["rank"]) if cell_id in r["cells"]]


def _traffic(ranks: list[dict], key: str, steps: int, tags=TIMED_TAGS) -> list[float]:
    return [sum(r["traffic"].get(t, {}).get(key, 0) for t in tags) / steps for r in ranks]


def cell_row(cell: dict, ranks: list[dict], steps: int) -> dict:
    """One cell's measured figures (the slowest process sets the time: steps end together)."""
    step_s = statistics.median(max(s) for s in zip(*(r["step_s"] for r in ranks)))
    sent = _traffic(ranks, "sent_frame", steps)
    halo_measured = sum(_traffic(ranks, "recv_payload", steps, ("halo",)))
    halo_analytic = sum(r["halo_bytes_analytic"] for r in ranks) / steps
    check = ranks[0]["check"]
    loss = next(r["loss"] for r in ranks if r["loss"] is not None)
    serial = ranks[0].get("serial_loss")
    return {"cell": cell["id"], "mode": cell["mode"], "processes": cell["processes"], "p_s": cell["p_s"],
            "p_t": cell["p_t"], "volume": "x".join(map(str, cell["shape"])), "layers": cell["layers"],
            "voxels_per_process": cell["voxels_per_process"], "layers_per_process": cell["layers_per_process"],
            "step_s": step_s, "bytes_per_step_per_process": statistics.fmean(sent),
            "bytes_per_step_max": max(sent), "halo_bytes_per_step": halo_measured,
            "halo_bytes_analytic": halo_analytic,
            "halo_measured_over_analytic": halo_measured / halo_analytic if halo_analytic else None,
            "mgrit_bytes_per_step": statistics.fmean(_traffic(ranks, "sent_payload", steps, ("mgrit-f", "mgrit-a"))),
            "check_iterations": check["iterations"][-1], "forward_rel_diff": check["forward_rel_diff"][-1],
            "gradient_rel_diff": check["gradient_rel_diff"][-1], "loss": loss[-1],
            "serial_loss": serial[-1] if serial else None,
            "loss_rel_diff_vs_serial": abs(loss[-1] - serial[-1]) / abs(serial[-1]) if serial else None}


def convergence_rows(plan: list[dict], results: dict) -> list[dict]:
    """Per cell and MGRIT iteration count k: the check with k iterations against the undecomposed network,
    and the residual norms (over all processes) after the k-th iteration of the check with the most."""
    rows = []
    for cell in plan:
        ranks = _per_rank(results, cell["id"])
        check = ranks[0]["check"]
        fwd = [sum(v) ** 0.5 for v in zip(*(r["check"]["residuals_forward"] for r in ranks))]
        adj = [sum(v) ** 0.5 for v in zip(*(r["check"]["residuals_adjoint"] for r in ranks))]
        for k, it in enumerate(check["iterations"]):
            rows.append({"cell": cell["id"], "iteration": it, "forward_rel_diff": check["forward_rel_diff"][k],
                         "gradient_rel_diff": check["gradient_rel_diff"][k], "loss_rel_diff": check["loss_rel_diff"][k],
                         "forward_residual": fwd[k] if k < len(fwd) else None,
                         "adjoint_residual": adj[k] if k < len(adj) else None})
    return rows


def training_rows(plan: list[dict], results: dict) -> list[dict]:
    rows = []
    for cell in plan:
        ranks = _per_rank(results, cell["id"])
        loss = next(r["loss"] for r in ranks if r["loss"] is not None)
        serial = ranks[0].get("serial_loss") or [None] * len(loss)
        rows += [{"cell": cell["id"], "step": k, "loss": v, "serial_loss": s}
                 for k, (v, s) in enumerate(zip(loss, serial))]
    return rows


def weak_rows(cells: list[dict], modes: list[str]) -> list[dict]:
    """Measured weak scaling: one row per process count, a column pair per mode (P = 1 is one serial run)."""
    rows = []
    for p in sorted({c["processes"] for c in cells}):
        row = {"processes": p}
        for mode in modes:
            c = next((c for c in cells if c["processes"] == p and c["mode"] in (mode, "serial")), None)
            row[f"{mode}_problem_per_process"] = None if c is None else \
                f"{c['voxels_per_process']} voxels, {c['layers_per_process']} layers"
            row[f"{mode}_step_s"] = None if c is None else c["step_s"]
            row[f"{mode}_bytes"] = None if c is None else c["bytes_per_step_per_process"]
        rows.append(row)
    return rows


def collect(cfg, plan: list[dict], results: dict) -> dict:
    ex, mo, mg = cfg.experiments, cfg.modelled, asdict(cfg.mgrit)
    cells = [cell_row(c, _per_rank(results, c["id"]), ex.steps) for c in plan]
    counts = {c["id"]: sm.step_counts(c, mg, cfg.model.channels, cfg.model.kernel, cfg.data.batch) for c in plan}
    cores = os.cpu_count() or 1
    fit_on = [c for c in cells if c["processes"] <= cores] or cells  # oversubscribed cells time core sharing
    a, b = sm.fit_eval_time([(c["step_s"], counts[c["cell"]]["evaluations_critical"], c["voxels_per_process"])
                             for c in fit_on])
    for c, cell in zip(cells, plan):
        c["modelled_step_s"] = sm.step_time(counts[c["cell"]], cell["voxels_per_process"], a, b, mo.latency_s,
                                            mo.bandwidth_Bps)["step_s"]
    modes = list(ex.modes)
    modelled = sm.modelled_rows(modes, range(mo.max_exponent + 1), mo.side, mo.layers_per_process, mg,
                                cfg.model.channels, cfg.model.kernel, cfg.data.batch, a, b, mo.latency_s,
                                mo.bandwidth_Bps, mo.cores_per_node)
    return {"cells": cells, "plan": plan, "weak_scaling": weak_rows(cells, modes), "modelled": modelled,
            "convergence": convergence_rows(plan, results), "training": training_rows(plan, results),
            "fit": {"a_s": a, "b_s_per_voxel": b, "cells": [c["cell"] for c in fit_on], "cores": cores},
            "modes": modes, "mgrit": mg, "modelled_config": asdict(mo),
            "model": {"channels": cfg.model.channels, "kernel": cfg.model.kernel, "batch": cfg.data.batch},
            "roles": {k: {x: v.get(x) for x in ("rank", "address", "mesh_s")} for k, v in results.items()}}


def growth(rows: list[dict], mode: str) -> float | None:
    """Time per step at the largest process count over the time at one process."""
    have = [r for r in rows if r.get(f"{mode}_step_s") is not None]
    return have[-1][f"{mode}_step_s"] / have[0][f"{mode}_step_s"] if len(have) > 1 else None


def summary(report: dict) -> dict:
    cells = report["cells"]
    loss_diffs = [c["loss_rel_diff_vs_serial"] for c in cells if c["loss_rel_diff_vs_serial"] is not None]
    ratios = [c["halo_measured_over_analytic"] for c in cells if c["halo_measured_over_analytic"] is not None]
    return {"cells": len(cells),
            "equal_to_undecomposed": all(c["forward_rel_diff"] <= EQUAL_REL and c["gradient_rel_diff"] <= EQUAL_REL
                                         for c in cells),
            "max_forward_rel_diff": max(c["forward_rel_diff"] for c in cells),
            "max_gradient_rel_diff": max(c["gradient_rel_diff"] for c in cells),
            "halo_bytes_measured_over_analytic": [min(ratios), max(ratios)] if ratios else None,
            "max_loss_rel_diff_vs_serial": max(loss_diffs) if loss_diffs else None,
            "step_s": {c["cell"]: c["step_s"] for c in cells},
            "bytes_per_step_per_process": {c["cell"]: c["bytes_per_step_per_process"] for c in cells},
            "measured_growth": {m: growth(report["weak_scaling"], m) for m in report["modes"]},
            "modelled_growth": {m: growth(report["modelled"], m) for m in report["modes"]},
            "modelled_max_processes": report["modelled"][-1]["processes"], "fit": report["fit"]}


# ---------------------------------------------------------------------------------------- output
def markdown(rows: list[dict], digits: int = 4) -> str:
    return markdown_table(rows, f"{{:.{digits}g}}")


def figure_scaling(report: dict, path: str) -> str:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for mode, color in zip(report["modes"], ("C0", "C1", "C2")):
        m = [(r["processes"], r[f"{mode}_step_s"]) for r in report["weak_scaling"] if r[f"{mode}_step_s"]]
        ax1.plot(*zip(*m), "o-", color=color, label=f"{LABELS[mode]}, measured")
        ax2.plot([r["processes"] for r in report["modelled"]], [r[f"{mode}_step_s"] for r in report["modelled"]],
                 "s--", color=color, label=f"{LABELS[mode]}, modelled")
    for ax, title in ((ax1, "measured here (mini-cluster, one machine)"),
                      (ax2, f"MODELLED: {report['modelled_config']['side']}^3 and "
                            f"{report['modelled_config']['layers_per_process']} layers per process")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("processes")
        ax.set_ylabel("seconds per training step")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    return save_png(fig, path)


def _lines(series: list[tuple[str, list, list, list | None]], path: str, xlabel: str, ylabel: str, title: str,
           log: bool = False, guide: float | None = None) -> str:
    """One line per (label, x, y, dotted companion y or None)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, x, y, dotted in series:
        line, = ax.plot(x, y, "o-", label=label)
        if dotted is not None:
            ax.plot(x, dotted, ":", color=line.get_color())
    if log:
        ax.set_yscale("log")
    if guide is not None:
        ax.axhline(guide, color="grey", lw=0.6, ls=":")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return save_png(fig, path)


def figure_convergence(report: dict, path: str) -> str:
    series = []
    for cell in report["plan"]:
        rows = [r for r in report["convergence"] if r["cell"] == cell["id"]]
        if cell["p_t"] > 1 and rows:
            series.append((cell["id"], [r["iteration"] for r in rows],
                           [max(r["gradient_rel_diff"], 1e-9) for r in rows], None))
    return _lines(series, path, "MGRIT iterations", "gradient relative difference to the undecomposed network",
                  "Layer-parallel (MGRIT) error per iteration", log=True, guide=EQUAL_REL)


def figure_training(report: dict, path: str) -> str:
    series = []
    for cell in report["plan"]:
        rows = [r for r in report["training"] if r["cell"] == cell["id"]]
        serial = [r["serial_loss"] for r in rows] if rows[0]["serial_loss"] is not None else None
        series.append((cell["id"], [r["step"] for r in rows], [r["loss"] for r in rows], serial))
    return _lines(series, path, "training step", "loss (dotted: the same problem on one process)",
                  "Training loss per cell")


def report_md(report: dict, summ: dict) -> str:
    fit, mo = report["fit"], report["modelled_config"]
    lines = ["# Space-time parallelism: a 3D residual network split in space and in depth", "",
             "Blobs-in-noise segmentation; residual layers h + dt relu(conv3d(h)); halo exchange between "
             "sub-volumes, MGRIT between layer groups, over the project's authenticated wire.", "",
             "## Equality with the undecomposed network", "",
             f"Forward (logits) and gradients against plain TensorFlow on one process, at the check's last MGRIT "
             f"iteration count: largest relative differences {summ['max_forward_rel_diff']:.2g} (forward) and "
             f"{summ['max_gradient_rel_diff']:.2g} (gradients); equal within {EQUAL_REL:g}: "
             f"**{summ['equal_to_undecomposed']}**.", "",
             markdown([{k: c[k] for k in ("cell", "p_s", "p_t", "volume", "layers", "check_iterations",
                                          "forward_rel_diff", "gradient_rel_diff")} for c in report["cells"]]),
             "Error per MGRIT iteration (the check repeated with 1, 2, ... iterations):", "",
             "![MGRIT convergence](mgrit_convergence.png)", "",
             "## Weak scaling, measured here", "",
             "Seconds per training step (median of the timed steps, the slowest process) and bytes each process "
             "sends per step (whole frames: header, arrays, MAC). All processes share this machine's "
             f"{fit['cores']} core(s), so a cell with more processes than cores also measures core sharing.", "",
             markdown(report["weak_scaling"]),
             "Halo bytes received per step, measured against the analytic halo volume (box grown by the halo, "
             f"clipped to the volume, minus the block; times channels, batch, 4 bytes, exchanges): ratio "
             f"{summ['halo_bytes_measured_over_analytic']}.", "",
             markdown([{k: c[k] for k in ("cell", "step_s", "bytes_per_step_per_process", "halo_bytes_per_step",
                                          "halo_bytes_analytic", "mgrit_bytes_per_step", "loss", "serial_loss",
                                          "loss_rel_diff_vs_serial", "modelled_step_s")} for c in report["cells"]]),
             "![training loss](training_loss.png)", "",
             "## Beside the slides", "",
             f"The slides (problem per process): DistDL {SLIDES['space']}; TorchBraid {SLIDES['depth']}; DTB "
             f"{SLIDES['spacetime']}. Finding: {SLIDES['finding']}. The slides give curves, no numbers.", "",
             "Time per step at the largest process count over one process: measured "
             + ", ".join(f"{LABELS[m]} {v:.2f}x" for m, v in summ["measured_growth"].items() if v is not None)
             + "; modelled to " + f"{summ['modelled_max_processes']} processes "
             + ", ".join(f"{LABELS[m]} {v:.2f}x" for m, v in summ["modelled_growth"].items() if v is not None) + ".",
             "", "## MODELLED extension to 2^N processes (not measured)", "",
             f"Per process {mo['side']}^3 voxels and {mo['layers_per_process']} layers as on the slides, "
             f"{mo['cores_per_node']} processes per node. Layer evaluations, halo exchanges and messages counted "
             "from the algorithm (jobs/spacetime_model.py); one evaluation costs a + b x voxels, fitted to the cells "
             f"measured here with at most {fit['cores']} processes ({', '.join(fit['cells'])}): "
             f"a = {fit['a_s']:.3g} s, "
             f"b = {fit['b_s_per_voxel']:.3g} s per voxel (this machine's core and TensorFlow, not a Broadwell core). "
             f"Network: ASSUMED {mo['latency_s']:g} s per message and {mo['bandwidth_Bps']:g} bytes/s (the slides "
             "give none); every message is costed as if it crossed the network. Every level of our MGRIT keeps at "
             "least one coarse point per process, so the coarsest level's serial sweep grows with P_t; XBraid (under "
             "TorchBraid) coarsens further onto fewer processes, which this model and code do not.", "",
             markdown(report["modelled"]), "![weak scaling](weak_scaling.png)", ""]
    return "\n".join(lines) + "\n"


FILES = ("cells.csv", "weak_scaling.csv", "modelled.csv", "convergence.csv", "training.csv", "weak_scaling.png",
         "mgrit_convergence.png", "training_loss.png", "report.md", "results.json")


def write_all(report: dict, folder: str) -> list[str]:
    summ = summary(report)
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    for name, rows in (("cells.csv", report["cells"]), ("weak_scaling.csv", report["weak_scaling"]),
                       ("modelled.csv", report["modelled"]), ("convergence.csv", report["convergence"]),
                       ("training.csv", report["training"])):
        write_csv(rows, path(name))
    figure_scaling(report, path("weak_scaling.png"))
    figure_convergence(report, path("mgrit_convergence.png"))
    figure_training(report, path("training_loss.png"))
    write_text(report_md(report, summ), path("report.md"))
    write_text(json.dumps(report, indent=1, default=str), path("results.json"))
    return list(FILES)
