"""Outputs of the Dom-ST study: NSE per watershed for each approach (the paper's Figure 3, as a table and a
PNG), the shares of watersheds where one approach beats another, S vs IP-D training times with speedups
beside the paper's Table 1, the Pix-Con weights against the planted runoff coefficients, report.md.
Pure functions of the results dict the job assembles; files are written to a local folder."""
from __future__ import annotations

import json
import os
import statistics

from jobs.output_files import pyplot, save_png, write_csv, write_text
from models.domst_metrics import share_best, share_better

LABELS = {"singlehead": "Singlehead", "singlehead_p": "Singlehead(+P)", "domst": "Dom-ST (Distributed-Multihead(+P))"}
# REFERENCE_NUMBERS.md, Dom-ST Table 1: hours for 23 watersheds (S, IP-D, speedup), and the shares.
PAPER_TIMES_H = {"singlehead_p": (9.96, 1.18, 8.5), "domst": (5.49, 0.44, 12.6)}
PAPER_SHARES = {"singlehead_p_beats_singlehead": "91%", "domst_beats_both": "almost all"}
TARGETS = {"median_nse_domst": 0.7, "singlehead_p_beats_singlehead": 0.8, "domst_beats_both": 0.5}
PAPER_OVERALL_SPEEDUP = 22.7  # slides: S of Singlehead(+P) over IP-D of Dom-ST
REFERENCE_MEDIAN_NSE = 0.73  # NeuralHydrology LSTM on CAMELS-US (Kratzert et al. 2019), not the paper


def collect(sheds: list[dict], modes: dict, approaches: list[str]) -> dict:
    """Gather the roles' results of each mode into one dict: scores per watershed from IP-D when it ran
    (else S), times per mode, where Dom-ST's units sat, and how far the two modes' NSE differ."""
    per_mode = {}
    for mode, run in modes.items():
        per_mode[mode] = {w["watershed"]: w for node in run["nodes"].values() for w in node["watersheds"]}
    primary = "ipd" if "ipd" in modes else next(iter(modes))
    scores, facts = {}, {s["id"]: dict(s) for s in sheds}
    for wid, w in per_mode[primary].items():
        scores[wid] = {s["approach"]: s for s in w["scores"]}
        facts[wid].update(k_groups=w["k_groups"], samples=w["samples"])
    gap = None
    if len(per_mode) == 2:  # both modes train the same models from the same seeds
        gap = {a: max(abs(_nse(per_mode["ipd"], w, a) - _nse(per_mode["s"], w, a)) for w in per_mode["s"])
               for a in approaches}
    times = {m: run["times"] for m, run in modes.items()}
    return {"approaches": approaches, "primary_mode": primary, "watersheds": [facts[s["id"]] for s in sheds],
            "scores": scores, "times": times, "plans": {m: run["plan"] for m, run in modes.items()},
            "node_devices": {m: {k: n["devices"] for k, n in run["nodes"].items()} for m, run in modes.items()},
            "mode_nse_gap": gap, "speedups": speedups(times, approaches)}


def _nse(by_wid: dict, wid: str, approach: str) -> float:
    return next(s["nse"] for s in by_wid[wid]["scores"] if s["approach"] == approach)


def speedups(times: dict, approaches: list[str]) -> dict | None:
    """S over IP-D per approach and for the whole phase; parallel efficiency = T_S / (T_IPD x nodes used)."""
    if not {"s", "ipd"} <= set(times):
        return None
    s, ipd = times["s"], times["ipd"]
    out = {a: s["per_approach_s"][a] / ipd["per_approach_s"][a] for a in approaches}
    out["phase"] = s["phase_s"] / ipd["phase_s"]
    out["parallel_efficiency"] = s["phase_s"] / (ipd["phase_s"] * ipd["nodes_used"])
    return out


def column(results: dict, approach: str, key: str = "nse") -> list[float]:
    return [results["scores"][w["id"]][approach][key] for w in results["watersheds"]]


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


def summary(results: dict) -> dict:
    a = results["approaches"]
    pix = results.get("pixcon") or {}
    out = {"watersheds": len(results["watersheds"]),
           "median_nse": {x: _median(column(results, x)) for x in a},
           "mean_nse": {x: statistics.fmean(column(results, x)) for x in a},
           "median_peak_flow_error": {x: _median(column(results, x, "peak_flow_error")) for x in a},
           "shares": shares(results), "times_s": results["times"], "speedups": results["speedups"],
           "mode_nse_gap": results["mode_nse_gap"],
           "missing_days": {w["id"]: w["n_missing"] for w in results["watersheds"]},
           "missing_days_total": sum(w["n_missing"] for w in results["watersheds"])}
    if "domst" in a:
        out["domst_heads_on_separate_devices"] = heads_apart(results)
        out["domst_devices"] = {w: s["domst"]["devices"] for w, s in results["scores"].items()}
    if pix:
        out["pixcon_correlation_median"] = {k: _median([c[k] if c else None for c in pix.values()])
                                            for k in ("pearson", "spearman")}
    out["targets"] = {"median_nse_domst": out["median_nse"].get("domst"), **out["shares"]}
    return out


def nse_rows(results: dict) -> list[dict]:
    pix = results.get("pixcon") or {}
    rows = []
    for w in results["watersheds"]:
        row = {"watershed": w["id"], "site_no": w["site_no"], "pixels": w["pixels"], "k_groups": w.get("k_groups"),
               "missing_days": w["n_missing"]}
        for x in results["approaches"]:
            s = results["scores"][w["id"]][x]
            row.update({f"nse_{x}": s["nse"], f"peak_error_{x}": s["peak_flow_error"], f"epochs_{x}": s["epochs"]})
        c = pix.get(w["id"])
        row["pixcon_spearman"] = c["spearman"] if c else None
        rows.append(row)
    return rows


def time_rows(results: dict) -> list[dict]:
    t, sp = results["times"], results["speedups"] or {}
    rows = []
    for x in results["approaches"] + ["phase"]:
        get = (lambda m: t[m]["phase_s"]) if x == "phase" else (lambda m: t[m]["per_approach_s"][x])
        paper = PAPER_TIMES_H.get(x, (None, None, None))
        rows.append({"approach": "all approaches (training phase)" if x == "phase" else LABELS[x],
                     "S_s": get("s") if "s" in t else None, "IPD_s": get("ipd") if "ipd" in t else None,
                     "speedup": sp.get(x), "paper_S_h": paper[0], "paper_IPD_h": paper[1], "paper_speedup": paper[2]})
    return rows


def markdown(rows: list[dict], digits: int = 3) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    cell = lambda v: "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
                     + ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]) + "\n"


def figure3(results: dict, path: str) -> str:
    plt = pyplot()
    ids = [w["id"] for w in results["watersheds"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(ids) + 2), 4))
    for x, marker in zip(results["approaches"], "os^"):
        ax.scatter(range(len(ids)), [max(v, -1.0) for v in column(results, x)], marker=marker, label=LABELS[x])
    ax.set_xticks(range(len(ids)), ids, rotation=90)
    ax.set_ylabel("test NSE (clipped at -1)")
    ax.set_title("NSE per watershed (paper Figure 3)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def report_md(results: dict, summ: dict) -> str:
    pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
    sh, t = summ["shares"], results["times"]
    lines = ["# Dom-ST: NSE per watershed, S vs IP-D", "",
             f"{summ['watersheds']} watersheds; scores from the {results['primary_mode'].upper()} run; "
             f"{summ['missing_days_total']} missing discharge days in all (masked, never trained on).", "",
             "## Median test NSE", ""]
    lines += [f"- {LABELS[x]}: median {summ['median_nse'][x]:.3f}, mean {summ['mean_nse'][x]:.3f}"
              for x in results["approaches"]]
    lines += ["", f"Target: Dom-ST median >= {TARGETS['median_nse_domst']}; reference: NeuralHydrology LSTM "
              f"(CAMELS-US) median about {REFERENCE_MEDIAN_NSE}.", "", "## Shares of watersheds", "",
              f"- Singlehead(+P) beats Singlehead: ours {pct(sh.get('singlehead_p_beats_singlehead'))}, "
              f"paper {PAPER_SHARES['singlehead_p_beats_singlehead']} (target >= 80%)",
              f"- Dom-ST beats both: ours {pct(sh.get('domst_beats_both'))}, paper {PAPER_SHARES['domst_beats_both']}",
              "", "## Training time, S vs IP-D (paper Table 1 beside ours)", "",
              "Ours in seconds on this cluster, measured inside the roles (model build, fit, test prediction); "
              "per approach: the busiest node's seconds; phase: first node's start to last node's end. "
              "The paper's figures are hours on 23 GPU nodes.", "", markdown(time_rows(results), 2)]
    if results["speedups"]:
        lines.append(f"IP-D on {t['ipd']['nodes_used']} node(s): parallel efficiency T_S / (T_IPD x nodes) = "
                     f"{results['speedups']['parallel_efficiency']:.2f}; driver-seen time after the roles were up: "
                     f"S {t['s']['driver_s']:.1f}s, IP-D {t['ipd']['driver_s']:.1f}s.")
    if results["mode_nse_gap"]:
        lines.append("Largest NSE difference of a watershed between S and IP-D (same seeds): "
                     + ", ".join(f"{LABELS[x]} {v:.3g}" for x, v in results["mode_nse_gap"].items()) + ".")
    if "pixcon_correlation_median" in summ:
        c = summ["pixcon_correlation_median"]
        lines += ["", "## Pix-Con weights vs planted runoff coefficients", "",
                  f"Median over watersheds: Spearman {c['spearman']:.2f}, Pearson {c['pearson']:.2f} "
                  "(per watershed in nse_per_watershed.csv)."]
    if "domst_heads_on_separate_devices" in summ:
        lines += ["", "## Placement", "", f"Dom-ST heads and temporal block on separate devices in every "
                  f"watershed: {summ['domst_heads_on_separate_devices']}."]
    lines += ["", "## NSE per watershed", "", markdown(nse_rows(results)), "![NSE per watershed](figure3_nse.png)"]
    return "\n".join(lines) + "\n"


def write_all(results: dict, folder: str) -> list[str]:
    summ = summary(results)
    write_csv(nse_rows(results), os.path.join(folder, "nse_per_watershed.csv"))
    write_text(markdown(nse_rows(results)), os.path.join(folder, "nse_per_watershed.md"))
    write_csv(time_rows(results), os.path.join(folder, "times.csv"))
    figure3(results, os.path.join(folder, "figure3_nse.png"))
    write_text(report_md(results, summ), os.path.join(folder, "report.md"))
    write_text(json.dumps(results, indent=1, default=str), os.path.join(folder, "results.json"))
    return ["nse_per_watershed.csv", "nse_per_watershed.md", "times.csv", "figure3_nse.png", "report.md",
            "results.json"]
