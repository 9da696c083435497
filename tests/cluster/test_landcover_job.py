"""The land-cover job on the real mini-cluster, tiny scene: `default` and `scheme4` for a 6 s window each, the
default plan at batch sizes 10 and 40 for the same window, beside the single machine."""
import json

import h5py
import pytest

from .conftest import leftovers


@pytest.fixture(scope="module")
def landcover_run(minicluster, tiny_landcover):
    """conftest's tiny run: plans default and scheme4, no batch-size cells, no data-parallel run."""
    return tiny_landcover, json.loads((tiny_landcover / "summary.json").read_text()), minicluster


def test_measured_bytes_per_step_match_the_analytic_count_and_grow_with_the_batch(landcover_run):
    out, summary, _ = landcover_run
    cells = {cid: c for cid, c in summary["cells"].items() if "bytes_per_step" in c}
    assert {c["plan"] for c in cells.values()} == {"default", "scheme4"}
    assert sorted(c["batch_size"] for c in cells.values() if c["plan"] == "default") == [10, 20, 40]
    for cid, cell in cells.items():
        b = cell["bytes_per_step"]
        assert b["measured"] and b["measured"]["steps"] >= 3, (cid, b["measured"])
        # within 10% of models.landcover.step_bytes, for every plan and batch size
        assert abs(b["ratio"] - 1) <= 0.10, (cid, b["measured"]["total"], b["analytic"]["total"])
        # the branch workers read their own patches: the chief sends indices and its function-call RPCs, a
        # tenth or less of what the batch's patches would be (25 x 25 x 14 float32 a sample)
        patches = cell["batch_size"] * 25 * 25 * 14 * 4
        assert b["measured"]["per_role"]["chief:0"]["bytes_out"] < patches / 10, (cid, b["measured"]["per_role"])
    default = sorted((c["batch_size"], c["bytes_per_step"]["measured"]["total"]) for c in cells.values()
                     if c["plan"] == "default")
    assert all(a[1] < b[1] for a, b in zip(default, default[1:])), default
    text = (out / "report.md").read_text()
    assert "measured beside the analytic count" in text and "% of the host" in text and "runqueue" in text


def test_the_plan_does_not_change_the_model(landcover_run):
    _, summary, _ = landcover_run
    cells = {v["plan"]: v for v in summary["cells"].values() if v["batch_size"] == 20}
    assert cells["default"]["first_step_loss"] == pytest.approx(cells["scheme4"]["first_step_loss"], abs=1e-5)
    assert cells["default"]["loss"][0] == pytest.approx(cells["scheme4"]["loss"][0], rel=1e-4)
    assert cells["single machine"]["first_step_loss"] == pytest.approx(cells["default"]["first_step_loss"],
                                                                      abs=1e-5)


def test_per_role_metrics_are_written(landcover_run):
    out, summary, cluster = landcover_run
    with h5py.File(out / "metrics.h5", "r") as h5:
        assert len(h5.keys()) == 4
        for cell in h5.values():
            roles = set(cell.keys())
            assert {"ps:0", "chief:0", "worker:0", "worker:1", "worker:2"} <= roles
    assert (out / "plans.csv").exists() and (out / "traffic.png").stat().st_size > 1000
    assert leftovers(cluster) == []


def test_chief_progress_lines_and_tensorboard_files_per_cell(landcover_run):
    import re

    from distributed.tb_events import read_scalars
    from .conftest import TINY_STDOUT
    out, summary, _ = landcover_run
    log = TINY_STDOUT["landcover"]
    trained = {cid: c for cid, c in summary["cells"].items() if c["plan"] in ("default", "scheme4")}
    assert len(trained) == 4
    for cid, cell in trained.items():
        assert re.search(rf"progress model parallel: chief:0  {cid}  epoch 1/1  acc [\d.]+  loss \S+", log), log[-3000:]
        (events,) = (out / "tensorboard" / cid / "chief_0").glob("events.out.tfevents.*")
        scalars = read_scalars(events)
        assert [step for step, _ in scalars["loss"]] == list(range(1, len(cell["loss"]) + 1))
        assert scalars["loss"][0][1] == pytest.approx(cell["loss"][0], rel=1e-5)
    assert "progress model parallel: finished [########################] 4/4 epochs 100%" in log


def test_a_dfc2018_folder_as_downloaded_trains_through_the_job_and_a_misregistered_one_is_named(minicluster,
                                                                                               tmp_path):
    """data.source dfc2018 on the contest's layout (distributed names, UTM-named RGB tiles, georeferencing
    tags): patches are cut from its products and a plan trains on them; an HSI 0.3 m off the ground truth
    fails the run before any role starts, naming the file and the offset."""
    from rdd_io import landcover_dfc2018, storage

    from .conftest import run_job
    good, bad = tmp_path / "dfc2018", tmp_path / "dfc2018-shifted"
    facts = landcover_dfc2018.write_dfc2018(good, seed=3, gt_shape=(120, 120), test_fraction=0.2)
    landcover_dfc2018.write_dfc2018(bad, seed=3, gt_shape=(120, 120), test_fraction=0.2, hsi_offset_m=(0.0, 0.3))

    def run(folder, out):
        return run_job("landcover.py", "--preset", "tiny", "--master", minicluster.state.master_url,
                       "--set", f"cluster.run_dir={minicluster.run_dir}", "--output", str(out),
                       *[a for kv in ("data.source=dfc2018", f"data.input={folder}", "experiments.plans=[default]",
                                      "experiments.batch_sizes=[]", "experiments.plan_window_s=0",
                                      "experiments.data_parallel=false", "experiments.single_machine=false")
                         for a in ("--set", kv)], timeout=600)

    proc = run(bad, tmp_path / "bad")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last.startswith("landcover: failed: ") and f"{bad}/HSI/2018_IEEE_GRSS_DFC_HSI_TR: misregistered" in last \
        and "(+0.000, +0.300) m" in last, last

    proc = run(good, tmp_path / "good")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "good" / "summary.json").read_text())
    (cell,) = summary["cells"].values()
    assert cell["plan"] == "default" and len(cell["loss"]) == 1 and summary["held_out"]["test_samples"] > 0
    # The training patches are the folder's: each centre's label is the downloaded ground truth's there.
    shards = storage.list_tree(str(tmp_path / "good" / "patches" / "240"))
    assert shards
    for name in (n for n in shards if n.endswith(".h5")):
        with h5py.File(tmp_path / "good" / "patches" / "240" / name, "r") as h5:
            centre, label = h5["centre"][()], h5["label"][()]
        assert (facts["gt"][centre[:, 0], centre[:, 1]] - 1 == label).all()
    assert leftovers(minicluster) == []
