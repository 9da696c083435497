"""The land-cover job's driver-side logic without a cluster: config, experiment cells, per-cell series
cuts, the report's rows, and the bytes bench's arithmetic."""
import pytest

from conf import CONF_DIR, load
from jobs import landcover, landcover_report
from conf.loader import read_yaml

pytestmark = pytest.mark.unit

MIB = 1024 * 1024
CASE_FILE = CONF_DIR / "landcover.yaml"


def paper_cfg():
    return load(landcover.LandcoverConfig, CASE_FILE, "paper")


# ---------------------------------------------------------------------------------- config and cells
def test_tiny_and_paper_presets_load():
    tiny = load(landcover.LandcoverConfig, CASE_FILE, "tiny")
    assert tiny.data.sizes == [240] and tiny.train.batch_size == 20 and tiny.model.rgb_filters == [4, 8]
    paper = paper_cfg()
    assert paper.data.sizes == [2500, 8000] and paper.train.epochs == 10 and paper.train.batch_size == 200
    assert paper.experiments.plan_window_s == 0 and paper.experiments.batch_window_s > 0
    assert tiny.experiments.plan_window_s > 0 and tiny.experiments.batch_window_s > 0  # the window path runs
    assert tiny.experiments.sample_interval_s <= 0.5
    assert paper.experiments.plans == ["default", "scheme2", "scheme3", "scheme4", "scheme5"]
    plans_file = read_yaml(CASE_FILE.parent / "landcover_plans.yaml")  # the config's placement: !include
    assert set(paper.experiments.plans) <= set(paper.placement) == set(plans_file) == set(tiny.placement)
    assert paper.executors() == len(landcover.ROLES) == 5


def test_the_plans_are_part_of_the_config_and_a_changed_plan_refuses_resume(tmp_path):
    from conf import ConfigError, dump
    from jobs.runner import check_resumable
    text = dump(paper_cfg())
    assert "placement:" in text and "hsi_b2_conv" in text  # written into config.yaml with the run
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(text)
    check_resumable(str(out), text)
    moved = load(landcover.LandcoverConfig, CASE_FILE, "paper", [  # scheme4's last HSI convolution moves
        "placement.scheme4.worker:1=[hsi_b2_pool, hsi_b2_bn, 'hsi_b3_*']",
        "placement.scheme4.worker:2=[hsi_b4_conv, hsi_b4_pool, hsi_b4_bn, hsi_dropout, hsi_flatten, rgb_dropout, "
        "rgb_flatten, fusion_concat, fc1, fc2, softmax]"])
    with pytest.raises(ConfigError, match="config differs") as err:
        check_resumable(str(out), dump(moved))
    assert "+    worker:2:" in str(err.value)  # the one line that moved: hsi_b4_conv now opens worker:2's list


@pytest.mark.parametrize("override, message", [
    ("placement.scheme2.worker:0=['rgb_*', fc1]", r"placement: plan 'scheme2'.*fc1"),
    ("experiments.plans=[default, scheme9]", r"experiments.plans: \['scheme9'\] not in placement"),
])
def test_a_plan_that_places_a_unit_twice_or_a_plan_not_defined_is_refused(override, message):
    from conf import ConfigError
    with pytest.raises(ConfigError, match=message):
        load(landcover.LandcoverConfig, CASE_FILE, "paper", [override])


def test_an_included_file_that_is_missing_is_named(tmp_path):
    from conf import ConfigError
    case = tmp_path / "case.yaml"
    case.write_text(CASE_FILE.read_text().replace("!include landcover_plans.yaml", "!include nowhere.yaml"))
    with pytest.raises(ConfigError, match=f"config file not found: {tmp_path / 'nowhere.yaml'}"):
        load(landcover.LandcoverConfig, case, "paper")


def test_the_model_parallel_run_spec_travels_as_json_and_is_checked_again_where_it_is_read():
    import json

    from conf import ConfigError, from_json, to_json
    from jobs.landcover_config import LandcoverRun
    cfg = paper_cfg()
    cells = landcover.experiment_cells(cfg, {2500: "file:///p/2500", 8000: "file:///p/8000"})
    spec = LandcoverRun.of(cfg, landcover.model_args(cfg), cells, "file:///out/checkpoints", None, False)
    text = to_json(spec)
    assert from_json(LandcoverRun, text) == spec and set(spec.plans) == set(cfg.experiments.plans)
    bad = json.loads(text)
    bad["plans"]["scheme2"]["worker:0"].append("fc1")  # fc1 placed twice
    with pytest.raises(ConfigError, match=r"LandcoverRun.plans: plan 'scheme2'.*fc1"):
        from_json(LandcoverRun, json.dumps(bad))
    del bad["plans"]["scheme2"]
    with pytest.raises(ConfigError, match=r"LandcoverRun.cells: plans \['scheme2'\] are not in plans"):
        from_json(LandcoverRun, json.dumps(bad))


def test_paper_cells_cover_each_plan_batch_size_and_set_once():
    cfg = paper_cfg()
    uris = {2500: "file:///p/2500", 8000: "file:///p/8000"}
    cells = landcover.experiment_cells(cfg, uris)
    ids = [c["id"] for c in cells]
    assert len(ids) == len(set(ids))
    main = [c for c in cells if c["dataset"] == 8000 and c["batch_size"] == 200 and c["epochs"] == 10]
    assert sorted(c["plan"] for c in main) == sorted(cfg.experiments.plans)  # each plan once
    assert all(c["window_s"] == 0 for c in main)  # the thesis's 10 epochs, no more
    sweep = [c for c in cells if c["epochs"] == 1]
    assert sorted(c["batch_size"] for c in sweep) == [10, 50, 200]
    assert {(c["plan"], c["dataset"], c["window_s"]) for c in sweep} == {("default", 8000, 1200)}
    small = [c for c in cells if c["dataset"] == 2500]
    assert [(c["plan"], c["batch_size"], c["data_uri"]) for c in small] == [("default", 200, uris[2500])]
    assert len(cells) == len(main) + len(sweep) + len(small)
    assert all(c["data_uri"] == uris[c["dataset"]] for c in cells)


# ------------------------------------------------------------------------------------- slice_series
def role_result():
    return {"origin": 100.0, "series": {"worker:0": {
        "t_s": [0.5, 1.0, 1.5, 2.0, 2.5], "bytes_in": [1, 2, 3, 4, 5], "bytes_out": [10, 30, 60, 100, 150],
        "cpu_percent": [5.0, 6.0, 7.0, 8.0, 9.0]}}}


def test_slice_series_cuts_and_rebases_on_the_sample_before_the_window():
    out = landcover.slice_series(role_result(), 101.0, 102.0)
    assert out["t_s"] == [0.5, 1.0, 1.5]
    assert out["bytes_out"] == [20, 50, 90] and out["bytes_in"] == [1, 2, 3]
    assert out["cpu_percent"] == [6.0, 7.0, 8.0]  # rates are kept as sampled


def test_slice_series_at_the_first_sample_and_on_an_empty_window():
    first = landcover.slice_series(role_result(), 100.0, 100.6)
    assert first == {"t_s": [0.5], "bytes_in": [1], "bytes_out": [10], "cpu_percent": [5.0]}
    empty = landcover.slice_series(role_result(), 103.0, 104.0)
    assert empty == {"t_s": [], "bytes_in": [], "bytes_out": [], "cpu_percent": []}


# ---------------------------------------------------------------------------------- report rows
def series(out_rates, cpu, wait, rss_mib, t=(1.0, 2.0)):
    out, total = [], 0.0
    for a, b, rate in zip((0.0,) + t[:-1], t, out_rates):
        total += rate * (b - a)
        out.append(total)
    return {"t_s": list(t), "bytes_in": [0, 0], "bytes_out": out, "bytes_in_per_s": [0.0, 0.0],
            "bytes_out_per_s": list(out_rates), "cpu_percent": list(cpu), "wait_percent": list(wait),
            "rss_bytes": [m * MIB for m in rss_mib]}


def cell(cid, plan, batch, dataset, epochs=2, steps=10):
    return {"id": cid, "plan": plan, "batch_size": batch, "dataset": dataset, "epochs": epochs, "steps": steps,
            "epoch_time_s": [2.0, 4.0][:epochs], "loss": [1.0, 0.5][:epochs], "accuracy": [0.3, 0.6][:epochs]}


CELLS = [cell("a", "default", 50, 8000), cell("b", "default", 10, 8000, epochs=1, steps=40),
         cell("c", "scheme2", 50, 8000), cell("d", "default", 50, 2500, steps=4),
         cell("e", "default", 50, 8000), cell("single", "single machine", 50, 8000)]
METRICS = {
    "a": {"ps:0": series([MIB, 2 * MIB], [50, 100], [1, 5], [10, 20]),
          "worker:2": series([3 * MIB, 3 * MIB], [20, 40], [0, 2], [30, 30])},
    "b": {"ps:0": series([4 * MIB, 4 * MIB], [10, 10], [0, 0], [1, 1])},
    "c": {"ps:0": series([0, MIB], [0, 0], [0, 9], [5, 5])},
    "d": {"ps:0": series([MIB, MIB], [0, 0], [0, 0], [1, 1])},
    "e": {"ps:0": series([9 * MIB, 9 * MIB], [0, 0], [0, 0], [1, 1])},
}


def test_plan_rows_take_one_cell_per_plan_at_the_main_batch_and_set():
    rows = landcover_report.plan_rows(CELLS, METRICS, 50, 8000)
    assert [(r["plan"], r["cell"]) for r in rows] == [("default", "a"), ("scheme2", "c")]
    a = rows[0]
    assert a["epoch_time_s"] == pytest.approx(3.0) and a["final_loss"] == 0.5 and a["final_accuracy"] == 0.6
    assert a["ps:0 out MiB/s"] == pytest.approx(1.5) and a["worker:2 out MiB/s"] == pytest.approx(3.0)
    assert a["ps:0 cpu %"] == pytest.approx(75.0) and a["ps:0 wait % peak"] == 5
    assert a["ps:0 rss MiB peak"] == pytest.approx(20.0) and a["worker:2 rss MiB peak"] == pytest.approx(30.0)
    assert rows[1]["ps:0 out MiB/s"] == pytest.approx(0.5) and rows[1]["ps:0 wait % peak"] == 9


def test_batch_rows_give_traffic_in_and_out_and_bytes_per_step_of_the_default_plan():
    analytic = {"total": 1000, "terms": {}, "out": {}, "in": {}}
    cells = [dict(c, t_start=0.0, t_end=6.0, window_s=20 if c["id"] == "b" else 0,
                  bytes_per_step={"measured": {"total": 1050.0, "steps": 30, "per_role": {}}, "analytic": analytic,
                                  "ratio": 1.05} if c["id"] == "b" else None) for c in CELLS]
    rows = landcover_report.batch_rows(cells, METRICS)
    assert [(r["dataset"], r["batch_size"], r["epochs"]) for r in rows] == \
        [(2500, 50, 2), (8000, 10, 1), (8000, 50, 2), (8000, 50, 2)]
    small, low, main, again = rows  # the sort is stable: cell a before cell e
    # cell a: ps 1.5 + worker:2 3.0 MiB/s out; ps 0 in, worker:2 0 in
    assert main["cluster_out_MiB_per_s"] == pytest.approx(4.5) and main["cluster_in_MiB_per_s"] == 0
    assert main["ps:0 out MiB/s"] == pytest.approx(1.5) and main["worker:2 in MiB/s"] == 0
    assert again["cluster_out_MiB_per_s"] == pytest.approx(9.0) and again["steps"] == 10
    assert low["window_s"] == 20 and low["seconds"] == 6.0 and low["measured_bytes_per_step"] == 1050.0
    assert low["analytic_bytes_per_step"] == 1000 and low["measured_over_analytic"] == 1.05
    assert main["measured_bytes_per_step"] is None
    text = landcover_report.batch_markdown(rows)
    assert "| 10 | 20 | 6.0 | 1 | 40 |" in text and "1,050 | 1,000 | 1.050 |" in text


# ------------------------------------------------------------------------ measured bytes per step
def test_a_counter_is_read_inside_the_pause_around_a_mark():
    from distributed.metrics import counter_at
    times, values = [10.0, 10.5, 11.0, 11.5, 12.0], [0, 100, 400, 400, 900]
    assert counter_at(times, values, [10.9, 11.2, 11.6]) == (400.0, True)  # samples at 11.0 and 11.5: in the pause
    assert counter_at(times, values, [10.7, 10.75, 10.8]) == (250.0, False)  # none in the pause: interpolated
    assert counter_at(times, values, [8.9, 9.0, 9.1]) == (0.0, False)
    assert counter_at(times, values, [12.9, 13.0, 13.1]) == (900.0, False)


def test_steady_bytes_sum_the_senders_between_the_two_pauses():
    def result(origin, t, out, inn):
        return {"origin": origin, "series": {"r": {"t_s": t, "bytes_out": out, "bytes_in": inn}}}
    results = {role: result(100.0, [1.0, 2.0, 3.0, 4.0], [50, 60, 260, 270], [5, 6, 26, 27])
               for role in landcover.ROLES}
    cell = {"steady": {"from": [101.5, 102.0, 102.5], "to": [103.5, 104.0, 104.5], "steps": 4}}
    got = landcover.steady_bytes(results, cell)
    assert got["per_role"]["ps:0"] == {"bytes_out": (270 - 60) / 4, "bytes_in": (27 - 6) / 4}
    assert got["total"] == 5 * (270 - 60) / 4 and got["exact"] and got["steps"] == 4
    assert landcover.steady_bytes(results, {"steady": None}) is None
