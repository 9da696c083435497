"""Redshift case study outputs: the tables (jobs/redshift_tables.py), HDF5 and figures
(jobs/redshift_figures.py) built from the job's ``results`` dict.

Each ``write_*`` / ``plot_*`` writes one file atomically (temporary name in the same folder, then
os.replace), and ``write_all`` writes the whole set into a local folder that the caller uploads.
"""
from __future__ import annotations

import json
import os

import numpy as np

from jobs.output_files import atomic, write_csv, write_text
from jobs.redshift_figures import plot_curves, plot_stable_bars, plot_tau_hist
from jobs.redshift_tables import TABLE_MODES, ablation_markdown, ablation_table, stable_markdown, stable_table


# ---------------------------------------------------------------- writers (one file each, atomic)
UPDATE_COLUMNS = {"worker": np.int32, "read_version": np.int64, "tau": np.int32, "lambda": np.float64,
                  "applied_version": np.int64, "time": np.float64}


def write_h5(results: dict, path: str) -> None:
    """A group per run: attributes, workers/<key>/{accuracy,loss} float32, updates/<column>."""
    import h5py
    with atomic(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["ablation_ids"] = json.dumps(results.get("ablation_ids") or [])
        for run in results.get("runs", []):
            run_id = str(run["id"])
            if "/" in run_id or run_id in h5:
                raise ValueError(f"{path}: run id {run_id!r} is not a unique group name")
            grp = h5.create_group(run_id)
            for key in ("cluster", "workers", "data_mode", "dataset", "mode", "s", "wall_time_s"):
                if run.get(key) is not None:
                    grp.attrs[key] = run[key]
            for key, rec in run.get("per_worker", {}).items():
                wg = grp.create_group(f"workers/{key.replace(':', '_')}")
                wg.attrs["key"] = key
                wg.attrs["epochs_to_stable"] = json.dumps(rec.get("epochs_to_stable") or {})
                if rec.get("samples") is not None:
                    wg.attrs["samples"] = rec["samples"]
                for metric in ("accuracy", "loss"):
                    wg.create_dataset(metric, data=np.asarray(rec.get(metric, []), dtype=np.float32))
            ug = grp.create_group("updates")
            for col, dtype in UPDATE_COLUMNS.items():
                # -1 marks an update that was never applied (no applied_version).
                vals = [u.get(col) for u in run.get("updates", [])]
                ug.create_dataset(col, data=np.asarray([-1 if v is None else v for v in vals], dtype=dtype))


# ---------------------------------------------------------------- thin shell
def write_all(results: dict, out_dir: str) -> list[str]:
    """Write every output that has data into out_dir; return the file names written."""
    os.makedirs(out_dir, exist_ok=True)
    runs = results.get("runs") or []
    ids = list(results.get("ablation_ids") or [])
    # The ablation has its own table; a run that is also a cell of the thesis grid is in both.
    main = [r for r in runs if r.get("grid", r["id"] not in set(ids))]
    written, report = [], ["# Redshift case study: results", ""]

    def out(name: str) -> str:
        return os.path.join(out_dir, name)

    for ds in sorted({r["dataset"] for r in main if r.get("mode") in TABLE_MODES}):
        rows = stable_table(main, ds)
        md = stable_markdown(rows, ds, main)
        write_csv(rows, out(f"stable_{ds}.csv"))
        write_text(md, out(f"stable_{ds}.md"))
        written += [f"stable_{ds}.csv", f"stable_{ds}.md"]
        report.append(md)
        title = f"Epochs to stable training accuracy, {ds} samples"
        if plot_stable_bars(rows, out(f"stable_bars_{ds}.png"), title):
            written.append(f"stable_bars_{ds}.png")
            report.append(f"![epochs to stable, {ds} samples](stable_bars_{ds}.png)\n")
    for metric in ("accuracy", "loss"):
        if plot_curves(main, metric, out(f"{metric}.png")):
            written.append(f"{metric}.png")
            report.append(f"![training {metric} per epoch]({metric}.png)\n")
    if ids:
        rows = ablation_table(runs, ids)
        write_csv(rows, out("ablation.csv"))
        written.append("ablation.csv")
        report.append(ablation_markdown(rows))
        if plot_tau_hist(runs, ids, out("tau_hist.png")):
            written.append("tau_hist.png")
            report.append("![staleness histogram](tau_hist.png)\n")
    if runs:
        write_h5(results, out("redshift.h5"))
        written.append("redshift.h5")
    write_text("\n".join(report), out("report.md"))
    return written + ["report.md"]
