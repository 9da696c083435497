"""The Dom-ST job on the real mini-cluster, tiny region: bundles, IP-D with one watershed per node, S on one
node, NSE for every watershed and approach, heads on separate devices, and a bad input that names its file."""
import csv
import json
import math

from .conftest import DOMST_ABLATION, DOMST_APPROACHES, failed_on_input, leftovers


def test_domst_tiny_three_watersheds_one_per_node(minicluster, tiny_domst):
    out = tiny_domst  # conftest: 3 watersheds, one node each (nodes: null), 2 epochs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["watersheds"] == 3
    assert sorted(p.name for p in (out / "watersheds").iterdir()) == ["W01.h5", "W02.h5", "W03.h5"]
    results = json.loads((out / "results.json").read_text())
    # IP-D: one watershed per node, every watershed once; S: all three on one node
    assert sorted(map(len, results["plans"]["ipd"])) == [1, 1, 1]
    assert sorted(w for node in results["plans"]["ipd"] for w in node) == ["W01", "W02", "W03"]
    assert len(results["plans"]["s"]) == 1 and len(results["plans"]["s"][0]) == 3
    rows = list(csv.DictReader(open(out / "nse_per_watershed.csv")))
    assert [r["watershed"] for r in rows] == ["W01", "W02", "W03"]
    for row in rows:
        for approach in DOMST_APPROACHES:
            assert math.isfinite(float(row[f"nse_{approach}"])), row
    # Table 1: each approach in its own S run and its own IP-D run
    for mode, nodes in (("ipd", 3), ("s", 1)):
        assert sorted(summary["times_s"][mode]) == sorted(DOMST_APPROACHES)
        for approach, times in summary["times_s"][mode].items():
            assert times["phase_s"] > 0 and times["driver_s"] >= times["phase_s"] * 0.5, (mode, approach)
            assert times["nodes_used"] == nodes and times["busiest_node_s"] <= times["phase_s"]
    sp = summary["speedups"]
    assert sp["overall"] == summary["times_s"]["s"]["singlehead_p"]["phase_s"] / \
        summary["times_s"]["ipd"]["domst"]["phase_s"]
    table1 = list(csv.DictReader(open(out / "times.csv")))
    assert [r["paper_speedup"] for r in table1] == ["8.5", "12.6", "22.7"]
    print("Table 1 (s):", [(r["approach"], r["S_s"], r["IPD_s"], r["speedup"]) for r in table1])
    # the paper's per-watershed figures, computed from the S runs' seconds
    pw = summary["per_watershed"]
    gains = list(csv.DictReader(open(out / "gains_per_watershed.csv")))
    ratios = [float(r["train_s_singlehead_p"]) / float(r["train_s_domst"]) for r in gains]
    assert pw["time_mode"] == "s" and math.isclose(pw["speedup_mean"], sum(ratios) / 3)
    assert math.isclose(pw["speedup_best"], max(ratios)) and pw["nse_gain_best"] is not None
    figures = list(csv.DictReader(open(out / "paper_figures.csv")))
    assert {r["paper"] for r in figures} >= {"2.02", "4.11", "0.16", "0.93", "22.7"}
    # the ablation: the session's variants on every watershed, in one IP-D run with one watershed per node
    ablation = {r["approach"]: r for r in csv.DictReader(open(out / "ablation.csv"))}
    assert sorted(ablation) == sorted([*DOMST_APPROACHES, *DOMST_ABLATION])
    for row in ablation.values():
        assert math.isfinite(float(row["median_nse"])), row
    wide = [results["scores"][w]["singlehead_p_wide"]["params"] for w in ("W01", "W02", "W03")]
    dom = [results["scores"][w]["domst"]["params"] for w in ("W01", "W02", "W03")]
    assert all(abs(a - b) <= 0.05 * b for a, b in zip(wide, dom)), (wide, dom)
    assert summary["unscored"] == {}
    # Dom-ST's heads and temporal block: variables on pairwise different devices, in every watershed
    for wid, devices in summary["domst_devices"].items():
        placed = devices["heads"] + [devices["temporal"]]
        assert len(devices["heads"]) >= 1 and len(set(placed)) == len(placed), (wid, devices)
    assert summary["domst_heads_on_separate_devices"] is True
    assert set(summary["missing_days"]) == {"W01", "W02", "W03"}
    assert summary["missing_days_total"] == sum(summary["missing_days"].values())
    assert (out / "figure3_nse.png").stat().st_size > 0 and "Table 1" in (out / "report.md").read_text()
    assert leftovers(minicluster) == []


def test_domst_progress_lines_and_tensorboard_files_per_worker(tiny_domst):
    import re

    from distributed.tb_events import read_scalars
    from .conftest import TINY_STDOUT
    out, log = tiny_domst, TINY_STDOUT["domst"]
    results = json.loads((out / "results.json").read_text())
    for mode, plan in results["plans"].items():
        for approach in DOMST_APPROACHES:
            for node, wids in enumerate(plan):
                models = len(wids)
                assert re.search(rf"progress {mode} {approach}: worker:{node}  {wids[-1]} {approach}  "
                                 rf"models {models}/{models}  epoch \d/2  nse -?[\d.]+", log), log[-3000:]
                (events,) = (out / "tensorboard" / f"{mode}_{approach}" / f"worker_{node}").glob(
                    "events.out.tfevents.*")
                scalars = read_scalars(events)
                for wid in wids:
                    assert [step for step, _ in scalars[f"{wid}/{approach}/val_loss"]][:1] == [1]
                    assert math.isfinite(scalars[f"{wid}/{approach}/nse"][0][1])
            assert f"progress {mode} {approach}: finished [########################] 3/3 models 100%" in log


def test_domst_negative_precipitation_fails_naming_the_file(minicluster, tmp_path):
    from rdd_io.domst_sim import PRECIP_FILE, simulate_region, write_region
    region = simulate_region(seed=1, years=1, n_watersheds=2)
    i, j = map(int, region["outlets"][0])
    region["precip"][40, i, j] = -2.5
    write_region(str(tmp_path / "input"), region)
    out = tmp_path / "domst"
    summary = failed_on_input(minicluster, "domst", out, str(tmp_path / "input"))
    assert PRECIP_FILE.rsplit("/", 1)[-1] in summary["error"] and "negative" in summary["error"].lower()
    assert leftovers(minicluster) == []
