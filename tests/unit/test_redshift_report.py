"""Redshift outputs: thesis-shaped tables, findings with our numbers, ablation stats, HDF5, figures."""
import copy
import json
import os

import h5py
import numpy as np
import pytest

from jobs import redshift_figures as rf
from jobs import redshift_report as rr
from jobs import redshift_tables as rt

pytestmark = pytest.mark.unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N = 10  # epochs per curve


def acc_reaching(k):
    """Training accuracy that first passes 75% at epoch k (None: never)."""
    return [0.5] * N if k is None else [0.5] * (k - 1) + [0.8] * (N - k + 1)


def loss_stopping_at(k):
    """Loss that improves by 0.1 for k-1 epochs then stays flat: criterion 1 (mode min) stops at epoch k."""
    head = [1.0 - 0.1 * i for i in range(k - 1)]
    return head + [head[-1]] * (N - k + 1)


def worker(c1, c2, reach, loss_k, samples=100):
    return {"accuracy": acc_reaching(reach), "loss": loss_stopping_at(loss_k), "samples": samples,
            "epochs_to_stable": {"1": c1, "2": c2}}


def run(run_id, workers, data_mode, dataset, recs, mode="staleness-aware", updates=(), s=1):
    cluster = "single machine" if workers == 0 else f"{workers} worker{'s' * (workers > 1)}"
    per = {"single": recs[0]} if workers == 0 else {f"worker:{i}": r for i, r in enumerate(recs)}
    return {"id": run_id, "cluster": cluster, "workers": workers, "data_mode": data_mode, "dataset": dataset,
            "mode": "sequential" if workers == 0 else mode, "s": s, "per_worker": per,
            "updates": list(updates), "wall_time_s": 10.0 + workers}


def upd(worker_id, tau, applied):
    return {"worker": worker_id, "read_version": 7, "tau": tau, "lambda": 1.0 / max(tau, 1),
            "applied_version": applied, "time": 1.5}


MAIN = [
    run("5000-base", 0, "same", 5000, [worker(8, 14, 3, 4)]),
    run("5000-same-M1", 1, "same", 5000, [worker(8, 16, 8, 6)]),  # 1 worker: also fills 'different'
    run("5000-same-M2", 2, "same", 5000, [worker(7, 13, 5, 6), worker(7, 13, 5, 6)]),
    run("5000-different-M2", 2, "different", 5000, [worker(4, 15, 5, 4), worker(5, 15, None, 4)]),
    run("5000-same-M3", 3, "same", 5000, [worker(6, 13, 4, 6), worker(7, 12, 4, 6), worker(8, 14, 4, 6)]),
    run("5000-different-M3", 3, "different", 5000, [worker(5, 10, 4, 3), worker(5, 10, 5, 3), worker(5, 10, 6, 3)]),
    run("5000-same-M3-async", 3, "same", 5000, [worker(9, 9, 9, 9)] * 3, mode="async"),
    run("15000-base", 0, "same", 15000, [worker(7, 12, 3, 4)]),
    run("15000-same-M3", 3, "same", 15000, [worker(5, 11, 4, 5)] * 3),
]
# The early-stopping test's history: criterion 1 stops at 3 epochs, criterion 2 never (8 epochs).
HISTORY = [0.50, 0.60, 0.6005, 0.6100, 0.6102, 0.61025, 0.6104, 0.6200]
ABLATION = [
    run("abl-sa-s2", 2, "different", 5000, [worker(4, 8, 3, 3), worker(6, 10, 3, 3)], s=2,
        updates=[upd(0, 0, 1), upd(1, 1, 1), upd(0, 1, 2), upd(1, 2, 2), upd(0, 3, None)]),
    run("abl-async", 2, "different", 5000,
        [{"accuracy": HISTORY, "loss": []}, {"accuracy": [0.5, 0.9], "loss": []}], mode="async",
        updates=[upd(0, 0, 1), upd(1, 0, 2), upd(0, 4, 3)]),
]
RESULTS = {"runs": MAIN + ABLATION, "ablation_ids": ["abl-sa-s2", "abl-async"]}


def row(rows, cluster, worker_label):
    [found] = [r for r in rows if (r["cluster"], r["worker"]) == (cluster, worker_label)]
    return found


def test_stable_table_rows_match_the_runs():
    rows = rt.stable_table(MAIN, 5000)
    assert [(r["cluster"], r["worker"]) for r in rows] == [
        ("single machine", "-"), ("1 worker", "-"), ("2 workers", "#1"), ("2 workers", "#2"),
        ("3 workers", "#1"), ("3 workers", "#2"), ("3 workers", "#3")]
    # single machine and 1 worker see all data either way: their 'same' run fills 'different' too
    assert row(rows, "single machine", "-") == {"cluster": "single machine", "worker": "-", "crit1_same": 8,
                                                "crit1_different": 8, "crit2_same": 14, "crit2_different": 14}
    assert row(rows, "1 worker", "-")["crit2_different"] == 16
    assert row(rows, "2 workers", "#2") == {"cluster": "2 workers", "worker": "#2", "crit1_same": 7,
                                            "crit1_different": 5, "crit2_same": 13, "crit2_different": 15}
    # the async run with 9s is not in the table
    assert [r["crit1_same"] for r in rows if r["cluster"] == "3 workers"] == [6, 7, 8]


def test_stable_table_marks_cells_not_run():
    rows = rt.stable_table(MAIN, 15000)
    assert [(r["cluster"], r["worker"]) for r in rows] == [
        ("single machine", "-"), ("3 workers", "#1"), ("3 workers", "#2"), ("3 workers", "#3")]
    assert row(rows, "3 workers", "#1")["crit1_different"] is None
    assert row(rows, "3 workers", "#1")["crit2_same"] == 11
    assert rt.stable_table(MAIN, 999) == []


def test_stable_table_rejects_two_runs_in_one_cell():
    dup = copy.deepcopy(MAIN[2])
    dup["id"] = "other-M2"
    with pytest.raises(ValueError, match="5000-same-M2.*other-M2"):
        rt.stable_table(MAIN + [dup], 5000)


def test_bad_worker_key_is_named():
    bad = copy.deepcopy(MAIN[1])
    bad["per_worker"] = {"w0": bad["per_worker"]["worker:0"]}
    with pytest.raises(ValueError, match="5000-same-M1.*'w0'"):
        rt.stable_table([bad], 5000)


def test_thesis_table_expands_three_worker_row():
    thesis = rt.THESIS_STABLE[5000]
    assert [r["worker"] for r in thesis if r["cluster"] == "3 workers"] == ["#1", "#2", "#3"]
    assert {r["crit2_different"] for r in thesis if r["cluster"] == "3 workers"} == {10}
    assert row(thesis, "2 workers", "#2")["crit1_different"] == 5


def test_markdown_puts_thesis_beside_ours():
    md = rt.stable_markdown(rt.stable_table(MAIN, 5000), 5000, MAIN)
    assert "| 2 workers | #1 | 7 (7) | 4 (6) | 13 (13) | 15 (15) |" in md
    assert "| 3 workers | #3 | 8 (6) | 5 (6) | 14 (13) | 10 (10) |" in md
    assert "| 1 worker | - | 8 (8) | 8 (8) | 16 (16) | 16 (16) |" in md
    md15 = rt.stable_markdown(rt.stable_table(MAIN, 15000), 15000, MAIN)
    assert "| 3 workers | #1 | 5 (–) | – (–) | 11 (–) | – (–) |" in md15


def test_findings_are_computed_from_our_numbers():
    lines = rt.findings(rt.stable_table(MAIN, 5000), 5000, MAIN)
    more_nodes, gap, loss, level = lines
    # crit. 1: same 8 -> mean(6,7,8)=7 is -12.5%; different 8 -> 5 is -37.5%; thesis 8 -> 6 is -25.0%
    assert "same data: 1 worker 8 -> 3 workers 7.00 epochs, -12.5% (thesis table: -25.0%)" in more_nodes
    assert "different data: 1 worker 8 -> 3 workers 5.00 epochs, -37.5%" in more_nodes
    # |same - different|: 1 worker 0, 2 workers |7 - 4.5| = 2.5, 3 workers |7 - 5| = 2
    assert "ours 1 worker 0.00, 2 workers 2.50, 3 workers 2.00; smaller at 3 than at 2 workers: yes" in gap
    # loss crit. 1: 1 worker stops at 6; 3 workers same at 6 (+0.0%), different at 3 (-50.0%)
    assert "same data: 1 worker 6 -> 3 workers 6.00 epochs, +0.0%" in loss
    assert "different data: 1 worker 6 -> 3 workers 3.00 epochs, -50.0%" in loss
    # 75%: sequential epoch 3, 1 worker 8, 2 workers same 5, 2 different has a worker that never gets there
    assert "sequential: 3; 1 worker: 8; 2 workers same: 5; 2 workers different: not reached; " \
           "3 workers same: 4; 3 workers different: 5." in level
    # the thesis's own gaps, computed from its table: 1 worker 0, 2 workers |7 - 5.5|, 3 workers 0
    assert "thesis 5K: 1 worker 0.00, 2 workers 1.50, 3 workers 0.00; smaller at 3 than at 2 workers: yes" in gap


def test_findings_say_not_run_without_data():
    lines = rt.findings(rt.stable_table(MAIN, 15000), 15000, MAIN)
    assert "same data: not run; different data: not run" in lines[0]
    assert "ours not run" in lines[1]
    assert "different data: not run" in lines[2]
    assert len(rt.findings(rt.stable_table(MAIN, 15000), 15000)) == 2  # without runs: table findings only


def test_ablation_table_staleness_stats():
    rows = rt.ablation_table(RESULTS["runs"], RESULTS["ablation_ids"])
    sa, asy = rows
    assert (sa["mode"], sa["workers"], sa["s"]) == ("staleness-aware", 2, 2)
    assert sa["final_accuracy"] == pytest.approx(0.8)
    assert (sa["stable_crit1"], sa["stable_crit2"]) == (5, 9)
    assert sa["tau_mean"] == pytest.approx(7 / 5) and sa["tau_max"] == 3
    assert sa["tau_hist"] == {0: 1, 1: 2, 2: 1, 3: 1}
    assert (sa["updates_applied"], sa["versions"]) == (4, 2)
    # no epochs_to_stable given: computed (Keras 3, no rule recorded) from HISTORY (3 and never) and
    # [0.5, 0.9] (never and never); workers that never stopped are left out of the means
    assert (asy["stable_crit1"], asy["stable_crit2"]) == (3, None)
    assert asy["final_accuracy"] == pytest.approx((0.62 + 0.9) / 2)
    assert asy["tau_mean"] == pytest.approx(4 / 3) and asy["tau_max"] == 4 and asy["tau_hist"] == {0: 2, 4: 1}
    with pytest.raises(ValueError, match="'missing'"):
        rt.ablation_table(RESULTS["runs"], ["missing"])


def test_h5_round_trip(tmp_path):
    path = tmp_path / "r.h5"
    rr.write_h5(RESULTS, str(path))
    with h5py.File(path, "r") as h5:
        assert set(h5) == {r["id"] for r in RESULTS["runs"]}
        assert json.loads(h5.attrs["ablation_ids"]) == RESULTS["ablation_ids"]
        for r in RESULTS["runs"]:
            grp = h5[r["id"]]
            for key in ("cluster", "workers", "data_mode", "dataset", "mode", "s", "wall_time_s"):
                assert grp.attrs[key] == r[key]
            for key, rec in r["per_worker"].items():
                wg = grp["workers"][key.replace(":", "_")]
                assert wg.attrs["key"] == key
                assert wg["accuracy"].dtype == np.float32
                np.testing.assert_array_equal(wg["accuracy"][()], np.asarray(rec["accuracy"], np.float32))
                np.testing.assert_array_equal(wg["loss"][()], np.asarray(rec["loss"], np.float32))
        ug = h5["abl-sa-s2"]["updates"]
        assert ug["tau"][()].tolist() == [0, 1, 1, 2, 3]
        assert ug["applied_version"][()].tolist() == [1, 1, 2, 2, -1]
        np.testing.assert_allclose(ug["lambda"][()], [1.0, 1.0, 1.0, 0.5, 1 / 3])
        assert len(h5["5000-base"]["updates"]["tau"]) == 0


def test_failed_write_leaves_no_file(tmp_path):
    bad = copy.deepcopy(RESULTS)
    bad["runs"][-1]["per_worker"]["worker:1"]["accuracy"] = ["not a number"]
    with pytest.raises(ValueError):
        rr.write_h5(bad, str(tmp_path / "r.h5"))
    assert os.listdir(tmp_path) == []


def is_png(path, min_bytes=5000):
    data = open(path, "rb").read()
    return data[:8] == PNG_MAGIC and len(data) > min_bytes


@pytest.fixture(scope="module")
def full_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("redshift")
    return out, rr.write_all(RESULTS, str(out))


def test_write_all_writes_every_part(full_output):
    out, names = full_output
    assert set(names) == {"stable_5000.csv", "stable_5000.md", "stable_15000.csv", "stable_15000.md",
                          "stable_bars_5000.png", "stable_bars_15000.png", "accuracy.png", "loss.png",
                          "ablation.csv", "tau_hist.png", "redshift.h5", "report.md"}
    assert sorted(os.listdir(out)) == sorted(names)  # no temporary files left behind
    for name in names:
        if name.endswith(".png"):
            assert is_png(out / name), name
    csv_lines = (out / "stable_5000.csv").read_text().splitlines()
    assert csv_lines[0] == "cluster,worker,crit1_same,crit1_different,crit2_same,crit2_different"
    assert "2 workers,#1,7,4,13,15" in csv_lines
    ablation = (out / "ablation.csv").read_text()
    assert "abl-async" in ablation and '"{""0"": 2, ""4"": 1}"' in ablation
    report = (out / "report.md").read_text()
    assert "(stable_bars_5000.png)" in report and "(tau_hist.png)" in report
    assert "4 (6)" in report and "-37.5%" in report and "Staleness ablation" in report


def test_write_all_skips_absent_parts(tmp_path):
    only_5k = {"runs": [copy.deepcopy(r) for r in MAIN[:2]]}
    names = rr.write_all(only_5k, str(tmp_path / "a"))
    assert set(names) == {"stable_5000.csv", "stable_5000.md", "stable_bars_5000.png", "accuracy.png",
                          "loss.png", "redshift.h5", "report.md"}
    # ablation runs without updates: the table is written, the histogram is not
    quiet = copy.deepcopy(ABLATION[:1])
    quiet[0]["updates"] = []
    names = rr.write_all({"runs": quiet, "ablation_ids": ["abl-sa-s2"]}, str(tmp_path / "b"))
    assert "ablation.csv" in names and "tau_hist.png" not in names and "stable_5000.csv" not in names
    assert rr.write_all({"runs": []}, str(tmp_path / "c")) == ["report.md"]
    assert os.listdir(tmp_path / "c") == ["report.md"]


def test_plots_without_data_write_nothing(tmp_path):
    empty_rows = [{"cluster": "1 worker", "worker": "-", **dict.fromkeys(rt.COLUMNS)}]
    assert rf.plot_stable_bars(empty_rows, str(tmp_path / "b.png")) is None
    assert rf.plot_curves([], "loss", str(tmp_path / "c.png")) is None
    assert rf.plot_tau_hist(MAIN, ["5000-base"], str(tmp_path / "t.png")) is None  # no updates
    assert os.listdir(tmp_path) == []


def test_cells_that_stopped_on_a_criterion_fill_only_its_columns_and_never_stopped_is_marked():
    def stopped(run_id, workers, mode, crit, values):
        r = run(run_id, workers, mode, 5000, [worker(None, None, 3, 4) for _ in values])
        for rec, v in zip(r["per_worker"].values(), values):
            rec["epochs_to_stable"] = {str(crit): v}
        return {**r, "stop_on": crit, "stopping_rule": "keras2.0", "max_epochs": 20}
    runs = [run("5000-base", 0, "same", 5000, [worker(9, 15, 3, 4)]),
            stopped("M2-c1", 2, "different", 1, [6, ">20"]), stopped("M2-c2", 2, "different", 2, [15, 16])]
    rows = rt.stable_table(runs, 5000)
    assert row(rows, "2 workers", "#1")["crit1_different"] == 6
    assert row(rows, "2 workers", "#2")["crit1_different"] == ">20"
    assert [row(rows, "2 workers", w)["crit2_different"] for w in ("#1", "#2")] == [15, 16]
    md = rt.stable_markdown(rows, 5000, runs)
    assert "| 2 workers | #2 | – (7) | >20 (5) | – (13) | 16 (15) |" in md
    assert "stopping rule keras2.0 / keras3" in md  # the baseline dicts of this test record no rule
    # the finding's mean leaves the worker that never stopped out: 2 workers different = 6
    assert rt._by_size(rows, 1)[(2, "different")] == 6
    with pytest.raises(ValueError, match="both fill the cell"):
        rt.stable_table(runs + [stopped("M2-c1-again", 2, "different", 1, [6, 6])], 5000)


def test_stable_bars_draw_a_never_stopped_worker(tmp_path):
    rows = [{"cluster": "2 workers", "worker": "#1", "crit1_same": 6, "crit1_different": ">20",
             "crit2_same": None, "crit2_different": 12}]
    path = tmp_path / "bars.png"
    assert rf.plot_stable_bars(rows, str(path)) and path.read_bytes()[:8] == PNG_MAGIC
