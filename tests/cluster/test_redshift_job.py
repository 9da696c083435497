"""The redshift job on the real mini-cluster, at a tiny size: bundle, shares, ps + workers, outputs."""
import json

import h5py
import numpy as np

from distributed.staleness import staleness_factor

from .conftest import leftovers


def test_redshift_tiny_two_workers_different_data(minicluster, tiny_redshift):
    out = tiny_redshift  # conftest: data.sizes=[600], 3 epochs, 2 workers, different data, no ablation
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok"
    assert summary["samples_available"] == 600
    dist = "600-different-M2-staleness-aware-s1"
    assert set(summary["final_accuracy"]) == {"600-single", dist}
    assert set(summary["final_accuracy"][dist]) == {"worker:0", "worker:1"}
    with h5py.File(out / "redshift.h5", "r") as h5:
        run = h5[dist]
        # disjoint halves: 300 samples each, and every epoch of each worker reached the ps
        for worker in ("worker_0", "worker_1"):
            assert run["workers"][worker].attrs["samples"] == 300
            acc = run["workers"][worker]["accuracy"][()]
            assert len(acc) == 3
            assert acc[-1] > 2.0 / 40  # above chance (40 classes in the tiny preset)
        taus = run["updates"]["tau"][()]
        assert len(taus) == 2 * 3  # one update per worker and epoch, each with its staleness
        assert set(run["updates"]["worker"][()]) == {0, 1}
        # s = 1: each push is applied on arrival, as the next version, so its staleness is the versions
        # applied since it read: tau = applied_version - 1 - read_version; lambda = 1/tau (1 for tau 0).
        read, applied = run["updates"]["read_version"][()], run["updates"]["applied_version"][()]
        assert sorted(applied) == list(range(1, 7))
        np.testing.assert_array_equal(taus, applied - 1 - read)
        assert run["updates"]["lambda"][()].tolist() == [staleness_factor(int(t), "inverse") for t in taus]
    shares = sorted(p.name for p in (out / "bundles" / "600-different-M2").iterdir())
    assert shares == ["worker-0", "worker-1"]
    assert (out / "weights" / f"{dist}.weights.h5").stat().st_size > 0
    assert leftovers(minicluster) == []


def test_redshift_progress_lines_and_tensorboard_files_per_worker(tiny_redshift):
    import re

    import pytest

    from distributed.tb_events import read_scalars
    from .conftest import TINY_STDOUT
    out, log = tiny_redshift, TINY_STDOUT["redshift"]
    dist = "600-different-M2-staleness-aware-s1"
    with h5py.File(out / "redshift.h5", "r") as h5:
        accuracy = {w: h5[dist]["workers"][f"worker_{w}"]["accuracy"][()] for w in (0, 1)}
    for w in (0, 1):
        # stdout is not a terminal: a plain line per epoch end, with accuracy, updates/s and staleness
        assert re.search(rf"progress {dist}: worker:{w}  epoch 3/3  acc [\d.]+  loss \S+  [\d.]+ upd/s  tau \d+",
                         log), log[-3000:]
        (events,) = (out / "tensorboard" / dist / f"worker_{w}").glob("events.out.tfevents.*")
        scalars = read_scalars(events)
        assert set(scalars) == {"accuracy", "loss", "staleness", "updates_per_s"}
        assert [step for step, _ in scalars["accuracy"]] == [1, 2, 3]
        assert [v for _, v in scalars["accuracy"]] == pytest.approx(list(accuracy[w]), abs=1e-6)
        assert all(v > 0 for _, v in scalars["updates_per_s"]) and all(v >= 0 for _, v in scalars["staleness"])
    assert f"progress {dist}: finished [########################] 6/6 epochs 100%" in log


def test_parameter_server_refused_a_client_without_the_secret_while_training(tiny_redshift):
    """During the session's tiny run (conftest's probe, on the 'TFoS roles up' line) a client with a wrong
    secret was refused by the ps; training went on and every push was applied."""
    from .conftest import PS_PROBES
    probe = PS_PROBES.get("redshift", {})
    assert probe.get("refused") is True, probe
    summary = json.loads((tiny_redshift / "summary.json").read_text())
    updates = summary["updates"]["600-different-M2-staleness-aware-s1"]
    assert updates["received"] == updates["applied"] == 2 * 3
