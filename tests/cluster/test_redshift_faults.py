"""Damage done for real to the redshift job on the mini-cluster: SIGKILL of the parameter server's
process, then --resume; SIGKILL of a worker's process mid-run, which Spark retries. Each role's
process is found by the pid it records under <output>/checkpoints/<run id>/pids/."""
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import psutil
import pytest

from distributed import checkpoint, pidfile

from .conftest import ROOT, leftovers, run_job
from .faults import weights

# 300 spectra, no baseline, no ablation: the smallest run that still has epochs to lose.
SMALL = ["--preset", "tiny", "--set", "data.sizes=[300]", "--set", "experiments.baseline=false",
         "--set", "experiments.ablation=false", "--set", "experiments.data_modes=[different]",
         "--set", "train.checkpoint_every=1", "--set", "train.tf_threads=1", "--set", "train.update=epoch"]
EPOCHS = 8
PUSH_TIMEOUT_S = 600
STOP_LIMIT_S = PUSH_TIMEOUT_S / 2  # a job that stops only at its push timeout fails this bound


def job_args(cluster, out, *sets: str) -> list[str]:
    return ["--master", cluster.state.master_url, "--set", f"cluster.run_dir={cluster.run_dir}",
            "--output", str(out), *SMALL, "--set", f"train.max_epochs={EPOCHS}",
            "--set", f"train.push_timeout_s={PUSH_TIMEOUT_S}", *[a for kv in sets for a in ("--set", kv)]]


def start(args: list[str], log_path) -> subprocess.Popen:
    """The job as a user starts it, its output in a file (a pipe nobody reads could fill and block it)."""
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, str(ROOT / "jobs" / "redshift.py"), *args], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def state_of(uri: str) -> dict | None:
    try:
        return checkpoint.load(uri)[1]
    except checkpoint.CheckpointError:
        return None  # not written yet


def wait_until(proc: subprocess.Popen, log_path, condition, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        assert proc.poll() is None, f"the job ended first (rc {proc.returncode}):\n{log_path.read_text()[-4000:]}"
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"condition not reached in {timeout_s}s:\n{log_path.read_text()[-4000:]}")


def kill_role(folder, role: str, cluster) -> int:
    """SIGKILL the process that runs `role` (its pid record), after checking it is one of the run's."""
    pid = pidfile.read(folder, role)["pid"]
    proc = psutil.Process(pid)
    assert proc.environ().get("SCIDL_RUN_ID") == cluster.state.run_id, f"pid {pid} is not the cluster's"
    os.kill(pid, signal.SIGKILL)
    return pid


# Per-test limits above the sum of the waits inside (each of which fails with its own message first).
@pytest.mark.timeout(300 + STOP_LIMIT_S + 400 + 400 + 60)
def test_ps_killed_fails_fast_by_name_and_resume_reaches_the_uninterrupted_weights(minicluster, tmp_path):
    cell = "300-different-M1-staleness-aware-s1"
    reference, damaged = tmp_path / "reference", tmp_path / "damaged"

    # The run that is not interrupted and, at the same time (2 executors each), the same run whose
    # parameter server is killed.
    ref_log, log_path = tmp_path / "reference.log", tmp_path / "damaged.log"
    ref = start(job_args(minicluster, reference, "experiments.workers=[1]"), ref_log)
    proc = start(job_args(minicluster, damaged, "experiments.workers=[1]"), log_path)
    folder = damaged / "checkpoints" / cell
    try:
        def mid_run():
            """The ps checkpoint holds e updates, 1 <= e < EPOCHS - 1. Whether the worker's newest
            checkpoint is of epoch e or already of e + 1 is left to timing: both must resume exactly."""
            ps = state_of(str(folder / "ps.h5"))
            return ps and 1 <= ps["version"] < EPOCHS - 1 and ps["version"]

        epochs_before = wait_until(proc, log_path, mid_run)
        kill_role(str(folder / "pids"), "ps:0", minicluster)
        killed_at = time.monotonic()
        try:
            proc.wait(timeout=STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the job still ran {STOP_LIMIT_S:.0f}s after its ps died (push timeout "
                        f"{PUSH_TIMEOUT_S}s):\n{log_path.read_text()[-4000:]}")
        stopped_after = time.monotonic() - killed_at
        ref.wait(timeout=400)
    finally:
        for p in (proc, ref):
            if p.poll() is None:
                p.kill()
    assert ref.returncode == 0, ref_log.read_text()[-4000:]
    log = log_path.read_text()
    assert proc.returncode == 1, log[-4000:]
    # The worker saw the closed socket at its next request, not after its push timeout (the wait above).
    summary = json.loads((damaged / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"].startswith("ParameterServerLost: ") and "ps:0 was lost" in summary["error"], summary
    assert "worker:0 stopped" in summary["error"] and "--resume" in summary["error"], summary["error"]
    assert leftovers(minicluster) == []

    resumed = run_job("redshift.py", *job_args(minicluster, damaged, "experiments.workers=[1]"), "--resume",
                      timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-2000:]
    summary = json.loads((damaged / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["resumed"] is True
    assert summary["resume"]["continued"] == [cell]
    assert summary["updates"][cell]["applied"] == summary["updates"][cell]["received"] == EPOCHS
    ref_summary = json.loads((reference / "summary.json").read_text())
    assert summary["final_accuracy"] == ref_summary["final_accuracy"]

    # Same final weights as the uninterrupted run. The resumed worker gets back its Adam moments and
    # iteration count, its dropout seed-generator state and the epoch's shuffling (from seed and epoch);
    # one TF thread makes each step deterministic. The tolerance only allows float32 rounding.
    want, got = (weights(reference / "weights" / f"{cell}.weights.h5"),
                 weights(damaged / "weights" / f"{cell}.weights.h5"))
    assert set(got) == set(want) and want
    worst = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
    print(f"ps killed after epoch {epochs_before}, job ended {stopped_after:.1f}s later; "
          f"resumed: max |w_resumed - w_uninterrupted| = {worst:.3g}")
    assert worst <= 1e-6, worst
    assert leftovers(minicluster) == []


@pytest.mark.timeout(300 + 400 + 60)
def test_a_killed_worker_is_lost_then_spark_retries_it_and_the_summary_says_so(minicluster, tmp_path):
    cell = "300-different-M2-staleness-aware-s2"
    out, log_path = tmp_path / "worker-killed", tmp_path / "worker-killed.log"
    proc = start(job_args(minicluster, out, "experiments.workers=[2]", "train.s=2"), log_path)
    folder = out / "checkpoints" / cell
    try:
        # A worker writes epoch e's checkpoint before it reports epoch e, so the checkpoint of epoch 2
        # is the first sign that the ps holds a finished epoch of worker 1.
        second = wait_until(proc, log_path, lambda: [
            p for p in folder.glob("worker-1.epoch-*.h5") if int(p.name.split("-")[-1][:-3]) >= 2])
        assert second
        pid = kill_role(str(folder / "pids"), "worker:1", minicluster)
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = log_path.read_text()
    assert proc.returncode == 0, log[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok"
    (fault,) = summary["faults"][cell]
    assert fault["worker"] == "worker:1" and fault["epochs_completed"] >= 1, fault
    assert fault["message"] == "worker 1 lost; s shrinks from 2 to 1", fault
    assert fault["samples_not_seen"] == "none: the share was retrained after the retry", fault
    assert 1 <= fault["rejoined_at_epoch"] <= fault["epochs_completed"] + 1, fault
    # The retry is a new process that trained the rest of worker 1's share, every epoch accounted for.
    assert pidfile.read(str(folder / "pids"), "worker:1")["pid"] != pid
    with h5py.File(out / "redshift.h5", "r") as h5:
        for worker in ("worker_0", "worker_1"):
            assert len(h5[cell]["workers"][worker]["accuracy"][()]) == EPOCHS
            assert h5[cell]["workers"][worker].attrs["samples"] == 150
    assert "worker 1 lost; s shrinks from 2 to 1" in log
    assert leftovers(minicluster) == []
