"""The space-time job on the real mini-cluster, tiny: four TFoS worker roles on the authenticated mesh train
the space-, depth- and space x depth-parallel network; forward and gradients equal the undecomposed
network, halo bytes equal the analytic halo volume, the loss equals serial training's."""
import csv
import json

from .conftest import leftovers


def test_spacetime_tiny_space_depth_and_both_on_the_minicluster(minicluster, tiny_spacetime):
    out = tiny_spacetime  # conftest: processes 1, 2, 4; 8^3 and 2 layers per process; 2 timed steps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["cells"] == 7
    assert summary["equal_to_undecomposed"] is True
    assert summary["max_forward_rel_diff"] <= 1e-5 and summary["max_gradient_rel_diff"] <= 1e-5
    assert summary["halo_bytes_measured_over_analytic"] == [1.0, 1.0]
    assert summary["max_loss_rel_diff_vs_serial"] <= 1e-4  # MGRIT (2 iterations) is exact at these depths
    rows = {r["cell"]: r for r in csv.DictReader(open(out / "cells.csv"))}
    assert list(rows) == ["serial-P1", "space-P2", "depth-P2", "spacetime-P2", "space-P4", "depth-P4", "spacetime-P4"]
    assert (rows["spacetime-P4"]["p_s"], rows["spacetime-P4"]["p_t"]) == ("2", "2")
    for row in rows.values():
        p_s, p_t = int(row["p_s"]), int(row["p_t"])
        assert float(row["step_s"]) > 0
        assert (float(row["halo_bytes_per_step"]) > 0) == (p_s > 1), row
        assert (float(row["mgrit_bytes_per_step"]) > 0) == (p_t > 1), row
        assert (float(row["bytes_per_step_per_process"]) > 0) == (p_s * p_t > 1), row
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["roles"]) == ["worker:0", "worker:1", "worker:2", "worker:3"]
    assert len({r["address"] for r in results["roles"].values()}) == 4
    conv = [r for r in results["convergence"] if r["cell"] == "depth-P4"]
    assert [r["iteration"] for r in conv] == [1, 2] and conv[0]["gradient_rel_diff"] > conv[1]["gradient_rel_diff"]
    report = (out / "report.md").read_text()
    assert "MODELLED extension" in report and "Beside the slides" in report
    assert leftovers(minicluster) == []
