"""Redshift case study tables (pure functions of the job's ``results`` dict): epochs to stable per
cluster, worker and criterion like the thesis's Tables 5.1/5.2 (its numbers beside ours), findings, the
staleness ablation, and their Markdown. Figures: jobs/redshift_figures.py; files: jobs/redshift_report.py.
"""
from __future__ import annotations

from collections import Counter
from statistics import mean


from distributed.early_stopping import CRITERIA, stable_value
from jobs.output_files import cell_text

UNRECORDED_RULE = "keras3"  # results written before runs recorded their stopping rule were scored with it
COLUMNS = ("crit1_same", "crit1_different", "crit2_same", "crit2_different")
TABLE_MODES = ("staleness-aware", "sequential")
DATA_MODES = ("same", "different")
ACCURACY_LEVEL = 0.75  # the level the thesis's sequential CNN passes at epoch 3 on 15K


def _thesis(cluster, worker, c1s, c1d, c2s, c2d):
    return {"cluster": cluster, "worker": worker, "crit1_same": c1s, "crit1_different": c1d,
            "crit2_same": c2s, "crit2_different": c2d}


# Thesis Tables 5.1/5.2 (5K samples; the thesis gives no table for 15K). Its 3-worker row "#1-#3"
# holds for each of the three workers.
THESIS_STABLE = {5000: [
    _thesis("single machine", "-", 8, 8, 14, 14),
    _thesis("1 worker", "-", 8, 8, 16, 16),
    _thesis("2 workers", "#1", 7, 6, 13, 15),
    _thesis("2 workers", "#2", 7, 5, 13, 15),
    *[_thesis("3 workers", f"#{i}", 6, 6, 13, 10) for i in (1, 2, 3)],
]}


# ---------------------------------------------------------------- pure helpers
def n_workers(cluster: str) -> int:
    """'single machine' -> 0, '3 workers' -> 3."""
    if cluster == "single machine":
        return 0
    try:
        return int(cluster.split()[0])
    except (ValueError, IndexError):
        raise ValueError(f"cluster label {cluster!r}: expected 'single machine' or '<n> worker(s)'") from None


def _workers_of(run: dict) -> list[tuple[str, dict]]:
    """(table label, per-worker record) in worker order: 'single' -> '-', 'worker:i' -> '#i+1'."""
    items = []
    for key, rec in run.get("per_worker", {}).items():
        if key == "single":
            items.append((-1, rec))
        elif key.startswith("worker:") and key[7:].isdigit():
            items.append((int(key[7:]), rec))
        else:
            raise ValueError(f"run {run.get('id')!r}: per_worker key {key!r} is neither 'single' nor 'worker:<i>'")
    items.sort(key=lambda t: t[0])
    one = run.get("workers", 0) <= 1  # the thesis prints '-' for the single machine and the 1-worker cluster
    return [("-" if one or i < 0 else f"#{i + 1}", rec) for i, rec in items]


def _stable(rec: dict, crit: int, metric: str = "accuracy", run: dict | None = None) -> int | str | None:
    """Epochs to stable under criterion crit: the job's number if given, else computed from the curve with
    the run's stopping rule; '>N' when it never stopped within the run's N epochs."""
    given = (rec.get("epochs_to_stable") or {}) if metric == "accuracy" else {}
    value = given.get(str(crit), given.get(crit))
    if value is None and rec.get(metric):
        run = run or {}
        value = stable_value(rec[metric], *CRITERIA[crit], run.get("max_epochs", len(rec[metric])),
                             mode="max" if metric == "accuracy" else "min",
                             rule=run.get("stopping_rule", UNRECORDED_RULE))
    return value


def censored(value) -> bool:
    """True for a worker that never stopped ('>N'): a lower bound, not a number of epochs."""
    return isinstance(value, str) and value.startswith(">")


def _cells(runs: list[dict], dataset: int, crit: int | None = None) -> dict[tuple[int, str], dict]:
    """(workers, data_mode) -> run, for the table modes of one dataset and the runs that score criterion
    `crit` (those that stopped on it, or trained max_epochs). A single machine or a single worker sees all
    the data either way, so it fills the other data mode too unless that was run."""
    cells, explicit = {}, {}
    for run in runs:
        if run.get("mode") not in TABLE_MODES or run.get("dataset") != dataset:
            continue
        if run.get("stop_on") not in (None, crit):
            continue
        key = (run["workers"], run["data_mode"])
        if key in explicit:
            raise ValueError(f"runs {explicit[key]!r} and {run['id']!r} both fill the cell "
                             f"{run['cluster']} / {run['data_mode']} data / {dataset} samples")
        explicit[key] = run["id"]
        cells[key] = run
        if run["workers"] <= 1:
            for other in DATA_MODES:
                cells.setdefault((run["workers"], other), run)
    return {k: cells[k] for k in sorted(cells)}


def stable_table(runs: list[dict], dataset: int) -> list[dict]:
    """Rows like the thesis's Tables 5.1/5.2: one per (cluster, worker); None where a cell was not run."""
    rows: dict[tuple[int, str], dict] = {}
    for crit in CRITERIA:
        for (workers, data_mode), run in _cells(runs, dataset, crit).items():
            for label, rec in _workers_of(run):
                row = rows.setdefault((workers, label), {"cluster": run["cluster"], "worker": label,
                                                         **dict.fromkeys(COLUMNS)})
                row[f"crit{crit}_{data_mode}"] = _stable(rec, crit, run=run)
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], len(k[1]), k[1]))]


def _fmt(value) -> str:
    if value is None:
        return "–"
    if censored(value):
        return value
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _pct(before, after) -> str:
    return f"{100.0 * (after - before) / before:+.1f}%"


def _size(w: int) -> str:
    return f"{w} worker{'s' * (w > 1)}"


def _by_size(rows: list[dict], crit: int) -> dict[tuple[int, str], float]:
    """(cluster size, data mode) -> mean over its workers of the criterion's epochs to stable; workers that
    never stopped ('>N') are left out of the means (the markdown table shows them)."""
    vals: dict[tuple[int, str], list] = {}
    for r in rows:
        for mode in DATA_MODES:
            if r[f"crit{crit}_{mode}"] is not None and not censored(r[f"crit{crit}_{mode}"]):
                vals.setdefault((n_workers(r["cluster"]), mode), []).append(r[f"crit{crit}_{mode}"])
    return {k: mean(v) for k, v in vals.items()}


def _run_mean(run: dict, fn) -> float | None:
    """Mean of fn(worker record) over the run's workers; None if any worker has no value or never stopped."""
    vals = [fn(rec) for _, rec in _workers_of(run)]
    return mean(vals) if vals and not any(v is None or censored(v) for v in vals) else None


def _fewer(values: dict, mode: str) -> str:
    """1 worker vs the largest cluster with data, for one data mode."""
    tops = [w for (w, m), v in values.items() if m == mode and w > 1 and v is not None]
    one = values.get((1, mode))
    if one is None or not tops:
        return f"{mode} data: not run"
    many = values[(max(tops), mode)]
    return f"{mode} data: 1 worker {_fmt(one)} -> {_size(max(tops))} {many:.2f} epochs, {_pct(one, many)}"


def _gaps(values: dict) -> str:
    """|same - different| per cluster size; does it shrink from the smallest to the largest multi-node size?"""
    gaps = {w: abs(values[(w, "same")] - values[(w, "different")]) for w in sorted({w for w, _ in values})
            if w >= 1 and values.get((w, "same")) is not None and values.get((w, "different")) is not None}
    text = ", ".join(f"{_size(w)} {g:.2f}" for w, g in gaps.items()) or "not run"
    multi = [w for w in gaps if w > 1]
    if len(multi) > 1:
        shrinks = "yes" if gaps[multi[-1]] < gaps[multi[0]] else "no"
        text += f"; smaller at {multi[-1]} than at {multi[0]} workers: {shrinks}"
    return text


def _first_at_level(curve: list[float]) -> int | None:
    return next((n for n, v in enumerate(curve, start=1) if v >= ACCURACY_LEVEL), None)


def findings(rows: list[dict], dataset: int, runs: list[dict] | None = None) -> list[str]:
    """One line per redshift finding our numbers can speak to, with our measured numbers. The curve-based
    findings (loss, 75% accuracy) need the runs; without them only the table findings are given."""
    ours, theirs = _by_size(rows, 1), _by_size(THESIS_STABLE.get(dataset, []), 1)
    def ref(mode):  # the thesis's relative change, computed from its table the same way as ours
        return f" (thesis table: {_fewer(theirs, mode).split(', ')[-1]})" if theirs else ""
    lines = ["More nodes, fewer epochs to a stable accuracy (crit. 1; thesis Fig. 5.4: about 25% fewer): "
             + "; ".join(_fewer(ours, m) + ref(m) for m in DATA_MODES) + ".",
             "Data distribution matters less with more nodes (|same - different| crit. 1 epochs; thesis 5K: "
             f"{_gaps(_by_size(THESIS_STABLE[5000], 1))}): ours {_gaps(ours)}."]
    if runs is None:
        return lines
    cells = _cells(runs, dataset, 2)  # the curves: runs that trained max_epochs, else the longer criterion's
    loss = {k: _run_mean(run, lambda rec, run=run: _stable(rec, 1, "loss", run)) for k, run in cells.items()}
    lines.append("Loss-based stable epochs (crit. 1 on loss; thesis Fig. 5.5: about 50% lower with different "
                 "data, negligible with the same data): " + "; ".join(_fewer(loss, m) for m in DATA_MODES) + ".")
    parts = []
    for (w, mode), run in sorted(cells.items(), key=lambda kv: (kv[0][0], DATA_MODES.index(kv[0][1]))):
        if w <= 1 and mode != "same":
            continue  # same run as the 'same' cell
        at = _run_mean(run, lambda rec: _first_at_level(rec.get("accuracy", [])))
        name = "sequential" if w == 0 else _size(w) + (f" {mode}" if w > 1 else "")
        parts.append(f"{name}: {'not reached' if at is None else _fmt(at)}")
    lines.append(f"Epoch at which training accuracy first passes {ACCURACY_LEVEL:.0%} (thesis, 15K: sequential 3, "
                 "1 worker about 8, 3 workers about 4): " + ("; ".join(parts) or "not run") + ".")
    return lines


def _rules(runs: list[dict] | None) -> str:
    return " / ".join(sorted({r.get("stopping_rule", UNRECORDED_RULE) for r in runs or []})) or UNRECORDED_RULE


def stable_markdown(rows: list[dict], dataset: int, runs: list[dict] | None = None) -> str:
    """Markdown table with 'ours (thesis)' in each cell, then the findings with our numbers."""
    ref = {(r["cluster"], r["worker"]): r for r in THESIS_STABLE.get(dataset, [])}
    out = [f"## Epochs to stable training accuracy, {dataset} samples", "",
           "Each cell: ours (thesis Tables 5.1/5.2, 5K only); – = not run / no thesis number; >N = never "
           "stopped within N epochs. Criterion 1: patience 1, min delta 0.001; criterion 2: patience 3, min "
           f"delta 0.0001; stopping rule {_rules(runs)}.", "",
           "| cluster | worker | crit. 1 same | crit. 1 different | crit. 2 same | crit. 2 different |",
           "|---|---|---|---|---|---|"]
    for row in rows:
        theirs = ref.get((row["cluster"], row["worker"]), {})
        cells = [f"{_fmt(row[c])} ({_fmt(theirs.get(c))})" for c in COLUMNS]
        out.append(f"| {row['cluster']} | {row['worker']} | " + " | ".join(cells) + " |")
    out += ["", "Findings:", ""] + [f"- {line}" for line in findings(rows, dataset, runs)]
    return "\n".join(out) + "\n"


def ablation_table(runs: list[dict], ids: list[str]) -> list[dict]:
    """Per ablation run: final accuracy, epochs to stable, and the staleness the parameter server saw."""
    by_id = {r["id"]: r for r in runs}
    rows = []
    for run_id in ids:
        if run_id not in by_id:
            raise ValueError(f"ablation id {run_id!r} names no run in results['runs']")
        run = by_id[run_id]
        recs = [rec for _, rec in _workers_of(run)]
        finals = [rec["accuracy"][-1] for rec in recs if rec.get("accuracy")]
        # workers that never stopped ('>N') are left out of the means
        stable = {c: [v for rec in recs if (v := _stable(rec, c, run=run)) is not None and not censored(v)]
                  for c in CRITERIA}
        updates = run.get("updates", [])
        taus = [int(u["tau"]) for u in updates]
        applied = [u for u in updates if u.get("applied_version") is not None]
        rows.append({"id": run_id, "mode": run["mode"], "workers": run["workers"], "s": run.get("s"),
                     "final_accuracy": mean(finals) if finals else None,
                     "stable_crit1": mean(stable[1]) if stable[1] else None,
                     "stable_crit2": mean(stable[2]) if stable[2] else None,
                     "updates_applied": len(applied),
                     "versions": len({u["applied_version"] for u in applied}),
                     "tau_mean": mean(taus) if taus else None, "tau_max": max(taus) if taus else None,
                     "tau_hist": dict(sorted(Counter(taus).items()))})
    return rows


def ablation_markdown(rows: list[dict]) -> str:
    cols = ("id", "mode", "workers", "s", "final_accuracy", "stable_crit1", "stable_crit2",
            "updates_applied", "tau_mean", "tau_max", "tau_hist")
    out = ["## Staleness ablation", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        out.append("| " + " | ".join(cell_text(row[c], 3) for c in cols) + " |")
    return "\n".join(out) + "\n"
