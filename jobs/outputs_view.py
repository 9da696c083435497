"""Reading the case studies' outputs back as tables (lists of dicts) and figures (PNG paths), for the
notebook (notebooks/inspect_outputs.ipynb) and the HTML report (jobs/outputs_report.py).

An output root holds one folder per case study (`make demo` writes outputs/redshift, outputs/landcover,
outputs/domst); a case study counts as present when its folder has a summary.json. The files and their
columns are those of docs/OUTPUTS.md (jobs/output_schema.py).
"""
from __future__ import annotations

import csv
import html
import json
import os
import re
from pathlib import Path

from jobs.output_schema import CASES

ENV_ROOT = "SCIDL_OUTPUTS"
ROLES = ("ps:0", "chief:0", "worker:0", "worker:1", "worker:2")


# ---------------------------------------------------------------- the output root
def default_root() -> str:
    """$SCIDL_OUTPUTS, else ./outputs, else ../outputs (a notebook runs in notebooks/), else 'outputs'."""
    if os.environ.get(ENV_ROOT):
        return os.environ[ENV_ROOT]
    for candidate in ("outputs", os.path.join("..", "outputs")):
        if os.path.isdir(candidate):
            return candidate
    return "outputs"


def local_root(root: str, copy_to: str | None = None) -> Path:
    """A local folder holding the output root: a path or file:// URI as it is; any other URI (hdfs://)
    is copied to a local folder first, every case study's whole tree (the output check reads them).

    Without `copy_to` the copy goes to one folder per root in the user's cache (0700), replaced by each
    new copy, so a notebook run again and again keeps one copy, not one per run."""
    from rdd_io import storage
    if storage.is_local(root):
        return storage.local_path(root)
    if copy_to:
        _download(root, Path(copy_to))
        return Path(copy_to)
    import hashlib
    import shutil
    import tempfile
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "scidl-outputs"
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = cache / hashlib.sha256(root.encode()).hexdigest()[:16]
    fresh = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache))
    try:
        _download(root, fresh)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    fresh.rename(target)
    return target


def _download(root: str, target: Path) -> None:
    from rdd_io import storage
    for case in CASES:
        storage.download_tree(storage.join(root, case), target / case)


def present(root: str | Path) -> dict[str, Path | None]:
    """case -> its output folder, or None when the case study was not run there."""
    base = Path(root)
    return {case: (base / case if (base / case / "summary.json").is_file() else None) for case in CASES}


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text(encoding="utf-8"))


def figures(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


# ---------------------------------------------------------------- tables
def _value(text: str):
    if text == "":
        return None
    if len(text) > 1 and text[0] == "0" and text[1].isdigit():
        return text  # an identifier such as a USGS site number keeps its leading zero
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_csv(path: Path) -> list[dict]:
    """Rows with numbers as numbers and empty cells as None."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e4 or (value and abs(value) < 1e-3) else \
            f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def html_table(rows: list[dict], columns: list[str] | None = None, digits: int = 3) -> str:
    """An HTML table of rows (the notebook displays it; the report embeds it)."""
    if not rows:
        return "<p><em>no rows</em></p>"
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c), digits))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ---------------------------------------------------------------- redshift
def _curve(values) -> str:
    return " ".join(f"{v:.3f}" for v in values)


def redshift_workers(folder: Path) -> list[dict]:
    """One row per run and worker: accuracy and loss per epoch, final values, epochs to stable."""
    import h5py
    rows = []
    with h5py.File(folder / "redshift.h5", "r") as h5:
        for run_id, run in h5.items():
            for worker in run["workers"].values():
                acc, loss = worker["accuracy"][()], worker["loss"][()]
                stable = json.loads(worker.attrs["epochs_to_stable"])
                rows.append({"run": run_id, "cluster": run.attrs.get("cluster"), "mode": run.attrs.get("mode"),
                             "worker": worker.attrs["key"], "epochs": len(acc),
                             "final_accuracy": float(acc[-1]) if len(acc) else None,
                             "final_loss": float(loss[-1]) if len(loss) else None,
                             "stable_crit1": stable.get("1"), "stable_crit2": stable.get("2"),
                             "accuracy per epoch": _curve(acc), "loss per epoch": _curve(loss)})
    return rows


def redshift_stable(folder: Path) -> dict[int, list[dict]]:
    """N -> the rows of stable_<N>.csv (epochs to stable per cluster and worker, thesis Tables 5.1/5.2)."""
    found = {}
    for path in folder.glob("stable_*.csv"):
        match = re.fullmatch(r"stable_(\d+)\.csv", path.name)
        if match:
            found[int(match.group(1))] = read_csv(path)
    return dict(sorted(found.items()))


def redshift_updates(folder: Path) -> list[dict]:
    s = summary(folder)
    return [{"run": run_id, **figures_} for run_id, figures_ in (s.get("updates") or {}).items()]


# ---------------------------------------------------------------- land cover
ROLE_FIGURES = (("out MiB/s", "out_MiB_per_s"), ("in MiB/s", "in_MiB_per_s"), ("cpu %", "cpu_percent_mean"),
                ("wait % peak", "wait_percent_peak"), ("rss MiB peak", "rss_MiB_peak"))


def landcover_roles(folder: Path) -> list[dict]:
    """plans.csv in long form: one row per plan and role with its traffic, CPU, wait and memory."""
    rows = []
    for plan in read_csv(folder / "plans.csv"):
        for role in ROLES:
            if plan.get(f"{role} out MiB/s") is None:
                continue  # a role the plan's run did not have (data parallel: no chief)
            rows.append({"plan": plan["plan"], "role": role,
                         **{name: plan.get(f"{role} {column}") for column, name in ROLE_FIGURES}})
    return rows


def landcover_plans(folder: Path) -> list[dict]:
    return [{k: row[k] for k in ("plan", "batch_size", "dataset", "epoch_time_s", "final_loss", "final_accuracy")}
            for row in read_csv(folder / "plans.csv")]


def landcover_batches(folder: Path) -> list[dict]:
    path = folder / "batch_sizes.csv"
    return read_csv(path) if path.exists() else []


# ---------------------------------------------------------------- Dom-ST
def domst_nse(folder: Path) -> list[dict]:
    """NSE per watershed and approach (the paper's Figure 3 as a table)."""
    rows = read_csv(folder / "nse_per_watershed.csv")
    keep = ["watershed", "pixels"] + [k for k in (rows[0] if rows else {}) if k.startswith("nse_")]
    return [{k: row[k] for k in keep} for row in rows]


def domst_times(folder: Path) -> list[dict]:
    """S vs IP-D seconds and speedups per approach, the paper's hours and speedups beside them."""
    return read_csv(folder / "times.csv")


def domst_gains(folder: Path) -> list[dict]:
    """Per watershed: Singlehead(+P)'s and Dom-ST's training seconds, the speedup and the NSE gains."""
    return read_csv(folder / "gains_per_watershed.csv")


def domst_ablation(folder: Path) -> list[dict]:
    """The ablation table (empty when the run had no ablation)."""
    path = folder / "ablation.csv"
    return read_csv(path) if path.is_file() else []


def domst_medians(folder: Path) -> list[dict]:
    s = summary(folder)
    return [{"approach": a, "median_nse": s["median_nse"][a], "mean_nse": s["mean_nse"][a],
             "median_peak_flow_error": s["median_peak_flow_error"][a]} for a in s["median_nse"]]


# ---------------------------------------------------------------- space-time
def spacetime_checks(folder: Path) -> list[dict]:
    """Per cell: the equality check against the undecomposed network and the loss beside serial training."""
    keep = ("cell", "p_s", "p_t", "volume", "layers", "check_iterations", "forward_rel_diff", "gradient_rel_diff",
            "loss", "serial_loss", "loss_rel_diff_vs_serial")
    return [{k: row.get(k) for k in keep} for row in read_csv(folder / "cells.csv")]


def spacetime_traffic(folder: Path) -> list[dict]:
    """Per cell: seconds and bytes per step, halo bytes measured beside the analytic halo volume."""
    keep = ("cell", "step_s", "bytes_per_step_per_process", "halo_bytes_per_step", "halo_bytes_analytic",
            "halo_measured_over_analytic", "mgrit_bytes_per_step", "modelled_step_s")
    return [{k: row.get(k) for k in keep} for row in read_csv(folder / "cells.csv")]


def spacetime_weak(folder: Path) -> list[dict]:
    return read_csv(folder / "weak_scaling.csv")


def spacetime_modelled(folder: Path) -> list[dict]:
    return read_csv(folder / "modelled.csv")


def spacetime_convergence(folder: Path) -> list[dict]:
    """The layer-parallel cells' error and residual per MGRIT iteration."""
    return [row for row in read_csv(folder / "convergence.csv") if row.get("forward_residual") is not None]
