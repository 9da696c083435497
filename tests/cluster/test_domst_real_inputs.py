"""Dom-ST from real-format inputs with no hand-written file: a folder of USGS RDB files, a CRU-layout
netCDF, a distance GeoTIFF and GeoJSON outlines -> `python -m rdd_io.domst_region` writes watersheds.json
-> the job runs on it. One watershed's test period has no observed discharge: it is reported as not
scorable and the others are trained and scored."""
import json
import math
import subprocess
import sys

import numpy as np

from rdd_io.domst_sim import WATERSHEDS_FILE, simulate_region, usgs_rdb_text, write_region

from .conftest import ROOT, leftovers, run_job


def test_region_file_built_from_real_inputs_and_a_watershed_without_test_data_is_reported(minicluster, tmp_path):
    region = simulate_region(seed=2, years=2, n_watersheds=3, n_lat=20, n_lon=24, max_size=80)
    inputs = tmp_path / "input"
    write_region(str(inputs), region)
    (inputs / WATERSHEDS_FILE).unlink()  # only the real formats stay: rdb, nc, tif, geojson
    (inputs / "truth.npz").unlink()
    site = region["site_no"][1]  # W02: no discharge observed in the last 30% of the period (the test period)
    q = region["discharge_m3s"][1].copy()
    q[int(0.7 * len(q)):] = np.nan
    (inputs / "discharge" / f"{site}.rdb").write_text(usgs_rdb_text(site, region["dates"], q))

    built = subprocess.run([sys.executable, "-m", "rdd_io.domst_region", str(inputs)], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    meta = json.loads((inputs / WATERSHEDS_FILE).read_text())
    assert [(w["id"], w["site_no"]) for w in meta["watersheds"]] == [
        (f"W{k:02d}", s) for k, s in enumerate(region["site_no"], 1)]
    for w, shed in enumerate(meta["watersheds"]):
        assert shed["pixels"] == np.flatnonzero(region["label"].ravel() == w).tolist()

    out = tmp_path / "domst"
    proc = run_job("domst.py", "--preset", "tiny", "--master", minicluster.state.master_url,
                   "--set", f"cluster.run_dir={minicluster.run_dir}", "--output", str(out),
                   "--set", "data.source=files", "--set", f"data.input={inputs}",
                   "--set", "experiments.modes=[ipd]", "--set", "experiments.approaches=[domst]",
                   "--set", "experiments.ablation=[]", "--set", "train.epochs=1", timeout=600)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["watersheds"] == 3
    assert list(summary["unscored"]) == ["W02"] and "test period" in summary["unscored"]["W02"]
    assert summary["times_s"]["ipd"]["domst"]["nodes_used"] == 3  # one node per watershed, W02's included
    results = json.loads((out / "results.json").read_text())
    for wid in ("W01", "W03"):
        assert math.isfinite(results["scores"][wid]["domst"]["nse"])
    assert results["scores"]["W02"] == {}
    assert "## Watersheds that could not be scored" in (out / "report.md").read_text()
    assert leftovers(minicluster) == []
