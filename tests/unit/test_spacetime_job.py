"""The space-time job without Spark: config, cells, cost model, and the roles' code on threads (LocalWorld)
through the report into an output folder that matches the declared schema."""
import json

import numpy as np
import pytest

from conf import CONF_DIR, ConfigError, dump, from_json, load, to_json
from distributed.mesh import LocalWorld
from distributed.mgrit import Solver
from jobs import spacetime_model as sm
from jobs.spacetime import SpacetimeConfig, cells
from jobs.spacetime_config import SpacetimeRun
from jobs.spacetime_model import cell, split_spacetime

pytestmark = pytest.mark.unit
CONF = CONF_DIR / "spacetime.yaml"


def test_presets_load_and_bad_values_are_refused():
    assert load(SpacetimeConfig, CONF, "tiny").executors() == 4
    assert load(SpacetimeConfig, CONF, "paper").experiments.side == 16
    for bad, words in (("experiments.processes=[1,3]", "powers of two"), ("model.kernel=4", "odd"),
                       ("experiments.layers_per_process=3", "multiple of"), ("mgrit.coarsening=1", "coarsening")):
        with pytest.raises(ConfigError, match=words):
            load(SpacetimeConfig, CONF, "tiny", [bad])


def test_cells_follow_the_slides_table():
    assert [split_spacetime(p) for p in (1, 2, 4, 8, 16)] == [(1, 1), (1, 2), (2, 2), (2, 4), (4, 4)]
    space, depth, both = (cell(m, 8, 16, 8) for m in ("space", "depth", "spacetime"))
    assert (space["voxels_per_process"], space["layers_per_process"]) == (16 ** 3, 64)     # 16^3, 2^N x 8
    assert (depth["voxels_per_process"], depth["layers_per_process"]) == (8 * 16 ** 3, 8)  # 2^N x 16^3, 8
    assert (both["voxels_per_process"], both["layers_per_process"]) == (16 ** 3, 8)        # 16^3, 8
    assert space["shape"] == depth["shape"] == [32, 32, 32] and space["layers"] == depth["layers"] == 64
    plan = cells(load(SpacetimeConfig, CONF, "tiny").experiments)
    assert [c["id"] for c in plan] == ["serial-P1", "space-P2", "depth-P2", "spacetime-P2", "space-P4", "depth-P4",
                                       "spacetime-P4"]


@pytest.mark.parametrize("n,c,levels,fcf", [(8, 2, 1, True), (8, 2, 2, True), (8, 2, 3, False), (16, 4, 2, True),
                                            (8, 2, 3, True)])
def test_the_model_counts_the_layer_evaluations_the_solver_makes(n, c, levels, fcf):
    solver = Solver(lambda level, j, x: x * 0.5 + 1, LocalWorld(1).comm(0), None, None, c, levels, fcf)
    solver.solve([np.zeros(1)] * (n + 1), iterations=3)
    per_cycle, _ = sm.cycle_evaluations(n, c, levels, fcf)
    assert solver.steps_evaluated == (per_cycle if levels == 1 else 3 * per_cycle)


def test_the_fit_recovers_a_and_b_and_the_model_grows_least_for_space_x_depth():
    a, b = 0.002, 3e-7
    rows = [(e * (a + b * v), e, v) for e, v in ((6, 512), (40, 1024), (12, 2048))]
    assert sm.fit_eval_time(rows) == pytest.approx((a, b))
    mgrit = {"coarsening": 2, "levels": 3, "iterations": 1, "fcf": False}
    table = sm.modelled_rows(["space", "depth", "spacetime"], range(0, 9), 16, 8, mgrit, 8, 3, 1, a, b, 2e-6, 1e10, 36)
    growth = {m: table[-1][f"{m}_step_s"] / table[0][f"{m}_step_s"] for m in ("space", "depth", "spacetime")}
    assert growth["spacetime"] < growth["depth"] and growth["spacetime"] < growth["space"]
    assert table[-1]["nodes"] == 8  # 256 processes on 36-core nodes


def test_the_run_spec_travels_as_json_and_is_checked_again_where_it_is_read():
    cfg = load(SpacetimeConfig, CONF, "tiny")
    text = to_json(SpacetimeRun.of(cfg, cells(cfg.experiments), "ab"))
    run = from_json(SpacetimeRun, text)
    assert run.model == cfg.model and run.mesh_secret == "ab" and run.tf_threads == cfg.train.tf_threads
    bad = json.loads(text)
    bad["mgrit"]["levels"] = 0  # a value the config would refuse is refused on the executor too
    with pytest.raises(ConfigError, match=r"SpacetimeRun.mgrit.levels: 0 is out of range"):
        from_json(SpacetimeRun, json.dumps(bad))
    del bad["steps"]
    with pytest.raises(ConfigError, match="missing key 'steps'"):
        from_json(SpacetimeRun, json.dumps({**bad, "mgrit": json.loads(text)["mgrit"]}))
    with pytest.raises(ConfigError, match="SpacetimeRun: not a JSON object"):
        from_json(SpacetimeRun, b"\x80\x04 a pickle")


def test_roles_on_threads_through_the_report_match_the_schema(tmp_path):
    """The roles' cells run on emulated processes, the driver's report writes every declared output."""
    from jobs import spacetime_report, spacetime_roles
    from jobs.output_schema import check
    cfg = load(SpacetimeConfig, CONF, "tiny", ["experiments.processes=[1,2]", "experiments.side=4",
                                              "experiments.steps=1", "experiments.check_iterations=2"])
    plan = cells(cfg.experiments)
    run = from_json(SpacetimeRun, to_json(SpacetimeRun.of(cfg, plan, "00")))  # as the roles receive it
    assert run.steps == 1 and run.check_iterations == 2 and run.serial_training and run.cells == plan
    results = LocalWorld(2).run(lambda comm: {"rank": comm.rank, "address": f"thread:{comm.rank}", "mesh_s": 0.0,
                                              "cells": spacetime_roles.run_cells(run, comm, comm.rank)})
    report = spacetime_report.collect(cfg, plan, {f"worker:{r['rank']}": r for r in results})
    names = spacetime_report.write_all(report, str(tmp_path))
    summary = {"case": "spacetime", "preset": "tiny", "status": "ok", "resumed": False, "wall_time_s": 1.0,
               "outputs": names, **spacetime_report.summary(report)}
    (tmp_path / "summary.json").write_text(json.dumps(summary, default=str))
    (tmp_path / "config.yaml").write_text(dump(cfg, case="spacetime", preset="tiny"))
    assert check("spacetime", tmp_path) == []
    assert summary["equal_to_undecomposed"] is True and summary["max_gradient_rel_diff"] <= 1e-5
    assert summary["halo_bytes_measured_over_analytic"] == [1.0, 1.0]
    assert summary["max_loss_rel_diff_vs_serial"] <= 1e-4
    assert "MODELLED" in (tmp_path / "report.md").read_text()
