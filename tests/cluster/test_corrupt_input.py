"""A corrupt input file on the real mini-cluster: the redshift job reads user-given HDF5 shards, one of
them cut short. The job must fail on reading, naming that file, before the parameter server and the
workers are started, and leave no process behind."""
import json

from rdd_io import redshift_sim

from .conftest import leftovers, run_job

BANDS, N_CLASSES = 450, 40  # the tiny preset's


def test_truncated_redshift_shard_fails_the_job_naming_the_file(minicluster, tmp_path):
    shards = tmp_path / "shards"
    assert len(redshift_sim.write_shards(str(shards), 600, 200, seed=3, bands=BANDS, n_classes=N_CLASSES)) == 3
    bad = shards / "shard-00001.h5"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size * 2 // 3])  # its data cut off at two thirds
    before = {p.name: p.read_bytes() for p in shards.iterdir()}
    out = tmp_path / "redshift"
    proc = run_job("redshift.py", "--preset", "tiny", "--master", minicluster.state.master_url,
                   "--set", f"cluster.run_dir={minicluster.run_dir}", "--output", str(out),
                   "--set", "data.source=hdf5", "--set", f"data.input={shards}", "--set", "data.sizes=[600]",
                   "--set", "experiments.workers=[2]", "--set", "experiments.data_modes=[different]",
                   "--set", "experiments.ablation=false", "--set", "experiments.baseline=false")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"].startswith("SchemaError: shard-00001.h5: "), summary["error"][:2000]
    assert "HDF5 file" in summary["error"]
    assert log.rstrip().splitlines()[-1] == f"redshift: failed: {summary['error']}"
    # The input is read before any role starts: no ps, no workers, no training outputs.
    assert "TFoS roles up" not in log and "parameter server on" not in log
    assert not (out / "bundles").exists() and not (out / "weights").exists()
    assert {p.name: p.read_bytes() for p in shards.iterdir()} == before  # the input is only read
    assert leftovers(minicluster) == []
