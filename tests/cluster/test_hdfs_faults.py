"""Damage done for real to HDFS under a running redshift job, each beside the same run on file://:
- a DataNode killed by its pid mid-job: the run finishes with the file:// run's figures and weights, and
  every file it wrote is readable with that DataNode still gone (replication 2);
- the NameNode stopped mid-job: the job fails within a bound, naming the HDFS URI and what it was
  writing, with no process left; once the NameNode is back, --resume finishes the run from its
  checkpoints on HDFS, with the file:// run's figures and weights.
What a test stops it starts again, so the session's HDFS is whole for the tests after it."""
import io
import json
import os
import re
import signal
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
    uri = storage.join(output, "checkpoints", CELL)
    deadline = time.monotonic() + timeout_s
    while not storage.glob(uri, "worker-0.epoch-*.h5"):
        assert proc.poll() is None, f"the job ended (rc {proc.returncode}) before {uri} appeared:\n" + tail(log)
        assert time.monotonic() < deadline, f"no worker checkpoint in {uri}:\n" + tail(log)
        time.sleep(0.5)


@pytest.fixture(scope="module")
def file_run(minicluster, tmp_path_factory):
    """The reference run on file://, started at once so that it runs beside the first HDFS run; call it
    for its output folder once it has finished."""
    out = tmp_path_factory.mktemp("redshift-file")
    log = out / "job.log"
    proc = _start(minicluster, str(out / "run"), log)

    def finished():
        assert finish(proc, log, 400) == 0, tail(log)
        return out / "run"
    try:
        yield finished
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _same_as(output: str, file_run, tolerance: float) -> None:
    """The HDFS run's figures, file names and weights against the file:// run's."""
    on_hdfs = json.loads(storage.read_text(storage.join(output, "summary.json")))
    on_file = json.loads((file_run / "summary.json").read_text())
    assert {k: on_hdfs[k] for k in FIGURES} == {k: on_file[k] for k in FIGURES}
    names = storage.list_tree(output)
    same = [str(p.relative_to(file_run)) for p in file_run.rglob("*") if p.is_file()]
    events = re.compile(r"events\.out\.tfevents\..*")  # the name holds the time, host and pid of its writer
    assert sorted({events.sub("events", n) for n in names}) == sorted({events.sub("events", n) for n in same})
    weights = f"weights/{CELL}.weights.h5"
    got = read_weights(io.BytesIO(storage.read_bytes(storage.join(output, weights))))
    want = read_weights(file_run / weights)
    assert got.keys() == want.keys() and len(got) >= 4
    worst = max(float(np.max(np.abs(got[k] - want[k]))) for k in got)
    print(f"max |w_hdfs - w_file| = {worst:.3g}")
    assert worst <= tolerance, worst


@pytest.mark.timeout(900)
def test_a_datanode_killed_mid_job_the_run_ends_with_the_file_runs_figures_and_loses_nothing(minicluster, hdfs,
                                                                                            file_run, tmp_path):
    output, log = f"{hdfs.state.uri}/faults/datanode", tmp_path / "job.log"
    proc = _start(minicluster, output, log)  # beside the file:// run
    try:
        _wait_for_training(output, proc, log)
        os.kill(hdfs.state.pids["datanode-2"], signal.SIGKILL)
        killed = time.monotonic()
        assert finish(proc, log, 600) == 0, tail(log)
        print(f"the run ended {time.monotonic() - killed:.1f}s after the DataNode was killed")
        summary = json.loads(storage.read_text(storage.join(output, "summary.json")))
        assert summary["status"] == "ok", summary
        for name in storage.list_tree(output):  # every file is readable with the DataNode still gone
            storage.read_bytes(storage.join(output, name))
    finally:
        if proc.poll() is None:
            proc.kill()
        hdfs.stop_daemon("datanode-2")  # reaps it (already dead) before it is started again
        hdfs.restart_daemon("datanode-2")
    # One worker, s = 1: the run is deterministic, so its weights are the file:// run's bit for bit.
    _same_as(output, file_run(), tolerance=0.0)
    assert leftovers(minicluster) == []


@pytest.mark.timeout(1200)
def test_namenode_stopped_mid_job_fails_it_bounded_and_resume_ends_with_the_file_runs_figures(minicluster, hdfs,
                                                                                             file_run, tmp_path):
    output, log = f"{hdfs.state.uri}/faults/namenode", tmp_path / "job.log"
    proc = _start(minicluster, output, log)
    try:
        _wait_for_training(output, proc, log)
        hdfs.stop_daemon("namenode")
        stopped = time.monotonic()
        rc = finish(proc, log, 300)  # the bound: a hang fails here
        print(f"the job ended {time.monotonic() - stopped:.1f}s after the NameNode was stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
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
    summary = json.loads(storage.read_text(storage.join(output, "summary.json")))
    assert summary["status"] == "ok" and summary["resumed"] is True
    # Resumed from the checkpoints on HDFS: the worker gets back its optimizer state and the epoch's
    # shuffling, so the weights are the uninterrupted file:// run's up to float32 rounding.
    _same_as(output, file_run(), tolerance=1e-6)
    assert leftovers(minicluster) == []
