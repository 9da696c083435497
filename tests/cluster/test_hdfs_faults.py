"""Damage done for real to HDFS under a running redshift job: the NameNode stopped mid-job fails the job within
a bound, naming the HDFS URI and what it was writing, with no process left; once the NameNode is back,
--resume finishes the run from its checkpoints on HDFS, with the figures and weights of the same run on
file://. The NameNode is restarted at the end, so the session's HDFS is whole for the tests after it."""
import io
import json
import re
import time

import numpy as np
import pytest

from rdd_io import storage

from .conftest import leftovers
from .faults import finish, start_job, tail, weights as read_weights

pytestmark = pytest.mark.hdfs

# One worker, s = 1, one update per epoch: deterministic, so file:// and hdfs:// must agree bit for bit.
CELL = "300-different-M1-staleness-aware-s1"
SMALL = ("data.sizes=[300]", "experiments.baseline=false", "experiments.ablation=false",
         "experiments.workers=[1]", "experiments.data_modes=[different]", "train.checkpoint_every=1",
         "train.max_epochs=5", "train.update=epoch")
FIGURES = ("final_accuracy", "epochs_to_stable", "updates")


def _start(cluster, output: str, log, *extra: str):
    args = ["--preset", "tiny", "--master", cluster.state.master_url, "--set", f"cluster.run_dir={cluster.run_dir}",
            "--output", output, *[a for kv in SMALL for a in ("--set", kv)], *extra]
    return start_job("redshift.py", *args, log=log)


def _wait_for_training(output: str, proc, log, timeout_s: float = 400) -> None:
    """Until the worker's first checkpoint is on HDFS (training has begun and writes there)."""
    uri = storage.join(output, "checkpoints", CELL, "worker-0.h5")
    deadline = time.monotonic() + timeout_s
    while not storage.exists(uri):
        assert proc.poll() is None, f"the job ended (rc {proc.returncode}) before {uri} appeared:\n" + tail(log)
        assert time.monotonic() < deadline, f"{uri} did not appear:\n" + tail(log)
        time.sleep(0.5)


@pytest.mark.timeout(1200)
def test_namenode_stopped_mid_job_fails_it_bounded_and_resume_ends_with_the_file_runs_figures(minicluster, hdfs,
                                                                                             tmp_path):
    output, file_run = f"{hdfs.state.uri}/faults/namenode", tmp_path / "file-run"
    log, file_log = tmp_path / "job.log", tmp_path / "file-run.log"
    # The same run on file:// at the same time (2 executors each).
    reference = _start(minicluster, str(file_run), file_log)
    proc = _start(minicluster, output, log)
    try:
        _wait_for_training(output, proc, log)
        hdfs.stop_daemon("namenode")
        stopped = time.monotonic()
        rc = finish(proc, log, 300)  # the bound: a hang fails here
        print(f"the job ended {time.monotonic() - stopped:.1f}s after the NameNode was stopped")
        assert finish(reference, file_log, 300) == 0, tail(file_log)
    finally:
        for p in (proc, reference):
            if p.poll() is None:
                p.kill()
        if not hdfs.status()["processes"]["namenode"]:
            hdfs.restart_daemon("namenode")
    text = tail(log, 20000)
    assert rc == 1, text
    (failed,) = [line for line in text.splitlines() if line.startswith("redshift: failed:")]
    assert f"{hdfs.state.uri}/faults/namenode/" in failed and ": write failed: " in failed, failed
    assert leftovers(minicluster) == []

    resume = tmp_path / "resume.log"
    proc = _start(minicluster, output, resume, "--resume")
    assert finish(proc, resume, 400) == 0, tail(resume)
    on_hdfs = json.loads(storage.read_text(storage.join(output, "summary.json")))
    on_file = json.loads((file_run / "summary.json").read_text())
    assert on_hdfs["status"] == "ok" and on_hdfs["resumed"] is True
    assert {k: on_hdfs[k] for k in FIGURES} == {k: on_file[k] for k in FIGURES}
    names = storage.list_tree(output)
    same = [str(p.relative_to(file_run)) for p in file_run.rglob("*") if p.is_file()]
    events = re.compile(r"events\.out\.tfevents\..*")  # the name holds the time, host and pid of its writer
    assert sorted({events.sub("events", n) for n in names}) == sorted({events.sub("events", n) for n in same})
    weights = f"weights/{CELL}.weights.h5"
    got = read_weights(io.BytesIO(storage.read_bytes(storage.join(output, weights))))
    want = read_weights(file_run / weights)
    assert got.keys() == want.keys() and len(got) >= 4
    # Resumed from the checkpoints on HDFS: the worker gets back its optimizer state and the epoch's
    # shuffling, so the weights are the uninterrupted file:// run's up to float32 rounding.
    worst = max(float(np.max(np.abs(got[k] - want[k]))) for k in got)
    print(f"max |w_hdfs_resumed - w_file| = {worst:.3g}")
    assert worst <= 1e-6, worst
    assert leftovers(minicluster) == []
