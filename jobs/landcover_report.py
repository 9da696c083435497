"""Outputs of the land-cover study: one row per plan (traffic, CPU, wait, memory per role, time per epoch)
with the thesis's observations beside ours, traffic per batch size, curves of the default plan beside
the single machine (thesis Fig. 6.4), and the per-role figures (Figs. 6.5-6.20)."""
from __future__ import annotations

import os

from distributed.metrics import summarise
from jobs import metrics_figures as mf
from jobs.output_files import pyplot, save_png, write_csv, write_text

MIB = 1024 * 1024
WORKERS = ("worker:0", "worker:1", "worker:2")
THESIS = {  # REFERENCE_NUMBERS.md, land cover: what the thesis observed per plan
    "default": "traffic concentrates between the ps and the merging worker; merging worker out ~10 MB/s; "
               "merging-worker wait ~1.25%",
    "scheme2": "merging worker out ~2.5 MB/s, ps ~2.5 in / 1.5 out MB/s; but merging-worker wait up to 45%",
    "scheme3": "traffic a little above scheme2, well below default; wait up to 16% once, else 0-1% "
               "(best traffic/wait trade-off)",
    "scheme4": "traffic spread over all machines; >50% CPU on every worker; HSI worker ~70% instead of 80%",
    "scheme5": "load almost equal across workers, each above 55% CPU (best utilisation)",
}
# The thesis's figures behind THESIS and Fig. 6.5, for reports that state each difference (MB/s, %).
THESIS_FIGURES = {
    "merging_out_MBps": {"default": 10.0, "scheme2": 2.5},          # merging worker's out-traffic
    "merging_wait_percent": {"default": 1.25, "scheme2": 45.0, "scheme3": 16.0},  # its CPU wait, at most
    "min_worker_cpu_percent": {"scheme4": 50.0, "scheme5": 55.0},  # every worker above
    "batch10_cluster_MBps": 120.0,   # cluster traffic at batch 10, up to
    "batch_traffic_ratio": 5.0,      # batch 10 over batches 50 and 200: more than
}


def _fmt(value, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def plan_rows(cells: list[dict], metrics: dict, batch_size: int, dataset: int) -> list[dict]:
    """One row per plan at the main batch size and data set: measured figures per role."""
    rows = []
    for cell in cells:
        if cell["id"] not in metrics or (cell["batch_size"], cell["dataset"]) != (batch_size, dataset) \
                or any(r["plan"] == cell["plan"] for r in rows):
            continue
        stats = summarise(metrics[cell["id"]])
        row = {"cell": cell["id"], "plan": cell["plan"], "batch_size": cell["batch_size"],
               "dataset": cell["dataset"],
               "epoch_time_s": sum(cell["epoch_time_s"]) / len(cell["epoch_time_s"]),
               "final_loss": cell["loss"][-1], "final_accuracy": cell["accuracy"][-1]}
        for role, s in stats.items():
            row[f"{role} out MiB/s"] = (s.get("bytes_out_per_s_mean") or 0) / MIB
            row[f"{role} in MiB/s"] = (s.get("bytes_in_per_s_mean") or 0) / MIB
            row[f"{role} cpu %"] = s.get("cpu_percent_mean")
            row[f"{role} wait % peak"] = s.get("wait_percent_peak")
            row[f"{role} rss MiB peak"] = (s.get("rss_bytes_peak") or 0) / MIB
        rows.append(row)
    return rows


def batch_rows(cells: list[dict], metrics: dict) -> list[dict]:
    """Cluster traffic (all roles' bytes out) of the default plan per batch size (thesis Fig. 6.5)."""
    rows = []
    for cell in cells:
        if cell["plan"] != "default" or cell["id"] not in metrics:
            continue
        stats = summarise(metrics[cell["id"]])
        total = sum((s.get("bytes_out_per_s_mean") or 0) for s in stats.values())
        rows.append({"batch_size": cell["batch_size"], "epochs": cell["epochs"], "dataset": cell["dataset"],
                     "cluster_out_MiB_per_s": total / MIB, "steps": cell["steps"],
                     "bytes_per_step_MiB": sum(metrics[cell["id"]][r]["bytes_out"][-1]
                                               if metrics[cell["id"]][r]["bytes_out"] else 0
                                               for r in metrics[cell["id"]]) / max(cell["steps"], 1) / MIB})
    return sorted(rows, key=lambda r: (r["dataset"], r["batch_size"], r["epochs"]))


def parallelism_rows(cells: list[dict], metrics: dict, batch_size: int) -> list[dict]:
    """(d) per data set: model parallel (default plan) vs data parallel, per role CPU, memory, traffic."""
    rows = []
    for cell in cells:
        if cell["plan"] not in ("default", "data parallel") or cell["batch_size"] != batch_size \
                or cell["id"] not in metrics or any(r["cell"] == cell["id"] for r in rows):
            continue
        for role, s in summarise(metrics[cell["id"]]).items():
            rows.append({"cell": cell["id"], "dataset": cell["dataset"], "approach": cell["plan"], "role": role,
                         "cpu_percent_mean": s.get("cpu_percent_mean"),
                         "rss_MiB_peak": (s.get("rss_bytes_peak") or 0) / MIB,
                         "in_MiB_per_s": (s.get("bytes_in_per_s_mean") or 0) / MIB,
                         "out_MiB_per_s": (s.get("bytes_out_per_s_mean") or 0) / MIB})
    return sorted(rows, key=lambda r: (r["dataset"], r["approach"], r["role"]))


def parallelism_markdown(rows: list[dict]) -> str:
    lines = ["## Model parallelism (default plan) vs data parallelism", "",
             "Thesis (Figs. 6.21-6.28): model parallelism uses less CPU and memory per worker; data parallelism's "
             "ps receives the most traffic, mostly at epoch ends; training-set size does not change per-worker "
             "traffic.", "", "| patches | approach | role | CPU % mean | RSS MiB peak | in MiB/s | out MiB/s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['dataset']} | {r['approach']} | {r['role']} | {_fmt(r['cpu_percent_mean'], digits=0)} | "
              f"{r['rss_MiB_peak']:.0f} | {r['in_MiB_per_s']:.2f} | {r['out_MiB_per_s']:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


def plans_markdown(rows: list[dict]) -> str:
    lines = ["## Placement plans", "",
             "Measured per role over the cell (mean bytes out per second, mean CPU % of one core, peak wait "
             "% = runqueue + I/O wait, peak resident memory); thesis observations beside ours.", "",
             "| plan | s/epoch | merging worker out MiB/s | ps in/out MiB/s | CPU % w0/w1/w2 | wait % peak "
             "w0/w1/w2 | RSS MiB peak ps/w0/w1/w2 | thesis |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu = "/".join(_fmt(r.get(f"{w} cpu %"), digits=0) for w in WORKERS)
        wait = "/".join(_fmt(r.get(f"{w} wait % peak"), digits=0) for w in WORKERS)
        rss = "/".join(_fmt(r.get(f"{x} rss MiB peak"), digits=0) for x in ("ps:0", *WORKERS))
        lines.append(f"| {r['plan']} | {r['epoch_time_s']:.1f} | {_fmt(r.get('worker:2 out MiB/s'))} | "
                     f"{_fmt(r.get('ps:0 in MiB/s'))}/{_fmt(r.get('ps:0 out MiB/s'))} | {cpu} | {wait} | {rss} | "
                     f"{THESIS.get(r['plan'], '')} |")
    return "\n".join(lines) + "\n"


def batch_markdown(rows: list[dict]) -> str:
    lines = ["## Traffic per batch size (default plan)", "",
             f"Thesis (Fig. 6.5): batch 10 drives cluster traffic up to about "
             f"{THESIS_FIGURES['batch10_cluster_MBps']:.0f} MB/s; 50 and 200 are more than "
             f"{THESIS_FIGURES['batch_traffic_ratio']:.0f}x lower.", "",
             "| batch | cluster out MiB/s | MiB sent per step |", "|---|---|---|"]
    lines += [f"| {r['batch_size']} | {r['cluster_out_MiB_per_s']:.2f} | {r['bytes_per_step_MiB']:.3f} |"
              for r in rows]
    if len(rows) > 1:
        low, high = rows[0], max(rows[1:], key=lambda r: r["batch_size"])
        ratio = low["cluster_out_MiB_per_s"] / max(high["cluster_out_MiB_per_s"], 1e-12)
        lines += ["", f"Ours: batch {low['batch_size']} moves {ratio:.1f}x the traffic per second of batch "
                      f"{high['batch_size']}."]
    return "\n".join(lines) + "\n"


def plot_curves(cells: list[dict], path: str) -> str | None:
    """Loss and accuracy per epoch: the default plan beside the single machine (thesis Fig. 6.4)."""
    chosen = [c for c in cells if c["plan"] in ("default", "single machine") and len(c["loss"]) > 1]
    if not chosen:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for cell in chosen:
        epochs = range(1, len(cell["loss"]) + 1)
        label = f"{cell['plan']} (batch {cell['batch_size']}, {cell['dataset']} patches)"
        axes[0].plot(epochs, cell["loss"], marker=".", label=label)
        axes[1].plot(epochs, cell["accuracy"], marker=".", label=label)
    axes[0].set(xlabel="epoch", ylabel="training loss")
    axes[1].set(xlabel="epoch", ylabel="training accuracy")
    axes[1].legend(fontsize=7)
    return save_png(fig, path)


def write_all(cells: list[dict], metrics: dict, out_dir: str, batch_size: int, dataset: int) -> list[str]:
    """Tables, figures, per-role series and report.md into out_dir; returns the names written.
    The plan table compares plans at `batch_size` on the `dataset`-patch set."""
    os.makedirs(out_dir, exist_ok=True)
    out = lambda name: os.path.join(out_dir, name)  # noqa: E731
    written, report = [], ["# Land-cover case study: results", ""]
    plans, batches = plan_rows(cells, metrics, batch_size, dataset), batch_rows(cells, metrics)
    if plans:
        write_csv(plans, out("plans.csv"))
        written.append("plans.csv")
        report.append(plans_markdown(plans))
    parallel = parallelism_rows(cells, metrics, batch_size)
    if any(r["approach"] == "data parallel" for r in parallel):
        write_csv(parallel, out("parallelism.csv"))
        written.append("parallelism.csv")
        report.append(parallelism_markdown(parallel))
    if batches:
        write_csv(batches, out("batch_sizes.csv"))
        written.append("batch_sizes.csv")
        report.append(batch_markdown(batches))
    figures = [("curves.png", plot_curves(cells, out("curves.png")), "loss and accuracy per epoch"),
               ("traffic.png", mf.plot_traffic({r["plan"]: metrics[r["cell"]] for r in plans}, out("traffic.png")),
                "traffic per role over time, per plan"),
               ("cpu_wait.png", mf.plot_cpu_wait_box({r["plan"]: metrics[r["cell"]] for r in plans},
                                                     out("cpu_wait.png")), "CPU and wait per role, per plan"),
               ("memory.png", mf.plot_memory({r["plan"]: metrics[r["cell"]] for r in plans}, out("memory.png")),
                "resident memory per role, per plan")]
    for name, made, caption in figures:
        if made:
            written.append(name)
            report.append(f"![{caption}]({name})\n")
    if metrics:
        mf.write_series_h5(metrics, out("metrics.h5"))
        mf.write_summary_csv(metrics, out("metrics_summary.csv"))
        written += ["metrics.h5", "metrics_summary.csv"]
    write_text("\n".join(report), out("report.md"))
    return written + ["report.md"]
