"""The Dom-ST paper's figures and ours beside them: Table 1 from separate S and IP-D runs per approach,
Dom-ST's per-watershed speedup and NSE gain over Singlehead(+P), and the ablation table. Pure functions
of the results dict jobs/domst_report.collect assembles (no Spark, no TensorFlow).

Which quantity each paper number is (the paper defines none of them beyond one sentence), and ours:
- Table 1 (9.96 h / 1.18 h / 8.5x, 5.49 h / 0.44 h / 12.6x): "the total training time of 23 watersheds",
  each approach run sequentially (S) and then in parallel (IP-D). Ours: each approach's own S run and
  its own IP-D run; the time is that run's training phase, first node's start to last node's end
  (reading bundles, building, fitting and scoring every watershed; TFoS start-up excluded, and given
  beside it as the driver's time).
- Overall 22.7x (slides): T_S(Singlehead(+P)) / T_IPD(Dom-ST); 9.96 / 0.44 = 22.6 from the rounded hours.
- Average speedup 2.02x and best 4.11x: "Dom-ST leads to an average speedup of 2.02x across all the
  analyzed watersheds": per watershed, Singlehead(+P)'s training time over Dom-ST's, mean and maximum
  over the watersheds (Table 1's S totals give 9.96 / 5.49 = 1.81, consistent). Ours: the same ratio of
  the two approaches' seconds on each watershed in their S runs (one node, nothing else running).
- Mean NSE gain 16% ("increased the mean prediction performance by 16%"): the mean test NSE over the
  watersheds, Dom-ST relative to Singlehead(+P): mean(NSE_DomST) / mean(NSE_SH+P) - 1.
- Best NSE gain 93% ("the highest increase in individual NSE by 93%"): per watershed
  (NSE_DomST - NSE_SH+P) / |NSE_SH+P|, the maximum. The mean of these per-watershed gains is given too.
"""
from __future__ import annotations

import statistics

from models.domst_metrics import relative_gain, share_better

LABELS = {"singlehead": "Singlehead", "singlehead_p": "Singlehead(+P)", "domst": "Dom-ST (Distributed-Multihead(+P))",
          "singlehead_p_wide": "Singlehead(+P), widened", "singlehead_p_means": "Singlehead(+P), +P as group means",
          "domst_projection": "Dom-ST, +P as a projection", "domst_uniform": "Dom-ST without Pix-Con",
          "domst_k1": "Dom-ST, K = 1"}
ABLATION_WHAT = {
    "singlehead": "the paper's baseline: one head, no target day",
    "singlehead_p": "the baseline plus the target day through a dense projection of every pixel",
    "domst": "Pix-Con, K distance-group heads, the target day as each group's Pix-Con-weighted mean",
    "singlehead_p_wide": "Singlehead(+P) with its convolution filters scaled to Dom-ST's parameter count",
    "singlehead_p_means": "Singlehead(+P) taking the target day as Dom-ST does: each distance group's mean "
                          "(unweighted)",
    "domst_projection": "Dom-ST taking the target day as Singlehead(+P) does: a dense projection of every "
                        "(Pix-Con-weighted) pixel",
    "domst_uniform": "Dom-ST with Pix-Con off: every pixel weight fixed at 1",
    "domst_k1": "Dom-ST with one head (K = 1): Pix-Con without the multihead",
}
# REFERENCE_NUMBERS.md, Dom-ST: Table 1 hours for 23 watersheds (S, IP-D, speedup), the slides' overall
# speedup, and the per-watershed figures of the paper's abstract and conclusion.
PAPER_TIMES_H = {"singlehead_p": (9.96, 1.18, 8.5), "domst": (5.49, 0.44, 12.6)}
PAPER_OVERALL_SPEEDUP = 22.7
PAPER_PER_WATERSHED = {"speedup_mean": 2.02, "speedup_best": 4.11, "nse_gain_mean": 0.16, "nse_gain_best": 0.93}


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _best(pairs: list[tuple[str, float | None]]) -> tuple[str | None, float | None]:
    pairs = [(w, v) for w, v in pairs if v is not None]
    return max(pairs, key=lambda p: p[1]) if pairs else (None, None)


def speedups(times: dict, approaches: list[str]) -> dict | None:
    """Table 1's speedups from each approach's own runs: S over IP-D per approach; overall: S of
    Singlehead(+P) over IP-D of Dom-ST; all_approaches: summed S over summed IP-D; parallel efficiency =
    summed S / (summed IP-D x nodes used)."""
    if not {"s", "ipd"} <= set(times):
        return None
    s, ipd = times["s"], times["ipd"]
    out: dict = {a: s[a]["phase_s"] / ipd[a]["phase_s"] for a in approaches}
    out["overall"] = s["singlehead_p"]["phase_s"] / ipd["domst"]["phase_s"] \
        if {"singlehead_p", "domst"} <= set(approaches) else None
    total_s, total_ipd = sum(s[a]["phase_s"] for a in approaches), sum(ipd[a]["phase_s"] for a in approaches)
    out["all_approaches"] = total_s / total_ipd
    out["parallel_efficiency"] = total_s / (total_ipd * max(ipd[a]["nodes_used"] for a in approaches))
    return out


def time_rows(results: dict) -> list[dict]:
    """Table 1: per approach its S run's and IP-D run's training phases (seconds), the speedup, the same
    with TFoS start-up (driver-measured), and the paper's hours; then the overall figure."""
    t, sp = results["times"], results["speedups"] or {}
    get = lambda m, a, k="phase_s": t[m][a][k] if a in t.get(m, {}) else None  # noqa: E731
    rows = []
    for a in results["approaches"]:
        paper = PAPER_TIMES_H.get(a, (None, None, None))
        rows.append({"approach": LABELS[a], "S_s": get("s", a), "IPD_s": get("ipd", a),
                     "IPD_nodes": get("ipd", a, "nodes_used"), "speedup": sp.get(a),
                     "S_with_startup_s": get("s", a, "driver_total_s"),
                     "IPD_with_startup_s": get("ipd", a, "driver_total_s"),
                     "paper_S_h": paper[0], "paper_IPD_h": paper[1], "paper_speedup": paper[2]})
    if sp.get("overall") is not None:
        rows.append({"approach": "overall: S of Singlehead(+P) / IP-D of Dom-ST", "S_s": get("s", "singlehead_p"),
                     "IPD_s": get("ipd", "domst"), "IPD_nodes": get("ipd", "domst", "nodes_used"),
                     "speedup": sp["overall"], "S_with_startup_s": get("s", "singlehead_p", "driver_total_s"),
                     "IPD_with_startup_s": get("ipd", "domst", "driver_total_s"),
                     "paper_S_h": PAPER_TIMES_H["singlehead_p"][0], "paper_IPD_h": PAPER_TIMES_H["domst"][1],
                     "paper_speedup": PAPER_OVERALL_SPEEDUP})
    return rows


def _score(results: dict, wid: str, approach: str, key: str = "nse"):
    s = results["scores"].get(wid, {}).get(approach)
    return None if s is None else s.get(key)


def gain_rows(results: dict) -> list[dict]:
    """Per watershed: Singlehead(+P)'s and Dom-ST's training seconds (S runs when run, else the primary
    mode's), Dom-ST's speedup, the three NSEs and Dom-ST's relative NSE gains."""
    mode = "s" if "s" in results["train_s"] else results["primary_mode"]
    secs = results["train_s"].get(mode, {})
    rows = []
    for w in results["watersheds"]:
        wid = w["id"]
        t_p, t_d = secs.get("singlehead_p", {}).get(wid), secs.get("domst", {}).get(wid)
        n = {a: _score(results, wid, a) for a in ("singlehead", "singlehead_p", "domst")}
        rows.append({"watershed": wid, "time_mode": mode, "train_s_singlehead_p": t_p, "train_s_domst": t_d,
                     "speedup_domst_over_singlehead_p": t_p / t_d if t_p and t_d else None,
                     "nse_singlehead": n["singlehead"], "nse_singlehead_p": n["singlehead_p"], "nse_domst": n["domst"],
                     "nse_gain_over_singlehead_p": relative_gain(n["domst"], n["singlehead_p"]),
                     "nse_gain_over_singlehead": relative_gain(n["domst"], n["singlehead"]),
                     "unscored": w.get("unscored")})
    return rows


def per_watershed(rows: list[dict]) -> dict:
    """The paper's per-watershed figures from gain_rows (see the module docstring for each quantity)."""
    wid_best, best = _best([(r["watershed"], r["speedup_domst_over_singlehead_p"]) for r in rows])
    gain_wid, gain_best = _best([(r["watershed"], r["nse_gain_over_singlehead_p"]) for r in rows])
    both = [r for r in rows if r["nse_domst"] is not None and r["nse_singlehead_p"] is not None]
    return {"time_mode": rows[0]["time_mode"] if rows else None,
            "speedup_mean": _mean(r["speedup_domst_over_singlehead_p"] for r in rows),
            "speedup_best": best, "speedup_best_watershed": wid_best,
            "nse_gain_mean": relative_gain(_mean(r["nse_domst"] for r in both),
                                           _mean(r["nse_singlehead_p"] for r in both)),
            "nse_gain_mean_of_watersheds": _mean(r["nse_gain_over_singlehead_p"] for r in rows),
            "nse_gain_best": gain_best, "nse_gain_best_watershed": gain_wid,
            "nse_gain_over_singlehead_best": _best([(r["watershed"], r["nse_gain_over_singlehead"])
                                                    for r in rows])[1]}


def ablation_rows(results: dict) -> list[dict]:
    """One row per approach (the paper's three, then the variants): what it changes, its median parameter
    count and test NSE, and the share of (scored) watersheds where it beats each of the paper's three."""
    wids = [w["id"] for w in results["watersheds"]]
    col = lambda a, key="nse": [_score(results, w, a, key) for w in wids]  # noqa: E731
    rows = []
    for a in list(results["approaches"]) + list(results.get("ablation") or []):
        nse, params = col(a), [p for p in col(a, "params") if p is not None]
        row = {"approach": a, "label": LABELS[a], "what": ABLATION_WHAT[a],
               "median_params": statistics.median(params) if params else None,
               "median_nse": statistics.median([v for v in nse if v is not None]) if any(
                   v is not None for v in nse) else None}
        for other in ("singlehead", "singlehead_p", "domst"):
            beats = None
            if other in results["approaches"] and other != a and any(v is not None for v in nse):
                beats = share_better(nse, col(other))
            row[f"beats_{other}"] = beats
        rows.append(row)
    return rows


def paper_rows(summ: dict) -> list[dict]:
    """The paper's figures beside ours: figure, paper's value, ours, unit, and how ours is computed."""
    sp, pw = summ.get("speedups") or {}, summ.get("per_watershed") or {}
    times = summ.get("times_s") or {}
    nodes = max((v["nodes_used"] for v in times.get("ipd", {}).values()), default=None)
    on = f" on {nodes} IP-D node(s)" if nodes else ""
    rows = []
    for a, (paper_s, paper_ipd, paper_sp) in PAPER_TIMES_H.items():
        rows.append({"figure": f"Table 1 speedup, {LABELS[a]} ({paper_s} h S vs {paper_ipd} h IP-D, 23 nodes)",
                     "paper": paper_sp, "ours": sp.get(a), "unit": "x",
                     "how": f"its own S run's training phase over its own IP-D run's{on}"})
    rows.append({"figure": "Overall speedup, S of Singlehead(+P) over IP-D of Dom-ST (slides)",
                 "paper": PAPER_OVERALL_SPEEDUP, "ours": sp.get("overall"), "unit": "x",
                 "how": f"Singlehead(+P)'s S training phase over Dom-ST's IP-D training phase{on} (the paper's "
                        "rounded hours give 9.96 / 0.44 = 22.6)"})
    mode = {"s": "S runs", "ipd": "IP-D runs"}.get(pw.get("time_mode"), "runs")
    rows += [
        {"figure": "Dom-ST's speedup over Singlehead(+P) per watershed, mean", "paper": 2.02,
         "ours": pw.get("speedup_mean"), "unit": "x",
         "how": f"mean over watersheds of Singlehead(+P)'s training seconds over Dom-ST's, both from the {mode}"},
        {"figure": "Dom-ST's speedup over Singlehead(+P), best single watershed", "paper": 4.11,
         "ours": pw.get("speedup_best"), "unit": "x",
         "how": f"the largest of those ratios (watershed {pw.get('speedup_best_watershed')})"},
        {"figure": "Mean NSE gain of Dom-ST (\"increased the mean prediction performance by 16%\")", "paper": 0.16,
         "ours": pw.get("nse_gain_mean"), "unit": "%",
         "how": "mean test NSE of Dom-ST over that of Singlehead(+P), minus 1 (mean of the per-watershed gains: "
                + _pct(pw.get("nse_gain_mean_of_watersheds")) + ")"},
        {"figure": "Best NSE gain of Dom-ST in one watershed (\"highest increase in individual NSE by 93%\")",
         "paper": 0.93, "ours": pw.get("nse_gain_best"), "unit": "%",
         "how": f"largest (NSE_DomST - NSE_SH+P) / |NSE_SH+P| over watersheds (watershed "
                f"{pw.get('nse_gain_best_watershed')}); over Singlehead: "
                f"{_pct(pw.get('nse_gain_over_singlehead_best'))}"},
    ]
    return rows


def _pct(v) -> str:
    return "-" if v is None else f"{v:.0%}"


def fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return _pct(value) if unit == "%" else f"{value:.2f}{unit}"
