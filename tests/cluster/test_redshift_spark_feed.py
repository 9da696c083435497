"""Redshift in data.feed=spark on the real mini-cluster: TFoS feeds each worker its share every epoch,
workers stop on their criterion and leave the parameter server, and what each saw matches the data mode.

The run is made deterministic on purpose: a vanishing learning rate and no dropout keep every worker's
training accuracy the same from epoch to epoch, so the Keras 2.0.x rule with criterion 1 (patience 1)
stops each worker after exactly 3 epochs (epoch 1 sets best; epochs 2 and 3 do not improve: wait 0, then
1 >= 1), and criterion 2 (patience 3) would need 5 epochs, more than max_epochs = 4."""
import json

import h5py
import numpy as np

from rdd_io.redshift_bundle import index_checksum

from .conftest import leftovers, run_job

N, M, EPOCHS = 300, 2, 4


def test_spark_fed_workers_stop_on_their_criterion_and_saw_their_shares(minicluster, tmp_path):
    out = tmp_path / "redshift"
    sets = ["data.feed=spark", f"data.sizes=[{N}]", f"train.max_epochs={EPOCHS}", "train.stop_on=[1]",
            "train.stopping_rule=keras2.0", "model.learning_rate=1.0e-12", "model.dropout=0",
            f"experiments.workers=[{M}]", "experiments.data_modes=[same,different]", "experiments.ablation=false"]
    proc = run_job("redshift.py", "--preset", "tiny", "--master", minicluster.state.master_url,
                   "--set", f"cluster.run_dir={minicluster.run_dir}", "--output", str(out),
                   *[a for s in sets for a in ("--set", s)], timeout=1800)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    cells = {mode: f"{N}-{mode}-M{M}-staleness-aware-s1-c1" for mode in ("same", "different")}
    assert set(summary["epochs_to_stable"]) == {f"{N}-single", *cells.values()}
    # the baseline trains max_epochs and is scored afterwards: criterion 2 never fires within 4 epochs
    assert summary["epochs_to_stable"][f"{N}-single"] == {"single": {"1": 3, "2": f">{EPOCHS}"}}
    for mode, cell in cells.items():
        assert summary["epochs_to_stable"][cell] == {f"worker:{w}": {"1": 3} for w in range(M)}
        assert sorted(s["worker"] for s in summary["stops"][cell]) == ["worker:0", "worker:1"]
        assert all(s["epochs"] == 3 for s in summary["stops"][cell])
        assert sorted(s["workers_still_active"] for s in summary["stops"][cell]) == [0, 1]
        for w in range(M):
            share = np.arange(N) if mode == "same" else np.arange(w, N, M)
            assert summary["seen"][cell][f"worker:{w}"] == [
                {"samples": len(share), "checksum": index_checksum(share)}] * 3
        # three epochs were fed to both workers. A fourth may have been put into the queues before the
        # workers' stop reached the driver (a worker decides at the end of epoch 3, after reading it all);
        # `seen` above shows no worker read it, and the update count below shows no worker trained on it.
        feeding = summary["feeding"][cell]
        assert [e["epoch"] for e in feeding][:3] == [1, 2, 3] and len(feeding) <= EPOCHS
        assert all(sorted(w["worker"] for w in e["workers"]) == [0, 1] for e in feeding[:3])
        assert summary["updates"][cell]["applied"] == M * 3  # no push after a worker left
    with h5py.File(out / "redshift.h5", "r") as h5:
        assert sorted(h5[cells["different"]]["updates"]["worker"][()]) == [0, 0, 0, 1, 1, 1]
    table = (out / f"stable_{N}.md").read_text()
    # no thesis numbers for N=300: '(–)' beside ours
    assert f"| single machine | - | 3 (–) | 3 (–) | >{EPOCHS} (–) | >{EPOCHS} (–) |" in table
    assert "| 2 workers | #2 | 3 (–) | 3 (–) | – (–) | – (–) |" in table
    assert "stopping rule keras2.0" in table
    assert not (out / "bundles").exists()  # spark feed: no share is written for the workers to read
    assert "met criterion 1 after 3 epochs and left the ps" in proc.stderr + proc.stdout
    assert leftovers(minicluster) == []
