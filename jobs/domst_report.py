"""Outputs of the Dom-ST study: NSE per watershed for each approach (the paper's Figure 3, as a table and a
PNG), the shares of watersheds where one approach beats another, S vs IP-D training times with speedups
beside the paper's Table 1, the paper's per-watershed figures and the ablation (jobs/domst_paper.py), the
Pix-Con weights against the planted runoff coefficients, report.md.
Pure functions of the results dict the job assembles; files are written to a local folder."""
from __future__ import annotations

import json
import os
import statistics

from jobs.domst_paper import (LABELS, ablation_rows, fmt, gain_rows, paper_rows, per_watershed, speedups,
                              time_rows)
from jobs.output_files import markdown_table, pyplot, save_png, write_csv, write_text
from models.domst_metrics import share_best, share_better

PAPER_SHARES = {"singlehead_p_beats_singlehead": "91%", "domst_beats_both": "almost all"}
TARGETS = {"median_nse_domst": 0.7, "singlehead_p_beats_singlehead": 0.8, "domst_beats_both": 0.5}
REFERENCE_MEDIAN_NSE = 0.73  # NeuralHydrology LSTM on CAMELS-US (Kratzert et al. 2019), not the paper


def collect(sheds: list[dict], runs: list[dict], approaches: list[str], ablation: list[str] = ()) -> dict:
    """Gather the runs (one per approach and mode, and the ablation's) into one dict: scores per watershed
    from the IP-D runs when they ran (else S), each run's times, each approach's training seconds per
    watershed per mode, where Dom-ST's units sat, and how far the two modes' NSE differ."""
    primary = "ipd" if any(r["mode"] == "ipd" for r in runs) else runs[0]["mode"]
    facts = {s["id"]: dict(s) for s in sheds}
    by_run: dict[tuple[str, str], dict] = {}  # (mode, approach) -> {watershed: score}
    for run in runs:
        for node in run["nodes"].values():
            for w in node["watersheds"]:
                if w.get("unscored"):
                    facts[w["watershed"]]["unscored"] = w["unscored"]
                else:
                    facts[w["watershed"]].update(k_groups=w["k_groups"], samples=w["samples"])
                for score in w["scores"]:
                    by_run.setdefault((run["mode"], score["approach"]), {})[w["watershed"]] = score
    scores = {s["id"]: {a: got[s["id"]] for (m, a), got in by_run.items() if m == primary and s["id"] in got}
              for s in sheds}
    train_s: dict = {}
    for (mode, a), got in by_run.items():
        if a in approaches:
            train_s.setdefault(mode, {})[a] = {w: s["train_s"] for w, s in got.items()}
    times: dict = {}
    for run in runs:
        if run["label"] != "ablation":
            times.setdefault(run["mode"], {})[run["label"]] = run["times"]
    gap = None
    if {"ipd", "s"} <= set(times):  # both modes train the same models from the same seeds
        gap = {a: max((abs(by_run[("ipd", a)][w]["nse"] - s["nse"]) for w, s in by_run.get(("s", a), {}).items()
                       if w in by_run.get(("ipd", a), {})), default=None) for a in approaches}
    return {"approaches": approaches, "ablation": list(ablation), "primary_mode": primary,
            "watersheds": [facts[s["id"]] for s in sheds], "scores": scores, "train_s": train_s, "times": times,
            "plans": {r["mode"]: r["plan"] for r in runs},
            "node_devices": {r["mode"]: {k: n["devices"] for k, n in r["nodes"].items()} for r in runs},
            "mode_nse_gap": gap, "speedups": speedups(times, approaches)}


def column(results: dict, approach: str, key: str = "nse") -> list[float | None]:
    """One value per watershed; None where the watershed was not scored."""
    return [(results["scores"][w["id"]].get(approach) or {}).get(key) for w in results["watersheds"]]


def shares(results: dict) -> dict:
    have = set(results["approaches"])
    out = {}
    if {"singlehead", "singlehead_p"} <= have:
        out["singlehead_p_beats_singlehead"] = share_better(column(results, "singlehead_p"),
                                                            column(results, "singlehead"))
    if {"singlehead", "singlehead_p", "domst"} <= have:
        out["domst_beats_both"] = share_best(column(results, "domst"), column(results, "singlehead"),
                                             column(results, "singlehead_p"))
    return out


def heads_apart(results: dict) -> bool:
    """Every watershed's Dom-ST heads and temporal block sat on pairwise different devices."""
    devs = [results["scores"][w]["domst"]["devices"] for w in results["scores"] if "domst" in results["scores"][w]]
    return bool(devs) and all(len(set(d["heads"] + [d["temporal"]])) == len(d["heads"]) + 1 for d in devs)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summary(results: dict) -> dict:
    a = results["approaches"]
    pix = results.get("pixcon") or {}
    out = {"watersheds": len(results["watersheds"]),
           "median_nse": {x: _median(column(results, x)) for x in a},
           "mean_nse": {x: _fmean(column(results, x)) for x in a},
           "median_peak_flow_error": {x: _median(column(results, x, "peak_flow_error")) for x in a},
           "shares": shares(results), "times_s": results["times"], "speedups": results["speedups"],
           "mode_nse_gap": results["mode_nse_gap"],
           "missing_days": {w["id"]: w["n_missing"] for w in results["watersheds"]},
           "missing_days_total": sum(w["n_missing"] for w in results["watersheds"]),
           "unscored": {w["id"]: w["unscored"] for w in results["watersheds"] if w.get("unscored")},
           "per_watershed": per_watershed(gain_rows(results))}
    if results.get("ablation"):
        out["ablation"] = {r["approach"]: {k: r[k] for k in ("median_params", "median_nse", "beats_singlehead",
                                                              "beats_singlehead_p", "beats_domst")}
                           for r in ablation_rows(results)}
    if "domst" in a:
        out["domst_heads_on_separate_devices"] = heads_apart(results)
        out["domst_devices"] = {w: s["domst"]["devices"] for w, s in results["scores"].items() if "domst" in s}
    if pix:
        out["pixcon_correlation_median"] = {k: _median([c.get(k) if c else None for c in pix.values()])
                                            for k in ("pearson", "spearman", "spearman_within_groups",
                                                      "spearman_vs_distance", "planted_vs_distance")}
    out["targets"] = {"median_nse_domst": out["median_nse"].get("domst"), **out["shares"]}
    return out


def nse_rows(results: dict) -> list[dict]:
    pix = results.get("pixcon") or {}
    rows = []
    for w in results["watersheds"]:
        row = {"watershed": w["id"], "site_no": w["site_no"], "pixels": w["pixels"], "k_groups": w.get("k_groups"),
               "missing_days": w["n_missing"]}
        for x in results["approaches"]:
            s = results["scores"][w["id"]].get(x) or {}
            row.update({f"nse_{x}": s.get("nse"), f"peak_error_{x}": s.get("peak_flow_error"),
                        f"epochs_{x}": s.get("epochs")})
        c = pix.get(w["id"])
        row["pixcon_spearman"] = c["spearman"] if c else None
        row["unscored"] = w.get("unscored")
        rows.append(row)
    return rows


def markdown(rows: list[dict], digits: int = 3) -> str:
    return markdown_table(rows, f"{{:.{digits}f}}")


def figure3(results: dict, path: str) -> str:
    plt = pyplot()
    ids = [w["id"] for w in results["watersheds"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(ids) + 2), 4))
    for x, marker in zip(results["approaches"], "os^"):
        ax.scatter(range(len(ids)), [max(v, -1.0) if v is not None else float("nan") for v in column(results, x)],
                   marker=marker, label=LABELS[x])
    ax.set_xticks(range(len(ids)), ids, rotation=90)
    ax.set_ylabel("test NSE (clipped at -1)")
    ax.set_title("NSE per watershed (paper Figure 3)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=8)
    return save_png(fig, path)


PIXCON_WHY = {
    "pixels": "Each head's first convolution has one kernel slice per pixel: scaling a pixel's weight by c and "
              "its slice by 1/c computes the same, so the convolutions can absorb any weight and only the "
              "target-day path constrains them (and, with K heads, only inside a group).",
    "weighted_sum": "Each head takes its group's Pix-Con-weighted mean as one channel, so no layer can undo one "
                    "pixel's weight; but every layer after a head has weights of its own for that head (and ReLU "
                    "is positively homogeneous), so one common scale per group is still absorbed: with K > 1 only "
                    "the order inside a group is identifiable, and distance-quantile groups make the distance trend "
                    "of the weights exactly the part that is not.",
}
PIXCON_READABLE = ("What makes the weights identifiable: one head fed the weighted mean (model.k_groups: 1, "
                   "model.head_input: weighted_sum) leaves no per-group scale to absorb them, with a weight per "
                   "pixel or with model.pixel_weights: distance (a learned function of distance, two parameters).")


def pixcon_lines(c: dict, design: dict) -> list[str]:
    """The Pix-Con finding: medians over watersheds, the design, and why the weights can or cannot be read."""
    num = lambda v: "-" if v is None else f"{v:+.2f}"  # noqa: E731
    head, part = design.get("head_input", "pixels"), design.get("partition", "distance")
    form = design.get("pixel_weights", "per_pixel")
    return [f"Design: heads take {'each pixel as a channel' if head == 'pixels' else 'the weighted group mean'}; "
            f"groups {'fixed by distance quantiles' if part == 'distance' else 're-cut every epoch from the weights'}; "
            f"{'a weight per pixel' if form == 'per_pixel' else 'weights a function of distance alone'}.",
            "", f"Median over watersheds, Spearman of the learned weights with the planted coefficients: "
            f"{num(c.get('spearman'))} (goal >= 0.6); "
            f"inside each distance group: {num(c.get('spearman_within_groups'))}; "
            f"learned weights vs distance to water: {num(c.get('spearman_vs_distance'))}, planted vs distance: "
            f"{num(c.get('planted_vs_distance'))}; Pearson {num(c.get('pearson'))}. Per watershed in "
            "nse_per_watershed.csv.", "", PIXCON_WHY.get(head, ""), "", PIXCON_READABLE,
            "bench/domst_pixcon.py trains the designs side by side (README: the measured figures)."]


def report_md(results: dict, summ: dict) -> str:
    pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
    num = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    sh = summ["shares"]
    lines = ["# Dom-ST: NSE per watershed, S vs IP-D", "",
             f"{summ['watersheds']} watersheds; scores from the {results['primary_mode'].upper()} runs; "
             f"{summ['missing_days_total']} missing discharge days in all (masked, never trained on).", ""]
    if summ["unscored"]:
        lines += ["## Watersheds that could not be scored", "",
                  *(f"- {w}: {why}" for w, why in summ["unscored"].items()), "",
                  "They are left out of every median, mean and share below; the others were trained as usual.", ""]
    lines += ["## Median test NSE", ""]
    lines += [f"- {LABELS[x]}: median {num(summ['median_nse'][x])}, mean {num(summ['mean_nse'][x])}"
              for x in results["approaches"]]
    lines += ["", f"Target: Dom-ST median >= {TARGETS['median_nse_domst']}; reference: NeuralHydrology LSTM "
              f"(CAMELS-US) median about {REFERENCE_MEDIAN_NSE}.", "", "## Shares of watersheds", "",
              f"- Singlehead(+P) beats Singlehead: ours {pct(sh.get('singlehead_p_beats_singlehead'))}, "
              f"paper {PAPER_SHARES['singlehead_p_beats_singlehead']} (target >= 80%)",
              f"- Dom-ST beats both: ours {pct(sh.get('domst_beats_both'))}, paper {PAPER_SHARES['domst_beats_both']}",
              "", "## Training time, S vs IP-D (paper Table 1 beside ours)", "",
              "Each approach ran in its own S run (every watershed on one node) and its own IP-D run (the "
              "watersheds spread over the nodes, each node one watershed at a time), as the paper times them. "
              "S_s and IPD_s: that run's training phase in seconds, measured inside the roles (first node's start to "
              "last node's end: reading each bundle, building, fitting and scoring every watershed); *_with_startup_s: "
              "the driver's time including TensorFlowOnSpark's start-up. The paper's figures are hours on 23 GPU "
              "nodes; ours are seconds on this cluster's CPU nodes, where Dom-ST's heads share the node's cores "
              "(the paper puts each head on its own GPU), so Dom-ST is not faster than Singlehead(+P) here.", "",
              markdown(time_rows(results), 2)]
    if results["speedups"]:
        lines.append(f"All approaches: S {results['speedups']['all_approaches']:.2f}x faster under IP-D; parallel "
                     f"efficiency T_S / (T_IPD x nodes) = {results['speedups']['parallel_efficiency']:.2f}.")
    if results["mode_nse_gap"]:
        lines.append("Largest NSE difference of a watershed between S and IP-D (same seeds): "
                     + ", ".join(f"{LABELS[x]} {num(v, 3)}" for x, v in results["mode_nse_gap"].items()) + ".")
    lines += ["", "## The paper's per-watershed figures beside ours", "",
              "The paper names each figure in one sentence; the quantity we read it as and how ours is computed are "
              "in the last column (jobs/domst_paper.py says why).", "",
              markdown([{"figure": r["figure"], "paper": fmt(r["paper"], r["unit"]), "ours": fmt(r["ours"], r["unit"]),
                         "ours: how": r["how"]} for r in paper_rows(summ)]),
              "Per watershed: gains_per_watershed.csv.", ""]
    if results.get("ablation"):
        lines += ["## Ablation: what makes the difference", "",
                  "Each variant changes one thing; the variants ran together in one run of the "
                  f"{results['primary_mode'].upper()} mode, on the same watersheds and seeds. beats_X: share of "
                  "the scored watersheds where its test NSE is above X's.", "",
                  markdown([{k: v for k, v in r.items() if k != "approach"} for r in ablation_rows(results)], 2)]
    if "pixcon_correlation_median" in summ:
        lines += ["", "## Pix-Con weights vs planted runoff coefficients", "",
                  *pixcon_lines(summ["pixcon_correlation_median"], results.get("pixcon_design") or {})]
    if "domst_heads_on_separate_devices" in summ:
        lines += ["", "## Placement", "", f"Dom-ST heads and temporal block on separate devices in every "
                  f"watershed: {summ['domst_heads_on_separate_devices']}."]
    lines += ["", "## NSE per watershed", "", markdown(nse_rows(results)), "![NSE per watershed](figure3_nse.png)"]
    return "\n".join(lines) + "\n"


def write_all(results: dict, folder: str) -> list[str]:
    summ = summary(results)
    files = {"nse_per_watershed.csv": nse_rows(results), "times.csv": time_rows(results),
             "gains_per_watershed.csv": gain_rows(results),
             "paper_figures.csv": paper_rows(summ)}
    if results.get("ablation"):
        files["ablation.csv"] = ablation_rows(results)
    for name, rows in files.items():
        write_csv(rows, os.path.join(folder, name))
    write_text(markdown(nse_rows(results)), os.path.join(folder, "nse_per_watershed.md"))
    figure3(results, os.path.join(folder, "figure3_nse.png"))
    write_text(report_md(results, summ), os.path.join(folder, "report.md"))
    write_text(json.dumps(results, indent=1, default=str), os.path.join(folder, "results.json"))
    return [*files, "nse_per_watershed.md", "figure3_nse.png", "report.md", "results.json"]
