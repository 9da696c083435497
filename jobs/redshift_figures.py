"""Figures of the redshift study (thesis Figs. 5.3-5.6 and the staleness ablation), as PNG files."""
from __future__ import annotations

import numpy as np

from distributed.early_stopping import CRITERIA
from jobs.output_files import pyplot as _pyplot, save_png as _save
from jobs.redshift_tables import COLUMNS, DATA_MODES, TABLE_MODES, _workers_of, ablation_table, censored


def plot_curves(runs: list[dict], metric: str, path: str) -> str | None:
    """Figs. 5.3/5.6: metric per epoch, one panel per (dataset, data mode), a line per run and worker."""
    panels: dict[tuple[int, str], list[tuple[str, list]]] = {}
    ran = {(r["dataset"], r["workers"], r["mode"], r["data_mode"]) for r in runs}
    for run in runs:
        # as in the tables, one machine sees all data either way: it joins the other panel unless that was run
        modes = [run["data_mode"]] + [m for m in DATA_MODES if run["workers"] <= 1 and
                                      (run["dataset"], run["workers"], run["mode"], m) not in ran]
        for label, rec in _workers_of(run):
            if not rec.get(metric):
                continue
            name = run["cluster"] + ("" if label == "-" else f" {label}")
            name += "" if run["mode"] in TABLE_MODES else f" [{run['mode']}]"
            for mode in modes:
                panels.setdefault((run["dataset"], mode), []).append((name, rec[metric]))
    if not panels:
        return None
    plt = _pyplot()
    datasets = sorted({d for d, _ in panels})
    modes = [m for m in DATA_MODES if any(k[1] == m for k in panels)]
    fig, axes = plt.subplots(len(datasets), len(modes), squeeze=False, layout="constrained",
                             figsize=(6 * len(modes), 3.6 * len(datasets)))
    for i, ds in enumerate(datasets):
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            for name, curve in panels.get((ds, mode), []):
                ax.plot(range(1, len(curve) + 1), curve, marker=".", label=name)
            ax.set(title=f"{ds} samples, {mode} data", xlabel="epoch", ylabel=f"training {metric}")
            if panels.get((ds, mode)):
                ax.legend(fontsize=7)
    return _save(fig, path)


def plot_stable_bars(rows: list[dict], path: str, title: str = "") -> str | None:
    """Figs. 5.4/5.5: epochs to a plateau per cluster/worker, same vs different data, one panel per criterion."""
    if not any(row[c] is not None for row in rows for c in COLUMNS):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(CRITERIA), figsize=(6 * len(CRITERIA), 4), squeeze=False, layout="constrained")
    fig.suptitle(title or "Epochs to a plateau in training accuracy")
    x = np.arange(len(rows))
    names = [row["cluster"].replace(" ", "\n", 1) + ("" if row["worker"] == "-" else f" {row['worker']}")
             for row in rows]
    for ax, crit in zip(axes[0], CRITERIA):
        for k, mode in enumerate(DATA_MODES):
            cells = [row[f"crit{crit}_{mode}"] for row in rows]
            # a worker that never stopped ('>N') gets a hatched bar at N, labelled '>N': not a number of epochs
            vals = [np.nan if v is None else float(v[1:]) if censored(v) else v for v in cells]
            bars = ax.bar(x + (k - 0.5) * 0.4, vals, width=0.4, label=f"{mode} data")
            for bar, v in zip(bars, cells):
                if censored(v):
                    bar.set_hatch("//")
                    ax.annotate(v, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                                va="bottom", fontsize=6)
        patience, delta = CRITERIA[crit]
        ax.set(title=f"criterion {crit} (patience {patience}, min delta {delta})", ylabel="epochs to stable")
        ax.set_xticks(x, names, fontsize=7)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_tau_hist(runs: list[dict], ids: list[str], path: str) -> str | None:
    """Staleness tau seen by the parameter server, grouped bars per ablation run."""
    hists = [(row["id"], row["tau_hist"]) for row in ablation_table(runs, ids) if row["tau_hist"]]
    if not hists:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8), layout="constrained")
    width = 0.8 / len(hists)
    for k, (run_id, hist) in enumerate(hists):
        ax.bar(np.array(list(hist), dtype=float) + (k - (len(hists) - 1) / 2) * width, list(hist.values()),
               width=width, label=run_id)
    ax.set(xlabel="staleness tau (versions behind)", ylabel="updates", title="Staleness per update")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=7)
    return _save(fig, path)
