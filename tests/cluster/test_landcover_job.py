"""The land-cover job on the real mini-cluster, tiny scene: one epoch under `default` and one under `scheme4`."""
import json

import h5py
import pytest

from .conftest import leftovers


@pytest.fixture(scope="module")
def landcover_run(minicluster, tiny_landcover):
    """conftest's tiny run: plans default and scheme4, no batch-size cells, no data-parallel run."""
    return tiny_landcover, json.loads((tiny_landcover / "summary.json").read_text()), minicluster


def test_placed_devices_carry_traffic_between_workers(landcover_run):
    out, summary, _ = landcover_run
    for plan in ("default", "scheme4"):
        (cell,) = [k for k, v in summary["cells"].items() if v["plan"] == plan]
        sent = summary["bytes_out"][cell]
        # The RGB and HSI workers send their activations on (to the merging worker, and under scheme4
        # from the RGB worker to the HSI worker as well): none of them is idle.
        assert sent["worker:0"] > 10_000 and sent["worker:1"] > 10_000, (plan, sent)


def test_the_plan_does_not_change_the_model(landcover_run):
    _, summary, _ = landcover_run
    cells = {v["plan"]: v for v in summary["cells"].values()}
    assert cells["default"]["first_step_loss"] == pytest.approx(cells["scheme4"]["first_step_loss"], abs=1e-5)
    assert cells["default"]["loss"][0] == pytest.approx(cells["scheme4"]["loss"][0], rel=1e-4)
    assert cells["single machine"]["first_step_loss"] == pytest.approx(cells["default"]["first_step_loss"],
                                                                      abs=1e-5)


def test_per_role_metrics_are_written(landcover_run):
    out, summary, cluster = landcover_run
    with h5py.File(out / "metrics.h5", "r") as h5:
        assert len(h5.keys()) == 2
        for cell in h5.values():
            roles = set(cell.keys())
            assert {"ps:0", "chief:0", "worker:0", "worker:1", "worker:2"} <= roles
    assert (out / "plans.csv").exists() and (out / "traffic.png").stat().st_size > 1000
    assert leftovers(cluster) == []


def test_chief_progress_lines_and_tensorboard_files_per_cell(landcover_run):
    import re

    from jobs.tb_events import read_scalars
    from .conftest import TINY_STDOUT
    out, summary, _ = landcover_run
    log = TINY_STDOUT["landcover"]
    trained = {cid: c for cid, c in summary["cells"].items() if c["plan"] in ("default", "scheme4")}
    assert len(trained) == 2
    for cid, cell in trained.items():
        assert re.search(rf"progress model parallel: chief:0  {cid}  epoch 1/1  acc [\d.]+  loss \S+", log), log[-3000:]
        (events,) = (out / "tensorboard" / cid / "chief_0").glob("events.out.tfevents.*")
        scalars = read_scalars(events)
        assert [step for step, _ in scalars["loss"]] == [1]
        assert scalars["loss"][0][1] == pytest.approx(cell["loss"][0], rel=1e-5)
    assert "progress model parallel: finished [########################] 2/2 epochs 100%" in log
