"""The Dom-ST job's driver-side logic without a cluster or TensorFlow: config, watershed assignment, times,
the bundle format, samples, and the report built from handcrafted results."""
import csv
import json

import numpy as np
import pytest

from conf import CONF_DIR, ConfigError, load
from bench import domst_efficiency
from jobs import domst, domst_config, domst_report, domst_roles
from rdd_io import domst_bundle
from rdd_io.domst_read import AlignedWatershed
from rdd_io.schema import SchemaError

pytestmark = pytest.mark.unit
CASE_FILE = CONF_DIR / "domst.yaml"


def test_tiny_and_paper_presets_load():
    tiny = load(domst.DomstConfig, CASE_FILE, "tiny")
    assert tiny.data.watersheds == 3 and tiny.data.years == 2 and tiny.experiments.nodes is None
    assert tiny.executors() == 3 and tiny.placement.cpu_devices is None  # one node per watershed
    assert tiny.experiments.ablation == list(domst_config.ABLATION)
    paper = load(domst.DomstConfig, CASE_FILE, "paper")
    assert paper.data.watersheds == 23 and paper.experiments.approaches == list(domst_config.APPROACHES)
    assert paper.executors() == 23  # the paper's input pipeline: 23 nodes, one watershed each
    capped = load(domst.DomstConfig, CASE_FILE, "tiny", ["experiments.nodes=5"])
    assert capped.executors() == 3 and load(domst.DomstConfig, CASE_FILE, "tiny",
                                            ["experiments.nodes=2"]).executors() == 2
    assert paper.experiments.modes == ["ipd", "s"] and paper.model.k_groups == 4
    s_only = load(domst.DomstConfig, CASE_FILE, "tiny", ["experiments.modes=[s]"])
    assert s_only.executors() == 1


def test_the_worker_run_spec_travels_as_json_and_is_checked_again_where_it_is_read():
    from conf import ConfigError, from_json, to_json
    from jobs.domst_config import DomstRun
    cfg = load(domst.DomstConfig, CASE_FILE, "tiny")
    spec = DomstRun(model=cfg.model, train=cfg.train, placement=cfg.placement, approaches=["domst", "domst_k1"],
                    assignment=[["W01", "W03"], ["W02"]], bundles="file:///out/watersheds", lookback=cfg.data.lookback,
                    train_frac=cfg.data.train_frac, val_frac=cfg.data.val_frac, index={"W01": 0, "W02": 1, "W03": 2},
                    tensorboard_uri=None, checkpoints="file:///out/checkpoints/ipd", resume=False)
    text = to_json(spec)
    assert from_json(DomstRun, text) == spec
    bad = json.loads(text)
    bad["approaches"] = ["domst", "lstm"]
    with pytest.raises(ConfigError, match=r"DomstRun.approaches\[1\]: 'lstm' is not one of"):
        from_json(DomstRun, json.dumps(bad))
    bad = {**json.loads(text), "index": {"W01": 0, "W02": 1}}
    with pytest.raises(ConfigError, match=r"DomstRun.assignment: watersheds \['W03'\] have no index"):
        from_json(DomstRun, json.dumps(bad))


@pytest.mark.parametrize("override", ["experiments.nodes=0", "experiments.modes=[]", "data.val_frac=0.5",
                                      "data.lookback=2", "experiments.approaches=[domst, domst]",
                                      "placement.extra=1", "experiments.modes=[both]",
                                      "experiments.ablation=[domst_k1, domst_k1]", "experiments.ablation=[wider]"])

def test_bad_settings_are_errors(override):
    with pytest.raises(ConfigError):
        load(domst.DomstConfig, CASE_FILE, "tiny", [override])


def test_balanced_assignment_covers_every_watershed_once_and_balances_cost():
    rng = np.random.default_rng(0)
    costs = {f"W{i:02d}": float(c) for i, c in enumerate(rng.lognormal(3, 1, 23), 1)}
    plan = domst.assign(costs, 4)
    flat = [w for node in plan for w in node]
    assert sorted(flat) == sorted(costs) and len(flat) == len(set(flat))
    loads = [sum(costs[w] for w in node) for node in plan]
    rr = [sum(costs[w] for w in node) for node in domst.assign(costs, 4, "round_robin")]
    # greedy largest-first: the busiest node is within the largest single cost of the average
    assert max(loads) - sum(loads) / 4 <= max(costs.values())
    assert max(loads) <= max(rr)


def test_assignment_one_watershed_per_node_and_round_robin_order():
    costs = {"W01": 5.0, "W02": 1.0, "W03": 3.0}
    assert sorted(map(len, domst.assign(costs, 3))) == [1, 1, 1]
    assert domst.assign(costs, 2, "round_robin") == [["W01", "W03"], ["W02"]]
    assert domst.assign(costs, 1) == [["W01", "W03", "W02"]]
    with pytest.raises(ValueError):
        domst.assign(costs, 0)


def test_estimated_cost_grows_with_pixels():
    m = load(domst.DomstConfig, CASE_FILE, "paper").model
    assert domst.estimated_cost(300, m, 60) > domst.estimated_cost(10, m, 60) > 0


def _node(t0, t1, sheds):
    return {"t_start": t0, "t_end": t1, "startup_s": 2.0, "devices": ["/device:CPU:0", "/device:CPU:1"],
            "watersheds": [{"watershed": w, "k_groups": 2, "pixels": 5, "n_missing": 1,
                            "samples": {"train": 10, "val": 3, "test": 4},
                            "scores": [{"approach": a, "nse": nse, "peak_flow_error": 0.2, "epochs": 3,
                                        "train_s": secs, **({"pixcon": [1.0, 2.0, 3.0, 4.0, 5.0],
                                                             "devices": {"heads": ["/CPU:0", "/CPU:1"],
                                                                         "temporal": "/CPU:2"}}
                                                            if a == "domst" else {})}
                                       for a, nse, secs in scores]} for w, scores in sheds]}


NSE = {"W01": (0.2, 0.5, 0.8), "W02": (0.6, 0.4, 0.9), "W03": (0.1, 0.3, 0.2)}
# training seconds per watershed and approach in every run: Dom-ST over Singlehead(+P) 2x, 3x, 0.5x
SECS = {"W01": (1.0, 2.0, 1.0), "W02": (1.0, 3.0, 1.0), "W03": (1.0, 1.0, 2.0)}
ABLATED = {"W01": (0.6, 0.7), "W02": (0.3, 0.95), "W03": (0.25, 0.1)}  # singlehead_p_wide, domst_k1


def _scores(w, approaches=domst_config.APPROACHES):
    return [(a, v, secs) for a, v, secs in zip(domst_config.APPROACHES, NSE[w], SECS[w]) if a in approaches]


def _run(mode, label, plan, phase_s, nodes):
    ablated = lambda w: [(a, ABLATED[w][i], 1.0) for i, a in enumerate(("singlehead_p_wide", "domst_k1"))]  # noqa
    per = {w: ablated(w) if label == "ablation" else _scores(w, [label]) for w in NSE}
    return {"mode": mode, "label": label, "plan": plan,
            "times": {"phase_s": phase_s, "nodes_used": len(nodes), "driver_s": phase_s + 1,
                      "driver_total_s": phase_s + 5},
            "nodes": {f"worker:{k}": _node(0, phase_s, [(w, per[w]) for w in wids]) for k, wids in enumerate(nodes)}}


def handcrafted(ablation=True):
    sheds = [{"id": w, "site_no": f"0541{i}", "pixels": 5, "days": 100, "start": "2000-01-01",
              "end": "2000-04-09", "n_missing": i} for i, w in enumerate(NSE)]
    ipd_plan, s_plan = [["W01", "W03"], ["W02"]], [["W01", "W03", "W02"]]
    ipd_s, s_s = {"singlehead": 2.0, "singlehead_p": 2.0, "domst": 4.0}, {"singlehead": 3.0, "singlehead_p": 3.0,
                                                                          "domst": 6.0}
    runs = [r for a in domst_config.APPROACHES for r in (_run("ipd", a, ipd_plan, ipd_s[a], ipd_plan),
                                                   _run("s", a, s_plan, s_s[a], s_plan))]
    if ablation:
        runs.append(_run("ipd", "ablation", ipd_plan, 5.0, ipd_plan))
    results = domst_report.collect(sheds, runs, list(domst_config.APPROACHES),
                                   ["singlehead_p_wide", "domst_k1"] if ablation else [])
    results["pixcon"] = {"W01": {"pearson": 0.5, "spearman": 0.4, "n": 5}, "W02": None,
                         "W03": {"pearson": 0.7, "spearman": 0.6, "n": 5}}
    return results


def test_run_times_take_the_phase_span_and_the_busiest_node():
    nodes = {"worker:0": _node(100.0, 130.0, [("W01", _scores("W01")), ("W03", _scores("W03"))]),
             "worker:1": _node(101.0, 120.0, [("W02", _scores("W02"))])}
    t = domst.run_times(nodes)
    assert t["phase_s"] == 30.0 and t["nodes_used"] == 2
    assert t["busiest_node_s"] == 8.0  # worker:0: W01 1+2+1, W03 1+1+2


def test_summary_shares_speedups_and_missing_days_from_handcrafted_results():
    results = handcrafted()
    s = domst_report.summary(results)
    assert s["median_nse"] == {"singlehead": 0.2, "singlehead_p": 0.4, "domst": 0.8}
    assert s["shares"]["singlehead_p_beats_singlehead"] == pytest.approx(2 / 3)
    assert s["shares"]["domst_beats_both"] == pytest.approx(2 / 3)  # W03: 0.2 < 0.3
    # Table 1 from each approach's own runs: S 6 s over IP-D 4 s for Dom-ST; S(SH+P) 3 s / IP-D(Dom-ST) 4 s
    assert s["speedups"]["domst"] == pytest.approx(1.5) and s["speedups"]["singlehead_p"] == pytest.approx(1.5)
    assert s["speedups"]["overall"] == pytest.approx(0.75)
    assert s["speedups"]["all_approaches"] == pytest.approx(12 / 8)
    assert s["speedups"]["parallel_efficiency"] == pytest.approx(12 / (8 * 2))
    assert s["missing_days"] == {"W01": 0, "W02": 1, "W03": 2} and s["missing_days_total"] == 3
    assert s["mode_nse_gap"] == {a: 0.0 for a in domst_config.APPROACHES}
    assert s["domst_heads_on_separate_devices"] is True
    assert s["pixcon_correlation_median"]["spearman"] == pytest.approx(0.5)
    assert s["unscored"] == {}


def test_per_watershed_speedups_and_nse_gains_are_the_papers_quantities():
    pw = domst_report.summary(handcrafted())["per_watershed"]
    assert pw["time_mode"] == "s"
    assert pw["speedup_mean"] == pytest.approx((2 + 3 + 0.5) / 3)
    assert pw["speedup_best"] == pytest.approx(3.0) and pw["speedup_best_watershed"] == "W02"
    assert pw["nse_gain_mean"] == pytest.approx((1.9 / 3) / (1.2 / 3) - 1)  # mean NSE 0.633 vs 0.4
    assert pw["nse_gain_mean_of_watersheds"] == pytest.approx((0.6 + 1.25 - 1 / 3) / 3)
    assert pw["nse_gain_best"] == pytest.approx(1.25) and pw["nse_gain_best_watershed"] == "W02"
    assert pw["nse_gain_over_singlehead_best"] == pytest.approx(3.0)  # W01: 0.8 over 0.2


def test_ablation_shares_and_medians():
    s = domst_report.summary(handcrafted())
    wide, k1 = s["ablation"]["singlehead_p_wide"], s["ablation"]["domst_k1"]
    assert wide["median_nse"] == pytest.approx(0.3) and k1["median_nse"] == pytest.approx(0.7)
    assert wide["beats_singlehead_p"] == pytest.approx(1 / 3)  # W01 0.6 > 0.5 only
    assert k1["beats_domst"] == pytest.approx(1 / 3) and k1["beats_singlehead"] == pytest.approx(2 / 3)
    assert s["ablation"]["domst"]["beats_domst"] is None
    assert "ablation" not in domst_report.summary(handcrafted(ablation=False))


def test_an_unscored_watershed_is_reported_and_left_out_of_the_figures(tmp_path):
    results = handcrafted()
    for score in results["scores"]["W03"].values():
        score["nse"] = None
    results["scores"]["W03"] = {}
    results["watersheds"][2]["unscored"] = "watershed W03: the test period has 0 observed discharge days"
    s = domst_report.summary(results)
    assert s["unscored"] == {"W03": results["watersheds"][2]["unscored"]}
    assert s["median_nse"]["domst"] == pytest.approx(0.85) and s["shares"]["domst_beats_both"] == 1.0
    assert s["per_watershed"]["nse_gain_mean"] == pytest.approx(1.7 / 0.9 - 1)
    domst_report.write_all(results, str(tmp_path))
    assert "W03: watershed W03: the test period has 0" in (tmp_path / "report.md").read_text()
    rows = list(csv.DictReader(open(tmp_path / "nse_per_watershed.csv")))
    assert rows[2]["nse_domst"] == "" and rows[2]["unscored"].startswith("watershed W03")


def test_heads_sharing_a_device_are_reported():
    results = handcrafted()
    results["scores"]["W02"]["domst"]["devices"] = {"heads": ["/CPU:0", "/CPU:0"], "temporal": "/CPU:2"}
    assert domst_report.heads_apart(results) is False


def test_report_files_hold_the_tables(tmp_path):
    names = domst_report.write_all(handcrafted(), str(tmp_path))
    assert all((tmp_path / n).stat().st_size > 0 for n in names)
    rows = list(csv.DictReader(open(tmp_path / "nse_per_watershed.csv")))
    assert [r["watershed"] for r in rows] == ["W01", "W02", "W03"]
    assert float(rows[1]["nse_domst"]) == 0.9 and rows[1]["pixcon_spearman"] == ""
    times = list(csv.DictReader(open(tmp_path / "times.csv")))
    dom = next(r for r in times if r["approach"].startswith("Dom-ST"))
    assert float(dom["speedup"]) == 1.5 and float(dom["paper_speedup"]) == 12.6
    overall = times[-1]
    assert overall["approach"].startswith("overall") and float(overall["paper_speedup"]) == 22.7
    assert float(overall["speedup"]) == 0.75
    figures = {r["figure"]: r for r in csv.DictReader(open(tmp_path / "paper_figures.csv"))}
    mean = next(r for f, r in figures.items() if f.startswith("Dom-ST's speedup over Singlehead(+P) per watershed"))
    assert float(mean["paper"]) == 2.02 and float(mean["ours"]) == pytest.approx(5.5 / 3)
    ablation = list(csv.DictReader(open(tmp_path / "ablation.csv")))
    assert [r["approach"] for r in ablation] == list(domst_config.APPROACHES) + ["singlehead_p_wide", "domst_k1"]
    report = (tmp_path / "report.md").read_text()
    assert "| W02 |" in report and "parallel efficiency" in report and "91%" in report
    assert "Ablation" in report and "4.11x" in report and "93%" in report
    assert json.loads((tmp_path / "results.json").read_text())["plans"]["ipd"] == [["W01", "W03"], ["W02"]]
    assert (tmp_path / "figure3_nse.png").read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------ bundle and samples
def aligned(days=200, pixels=3, seed=0):
    rng = np.random.default_rng(seed)
    dates = np.arange(np.datetime64("2001-01-01"), np.datetime64("2001-01-01") + days)
    precip = rng.gamma(0.5, 4.0, (days, pixels)).astype(np.float32)
    q = np.convolve(precip.sum(1), np.ones(5) / 5, "full")[:days] + 1.0
    q[[7, 50]] = np.nan
    return AlignedWatershed("W09", dates, precip, q, np.isfinite(q), 2)


def test_bundle_round_trip_keeps_missing_days_and_pixel_arrays():
    a = aligned()
    data = domst_bundle.bundle_bytes(a, [0.5, 1.0, 2.5], [11, 12, 13], "05412000")
    b = domst_bundle.read_bundle(data, "W09.h5")
    assert b["watershed"] == "W09" and b["site_no"] == "05412000" and b["n_missing"] == 2
    assert np.isnan(b["discharge"][[7, 50]]).all() and not b["valid"][7]
    np.testing.assert_array_equal(b["precip"], a.precip)
    assert b["distance_km"].tolist() == [0.5, 1.0, 2.5] and b["pixel"].tolist() == [11, 12, 13]
    assert (b["day"][1:] - b["day"][:-1] == 1).all()


def test_bundle_refuses_nodata_distance_and_names_a_bad_file():
    with pytest.raises(SchemaError, match="W09"):
        domst_bundle.bundle_bytes(aligned(), [0.5, np.nan, 2.5], [11, 12, 13], "05412000")
    with pytest.raises(SchemaError, match="W04.h5"):
        domst_bundle.read_bundle(b"not hdf5", "W04.h5")


def test_samples_split_by_time_scale_on_train_and_drop_missing_targets_from_training():
    b = domst_bundle.read_bundle(domst_bundle.bundle_bytes(aligned(), [0.5, 1.0, 2.5], [1, 2, 3], "05412000"),
                                "W09.h5")
    s = domst_roles.prepare_samples(b, 10, 0.6, 0.2)
    assert s["n_samples"] == 190
    # day 7 lies inside the first window; day 50 is sample 40, in train, so train drops one sample
    assert len(s["train"]["y"]) == 114 - 1 and len(s["val"]["y"]) == 38
    assert len(s["test"]["y"]) == 38 and np.isfinite(s["train"]["y"]).all()
    assert s["train"]["x"].shape == (113, 10, 3) and s["train"]["p"].shape == (113, 3)
    assert abs(float(s["train"]["y"].mean())) < 1e-5
    np.testing.assert_allclose(s["test"]["y_raw"], b["discharge"][10 + 152:])  # sample i targets day i + 10


def test_bench_efficiency_is_sequential_time_over_nodes_times_parallel_time():
    times = {"s": {"singlehead": {"phase_s": 10.0}, "domst": {"phase_s": 20.0}},
             "ipd": {"singlehead": {"phase_s": 5.0, "nodes_used": 2}, "domst": {"phase_s": 15.0, "nodes_used": 2}}}
    assert domst_efficiency.efficiency(times) == (0.75, 30.0, 20.0, 2)
    args = domst_efficiency.parse_args(["--quick"])
    assert "experiments.nodes=2" in args.overrides and "data.watersheds=4" in args.overrides


def test_relative_gain_counts_an_improvement_over_a_negative_nse_as_positive():
    from models.domst_metrics import relative_gain
    assert relative_gain(0.9, 0.5) == pytest.approx(0.8)
    assert relative_gain(0.1, -0.5) == pytest.approx(1.2) and relative_gain(-0.6, -0.5) == pytest.approx(-0.2)
    assert relative_gain(0.5, 0.0) is None and relative_gain(None, 0.3) is None
