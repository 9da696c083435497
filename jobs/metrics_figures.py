"""Per-process resource figures of a run or of several (placement plans, batch sizes), in the manner of
the thesis's Figs. 6.5-6.28: traffic per role over time, CPU and wait per role as box plots, memory per
role. Input everywhere is {run label: {role: {column: list}}} as ``distributed.metrics.Sampler`` returns
it. Each writer writes one local file atomically (temporary name in the same folder, then os.replace);
the job uploads the folder to its output URI.
"""
from __future__ import annotations

import csv
import json

import numpy as np

from distributed.metrics import COLUMNS, summarise
from jobs.output_files import atomic
from jobs.output_files import pyplot as _pyplot
from jobs.output_files import save_png as _save

MIB = 1024 * 1024


def _values(cols: dict, name: str) -> np.ndarray:
    """A column as floats, unmeasured (None) entries dropped."""
    return np.array([v for v in cols.get(name, []) if v is not None], dtype=float)


def _roles(series_by_run: dict) -> list[str]:
    seen: list[str] = []
    for by_role in series_by_run.values():
        seen += [r for r in by_role if r not in seen]
    return seen


def plot_traffic(series_by_run: dict, path: str) -> str | None:
    """Bytes/s in (solid) and out (dashed) per role over time, one panel per run."""
    runs = [run for run, by_role in series_by_run.items() if any(c.get("t_s") for c in by_role.values())]
    if not runs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), 1, squeeze=False, sharex=True, layout="constrained",
                             figsize=(8, 2.8 * len(runs)))
    colours = {role: f"C{k}" for k, role in enumerate(_roles(series_by_run))}
    for ax, run in zip(axes[:, 0], runs):
        for role, cols in series_by_run[run].items():
            t = np.asarray(cols["t_s"], dtype=float)
            ax.plot(t, np.asarray(cols["bytes_in_per_s"], dtype=float) / MIB, color=colours[role], label=f"{role} in")
            ax.plot(t, np.asarray(cols["bytes_out_per_s"], dtype=float) / MIB, color=colours[role], ls="--",
                    label=f"{role} out")
        ax.set(title=f"{run}: TCP traffic per role", ylabel="MiB/s")
        ax.legend(fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel("time since start (s)")
    return _save(fig, path)


def plot_cpu_wait_box(series_by_run: dict, path: str) -> str | None:
    """Box plots per role of CPU % and wait % (runqueue + I/O wait, % of one core), one row per run."""
    runs = [run for run, by_role in series_by_run.items()
            if any(len(_values(c, "cpu_percent")) for c in by_role.values())]
    if not runs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(len(runs), 2, squeeze=False, layout="constrained", figsize=(10, 3 * len(runs)))
    for row, run in zip(axes, runs):
        roles = list(series_by_run[run])
        for ax, col, label in zip(row, ("cpu_percent", "wait_percent"), ("CPU %", "wait % (runqueue + I/O)")):
            data = [_values(series_by_run[run][r], col) for r in roles]
            ax.boxplot([d if len(d) else [np.nan] for d in data], tick_labels=roles)
            ax.set(title=f"{run}: {label}", ylabel="% of one core")
    return _save(fig, path)


def plot_memory(series_by_run: dict, path: str) -> str | None:
    """Peak and mean resident memory per role (process and children), grouped bars per run."""
    summaries = {run: summarise(by_role) for run, by_role in series_by_run.items() if by_role}
    roles = _roles(series_by_run)
    if not roles:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, squeeze=False, layout="constrained", figsize=(11, 3.8))
    x = np.arange(len(roles))
    width = 0.8 / max(len(summaries), 1)
    for ax, stat in zip(axes[0], ("peak", "mean")):
        for k, (run, summary) in enumerate(summaries.items()):
            vals = [np.nan if summary.get(r, {}).get(f"rss_bytes_{stat}") is None
                    else summary[r][f"rss_bytes_{stat}"] / MIB for r in roles]
            ax.bar(x + (k - (len(summaries) - 1) / 2) * width, vals, width=width, label=run)
        ax.set_xticks(x, roles)
        ax.set(title=f"{stat} resident memory per role", ylabel="MiB")
        ax.legend(fontsize=7)
    return _save(fig, path)


# ---------------------------------------------------------------- tables
def _check_name(kind: str, name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{kind} name {name!r}: must be non-empty and hold no '/' (it names an HDF5 group)")
    return name


def write_series_h5(series_by_run: dict, path: str, meta_by_run: dict | None = None) -> str:
    """/<run>/<role>/<column> float64 datasets (None -> NaN); each run's meta as a JSON attribute."""
    import h5py
    with atomic(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["columns"] = json.dumps(list(COLUMNS))
        for run, by_role in series_by_run.items():
            group = h5.create_group(_check_name("run", run))
            if meta_by_run and run in meta_by_run:
                group.attrs["meta"] = json.dumps(meta_by_run[run])
            for role, cols in by_role.items():
                sub = group.create_group(_check_name("role", role))
                for col, values in cols.items():
                    sub.create_dataset(col, data=np.array([np.nan if v is None else v for v in values], dtype=float))
    return path


def read_series_h5(path: str) -> tuple[dict, dict]:
    """(series_by_run, meta_by_run) back from write_series_h5; NaN stays NaN."""
    import h5py
    series, meta = {}, {}
    with h5py.File(path, "r") as h5:
        for run, group in h5.items():
            series[run] = {role: {col: ds[()].tolist() for col, ds in sub.items()} for role, sub in group.items()}
            if "meta" in group.attrs:
                meta[run] = json.loads(group.attrs["meta"])
    return series, meta


def summary_rows(series_by_run: dict) -> list[dict]:
    """One row per (run, role) with the summarise() figures."""
    return [{"run": run, "role": role, **figures}
            for run, by_role in series_by_run.items() for role, figures in summarise(by_role).items()]


def write_summary_csv(series_by_run: dict, path: str) -> str:
    rows = summary_rows(series_by_run)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with atomic(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows([{k: ("" if v is None else v) for k, v in row.items()} for row in rows])
    return path
