"""Outputs of the land-cover study: one row per plan (traffic, CPU, wait, memory per role, time per epoch)
with the thesis's observations beside ours, traffic per batch size, measured bytes per step beside the
analytic count, curves of the default plan beside the single machine (thesis Fig. 6.4), and the per-role
figures (Figs. 6.5-6.20).

Units, stated in every table header: traffic in MiB/s (the thesis's MB/s: 10^6 bytes; the comparisons
convert); CPU both in % of one core (as `top`) and in % of the host (all its cores: the unit of the
thesis's Ganglia plots, where each role had a machine of its own; here every role shares one host);
wait = the role's runqueue wait + block-I/O wait, % of one core, measured per process (the thesis's
"CPU wait" is Ganglia's machine-wide iowait, which cannot be split by process)."""
from __future__ import annotations

import os

from distributed.metrics import summarise
from jobs import landcover_hosts
from jobs import metrics_figures as mf
from jobs.output_files import pyplot, save_png, write_csv, write_text

MIB = 1024 * 1024
BYTES_TOLERANCE = 0.10  # measured bytes per step within 10% of the analytic count
WAIT_DEFINITION = ("wait = runqueue + block-I/O wait of the role's threads, % of one core, per process "
                   "(not the machine-wide iowait Ganglia plots)")
WORKERS = ("worker:0", "worker:1", "worker:2")
ROLES = ("ps:0", "chief:0") + WORKERS
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


def _bytes(value) -> str:
    """Whole bytes with thousands separators, as the analytic counts beside them."""
    return "-" if value is None else f"{value:,.0f}"


def plan_rows(cells: list[dict], metrics: dict, batch_size: int, dataset: int,
              host_cores: dict[str, int] | None = None) -> list[dict]:
    """One row per plan at the main batch size and data set: measured figures per role; CPU also as a share
    of the role's host (`host_cores`: cores of the host each role ran on)."""
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
            cores = (host_cores or {}).get(role)
            row[f"{role} cpu % host"] = None if s.get("cpu_percent_mean") is None or not cores \
                else s["cpu_percent_mean"] / cores
            row[f"{role} wait % peak"] = s.get("wait_percent_peak")
            row[f"{role} rss MiB peak"] = (s.get("rss_bytes_peak") or 0) / MIB
        rows.append(row | bytes_columns(cell))
    return rows


def bytes_columns(cell: dict) -> dict:
    """Measured (steady window) and analytic bytes per step of a cell, and their ratio."""
    b = cell.get("bytes_per_step") or {}
    measured = (b.get("measured") or {}).get("total")
    return {"steady_steps": (b.get("measured") or {}).get("steps"), "measured_bytes_per_step": measured,
            "analytic_bytes_per_step": (b.get("analytic") or {}).get("total"), "measured_over_analytic": b.get("ratio")}


def bytes_rows(cells: list[dict]) -> list[dict]:
    """Every model-parallel cell: measured bytes per step beside the analytic count, in total and per role."""
    rows = []
    for cell in cells:
        b = cell.get("bytes_per_step")
        if not b:
            continue
        row = {"cell": cell["id"], "plan": cell["plan"], "batch_size": cell["batch_size"], **bytes_columns(cell)}
        measured = (b["measured"] or {}).get("per_role", {})
        for role in sorted(set(measured) | set(b["analytic"]["out"]) | set(b["analytic"]["in"])):
            for way, col in (("out", "bytes_out"), ("in", "bytes_in")):
                row[f"{role} {way} measured"] = measured.get(role, {}).get(col)
                row[f"{role} {way} analytic"] = b["analytic"][way].get(role, 0)
        rows.append(row)
    return rows


def bytes_markdown(rows: list[dict], terms: dict[str, dict]) -> str:
    lines = ["## Bytes per step: measured beside the analytic count", "",
             "Measured: TCP payload bytes every role sent between a pause after the cell's first warm-up steps "
             "and a pause after its last step, over the steps between (on loopback each byte one role sends "
             "another receives, so the senders' sum counts each crossing once). Analytic "
             "(models.landcover.step_bytes, from the model and the plan): the variables read from the ps, their "
             "gradients and BN statistics written back, each activation crossing a cut forward and its "
             f"gradient backward, the batch indices and the loss. Goal: within {BYTES_TOLERANCE:.0%}.", "",
             "| cell | plan | batch | steady steps | measured B/step | analytic B/step | measured/analytic | "
             "analytic terms |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["measured_over_analytic"]
        mark = "" if ratio is None else (" (within)" if abs(ratio - 1) <= BYTES_TOLERANCE else " (outside)")
        parts = ", ".join(f"{k} {v:,}" for k, v in terms.get(r["cell"], {}).items())
        lines.append(f"| {r['cell']} | {r['plan']} | {r['batch_size']} | {r['steady_steps'] or '-'} | "
                     f"{_bytes(r['measured_bytes_per_step'])} | {r['analytic_bytes_per_step']:,} | "
                     f"{_fmt(ratio, digits=3)}{mark} | {parts} |")
    roles = sorted({k.split()[0] for r in rows for k in r if k.endswith(" measured")})
    if roles:
        lines += ["", "Per role, bytes per step out / in, measured (analytic):", "",
                  "| cell | " + " | ".join(roles) + " |", "|---|" + "---|" * len(roles)]
        for r in rows:
            lines.append(f"| {r['cell']} | " + " | ".join(
                f"{_bytes(r.get(f'{x} out measured'))} ({r.get(f'{x} out analytic', 0):,}) / "
                f"{_bytes(r.get(f'{x} in measured'))} ({r.get(f'{x} in analytic', 0):,})" for x in roles) + " |")
    return "\n".join(lines) + "\n"


def batch_rows(cells: list[dict], metrics: dict) -> list[dict]:
    """The default plan per batch size (thesis Fig. 6.5): cluster traffic in and out, each role's in and out
    (MiB/s over the cell), and bytes per step measured beside the analytic count."""
    rows = []
    for cell in cells:
        if cell["plan"] != "default" or cell["id"] not in metrics:
            continue
        stats = summarise(metrics[cell["id"]])
        row = {"batch_size": cell["batch_size"], "epochs": len(cell["epoch_time_s"]), "dataset": cell["dataset"],
               "window_s": cell.get("window_s", 0), "seconds": round(cell["t_end"] - cell["t_start"], 1)
               if "t_end" in cell else None, "steps": cell["steps"],
               "cluster_in_MiB_per_s": sum((s.get("bytes_in_per_s_mean") or 0) for s in stats.values()) / MIB,
               "cluster_out_MiB_per_s": sum((s.get("bytes_out_per_s_mean") or 0) for s in stats.values()) / MIB}
        for role, s in stats.items():
            row[f"{role} in MiB/s"] = (s.get("bytes_in_per_s_mean") or 0) / MIB
            row[f"{role} out MiB/s"] = (s.get("bytes_out_per_s_mean") or 0) / MIB
        rows.append(row | bytes_columns(cell))
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
             "Measured per role over the cell: mean MiB/s in and out, mean CPU in % of one core and in % of the "
             f"host (all its cores; the thesis's unit, with one role per machine there), peak {WAIT_DEFINITION}, "
             "peak resident memory; thesis observations beside ours.", "",
             "| plan | s/epoch | in / out MiB/s ps, chief, w0, w1, w2 | CPU % of one core w0/w1/w2 | CPU % of host "
             "w0/w1/w2 | wait % of one core, peak w0/w1/w2 | RSS MiB peak ps/w0/w1/w2 | measured / analytic B/step | "
             "thesis |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cpu = "/".join(_fmt(r.get(f"{w} cpu %"), digits=0) for w in WORKERS)
        host = "/".join(_fmt(r.get(f"{w} cpu % host"), digits=1) for w in WORKERS)
        traffic = ", ".join(f"{_fmt(r.get(f'{x} in MiB/s'))}/{_fmt(r.get(f'{x} out MiB/s'))}" for x in ROLES)
        bytes_ = f"{_bytes(r.get('measured_bytes_per_step'))} / {_bytes(r.get('analytic_bytes_per_step'))}"
        wait = "/".join(_fmt(r.get(f"{w} wait % peak"), digits=0) for w in WORKERS)
        rss = "/".join(_fmt(r.get(f"{x} rss MiB peak"), digits=0) for x in ("ps:0", *WORKERS))
        lines.append(f"| {r['plan']} | {r['epoch_time_s']:.1f} | {traffic} | {cpu} | {host} | {wait} | {rss} | "
                     f"{bytes_} | {THESIS.get(r['plan'], '')} |")
    return "\n".join(lines) + "\n"


def batch_markdown(rows: list[dict]) -> str:
    lines = ["## Traffic per batch size (default plan)", "",
             f"Thesis (Fig. 6.5, (a) incoming and (b) outgoing over one window of about 70 minutes): batch 10 drives "
             f"cluster traffic up to about {THESIS_FIGURES['batch10_cluster_MBps']:.0f} MB/s; 50 and 200 are more than "
             f"{THESIS_FIGURES['batch_traffic_ratio']:.0f}x lower. Ours: each batch size trains "
             f"for the same wall-clock "
             "window (whole epochs until it has passed); traffic in MiB/s over the cell, bytes per step over its "
             "steady window.", "",
             "| batch | window s | seconds | epochs | steps | cluster in MiB/s | "
             "cluster out MiB/s | in / out MiB/s per "
             "role | measured B/step | analytic B/step | measured/analytic |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        roles = sorted({k.split()[0] for k in r if k.endswith(" in MiB/s") and not k.startswith("cluster")})
        per_role = ", ".join(f"{x} {r[f'{x} in MiB/s']:.2f}/{r[f'{x} out MiB/s']:.2f}" for x in roles)
        lines.append(f"| {r['batch_size']} | {r['window_s']:g} | {_fmt(r['seconds'], digits=1)} | {r['epochs']} | "
                     f"{r['steps']} | {r['cluster_in_MiB_per_s']:.2f} | "
                     f"{r['cluster_out_MiB_per_s']:.2f} | {per_role} | "
                     f"{_bytes(r['measured_bytes_per_step'])} | {_bytes(r['analytic_bytes_per_step'])} | "
                     f"{_fmt(r['measured_over_analytic'], digits=3)} |")
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


def held_out_markdown(cells: list[dict], held_out: dict, batch_size: int, dataset: int) -> str:
    """Accuracy and loss on the held-out test region, per plan at the main batch size and the single machine,
    beside the nearest-signature baseline."""
    lines = ["## Held-out test region", "",
             f"{held_out.get('test_samples', '-')} test patches from the east-most columns "
             f"of the scene, none overlapping "
             "a training patch (the thesis's Fig. 6.4 shows training loss and accuracy only). Baseline without "
             "learning: each test patch's centre-pixel spectrum gets the class of the nearest mean training spectrum. "
             "Before the test, each BN layer's statistics are recomputed over the training set with the final weights "
             "(precise BN): Keras's moving averages (momentum 0.99) still lag the weights after a few hundred steps.",
             "", "| approach | batch | epochs | test accuracy | test loss | training accuracy (last epoch) |",
             "|---|---|---|---|---|---|"]
    for c in cells:
        if "test_accuracy" in c and c["batch_size"] == batch_size and c["dataset"] == dataset:
            lines.append(f"| {c['plan']} | {c['batch_size']} | {len(c['loss'])} | {c['test_accuracy']:.3f} | "
                         f"{c['test_loss']:.3f} | {c['accuracy'][-1]:.3f} |")
    accuracy = held_out.get("nearest_signature_test_accuracy")
    lines.append(f"| nearest signature (no learning) | - | - | {_fmt(accuracy, digits=3)} | - | - |")
    return "\n".join(lines) + "\n"


def write_all(cells: list[dict], metrics: dict, out_dir: str, batch_size: int, dataset: int,
              host_cores: dict[str, int] | None = None, held_out: dict | None = None,
              machine_cores: int | None = None) -> list[str]:
    """Tables, figures, per-role series and report.md into out_dir; returns the names written.
    The plan table compares plans at `batch_size` on the `dataset`-patch set; on a mini-cluster with hosts
    (cells with "hosts") the same plans per host follow it (landcover_hosts.py)."""
    os.makedirs(out_dir, exist_ok=True)
    out = lambda name: os.path.join(out_dir, name)  # noqa: E731
    written, report = [], ["# Land-cover case study: results", ""]
    plans, batches = plan_rows(cells, metrics, batch_size, dataset, host_cores), batch_rows(cells, metrics)
    if held_out:
        report.append(held_out_markdown(cells, held_out, batch_size, dataset))
    per_step = bytes_rows(cells)
    if per_step:
        write_csv(per_step, out("bytes_per_step.csv"))
        written.append("bytes_per_step.csv")
        report.append(bytes_markdown(per_step, {c["id"]: c["bytes_per_step"]["analytic"]["terms"]
                                                for c in cells if c.get("bytes_per_step")}))
    if plans:
        write_csv(plans, out("plans.csv"))
        written.append("plans.csv")
        report.append(plans_markdown(plans))
    per_host = landcover_hosts.host_rows(cells, batch_size, dataset)
    if per_host:
        write_csv(per_host, out("plans_per_host.csv"))
        written.append("plans_per_host.csv")
        report.append(landcover_hosts.markdown(per_host, cells, machine_cores))
        if landcover_hosts.plot(per_host, out("hosts.png")):
            written.append("hosts.png")
            report.append("![traffic and CPU per host, per plan](hosts.png)\n")
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
